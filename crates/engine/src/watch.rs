//! The LSN watcher: polls local's replay LSN and evicts the overlays of
//! every applied transaction local now shows.
//!
//! Overlays never expire by time. While local lags or cannot be reached they
//! stay, and once an applied transaction has waited longer than
//! `LSN_TIMEOUT` the watcher logs a warning and health reports degraded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::{Engine, now_ms};

/// Most transactions evicted by one script call, so one call never blocks
/// Redis for long.
const EVICT_LIMIT: usize = 500;

/// Spawns the watcher loop; it stops when the engine shuts down.
pub fn spawn(engine: Arc<Engine>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(engine))
}

async fn run(engine: Arc<Engine>) {
    let mut shutdown = engine.shutdown_signal();
    let interval = engine.config.lsn_check_interval.max(Duration::from_millis(1));
    let mut logs = LogState::default();
    tracing::info!(interval_ms = interval.as_millis() as u64, "LSN watcher started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        check_once(&engine, &mut logs).await;
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
    tracing::info!("LSN watcher stopped");
}

/// When the watcher last logged each kind of repeated warning, so a long
/// outage logs once a minute instead of at every check.
#[derive(Debug, Default)]
pub struct LogState {
    unreachable: Option<Instant>,
    overdue: Option<Instant>,
    stats_failed: Option<Instant>,
}

const REPEAT_LOG_EVERY: Duration = Duration::from_secs(60);

fn due(last: &mut Option<Instant>) -> bool {
    if last.is_none_or(|t| t.elapsed() > REPEAT_LOG_EVERY) {
        *last = Some(Instant::now());
        true
    } else {
        false
    }
}

/// Reads local's LSN once, evicts what it covers and checks for overdue
/// transactions.
pub async fn check_once(engine: &Engine, logs: &mut LogState) {
    let status = match engine.local.status().await {
        Ok(status) => status,
        Err(error) => {
            if due(&mut logs.unreachable) {
                tracing::warn!(%error, "LSN watcher cannot read local's replay LSN; overlays stay until it can");
            }
            engine.replication_status.lock().expect("replication status lock").last_error = Some(error.to_string());
            return;
        }
    };
    logs.unreachable = None;
    engine.metrics.replay_lsn.set(crate::metrics::lsn_gauge(status.lsn));

    let mut evicted = 0u64;
    loop {
        match engine.buffer.evict(status.lsn, EVICT_LIMIT, now_ms()).await {
            Ok(ids) => {
                evicted += ids.len() as u64;
                engine.metrics.evicted_transactions.inc_by(ids.len() as u64);
                if !ids.is_empty() {
                    tracing::debug!(transactions = ids.len(), first_transaction = %ids[0], replay_lsn = %status.lsn, "evicted replicated transactions");
                }
                if ids.len() < EVICT_LIMIT {
                    break;
                }
            }
            Err(error) => {
                tracing::warn!(%error, replay_lsn = %status.lsn, "eviction failed; retrying at the next check");
                break;
            }
        }
    }

    let overdue = match engine.buffer.stats().await {
        Ok(stats) => stats.oldest_waiting_replication_ms.is_some_and(|applied_ms| {
            let waited = Duration::from_millis((now_ms() - applied_ms).max(0) as u64);
            let late = waited > engine.config.lsn_timeout;
            if late && due(&mut logs.overdue) {
                tracing::warn!(
                    waited_s = waited.as_secs(),
                    replay_lsn = %status.lsn,
                    waiting_lsn = ?stats.lowest_waiting_lsn.map(|l| l.to_string()),
                    "an applied transaction has waited for replication longer than LSN_TIMEOUT; its overlay stays visible"
                );
            }
            late
        }),
        Err(error) => {
            if due(&mut logs.stats_failed) {
                tracing::warn!(%error, "LSN watcher cannot read the buffer counts from Redis; overdue transactions are not reported until it can");
            }
            false
        }
    };

    let mut replication = engine.replication_status.lock().expect("replication status lock");
    replication.last = Some(status);
    replication.last_error = None;
    replication.overdue = overdue;
    replication.evicted_total += evicted;
}
