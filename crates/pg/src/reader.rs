//! Reads from a database (local, or main at a main site): rows for the
//! merged view, server status and LSNs, and `CHECK` constraint evaluation.
//! Every call runs under the configured timeout.

use std::collections::HashMap;
use std::time::Duration;

use deadpool_postgres::Pool;
use opsbuffer_core::lsn::Lsn;
use opsbuffer_core::row::Row;
use opsbuffer_core::schema::Table;
use opsbuffer_core::sql::{SqlParam, Statement};
use opsbuffer_core::value::Value;
use tokio_postgres::types::ToSql;

use crate::connect::{PgError, pooled, with_timeout};

/// Most prepared statements kept per connection before the cache is
/// cleared; query shapes vary with filters, so the cache must not grow
/// without bound.
const STATEMENT_CACHE_LIMIT: usize = 512;

/// Recovery state and WAL positions, read in one statement. On a server that
/// is not in recovery the replay columns are NULL and `lsn` is the current
/// write position.
const STATUS_SQL: &str = "
    SELECT pg_is_in_recovery(),
           (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text,
           CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END,
           EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp()))::float8";

/// What a server reports about its WAL.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerStatus {
    pub in_recovery: bool,
    /// The replay position on a standby, the write position otherwise.
    pub lsn: Lsn,
    pub replay_paused: bool,
    /// Seconds since the last replayed transaction committed on main; `None`
    /// when nothing was replayed since start-up or the server is no standby.
    pub last_replay_age_seconds: Option<f64>,
}

/// A pooled database to read from.
#[derive(Clone)]
pub struct Reader {
    pool: Pool,
    label: &'static str,
    timeout: Duration,
}

impl Reader {
    pub fn new(pool: Pool, label: &'static str, timeout: Duration) -> Reader {
        Reader { pool, label, timeout }
    }

    pub fn label(&self) -> &'static str {
        self.label
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Runs a rendered statement and decodes each row of `table`.
    pub async fn rows(&self, table: &Table, statement: &Statement) -> Result<Vec<Row>, PgError> {
        let label = self.label;
        with_timeout(label, &format!("reading {}", table.name), self.timeout, async {
            let client = pooled(&self.pool, label).await?;
            if client.statement_cache.size() > STATEMENT_CACHE_LIMIT {
                client.statement_cache.clear();
            }
            let prepared = client.prepare_cached(&statement.text).await.map_err(|e| PgError::db(label, e))?;
            let params = to_sql_params(&statement.params);
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
            let rows = client.query(&prepared, &refs).await.map_err(|e| PgError::db(label, e))?;
            rows.iter().map(|r| decode_row(label, table, r)).collect()
        })
        .await
    }

    /// Rows of `table` with the given primary keys, by key.
    pub async fn rows_by_key(&self, table: &Table, keys: &[String]) -> Result<HashMap<String, Row>, PgError> {
        let Some(statement) = opsbuffer_core::sql::select_by_keys(table, keys) else {
            return Ok(HashMap::new());
        };
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let pk = table.primary_key.unwrap_or_default();
        let rows = self.rows(table, &statement).await?;
        Ok(rows.into_iter().map(|r| (r.get(pk).key_text(), r)).collect())
    }

    /// Recovery state and WAL position.
    pub async fn status(&self) -> Result<ServerStatus, PgError> {
        let label = self.label;
        with_timeout(label, "reading the WAL position", self.timeout, async {
            let client = pooled(&self.pool, label).await?;
            let statement = client.prepare_cached(STATUS_SQL).await.map_err(|e| PgError::db(label, e))?;
            let row = client.query_one(&statement, &[]).await.map_err(|e| PgError::db(label, e))?;
            let lsn_text: Option<String> = row.get(1);
            let lsn = match lsn_text {
                Some(text) => text.parse().map_err(|e: opsbuffer_core::lsn::LsnParseError| PgError::Decode {
                    label,
                    message: e.to_string(),
                })?,
                None => Lsn::default(),
            };
            Ok(ServerStatus {
                in_recovery: row.get(0),
                lsn,
                replay_paused: row.get(2),
                last_replay_age_seconds: row.get(3),
            })
        })
        .await
    }

    /// Evaluates the `CHECK` constraints of `table` on `rows` and returns,
    /// for each failing row, its index and the name of the first failing
    /// constraint. PostgreSQL evaluates the constraint text itself, so the
    /// answer is the one main will give.
    pub async fn failing_checks(&self, table: &Table, rows: &[Row]) -> Result<Vec<(usize, String)>, PgError> {
        if table.checks.is_empty() || rows.is_empty() {
            return Ok(Vec::new());
        }
        let label = self.label;
        let tests: Vec<String> = table.checks.iter().map(|c| format!("({}) IS FALSE", c.expression)).collect();
        let sql = format!(
            "SELECT x.ordinality, {} FROM json_populate_recordset(NULL::{}, $1::text::json) WITH ORDINALITY AS x WHERE {}",
            tests.join(", "),
            table.qualified_name(),
            tests.join(" OR ")
        );
        let body = serde_json::Value::Array(rows.iter().map(|r| serde_json::Value::Object(r.to_json(table))).collect())
            .to_string();
        with_timeout(label, &format!("checking constraints of {}", table.name), self.timeout, async {
            let client = pooled(&self.pool, label).await?;
            let statement = client.prepare_cached(&sql).await.map_err(|e| PgError::db(label, e))?;
            let result = client.query(&statement, &[&body]).await.map_err(|e| PgError::db(label, e))?;
            let mut failures = Vec::new();
            for row in result {
                let ordinality: i64 = row.get(0);
                let failed = (0..table.checks.len()).find(|i| row.get::<_, Option<bool>>(i + 1) == Some(true));
                if let Some(i) = failed {
                    failures.push(((ordinality - 1) as usize, table.checks[i].name.clone()));
                }
            }
            Ok(failures)
        })
        .await
    }

    /// Whether the server answers a trivial query.
    pub async fn ping(&self) -> Result<(), PgError> {
        let label = self.label;
        with_timeout(label, "ping", self.timeout, async {
            let client = pooled(&self.pool, label).await?;
            client.simple_query("SELECT 1").await.map_err(|e| PgError::db(label, e))?;
            Ok(())
        })
        .await
    }
}

pub(crate) fn to_sql_params(params: &[SqlParam]) -> Vec<Box<dyn ToSql + Sync + Send>> {
    params
        .iter()
        .map(|p| -> Box<dyn ToSql + Sync + Send> {
            match p {
                SqlParam::Text(t) => Box::new(t.clone()),
                SqlParam::TextArray(items) => Box::new(items.clone()),
            }
        })
        .collect()
}

/// Decodes a row selected with [`opsbuffer_core::sql::select_list`].
fn decode_row(label: &'static str, table: &Table, row: &tokio_postgres::Row) -> Result<Row, PgError> {
    let mut values = Vec::with_capacity(table.columns.len());
    for (i, column) in table.columns.iter().enumerate() {
        let text: Option<&str> = row
            .try_get(i)
            .map_err(|e| PgError::Decode { label, message: format!("{}.{}: {e}", table.name, column.name) })?;
        let value = match text {
            None => Value::Null,
            Some(t) => column.ty.parse_text(t).map_err(|e| PgError::Decode {
                label,
                message: format!("{}.{} holds a value opsbuffer cannot read: {e}", table.name, column.name),
            })?,
        };
        values.push(value);
    }
    Ok(Row(values))
}
