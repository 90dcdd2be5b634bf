//! Connections to PostgreSQL with the session settings every query here
//! relies on, and the adapter's error type.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

/// Session settings the text forms of values depend on: UTC times in ISO
/// format and floats printed shortest-exact.
const SESSION_OPTIONS: &str = "-c TimeZone=UTC -c DateStyle=ISO,YMD -c extra_float_digits=1 -c IntervalStyle=postgres";

/// How to reach one database and how long to wait for it.
#[derive(Debug, Clone)]
pub struct PgSettings {
    pub url: String,
    /// Label used in logs and errors, e.g. `main` or `local`.
    pub label: &'static str,
    pub connect_timeout: Duration,
    /// Longest a statement may run on the server (`statement_timeout`); the
    /// client waits a little longer before giving up on the connection.
    pub statement_timeout: Duration,
    pub pool_size: usize,
}

/// An error of the PostgreSQL adapter.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("invalid {label} database URL: {message}")]
    InvalidUrl { label: &'static str, message: String },
    #[error("{label}: {what} timed out after {after:?}")]
    Timeout { label: &'static str, what: String, after: Duration },
    #[error("{label}: no connection available: {message}")]
    Pool { label: &'static str, message: String },
    #[error("{label}: {}", describe(.source))]
    Db { label: &'static str, source: tokio_postgres::Error },
    #[error("{label}: {message}")]
    Decode { label: &'static str, message: String },
}

impl PgError {
    pub fn db(label: &'static str, source: tokio_postgres::Error) -> PgError {
        PgError::Db { label, source }
    }

    /// The SQLSTATE of a server error.
    pub fn sqlstate(&self) -> Option<&SqlState> {
        match self {
            PgError::Db { source, .. } => source.code(),
            _ => None,
        }
    }

    /// Whether waiting and trying again may succeed: connection failures,
    /// timeouts, and servers that are shutting down, starting or read-only.
    pub fn is_transient(&self) -> bool {
        match self {
            PgError::Timeout { .. } | PgError::Pool { .. } => true,
            PgError::Db { source, .. } => match source.code() {
                None => true,
                Some(code) => is_transient_sqlstate(code.code()),
            },
            PgError::InvalidUrl { .. } | PgError::Decode { .. } => false,
        }
    }
}

/// SQLSTATE classes retrying can fix: connection exceptions (08), a
/// read-only transaction (25006, main in recovery), serialization and
/// deadlock (40), insufficient resources (53), lock or query cancelled
/// (55P03, 57014), operator intervention (57P0x) and system errors (58).
pub fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code == "25006"
        || code.starts_with("40")
        || code.starts_with("53")
        || code == "55P03"
        || code.starts_with("57")
        || code.starts_with("58")
}

/// A server error as one line: message, SQLSTATE, constraint and detail.
pub fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!("{} (SQLSTATE {}", db.message(), db.code().code());
            if let Some(constraint) = db.constraint() {
                text.push_str(&format!(", constraint {constraint}"));
            }
            text.push(')');
            if let Some(detail) = db.detail() {
                text.push_str(&format!(": {detail}"));
            }
            text
        }
        None => error.to_string(),
    }
}

/// Parses the URL and adds the session settings and timeouts.
pub fn config(settings: &PgSettings) -> Result<Config, PgError> {
    let mut config: Config = settings
        .url
        .parse()
        .map_err(|e: tokio_postgres::Error| PgError::InvalidUrl { label: settings.label, message: e.to_string() })?;
    let statement_ms = settings.statement_timeout.as_millis();
    config
        .options(format!("{SESSION_OPTIONS} -c statement_timeout={statement_ms}"))
        .connect_timeout(settings.connect_timeout)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .application_name("opsbuffer");
    Ok(config)
}

/// A pool of connections. Connections open lazily, so building the pool
/// never waits for the server.
pub fn pool(settings: &PgSettings) -> Result<Pool, PgError> {
    // TODO: TLS. Connections use NoTls, so a main reached over the internet
    // needs a tunnel (VPN or SSH) until a rustls connector is added.
    let manager =
        Manager::from_config(config(settings)?, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(settings.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(settings.connect_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(settings.connect_timeout))
        .build()
        .map_err(|e| PgError::Pool { label: settings.label, message: e.to_string() })
}

/// One dedicated connection; the returned task drives it and can be aborted
/// to drop the connection at once.
pub async fn connect(settings: &PgSettings) -> Result<(Client, JoinHandle<()>), PgError> {
    let config = config(settings)?;
    let label = settings.label;
    let connecting = config.connect(NoTls);
    let (client, connection) = tokio::time::timeout(settings.connect_timeout + Duration::from_secs(1), connecting)
        .await
        .map_err(|_| PgError::Timeout { label, what: "connect".into(), after: settings.connect_timeout })?
        .map_err(|e| PgError::db(label, e))?;
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(database = label, error = %error, "connection closed with an error");
        }
    });
    Ok((client, driver))
}

/// Gets a pooled connection, mapping pool errors.
pub async fn pooled(pool: &Pool, label: &'static str) -> Result<deadpool_postgres::Object, PgError> {
    pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(source) => PgError::db(label, source),
        other => PgError::Pool { label, message: other.to_string() },
    })
}

/// Runs a future under a timeout, naming what timed out.
pub async fn with_timeout<T>(
    label: &'static str,
    what: &str,
    after: Duration,
    future: impl Future<Output = Result<T, PgError>>,
) -> Result<T, PgError> {
    tokio::time::timeout(after, future)
        .await
        .unwrap_or_else(|_| Err(PgError::Timeout { label, what: what.to_owned(), after }))
}
