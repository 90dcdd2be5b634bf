//! Drain throughput: single-record transactions buffered while main is
//! unreachable, then main comes back with 0 ms or more of latency added by
//! the fault proxy, and the buffer drains.
//!
//! The rate is taken from the `applied_at` times the service records for
//! each transaction: the transactions applied after the first one, divided
//! by the time from the first applied to the last applied. The time from
//! main coming back to the last applied (which includes reconnecting and
//! the first batch) is reported beside it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::{Context, FILL_BUDGET, FILL_CLIENTS, check_fill, start_units, wait_for_state};
use crate::report::{Report, ResultRow};
use crate::service::{Main, Service, with_service};

/// Poll interval of the transaction that was acknowledged last.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Maximum duration of one drain; the scenario fails after it.
const DRAIN_LIMIT: Duration = Duration::from_secs(900);

pub async fn run(context: &Context, report: &mut Report) -> anyhow::Result<()> {
    report.section("Drain throughput");
    for &latency in &context.settings.sizes.drain_latencies {
        let tag = format!("drain-{}ms", latency.as_millis());
        eprintln!("load: drain with {} ms one-way latency", latency.as_millis());
        let row = with_service(&context.settings, &context.redis, &tag, Main::Down, async |service: &Service| {
            measure_drain(context, service, latency).await
        })
        .await?;
        report.add(row);
    }
    Ok(())
}

async fn measure_drain(context: &Context, service: &Service, latency: Duration) -> anyhow::Result<ResultRow> {
    let sizes = &context.settings.sizes;
    let api = &service.api;
    let count = sizes.drain_transactions;

    let (measurement, mut created) = start_units(api, &context.reference, sizes.clients, count, FILL_BUDGET).await;
    check_fill(&measurement, count, "buffering transactions")?;
    // One more write after every other one returned: it is acknowledged last,
    // so the drain, which keeps acknowledgement order, applies it last.
    let (measurement, marker) = start_units(api, &context.reference, 1, 1, FILL_BUDGET).await;
    check_fill(&measurement, 1, "buffering the last transaction")?;
    let marker = marker.into_iter().next().context("the last write returned no id")?;
    created.push(marker.clone());

    service.proxy.set_latency(latency);
    let main_up_ms = chrono::Utc::now().timestamp_millis();
    let main_up = Instant::now();
    service.proxy.come_up();
    wait_for_state(api, &marker.transaction_id, &["applied", "replicated"], POLL_INTERVAL, DRAIN_LIMIT).await?;
    let until_last = main_up.elapsed();

    let applied = applied_times(service, created.iter().map(|c| c.transaction_id.clone()).collect()).await?;
    let first = *applied.iter().min().context("no applied transaction")?;
    let last = *applied.iter().max().context("no applied transaction")?;
    let after_first = applied.iter().filter(|t| **t > first).count();
    let mut batches = applied.clone();
    batches.sort_unstable();
    batches.dedup();

    let mut row = ResultRow::new(format!("drain, {} ms one-way latency added", latency.as_millis()));
    row.n = Some(applied.len());
    if last > first {
        row.throughput_per_s = Some(after_first as f64 * 1000.0 / (last - first) as f64);
    } else {
        row.note("every transaction was applied in the first batch, so no rate from first to last");
    }
    // The drainer marks every transaction of a batch applied with one time,
    // so the distinct times count the batches.
    row.note(format!("{} batches", batches.len()));
    if batches.len() < 3 {
        row.note(format!(
            "only {} distinct apply times: too few batches for a rate, so buffer more transactions",
            batches.len()
        ));
    }
    row.note(format!(
        "{} single-record transactions buffered with main down, then main up; rate from the first applied to the last applied",
        applied.len()
    ));
    row.note(format!(
        "the proxy adds {} ms in each direction, {} ms per round trip",
        latency.as_millis(),
        2 * latency.as_millis()
    ));
    row.note(format!(
        "main up to first applied {} ms, to last applied {:.2} s ({:.0} tx/s overall)",
        first - main_up_ms,
        until_last.as_secs_f64(),
        applied.len() as f64 / until_last.as_secs_f64()
    ));
    let batch_size = std::env::var("DRAIN_BATCH_SIZE").unwrap_or_else(|_| "the default".to_owned());
    row.note(format!("DRAIN_BATCH_SIZE {batch_size}"));
    row.value("main_up_to_last_applied_s", until_last.as_secs_f64());
    row.value("latency_one_way_ms", latency.as_millis() as u64);
    Ok(row)
}

/// Reads the `applied_at` time (milliseconds since the epoch) of each
/// transaction, and fails if one is not applied.
async fn applied_times(service: &Service, transactions: Vec<String>) -> anyhow::Result<Vec<i64>> {
    let times = Arc::new(Mutex::new(Vec::with_capacity(transactions.len())));
    let api = service.api.clone();
    let collected = times.clone();
    let transactions = Arc::new(transactions);
    let total = transactions.len();
    let measurement = crate::measure::closed_loop(FILL_CLIENTS, total, FILL_BUDGET, move |i| {
        let api = api.clone();
        let collected = collected.clone();
        let transaction = transactions[i].clone();
        async move {
            let started = Instant::now();
            let body = api.transaction(&transaction).await?;
            let applied_at = body.get("applied_at").and_then(Value::as_str).map(str::to_owned);
            let Some(applied_at) = applied_at else {
                bail!("transaction {transaction} has no applied_at: {body}");
            };
            let time = chrono::DateTime::parse_from_rfc3339(&applied_at)
                .with_context(|| format!("invalid applied_at {applied_at:?}"))?;
            collected.lock().expect("time list lock").push(time.timestamp_millis());
            Ok(started.elapsed())
        }
    })
    .await;
    check_fill(&measurement, total, "reading applied_at")?;
    let times = std::mem::take(&mut *times.lock().expect("time list lock"));
    Ok(times)
}
