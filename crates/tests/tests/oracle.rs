//! The one invariant, checked against PostgreSQL itself: after every step
//! of a random sequence of writes, drains, replay pauses and queries, each
//! query on the merged view returns exactly what the same query returns on
//! an oracle database to which every acknowledged transaction was applied
//! directly.
//!
//! The oracle is a second database, `opsbuffer_oracle`, on main's server
//! with the same test table. The oracle's SQL is written here, by hand,
//! independently of the SQL opsbuffer generates. A failure prints the seed
//! and step; `ORACLE_SEEDS=<seed> ORACLE_STEPS=<n>` replays it.

use std::collections::HashSet;
use std::time::Duration;

use opsbuffer_core::types::ColumnType;
use opsbuffer_tests::{Admin, REPLAY, SiteOptions, TestSite, admin, connect};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio_postgres::Client;
use uuid::Uuid;

/// The test table. Its columns cover every type the query language
/// supports; `run` keeps concurrent runs apart.
const TABLE_DDL: &str = "CREATE TABLE IF NOT EXISTS oracle_item (
    id uuid PRIMARY KEY,
    run uuid NOT NULL,
    parent_id uuid REFERENCES oracle_item (id),
    label text,
    code varchar(12),
    qty integer,
    big bigint,
    ratio double precision,
    price numeric(12,3),
    flag boolean,
    seen_at timestamptz,
    day date,
    info jsonb,
    tag text NOT NULL DEFAULT 'none'
)";

/// Columns, their types and whether they can be ordered.
const COLUMNS: &[(&str, &str)] = &[
    ("id", "uuid"),
    ("parent_id", "uuid"),
    ("label", "text"),
    ("code", "varchar"),
    ("qty", "int4"),
    ("big", "int8"),
    ("ratio", "float8"),
    ("price", "numeric"),
    ("flag", "bool"),
    ("seen_at", "timestamptz"),
    ("day", "date"),
    ("info", "jsonb"),
    ("tag", "text"),
];

const TEXTS: &[&str] =
    &["alpha", "Alpha", "ALPHA", "beta", "Beta", "é", "ée", "e", "z", "Z", "ß", "日本", "", "a b", "a%b", "a_b", "50%"];
const CODES: &[&str] = &["A1", "a1", "B-2", "ç", "x", "XYZ", "mm"];
const INTS: &[i64] = &[-5, -1, 0, 1, 2, 3, 7, 42, 2147483647, -2147483648];
const BIGS: &[i64] = &[0, 1, -1, 9_007_199_254_740_993, -9_223_372_036_854_775_808, 9_223_372_036_854_775_807];
const FLOATS: &[f64] = &[-1.5, 0.0, 0.1, 0.30000000000000004, 1e10, 2.71, -0.0, 2.5e-8];
const PRICES: &[&str] = &["1.005", "-2.5", "0", "999999999.999", "0.0005", "12.340", "-0.001", "1.0049"];
const TIMES: &[&str] = &[
    "2026-10-01T10:00:00Z",
    "2026-10-01T12:00:00+02:00",
    "2026-10-01T10:00:00.5Z",
    "2026-10-01T07:30:00-03:00",
    "2026-09-30T23:59:59.999999Z",
    "2026-10-01T10:00:00.0000004Z",
    "1999-12-31T23:00:00-01:00",
];
const DAYS: &[&str] = &["2026-10-01", "2026-09-30", "2000-02-29", "1970-01-01"];
const TAGS: &[&str] = &["none", "cal", "sci", "Cal"];

fn infos() -> Vec<Value> {
    vec![json!({"a": 1}), json!({"a": 1.0}), json!([1, 2]), json!("x"), json!({"b": [true, null]}), json!(3)]
}

/// A column value for writes, or None for NULL.
fn random_value(rng: &mut StdRng, column: &str, ids: &[Uuid]) -> Value {
    if column != "tag" && rng.random_bool(0.15) {
        return Value::Null;
    }
    match column {
        "parent_id" | "id" => {
            if ids.is_empty() {
                Value::Null
            } else {
                json!(ids[rng.random_range(0..ids.len())])
            }
        }
        "label" => json!(TEXTS[rng.random_range(0..TEXTS.len())]),
        "code" => json!(CODES[rng.random_range(0..CODES.len())]),
        "qty" => json!(INTS[rng.random_range(0..INTS.len())]),
        "big" => json!(BIGS[rng.random_range(0..BIGS.len())]),
        "ratio" => json!(FLOATS[rng.random_range(0..FLOATS.len())]),
        "price" => json!(PRICES[rng.random_range(0..PRICES.len())]),
        "flag" => json!(rng.random_bool(0.5)),
        "seen_at" => json!(TIMES[rng.random_range(0..TIMES.len())]),
        "day" => json!(DAYS[rng.random_range(0..DAYS.len())]),
        "info" => infos()[rng.random_range(0..infos().len())].clone(),
        "tag" => json!(TAGS[rng.random_range(0..TAGS.len())]),
        other => panic!("no generator for {other}"),
    }
}

/// A filter literal as text for a column.
fn random_literal(rng: &mut StdRng, column: &str, ids: &[Uuid]) -> String {
    match random_value(rng, column, ids) {
        value if column == "info" && !value.is_null() => value.to_string(),
        Value::Null => match column {
            "label" | "code" | "tag" => "alpha".into(),
            "parent_id" | "id" => Uuid::nil().to_string(),
            "qty" | "big" => "3".into(),
            "ratio" => "0.1".into(),
            "price" => "1.0050".into(),
            "flag" => "true".into(),
            "seen_at" => TIMES[0].into(),
            "day" => DAYS[0].into(),
            _ => "{\"a\": 1}".into(),
        },
        Value::String(s) => s,
        other => other.to_string(),
    }
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn sql_type(kind: &str) -> &str {
    match kind {
        "int4" => "integer",
        "int8" => "bigint",
        "float8" => "double precision",
        "varchar" => "text",
        other => other,
    }
}

fn is_text(kind: &str) -> bool {
    matches!(kind, "text" | "varchar")
}

/// One random query: (query string for the API, SQL WHERE and ORDER BY for
/// the oracle, limit).
struct RandomQuery {
    api: Vec<(String, String)>,
    where_sql: Vec<String>,
    order_sql: Vec<String>,
    order_param: Option<String>,
    limit: usize,
}

fn random_query(rng: &mut StdRng, run: Uuid, ids: &[Uuid]) -> RandomQuery {
    let mut api = vec![("run".to_owned(), format!("eq.{run}"))];
    let mut where_sql = vec![format!("run = '{run}'")];
    for _ in 0..rng.random_range(0..3) {
        let (column, kind) = COLUMNS[rng.random_range(0..COLUMNS.len())];
        let c = format!("\"{column}\"");
        let collated = if is_text(kind) { format!("{c} COLLATE \"C\"") } else { c.clone() };
        let ty = sql_type(kind);
        let negate = rng.random_bool(0.15);
        let mut ops = vec!["eq", "neq", "in", "is.null"];
        if kind != "jsonb" {
            ops.extend(["lt", "lte", "gt", "gte"]);
        }
        if is_text(kind) {
            ops.extend(["like", "ilike"]);
        }
        if kind == "bool" {
            ops.extend(["is.true", "is.false"]);
        }
        let op = ops[rng.random_range(0..ops.len())];
        let (value, sql) = match op {
            "is.null" | "is.true" | "is.false" => {
                let keyword = &op[3..];
                (op.to_owned(), format!("{c} IS {}", keyword.to_uppercase()))
            }
            "in" => {
                let items: Vec<String> =
                    (0..rng.random_range(1..4)).map(|_| random_literal(rng, column, ids)).collect();
                let quoted: Vec<String> =
                    items.iter().map(|i| format!("\"{}\"", i.replace('\\', "\\\\").replace('"', "\\\""))).collect();
                let sql_items: Vec<String> = items.iter().map(|i| format!("{}::{ty}", quote(i))).collect();
                (format!("in.({})", quoted.join(",")), format!("{collated} IN ({})", sql_items.join(", ")))
            }
            "like" | "ilike" => {
                let patterns = ["a*", "*a*", "A*", "*%*", "_", "é*", "*b", "a_b", "*"];
                let p = patterns[rng.random_range(0..patterns.len())];
                (format!("{op}.{p}"), format!("{collated} {} {}", op.to_uppercase(), quote(&p.replace('*', "%"))))
            }
            _ => {
                let literal = random_literal(rng, column, ids);
                let symbol = match op {
                    "eq" => "=",
                    "neq" => "<>",
                    "lt" => "<",
                    "lte" => "<=",
                    "gt" => ">",
                    _ => ">=",
                };
                (format!("{op}.{literal}"), format!("{collated} {symbol} {}::{ty}", quote(&literal)))
            }
        };
        if negate {
            api.push((column.to_owned(), format!("not.{value}")));
            where_sql.push(format!("NOT ({sql})"));
        } else {
            api.push((column.to_owned(), value));
            where_sql.push(format!("({sql})"));
        }
    }

    let mut order_terms = Vec::new();
    let mut order_sql = Vec::new();
    let orderable: Vec<&(&str, &str)> = COLUMNS.iter().filter(|(_, k)| *k != "jsonb").collect();
    let mut used = HashSet::new();
    for _ in 0..rng.random_range(0..3) {
        let (column, kind) = orderable[rng.random_range(0..orderable.len())];
        if !used.insert(*column) {
            continue;
        }
        let descending = rng.random_bool(0.5);
        let nulls = [None, Some(true), Some(false)][rng.random_range(0..3)];
        let mut term = format!("{column}.{}", if descending { "desc" } else { "asc" });
        if let Some(first) = nulls {
            term.push_str(if first { ".nullsfirst" } else { ".nullslast" });
        }
        order_terms.push(term);
        let collate = if is_text(kind) { " COLLATE \"C\"" } else { "" };
        let nulls_first = nulls.unwrap_or(descending);
        order_sql.push(format!(
            "\"{column}\"{collate} {} NULLS {}",
            if descending { "DESC" } else { "ASC" },
            if nulls_first { "FIRST" } else { "LAST" }
        ));
        if *column == "id" {
            break;
        }
    }
    if !used.contains("id") {
        order_sql.push("\"id\" ASC".into());
    }
    let order_param = (!order_terms.is_empty()).then(|| order_terms.join(","));
    RandomQuery { api, where_sql, order_sql, order_param, limit: rng.random_range(1..16) }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The records of the test table on the oracle for a query, as the API
/// renders them.
async fn oracle_rows(oracle: &Client, query: &RandomQuery, limit: Option<usize>) -> Vec<Value> {
    // Aliases keep ORDER BY on the columns, not on their text forms.
    let columns: Vec<String> =
        COLUMNS.iter().enumerate().map(|(i, (c, _))| format!("\"{c}\"::text AS out_{i}")).collect();
    let sql = format!(
        "SELECT {}, run::text AS out_run FROM oracle_item WHERE {} ORDER BY {}{}",
        columns.join(", "),
        query.where_sql.join(" AND "),
        query.order_sql.join(", "),
        limit.map(|l| format!(" LIMIT {l}")).unwrap_or_default()
    );
    let rows = oracle.query(&sql, &[]).await.unwrap_or_else(|e| panic!("oracle query failed: {e}\n{sql}"));
    rows.iter()
        .map(|row| {
            let mut object = serde_json::Map::new();
            for (i, (column, kind)) in COLUMNS.iter().enumerate() {
                let text: Option<String> = row.get(i);
                let ty = ColumnType::from_pg(kind, if *kind == "numeric" { ((12 << 16) | 3) + 4 } else { -1 });
                let value =
                    text.map(|t| ty.parse_text(&t).expect("oracle value parses").to_json()).unwrap_or(Value::Null);
                object.insert((*column).to_owned(), value);
            }
            let run: String = row.get(COLUMNS.len());
            object.insert("run".into(), json!(run));
            Value::Object(object)
        })
        .collect()
}

/// The API's records without `run` ordering differences: kept as returned.
fn api_path(query: &RandomQuery, limit: usize, after: Option<&str>) -> String {
    let mut params: Vec<String> = query.api.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
    if let Some(order) = &query.order_param {
        params.push(format!("order={}", encode(order)));
    }
    params.push(format!("limit={limit}"));
    if let Some(after) = after {
        params.push(format!("after={after}"));
    }
    format!("/records/oracle_item?{}", params.join("&"))
}

/// Asserts two record lists are equal, reporting the first difference.
fn assert_same(got: &[Value], want: &[Value], context: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g != w {
            let differing: Vec<String> = g
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, v)| w.get(k.as_str()) != Some(v))
                .map(|(k, v)| format!("{k}: got {v}, want {}", w.get(k.as_str()).unwrap_or(&Value::Null)))
                .collect();
            panic!("{context}: record {i} differs (got id {}, want id {}): {differing:?}", g["id"], w["id"]);
        }
    }
    assert_eq!(got.len(), want.len(), "{context}: got {} records, want {}", got.len(), want.len());
}

/// Drops keys the oracle does not produce, so records compare equal.
fn comparable(records: &[Value]) -> Vec<Value> {
    records
        .iter()
        .map(|r| {
            let mut object = r.as_object().cloned().unwrap_or_default();
            object.remove("_provenance");
            Value::Object(object)
        })
        .collect()
}

/// A transaction step for the API and its SQL for the oracle.
struct Step {
    api: Value,
    sql: String,
}

fn literal_sql(value: &Value, column: &str) -> String {
    let kind = COLUMNS.iter().find(|(c, _)| *c == column).map(|(_, k)| *k).unwrap_or("text");
    match value {
        Value::Null => "NULL".into(),
        other if kind == "jsonb" => format!("{}::jsonb", quote(&other.to_string())),
        Value::String(s) => format!("{}::{}", quote(s), sql_type(kind)),
        other => format!("{}::{}", quote(&other.to_string()), sql_type(kind)),
    }
}

fn create_step(rng: &mut StdRng, run: Uuid, ids: &[Uuid], id: Uuid) -> Step {
    let mut data = serde_json::Map::new();
    data.insert("id".into(), json!(id));
    data.insert("run".into(), json!(run));
    for (column, _) in &COLUMNS[1..] {
        if rng.random_bool(0.7) {
            data.insert((*column).to_owned(), random_value(rng, column, ids));
        }
    }
    let columns: Vec<String> = data.keys().map(|k| format!("\"{k}\"")).collect();
    let values: Vec<String> =
        data.iter().map(|(k, v)| if k == "run" { format!("'{run}'::uuid") } else { literal_sql(v, k) }).collect();
    let sql = format!("INSERT INTO oracle_item ({}) VALUES ({})", columns.join(", "), values.join(", "));
    Step { api: json!({"op": "create", "table": "oracle_item", "data": data}), sql }
}

fn update_step(rng: &mut StdRng, ids: &[Uuid], id: Uuid) -> Step {
    let mut data = serde_json::Map::new();
    while data.is_empty() {
        for (column, _) in &COLUMNS[1..] {
            if rng.random_bool(0.3) {
                data.insert((*column).to_owned(), random_value(rng, column, ids));
            }
        }
    }
    let sets: Vec<String> = data.iter().map(|(k, v)| format!("\"{k}\" = {}", literal_sql(v, k))).collect();
    let sql = format!("UPDATE oracle_item SET {} WHERE id = '{id}'", sets.join(", "));
    Step { api: json!({"op": "update", "table": "OracleItem", "id": id, "data": data}), sql }
}

fn delete_step(id: Uuid) -> Step {
    Step {
        api: json!({"op": "delete", "table": "oracle_item", "id": id}),
        sql: format!("DELETE FROM oracle_item WHERE id = '{id}'"),
    }
}

/// Applies steps to the oracle in one transaction; commits only if asked.
async fn oracle_apply(oracle: &mut Client, steps: &[Step], commit: bool) -> Result<(), String> {
    let tx = oracle.transaction().await.map_err(|e| e.to_string())?;
    for step in steps {
        tx.batch_execute(&step.sql).await.map_err(|e| format!("{e:?} in {}", step.sql))?;
    }
    if commit { tx.commit().await.map_err(|e| e.to_string()) } else { tx.rollback().await.map_err(|e| e.to_string()) }
}

/// A superuser connection to the oracle database, in UTC.
async fn oracle_connection() -> Client {
    let admin_url =
        std::env::var("MAIN_ADMIN_URL").unwrap_or_else(|_| opsbuffer_tests::DEFAULT_MAIN_ADMIN_URL.to_owned());
    let url = admin_url.replace("/opsbuffer", "/opsbuffer_oracle");
    let oracle = connect(&url).await;
    oracle.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    oracle
}

async fn prepare_databases(admin: &Admin) -> Client {
    admin.main.batch_execute(TABLE_DDL).await.expect("create the test table on main");
    admin
        .main
        .batch_execute("ALTER TABLE oracle_item OWNER TO opsbuffer")
        .await
        .expect("hand the test table to opsbuffer");
    let exists: i64 = admin
        .main
        .query_one("SELECT count(*) FROM pg_database WHERE datname = 'opsbuffer_oracle'", &[])
        .await
        .unwrap()
        .get(0);
    if exists == 0 {
        let _ = admin.main.batch_execute("CREATE DATABASE opsbuffer_oracle").await;
    }
    let oracle = oracle_connection().await;
    oracle.batch_execute(TABLE_DDL).await.expect("create the test table on the oracle");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !admin
        .local
        .query_one("SELECT to_regclass('public.oracle_item') IS NOT NULL", &[])
        .await
        .unwrap()
        .get::<_, bool>(0)
    {
        assert!(std::time::Instant::now() < deadline, "the test table did not replicate");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    oracle
}

async fn compare(site: &TestSite, oracle: &Client, query: &RandomQuery, context: &str) {
    let (status, body) = site.get(&api_path(query, query.limit, None)).await;
    assert_eq!(status, 200, "{context}: {body}");
    let got = comparable(body["records"].as_array().unwrap());
    let want = oracle_rows(oracle, query, Some(query.limit + 1)).await;
    let want_page: Vec<Value> = want.iter().take(query.limit).cloned().collect();
    if got != want_page {
        let (_, again) = site.get(&api_path(query, query.limit, None)).await;
        let again = comparable(again["records"].as_array().unwrap());
        println!(
            "{context}: mismatch; an immediate second read {}",
            if again == want_page { "matches" } else { "differs too" }
        );
        let stats = site.engine.buffer.stats().await.unwrap();
        println!("{context}: buffer {stats:?}, replication {:?}", site.engine.replication_status().last);
        let table = site.engine.table("oracle_item").unwrap();
        let snapshot = site.engine.buffer.snapshot(&[("oracle_item", -1)]).await.unwrap();
        if let opsbuffer_redis::SnapshotContent::Full(entries) = &snapshot.tables[0].content {
            for (field, _) in entries {
                if want_page.iter().chain(&got).any(|w| field.ends_with(w["id"].as_str().unwrap())) {
                    println!("{context}: overlay entry {field}");
                }
            }
        }
        let pairs: Vec<(String, String)> = query
            .api
            .iter()
            .cloned()
            .chain(query.order_param.iter().map(|o| ("order".to_owned(), o.clone())))
            .chain([("limit".to_owned(), query.limit.to_string())])
            .collect();
        let parsed = opsbuffer_core::query::Query::parse(&table, &pairs, &[]).unwrap();
        let statement = opsbuffer_core::sql::select_page(&table, &parsed, &[]);
        println!("{context}: SQL {} params {:?}", statement.text, statement.params);
        // Show the merged view's record of each expected id, for diagnosis.
        for w in &want_page {
            if !got.iter().any(|g| g["id"] == w["id"]) {
                let (_, merged) =
                    site.get(&format!("/records/oracle_item/{}?provenance=true", w["id"].as_str().unwrap())).await;
                println!("{context}: expected {} but the merged view has {merged}", w);
            }
        }
    }
    assert_same(
        &got,
        &want_page,
        &format!("{context}: query {:?} order {:?} limit {}", query.api, query.order_param, query.limit),
    );
    assert_eq!(body["next"].is_string(), want.len() > query.limit, "{context}: next cursor presence");
}

/// Walks all pages of a query while the drain and replication move records
/// between sources, and compares the concatenation with the oracle.
async fn walk_pages(
    site: &TestSite,
    admin: &Admin,
    oracle: &Client,
    query: &RandomQuery,
    rng: &mut StdRng,
    context: &str,
) {
    let want = oracle_rows(oracle, query, None).await;
    let mut got = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let (status, body) = site.get(&api_path(query, query.limit, after.as_deref())).await;
        assert_eq!(status, 200, "{context}: {body}");
        got.extend(comparable(body["records"].as_array().unwrap()));
        pages += 1;
        assert!(pages <= want.len() + 2, "{context}: paging does not end");
        // Move records between sources between pages.
        match rng.random_range(0..4) {
            0 => site.proxy().come_up(),
            1 => site.proxy().go_down(),
            2 => admin.resume_replay().await,
            _ => tokio::time::sleep(Duration::from_millis(rng.random_range(0..30))).await,
        }
        match body["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        got, want,
        "{context}: page walk of {:?} order {:?} limit {}",
        query.api, query.order_param, query.limit
    );
}

async fn run_seed(seed: u64, steps: usize, admin: &Admin, oracle: &mut Client) {
    let mut rng = StdRng::seed_from_u64(seed);
    let run = Uuid::from_u128(rng.random());
    // A seed always makes the same keys, so remove what an earlier run of
    // it left on main (the replica follows) and on the oracle.
    let run_text = run.to_string();
    admin.main.execute("DELETE FROM oracle_item WHERE run = $1::text::uuid", &[&run_text]).await.unwrap();
    oracle.execute("DELETE FROM oracle_item WHERE run = $1::text::uuid", &[&run_text]).await.unwrap();
    opsbuffer_tests::eventually("the replica to drop the earlier run", || async {
        let left: i64 = admin
            .local
            .query_one("SELECT count(*) FROM oracle_item WHERE run = $1::text::uuid", &[&run_text])
            .await
            .unwrap()
            .get(0);
        (left == 0).then_some(())
    })
    .await;
    let site = TestSite::start(SiteOptions::default()).await;
    site.engine.reload_registry().await.expect("registry sees the test table");
    site.proxy().go_down();
    let mut ids: Vec<Uuid> = Vec::new();
    let mut deleted: Vec<Uuid> = Vec::new();
    let mut accepted = 0;

    for step in 0..steps {
        let context = format!("seed {seed} step {step}");
        match rng.random_range(0..10) {
            // A transaction of one to three steps.
            0..=4 => {
                let mut tx_steps = Vec::new();
                let mut new_ids = ids.clone();
                for _ in 0..rng.random_range(1..4) {
                    let choice = rng.random_range(0..10);
                    if choice < 5 || new_ids.is_empty() {
                        let id = if !deleted.is_empty() && rng.random_bool(0.1) {
                            deleted[rng.random_range(0..deleted.len())]
                        } else {
                            Uuid::from_u128(rng.random())
                        };
                        tx_steps.push(create_step(&mut rng, run, &new_ids, id));
                        new_ids.push(id);
                    } else if choice < 9 {
                        let id = new_ids[rng.random_range(0..new_ids.len())];
                        tx_steps.push(update_step(&mut rng, &new_ids, id));
                    } else {
                        let id = new_ids[rng.random_range(0..new_ids.len())];
                        tx_steps.push(delete_step(id));
                        new_ids.retain(|i| *i != id);
                    }
                }
                let body = json!({"steps": tx_steps.iter().map(|s| s.api.clone()).collect::<Vec<_>>()});
                let (status, response) = site.post("/transactions", body.clone()).await;
                if status == 201 {
                    accepted += 1;
                    oracle_apply(oracle, &tx_steps, true).await.unwrap_or_else(|e| {
                        panic!("{context}: opsbuffer accepted what PostgreSQL rejects: {e}\n{body}")
                    });
                    for s in &tx_steps {
                        if s.api["op"] == "delete" {
                            deleted.push(Uuid::parse_str(s.api["id"].as_str().unwrap()).unwrap());
                        }
                    }
                    ids = new_ids;
                } else {
                    assert!((400..500).contains(&status), "{context}: {status} {response}");
                    let code = response["error"]["code"].as_str().unwrap_or_default();
                    let oracle_result = oracle_apply(oracle, &tx_steps, false).await;
                    // A create reusing the key of a delete still pending is
                    // refused on purpose; everything else refused must be
                    // refused by PostgreSQL too.
                    if code != "pending_delete" {
                        assert!(
                            oracle_result.is_err(),
                            "{context}: opsbuffer refused ({response}) what PostgreSQL accepts: {body}"
                        );
                    }
                }
            }
            5 => {
                if rng.random_bool(0.5) {
                    site.proxy().come_up();
                    tokio::time::sleep(Duration::from_millis(rng.random_range(0..40))).await;
                    site.proxy().go_down();
                } else {
                    site.proxy().come_up();
                }
            }
            6 => {
                if rng.random_bool(0.5) {
                    admin.pause_replay().await
                } else {
                    admin.resume_replay().await
                }
            }
            7 => {
                let query = random_query(&mut rng, run, &ids);
                walk_pages(&site, admin, oracle, &query, &mut rng, &context).await;
            }
            _ => {
                for _ in 0..3 {
                    let query = random_query(&mut rng, run, &ids);
                    compare(&site, oracle, &query, &context).await;
                }
            }
        }
    }

    // Everything drains and replicates; main then equals the oracle.
    site.proxy().come_up();
    admin.resume_replay().await;
    site.wait_drained().await;
    let all = RandomQuery {
        api: vec![("run".into(), format!("eq.{run}"))],
        where_sql: vec![format!("run = '{run}'")],
        order_sql: vec!["\"id\" ASC".into()],
        order_param: None,
        limit: 10000,
    };
    compare(&site, oracle, &all, &format!("seed {seed} after draining")).await;
    let stats = site.engine.buffer.stats().await.unwrap();
    assert_eq!(stats.dead, 0, "seed {seed}: no transaction was dead-lettered");
    let main_rows: i64 = admin
        .main
        .query_one("SELECT count(*) FROM oracle_item WHERE run = $1::text::uuid", &[&run.to_string()])
        .await
        .unwrap()
        .get(0);
    let oracle_rows: i64 = oracle
        .query_one("SELECT count(*) FROM oracle_item WHERE run = $1::text::uuid", &[&run.to_string()])
        .await
        .unwrap()
        .get(0);
    assert_eq!(main_rows, oracle_rows, "seed {seed}: main and the oracle hold the same records");
    println!("seed {seed}: {steps} steps, {accepted} transactions accepted, {} records at the end", ids.len());
    site.stop().await;
}

fn seeds() -> Vec<u64> {
    match std::env::var("ORACLE_SEEDS") {
        Ok(list) => list.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) if cfg!(feature = "heavy") => (1..=8).collect(),
        Err(_) => vec![1, 2],
    }
}

fn steps() -> usize {
    std::env::var("ORACLE_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(if cfg!(feature = "heavy") {
        600
    } else {
        250
    })
}

#[tokio::test]
async fn merged_view_equals_oracle() {
    let _replay = REPLAY.write().await;
    let admin = admin().await;
    prepare_databases(&admin).await;
    let steps = steps();
    for seed in seeds() {
        // Each seed runs in its own task, so a failure is reported with its
        // seed and replay is resumed before the next one.
        let result = tokio::spawn({
            let admin = opsbuffer_tests::admin().await;
            let mut oracle = oracle_connection().await;
            async move { run_seed(seed, steps, &admin, &mut oracle).await }
        })
        .await;
        admin.resume_replay().await;
        if let Err(panic) = result {
            panic!("seed {seed} failed; replay with ORACLE_SEEDS={seed} ORACLE_STEPS={steps}: {panic}");
        }
    }
}

/// The literals every operator is tried with, per column.
fn literal_pool(column: &str) -> Vec<String> {
    let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    match column {
        "id" | "parent_id" => {
            vec![Uuid::nil().to_string(), Uuid::from_u128(7).to_string(), Uuid::from_u128(u128::MAX).to_string()]
        }
        "label" | "tag" => strings(TEXTS),
        "code" => strings(CODES),
        "qty" => INTS.iter().map(|i| i.to_string()).collect(),
        "big" => BIGS.iter().map(|i| i.to_string()).collect(),
        "ratio" => FLOATS.iter().map(|f| f.to_string()).chain(["NaN".to_owned(), "-Infinity".to_owned()]).collect(),
        "price" => strings(PRICES),
        "flag" => strings(&["true", "false", "t", "off"]),
        "seen_at" => strings(TIMES),
        "day" => strings(DAYS),
        _ => infos().iter().map(|v| v.to_string()).collect(),
    }
}

/// A fixed set of records that cycles through every pool value and NULL.
fn fixed_rows(run: Uuid) -> Vec<Value> {
    (0..24u128)
        .map(|i| {
            let pick = |items: &[Value], step: usize| -> Value {
                let n = i as usize * step;
                if n % 5 == 4 { Value::Null } else { items[n % items.len()].clone() }
            };
            let texts: Vec<Value> = TEXTS.iter().map(|t| json!(t)).collect();
            let codes: Vec<Value> = CODES.iter().map(|t| json!(t)).collect();
            let ints: Vec<Value> = INTS.iter().map(|t| json!(t)).collect();
            let bigs: Vec<Value> = BIGS.iter().map(|t| json!(t)).collect();
            let floats: Vec<Value> = FLOATS.iter().map(|t| json!(t)).collect();
            let prices: Vec<Value> = PRICES.iter().map(|t| json!(t)).collect();
            let times: Vec<Value> = TIMES.iter().map(|t| json!(t)).collect();
            let days: Vec<Value> = DAYS.iter().map(|t| json!(t)).collect();
            json!({
                "id": Uuid::from_u128((run.as_u128() & !0xffff) | i),
                "run": run,
                "label": pick(&texts, 3),
                "code": pick(&codes, 5),
                "qty": pick(&ints, 7),
                "big": pick(&bigs, 11),
                "ratio": pick(&floats, 13),
                "price": pick(&prices, 3),
                "flag": pick(&[json!(true), json!(false)], 1),
                "seen_at": pick(&times, 5),
                "day": pick(&days, 3),
                "info": pick(&infos(), 7),
                "tag": TAGS[i as usize % TAGS.len()],
            })
        })
        .collect()
}

/// Every operator on every column with every literal of its pool, negated
/// and not, against PostgreSQL: once with the records in local (the SQL
/// path) and once with the same records only in the buffer (the Rust
/// path).
#[tokio::test]
async fn every_operator_matches_postgres_on_every_type() {
    let _replay = REPLAY.write().await;
    let admin = admin().await;
    prepare_databases(&admin).await;
    let mut oracle = oracle_connection().await;
    let site = TestSite::start(SiteOptions::default()).await;
    site.engine.reload_registry().await.unwrap();

    for (mode, run) in [("local", Uuid::from_u128(0xa11ce << 64)), ("buffer", Uuid::now_v7())] {
        admin.main.execute("DELETE FROM oracle_item WHERE run = $1::text::uuid", &[&run.to_string()]).await.unwrap();
        oracle.execute("DELETE FROM oracle_item WHERE run = $1::text::uuid", &[&run.to_string()]).await.unwrap();
        let rows = fixed_rows(run);
        let steps: Vec<Step> = rows
            .iter()
            .map(|row| {
                let data = row.as_object().unwrap();
                let columns: Vec<String> = data.keys().map(|k| format!("\"{k}\"")).collect();
                let values: Vec<String> = data
                    .iter()
                    .map(|(k, v)| if k == "run" { format!("'{run}'::uuid") } else { literal_sql(v, k) })
                    .collect();
                Step {
                    api: json!({"op": "create", "table": "oracle_item", "data": row}),
                    sql: format!("INSERT INTO oracle_item ({}) VALUES ({})", columns.join(", "), values.join(", ")),
                }
            })
            .collect();
        oracle_apply(&mut oracle, &steps, true).await.unwrap();
        if mode == "buffer" {
            site.proxy().go_down();
        }
        let (status, body) =
            site.post("/transactions", json!({"steps": steps.iter().map(|s| s.api.clone()).collect::<Vec<_>>()})).await;
        assert_eq!(status, 201, "{body}");
        if mode == "local" {
            site.wait_drained().await;
        }

        let mut queries = 0;
        for (column, kind) in COLUMNS {
            let c = format!("\"{column}\"");
            let collated = if is_text(kind) { format!("{c} COLLATE \"C\"") } else { c.clone() };
            let ty = sql_type(kind);
            let mut cases: Vec<(String, String)> = vec![("is.null".into(), format!("{c} IS NULL"))];
            for literal in literal_pool(column) {
                let symbols: &[(&str, &str)] = if *kind == "jsonb" {
                    &[("eq", "="), ("neq", "<>")]
                } else {
                    &[("eq", "="), ("neq", "<>"), ("lt", "<"), ("lte", "<="), ("gt", ">"), ("gte", ">=")]
                };
                for (op, symbol) in symbols {
                    cases.push((format!("{op}.{literal}"), format!("{collated} {symbol} {}::{ty}", quote(&literal))));
                }
            }
            if is_text(kind) {
                for pattern in ["a*", "*A*", "_", "é*", "a\\_b", "*%*", ""] {
                    for op in ["like", "ilike"] {
                        cases.push((
                            format!("{op}.{pattern}"),
                            format!("{collated} {} {}", op.to_uppercase(), quote(&pattern.replace('*', "%"))),
                        ));
                    }
                }
            }
            if *kind == "bool" {
                cases.push(("is.true".into(), format!("{c} IS TRUE")));
                cases.push(("is.false".into(), format!("{c} IS FALSE")));
            }
            let pool = literal_pool(column);
            cases.push((
                format!(
                    "in.({})",
                    pool.iter()
                        .take(3)
                        .map(|l| format!("\"{}\"", l.replace('"', "\\\"")))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                format!(
                    "{collated} IN ({})",
                    pool.iter().take(3).map(|l| format!("{}::{ty}", quote(l))).collect::<Vec<_>>().join(", ")
                ),
            ));
            for (value, sql) in cases {
                for negated in [false, true] {
                    let (api_value, where_sql) = if negated {
                        (format!("not.{value}"), format!("NOT ({sql})"))
                    } else {
                        (value.clone(), format!("({sql})"))
                    };
                    let query = RandomQuery {
                        api: vec![("run".into(), format!("eq.{run}")), ((*column).to_owned(), api_value)],
                        where_sql: vec![format!("run = '{run}'"), where_sql],
                        order_sql: vec!["\"id\" ASC".into()],
                        order_param: None,
                        limit: 100,
                    };
                    compare(&site, &oracle, &query, &format!("{mode} {column}={value} negated={negated}")).await;
                    queries += 1;
                }
            }
        }
        println!("{mode}: {queries} queries matched PostgreSQL");
    }
    site.proxy().come_up();
    site.wait_drained().await;
    site.stop().await;
}
