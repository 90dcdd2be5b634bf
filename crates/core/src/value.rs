//! Typed column values and PostgreSQL's comparison rules for them.
//!
//! A [`Value`] is always produced by coercing input against a column type (see
//! [`crate::types`]), so two values compared here always come from the same
//! column type. Comparison follows PostgreSQL: text byte-wise as under
//! `COLLATE "C"`, timestamps as instants, numerics exactly, `NaN` above every
//! other float, and no ordering for JSON.

use std::cmp::Ordering;
use std::fmt;

use bigdecimal::BigDecimal;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use uuid::Uuid;

/// Microseconds since 1970-01-01 00:00:00 UTC, PostgreSQL's timestamp
/// resolution. `i64::MIN` and `i64::MAX` stand for `-infinity` and `infinity`,
/// which PostgreSQL accepts for timestamps.
pub type Micros = i64;

/// Days since 1970-01-01. `i32::MIN` and `i32::MAX` stand for `-infinity` and
/// `infinity`.
pub type Days = i32;

/// A PostgreSQL `numeric`: an exact decimal, or one of the special values
/// PostgreSQL 14 and later accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Numeric {
    NegInfinity,
    Finite(BigDecimal),
    Infinity,
    /// PostgreSQL sorts `NaN` above every other numeric and treats it as equal
    /// to itself.
    NaN,
}

impl Numeric {
    fn rank(&self) -> u8 {
        match self {
            Numeric::NegInfinity => 0,
            Numeric::Finite(_) => 1,
            Numeric::Infinity => 2,
            Numeric::NaN => 3,
        }
    }
}

impl Ord for Numeric {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Numeric::Finite(a), Numeric::Finite(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Numeric {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Numeric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Numeric::NegInfinity => f.write_str("-Infinity"),
            Numeric::Finite(d) => f.write_str(&d.to_plain_string()),
            Numeric::Infinity => f.write_str("Infinity"),
            Numeric::NaN => f.write_str("NaN"),
        }
    }
}

/// One column value of a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// `smallint`, `integer` and `bigint`; the column type bounds the range.
    Int(i64),
    /// `real`, kept in single precision so it prints and compares as
    /// PostgreSQL's `float4` does.
    Real(f32),
    /// `double precision`.
    Double(f64),
    Numeric(Numeric),
    /// `text` and `varchar`.
    Text(String),
    Uuid(Uuid),
    /// `timestamp with time zone`, as an instant.
    Timestamptz(Micros),
    /// `timestamp without time zone`, as wall-clock microseconds.
    Timestamp(Micros),
    Date(Days),
    /// `json` and `jsonb`.
    Json(serde_json::Value),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Compares two values of the same column type as PostgreSQL's default
    /// b-tree operator class does. Returns `None` when either side is NULL or
    /// the type has no ordering (JSON), so callers get SQL's "unknown".
    pub fn sql_cmp(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Null, _) | (_, Value::Null) => None,
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (Value::Real(a), Value::Real(b)) => Some(float_cmp(f64::from(*a), f64::from(*b))),
            (Value::Double(a), Value::Double(b)) => Some(float_cmp(*a, *b)),
            (Value::Numeric(a), Value::Numeric(b)) => Some(a.cmp(b)),
            (Value::Text(a), Value::Text(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
            (Value::Uuid(a), Value::Uuid(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
            (Value::Timestamptz(a), Value::Timestamptz(b)) => Some(a.cmp(b)),
            (Value::Timestamp(a), Value::Timestamp(b)) => Some(a.cmp(b)),
            (Value::Date(a), Value::Date(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// SQL equality with three-valued logic: `None` when either side is NULL.
    /// JSON compares as `jsonb` does: object keys unordered, numbers by value.
    pub fn sql_eq(&self, other: &Value) -> Option<bool> {
        match (self, other) {
            (Value::Null, _) | (_, Value::Null) => None,
            (Value::Json(a), Value::Json(b)) => Some(json_eq(a, b)),
            _ => self.sql_cmp(other).map(|o| o == Ordering::Equal),
        }
    }

    /// Total order used for sorting: the SQL order with NULL placed by the
    /// caller. Both values must be non-NULL and orderable.
    pub fn sort_cmp(&self, other: &Value) -> Ordering {
        self.sql_cmp(other).unwrap_or(Ordering::Equal)
    }

    /// The value as it appears in API responses: RFC 3339 UTC times with a
    /// `Z`, numerics as strings so no digit is lost, non-finite floats as the
    /// strings PostgreSQL prints for them.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            // Go through the shortest f32 text so 0.1f32 appears as 0.1, not
            // as the f64 expansion of the nearest single-precision value.
            Value::Real(f) => match format_f32(*f).parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
                Some(n) => J::Number(n),
                None => J::String(format_f32(*f)),
            },
            Value::Double(f) => match serde_json::Number::from_f64(*f) {
                Some(n) => J::Number(n),
                None => J::String(format_f64(*f)),
            },
            Value::Numeric(n) => J::String(n.to_string()),
            Value::Text(s) => J::String(s.clone()),
            Value::Uuid(u) => J::String(u.hyphenated().to_string()),
            Value::Timestamptz(m) => J::String(format_timestamptz(*m)),
            Value::Timestamp(m) => J::String(format_timestamp(*m)),
            Value::Date(d) => J::String(format_date(*d)),
            Value::Json(j) => j.clone(),
        }
    }

    /// The value in a text form PostgreSQL's input function for the column
    /// type accepts unchanged; `None` for NULL. Used for query parameters of
    /// the form `$1::text::<type>`.
    pub fn to_pg_text(&self) -> Option<String> {
        Some(match self {
            Value::Null => return None,
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Real(f) => format_f32(*f),
            Value::Double(f) => format_f64(*f),
            Value::Numeric(n) => n.to_string(),
            Value::Text(s) => s.clone(),
            Value::Uuid(u) => u.hyphenated().to_string(),
            Value::Timestamptz(m) => format_timestamptz(*m),
            Value::Timestamp(m) => format_timestamp(*m),
            Value::Date(d) => format_date(*d),
            Value::Json(j) => j.to_string(),
        })
    }

    /// A stable text key for a primary-key value, used to name overlays.
    pub fn key_text(&self) -> String {
        self.to_pg_text().unwrap_or_default()
    }
}

/// PostgreSQL's float order: `NaN` equals itself and sorts above everything,
/// and `-0` equals `0`.
fn float_cmp(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// Equality of two JSON documents as `jsonb` defines it: numbers compare by
/// value (`1.0` equals `1`), object keys are unordered.
pub fn json_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Number(x), J::Number(y)) => json_number_eq(x, y),
        (J::Array(x), J::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q)),
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn json_number_eq(x: &serde_json::Number, y: &serde_json::Number) -> bool {
    if let (Some(a), Some(b)) = (x.as_i64(), y.as_i64()) {
        return a == b;
    }
    if let (Some(a), Some(b)) = (x.as_u64(), y.as_u64()) {
        return a == b;
    }
    let parse = |n: &serde_json::Number| n.to_string().parse::<BigDecimal>().ok();
    match (parse(x), parse(y)) {
        (Some(a), Some(b)) => a == b,
        _ => x.as_f64() == y.as_f64(),
    }
}

/// Formats a `double precision` the way PostgreSQL 12+ prints it with its
/// default `extra_float_digits = 1`: the shortest text that reads back exactly.
pub fn format_f64(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else {
        f.to_string()
    }
}

/// Formats a `real` as the shortest text that reads back to the same `f32`.
pub fn format_f32(f: f32) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else {
        f.to_string()
    }
}

/// Formats an instant as RFC 3339 in UTC with a `Z`, with as many fractional
/// digits as needed (none, 3 or 6).
pub fn format_timestamptz(micros: Micros) -> String {
    match micros {
        i64::MIN => "-infinity".to_owned(),
        i64::MAX => "infinity".to_owned(),
        m => match DateTime::<Utc>::from_timestamp_micros(m) {
            Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            None => m.to_string(),
        },
    }
}

/// Formats a wall-clock timestamp as ISO 8601 without an offset.
pub fn format_timestamp(micros: Micros) -> String {
    match micros {
        i64::MIN => "-infinity".to_owned(),
        i64::MAX => "infinity".to_owned(),
        m => match DateTime::<Utc>::from_timestamp_micros(m) {
            Some(t) => {
                let s = t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
                s.trim_end_matches('Z').to_owned()
            }
            None => m.to_string(),
        },
    }
}

/// Formats a date as `YYYY-MM-DD`.
pub fn format_date(days: Days) -> String {
    match days {
        i32::MIN => "-infinity".to_owned(),
        i32::MAX => "infinity".to_owned(),
        d => match NaiveDate::from_num_days_from_ce_opt(d.saturating_add(UNIX_EPOCH_DAYS_FROM_CE)) {
            Some(date) => date.format("%Y-%m-%d").to_string(),
            None => d.to_string(),
        },
    }
}

/// Days from 0001-01-01 (chrono's day 1) to 1970-01-01.
pub(crate) const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn text_compares_bytewise_like_collate_c() {
        let upper = Value::Text("Zeta".into());
        let lower = Value::Text("alpha".into());
        assert_eq!(upper.sql_cmp(&lower), Some(Ordering::Less));
        let accented = Value::Text("é".into());
        let plain = Value::Text("z".into());
        assert_eq!(accented.sql_cmp(&plain), Some(Ordering::Greater));
    }

    #[test]
    fn null_compares_as_unknown() {
        assert_eq!(Value::Null.sql_eq(&Value::Null), None);
        assert_eq!(Value::Int(1).sql_cmp(&Value::Null), None);
    }

    #[test]
    fn nan_sorts_above_infinity() {
        let nan = Value::Double(f64::NAN);
        let inf = Value::Double(f64::INFINITY);
        assert_eq!(nan.sql_cmp(&inf), Some(Ordering::Greater));
        assert_eq!(nan.sql_eq(&Value::Double(f64::NAN)), Some(true));
        assert_eq!(Value::Double(-0.0).sql_eq(&Value::Double(0.0)), Some(true));
    }

    #[test]
    fn numeric_equality_ignores_trailing_zeros() {
        let a = Value::Numeric(Numeric::Finite(BigDecimal::from_str("1.50").unwrap()));
        let b = Value::Numeric(Numeric::Finite(BigDecimal::from_str("1.5").unwrap()));
        assert_eq!(a.sql_eq(&b), Some(true));
        assert_eq!(a.to_json(), serde_json::json!("1.50"));
    }

    #[test]
    fn numeric_nan_sorts_last() {
        let nan = Numeric::NaN;
        let big = Numeric::Finite(BigDecimal::from_str("1e100").unwrap());
        assert_eq!(nan.cmp(&Numeric::Infinity), Ordering::Greater);
        assert_eq!(big.cmp(&Numeric::Infinity), Ordering::Less);
    }

    #[test]
    fn json_equality_is_jsonb_equality() {
        let a = serde_json::json!({"a": 1, "b": [1.0, "x"]});
        let b = serde_json::json!({"b": [1, "x"], "a": 1.0});
        assert!(json_eq(&a, &b));
        assert!(!json_eq(&serde_json::json!([1, 2]), &serde_json::json!([2, 1])));
    }

    #[test]
    fn timestamps_print_in_utc_with_z() {
        assert_eq!(format_timestamptz(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_timestamptz(1_500_000), "1970-01-01T00:00:01.500Z");
        assert_eq!(format_timestamptz(1), "1970-01-01T00:00:00.000001Z");
        assert_eq!(format_timestamptz(i64::MAX), "infinity");
    }

    #[test]
    fn real_prints_shortest_single_precision() {
        assert_eq!(Value::Real(0.1).to_json(), serde_json::json!(0.1));
        assert_eq!(Value::Real(0.1).to_pg_text().unwrap(), "0.1");
    }

    #[test]
    fn date_prints_iso() {
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_date(20_362), "2025-10-01");
    }
}
