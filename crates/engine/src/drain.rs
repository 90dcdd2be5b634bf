//! The drainer: applies queued transactions to main in acknowledgement
//! order, one batch per database transaction.
//!
//! Exactly one drainer runs per site: the process holding the Redis lease.
//! It renews the lease at a third of its lifetime and checks, before each
//! batch, that the lease has time left; the Redis scripts it calls check
//! the lease value too, so a holder that lost the lease cannot change the
//! queue. The ledger on main makes a batch that is sent twice take effect
//! once.
//!
//! Failures: a transient error (connection, timeout, main read-only) keeps
//! the batch at the head of the queue and retries it with capped
//! exponential backoff and jitter. A permanent error (main rejects the
//! data) isolates the failing transaction, dead-letters it and goes on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use opsbuffer_core::overlay::OverlayEntry;
use opsbuffer_core::schema::Registry;
use opsbuffer_pg::writer::{ApplyError, ErrorClass, Transaction, Writer};
use opsbuffer_redis::{Lease, SelectedTransaction, Selection};
use rand::Rng;
use uuid::Uuid;

use crate::engine::{Engine, now_ms};
use crate::metrics::retry_class;
use crate::write::operations;

/// Capped exponential backoff with jitter: each delay is drawn between half
/// and all of the current step, and the step doubles up to the cap.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
    pub attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max, step: initial, attempt: 0 }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        self.attempt += 1;
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let low = step.as_secs_f64() / 2.0;
        Duration::from_secs_f64(rand::rng().random_range(low..=step.as_secs_f64().max(low)))
    }

    pub fn reset(&mut self) {
        self.step = self.initial;
        self.attempt = 0;
    }
}

/// The outcome of one pass of the drain loop.
enum Pass {
    /// Work was done; look for more at once.
    Progress,
    /// Nothing to do, or waiting for the lease.
    Idle,
    /// A transient failure; wait before the next pass.
    Backoff,
}

/// The drain loop of one process.
pub struct Drainer {
    engine: Arc<Engine>,
    writer: Writer,
    lease: Option<Lease>,
    /// When the lease was last acquired or renewed.
    renewed_at: Instant,
    /// When the batch in flight was selected, for the batch duration metric.
    batch_started: Instant,
    backoff: Backoff,
}

/// How `opsbuffer drain --once` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainOnce {
    /// The queue is empty. Blocked transactions may remain: they wait for
    /// their dead letters.
    Drained { applied: u64, dead_lettered: u64 },
    /// Another process holds the drainer lease.
    LeaseHeld { holder: Option<String> },
    /// This process lost the lease while draining.
    LeaseLost { applied: u64, dead_lettered: u64 },
    /// The deadline passed with transactions still queued.
    TimedOut { applied: u64, dead_lettered: u64, queued: u64 },
}

impl Drainer {
    pub fn new(engine: Arc<Engine>) -> Drainer {
        let config = &engine.config;
        let writer = Writer::new(config.main.clone(), config.site_name.clone(), config.drain.batch_timeout);
        let backoff = Backoff::new(config.drain.retry_initial, config.drain.retry_max);
        Drainer { engine, writer, lease: None, renewed_at: Instant::now(), batch_started: Instant::now(), backoff }
    }

    /// Applies the queue until it is empty, then releases the lease: the
    /// work of `opsbuffer drain --once`. Returns at once with
    /// [`DrainOnce::LeaseHeld`] when another process holds the lease.
    /// `progress` is called after each step with the transactions applied
    /// and dead-lettered so far.
    pub async fn drain_once(&mut self, deadline: Instant, mut progress: impl FnMut(u64, u64)) -> DrainOnce {
        if self.ensure_lease().await.is_none() {
            let holder = self.engine.drain_status().holder;
            return DrainOnce::LeaseHeld { holder };
        }
        tracing::info!(holder = %self.engine.holder_id, "draining until the queue is empty");
        let start = self.engine.drain_status();
        let counts = |engine: &Engine| {
            let now = engine.drain_status();
            (now.applied_total - start.applied_total, now.dead_lettered_total - start.dead_lettered_total)
        };
        let outcome = loop {
            let pass = self.pass().await;
            let (applied, dead_lettered) = counts(&self.engine);
            progress(applied, dead_lettered);
            if self.lease.is_none() {
                break DrainOnce::LeaseLost { applied, dead_lettered };
            }
            let wait = match pass {
                Pass::Progress => continue,
                // An idle pass with the lease held usually found nothing to
                // select; a failed lease renewal also ends idle, so the
                // queue itself decides.
                Pass::Idle => match self.engine.buffer.stats().await {
                    Ok(stats) if stats.queued == 0 => break DrainOnce::Drained { applied, dead_lettered },
                    _ => self.engine.config.drain.idle_poll,
                },
                Pass::Backoff => self.backoff.next_delay(),
            };
            if Instant::now() + wait > deadline {
                let queued = self.engine.buffer.stats().await.map(|s| s.queued).unwrap_or(0);
                break DrainOnce::TimedOut { applied, dead_lettered, queued };
            }
            tracing::info!(
                attempt = self.backoff.attempt,
                delay_ms = wait.as_millis() as u64,
                "drainer waits before retrying"
            );
            tokio::time::sleep(wait).await;
        };
        self.release().await;
        outcome
    }

    /// Spawns the loop; it stops when the engine shuts down, after the batch
    /// in flight, and releases the lease.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(mut self) {
        let mut shutdown = self.engine.shutdown_signal();
        tracing::info!(holder = %self.engine.holder_id, "drainer started");
        loop {
            if *shutdown.borrow() {
                break;
            }
            let pass = self.pass().await;
            let wait = match pass {
                Pass::Progress => continue,
                Pass::Idle => self.engine.config.drain.idle_poll,
                Pass::Backoff => {
                    let delay = self.backoff.next_delay();
                    tracing::info!(
                        attempt = self.backoff.attempt,
                        delay_ms = delay.as_millis() as u64,
                        "drainer waits before retrying"
                    );
                    delay
                }
            };
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = self.engine.queued.notified(), if matches!(pass, Pass::Idle) => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        self.release().await;
        tracing::info!(holder = %self.engine.holder_id, "drainer stopped");
    }

    async fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            match self.engine.buffer.release_lease(&lease).await {
                Ok(true) => {
                    tracing::info!(token = lease.token(), "released the drainer lease");
                    self.engine.metrics.observe_lease("released");
                }
                Ok(false) => tracing::info!(token = lease.token(), "the drainer lease had already expired"),
                Err(error) => {
                    tracing::warn!(%error, "could not release the drainer lease; it expires by itself")
                }
            }
        }
        self.set_active(false, None);
    }

    /// One pass: make sure of the lease, select a batch, apply it.
    async fn pass(&mut self) -> Pass {
        let lease = match self.ensure_lease().await {
            Some(lease) => lease,
            None => return Pass::Idle,
        };
        // Reading a batch costs Redis work and bumps the drain epochs that
        // readers check, so first make sure there is work and main answers.
        match self.engine.buffer.queue_length().await {
            Ok(0) => return Pass::Idle,
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "drainer could not read the queue length");
                self.engine.metrics.observe_retry("redis");
                return Pass::Backoff;
            }
        }
        if let Err(error) = self.writer.ensure_connected().await {
            tracing::warn!(attempt = self.backoff.attempt + 1, error = %error.message, "main is unreachable; queued transactions wait");
            self.engine.metrics.observe_retry("connection");
            self.set_error(&error.message);
            return Pass::Backoff;
        }
        let batch_size = self.engine.config.drain.batch_size;
        let selection = match self.engine.buffer.select_batch(&lease, batch_size, now_ms()).await {
            Ok(selection) => selection,
            Err(error) => {
                tracing::warn!(%error, "drainer could not read the queue");
                self.engine.metrics.observe_retry("redis");
                return Pass::Backoff;
            }
        };
        let (selected, blocked) = match selection {
            Selection::LeaseLost => {
                self.lose_lease("the queue");
                return Pass::Idle;
            }
            Selection::Batch { transactions, blocked } => (transactions, blocked),
        };
        for (id, by) in &blocked {
            tracing::warn!(transaction_id = %id, blocked_by = %by, "transaction held back: it touches a record of a dead-lettered transaction");
        }
        if selected.is_empty() {
            return if blocked.is_empty() { Pass::Idle } else { Pass::Progress };
        }

        self.batch_started = Instant::now();
        let (_, registry) = self.engine.registry();
        let mut batch = Vec::with_capacity(selected.len());
        for tx in &selected {
            match build_transaction(&registry, tx) {
                Ok(t) => batch.push(t),
                Err(message) => {
                    // Entries that no longer fit the schema cannot be applied
                    // by retrying; apply the ones before, then dead-letter.
                    if !batch.is_empty() {
                        return self.apply(&lease, &batch).await;
                    }
                    return self.dead_letter(&lease, tx.id, &message, "").await;
                }
            }
        }
        self.apply(&lease, &batch).await
    }

    async fn apply(&mut self, lease: &Lease, batch: &[Transaction]) -> Pass {
        if !self.lease_is_fresh() && !self.renew(lease).await {
            return Pass::Idle;
        }
        match self.writer.apply(batch).await {
            Ok(applied) => {
                let ids: Vec<Uuid> = batch.iter().map(|t| t.id).collect();
                if !applied.already_applied.is_empty() {
                    tracing::info!(transactions = ?applied.already_applied, "main already had these transactions (ledger); their effect was not repeated");
                }
                self.mark_applied(lease, &ids, applied.commit_lsn).await
            }
            Err(error) if error.class == ErrorClass::Transient => {
                let ids: Vec<Uuid> = batch.iter().map(|t| t.id).collect();
                tracing::warn!(
                    first_transaction = %ids[0],
                    transactions = ids.len(),
                    attempt = self.backoff.attempt + 1,
                    error = %error.message,
                    "applying a batch on main failed; retrying"
                );
                self.set_error(&error.message);
                self.engine.metrics.observe_retry(&retry_class(error.sqlstate.as_deref()));
                if let Err(e) = self.engine.buffer.record_attempt(&ids, &error.message).await {
                    tracing::warn!(error = %e, "could not record the failed attempt");
                }
                Pass::Backoff
            }
            Err(error) => self.isolate(lease, batch, error).await,
        }
    }

    /// Finds the transaction main rejects: applies the part of the batch
    /// before it, then it alone, and dead-letters it if main rejects it
    /// again. The rest of the batch is selected again afterwards, so
    /// transactions touching its records are blocked first.
    async fn isolate(&mut self, lease: &Lease, batch: &[Transaction], error: ApplyError) -> Pass {
        tracing::info!(transactions = batch.len(), error = %error.message, "main rejected a batch; isolating the failing transaction");
        let suspects: Vec<usize> = match error.transaction {
            Some(i) => vec![i],
            None => (0..batch.len()).collect(),
        };
        let first = suspects[0];
        if first > 0 {
            match self.writer.apply(&batch[..first]).await {
                Ok(applied) => {
                    let ids: Vec<Uuid> = batch[..first].iter().map(|t| t.id).collect();
                    if let Pass::Idle = self.mark_applied(lease, &ids, applied.commit_lsn).await {
                        return Pass::Idle;
                    }
                }
                Err(e) if e.class == ErrorClass::Transient => {
                    tracing::warn!(error = %e.message, "applying the part of the batch before the failing transaction failed; retrying");
                    self.engine.metrics.observe_retry(&retry_class(e.sqlstate.as_deref()));
                    return Pass::Backoff;
                }
                Err(e) => {
                    tracing::warn!(error = %e.message, "the part of the batch before the failing transaction failed too; isolating one by one");
                    return self.one_by_one(lease, &batch[..first]).await;
                }
            }
        }
        self.one_by_one(lease, &batch[first..]).await
    }

    async fn one_by_one(&mut self, lease: &Lease, batch: &[Transaction]) -> Pass {
        for transaction in batch {
            match self.writer.apply(std::slice::from_ref(transaction)).await {
                Ok(applied) => {
                    if let Pass::Idle = self.mark_applied(lease, &[transaction.id], applied.commit_lsn).await {
                        return Pass::Idle;
                    }
                }
                Err(e) if e.class == ErrorClass::Transient => {
                    tracing::warn!(transaction_id = %transaction.id, error = %e.message, "applying a transaction on its own failed; retrying");
                    self.engine.metrics.observe_retry(&retry_class(e.sqlstate.as_deref()));
                    return Pass::Backoff;
                }
                Err(e) => {
                    return self
                        .dead_letter(lease, transaction.id, &e.message, e.sqlstate.as_deref().unwrap_or(""))
                        .await;
                }
            }
        }
        Pass::Progress
    }

    async fn dead_letter(&mut self, lease: &Lease, id: Uuid, message: &str, sqlstate: &str) -> Pass {
        match self.engine.buffer.dead_letter(lease, id, message, sqlstate, now_ms()).await {
            Ok(true) => {
                tracing::error!(transaction_id = %id, sqlstate, error = %message, "dead-lettered a transaction main rejected");
                self.engine.metrics.dead_lettered.inc();
                let mut status = self.engine.drain_status.lock().expect("drain status lock");
                status.dead_lettered_total += 1;
                status.last_error = Some(message.to_owned());
                Pass::Progress
            }
            Ok(false) => {
                self.lose_lease("dead-lettering");
                Pass::Idle
            }
            Err(error) => {
                tracing::warn!(transaction_id = %id, %error, "could not dead-letter the transaction; it stays at the head of the queue");
                self.engine.metrics.observe_retry("redis");
                Pass::Backoff
            }
        }
    }

    async fn mark_applied(&mut self, lease: &Lease, ids: &[Uuid], commit_lsn: opsbuffer_core::lsn::Lsn) -> Pass {
        // The commit happened; if Redis cannot be told now, the next pass
        // selects the same transactions and the ledger skips them.
        match self.engine.buffer.mark_applied(lease, ids, commit_lsn, now_ms()).await {
            Ok(true) => {
                tracing::info!(transactions = ids.len(), first_transaction = %ids[0], %commit_lsn, "applied a batch on main");
                self.backoff.reset();
                self.engine.metrics.observe_batch(ids.len(), self.batch_started.elapsed(), commit_lsn);
                {
                    let mut status = self.engine.drain_status.lock().expect("drain status lock");
                    status.last_commit_lsn = Some(commit_lsn);
                    status.applied_total += ids.len() as u64;
                    status.batches_total += 1;
                    status.last_error = None;
                }
                self.engine.applied.notify_one();
                Pass::Progress
            }
            Ok(false) => {
                self.lose_lease("marking applied");
                Pass::Idle
            }
            Err(error) => {
                tracing::warn!(first_transaction = %ids[0], transactions = ids.len(), %error, "committed on main but could not record it in Redis; the ledger will skip the replay");
                self.engine.metrics.observe_retry("redis");
                Pass::Backoff
            }
        }
    }

    /// Returns the lease, acquiring or renewing it as due.
    async fn ensure_lease(&mut self) -> Option<Lease> {
        let ttl = self.engine.config.drain.lease_ttl;
        if let Some(lease) = self.lease.clone() {
            if self.renewed_at.elapsed() < ttl / 3 {
                return Some(lease);
            }
            return self.renew(&lease).await.then_some(lease);
        }
        match self.engine.buffer.acquire_lease(&self.engine.holder_id, ttl).await {
            Ok(Some(lease)) => {
                tracing::info!(holder = %self.engine.holder_id, token = lease.token(), "acquired the drainer lease");
                self.lease = Some(lease.clone());
                self.renewed_at = Instant::now();
                self.set_active(true, Some(self.engine.holder_id.clone()));
                self.engine.metrics.observe_lease("acquired");
                Some(lease)
            }
            Ok(None) => {
                let holder = self.engine.buffer.current_lease().await.ok().flatten().map(|l| l.holder().to_owned());
                self.set_active(false, holder);
                None
            }
            Err(error) => {
                tracing::warn!(%error, "could not read the drainer lease");
                None
            }
        }
    }

    async fn renew(&mut self, lease: &Lease) -> bool {
        match self.engine.buffer.renew_lease(lease, self.engine.config.drain.lease_ttl).await {
            Ok(true) => {
                self.renewed_at = Instant::now();
                true
            }
            Ok(false) => {
                self.lose_lease("renewal");
                false
            }
            Err(error) => {
                tracing::warn!(%error, "could not renew the drainer lease");
                self.renewed_at.elapsed() < self.engine.config.drain.lease_ttl / 2
            }
        }
    }

    /// Whether the lease surely outlives a batch started now: at least two
    /// thirds of its lifetime remain.
    fn lease_is_fresh(&self) -> bool {
        self.renewed_at.elapsed() < self.engine.config.drain.lease_ttl / 3
    }

    fn lose_lease(&mut self, during: &str) {
        tracing::warn!(holder = %self.engine.holder_id, during, "lost the drainer lease; stopping draining until it is free again");
        self.lease = None;
        self.set_active(false, None);
        self.engine.metrics.observe_lease("lost");
    }

    fn set_active(&self, active: bool, holder: Option<String>) {
        let mut status = self.engine.drain_status.lock().expect("drain status lock");
        status.active = active;
        status.holder = holder;
    }

    fn set_error(&self, message: &str) {
        self.engine.drain_status.lock().expect("drain status lock").last_error = Some(message.to_owned());
    }
}

/// Rebuilds a transaction's statements from its overlay entries.
pub fn build_transaction(registry: &Registry, selected: &SelectedTransaction) -> Result<Transaction, String> {
    let mut changes = Vec::with_capacity(selected.entries.len());
    for (table_name, field, json) in &selected.entries {
        let table = registry.table(table_name).ok_or_else(|| {
            format!("table {table_name} is no longer in the schema, so the transaction cannot be applied")
        })?;
        if json.is_empty() {
            return Err(format!("overlay entry {field} of {table_name} is missing from Redis"));
        }
        let entry = OverlayEntry::from_stored(table, field, json).map_err(|e| e.to_string())?;
        let pk = table.primary_key_column().ok_or_else(|| format!("table {table_name} has no primary key"))?;
        let key = pk.ty.parse_text(&entry.id.key).map_err(|e| format!("key {} of {table_name}: {e}", entry.id.key))?;
        changes.push((table.clone(), key, entry.change));
    }
    Ok(Transaction { id: selected.id, sequence: selected.sequence, operations: operations(changes) })
}
