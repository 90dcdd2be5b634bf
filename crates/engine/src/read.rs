//! The read path: merged pages, single records and existence checks.
//!
//! Order of reads: the overlay snapshot first, then local. Every entry
//! evicted before the snapshot is already in local (eviction waits for
//! replication, and a replica never moves backwards), so nothing can fall
//! between the two reads. The one hazard is local showing a transaction
//! acknowledged after the snapshot, with an older overlay of the same
//! record re-applied on top; the drain epoch detects that and the read is
//! repeated.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opsbuffer_core::merge::{MergedRecord, Page, keys_needing_local_rows, merge_page, merge_record};
use opsbuffer_core::overlay::RecordOverlay;
use opsbuffer_core::query::{Condition, Query};
use opsbuffer_core::row::Row;
use opsbuffer_core::schema::Table;
use opsbuffer_core::sql::select_page;
use opsbuffer_core::value::Value;
use uuid::Uuid;

use crate::cache::TableSnapshot;
use crate::engine::Engine;
use crate::error::EngineError;

/// How many times a read is repeated when a drain overlapped it.
const MAX_READ_ATTEMPTS: usize = 20;

/// Which sources a read consults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Local merged with every pending overlay.
    Merged,
    /// Local alone.
    Replica,
    /// Local alone, after waiting until local shows every transaction
    /// acknowledged before the request.
    Replicated { timeout: Duration },
}

/// A merged page with, for each record, the transactions pending on it.
#[derive(Debug, Clone)]
pub struct MergedPage {
    pub page: Page,
    /// Pending transaction ids of each record with an overlay, by key.
    pub pending: HashMap<String, Vec<Uuid>>,
}

impl Engine {
    /// One page of `table` for `query`.
    pub async fn query(
        &self,
        table: &Arc<Table>,
        query: &Query,
        consistency: Consistency,
    ) -> Result<MergedPage, EngineError> {
        match consistency {
            Consistency::Merged if self.is_secondary() => self.merged_page(table, query).await,
            Consistency::Replicated { timeout } if self.is_secondary() => {
                self.wait_replicated(timeout).await?;
                self.local_page(table, query).await
            }
            _ => self.local_page(table, query).await,
        }
    }

    async fn local_page(&self, table: &Arc<Table>, query: &Query) -> Result<MergedPage, EngineError> {
        let pk = primary_key(table)?;
        let rows = self.local.rows(table, &select_page(table, query, &[])).await?;
        let page = merge_page(query, pk, rows, std::iter::empty(), &HashMap::new());
        Ok(MergedPage { page, pending: HashMap::new() })
    }

    async fn merged_page(&self, table: &Arc<Table>, query: &Query) -> Result<MergedPage, EngineError> {
        let pk = primary_key(table)?;
        for attempt in 1..=MAX_READ_ATTEMPTS {
            let snapshot = self.overlay_snapshot(&[table]).await?.remove(0);
            let overlays = &snapshot.overlays;
            let exclude: Vec<String> = overlays.records.keys().cloned().collect();
            let need_local = keys_needing_local_rows(overlays);

            let statement = select_page(table, query, &exclude);
            let (page_rows, overlaid_rows) =
                tokio::try_join!(self.local.rows(table, &statement), self.local.rows_by_key(table, &need_local))?;

            // Only local rows of overlaid records can be newer than their
            // overlay; without any, no drain can have made the read stale.
            if !need_local.is_empty() && self.buffer.epochs(&[&table.name]).await?[0] != snapshot.epoch {
                tracing::debug!(table = %table.name, attempt, "a drain overlapped the read; reading again");
                tokio::time::sleep(Duration::from_millis(attempt as u64)).await;
                continue;
            }

            let page = merge_page(query, pk, page_rows, overlays.records.iter(), &overlaid_rows);
            let pending = pending_of(&page.records, |key| overlays.get(key));
            return Ok(MergedPage { page, pending });
        }
        Err(EngineError::unavailable(
            "read_contention",
            format!("the drain changed {} during {MAX_READ_ATTEMPTS} consecutive reads; retry the request", table.name),
            1,
        ))
    }

    /// Every record of `table` matching `conditions`, merged, following
    /// cursors until the end or `max` records.
    pub async fn query_all(
        &self,
        table: &Arc<Table>,
        conditions: Vec<Condition>,
        max: usize,
    ) -> Result<MergedPage, EngineError> {
        let mut query = Query::all(table, opsbuffer_core::query::MAX_LIMIT.min(max));
        query.conditions = conditions;
        let mut records = Vec::new();
        let mut pending = HashMap::new();
        loop {
            let mut part = self.query(table, &query, Consistency::Merged).await?;
            records.append(&mut part.page.records);
            pending.extend(part.pending);
            match part.page.next {
                Some(cursor) if records.len() < max => query.after = Some(cursor),
                next => {
                    return Ok(MergedPage { page: Page { records, next }, pending });
                }
            }
        }
    }

    /// The merged record with primary key `key`, or `None`.
    pub async fn get(
        &self,
        table: &Arc<Table>,
        key: &Value,
        consistency: Consistency,
    ) -> Result<Option<(MergedRecord, Vec<Uuid>)>, EngineError> {
        let pk = primary_key(table)?;
        let query = Query { conditions: vec![Condition::eq(pk, key.clone())], ..Query::all(table, 1) };
        let mut page = self.query(table, &query, consistency).await?;
        Ok(page.page.records.pop().map(|record| {
            let pending = page.pending.remove(&record.key).unwrap_or_default();
            (record, pending)
        }))
    }

    /// Merged records of `table` by primary key, without the epoch check:
    /// used to validate writes, where a record found in the merged view a
    /// moment ago is good enough. Also returns whether local has each key.
    pub(crate) async fn merged_by_key(
        &self,
        table: &Arc<Table>,
        keys: &[String],
    ) -> Result<HashMap<String, (Option<Row>, bool)>, EngineError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let snapshot = if self.is_secondary() { Some(self.overlay_snapshot(&[table]).await?.remove(0)) } else { None };
        let local_rows = self.local.rows_by_key(table, keys).await?;
        let mut out = HashMap::with_capacity(keys.len());
        for key in keys {
            let local = local_rows.get(key);
            let overlay = snapshot.as_ref().and_then(|s| s.overlays.get(key));
            let merged = merge_record(local, overlay).map(|(row, _)| row);
            out.insert(key.clone(), (merged, local.is_some()));
        }
        Ok(out)
    }

    /// The overlays of `tables`, from the cache kept current by Redis.
    pub(crate) async fn overlay_snapshot(&self, tables: &[&Arc<Table>]) -> Result<Vec<TableSnapshot>, EngineError> {
        let (registry_id, _) = self.registry();
        self.cache.snapshot(&self.buffer, registry_id, tables).await
    }

    /// Waits until local shows every transaction acknowledged before now:
    /// first until none of them is queued or blocked, then until local's
    /// replay LSN reaches the highest commit LSN among them.
    async fn wait_replicated(&self, timeout: Duration) -> Result<(), EngineError> {
        let deadline = Instant::now() + timeout;
        let mut target = None;
        loop {
            let stats = self.buffer.stats().await?;
            if target.is_none() && stats.queued == 0 && stats.blocked == 0 {
                target = Some(stats.highest_waiting_lsn.unwrap_or_default());
            }
            if let Some(lsn) = target {
                let status = self.local.status().await?;
                if status.lsn >= lsn {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                let status = self.local.status().await.ok();
                let lag = match (target, status) {
                    (Some(t), Some(s)) => format!("local replayed up to {} and needs {t}", s.lsn),
                    _ => format!("{} transactions are still queued and {} blocked", stats.queued, stats.blocked),
                };
                return Err(EngineError::Timeout {
                    code: "replication_timeout",
                    message: format!(
                        "local did not show every acknowledged transaction within {timeout:?}: {lag}; retry, raise timeout_ms, or use consistency=merged"
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn primary_key(table: &Table) -> Result<usize, EngineError> {
    table.primary_key.ok_or_else(|| {
        EngineError::Query(opsbuffer_core::query::QueryError {
            field: "table".into(),
            message: format!(
                "table {} has no single-column primary key; opsbuffer serves only tables with one",
                table.name
            ),
        })
    })
}

fn pending_of<'o>(
    records: &[MergedRecord],
    overlay: impl Fn(&str) -> Option<&'o RecordOverlay>,
) -> HashMap<String, Vec<Uuid>> {
    records.iter().filter_map(|r| overlay(&r.key).map(|o| (r.key.clone(), o.transactions()))).collect()
}
