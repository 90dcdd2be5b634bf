//! The service under test: `opsbuffer serve` as a child process, with main
//! reached through an in-process fault proxy so a scenario can make main
//! unreachable or slow.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use opsbuffer_proxy::FaultProxy;
use tokio::process::{Child, Command};

use crate::api::Api;
use crate::config::{Settings, loopback_address, url_through};
use crate::redis_probe::RedisProbe;

/// Maximum time from spawning the service to its first response to `/health`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Maximum time from SIGTERM to the service's exit; it is killed after that.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Settings the child gets unless the environment sets them. The drainer's
/// default backoff grows to 30 s while main is down, which would add up to
/// 30 s of idle time after main comes back in the drain scenario.
const CHILD_DEFAULTS: &[(&str, &str)] = &[("DRAIN_RETRY_INITIAL", "50ms"), ("DRAIN_RETRY_MAX", "1s")];

/// Sites started by this process whose Redis keys are not removed yet.
/// The exit path removes them after an error or an interrupt.
pub static LIVE_SITES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Whether main is reachable while a service starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Main {
    Up,
    Down,
}

/// A running `opsbuffer serve` and the proxy in front of its main.
pub struct Service {
    child: Child,
    pid: u32,
    pub api: Api,
    pub site: String,
    pub proxy: FaultProxy,
    pub log_path: PathBuf,
}

/// Resident memory of a process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy)]
pub struct ProcessMemory {
    /// `VmRSS`: resident now.
    pub rss_bytes: u64,
    /// `VmHWM`: the highest resident size so far.
    pub peak_bytes: u64,
}

impl Service {
    /// Starts a service for a new site named after `scenario` and waits
    /// until it responds to `/health`.
    pub async fn start(settings: &Settings, scenario: &str, main: Main) -> anyhow::Result<Service> {
        let site = format!("bench-{}-{scenario}", settings.run_tag);
        let proxy = FaultProxy::start(loopback_address(&settings.urls.main)?)
            .await
            .context("cannot start the fault proxy in front of main")?;
        if main == Main::Down {
            proxy.go_down();
        }
        let main_url = url_through(&settings.urls.main, proxy.address())?;

        std::fs::create_dir_all(&settings.log_dir)
            .with_context(|| format!("cannot create {}", settings.log_dir.display()))?;
        let log_path = settings.log_dir.join(format!("{site}.log"));
        let log = std::fs::File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
        let port = free_loopback_port()?;

        let mut command = Command::new(&settings.binary);
        command
            .arg("serve")
            .env("SITE_NAME", &site)
            .env("SITE_TYPE", "secondary")
            .env("AUTH_REQUIRED", "false")
            .env("MAIN_DB_URL", &main_url)
            .env("LOCAL_DB_URL", &settings.urls.local)
            .env("REDIS_URL", &settings.urls.redis)
            .env("API_LISTEN", format!("127.0.0.1:{port}"))
            .env("NO_COLOR", "1");
        for (name, value) in CHILD_DEFAULTS {
            if std::env::var_os(name).is_none() {
                command.env(name, value);
            }
        }
        command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).kill_on_drop(true);
        // SAFETY: the closure runs in the forked child before exec and only
        // calls prctl(2), which is async-signal-safe. It makes the kernel
        // send SIGKILL to the service if the load generator dies first.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().with_context(|| format!("cannot start {} serve", settings.binary.display()))?;
        let pid = child.id().context("the service exited at once")?;
        LIVE_SITES.lock().expect("site list lock").push(site.clone());

        let api = Api::new(format!("http://127.0.0.1:{port}"))?;
        let mut service = Service { child, pid, api, site, proxy, log_path };
        service.wait_ready().await?;
        Ok(service)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the service exited during start-up ({status}); see {}", self.log_path.display());
            }
            if let Ok(reply) = self.api.get("/health").await
                && reply.status == 200
            {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "the service did not respond to /health within {READY_TIMEOUT:?}; see {}",
                    self.log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reads the service's resident memory now.
    pub fn memory(&self) -> anyhow::Result<ProcessMemory> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("{path} has no {name}"))?;
            let kib: u64 = line
                .trim_start_matches(name)
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("invalid {name} line {line:?}"))?;
            Ok(kib * 1024)
        };
        Ok(ProcessMemory { rss_bytes: field("VmRSS:")?, peak_bytes: field("VmHWM:")? })
    }

    /// Sends SIGTERM, waits for the exit (killing the process after
    /// `STOP_TIMEOUT`), then removes the site's keys from Redis.
    pub async fn stop(mut self, redis: &RedisProbe) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_none() {
            // SAFETY: kill(2) takes no pointers. The pid is this process's
            // own child, not reaped yet, so it names no other process.
            unsafe {
                libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
            }
            if tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await.is_err() {
                eprintln!("load: the service of {} did not stop within {STOP_TIMEOUT:?}; killing it", self.site);
                self.child.kill().await?;
            }
        }
        remove_site(redis, &self.site).await
    }
}

/// Removes a site's keys and drops the site from `LIVE_SITES`.
pub async fn remove_site(redis: &RedisProbe, site: &str) -> anyhow::Result<()> {
    redis.delete_site(site).await.with_context(|| format!("cannot remove the Redis keys of site {site}"))?;
    LIVE_SITES.lock().expect("site list lock").retain(|s| s != site);
    Ok(())
}

/// Starts a service, runs `body` with it and stops it, also when `body`
/// fails. The site's Redis keys are removed afterwards either way.
pub async fn with_service<T>(
    settings: &Settings,
    redis: &RedisProbe,
    scenario: &str,
    main: Main,
    body: impl AsyncFnOnce(&Service) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let service = Service::start(settings, scenario, main).await?;
    let result = body(&service).await;
    let log_path = service.log_path.clone();
    let stopped = service.stop(redis).await;
    match (result, stopped) {
        (Ok(value), Ok(())) => Ok(value),
        (Err(error), _) => Err(error.context(format!("service log: {}", log_path.display()))),
        (Ok(_), Err(error)) => Err(error),
    }
}

/// Returns a free TCP port on loopback. Another process may take it before
/// the service binds it. The service then fails to start and logs why.
fn free_loopback_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}
