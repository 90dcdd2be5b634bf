//! Operations endpoints: health, transaction state, dead letters and the
//! schema registry.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use opsbuffer_engine::health::Health;
use opsbuffer_redis::TransactionRecord;
use serde_json::{Value as JsonValue, json};
use uuid::Uuid;

use crate::docs::{DeadLetterAction, ErrorResponse, ReloadResponse, SchemaResponse, TransactionState};
use crate::error::ApiError;
use crate::records::AppState;

/// `GET /health`: 200 even when degraded; 503 only when reads cannot be
/// served.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    summary = "Reachability, durability, buffer counts, replication lag and the drainer",
    description = "Open without a token when AUTH_OPEN_ENDPOINTS lists health (the default); otherwise any valid token.",
    responses(
        (status = 200, description = "Healthy or degraded; `status` says which", body = Health),
        (status = 503, description = "Reads cannot be served", body = Health),
    ),
    security((), ("bearer" = [])),
)]
pub async fn health(State(engine): State<AppState>) -> (StatusCode, Json<JsonValue>) {
    let health = engine.health().await;
    let status = if health.serves_reads { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(serde_json::to_value(&health).unwrap_or(JsonValue::Null)))
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| {
        ApiError::bad_request("invalid_id", "id", format!("{id:?} is not a transaction id; expected a UUID"))
    })
}

/// A transaction as JSON. `state` is `queued`, `blocked`, `applied`,
/// `replicated`, `dead` or `discarded`.
pub fn transaction_json(record: &TransactionRecord) -> JsonValue {
    let time = |ms: Option<i64>| {
        ms.and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    json!({
        "transaction_id": record.id,
        "sequence": record.sequence,
        "state": record.state,
        "commit_lsn": record.commit_lsn.map(|l| l.to_string()),
        "attempts": record.attempts,
        "error": record.error,
        "sqlstate": record.sqlstate,
        "blocked_by": record.blocked_by,
        "acknowledged_at": time(record.created_ms),
        "applied_at": time(record.applied_ms),
        "replicated_at": time(record.replicated_ms),
        "failed_at": time(record.failed_ms),
        "records": record.entries.iter().map(|(table, field)| {
            let parsed = opsbuffer_core::overlay::EntryId::parse(field);
            json!({
                "table": table,
                "id": parsed.as_ref().map(|p| p.key.clone()),
                "op": parsed.map(|p| p.kind.op_name()),
            })
        }).collect::<Vec<_>>(),
    })
}

/// `GET /transactions/{id}`.
#[utoipa::path(
    get,
    path = "/transactions/{id}",
    tag = "operations",
    summary = "A transaction's state",
    params(("id" = Uuid, Path, description = "The transaction id")),
    responses(
        (status = 200, description = "Done", body = TransactionState),
        (status = "4XX", description = "Invalid request, unauthorized, or not found", body = ErrorResponse),
        (status = 503, description = "Redis or local is unavailable", body = ErrorResponse),
    ),
    security(("bearer" = ["read:observations"])),
)]
pub async fn transaction(State(engine): State<AppState>, Path(id): Path<String>) -> Result<Json<JsonValue>, ApiError> {
    let record = engine.transaction(parse_id(&id)?).await?;
    Ok(Json(transaction_json(&record)))
}

/// `GET /buffer/dead`: dead-lettered transactions with main's error, oldest
/// first.
#[utoipa::path(
    get,
    path = "/buffer/dead",
    tag = "operations",
    summary = "Dead-lettered transactions with main's error",
    responses(
        (status = 200, description = "Done", body = Vec<TransactionState>),
        (status = "4XX", description = "Invalid request, unauthorized, or not found", body = ErrorResponse),
        (status = 503, description = "Redis or local is unavailable", body = ErrorResponse),
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn dead_letters(State(engine): State<AppState>) -> Result<Json<JsonValue>, ApiError> {
    let dead = engine.dead_letters().await?;
    Ok(Json(JsonValue::Array(dead.iter().map(transaction_json).collect())))
}

/// `GET /buffer/blocked`: transactions held back because they touch a
/// record of a dead letter, oldest first.
#[utoipa::path(
    get,
    path = "/buffer/blocked",
    tag = "operations",
    summary = "Transactions held back by dead letters",
    responses(
        (status = 200, description = "Done", body = Vec<TransactionState>),
        (status = "4XX", description = "Invalid request, unauthorized, or not found", body = ErrorResponse),
        (status = 503, description = "Redis or local is unavailable", body = ErrorResponse),
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn blocked(State(engine): State<AppState>) -> Result<Json<JsonValue>, ApiError> {
    let blocked = engine.blocked_transactions().await?;
    Ok(Json(JsonValue::Array(blocked.iter().map(transaction_json).collect())))
}

/// `POST /buffer/dead/{id}/retry`.
#[utoipa::path(
    post,
    path = "/buffer/dead/{id}/retry",
    tag = "operations",
    summary = "Requeue a dead letter ahead of every later transaction",
    params(("id" = Uuid, Path, description = "The transaction id")),
    responses(
        (status = 200, description = "Done", body = DeadLetterAction),
        (status = "4XX", description = "Invalid request, unauthorized, or not found", body = ErrorResponse),
        (status = 503, description = "Redis or local is unavailable", body = ErrorResponse),
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn retry_dead_letter(
    State(engine): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JsonValue>, ApiError> {
    let id = parse_id(&id)?;
    let released = engine.retry_dead_letter(id).await?;
    Ok(Json(json!({"transaction_id": id, "state": "queued", "released_blocked": released})))
}

/// `DELETE /buffer/dead/{id}`.
#[utoipa::path(
    delete,
    path = "/buffer/dead/{id}",
    tag = "operations",
    summary = "Discard a dead letter and its pending changes",
    params(("id" = Uuid, Path, description = "The transaction id")),
    responses(
        (status = 200, description = "Done", body = DeadLetterAction),
        (status = "4XX", description = "Invalid request, unauthorized, or not found", body = ErrorResponse),
        (status = 503, description = "Redis or local is unavailable", body = ErrorResponse),
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn discard_dead_letter(
    State(engine): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JsonValue>, ApiError> {
    let id = parse_id(&id)?;
    let released = engine.discard_dead_letter(id).await?;
    Ok(Json(json!({"transaction_id": id, "state": "discarded", "released_blocked": released})))
}

/// `GET /schema`: the tables opsbuffer serves, with columns and keys.
#[utoipa::path(
    get,
    path = "/schema",
    tag = "operations",
    summary = "The tables served, with columns and keys",
    responses(
        (status = 200, description = "Done", body = SchemaResponse),
        (status = "4XX", description = "Invalid request, unauthorized, or not found", body = ErrorResponse),
        (status = 503, description = "Redis or local is unavailable", body = ErrorResponse),
    ),
    security(("bearer" = ["read:observations"])),
)]
pub async fn schema(State(engine): State<AppState>) -> Json<JsonValue> {
    let registry = engine.client_registry();
    let tables: Vec<JsonValue> = registry
        .tables()
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "model_name": t.model_name,
                "primary_key": t.primary_key_column().map(|c| c.name.clone()),
                "key_generation": format!("{:?}", t.key_generation).to_lowercase(),
                "columns": t.columns.iter().map(|c| json!({
                    "name": c.name,
                    "type": c.sql_type,
                    "nullable": c.nullable,
                    "has_default": !matches!(c.default, opsbuffer_core::schema::ColumnDefault::None),
                })).collect::<Vec<_>>(),
                "foreign_keys": t.foreign_keys.iter().map(|fk| json!({
                    "name": fk.name,
                    "columns": fk.columns.iter().map(|i| t.columns[*i].name.clone()).collect::<Vec<_>>(),
                    "references": fk.referenced_table,
                    "referenced_columns": fk.referenced_columns,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({"tables": tables}))
}

/// `POST /schema/reload`: reads the catalog again.
#[utoipa::path(
    post,
    path = "/schema/reload",
    tag = "operations",
    summary = "Read local's catalog again",
    responses(
        (status = 200, description = "Done", body = ReloadResponse),
        (status = "4XX", description = "Invalid request, unauthorized, or not found", body = ErrorResponse),
        (status = 503, description = "Redis or local is unavailable", body = ErrorResponse),
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn reload_schema(State(engine): State<AppState>) -> Result<Json<JsonValue>, ApiError> {
    let count = engine.reload_registry().await?;
    tracing::info!(tables = count, "schema registry reloaded on request");
    Ok(Json(json!({"tables": count})))
}

/// `GET /metrics`: the engine's metrics in the OpenMetrics text format,
/// with the buffer gauges read from Redis now.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    description = "Open without a token when AUTH_OPEN_ENDPOINTS lists metrics (the default); otherwise any valid token.",
    responses((status = 200, description = "Metrics in the OpenMetrics text format", body = String, content_type = "application/openmetrics-text")),
    security((), ("bearer" = [])),
)]
pub async fn metrics(State(engine): State<AppState>) -> impl IntoResponse {
    engine.refresh_metrics().await;
    ([(header::CONTENT_TYPE, opsbuffer_engine::metrics::CONTENT_TYPE)], engine.metrics.encode())
}
