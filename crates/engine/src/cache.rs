//! An in-process copy of each table's overlays, kept current by the
//! per-table version counter in Redis, with what reads need precomputed.
//!
//! A read asks Redis, in one script, for the table's version, its drain
//! epoch and the entries changed since the cached version. An unchanged
//! table costs one small round trip; a changed one transfers only the
//! changed entries. The copy is a persistent map (`imbl`), so applying a
//! change copies only the changed path and a read that holds an older copy
//! keeps a consistent snapshot.
//!
//! For each record the copy keeps its merged value when the buffer holds
//! the whole record (a create), or the last pending value of each patched
//! column otherwise. Equality indexes over those known values, built for a
//! column the first time a query pins it with `eq` or `in`, let a query on
//! a table with many overlays look at only the records that can match.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use opsbuffer_core::overlay::{Change, EntryId, OverlayEntry, RecordOverlay};
use opsbuffer_core::row::Row;
use opsbuffer_core::schema::Table;
use opsbuffer_core::value::{Numeric, Value};
use opsbuffer_redis::{Buffer, SnapshotContent};
use uuid::Uuid;

use crate::error::EngineError;

/// A value in a form that hashes the way PostgreSQL compares: `1.50` and
/// `1.5` are one key, as are `-0` and `0`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IndexKey {
    Bool(bool),
    Int(i64),
    Float(u64),
    Numeric(String),
    Text(String),
    Uuid(Uuid),
    Time(i64),
    Date(i32),
}

/// The index key of a value; `None` for NULL and for JSON, which is not
/// indexed.
pub fn index_key(value: &Value) -> Option<IndexKey> {
    Some(match value {
        Value::Null | Value::Json(_) => return None,
        Value::Bool(b) => IndexKey::Bool(*b),
        Value::Int(i) => IndexKey::Int(*i),
        Value::Real(f) => IndexKey::Float(float_bits(f64::from(*f))),
        Value::Double(f) => IndexKey::Float(float_bits(*f)),
        Value::Numeric(Numeric::Finite(d)) => IndexKey::Numeric(d.normalized().to_string()),
        Value::Numeric(other) => IndexKey::Numeric(other.to_string()),
        Value::Text(s) => IndexKey::Text(s.clone()),
        Value::Uuid(u) => IndexKey::Uuid(*u),
        Value::Timestamptz(m) | Value::Timestamp(m) => IndexKey::Time(*m),
        Value::Date(d) => IndexKey::Date(*d),
    })
}

fn float_bits(f: f64) -> u64 {
    if f.is_nan() {
        f64::NAN.to_bits()
    } else if f == 0.0 {
        0.0f64.to_bits()
    } else {
        f.to_bits()
    }
}

/// What the buffer knows about one record.
#[derive(Debug, Clone)]
pub struct RecordState {
    pub overlay: RecordOverlay,
    /// Whether the buffer holds the whole record (a create is pending).
    pub created: bool,
    /// Whether the record ends deleted.
    pub deleted: bool,
    /// The merged value of a created record that is not deleted, when it
    /// differs from the create's row; see [`RecordState::merged`].
    combined: Option<Row>,
    /// For a record without a create: the last pending value of each
    /// patched column, sorted by column.
    pub patched: Vec<(usize, Value)>,
}

impl RecordState {
    fn new(overlay: RecordOverlay) -> RecordState {
        let created = overlay.has_create();
        let merged = if created { overlay.apply(None) } else { None };
        let deleted = if created { merged.is_none() } else { overlay.ends_deleted() };
        // Most created records have only their create pending; their merged
        // value is the create's row, kept once.
        let single_create = matches!(overlay.entries(), [only] if matches!(only.change, Change::Create(_)));
        let combined = if single_create { None } else { merged };
        let mut patched: Vec<(usize, Value)> = Vec::new();
        if !created {
            for entry in overlay.entries() {
                if let Change::Patch(patch) = &entry.change {
                    for (column, value) in patch {
                        match patched.binary_search_by_key(column, |(c, _)| *c) {
                            Ok(i) => patched[i].1 = value.clone(),
                            Err(i) => patched.insert(i, (*column, value.clone())),
                        }
                    }
                }
            }
        }
        RecordState { overlay, created, deleted, combined, patched }
    }

    /// The merged value of a created record that is not deleted.
    pub fn merged(&self) -> Option<&Row> {
        if !self.created || self.deleted {
            return None;
        }
        match (&self.combined, self.overlay.entries()) {
            (Some(row), _) => Some(row),
            (None, [only]) => match &only.change {
                Change::Create(row) => Some(row),
                _ => None,
            },
            (None, _) => None,
        }
    }

    /// The column's value as the buffer alone determines it: from the
    /// merged row of a created record, or from a pending patch.
    pub fn known_value(&self, column: usize) -> Option<&Value> {
        match self.merged() {
            Some(row) => Some(row.get(column)),
            None => self.patched.binary_search_by_key(&column, |(c, _)| *c).ok().map(|i| &self.patched[i].1),
        }
    }

    /// Whether a pending patch of a record without a create sets `column`.
    pub fn patches(&self, column: usize) -> bool {
        self.patched.binary_search_by_key(&column, |(c, _)| *c).is_ok()
    }
}

type Index = imbl::HashMap<IndexKey, imbl::HashSet<String>>;

/// The overlays of one table at one version.
#[derive(Debug, Clone, Default)]
pub struct TableView {
    records: imbl::HashMap<String, Arc<RecordState>>,
    /// Keys of records the buffer does not hold whole (patches or deletes
    /// of local records).
    partial: imbl::HashSet<String>,
    /// Equality indexes of known values, by column.
    indexes: imbl::HashMap<usize, Index>,
}

impl TableView {
    pub fn get(&self, key: &str) -> Option<&Arc<RecordState>> {
        self.records.get(key)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn records(&self) -> impl Iterator<Item = (&String, &Arc<RecordState>)> {
        self.records.iter()
    }

    /// Records the buffer does not hold whole.
    pub fn partial_records(&self) -> impl Iterator<Item = (&String, &Arc<RecordState>)> {
        self.partial.iter().filter_map(|k| self.records.get(k).map(|s| (k, s)))
    }

    /// Keys of records whose known value of `column` equals one of
    /// `values`, or `None` when the column has no index.
    pub fn lookup(&self, column: usize, values: &[Value]) -> Option<Vec<String>> {
        let index = self.indexes.get(&column)?;
        let mut keys = Vec::new();
        for value in values {
            if let Some(set) = index_key(value).and_then(|k| index.get(&k)) {
                keys.extend(set.iter().cloned());
            }
        }
        keys.sort();
        keys.dedup();
        Some(keys)
    }

    pub fn has_index(&self, column: usize) -> bool {
        self.indexes.contains_key(&column)
    }

    fn build_index(&mut self, column: usize) {
        let mut index = Index::new();
        for (key, state) in &self.records {
            if let Some(k) = state.known_value(column).and_then(index_key) {
                index.entry(k).or_default().insert(key.clone());
            }
        }
        self.indexes.insert(column, index);
    }

    /// Replaces the state of one record (or removes it), keeping the
    /// indexes and the partial set current.
    fn set(&mut self, key: &str, state: Option<RecordState>) {
        if let Some(old) = self.records.remove(key) {
            for (column, index) in self.indexes.iter_mut() {
                if let Some(k) = old.known_value(*column).and_then(index_key)
                    && let Some(set) = index.get_mut(&k)
                {
                    set.remove(key);
                    if set.is_empty() {
                        index.remove(&k);
                    }
                }
            }
            self.partial.remove(key);
        }
        let Some(state) = state else { return };
        for (column, index) in self.indexes.iter_mut() {
            if let Some(k) = state.known_value(*column).and_then(index_key) {
                index.entry(k).or_default().insert(key.to_owned());
            }
        }
        if !state.created {
            self.partial.insert(key.to_owned());
        }
        self.records.insert(key.to_owned(), Arc::new(state));
    }

    /// Applies parsed changes. Applying a change the view already has is a
    /// no-op, so a delta may start from an older version than the view's.
    fn apply(&mut self, changes: Vec<(EntryId, Option<OverlayEntry>)>) {
        // Group the changed entries by record, so each record is rebuilt once.
        let mut by_record: HashMap<String, Vec<(EntryId, Option<OverlayEntry>)>> = HashMap::new();
        for (id, entry) in changes {
            by_record.entry(id.key.clone()).or_default().push((id, entry));
        }
        for (key, entries) in by_record {
            let current = self.records.get(&key);
            let changed = entries.iter().any(|(id, entry)| {
                let present = current.is_some_and(|s| s.overlay.contains(id));
                entry.is_some() != present
            });
            if !changed {
                continue;
            }
            let mut overlay = current.map(|s| s.overlay.clone()).unwrap_or_default();
            for (id, entry) in entries {
                match entry {
                    Some(entry) => overlay.insert(entry),
                    None => {
                        overlay.remove(&id);
                    }
                }
            }
            let state = (!overlay.is_empty()).then(|| RecordState::new(overlay));
            self.set(&key, state);
        }
    }
}

fn parse_changes(
    table: &Table,
    changes: Vec<(String, Option<String>)>,
) -> Result<Vec<(EntryId, Option<OverlayEntry>)>, EngineError> {
    changes
        .into_iter()
        .map(|(field, json)| {
            let id = EntryId::parse(&field).ok_or_else(|| {
                EngineError::Internal(format!("malformed overlay entry name {field:?} in {}", table.name))
            })?;
            let entry = match json {
                Some(json) => Some(parse_entry(table, &field, &json)?),
                None => None,
            };
            Ok((id, entry))
        })
        .collect()
}

/// The overlays of one table at one version, and its drain epoch then.
#[derive(Debug, Clone)]
pub struct TableSnapshot {
    pub view: Arc<TableView>,
    pub epoch: i64,
}

#[derive(Debug, Clone)]
struct Cached {
    generation: String,
    /// Identifies the registry the entries were parsed with; a schema
    /// reload parses everything again.
    registry_id: u64,
    version: i64,
    epoch: i64,
    /// When the Redis read that produced this copy was sent: the copy shows
    /// every write acknowledged before then.
    read_at: Instant,
    view: Arc<TableView>,
}

/// The cached copy of one table, and the lock that lets one read at a time
/// refresh it.
#[derive(Default)]
struct Slot {
    refresh: tokio::sync::Mutex<()>,
    cached: Mutex<Option<Cached>>,
}

/// The cached overlays of every table read so far.
#[derive(Default)]
pub struct OverlayCache {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl OverlayCache {
    /// Returns the current overlays of `tables` with their epochs, one table
    /// after another. `indexed[i]` names a column of `tables[i]` whose
    /// equality index the caller will use; it is built if missing.
    pub async fn snapshot(
        &self,
        buffer: &Buffer,
        registry_id: u64,
        tables: &[&Arc<Table>],
        indexed: &[Option<usize>],
    ) -> Result<Vec<TableSnapshot>, EngineError> {
        let mut out = Vec::with_capacity(tables.len());
        for (i, table) in tables.iter().enumerate() {
            out.push(self.snapshot_one(buffer, registry_id, table, indexed.get(i).copied().flatten()).await?);
        }
        Ok(out)
    }

    /// The overlays of one table as of a Redis read sent after this call
    /// began, so the copy shows every write acknowledged before the call.
    ///
    /// Concurrent reads of one table share refreshes: one read at a time
    /// asks Redis, and a read that waited for it uses its copy when that
    /// Redis read was sent after the waiting read began. A busy table then
    /// costs about one Redis read per round trip, whatever the number of
    /// concurrent requests, and a delta is applied once.
    async fn snapshot_one(
        &self,
        buffer: &Buffer,
        registry_id: u64,
        table: &Arc<Table>,
        indexed: Option<usize>,
    ) -> Result<TableSnapshot, EngineError> {
        let began = Instant::now();
        let slot = self.slots.lock().expect("overlay cache lock").entry(table.name.clone()).or_default().clone();
        let _refreshing = slot.refresh.lock().await;

        let known = slot.cached.lock().expect("overlay slot lock").clone().filter(|c| c.registry_id == registry_id);
        if let Some(cached) = &known
            && cached.read_at >= began
        {
            let view = with_index(cached.view.clone(), indexed);
            if !Arc::ptr_eq(&view, &cached.view) {
                *slot.cached.lock().expect("overlay slot lock") = Some(Cached { view: view.clone(), ..cached.clone() });
            }
            return Ok(TableSnapshot { view, epoch: cached.epoch });
        }

        let read_at = Instant::now();
        let mut snapshot = buffer.snapshot(&[(table.name.as_str(), known.as_ref().map_or(-1, |c| c.version))]).await?;
        // A recreated buffer (flushed Redis) restarts its versions, so a
        // delta against a copy from the old buffer would be wrong.
        let known = match known {
            Some(k) if k.generation != snapshot.generation => {
                snapshot = buffer.snapshot(&[(table.name.as_str(), -1)]).await?;
                None
            }
            other => other,
        };
        let part = snapshot
            .tables
            .into_iter()
            .next()
            .ok_or_else(|| EngineError::Internal(format!("Redis returned no snapshot of {}", table.name)))?;

        let view = match (part.content, known) {
            (SnapshotContent::Unchanged, Some(k)) => k.view,
            (SnapshotContent::Unchanged, None) => Arc::new(TableView::default()),
            (SnapshotContent::Full(entries), _) => {
                let changes = parse_changes(table, entries.into_iter().map(|(f, j)| (f, Some(j))).collect())?;
                let mut view = TableView::default();
                view.apply(changes);
                Arc::new(view)
            }
            (SnapshotContent::Delta(changes), Some(k)) => {
                let changes = parse_changes(table, changes)?;
                let mut view = (*k.view).clone();
                view.apply(changes);
                Arc::new(view)
            }
            (SnapshotContent::Delta(_), None) => {
                return Err(EngineError::Internal(format!("Redis sent a delta of {} for an empty cache", table.name)));
            }
        };
        let view = with_index(view, indexed);
        *slot.cached.lock().expect("overlay slot lock") = Some(Cached {
            generation: snapshot.generation,
            registry_id,
            version: part.version,
            epoch: part.epoch,
            read_at,
            view: view.clone(),
        });
        Ok(TableSnapshot { view, epoch: part.epoch })
    }

    /// Forgets every cached table, e.g. after a schema reload.
    pub fn clear(&self) {
        self.slots.lock().expect("overlay cache lock").clear();
    }
}

/// The view with the equality index of `column` built, if asked for.
fn with_index(view: Arc<TableView>, column: Option<usize>) -> Arc<TableView> {
    match column {
        Some(column) if !view.has_index(column) => {
            let mut indexed = (*view).clone();
            indexed.build_index(column);
            Arc::new(indexed)
        }
        _ => view,
    }
}

fn parse_entry(table: &Table, field: &str, json: &str) -> Result<OverlayEntry, EngineError> {
    OverlayEntry::from_stored(table, field, json).map_err(|e| {
        tracing::error!(table = %table.name, entry = field, error = %e, "unreadable overlay entry");
        EngineError::Internal(format!("overlay entry {field} of {} cannot be read: {e}", table.name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bigdecimal::BigDecimal;
    use std::str::FromStr;

    #[test]
    fn equal_values_share_an_index_key() {
        let a = Value::Numeric(Numeric::Finite(BigDecimal::from_str("1.50").unwrap()));
        let b = Value::Numeric(Numeric::Finite(BigDecimal::from_str("1.5").unwrap()));
        assert_eq!(index_key(&a), index_key(&b));
        assert_eq!(index_key(&Value::Double(-0.0)), index_key(&Value::Double(0.0)));
        assert_ne!(index_key(&Value::Text("a".into())), index_key(&Value::Text("A".into())));
        assert_eq!(index_key(&Value::Null), None);
    }
}
