//! Settings shared by the subcommands, read from flags or from the
//! environment variables operators of the existing service know. The
//! defaults match the instances `scripts/services.sh` starts.

use std::time::Duration;

use clap::Args;
use opsbuffer_engine::config::{parse_duration, validate_site_name};
use opsbuffer_engine::{AuthSettings, DrainSettings, OpenEndpoint, SiteConfig, SiteType};
use opsbuffer_pg::PgSettings;
use opsbuffer_redis::BufferSettings;

/// Parses a duration setting; zero is rejected because every one of them
/// is a timeout, an interval or a lifetime.
fn duration(text: &str) -> Result<Duration, String> {
    let parsed = parse_duration(text)?;
    if parsed.is_zero() {
        return Err(format!("{text:?} is zero; give a duration greater than 0, such as 100ms or 5s"));
    }
    Ok(parsed)
}

fn pool_size(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(size) if (1..=1000).contains(&size) => Ok(size),
        _ => Err(format!("{text:?} is not a pool size; give a whole number from 1 to 1000")),
    }
}

fn site_type(text: &str) -> Result<SiteType, String> {
    text.parse()
}

fn site_name(text: &str) -> Result<String, String> {
    validate_site_name(text).map(|_| text.to_owned())
}

/// The endpoints `AUTH_OPEN_ENDPOINTS` leaves open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenEndpoints(pub Vec<OpenEndpoint>);

fn open_endpoints(text: &str) -> Result<OpenEndpoints, String> {
    OpenEndpoint::parse_list(text).map(OpenEndpoints)
}

/// Where the databases and Redis are.
#[derive(Debug, Clone, Args)]
pub struct Connections {
    /// URL of the main database, the only write target.
    #[arg(long, env = "MAIN_DB_URL", default_value = "postgres://opsbuffer@127.0.0.1:54320/opsbuffer")]
    pub main_db_url: String,

    /// URL of the local database: the streaming replica at a secondary site, main itself at a main site.
    #[arg(long, env = "LOCAL_DB_URL", default_value = "postgres://opsbuffer@127.0.0.1:54321/opsbuffer")]
    pub local_db_url: String,

    /// URL of Redis, which holds the buffer.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:63790")]
    pub redis_url: String,

    /// Name of this site; prefixes every Redis key and is recorded in main's ledger.
    #[arg(long, env = "SITE_NAME", default_value = "observatory", value_parser = site_name)]
    pub site_name: String,

    /// secondary (buffer writes, merge reads) or main (write through to main).
    #[arg(long, env = "SITE_TYPE", default_value = "secondary", value_parser = site_type)]
    pub site_type: SiteType,

    /// How long to wait for a database connection (seconds, or with a unit: 500ms, 10s).
    #[arg(long, env = "DB_CONNECT_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub db_connect_timeout: Duration,

    /// Longest a statement may run on a database.
    #[arg(long, env = "DB_STATEMENT_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub db_statement_timeout: Duration,

    /// Connections per database pool.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 16, value_parser = pool_size)]
    pub db_pool_size: usize,

    /// Longest one Redis call may take.
    #[arg(long, env = "REDIS_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub redis_timeout: Duration,

    /// Comma-separated database schemas whose tables are served.
    #[arg(long, env = "DB_SCHEMAS", default_value = "public", value_delimiter = ',')]
    pub db_schemas: Vec<String>,
}

/// Settings of the running service.
#[derive(Debug, Clone, Args)]
pub struct ServiceSettings {
    #[command(flatten)]
    pub connections: Connections,

    /// How often the watcher reads local's replay LSN (seconds, or with a unit).
    #[arg(long, env = "LSN_CHECK_INTERVAL", default_value = "0.1", value_parser = duration)]
    pub lsn_check_interval: Duration,

    /// How long an applied transaction may wait for replication before it is reported as overdue.
    #[arg(long, env = "LSN_TIMEOUT", default_value = "30", value_parser = duration)]
    pub lsn_timeout: Duration,

    /// Most transactions applied on main per round trip and database transaction.
    #[arg(long, env = "DRAIN_BATCH_SIZE", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub drain_batch_size: u64,

    /// Longest one batch may take on main before it is retried; must be below two thirds of DRAINER_LEASE_TTL.
    #[arg(long, env = "DRAIN_BATCH_TIMEOUT", default_value = "15s", value_parser = duration)]
    pub drain_batch_timeout: Duration,

    /// First delay before retrying a batch after a connection error or timeout.
    #[arg(long, env = "DRAIN_RETRY_INITIAL", default_value = "200ms", value_parser = duration)]
    pub drain_retry_initial: Duration,

    /// Longest delay between retries.
    #[arg(long, env = "DRAIN_RETRY_MAX", default_value = "30s", value_parser = duration)]
    pub drain_retry_max: Duration,

    /// Lifetime of the drainer lease in Redis; the holder renews it at a third of this.
    #[arg(long, env = "DRAINER_LEASE_TTL", default_value = "30s", value_parser = duration)]
    pub drainer_lease_ttl: Duration,

    /// Most queued plus blocked transactions before writes get 503 (0: no limit).
    #[arg(long, env = "MAX_PENDING_TRANSACTIONS", default_value_t = 1_000_000)]
    pub max_pending_transactions: u64,

    /// Start a secondary site even when Redis does not fsync every write (a Redis crash may then lose acknowledged writes).
    #[arg(long, env = "REDIS_ALLOW_UNSAFE_PERSISTENCE", default_value_t = false, action = clap::ArgAction::Set)]
    pub redis_allow_unsafe_persistence: bool,

    /// How long start-up waits for Redis and local to answer.
    #[arg(long, env = "STARTUP_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub startup_timeout: Duration,

    /// How long replicated and discarded transactions stay readable through GET /transactions/{id} (e.g. 7d, 12h).
    #[arg(long, env = "TRANSACTION_RETENTION", default_value = "7d", value_parser = duration)]
    pub transaction_retention: Duration,

    /// Require `Authorization: Bearer <token>` on every request (true or false); false is for local development and tests only.
    #[arg(long, env = "AUTH_REQUIRED", default_value_t = true, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub auth_required: bool,

    /// Comma-separated endpoints that respond without a token even when AUTH_REQUIRED is true: health, metrics, docs (/openapi.json and /docs), or none.
    #[arg(long, env = "AUTH_OPEN_ENDPOINTS", default_value = "health,metrics,docs", value_parser = open_endpoints)]
    pub auth_open_endpoints: OpenEndpoints,
}

impl Connections {
    pub fn pg(&self, label: &'static str, url: &str) -> PgSettings {
        PgSettings {
            url: url.to_owned(),
            label,
            connect_timeout: self.db_connect_timeout,
            statement_timeout: self.db_statement_timeout,
            pool_size: self.db_pool_size,
        }
    }

    pub fn main(&self) -> PgSettings {
        self.pg("main", &self.main_db_url)
    }

    pub fn local(&self) -> PgSettings {
        self.pg("local", &self.local_db_url)
    }

    pub fn buffer(&self, retention: Duration) -> BufferSettings {
        BufferSettings {
            url: self.redis_url.clone(),
            site: self.site_name.clone(),
            timeout: self.redis_timeout,
            retention,
        }
    }
}

impl Connections {
    /// The configuration of an engine that a one-off command (status,
    /// query, token) starts: these connections, the service's defaults for
    /// the rest, and a start-up wait of `DB_CONNECT_TIMEOUT`.
    pub fn site_config(&self) -> SiteConfig {
        let local =
            if self.site_type == SiteType::Main && self.local_db_url.is_empty() { self.main() } else { self.local() };
        SiteConfig {
            site_name: self.site_name.clone(),
            site_type: self.site_type,
            main: self.main(),
            local,
            redis: self.buffer(opsbuffer_redis::DEFAULT_RETENTION),
            schemas: self.db_schemas.clone(),
            lsn_check_interval: Duration::from_millis(100),
            lsn_timeout: Duration::from_secs(30),
            drain: DrainSettings::default(),
            max_pending: 0,
            allow_unsafe_redis: false,
            startup_timeout: self.db_connect_timeout,
            auth: AuthSettings::default(),
        }
    }
}

impl ServiceSettings {
    pub fn site_config(&self) -> SiteConfig {
        let c = &self.connections;
        let local = if c.site_type == SiteType::Main && c.local_db_url.is_empty() { c.main() } else { c.local() };
        SiteConfig {
            site_name: c.site_name.clone(),
            site_type: c.site_type,
            main: c.main(),
            local,
            redis: c.buffer(self.transaction_retention),
            schemas: c.db_schemas.clone(),
            lsn_check_interval: self.lsn_check_interval,
            lsn_timeout: self.lsn_timeout,
            drain: DrainSettings {
                batch_size: self.drain_batch_size as usize,
                batch_timeout: self.drain_batch_timeout,
                retry_initial: self.drain_retry_initial,
                retry_max: self.drain_retry_max.max(self.drain_retry_initial),
                lease_ttl: self.drainer_lease_ttl.max(Duration::from_secs(1)),
                idle_poll: Duration::from_millis(100),
            },
            max_pending: self.max_pending_transactions,
            allow_unsafe_redis: self.redis_allow_unsafe_persistence,
            startup_timeout: self.startup_timeout,
            auth: AuthSettings { required: self.auth_required, open_endpoints: self.auth_open_endpoints.0.clone() },
        }
    }
}
