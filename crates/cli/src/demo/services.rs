//! Processes and connections of the demo: the fault proxy in front of main,
//! the site API as a child process, and superuser connections to main and
//! to the replica.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use opsbuffer_proxy::FaultProxy;
use tokio::process::{Child, Command};

use super::api::Api;
use crate::settings::Connections;

/// Maximum time for one statement of the demo's own database sessions.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
const DB_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Maximum time the API may take to respond to `/health` after it was spawned.
const API_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Maximum time the API may take to exit after SIGTERM before it is killed.
const API_STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Maximum delay between the drainer's retries while main is unreachable.
/// The service's default of 30 s would leave the demo idle for up to that
/// long after main comes back.
const DRAIN_RETRY_MAX: &str = "2s";

/// Runs `future` under `limit`, naming `what` when it times out.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    future: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(limit, future).await {
        Ok(result) => result,
        Err(_) => bail!("{what} timed out after {limit:?}"),
    }
}

/// Opens a session on a PostgreSQL URL with connect and statement timeouts.
pub async fn connect_db(url: &str, label: &str) -> anyhow::Result<tokio_postgres::Client> {
    let mut config = tokio_postgres::Config::from_str(url).with_context(|| format!("invalid {label} URL"))?;
    config.connect_timeout(DB_CONNECT_TIMEOUT);
    config.options(format!("-c statement_timeout={}", STATEMENT_TIMEOUT.as_millis()));
    let (client, connection) = within(DB_CONNECT_TIMEOUT * 2, &format!("connecting to {label}"), async {
        config.connect(tokio_postgres::NoTls).await.with_context(|| format!("cannot connect to {label}"))
    })
    .await?;
    let label = label.to_owned();
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("demo: the {label} session ended: {error}");
        }
    });
    Ok(client)
}

/// Resolves the socket address of the first host of a PostgreSQL URL.
pub async fn database_address(url: &str) -> anyhow::Result<SocketAddr> {
    let parsed = url::Url::parse(url).context("MAIN_DB_URL must be a postgres:// URL")?;
    let host = parsed
        .host_str()
        .ok_or_else(|| anyhow!("MAIN_DB_URL has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed.port().unwrap_or(5432);
    let mut addresses = within(DB_CONNECT_TIMEOUT, "resolving the main database host", async {
        tokio::net::lookup_host((host.as_str(), port)).await.with_context(|| format!("cannot resolve {host}"))
    })
    .await?;
    addresses.next().ok_or_else(|| anyhow!("{host} resolves to no address"))
}

/// `url` with its host and port replaced by `address`.
pub fn url_through(url: &str, address: SocketAddr) -> anyhow::Result<String> {
    let mut parsed = url::Url::parse(url).context("MAIN_DB_URL must be a postgres:// URL")?;
    parsed.set_ip_host(address.ip()).map_err(|()| anyhow!("cannot set the host of {url}"))?;
    parsed.set_port(Some(address.port())).map_err(|()| anyhow!("cannot set the port of {url}"))?;
    Ok(parsed.to_string())
}

/// Starts the fault proxy on loopback in front of main.
pub async fn start_proxy(main_db_url: &str) -> anyhow::Result<FaultProxy> {
    let upstream = database_address(main_db_url).await?;
    FaultProxy::start(upstream).await.context("cannot start the fault proxy")
}

/// The site API running as a child process of the demo.
pub struct ApiProcess {
    child: Child,
    pub base_url: String,
    pub log_path: PathBuf,
}

/// Returns a free TCP port on loopback. Another process may take it before
/// the API binds it. The API then fails to start and the demo reports it.
fn free_loopback_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

impl ApiProcess {
    /// Spawns `<this executable> serve` for `site_name`, with main reached
    /// through `main_db_url`, logging to a file in `log_dir`.
    pub fn spawn(
        connections: &Connections,
        main_db_url: &str,
        site_name: &str,
        log_dir: &Path,
    ) -> anyhow::Result<ApiProcess> {
        std::fs::create_dir_all(log_dir).with_context(|| format!("cannot create {}", log_dir.display()))?;
        let log_path = log_dir.join(format!("api-{site_name}.log"));
        let log = std::fs::File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
        let port = free_loopback_port()?;
        let executable = std::env::current_exe().context("cannot find the opsbuffer executable")?;
        let millis = |d: Duration| format!("{}ms", d.as_millis());

        let child = Command::new(executable)
            .arg("serve")
            .env("MAIN_DB_URL", main_db_url)
            .env("LOCAL_DB_URL", &connections.local_db_url)
            .env("REDIS_URL", &connections.redis_url)
            .env("SITE_NAME", site_name)
            .env("SITE_TYPE", "secondary")
            // The demo's client sends no token.
            .env("AUTH_REQUIRED", "false")
            .env("API_LISTEN", format!("127.0.0.1:{port}"))
            .env("DB_CONNECT_TIMEOUT", millis(connections.db_connect_timeout))
            .env("DB_STATEMENT_TIMEOUT", millis(connections.db_statement_timeout))
            .env("DB_POOL_SIZE", connections.db_pool_size.to_string())
            .env("REDIS_TIMEOUT", millis(connections.redis_timeout))
            .env("DB_SCHEMAS", connections.db_schemas.join(","))
            .env("DRAIN_RETRY_MAX", DRAIN_RETRY_MAX)
            .env("LOG_FORMAT", "text")
            // The log goes to a file, so no terminal colour codes.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start `opsbuffer serve`")?;
        Ok(ApiProcess { child, base_url: format!("http://127.0.0.1:{port}"), log_path })
    }

    /// Waits until `/health` responds, or fails when the process exits or
    /// the wait times out.
    pub async fn wait_ready(&mut self, api: &Api) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the API exited during start-up ({status}); see {}", self.log_path.display());
            }
            if api.health().await.is_ok() {
                return Ok(());
            }
            if started.elapsed() > API_READY_TIMEOUT {
                bail!(
                    "the API did not respond to /health within {API_READY_TIMEOUT:?}; see {}",
                    self.log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit, killing the process if it
    /// does not exit in time.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) takes no pointers. The pid is our own child,
            // which has not been reaped yet, so it cannot name another process.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        match tokio::time::timeout(API_STOP_TIMEOUT, self.child.wait()).await {
            Ok(status) => {
                status?;
                Ok(())
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("the API did not stop within {API_STOP_TIMEOUT:?} of SIGTERM and was killed")
            }
        }
    }
}

/// Pauses or resumes WAL replay on the replica and waits until the replica
/// reports the new state.
pub async fn set_replay_paused(local_admin: &tokio_postgres::Client, paused: bool) -> anyhow::Result<()> {
    let (function, expected) =
        if paused { ("pg_wal_replay_pause", "paused") } else { ("pg_wal_replay_resume", "not paused") };
    within(STATEMENT_TIMEOUT, function, async {
        local_admin
            .execute(&format!("SELECT {function}()"), &[])
            .await
            .with_context(|| format!("{function}() failed on the replica"))?;
        loop {
            let row = local_admin.query_one("SELECT pg_get_wal_replay_pause_state()", &[]).await?;
            let state: String = row.get(0);
            if state == expected {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}
