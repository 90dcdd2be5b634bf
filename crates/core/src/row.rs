//! Records as rows of typed values, and their JSON forms.
//!
//! A [`Row`] holds one value per column of its table, in column order. The
//! stored form (`decode_stored`/`encode_stored`) is what overlays keep in
//! Redis; it is the API's JSON form, read back through the column types.

use serde_json::{Map, Value as Json};

use crate::schema::Table;
use crate::types::{ColumnType, TypeError};
use crate::value::Value;

/// One record: a value per column of its table, in column order.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    pub fn get(&self, column: usize) -> &Value {
        &self.0[column]
    }

    /// The primary-key value as text, the name of the record's overlay.
    pub fn key(&self, table: &Table) -> Option<String> {
        table.primary_key.map(|pk| self.0[pk].key_text())
    }

    /// The record as a JSON object keyed by column name, in column order.
    pub fn to_json(&self, table: &Table) -> Map<String, Json> {
        table.columns.iter().zip(&self.0).map(|(c, v)| (c.name.clone(), v.to_json())).collect()
    }

    /// Reads a row from its stored JSON object; every column must be present.
    pub fn from_stored(table: &Table, object: &Map<String, Json>) -> Result<Row, TypeError> {
        let mut values = Vec::with_capacity(table.columns.len());
        for column in &table.columns {
            let json = object.get(&column.name).unwrap_or(&Json::Null);
            values.push(decode_stored(&column.ty, json).map_err(|e| TypeError(format!("{}: {e}", column.name)))?);
        }
        Ok(Row(values))
    }
}

/// A set of column changes, in the order the client sent them.
pub type Patch = Vec<(usize, Value)>;

/// Writes a patch as a JSON object keyed by column name.
pub fn patch_to_json(table: &Table, patch: &Patch) -> Map<String, Json> {
    patch.iter().map(|(i, v)| (table.columns[*i].name.clone(), v.to_json())).collect()
}

/// Reads a patch from its stored JSON object. Columns the table no longer
/// has are reported as errors rather than dropped.
pub fn patch_from_stored(table: &Table, object: &Map<String, Json>) -> Result<Patch, TypeError> {
    let mut patch = Vec::with_capacity(object.len());
    for (name, json) in object {
        let position = table
            .column_position(name)
            .ok_or_else(|| TypeError(format!("column {name} no longer exists in table {}", table.name)))?;
        let value = decode_stored(&table.columns[position].ty, json).map_err(|e| TypeError(format!("{name}: {e}")))?;
        patch.push((position, value));
    }
    Ok(patch)
}

/// Reads a value written by [`Value::to_json`]. Strings of non-text types go
/// through the text parser so stored `"NaN"` or `"infinity"` read back.
pub fn decode_stored(ty: &ColumnType, json: &Json) -> Result<Value, TypeError> {
    match json {
        Json::String(s) if !ty.is_text() && !ty.is_json() => base_type(ty).parse_text(s),
        _ if ty.is_json() => Ok(if json.is_null() { Value::Null } else { Value::Json(json.clone()) }),
        _ => base_type(ty).coerce_json(json),
    }
}

/// The type without length, precision or scale limits: the type of a
/// literal compared with the column, and of stored values already checked.
pub fn base_type(ty: &ColumnType) -> ColumnType {
    match ty {
        ColumnType::Numeric { .. } => ColumnType::Numeric { precision: None, scale: None },
        ColumnType::Varchar { .. } => ColumnType::Varchar { max_chars: None },
        other => other.clone(),
    }
}

/// The SQL type literals of this column type are cast to in conditions.
/// Length and precision limits are left out because PostgreSQL compares a
/// column with an unconstrained literal, never a truncated one.
pub fn base_sql_type(ty: &ColumnType) -> &'static str {
    match ty {
        ColumnType::Bool => "boolean",
        ColumnType::Int2 => "smallint",
        ColumnType::Int4 => "integer",
        ColumnType::Int8 => "bigint",
        ColumnType::Real => "real",
        ColumnType::Double => "double precision",
        ColumnType::Numeric { .. } => "numeric",
        ColumnType::Text | ColumnType::Varchar { .. } => "text",
        ColumnType::Uuid => "uuid",
        ColumnType::Timestamptz => "timestamptz",
        ColumnType::Timestamp => "timestamp",
        ColumnType::Date => "date",
        ColumnType::Json | ColumnType::Jsonb => "jsonb",
        ColumnType::Unsupported { .. } => "text",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Numeric;
    use serde_json::json;

    #[test]
    fn stored_values_round_trip() {
        let cases = [
            (ColumnType::Double, Value::Double(f64::NAN)),
            (ColumnType::Timestamptz, Value::Timestamptz(1_700_000_000_123_456)),
            (ColumnType::Timestamptz, Value::Timestamptz(i64::MAX)),
            (ColumnType::Numeric { precision: Some(4), scale: Some(2) }, Value::Numeric(Numeric::NaN)),
            (ColumnType::Text, Value::Text("NaN".into())),
            (ColumnType::Jsonb, Value::Json(json!("a string"))),
            (ColumnType::Real, Value::Real(0.3)),
            (ColumnType::Date, Value::Date(-1)),
        ];
        for (ty, value) in cases {
            let back = decode_stored(&ty, &value.to_json()).unwrap();
            match (&value, &back) {
                (Value::Double(a), Value::Double(b)) if a.is_nan() => assert!(b.is_nan()),
                _ => assert_eq!(back, value, "{ty:?}"),
            }
        }
    }
}
