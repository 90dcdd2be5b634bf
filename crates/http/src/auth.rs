//! Bearer-token authentication and scope checks.
//!
//! Each group of routes in [`crate::router`] carries one [`Access`] rule.
//! A request without a usable token gets 401 with `WWW-Authenticate:
//! Bearer`; a valid token without the scope gets 403 naming the scope.
//! `AUTH_REQUIRED=false` lets every request through. Tokens are never
//! logged: the request span records only the token's short id.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use opsbuffer_engine::OpenEndpoint;
use opsbuffer_engine::tokens::{Principal, Scope, TokenRejection};

use crate::error::ApiError;
use crate::records::AppState;

/// Who may call a group of routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A token with this scope (or `admin`).
    Scope(Scope),
    /// Open when `AUTH_OPEN_ENDPOINTS` lists the endpoint, otherwise a
    /// token with any scope.
    Open(OpenEndpoint),
}

impl Access {
    /// The scope named in the OpenAPI document and in 403 messages.
    pub fn scope(self) -> Option<Scope> {
        match self {
            Access::Scope(scope) => Some(scope),
            Access::Open(_) => None,
        }
    }
}

const REALM: &str = "opsbuffer";

fn unauthorized(code: &'static str, message: String, error: Option<&str>) -> ApiError {
    let challenge = match error {
        Some(error) => {
            let description = message.replace('"', "'");
            format!("Bearer realm=\"{REALM}\", error=\"{error}\", error_description=\"{description}\"")
        }
        None => format!("Bearer realm=\"{REALM}\""),
    };
    ApiError { www_authenticate: Some(challenge), ..ApiError::new(StatusCode::UNAUTHORIZED, code, message) }
}

fn forbidden(scope: Scope, principal: &Principal) -> ApiError {
    let granted: Vec<&str> = principal.scopes.iter().map(|s| s.as_str()).collect();
    let needed =
        if scope == Scope::Admin { "the scope admin".to_owned() } else { format!("the scope {scope} or admin") };
    let message = format!(
        "this endpoint needs {needed}; token {} ({}) has {}",
        principal.token_id,
        principal.name,
        if granted.is_empty() { "no known scope".to_owned() } else { granted.join(", ") }
    );
    ApiError {
        www_authenticate: Some(format!("Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{scope}\"")),
        ..ApiError::new(StatusCode::FORBIDDEN, "insufficient_scope", message)
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        unauthorized("invalid_token", "the Authorization header is not ASCII".into(), Some("invalid_request"))
    })?;
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(Some(token.trim()))
        }
        _ => Err(unauthorized(
            "invalid_token",
            "the Authorization header must read `Bearer <token>`".into(),
            Some("invalid_request"),
        )),
    }
}

/// Checks the request against `access`, then passes it on with the
/// [`Principal`] in its extensions.
pub async fn authorize(
    State((engine, access)): State<(AppState, Access)>,
    mut request: Request,
    next: Next,
) -> Response {
    let auth = &engine.config.auth;
    if !auth.required {
        return next.run(request).await;
    }
    if let Access::Open(endpoint) = access
        && auth.is_open(endpoint)
    {
        return next.run(request).await;
    }

    let token = match bearer_token(request.headers()) {
        Ok(Some(token)) => token,
        Ok(None) => {
            return unauthorized(
                "missing_token",
                "this endpoint needs an API token: send `Authorization: Bearer <token>`; `opsbuffer token create` makes one".into(),
                None,
            )
            .into_response();
        }
        Err(error) => return error.into_response(),
    };
    let principal = match engine.verify_token(token).await {
        Ok(principal) => principal,
        Err(TokenRejection::Unavailable(error)) => {
            tracing::warn!(%error, "could not check an API token");
            return ApiError {
                retry_after_s: Some(2),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "auth_unavailable",
                    format!("the API token could not be checked because the token table cannot be read: {error}"),
                )
            }
            .into_response();
        }
        Err(rejection) => {
            let code = match rejection {
                TokenRejection::Expired { .. } => "token_expired",
                TokenRejection::Revoked { .. } => "token_revoked",
                _ => "invalid_token",
            };
            return unauthorized(code, rejection.to_string(), Some("invalid_token")).into_response();
        }
    };
    tracing::Span::current().record("token_id", tracing::field::display(&principal.token_id));
    if let Some(scope) = access.scope()
        && !principal.allows(scope)
    {
        return forbidden(scope, &principal).into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(&headers("Bearer abc")).unwrap(), Some("abc"));
        assert_eq!(bearer_token(&headers("bearer  abc ")).unwrap(), Some("abc"));
        assert_eq!(bearer_token(&HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn other_schemes_are_rejected() {
        let error = bearer_token(&headers("Basic dXNlcjpwdw==")).unwrap_err();
        assert_eq!(error.status, StatusCode::UNAUTHORIZED);
        assert!(error.www_authenticate.unwrap().starts_with("Bearer"));
        assert!(bearer_token(&headers("Bearer ")).is_err());
    }
}
