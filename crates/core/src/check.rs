//! `CHECK` constraints evaluated in Rust, for the common forms PostgreSQL
//! prints them in: comparisons of columns with literals or other columns,
//! `= ANY (ARRAY[...])`, `IS [NOT] NULL`, `AND`, `OR` and `NOT`.
//!
//! [`CheckExpr::compile`] accepts an expression only when evaluating it here
//! gives PostgreSQL's answer: every literal must parse as the type of the
//! column it is compared with, columns compared with each other must share
//! a type, and text may be tested for equality only (an order on text would
//! depend on the column's collation). Anything else, such as a function
//! call, is left to PostgreSQL.

use std::cmp::Ordering;

use crate::row::{Row, base_type};
use crate::schema::Table;
use crate::types::ColumnType;
use crate::value::Value;

/// A compiled check expression.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckExpr {
    And(Vec<CheckExpr>),
    Or(Vec<CheckExpr>),
    Not(Box<CheckExpr>),
    IsNull { column: usize, negated: bool },
    Compare { left: Operand, op: Comparison, right: Operand },
    AnyOf { column: usize, values: Vec<Value> },
}

/// One side of a comparison: a column or a constant already typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Column(usize),
    Constant(Value),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    OpenBracket,
    CloseBracket,
    Comma,
    Cast(String),
    Word(String),
    Text(String),
    Number(String),
    Operator(String),
}

/// Splits an expression as `pg_get_constraintdef` prints it into tokens.
fn tokenize(text: &str) -> Option<Vec<Token>> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' => i += 1,
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            '[' => {
                tokens.push(Token::OpenBracket);
                i += 1;
            }
            ']' => {
                tokens.push(Token::CloseBracket);
                i += 1;
            }
            ',' => {
                tokens.push(Token::Comma);
                i += 1;
            }
            '\'' => {
                let mut value = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            value.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            value.push(*ch);
                            i += 1;
                        }
                        None => return None,
                    }
                }
                tokens.push(Token::Text(value));
            }
            ':' if chars.get(i + 1) == Some(&':') => {
                // A cast. Multi-word type names continue with these words,
                // as in "double precision" or "timestamp with time zone".
                const CONTINUATIONS: [&str; 6] = ["precision", "varying", "with", "without", "time", "zone"];
                i += 2;
                let mut words: Vec<String> = Vec::new();
                loop {
                    let mut j = i;
                    while j < chars.len() && chars[j] == ' ' {
                        j += 1;
                    }
                    let start = j;
                    while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_' || chars[j] == '"') {
                        j += 1;
                    }
                    let word: String = chars[start..j].iter().collect();
                    let continues = words.is_empty() || CONTINUATIONS.contains(&word.as_str());
                    if word.is_empty() || !continues || (words.is_empty() && start != i) {
                        break;
                    }
                    words.push(word);
                    i = j;
                }
                if words.is_empty() {
                    return None;
                }
                tokens.push(Token::Cast(words.join(" ")));
            }
            '<' | '>' | '=' | '!' => {
                let mut op = c.to_string();
                if let Some(next) = chars.get(i + 1)
                    && (*next == '=' || (c == '<' && *next == '>'))
                {
                    op.push(*next);
                    i += 1;
                }
                i += 1;
                tokens.push(Token::Operator(op));
            }
            '-' | '0'..='9' => {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_digit() || chars[i] == '.' || chars[i] == 'e' || chars[i] == 'E')
                {
                    i += 1;
                }
                tokens.push(Token::Number(chars[start..i].iter().collect()));
            }
            '"' => {
                let mut name = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        Some('"') if chars.get(i + 1) == Some(&'"') => {
                            name.push('"');
                            i += 2;
                        }
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            name.push(*ch);
                            i += 1;
                        }
                        None => return None,
                    }
                }
                tokens.push(Token::Word(format!("\"{name}")));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                tokens.push(Token::Word(chars[start..i].iter().collect()));
            }
            _ => return None,
        }
    }
    Some(tokens)
}

/// An operand before it is typed: a column, or literal text.
#[derive(Debug, Clone)]
enum Raw {
    Column(usize),
    Literal(String),
}

struct Parser<'t> {
    tokens: Vec<Token>,
    position: usize,
    table: &'t Table,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.position).cloned();
        self.position += 1;
        token
    }

    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Word(w)) if w == word) {
            self.position += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: Token) -> Option<()> {
        (self.next()? == token).then_some(())
    }

    fn or(&mut self) -> Option<CheckExpr> {
        let mut parts = vec![self.and()?];
        while self.keyword("OR") {
            parts.push(self.and()?);
        }
        Some(if parts.len() == 1 { parts.remove(0) } else { CheckExpr::Or(parts) })
    }

    fn and(&mut self) -> Option<CheckExpr> {
        let mut parts = vec![self.not()?];
        while self.keyword("AND") {
            parts.push(self.not()?);
        }
        Some(if parts.len() == 1 { parts.remove(0) } else { CheckExpr::And(parts) })
    }

    fn not(&mut self) -> Option<CheckExpr> {
        if self.keyword("NOT") {
            return Some(CheckExpr::Not(Box::new(self.not()?)));
        }
        self.predicate()
    }

    /// A parenthesized expression, or a comparison, null test or ANY.
    fn predicate(&mut self) -> Option<CheckExpr> {
        let start = self.position;
        if self.peek() == Some(&Token::Open) {
            // Either a parenthesized expression or a parenthesized operand
            // such as "(0)::double precision"; try the expression first.
            self.position += 1;
            if let Some(inner) = self.or()
                && self.peek() == Some(&Token::Close)
            {
                self.position += 1;
                if !matches!(self.peek(), Some(Token::Cast(_)) | Some(Token::Operator(_))) {
                    return Some(inner);
                }
            }
            self.position = start;
        }
        let left = self.operand()?;
        if self.keyword("IS") {
            let negated = self.keyword("NOT");
            if !self.keyword("NULL") {
                return None;
            }
            let Raw::Column(column) = left else { return None };
            return Some(CheckExpr::IsNull { column, negated });
        }
        let op = match self.next()? {
            Token::Operator(op) => match op.as_str() {
                "=" => Comparison::Eq,
                "<>" | "!=" => Comparison::Ne,
                "<" => Comparison::Lt,
                "<=" => Comparison::Le,
                ">" => Comparison::Gt,
                ">=" => Comparison::Ge,
                _ => return None,
            },
            _ => return None,
        };
        if self.keyword("ANY") {
            if op != Comparison::Eq {
                return None;
            }
            self.expect(Token::Open)?;
            if !self.keyword("ARRAY") {
                return None;
            }
            self.expect(Token::OpenBracket)?;
            let mut literals = Vec::new();
            loop {
                match self.operand()? {
                    Raw::Literal(text) => literals.push(text),
                    Raw::Column(_) => return None,
                }
                match self.next()? {
                    Token::Comma => {}
                    Token::CloseBracket => break,
                    _ => return None,
                }
            }
            if let Some(Token::Cast(_)) = self.peek() {
                self.position += 1;
            }
            self.expect(Token::Close)?;
            let Raw::Column(column) = left else { return None };
            let ty = equality_type(&self.table.columns[column].ty)?;
            let values = literals.iter().map(|t| ty.parse_text(t).ok()).collect::<Option<Vec<_>>>()?;
            return Some(CheckExpr::AnyOf { column, values });
        }
        let right = self.operand()?;
        self.typed_comparison(left, op, right)
    }

    /// A column, or a literal with any number of casts and brackets.
    fn operand(&mut self) -> Option<Raw> {
        let raw = match self.next()? {
            Token::Open => {
                let inner = self.operand()?;
                self.expect(Token::Close)?;
                inner
            }
            Token::Text(text) => Raw::Literal(text),
            Token::Number(number) => Raw::Literal(number),
            Token::Word(word) if word == "true" || word == "false" => Raw::Literal(word),
            Token::Word(word) => {
                let name = word.strip_prefix('"').unwrap_or(&word);
                Raw::Column(self.table.column_position(name)?)
            }
            _ => return None,
        };
        // Casts of literals are checked when the literal is parsed with the
        // column's type; a cast of a column would change its type.
        while let Some(Token::Cast(_)) = self.peek() {
            if matches!(raw, Raw::Column(_)) {
                return None;
            }
            self.position += 1;
        }
        Some(raw)
    }

    fn typed_comparison(&self, left: Raw, op: Comparison, right: Raw) -> Option<CheckExpr> {
        let column_type = |c: usize| base_type(&self.table.columns[c].ty);
        let (left, right) = match (left, right) {
            (Raw::Column(a), Raw::Column(b)) => {
                if column_type(a) != column_type(b) || !comparable(&column_type(a), op) {
                    return None;
                }
                (Operand::Column(a), Operand::Column(b))
            }
            (Raw::Column(c), Raw::Literal(text)) => {
                let ty = column_type(c);
                if !comparable(&ty, op) {
                    return None;
                }
                (Operand::Column(c), Operand::Constant(ty.parse_text(&text).ok()?))
            }
            (Raw::Literal(text), Raw::Column(c)) => {
                let ty = column_type(c);
                if !comparable(&ty, op) {
                    return None;
                }
                (Operand::Constant(ty.parse_text(&text).ok()?), Operand::Column(c))
            }
            (Raw::Literal(_), Raw::Literal(_)) => return None,
        };
        Some(CheckExpr::Compare { left, op, right })
    }
}

/// Whether the comparison gives PostgreSQL's answer when evaluated here.
fn comparable(ty: &ColumnType, op: Comparison) -> bool {
    match ty {
        ColumnType::Text | ColumnType::Varchar { .. } => matches!(op, Comparison::Eq | Comparison::Ne),
        ColumnType::Json | ColumnType::Jsonb | ColumnType::Unsupported { .. } => false,
        _ => true,
    }
}

fn equality_type(ty: &ColumnType) -> Option<ColumnType> {
    comparable(ty, Comparison::Eq).then(|| base_type(ty))
}

impl CheckExpr {
    /// Compiles the text inside `CHECK (...)`, or returns `None` when the
    /// expression must be left to PostgreSQL.
    pub fn compile(expression: &str, table: &Table) -> Option<CheckExpr> {
        let mut parser = Parser { tokens: tokenize(expression)?, position: 0, table };
        let expr = parser.or()?;
        (parser.position == parser.tokens.len()).then_some(expr)
    }

    /// Evaluates the expression with SQL's three-valued logic. A `CHECK`
    /// constraint fails only when the result is `Some(false)`.
    pub fn eval(&self, row: &Row) -> Option<bool> {
        match self {
            CheckExpr::And(parts) => {
                let mut unknown = false;
                for part in parts {
                    match part.eval(row) {
                        Some(false) => return Some(false),
                        None => unknown = true,
                        Some(true) => {}
                    }
                }
                if unknown { None } else { Some(true) }
            }
            CheckExpr::Or(parts) => {
                let mut unknown = false;
                for part in parts {
                    match part.eval(row) {
                        Some(true) => return Some(true),
                        None => unknown = true,
                        Some(false) => {}
                    }
                }
                if unknown { None } else { Some(false) }
            }
            CheckExpr::Not(inner) => inner.eval(row).map(|b| !b),
            CheckExpr::IsNull { column, negated } => Some(row.get(*column).is_null() != *negated),
            CheckExpr::Compare { left, op, right } => {
                let value = |o: &Operand| match o {
                    Operand::Column(c) => row.get(*c).clone(),
                    Operand::Constant(v) => v.clone(),
                };
                let (a, b) = (value(left), value(right));
                let ordering = if matches!(op, Comparison::Eq | Comparison::Ne) {
                    a.sql_eq(&b).map(|eq| if eq { Ordering::Equal } else { Ordering::Less })
                } else {
                    a.sql_cmp(&b)
                }?;
                Some(match op {
                    Comparison::Eq => ordering == Ordering::Equal,
                    Comparison::Ne => ordering != Ordering::Equal,
                    Comparison::Lt => ordering == Ordering::Less,
                    Comparison::Le => ordering != Ordering::Greater,
                    Comparison::Gt => ordering == Ordering::Greater,
                    Comparison::Ge => ordering != Ordering::Less,
                })
            }
            CheckExpr::AnyOf { column, values } => {
                let value = row.get(*column);
                if value.is_null() {
                    return None;
                }
                Some(values.iter().any(|v| value.sql_eq(v) == Some(true)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            "t".into(),
            "public".into(),
            vec![
                column("status", ColumnType::Text),
                column("start_time", ColumnType::Timestamptz),
                column("end_time", ColumnType::Timestamptz),
                column("dec_deg", ColumnType::Double),
                column("size_bytes", ColumnType::Int8),
                column("name", ColumnType::Text),
            ],
            None,
        )
    }

    fn row(
        status: Option<&str>,
        start: Option<i64>,
        end: Option<i64>,
        dec: Option<f64>,
        size: Option<i64>,
        name: &str,
    ) -> Row {
        Row(vec![
            status.map_or(Value::Null, |s| Value::Text(s.into())),
            start.map_or(Value::Null, Value::Timestamptz),
            end.map_or(Value::Null, Value::Timestamptz),
            dec.map_or(Value::Null, Value::Double),
            size.map_or(Value::Null, Value::Int),
            Value::Text(name.into()),
        ])
    }

    #[test]
    fn compiles_the_forms_postgres_prints() {
        let t = table();
        for expression in [
            "(((end_time IS NULL) OR (end_time >= start_time)))",
            "((status = ANY (ARRAY['running'::text, 'completed'::text, 'failed'::text])))",
            "(((dec_deg >= ('-90'::integer)::double precision) AND (dec_deg <= (90)::double precision)))",
            "((size_bytes >= 0))",
            "((name <> ''::text))",
            "(NOT (size_bytes < 0))",
        ] {
            assert!(CheckExpr::compile(expression, &t).is_some(), "{expression}");
        }
    }

    #[test]
    fn leaves_the_rest_to_postgres() {
        let t = table();
        for expression in [
            "((jsonb_typeof(status) = 'array'::text))",
            "((name ~ '^[a-z]+$'::text))",
            "((name > 'a'::text))",
            "((size_bytes >= 'many'::integer))",
            "((size_bytes::double precision > dec_deg))",
            "((unknown_column > 0))",
        ] {
            assert_eq!(CheckExpr::compile(expression, &t), None, "{expression}");
        }
    }

    #[test]
    fn evaluates_with_three_valued_logic() {
        let t = table();
        let time = CheckExpr::compile("(((end_time IS NULL) OR (end_time >= start_time)))", &t).unwrap();
        assert_eq!(time.eval(&row(None, Some(10), None, None, None, "x")), Some(true));
        assert_eq!(time.eval(&row(None, Some(10), Some(5), None, None, "x")), Some(false));
        assert_eq!(time.eval(&row(None, None, Some(5), None, None, "x")), None, "NULL start: unknown, so it passes");

        let status = CheckExpr::compile("((status = ANY (ARRAY['running'::text, 'completed'::text])))", &t).unwrap();
        assert_eq!(status.eval(&row(Some("running"), None, None, None, None, "x")), Some(true));
        assert_eq!(status.eval(&row(Some("paused"), None, None, None, None, "x")), Some(false));
        assert_eq!(status.eval(&row(None, None, None, None, None, "x")), None);

        let dec = CheckExpr::compile(
            "(((dec_deg >= ('-90'::integer)::double precision) AND (dec_deg <= (90)::double precision)))",
            &t,
        )
        .unwrap();
        assert_eq!(dec.eval(&row(None, None, None, Some(-90.0), None, "x")), Some(true));
        assert_eq!(dec.eval(&row(None, None, None, Some(-90.5), None, "x")), Some(false));
        assert_eq!(
            dec.eval(&row(None, None, None, Some(f64::NAN), None, "x")),
            Some(false),
            "NaN is above 90 in PostgreSQL"
        );

        let empty = CheckExpr::compile("((name <> ''::text))", &t).unwrap();
        assert_eq!(empty.eval(&row(None, None, None, None, None, "")), Some(false));
        assert_eq!(empty.eval(&row(None, None, None, None, None, "a")), Some(true));
    }

    #[test]
    fn quotes_inside_literals_are_kept() {
        let t = table();
        let check = CheckExpr::compile("((name <> 'it''s'::text))", &t).unwrap();
        assert_eq!(check.eval(&row(None, None, None, None, None, "it's")), Some(false));
    }
}
