//! The replay of one schedule row as an instrument script would do it,
//! through the HTTP API only, and the in-memory record of everything the
//! service acknowledged.
//!
//! The raw data files are simulated: nothing is written to disk. Their
//! names and folders follow the CCAT RFSoC streamer (`G3Rotator` in
//! ccatobs/rfsoc-streamer, `python/ccatrfsoc/CCATFileWriter`):
//! `<first 5 digits of session_id>/<stream_id>/<session_id>_<seq:03>.g3`,
//! where `session_id` is the Unix time at which streaming started. Its
//! test configuration rotates files every 600 s. One level-0 book
//! (`level0_<session_id>.h5`) packages the files of each executed obs unit.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

use super::api::{Api, Receipt};
use super::input::{Scan, Schedule};
use super::reference::{Module, group_by_pass};

/// Readout streams of the two RFSoC boards, four drones each.
pub const STREAMS: [&str; 8] = [
    "rfsoc01_drone1",
    "rfsoc01_drone2",
    "rfsoc01_drone3",
    "rfsoc01_drone4",
    "rfsoc02_drone1",
    "rfsoc02_drone2",
    "rfsoc02_drone3",
    "rfsoc02_drone4",
];

/// Seconds of data per file before the streamer starts the next one.
pub const FILE_ROTATION_S: i64 = 600;

/// Simulated file size: frames at the readout's sampling rate (488.28 Hz in
/// ccatobs/ccatkidlib `ccatkidlib/rfsoc/system_config.yaml`), each frame
/// holding I and Q as 4-byte floats for every tone, plus a fixed header.
/// The tone count and header size are assumptions, not measured values.
const SAMPLING_RATE_HZ: f64 = 488.28;
const TONES_PER_STREAM: i64 = 1000;
const BYTES_PER_TONE: i64 = 8;
const HEADER_BYTES: i64 = 4096;

/// A subscan counts as cut short when it lasts less than this fraction of
/// the longest subscan of its pass.
const TRUNCATED_FRACTION: f64 = 0.5;

/// A raw data file the demo registered.
#[derive(Debug, Clone, PartialEq)]
pub struct SentFile {
    pub id: String,
    pub name: String,
    pub relative_path: String,
    pub size_bytes: i64,
    pub checksum: String,
    pub instrument_module_id: i32,
}

/// The level-0 book of one executed obs unit, as finalized.
#[derive(Debug, Clone, PartialEq)]
pub struct SentPackage {
    pub id: String,
    pub name: String,
    pub relative_path: String,
    pub size_bytes: i64,
    pub file_count: i64,
    pub checksum: String,
}

/// One executed obs unit with everything the demo sent for it.
#[derive(Debug, Clone)]
pub struct SentUnit {
    pub id: String,
    /// Phase of the night (1, 2 or 3) in which it was written.
    pub phase: usize,
    pub obs_unit_id: i32,
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    pub status: String,
    /// The metadata after the finish call.
    pub metadata: Json,
    pub files: Vec<SentFile>,
    pub package: SentPackage,
    /// Every write's receipt, in request order.
    pub receipts: Vec<Receipt>,
    /// Time from sending each write to its acknowledgement.
    pub latencies: Vec<Duration>,
}

/// Everything the service acknowledged during the night.
#[derive(Debug, Default)]
pub struct NightLog {
    pub units: Vec<SentUnit>,
}

impl NightLog {
    pub fn unit_ids(&self) -> BTreeSet<String> {
        self.units.iter().map(|u| u.id.clone()).collect()
    }

    pub fn file_ids(&self) -> BTreeSet<String> {
        self.units.iter().flat_map(|u| u.files.iter().map(|f| f.id.clone())).collect()
    }

    pub fn package_ids(&self) -> BTreeSet<String> {
        self.units.iter().map(|u| u.package.id.clone()).collect()
    }

    pub fn receipts(&self) -> impl Iterator<Item = &Receipt> {
        self.units.iter().flat_map(|u| u.receipts.iter())
    }
}

/// Settings shared by every scan of the night.
pub struct NightContext<'a> {
    pub api: &'a Api,
    /// Root folder of the run's simulated data, unique per run, because
    /// `raw_data_file.relative_path` and `raw_data_package.name` are unique
    /// across the table and replaying the same schedule again repeats
    /// every session id.
    pub data_root: String,
    pub modules: &'a [Module],
    /// Obs unit id of each (patch, pass).
    pub pass_units: &'a BTreeMap<(String, u32), i32>,
    /// Schedule lines of the subscans that were cut short.
    pub truncated_lines: BTreeSet<usize>,
    pub total_scans: usize,
}

/// Schedule lines of the subscans that last less than half of the longest
/// subscan of their pass, such as the last subscan of a pass that the next
/// pass cuts off.
pub fn truncated_lines(schedule: &Schedule) -> BTreeSet<usize> {
    let mut lines = BTreeSet::new();
    for scans in group_by_pass(schedule).values() {
        let longest = scans.iter().map(|s| s.duration_s()).max().unwrap_or(0);
        for scan in scans {
            if (scan.duration_s() as f64) < TRUNCATED_FRACTION * longest as f64 {
                lines.insert(scan.line);
            }
        }
    }
    lines
}

/// A file to register, before the service assigns its id.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedFile {
    pub name: String,
    pub relative_path: String,
    pub size_bytes: i64,
    pub checksum: String,
    pub instrument_module_id: i32,
}

/// Lowercase hex SHA-256 of `text`.
pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Simulated size of a file holding `seconds` of one stream.
pub fn simulated_size(seconds: i64) -> i64 {
    let frames = (seconds as f64 * SAMPLING_RATE_HZ).round() as i64;
    HEADER_BYTES + frames * TONES_PER_STREAM * BYTES_PER_TONE
}

/// Plans the files one scan produces: one per 600 s chunk and per stream.
/// Stream `i` is assigned to module `i mod <number of modules>`.
pub fn plan_files(scan: &Scan, data_root: &str, modules: &[Module]) -> Vec<PlannedFile> {
    let session_id = scan.start.timestamp();
    let session_text = session_id.to_string();
    let day_folder: String = session_text.chars().take(5).collect();
    let duration = scan.duration_s();
    let chunks = (duration + FILE_ROTATION_S - 1) / FILE_ROTATION_S;
    let mut files = Vec::new();
    for (stream_index, stream) in STREAMS.iter().enumerate() {
        let module = &modules[stream_index % modules.len()];
        for seq in 0..chunks {
            let seconds = (duration - seq * FILE_ROTATION_S).min(FILE_ROTATION_S);
            let name = format!("{session_id}_{seq:03}.g3");
            let relative_path = format!("{data_root}/{day_folder}/{stream}/{name}");
            let size_bytes = simulated_size(seconds);
            // A stand-in for the checksum of the file's bytes, which do not exist.
            let checksum = sha256_hex(&format!("simulated {relative_path} {size_bytes}"));
            files.push(PlannedFile { name, relative_path, size_bytes, checksum, instrument_module_id: module.id });
        }
    }
    files
}

fn time_text(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Measures one write and keeps its receipt.
async fn timed(
    latencies: &mut Vec<Duration>,
    receipts: &mut Vec<Receipt>,
    future: impl Future<Output = anyhow::Result<Receipt>>,
) -> anyhow::Result<Receipt> {
    let started = Instant::now();
    let receipt = future.await?;
    latencies.push(started.elapsed());
    receipts.push(receipt.clone());
    Ok(receipt)
}

/// Replays one schedule row: start, files, package, file links, finalize
/// and finish, each acknowledged before the next is sent. Prints one line.
pub async fn replay_scan(ctx: &NightContext<'_>, scan: &Scan, number: usize, phase: usize) -> anyhow::Result<SentUnit> {
    let label = format!("{} pass {} sub {}", scan.patch, scan.pass, scan.sub);
    let prefix = format!("[{number:>2}/{}] {label}", ctx.total_scans);
    let result = replay_steps(ctx, scan, phase).await;
    match result {
        Ok(unit) => {
            let statuses: BTreeSet<&str> = unit.receipts.iter().map(|r| r.status.as_str()).collect();
            let statuses: Vec<&str> = statuses.into_iter().collect();
            let truncated = if ctx.truncated_lines.contains(&scan.line) { ", truncated" } else { "" };
            println!(
                "{prefix}: started, {} files, package finalized, finished{truncated} ({})",
                unit.files.len(),
                statuses.join(", ")
            );
            Ok(unit)
        }
        Err(error) => {
            println!("{prefix}: FAILED: {error:#}");
            Err(error.context(format!("{prefix} (schedule line {})", scan.line)))
        }
    }
}

async fn replay_steps(ctx: &NightContext<'_>, scan: &Scan, phase: usize) -> anyhow::Result<SentUnit> {
    let api = ctx.api;
    let obs_unit_id =
        *ctx.pass_units.get(&(scan.patch.clone(), scan.pass)).context("no obs unit was created for this pass")?;
    let session_id = scan.start.timestamp();
    let mut receipts = Vec::new();
    let mut latencies = Vec::new();

    let mut metadata = json!({
        "session_id": session_id,
        "patch": scan.patch,
        "pass": scan.pass,
        "sub": scan.sub,
        "az_min_deg": scan.az_min_deg,
        "az_max_deg": scan.az_max_deg,
        "el_deg": scan.el_deg,
        "rotation_deg": scan.rotation_deg,
        "schedule_line": scan.line,
    });
    let start = json!({
        "obs_unit_id": obs_unit_id,
        "start_time": time_text(scan.start),
        "metadata": metadata,
    });
    let unit_id = timed(&mut latencies, &mut receipts, api.start_executed_obs_unit(&start))
        .await
        .context("start")?
        .single_id()?;

    let planned = plan_files(scan, &ctx.data_root, ctx.modules);
    let bodies: Vec<Json> = planned
        .iter()
        .map(|f| {
            json!({
                "name": f.name,
                "relative_path": f.relative_path,
                "size_bytes": f.size_bytes,
                "checksum": f.checksum,
                "checksum_algorithm": "sha256",
                "executed_obs_unit_id": unit_id,
                "instrument_module_id": f.instrument_module_id,
            })
        })
        .collect();
    let receipt = timed(&mut latencies, &mut receipts, api.create_raw_data_files(&Json::Array(bodies)))
        .await
        .context("file registration")?;
    let file_ids = receipt.all_ids()?;
    anyhow::ensure!(
        file_ids.len() == planned.len(),
        "registered {} files but the response lists {} ids",
        planned.len(),
        file_ids.len()
    );
    let files: Vec<SentFile> = planned
        .into_iter()
        .zip(file_ids)
        .map(|(f, id)| SentFile {
            id,
            name: f.name,
            relative_path: f.relative_path,
            size_bytes: f.size_bytes,
            checksum: f.checksum,
            instrument_module_id: f.instrument_module_id,
        })
        .collect();

    let package_file = format!("level0_{session_id}.h5");
    let package_body = json!({
        "name": format!("{}/{package_file}", ctx.data_root),
        "relative_path": format!("{}/books/{package_file}", ctx.data_root),
        "executed_obs_unit_id": unit_id,
    });
    let package_id = timed(&mut latencies, &mut receipts, api.create_raw_data_package(&package_body))
        .await
        .context("package creation")?
        .single_id()?;

    let links: Vec<Json> = files.iter().map(|f| json!({"id": f.id, "raw_data_package_id": package_id})).collect();
    let transaction = json!({
        "steps": [{"op": "bulk_update", "table": "raw_data_file", "rows": links}],
    });
    timed(&mut latencies, &mut receipts, api.transaction(&transaction))
        .await
        .context("linking the files to the package")?;

    let size_bytes: i64 = files.iter().map(|f| f.size_bytes).sum();
    let file_count = files.len() as i64;
    let checksums: Vec<&str> = files.iter().map(|f| f.checksum.as_str()).collect();
    let package_checksum = sha256_hex(&checksums.join("\n"));
    let finalize = json!({
        "size_bytes": size_bytes,
        "file_count": file_count,
        "checksum": package_checksum,
    });
    timed(&mut latencies, &mut receipts, api.finalize_raw_data_package(&package_id, &finalize))
        .await
        .context("package finalization")?;

    let mut finish = json!({
        "end_time": time_text(scan.stop),
        "status": "completed",
    });
    if ctx.truncated_lines.contains(&scan.line) {
        metadata["truncated"] = json!(true);
        finish["metadata"] = metadata.clone();
    }
    timed(&mut latencies, &mut receipts, api.finish_executed_obs_unit(&unit_id, &finish)).await.context("finish")?;

    Ok(SentUnit {
        id: unit_id,
        phase,
        obs_unit_id,
        start_time: scan.start,
        end_time: scan.stop,
        status: "completed".to_owned(),
        metadata,
        package: SentPackage {
            id: package_id,
            name: package_body["name"].as_str().unwrap_or_default().to_owned(),
            relative_path: package_body["relative_path"].as_str().unwrap_or_default().to_owned(),
            size_bytes,
            file_count,
            checksum: package_checksum,
        },
        files,
        receipts,
        latencies,
    })
}

#[cfg(test)]
mod tests {
    use super::super::input::parse_schedule;
    use super::*;

    const SCHEDULE: &str = "\
#h
Site TEL 0 0 0
 2026-10-01 13:41:00  2026-10-01 13:55:25 0.00 Jupiter 339.52 359.65 51.65 1 0
 2026-10-01 14:38:42  2026-10-01 14:41:00 0.00 Jupiter 331.07 334.24 51.65 1 4
 2026-10-01 14:41:00  2026-10-01 14:54:48 0.00 Jupiter 322.14 332.97 42.05 2 0
";

    fn modules() -> Vec<Module> {
        vec![
            Module { id: 7, name: "f280".into() },
            Module { id: 9, name: "f350".into() },
            Module { id: 11, name: "f850".into() },
        ]
    }

    #[test]
    fn files_cut_into_rotation_chunks() {
        let schedule = parse_schedule(SCHEDULE).unwrap();
        let files = plan_files(&schedule.scans[0], "run", &modules());
        assert_eq!(files.len(), 2 * STREAMS.len());
        assert_eq!(files[0].name, "1790862060_000.g3");
        assert_eq!(files[0].relative_path, "run/17908/rfsoc01_drone1/1790862060_000.g3");
        assert_eq!(files[1].relative_path, "run/17908/rfsoc01_drone1/1790862060_001.g3");
        assert_eq!(files[0].size_bytes, simulated_size(600));
        assert_eq!(files[1].size_bytes, simulated_size(265));
    }

    #[test]
    fn files_assigned_to_modules_round_robin() {
        let schedule = parse_schedule(SCHEDULE).unwrap();
        let files = plan_files(&schedule.scans[1], "run", &modules());
        assert_eq!(files.len(), STREAMS.len());
        let module_ids: Vec<i32> = files.iter().map(|f| f.instrument_module_id).collect();
        assert_eq!(module_ids, vec![7, 9, 11, 7, 9, 11, 7, 9]);
        assert_eq!(files[4].relative_path, "run/17908/rfsoc02_drone1/1790865522_000.g3");
    }

    #[test]
    fn files_paths_unique_and_checksums_deterministic() {
        let schedule = parse_schedule(SCHEDULE).unwrap();
        let files = plan_files(&schedule.scans[0], "run", &modules());
        let paths: BTreeSet<&str> = files.iter().map(|f| f.relative_path.as_str()).collect();
        assert_eq!(paths.len(), files.len());
        let again = plan_files(&schedule.scans[0], "run", &modules());
        assert_eq!(files, again);
        assert_eq!(files[0].checksum.len(), 64);
    }

    #[test]
    fn short_last_subscan_truncated() {
        let schedule = parse_schedule(SCHEDULE).unwrap();
        let lines = truncated_lines(&schedule);
        assert_eq!(lines.into_iter().collect::<Vec<_>>(), vec![4]);
    }

    #[test]
    fn sha256_of_empty_text() {
        assert_eq!(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
