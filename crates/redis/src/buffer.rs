//! The typed interface to the buffer in Redis. Each method is one round
//! trip (a script or a pipeline) under the configured timeout.

use std::collections::HashMap;
use std::time::Duration;

use opsbuffer_core::lsn::Lsn;
use opsbuffer_core::overlay::ChangeKind;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Value};
use uuid::Uuid;

use crate::scripts;

/// Separates table and key in the names of touched records.
pub const RECORD_SEPARATOR: char = '\u{1f}';

/// The first character of the name of a record a transaction only refers
/// to. Transactions that only refer to one record do not block each other
/// when one of them is dead-lettered.
pub const REFERENCE_MARK: char = '~';

/// How long a replicated or discarded transaction stays readable through
/// `GET /transactions/{id}`.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// An error of the Redis adapter.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(String),
    #[error("Redis: {what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis returned an unexpected reply to {what}: {detail}")]
    Reply { what: &'static str, detail: String },
}

impl BufferError {
    /// Returns whether Redis may have run the command although no reply
    /// arrived: a timeout, a dropped or refused connection, or a server
    /// still loading its data after a restart.
    pub fn reply_may_be_lost(&self) -> bool {
        match self {
            BufferError::Timeout { .. } => true,
            BufferError::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
            }
            _ => false,
        }
    }
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct BufferSettings {
    pub url: String,
    /// The site name; every key starts with `{site}:`.
    pub site: String,
    pub timeout: Duration,
    /// How long replicated and discarded transactions stay readable.
    pub retention: Duration,
}

/// A check the acknowledge script makes against pending state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Precondition {
    pub table: String,
    pub key: String,
    pub rule: Rule,
    /// Whether local had the record when the request was checked.
    pub in_local: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// The record exists in the merged view and no delete is pending.
    Exists,
    /// No record has this key, locally or pending.
    Absent,
}

/// A counter of pending transactions that wrote something another
/// write's checks depend on: a value of a unique constraint (field
/// `u:{hash}`), a reference to a record (field `r:{key}`) or an update of
/// a record (field `w:{key}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guard {
    pub table: String,
    pub field: String,
}

/// The guards of a transaction: those its checks read, with the counts
/// read before the checks, and those it adds to when stored.
#[derive(Debug, Clone, Default)]
pub struct Guards {
    pub expected: Vec<(Guard, i64)>,
    pub added: Vec<(Guard, i64)>,
}

/// The checks and records of the acknowledge script besides the entries.
#[derive(Debug, Clone, Copy)]
pub struct AcknowledgeChecks<'a> {
    /// Records written (`table\x1fkey`) or only referenced
    /// (`~table\x1fkey`), held when the transaction is dead-lettered or
    /// blocked.
    pub touched: &'a [String],
    pub guards: &'a Guards,
    pub preconditions: &'a [Precondition],
}

/// Why a precondition failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreconditionFailure {
    /// A delete of the record is pending.
    Deleted,
    /// The record is neither in local nor created in the buffer.
    Missing,
    /// A pending delete of the key has not reached local yet.
    PendingDelete,
    /// A record with the key exists.
    Exists,
}

/// One overlay entry of a transaction being acknowledged.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub table: String,
    pub index: u32,
    pub kind: ChangeKind,
    pub key: String,
    /// The entry JSON (see `OverlayEntry::to_stored`).
    pub value: String,
}

/// The result of acknowledging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acknowledgement {
    /// Stored with this sequence number.
    Stored { sequence: u64 },
    /// The buffer holds `pending` transactions, at or above the limit.
    Full { pending: u64 },
    /// Precondition number `index` (from 0) failed.
    Rejected { index: usize, failure: PreconditionFailure },
    /// A transaction with this id exists already.
    Duplicate,
    /// An expected guard count changed since the checks read it.
    Stale,
}

/// What changed in one table's overlays since a cached version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotContent {
    Unchanged,
    /// Every entry: name and JSON.
    Full(Vec<(String, String)>),
    /// Changed entries: name and JSON, or `None` when removed.
    Delta(Vec<(String, Option<String>)>),
}

/// One table's part of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSnapshot {
    pub version: i64,
    pub epoch: i64,
    pub content: SnapshotContent,
}

/// Overlays of several tables read at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Changes whenever the buffer is recreated (a flushed Redis), so a
    /// cached version number from before cannot be mistaken for current.
    pub generation: String,
    pub tables: Vec<TableSnapshot>,
}

/// A transaction selected for draining, with its overlay entries in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedTransaction {
    pub id: Uuid,
    pub sequence: u64,
    /// (table, entry name, entry JSON).
    pub entries: Vec<(String, String, String)>,
}

/// The result of selecting a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Batch { transactions: Vec<SelectedTransaction>, blocked: Vec<(Uuid, String)> },
    LeaseLost,
}

/// The stored state of one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionRecord {
    pub id: Uuid,
    pub sequence: u64,
    /// `queued`, `blocked`, `applied`, `replicated`, `dead` or `discarded`.
    pub state: String,
    pub attempts: u64,
    pub error: Option<String>,
    pub sqlstate: Option<String>,
    pub commit_lsn: Option<Lsn>,
    pub blocked_by: Vec<Uuid>,
    pub created_ms: Option<i64>,
    pub applied_ms: Option<i64>,
    pub replicated_ms: Option<i64>,
    pub failed_ms: Option<i64>,
    /// (table, entry name) of each overlay entry.
    pub entries: Vec<(String, String)>,
}

/// Counts for `/health` and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BufferStats {
    pub queued: u64,
    pub blocked: u64,
    pub applied_waiting_replication: u64,
    pub dead: u64,
    pub oldest_queued_ms: Option<i64>,
    pub oldest_waiting_replication_ms: Option<i64>,
    /// The commit LSN of the oldest transaction waiting for replication.
    pub lowest_waiting_lsn: Option<Lsn>,
    pub highest_waiting_lsn: Option<Lsn>,
}

/// How Redis persists writes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Persistence {
    pub appendonly: Option<bool>,
    /// `always`, `everysec` or `no`; `None` when CONFIG is not permitted.
    pub appendfsync: Option<String>,
}

impl Persistence {
    /// Whether every acknowledged write is on disk before the reply.
    pub fn is_synchronous(&self) -> bool {
        self.appendonly == Some(true) && self.appendfsync.as_deref() == Some("always")
    }
}

/// The lease value `{holder}|{token}` of the drainer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease(pub String);

impl Lease {
    pub fn holder(&self) -> &str {
        self.0.rsplit_once('|').map(|(h, _)| h).unwrap_or(&self.0)
    }

    pub fn token(&self) -> u64 {
        self.0.rsplit_once('|').and_then(|(_, t)| t.parse().ok()).unwrap_or(0)
    }
}

/// The buffer of one site.
#[derive(Clone)]
pub struct Buffer {
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    retention: Duration,
}

impl Buffer {
    /// Creates the buffer client. The connection opens lazily and reconnects
    /// by itself, so this does not wait for Redis.
    pub fn new(settings: &BufferSettings) -> Result<Buffer, BufferError> {
        let client = redis::Client::open(settings.url.as_str()).map_err(|e| BufferError::InvalidUrl(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Buffer {
            connection,
            prefix: format!("{{{}}}:", settings.site),
            timeout: settings.timeout,
            retention: settings.retention,
        })
    }

    /// The key prefix `{site}:`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    async fn timed<T>(
        &self,
        what: &str,
        future: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, BufferError> {
        match tokio::time::timeout(self.timeout, future).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(BufferError::Timeout { what: what.to_owned(), after: self.timeout }),
        }
    }

    /// Checks the preconditions and stores the transaction, atomically.
    pub async fn acknowledge(
        &self,
        id: Uuid,
        now_ms: i64,
        max_pending: u64,
        checks: AcknowledgeChecks<'_>,
        entries: &[NewEntry],
    ) -> Result<Acknowledgement, BufferError> {
        let AcknowledgeChecks { touched, guards, preconditions } = checks;
        let added = if guards.added.is_empty() {
            String::new()
        } else {
            let list: Vec<(&str, &str, i64)> =
                guards.added.iter().map(|(g, n)| (g.table.as_str(), g.field.as_str(), *n)).collect();
            serde_json::to_string(&list).unwrap_or_default()
        };
        let mut invocation = scripts::ACKNOWLEDGE.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(id.to_string())
            .arg(now_ms)
            .arg(max_pending)
            .arg(serde_json::to_string(touched).unwrap_or_else(|_| "[]".into()))
            .arg(added)
            .arg(guards.expected.len());
        for (guard, count) in &guards.expected {
            invocation.arg(&guard.table).arg(&guard.field).arg(*count);
        }
        invocation.arg(preconditions.len());
        for p in preconditions {
            invocation.arg(&p.table).arg(&p.key).arg(match p.rule {
                Rule::Exists => "exists",
                Rule::Absent => "absent",
            });
            invocation.arg(if p.in_local { "1" } else { "0" });
        }
        for e in entries {
            invocation.arg(&e.table).arg(e.index).arg(e.kind.code().to_string()).arg(&e.key).arg(&e.value);
        }
        let mut connection = self.connection.clone();
        let reply: Value = self.timed("acknowledge", invocation.invoke_async(&mut connection)).await?;
        let items = array(reply, "acknowledge")?;
        let status = string(items.first(), "acknowledge")?;
        let number = int(items.get(1), "acknowledge")?;
        Ok(match status.as_str() {
            "ok" => Acknowledgement::Stored { sequence: number as u64 },
            "full" => Acknowledgement::Full { pending: number as u64 },
            "duplicate" => Acknowledgement::Duplicate,
            "stale" => Acknowledgement::Stale,
            "precondition" => {
                let reason = string(items.get(2), "acknowledge")?;
                let failure = match reason.as_str() {
                    "deleted" => PreconditionFailure::Deleted,
                    "missing" => PreconditionFailure::Missing,
                    "pending_delete" => PreconditionFailure::PendingDelete,
                    _ => PreconditionFailure::Exists,
                };
                Acknowledgement::Rejected { index: (number as usize).saturating_sub(1), failure }
            }
            other => {
                return Err(BufferError::Reply { what: "acknowledge", detail: other.to_owned() });
            }
        })
    }

    /// Reads the current counts of `guards`, 0 for an absent one.
    pub async fn guard_counts(&self, guards: &[Guard]) -> Result<Vec<i64>, BufferError> {
        if guards.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for guard in guards {
            pipe.hget(format!("{}guard:{}", self.prefix, guard.table), &guard.field);
        }
        let mut connection = self.connection.clone();
        let counts: Vec<Option<i64>> = self.timed("guard counts", pipe.query_async(&mut connection)).await?;
        Ok(counts.into_iter().map(|c| c.unwrap_or(0)).collect())
    }

    /// Reads the overlays of `tables` (name and cached version, -1 for
    /// none) and their drain epochs at one instant.
    pub async fn snapshot(&self, tables: &[(&str, i64)]) -> Result<Snapshot, BufferError> {
        let mut invocation = scripts::SNAPSHOT.prepare_invoke();
        invocation.arg(&self.prefix);
        for (table, version) in tables {
            invocation.arg(*table).arg(*version);
        }
        let mut connection = self.connection.clone();
        let reply: Value = self.timed("snapshot", invocation.invoke_async(&mut connection)).await?;
        let mut items = array(reply, "snapshot")?.into_iter();
        let generation = string(items.next().as_ref(), "snapshot")?;
        let mut out = Vec::with_capacity(tables.len());
        for item in items {
            let parts = array(item, "snapshot")?;
            let version = int(parts.first(), "snapshot")?;
            let epoch = int(parts.get(1), "snapshot")?;
            let kind = string(parts.get(2), "snapshot")?;
            let flat = match parts.into_iter().nth(3) {
                Some(v) => strings(v, "snapshot")?,
                None => Vec::new(),
            };
            let content = match kind.as_str() {
                "same" => SnapshotContent::Unchanged,
                "full" => SnapshotContent::Full(pairs(flat)),
                _ => SnapshotContent::Delta(
                    pairs(flat).into_iter().map(|(f, v)| (f, (!v.is_empty()).then_some(v))).collect(),
                ),
            };
            out.push(TableSnapshot { version, epoch, content });
        }
        Ok(Snapshot { generation, tables: out })
    }

    /// The current drain epochs of `tables`.
    pub async fn epochs(&self, tables: &[&str]) -> Result<Vec<i64>, BufferError> {
        let keys: Vec<String> = tables.iter().map(|t| self.key(&format!("epoch:{t}"))).collect();
        let mut connection = self.connection.clone();
        let values: Vec<Option<i64>> = if keys.len() == 1 {
            vec![self.timed("epochs", connection.get(&keys[0])).await?]
        } else {
            self.timed("epochs", connection.mget(&keys)).await?
        };
        Ok(values.into_iter().map(|v| v.unwrap_or(0)).collect())
    }

    /// Selects up to `limit` transactions to apply, blocking those that
    /// touch held records, and bumps the drain epochs of their tables.
    pub async fn select_batch(&self, lease: &Lease, limit: usize, now_ms: i64) -> Result<Selection, BufferError> {
        let mut invocation = scripts::SELECT_BATCH.prepare_invoke();
        invocation.arg(&self.prefix).arg(&lease.0).arg(limit).arg(now_ms);
        let mut connection = self.connection.clone();
        let reply: Value = self.timed("select_batch", invocation.invoke_async(&mut connection)).await?;
        let mut items = array(reply, "select_batch")?.into_iter();
        let status = string(items.next().as_ref(), "select_batch")?;
        if status == "lease_lost" {
            return Ok(Selection::LeaseLost);
        }
        let mut transactions = Vec::new();
        for entry in array(items.next().unwrap_or(Value::Nil), "select_batch")? {
            let mut parts = array(entry, "select_batch")?.into_iter();
            let id = uuid(&string(parts.next().as_ref(), "select_batch")?, "select_batch")?;
            let sequence = int(parts.next().as_ref(), "select_batch")? as u64;
            let flat = strings(parts.next().unwrap_or(Value::Nil), "select_batch")?;
            let entries =
                flat.chunks(3).filter(|c| c.len() == 3).map(|c| (c[0].clone(), c[1].clone(), c[2].clone())).collect();
            transactions.push(SelectedTransaction { id, sequence, entries });
        }
        let mut blocked = Vec::new();
        for entry in array(items.next().unwrap_or(Value::Nil), "select_batch")? {
            let parts = strings(entry, "select_batch")?;
            if let [id, by] = parts.as_slice() {
                blocked.push((uuid(id, "select_batch")?, by.clone()));
            }
        }
        Ok(Selection::Batch { transactions, blocked })
    }

    /// Marks transactions applied at `commit_lsn`. Returns false when the
    /// lease was lost.
    pub async fn mark_applied(
        &self,
        lease: &Lease,
        ids: &[Uuid],
        commit_lsn: Lsn,
        now_ms: i64,
    ) -> Result<bool, BufferError> {
        let mut invocation = scripts::MARK_APPLIED.prepare_invoke();
        invocation.arg(&self.prefix).arg(&lease.0).arg(commit_lsn.to_sortable()).arg(now_ms);
        for id in ids {
            invocation.arg(id.to_string());
        }
        let mut connection = self.connection.clone();
        let reply: Value = self.timed("mark_applied", invocation.invoke_async(&mut connection)).await?;
        Ok(string(array(reply, "mark_applied")?.first(), "mark_applied")? == "ok")
    }

    /// Dead-letters a transaction with main's error. Returns false when the
    /// lease was lost.
    pub async fn dead_letter(
        &self,
        lease: &Lease,
        id: Uuid,
        error: &str,
        sqlstate: &str,
        now_ms: i64,
    ) -> Result<bool, BufferError> {
        let mut invocation = scripts::DEAD_LETTER.prepare_invoke();
        invocation.arg(&self.prefix).arg(&lease.0).arg(id.to_string()).arg(error).arg(sqlstate).arg(now_ms);
        let mut connection = self.connection.clone();
        let reply: Value = self.timed("dead_letter", invocation.invoke_async(&mut connection)).await?;
        let status = string(array(reply, "dead_letter")?.first(), "dead_letter")?;
        Ok(status != "lease_lost")
    }

    /// Counts a failed attempt on each transaction and keeps the error.
    pub async fn record_attempt(&self, ids: &[Uuid], error: &str) -> Result<(), BufferError> {
        let mut pipe = redis::pipe();
        for id in ids {
            let key = self.key(&format!("tx:{id}"));
            pipe.hincr(&key, "attempts", 1).ignore();
            pipe.hset(&key, "last_error", error).ignore();
        }
        let mut connection = self.connection.clone();
        self.timed("record_attempt", pipe.query_async::<()>(&mut connection)).await
    }

    /// Evicts up to `limit` transactions replicated at or below
    /// `replay_lsn` and returns their ids.
    pub async fn evict(&self, replay_lsn: Lsn, limit: usize, now_ms: i64) -> Result<Vec<Uuid>, BufferError> {
        let mut invocation = scripts::EVICT.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(replay_lsn.to_sortable())
            .arg(limit)
            .arg(now_ms)
            .arg(self.retention.as_secs().max(1));
        let mut connection = self.connection.clone();
        let reply: Value = self.timed("evict", invocation.invoke_async(&mut connection)).await?;
        strings(reply, "evict")?.iter().map(|s| uuid(s, "evict")).collect()
    }

    /// The stored state of one transaction, or `None` if unknown or expired.
    pub async fn transaction(&self, id: Uuid) -> Result<Option<TransactionRecord>, BufferError> {
        let mut connection = self.connection.clone();
        let fields: HashMap<String, String> =
            self.timed("transaction", connection.hgetall(self.key(&format!("tx:{id}")))).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        Ok(Some(parse_transaction(id, &fields)))
    }

    /// The states of several transactions, in the order asked.
    pub async fn transaction_states(&self, ids: &[Uuid]) -> Result<Vec<Option<String>>, BufferError> {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hget(self.key(&format!("tx:{id}")), "state");
        }
        let mut connection = self.connection.clone();
        self.timed("transaction_states", pipe.query_async(&mut connection)).await
    }

    /// Dead-lettered transactions, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<TransactionRecord>, BufferError> {
        self.members_of("dead").await
    }

    /// Blocked transactions, oldest first.
    pub async fn blocked(&self) -> Result<Vec<TransactionRecord>, BufferError> {
        self.members_of("blocked").await
    }

    async fn members_of(&self, set: &str) -> Result<Vec<TransactionRecord>, BufferError> {
        let mut connection = self.connection.clone();
        let ids: Vec<String> = self.timed("list", connection.zrange(self.key(set), 0, -1)).await?;
        // redis-rs rejects an empty pipeline with "empty command".
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(self.key(&format!("tx:{id}")));
        }
        let all: Vec<HashMap<String, String>> = self.timed("list", pipe.query_async(&mut connection)).await?;
        let mut out = Vec::new();
        for (id, fields) in ids.iter().zip(all) {
            if let Ok(id) = Uuid::parse_str(id) {
                out.push(parse_transaction(id, &fields));
            }
        }
        Ok(out)
    }

    /// Requeues a dead letter. Returns the number of blocked transactions
    /// released, or `None` if it is not dead-lettered.
    pub async fn retry_dead(&self, id: Uuid, now_ms: i64) -> Result<Option<u64>, BufferError> {
        let mut invocation = scripts::RETRY_DEAD.prepare_invoke();
        invocation.arg(&self.prefix).arg(id.to_string()).arg(now_ms);
        let mut connection = self.connection.clone();
        let reply: Value = self.timed("retry_dead", invocation.invoke_async(&mut connection)).await?;
        let items = array(reply, "retry_dead")?;
        if string(items.first(), "retry_dead")? != "ok" {
            return Ok(None);
        }
        Ok(Some(int(items.get(1), "retry_dead")? as u64))
    }

    /// Discards a dead letter and its overlays. Returns the number of
    /// blocked transactions released, or `None` if it is not dead-lettered.
    pub async fn discard_dead(&self, id: Uuid, now_ms: i64) -> Result<Option<u64>, BufferError> {
        let mut invocation = scripts::DISCARD_DEAD.prepare_invoke();
        invocation.arg(&self.prefix).arg(id.to_string()).arg(now_ms).arg(self.retention.as_secs().max(1));
        let mut connection = self.connection.clone();
        let reply: Value = self.timed("discard_dead", invocation.invoke_async(&mut connection)).await?;
        let items = array(reply, "discard_dead")?;
        if string(items.first(), "discard_dead")? != "ok" {
            return Ok(None);
        }
        Ok(Some(int(items.get(1), "discard_dead")? as u64))
    }

    /// How many transactions wait in the queue.
    pub async fn queue_length(&self) -> Result<u64, BufferError> {
        let mut connection = self.connection.clone();
        self.timed("ZCARD queue", connection.zcard(self.key("queue"))).await
    }

    /// Counts of each state and the ages of the oldest entries.
    pub async fn stats(&self) -> Result<BufferStats, BufferError> {
        let mut pipe = redis::pipe();
        pipe.zcard(self.key("queue"))
            .zcard(self.key("blocked"))
            .zcard(self.key("applied"))
            .zcard(self.key("dead"))
            .zrange(self.key("queue"), 0, 0)
            .zrange(self.key("applied"), 0, 0)
            .zrange(self.key("applied"), -1, -1);
        let mut connection = self.connection.clone();
        type Reply = (u64, u64, u64, u64, Vec<String>, Vec<String>, Vec<String>);
        let (queued, blocked, applied, dead, oldest_queued, lowest, highest): Reply =
            self.timed("stats", pipe.query_async(&mut connection)).await?;

        let mut times = redis::pipe();
        let oldest_queued_id = oldest_queued.first().cloned();
        let lowest_id = lowest.first().and_then(|m| m.get(17..)).map(str::to_owned);
        if let Some(id) = &oldest_queued_id {
            times.hget(self.key(&format!("tx:{id}")), "created_ms");
        }
        if let Some(id) = &lowest_id {
            times.hget(self.key(&format!("tx:{id}")), "applied_ms");
        }
        let mut ms: Vec<Option<i64>> = if oldest_queued_id.is_some() || lowest_id.is_some() {
            self.timed("stats", times.query_async(&mut connection)).await?
        } else {
            Vec::new()
        };
        let oldest_waiting_replication_ms = if lowest_id.is_some() { ms.pop().flatten() } else { None };
        let oldest_queued_ms = if oldest_queued_id.is_some() { ms.pop().flatten() } else { None };
        let lsn_of = |members: &[String]| members.first().and_then(|m| m.get(..16)).and_then(Lsn::from_sortable);
        Ok(BufferStats {
            queued,
            blocked,
            applied_waiting_replication: applied,
            dead,
            oldest_queued_ms,
            oldest_waiting_replication_ms,
            lowest_waiting_lsn: lsn_of(&lowest),
            highest_waiting_lsn: lsn_of(&highest),
        })
    }

    /// Tables that ever had overlays, for statistics.
    pub async fn overlay_counts(&self) -> Result<Vec<(String, u64)>, BufferError> {
        let mut connection = self.connection.clone();
        let tables: Vec<String> = self.timed("overlay_counts", connection.smembers(self.key("tables"))).await?;
        let mut pipe = redis::pipe();
        for t in &tables {
            pipe.hlen(self.key(&format!("rec:{t}")));
        }
        let counts: Vec<u64> = self.timed("overlay_counts", pipe.query_async(&mut connection)).await?;
        Ok(tables.into_iter().zip(counts).collect())
    }

    /// How Redis persists writes, from `CONFIG GET`.
    pub async fn persistence(&self) -> Result<Persistence, BufferError> {
        let mut connection = self.connection.clone();
        let read = |name: &'static str| {
            let mut connection = connection.clone();
            async move {
                let reply: redis::RedisResult<HashMap<String, String>> =
                    redis::cmd("CONFIG").arg("GET").arg(name).query_async(&mut connection).await;
                reply.map(|m| m.get(name).cloned())
            }
        };
        let appendonly = self.timed("CONFIG GET appendonly", read("appendonly")).await;
        let appendfsync = self.timed("CONFIG GET appendfsync", read("appendfsync")).await;
        let _ = &mut connection;
        match (appendonly, appendfsync) {
            (Ok(a), Ok(f)) => Ok(Persistence { appendonly: a.map(|v| v == "yes"), appendfsync: f }),
            // Managed Redis services often forbid CONFIG; report unknown.
            (Err(BufferError::Redis(e)), _) | (_, Err(BufferError::Redis(e))) if e.kind() != redis::ErrorKind::Io => {
                Ok(Persistence { appendonly: None, appendfsync: None })
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    }

    /// Round-trips a PING.
    pub async fn ping(&self) -> Result<(), BufferError> {
        let mut connection = self.connection.clone();
        let _: String = self.timed("PING", redis::cmd("PING").query_async(&mut connection)).await?;
        Ok(())
    }

    /// Takes the drainer lease for `holder`, or renews it if `holder` has
    /// it. Returns `None` when another holder has it.
    pub async fn acquire_lease(&self, holder: &str, ttl: Duration) -> Result<Option<Lease>, BufferError> {
        let value: String = self.lease_call("acquire", holder, ttl).await?;
        Ok((!value.is_empty()).then_some(Lease(value)))
    }

    /// Extends the lease; false when it was lost.
    pub async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, BufferError> {
        let renewed: i64 = self.lease_call("renew", &lease.0, ttl).await?;
        Ok(renewed == 1)
    }

    /// Gives the lease up so another process can take it at once.
    pub async fn release_lease(&self, lease: &Lease) -> Result<bool, BufferError> {
        let released: i64 = self.lease_call("release", &lease.0, Duration::ZERO).await?;
        Ok(released == 1)
    }

    /// Records that the API token `id` was used at `now_ms`.
    pub async fn record_token_use(&self, id: Uuid, now_ms: i64) -> Result<(), BufferError> {
        let mut connection = self.connection.clone();
        self.timed("HSET token_used", connection.hset(self.key("token_used"), id.to_string(), now_ms)).await
    }

    /// When each API token was last used at this site, in milliseconds
    /// since the Unix epoch.
    pub async fn token_last_used(&self, ids: &[Uuid]) -> Result<Vec<Option<i64>>, BufferError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut connection = self.connection.clone();
        let fields: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        self.timed("HMGET token_used", connection.hmget(self.key("token_used"), fields)).await
    }

    /// The current lease, if any.
    pub async fn current_lease(&self) -> Result<Option<Lease>, BufferError> {
        let mut connection = self.connection.clone();
        let value: Option<String> = self.timed("GET drainer", connection.get(self.key("drainer"))).await?;
        Ok(value.map(Lease))
    }

    async fn lease_call<T: redis::FromRedisValue>(
        &self,
        action: &str,
        arg: &str,
        ttl: Duration,
    ) -> Result<T, BufferError> {
        let mut invocation = scripts::LEASE.prepare_invoke();
        invocation.arg(&self.prefix).arg(action).arg(arg).arg(ttl.as_millis() as u64);
        let mut connection = self.connection.clone();
        self.timed("lease", invocation.invoke_async(&mut connection)).await
    }
}

fn parse_transaction(id: Uuid, fields: &HashMap<String, String>) -> TransactionRecord {
    let number = |name: &str| fields.get(name).and_then(|v| v.parse::<i64>().ok());
    let entries: Vec<(String, String)> =
        fields.get("entries").and_then(|e| serde_json::from_str::<Vec<(String, String)>>(e).ok()).unwrap_or_default();
    TransactionRecord {
        id,
        sequence: number("seq").unwrap_or_default() as u64,
        state: fields.get("state").cloned().unwrap_or_else(|| "unknown".into()),
        attempts: number("attempts").unwrap_or_default() as u64,
        error: fields.get("error").or_else(|| fields.get("last_error")).cloned(),
        sqlstate: fields.get("sqlstate").filter(|s| !s.is_empty()).cloned(),
        commit_lsn: fields.get("commit_lsn").and_then(|l| Lsn::from_sortable(l)),
        blocked_by: fields
            .get("blocked_by")
            .map(|b| b.split_whitespace().filter_map(|s| Uuid::parse_str(s).ok()).collect())
            .unwrap_or_default(),
        created_ms: number("created_ms"),
        applied_ms: number("applied_ms"),
        replicated_ms: number("replicated_ms"),
        failed_ms: number("failed_ms"),
        entries,
    }
}

fn array(value: Value, what: &'static str) -> Result<Vec<Value>, BufferError> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(BufferError::Reply { what, detail: format!("expected an array, got {other:?}") }),
    }
}

fn string(value: Option<&Value>, what: &'static str) -> Result<String, BufferError> {
    match value {
        Some(Value::BulkString(bytes)) => Ok(String::from_utf8_lossy(bytes).into_owned()),
        Some(Value::SimpleString(s)) => Ok(s.clone()),
        Some(Value::Okay) => Ok("OK".into()),
        Some(Value::Int(i)) => Ok(i.to_string()),
        Some(Value::Nil) | None => Ok(String::new()),
        Some(other) => Err(BufferError::Reply { what, detail: format!("expected a string, got {other:?}") }),
    }
}

fn int(value: Option<&Value>, what: &'static str) -> Result<i64, BufferError> {
    match value {
        Some(Value::Int(i)) => Ok(*i),
        Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes)
            .parse()
            .map_err(|_| BufferError::Reply { what, detail: "expected an integer".into() }),
        Some(Value::Nil) | None => Ok(0),
        Some(other) => Err(BufferError::Reply { what, detail: format!("expected an integer, got {other:?}") }),
    }
}

fn strings(value: Value, what: &'static str) -> Result<Vec<String>, BufferError> {
    array(value, what)?.iter().map(|v| string(Some(v), what)).collect()
}

fn pairs(flat: Vec<String>) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut iter = flat.into_iter();
    while let (Some(a), Some(b)) = (iter.next(), iter.next()) {
        out.push((a, b));
    }
    out
}

fn uuid(text: &str, what: &'static str) -> Result<Uuid, BufferError> {
    Uuid::parse_str(text).map_err(|_| BufferError::Reply { what, detail: format!("invalid transaction id {text:?}") })
}
