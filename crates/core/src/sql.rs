//! SQL text for reading local rows, built from a [`Query`].
//!
//! Every value travels as a text parameter cast to the column's base type
//! (`$1::text::timestamptz`), and every column is read back as text, so one
//! parser ([`crate::types::ColumnType::parse_text`]) interprets both sides.
//! Text comparisons and ordering use `COLLATE "C"` to match the byte-wise
//! comparison the merge applies in Rust.
//!
//! Column references are qualified with the table alias `t`. A bare name in
//! ORDER BY would otherwise mean the output column of the same name, which
//! is the column's text form, and numbers would sort as strings.

/// The alias of the queried table in every statement.
const ALIAS: &str = "t";

use crate::query::{Condition, Cursor, Operator, OrderTerm, Query};
use crate::row::base_sql_type;
use crate::schema::{Table, quote_ident};
use crate::types::ColumnType;
use crate::value::Value;

/// A parameter of a rendered statement.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlParam {
    Text(Option<String>),
    TextArray(Vec<String>),
}

/// A statement and its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub text: String,
    pub params: Vec<SqlParam>,
}

struct Builder<'t> {
    table: &'t Table,
    params: Vec<SqlParam>,
}

impl<'t> Builder<'t> {
    fn param(&mut self, value: &Value, ty: &ColumnType) -> String {
        self.params.push(SqlParam::Text(value.to_pg_text()));
        format!("${}::text::{}", self.params.len(), base_sql_type(ty))
    }

    fn array_param(&mut self, values: &[Value], ty: &ColumnType) -> String {
        self.params.push(SqlParam::TextArray(values.iter().filter_map(Value::to_pg_text).collect()));
        format!("${}::text[]::{}[]", self.params.len(), base_sql_type(ty))
    }

    /// The column as an expression that compares like the Rust merge does.
    fn column(&self, position: usize) -> String {
        let column = &self.table.columns[position];
        let name = format!("{ALIAS}.{}", quote_ident(&column.name));
        match &column.ty {
            ColumnType::Text | ColumnType::Varchar { .. } => format!("{name} COLLATE \"C\""),
            ColumnType::Json => format!("{name}::jsonb"),
            _ => name,
        }
    }

    /// The column for equality tests. Under a deterministic collation two
    /// strings are equal exactly when their bytes are, so text needs no
    /// `COLLATE "C"` here, and leaving it out lets PostgreSQL use the
    /// column's indexes.
    // NOTE: a column declared with a nondeterministic collation would compare
    // differently here than in the merge.
    fn column_for_equality(&self, position: usize) -> String {
        let column = &self.table.columns[position];
        let name = format!("{ALIAS}.{}", quote_ident(&column.name));
        match &column.ty {
            ColumnType::Json => format!("{name}::jsonb"),
            _ => name,
        }
    }

    fn condition(&mut self, condition: &Condition) -> String {
        let ty = self.table.columns[condition.column].ty.clone();
        let column = self.column(condition.column);
        let equality_column = self.column_for_equality(condition.column);
        let compare = |b: &mut Self, column: &str, op: &str| {
            let p = b.param(&condition.values[0], &ty);
            format!("{column} {op} {p}")
        };
        let expression = match condition.op {
            Operator::Eq => compare(self, &equality_column, "="),
            Operator::Neq => compare(self, &equality_column, "<>"),
            Operator::Lt => compare(self, &column, "<"),
            Operator::Lte => compare(self, &column, "<="),
            Operator::Gt => compare(self, &column, ">"),
            Operator::Gte => compare(self, &column, ">="),
            Operator::In => {
                let p = self.array_param(&condition.values, &ty);
                format!("{equality_column} = ANY({p})")
            }
            Operator::IsNull => format!("{column} IS NULL"),
            Operator::IsTrue => format!("{column} IS TRUE"),
            Operator::IsFalse => format!("{column} IS FALSE"),
            Operator::Like | Operator::Ilike => {
                self.params.push(SqlParam::Text(condition.values[0].to_pg_text()));
                let op = if condition.op == Operator::Like { "LIKE" } else { "ILIKE" };
                format!("{column} {op} ${}::text", self.params.len())
            }
        };
        if condition.negated { format!("NOT ({expression})") } else { format!("({expression})") }
    }

    /// `row > cursor` in the order's terms, as a chain of
    /// `(k1 after v1) OR (k1 = v1 AND k2 after v2) OR ...`, with NULLs placed
    /// as each term says.
    fn keyset(&mut self, order: &[OrderTerm], cursor: &Cursor) -> String {
        let mut alternatives = Vec::new();
        let mut equal_prefix: Vec<String> = Vec::new();
        let last = order.len().saturating_sub(1);
        for (i, (term, value)) in order.iter().zip(&cursor.values).enumerate() {
            let ty = self.table.columns[term.column].ty.clone();
            let column = self.column(term.column);
            let after = if value.is_null() {
                if term.nulls_first { Some(format!("{column} IS NOT NULL")) } else { None }
            } else {
                let p = self.param(value, &ty);
                let op = if term.descending { "<" } else { ">" };
                if term.nulls_first {
                    Some(format!("{column} {op} {p}"))
                } else {
                    Some(format!("({column} {op} {p} OR {column} IS NULL)"))
                }
            };
            if let Some(after) = after {
                let mut clause = equal_prefix.clone();
                clause.push(after);
                alternatives.push(format!("({})", clause.join(" AND ")));
            }
            if i == last {
                break;
            }
            let equal = if value.is_null() {
                format!("{column} IS NULL")
            } else {
                let p = self.param(value, &ty);
                format!("{column} = {p}")
            };
            equal_prefix.push(equal);
        }
        if alternatives.is_empty() { "FALSE".to_owned() } else { format!("({})", alternatives.join(" OR ")) }
    }

    fn order_by(&self, order: &[OrderTerm]) -> String {
        order
            .iter()
            .map(|t| {
                format!(
                    "{} {} NULLS {}",
                    self.column(t.column),
                    if t.descending { "DESC" } else { "ASC" },
                    if t.nulls_first { "FIRST" } else { "LAST" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The select list: every column as text, in column order.
pub fn select_list(table: &Table) -> String {
    table.columns.iter().map(|c| format!("{ALIAS}.{}::text", quote_ident(&c.name))).collect::<Vec<_>>().join(", ")
}

/// Rows of `query` on local, excluding `exclude_keys` (records with
/// overlays, which the merge handles), in the query's order, up to
/// `query.limit + 1` so the caller can tell whether another page follows.
pub fn select_page(table: &Table, query: &Query, exclude_keys: &[String]) -> Statement {
    let mut b = Builder { table, params: Vec::new() };
    let mut clauses: Vec<String> = query.conditions.iter().map(|c| b.condition(c)).collect();
    if let Some(cursor) = &query.after {
        clauses.push(b.keyset(&query.order, cursor));
    }
    if let (Some(pk), false) = (table.primary_key, exclude_keys.is_empty()) {
        let ty = &table.columns[pk].ty;
        b.params.push(SqlParam::TextArray(exclude_keys.to_vec()));
        clauses.push(format!(
            "NOT ({ALIAS}.{} = ANY(${}::text[]::{}[]))",
            quote_ident(&table.columns[pk].name),
            b.params.len(),
            base_sql_type(ty)
        ));
    }
    let where_clause = if clauses.is_empty() { String::new() } else { format!(" WHERE {}", clauses.join(" AND ")) };
    let order_by =
        if query.order.is_empty() { String::new() } else { format!(" ORDER BY {}", b.order_by(&query.order)) };
    let text = format!(
        "SELECT {} FROM {} AS {ALIAS}{where_clause}{order_by} LIMIT {}",
        select_list(table),
        table.qualified_name(),
        query.limit + 1
    );
    Statement { text, params: b.params }
}

/// Rows whose primary key is one of `keys`.
pub fn select_by_keys(table: &Table, keys: &[String]) -> Option<Statement> {
    select_by_keys_where(table, keys, &[])
}

/// Rows whose primary key is one of `keys` and that match every condition.
pub fn select_by_keys_where(table: &Table, keys: &[String], conditions: &[Condition]) -> Option<Statement> {
    let pk = table.primary_key?;
    let mut b = Builder { table, params: Vec::new() };
    let mut clauses: Vec<String> = conditions.iter().map(|c| b.condition(c)).collect();
    b.params.push(SqlParam::TextArray(keys.to_vec()));
    clauses.push(format!(
        "{ALIAS}.{} = ANY(${}::text[]::{}[])",
        quote_ident(&table.columns[pk].name),
        b.params.len(),
        base_sql_type(&table.columns[pk].ty)
    ));
    let text = format!(
        "SELECT {} FROM {} AS {ALIAS} WHERE {}",
        select_list(table),
        table.qualified_name(),
        clauses.join(" AND ")
    );
    Some(Statement { text, params: b.params })
}

/// Rows matching every condition, without order or limit beyond `limit`.
pub fn select_where(table: &Table, conditions: &[Condition], limit: usize) -> Statement {
    let query =
        Query { conditions: conditions.to_vec(), order: Vec::new(), limit: limit.saturating_sub(1), after: None };
    select_page(table, &query, &[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::parse_order;
    use crate::schema::{Column, ColumnDefault};

    fn table() -> Table {
        let column = |name: &str, ty: ColumnType| Column {
            name: name.into(),
            sql_type: ty.display_name(),
            ty,
            nullable: true,
            default: ColumnDefault::None,
            generated_always: false,
        };
        Table::new(
            "file".into(),
            "public".into(),
            vec![column("id", ColumnType::Uuid), column("name", ColumnType::Text), column("size", ColumnType::Int8)],
            Some(0),
        )
    }

    #[test]
    fn filter_without_value_is_rejected() {
        let t = table();
        let error = Condition::parse(&t, "name", "").unwrap_err();
        assert_eq!(error.field, "name");
        assert!(error.message.contains("name=eq.VALUE"), "{}", error.message);
        let empty = Condition::parse(&t, "name", "eq.").unwrap();
        assert_eq!(empty, Condition::eq(1, Value::Text(String::new())));
    }

    #[test]
    fn like_with_nul_is_rejected() {
        let t = table();
        for raw in ["like.a\0b", "ilike.\0", "not.like.x\0"] {
            let error = Condition::parse(&t, "name", raw).unwrap_err();
            assert!(error.message.contains("NUL"), "{raw}: {}", error.message);
        }
    }

    #[test]
    fn repeated_not_is_rejected() {
        let t = table();
        let error = Condition::parse(&t, "name", "not.not.eq.a").unwrap_err();
        assert!(error.message.contains("repeats not."), "{}", error.message);
        assert!(Condition::parse(&t, "name", "not.eq.a").is_ok());
    }

    #[test]
    fn page_renders_conditions_keyset_and_exclusions() {
        let t = table();
        let params = vec![("name".to_owned(), "like.a*".to_owned()), ("order".to_owned(), "size.desc".to_owned())];
        let mut query = Query::parse(&t, &params, &[]).unwrap();
        query.after = Some(Cursor { values: vec![Value::Int(5), Value::Uuid(uuid::Uuid::nil())] });
        let s = select_page(&t, &query, &["k1".to_owned()]);
        assert_eq!(
            s.text,
            "SELECT t.\"id\"::text, t.\"name\"::text, t.\"size\"::text FROM \"public\".\"file\" AS t \
             WHERE (t.\"name\" COLLATE \"C\" LIKE $1::text) \
             AND ((t.\"size\" < $2::text::bigint) OR (t.\"size\" = $3::text::bigint AND (t.\"id\" > $4::text::uuid OR t.\"id\" IS NULL))) \
             AND NOT (t.\"id\" = ANY($5::text[]::uuid[])) \
             ORDER BY t.\"size\" DESC NULLS FIRST, t.\"id\" ASC NULLS LAST LIMIT 101"
        );
        assert_eq!(s.params.len(), 5);
        assert_eq!(s.params[0], SqlParam::Text(Some("a%".into())));
    }

    #[test]
    fn order_by_names_the_column_not_its_text_form() {
        // A bare "size" in ORDER BY would sort the text output column.
        let t = table();
        let query = Query::parse(&t, &[("order".to_owned(), "size.asc".to_owned())], &[]).unwrap();
        let s = select_page(&t, &query, &[]);
        assert!(s.text.contains("ORDER BY t.\"size\" ASC"), "{}", s.text);
    }

    #[test]
    fn keyset_after_null_in_nulls_last_column_skips_to_next_term() {
        let t = table();
        let order = parse_order(&t, Some("name.asc")).unwrap();
        let query = Query {
            conditions: vec![],
            order,
            limit: 10,
            after: Some(Cursor { values: vec![Value::Null, Value::Uuid(uuid::Uuid::nil())] }),
        };
        let s = select_page(&t, &query, &[]);
        assert!(
            s.text.contains("((t.\"name\" COLLATE \"C\" IS NULL AND (t.\"id\" > $1::text::uuid OR t.\"id\" IS NULL)))"),
            "{}",
            s.text
        );
    }
}
