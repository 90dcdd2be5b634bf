//! Token management: `/tokens`, scope `admin`. The same operations work
//! from the command line with `opsbuffer token`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use opsbuffer_engine::config::parse_duration;
use opsbuffer_engine::tokens::{Scope, TokenInfo};

use crate::docs::{CreateTokenRequest, CreatedTokenResponse, ErrorResponse};
use crate::error::ApiError;
use crate::records::AppState;

/// Reads the expiry of a new token from `expires_in` or `expires_at`.
fn expiry(request: &CreateTokenRequest) -> Result<Option<DateTime<Utc>>, ApiError> {
    match (&request.expires_in, &request.expires_at) {
        (Some(_), Some(_)) => {
            Err(ApiError::bad_request("invalid_value", "expires_in", "send expires_in or expires_at, not both"))
        }
        (Some(lifetime), None) => {
            let lifetime = parse_duration(lifetime)
                .map_err(|e| ApiError::bad_request("invalid_value", "expires_in", format!("expires_in: {e}")))?;
            let expiry = opsbuffer_engine::tokens::expiry_after(lifetime)
                .map_err(|e| ApiError::bad_request("invalid_value", "expires_in", format!("expires_in: {e}")))?;
            Ok(Some(expiry))
        }
        (None, Some(at)) => DateTime::parse_from_rfc3339(at).map(|t| Some(t.with_timezone(&Utc))).map_err(|e| {
            ApiError::bad_request(
                "invalid_value",
                "expires_at",
                format!("expires_at {at:?} is not an RFC 3339 time such as 2027-01-01T00:00:00Z: {e}"),
            )
        }),
        (None, None) => Ok(None),
    }
}

/// `POST /tokens`.
#[utoipa::path(
    post,
    path = "/tokens",
    tag = "tokens",
    summary = "Create an API token; the answer is the only place it appears",
    request_body = CreateTokenRequest,
    responses(
        (status = 201, description = "Created", body = CreatedTokenResponse),
        (status = "4XX", description = "Invalid request or unauthorized", body = ErrorResponse),
        (status = 503, description = "The buffer or local is unavailable", body = ErrorResponse),
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn create(
    State(engine): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<CreatedTokenResponse>), ApiError> {
    let request: CreateTokenRequest = serde_json::from_slice(&body).map_err(|e| {
        let shape = "the body must be {\"name\", \"scopes\": [...], \"expires_in\"?, \"expires_at\"?}";
        // serde names the field only in these two messages.
        let text = e.to_string();
        let named = |prefix: &str| text.strip_prefix(prefix).and_then(|rest| rest.split('`').next()).map(str::to_owned);
        match (named("missing field `"), named("unknown field `")) {
            (Some(field), _) => {
                ApiError::bad_request("missing_field", field.clone(), format!("{field} is required; {shape}"))
            }
            (None, Some(field)) => {
                ApiError::bad_request("unknown_field", field.clone(), format!("unknown field {field:?}; {shape}"))
            }
            (None, None) => ApiError::bad_request("invalid_body", "", format!("{shape}: {e}")),
        }
    })?;
    let scopes = request
        .scopes
        .iter()
        .map(|s| Scope::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::bad_request("invalid_value", "scopes", e))?;
    let expires_at = expiry(&request)?;
    let created = engine.create_token(&request.name, &scopes, expires_at).await?;
    tracing::Span::current().record("transaction_id", tracing::field::display(created.transaction_id));
    Ok((
        StatusCode::CREATED,
        Json(CreatedTokenResponse {
            token: created.token,
            info: created.info,
            transaction_id: created.transaction_id,
            status: created.status.to_owned(),
        }),
    ))
}

/// `GET /tokens`.
#[utoipa::path(
    get,
    path = "/tokens",
    tag = "tokens",
    summary = "Every API token, without its secret",
    responses(
        (status = 200, description = "The tokens, oldest first", body = Vec<TokenInfo>),
        (status = "4XX", description = "Unauthorized", body = ErrorResponse),
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn list(State(engine): State<AppState>) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    Ok(Json(engine.list_tokens().await?))
}

/// `GET /tokens/{id}`.
#[utoipa::path(
    get,
    path = "/tokens/{id}",
    tag = "tokens",
    summary = "One API token",
    params(("id" = String, Path, description = "The token's uuid or its 8-character id")),
    responses(
        (status = 200, description = "The token", body = TokenInfo),
        (status = "4XX", description = "Unauthorized or not found", body = ErrorResponse),
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn get(State(engine): State<AppState>, Path(id): Path<String>) -> Result<Json<TokenInfo>, ApiError> {
    Ok(Json(engine.token(&id).await?))
}

/// `DELETE /tokens/{id}`: revokes the token.
#[utoipa::path(
    delete,
    path = "/tokens/{id}",
    tag = "tokens",
    summary = "Revoke an API token",
    description = "This process rejects the token at once; other processes and sites within their verification cache time (5 s) after they see the change.",
    params(("id" = String, Path, description = "The token's uuid or its 8-character id")),
    responses(
        (status = 200, description = "Revoked", body = TokenInfo),
        (status = "4XX", description = "Unauthorized or not found", body = ErrorResponse),
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn revoke(State(engine): State<AppState>, Path(id): Path<String>) -> Result<Json<TokenInfo>, ApiError> {
    let info = engine.revoke_token(&id).await?;
    Ok(Json(info))
}
