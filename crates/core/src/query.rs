//! The query language of the merged view: PostgREST-style conditions,
//! `order=`, `limit` and keyset cursors, parsed against a table and
//! evaluated with PostgreSQL's semantics.
//!
//! The same [`Query`] is rendered to SQL for local (see [`crate::sql`]) and
//! evaluated here on merged rows; both must agree on every row, which the
//! tests check against PostgreSQL itself.

use std::cmp::Ordering;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value as Json;

use crate::row::{Row, base_type, decode_stored};
use crate::schema::Table;
use crate::types::ColumnType;
use crate::value::Value;

/// Default and maximum page sizes.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 10_000;

/// A query parameter that could not be understood. `field` names the
/// parameter; the message says what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct QueryError {
    pub field: String,
    pub message: String,
}

fn query_error(field: &str, message: impl Into<String>) -> QueryError {
    QueryError { field: field.to_owned(), message: message.into() }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    In,
    IsNull,
    IsTrue,
    IsFalse,
    Like,
    Ilike,
}

/// One filter: `column op value`, optionally negated with `not.`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub column: usize,
    pub op: Operator,
    pub negated: bool,
    /// One value for comparisons, the list for `in`, the pattern (as text)
    /// for `like`, none for `is`.
    pub values: Vec<Value>,
}

impl Condition {
    /// Builds an equality condition on a column.
    pub fn eq(column: usize, value: Value) -> Condition {
        Condition { column, op: Operator::Eq, negated: false, values: vec![value] }
    }

    /// Builds `column in (values)`.
    pub fn any_of(column: usize, values: Vec<Value>) -> Condition {
        Condition { column, op: Operator::In, negated: false, values }
    }

    /// Parses `op.value`, `not.op.value` or a bare value (equality) for
    /// `column`.
    pub fn parse(table: &Table, column_name: &str, raw: &str) -> Result<Condition, QueryError> {
        let position = table.column_position(column_name).ok_or_else(|| {
            query_error(
                column_name,
                format!(
                    "unknown column {column_name:?} in table {}; known columns: {}",
                    table.name,
                    table.column_list()
                ),
            )
        })?;
        let column = &table.columns[position];
        let ty = base_type(&column.ty);
        if !ty.is_supported() {
            return Err(query_error(
                column_name,
                format!("column {column_name} has type {}, which cannot be filtered", ty.display_name()),
            ));
        }

        let (negated, rest) = match raw.strip_prefix("not.") {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        if negated && rest.starts_with("not.") {
            return Err(query_error(
                column_name,
                format!("{column_name}={raw} repeats not.; write not. once, such as not.eq.VALUE"),
            ));
        }
        let (op, operand) = split_operator(rest);
        let op = match op {
            Some(op) => op,
            None if raw.is_empty() => {
                return Err(query_error(
                    column_name,
                    format!(
                        "filter {column_name} has no value; write {column_name}=eq.VALUE, or {column_name}=eq. for the empty string"
                    ),
                ));
            }
            None if negated => {
                return Err(query_error(
                    column_name,
                    format!("{column_name}=not.{rest} needs an operator after not., such as not.eq.{rest}"),
                ));
            }
            None => Operator::Eq,
        };

        let parse_one =
            |text: &str| ty.parse_text(text).map_err(|e| query_error(column_name, format!("{column_name}: {e}")));
        let values = match op {
            Operator::Eq | Operator::Neq => vec![parse_one(operand)?],
            Operator::Lt | Operator::Lte | Operator::Gt | Operator::Gte => {
                if !ty.is_orderable() {
                    return Err(query_error(
                        column_name,
                        format!(
                            "column {column_name} has type {}, which has no order; use eq or neq",
                            ty.display_name()
                        ),
                    ));
                }
                vec![parse_one(operand)?]
            }
            Operator::In => {
                let items =
                    parse_in_list(operand).map_err(|m| query_error(column_name, format!("{column_name}: {m}")))?;
                items.iter().map(|t| parse_one(t)).collect::<Result<Vec<_>, _>>()?
            }
            Operator::IsNull | Operator::IsTrue | Operator::IsFalse => Vec::new(),
            Operator::Like | Operator::Ilike => {
                if !ty.is_text() {
                    return Err(query_error(
                        column_name,
                        format!("like applies to text columns; {column_name} has type {}", ty.display_name()),
                    ));
                }
                if operand.contains('\0') {
                    return Err(query_error(
                        column_name,
                        format!("{column_name}: a like pattern must not contain the NUL character (%00)"),
                    ));
                }
                let trailing_backslashes = operand.chars().rev().take_while(|c| *c == '\\').count();
                if trailing_backslashes % 2 == 1 {
                    return Err(query_error(
                        column_name,
                        format!(
                            "{column_name}: a like pattern must not end with an escaping backslash; write \\\\ for a literal backslash"
                        ),
                    ));
                }
                vec![Value::Text(operand.replace('*', "%"))]
            }
        };
        let op = match (op, operand) {
            (Operator::IsNull, "null") => Operator::IsNull,
            (Operator::IsNull, "true") => Operator::IsTrue,
            (Operator::IsNull, "false") => Operator::IsFalse,
            (Operator::IsNull, other) => {
                return Err(query_error(
                    column_name,
                    format!("{column_name}=is.{other} is not valid; use is.null, is.true or is.false"),
                ));
            }
            (op, _) => op,
        };
        if matches!(op, Operator::IsTrue | Operator::IsFalse) && ty != ColumnType::Bool {
            return Err(query_error(
                column_name,
                format!("is.true and is.false apply to boolean columns; {column_name} is not one"),
            ));
        }
        Ok(Condition { column: position, op, negated, values })
    }

    /// Evaluates the condition on a row with SQL's three-valued logic;
    /// `None` is "unknown", which a WHERE clause treats as false.
    pub fn eval(&self, row: &Row) -> Option<bool> {
        self.eval_value(row.get(self.column))
    }

    /// Evaluates the condition on the value of its column.
    pub fn eval_value(&self, value: &Value) -> Option<bool> {
        let result = match self.op {
            Operator::IsNull => Some(value.is_null()),
            Operator::IsTrue => Some(matches!(value, Value::Bool(true))),
            Operator::IsFalse => Some(matches!(value, Value::Bool(false))),
            Operator::Eq => value.sql_eq(&self.values[0]),
            Operator::Neq => value.sql_eq(&self.values[0]).map(|b| !b),
            Operator::Lt => value.sql_cmp(&self.values[0]).map(|o| o == Ordering::Less),
            Operator::Lte => value.sql_cmp(&self.values[0]).map(|o| o != Ordering::Greater),
            Operator::Gt => value.sql_cmp(&self.values[0]).map(|o| o == Ordering::Greater),
            Operator::Gte => value.sql_cmp(&self.values[0]).map(|o| o != Ordering::Less),
            Operator::In => {
                if value.is_null() {
                    None
                } else {
                    Some(self.values.iter().any(|v| value.sql_eq(v) == Some(true)))
                }
            }
            Operator::Like | Operator::Ilike => match (value, &self.values[0]) {
                (Value::Text(text), Value::Text(pattern)) => {
                    Some(like_match(text, pattern, self.op == Operator::Ilike))
                }
                _ => None,
            },
        };
        if self.negated { result.map(|b| !b) } else { result }
    }

    /// The values a matching record must have in the column, when the
    /// condition pins them down (`eq` or `in`, not negated).
    pub fn pinned_values(&self) -> Option<&[Value]> {
        match (self.op, self.negated) {
            (Operator::Eq | Operator::In, false) => Some(&self.values),
            _ => None,
        }
    }
}

fn split_operator(raw: &str) -> (Option<Operator>, &str) {
    // `is.` maps to IsNull here; `Condition::parse` reads its operand.
    const OPERATORS: [(&str, Operator); 10] = [
        ("eq.", Operator::Eq),
        ("neq.", Operator::Neq),
        ("lt.", Operator::Lt),
        ("lte.", Operator::Lte),
        ("gt.", Operator::Gt),
        ("gte.", Operator::Gte),
        ("in.", Operator::In),
        ("is.", Operator::IsNull),
        ("like.", Operator::Like),
        ("ilike.", Operator::Ilike),
    ];
    for (prefix, op) in OPERATORS {
        if let Some(rest) = raw.strip_prefix(prefix) {
            return (Some(op), rest);
        }
    }
    (None, raw)
}

/// Parses `(a,b,"c,d")` into its items. Double quotes protect commas and
/// parentheses; a backslash escapes the next character inside quotes.
pub fn parse_in_list(text: &str) -> Result<Vec<String>, String> {
    let inner = text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("in. expects a list in parentheses such as in.(a,b,c); got {text:?}"))?;
    let mut items = Vec::new();
    let mut current = String::new();
    let mut chars = inner.chars().peekable();
    let mut quoted_item = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if current.is_empty() && !quoted_item => {
                quoted_item = true;
                loop {
                    match chars.next() {
                        Some('\\') => match chars.next() {
                            Some(escaped) => current.push(escaped),
                            None => return Err("unterminated escape in in.(...) list".into()),
                        },
                        Some('"') => break,
                        Some(other) => current.push(other),
                        None => return Err("unterminated quote in in.(...) list".into()),
                    }
                }
            }
            ',' => {
                items.push(std::mem::take(&mut current));
                quoted_item = false;
            }
            _ if quoted_item => {
                return Err("text after a closing quote in in.(...) list; add a comma".into());
            }
            _ => current.push(c),
        }
    }
    if !inner.is_empty() {
        items.push(current);
    }
    if items.is_empty() {
        return Err("in.() needs at least one value".into());
    }
    Ok(items)
}

/// PostgreSQL's `LIKE`: `%` matches any run of characters, `_` one
/// character, and a backslash makes the next character literal. With
/// `ignore_case`, ASCII letters match either case, as `ILIKE` does under
/// `COLLATE "C"`.
pub fn like_match(text: &str, pattern: &str, ignore_case: bool) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum Token {
        Any,
        One,
        Char(char),
    }
    let mut tokens = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '%' => Token::Any,
            '_' => Token::One,
            '\\' => Token::Char(chars.next().unwrap_or('\\')),
            c => Token::Char(c),
        });
    }
    let text: Vec<char> = text.chars().collect();
    let same = |a: char, b: char| {
        if ignore_case { a.eq_ignore_ascii_case(&b) } else { a == b }
    };

    // Greedy matching with backtracking to the last `%`: linear in practice.
    let (mut t, mut p) = (0usize, 0usize);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match tokens.get(p) {
            Some(Token::Any) => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(Token::One) => {
                t += 1;
                p += 1;
            }
            Some(Token::Char(c)) if same(*c, text[t]) => {
                t += 1;
                p += 1;
            }
            _ => match backtrack {
                Some((bp, bt)) => {
                    p = bp + 1;
                    t = bt + 1;
                    backtrack = Some((bp, bt + 1));
                }
                None => return false,
            },
        }
    }
    tokens[p..].iter().all(|tok| *tok == Token::Any)
}

/// One `order=` term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderTerm {
    pub column: usize,
    pub descending: bool,
    pub nulls_first: bool,
}

impl OrderTerm {
    /// Ascending with PostgreSQL's default NULL placement (last).
    pub fn asc(column: usize) -> OrderTerm {
        OrderTerm { column, descending: false, nulls_first: false }
    }
}

/// Parses `col.asc,col2.desc.nullslast` and appends the primary key as the
/// final tie-break. Without `order=`, the order is the primary key ascending.
pub fn parse_order(table: &Table, raw: Option<&str>) -> Result<Vec<OrderTerm>, QueryError> {
    let mut terms = Vec::new();
    if let Some(raw) = raw.filter(|r| !r.is_empty()) {
        for part in raw.split(',') {
            let mut pieces = part.split('.');
            let name = pieces.next().unwrap_or_default();
            let column = table.column_position(name).ok_or_else(|| {
                query_error(
                    "order",
                    format!("unknown column {name:?} in order; known columns: {}", table.column_list()),
                )
            })?;
            if !base_type(&table.columns[column].ty).is_orderable() {
                return Err(query_error(
                    "order",
                    format!("column {name} has type {}, which has no order", table.columns[column].ty.display_name()),
                ));
            }
            let mut descending = false;
            let mut nulls: Option<bool> = None;
            for modifier in pieces {
                match modifier {
                    "asc" => descending = false,
                    "desc" => descending = true,
                    "nullsfirst" => nulls = Some(true),
                    "nullslast" => nulls = Some(false),
                    other => {
                        return Err(query_error(
                            "order",
                            format!(
                                "unknown order modifier {other:?} for {name}; use asc, desc, nullsfirst or nullslast"
                            ),
                        ));
                    }
                }
            }
            // PostgreSQL's default: NULLs sort as larger than any value.
            let nulls_first = nulls.unwrap_or(descending);
            if terms.iter().any(|t: &OrderTerm| t.column == column) {
                return Err(query_error("order", format!("column {name} appears twice in order")));
            }
            terms.push(OrderTerm { column, descending, nulls_first });
        }
    }
    if let Some(pk) = table.primary_key
        && !terms.iter().any(|t| t.column == pk)
    {
        terms.push(OrderTerm::asc(pk));
    }
    Ok(terms)
}

/// Compares two rows by the order terms.
pub fn compare_rows(order: &[OrderTerm], a: &Row, b: &Row) -> Ordering {
    for term in order {
        let ord = compare_term(term, a.get(term.column), b.get(term.column));
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

fn compare_term(term: &OrderTerm, a: &Value, b: &Value) -> Ordering {
    match (a.is_null(), b.is_null()) {
        (true, true) => Ordering::Equal,
        (true, false) => {
            if term.nulls_first {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (false, true) => {
            if term.nulls_first {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (false, false) => {
            let ord = a.sort_cmp(b);
            if term.descending { ord.reverse() } else { ord }
        }
    }
}

/// The sort key of the last row of a page, encoded as an opaque `after=`
/// token. It records the order it was made for, so it cannot be reused with
/// another order by mistake.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    pub values: Vec<Value>,
}

impl Cursor {
    /// The cursor that points just past `row`.
    pub fn after_row(order: &[OrderTerm], row: &Row) -> Cursor {
        Cursor { values: order.iter().map(|t| row.get(t.column).clone()).collect() }
    }

    pub fn encode(&self, table: &Table, order: &[OrderTerm]) -> String {
        let body = serde_json::json!({
            "o": order_signature(table, order),
            "k": self.values.iter().map(Value::to_json).collect::<Vec<_>>(),
        });
        URL_SAFE_NO_PAD.encode(body.to_string())
    }

    pub fn decode(table: &Table, order: &[OrderTerm], token: &str) -> Result<Cursor, QueryError> {
        let invalid = || {
            query_error("after", "the after= cursor is not valid; pass the next value of the previous page unchanged")
        };
        let bytes = URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).map_err(|_| invalid())?;
        let body: Json = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        let signature = body.get("o").and_then(Json::as_str).ok_or_else(invalid)?;
        let expected = order_signature(table, order);
        if signature != expected {
            return Err(query_error(
                "after",
                format!(
                    "the after= cursor was made for order {signature:?} but this request orders by {expected:?}; use the same order= for every page"
                ),
            ));
        }
        let keys = body.get("k").and_then(Json::as_array).ok_or_else(invalid)?;
        if keys.len() != order.len() {
            return Err(invalid());
        }
        let mut values = Vec::with_capacity(keys.len());
        for (term, json) in order.iter().zip(keys) {
            values.push(decode_stored(&table.columns[term.column].ty, json).map_err(|_| invalid())?);
        }
        Ok(Cursor { values })
    }

    /// Whether `row` sorts strictly after this cursor.
    pub fn precedes(&self, order: &[OrderTerm], row: &Row) -> bool {
        for (term, cursor_value) in order.iter().zip(&self.values) {
            match compare_term(term, row.get(term.column), cursor_value) {
                Ordering::Greater => return true,
                Ordering::Less => return false,
                Ordering::Equal => {}
            }
        }
        false
    }
}

fn order_signature(table: &Table, order: &[OrderTerm]) -> String {
    order
        .iter()
        .map(|t| {
            format!(
                "{}.{}.{}",
                table.columns[t.column].name,
                if t.descending { "desc" } else { "asc" },
                if t.nulls_first { "nullsfirst" } else { "nullslast" }
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A complete read request on one table.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub conditions: Vec<Condition>,
    pub order: Vec<OrderTerm>,
    pub limit: usize,
    pub after: Option<Cursor>,
}

impl Query {
    /// Every record of the table in primary-key order, up to `limit`.
    pub fn all(table: &Table, limit: usize) -> Query {
        Query { conditions: Vec::new(), order: parse_order(table, None).unwrap_or_default(), limit, after: None }
    }

    /// Whether a merged row belongs in the result (ignoring limit).
    pub fn matches(&self, row: &Row) -> bool {
        self.conditions.iter().all(|c| c.eval(row) == Some(true))
            && self.after.as_ref().is_none_or(|cursor| cursor.precedes(&self.order, row))
    }

    /// Parses the query-string parameters of a read request. Parameters in
    /// `reserved` (such as `provenance`) are left to the caller.
    pub fn parse(table: &Table, params: &[(String, String)], reserved: &[&str]) -> Result<Query, QueryError> {
        let mut conditions = Vec::new();
        let mut order_raw: Option<&str> = None;
        let mut limit = DEFAULT_LIMIT;
        let mut after_raw: Option<&str> = None;
        for (name, value) in params {
            match name.as_str() {
                "order" => order_raw = Some(value),
                "limit" => {
                    limit = value.parse::<usize>().map_err(|_| {
                        query_error(
                            "limit",
                            format!("limit must be a whole number from 1 to {MAX_LIMIT}; got {value:?}"),
                        )
                    })?;
                    if limit == 0 || limit > MAX_LIMIT {
                        return Err(query_error("limit", format!("limit must be from 1 to {MAX_LIMIT}; got {limit}")));
                    }
                }
                "after" => after_raw = Some(value),
                "offset" => {
                    return Err(query_error(
                        "offset",
                        "offset is not supported because it skips or repeats records while the buffer drains; use the next cursor with after=",
                    ));
                }
                name if reserved.contains(&name) => {}
                name => conditions.push(Condition::parse(table, name, value)?),
            }
        }
        let order = parse_order(table, order_raw)?;
        let after = after_raw.map(|token| Cursor::decode(table, &order, token)).transpose()?;
        Ok(Query { conditions, order, limit, after })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_matches_postgres_wildcards() {
        assert!(like_match("rfsoc01_drone2", "rfsoc%", false));
        assert!(like_match("abc", "a_c", false));
        assert!(!like_match("abc", "a_", false));
        assert!(like_match("a%c", "a\\%c", false));
        assert!(!like_match("abc", "a\\%c", false));
        assert!(like_match("", "%", false));
        assert!(!like_match("", "_", false));
        assert!(like_match("über", "_ber", false));
        assert!(like_match("ABC", "a%", true));
        assert!(!like_match("ABC", "a%", false));
        assert!(like_match("aXbXc", "%b%c", false));
        assert!(like_match("mississippi", "%iss%pi", false));
    }

    #[test]
    fn in_list_handles_quotes() {
        assert_eq!(parse_in_list("(a,b,c)").unwrap(), vec!["a", "b", "c"]);
        assert_eq!(parse_in_list("(\"a,b\",c)").unwrap(), vec!["a,b", "c"]);
        assert_eq!(parse_in_list("(\"say \\\"hi\\\"\")").unwrap(), vec!["say \"hi\""]);
        assert_eq!(parse_in_list("(a,,b)").unwrap(), vec!["a", "", "b"]);
        assert!(parse_in_list("a,b").is_err());
        assert!(parse_in_list("()").is_err());
        assert!(parse_in_list("(\"a\"b)").is_err());
    }
}
