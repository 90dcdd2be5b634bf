//! Criterion benches of the pure crate: write coercion, condition
//! evaluation, the merge of one page and the parse of stored overlays.
//!
//! The tables below copy the columns of `executed_obs_unit` and
//! `raw_data_file` from `crates/pg/migrations/V1__observatory.sql` in
//! catalog order, so the costs match those of the service's own tables.
//!
//! NOTE: `merge_page` takes its inputs in the shape of the current read path
//! (a local page, the overlays as an iterator and the local rows of overlaid
//! records). Only `merge_inputs` and `bench_merge_page` build or pass them,
//! so a change of that signature touches those two functions alone.
//!
//! Run with `cargo bench -p opsbuffer-core`; add `-- --quick` for a short run.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use opsbuffer_core::merge::merge_page;
use opsbuffer_core::overlay::{Change, ChangeKind, EntryId, OverlayEntry, TableOverlays};
use opsbuffer_core::query::{Condition, Query};
use opsbuffer_core::row::Row;
use opsbuffer_core::schema::{Column, ColumnDefault, Table};
use opsbuffer_core::tx::{PlanContext, plan_create};
use opsbuffer_core::types::ColumnType;
use opsbuffer_core::value::Value;
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

/// Records of the queried executed obs unit, as in the load generator's
/// merged-search scenario.
const MATCHING_RECORDS: usize = 100;
const PAGE_LIMIT: usize = 100;
/// 2026-10-01T10:40:00Z in microseconds since the Unix epoch.
const START_MICROS: i64 = 1_790_851_200_000_000;

fn column(name: &str, ty: ColumnType, sql_type: &str, nullable: bool, default: ColumnDefault) -> Column {
    Column { name: name.into(), ty, sql_type: sql_type.into(), nullable, default, generated_always: false }
}

fn executed_obs_unit_table() -> Arc<Table> {
    let columns = vec![
        column("id", ColumnType::Uuid, "uuid", false, ColumnDefault::None),
        column("obs_unit_id", ColumnType::Int4, "integer", false, ColumnDefault::None),
        column("start_time", ColumnType::Timestamptz, "timestamp with time zone", false, ColumnDefault::None),
        column("end_time", ColumnType::Timestamptz, "timestamp with time zone", true, ColumnDefault::None),
        column("status", ColumnType::Text, "text", false, ColumnDefault::Constant(Value::Text("running".into()))),
        column("metadata", ColumnType::Jsonb, "jsonb", false, ColumnDefault::Constant(Value::Json(json!({})))),
        column("created_at", ColumnType::Timestamptz, "timestamp with time zone", false, ColumnDefault::Now),
    ];
    Arc::new(Table::new("executed_obs_unit".into(), "public".into(), columns, Some(0)))
}

fn raw_data_file_table() -> Arc<Table> {
    let columns = vec![
        column("id", ColumnType::Uuid, "uuid", false, ColumnDefault::None),
        column("name", ColumnType::Text, "text", false, ColumnDefault::None),
        column("relative_path", ColumnType::Text, "text", false, ColumnDefault::None),
        column("size_bytes", ColumnType::Int8, "bigint", false, ColumnDefault::None),
        column("checksum", ColumnType::Text, "text", false, ColumnDefault::None),
        column(
            "checksum_algorithm",
            ColumnType::Text,
            "text",
            false,
            ColumnDefault::Constant(Value::Text("sha256".into())),
        ),
        column("executed_obs_unit_id", ColumnType::Uuid, "uuid", false, ColumnDefault::None),
        column("instrument_module_id", ColumnType::Int4, "integer", false, ColumnDefault::None),
        column("raw_data_package_id", ColumnType::Uuid, "uuid", true, ColumnDefault::None),
        column("created_at", ColumnType::Timestamptz, "timestamp with time zone", false, ColumnDefault::Now),
    ];
    Arc::new(Table::new("raw_data_file".into(), "public".into(), columns, Some(0)))
}

/// Builds the body an instrument script sends to
/// `POST /executed_obs_units/start`, with the defaults the HTTP layer adds.
fn executed_obs_unit_body() -> Map<String, Json> {
    json!({
        "obs_unit_id": 17,
        "start_time": "2026-10-01T10:40:00.123456+00:00",
        "status": "running",
        "metadata": {"scan": "constant_el", "az_deg": 123.5, "el_deg": 45.0, "source": "Jupiter"},
    })
    .as_object()
    .cloned()
    .expect("object")
}

/// Builds one file of a `POST /raw_data_files/bulk` body.
fn raw_data_file_body(executed_obs_unit: Uuid, index: usize) -> Map<String, Json> {
    json!({
        "name": format!("rfsoc01_drone2_{index:05}.g3"),
        "relative_path": format!("2026/10/01/{executed_obs_unit}/rfsoc01_drone2_{index:05}.g3"),
        "size_bytes": 1_073_741_824u64 + index as u64,
        "checksum": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "executed_obs_unit_id": executed_obs_unit.to_string(),
        "instrument_module_id": 4,
    })
    .as_object()
    .cloned()
    .expect("object")
}

/// Builds a raw data file row as local returns it or a buffered create stores it.
fn raw_data_file_row(id: Uuid, executed_obs_unit: Uuid, index: usize) -> Row {
    Row(vec![
        Value::Uuid(id),
        Value::Text(format!("rfsoc01_drone2_{index:05}.g3")),
        Value::Text(format!("2026/10/01/{executed_obs_unit}/rfsoc01_drone2_{index:05}.g3")),
        Value::Int(1_073_741_824 + index as i64),
        Value::Text("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into()),
        Value::Text("sha256".into()),
        Value::Uuid(executed_obs_unit),
        Value::Int(4),
        Value::Null,
        Value::Timestamptz(START_MICROS + index as i64),
    ])
}

/// Builds a deterministic version-7 UUID, so runs compare. The counter fills
/// the timestamp bits, so later ids sort after earlier ones.
fn id(counter: u64) -> Uuid {
    Uuid::from_u128((u128::from(counter) << 80) | (0x7 << 76) | (0x8 << 60) | u128::from(counter))
}

fn create_entry(sequence: u64, row: Row) -> OverlayEntry {
    let key = row.get(0).key_text();
    OverlayEntry {
        id: EntryId::new(sequence, 0, ChangeKind::Create, key),
        transaction_id: id(1_000_000_000 + sequence),
        change: Change::Create(row),
    }
}

fn bench_plan_create(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan_create");
    let executed_obs_unit = executed_obs_unit_table();
    let body = executed_obs_unit_body();
    group.bench_function("executed_obs_unit", |b| {
        let mut new_uuid = Uuid::now_v7;
        let mut ctx = PlanContext { now: START_MICROS, new_uuid: &mut new_uuid };
        b.iter(|| plan_create(&executed_obs_unit, black_box(&body), "", &mut ctx).expect("valid body"));
    });

    let raw_data_file = raw_data_file_table();
    let body = raw_data_file_body(id(1), 7);
    group.bench_function("raw_data_file", |b| {
        let mut new_uuid = Uuid::now_v7;
        let mut ctx = PlanContext { now: START_MICROS, new_uuid: &mut new_uuid };
        b.iter(|| plan_create(&raw_data_file, black_box(&body), "", &mut ctx).expect("valid body"));
    });
    group.finish();
}

fn bench_condition_eval(c: &mut Criterion) {
    let mut group = c.benchmark_group("condition_eval");
    let table = raw_data_file_table();
    let queried = id(1);
    let matching = raw_data_file_row(id(2), queried, 1);
    let other = raw_data_file_row(id(3), id(4), 2);
    let cases = [
        ("uuid_eq", "executed_obs_unit_id", format!("eq.{queried}")),
        ("bigint_gte", "size_bytes", "gte.1073741824".to_owned()),
        ("timestamptz_lt", "created_at", "lt.2026-10-01T12:00:00+02:00".to_owned()),
        ("text_like", "relative_path", "like.2026/10/01/*drone2_0000*".to_owned()),
        ("text_in", "checksum_algorithm", "in.(md5,sha1,sha256)".to_owned()),
    ];
    for (name, column, raw) in cases {
        let condition = Condition::parse(&table, column, &raw).expect("valid condition");
        group.bench_function(BenchmarkId::new(name, "match"), |b| b.iter(|| condition.eval(black_box(&matching))));
        group.bench_function(BenchmarkId::new(name, "other"), |b| b.iter(|| condition.eval(black_box(&other))));
    }
    group.finish();
}

/// Inputs of one merged page: `executed_obs_unit_id = queried`, the local
/// page of the matching rows, and `overlays` buffered creates of files of
/// other executed obs units (none of which match).
struct MergeInputs {
    query: Query,
    local_page: Vec<Row>,
    overlays: TableOverlays,
    local_overlaid: HashMap<String, Row>,
}

fn merge_inputs(table: &Table, overlays: usize) -> MergeInputs {
    let queried = id(1);
    let filter = Condition::eq(table.column_position("executed_obs_unit_id").expect("column"), Value::Uuid(queried));
    let mut query = Query::all(table, PAGE_LIMIT);
    query.conditions.push(filter);

    let local_page = (0..MATCHING_RECORDS).map(|i| raw_data_file_row(id(10 + i as u64), queried, i)).collect();

    let mut table_overlays = TableOverlays::default();
    for i in 0..overlays {
        let counter = 1_000_000 + i as u64;
        // A hundred files per other executed obs unit, as bulk writes make them.
        let owner = id(2_000_000 + (i / 100) as u64);
        table_overlays.insert(create_entry(i as u64 + 1, raw_data_file_row(id(counter), owner, i)));
    }
    MergeInputs { query, local_page, overlays: table_overlays, local_overlaid: HashMap::new() }
}

fn bench_merge_page(c: &mut Criterion) {
    let mut group = c.benchmark_group("merge_page");
    let table = raw_data_file_table();
    let primary_key = table.primary_key.expect("primary key");
    for overlays in [0usize, 1_000, 10_000, 100_000] {
        let inputs = merge_inputs(&table, overlays);
        if overlays >= 10_000 {
            group.sample_size(20);
        }
        group.throughput(Throughput::Elements(overlays.max(1) as u64));
        group.bench_with_input(BenchmarkId::new("overlays", overlays), &inputs, |b, inputs| {
            b.iter(|| {
                let page = merge_page(
                    &inputs.query,
                    primary_key,
                    inputs.local_page.clone(),
                    inputs.overlays.records.iter(),
                    &inputs.local_overlaid,
                );
                assert_eq!(page.records.len(), MATCHING_RECORDS.min(PAGE_LIMIT));
                page
            });
        });
    }
    group.finish();
}

fn bench_overlay_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("overlay_parse");
    let table = raw_data_file_table();
    let entry = create_entry(42, raw_data_file_row(id(5), id(6), 3));
    let field = entry.id.to_string();
    let stored = entry.to_stored(&table);
    group.throughput(Throughput::Bytes(stored.len() as u64));
    group.bench_function("raw_data_file_create", |b| {
        b.iter(|| OverlayEntry::from_stored(&table, black_box(&field), black_box(&stored)).expect("valid entry"));
    });

    let executed_obs_unit = executed_obs_unit_table();
    let finish = OverlayEntry {
        id: EntryId::new(43, 0, ChangeKind::Patch, id(7).to_string()),
        transaction_id: id(8),
        change: Change::Patch(vec![
            (3, Value::Timestamptz(START_MICROS + 3_600_000_000)),
            (4, Value::Text("completed".into())),
        ]),
    };
    let field = finish.id.to_string();
    let stored = finish.to_stored(&executed_obs_unit);
    group.throughput(Throughput::Bytes(stored.len() as u64));
    group.bench_function("executed_obs_unit_finish_patch", |b| {
        b.iter(|| {
            OverlayEntry::from_stored(&executed_obs_unit, black_box(&field), black_box(&stored)).expect("valid entry")
        });
    });
    group.finish();
}

criterion_group!(benches, bench_plan_create, bench_condition_eval, bench_merge_page, bench_overlay_parse);
criterion_main!(benches);
