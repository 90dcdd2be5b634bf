//! The write endpoints: `POST /transactions` and the observatory writes
//! that instrument scripts call.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use opsbuffer_core::schema::Table;
use opsbuffer_core::tx::{
    MAX_ROWS_PER_TRANSACTION, Plan, PlanContext, PlannedStep, Rejection, StepOp, WriteError, plan_bulk_create,
    plan_create, plan_transaction, plan_update,
};
use opsbuffer_engine::Engine;
use opsbuffer_engine::write::Receipt;
use serde_json::{Map, Value as JsonValue, json};
use uuid::Uuid;

use crate::docs::{BulkReceipt, ErrorResponse, TransactionReceipt, TransactionRequest, WriteReceipt};
use crate::error::ApiError;
use crate::params::{json_body, object_body};
use crate::records::AppState;

pub const EXECUTED_OBS_UNIT: &str = "executed_obs_unit";
pub const RAW_DATA_FILE: &str = "raw_data_file";
pub const RAW_DATA_PACKAGE: &str = "raw_data_package";

/// Plans with the current time and fresh UUIDv7 keys.
fn plan_with<T>(f: impl FnOnce(&mut PlanContext<'_>) -> Result<T, WriteError>) -> Result<T, ApiError> {
    let mut new_uuid = Uuid::now_v7;
    let mut ctx = PlanContext { now: chrono::Utc::now().timestamp_micros(), new_uuid: &mut new_uuid };
    f(&mut ctx).map_err(|e| ApiError::from(opsbuffer_engine::EngineError::from(e)))
}

fn single_step(op: StepOp, table: Arc<Table>, changes: Vec<opsbuffer_core::tx::PlannedChange>) -> Plan {
    Plan { steps: vec![PlannedStep { op, table, changes }] }
}

/// The answer for a one-record write: `{"id", "transaction_id", "status"}`.
fn single_answer(receipt: Receipt) -> JsonValue {
    json!({
        "id": receipt.ids.first().cloned().unwrap_or(JsonValue::Null),
        "transaction_id": receipt.transaction_id,
        "status": receipt.status,
    })
}

/// `POST /transactions`.
#[utoipa::path(
    post,
    path = "/transactions",
    tag = "writes",
    summary = "Apply several steps as one transaction",
    request_body = TransactionRequest,
    responses(
        (status = 201, description = "Accepted", body = TransactionReceipt),
        (status = "4XX", description = "The request is invalid, unauthorized or conflicts with the data; nothing was stored", body = ErrorResponse),
        (status = 503, description = "The buffer is full or a dependency is unavailable; retry after Retry-After", body = ErrorResponse),
    ),
    security(("bearer" = ["write:observations"])),
)]
pub async fn transaction(
    State(engine): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<JsonValue>), ApiError> {
    let body = json_body(&body, None)?;
    let registry = engine.client_registry();
    let plan = plan_with(|ctx| plan_transaction(&registry, &body, ctx))?;
    let receipt = submit(&engine, plan).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"transaction_id": receipt.transaction_id, "ids": receipt.ids, "status": receipt.status})),
    ))
}

/// `POST /executed_obs_units/start`: `status` defaults to `running`,
/// `start_time` to now.
#[utoipa::path(
    post,
    path = "/executed_obs_units/start",
    tag = "writes",
    summary = "Start an executed obs unit",
    request_body(content = Object, description = "Column values of the record", content_type = "application/json"),
    responses(
        (status = 201, description = "Accepted", body = WriteReceipt),
        (status = "4XX", description = "The request is invalid, unauthorized or conflicts with the data; nothing was stored", body = ErrorResponse),
        (status = 503, description = "The buffer is full or a dependency is unavailable; retry after Retry-After", body = ErrorResponse),
    ),
    security(("bearer" = ["write:observations"])),
)]
pub async fn start_executed_obs_unit(
    State(engine): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<JsonValue>), ApiError> {
    let mut data = object_body(&body, false)?;
    data.entry("status").or_insert_with(|| json!("running"));
    data.entry("start_time").or_insert_with(|| json!(now_text()));
    create_one(&engine, EXECUTED_OBS_UNIT, data).await
}

/// `PUT /executed_obs_units/{id}/finish`: `end_time` defaults to now,
/// `status` to `completed`; only `completed` or `failed` may be sent.
#[utoipa::path(
    put,
    path = "/executed_obs_units/{id}/finish",
    tag = "writes",
    summary = "Finish an executed obs unit",
    params(("id" = String, Path, description = "The executed obs unit's id")),
    request_body(content = Option<Object>, description = "Optional column values", content_type = "application/json"),
    responses(
        (status = 200, description = "Accepted", body = WriteReceipt),
        (status = "4XX", description = "The request is invalid, unauthorized or conflicts with the data; nothing was stored", body = ErrorResponse),
        (status = 503, description = "The buffer is full or a dependency is unavailable; retry after Retry-After", body = ErrorResponse),
    ),
    security(("bearer" = ["write:observations"])),
)]
pub async fn finish_executed_obs_unit(
    State(engine): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<JsonValue>, ApiError> {
    let mut data = object_body(&body, true)?;
    match data.get("status") {
        None | Some(JsonValue::Null) => {
            data.insert("status".into(), json!("completed"));
        }
        Some(JsonValue::String(s)) if s == "completed" || s == "failed" => {}
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_value",
                "status",
                format!("finish sets status to completed or failed, not {other}"),
            ));
        }
    }
    data.entry("end_time").or_insert_with(|| json!(now_text()));
    update_one(&engine, EXECUTED_OBS_UNIT, &id, data).await
}

/// `POST /raw_data_files/`.
#[utoipa::path(
    post,
    path = "/raw_data_files/",
    tag = "writes",
    summary = "Register a raw data file",
    request_body(content = Object, description = "Column values of the record", content_type = "application/json"),
    responses(
        (status = 201, description = "Accepted", body = WriteReceipt),
        (status = "4XX", description = "The request is invalid, unauthorized or conflicts with the data; nothing was stored", body = ErrorResponse),
        (status = 503, description = "The buffer is full or a dependency is unavailable; retry after Retry-After", body = ErrorResponse),
    ),
    security(("bearer" = ["write:observations"])),
)]
pub async fn create_raw_data_file(
    State(engine): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<JsonValue>), ApiError> {
    let data = object_body(&body, false)?;
    create_one(&engine, RAW_DATA_FILE, data).await
}

/// `POST /raw_data_files`, the same as with the trailing slash.
#[utoipa::path(
    post,
    path = "/raw_data_files",
    tag = "writes",
    summary = "Register a raw data file",
    request_body(content = Object, description = "Column values of the record", content_type = "application/json"),
    responses(
        (status = 201, description = "Accepted", body = WriteReceipt),
        (status = "4XX", description = "The request is invalid, unauthorized or conflicts with the data; nothing was stored", body = ErrorResponse),
        (status = 503, description = "The buffer is full or a dependency is unavailable; retry after Retry-After", body = ErrorResponse),
    ),
    security(("bearer" = ["write:observations"])),
)]
pub async fn create_raw_data_file_without_slash(
    state: State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<JsonValue>), ApiError> {
    create_raw_data_file(state, body).await
}

/// `POST /raw_data_files/bulk`: a list of files, or `{"files": [...]}`.
#[utoipa::path(
    post,
    path = "/raw_data_files/bulk",
    tag = "writes",
    summary = "Register many raw data files in one transaction",
    request_body(content = Vec<Object>, description = "A list of files, or {\"files\": [...]}", content_type = "application/json"),
    responses(
        (status = 201, description = "Accepted", body = BulkReceipt),
        (status = "4XX", description = "The request is invalid, unauthorized or conflicts with the data; nothing was stored", body = ErrorResponse),
        (status = 503, description = "The buffer is full or a dependency is unavailable; retry after Retry-After", body = ErrorResponse),
    ),
    security(("bearer" = ["write:observations"])),
)]
pub async fn create_raw_data_files(
    State(engine): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<JsonValue>), ApiError> {
    let rows = match json_body(&body, None)? {
        JsonValue::Array(rows) => rows,
        JsonValue::Object(mut object) if object.len() == 1 && object.get("files").is_some_and(JsonValue::is_array) => {
            match object.remove("files") {
                Some(JsonValue::Array(rows)) => rows,
                _ => Vec::new(),
            }
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "",
                "the body must be a list of file objects, or {\"files\": [...]}",
            ));
        }
    };
    if rows.is_empty() {
        return Err(ApiError::bad_request("invalid_body", "", "the list of files is empty; send at least one file"));
    }
    if rows.len() > MAX_ROWS_PER_TRANSACTION {
        let error = WriteError::new(
            Rejection::TooLarge,
            "too_many_rows",
            Some("files".to_owned()),
            format!("the request has {} files; send at most {MAX_ROWS_PER_TRANSACTION} per request", rows.len()),
        );
        return Err(ApiError::from(opsbuffer_engine::EngineError::from(error)));
    }
    let table = engine.table(RAW_DATA_FILE)?;
    let changes = plan_with(|ctx| plan_bulk_create(&table, &rows, "", ctx))?;
    let receipt = submit(&engine, single_step(StepOp::BulkCreate, table, changes)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "ids": receipt.ids,
            "count": receipt.ids.len(),
            "transaction_id": receipt.transaction_id,
            "status": receipt.status,
        })),
    ))
}

/// `POST /raw_data_package/`.
#[utoipa::path(
    post,
    path = "/raw_data_package/",
    tag = "writes",
    summary = "Create a raw data package",
    request_body(content = Object, description = "Column values of the record", content_type = "application/json"),
    responses(
        (status = 201, description = "Accepted", body = WriteReceipt),
        (status = "4XX", description = "The request is invalid, unauthorized or conflicts with the data; nothing was stored", body = ErrorResponse),
        (status = 503, description = "The buffer is full or a dependency is unavailable; retry after Retry-After", body = ErrorResponse),
    ),
    security(("bearer" = ["write:observations"])),
)]
pub async fn create_raw_data_package(
    State(engine): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<JsonValue>), ApiError> {
    let data = object_body(&body, false)?;
    create_one(&engine, RAW_DATA_PACKAGE, data).await
}

/// `POST /raw_data_package`, the same as with the trailing slash.
#[utoipa::path(
    post,
    path = "/raw_data_package",
    tag = "writes",
    summary = "Create a raw data package",
    request_body(content = Object, description = "Column values of the record", content_type = "application/json"),
    responses(
        (status = 201, description = "Accepted", body = WriteReceipt),
        (status = "4XX", description = "The request is invalid, unauthorized or conflicts with the data; nothing was stored", body = ErrorResponse),
        (status = 503, description = "The buffer is full or a dependency is unavailable; retry after Retry-After", body = ErrorResponse),
    ),
    security(("bearer" = ["write:observations"])),
)]
pub async fn create_raw_data_package_without_slash(
    state: State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<JsonValue>), ApiError> {
    create_raw_data_package(state, body).await
}

/// `PUT /raw_data_package/{id}/finalize`: sets `status` to `finalized` and
/// `finalized_at` to now unless the body says otherwise.
#[utoipa::path(
    put,
    path = "/raw_data_package/{id}/finalize",
    tag = "writes",
    summary = "Finalize a raw data package",
    params(("id" = String, Path, description = "The package's id")),
    request_body(content = Option<Object>, description = "Optional column values", content_type = "application/json"),
    responses(
        (status = 200, description = "Accepted", body = WriteReceipt),
        (status = "4XX", description = "The request is invalid, unauthorized or conflicts with the data; nothing was stored", body = ErrorResponse),
        (status = 503, description = "The buffer is full or a dependency is unavailable; retry after Retry-After", body = ErrorResponse),
    ),
    security(("bearer" = ["write:observations"])),
)]
pub async fn finalize_raw_data_package(
    State(engine): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<JsonValue>, ApiError> {
    let mut data = object_body(&body, true)?;
    match data.get("status") {
        None => {
            data.insert("status".into(), json!("finalized"));
        }
        Some(status) if status == "finalized" => {}
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_value",
                "status",
                format!(
                    "finalize sets status to finalized, not {other}; leave status out, or change it with an update step of POST /transactions"
                ),
            ));
        }
    }
    data.entry("finalized_at").or_insert_with(|| json!(now_text()));
    update_one(&engine, RAW_DATA_PACKAGE, &id, data).await
}

async fn create_one(
    engine: &Engine,
    table: &str,
    data: Map<String, JsonValue>,
) -> Result<(StatusCode, Json<JsonValue>), ApiError> {
    let table = engine.table(table)?;
    let change = plan_with(|ctx| plan_create(&table, &data, "", ctx))?;
    let receipt = submit(engine, single_step(StepOp::Create, table, vec![change])).await?;
    Ok((StatusCode::CREATED, Json(single_answer(receipt))))
}

async fn update_one(
    engine: &Engine,
    table: &str,
    id: &str,
    data: Map<String, JsonValue>,
) -> Result<Json<JsonValue>, ApiError> {
    let table = engine.table(table)?;
    let change = plan_with(|_| plan_update(&table, &JsonValue::String(id.to_owned()), &data, "", ""))?;
    let receipt = submit(engine, single_step(StepOp::Update, table, vec![change])).await?;
    Ok(Json(single_answer(receipt)))
}

/// Submits a plan and records its transaction id in the request span, so
/// the request's log line names it.
async fn submit(engine: &Engine, plan: Plan) -> Result<Receipt, ApiError> {
    let receipt = engine.submit(plan).await?;
    tracing::Span::current().record("transaction_id", tracing::field::display(receipt.transaction_id));
    Ok(receipt)
}

/// The current time in RFC 3339 with microseconds, as a default value.
fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
