//! `opsbuffer status`: the health report of `GET /health` as a table.
//!
//! The command builds an engine of its own instead of calling the API, so
//! it works while the API is down or refuses to start, and needs no token.
//! It contacts no service before the health probes, so an unreachable
//! main, local or Redis shows in the table instead of stopping the command.
//! The drainer line shows the lease holder read from Redis.

use anyhow::Context;
use clap::Args;
use opsbuffer_engine::Engine;
use opsbuffer_engine::health::Health;

use crate::settings::Connections;

/// Arguments of `opsbuffer status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub connections: Connections,

    /// Print the report as JSON, as GET /health returns it.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let engine = Engine::unchecked(args.connections.site_config()).context("invalid settings")?;
    let mut health = engine.health().await;
    // No drainer runs in this process; the lease in Redis names the holder.
    if health.drainer.holder.is_none() {
        health.drainer.holder = engine.buffer.current_lease().await.ok().flatten().map(|l| l.holder().to_owned());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&health)?);
    } else {
        print!("{}", render(&health));
    }
    Ok(())
}

fn yes_no(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    }
}

fn reachable(ok: bool, error: &Option<String>) -> String {
    if ok { "reachable".to_owned() } else { format!("UNREACHABLE: {}", error.as_deref().unwrap_or("no answer")) }
}

fn age(seconds: Option<f64>) -> String {
    seconds.map_or("-".to_owned(), |s| format!("{s:.1} s"))
}

/// The report as two columns: what, and its state.
pub fn render(health: &Health) -> String {
    let mut rows: Vec<(String, String)> = vec![
        ("site".into(), format!("{} ({})", health.site.name, health.site.site_type)),
        ("status".into(), health.status.to_owned()),
        (
            "main".into(),
            format!(
                "{}{}",
                reachable(health.main.reachable, &health.main.error),
                health.main.current_lsn.as_ref().map(|l| format!(", LSN {l}")).unwrap_or_default()
            ),
        ),
        (
            "local".into(),
            format!(
                "{}{}",
                reachable(health.local.reachable, &health.local.error),
                if health.local.reachable {
                    format!(
                        ", in recovery {}, replay LSN {}, replay paused {}",
                        yes_no(health.local.in_recovery),
                        health.local.replay_lsn.as_deref().unwrap_or("-"),
                        yes_no(health.local.replay_paused)
                    )
                } else {
                    String::new()
                }
            ),
        ),
        (
            "redis".into(),
            format!(
                "{}, appendonly {}, appendfsync {}{}",
                reachable(health.redis.reachable, &health.redis.error),
                yes_no(health.redis.appendonly),
                health.redis.appendfsync.as_deref().unwrap_or("unknown"),
                if health.redis.durable { " (durable)" } else { " (NOT durable)" }
            ),
        ),
        ("queued".into(), count(health.buffer.queued)),
        ("blocked".into(), count(health.buffer.blocked)),
        ("waiting for replication".into(), count(health.buffer.applied_waiting_replication)),
        ("dead letters".into(), count(health.buffer.dead)),
        ("oldest queued".into(), age(health.buffer.oldest_queued_age_s)),
        ("oldest waiting".into(), age(health.buffer.oldest_waiting_replication_age_s)),
        (
            "replication lag".into(),
            format!(
                "{} bytes, {:.1} s{}",
                health.replication.lag_bytes.map_or("unknown".to_owned(), |b| b.to_string()),
                health.replication.lag_seconds,
                if health.replication.overdue { " (OVERDUE)" } else { "" }
            ),
        ),
        ("drainer lease".into(), health.drainer.holder.clone().unwrap_or_else(|| "free".to_owned())),
    ];
    if let Some(lsn) = &health.drainer.last_commit_lsn {
        rows.push(("last commit LSN".into(), lsn.clone()));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in rows {
        out.push_str(&format!("{key:<width$}  {value}\n"));
    }
    for problem in &health.problems {
        out.push_str(&format!("problem: {problem}\n"));
    }
    out
}

/// Formats a transaction count, which is unknown when Redis cannot be read.
fn count(value: Option<u64>) -> String {
    value.map_or_else(|| "unknown (Redis cannot be read)".to_owned(), |n| n.to_string())
}
