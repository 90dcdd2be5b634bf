//! The read path: merged pages, single records and existence checks.
//!
//! Order of reads: the overlay snapshot first, then local. Every entry
//! evicted before the snapshot is already in local (eviction waits for
//! replication, and a replica never moves backwards), so nothing can fall
//! between the two reads. The one hazard is local showing a transaction
//! acknowledged after the snapshot, with an older overlay of the same
//! record applied on top; the drain epoch detects that and the read is
//! repeated.
//!
//! A merged page is the first `limit` records, in the query's order, of
//! four disjoint groups:
//!
//! 1. local rows without an overlay that match the query;
//! 2. local rows that match and whose pending patches touch neither a
//!    filtered nor an ordered column: their place in the order and their
//!    membership are the local row's, so they come from the same local
//!    page, merged;
//! 3. records the buffer holds whole (pending creates), filtered and sorted
//!    in memory, found through an equality index when the query pins a
//!    column;
//! 4. local records whose pending patches touch a filtered or ordered
//!    column, read by key and filtered after the merge.
//!
//! The local page is read in the query's order until it yields `limit + 1`
//! rows of groups 1 and 2, skipping rows of groups 3 and 4 and rows with a
//! pending delete, so each group contributes every record that can reach
//! the page and nothing is read for the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opsbuffer_core::merge::{MergedRecord, Page, Source, merge_record, select_page};
use opsbuffer_core::query::{Condition, Cursor, Query, QueryError};
use opsbuffer_core::row::Row;
use opsbuffer_core::schema::Table;
use opsbuffer_core::sql::Statement;
use opsbuffer_core::value::Value;
use uuid::Uuid;

use crate::cache::{RecordState, TableSnapshot, TableView};
use crate::engine::Engine;
use crate::error::EngineError;

/// How long local's showing a referenced record is trusted without asking
/// again, and how many such records are remembered before old ones are
/// dropped.
const SEEN_IN_LOCAL_FOR: Duration = Duration::from_secs(5);
const SEEN_IN_LOCAL_MAX: usize = 100_000;

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

/// How a query treats the overlays of its table.
struct OverlayPlan<'v> {
    /// Group 3: records held whole by the buffer that match the query.
    created: Vec<MergedRecord>,
    /// Group 4: keys to read from local, grouped by the set of columns
    /// their patches touch.
    fetch: HashMap<Vec<usize>, Vec<String>>,
    view: &'v TableView,
}

impl OverlayPlan<'_> {
    /// Whether a local row of the page must be left to another group.
    fn skips(&self, state: &RecordState, touched: &[usize]) -> bool {
        state.created || state.deleted || touched.iter().any(|c| state.patches(*c))
    }
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
        let rows = self.local.rows(table, &opsbuffer_core::sql::select_page(table, query, &[])).await?;
        let records = rows
            .into_iter()
            .map(|row| MergedRecord { key: row.get(pk).key_text(), row, source: Source::Database })
            .collect();
        Ok(MergedPage { page: select_page(query, records), pending: HashMap::new() })
    }

    async fn merged_page(&self, table: &Arc<Table>, query: &Query) -> Result<MergedPage, EngineError> {
        let pk = primary_key(table)?;
        let index_column = pinned_column(table, query);
        // Columns whose pending change moves a record in or out of the
        // result or along its order.
        let mut touched: Vec<usize> =
            query.conditions.iter().map(|c| c.column).chain(query.order.iter().map(|o| o.column)).collect();
        touched.sort_unstable();
        touched.dedup();

        for attempt in 1..=MAX_READ_ATTEMPTS {
            let snapshot = self.overlay_snapshot(&[table], &[index_column]).await?.remove(0);
            let view = &snapshot.view;
            let plan = plan_overlays(query, view, index_column, &touched);

            let (local, fetched) = tokio::try_join!(
                self.local_rows_of_page(table, query, &plan, &touched),
                self.fetch_patched(table, query, &plan)
            )?;

            // Local rows of overlaid records can be newer than their
            // overlay when a drain overlapped the read.
            if (local.merged_overlaid || !fetched.is_empty())
                && self.buffer.epochs(&[&table.name]).await?[0] != snapshot.epoch
            {
                tracing::debug!(table = %table.name, attempt, "a drain overlapped the read; reading again");
                tokio::time::sleep(Duration::from_millis(attempt as u64)).await;
                continue;
            }

            let mut candidates = local.records;
            candidates.extend(plan.created);
            for row in fetched {
                let key = row.get(pk).key_text();
                if let Some(state) = view.get(&key)
                    && let Some(merged) = state.overlay.apply(Some(&row))
                    && query.matches(&merged)
                {
                    candidates.push(MergedRecord { key, row: merged, source: Source::of(&state.overlay) });
                }
            }
            let page = select_page(query, candidates);
            let pending = pending_of(&page.records, view);
            return Ok(MergedPage { page, pending });
        }
        Err(EngineError::unavailable(
            "read_contention",
            format!("the drain changed {} during {MAX_READ_ATTEMPTS} consecutive reads; retry the request", table.name),
            1,
        ))
    }

    /// Reads local rows in the query's order until `limit + 1` rows of
    /// groups 1 and 2 are found or local has no more.
    async fn local_rows_of_page(
        &self,
        table: &Arc<Table>,
        query: &Query,
        plan: &OverlayPlan<'_>,
        touched: &[usize],
    ) -> Result<LocalPage, EngineError> {
        let pk = primary_key(table)?;
        let wanted = query.limit + 1;
        let mut batch = wanted + plan.view.len().min(wanted);
        let mut page = LocalPage::default();
        let mut after = query.after.clone();
        loop {
            let part = Query {
                conditions: query.conditions.clone(),
                order: query.order.clone(),
                limit: batch - 1,
                after: after.clone(),
            };
            let rows = self.local.rows(table, &opsbuffer_core::sql::select_page(table, &part, &[])).await?;
            let exhausted = rows.len() < batch;
            after = rows.last().map(|r| Cursor::after_row(&query.order, r));
            for row in rows {
                let key = row.get(pk).key_text();
                match plan.view.get(&key) {
                    None => page.records.push(MergedRecord { key, row, source: Source::Database }),
                    Some(state) if plan.skips(state, touched) => continue,
                    Some(state) => {
                        // Patches of columns the query ignores: merge in place.
                        let Some(merged) = state.overlay.apply(Some(&row)) else { continue };
                        page.merged_overlaid = true;
                        page.records.push(MergedRecord { key, row: merged, source: Source::of(&state.overlay) });
                    }
                }
                if page.records.len() == wanted {
                    return Ok(page);
                }
            }
            if exhausted {
                return Ok(page);
            }
            batch = (batch * 2).min(opsbuffer_core::query::MAX_LIMIT + 1);
        }
    }

    /// Reads the local rows of group 4, pushing the conditions on columns
    /// their patches leave alone into SQL.
    async fn fetch_patched(
        &self,
        table: &Arc<Table>,
        query: &Query,
        plan: &OverlayPlan<'_>,
    ) -> Result<Vec<Row>, EngineError> {
        let statements: Vec<Statement> = plan
            .fetch
            .iter()
            .map(|(columns, keys)| select_keys_where(table, keys, &query.conditions, columns))
            .collect();
        let parts = futures::future::try_join_all(statements.iter().map(|s| self.local.rows(table, s))).await?;
        Ok(parts.into_iter().flatten().collect())
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
                next => return Ok(MergedPage { page: Page { records, next }, pending }),
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
        let snapshot =
            if self.is_secondary() { Some(self.overlay_snapshot(&[table], &[None]).await?.remove(0)) } else { None };
        let local_rows = self.local.rows_by_key(table, keys).await?;
        let mut out = HashMap::with_capacity(keys.len());
        for key in keys {
            let local = local_rows.get(key);
            let overlay = snapshot.as_ref().and_then(|s| s.view.get(key)).map(|s| &s.overlay);
            let merged = merge_record(local, overlay).map(|(row, _)| row);
            out.insert(key.clone(), (merged, local.is_some()));
        }
        Ok(out)
    }

    /// Whether local has each record of `table`, for foreign-key checks (the
    /// acknowledge script checks the buffer's side). A record local showed
    /// within `SEEN_IN_LOCAL_FOR` is taken to be there still without a
    /// query: deletes through opsbuffer show in the buffer at once, and the
    /// script refuses a reference to a record whose delete reached local.
    // NOTE: a delete made on main outside opsbuffer can go unseen for up to
    // SEEN_IN_LOCAL_FOR; main then rejects the child and it is dead-lettered.
    pub(crate) async fn local_exists(
        &self,
        table: &Arc<Table>,
        keys: &[String],
    ) -> Result<HashMap<String, bool>, EngineError> {
        let now = Instant::now();
        let (recent, unknown): (Vec<String>, Vec<String>) = {
            let mut seen = self.seen_in_local.lock().expect("seen_in_local lock");
            if seen.len() > SEEN_IN_LOCAL_MAX {
                seen.retain(|_, at| now.duration_since(*at) < SEEN_IN_LOCAL_FOR);
            }
            keys.iter().cloned().partition(|k| {
                seen.get(&(table.name.clone(), k.clone())).is_some_and(|at| now.duration_since(*at) < SEEN_IN_LOCAL_FOR)
            })
        };
        let local_rows =
            if unknown.is_empty() { HashMap::new() } else { self.local.rows_by_key(table, &unknown).await? };
        {
            let mut seen = self.seen_in_local.lock().expect("seen_in_local lock");
            for key in local_rows.keys() {
                seen.insert((table.name.clone(), key.clone()), now);
            }
        }
        Ok(keys.iter().map(|k| (k.clone(), recent.contains(k) || local_rows.contains_key(k))).collect())
    }

    /// The overlays of `tables`, from the cache kept current by Redis, with
    /// the equality index of `indexed[i]` built for `tables[i]`.
    pub(crate) async fn overlay_snapshot(
        &self,
        tables: &[&Arc<Table>],
        indexed: &[Option<usize>],
    ) -> Result<Vec<TableSnapshot>, EngineError> {
        let (registry_id, _) = self.registry();
        self.cache.snapshot(&self.buffer, registry_id, tables, indexed).await
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

/// Rows of groups 1 and 2, and whether any of them was merged with an
/// overlay.
#[derive(Default)]
struct LocalPage {
    records: Vec<MergedRecord>,
    merged_overlaid: bool,
}

/// Sorts the table's overlays into groups 3 and 4.
fn plan_overlays<'v>(
    query: &Query,
    view: &'v TableView,
    index_column: Option<usize>,
    touched: &[usize],
) -> OverlayPlan<'v> {
    let mut created = Vec::new();
    let mut consider_created = |key: &String, state: &RecordState| {
        if let Some(row) = state.merged()
            && query.matches(row)
        {
            created.push(MergedRecord { key: key.clone(), row: row.clone(), source: Source::of(&state.overlay) });
        }
    };
    let pinned = index_column.and_then(|c| {
        let values = query.conditions.iter().find(|q| q.column == c).and_then(|q| q.pinned_values())?;
        view.lookup(c, values)
    });
    match pinned {
        Some(keys) => {
            for key in &keys {
                if let Some(state) = view.get(key)
                    && state.created
                {
                    consider_created(key, state);
                }
            }
        }
        None => {
            for (key, state) in view.records() {
                if state.created {
                    consider_created(key, state);
                }
            }
        }
    }

    // Records with patches of filtered or ordered columns; a patch that
    // already fails a condition rules the record out without a read.
    let mut fetch: HashMap<Vec<usize>, Vec<String>> = HashMap::new();
    for (key, state) in view.partial_records() {
        if state.deleted || !touched.iter().any(|c| state.patches(*c)) {
            continue;
        }
        let fails =
            query.conditions.iter().any(|c| state.known_value(c.column).is_some_and(|v| c.eval_value(v) != Some(true)));
        if fails {
            continue;
        }
        let columns: Vec<usize> = state.patched.iter().map(|(c, _)| *c).collect();
        fetch.entry(columns).or_default().push(key.clone());
    }
    OverlayPlan { created, fetch, view }
}

/// The column of the first `eq` or `in` condition that an index can serve.
fn pinned_column(table: &Table, query: &Query) -> Option<usize> {
    query
        .conditions
        .iter()
        .find(|c| c.pinned_values().is_some() && !table.columns[c.column].ty.is_json())
        .map(|c| c.column)
}

/// Rows with the given keys that match the conditions on columns not in
/// `patched` (the others are checked after the merge).
fn select_keys_where(table: &Table, keys: &[String], conditions: &[Condition], patched: &[usize]) -> Statement {
    let pushed: Vec<Condition> = conditions.iter().filter(|c| !patched.contains(&c.column)).cloned().collect();
    opsbuffer_core::sql::select_by_keys_where(table, keys, &pushed).expect("merged reads need a primary key")
}

fn primary_key(table: &Table) -> Result<usize, EngineError> {
    table.primary_key.ok_or_else(|| {
        EngineError::Query(QueryError {
            field: "table".into(),
            message: format!(
                "table {} has no single-column primary key; opsbuffer serves only tables with one",
                table.name
            ),
        })
    })
}

fn pending_of(records: &[MergedRecord], view: &TableView) -> HashMap<String, Vec<Uuid>> {
    records.iter().filter_map(|r| view.get(&r.key).map(|s| (r.key.clone(), s.overlay.transactions()))).collect()
}
