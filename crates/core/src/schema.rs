//! The schema registry: tables, columns, keys and constraints as read from
//! the local database's catalog. The PostgreSQL adapter fills it; everything
//! else looks tables up here instead of keeping hand-written lists.

use std::collections::HashMap;
use std::sync::Arc;

use crate::types::ColumnType;
use crate::value::Value;

/// What PostgreSQL does for a column the client leaves out of a create.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnDefault {
    /// No default: NULL, or an error for a `NOT NULL` column.
    None,
    /// A constant the registry evaluated once on local, e.g. `'running'`.
    Constant(Value),
    /// `now()` and its synonyms: the acknowledgement time is stored, and sent
    /// to main explicitly so both copies agree.
    Now,
    /// `CURRENT_DATE`: the UTC date of the acknowledgement.
    Today,
    /// `gen_random_uuid()` and similar: opsbuffer generates a UUIDv7.
    NewUuid,
    /// `nextval(...)` or an identity column: only main can assign it.
    MainGenerated,
    /// Any other expression, kept verbatim for the error message.
    Expression(String),
}

/// How a new record of a table gets its primary key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyGeneration {
    /// A uuid key: the client may send one, otherwise opsbuffer makes a UUIDv7.
    UuidV7,
    /// A key without a usable default: the client must send it.
    Client,
    /// A sequence or identity key: only main can assign it, so the table
    /// cannot be created through the buffer.
    Main,
    /// The table has no single-column primary key: it is read-only here.
    NoKey,
}

/// What a foreign key does when the referenced row is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignKeyAction {
    NoAction,
    Restrict,
    Cascade,
    SetNull,
    SetDefault,
}

impl ForeignKeyAction {
    /// Maps `pg_constraint.confdeltype`.
    pub fn from_pg(code: char) -> ForeignKeyAction {
        match code {
            'r' => ForeignKeyAction::Restrict,
            'c' => ForeignKeyAction::Cascade,
            'n' => ForeignKeyAction::SetNull,
            'd' => ForeignKeyAction::SetDefault,
            _ => ForeignKeyAction::NoAction,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    /// The type as `format_type()` prints it, used in SQL casts.
    pub sql_type: String,
    pub nullable: bool,
    pub default: ColumnDefault,
    /// A `GENERATED ALWAYS` column (identity or stored expression): clients
    /// may not write it.
    pub generated_always: bool,
}

/// A foreign key from `columns` of this table to `referenced_columns` of
/// `referenced_table`.
#[derive(Debug, Clone)]
pub struct ForeignKey {
    pub name: String,
    pub columns: Vec<usize>,
    pub referenced_table: String,
    pub referenced_columns: Vec<String>,
    pub on_delete: ForeignKeyAction,
}

/// A foreign key of another table that points at this one.
#[derive(Debug, Clone)]
pub struct ReferencingKey {
    pub table: String,
    pub constraint: String,
    pub columns: Vec<String>,
    pub referenced_columns: Vec<String>,
    pub on_delete: ForeignKeyAction,
}

/// A unique constraint or unique index (other than the primary key).
#[derive(Debug, Clone)]
pub struct UniqueKey {
    pub name: String,
    pub columns: Vec<usize>,
}

/// A `CHECK` constraint, as the SQL boolean expression inside `CHECK (...)`.
#[derive(Debug, Clone)]
pub struct CheckConstraint {
    pub name: String,
    pub expression: String,
    /// The expression compiled for evaluation in Rust, when its form allows;
    /// otherwise PostgreSQL on local evaluates it.
    pub compiled: Option<crate::check::CheckExpr>,
}

#[derive(Debug, Clone)]
pub struct Table {
    /// The SQL name, e.g. `executed_obs_unit`.
    pub name: String,
    /// The model name, e.g. `ExecutedObsUnit`.
    pub model_name: String,
    /// The schema the table lives in, e.g. `public`.
    pub schema: String,
    pub columns: Vec<Column>,
    /// Position of the single primary-key column, if the table has one.
    pub primary_key: Option<usize>,
    pub key_generation: KeyGeneration,
    pub foreign_keys: Vec<ForeignKey>,
    pub referenced_by: Vec<ReferencingKey>,
    pub unique_keys: Vec<UniqueKey>,
    pub checks: Vec<CheckConstraint>,
    column_index: HashMap<String, usize>,
}

impl Table {
    pub fn new(name: String, schema: String, columns: Vec<Column>, primary_key: Option<usize>) -> Table {
        let column_index = columns.iter().enumerate().map(|(i, c)| (c.name.clone(), i)).collect();
        let key_generation = match primary_key {
            None => KeyGeneration::NoKey,
            Some(pk) => {
                let column = &columns[pk];
                match (&column.ty, &column.default) {
                    (_, ColumnDefault::MainGenerated) => KeyGeneration::Main,
                    (ColumnType::Uuid, _) => KeyGeneration::UuidV7,
                    _ if column.generated_always => KeyGeneration::Main,
                    _ => KeyGeneration::Client,
                }
            }
        };
        Table {
            model_name: model_name_for(&name),
            name,
            schema,
            columns,
            primary_key,
            key_generation,
            foreign_keys: Vec::new(),
            referenced_by: Vec::new(),
            unique_keys: Vec::new(),
            checks: Vec::new(),
            column_index,
        }
    }

    pub fn column_position(&self, name: &str) -> Option<usize> {
        self.column_index.get(name).copied()
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.column_position(name).map(|i| &self.columns[i])
    }

    pub fn primary_key_column(&self) -> Option<&Column> {
        self.primary_key.map(|i| &self.columns[i])
    }

    /// The schema-qualified, quoted name for SQL.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// The column names, comma separated, for messages.
    pub fn column_list(&self) -> String {
        self.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// Quotes an SQL identifier, doubling embedded quotes.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `executed_obs_unit` → `ExecutedObsUnit`.
pub fn model_name_for(sql_name: &str) -> String {
    sql_name
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}

/// Every table opsbuffer serves, looked up by SQL or model name.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    tables: Vec<Arc<Table>>,
    by_name: HashMap<String, usize>,
}

impl Registry {
    /// Builds the registry and links each foreign key to the table it
    /// references (`referenced_by`).
    pub fn new(mut tables: Vec<Table>) -> Registry {
        let mut incoming: Vec<(String, ReferencingKey)> = Vec::new();
        for table in &tables {
            for fk in &table.foreign_keys {
                incoming.push((
                    fk.referenced_table.clone(),
                    ReferencingKey {
                        table: table.name.clone(),
                        constraint: fk.name.clone(),
                        columns: fk.columns.iter().map(|i| table.columns[*i].name.clone()).collect(),
                        referenced_columns: fk.referenced_columns.clone(),
                        on_delete: fk.on_delete,
                    },
                ));
            }
        }
        for (target, key) in incoming {
            if let Some(t) = tables.iter_mut().find(|t| t.name == target) {
                t.referenced_by.push(key);
            }
        }
        tables.sort_by(|a, b| a.name.cmp(&b.name));

        let mut by_name = HashMap::new();
        for (i, t) in tables.iter().enumerate() {
            by_name.insert(t.name.clone(), i);
            by_name.entry(t.model_name.clone()).or_insert(i);
        }
        Registry { tables: tables.into_iter().map(Arc::new).collect(), by_name }
    }

    /// Resolves a model name (`ExecutedObsUnit`) or SQL name
    /// (`executed_obs_unit`).
    pub fn table(&self, name: &str) -> Option<&Arc<Table>> {
        self.by_name.get(name).map(|i| &self.tables[*i])
    }

    pub fn tables(&self) -> &[Arc<Table>] {
        &self.tables
    }

    /// The same registry less the tables `hide` selects. Keys of the
    /// remaining tables keep their `referenced_by` entries.
    pub fn without(&self, hide: impl Fn(&Table) -> bool) -> Registry {
        let tables: Vec<Arc<Table>> = self.tables.iter().filter(|t| !hide(t)).cloned().collect();
        let mut by_name = HashMap::new();
        for (i, t) in tables.iter().enumerate() {
            by_name.insert(t.name.clone(), i);
            by_name.entry(t.model_name.clone()).or_insert(i);
        }
        Registry { tables, by_name }
    }

    /// The SQL names of all tables, for "unknown table" messages.
    pub fn table_names(&self) -> String {
        self.tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_are_pascal_case() {
        assert_eq!(model_name_for("executed_obs_unit"), "ExecutedObsUnit");
        assert_eq!(model_name_for("raw_data_file"), "RawDataFile");
        assert_eq!(model_name_for("instrument"), "Instrument");
    }

    #[test]
    fn quote_ident_doubles_quotes() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
