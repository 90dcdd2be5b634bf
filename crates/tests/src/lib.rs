//! Helpers for the scenario tests: connections to the project's services,
//! a site API running in the test process on an ephemeral port, reference
//! data, and waits with deadlines.
//!
//! The services are the ones `scripts/services.sh` starts; their URLs come
//! from the same environment variables the service reads, with the same
//! defaults. Each test site gets its own `SITE_NAME`, so its Redis keys are
//! its own, and its own observing program, so its rows are its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opsbuffer_engine::{AuthSettings, DrainSettings, Engine, OpenEndpoint, SiteConfig, SiteType};
use opsbuffer_pg::PgSettings;
use opsbuffer_proxy::FaultProxy;
use opsbuffer_redis::BufferSettings;
use serde_json::{Value, json};
use tokio::sync::{OnceCell, RwLock};
use tokio_postgres::{Client, NoTls};

/// Default URLs, the same as `scripts/services.sh env` prints.
pub const DEFAULT_MAIN_URL: &str = "postgres://opsbuffer@127.0.0.1:54320/opsbuffer";
pub const DEFAULT_LOCAL_URL: &str = "postgres://opsbuffer@127.0.0.1:54321/opsbuffer";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:63790";
pub const DEFAULT_MAIN_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:54320/opsbuffer";
pub const DEFAULT_LOCAL_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:54321/opsbuffer";

/// How long waits for replication or draining may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(30);

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

pub fn main_url() -> String {
    env_or("MAIN_DB_URL", DEFAULT_MAIN_URL)
}

pub fn local_url() -> String {
    env_or("LOCAL_DB_URL", DEFAULT_LOCAL_URL)
}

pub fn redis_url() -> String {
    env_or("REDIS_URL", DEFAULT_REDIS_URL)
}

/// Connects with a driver task; panics with the URL when it cannot.
pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio::time::timeout(Duration::from_secs(10), tokio_postgres::connect(url, NoTls))
        .await
        .unwrap_or_else(|_| panic!("connecting to {url} timed out; run scripts/services.sh start"))
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}; run scripts/services.sh start"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Superuser connections to main and the replica.
pub struct Admin {
    pub main: Client,
    pub local: Client,
}

static MIGRATED: OnceCell<()> = OnceCell::const_new();

/// Serializes tests that pause replica replay (a server-wide switch)
/// against tests that need replication to move: pausing tests take it for
/// writing, all others for reading.
pub static REPLAY: RwLock<()> = RwLock::const_new(());

/// Applies the migrations to main once per test process, then waits until
/// the replica has replayed main's WAL past them. An engine started
/// afterwards finds every migrated table in local's catalog.
pub async fn migrate() {
    MIGRATED
        .get_or_init(|| async {
            opsbuffer_pg::migrate::run(&pg_settings("main", &main_url())).await.expect("migrations apply to main");
            let main = connect(&env_or("MAIN_ADMIN_URL", DEFAULT_MAIN_ADMIN_URL)).await;
            let local = connect(&env_or("LOCAL_ADMIN_URL", DEFAULT_LOCAL_ADMIN_URL)).await;
            let lsn: String = main
                .query_one("SELECT pg_current_wal_lsn()::text", &[])
                .await
                .expect("read main's WAL position")
                .get(0);
            let deadline = Instant::now() + WAIT;
            loop {
                let replayed: bool = local
                    .query_one("SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)", &[&lsn])
                    .await
                    .expect("read the replica's replay position")
                    .get(0);
                if replayed {
                    return;
                }
                assert!(Instant::now() < deadline, "the replica did not replay the migrations up to {lsn}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
}

/// Applies the migrations once per test process and returns superuser
/// connections.
pub async fn admin() -> Admin {
    migrate().await;
    Admin {
        main: connect(&env_or("MAIN_ADMIN_URL", DEFAULT_MAIN_ADMIN_URL)).await,
        local: connect(&env_or("LOCAL_ADMIN_URL", DEFAULT_LOCAL_ADMIN_URL)).await,
    }
}

impl Admin {
    /// Creates a program, an obs unit, an instrument and a module on main,
    /// all unique to this call, and waits until the replica has them.
    pub async fn reference_data(&self) -> Reference {
        let tag = uuid::Uuid::now_v7().simple().to_string();
        let program: i32 = self
            .main
            .query_one(
                "INSERT INTO observing_program (short_name, title) VALUES ($1, 'test program') RETURNING id",
                &[&format!("test-{tag}")],
            )
            .await
            .expect("insert observing_program")
            .get(0);
        let obs_unit: i32 = self
            .main
            .query_one(
                "INSERT INTO obs_unit (observing_program_id, name, target, scan_type) VALUES ($1, 'unit', 'Jupiter', 'constant_el') RETURNING id",
                &[&program],
            )
            .await
            .expect("insert obs_unit")
            .get(0);
        let second_obs_unit: i32 = self
            .main
            .query_one(
                "INSERT INTO obs_unit (observing_program_id, name, target, scan_type) VALUES ($1, 'unit 2', 'Mars', 'constant_el') RETURNING id",
                &[&program],
            )
            .await
            .expect("insert obs_unit")
            .get(0);
        let instrument: i32 = self
            .main
            .query_one(
                "INSERT INTO instrument (name, telescope, kind) VALUES ($1, 'FYST', 'camera') RETURNING id",
                &[&format!("cam-{tag}")],
            )
            .await
            .expect("insert instrument")
            .get(0);
        let module: i32 = self
            .main
            .query_one(
                "INSERT INTO instrument_module (instrument_id, name) VALUES ($1, 'f280') RETURNING id",
                &[&instrument],
            )
            .await
            .expect("insert instrument_module")
            .get(0);
        self.wait_local("SELECT count(*) FROM instrument_module WHERE id = $1", module).await;
        Reference { program, obs_unit, second_obs_unit, instrument, module, tag }
    }

    /// Waits until a count query on the replica with one integer parameter
    /// returns at least 1.
    pub async fn wait_local(&self, sql: &str, id: i32) {
        let deadline = Instant::now() + WAIT;
        loop {
            let count: i64 = self.local.query_one(sql, &[&id]).await.expect("count on the replica").get(0);
            if count > 0 {
                return;
            }
            assert!(Instant::now() < deadline, "the replica did not receive row {id} for {sql}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn pause_replay(&self) {
        self.local.execute("SELECT pg_wal_replay_pause()", &[]).await.expect("pause replay");
    }

    pub async fn resume_replay(&self) {
        self.local.execute("SELECT pg_wal_replay_resume()", &[]).await.expect("resume replay");
    }
}

/// Reference rows a test may point its records at.
#[derive(Debug, Clone)]
pub struct Reference {
    pub program: i32,
    pub obs_unit: i32,
    pub second_obs_unit: i32,
    pub instrument: i32,
    pub module: i32,
    /// Unique text for names of this test's records.
    pub tag: String,
}

fn pg_settings(label: &'static str, url: &str) -> PgSettings {
    PgSettings {
        url: url.to_owned(),
        label,
        connect_timeout: Duration::from_secs(3),
        statement_timeout: Duration::from_secs(20),
        pool_size: 8,
    }
}

/// How a test site runs.
#[derive(Debug, Clone)]
pub struct SiteOptions {
    pub site_type: SiteType,
    /// Run the drainer and the watcher.
    pub background: bool,
    /// Put a fault proxy in front of main.
    pub proxy_main: bool,
    pub drain: DrainSettings,
    pub max_pending: u64,
    pub lsn_check_interval: Duration,
    /// Who may call the API. Authentication is off by default, so
    /// scenario tests need no token; `SiteOptions::with_auth` turns it on.
    pub auth: AuthSettings,
    pub lsn_timeout: Duration,
    /// Another local database than the replica (for example main itself).
    pub local_url: Option<String>,
    /// Another Redis than the project's.
    pub redis_url: Option<String>,
    pub allow_unsafe_redis: bool,
}

impl Default for SiteOptions {
    fn default() -> Self {
        SiteOptions {
            site_type: SiteType::Secondary,
            background: true,
            proxy_main: true,
            drain: DrainSettings {
                retry_initial: Duration::from_millis(20),
                retry_max: Duration::from_millis(500),
                batch_timeout: Duration::from_secs(3),
                lease_ttl: Duration::from_secs(6),
                idle_poll: Duration::from_millis(20),
                ..DrainSettings::default()
            },
            max_pending: 0,
            lsn_check_interval: Duration::from_millis(20),
            auth: AuthSettings::disabled(),
            lsn_timeout: Duration::from_secs(30),
            local_url: None,
            redis_url: None,
            allow_unsafe_redis: false,
        }
    }
}

impl SiteOptions {
    /// The defaults with bearer tokens required and `open` endpoints left
    /// open, as `AUTH_REQUIRED=true` and `AUTH_OPEN_ENDPOINTS` set them.
    pub fn with_auth(open: &[OpenEndpoint]) -> SiteOptions {
        SiteOptions { auth: AuthSettings { required: true, open_endpoints: open.to_vec() }, ..SiteOptions::default() }
    }
}

/// The configuration of a test site whose main is reached at `main`.
pub fn site_config(options: &SiteOptions, site_name: &str, main: &str) -> SiteConfig {
    let local = match (&options.local_url, options.site_type) {
        (Some(url), _) => url.clone(),
        (None, SiteType::Main) => main.to_owned(),
        (None, SiteType::Secondary) => local_url(),
    };
    SiteConfig {
        site_name: site_name.to_owned(),
        site_type: options.site_type,
        main: pg_settings("main", main),
        local: pg_settings("local", &local),
        redis: BufferSettings {
            url: options.redis_url.clone().unwrap_or_else(redis_url),
            site: site_name.to_owned(),
            timeout: Duration::from_secs(5),
            retention: Duration::from_secs(3600),
        },
        schemas: vec!["public".into()],
        lsn_check_interval: options.lsn_check_interval,
        lsn_timeout: options.lsn_timeout,
        drain: options.drain.clone(),
        max_pending: options.max_pending,
        allow_unsafe_redis: options.allow_unsafe_redis,
        startup_timeout: Duration::from_secs(20),
        auth: options.auth.clone(),
    }
}

/// A site API running in the test process.
pub struct TestSite {
    pub engine: Arc<Engine>,
    pub base: String,
    pub http: reqwest::Client,
    pub proxy: Option<FaultProxy>,
    pub site_name: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl TestSite {
    pub async fn start(options: SiteOptions) -> TestSite {
        let site_name = format!("t-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
        Self::start_named(options, site_name).await
    }

    /// Starts a site on an existing site name, as a second process on the
    /// same Redis would.
    pub async fn start_named(options: SiteOptions, site_name: String) -> TestSite {
        init_logging();
        migrate().await;
        let proxy = if options.proxy_main {
            let upstream = host_port(&main_url());
            Some(FaultProxy::start(upstream).await.expect("start the fault proxy"))
        } else {
            None
        };
        let main = match &proxy {
            Some(p) => replace_host_port(&main_url(), p.address()),
            None => main_url(),
        };
        let config = site_config(&options, &site_name, &main);
        let engine = Engine::start(config).await.expect("engine starts");
        let mut tasks = Vec::new();
        if options.background && options.site_type == SiteType::Secondary {
            tasks.push(opsbuffer_engine::drain::Drainer::new(engine.clone()).spawn());
            tasks.push(opsbuffer_engine::watch::spawn(engine.clone()));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let app = opsbuffer_http::router(engine.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client");
        TestSite { engine, base: format!("http://{address}"), http, proxy, site_name, tasks, server }
    }

    /// Sends a request and returns the status and JSON body.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(method, path, body, None).await
    }

    /// Sends a request with `Authorization: Bearer <token>` when a token is
    /// given, and returns the status and JSON body.
    pub async fn call_as(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    /// Sends a raw body (for malformed JSON).
    pub async fn post_raw(&self, path: &str, body: &'static str) -> (u16, Value) {
        let response = self.http.post(format!("{}{path}", self.base)).body(body).send().await.expect("send");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Starts an executed obs unit and returns its id.
    pub async fn start_unit(&self, obs_unit: i32) -> String {
        let (status, body) = self
            .post("/executed_obs_units/start", json!({"obs_unit_id": obs_unit, "start_time": "2026-10-01T10:40:00Z"}))
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().expect("id").to_owned()
    }

    /// The records of a `/records` query.
    pub async fn records(&self, path_and_query: &str) -> Vec<Value> {
        let (status, body) = self.get(path_and_query).await;
        assert_eq!(status, 200, "{path_and_query}: {body}");
        body["records"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until a transaction reaches `state` (or a later one).
    pub async fn wait_transaction(&self, transaction_id: &str, states: &[&str]) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, body) = self.get(&format!("/transactions/{transaction_id}")).await;
            if status == 200 && states.iter().any(|s| body["state"] == *s) {
                return body;
            }
            assert!(Instant::now() < deadline, "transaction {transaction_id} did not reach {states:?}: {body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the buffer holds nothing queued, blocked or waiting for
    /// replication.
    pub async fn wait_drained(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let stats = self.engine.buffer.stats().await.expect("stats");
            if stats.queued == 0 && stats.blocked == 0 && stats.applied_waiting_replication == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "the buffer did not drain: {stats:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn proxy(&self) -> &FaultProxy {
        self.proxy.as_ref().expect("this site has a proxy in front of main")
    }

    /// Every Redis key of this site with its type and content, for
    /// comparing the buffer before and after a request.
    pub async fn redis_dump(&self) -> Vec<(String, String)> {
        let client = redis::Client::open(redis_url()).expect("redis url");
        let mut connection = client.get_multiplexed_async_connection().await.expect("redis connection");
        let pattern = format!("{{{}}}:*", self.site_name);
        let mut keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut connection).await.expect("KEYS");
        keys.sort();
        let mut out = Vec::new();
        for key in keys {
            // The drainer lease is renewed in the background; it is not part
            // of the buffer's content.
            if key.ends_with(":drainer") || key.ends_with(":fence") {
                continue;
            }
            let dump: Option<Vec<u8>> = redis::cmd("DUMP").arg(&key).query_async(&mut connection).await.expect("DUMP");
            out.push((key, format!("{dump:?}")));
        }
        out
    }

    /// Aborts the drainer, watcher and server without any clean-up, as a
    /// crash would: the drainer lease stays until it expires.
    pub fn crash(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        self.server.abort();
    }

    /// Stops background tasks and the server.
    pub async fn stop(self) {
        self.engine.shut_down();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        self.server.abort();
    }
}

fn host_port(url: &str) -> SocketAddr {
    let config: tokio_postgres::Config = url.parse().expect("database URL");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let host = if host == "localhost" { "127.0.0.1".to_owned() } else { host };
    format!("{host}:{port}").parse().expect("host:port")
}

/// Points a database URL at another host and port.
pub fn replace_host_port(url: &str, address: SocketAddr) -> String {
    let original = host_port(url);
    url.replace(&format!("{}:{}", original.ip(), original.port()), &address.to_string())
        .replace(&format!("localhost:{}", original.port()), &address.to_string())
}

fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_env("TEST_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}

/// The `opsbuffer` binary next to the test executable, built by
/// `cargo build --workspace` (scripts/test.sh does so first).
pub fn opsbuffer_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target profile directory");
    let binary = dir.join("opsbuffer");
    assert!(
        binary.exists(),
        "{} is missing; run cargo build --workspace first (scripts/test.sh does)",
        binary.display()
    );
    binary
}

/// Polls `check` until it returns `Some`, failing the test after `WAIT`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the `opsbuffer` binary with only the given environment (plus
/// `PATH`), so variables of the calling shell cannot change the result.
/// Migrates the services first, as a site start does. Returns the exit status, standard output and standard error.
pub async fn run_opsbuffer(args: &[&str], env: &[(&str, String)]) -> (std::process::ExitStatus, String, String) {
    migrate().await;
    let mut command = tokio::process::Command::new(opsbuffer_binary());
    command.args(args).env_clear().env("NO_COLOR", "1");
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .unwrap_or_else(|_| panic!("opsbuffer {args:?} did not finish within 120 s"))
        .unwrap_or_else(|e| panic!("cannot run opsbuffer {args:?}: {e}"));
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The environment that points the `opsbuffer` binary at the services,
/// for the site `site_name`.
pub fn service_env(site_name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("MAIN_DB_URL", main_url()),
        ("LOCAL_DB_URL", local_url()),
        ("REDIS_URL", redis_url()),
        ("SITE_NAME", site_name.to_owned()),
    ]
}
