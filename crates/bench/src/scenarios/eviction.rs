//! Eviction delay: how long after local replays a transaction's commit the
//! service reports it `replicated` (and drops its overlays).
//!
//! Each sample pauses replay on the replica, writes one record, waits until
//! the drainer applied it on main, then resumes replay. One task polls
//! local's replay LSN until it reaches the commit LSN, another polls
//! `GET /transactions/{id}` until the state is `replicated`, and the sample
//! is the time between the two. Replay is resumed after every sample, also
//! when the sample fails.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::{Context, start_units, wait_for_state};
use crate::db::{REPLAY_PAUSED, parse_lsn, replay_lsn, replay_users, set_replay_paused, wait_for_test_suite};
use crate::measure::{Measurement, percentile};
use crate::report::{Report, ResultRow};
use crate::service::{Main, Service, with_service};

/// Maximum wait of one sample for the apply on main or for replication.
const SAMPLE_LIMIT: Duration = Duration::from_secs(60);
/// The service's default `LSN_CHECK_INTERVAL`.
const DEFAULT_LSN_CHECK_INTERVAL: &str = "0.1";

pub async fn run(context: &Context, report: &mut Report) -> anyhow::Result<()> {
    report.section("Eviction delay");
    if !wait_for_test_suite(context.settings.wait_for_tests).await {
        let mut row = ResultRow::new("eviction delay after replay");
        row.note(
            "skipped: the test suite or the demo was running, and this scenario pauses replay on the shared replica",
        );
        report.add(row);
        return Ok(());
    }
    eprintln!("load: eviction delay");
    let result = with_service(&context.settings, &context.redis, "eviction", Main::Up, async |service: &Service| {
        measure(context, service).await
    })
    .await;
    crate::db::resume_replay_if_paused(&context.settings.urls.local_admin).await;
    report.add(result?);
    Ok(())
}

async fn measure(context: &Context, service: &Service) -> anyhow::Result<ResultRow> {
    let samples = context.settings.sizes.eviction_samples;
    let interval = std::env::var("LSN_CHECK_INTERVAL").unwrap_or_else(|_| DEFAULT_LSN_CHECK_INTERVAL.to_owned());

    // One write that goes all the way first, so the drainer is connected.
    let (warm_up, created) = start_units(&service.api, &context.reference, 1, 1, SAMPLE_LIMIT).await;
    warm_up.check("warm-up write")?;
    let created = created.first().context("the warm-up write returned no id")?;
    wait_for_state(&service.api, &created.transaction_id, &["replicated"], Duration::from_millis(5), SAMPLE_LIMIT)
        .await?;

    let mut delays = Vec::with_capacity(samples);
    let mut early = 0;
    for _ in 0..samples {
        let users = replay_users();
        if !users.is_empty() {
            bail!("stopped: {} started, and it needs replay running", users.join(", "));
        }
        let sample = one_sample(context, service).await;
        if REPLAY_PAUSED.load(std::sync::atomic::Ordering::SeqCst) {
            set_replay_paused(&context.databases.local_admin, false).await?;
        }
        let (delay, replicated_first) = sample?;
        delays.push(delay);
        early += usize::from(replicated_first);
        // A random offset, so samples do not keep one phase of the
        // service's LSN poll.
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..100))).await;
    }
    delays.sort_unstable();

    let measurement = Measurement {
        clients: 1,
        latencies: delays.clone(),
        timeline: Vec::new(),
        errors: 0,
        first_error: None,
        wall: Duration::ZERO,
        stopped_by_budget: false,
    };
    let mut row =
        ResultRow::latency("eviction delay after replay", &measurement, context.settings.sizes.max_measurement);
    row.throughput_per_s = None;
    row.note(
        "from local's pg_last_wal_replay_lsn() reaching the commit LSN to GET /transactions/{id} showing replicated",
    );
    row.note(format!("LSN_CHECK_INTERVAL {interval} s; polls every 1 ms on each side"));
    if let Some(max) = percentile(&delays, 1.0) {
        row.note(format!("max {:.1} ms", max.as_secs_f64() * 1000.0));
    }
    if early > 0 {
        row.note(format!(
            "{early} samples showed replicated before the load generator saw the replay LSN (counted as 0)"
        ));
    }
    Ok(row)
}

/// One write under paused replay; returns the delay and whether the
/// service reported `replicated` before this process saw the replay LSN.
async fn one_sample(context: &Context, service: &Service) -> anyhow::Result<(Duration, bool)> {
    let api = &service.api;
    set_replay_paused(&context.databases.local_admin, true).await?;
    let (measurement, created) = start_units(api, &context.reference, 1, 1, SAMPLE_LIMIT).await;
    measurement.check("write under paused replay")?;
    let transaction = created.first().context("the write returned no id")?.transaction_id.clone();
    let applied = wait_for_state(api, &transaction, &["applied"], Duration::from_millis(2), SAMPLE_LIMIT).await?;
    let commit_text =
        applied.get("commit_lsn").and_then(Value::as_str).context("the applied transaction has no commit_lsn")?;
    let commit = parse_lsn(commit_text).with_context(|| format!("invalid commit_lsn {commit_text:?}"))?;

    let local = &context.databases.local;
    let replayed = async {
        loop {
            if replay_lsn(local).await? >= commit {
                return anyhow::Ok(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    let replicated = async {
        loop {
            let body = api.transaction(&transaction).await?;
            if body.get("state").and_then(Value::as_str) == Some("replicated") {
                return anyhow::Ok(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    let resume = set_replay_paused(&context.databases.local_admin, false);
    let (resumed, replayed, replicated) =
        tokio::time::timeout(SAMPLE_LIMIT, async { tokio::join!(resume, replayed, replicated) })
            .await
            .with_context(|| format!("transaction {transaction} was not replicated within {SAMPLE_LIMIT:?}"))?;
    resumed?;
    let (replayed, replicated) = (replayed?, replicated?);
    let replicated_first = replicated < replayed;
    Ok((replicated.saturating_duration_since(replayed), replicated_first))
}
