//! The settings of one site's service. The command-line crate fills them
//! from the environment and flags; this module only holds and checks them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use opsbuffer_pg::PgSettings;
use opsbuffer_redis::BufferSettings;

/// Whether the site buffers writes or writes straight to main.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteType {
    /// Buffers writes in Redis and merges reads; local is a replica of main.
    Secondary,
    /// Writes through to main before answering; local is main itself.
    Main,
}

impl SiteType {
    pub fn as_str(self) -> &'static str {
        match self {
            SiteType::Secondary => "secondary",
            SiteType::Main => "main",
        }
    }
}

impl fmt::Display for SiteType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SiteType {
    type Err = String;

    fn from_str(s: &str) -> Result<SiteType, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "secondary" => Ok(SiteType::Secondary),
            "main" => Ok(SiteType::Main),
            other => Err(format!("SITE_TYPE must be secondary or main, not {other:?}")),
        }
    }
}

/// How the drainer applies the queue to main.
#[derive(Debug, Clone)]
pub struct DrainSettings {
    /// Most transactions applied in one database transaction and round trip.
    pub batch_size: usize,
    /// Longest one batch may take on main before the connection is dropped
    /// and the batch retried. It must stay below two thirds of `lease_ttl`,
    /// so a drainer that starts a batch with a fresh lease finishes it
    /// before the lease can pass to another process.
    pub batch_timeout: Duration,
    /// First and longest delay between retries after a transient failure.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Lifetime of the drainer lease; the holder renews it at a third of it.
    pub lease_ttl: Duration,
    /// How often an idle drainer looks for work other processes queued.
    pub idle_poll: Duration,
}

impl Default for DrainSettings {
    fn default() -> Self {
        DrainSettings {
            batch_size: 200,
            batch_timeout: Duration::from_secs(15),
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            lease_ttl: Duration::from_secs(30),
            idle_poll: Duration::from_millis(100),
        }
    }
}

/// An endpoint that `AUTH_OPEN_ENDPOINTS` can leave open to requests
/// without a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpenEndpoint {
    /// `GET /health`.
    Health,
    /// `GET /metrics`.
    Metrics,
    /// `GET /openapi.json` and the page at `/docs`.
    Docs,
}

impl OpenEndpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            OpenEndpoint::Health => "health",
            OpenEndpoint::Metrics => "metrics",
            OpenEndpoint::Docs => "docs",
        }
    }

    /// Parses a comma-separated list such as `health,metrics`; `none` or an
    /// empty text is the empty list.
    pub fn parse_list(text: &str) -> Result<Vec<OpenEndpoint>, String> {
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let endpoint = match part.to_ascii_lowercase().as_str() {
                "health" => OpenEndpoint::Health,
                "metrics" => OpenEndpoint::Metrics,
                "docs" => OpenEndpoint::Docs,
                "none" => continue,
                other => {
                    return Err(format!(
                        "AUTH_OPEN_ENDPOINTS lists unknown endpoint {other:?}; use a comma-separated list of health, metrics and docs, or none"
                    ));
                }
            };
            if !out.contains(&endpoint) {
                out.push(endpoint);
            }
        }
        Ok(out)
    }
}

/// Who may call the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// Whether requests need a bearer token. Off only for local
    /// development, the demo and tests.
    pub required: bool,
    /// Endpoints that answer without a token even when `required` is set.
    pub open_endpoints: Vec<OpenEndpoint>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            required: true,
            open_endpoints: vec![OpenEndpoint::Health, OpenEndpoint::Metrics, OpenEndpoint::Docs],
        }
    }
}

impl AuthSettings {
    /// No authentication at all.
    pub fn disabled() -> AuthSettings {
        AuthSettings { required: false, ..AuthSettings::default() }
    }

    /// Whether `endpoint` answers without a token.
    pub fn is_open(&self, endpoint: OpenEndpoint) -> bool {
        !self.required || self.open_endpoints.contains(&endpoint)
    }
}

/// Everything the engine needs to run one site.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// Prefix of every Redis key and the site column of the ledger.
    pub site_name: String,
    pub site_type: SiteType,
    pub main: PgSettings,
    pub local: PgSettings,
    pub redis: BufferSettings,
    /// Schemas whose tables opsbuffer serves.
    pub schemas: Vec<String>,
    /// How often the watcher reads local's replay LSN.
    pub lsn_check_interval: Duration,
    /// How long an applied transaction may wait for replication before the
    /// wait is logged as a warning and health reports degraded.
    pub lsn_timeout: Duration,
    pub drain: DrainSettings,
    /// Most queued plus blocked transactions; beyond it writes get 503.
    /// Zero means no limit.
    pub max_pending: u64,
    /// Lets a secondary site start although Redis does not fsync every
    /// write, accepting that a Redis crash may lose acknowledged writes.
    pub allow_unsafe_redis: bool,
    /// How long start-up waits for Redis and local to answer.
    pub startup_timeout: Duration,
    pub auth: AuthSettings,
}

impl DrainSettings {
    /// Checks the relations between the settings.
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_size == 0 {
            return Err("DRAIN_BATCH_SIZE must be at least 1".into());
        }
        if self.batch_timeout * 3 >= self.lease_ttl * 2 {
            return Err(format!(
                "DRAIN_BATCH_TIMEOUT ({:?}) must be shorter than two thirds of DRAINER_LEASE_TTL ({:?}), so a batch ends before the lease can move to another process; raise DRAINER_LEASE_TTL or lower DRAIN_BATCH_TIMEOUT",
                self.batch_timeout, self.lease_ttl
            ));
        }
        if self.retry_initial.is_zero() {
            return Err("DRAIN_RETRY_INITIAL must be above zero".into());
        }
        Ok(())
    }
}

/// Checks a site name: it becomes part of every Redis key.
pub fn validate_site_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid { Ok(()) } else { Err(format!("SITE_NAME must be 1 to 64 letters, digits, '-' or '_'; got {name:?}")) }
}

/// Reads a duration: a plain number is seconds (`0.5`), or a number with a
/// unit `ms`, `s`, `m`, `h` or `d` (`500ms`, `30s`, `90d`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let value: f64 = number.trim().parse().map_err(|_| {
        format!("invalid duration {text:?}: expected a number of seconds such as 0.5, or 500ms, 30s, 5m, 90d")
    })?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("invalid duration {text:?}: it must be zero or positive"));
    }
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        other => {
            return Err(format!("invalid duration {text:?}: unknown unit {other:?}; use ms, s, m, h or d"));
        }
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// A database URL with its password replaced by `***`, for logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let redacted = match userinfo.find(':') {
                Some(colon) => format!("{}:***", &userinfo[..colon]),
                None => userinfo.to_owned(),
            };
            format!("{}{redacted}{}", &url[..scheme_end + 3], &rest[at..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_seconds_and_units() {
        assert_eq!(parse_duration("0.1").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("90d").unwrap(), Duration::from_secs(90 * 86_400));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn site_names_are_key_safe() {
        assert!(validate_site_name("cerro-chajnantor_1").is_ok());
        assert!(validate_site_name("bad name").is_err());
        assert!(validate_site_name("a{b}").is_err());
        assert!(validate_site_name("").is_err());
    }

    #[test]
    fn open_endpoint_lists_parse() {
        assert_eq!(
            OpenEndpoint::parse_list("health, metrics").unwrap(),
            vec![OpenEndpoint::Health, OpenEndpoint::Metrics]
        );
        assert_eq!(OpenEndpoint::parse_list("none").unwrap(), vec![]);
        assert_eq!(OpenEndpoint::parse_list("").unwrap(), vec![]);
        let error = OpenEndpoint::parse_list("health,admin").unwrap_err();
        assert!(error.contains("AUTH_OPEN_ENDPOINTS"), "{error}");
        assert!(error.contains("admin"), "{error}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("postgres://ops:secret@db.example:5432/x"), "postgres://ops:***@db.example:5432/x");
        assert_eq!(redact_url("redis://:pw@127.0.0.1:6379"), "redis://:***@127.0.0.1:6379");
        assert_eq!(redact_url("postgres://ops@host/db"), "postgres://ops@host/db");
    }
}
