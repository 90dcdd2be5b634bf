//! Parsing of query strings and JSON bodies into the engine's types, with
//! errors that name the parameter and the fix.

use std::time::Duration;

use axum::body::Bytes;
use opsbuffer_core::query::Query;
use opsbuffer_core::schema::Table;
use opsbuffer_engine::Consistency;
use percent_encoding::percent_decode_str;
use serde_json::Value as Json;

use crate::error::ApiError;

/// Parameters that are not column filters.
pub const RESERVED: &[&str] = &["order", "limit", "after", "provenance", "consistency", "timeout_ms", "via"];

/// Longest a `consistency=replicated` read may wait.
const MAX_REPLICATED_WAIT: Duration = Duration::from_secs(60);
const DEFAULT_REPLICATED_WAIT: Duration = Duration::from_secs(5);

/// The query string as ordered (name, value) pairs. Only `%XX` escapes are
/// decoded; `+` stays a plus sign, so UTC offsets in filter values such as
/// `start_time=gt.2026-10-01T10:00:00+02:00` arrive intact.
pub fn query_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for part in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (name, value) = part.split_once('=').unwrap_or((part, ""));
        let decode = |s: &str| {
            percent_decode_str(s).decode_utf8().map(|c| c.into_owned()).map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    name.to_owned(),
                    format!("query parameter {name:?} is not valid UTF-8 after percent-decoding"),
                )
            })
        };
        out.push((decode(name)?, decode(value)?));
    }
    Ok(out)
}

/// The last value of a parameter.
pub fn param<'p>(pairs: &'p [(String, String)], name: &str) -> Option<&'p str> {
    pairs.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// Whether `provenance=true` was asked for.
pub fn provenance(pairs: &[(String, String)]) -> Result<bool, ApiError> {
    match param(pairs, "provenance") {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(ApiError::bad_request(
            "invalid_query",
            "provenance",
            format!("provenance must be true or false, not {other:?}"),
        )),
    }
}

/// The `consistency` and `timeout_ms` parameters.
pub fn consistency(pairs: &[(String, String)]) -> Result<Consistency, ApiError> {
    let timeout = match param(pairs, "timeout_ms") {
        None => DEFAULT_REPLICATED_WAIT,
        Some(text) => {
            let ms: u64 = text.parse().map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    "timeout_ms",
                    format!("timeout_ms must be a whole number of milliseconds, not {text:?}"),
                )
            })?;
            let wait = Duration::from_millis(ms);
            if wait > MAX_REPLICATED_WAIT {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "timeout_ms",
                    format!("timeout_ms may be at most {}", MAX_REPLICATED_WAIT.as_millis()),
                ));
            }
            wait
        }
    };
    match param(pairs, "consistency").unwrap_or("merged") {
        "merged" => Ok(Consistency::Merged),
        "replica" => Ok(Consistency::Replica),
        "replicated" => Ok(Consistency::Replicated { timeout }),
        other => Err(ApiError::bad_request(
            "invalid_query",
            "consistency",
            format!("consistency must be merged, replica or replicated, not {other:?}"),
        )),
    }
}

/// The query of a read on `table`.
pub fn table_query(table: &Table, pairs: &[(String, String)]) -> Result<Query, ApiError> {
    Query::parse(table, pairs, RESERVED).map_err(|e| ApiError::bad_request("invalid_query", e.field, e.message))
}

/// Parses a JSON body; an empty body is `default`.
pub fn json_body(body: &Bytes, default: Option<Json>) -> Result<Json, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return default
            .ok_or_else(|| ApiError::bad_request("invalid_body", "", "the request body is empty; send a JSON object"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_body", "", format!("the request body is not valid JSON: {e}")))
}

/// Parses a JSON object body.
pub fn object_body(body: &Bytes, allow_empty: bool) -> Result<serde_json::Map<String, Json>, ApiError> {
    let default = allow_empty.then(|| Json::Object(Default::default()));
    match json_body(body, default)? {
        Json::Object(map) => Ok(map),
        _ => Err(ApiError::bad_request("invalid_body", "", "the request body must be a JSON object of column values")),
    }
}
