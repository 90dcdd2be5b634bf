//! The outermost layer of every route: a request id, a tracing span, one
//! INFO log line per request and the request metrics.
//!
//! The span carries the request id, method, route template and URI, and
//! later the short id of the caller's token and the transaction id of a
//! write, so every log line written while serving the request (such as the
//! engine's `buffered transaction`) names them. Query parameters whose
//! names look like secrets are masked in the logged URI.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::records::AppState;

/// The header that carries the request id, in both directions.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The route label of requests no route matched, so unknown paths do not
/// create a metric series each.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The request id a client sent, when it is short and plain enough to log;
/// otherwise a new UUIDv7.
fn request_id(request: &Request) -> String {
    request
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// Whether a query parameter name looks like it carries a secret.
fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["token", "password", "secret", "api_key", "apikey", "auth"].iter().any(|s| name.contains(s))
}

/// The path and query with the values of secret-looking parameters
/// replaced by `***`.
pub fn loggable_uri(uri: &Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_owned();
    };
    let masked: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_name(name) => format!("{name}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{}?{}", uri.path(), masked.join("&"))
}

/// Runs the request inside its span, then logs and counts it.
pub async fn observe(State(engine): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let route = route.as_deref().unwrap_or(UNMATCHED_ROUTE).to_owned();
    let id = request_id(&request);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %method,
        route = %route,
        uri = %loggable_uri(request.uri()),
        token_id = tracing::field::Empty,
        transaction_id = tracing::field::Empty,
    );

    let mut response = next.run(request).instrument(span.clone()).await;

    let latency = started.elapsed();
    let status = response.status().as_u16();
    engine.metrics.observe_request(method.as_str(), &route, status, latency);
    span.in_scope(|| {
        tracing::info!(status, latency_ms = latency.as_secs_f64() * 1000.0, "request completed");
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_parameters_are_masked() {
        let uri: Uri = "/records/x?status=eq.running&access_token=abc&limit=5".parse().unwrap();
        assert_eq!(loggable_uri(&uri), "/records/x?status=eq.running&access_token=***&limit=5");
        let plain: Uri = "/health".parse().unwrap();
        assert_eq!(loggable_uri(&plain), "/health");
    }
}
