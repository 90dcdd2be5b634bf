//! Output and checks of the demo: the side-by-side view of main, replica
//! and merged view after each phase, the canonical form and checksum of the
//! run's rows, and the final list of checks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anyhow::{Context, anyhow};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value as Json, json};
use sha2::{Digest, Sha256};

use super::api::{Api, BufferCounts, Health, View};
use super::night::NightLog;
use super::services::{STATEMENT_TIMEOUT, within};

/// The tables the night writes, in the order they are reported.
pub const TABLES: [&str; 3] = ["executed_obs_unit", "raw_data_file", "raw_data_package"];

const UNIT_STATUSES: [&str; 3] = ["running", "completed", "failed"];
const PACKAGE_STATUSES: [&str; 2] = ["open", "finalized"];

// ---------------------------------------------------------------------------
// Counts per view

/// Counts of the run's records in one view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewCounts {
    pub units_by_status: BTreeMap<String, usize>,
    pub files: usize,
    pub packages_by_status: BTreeMap<String, usize>,
}

impl ViewCounts {
    pub fn units(&self) -> usize {
        self.units_by_status.values().sum()
    }

    pub fn packages(&self) -> usize {
        self.packages_by_status.values().sum()
    }

    fn unit_status(&self, status: &str) -> usize {
        self.units_by_status.get(status).copied().unwrap_or(0)
    }

    fn package_status(&self, status: &str) -> usize {
        self.packages_by_status.get(status).copied().unwrap_or(0)
    }
}

/// Counts the run's executed obs units, files and packages in one view,
/// through `GET /executed_obs_units/{obs_unit_id}`.
pub async fn read_counts(api: &Api, obs_unit_ids: &[i32], view: View) -> anyhow::Result<ViewCounts> {
    let mut counts = ViewCounts::default();
    for &obs_unit_id in obs_unit_ids {
        for unit in api.executed_obs_units_of(obs_unit_id, view).await? {
            let status = unit.get("status").and_then(Json::as_str).unwrap_or("(none)");
            *counts.units_by_status.entry(status.to_owned()).or_default() += 1;
            let files = unit.get("raw_data_files").and_then(Json::as_array);
            counts.files += files.map_or(0, Vec::len);
            let packages = unit.get("raw_data_packages").and_then(Json::as_array);
            for package in packages.into_iter().flatten() {
                let status = package.get("status").and_then(Json::as_str).unwrap_or("(none)");
                *counts.packages_by_status.entry(status.to_owned()).or_default() += 1;
            }
        }
    }
    Ok(counts)
}

/// Counts what the demo has sent so far, in the same shape as a view.
pub fn sent_counts(log: &NightLog) -> ViewCounts {
    let mut counts = ViewCounts::default();
    for unit in &log.units {
        *counts.units_by_status.entry(unit.status.clone()).or_default() += 1;
        counts.files += unit.files.len();
        *counts.packages_by_status.entry("finalized".to_owned()).or_default() += 1;
    }
    counts
}

/// Counts the run's records in a database directly with SQL.
pub async fn database_counts(db: &tokio_postgres::Client, obs_unit_ids: &[i32]) -> anyhow::Result<ViewCounts> {
    within(STATEMENT_TIMEOUT, "counting the run's records", async {
        let mut counts = ViewCounts::default();
        let units = db
            .query(
                "SELECT status, count(*) FROM executed_obs_unit WHERE obs_unit_id = ANY($1) GROUP BY status",
                &[&obs_unit_ids],
            )
            .await?;
        for row in units {
            counts.units_by_status.insert(row.get(0), row.get::<_, i64>(1) as usize);
        }
        let run_units = "SELECT id FROM executed_obs_unit WHERE obs_unit_id = ANY($1)";
        let files = db
            .query_one(
                &format!("SELECT count(*) FROM raw_data_file WHERE executed_obs_unit_id IN ({run_units})"),
                &[&obs_unit_ids],
            )
            .await?;
        counts.files = files.get::<_, i64>(0) as usize;
        let packages = db
            .query(
                &format!(
                    "SELECT status, count(*) FROM raw_data_package \
                     WHERE executed_obs_unit_id IN ({run_units}) GROUP BY status"
                ),
                &[&obs_unit_ids],
            )
            .await?;
        for row in packages {
            counts.packages_by_status.insert(row.get(0), row.get::<_, i64>(1) as usize);
        }
        Ok(counts)
    })
    .await
}

/// Lists the statuses to print: the usual ones first, then any other a view
/// contains.
fn statuses<'a>(usual: &[&'a str], found: impl Iterator<Item = &'a String>) -> Vec<&'a str> {
    let mut list: Vec<&str> = usual.to_vec();
    let others: BTreeSet<&str> = found.map(String::as_str).filter(|s| !usual.contains(s)).collect();
    list.extend(others);
    list
}

/// Prints main (read directly), the replica and the merged view side by
/// side, with the buffer counts of `/health`.
pub fn print_views(main: &ViewCounts, replica: &ViewCounts, merged: &ViewCounts, health: &Health) {
    let views = [main, replica, merged];
    let line = |label: String, values: [usize; 3]| {
        println!("    {label:<32} {:>8} {:>8} {:>8}", values[0], values[1], values[2]);
    };
    println!("    {:<32} {:>8} {:>8} {:>8}", "", "main", "replica", "merged");
    let unit_statuses = statuses(&UNIT_STATUSES, views.iter().flat_map(|v| v.units_by_status.keys()));
    for status in unit_statuses {
        line(format!("executed obs units, {status}"), views.map(|v| v.unit_status(status)));
    }
    line("raw data files".to_owned(), views.map(|v| v.files));
    let package_statuses = statuses(&PACKAGE_STATUSES, views.iter().flat_map(|v| v.packages_by_status.keys()));
    for status in package_statuses {
        line(format!("raw data packages, {status}"), views.map(|v| v.package_status(status)));
    }
    println!("    (main is read directly with SQL; replica and merged through the API)");
    println!("    buffer: {}", describe_buffer(&health.buffer));
    println!(
        "    API health: {}; main reachable from the API: {}; replica replay paused: {}",
        health.status,
        yes_no(health.main.reachable),
        health.local.replay_paused.map_or("unknown", yes_no)
    );
    for problem in &health.problems {
        println!("    problem reported: {problem}");
    }
}

pub fn describe_buffer(buffer: &BufferCounts) -> String {
    format!(
        "queued {}, blocked {}, applied and waiting for replication {}, dead {}",
        buffer.queued, buffer.blocked, buffer.applied_waiting_replication, buffer.dead
    )
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

// ---------------------------------------------------------------------------
// Checks

/// One check of the demo, printed as PASS or FAIL.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

impl Check {
    pub fn new(name: impl Into<String>, passed: bool, detail: impl Into<String>) -> Check {
        Check { name: name.into(), passed, detail: detail.into() }
    }
}

/// Prints every check and returns how many failed.
pub fn print_checks(checks: &[Check]) -> usize {
    for check in checks {
        let verdict = if check.passed { "PASS" } else { "FAIL" };
        println!("{verdict}  {}", check.name);
        for line in check.detail.lines().filter(|l| !l.is_empty()) {
            println!("      {line}");
        }
    }
    checks.iter().filter(|c| !c.passed).count()
}

/// Compares the ids the service acknowledged with the ids found in a view.
pub fn id_set_check(table: &str, acknowledged: &BTreeSet<String>, found: &BTreeSet<String>, view: &str) -> Check {
    let missing: Vec<&String> = acknowledged.difference(found).collect();
    let extra: Vec<&String> = found.difference(acknowledged).collect();
    let mut detail = format!("acknowledged {}, {view} {}", acknowledged.len(), found.len());
    if !missing.is_empty() {
        let _ = write!(detail, "\nmissing from the {view}: {}", sample(&missing));
    }
    if !extra.is_empty() {
        let _ = write!(detail, "\nin the {view} but never acknowledged: {}", sample(&extra));
    }
    Check::new(
        format!("{table}: the {view} holds exactly the acknowledged ids"),
        missing.is_empty() && extra.is_empty(),
        detail,
    )
}

fn sample(ids: &[&String]) -> String {
    let shown: Vec<&str> = ids.iter().take(5).map(|s| s.as_str()).collect();
    if ids.len() > shown.len() {
        format!("{} and {} more", shown.join(", "), ids.len() - shown.len())
    } else {
        shown.join(", ")
    }
}

// ---------------------------------------------------------------------------
// Canonical rows and checksums

/// Rows of one table in canonical form, by id.
pub type Rows = BTreeMap<String, BTreeMap<String, Json>>;

/// Rows of several tables, by table name.
pub type TableRows = BTreeMap<String, Rows>;

/// Records as read from a view, by table, in [`TABLES`] order.
pub type TableRecords = Vec<(&'static str, Vec<Map<String, Json>>)>;

/// Column name to `information_schema.columns.data_type`.
pub type ColumnTypes = BTreeMap<String, String>;

/// Reads the column types of `table` from a database.
pub async fn column_types(db: &tokio_postgres::Client, table: &str) -> anyhow::Result<ColumnTypes> {
    let rows = within(STATEMENT_TIMEOUT, "reading column types", async {
        Ok(db
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = 'public' AND table_name = $1",
                &[&table],
            )
            .await?)
    })
    .await?;
    if rows.is_empty() {
        anyhow::bail!("table {table} not found in the public schema");
    }
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Converts a value into a form that is equal for equal database values,
/// whichever way it was read: timestamps as UTC with microseconds, numbers without
/// trailing zeros, uuids in lowercase.
pub fn canonical_value(data_type: &str, value: &Json) -> anyhow::Result<Json> {
    if value.is_null() {
        return Ok(Json::Null);
    }
    match data_type {
        "timestamp with time zone" => {
            let text = value.as_str().ok_or_else(|| anyhow!("expected a timestamp string, got {value}"))?;
            let time = DateTime::parse_from_rfc3339(text)
                .with_context(|| format!("invalid timestamp {text:?}"))?
                .with_timezone(&Utc);
            Ok(Json::String(time.to_rfc3339_opts(SecondsFormat::Micros, true)))
        }
        "uuid" => Ok(Json::String(
            value.as_str().ok_or_else(|| anyhow!("expected a uuid string, got {value}"))?.to_lowercase(),
        )),
        "integer" | "bigint" | "smallint" | "double precision" | "real" | "numeric" => match value {
            Json::Number(n) => Ok(canonical_number(n)),
            Json::String(s) => {
                let n: serde_json::Number =
                    serde_json::from_str(s).with_context(|| format!("expected a number, got {s:?}"))?;
                Ok(canonical_number(&n))
            }
            other => anyhow::bail!("expected a number, got {other}"),
        },
        _ => Ok(canonical_json(value)),
    }
}

/// Converts a number to an integer when it has no fraction, so 5 and 5.0 (which
/// jsonb and PostgreSQL numerics treat as equal) compare equal.
fn canonical_number(n: &serde_json::Number) -> Json {
    if n.is_i64() || n.is_u64() {
        return Json::Number(n.clone());
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => json!(f as i64),
        Some(f) => json!(f),
        None => Json::Number(n.clone()),
    }
}

fn canonical_json(value: &Json) -> Json {
    match value {
        Json::Number(n) => canonical_number(n),
        Json::Array(items) => Json::Array(items.iter().map(canonical_json).collect()),
        Json::Object(map) => {
            let sorted: BTreeMap<&String, Json> = map.iter().map(|(k, v)| (k, canonical_json(v))).collect();
            Json::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        other => other.clone(),
    }
}

/// Puts records read from a view into canonical form, keyed by `id`.
pub fn canonical_rows(types: &ColumnTypes, records: &[Map<String, Json>]) -> anyhow::Result<Rows> {
    let mut rows = Rows::new();
    for record in records {
        let id =
            record.get("id").and_then(Json::as_str).ok_or_else(|| anyhow!("a record has no string id: {record:?}"))?;
        let mut row = BTreeMap::new();
        for (column, value) in record {
            let data_type = types.get(column).map(String::as_str).unwrap_or("");
            let canonical =
                canonical_value(data_type, value).with_context(|| format!("record {id}, column {column}"))?;
            row.insert(column.clone(), canonical);
        }
        if rows.insert(id.to_lowercase(), row).is_some() {
            anyhow::bail!("the id {id} appears twice");
        }
    }
    Ok(rows)
}

/// Writes JSON with object keys in sorted order and no spaces.
fn write_sorted(value: &Json, out: &mut String) {
    match value {
        Json::Object(map) => {
            let sorted: BTreeMap<&String, &Json> = map.iter().collect();
            out.push('{');
            for (i, (key, value)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Json::String(key.clone()).to_string());
                out.push(':');
                write_sorted(value, out);
            }
            out.push('}');
        }
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Returns the canonical text of a row: its columns in name order as a JSON
/// object.
pub fn row_text(row: &BTreeMap<String, Json>) -> String {
    let mut out = String::new();
    let object: Map<String, Json> = row.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    write_sorted(&Json::Object(object), &mut out);
    out
}

/// SHA-256 over every table in name order, each as a `table <name> <row
/// count>` line followed by its rows in id order, one canonical text a line.
pub fn rows_digest(tables: &TableRows) -> String {
    let mut hasher = Sha256::new();
    for (table, rows) in tables {
        hasher.update(format!("table {table} {}\n", rows.len()).as_bytes());
        for row in rows.values() {
            hasher.update(row_text(row).as_bytes());
            hasher.update(b"\n");
        }
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Describes up to `limit` rows or fields that differ between two sets of
/// tables.
pub fn differences(
    left: &TableRows,
    right: &TableRows,
    left_name: &str,
    right_name: &str,
    limit: usize,
) -> Vec<String> {
    let mut found = Vec::new();
    let tables: BTreeSet<&String> = left.keys().chain(right.keys()).collect();
    let empty = Rows::new();
    for table in tables {
        let a = left.get(table).unwrap_or(&empty);
        let b = right.get(table).unwrap_or(&empty);
        let ids: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for id in ids {
            match (a.get(id), b.get(id)) {
                (Some(_), None) => found.push(format!("{table} {id}: only in the {left_name}")),
                (None, Some(_)) => found.push(format!("{table} {id}: only in the {right_name}")),
                (Some(x), Some(y)) => {
                    let columns: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                    for column in columns {
                        let (u, v) = (x.get(column), y.get(column));
                        if u != v {
                            found.push(format!(
                                "{table} {id} {column}: {left_name} {}, {right_name} {}",
                                u.map_or("(absent)".to_owned(), Json::to_string),
                                v.map_or("(absent)".to_owned(), Json::to_string)
                            ));
                        }
                    }
                }
                (None, None) => {}
            }
            if found.len() >= limit {
                return found;
            }
        }
    }
    found
}

/// Reads the run's rows of each night table directly from a database. The
/// run is the set of executed obs units of `obs_unit_ids`.
pub async fn database_rows(db: &tokio_postgres::Client, obs_unit_ids: &[i32]) -> anyhow::Result<TableRecords> {
    let mut tables = Vec::new();
    for table in TABLES {
        let condition = if table == "executed_obs_unit" {
            "t.obs_unit_id = ANY($1)"
        } else {
            "t.executed_obs_unit_id IN (SELECT id FROM executed_obs_unit WHERE obs_unit_id = ANY($1))"
        };
        let sql = format!("SELECT to_jsonb(t)::text FROM {table} t WHERE {condition}");
        let rows = within(STATEMENT_TIMEOUT, &format!("reading {table}"), async {
            Ok(db.query(&sql, &[&obs_unit_ids]).await?)
        })
        .await?;
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            let text: String = row.get(0);
            records.push(serde_json::from_str(&text).with_context(|| format!("{table} row is not a JSON object"))?);
        }
        tables.push((table, records));
    }
    Ok(tables)
}

/// Reads the run's rows of each night table through the API's `/records`
/// endpoints in `view`.
pub async fn api_rows(api: &Api, obs_unit_ids: &[i32], view: View) -> anyhow::Result<TableRecords> {
    let obs_units: Vec<String> = obs_unit_ids.iter().map(i32::to_string).collect();
    let units = api.records_where_in("executed_obs_unit", "obs_unit_id", &obs_units, view).await?;
    let unit_ids: Vec<String> =
        units.iter().filter_map(|u| u.get("id").and_then(Json::as_str).map(str::to_owned)).collect();
    let files = api.records_where_in("raw_data_file", "executed_obs_unit_id", &unit_ids, view).await?;
    let packages = api.records_where_in("raw_data_package", "executed_obs_unit_id", &unit_ids, view).await?;
    Ok(vec![("executed_obs_unit", units), ("raw_data_file", files), ("raw_data_package", packages)])
}

/// Canonical rows of every table read from a view.
pub fn canonical_tables(types: &BTreeMap<&str, ColumnTypes>, tables: &TableRecords) -> anyhow::Result<TableRows> {
    let mut out = TableRows::new();
    for (table, records) in tables {
        let table_types = types.get(table).ok_or_else(|| anyhow!("no column types for {table}"))?;
        out.insert(
            (*table).to_owned(),
            canonical_rows(table_types, records).with_context(|| format!("table {table}"))?,
        );
    }
    Ok(out)
}

/// Builds the fields the demo sent for each record, in canonical form, to
/// compare with the rows a database contains.
pub fn sent_fields(log: &NightLog, types: &BTreeMap<&str, ColumnTypes>) -> anyhow::Result<TableRows> {
    let time = |t: DateTime<Utc>| json!(t.to_rfc3339_opts(SecondsFormat::Secs, true));
    let mut raw: BTreeMap<&str, Vec<Map<String, Json>>> = BTreeMap::new();
    for unit in &log.units {
        let fields = json!({
            "id": unit.id,
            "obs_unit_id": unit.obs_unit_id,
            "start_time": time(unit.start_time),
            "end_time": time(unit.end_time),
            "status": unit.status,
            "metadata": unit.metadata,
        });
        raw.entry("executed_obs_unit").or_default().push(object(fields));
        for file in &unit.files {
            let fields = json!({
                "id": file.id,
                "name": file.name,
                "relative_path": file.relative_path,
                "size_bytes": file.size_bytes,
                "checksum": file.checksum,
                "checksum_algorithm": "sha256",
                "executed_obs_unit_id": unit.id,
                "instrument_module_id": file.instrument_module_id,
                "raw_data_package_id": unit.package.id,
            });
            raw.entry("raw_data_file").or_default().push(object(fields));
        }
        let package = &unit.package;
        let fields = json!({
            "id": package.id,
            "name": package.name,
            "relative_path": package.relative_path,
            "executed_obs_unit_id": unit.id,
            "status": "finalized",
            "size_bytes": package.size_bytes,
            "file_count": package.file_count,
            "checksum": package.checksum,
        });
        raw.entry("raw_data_package").or_default().push(object(fields));
    }
    let tables: TableRecords = TABLES.iter().map(|t| (*t, raw.remove(t).unwrap_or_default())).collect();
    canonical_tables(types, &tables)
}

fn object(value: Json) -> Map<String, Json> {
    match value {
        Json::Object(map) => map,
        _ => Map::new(),
    }
}

/// Compares the sent fields with the same fields of the database rows;
/// columns the demo did not send are not compared.
pub fn compare_sent(sent: &TableRows, database: &TableRows, limit: usize) -> (usize, Vec<String>) {
    let mut compared = 0;
    let mut mismatches = Vec::new();
    for (table, rows) in sent {
        for (id, fields) in rows {
            let Some(row) = database.get(table).and_then(|t| t.get(id)) else {
                mismatches.push(format!("{table} {id}: not in the replica"));
                continue;
            };
            for (column, expected) in fields {
                compared += 1;
                let actual = row.get(column);
                if actual != Some(expected) && mismatches.len() < limit {
                    mismatches.push(format!(
                        "{table} {id} {column}: sent {expected}, replica {}",
                        actual.map_or("(absent)".to_owned(), Json::to_string)
                    ));
                }
            }
        }
    }
    (compared, mismatches)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types() -> ColumnTypes {
        [
            ("id", "uuid"),
            ("start_time", "timestamp with time zone"),
            ("size_bytes", "bigint"),
            ("metadata", "jsonb"),
            ("name", "text"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn record(value: Json) -> Map<String, Json> {
        object(value)
    }

    #[test]
    fn timestamps_equal_across_offsets() {
        let a = canonical_value("timestamp with time zone", &json!("2026-10-01T10:40:00+00:00")).unwrap();
        let b = canonical_value("timestamp with time zone", &json!("2026-10-01T12:40:00.000000+02:00")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, json!("2026-10-01T10:40:00.000000Z"));
    }

    #[test]
    fn json_numbers_and_key_order_ignored() {
        let a = canonical_value("jsonb", &json!({"b": 0.0, "a": [1, 2.50]})).unwrap();
        let b = canonical_value("jsonb", &json!({"a": [1.0, 2.5], "b": 0})).unwrap();
        assert_eq!(row_text(&BTreeMap::from([("m".to_owned(), a)])), row_text(&BTreeMap::from([("m".to_owned(), b)])));
    }

    #[test]
    fn bigint_from_string_or_number() {
        assert_eq!(canonical_value("bigint", &json!("42")).unwrap(), json!(42));
        assert_eq!(canonical_value("bigint", &json!(42)).unwrap(), json!(42));
    }

    #[test]
    fn digest_independent_of_read_order() {
        let first = record(
            json!({"id": "A1", "name": "x", "size_bytes": 1, "start_time": "2026-10-01T10:40:00Z", "metadata": {"k": 1}}),
        );
        let second = record(json!({"id": "b2", "name": "y", "size_bytes": 2, "start_time": null, "metadata": {}}));
        let one = canonical_rows(&types(), &[first.clone(), second.clone()]).unwrap();
        let two = canonical_rows(&types(), &[second, first]).unwrap();
        let tables = |rows: Rows| TableRows::from([("t".to_owned(), rows)]);
        assert_eq!(rows_digest(&tables(one)), rows_digest(&tables(two)));
    }

    #[test]
    fn digest_changes_with_a_field() {
        let a = record(json!({"id": "a", "name": "x", "size_bytes": 1}));
        let b = record(json!({"id": "a", "name": "x", "size_bytes": 2}));
        let digest = |r: Map<String, Json>| {
            rows_digest(&TableRows::from([("t".to_owned(), canonical_rows(&types(), &[r]).unwrap())]))
        };
        assert_ne!(digest(a), digest(b));
    }

    #[test]
    fn duplicate_ids_rejected() {
        let a = record(json!({"id": "a", "name": "x"}));
        assert!(canonical_rows(&types(), &[a.clone(), a]).is_err());
    }

    #[test]
    fn differences_name_the_field() {
        let left = canonical_rows(&types(), &[record(json!({"id": "a", "size_bytes": 1}))]).unwrap();
        let right = canonical_rows(&types(), &[record(json!({"id": "a", "size_bytes": 2}))]).unwrap();
        let found = differences(
            &TableRows::from([("t".to_owned(), left)]),
            &TableRows::from([("t".to_owned(), right)]),
            "merged view",
            "replica",
            10,
        );
        assert_eq!(found, vec!["t a size_bytes: merged view 1, replica 2".to_owned()]);
    }

    #[test]
    fn id_set_check_lists_missing() {
        let acknowledged: BTreeSet<String> = ["a", "b"].into_iter().map(String::from).collect();
        let found: BTreeSet<String> = ["a", "c"].into_iter().map(String::from).collect();
        let check = id_set_check("t", &acknowledged, &found, "replica");
        assert!(!check.passed);
        assert!(check.detail.contains("missing from the replica: b"), "{}", check.detail);
        assert!(check.detail.contains("never acknowledged: c"), "{}", check.detail);
    }
}
