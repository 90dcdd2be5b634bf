//! The OpenAPI document's frame and the request and response types it
//! describes. Handlers build most responses as JSON values; the types here
//! give those responses a schema and must keep their shape.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use uuid::Uuid;

/// The name of the bearer security scheme in the document.
pub const BEARER: &str = "bearer";

/// The document's info, tags and security scheme; the paths come from
/// the router (see [`crate::api_router`]).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "opsbuffer",
        description = "The site API of an observatory's operations database. Writes are buffered durably in Redis and drained in order to the main database; reads merge the local replica with everything still pending.\n\nSend `Authorization: Bearer <token>` unless the service runs with AUTH_REQUIRED=false. Each operation lists the scope it needs; `admin` grants every scope.",
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "writes", description = "Record observations; each request is one transaction"),
        (name = "reads", description = "The merged view: local rows with every pending change applied"),
        (name = "operations", description = "Health, metrics, transaction states, dead letters and the schema"),
        (name = "tokens", description = "API tokens (scope admin)"),
    )
)]
pub struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("opsb_<id>_<secret>")
                    .description(Some("An API token from `opsbuffer token create` or `POST /tokens`"))
                    .build(),
            ),
        );
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable snake_case code such as `invalid_value` or `missing_token`.
    pub code: String,
    /// A sentence naming the value and the fix.
    pub message: String,
    /// The request field the error is about, when there is one.
    pub field: Option<String>,
}

/// The response to a one-record write.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WriteReceipt {
    /// The record's primary key.
    #[schema(value_type = Object)]
    pub id: Json,
    pub transaction_id: Uuid,
    /// `buffered` at a secondary site, `committed` at a main site.
    #[schema(example = "buffered")]
    pub status: String,
}

/// The response to `POST /raw_data_files/bulk`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BulkReceipt {
    #[schema(value_type = Vec<Object>)]
    pub ids: Vec<Json>,
    pub count: usize,
    pub transaction_id: Uuid,
    pub status: String,
}

/// The response to `POST /transactions`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TransactionReceipt {
    pub transaction_id: Uuid,
    /// Primary keys of the changed records, in step order.
    #[schema(value_type = Vec<Object>)]
    pub ids: Vec<Json>,
    pub status: String,
}

/// The body of `POST /transactions`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TransactionRequest {
    pub steps: Vec<TransactionStep>,
}

/// One step of a transaction.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TransactionStep {
    pub op: StepKind,
    /// Model name (`ExecutedObsUnit`) or SQL name (`executed_obs_unit`).
    pub table: String,
    /// The record's key, for `update` and `delete`.
    #[schema(value_type = Option<Object>)]
    pub id: Option<Json>,
    /// Column values, for `create` and `update`.
    #[schema(value_type = Option<Object>)]
    pub data: Option<Json>,
    /// Rows, for `bulk_create` and (each with its `id`) `bulk_update`.
    #[schema(value_type = Option<Vec<Object>>)]
    pub rows: Option<Vec<Json>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Create,
    Update,
    Delete,
    BulkCreate,
    BulkUpdate,
}

/// One page of the merged view.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RecordPage {
    /// Column values of each record by column name. Numerics are strings
    /// so no digit is lost.
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<Json>,
    /// Pass as `after=` to read the next page; null on the last page.
    pub next: Option<String>,
}

/// The common parameters of reads. Any other parameter is a filter
/// `column=op.value` (PostgREST style: eq, neq, lt, lte, gt, gte,
/// in.(a,b), is.null, is.true, is.false, like, ilike, each negated with
/// `not.`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadParams {
    /// Sort order such as `start_time.desc,id.asc`; the primary key is the
    /// final tie-break.
    pub order: Option<String>,
    /// Records per page, 1 to 10000 (default 100).
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
    /// Add `_provenance` to each record.
    pub provenance: Option<bool>,
    /// `merged` (default), `replica` or `replicated`.
    pub consistency: Option<String>,
    /// Longest wait of `consistency=replicated`, in milliseconds (default
    /// 5000, at most 60000).
    pub timeout_ms: Option<u64>,
}

/// A transaction's state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TransactionState {
    pub transaction_id: Uuid,
    pub sequence: i64,
    /// `queued`, `blocked`, `applied`, `replicated`, `dead` or `discarded`.
    pub state: String,
    pub commit_lsn: Option<String>,
    pub attempts: i64,
    /// Main's error for a dead letter, or the last transient error.
    pub error: Option<String>,
    pub sqlstate: Option<String>,
    /// Dead letters that hold this transaction back.
    pub blocked_by: Vec<Uuid>,
    pub acknowledged_at: Option<String>,
    pub applied_at: Option<String>,
    pub replicated_at: Option<String>,
    pub failed_at: Option<String>,
    pub records: Vec<TransactionRecordRef>,
}

/// A record a transaction changes.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TransactionRecordRef {
    pub table: String,
    pub id: Option<String>,
    /// `create`, `update` or `delete`.
    pub op: Option<String>,
}

/// The response to a dead-letter retry or discard.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterAction {
    pub transaction_id: Uuid,
    /// `queued` after a retry, `discarded` after a discard.
    pub state: String,
    /// Blocked transactions released into the queue.
    pub released_blocked: u64,
}

/// The tables served.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SchemaResponse {
    pub tables: Vec<TableSchema>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TableSchema {
    pub name: String,
    pub model_name: String,
    pub primary_key: Option<String>,
    /// `uuidv7`, `main`, `client` or `nokey`.
    pub key_generation: String,
    pub columns: Vec<ColumnSchema>,
    pub foreign_keys: Vec<ForeignKeySchema>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ColumnSchema {
    pub name: String,
    #[serde(rename = "type")]
    pub sql_type: String,
    pub nullable: bool,
    pub has_default: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ForeignKeySchema {
    pub name: String,
    pub columns: Vec<String>,
    pub references: String,
    pub referenced_columns: Vec<String>,
}

/// The response to `POST /schema/reload`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReloadResponse {
    /// Tables in the reloaded registry.
    pub tables: usize,
}

/// The body of `POST /tokens`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// What the token is for, such as `rfsoc01 ingest`.
    pub name: String,
    /// Any of `read:observations`, `write:observations`, `admin`.
    pub scopes: Vec<String>,
    /// Lifetime such as `90d`, `12h` or `3600` (seconds); none means the
    /// token does not expire. Exclusive with `expires_at`.
    pub expires_in: Option<String>,
    /// RFC 3339 expiry time. Exclusive with `expires_in`.
    pub expires_at: Option<String>,
}

/// A new token: the only response that contains it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedTokenResponse {
    /// The token. It is not stored and cannot be shown again.
    pub token: String,
    #[serde(flatten)]
    pub info: opsbuffer_engine::tokens::TokenInfo,
    pub transaction_id: Uuid,
    pub status: String,
}

/// `GET /openapi.json`, served by the Swagger UI router; this function
/// only carries the documentation.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    summary = "This OpenAPI document",
    description = "Open without a token when AUTH_OPEN_ENDPOINTS lists docs (the default); otherwise any valid token.",
    responses((status = 200, description = "The document", content_type = "application/json", body = Object)),
    security((), ("bearer" = [])),
)]
#[allow(dead_code)]
fn openapi_json() {}

/// `GET /docs`, the interactive page, served by the Swagger UI router.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "operations",
    summary = "Interactive documentation (Swagger UI, served from the binary)",
    description = "Redirects to /docs/. Open without a token when AUTH_OPEN_ENDPOINTS lists docs (the default).",
    responses((status = 303, description = "Redirect to the page at /docs/")),
    security((), ("bearer" = [])),
)]
#[allow(dead_code)]
fn docs_page() {}

/// The paths of the documentation itself.
#[derive(OpenApi)]
#[openapi(paths(openapi_json, docs_page))]
pub struct DocumentationPaths;
