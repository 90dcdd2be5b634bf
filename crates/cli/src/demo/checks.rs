//! The checks of the demo. After each phase they compare the merged view
//! with every acknowledged write and with the replica. At the end they
//! check that the replica contains exactly what was acknowledged.

use std::collections::{BTreeMap, BTreeSet};

use super::api::{Api, Health, View};
use super::night::NightLog;
use super::report::{self, Check, ColumnTypes, TableRecords, ViewCounts};

/// Mismatches listed per failed check.
const MAX_LISTED: usize = 10;

/// Checks of one phase: the merged view shows everything acknowledged so
/// far, and the replica is level with it (phase 1) or behind it (2 and 3).
pub fn phase_checks(
    phase: usize,
    log: &NightLog,
    replica: &ViewCounts,
    merged: &ViewCounts,
    health: &Health,
) -> Vec<Check> {
    let sent = report::sent_counts(log);
    let describe = |c: &ViewCounts| {
        format!(
            "{} executed obs units ({} completed), {} files, {} packages ({} finalized)",
            c.units(),
            c.units_by_status.get("completed").copied().unwrap_or(0),
            c.files,
            c.packages(),
            c.packages_by_status.get("finalized").copied().unwrap_or(0)
        )
    };
    let mut checks = vec![Check::new(
        format!("phase {phase}: the merged view shows every acknowledged write"),
        merged == &sent,
        format!("sent: {}\nmerged: {}", describe(&sent), describe(merged)),
    )];
    if phase == 1 {
        checks.push(Check::new(
            "phase 1: the replica caught up with the merged view",
            replica == merged,
            format!("replica: {}", describe(replica)),
        ));
    } else {
        let behind = replica.units() < merged.units() && replica.files < merged.files;
        let situation = match (phase, health.local.replay_paused) {
            (2, _) => format!("main reachable: {}", health.main.reachable),
            (_, Some(false)) => "replay paused: false, so another client of the replica resumed replay during \
                 phase 3 (tests running against the same services do this)"
                .to_owned(),
            (_, paused) => format!("replay paused: {}", paused.map_or("unknown".to_owned(), |p| p.to_string())),
        };
        checks.push(Check::new(
            format!("phase {phase}: the merged view is ahead of the replica"),
            behind,
            format!("replica: {}\n{situation}", describe(replica)),
        ));
    }
    checks
}

/// Runs the final checks: id sets, checksums, sent values and the buffer.
pub async fn final_checks(
    api: &Api,
    db: &tokio_postgres::Client,
    log: &NightLog,
    obs_units: &[i32],
    merged_at_end_of_night: &TableRecords,
    health: &Health,
) -> anyhow::Result<Vec<Check>> {
    let mut types: BTreeMap<&str, ColumnTypes> = BTreeMap::new();
    for table in report::TABLES {
        types.insert(table, report::column_types(db, table).await?);
    }
    let replica_records = report::database_rows(db, obs_units).await?;
    let replica = report::canonical_tables(&types, &replica_records)?;
    let mut checks = Vec::new();

    let acknowledged = [log.unit_ids(), log.file_ids(), log.package_ids()];
    for (table, acknowledged) in report::TABLES.iter().zip(&acknowledged) {
        let found = replica.get(*table).map(|rows| rows.keys().cloned().collect()).unwrap_or_default();
        checks.push(report::id_set_check(table, acknowledged, &found, "replica"));
    }

    let merged = report::canonical_tables(&types, merged_at_end_of_night)?;
    let merged_digest = report::rows_digest(&merged);
    let replica_digest = report::rows_digest(&replica);
    let mut detail = format!(
        "merged view at the end of the night: {merged_digest}\nreplica after the drain:             {replica_digest}"
    );
    for difference in report::differences(&merged, &replica, "merged view", "replica", MAX_LISTED) {
        detail.push('\n');
        detail.push_str(&difference);
    }
    checks.push(Check::new(
        "sha256 of the run's rows: the merged view at the end of the night equals the replica after the drain",
        merged_digest == replica_digest,
        detail,
    ));

    let merged_now = report::canonical_tables(&types, &report::api_rows(api, obs_units, View::Merged).await?)?;
    let now_digest = report::rows_digest(&merged_now);
    let mut detail = format!("merged view now: {now_digest}");
    for difference in report::differences(&merged_now, &replica, "merged view", "replica", MAX_LISTED) {
        detail.push('\n');
        detail.push_str(&difference);
    }
    checks.push(Check::new(
        "sha256 of the run's rows: the merged view after the drain equals the replica",
        now_digest == replica_digest,
        detail,
    ));

    let sent = report::sent_fields(log, &types)?;
    let (compared, mismatches) = report::compare_sent(&sent, &replica, MAX_LISTED);
    let mut detail = format!("{compared} fields compared");
    for mismatch in &mismatches {
        detail.push('\n');
        detail.push_str(mismatch);
    }
    checks.push(Check::new(
        "the replica holds the values the demo sent (status, times, metadata, sizes, checksums, package links)",
        mismatches.is_empty(),
        detail,
    ));

    let buffered = log.receipts().filter(|r| r.status == "buffered").count();
    let total = log.receipts().count();
    let transactions: BTreeSet<&str> = log.receipts().map(|r| r.transaction_id.as_str()).collect();
    checks.push(Check::new(
        "every write was acknowledged as buffered, each with its own transaction",
        buffered == total && transactions.len() == total,
        format!("{buffered} of {total} writes buffered, {} distinct transaction ids", transactions.len()),
    ));

    checks.push(Check::new("the buffer is empty", health.buffer.is_empty(), report::describe_buffer(&health.buffer)));
    Ok(checks)
}
