//! Merged search and get by id as the buffer grows.
//!
//! Local contains the queried executed obs unit with 100 files (seeded on main
//! directly). The overlays are raw data files of other executed obs units,
//! buffered with main unreachable so they stay in the buffer, so none of
//! them matches the query and the page is the same at every level. The same
//! query with `consistency=replica` reads local alone, for comparison.

use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};

use super::{Context, FILL_BUDGET, FILL_CLIENTS, check_fill, new_ids, register_files, start_body};
use crate::api::{Api, text_field};
use crate::db::{local_file_ids, seed_local};
use crate::measure::{Measurement, closed_loop};
use crate::report::{Report, ResultRow, format_bytes};
use crate::service::{Main, Service, with_service};

/// Executed obs units whose files make up the buffered overlays.
const OVERLAY_UNITS: usize = 100;
/// Local files of the unit whose record gets a pending update.
const NEIGHBOR_FILES: usize = 10;
/// Unmeasured requests before each series.
const WARM_UP: usize = 5;
/// Rows per transaction when filling another table.
const ROWS_PER_FILL_TRANSACTION: usize = 100;

/// The units and queries of one run.
struct Layout {
    queried: String,
    neighbor: String,
    overlay_units: Vec<String>,
    merged_path: String,
    replica_path: String,
}

pub async fn run(context: &Context, report: &mut Report) -> anyhow::Result<()> {
    let sizes = &context.settings.sizes;
    let layout = seed(context).await?;
    report.section("Merged search and get by id");
    let query_note = format!(
        "GET /records/raw_data_file?executed_obs_unit_id=eq.X&limit=100, X has {} files in local",
        sizes.matching_records
    );

    eprintln!("load: search with overlays in the queried table");
    with_service(&context.settings, &context.redis, "search", Main::Down, async |service: &Service| {
        let mut buffered = 0;
        for &level in &sizes.overlay_levels {
            fill_files(context, service, &layout, buffered, level).await?;
            buffered = level;
            let scope = format!("{level} overlays in raw_data_file");
            for row in search_rows(context, service, &layout, &scope, &query_note).await? {
                report.add(row);
            }
        }
        for row in get_rows(context, service, &layout, &format!("{buffered} overlays in raw_data_file")).await? {
            report.add(row);
        }
        Ok(())
    })
    .await?;

    eprintln!("load: get by id without other overlays");
    let rows = with_service(&context.settings, &context.redis, "get", Main::Down, async |service: &Service| {
        get_rows(context, service, &layout, "no other overlays").await
    })
    .await?;
    for row in rows {
        report.add(row);
    }

    eprintln!("load: search with overlays in another table");
    let rows =
        with_service(&context.settings, &context.redis, "search-other", Main::Down, async |service: &Service| {
            fill_units(context, service, sizes.other_table_overlays).await?;
            let scope = format!("0 in raw_data_file, {} overlays in executed_obs_unit", sizes.other_table_overlays);
            search_rows(context, service, &layout, &scope, &query_note).await
        })
        .await?;
    for row in rows {
        report.add(row);
    }
    Ok(())
}

/// Seeds local with the queried unit and its files, a neighbor unit with a
/// few files, and the units the buffered files belong to.
async fn seed(context: &Context) -> anyhow::Result<Layout> {
    let sizes = &context.settings.sizes;
    let queried = new_ids(1).remove(0);
    let neighbor = new_ids(1).remove(0);
    let overlay_units = new_ids(OVERLAY_UNITS);
    let mut units = vec![queried.clone(), neighbor.clone()];
    units.extend(overlay_units.iter().cloned());
    eprintln!("load: seeding local with {} executed obs units", units.len());
    seed_local(
        &context.databases,
        &context.reference,
        &units,
        &[(queried.clone(), sizes.matching_records), (neighbor.clone(), NEIGHBOR_FILES)],
        &context.settings.run_tag,
    )
    .await?;
    let merged_path = format!("/records/raw_data_file?executed_obs_unit_id=eq.{queried}&limit=100");
    let replica_path = format!("{merged_path}&consistency=replica");
    Ok(Layout { queried, neighbor, overlay_units, merged_path, replica_path })
}

/// Buffers raw data files of the overlay units until the table has `to`
/// overlays, in bulk requests.
async fn fill_files(
    context: &Context,
    service: &Service,
    layout: &Layout,
    from: usize,
    to: usize,
) -> anyhow::Result<()> {
    let files = context.settings.sizes.files_per_bulk;
    let requests = to.saturating_sub(from).div_ceil(files);
    if requests == 0 {
        return Ok(());
    }
    eprintln!("load: buffering {} files", requests * files);
    let measurement = register_files(
        &service.api,
        &context.reference,
        &context.settings.run_tag,
        &layout.overlay_units,
        FILL_CLIENTS,
        requests,
        files,
        from / files,
        FILL_BUDGET,
    )
    .await;
    check_fill(&measurement, requests, "buffering files")
}

/// Buffers `count` executed obs units, `ROWS_PER_FILL_TRANSACTION` per
/// transaction.
async fn fill_units(context: &Context, service: &Service, count: usize) -> anyhow::Result<()> {
    let requests = count.div_ceil(ROWS_PER_FILL_TRANSACTION);
    eprintln!("load: buffering {} executed obs units", requests * ROWS_PER_FILL_TRANSACTION);
    let api = service.api.clone();
    let reference = context.reference.clone();
    let measurement = closed_loop(FILL_CLIENTS, requests, FILL_BUDGET, move |_| {
        let api = api.clone();
        let rows: Vec<Value> = (0..ROWS_PER_FILL_TRANSACTION).map(|_| start_body(&reference)).collect();
        let body = json!({"steps": [{"op": "bulk_create", "table": "executed_obs_unit", "rows": rows}]});
        async move {
            let reply = api.post("/transactions", &body).await?;
            let elapsed = reply.elapsed;
            reply.expect(201, "POST /transactions")?;
            Ok(elapsed)
        }
    })
    .await;
    check_fill(&measurement, requests, "buffering executed obs units")
}

/// Measures the merged query and the same query on local alone.
async fn search_rows(
    context: &Context,
    service: &Service,
    layout: &Layout,
    scope: &str,
    query_note: &str,
) -> anyhow::Result<Vec<ResultRow>> {
    let sizes = &context.settings.sizes;
    let budget = sizes.max_measurement;
    let mut rows = Vec::new();
    for (label, path, note) in [
        ("search merged", &layout.merged_path, "consistency=merged (default)"),
        ("search replica only", &layout.replica_path, "consistency=replica: local alone"),
    ] {
        let expected = Some(sizes.matching_records.min(100));
        let measurement = measure_get(&service.api, path, expected, sizes.search_samples, budget).await?;
        let mut row = ResultRow::latency(format!("{label}, {scope}"), &measurement, budget);
        row.note(query_note).note(note);
        let memory = service.memory()?;
        row.note(format!("service RSS {}", format_bytes(memory.rss_bytes as f64)));
        row.value("rss_bytes", memory.rss_bytes);
        rows.push(row);
    }
    Ok(rows)
}

/// Measures get by id of a local row without overlay, of a record created in the
/// buffer, and of a local row with a pending update.
async fn get_rows(
    context: &Context,
    service: &Service,
    layout: &Layout,
    scope: &str,
) -> anyhow::Result<Vec<ResultRow>> {
    let sizes = &context.settings.sizes;
    let budget = sizes.max_measurement;
    let api = &service.api;
    let local_file = local_file_ids(&context.databases.local, &layout.queried, 1)
        .await?
        .pop()
        .context("the queried unit has no file in local")?;
    let patched_file = local_file_ids(&context.databases.local, &layout.neighbor, 1)
        .await?
        .pop()
        .context("the neighbor unit has no file in local")?;

    let files = super::bulk_body(&context.reference, &context.settings.run_tag, &layout.overlay_units[0], 999_999, 1);
    let file = files.as_array().and_then(|f| f.first()).cloned().context("the generated bulk body has no file")?;
    let created = api.post("/raw_data_files/", &file).await?.expect(201, "POST /raw_data_files/")?.json()?;
    let buffered_file = text_field(&created, "id")?;
    let update =
        json!({"steps": [{"op": "update", "table": "raw_data_file", "id": patched_file, "data": {"size_bytes": 42}}]});
    api.post("/transactions", &update).await?.expect(201, "POST /transactions (update)")?;

    let mut rows = Vec::new();
    for (label, id) in [
        ("get by id, local row without overlay", &local_file),
        ("get by id, record created in the buffer", &buffered_file),
        ("get by id, local row with a pending update", &patched_file),
    ] {
        let path = format!("/records/raw_data_file/{id}");
        let measurement = measure_get(api, &path, None, sizes.get_samples, budget).await?;
        let mut row = ResultRow::latency(format!("{label}, {scope}"), &measurement, budget);
        row.note("GET /records/raw_data_file/{id}");
        rows.push(row);
    }
    Ok(rows)
}

/// Checks one response of `path` (its record count when `expected` is set),
/// warms up, then measures `samples` requests from one client.
async fn measure_get(
    api: &Api,
    path: &str,
    expected: Option<usize>,
    samples: usize,
    budget: Duration,
) -> anyhow::Result<Measurement> {
    let answer = api.get_json(path).await?;
    if let Some(expected) = expected {
        let records = answer.get("records").and_then(Value::as_array).map(Vec::len);
        ensure!(records == Some(expected), "GET {path} returned {records:?} records, expected {expected}");
    }
    for _ in 0..WARM_UP {
        api.get(path).await?.expect(200, path)?;
    }
    let client = api.clone();
    let target = path.to_owned();
    let measurement = closed_loop(1, samples, budget, move |_| {
        let api = client.clone();
        let path = target.clone();
        async move {
            let reply = api.get(&path).await?;
            let elapsed = reply.elapsed;
            if reply.status != 200 {
                bail!("GET {path}: status {}", reply.status);
            }
            Ok(elapsed)
        }
    })
    .await;
    measurement.check(path)?;
    Ok(measurement)
}
