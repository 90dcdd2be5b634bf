//! Column types and the coercion of client input into typed values.
//!
//! Every value that enters the buffer or a query condition passes through
//! [`ColumnType::coerce_json`] or [`ColumnType::parse_text`], which apply the
//! same checks and rounding PostgreSQL's input functions apply, so the
//! buffered copy of a record equals what main stores.

use std::str::FromStr;

use bigdecimal::{BigDecimal, RoundingMode};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime};
use serde_json::Value as Json;
use uuid::Uuid;

use crate::value::{Days, Micros, Numeric, UNIX_EPOCH_DAYS_FROM_CE, Value};

/// The PostgreSQL type of a column, as far as opsbuffer interprets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    Bool,
    Int2,
    Int4,
    Int8,
    Real,
    Double,
    /// `numeric(precision, scale)`; both absent for an unconstrained numeric.
    Numeric {
        precision: Option<u32>,
        scale: Option<u32>,
    },
    Text,
    /// `varchar(n)`; `None` for a varchar without a length limit.
    Varchar {
        max_chars: Option<u32>,
    },
    Uuid,
    Timestamptz,
    Timestamp,
    Date,
    Json,
    Jsonb,
    /// Any other type. Its values are read as text; it can be neither
    /// filtered, sorted nor written through the buffer.
    Unsupported {
        name: String,
    },
}

/// Why a value does not fit its column type. The message completes the
/// sentence "`<field>`: ..." and says what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TypeError(pub String);

fn type_error(message: impl Into<String>) -> TypeError {
    TypeError(message.into())
}

impl ColumnType {
    /// Maps a catalog type name (`pg_type.typname`) and `atttypmod` to a type.
    pub fn from_pg(typname: &str, typmod: i32) -> ColumnType {
        match typname {
            "bool" => ColumnType::Bool,
            "int2" => ColumnType::Int2,
            "int4" => ColumnType::Int4,
            "int8" => ColumnType::Int8,
            "float4" => ColumnType::Real,
            "float8" => ColumnType::Double,
            "numeric" => {
                if typmod >= 4 {
                    let m = (typmod - 4) as u32;
                    ColumnType::Numeric { precision: Some((m >> 16) & 0xffff), scale: Some(m & 0xffff) }
                } else {
                    ColumnType::Numeric { precision: None, scale: None }
                }
            }
            "text" => ColumnType::Text,
            "varchar" => ColumnType::Varchar { max_chars: (typmod >= 4).then(|| (typmod - 4) as u32) },
            "uuid" => ColumnType::Uuid,
            "timestamptz" => ColumnType::Timestamptz,
            "timestamp" => ColumnType::Timestamp,
            "date" => ColumnType::Date,
            "json" => ColumnType::Json,
            "jsonb" => ColumnType::Jsonb,
            other => ColumnType::Unsupported { name: other.to_owned() },
        }
    }

    /// The name used in messages, e.g. "timestamptz".
    pub fn display_name(&self) -> String {
        match self {
            ColumnType::Bool => "boolean".into(),
            ColumnType::Int2 => "smallint".into(),
            ColumnType::Int4 => "integer".into(),
            ColumnType::Int8 => "bigint".into(),
            ColumnType::Real => "real".into(),
            ColumnType::Double => "double precision".into(),
            ColumnType::Numeric { precision: Some(p), scale: Some(s) } => format!("numeric({p},{s})"),
            ColumnType::Numeric { .. } => "numeric".into(),
            ColumnType::Text => "text".into(),
            ColumnType::Varchar { max_chars: Some(n) } => format!("varchar({n})"),
            ColumnType::Varchar { max_chars: None } => "varchar".into(),
            ColumnType::Uuid => "uuid".into(),
            ColumnType::Timestamptz => "timestamptz".into(),
            ColumnType::Timestamp => "timestamp".into(),
            ColumnType::Date => "date".into(),
            ColumnType::Json => "json".into(),
            ColumnType::Jsonb => "jsonb".into(),
            ColumnType::Unsupported { name } => name.clone(),
        }
    }

    /// A short description of the accepted input, for error messages.
    pub fn expected_format(&self) -> &'static str {
        match self {
            ColumnType::Bool => "true or false",
            ColumnType::Int2 => "an integer from -32768 to 32767",
            ColumnType::Int4 => "an integer from -2147483648 to 2147483647",
            ColumnType::Int8 => "an integer from -9223372036854775808 to 9223372036854775807",
            ColumnType::Real | ColumnType::Double => "a finite number such as 12.5",
            ColumnType::Numeric { .. } => "a decimal number such as 12.50, as a JSON number or string",
            ColumnType::Text | ColumnType::Varchar { .. } => "a string",
            ColumnType::Uuid => "a UUID such as 0192f3a4-5b6c-7d8e-9f01-23456789abcd",
            ColumnType::Timestamptz => "an RFC 3339 time with an offset, such as 2026-10-01T10:40:00Z",
            ColumnType::Timestamp => "an ISO 8601 time such as 2026-10-01T10:40:00",
            ColumnType::Date => "a date such as 2026-10-01",
            ColumnType::Json | ColumnType::Jsonb => "any JSON value",
            ColumnType::Unsupported { .. } => "nothing: this column type is read-only through opsbuffer",
        }
    }

    pub fn is_text(&self) -> bool {
        matches!(self, ColumnType::Text | ColumnType::Varchar { .. })
    }

    pub fn is_json(&self) -> bool {
        matches!(self, ColumnType::Json | ColumnType::Jsonb)
    }

    /// Whether values of this type have an order (`lt`, `gt`, `order=`).
    pub fn is_orderable(&self) -> bool {
        !self.is_json() && !matches!(self, ColumnType::Unsupported { .. })
    }

    /// Whether opsbuffer can parse and compare values of this type.
    pub fn is_supported(&self) -> bool {
        !matches!(self, ColumnType::Unsupported { .. })
    }

    /// Coerces a value from a JSON request body. JSON `null` is SQL NULL.
    pub fn coerce_json(&self, input: &Json) -> Result<Value, TypeError> {
        if input.is_null() {
            return Ok(Value::Null);
        }
        match self {
            ColumnType::Bool => match input {
                Json::Bool(b) => Ok(Value::Bool(*b)),
                _ => Err(self.mismatch(input)),
            },
            ColumnType::Int2 | ColumnType::Int4 | ColumnType::Int8 => match input {
                Json::Number(n) => match n.as_i64() {
                    Some(i) => self.check_int_range(i),
                    None => Err(self.mismatch(input)),
                },
                Json::String(s) => self.parse_text(s),
                _ => Err(self.mismatch(input)),
            },
            ColumnType::Real | ColumnType::Double => match input {
                Json::Number(n) => {
                    let text = n.to_string();
                    self.parse_float(&text, true)
                }
                _ => Err(self.mismatch(input)),
            },
            ColumnType::Numeric { .. } => match input {
                Json::Number(n) => self.parse_numeric(&n.to_string(), true),
                Json::String(s) => self.parse_numeric(s.trim(), true),
                _ => Err(self.mismatch(input)),
            },
            ColumnType::Text | ColumnType::Varchar { .. } => match input {
                Json::String(s) => self.parse_text(s),
                _ => Err(self.mismatch(input)),
            },
            ColumnType::Uuid | ColumnType::Timestamptz | ColumnType::Timestamp | ColumnType::Date => match input {
                Json::String(s) => self.parse_text(s),
                _ => Err(self.mismatch(input)),
            },
            ColumnType::Json | ColumnType::Jsonb => {
                check_json_text(input)?;
                Ok(Value::Json(input.clone()))
            }
            ColumnType::Unsupported { name } => Err(type_error(format!(
                "columns of type {name} cannot be written through opsbuffer; write them on main directly"
            ))),
        }
    }

    /// Parses a value from its text form: a query-string literal or
    /// PostgreSQL's output (with `DateStyle=ISO` and `TimeZone=UTC`).
    pub fn parse_text(&self, text: &str) -> Result<Value, TypeError> {
        match self {
            ColumnType::Bool => parse_bool(text).map(Value::Bool).ok_or_else(|| self.invalid(text)),
            ColumnType::Int2 | ColumnType::Int4 | ColumnType::Int8 => {
                let i = text.trim().parse::<i64>().map_err(|_| self.invalid(text))?;
                self.check_int_range(i)
            }
            ColumnType::Real | ColumnType::Double => self.parse_float(text.trim(), false),
            ColumnType::Numeric { .. } => self.parse_numeric(text.trim(), false),
            ColumnType::Text => {
                check_no_nul(text)?;
                Ok(Value::Text(text.to_owned()))
            }
            ColumnType::Varchar { max_chars } => {
                check_no_nul(text)?;
                if let Some(max) = max_chars {
                    let count = text.chars().count();
                    if count > *max as usize {
                        return Err(type_error(format!(
                            "value is {count} characters long but the column allows at most {max}"
                        )));
                    }
                }
                Ok(Value::Text(text.to_owned()))
            }
            ColumnType::Uuid => Uuid::parse_str(text.trim()).map(Value::Uuid).map_err(|_| self.invalid(text)),
            ColumnType::Timestamptz => {
                parse_timestamp(text, true).map(Value::Timestamptz).map_err(|e| self.invalid_because(text, &e))
            }
            ColumnType::Timestamp => {
                parse_timestamp(text, false).map(Value::Timestamp).map_err(|e| self.invalid_because(text, &e))
            }
            ColumnType::Date => parse_date(text).map(Value::Date).ok_or_else(|| self.invalid(text)),
            ColumnType::Json | ColumnType::Jsonb => {
                let json: Json = serde_json::from_str(text).map_err(|_| self.invalid(text))?;
                check_json_text(&json)?;
                Ok(Value::Json(json))
            }
            ColumnType::Unsupported { .. } => Ok(Value::Text(text.to_owned())),
        }
    }

    fn check_int_range(&self, i: i64) -> Result<Value, TypeError> {
        let (lo, hi) = match self {
            ColumnType::Int2 => (i64::from(i16::MIN), i64::from(i16::MAX)),
            ColumnType::Int4 => (i64::from(i32::MIN), i64::from(i32::MAX)),
            _ => (i64::MIN, i64::MAX),
        };
        if i < lo || i > hi {
            return Err(type_error(format!("{i} is out of range: expected {}", self.expected_format())));
        }
        Ok(Value::Int(i))
    }

    fn parse_float(&self, text: &str, finite_only: bool) -> Result<Value, TypeError> {
        let special = match text.to_ascii_lowercase().as_str() {
            "nan" => Some(f64::NAN),
            "infinity" | "+infinity" | "inf" | "+inf" => Some(f64::INFINITY),
            "-infinity" | "-inf" => Some(f64::NEG_INFINITY),
            _ => None,
        };
        if let Some(f) = special {
            if finite_only {
                return Err(type_error(format!("{text} is not allowed: expected {}", self.expected_format())));
            }
            return Ok(match self {
                ColumnType::Real => Value::Real(f as f32),
                _ => Value::Double(f),
            });
        }
        match self {
            ColumnType::Real => {
                let f = text.parse::<f32>().map_err(|_| self.invalid(text))?;
                if f.is_infinite() {
                    return Err(type_error(format!("{text} is out of range for type real")));
                }
                Ok(Value::Real(f))
            }
            _ => {
                let f = text.parse::<f64>().map_err(|_| self.invalid(text))?;
                if f.is_infinite() {
                    return Err(type_error(format!("{text} is out of range for type double precision")));
                }
                Ok(Value::Double(f))
            }
        }
    }

    fn parse_numeric(&self, text: &str, finite_only: bool) -> Result<Value, TypeError> {
        let special = match text.to_ascii_lowercase().as_str() {
            "nan" => Some(Numeric::NaN),
            "infinity" | "+infinity" | "inf" | "+inf" => Some(Numeric::Infinity),
            "-infinity" | "-inf" => Some(Numeric::NegInfinity),
            _ => None,
        };
        if let Some(n) = special {
            if finite_only {
                return Err(type_error(format!("{text} is not allowed: expected {}", self.expected_format())));
            }
            return Ok(Value::Numeric(n));
        }
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) {
            return Err(self.invalid(text));
        }
        let mut d = BigDecimal::from_str(text).map_err(|_| self.invalid(text))?;
        // PostgreSQL never keeps a negative display scale: 1e5 is 100000.
        if d.fractional_digit_count() < 0 {
            d = d.with_scale(0);
        }
        if let ColumnType::Numeric { precision: Some(p), scale: Some(s) } = self {
            d = d.with_scale_round(i64::from(*s), RoundingMode::HalfUp);
            let (digits, scale) = d.as_bigint_and_exponent();
            let total_digits = if digits == 0.into() { 0 } else { digits.magnitude().to_string().len() as i64 };
            let integer_digits = (total_digits - scale).max(0);
            if integer_digits > i64::from(*p) - i64::from(*s) {
                return Err(type_error(format!(
                    "{text} does not fit numeric({p},{s}): at most {} digits before the decimal point",
                    p - s
                )));
            }
        }
        Ok(Value::Numeric(Numeric::Finite(d)))
    }

    fn mismatch(&self, input: &Json) -> TypeError {
        let got = match input {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        };
        let detail = match input {
            Json::Number(n) if matches!(self, ColumnType::Int2 | ColumnType::Int4 | ColumnType::Int8) => {
                format!("{n} is not {}", self.expected_format())
            }
            _ => format!("got {got}, expected {}", self.expected_format()),
        };
        type_error(format!("invalid {} value: {detail}", self.display_name()))
    }

    fn invalid(&self, text: &str) -> TypeError {
        type_error(format!(
            "invalid {} value {:?}: expected {}",
            self.display_name(),
            truncate_for_message(text),
            self.expected_format()
        ))
    }

    fn invalid_because(&self, text: &str, reason: &str) -> TypeError {
        type_error(format!(
            "invalid {} value {:?}: {reason}; expected {}",
            self.display_name(),
            truncate_for_message(text),
            self.expected_format()
        ))
    }
}

fn truncate_for_message(text: &str) -> String {
    const MAX: usize = 80;
    if text.chars().count() <= MAX {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

/// PostgreSQL rejects the NUL character in text values.
fn check_no_nul(text: &str) -> Result<(), TypeError> {
    if text.contains('\0') {
        return Err(type_error("text must not contain the NUL character (\\u0000)"));
    }
    Ok(())
}

/// PostgreSQL's `jsonb` rejects `\u0000` inside strings and keys.
fn check_json_text(json: &Json) -> Result<(), TypeError> {
    let bad = |s: &str| s.contains('\0');
    match json {
        Json::String(s) if bad(s) => Err(type_error("JSON strings must not contain \\u0000")),
        Json::Array(items) => items.iter().try_for_each(check_json_text),
        Json::Object(map) => {
            for (k, v) in map {
                if bad(k) {
                    return Err(type_error("JSON keys must not contain \\u0000"));
                }
                check_json_text(v)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Accepts PostgreSQL's boolean literals, case-insensitively.
fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "yes" | "y" | "on" | "1" => Some(true),
        "f" | "false" | "no" | "n" | "off" | "0" => Some(false),
        _ => None,
    }
}

fn parse_date(text: &str) -> Option<Days> {
    let t = text.trim();
    match t.to_ascii_lowercase().as_str() {
        "infinity" | "+infinity" => return Some(i32::MAX),
        "-infinity" => return Some(i32::MIN),
        _ => {}
    }
    let date = NaiveDate::parse_from_str(t, "%Y-%m-%d").ok()?;
    (1..=9999).contains(&date.year()).then(|| date_to_days(date))
}

pub(crate) fn date_to_days(date: NaiveDate) -> Days {
    date.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE
}

use chrono::Datelike;

/// Parses `YYYY-MM-DD[T| ]HH:MM[:SS[.fraction]][Z|±HH[:MM[:SS]]]`, the forms of
/// RFC 3339 and of PostgreSQL's ISO output, into microseconds. Fractions
/// beyond microseconds are rounded half to even, as PostgreSQL does.
///
/// With `with_zone`, an offset is required and the result is the instant in
/// UTC. Without it (`timestamp without time zone`) an offset is ignored, the
/// way PostgreSQL ignores it for that type.
pub fn parse_timestamp(text: &str, with_zone: bool) -> Result<Micros, String> {
    let t = text.trim();
    match t.to_ascii_lowercase().as_str() {
        "infinity" | "+infinity" => return Ok(i64::MAX),
        "-infinity" => return Ok(i64::MIN),
        _ => {}
    }
    let bytes = t.as_bytes();
    if bytes.len() < 16 || bytes[4] != b'-' || bytes[7] != b'-' || !matches!(bytes[10], b'T' | b't' | b' ') {
        return Err("not in the form YYYY-MM-DDTHH:MM:SS".into());
    }
    let date = NaiveDate::parse_from_str(&t[..10], "%Y-%m-%d").map_err(|_| "the date is not valid".to_owned())?;
    let rest = &t[11..];

    // The time runs up to the first offset character.
    let zone_start = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
    let (time_text, zone_text) = rest.split_at(zone_start);
    let time_text = time_text.trim_end();
    let (hms, fraction) = match time_text.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (time_text, None),
    };
    let mut parts = hms.split(':');
    let hour: u32 = parse_component(parts.next(), "hour")?;
    let minute: u32 = parse_component(parts.next(), "minute")?;
    let second: u32 = match parts.next() {
        Some(s) => parse_component(Some(s), "second")?,
        None => 0,
    };
    if parts.next().is_some() {
        return Err("the time has too many components".into());
    }
    let time = NaiveTime::from_hms_opt(hour, minute, second).ok_or("the time of day is not valid")?;

    let mut micros = NaiveDateTime::new(date, time).and_utc().timestamp_micros();
    if let Some(f) = fraction {
        micros = micros.checked_add(round_fraction_to_micros(f)?).ok_or("the time is out of range")?;
    }

    let zone_text = zone_text.trim();
    if zone_text.is_empty() {
        if with_zone {
            return Err("the time has no UTC offset; add Z or +HH:MM".into());
        }
        return in_supported_years(micros);
    }
    let offset_seconds = parse_offset(zone_text)?;
    if !with_zone {
        return in_supported_years(micros);
    }
    let utc = micros.checked_sub(offset_seconds * 1_000_000).ok_or("the time is out of range")?;
    in_supported_years(utc)
}

/// Keeps a time whose year, in UTC for `timestamptz`, is from 1 to 9999.
/// PostgreSQL has no year 0 and writes later years with more digits, which
/// RFC 3339 cannot carry.
fn in_supported_years(micros: Micros) -> Result<Micros, String> {
    match DateTime::from_timestamp_micros(micros) {
        Some(t) if (1..=9999).contains(&t.year()) => Ok(micros),
        _ => Err("the time is outside the years 0001 to 9999 (in UTC for times with an offset)".into()),
    }
}

fn parse_component(text: Option<&str>, name: &str) -> Result<u32, String> {
    let text = text.ok_or_else(|| format!("the {name} is missing"))?;
    if text.len() != 2 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("the {name} must have two digits"));
    }
    text.parse().map_err(|_| format!("the {name} is not a number"))
}

/// Rounds a fraction of a second given as decimal digits to microseconds,
/// half to even.
fn round_fraction_to_micros(digits: &str) -> Result<i64, String> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the fraction of a second must be digits".into());
    }
    let mut padded: Vec<u8> = digits.bytes().map(|b| b - b'0').collect();
    while padded.len() < 7 {
        padded.push(0);
    }
    let mut micros: i64 = padded[..6].iter().fold(0, |acc, d| acc * 10 + i64::from(*d));
    let next = padded[6];
    let rest_nonzero = padded[7..].iter().any(|d| *d != 0);
    let round_up = next > 5 || (next == 5 && (rest_nonzero || micros % 2 == 1));
    if round_up {
        micros += 1;
    }
    Ok(micros)
}

/// Parses `Z`, `+HH`, `+HH:MM`, `+HHMM` or `+HH:MM:SS` into seconds east of UTC.
fn parse_offset(text: &str) -> Result<i64, String> {
    if text.eq_ignore_ascii_case("z") {
        return Ok(0);
    }
    let sign = match text.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return Err(format!("the UTC offset {text:?} is not valid")),
    };
    let body: String = text[1..].chars().filter(|c| *c != ':').collect();
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) || !matches!(body.len(), 2 | 4 | 6) {
        return Err(format!("the UTC offset {text:?} is not valid"));
    }
    let hours: i64 = body[0..2].parse().unwrap_or(99);
    let minutes: i64 = if body.len() >= 4 { body[2..4].parse().unwrap_or(99) } else { 0 };
    let seconds: i64 = if body.len() == 6 { body[4..6].parse().unwrap_or(99) } else { 0 };
    if hours > 15 || minutes > 59 || seconds > 59 {
        return Err(format!("the UTC offset {text:?} is out of range"));
    }
    Ok(sign * (hours * 3600 + minutes * 60 + seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(text: &str) -> Micros {
        parse_timestamp(text, true).unwrap()
    }

    #[test]
    fn timestamptz_offsets_are_the_same_instant() {
        assert_eq!(ts("2026-10-01T10:40:00Z"), ts("2026-10-01T12:40:00+02:00"));
        assert_eq!(ts("2026-10-01 10:40:00+00"), ts("2026-10-01T07:40:00-03"));
        assert_eq!(ts("2026-10-01T10:40:00+0000"), ts("2026-10-01T10:40:00z"));
    }

    #[test]
    fn timestamptz_requires_offset() {
        let err = parse_timestamp("2026-10-01T10:40:00", true).unwrap_err();
        assert!(err.contains("UTC offset"), "{err}");
    }

    #[test]
    fn timestamp_without_zone_ignores_offset() {
        let a = parse_timestamp("2026-10-01T10:40:00+05:00", false).unwrap();
        let b = parse_timestamp("2026-10-01T10:40:00", false).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn timestamp_fraction_rounds_half_even() {
        let base = ts("2026-10-01T10:40:00Z");
        assert_eq!(ts("2026-10-01T10:40:00.0000005Z") - base, 0);
        assert_eq!(ts("2026-10-01T10:40:00.0000015Z") - base, 2);
        assert_eq!(ts("2026-10-01T10:40:00.00000051Z") - base, 1);
        assert_eq!(ts("2026-10-01T10:40:00.123456789Z") - base, 123_457);
        assert_eq!(ts("2026-10-01T10:40:00.9999995Z") - base, 1_000_000);
    }

    #[test]
    fn timestamp_rejects_bad_input() {
        for bad in ["2026-13-01T00:00:00Z", "2026-10-01", "yesterday", "2026-10-01T25:00:00Z", "2026-10-01T10:40:00+16"]
        {
            assert!(parse_timestamp(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamp_years_stay_within_1_to_9999() {
        for bad in [
            "9999-12-31T20:00:00-10:00",
            "9999-12-31T23:59:59.9999995Z",
            "0000-01-01T00:00:00Z",
            "0001-01-01T00:00:00+14:00",
        ] {
            let error = parse_timestamp(bad, true).unwrap_err();
            assert!(error.contains("0001 to 9999"), "{bad}: {error}");
        }
        assert!(parse_timestamp("9999-12-31T23:59:59.999999Z", true).is_ok());
        assert!(parse_timestamp("0001-01-01T00:00:00Z", true).is_ok());
        assert!(parse_timestamp("9999-12-31T23:59:59+05:00", false).is_ok(), "no offset applied without a zone");
        assert!(parse_timestamp("infinity", true).is_ok());
        assert!(ColumnType::Date.parse_text("0000-01-01").is_err());
        assert!(ColumnType::Date.parse_text("9999-12-31").is_ok());
    }

    #[test]
    fn int4_range_is_checked() {
        assert_eq!(ColumnType::Int4.coerce_json(&json!(2147483647)).unwrap(), Value::Int(2147483647));
        assert!(ColumnType::Int4.coerce_json(&json!(2147483648i64)).is_err());
        assert!(ColumnType::Int2.parse_text("40000").is_err());
        assert!(ColumnType::Int8.coerce_json(&json!(1.5)).is_err());
        assert_eq!(ColumnType::Int8.coerce_json(&json!("42")).unwrap(), Value::Int(42));
    }

    #[test]
    fn numeric_rounds_half_away_from_zero_to_scale() {
        let t = ColumnType::Numeric { precision: Some(5), scale: Some(2) };
        assert_eq!(t.coerce_json(&json!("1.005")).unwrap().to_json(), json!("1.01"));
        assert_eq!(t.coerce_json(&json!("-1.005")).unwrap().to_json(), json!("-1.01"));
        assert_eq!(t.coerce_json(&json!(2)).unwrap().to_json(), json!("2.00"));
        assert!(t.coerce_json(&json!("1000")).is_err());
        assert_eq!(t.coerce_json(&json!("999.994")).unwrap().to_json(), json!("999.99"));
        assert!(t.coerce_json(&json!("999.995")).is_err());
    }

    #[test]
    fn unconstrained_numeric_keeps_scale() {
        let t = ColumnType::Numeric { precision: None, scale: None };
        assert_eq!(t.coerce_json(&json!("1.500")).unwrap().to_json(), json!("1.500"));
        assert_eq!(t.coerce_json(&json!("1e3")).unwrap().to_json(), json!("1000"));
        assert!(t.coerce_json(&json!("NaN")).is_err());
        assert!(t.parse_text("NaN").is_ok());
        assert!(t.coerce_json(&json!("12abc")).is_err());
    }

    #[test]
    fn varchar_counts_characters() {
        let t = ColumnType::Varchar { max_chars: Some(3) };
        assert!(t.coerce_json(&json!("äöü")).is_ok());
        assert!(t.coerce_json(&json!("abcd")).is_err());
    }

    #[test]
    fn text_rejects_nul_and_non_strings() {
        assert!(ColumnType::Text.coerce_json(&json!("a\u{0}b")).is_err());
        assert!(ColumnType::Text.coerce_json(&json!(5)).is_err());
    }

    #[test]
    fn float_rejects_non_finite_input_but_reads_it_from_postgres() {
        assert!(ColumnType::Double.coerce_json(&json!("NaN")).is_err());
        assert!(matches!(ColumnType::Double.parse_text("NaN").unwrap(), Value::Double(f) if f.is_nan()));
        assert_eq!(ColumnType::Double.parse_text("-Infinity").unwrap(), Value::Double(f64::NEG_INFINITY));
        assert!(ColumnType::Double.parse_text("1e400").is_err());
    }

    #[test]
    fn real_is_single_precision() {
        assert_eq!(ColumnType::Real.coerce_json(&json!(0.1)).unwrap(), Value::Real(0.1));
    }

    #[test]
    fn bool_accepts_postgres_literals() {
        for (text, expected) in [("t", true), ("TRUE", true), ("off", false), ("0", false)] {
            assert_eq!(ColumnType::Bool.parse_text(text).unwrap(), Value::Bool(expected));
        }
        assert!(ColumnType::Bool.coerce_json(&json!("true")).is_err());
    }

    #[test]
    fn uuid_accepts_common_forms() {
        let a = ColumnType::Uuid.parse_text("0192F3A4-5B6C-7D8E-9F01-23456789ABCD").unwrap();
        let b = ColumnType::Uuid.parse_text("0192f3a45b6c7d8e9f0123456789abcd").unwrap();
        assert_eq!(a, b);
        assert!(ColumnType::Uuid.parse_text("not-a-uuid").is_err());
    }

    #[test]
    fn json_rejects_nul() {
        assert!(ColumnType::Jsonb.coerce_json(&json!({"a": "x\u{0}"})).is_err());
        assert!(ColumnType::Jsonb.coerce_json(&json!({"a": [1, {"b": null}]})).is_ok());
    }

    #[test]
    fn date_parses_iso_and_infinity() {
        assert_eq!(ColumnType::Date.parse_text("1970-01-02").unwrap(), Value::Date(1));
        assert_eq!(ColumnType::Date.parse_text("infinity").unwrap(), Value::Date(i32::MAX));
        assert!(ColumnType::Date.parse_text("2026-02-30").is_err());
    }

    #[test]
    fn catalog_typmods_decode() {
        assert_eq!(
            ColumnType::from_pg("numeric", ((10 << 16) | 3) + 4),
            ColumnType::Numeric { precision: Some(10), scale: Some(3) }
        );
        assert_eq!(ColumnType::from_pg("varchar", 68), ColumnType::Varchar { max_chars: Some(64) });
        assert_eq!(ColumnType::from_pg("varchar", -1), ColumnType::Varchar { max_chars: None });
    }
}
