//! Applies buffered transactions to main.
//!
//! A batch of transactions becomes one database transaction sent as one
//! pipeline: `BEGIN`, then for each transaction its ledger row and its
//! statements, then `COMMIT` and the read of the commit LSN. Over a link
//! with a long round trip, a batch costs one round trip, not one per
//! statement.
//!
//! Exactly-once: each transaction's ledger row is inserted in the same
//! database transaction as its effect. A transaction that already has a
//! ledger row (a replay after a crash or a lost COMMIT reply) fails the
//! insert with a unique violation; the writer then reads the ledger, skips
//! what was applied and applies the rest.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, join_all};
use opsbuffer_core::lsn::Lsn;
use opsbuffer_core::row::{Patch, Row, patch_to_json};
use opsbuffer_core::schema::{Table, quote_ident};
use opsbuffer_core::value::Value;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Statement};
use uuid::Uuid;

use crate::connect::{PgError, PgSettings, connect, describe, is_transient_sqlstate};

/// Inserts the ledger row; its primary key makes a second insert of the same
/// transaction fail, which is how replays are detected.
const LEDGER_INSERT_SQL: &str = "INSERT INTO opsbuffer_ledger (transaction_id, site_name, sequence) VALUES ($1::text::uuid, $2::text, $3::text::bigint)";

/// Which of the given transactions the ledger already holds.
const LEDGER_LOOKUP_SQL: &str =
    "SELECT transaction_id::text FROM opsbuffer_ledger WHERE transaction_id = ANY($1::text[]::uuid[])";

/// The WAL write position, read after COMMIT returned: the commit record
/// lies before it, so a replica that replayed up to it shows the commit.
const COMMIT_LSN_SQL: &str = "SELECT pg_current_wal_lsn()::text";

/// The name of the ledger's primary-key constraint, whose violation means
/// "already applied".
const LEDGER_KEY: &str = "opsbuffer_ledger_pkey";

/// One statement of a transaction.
#[derive(Debug, Clone)]
pub enum Operation {
    /// New complete rows of one table.
    Insert { table: Arc<Table>, rows: Vec<Row> },
    /// New values for some columns of one record.
    Update { table: Arc<Table>, key: Value, patch: Patch },
    /// Removal of one record.
    Delete { table: Arc<Table>, key: Value },
}

/// A buffered transaction, ready to apply.
#[derive(Debug, Clone)]
pub struct Transaction {
    pub id: Uuid,
    /// The acknowledgement sequence number, recorded in the ledger.
    pub sequence: u64,
    pub operations: Vec<Operation>,
}

/// Whether retrying can fix a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The connection failed, timed out, or main cannot write right now.
    Transient,
    /// Main rejected the data (constraint, type, missing record).
    Permanent,
}

/// A failed batch.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApplyError {
    pub class: ErrorClass,
    /// The index in the batch of the transaction whose statement failed,
    /// when the failure belongs to one.
    pub transaction: Option<usize>,
    pub sqlstate: Option<String>,
    pub message: String,
}

impl ApplyError {
    fn from_pg(error: &PgError, transaction: Option<usize>) -> ApplyError {
        let sqlstate = error.sqlstate().map(|s| s.code().to_owned());
        let class = if error.is_transient() { ErrorClass::Transient } else { ErrorClass::Permanent };
        ApplyError { class, transaction, sqlstate, message: error.to_string() }
    }
}

/// The result of a committed batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The WAL position read after COMMIT returned.
    pub commit_lsn: Lsn,
    /// Transactions the ledger already held, so their effect was skipped.
    pub already_applied: Vec<Uuid>,
}

/// What one pipelined request of a batch stands for, to attribute errors.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Begin,
    Ledger(usize),
    Statement(usize),
    Commit,
    CommitLsn,
}

/// A dedicated connection to main that applies batches.
pub struct Writer {
    settings: PgSettings,
    site_name: String,
    /// Longest a whole batch may take, from BEGIN to the commit LSN.
    batch_timeout: Duration,
    connection: Option<Connection>,
}

struct Connection {
    client: Client,
    driver: JoinHandle<()>,
    statements: HashMap<String, Statement>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Writer {
    pub fn new(settings: PgSettings, site_name: String, batch_timeout: Duration) -> Writer {
        Writer { settings, site_name, batch_timeout, connection: None }
    }

    /// Opens the connection to main unless one is open, so the drainer
    /// learns that main is unreachable before it reads a batch for nothing.
    pub async fn ensure_connected(&mut self) -> Result<(), ApplyError> {
        self.connection().await.map(|_| ()).map_err(|e| ApplyError::from_pg(&e, None))
    }

    /// Drops the connection, so the next batch reconnects.
    pub fn disconnect(&mut self) {
        self.connection = None;
    }

    /// Applies `batch` in order in one database transaction. On a replayed
    /// transaction it reads the ledger and applies only the rest.
    pub async fn apply(&mut self, batch: &[Transaction]) -> Result<Applied, ApplyError> {
        match self.apply_pipelined(batch).await {
            Err(error) if error.sqlstate.as_deref() == Some("23505") && error.message.contains(LEDGER_KEY) => {
                tracing::info!(transactions = batch.len(), "ledger already holds part of the batch; applying the rest");
                let done = self.ledger_lookup(batch).await?;
                let rest: Vec<Transaction> = batch.iter().filter(|t| !done.contains(&t.id)).cloned().collect();
                let mut applied =
                    if rest.is_empty() { self.commit_lsn_only().await? } else { self.apply_pipelined(&rest).await? };
                applied.already_applied = done;
                Ok(applied)
            }
            other => other,
        }
    }

    async fn apply_pipelined(&mut self, batch: &[Transaction]) -> Result<Applied, ApplyError> {
        let timeout = self.batch_timeout;
        let result = tokio::time::timeout(timeout, self.apply_pipelined_inner(batch)).await;
        match result {
            Ok(Ok(applied)) => Ok(applied),
            Ok(Err(error)) => {
                if error.class == ErrorClass::Transient {
                    self.disconnect();
                }
                Err(error)
            }
            Err(_) => {
                // The COMMIT may or may not have happened; the ledger tells on retry.
                self.disconnect();
                Err(ApplyError {
                    class: ErrorClass::Transient,
                    transaction: None,
                    sqlstate: None,
                    message: format!("main: applying a batch of {} timed out after {timeout:?}", batch.len()),
                })
            }
        }
    }

    async fn apply_pipelined_inner(&mut self, batch: &[Transaction]) -> Result<Applied, ApplyError> {
        let site = self.site_name.clone();
        let sqls = batch_sql(batch);
        let connection = self.connection().await.map_err(|e| ApplyError::from_pg(&e, None))?;
        prepare_all(connection, sqls.iter().map(|(_, s)| s.as_str()))
            .await
            .map_err(|e| ApplyError::from_pg(&e, None))?;

        // Build the pipeline; every future is polled once in order by
        // join_all, which sends the requests in that order.
        let client = &connection.client;
        let statement = |sql: &str| connection.statements[sql].clone();
        let mut slots: Vec<Slot> = Vec::new();
        let mut requests: Vec<BoxFuture<'_, Result<Option<String>, tokio_postgres::Error>>> = Vec::new();

        let begin = statement("BEGIN");
        slots.push(Slot::Begin);
        requests.push(Box::pin(async move { client.execute(&begin, &[]).await.map(|_| None) }));

        let mut sql_iter = sqls.iter();
        for (index, transaction) in batch.iter().enumerate() {
            let ledger = statement(LEDGER_INSERT_SQL);
            let params = (transaction.id.to_string(), site.clone(), transaction.sequence.to_string());
            slots.push(Slot::Ledger(index));
            requests.push(Box::pin(async move {
                client.execute(&ledger, &[&params.0, &params.1, &params.2]).await.map(|_| None)
            }));
            for operation in &transaction.operations {
                let (_, sql) = sql_iter.next().expect("one SQL text per operation");
                let prepared = statement(sql);
                let params = operation_params(operation);
                slots.push(Slot::Statement(index));
                requests.push(Box::pin(async move {
                    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                        params.iter().map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
                    client.execute(&prepared, &refs).await.map(|_| None)
                }));
            }
        }

        let commit = statement("COMMIT");
        slots.push(Slot::Commit);
        requests.push(Box::pin(async move { client.execute(&commit, &[]).await.map(|_| None) }));
        let lsn = statement(COMMIT_LSN_SQL);
        slots.push(Slot::CommitLsn);
        requests
            .push(Box::pin(async move { client.query_one(&lsn, &[]).await.map(|r| r.get::<_, Option<String>>(0)) }));

        let results = join_all(requests).await;

        // The first error is the cause; later ones only say the transaction
        // was already aborted.
        let mut commit_lsn = None;
        for (slot, result) in slots.iter().zip(results) {
            match result {
                Err(error) => {
                    let transaction = match slot {
                        Slot::Ledger(i) | Slot::Statement(i) => Some(*i),
                        _ => None,
                    };
                    return Err(classify(&error, transaction));
                }
                Ok(text) => {
                    if let Slot::CommitLsn = slot {
                        commit_lsn = text;
                    }
                }
            }
        }
        let commit_lsn = parse_lsn(commit_lsn)?;
        Ok(Applied { commit_lsn, already_applied: Vec::new() })
    }

    async fn ledger_lookup(&mut self, batch: &[Transaction]) -> Result<Vec<Uuid>, ApplyError> {
        let ids: Vec<String> = batch.iter().map(|t| t.id.to_string()).collect();
        let timeout = self.batch_timeout;
        let connection = self.connection().await.map_err(|e| ApplyError::from_pg(&e, None))?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&ids];
        let query = connection.client.query(LEDGER_LOOKUP_SQL, &params);
        let rows = match tokio::time::timeout(timeout, query).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(error)) => {
                let error = classify(&error, None);
                self.disconnect();
                return Err(error);
            }
            Err(_) => {
                self.disconnect();
                return Err(ApplyError {
                    class: ErrorClass::Transient,
                    transaction: None,
                    sqlstate: None,
                    message: format!("main: reading the ledger timed out after {timeout:?}"),
                });
            }
        };
        Ok(rows.iter().filter_map(|r| r.get::<_, String>(0).parse().ok()).collect())
    }

    async fn commit_lsn_only(&mut self) -> Result<Applied, ApplyError> {
        let timeout = self.batch_timeout;
        let connection = self.connection().await.map_err(|e| ApplyError::from_pg(&e, None))?;
        let query = connection.client.query_one(COMMIT_LSN_SQL, &[]);
        match tokio::time::timeout(timeout, query).await {
            Ok(Ok(row)) => Ok(Applied { commit_lsn: parse_lsn(row.get(0))?, already_applied: Vec::new() }),
            Ok(Err(error)) => {
                self.disconnect();
                Err(classify(&error, None))
            }
            Err(_) => {
                self.disconnect();
                Err(ApplyError {
                    class: ErrorClass::Transient,
                    transaction: None,
                    sqlstate: None,
                    message: format!("main: reading the commit LSN timed out after {timeout:?}"),
                })
            }
        }
    }

    async fn connection(&mut self) -> Result<&mut Connection, PgError> {
        if self.connection.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.connection = None;
        }
        if self.connection.is_none() {
            let (client, driver) = connect(&self.settings).await?;
            let mut connection = Connection { client, driver, statements: HashMap::new() };
            prepare_all(&mut connection, ["BEGIN", "COMMIT", LEDGER_INSERT_SQL, COMMIT_LSN_SQL]).await?;
            self.connection = Some(connection);
        }
        Ok(self.connection.as_mut().expect("connected above"))
    }
}

/// Prepares every statement the connection does not have yet, pipelined.
async fn prepare_all<'s>(connection: &mut Connection, sqls: impl IntoIterator<Item = &'s str>) -> Result<(), PgError> {
    let mut missing: Vec<&str> = Vec::new();
    for sql in sqls {
        if !connection.statements.contains_key(sql) && !missing.contains(&sql) {
            missing.push(sql);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let client = &connection.client;
    let prepared = join_all(missing.iter().map(|sql| client.prepare(sql))).await;
    for (sql, result) in missing.into_iter().zip(prepared) {
        let statement = result.map_err(|e| PgError::db("main", e))?;
        connection.statements.insert(sql.to_owned(), statement);
    }
    Ok(())
}

fn classify(error: &tokio_postgres::Error, transaction: Option<usize>) -> ApplyError {
    let sqlstate = error.code().map(|c| c.code().to_owned());
    let class = match &sqlstate {
        None => ErrorClass::Transient,
        Some(code) if is_transient_sqlstate(code) => ErrorClass::Transient,
        Some(_) => ErrorClass::Permanent,
    };
    ApplyError { class, transaction, sqlstate, message: format!("main: {}", describe(error)) }
}

fn parse_lsn(text: Option<String>) -> Result<Lsn, ApplyError> {
    let text = text.unwrap_or_default();
    text.parse().map_err(|_| ApplyError {
        class: ErrorClass::Transient,
        transaction: None,
        sqlstate: None,
        message: format!("main returned an unreadable commit LSN {text:?}"),
    })
}

/// The SQL text of each operation of the batch, in order, paired with the
/// transaction index.
fn batch_sql(batch: &[Transaction]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (index, transaction) in batch.iter().enumerate() {
        for operation in &transaction.operations {
            out.push((index, operation_sql(operation)));
        }
    }
    out
}

/// The columns clients may write, which a create lists explicitly.
fn writable_columns(table: &Table) -> Vec<String> {
    table.columns.iter().filter(|c| !c.generated_always).map(|c| quote_ident(&c.name)).collect()
}

/// The SQL of an operation. Values travel as one JSON parameter that
/// `json_populate_record(set)` converts with the column types, so a
/// statement's text depends only on the table and the changed columns.
pub fn operation_sql(operation: &Operation) -> String {
    match operation {
        Operation::Insert { table, .. } => {
            let columns = writable_columns(table).join(", ");
            format!(
                "INSERT INTO {} ({columns}) SELECT {columns} FROM json_populate_recordset(NULL::{}, $1::text::json)",
                table.qualified_name(),
                table.qualified_name()
            )
        }
        Operation::Update { table, patch, .. } => {
            let pk = quote_ident(&table.primary_key_column().expect("updates need a primary key").name);
            let assignments: Vec<String> = patch
                .iter()
                .map(|(i, _)| {
                    let name = quote_ident(&table.columns[*i].name);
                    format!("{name} = r.{name}")
                })
                .collect();
            format!(
                "WITH changed AS (UPDATE {} AS t SET {} FROM json_populate_record(NULL::{}, $1::text::json) AS r \
                 WHERE t.{pk} = r.{pk} RETURNING 1) \
                 SELECT opsbuffer_expect_rows((SELECT count(*) FROM changed), 1, $2::text)",
                table.qualified_name(),
                assignments.join(", "),
                table.qualified_name()
            )
        }
        Operation::Delete { table, .. } => {
            let pk = table.primary_key_column().expect("deletes need a primary key");
            format!(
                "WITH changed AS (DELETE FROM {} WHERE {} = $1::text::{} RETURNING 1) \
                 SELECT opsbuffer_expect_rows((SELECT count(*) FROM changed), 1, $2::text)",
                table.qualified_name(),
                quote_ident(&pk.name),
                opsbuffer_core::row::base_sql_type(&pk.ty)
            )
        }
    }
}

/// The parameters of an operation, all as text.
pub fn operation_params(operation: &Operation) -> Vec<String> {
    match operation {
        Operation::Insert { table, rows } => {
            let array: Vec<serde_json::Value> =
                rows.iter().map(|r| serde_json::Value::Object(r.to_json(table))).collect();
            vec![serde_json::Value::Array(array).to_string()]
        }
        Operation::Update { table, key, patch } => {
            let pk = table.primary_key.expect("updates need a primary key");
            let mut object = patch_to_json(table, patch);
            object.insert(table.columns[pk].name.clone(), key.to_json());
            vec![serde_json::Value::Object(object).to_string(), format!("update of {} {}", table.name, key.key_text())]
        }
        Operation::Delete { table, key } => {
            vec![key.key_text(), format!("delete of {} {}", table.name, key.key_text())]
        }
    }
}
