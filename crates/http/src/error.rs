//! The one mapping from errors to HTTP responses:
//! `{"error": {"code", "message", "field"}}` with a 4xx for every problem
//! of the request and a 5xx only for problems of the service.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opsbuffer_core::tx::Rejection;
use opsbuffer_engine::EngineError;
use serde_json::json;

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub retry_after_s: Option<u64>,
    /// The `WWW-Authenticate` challenge of a 401 or 403.
    pub www_authenticate: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), field: None, retry_after_s: None, www_authenticate: None }
    }

    pub fn bad_request(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError { field: Some(field.into()), ..ApiError::new(StatusCode::BAD_REQUEST, code, message) }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> ApiError {
        match error {
            EngineError::Write(w) => {
                let status = match w.rejection {
                    Rejection::Invalid => StatusCode::BAD_REQUEST,
                    Rejection::NotFound => StatusCode::NOT_FOUND,
                    Rejection::Conflict => StatusCode::CONFLICT,
                    Rejection::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
                    Rejection::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                };
                ApiError {
                    status,
                    code: w.code,
                    message: w.message,
                    field: w.field.filter(|f| !f.is_empty()),
                    retry_after_s: None,
                    www_authenticate: None,
                }
            }
            EngineError::Query(q) => ApiError::bad_request("invalid_query", q.field, q.message),
            EngineError::NotFound { code, message } => ApiError::not_found(code, message),
            EngineError::Unavailable { code, message, retry_after_s } => ApiError {
                retry_after_s: (retry_after_s > 0).then_some(retry_after_s),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
            },
            EngineError::Timeout { code, message } => ApiError::new(StatusCode::REQUEST_TIMEOUT, code, message),
            EngineError::Postgres(e) => {
                tracing::warn!(error = %e, "database error while serving a request");
                if e.is_transient() {
                    ApiError {
                        retry_after_s: Some(2),
                        ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable", e.to_string())
                    }
                } else {
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "database_error", e.to_string())
                }
            }
            EngineError::Buffer(e) => {
                tracing::warn!(error = %e, "Redis error while serving a request");
                ApiError {
                    retry_after_s: Some(2),
                    ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "buffer_unavailable", e.to_string())
                }
            }
            EngineError::Internal(message) => {
                tracing::error!(%message, "internal error while serving a request");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"code": self.code, "message": self.message});
        if let Some(field) = &self.field {
            body["field"] = json!(field);
        }
        let mut response = (self.status, axum::Json(json!({ "error": body }))).into_response();
        if let Some(seconds) = self.retry_after_s
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if let Some(challenge) = &self.www_authenticate
            && let Ok(value) = HeaderValue::from_str(challenge)
        {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}
