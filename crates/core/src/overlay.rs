//! Overlays: everything pending for one record, and how it changes the
//! record's local row into its merged value.
//!
//! Each pending change is an [`OverlayEntry`] named by an [`EntryId`]: the
//! acknowledgement sequence number of its transaction, its position inside
//! the transaction, its kind and the record key. Sorting entries by id gives
//! acknowledgement order, which is the order main applies them in.

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

use crate::row::{Patch, Row, patch_from_stored, patch_to_json};
use crate::schema::Table;
use crate::types::TypeError;

/// The kind of a pending change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeKind {
    Create,
    Patch,
    Delete,
}

impl ChangeKind {
    /// Returns the name of the operation as the API spells it in steps.
    pub fn op_name(self) -> &'static str {
        match self {
            ChangeKind::Create => "create",
            ChangeKind::Patch => "update",
            ChangeKind::Delete => "delete",
        }
    }

    pub fn code(self) -> char {
        match self {
            ChangeKind::Create => 'c',
            ChangeKind::Patch => 'p',
            ChangeKind::Delete => 'd',
        }
    }

    pub fn from_code(code: char) -> Option<ChangeKind> {
        match code {
            'c' => Some(ChangeKind::Create),
            'p' => Some(ChangeKind::Patch),
            'd' => Some(ChangeKind::Delete),
            _ => None,
        }
    }
}

/// The name of one overlay entry: `{seq:016}:{index:06}:{kind}:{key}`. The
/// zero-padded numbers make the lexical order of names the acknowledgement
/// order, and the key comes last so it may contain any character.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId {
    pub seq: u64,
    pub index: u32,
    pub kind: ChangeKind,
    pub key: String,
}

impl EntryId {
    pub fn new(seq: u64, index: u32, kind: ChangeKind, key: impl Into<String>) -> EntryId {
        EntryId { seq, index, kind, key: key.into() }
    }

    /// Parses a name written by `Display`.
    pub fn parse(field: &str) -> Option<EntryId> {
        let mut parts = field.splitn(4, ':');
        let seq = parts.next()?.parse().ok()?;
        let index = parts.next()?.parse().ok()?;
        let kind_text = parts.next()?;
        let mut kind_chars = kind_text.chars();
        let kind = ChangeKind::from_code(kind_chars.next()?)?;
        if kind_chars.next().is_some() {
            return None;
        }
        let key = parts.next()?.to_owned();
        Some(EntryId::new(seq, index, kind, key))
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016}:{:06}:{}:{}", self.seq, self.index, self.kind.code(), self.key)
    }
}

/// What a pending change does to its record.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A complete new record.
    Create(Row),
    /// New values for some columns.
    Patch(Patch),
    Delete,
}

impl Change {
    pub fn kind(&self) -> ChangeKind {
        match self {
            Change::Create(_) => ChangeKind::Create,
            Change::Patch(_) => ChangeKind::Patch,
            Change::Delete => ChangeKind::Delete,
        }
    }
}

/// One pending change of one record.
#[derive(Debug, Clone, PartialEq)]
pub struct OverlayEntry {
    pub id: EntryId,
    pub transaction_id: Uuid,
    pub change: Change,
}

impl OverlayEntry {
    /// The stored JSON: `{"tx": ..., "data": {...}}`; the kind, position and
    /// key live in the entry's name.
    pub fn to_stored(&self, table: &Table) -> String {
        let data = match &self.change {
            Change::Create(row) => Json::Object(row.to_json(table)),
            Change::Patch(patch) => Json::Object(patch_to_json(table, patch)),
            Change::Delete => Json::Null,
        };
        json!({"tx": self.transaction_id, "data": data}).to_string()
    }

    /// Reads an entry from its name and stored JSON.
    pub fn from_stored(table: &Table, field: &str, stored: &str) -> Result<OverlayEntry, TypeError> {
        let id = EntryId::parse(field).ok_or_else(|| TypeError(format!("malformed overlay entry name {field:?}")))?;
        let json: Json =
            serde_json::from_str(stored).map_err(|e| TypeError(format!("overlay entry {field} is not JSON: {e}")))?;
        let transaction_id = json
            .get("tx")
            .and_then(Json::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| TypeError(format!("overlay entry {field} has no transaction id")))?;
        let empty = Map::new();
        let data = json.get("data").and_then(Json::as_object).unwrap_or(&empty);
        let change = match id.kind {
            ChangeKind::Create => Change::Create(Row::from_stored(table, data)?),
            ChangeKind::Patch => Change::Patch(patch_from_stored(table, data)?),
            ChangeKind::Delete => Change::Delete,
        };
        Ok(OverlayEntry { id, transaction_id, change })
    }
}

/// Everything pending for one record, in acknowledgement order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordOverlay {
    entries: Vec<OverlayEntry>,
}

impl RecordOverlay {
    pub fn new() -> RecordOverlay {
        RecordOverlay::default()
    }

    /// Adds an entry, keeping acknowledgement order. An entry with the same
    /// id replaces the old one.
    pub fn insert(&mut self, entry: OverlayEntry) {
        match self.entries.binary_search_by(|e| e.id.cmp(&entry.id)) {
            Ok(i) => self.entries[i] = entry,
            Err(i) => self.entries.insert(i, entry),
        }
    }

    /// Removes an entry; returns whether it was present.
    pub fn remove(&mut self, id: &EntryId) -> bool {
        match self.entries.binary_search_by(|e| e.id.cmp(id)) {
            Ok(i) => {
                self.entries.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    /// Whether an entry with this id is present.
    pub fn contains(&self, id: &EntryId) -> bool {
        self.entries.binary_search_by(|e| e.id.cmp(id)).is_ok()
    }

    pub fn entries(&self) -> &[OverlayEntry] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the record was created in the buffer, so its local row (if
    /// local has one yet) is replaced and need not be read.
    pub fn has_create(&self) -> bool {
        self.entries.iter().any(|e| e.id.kind == ChangeKind::Create)
    }

    /// Whether the last create-or-delete entry is a delete.
    pub fn ends_deleted(&self) -> bool {
        self.entries
            .iter()
            .rev()
            .find(|e| e.id.kind != ChangeKind::Patch)
            .is_some_and(|e| e.id.kind == ChangeKind::Delete)
    }

    /// Whether any pending patch sets column `position`.
    pub fn patches_column(&self, position: usize) -> bool {
        self.entries.iter().any(|e| matches!(&e.change, Change::Patch(p) if p.iter().any(|(i, _)| *i == position)))
    }

    /// The distinct transactions with entries here, in acknowledgement order.
    pub fn transactions(&self) -> Vec<Uuid> {
        let mut out: Vec<Uuid> = Vec::new();
        for e in &self.entries {
            if !out.contains(&e.transaction_id) {
                out.push(e.transaction_id);
            }
        }
        out
    }

    /// The merged value of the record: the local row, replaced by a buffered
    /// create, then each patch applied field by field, then removed by a
    /// delete. Returns `None` when the record does not exist after all
    /// pending changes.
    ///
    /// Applying an entry whose transaction local already shows is harmless:
    /// a create yields the same row and a patch sets the same values, and
    /// entries of later transactions follow it, so the newest values win.
    pub fn apply(&self, local: Option<&Row>) -> Option<Row> {
        let mut current = local.cloned();
        for entry in &self.entries {
            match &entry.change {
                Change::Create(row) => current = Some(row.clone()),
                Change::Patch(patch) => {
                    if let Some(row) = current.as_mut() {
                        for (position, value) in patch {
                            row.0[*position] = value.clone();
                        }
                    }
                }
                Change::Delete => current = None,
            }
        }
        current
    }
}

/// The overlays of one table, by record key.
#[derive(Debug, Clone, Default)]
pub struct TableOverlays {
    pub records: HashMap<String, RecordOverlay>,
}

impl TableOverlays {
    pub fn insert(&mut self, entry: OverlayEntry) {
        self.records.entry(entry.id.key.clone()).or_default().insert(entry);
    }

    pub fn remove(&mut self, id: &EntryId) {
        if let Some(record) = self.records.get_mut(&id.key) {
            record.remove(id);
            if record.is_empty() {
                self.records.remove(&id.key);
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&RecordOverlay> {
        self.records.get(key)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn entry(seq: u64, index: u32, change: Change) -> OverlayEntry {
        OverlayEntry {
            id: EntryId::new(seq, index, change.kind(), "k"),
            transaction_id: Uuid::from_u128(u128::from(seq)),
            change,
        }
    }

    fn row(a: i64, b: &str) -> Row {
        Row(vec![Value::Int(a), Value::Text(b.into())])
    }

    #[test]
    fn entry_names_round_trip_and_sort_by_sequence() {
        let a = EntryId::new(9, 1, ChangeKind::Patch, "x:y");
        let b = EntryId::new(10, 0, ChangeKind::Create, "a");
        assert_eq!(EntryId::parse(&a.to_string()).unwrap(), a);
        assert!(a.to_string() < b.to_string());
        assert!(a < b);
        assert_eq!(EntryId::parse("12:3:q:k"), None);
    }

    #[test]
    fn patch_changes_only_its_fields() {
        let mut overlay = RecordOverlay::new();
        overlay.insert(entry(1, 0, Change::Patch(vec![(1, Value::Text("completed".into()))])));
        let merged = overlay.apply(Some(&row(7, "running"))).unwrap();
        assert_eq!(merged, row(7, "completed"));
    }

    #[test]
    fn later_patch_wins_whatever_the_insert_order() {
        let mut overlay = RecordOverlay::new();
        overlay.insert(entry(2, 0, Change::Patch(vec![(1, Value::Text("second".into()))])));
        overlay.insert(entry(1, 0, Change::Patch(vec![(1, Value::Text("first".into()))])));
        assert_eq!(overlay.apply(Some(&row(1, "x"))).unwrap(), row(1, "second"));
    }

    #[test]
    fn create_replaces_local_and_delete_removes() {
        let mut overlay = RecordOverlay::new();
        overlay.insert(entry(1, 0, Change::Create(row(1, "buffered"))));
        assert_eq!(overlay.apply(Some(&row(1, "stale"))).unwrap(), row(1, "buffered"));
        overlay.insert(entry(2, 0, Change::Delete));
        assert_eq!(overlay.apply(None), None);
        assert!(overlay.ends_deleted());
    }

    #[test]
    fn patch_of_missing_record_stays_missing() {
        let mut overlay = RecordOverlay::new();
        overlay.insert(entry(1, 0, Change::Patch(vec![(0, Value::Int(3))])));
        assert_eq!(overlay.apply(None), None);
    }

    #[test]
    fn reapplying_replicated_entries_is_harmless() {
        // Local already shows both patches; applying them again changes nothing.
        let mut overlay = RecordOverlay::new();
        overlay.insert(entry(1, 0, Change::Patch(vec![(1, Value::Text("a".into()))])));
        overlay.insert(entry(2, 0, Change::Patch(vec![(1, Value::Text("b".into()))])));
        assert_eq!(overlay.apply(Some(&row(1, "b"))).unwrap(), row(1, "b"));
    }
}
