//! The observatory read endpoints that instrument scripts use, built on the
//! same merged reads as `/records`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use opsbuffer_core::query::Condition;
use opsbuffer_core::value::Value;
use opsbuffer_engine::Consistency;
use serde_json::{Map, Value as JsonValue};

use crate::docs::{ErrorResponse, ReadParams};
use crate::error::ApiError;
use crate::params::{consistency, provenance, query_pairs, table_query};
use crate::records::{AppState, fetch_one, render_page};
use crate::writes::{EXECUTED_OBS_UNIT, RAW_DATA_FILE, RAW_DATA_PACKAGE};

/// Most children listed under one parent by these endpoints.
const MAX_CHILDREN: usize = 100_000;

/// `GET /executed_obs_units/{obs_unit_id}`: the executed obs units of an obs
/// unit, each with its `raw_data_packages` and `raw_data_files`. Filters
/// and `order=` on executed obs unit columns apply as on `/records`.
#[utoipa::path(
    get,
    path = "/executed_obs_units/{obs_unit_id}",
    tag = "reads",
    summary = "Executed obs units of an obs unit, with packages and files",
    params(("obs_unit_id" = String, Path, description = "The obs unit's id"), ReadParams),
    responses(
        (status = 200, description = "Found", body = Vec<Object>),
        (status = "4XX", description = "Invalid query, unauthorized, or not found", body = ErrorResponse),
        (status = 503, description = "Local or Redis is unavailable", body = ErrorResponse),
    ),
    security(("bearer" = ["read:observations"])),
)]
pub async fn executed_obs_units_of(
    State(engine): State<AppState>,
    Path(obs_unit_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<Map<String, JsonValue>>>, ApiError> {
    let table = engine.table(EXECUTED_OBS_UNIT)?;
    let pairs = query_pairs(raw.as_deref())?;
    let column = table
        .column_position("obs_unit_id")
        .ok_or_else(|| ApiError::not_found("unknown_column", "executed_obs_unit has no obs_unit_id column"))?;
    let obs_unit = table.columns[column]
        .ty
        .parse_text(&obs_unit_id)
        .map_err(|e| ApiError::bad_request("invalid_id", "obs_unit_id", format!("obs_unit_id: {e}")))?;

    let mut query = table_query(&table, &pairs)?;
    query.conditions.push(Condition::eq(column, obs_unit));
    let with_provenance = provenance(&pairs)?;
    let mode = consistency(&pairs)?;
    let page = engine.query(&table, &query, mode).await?;
    let mut units = render_page(&engine, &table, &page, with_provenance).await?;

    let keys: Vec<Value> =
        page.page.records.iter().map(|r| r.row.get(table.primary_key.unwrap_or_default()).clone()).collect();
    let packages =
        children_by_parent(&engine, RAW_DATA_PACKAGE, "executed_obs_unit_id", &keys, with_provenance, mode).await?;
    let files =
        children_by_parent(&engine, RAW_DATA_FILE, "executed_obs_unit_id", &keys, with_provenance, mode).await?;
    for (unit, key) in units.iter_mut().zip(&keys) {
        let key = key.key_text();
        unit.insert("raw_data_packages".into(), JsonValue::Array(packages.get(&key).cloned().unwrap_or_default()));
        unit.insert("raw_data_files".into(), JsonValue::Array(files.get(&key).cloned().unwrap_or_default()));
    }
    Ok(Json(units))
}

/// `GET /raw_data_files/{id}`.
#[utoipa::path(
    get,
    path = "/raw_data_files/{id}",
    tag = "reads",
    summary = "One raw data file",
    params(("id" = String, Path, description = "The file's id")),
    responses(
        (status = 200, description = "Found", body = Object),
        (status = "4XX", description = "Invalid query, unauthorized, or not found", body = ErrorResponse),
        (status = 503, description = "Local or Redis is unavailable", body = ErrorResponse),
    ),
    security(("bearer" = ["read:observations"])),
)]
pub async fn raw_data_file(
    State(engine): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Map<String, JsonValue>>, ApiError> {
    let table = engine.table(RAW_DATA_FILE)?;
    let pairs = query_pairs(raw.as_deref())?;
    Ok(Json(fetch_one(&engine, &table, &id, &pairs).await?))
}

/// `GET /raw_data_package/{id}`: the package with its `raw_data_files`.
#[utoipa::path(
    get,
    path = "/raw_data_package/{id}",
    tag = "reads",
    summary = "One raw data package with its files",
    params(("id" = String, Path, description = "The package's id")),
    responses(
        (status = 200, description = "Found", body = Object),
        (status = "4XX", description = "Invalid query, unauthorized, or not found", body = ErrorResponse),
        (status = 503, description = "Local or Redis is unavailable", body = ErrorResponse),
    ),
    security(("bearer" = ["read:observations"])),
)]
pub async fn raw_data_package(
    State(engine): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Map<String, JsonValue>>, ApiError> {
    let table = engine.table(RAW_DATA_PACKAGE)?;
    let pairs = query_pairs(raw.as_deref())?;
    let mut package = fetch_one(&engine, &table, &id, &pairs).await?;
    let key = crate::records::parse_key(&table, &id)?;
    let files = children_by_parent(
        &engine,
        RAW_DATA_FILE,
        "raw_data_package_id",
        std::slice::from_ref(&key),
        provenance(&pairs)?,
        consistency(&pairs)?,
    )
    .await?;
    package.insert("raw_data_files".into(), JsonValue::Array(files.get(&key.key_text()).cloned().unwrap_or_default()));
    Ok(Json(package))
}

/// Records of `child_table` whose `column` is one of `parents`, grouped by
/// that column's value.
async fn children_by_parent(
    engine: &opsbuffer_engine::Engine,
    child_table: &str,
    column: &str,
    parents: &[Value],
    with_provenance: bool,
    mode: Consistency,
) -> Result<HashMap<String, Vec<JsonValue>>, ApiError> {
    let mut grouped: HashMap<String, Vec<JsonValue>> = HashMap::new();
    if parents.is_empty() {
        return Ok(grouped);
    }
    let table = engine.table(child_table)?;
    let Some(position) = table.column_position(column) else {
        return Ok(grouped);
    };
    let conditions = vec![Condition::any_of(position, parents.to_vec())];
    let page = match mode {
        Consistency::Merged => engine.query_all(&table, conditions, MAX_CHILDREN).await?,
        other => {
            let mut query = opsbuffer_core::query::Query::all(&table, opsbuffer_core::query::MAX_LIMIT);
            query.conditions = conditions;
            engine.query(&table, &query, other).await?
        }
    };
    let rendered = render_page(engine, &table, &page, with_provenance).await?;
    for (record, object) in page.page.records.iter().zip(rendered) {
        grouped.entry(record.row.get(position).key_text()).or_default().push(JsonValue::Object(object));
    }
    Ok(grouped)
}
