//! The health report: reachability of main, local and Redis, Redis
//! durability, buffer counts, replication lag and the drainer.

use std::time::Duration;

use serde::Serialize;

use crate::config::SiteType;
use crate::engine::{Engine, now_ms};

/// The answer of `GET /health`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `healthy`, or `degraded` when something needs attention.
    pub status: &'static str,
    /// Why the status is degraded, one sentence each.
    pub problems: Vec<String>,
    pub site: SiteInfo,
    pub main: MainHealth,
    pub local: LocalHealth,
    pub redis: RedisHealth,
    pub buffer: BufferHealth,
    pub replication: ReplicationHealth,
    pub drainer: DrainerHealth,
    /// Whether merged reads can be served; the HTTP status is 503 when not.
    #[serde(skip)]
    pub serves_reads: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SiteInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub site_type: &'static str,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MainHealth {
    pub reachable: bool,
    pub current_lsn: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LocalHealth {
    pub reachable: bool,
    pub in_recovery: Option<bool>,
    pub replay_lsn: Option<String>,
    pub replay_paused: Option<bool>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RedisHealth {
    pub reachable: bool,
    pub appendonly: Option<bool>,
    pub appendfsync: Option<String>,
    /// Whether every acknowledged write reaches disk before the reply.
    pub durable: bool,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BufferHealth {
    /// Transaction counts; null when Redis cannot be read, because they are
    /// unknown then, not zero.
    pub queued: Option<u64>,
    pub blocked: Option<u64>,
    pub applied_waiting_replication: Option<u64>,
    pub dead: Option<u64>,
    pub oldest_queued_age_s: Option<f64>,
    pub oldest_waiting_replication_age_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReplicationHealth {
    /// WAL bytes main has written that local has not replayed; from main's
    /// current position when main answers, otherwise from the newest commit
    /// LSN the drainer saw.
    pub lag_bytes: Option<u64>,
    /// How long the oldest applied transaction has waited for local.
    pub lag_seconds: f64,
    /// Whether a transaction has waited longer than `LSN_TIMEOUT`.
    pub overdue: bool,
    pub lsn_timeout_s: f64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DrainerHealth {
    /// Whether this process drains.
    pub active: bool,
    pub holder: Option<String>,
    pub last_commit_lsn: Option<String>,
    pub last_error: Option<String>,
}

/// Longest each health probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs one probe under the timeout, with its error as text.
async fn probe<T, E: std::fmt::Display>(future: impl Future<Output = Result<T, E>>) -> Result<T, String> {
    match tokio::time::timeout(PROBE_TIMEOUT, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}

impl Engine {
    /// Probes every dependency concurrently and builds the report.
    pub async fn health(&self) -> Health {
        let secondary = self.config.site_type == SiteType::Secondary;
        let (main, local, redis, stats, persistence) = tokio::join!(
            probe(self.main.status()),
            probe(self.local.status()),
            probe(self.buffer.ping()),
            probe(self.buffer.stats()),
            probe(self.buffer.persistence()),
        );

        let mut problems = Vec::new();
        if let Err(e) = &main {
            problems.push(format!("main is unreachable: {e}"));
        }
        if let Err(e) = &local {
            problems.push(format!("local is unreachable: {e}"));
        }
        if let (Err(e), true) = (&redis, secondary) {
            problems.push(format!("Redis is unreachable: {e}"));
        }

        let (appendonly, appendfsync) = match &persistence {
            Ok(p) => (p.appendonly, p.appendfsync.clone()),
            Err(_) => (None, None),
        };
        let durable = appendonly == Some(true) && appendfsync.as_deref() == Some("always");
        if secondary && redis.is_ok() && !durable {
            problems.push("Redis does not fsync every write (appendonly yes, appendfsync always)".to_owned());
        }

        let now = now_ms();
        let age = |ms: Option<i64>| ms.map(|m| ((now - m).max(0) as f64) / 1000.0);
        let known = stats.is_ok();
        let count = |n: u64| known.then_some(n);
        let stats = stats.unwrap_or_default();
        if stats.dead > 0 {
            problems.push(format!("{} dead-lettered transaction(s) wait for an operator", stats.dead));
        }
        if stats.blocked > 0 {
            problems.push(format!("{} transaction(s) are blocked by dead letters", stats.blocked));
        }

        let replication = self.replication_status();
        let drain = self.drain_status();
        if replication.overdue {
            problems.push(format!(
                "a transaction has waited for replication longer than LSN_TIMEOUT ({:?})",
                self.config.lsn_timeout
            ));
        }
        let replay_lsn = local.as_ref().ok().map(|s| s.lsn);
        let newest_main_lsn = main.as_ref().ok().map(|s| s.lsn).or(drain.last_commit_lsn).or(stats.highest_waiting_lsn);
        let lag_bytes = match (newest_main_lsn, replay_lsn) {
            (Some(m), Some(r)) if secondary => Some(m.bytes_after(r)),
            (_, Some(_)) => Some(0),
            _ => None,
        };

        let serves_reads = local.is_ok() && (!secondary || redis.is_ok());
        Health {
            status: if problems.is_empty() { "healthy" } else { "degraded" },
            problems,
            site: SiteInfo { name: self.config.site_name.clone(), site_type: self.config.site_type.as_str() },
            main: MainHealth {
                reachable: main.is_ok(),
                current_lsn: main.as_ref().ok().map(|s| s.lsn.to_string()),
                error: main.err(),
            },
            local: LocalHealth {
                reachable: local.is_ok(),
                in_recovery: local.as_ref().ok().map(|s| s.in_recovery),
                replay_lsn: replay_lsn.map(|l| l.to_string()),
                replay_paused: local.as_ref().ok().map(|s| s.replay_paused),
                error: local.err(),
            },
            redis: RedisHealth { reachable: redis.is_ok(), appendonly, appendfsync, durable, error: redis.err() },
            buffer: BufferHealth {
                queued: count(stats.queued),
                blocked: count(stats.blocked),
                applied_waiting_replication: count(stats.applied_waiting_replication),
                dead: count(stats.dead),
                oldest_queued_age_s: age(stats.oldest_queued_ms),
                oldest_waiting_replication_age_s: age(stats.oldest_waiting_replication_ms),
            },
            replication: ReplicationHealth {
                lag_bytes,
                lag_seconds: age(stats.oldest_waiting_replication_ms).unwrap_or(0.0),
                overdue: replication.overdue,
                lsn_timeout_s: self.config.lsn_timeout.as_secs_f64(),
            },
            drainer: DrainerHealth {
                active: drain.active,
                holder: drain.holder,
                last_commit_lsn: drain.last_commit_lsn.map(|l| l.to_string()),
                last_error: drain.last_error,
            },
            serves_reads,
        }
    }
}
