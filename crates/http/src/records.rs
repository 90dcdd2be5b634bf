//! The generic read endpoints: `/records/{table}`, one record, and the
//! records of a child table that refer to one record.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use opsbuffer_core::merge::MergedRecord;
use opsbuffer_core::query::Condition;
use opsbuffer_core::schema::Table;
use opsbuffer_core::value::Value;
use opsbuffer_engine::Engine;
use opsbuffer_engine::read::MergedPage;
use serde_json::{Map, Value as JsonValue, json};
use uuid::Uuid;

use crate::docs::{ErrorResponse, ReadParams, RecordPage};
use crate::error::ApiError;
use crate::params::{consistency, param, provenance, query_pairs, table_query};

pub type AppState = Arc<Engine>;

/// `GET /records/{table}`: one page of the merged view.
#[utoipa::path(
    get,
    path = "/records/{table}",
    tag = "reads",
    summary = "One page of a table's merged view",
    params(("table" = String, Path, description = "Model or SQL name of the table"), ReadParams),
    responses(
        (status = 200, description = "Found", body = RecordPage),
        (status = "4XX", description = "Invalid query, unauthorized, or not found", body = ErrorResponse),
        (status = 503, description = "Local or Redis is unavailable", body = ErrorResponse),
    ),
    security(("bearer" = ["read:observations"])),
)]
pub async fn list(
    State(engine): State<AppState>,
    Path(table): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<JsonValue>, ApiError> {
    let table = engine.table(&table)?;
    let pairs = query_pairs(raw.as_deref())?;
    let query = table_query(&table, &pairs)?;
    let page = engine.query(&table, &query, consistency(&pairs)?).await?;
    let records = render_page(&engine, &table, &page, provenance(&pairs)?).await?;
    let next = page.page.next.map(|c| c.encode(&table, &query.order));
    Ok(Json(json!({"records": records, "next": next})))
}

/// `GET /records/{table}/{id}`: one merged record, or 404.
#[utoipa::path(
    get,
    path = "/records/{table}/{id}",
    tag = "reads",
    summary = "One record of the merged view",
    params(("table" = String, Path, description = "Model or SQL name of the table"), ("id" = String, Path, description = "Primary key"), ("provenance" = Option<bool>, Query, description = "Add _provenance"), ("consistency" = Option<String>, Query, description = "merged, replica or replicated")),
    responses(
        (status = 200, description = "Found", body = Object),
        (status = "4XX", description = "Invalid query, unauthorized, or not found", body = ErrorResponse),
        (status = 503, description = "Local or Redis is unavailable", body = ErrorResponse),
    ),
    security(("bearer" = ["read:observations"])),
)]
pub async fn get(
    State(engine): State<AppState>,
    Path((table, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Json<JsonValue>, ApiError> {
    let table = engine.table(&table)?;
    let pairs = query_pairs(raw.as_deref())?;
    let record = fetch_one(&engine, &table, &id, &pairs).await?;
    Ok(Json(JsonValue::Object(record)))
}

/// Reads one record by its primary key as text, with provenance if asked.
pub async fn fetch_one(
    engine: &Engine,
    table: &Arc<Table>,
    id: &str,
    pairs: &[(String, String)],
) -> Result<Map<String, JsonValue>, ApiError> {
    let key = parse_key(table, id)?;
    let found = engine.get(table, &key, consistency(pairs)?).await?;
    let Some((record, pending)) = found else {
        return Err(ApiError::not_found("not_found", format!("{} {id} does not exist in the merged view", table.name)));
    };
    let mut pending_map = HashMap::new();
    if !pending.is_empty() {
        pending_map.insert(record.key.clone(), pending);
    }
    let page =
        MergedPage { page: opsbuffer_core::merge::Page { records: vec![record], next: None }, pending: pending_map };
    let mut rendered = render_page(engine, table, &page, provenance(pairs)?).await?;
    Ok(rendered.remove(0))
}

/// `GET /records/{table}/{id}/{child_table}?via=column`: records of the
/// child table whose `via` column equals the parent's key.
#[utoipa::path(
    get,
    path = "/records/{table}/{id}/{child_table}",
    tag = "reads",
    summary = "Child records that refer to one record",
    params(("table" = String, Path, description = "The parent table"), ("id" = String, Path, description = "The parent's primary key"), ("child_table" = String, Path, description = "The child table"), ("via" = Option<String>, Query, description = "The child's foreign-key column; needed when there are several"), ReadParams),
    responses(
        (status = 200, description = "Found", body = RecordPage),
        (status = "4XX", description = "Invalid query, unauthorized, or not found", body = ErrorResponse),
        (status = 503, description = "Local or Redis is unavailable", body = ErrorResponse),
    ),
    security(("bearer" = ["read:observations"])),
)]
pub async fn children(
    State(engine): State<AppState>,
    Path((table, id, child)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Json<JsonValue>, ApiError> {
    let parent = engine.table(&table)?;
    let child = engine.table(&child)?;
    let pairs = query_pairs(raw.as_deref())?;
    let foreign_keys = foreign_key_columns(&parent, &child);
    let via = match param(&pairs, "via") {
        Some(via) if foreign_keys.iter().any(|c| c == via) => via.to_owned(),
        Some(via) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "via",
                format!(
                    "{}.{via} is not a foreign key to {}; use one of: {}",
                    child.name,
                    parent.name,
                    if foreign_keys.is_empty() {
                        "none, the tables are not related".to_owned()
                    } else {
                        foreign_keys.join(", ")
                    }
                ),
            ));
        }
        None => infer_via(&parent, &child, &foreign_keys)?,
    };
    let position = child.column_position(&via).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_query",
            "via",
            format!("{} has no column {via:?}; known columns: {}", child.name, child.column_list()),
        )
    })?;
    let parent_key = parse_key(&parent, &id)?;
    if engine.get(&parent, &parent_key, opsbuffer_engine::Consistency::Merged).await?.is_none() {
        return Err(ApiError::not_found(
            "not_found",
            format!("{} {id} does not exist in the merged view", parent.name),
        ));
    }
    let value = child.columns[position].ty.parse_text(&parent_key.key_text()).map_err(|e| {
        ApiError::bad_request(
            "invalid_query",
            "via",
            format!("{}.{via} cannot hold the key of {}: {e}", child.name, parent.name),
        )
    })?;

    let mut query = table_query(&child, &pairs)?;
    query.conditions.push(Condition::eq(position, value));
    let page = engine.query(&child, &query, consistency(&pairs)?).await?;
    let records = render_page(&engine, &child, &page, provenance(&pairs)?).await?;
    let next = page.page.next.map(|c| c.encode(&child, &query.order));
    Ok(Json(json!({"records": records, "next": next})))
}

/// Returns the single-column foreign keys of `child` that point at `parent`.
fn foreign_key_columns(parent: &Table, child: &Table) -> Vec<String> {
    child
        .foreign_keys
        .iter()
        .filter(|fk| fk.referenced_table == parent.name && fk.columns.len() == 1)
        .map(|fk| child.columns[fk.columns[0]].name.clone())
        .collect()
}

/// Picks the one foreign key of `child` that points at `parent`, when
/// `via=` is left out.
fn infer_via(parent: &Table, child: &Table, candidates: &[String]) -> Result<String, ApiError> {
    match candidates {
        [one] => Ok(one.clone()),
        [] => Err(ApiError::bad_request(
            "invalid_query",
            "via",
            format!("{} has no foreign key to {}, so none of its records refer to one", child.name, parent.name),
        )),
        many => Err(ApiError::bad_request(
            "invalid_query",
            "via",
            format!(
                "{} has several foreign keys to {} ({}); choose one with via=",
                child.name,
                parent.name,
                many.join(", ")
            ),
        )),
    }
}

/// Parses a primary-key value from a path segment.
pub fn parse_key(table: &Table, id: &str) -> Result<Value, ApiError> {
    let pk = table.primary_key_column().ok_or_else(|| {
        ApiError::bad_request("invalid_query", "id", format!("table {} has no single-column primary key", table.name))
    })?;
    pk.ty.parse_text(id).map_err(|e| ApiError::bad_request("invalid_id", "id", format!("id: {e}")))
}

/// Renders merged records as JSON objects, adding `_provenance` when asked.
pub async fn render_page(
    engine: &Engine,
    table: &Table,
    page: &MergedPage,
    with_provenance: bool,
) -> Result<Vec<Map<String, JsonValue>>, ApiError> {
    let states = if with_provenance { transaction_states(engine, page).await? } else { HashMap::new() };
    Ok(page
        .page
        .records
        .iter()
        .map(|record| {
            let mut object = record.row.to_json(table);
            if with_provenance {
                object.insert("_provenance".into(), provenance_of(record, page.pending.get(&record.key), &states));
            }
            object
        })
        .collect())
}

async fn transaction_states(engine: &Engine, page: &MergedPage) -> Result<HashMap<Uuid, String>, ApiError> {
    let mut ids: Vec<Uuid> = page.pending.values().flatten().copied().collect();
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let states = engine.buffer.transaction_states(&ids).await.map_err(opsbuffer_engine::EngineError::from)?;
    Ok(ids.into_iter().zip(states).map(|(id, s)| (id, s.unwrap_or_else(|| "replicated".into()))).collect())
}

fn provenance_of(record: &MergedRecord, pending: Option<&Vec<Uuid>>, states: &HashMap<Uuid, String>) -> JsonValue {
    let pending: Vec<JsonValue> = pending
        .into_iter()
        .flatten()
        .map(|id| json!({"transaction_id": id, "state": states.get(id).cloned().unwrap_or_else(|| "unknown".into())}))
        .collect();
    json!({"source": record.source.as_str(), "pending_transactions": pending})
}
