//! The scenarios and the requests they share: starting executed obs units
//! and registering raw data files in bulk, as instrument scripts do.

pub mod drain;
pub mod eviction;
pub mod memory;
pub mod search;
pub mod writes;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::api::{Api, text_field};
use crate::config::Settings;
use crate::db::{Databases, Reference};
use crate::measure::{Measurement, closed_loop};
use crate::redis_probe::RedisProbe;

/// Everything a scenario needs.
pub struct Context {
    pub settings: Settings,
    pub databases: Databases,
    pub redis: RedisProbe,
    pub reference: Reference,
}

/// Clients of the fill phases, which only prepare a buffer and are not
/// measured.
pub const FILL_CLIENTS: usize = 8;
/// Maximum duration of a fill phase; the scenario fails after it.
pub const FILL_BUDGET: Duration = Duration::from_secs(1_800);

/// Builds the body of `POST /executed_obs_units/start` an instrument script sends.
pub fn start_body(reference: &Reference) -> Value {
    let start = chrono::Utc::now() - chrono::Duration::hours(1);
    json!({
        "obs_unit_id": reference.obs_unit,
        "start_time": start.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    })
}

/// Builds a `POST /raw_data_files/bulk` body of `count` files of executed obs unit
/// `unit`. `batch` makes the relative paths, which are unique on main,
/// unique within the run.
pub fn bulk_body(reference: &Reference, run_tag: &str, unit: &str, batch: usize, count: usize) -> Value {
    let files: Vec<Value> = (0..count)
        .map(|i| {
            json!({
                "name": format!("rfsoc01_drone2_{i:05}.g3"),
                "relative_path": format!("bench-{run_tag}/{unit}/{batch:06}/rfsoc01_drone2_{i:05}.g3"),
                "size_bytes": 1_073_741_824u64 + i as u64,
                "checksum": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "executed_obs_unit_id": unit,
                "instrument_module_id": reference.instrument_module,
            })
        })
        .collect();
    Value::Array(files)
}

/// A record created by a write and the transaction that created it.
#[derive(Debug, Clone)]
pub struct Created {
    pub id: String,
    pub transaction_id: String,
}

/// Starts `total` executed obs units from `clients` clients and returns the
/// measurement with the new records, in no particular order.
pub async fn start_units(
    api: &Api,
    reference: &Reference,
    clients: usize,
    total: usize,
    budget: Duration,
) -> (Measurement, Vec<Created>) {
    let ids = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let api = api.clone();
    let reference = reference.clone();
    let collected = ids.clone();
    let measurement = closed_loop(clients, total, budget, move |_| {
        let api = api.clone();
        let body = serde_json::to_vec(&start_body(&reference));
        let collected = collected.clone();
        async move {
            let reply = api.send(reqwest::Method::POST, "/executed_obs_units/start", Some(body?)).await?;
            let elapsed = reply.elapsed;
            let answer = reply.expect(201, "POST /executed_obs_units/start")?.json()?;
            let created =
                Created { id: text_field(&answer, "id")?, transaction_id: text_field(&answer, "transaction_id")? };
            collected.lock().expect("id list lock").push(created);
            Ok(elapsed)
        }
    })
    .await;
    let ids = std::mem::take(&mut *ids.lock().expect("id list lock"));
    (measurement, ids)
}

/// Sends `requests` bulk registrations of `files` files each, spread over
/// `units`, from `clients` clients. `offset` numbers the batches so paths
/// stay unique across calls.
#[allow(clippy::too_many_arguments)]
pub async fn register_files(
    api: &Api,
    reference: &Reference,
    run_tag: &str,
    units: &[String],
    clients: usize,
    requests: usize,
    files: usize,
    offset: usize,
    budget: Duration,
) -> Measurement {
    let api = api.clone();
    let reference = reference.clone();
    let run_tag = run_tag.to_owned();
    let units = Arc::new(units.to_vec());
    closed_loop(clients, requests, budget, move |i| {
        let api = api.clone();
        let batch = offset + i;
        let unit = &units[batch % units.len()];
        let body = serde_json::to_vec(&bulk_body(&reference, &run_tag, unit, batch, files));
        async move {
            let reply = api.send(reqwest::Method::POST, "/raw_data_files/bulk", Some(body?)).await?;
            let elapsed = reply.elapsed;
            reply.expect(201, "POST /raw_data_files/bulk")?;
            Ok(elapsed)
        }
    })
    .await
}

/// Fills a buffer and fails unless every request succeeded.
pub fn check_fill(measurement: &Measurement, expected: usize, what: &str) -> anyhow::Result<()> {
    if measurement.errors > 0 || measurement.count() != expected {
        anyhow::bail!(
            "{what}: {} of {expected} requests succeeded; first error: {}",
            measurement.count(),
            measurement.first_error.as_deref().unwrap_or("none")
        );
    }
    Ok(())
}

/// New random UUIDs as text, for seed rows.
pub fn new_ids(count: usize) -> Vec<String> {
    (0..count).map(|_| uuid::Uuid::now_v7().to_string()).collect()
}

/// Waits until `GET /transactions/{id}` reports one of `states`, polling
/// every `interval`, and returns the body.
pub async fn wait_for_state(
    api: &Api,
    transaction: &str,
    states: &[&str],
    interval: Duration,
    limit: Duration,
) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let body = api.transaction(transaction).await?;
        let state = body.get("state").and_then(Value::as_str).unwrap_or_default();
        if states.contains(&state) {
            return Ok(body);
        }
        if state == "dead" {
            anyhow::bail!("transaction {transaction} was dead-lettered: {body}");
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("transaction {transaction} did not reach {states:?} within {limit:?}: {body}");
        }
        tokio::time::sleep(interval).await;
    }
}

/// Returns the transactions the service reports queued or blocked on
/// `/health`: the buffer a write has to join.
pub async fn pending_transactions(api: &Api) -> anyhow::Result<u64> {
    let health = api.get_json("/health").await?;
    let count = |field: &str| health["buffer"][field].as_u64().unwrap_or(0);
    Ok(count("queued") + count("blocked"))
}

/// The size in bytes of a record's JSON as `GET /records/{table}/{id}`
/// returns it.
pub async fn record_json_size(api: &Api, table: &str, id: &str) -> anyhow::Result<usize> {
    let path = format!("/records/{table}/{id}");
    let reply = api.get(&path).await?.expect(200, &format!("GET {path}"))?;
    let record: Value = reply.json().context("reading the record")?;
    Ok(serde_json::to_vec(&record)?.len())
}
