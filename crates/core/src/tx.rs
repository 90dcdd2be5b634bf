//! Client transactions: parsing the request body, checking every value
//! against the registry and turning each step into overlay changes.
//!
//! Planning is pure: it needs the registry, the acknowledgement time and a
//! source of new ids. Checks that need data (existence, references,
//! uniqueness, `CHECK` constraints) happen afterwards in the engine.

use serde_json::{Map, Value as Json};
use uuid::Uuid;

use crate::overlay::Change;
use crate::row::{Patch, Row};
use crate::schema::{ColumnDefault, KeyGeneration, Registry, Table};
use crate::types::ColumnType;
use crate::value::{Micros, Value};
use std::sync::Arc;

/// Most rows one transaction may carry; larger bodies get a 413-style
/// rejection so one request cannot hold the drain for minutes.
pub const MAX_ROWS_PER_TRANSACTION: usize = 10_000;

/// How a rejected write is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The request is malformed or a value is invalid (400).
    Invalid,
    /// A record the request names does not exist (404).
    NotFound,
    /// The request conflicts with existing or pending data (409).
    Conflict,
    /// The request is valid JSON but breaks a constraint (422).
    Unprocessable,
    /// The request is too large (413).
    TooLarge,
}

/// A rejected write: nothing of it is queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct WriteError {
    pub rejection: Rejection,
    /// A snake_case code such as `unknown_column`.
    pub code: &'static str,
    /// The path of the offending field in the request body, if any.
    pub field: Option<String>,
    pub message: String,
}

impl WriteError {
    pub fn new(
        rejection: Rejection,
        code: &'static str,
        field: Option<String>,
        message: impl Into<String>,
    ) -> WriteError {
        WriteError { rejection, code, field, message: message.into() }
    }

    pub fn invalid(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> WriteError {
        WriteError::new(Rejection::Invalid, code, Some(field.into()), message)
    }
}

/// The operation of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOp {
    Create,
    Update,
    Delete,
    BulkCreate,
    BulkUpdate,
}

impl StepOp {
    pub fn as_str(self) -> &'static str {
        match self {
            StepOp::Create => "create",
            StepOp::Update => "update",
            StepOp::Delete => "delete",
            StepOp::BulkCreate => "bulk_create",
            StepOp::BulkUpdate => "bulk_update",
        }
    }
}

/// One record change of a planned step.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedChange {
    /// The primary-key value as text, the record's overlay name.
    pub key: String,
    pub primary_key: Value,
    pub change: Change,
    /// Where this change came from in the request, for messages.
    pub path: String,
    /// Whether opsbuffer generated the key (a fresh UUIDv7), so no other
    /// record can have it and nothing needs to be looked up.
    pub generated_key: bool,
}

/// One step, checked against its table.
#[derive(Debug, Clone)]
pub struct PlannedStep {
    pub op: StepOp,
    pub table: Arc<Table>,
    pub changes: Vec<PlannedChange>,
}

/// A whole transaction, checked value by value.
#[derive(Debug, Clone)]
pub struct Plan {
    pub steps: Vec<PlannedStep>,
}

impl Plan {
    /// The primary keys of every changed record in step order, as JSON.
    pub fn ids(&self) -> Vec<Json> {
        self.steps.iter().flat_map(|s| s.changes.iter().map(|c| c.primary_key.to_json())).collect()
    }

    pub fn change_count(&self) -> usize {
        self.steps.iter().map(|s| s.changes.len()).sum()
    }
}

/// What planning needs from outside: the acknowledgement time and new ids.
pub struct PlanContext<'a> {
    pub now: Micros,
    pub new_uuid: &'a mut dyn FnMut() -> Uuid,
}

/// Parses and plans a `POST /transactions` body:
/// `{"steps": [{"op": ..., "table": ..., ...}, ...]}`.
pub fn plan_transaction(registry: &Registry, body: &Json, ctx: &mut PlanContext<'_>) -> Result<Plan, WriteError> {
    let object = body
        .as_object()
        .ok_or_else(|| WriteError::invalid("invalid_body", "", "the body must be a JSON object with a steps list"))?;
    if let Some(extra) = object.keys().find(|k| *k != "steps") {
        return Err(WriteError::invalid(
            "unknown_field",
            extra.clone(),
            format!("unknown field {extra:?}; the body has only steps"),
        ));
    }
    let steps = match object.get("steps") {
        Some(Json::Array(steps)) => steps,
        Some(other) => {
            return Err(WriteError::invalid(
                "invalid_value",
                "steps",
                format!("steps must be a list of {{\"op\", \"table\", ...}} objects, not {other}"),
            ));
        }
        None => {
            return Err(WriteError::invalid(
                "missing_field",
                "steps",
                "steps is required: a list of {\"op\", \"table\", ...} objects",
            ));
        }
    };
    if steps.is_empty() {
        return Err(WriteError::invalid("invalid_value", "steps", "steps must contain at least one step"));
    }

    let mut planned = Vec::with_capacity(steps.len());
    for (i, step) in steps.iter().enumerate() {
        planned.push(plan_step(registry, step, &format!("steps[{i}]"), ctx)?);
    }
    let plan = Plan { steps: planned };
    check_size(&plan)?;
    Ok(plan)
}

fn check_size(plan: &Plan) -> Result<(), WriteError> {
    let count = plan.change_count();
    if count > MAX_ROWS_PER_TRANSACTION {
        return Err(WriteError::new(
            Rejection::TooLarge,
            "too_many_rows",
            None,
            format!(
                "the transaction changes {count} records; split it into transactions of at most {MAX_ROWS_PER_TRANSACTION}"
            ),
        ));
    }
    Ok(())
}

fn plan_step(
    registry: &Registry,
    step: &Json,
    path: &str,
    ctx: &mut PlanContext<'_>,
) -> Result<PlannedStep, WriteError> {
    let object = step.as_object().ok_or_else(|| {
        WriteError::invalid("invalid_value", path, format!("{path} must be an object with op and table"))
    })?;
    let op_text = object.get("op").and_then(Json::as_str).ok_or_else(|| {
        WriteError::invalid(
            "missing_field",
            format!("{path}.op"),
            format!("{path}.op is required: create, update, delete, bulk_create or bulk_update"),
        )
    })?;
    let op = match op_text {
        "create" => StepOp::Create,
        "update" => StepOp::Update,
        "delete" => StepOp::Delete,
        "bulk_create" => StepOp::BulkCreate,
        "bulk_update" => StepOp::BulkUpdate,
        other => {
            return Err(WriteError::invalid(
                "invalid_value",
                format!("{path}.op"),
                format!("unknown op {other:?}; use create, update, delete, bulk_create or bulk_update"),
            ));
        }
    };
    let allowed: &[&str] = match op {
        StepOp::Create => &["op", "table", "data"],
        StepOp::Update => &["op", "table", "id", "data"],
        StepOp::Delete => &["op", "table", "id"],
        StepOp::BulkCreate | StepOp::BulkUpdate => &["op", "table", "rows"],
    };
    if let Some(extra) = object.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(WriteError::invalid(
            "unknown_field",
            format!("{path}.{extra}"),
            format!("{op_text} steps do not take {extra:?}; allowed fields: {}", allowed.join(", ")),
        ));
    }
    let table = resolve_table(registry, object.get("table"), &format!("{path}.table"))?;

    let changes = match op {
        StepOp::Create => {
            let data = required_object(object.get("data"), &format!("{path}.data"))?;
            vec![plan_create(&table, data, &format!("{path}.data"), ctx)?]
        }
        StepOp::Update => {
            let id = object.get("id").ok_or_else(|| {
                WriteError::invalid("missing_field", format!("{path}.id"), format!("{path}.id is required"))
            })?;
            let data = required_object(object.get("data"), &format!("{path}.data"))?;
            vec![plan_update(&table, id, data, path, &format!("{path}.data"))?]
        }
        StepOp::Delete => {
            let id = object.get("id").ok_or_else(|| {
                WriteError::invalid("missing_field", format!("{path}.id"), format!("{path}.id is required"))
            })?;
            vec![plan_delete(&table, id, &format!("{path}.id"))?]
        }
        StepOp::BulkCreate => {
            let rows = required_rows(object.get("rows"), &format!("{path}.rows"))?;
            plan_bulk_create(&table, rows, &format!("{path}.rows"), ctx)?
        }
        StepOp::BulkUpdate => {
            let rows = required_rows(object.get("rows"), &format!("{path}.rows"))?;
            plan_bulk_update(&table, rows, &format!("{path}.rows"))?
        }
    };
    Ok(PlannedStep { op, table, changes })
}

/// Resolves a table by model or SQL name.
pub fn resolve_table(registry: &Registry, name: Option<&Json>, path: &str) -> Result<Arc<Table>, WriteError> {
    let name = name.and_then(Json::as_str).ok_or_else(|| {
        WriteError::invalid(
            "missing_field",
            path,
            format!("{path} is required: a table name such as executed_obs_unit"),
        )
    })?;
    registry.table(name).cloned().ok_or_else(|| {
        WriteError::new(
            Rejection::Invalid,
            "unknown_table",
            Some(path.to_owned()),
            format!("unknown table {name:?}; known tables: {}", registry.table_names()),
        )
    })
}

fn required_object<'j>(value: Option<&'j Json>, path: &str) -> Result<&'j Map<String, Json>, WriteError> {
    value.and_then(Json::as_object).ok_or_else(|| {
        WriteError::invalid("missing_field", path, format!("{path} is required: an object of column values"))
    })
}

fn required_rows<'j>(value: Option<&'j Json>, path: &str) -> Result<&'j Vec<Json>, WriteError> {
    let rows = value.and_then(Json::as_array).ok_or_else(|| {
        WriteError::invalid("missing_field", path, format!("{path} is required: a list of row objects"))
    })?;
    if rows.is_empty() {
        return Err(WriteError::invalid("invalid_value", path, format!("{path} must contain at least one row")));
    }
    if rows.len() > MAX_ROWS_PER_TRANSACTION {
        return Err(WriteError::new(
            Rejection::TooLarge,
            "too_many_rows",
            Some(path.to_owned()),
            format!("{path} has {} rows; send at most {MAX_ROWS_PER_TRANSACTION} per transaction", rows.len()),
        ));
    }
    Ok(rows)
}

/// Plans a bulk create of `rows` (each an object of column values).
pub fn plan_bulk_create(
    table: &Arc<Table>,
    rows: &[Json],
    path: &str,
    ctx: &mut PlanContext<'_>,
) -> Result<Vec<PlannedChange>, WriteError> {
    let mut changes = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let row_path = format!("{path}[{i}]");
        let data = row.as_object().ok_or_else(|| {
            WriteError::invalid(
                "invalid_value",
                row_path.clone(),
                format!("{row_path} must be an object of column values"),
            )
        })?;
        changes.push(plan_create(table, data, &row_path, ctx)?);
    }
    Ok(changes)
}

/// Plans a bulk update: each row names its record with the primary-key
/// column and carries the columns to change.
pub fn plan_bulk_update(table: &Arc<Table>, rows: &[Json], path: &str) -> Result<Vec<PlannedChange>, WriteError> {
    let pk = writable_key(table, path)?;
    let pk_name = table.columns[pk].name.clone();
    let mut changes = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let row_path = format!("{path}[{i}]");
        let data = row.as_object().ok_or_else(|| {
            WriteError::invalid(
                "invalid_value",
                row_path.clone(),
                format!("{row_path} must be an object with {pk_name} and the columns to change"),
            )
        })?;
        let id = data.get(&pk_name).ok_or_else(|| {
            WriteError::invalid(
                "missing_field",
                format!("{row_path}.{pk_name}"),
                format!("{row_path}.{pk_name} is required to name the record to update"),
            )
        })?;
        let mut fields = data.clone();
        fields.remove(&pk_name);
        changes.push(plan_update(table, id, &fields, &row_path, &row_path)?);
    }
    Ok(changes)
}

fn writable_key(table: &Table, path: &str) -> Result<usize, WriteError> {
    table.primary_key.ok_or_else(|| {
        WriteError::invalid(
            "no_primary_key",
            path,
            format!("table {} has no single-column primary key, so it is read-only through opsbuffer", table.name),
        )
    })
}

/// Plans the create of one record from `data`, filling defaults the way
/// PostgreSQL would and generating a UUIDv7 key when the table has a uuid
/// key and the client sent none.
pub fn plan_create(
    table: &Arc<Table>,
    data: &Map<String, Json>,
    path: &str,
    ctx: &mut PlanContext<'_>,
) -> Result<PlannedChange, WriteError> {
    let pk = writable_key(table, path)?;
    if table.key_generation == KeyGeneration::Main {
        return Err(WriteError::new(
            Rejection::Invalid,
            "main_generated_key",
            Some(path.to_owned()),
            format!(
                "table {} gets its {} from a sequence on main, so records cannot be created through the buffer; create them on main",
                table.name, table.columns[pk].name
            ),
        ));
    }
    check_known_columns(table, data, path)?;

    let mut values = Vec::with_capacity(table.columns.len());
    let mut missing = Vec::new();
    let mut generated_key = false;
    for (position, column) in table.columns.iter().enumerate() {
        let field = field_path(path, &column.name);
        if column.generated_always {
            if data.contains_key(&column.name) {
                return Err(WriteError::invalid(
                    "read_only_column",
                    field,
                    format!("column {} is generated by the database and cannot be written", column.name),
                ));
            }
            values.push(Value::Null);
            continue;
        }
        let value = match data.get(&column.name) {
            Some(json) => coerce(&column.ty, json, &field)?,
            None if position == pk && table.key_generation == KeyGeneration::UuidV7 => {
                generated_key = true;
                Value::Uuid((ctx.new_uuid)())
            }
            None => match default_value(table, position, ctx, &field)? {
                Some(v) => v,
                None => {
                    if !column.nullable {
                        missing.push(column.name.clone());
                    }
                    Value::Null
                }
            },
        };
        if value.is_null() && !column.nullable && data.contains_key(&column.name) {
            return Err(WriteError::invalid("null_value", field, format!("column {} must not be null", column.name)));
        }
        values.push(value);
    }
    if !missing.is_empty() {
        return Err(WriteError::invalid(
            "missing_column",
            field_path(path, &missing[0]),
            format!("required column{} missing: {}", if missing.len() > 1 { "s" } else { "" }, missing.join(", ")),
        ));
    }
    let row = Row(values);
    let primary_key = row.get(pk).clone();
    Ok(PlannedChange {
        key: primary_key.key_text(),
        primary_key,
        change: Change::Create(row),
        path: path.to_owned(),
        generated_key,
    })
}

fn default_value(
    table: &Table,
    position: usize,
    ctx: &mut PlanContext<'_>,
    field: &str,
) -> Result<Option<Value>, WriteError> {
    let column = &table.columns[position];
    Ok(match &column.default {
        ColumnDefault::None => None,
        ColumnDefault::Constant(v) => Some(v.clone()),
        ColumnDefault::Now => Some(match column.ty {
            ColumnType::Timestamp => Value::Timestamp(ctx.now),
            ColumnType::Date => Value::Date(ctx.now.div_euclid(86_400_000_000) as i32),
            _ => Value::Timestamptz(ctx.now),
        }),
        ColumnDefault::Today => Some(Value::Date(ctx.now.div_euclid(86_400_000_000) as i32)),
        ColumnDefault::NewUuid => Some(Value::Uuid((ctx.new_uuid)())),
        ColumnDefault::MainGenerated => {
            return Err(WriteError::invalid(
                "main_generated_column",
                field,
                format!("column {} is assigned by a sequence on main; send a value for it", column.name),
            ));
        }
        ColumnDefault::Expression(expression) => {
            return Err(WriteError::invalid(
                "default_needs_main",
                field,
                format!(
                    "column {} defaults to {expression}, which only main can evaluate; send a value for it",
                    column.name
                ),
            ));
        }
    })
}

/// Plans an update of the record `id` with the columns in `data`.
pub fn plan_update(
    table: &Arc<Table>,
    id: &Json,
    data: &Map<String, Json>,
    path: &str,
    data_path: &str,
) -> Result<PlannedChange, WriteError> {
    let pk = writable_key(table, path)?;
    let id_path = if path == data_path { field_path(path, &table.columns[pk].name) } else { format!("{path}.id") };
    let primary_key = coerce(&table.columns[pk].ty, id, &id_path)?;
    if primary_key.is_null() {
        return Err(WriteError::invalid("invalid_value", id_path, "the id must not be null"));
    }
    check_known_columns(table, data, data_path)?;
    if data.is_empty() {
        return Err(WriteError::invalid(
            "invalid_value",
            data_path,
            format!(
                "{} is empty; name at least one column to change",
                if data_path.is_empty() { "the body" } else { data_path }
            ),
        ));
    }

    let mut patch: Patch = Vec::with_capacity(data.len());
    for (name, json) in data {
        let position = table.column_position(name).unwrap_or_default();
        let column = &table.columns[position];
        let field = field_path(data_path, name);
        if column.generated_always {
            return Err(WriteError::invalid(
                "read_only_column",
                field,
                format!("column {name} is generated by the database and cannot be written"),
            ));
        }
        let value = coerce(&column.ty, json, &field)?;
        if position == pk {
            if value.sql_eq(&primary_key) != Some(true) {
                return Err(WriteError::invalid(
                    "read_only_column",
                    field,
                    format!("the primary key {name} cannot be changed; create a new record instead"),
                ));
            }
            continue;
        }
        if value.is_null() && !column.nullable {
            return Err(WriteError::invalid("null_value", field, format!("column {name} must not be null")));
        }
        patch.push((position, value));
    }
    Ok(PlannedChange {
        key: primary_key.key_text(),
        primary_key,
        change: Change::Patch(patch),
        path: path.to_owned(),
        generated_key: false,
    })
}

/// Plans the delete of the record `id`.
pub fn plan_delete(table: &Arc<Table>, id: &Json, path: &str) -> Result<PlannedChange, WriteError> {
    let pk = writable_key(table, path)?;
    let primary_key = coerce(&table.columns[pk].ty, id, path)?;
    if primary_key.is_null() {
        return Err(WriteError::invalid("invalid_value", path, "the id must not be null"));
    }
    Ok(PlannedChange {
        key: primary_key.key_text(),
        primary_key,
        change: Change::Delete,
        path: path.to_owned(),
        generated_key: false,
    })
}

fn check_known_columns(table: &Table, data: &Map<String, Json>, path: &str) -> Result<(), WriteError> {
    if let Some(unknown) = data.keys().find(|k| table.column_position(k).is_none()) {
        return Err(WriteError::invalid(
            "unknown_column",
            field_path(path, unknown),
            format!("unknown column {unknown:?} in table {}; known columns: {}", table.name, table.column_list()),
        ));
    }
    Ok(())
}

fn coerce(ty: &ColumnType, json: &Json, field: &str) -> Result<Value, WriteError> {
    ty.coerce_json(json).map_err(|e| WriteError::invalid("invalid_value", field, format!("{field}: {e}")))
}

/// Joins a path prefix and a field name: `steps[0].data` + `x` →
/// `steps[0].data.x`, and `` + `x` → `x`.
pub fn field_path(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_owned() } else { format!("{prefix}.{name}") }
}
