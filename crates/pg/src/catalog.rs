//! Reads the schema registry from the local database's catalog: tables,
//! columns, types, defaults, keys, foreign keys, unique and check
//! constraints. Tables whose names start with `opsbuffer_` are opsbuffer's
//! own bookkeeping and are left out.

use std::collections::HashMap;

use deadpool_postgres::Pool;
use opsbuffer_core::check::CheckExpr;
use opsbuffer_core::schema::{
    CheckConstraint, Column, ColumnDefault, ForeignKey, ForeignKeyAction, Registry, Table, UniqueKey,
};
use opsbuffer_core::types::ColumnType;

use crate::connect::{PgError, pooled, with_timeout};

/// Ordinary and partitioned tables of the given schemas.
const TABLES_SQL: &str = "
    SELECT c.oid, n.nspname::text, c.relname::text
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY($1::text[])
      AND c.relname NOT LIKE 'opsbuffer\\_%' AND NOT c.relispartition
    ORDER BY c.oid";

/// Live columns with their type, nullability, default and generation.
const COLUMNS_SQL: &str = "
    SELECT a.attrelid, a.attname::text, t.typname::text, a.atttypmod,
           format_type(a.atttypid, a.atttypmod), a.attnotnull,
           pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text
    FROM pg_attribute a
    JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY a.attrelid, a.attnum";

/// Primary, unique, foreign-key and check constraints, with column names.
const CONSTRAINTS_SQL: &str = "
    SELECT c.conrelid, c.conname::text, c.contype::text,
           ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                 JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i),
           c.confrelid::regclass::text,
           (SELECT relname::text FROM pg_class WHERE oid = c.confrelid),
           ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                 JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i),
           c.confdeltype::text, pg_get_constraintdef(c.oid)
    FROM pg_constraint c
    WHERE c.conrelid = ANY($1::oid[]) AND c.contype IN ('p', 'u', 'f', 'c')
    ORDER BY c.conrelid, c.conname";

/// Unique indexes on plain columns that no constraint declares.
const UNIQUE_INDEXES_SQL: &str = "
    SELECT i.indrelid, i.indexrelid::regclass::text,
           ARRAY(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY k(n, o)
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o)
    FROM pg_index i
    WHERE i.indrelid = ANY($1::oid[]) AND i.indisunique AND NOT i.indisprimary
      AND i.indexprs IS NULL AND i.indpred IS NULL
      AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)";

/// Loads the registry of every table in `schemas` from `pool`'s database.
pub async fn load_registry(
    pool: &Pool,
    label: &'static str,
    schemas: &[String],
    timeout: std::time::Duration,
) -> Result<Registry, PgError> {
    with_timeout(label, "reading the schema catalog", timeout, async {
        let client = pooled(pool, label).await?;
        let db = |e| PgError::db(label, e);

        let table_rows = client.query(TABLES_SQL, &[&schemas]).await.map_err(db)?;
        let oids: Vec<u32> = table_rows.iter().map(|r| r.get(0)).collect();
        let column_rows = client.query(COLUMNS_SQL, &[&oids]).await.map_err(db)?;
        let constraint_rows = client.query(CONSTRAINTS_SQL, &[&oids]).await.map_err(db)?;
        let index_rows = client.query(UNIQUE_INDEXES_SQL, &[&oids]).await.map_err(db)?;

        let mut columns_by_table: HashMap<u32, Vec<(Column, Option<String>)>> = HashMap::new();
        for row in &column_rows {
            let oid: u32 = row.get(0);
            let name: String = row.get(1);
            let typname: String = row.get(2);
            let typmod: i32 = row.get(3);
            let sql_type: String = row.get(4);
            let not_null: bool = row.get(5);
            let default_expr: Option<String> = row.get(6);
            let identity: String = row.get(7);
            let generated: String = row.get(8);
            let ty = ColumnType::from_pg(&typname, typmod);
            let default = if !identity.is_empty() {
                ColumnDefault::MainGenerated
            } else {
                default_expr.as_deref().map(classify_default).unwrap_or(ColumnDefault::None)
            };
            let constant_expr = match (&default, &default_expr) {
                (ColumnDefault::Expression(_), Some(expr)) if is_constant_expression(expr) => Some(expr.clone()),
                _ => None,
            };
            let column = Column {
                name,
                ty,
                sql_type,
                nullable: !not_null,
                default,
                generated_always: identity == "a" || generated == "s",
            };
            columns_by_table.entry(oid).or_default().push((column, constant_expr));
        }

        let mut tables = Vec::with_capacity(table_rows.len());
        for row in &table_rows {
            let oid: u32 = row.get(0);
            let schema: String = row.get(1);
            let name: String = row.get(2);
            let mut columns = Vec::new();
            for (mut column, constant_expr) in columns_by_table.remove(&oid).unwrap_or_default() {
                if let Some(expr) = constant_expr {
                    column.default = evaluate_constant(&client, label, &expr, &column).await?;
                }
                columns.push(column);
            }
            let primary_key = constraint_rows
                .iter()
                .filter(|r| r.get::<_, u32>(0) == oid && r.get::<_, String>(2) == "p")
                .map(|r| r.get::<_, Vec<String>>(3))
                .find(|cols| cols.len() == 1)
                .and_then(|cols| columns.iter().position(|c| c.name == cols[0]));
            let mut table = Table::new(name, schema, columns, primary_key);
            add_constraints(&mut table, oid, &constraint_rows, &index_rows);
            tables.push(table);
        }
        Ok(Registry::new(tables))
    })
    .await
}

fn add_constraints(table: &mut Table, oid: u32, constraints: &[tokio_postgres::Row], indexes: &[tokio_postgres::Row]) {
    let positions = |table: &Table, names: &[String]| -> Option<Vec<usize>> {
        names.iter().map(|n| table.column_position(n)).collect()
    };
    for row in constraints.iter().filter(|r| r.get::<_, u32>(0) == oid) {
        let name: String = row.get(1);
        let kind: String = row.get(2);
        let columns: Vec<String> = row.get(3);
        match kind.as_str() {
            "u" => {
                if let Some(cols) = positions(table, &columns) {
                    table.unique_keys.push(UniqueKey { name, columns: cols });
                }
            }
            "f" => {
                let referenced_table: Option<String> = row.get(5);
                let referenced_columns: Vec<String> = row.get(6);
                let on_delete: String = row.get(7);
                if let (Some(cols), Some(referenced_table)) = (positions(table, &columns), referenced_table) {
                    table.foreign_keys.push(ForeignKey {
                        name,
                        columns: cols,
                        referenced_table,
                        referenced_columns,
                        on_delete: ForeignKeyAction::from_pg(on_delete.chars().next().unwrap_or('a')),
                    });
                }
            }
            "c" => {
                let definition: String = row.get(8);
                let expression = check_expression(&definition);
                let compiled = CheckExpr::compile(&expression, table);
                table.checks.push(CheckConstraint { name, expression, compiled });
            }
            _ => {}
        }
    }
    for row in indexes.iter().filter(|r| r.get::<_, u32>(0) == oid) {
        let name: String = row.get(1);
        let columns: Vec<String> = row.get(2);
        if let Some(cols) = positions(table, &columns)
            && !table.unique_keys.iter().any(|u| u.columns == cols)
        {
            table.unique_keys.push(UniqueKey { name, columns: cols });
        }
    }
}

/// `CHECK ((a > 0)) NOT VALID` → `((a > 0))`.
fn check_expression(definition: &str) -> String {
    let body = definition.strip_prefix("CHECK ").unwrap_or(definition);
    body.strip_suffix(" NOT VALID").unwrap_or(body).trim().to_owned()
}

/// Sorts a default expression by who can evaluate it. Everything that is not
/// a known clock, id generator or sequence stays an expression here; literal
/// constants are evaluated afterwards.
pub fn classify_default(expr: &str) -> ColumnDefault {
    let lower = expr.to_ascii_lowercase();
    if lower.contains("nextval(") {
        return ColumnDefault::MainGenerated;
    }
    const CLOCKS: [&str; 7] = [
        "now()",
        "current_timestamp",
        "transaction_timestamp()",
        "statement_timestamp()",
        "clock_timestamp()",
        "localtimestamp",
        "timezone('utc'::text, now())",
    ];
    if CLOCKS.contains(&lower.as_str()) {
        return ColumnDefault::Now;
    }
    if lower == "current_date" {
        return ColumnDefault::Today;
    }
    if ["gen_random_uuid()", "uuid_generate_v4()", "uuidv7()", "uuid_generate_v7()"].contains(&lower.as_str()) {
        return ColumnDefault::NewUuid;
    }
    ColumnDefault::Expression(expr.to_owned())
}

/// A literal with optional casts, such as `'running'::text` or `0`: no
/// function call, so evaluating it once gives the value every time.
fn is_constant_expression(expr: &str) -> bool {
    let mut in_quote = false;
    for c in expr.chars() {
        match c {
            '\'' => in_quote = !in_quote,
            '(' if !in_quote => return false,
            _ => {}
        }
    }
    true
}

async fn evaluate_constant(
    client: &tokio_postgres::Client,
    label: &'static str,
    expr: &str,
    column: &Column,
) -> Result<ColumnDefault, PgError> {
    // The expression comes from the catalog, not from a client.
    let sql = format!("SELECT CAST(({expr}) AS {})::text", column.sql_type);
    let row = client.query_one(&sql, &[]).await.map_err(|e| PgError::db(label, e))?;
    let text: Option<String> = row.get(0);
    let value = match text {
        None => opsbuffer_core::value::Value::Null,
        Some(t) => column
            .ty
            .parse_text(&t)
            .map_err(|e| PgError::Decode { label, message: format!("default of column {}: {e}", column.name) })?,
    };
    Ok(ColumnDefault::Constant(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_classified() {
        assert_eq!(classify_default("nextval('obs_unit_id_seq'::regclass)"), ColumnDefault::MainGenerated);
        assert_eq!(classify_default("now()"), ColumnDefault::Now);
        assert_eq!(classify_default("CURRENT_TIMESTAMP"), ColumnDefault::Now);
        assert_eq!(classify_default("CURRENT_DATE"), ColumnDefault::Today);
        assert_eq!(classify_default("gen_random_uuid()"), ColumnDefault::NewUuid);
        assert!(matches!(classify_default("'running'::text"), ColumnDefault::Expression(_)));
    }

    #[test]
    fn constants_have_no_calls_outside_quotes() {
        assert!(is_constant_expression("'running'::text"));
        assert!(is_constant_expression("'(x)'::text"));
        assert!(is_constant_expression("0"));
        assert!(!is_constant_expression("md5(random()::text)"));
    }

    #[test]
    fn check_definitions_lose_their_wrapper() {
        assert_eq!(check_expression("CHECK ((a > 0)) NOT VALID"), "((a > 0))");
        assert_eq!(
            check_expression("CHECK ((status = ANY (ARRAY['a'::text])))"),
            "((status = ANY (ARRAY['a'::text])))"
        );
    }
}
