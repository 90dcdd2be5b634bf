//! Memory: Redis bytes per buffered record, beside the size of the
//! record's JSON, and the service's resident memory with many overlays.
//!
//! Redis memory is measured two ways. The sum of `MEMORY USAGE` over the
//! site's keys counts this site alone. The change of `used_memory` also
//! counts allocator overhead, but includes whatever other users of the same
//! Redis did meanwhile.

use serde_json::Value;

use super::{Context, FILL_BUDGET, FILL_CLIENTS, check_fill, record_json_size, register_files, start_units};
use crate::redis_probe::MemorySnapshot;
use crate::report::{Report, ResultRow, format_bytes};
use crate::service::{Main, Service, with_service};

/// Merged searches run after the fill, so the service has loaded the
/// overlays it keeps in memory before its resident size is read.
const SEARCHES_AFTER_FILL: usize = 20;

pub async fn run(context: &Context, report: &mut Report) -> anyhow::Result<()> {
    report.section("Memory");
    eprintln!("load: memory");
    let rows = with_service(&context.settings, &context.redis, "memory", Main::Down, async |service: &Service| {
        measure(context, service).await
    })
    .await?;
    for row in rows {
        report.add(row);
    }
    Ok(())
}

async fn measure(context: &Context, service: &Service) -> anyhow::Result<Vec<ResultRow>> {
    let sizes = &context.settings.sizes;
    let api = &service.api;
    let redis = &context.redis;
    let idle = service.memory()?;
    let mut rows = Vec::new();

    let empty = redis.memory(&service.site).await?;
    let (measurement, created) =
        start_units(api, &context.reference, sizes.clients, sizes.memory_single, FILL_BUDGET).await;
    check_fill(&measurement, sizes.memory_single, "buffering executed obs units")?;
    let after_units = redis.memory(&service.site).await?;
    let unit_json = record_json_size(api, "executed_obs_unit", &created[0].id).await?;
    rows.push(per_record_row(
        "Redis memory per buffered record, one create per transaction (executed_obs_unit)",
        &empty,
        &after_units,
        sizes.memory_single,
        unit_json,
    ));

    let units: Vec<String> = created.into_iter().map(|c| c.id).collect();
    let files = sizes.files_per_bulk;
    let measurement = register_files(
        api,
        &context.reference,
        &context.settings.run_tag,
        &units,
        FILL_CLIENTS,
        sizes.memory_bulk,
        files,
        0,
        FILL_BUDGET,
    )
    .await;
    check_fill(&measurement, sizes.memory_bulk, "buffering files")?;
    let after_files = redis.memory(&service.site).await?;
    let page = api.get_json(&format!("/records/raw_data_file?executed_obs_unit_id=eq.{}&limit=1", units[0])).await?;
    let file = page.get("records").and_then(Value::as_array).and_then(|r| r.first()).cloned();
    let file_json = file.map(|f| serde_json::to_vec(&f).map(|bytes| bytes.len())).transpose()?.unwrap_or(0);
    rows.push(per_record_row(
        &format!("Redis memory per buffered record, {files} files per transaction (raw_data_file)"),
        &after_units,
        &after_files,
        sizes.memory_bulk * files,
        file_json,
    ));

    // Fill raw_data_file up to the overlay count of the RSS reading.
    let buffered_files = sizes.memory_bulk * files;
    let more = sizes.memory_overlays.saturating_sub(buffered_files).div_ceil(files);
    eprintln!("load: buffering {} more files", more * files);
    let measurement = register_files(
        api,
        &context.reference,
        &context.settings.run_tag,
        &units,
        FILL_CLIENTS,
        more,
        files,
        sizes.memory_bulk,
        FILL_BUDGET,
    )
    .await;
    check_fill(&measurement, more, "buffering files")?;
    let filled = service.memory()?;
    let query = format!("/records/raw_data_file?executed_obs_unit_id=eq.{}&limit=100", units[0]);
    for _ in 0..SEARCHES_AFTER_FILL {
        api.get(&query).await?.expect(200, &query)?;
    }
    let searched = service.memory()?;
    let overlays = buffered_files + more * files;
    let mut row = ResultRow::new(format!(
        "service RSS at {overlays} overlays in raw_data_file (+{} in executed_obs_unit)",
        sizes.memory_single
    ));
    row.n = Some(overlays);
    row.note(format!(
        "VmRSS {} after {SEARCHES_AFTER_FILL} merged searches, {} after the fill, {} idle after start; peak VmHWM {}",
        format_bytes(searched.rss_bytes as f64),
        format_bytes(filled.rss_bytes as f64),
        format_bytes(idle.rss_bytes as f64),
        format_bytes(searched.peak_bytes as f64),
    ));
    row.value("rss_bytes", searched.rss_bytes).value("rss_idle_bytes", idle.rss_bytes);
    row.value("rss_peak_bytes", searched.peak_bytes);
    rows.push(row);
    Ok(rows)
}

fn per_record_row(
    scenario: &str,
    before: &MemorySnapshot,
    after: &MemorySnapshot,
    records: usize,
    json_size: usize,
) -> ResultRow {
    let site = after.site_bytes.saturating_sub(before.site_bytes) as f64 / records as f64;
    let used = (after.used_memory as f64 - before.used_memory as f64) / records as f64;
    let mut row = ResultRow::new(scenario);
    row.n = Some(records);
    row.note(format!(
        "{site:.0} B per record in this site's keys (MEMORY USAGE), {used:.0} B by used_memory; record JSON {json_size} B, so {:.1}× its JSON size",
        site / json_size.max(1) as f64
    ));
    row.note(format!("{} keys, {} in total", after.site_keys, format_bytes(after.site_bytes as f64)));
    row.value("bytes_per_record", site.round())
        .value("used_memory_per_record", used.round())
        .value("record_json_bytes", json_size as u64);
    row
}
