//! Guards: counters in Redis that make the checks of concurrent writes
//! safe.
//!
//! The unique and child checks of a write read the merged view before the
//! acknowledge script runs. Two requests checked at the same time could
//! therefore both pass, such as two files with one unique path, or a child
//! created while its parent's delete is checked. Each pending transaction therefore counts,
//! per table, the unique values it writes (`u:{hash}`), the records it
//! refers to (`r:{key}`) and, where a `CHECK` reads several columns, the
//! records it updates (`w:{key}`). A write reads the counts its checks depend on
//! before it reads the merged view, and the acknowledge script stores it
//! only if they are unchanged. Otherwise the write is checked again, and
//! the fresh check reads the concurrent write.

use std::collections::BTreeMap;

use opsbuffer_core::overlay::Change;
use opsbuffer_core::schema::{Registry, Table};
use opsbuffer_core::tx::Plan;
use opsbuffer_core::value::Value;
use opsbuffer_redis::{Guard, Guards};
use sha2::{Digest, Sha256};

use crate::write::{columns_in, references_primary_key};

/// Lists the guards of `plan`. The unique values it writes, and the
/// records it deletes that other tables can refer to, are expected
/// unchanged. Their counts are left 0 for the caller to read. The unique
/// values and references it writes are added.
///
/// NOTE: a patch that changes only some columns of a multi-column unique
/// key adds no guard, because the full value is known only after the
/// current row is read. Two such patches checked at the same time can
/// still both pass.
pub fn plan_guards(plan: &Plan, registry: &Registry) -> Guards {
    let mut expected: BTreeMap<Guard, i64> = BTreeMap::new();
    let mut added: BTreeMap<Guard, i64> = BTreeMap::new();
    for step in &plan.steps {
        let table = &step.table;
        let guard_updates = has_multi_column_check(table);
        for change in &step.changes {
            let written: Vec<(usize, &Value)> = match &change.change {
                Change::Create(row) => row.0.iter().enumerate().collect(),
                Change::Patch(patch) => {
                    // Two updates of one record checked at the same time
                    // could each keep a multi-column CHECK true on its own
                    // and break it together.
                    if guard_updates {
                        let guard = record_guard(&table.name, &change.key);
                        expected.insert(guard.clone(), 0);
                        *added.entry(guard).or_default() += 1;
                    }
                    patch.iter().map(|(c, v)| (*c, v)).collect()
                }
                Change::Delete => {
                    if !table.referenced_by.is_empty() {
                        expected.insert(reference_guard(&table.name, &change.key), 0);
                    }
                    continue;
                }
            };
            let value_of = |column: usize| written.iter().find(|(c, _)| *c == column).map(|(_, v)| *v);

            for unique in &table.unique_keys {
                let values: Option<Vec<&Value>> = unique.columns.iter().map(|c| value_of(*c)).collect();
                let Some(values) = values else { continue };
                if values.iter().any(|v| v.is_null()) {
                    continue;
                }
                let guard = unique_guard(table, &unique.name, &values);
                expected.insert(guard.clone(), 0);
                *added.entry(guard).or_default() += 1;
            }

            for fk in &table.foreign_keys {
                let Some(target) = registry.table(&fk.referenced_table) else { continue };
                if !references_primary_key(fk, target) {
                    continue;
                }
                if let Some(value) = value_of(fk.columns[0])
                    && !value.is_null()
                {
                    *added.entry(reference_guard(&target.name, &value.key_text())).or_default() += 1;
                }
            }
        }
    }
    Guards { expected: expected.into_iter().collect(), added: added.into_iter().collect() }
}

/// Returns the guard of one value of a unique key. The field is a hash,
/// so it stays short whatever the value; two values with one hash only
/// cost a second check.
fn unique_guard(table: &Table, constraint: &str, values: &[&Value]) -> Guard {
    let mut hasher = Sha256::new();
    hasher.update(constraint.as_bytes());
    for value in values {
        hasher.update([0x1f]);
        hasher.update(value.key_text().as_bytes());
    }
    let digest = hasher.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    Guard { table: table.name.clone(), field: format!("u:{hex}") }
}

/// Returns whether a `CHECK` constraint of `table` reads more than one
/// column.
fn has_multi_column_check(table: &Table) -> bool {
    table.checks.iter().any(|check| columns_in(table, &check.expression).len() > 1)
}

/// Returns the guard of the pending updates of one record.
fn record_guard(table: &str, key: &str) -> Guard {
    Guard { table: table.to_owned(), field: format!("w:{key}") }
}

/// Returns the guard of the references to one record.
fn reference_guard(table: &str, key: &str) -> Guard {
    Guard { table: table.to_owned(), field: format!("r:{key}") }
}
