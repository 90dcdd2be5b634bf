//! An in-process copy of each table's overlays, kept current by the
//! per-table version counter in Redis.
//!
//! A read asks Redis, in one script, for the table's version, its drain
//! epoch and the entries changed since the cached version. An unchanged
//! table costs one small round trip; a changed one transfers only the
//! changed entries. The copy is replaced, never edited in place, so a read
//! that holds it keeps a consistent snapshot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use opsbuffer_core::overlay::{EntryId, OverlayEntry, TableOverlays};
use opsbuffer_core::schema::Table;
use opsbuffer_redis::{Buffer, SnapshotContent};

use crate::error::EngineError;

/// The overlays of one table at one version, and its drain epoch then.
#[derive(Debug, Clone)]
pub struct TableSnapshot {
    pub overlays: Arc<TableOverlays>,
    pub epoch: i64,
}

#[derive(Debug, Clone)]
struct Cached {
    generation: String,
    /// Identifies the registry the entries were parsed with; a schema
    /// reload parses everything again.
    registry_id: u64,
    version: i64,
    overlays: Arc<TableOverlays>,
}

/// The cached overlays of every table read so far.
#[derive(Default)]
pub struct OverlayCache {
    tables: Mutex<HashMap<String, Cached>>,
}

impl OverlayCache {
    /// Returns the current overlays of `tables` (with their epochs), read at
    /// one instant.
    pub async fn snapshot(
        &self,
        buffer: &Buffer,
        registry_id: u64,
        tables: &[&Arc<Table>],
    ) -> Result<Vec<TableSnapshot>, EngineError> {
        let known: Vec<Option<Cached>> = {
            let cache = self.tables.lock().expect("overlay cache lock");
            tables.iter().map(|t| cache.get(&t.name).filter(|c| c.registry_id == registry_id).cloned()).collect()
        };
        let request: Vec<(&str, i64)> =
            tables.iter().zip(&known).map(|(t, k)| (t.name.as_str(), k.as_ref().map_or(-1, |c| c.version))).collect();
        let mut snapshot = buffer.snapshot(&request).await?;

        // A recreated buffer (flushed Redis) restarts its versions, so a
        // delta against a copy from the old buffer would be wrong.
        let stale_generation = known.iter().flatten().any(|c| c.generation != snapshot.generation);
        if stale_generation {
            let full: Vec<(&str, i64)> = tables.iter().map(|t| (t.name.as_str(), -1)).collect();
            snapshot = buffer.snapshot(&full).await?;
        }

        let mut out = Vec::with_capacity(tables.len());
        let mut updates = Vec::new();
        for ((table, cached), part) in tables.iter().zip(known).zip(snapshot.tables) {
            let cached = if stale_generation { None } else { cached };
            let overlays = match (part.content, cached) {
                (SnapshotContent::Unchanged, Some(c)) => c.overlays,
                (SnapshotContent::Unchanged, None) => Arc::new(TableOverlays::default()),
                (SnapshotContent::Full(entries), _) => Arc::new(parse_all(table, &entries)?),
                (SnapshotContent::Delta(changes), Some(c)) => {
                    let mut overlays = (*c.overlays).clone();
                    apply_delta(table, &mut overlays, &changes)?;
                    Arc::new(overlays)
                }
                (SnapshotContent::Delta(_), None) => {
                    return Err(EngineError::Internal(format!(
                        "Redis sent a delta of {} for an empty cache",
                        table.name
                    )));
                }
            };
            updates.push((
                table.name.clone(),
                Cached {
                    generation: snapshot.generation.clone(),
                    registry_id,
                    version: part.version,
                    overlays: overlays.clone(),
                },
            ));
            out.push(TableSnapshot { overlays, epoch: part.epoch });
        }

        let mut cache = self.tables.lock().expect("overlay cache lock");
        for (name, fresh) in updates {
            let keep_old = cache.get(&name).is_some_and(|old| {
                old.generation == fresh.generation
                    && old.registry_id == fresh.registry_id
                    && old.version > fresh.version
            });
            if !keep_old {
                cache.insert(name, fresh);
            }
        }
        Ok(out)
    }

    /// Forgets every cached table, e.g. after a schema reload.
    pub fn clear(&self) {
        self.tables.lock().expect("overlay cache lock").clear();
    }
}

fn parse_all(table: &Table, entries: &[(String, String)]) -> Result<TableOverlays, EngineError> {
    let mut overlays = TableOverlays::default();
    for (field, json) in entries {
        overlays.insert(parse_entry(table, field, json)?);
    }
    Ok(overlays)
}

fn apply_delta(
    table: &Table,
    overlays: &mut TableOverlays,
    changes: &[(String, Option<String>)],
) -> Result<(), EngineError> {
    for (field, json) in changes {
        match json {
            Some(json) => overlays.insert(parse_entry(table, field, json)?),
            None => {
                let id = EntryId::parse(field).ok_or_else(|| {
                    EngineError::Internal(format!("malformed overlay entry name {field:?} in {}", table.name))
                })?;
                overlays.remove(&id);
            }
        }
    }
    Ok(())
}

fn parse_entry(table: &Table, field: &str, json: &str) -> Result<OverlayEntry, EngineError> {
    OverlayEntry::from_stored(table, field, json).map_err(|e| {
        tracing::error!(table = %table.name, entry = field, error = %e, "unreadable overlay entry");
        EngineError::Internal(format!("overlay entry {field} of {} cannot be read: {e}", table.name))
    })
}
