//! Pure logic of opsbuffer, with no I/O so every rule can be tested
//! exhaustively.
//!
//! - [`value`]: typed column values and PostgreSQL's comparison rules.
//! - [`types`]: column types and the coercion of input into values.
//! - [`schema`]: the registry of tables, columns, keys and constraints.
//! - [`row`]: records as rows of values, and their JSON forms.
//! - [`overlay`]: pending changes of one record and how they merge.
//! - [`query`]: conditions, order, limit and keyset cursors.
//! - [`check`]: CHECK constraints evaluated in Rust.
//! - [`lsn`]: WAL positions.
//! - [`merge`]: one page of the merged view from local rows and overlays.
//! - [`sql`]: the SQL that reads local rows for a query.
//! - [`tx`]: client transactions, checked and turned into changes.

pub mod check;
pub mod lsn;
pub mod merge;
pub mod overlay;
pub mod query;
pub mod row;
pub mod schema;
pub mod sql;
pub mod tx;
pub mod types;
pub mod value;
