//! The engine: the state one site's service shares between requests and
//! background tasks, and its start-up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use opsbuffer_core::lsn::Lsn;
use opsbuffer_core::schema::{Registry, Table};
use opsbuffer_pg::catalog::load_registry;
use opsbuffer_pg::connect::pool;
use opsbuffer_pg::reader::{Reader, ServerStatus};
use opsbuffer_pg::writer::Writer;
use opsbuffer_redis::{Buffer, Persistence};
use tokio::sync::{Notify, watch};

use crate::cache::OverlayCache;
use crate::config::{SiteConfig, SiteType, redact_url};
use crate::error::EngineError;
use crate::metrics::{Metrics, StateLabels, lsn_gauge};
use crate::tokens::{TOKEN_TABLE, TokenCache};

/// Tables of the registry that clients cannot name: the engine reads and
/// writes them, the HTTP layer's table lookups leave them out.
pub const INTERNAL_TABLES: &[&str] = &[TOKEN_TABLE];

/// What the drainer last did, for `/health`.
#[derive(Debug, Clone, Default)]
pub struct DrainStatus {
    /// Whether this process holds the drainer lease.
    pub active: bool,
    /// The holder of the lease as last seen, this process or another.
    pub holder: Option<String>,
    pub last_commit_lsn: Option<Lsn>,
    pub last_error: Option<String>,
    pub applied_total: u64,
    /// Batches committed on main; with `applied_total` it gives the mean
    /// batch size.
    pub batches_total: u64,
    pub dead_lettered_total: u64,
}

/// What the watcher last read from local, for `/health`.
#[derive(Debug, Clone, Default)]
pub struct ReplicationStatus {
    pub last: Option<ServerStatus>,
    pub last_error: Option<String>,
    /// Set when an applied transaction has waited longer than `LSN_TIMEOUT`.
    pub overdue: bool,
    pub evicted_total: u64,
}

/// The shared state of one site's service.
pub struct Engine {
    pub config: SiteConfig,
    /// Local: the replica at a secondary site, main itself at a main site.
    pub local: Reader,
    /// Main, for health checks (the drainer has its own connection).
    pub main: Reader,
    pub buffer: Buffer,
    registry: RwLock<(u64, Arc<Registry>)>,
    /// The registry less [`INTERNAL_TABLES`], rebuilt with `registry`.
    client_registry: RwLock<Arc<Registry>>,
    registry_generation: AtomicU64,
    pub(crate) cache: OverlayCache,
    /// When local last showed each referenced record, by (table, key); see
    /// `Engine::merged_exists`.
    pub(crate) seen_in_local: Mutex<HashMap<(String, String), Instant>>,
    /// Applies writes at a main site, one transaction at a time so commit
    /// order is acknowledgement order.
    pub(crate) main_writer: tokio::sync::Mutex<Writer>,
    /// Wakes the drainer when this process queues a transaction.
    pub(crate) queued: Notify,
    /// Wakes the watcher when the drainer applied something.
    pub(crate) applied: Notify,
    pub(crate) drain_status: Mutex<DrainStatus>,
    pub(crate) replication_status: Mutex<ReplicationStatus>,
    pub(crate) persistence: Mutex<Option<Persistence>>,
    shutdown: watch::Sender<bool>,
    /// Identifies this process as a lease holder.
    pub holder_id: String,
    pub started: Instant,
    pub metrics: Metrics,
    pub(crate) tokens: TokenCache,
}

impl Engine {
    /// Connects, checks Redis durability (secondary sites) and loads the
    /// schema registry from local, waiting up to `startup_timeout` for
    /// each service to answer.
    pub async fn start(config: SiteConfig) -> Result<Arc<Engine>, EngineError> {
        let engine = Engine::unchecked(config)?;
        if engine.config.site_type == SiteType::Secondary {
            engine.check_redis_durability().await?;
        }
        engine.reload_registry_waiting().await?;
        Ok(engine)
    }

    /// Builds the engine without contacting any service and with an empty
    /// schema registry: enough for [`Engine::health`] while a service is
    /// down (`opsbuffer status`), not for reads or writes.
    pub fn unchecked(config: SiteConfig) -> Result<Arc<Engine>, EngineError> {
        config.drain.validate().map_err(|message| EngineError::unavailable("invalid_configuration", message, 0))?;
        let local = Reader::new(pool(&config.local)?, "local", config.local.statement_timeout + Duration::from_secs(1));
        let main = Reader::new(pool(&config.main)?, "main", config.main.connect_timeout + Duration::from_secs(1));
        let buffer = Buffer::new(&config.redis)?;
        let writer = Writer::new(config.main.clone(), config.site_name.clone(), config.drain.batch_timeout);
        let (shutdown, _) = watch::channel(false);
        let holder_id = format!("{}-{}", hostname(), uuid::Uuid::now_v7().simple());

        let engine = Arc::new(Engine {
            local,
            main,
            buffer,
            registry: RwLock::new((0, Arc::new(Registry::default()))),
            client_registry: RwLock::new(Arc::new(Registry::default())),
            registry_generation: AtomicU64::new(0),
            cache: OverlayCache::default(),
            seen_in_local: Mutex::new(HashMap::new()),
            main_writer: tokio::sync::Mutex::new(writer),
            queued: Notify::new(),
            applied: Notify::new(),
            drain_status: Mutex::new(DrainStatus::default()),
            replication_status: Mutex::new(ReplicationStatus::default()),
            persistence: Mutex::new(None),
            shutdown,
            holder_id,
            started: Instant::now(),
            metrics: Metrics::new(),
            tokens: TokenCache::default(),
            config,
        });
        Ok(engine)
    }

    async fn check_redis_durability(&self) -> Result<(), EngineError> {
        let deadline = Instant::now() + self.config.startup_timeout;
        let persistence = loop {
            match self.buffer.persistence().await {
                Ok(p) => break p,
                Err(error) if Instant::now() < deadline => {
                    tracing::warn!(redis = %redact_url(&self.config.redis.url), %error, "waiting for Redis");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => {
                    return Err(EngineError::unavailable(
                        "redis_unreachable",
                        format!(
                            "Redis at {} did not answer within {:?}: {error}",
                            redact_url(&self.config.redis.url),
                            self.config.startup_timeout
                        ),
                        5,
                    ));
                }
            }
        };
        *self.persistence.lock().expect("persistence lock") = Some(persistence.clone());
        if persistence.is_synchronous() {
            tracing::info!(appendfsync = "always", "Redis persists every write before replying");
            return Ok(());
        }
        let described = format!(
            "appendonly={}, appendfsync={}",
            persistence.appendonly.map_or("unknown".to_owned(), |a| if a { "yes".into() } else { "no".into() }),
            persistence.appendfsync.as_deref().unwrap_or("unknown")
        );
        if self.config.allow_unsafe_redis {
            tracing::warn!(persistence = %described, "Redis does not fsync every write; a Redis crash can lose acknowledged writes (allowed by REDIS_ALLOW_UNSAFE_PERSISTENCE)");
            return Ok(());
        }
        Err(EngineError::unavailable(
            "redis_not_durable",
            format!(
                "Redis at {} runs with {described}, so a crash could lose acknowledged writes; configure appendonly yes and appendfsync always, or set REDIS_ALLOW_UNSAFE_PERSISTENCE=true to accept the risk",
                redact_url(&self.config.redis.url)
            ),
            0,
        ))
    }

    async fn reload_registry_waiting(&self) -> Result<(), EngineError> {
        let deadline = Instant::now() + self.config.startup_timeout;
        loop {
            match self.reload_registry().await {
                Ok(count) => {
                    tracing::info!(tables = count, "loaded the schema registry from local");
                    return Ok(());
                }
                Err(error) if Instant::now() < deadline => {
                    tracing::warn!(local = %redact_url(&self.config.local.url), %error, "waiting for local to load the schema");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Reads the registry again from local's catalog and returns the number
    /// of tables. Cached overlays are parsed again with the new columns.
    pub async fn reload_registry(&self) -> Result<usize, EngineError> {
        let registry =
            load_registry(self.local.pool(), "local", &self.config.schemas, self.config.local.statement_timeout)
                .await?;
        let count = registry.tables().len();
        let id = self.registry_generation.fetch_add(1, Ordering::SeqCst) + 1;
        let client_registry = registry.without(|t| INTERNAL_TABLES.contains(&t.name.as_str()));
        *self.registry.write().expect("registry lock") = (id, Arc::new(registry));
        *self.client_registry.write().expect("client registry lock") = Arc::new(client_registry);
        self.cache.clear();
        Ok(count)
    }

    /// The current registry and its generation number.
    pub fn registry(&self) -> (u64, Arc<Registry>) {
        let guard = self.registry.read().expect("registry lock");
        (guard.0, guard.1.clone())
    }

    /// The registry clients see: every table but [`INTERNAL_TABLES`].
    pub fn client_registry(&self) -> Arc<Registry> {
        self.client_registry.read().expect("client registry lock").clone()
    }

    /// Resolves a table clients may name, by model or SQL name, or answers
    /// 404.
    pub fn table(&self, name: &str) -> Result<Arc<Table>, EngineError> {
        let registry = self.client_registry();
        registry.table(name).cloned().ok_or_else(|| {
            EngineError::not_found(
                "unknown_table",
                format!("unknown table {name:?}; known tables: {}", registry.table_names()),
            )
        })
    }

    pub fn is_secondary(&self) -> bool {
        self.config.site_type == SiteType::Secondary
    }

    /// A receiver that turns true when the service shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Asks every background task to stop.
    pub fn shut_down(&self) {
        let _ = self.shutdown.send(true);
    }

    pub fn drain_status(&self) -> DrainStatus {
        self.drain_status.lock().expect("drain status lock").clone()
    }

    pub fn replication_status(&self) -> ReplicationStatus {
        self.replication_status.lock().expect("replication status lock").clone()
    }

    /// Sets the gauges that are read at scrape time: buffer counts and ages
    /// from Redis, and the replication lag from the newest commit waiting
    /// for replication. Counters and the LSN gauges move as events happen.
    /// When Redis does not answer, the buffer gauges keep their last values.
    pub async fn refresh_metrics(&self) {
        let metrics = &self.metrics;
        match tokio::time::timeout(Duration::from_secs(2), self.buffer.stats()).await {
            Ok(Ok(stats)) => {
                let now = now_ms();
                let age = |ms: Option<i64>| ms.map_or(0.0, |m| (now - m).max(0) as f64 / 1000.0);
                for (state, count) in [
                    ("queued", stats.queued),
                    ("blocked", stats.blocked),
                    ("waiting_replication", stats.applied_waiting_replication),
                    ("dead", stats.dead),
                ] {
                    metrics.buffer_transactions.get_or_create(&StateLabels { state }).set(count as i64);
                }
                metrics.oldest_queued_age.set(age(stats.oldest_queued_ms));
                metrics.oldest_waiting_replication_age.set(age(stats.oldest_waiting_replication_ms));
                let replay = self.replication_status().last.map(|s| s.lsn);
                let lag = match (stats.highest_waiting_lsn, replay) {
                    (Some(waiting), Some(replay)) => waiting.bytes_after(replay),
                    _ => 0,
                };
                metrics.replication_lag_bytes.set(i64::try_from(lag).unwrap_or(i64::MAX));
                if let Some(replay) = replay {
                    metrics.replay_lsn.set(lsn_gauge(replay));
                }
            }
            Ok(Err(error)) => tracing::warn!(%error, "could not read the buffer counts for /metrics"),
            Err(_) => tracing::warn!("Redis did not return the buffer counts for /metrics within 2 s"),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "opsbuffer".to_owned())
}
