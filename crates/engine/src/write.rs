//! The write path: checks that need data, then the buffer (secondary site)
//! or main (main site).
//!
//! Planning (in the core crate) already checked every value against its
//! column. Here each step is checked against the merged view plus the
//! earlier steps of the same transaction: targets of updates and deletes
//! exist, created keys are free, references point at records in local or
//! the buffer, unique values are unused, `CHECK` constraints hold (evaluated
//! by local's PostgreSQL), and deleted records have no children. The
//! acknowledge script then re-checks existence against pending state
//! atomically with storing the transaction.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use opsbuffer_core::overlay::{Change, EntryId, OverlayEntry};
use opsbuffer_core::query::Condition;
use opsbuffer_core::row::Row;
use opsbuffer_core::schema::{ForeignKey, Table, UniqueKey};
use opsbuffer_core::tx::{Plan, PlannedChange, Rejection, WriteError, field_path};
use opsbuffer_core::value::Value;
use opsbuffer_pg::writer::{ErrorClass, Operation, Transaction};
use opsbuffer_redis::{
    AcknowledgeChecks, Acknowledgement, Guards, NewEntry, Precondition, PreconditionFailure, RECORD_SEPARATOR,
    REFERENCE_MARK, Rule,
};
use uuid::Uuid;

use crate::engine::{Engine, now_ms};
use crate::error::EngineError;

/// The answer to an accepted write.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    pub transaction_id: Uuid,
    /// Primary keys of the changed records, in step order.
    pub ids: Vec<serde_json::Value>,
    /// `buffered` at a secondary site, `committed` at a main site.
    pub status: &'static str,
}

/// The waits before each resend of an acknowledge whose reply was lost,
/// about 5 s in all, enough for a restarted Redis to load its data.
const ACKNOWLEDGE_RESEND_DELAYS: [Duration; 5] = [
    Duration::from_millis(200),
    Duration::from_millis(400),
    Duration::from_millis(800),
    Duration::from_millis(1600),
    Duration::from_millis(2000),
];

/// How often a write is checked again when a record moved between the
/// buffer and local during its checks.
const MAX_CHECK_ATTEMPTS: usize = 3;

/// A failed acknowledgement: a record the checks found is missing now, or
/// a concurrent write changed a guard the checks read (both: check
/// again), or anything else.
enum Retry {
    Missing(WriteError),
    Stale,
    Other(EngineError),
}

impl From<EngineError> for Retry {
    fn from(error: EngineError) -> Retry {
        Retry::Other(error)
    }
}

impl From<opsbuffer_redis::BufferError> for Retry {
    fn from(error: opsbuffer_redis::BufferError) -> Retry {
        Retry::Other(error.into())
    }
}

/// Largest value of a unique key, as text, that is accepted. PostgreSQL's
/// B-tree index (version 4, 8 kB pages) rejects entries over 2704 bytes
/// after compression. A longer value is rejected here, even one that would
/// compress enough, rather than dead-lettered when main rejects it.
const MAX_UNIQUE_VALUE_BYTES: usize = 2700;

/// Most records of one table a delete check or unique check reads.
const CHECK_QUERY_LIMIT: usize = 1000;

/// The state of one record as the transaction's steps change it.
#[derive(Debug, Clone)]
struct Staged {
    row: Option<Row>,
    /// Whether local has the record (for the acknowledge script's check).
    in_local: bool,
    /// Whether an earlier step of this transaction created it.
    created_here: bool,
}

impl Checked {
    /// Keeps the first of identical preconditions (a bulk step refers to
    /// the same parent from every row), so the script checks each once.
    fn dedup_preconditions(&mut self) {
        let mut seen = std::collections::HashSet::new();
        let mut kept = Vec::with_capacity(self.preconditions.len());
        let mut paths = Vec::with_capacity(self.preconditions.len());
        for (precondition, path) in self.preconditions.drain(..).zip(self.precondition_paths.drain(..)) {
            if seen.insert((precondition.table.clone(), precondition.key.clone(), precondition.rule)) {
                kept.push(precondition);
                paths.push(path);
            }
        }
        self.preconditions = kept;
        self.precondition_paths = paths;
    }
}

/// The request field a precondition checks, what it names, and whether it
/// is a reference (a foreign key) rather than the record a step changes.
#[derive(Debug, Clone, Default)]
struct PreconditionOrigin {
    path: String,
    what: String,
    reference: bool,
}

/// A row a step creates or updates, as it will be after the step.
struct WrittenRow {
    table: Arc<Table>,
    row: Row,
    path: String,
    /// The columns an update changes; `None` for a create.
    patched: Option<Vec<usize>>,
}

/// The keys of staged records by the text of their values of one unique
/// key.
type KeysByValue<'a> = HashMap<Vec<String>, Vec<&'a str>>;

/// The single-column unique values of one unique key to look up at once.
struct UniqueLookup {
    table: Arc<Table>,
    column: usize,
    /// (value, key of the writing record, request field).
    items: Vec<(Value, String, String)>,
}

/// What the checks produce for the acknowledge script.
#[derive(Default)]
struct Checked {
    preconditions: Vec<Precondition>,
    /// Where each precondition comes from, for errors.
    precondition_paths: Vec<PreconditionOrigin>,
    /// Records written, as `table\x1fkey`, or only referenced, as
    /// `~table\x1fkey`.
    touched: Vec<String>,
    guards: Guards,
}

impl Engine {
    /// Checks `plan` against the data and stores (secondary site) or
    /// applies (main site) it.
    pub async fn submit(&self, plan: Plan) -> Result<Receipt, EngineError> {
        let transaction_id = Uuid::now_v7();
        if !self.is_secondary() {
            self.check_plan(&plan).await?;
            return self.apply_plan(transaction_id, &plan).await;
        }
        // A record can move from the buffer to local between the checks and
        // the acknowledge script, which then finds it in neither place as
        // the checks saw them; checking again against fresh reads settles it.
        let mut attempt = 1;
        loop {
            let checked = self.check_plan(&plan).await?;
            match self.buffer_plan(transaction_id, &plan, checked).await {
                Err(Retry::Missing(error)) if attempt < MAX_CHECK_ATTEMPTS => {
                    tracing::debug!(transaction_id = %transaction_id, attempt, %error, "a record moved during the checks; checking again");
                    attempt += 1;
                }
                Err(Retry::Missing(error)) => return Err(error.into()),
                Err(Retry::Stale) if attempt < MAX_CHECK_ATTEMPTS => {
                    tracing::debug!(transaction_id = %transaction_id, attempt, "a concurrent write changed what the checks read; checking again");
                    attempt += 1;
                }
                Err(Retry::Stale) => {
                    tracing::warn!(transaction_id = %transaction_id, attempts = attempt, "concurrent writes changed what the checks read on every attempt");
                    return Err(EngineError::unavailable(
                        "write_contention",
                        format!(
                            "concurrent writes to the same unique values or parent records changed them during {MAX_CHECK_ATTEMPTS} checks of this request; retry it"
                        ),
                        1,
                    ));
                }
                Err(Retry::Other(error)) => return Err(error),
                Ok(receipt) => return Ok(receipt),
            }
        }
    }

    async fn buffer_plan(&self, transaction_id: Uuid, plan: &Plan, checked: Checked) -> Result<Receipt, Retry> {
        let mut entries = Vec::with_capacity(plan.change_count());
        let mut index = 0u32;
        for step in &plan.steps {
            for change in &step.changes {
                let entry = OverlayEntry {
                    id: EntryId::new(0, index, change.change.kind(), change.key.clone()),
                    transaction_id,
                    change: change.change.clone(),
                };
                entries.push(NewEntry {
                    table: step.table.name.clone(),
                    index,
                    kind: change.change.kind(),
                    key: change.key.clone(),
                    value: entry.to_stored(&step.table),
                });
                index += 1;
            }
        }

        let checks = AcknowledgeChecks {
            touched: &checked.touched,
            guards: &checked.guards,
            preconditions: &checked.preconditions,
        };
        let now = now_ms();
        let mut resent = 0;
        let outcome = loop {
            match self.buffer.acknowledge(transaction_id, now, self.config.max_pending, checks, &entries).await {
                Ok(outcome) => break outcome,
                // Redis may have stored the transaction before the reply was
                // lost, so the same transaction id is sent again: the script
                // then returns "duplicate" when the first attempt was stored.
                Err(error) if error.reply_may_be_lost() && resent < ACKNOWLEDGE_RESEND_DELAYS.len() => {
                    let delay = ACKNOWLEDGE_RESEND_DELAYS[resent];
                    resent += 1;
                    tracing::warn!(transaction_id = %transaction_id, attempt = resent, delay_ms = delay.as_millis() as u64, %error, "no reply to the acknowledge script; sending it again");
                    tokio::time::sleep(delay).await;
                }
                Err(error) if error.reply_may_be_lost() => {
                    tracing::error!(transaction_id = %transaction_id, %error, "Redis did not confirm the transaction; it may be stored");
                    return Err(Retry::Other(EngineError::unavailable(
                        "buffer_unavailable",
                        format!(
                            "Redis did not confirm transaction {transaction_id} ({error}), so it may have been stored; GET /transactions/{transaction_id} tells whether it was, so check that before sending the write again"
                        ),
                        2,
                    )));
                }
                Err(error) => return Err(error.into()),
            }
        };
        match outcome {
            Acknowledgement::Stored { sequence } => {
                tracing::info!(transaction_id = %transaction_id, sequence, records = entries.len(), "buffered transaction");
                self.queued.notify_one();
                Ok(Receipt { transaction_id, ids: plan.ids(), status: "buffered" })
            }
            Acknowledgement::Full { pending } => Err(Retry::Other(EngineError::unavailable(
                "buffer_full",
                format!(
                    "the buffer holds {pending} pending transactions, at its limit of {}; retry when main is reachable again and the buffer drains",
                    self.config.max_pending
                ),
                5,
            ))),
            Acknowledgement::Stale => Err(Retry::Stale),
            Acknowledgement::Duplicate if resent > 0 => {
                tracing::info!(transaction_id = %transaction_id, records = entries.len(), "buffered transaction; an attempt whose reply was lost stored it");
                self.queued.notify_one();
                Ok(Receipt { transaction_id, ids: plan.ids(), status: "buffered" })
            }
            Acknowledgement::Duplicate => {
                Err(Retry::Other(EngineError::Internal(format!("transaction id {transaction_id} was generated twice"))))
            }
            Acknowledgement::Rejected { index, failure } => {
                let origin = checked.precondition_paths.get(index).cloned().unwrap_or_default();
                let error = if origin.reference {
                    reference_error(&origin.path, &origin.what, failure)
                } else {
                    precondition_error(&origin.path, &origin.what, failure)
                };
                if failure == PreconditionFailure::Missing {
                    Err(Retry::Missing(error))
                } else {
                    Err(Retry::Other(error.into()))
                }
            }
        }
    }

    async fn apply_plan(&self, transaction_id: Uuid, plan: &Plan) -> Result<Receipt, EngineError> {
        let mut changes = Vec::new();
        for step in &plan.steps {
            for change in &step.changes {
                changes.push((step.table.clone(), change.primary_key.clone(), change.change.clone()));
            }
        }
        let transaction = Transaction { id: transaction_id, sequence: 0, operations: operations(changes) };
        let mut writer = self.main_writer.lock().await;
        match writer.apply(std::slice::from_ref(&transaction)).await {
            Ok(applied) => {
                tracing::info!(transaction_id = %transaction_id, commit_lsn = %applied.commit_lsn, "committed transaction on main");
                Ok(Receipt { transaction_id, ids: plan.ids(), status: "committed" })
            }
            Err(error) if error.class == ErrorClass::Permanent => {
                tracing::warn!(transaction_id = %transaction_id, error = %error.message, "main rejected the transaction");
                Err(WriteError::new(Rejection::Conflict, "rejected_by_main", None, error.message).into())
            }
            Err(error) => {
                tracing::warn!(transaction_id = %transaction_id, error = %error.message, "main unavailable for a write-through");
                Err(EngineError::unavailable(
                    "main_unavailable",
                    format!("main could not apply the write: {}", error.message),
                    5,
                ))
            }
        }
    }

    async fn check_plan(&self, plan: &Plan) -> Result<Checked, EngineError> {
        // Guard counts are read before anything of the merged view, so a
        // concurrent write either shows in the reads or changes a count.
        let guards = if self.is_secondary() {
            let (_, registry) = self.registry();
            let mut guards = crate::guards::plan_guards(plan, &registry);
            let expected_guards: Vec<_> = guards.expected.iter().map(|(g, _)| g.clone()).collect();
            let counts = self.buffer.guard_counts(&expected_guards).await?;
            for ((_, count), read) in guards.expected.iter_mut().zip(counts) {
                *count = read;
            }
            guards
        } else {
            Guards::default()
        };
        // Created rows are complete already, so their CHECK constraints are
        // evaluated while the records the plan names are read.
        let created: Vec<WrittenRow> = plan
            .steps
            .iter()
            .flat_map(|step| {
                step.changes.iter().filter_map(|change| match &change.change {
                    Change::Create(row) => Some(WrittenRow {
                        table: step.table.clone(),
                        row: row.clone(),
                        path: change.path.clone(),
                        patched: None,
                    }),
                    _ => None,
                })
            })
            .collect();
        let (fetched, ()) = tokio::try_join!(self.prefetch(plan), self.check_constraints(&created))?;
        let mut staged: HashMap<(String, String), Staged> = HashMap::new();
        let mut checked = Checked { guards, ..Checked::default() };
        let mut written: Vec<WrittenRow> = Vec::new();

        // Each step sees the records as the earlier steps left them, as
        // PostgreSQL does when it applies them in order.
        for step in &plan.steps {
            let table = &step.table;
            let step_start = written.len();
            // The rows the step's updates start from, in step order.
            let mut updated_from: Vec<(usize, Row)> = Vec::new();
            for change in &step.changes {
                let id = (table.name.clone(), change.key.clone());
                let current = match staged.get(&id) {
                    Some(s) => s.clone(),
                    None => {
                        let (row, in_local) = fetched.get(&id).cloned().unwrap_or((None, false));
                        Staged { row, in_local, created_here: false }
                    }
                };
                checked.touched.push(record_name(&table.name, &change.key));
                match &change.change {
                    Change::Create(row) => {
                        self.check_create(table, change, &current, staged.contains_key(&id), &mut checked)?;
                        self.check_references(table, row, None, &change.path, &fetched, &staged, &mut checked).await?;
                        written.push(WrittenRow {
                            table: table.clone(),
                            row: row.clone(),
                            path: change.path.clone(),
                            patched: None,
                        });
                        staged.insert(
                            id,
                            Staged { row: Some(row.clone()), in_local: current.in_local, created_here: true },
                        );
                    }
                    Change::Patch(patch) => {
                        let mut row = require_existing(table, change, &current, &mut checked)?;
                        updated_from.push((written.len() - step_start, row.clone()));
                        for (position, value) in patch {
                            row.0[*position] = value.clone();
                        }
                        let patched: Vec<usize> = patch.iter().map(|(i, _)| *i).collect();
                        self.check_references(
                            table,
                            &row,
                            Some(&patched),
                            &change.path,
                            &fetched,
                            &staged,
                            &mut checked,
                        )
                        .await?;
                        written.push(WrittenRow {
                            table: table.clone(),
                            row: row.clone(),
                            path: change.path.clone(),
                            patched: Some(patched),
                        });
                        staged.insert(id, Staged { row: Some(row), ..current });
                    }
                    Change::Delete => {
                        let row = require_existing(table, change, &current, &mut checked)?;
                        self.check_children(table, &row, &change.path, &staged).await?;
                        staged.insert(id, Staged { row: None, ..current });
                    }
                }
            }
            check_unique_in_order(&written[step_start..], &updated_from)?;
            self.check_unique(&written[step_start..], &staged).await?;
        }

        let updated: Vec<WrittenRow> = written.into_iter().filter(|w| w.patched.is_some()).collect();
        self.check_constraints(&updated).await?;
        checked.touched.sort();
        checked.touched.dedup();
        checked.dedup_preconditions();
        Ok(checked)
    }

    /// Fetches the merged rows of every record the plan names by key:
    /// update and delete targets, client-chosen keys of creates, and
    /// referenced records.
    async fn prefetch(&self, plan: &Plan) -> Result<HashMap<(String, String), (Option<Row>, bool)>, EngineError> {
        let (_, registry) = self.registry();
        // Records the steps change, whose rows the checks need, and records
        // foreign keys refer to, whose existence is enough.
        let mut rows_wanted: HashMap<String, (Arc<Table>, HashSet<String>)> = HashMap::new();
        let mut refs_wanted: HashMap<String, (Arc<Table>, HashSet<String>)> = HashMap::new();
        let add = |map: &mut HashMap<String, (Arc<Table>, HashSet<String>)>, table: &Arc<Table>, key: String| {
            map.entry(table.name.clone()).or_insert_with(|| (table.clone(), HashSet::new())).1.insert(key);
        };
        for step in &plan.steps {
            for change in &step.changes {
                if !change.generated_key {
                    add(&mut rows_wanted, &step.table, change.key.clone());
                }
                let (row, patched): (Option<&Row>, Option<Vec<usize>>) = match &change.change {
                    Change::Create(row) => (Some(row), None),
                    Change::Patch(patch) => (None, Some(patch.iter().map(|(i, _)| *i).collect())),
                    Change::Delete => (None, None),
                };
                for fk in &step.table.foreign_keys {
                    let Some(target) = registry.table(&fk.referenced_table) else {
                        continue;
                    };
                    if !references_primary_key(fk, target) {
                        continue;
                    }
                    let value = match (&row, &change.change) {
                        (Some(row), _) => row.get(fk.columns[0]).clone(),
                        (None, Change::Patch(patch))
                            if patched.as_ref().is_some_and(|p| p.contains(&fk.columns[0])) =>
                        {
                            patch
                                .iter()
                                .find(|(i, _)| *i == fk.columns[0])
                                .map(|(_, v)| v.clone())
                                .unwrap_or(Value::Null)
                        }
                        _ => Value::Null,
                    };
                    if !value.is_null() {
                        add(&mut refs_wanted, target, value.key_text());
                    }
                }
            }
        }
        for (name, (_, keys)) in refs_wanted.iter_mut() {
            if let Some((_, rows)) = rows_wanted.get(name) {
                keys.retain(|k| !rows.contains(k));
            }
        }

        let row_lookups = rows_wanted.into_values().map(|(table, keys)| async move {
            let keys: Vec<String> = keys.into_iter().collect();
            let rows = self.merged_by_key(&table, &keys).await?;
            Ok::<_, EngineError>(rows.into_iter().map(move |(k, v)| ((table.name.clone(), k), v)).collect::<Vec<_>>())
        });
        let ref_lookups =
            refs_wanted.into_values().filter(|(_, keys)| !keys.is_empty()).map(|(table, keys)| async move {
                let keys: Vec<String> = keys.into_iter().collect();
                let found = self.local_exists(&table, &keys).await?;
                // Existence is all the reference checks read, so an empty row
                // stands for a record local has.
                Ok::<_, EngineError>(
                    found
                        .into_iter()
                        .map(move |(k, in_local)| {
                            ((table.name.clone(), k), (in_local.then(|| Row(Vec::new())), in_local))
                        })
                        .collect::<Vec<_>>(),
                )
            });
        let lookups = futures::future::try_join_all(row_lookups);
        let references = futures::future::try_join_all(ref_lookups);
        let (rows, refs) = tokio::try_join!(lookups, references)?;
        let mut out = HashMap::new();
        for part in rows.into_iter().chain(refs) {
            out.extend(part);
        }
        Ok(out)
    }

    fn check_create(
        &self,
        table: &Table,
        change: &PlannedChange,
        current: &Staged,
        staged_here: bool,
        checked: &mut Checked,
    ) -> Result<(), EngineError> {
        if staged_here {
            // Creating a key again after deleting it is refused while the
            // delete is pending, so the record's overlay never holds both.
            let (code, message) = if current.row.is_none() {
                (
                    "pending_delete",
                    format!(
                        "{} {} is deleted earlier in this transaction; a deleted key cannot be created again until the delete has reached local, so use another key",
                        table.name, change.key
                    ),
                )
            } else {
                ("duplicate_key", format!("{} {} is created twice in this transaction", table.name, change.key))
            };
            return Err(WriteError::new(Rejection::Conflict, code, Some(change.path.clone()), message).into());
        }
        if current.row.is_some() {
            return Err(WriteError::new(
                Rejection::Conflict,
                "duplicate_key",
                Some(change.path.clone()),
                format!(
                    "{} {} already exists; update it instead, or create it with another key",
                    table.name, change.key
                ),
            )
            .into());
        }
        if change.generated_key {
            return Ok(());
        }
        checked.preconditions.push(Precondition {
            table: table.name.clone(),
            key: change.key.clone(),
            rule: Rule::Absent,
            in_local: current.in_local,
        });
        checked.precondition_paths.push(PreconditionOrigin {
            path: change.path.clone(),
            what: format!("{} {}", table.name, change.key),
            reference: false,
        });
        Ok(())
    }

    /// Checks that every foreign key of `row` (only those among `patched`
    /// columns for an update) points at an existing record.
    #[allow(clippy::too_many_arguments)]
    async fn check_references(
        &self,
        table: &Table,
        row: &Row,
        patched: Option<&[usize]>,
        path: &str,
        fetched: &HashMap<(String, String), (Option<Row>, bool)>,
        staged: &HashMap<(String, String), Staged>,
        checked: &mut Checked,
    ) -> Result<(), EngineError> {
        let (_, registry) = self.registry();
        for fk in &table.foreign_keys {
            if patched.is_some_and(|p| !fk.columns.iter().any(|c| p.contains(c))) {
                continue;
            }
            let values: Vec<&Value> = fk.columns.iter().map(|c| row.get(*c)).collect();
            if values.iter().any(|v| v.is_null()) {
                continue;
            }
            let field = field_path(path, &table.columns[fk.columns[0]].name);
            let Some(target) = registry.table(&fk.referenced_table) else {
                continue;
            };
            let description = format!(
                "{} {} = {}",
                target.name,
                fk.referenced_columns.join(", "),
                values.iter().map(|v| v.key_text()).collect::<Vec<_>>().join(", ")
            );
            let missing = || {
                WriteError::new(
                    Rejection::Unprocessable,
                    "reference_not_found",
                    Some(field.clone()),
                    format!(
                        "{field} refers to {description}, which exists neither in local nor in the buffer; create it first"
                    ),
                )
            };

            if references_primary_key(fk, target) {
                let key = values[0].key_text();
                let id = (target.name.clone(), key.clone());
                if let Some(s) = staged.get(&id) {
                    if s.row.is_none() {
                        return Err(missing().into());
                    }
                    if s.created_here {
                        continue;
                    }
                }
                // Whether the buffer holds the record, or a delete of it, is
                // checked by the acknowledge script at the moment it stores
                // the write; local (main itself at a main site) is asked here.
                let in_local = fetched.get(&id).is_some_and(|(_, l)| *l);
                if !in_local && !self.is_secondary() {
                    return Err(missing().into());
                }
                checked.preconditions.push(Precondition {
                    table: target.name.clone(),
                    key: key.clone(),
                    rule: Rule::Exists,
                    in_local,
                });
                checked.precondition_paths.push(PreconditionOrigin {
                    path: field.clone(),
                    what: description.clone(),
                    reference: true,
                });
                checked.touched.push(format!("{REFERENCE_MARK}{}", record_name(&target.name, &key)));
            } else {
                let conditions: Vec<Condition> = fk
                    .referenced_columns
                    .iter()
                    .zip(&values)
                    .filter_map(|(name, value)| {
                        target.column_position(name).map(|p| Condition::eq(p, (*value).clone()))
                    })
                    .collect();
                let found = self.query_all(target, conditions, 1).await?;
                if found.page.records.is_empty() {
                    return Err(missing().into());
                }
            }
        }
        Ok(())
    }

    /// Checks that no unique value of a step's rows is used by another
    /// record: one this transaction staged (as it stands after the step), or
    /// one of the merged view that the transaction did not touch. The
    /// order of the rows inside the step is checked by
    /// [`check_unique_in_order`].
    async fn check_unique(
        &self,
        rows: &[WrittenRow],
        staged: &HashMap<(String, String), Staged>,
    ) -> Result<(), EngineError> {
        let mut lookups: HashMap<(String, String), UniqueLookup> = HashMap::new();
        // Where each row of the step sits, so a clash inside the step is
        // reported at the later of the two rows.
        let positions: HashMap<(&str, String), (usize, &str)> = rows
            .iter()
            .enumerate()
            .filter_map(|(i, w)| w.row.key(&w.table).map(|k| ((w.table.name.as_str(), k), (i, w.path.as_str()))))
            .collect();
        // The staged records of each unique key by their values as text,
        // so a large bulk step costs one pass over the staged records.
        let mut staged_by_value: HashMap<(&str, &str), KeysByValue> = HashMap::new();
        for WrittenRow { table, .. } in rows {
            for unique in &table.unique_keys {
                staged_by_value.entry((table.name.as_str(), unique.name.as_str())).or_insert_with(|| {
                    let mut index = KeysByValue::new();
                    for ((t, other), s) in staged {
                        if *t == table.name
                            && let Some(texts) = s.row.as_ref().and_then(|r| unique_key_texts(unique, r))
                        {
                            index.entry(texts).or_default().push(other.as_str());
                        }
                    }
                    index
                });
            }
        }

        for (index, WrittenRow { table, row, path, patched }) in rows.iter().enumerate() {
            let Some(pk) = table.primary_key else { continue };
            let key = row.get(pk).key_text();
            for unique in &table.unique_keys {
                if patched.as_ref().is_some_and(|p| !unique.columns.iter().any(|c| p.contains(c))) {
                    continue;
                }
                let values: Vec<&Value> = unique.columns.iter().map(|c| row.get(*c)).collect();
                if values.iter().any(|v| v.is_null()) {
                    continue;
                }
                let texts: Vec<String> = values.iter().map(|v| v.key_text()).collect();
                // Name the column an update changed; a create names the first.
                let named = patched
                    .as_ref()
                    .and_then(|p| unique.columns.iter().find(|c| p.contains(c)))
                    .unwrap_or(&unique.columns[0]);
                let column = &table.columns[*named].name;
                let field = field_path(path, column);
                let size: usize = texts.iter().map(String::len).sum();
                if size > MAX_UNIQUE_VALUE_BYTES {
                    return Err(WriteError::new(
                        Rejection::Unprocessable,
                        "value_too_long",
                        Some(field.clone()),
                        format!(
                            "{field}: the value is {size} bytes, but values of unique constraint {} are limited to {MAX_UNIQUE_VALUE_BYTES} bytes because PostgreSQL's B-tree index cannot hold longer entries",
                            unique.name
                        ),
                    )
                    .into());
                }

                // Records this transaction staged, with their staged values.
                let clash = staged_by_value
                    .get(&(table.name.as_str(), unique.name.as_str()))
                    .and_then(|index| index.get(&texts))
                    .and_then(|keys| keys.iter().find(|other| **other != key))
                    .map(|other| (*other).to_owned());
                if let Some(other) = clash {
                    // A clash inside the request is reported at the later
                    // row and names the earlier one by its request field,
                    // because the client never saw its generated key.
                    return Err(match positions.get(&(table.name.as_str(), other.clone())) {
                        Some((other_index, other_path)) if *other_index > index => {
                            repeated_value_error(&unique.name, &texts, &field_path(other_path, column), &field)
                        }
                        Some((_, other_path)) => {
                            repeated_value_error(&unique.name, &texts, &field, &field_path(other_path, column))
                        }
                        None => unique_error(table, &unique.name, &texts, &other, &field),
                    }
                    .into());
                }

                if unique.columns.len() == 1 {
                    lookups
                        .entry((table.name.clone(), unique.name.clone()))
                        .or_insert_with(|| UniqueLookup {
                            table: table.clone(),
                            column: unique.columns[0],
                            items: Vec::new(),
                        })
                        .items
                        .push((values[0].clone(), key.clone(), field));
                } else {
                    let conditions =
                        unique.columns.iter().zip(&values).map(|(c, v)| Condition::eq(*c, (*v).clone())).collect();
                    let found = self.query_all(table, conditions, 2).await?;
                    if let Some(other) =
                        found.page.records.iter().find(|r| r.key != key && !is_staged(staged, table, &r.key))
                    {
                        return Err(unique_error(table, &unique.name, &texts, &other.key, &field).into());
                    }
                }
            }
        }

        for ((_, name), UniqueLookup { table, column, items }) in lookups {
            let values: Vec<Value> = items.iter().map(|(v, _, _)| v.clone()).collect();
            let found = self.query_all(&table, vec![Condition::any_of(column, values)], CHECK_QUERY_LIMIT).await?;
            for record in &found.page.records {
                if is_staged(staged, &table, &record.key) {
                    continue;
                }
                let value = record.row.get(column);
                if let Some((_, _, field)) =
                    items.iter().find(|(v, k, _)| v.sql_eq(value) == Some(true) && *k != record.key)
                {
                    return Err(unique_error(&table, &name, &[value.key_text()], &record.key, field).into());
                }
            }
        }
        Ok(())
    }

    /// Evaluates `CHECK` constraints on local's PostgreSQL, one query per
    /// table.
    async fn check_constraints(&self, written: &[WrittenRow]) -> Result<(), EngineError> {
        let mut tables: Vec<&Arc<Table>> = Vec::new();
        for w in written {
            if !w.table.checks.is_empty() && !tables.iter().any(|t| t.name == w.table.name) {
                tables.push(&w.table);
            }
        }
        for table in tables {
            let items: Vec<&WrittenRow> = written.iter().filter(|w| w.table.name == table.name).collect();
            // Checks of the common forms run here; a table with any other
            // check asks PostgreSQL on local for all of them.
            let failures = if table.checks.iter().all(|c| c.compiled.is_some()) {
                items
                    .iter()
                    .enumerate()
                    .find_map(|(i, w)| {
                        table
                            .checks
                            .iter()
                            .find(|c| c.compiled.as_ref().is_some_and(|e| e.eval(&w.row) == Some(false)))
                            .map(|c| (i, c.name.clone()))
                    })
                    .into_iter()
                    .collect()
            } else {
                let rows: Vec<Row> = items.iter().map(|w| w.row.clone()).collect();
                self.local.failing_checks(table, &rows).await?
            };
            if let Some((index, name)) = failures.first() {
                let path = &items[*index].path;
                let expression =
                    table.checks.iter().find(|c| &c.name == name).map(|c| c.expression.clone()).unwrap_or_default();
                let record = if path.is_empty() { "the record".to_owned() } else { path.clone() };
                // Name the column when the constraint reads only one.
                let (field, subject) = match columns_in(table, &expression).as_slice() {
                    [one] => (field_path(path, one), format!("{one} of {record}")),
                    _ => (path.clone(), record),
                };
                return Err(WriteError::new(
                    Rejection::Unprocessable,
                    "check_violation",
                    Some(field),
                    format!("{subject} violates check constraint {name} of {}: {expression}", table.name),
                )
                .into());
            }
        }
        Ok(())
    }

    /// Checks that no record still refers to `row`, which a step deletes:
    /// neither a record of the merged view the transaction did not touch,
    /// nor one as the earlier steps staged it.
    async fn check_children(
        &self,
        table: &Table,
        row: &Row,
        path: &str,
        staged: &HashMap<(String, String), Staged>,
    ) -> Result<(), EngineError> {
        let (_, registry) = self.registry();
        for referencing in &table.referenced_by {
            let Some(child) = registry.table(&referencing.table) else { continue };
            let mut conditions = Vec::new();
            for (child_column, parent_column) in referencing.columns.iter().zip(&referencing.referenced_columns) {
                let (Some(c), Some(p)) = (child.column_position(child_column), table.column_position(parent_column))
                else {
                    continue;
                };
                conditions.push(Condition::eq(c, row.get(p).clone()));
            }
            // A record that refers to itself does not hold up its own delete.
            let own_key = if child.name == table.name { row.key(table) } else { None };
            let found = self.query_all(child, conditions.clone(), CHECK_QUERY_LIMIT).await?;
            let mut children: Vec<String> = found
                .page
                .records
                .iter()
                .filter(|r| !is_staged(staged, child, &r.key) && Some(&r.key) != own_key.as_ref())
                .map(|r| r.key.clone())
                .collect();
            for ((t, key), s) in staged {
                if *t == child.name
                    && Some(key) != own_key.as_ref()
                    && let Some(r) = &s.row
                    && conditions.iter().all(|c| c.eval(r) == Some(true))
                    && !children.contains(key)
                {
                    children.push(key.clone());
                }
            }
            if let Some(first) = children.first() {
                return Err(WriteError::new(
                    Rejection::Conflict,
                    "referenced_by_children",
                    Some(path.to_owned()),
                    format!(
                        "{} {} is still referenced by {} record(s) of {} (for example {first}) through {}; delete or repoint them first",
                        table.name,
                        row.key(table).unwrap_or_default(),
                        children.len(),
                        child.name,
                        referencing.constraint
                    ),
                )
                .into());
            }
        }
        Ok(())
    }
}

/// Returns the values of a unique key in `row` as text, or `None` when one
/// of them is NULL, because PostgreSQL never finds such keys equal.
fn unique_key_texts(unique: &UniqueKey, row: &Row) -> Option<Vec<String>> {
    let values: Vec<&Value> = unique.columns.iter().map(|c| row.get(*c)).collect();
    if values.iter().any(|v| v.is_null()) {
        return None;
    }
    Some(values.iter().map(|v| v.key_text()).collect())
}

/// Checks that no row of a step takes a unique value that a later row of
/// the same step still has before its update. PostgreSQL applies the rows
/// of a step one by one and checks unique constraints after each, so such
/// a step, a swap of two values for example, fails on main although its
/// final state is valid. `updated_from` contains the index in `rows` and the
/// prior row of each update.
fn check_unique_in_order(rows: &[WrittenRow], updated_from: &[(usize, Row)]) -> Result<(), WriteError> {
    let Some(first) = rows.first() else { return Ok(()) };
    let table = &first.table;
    if updated_from.len() < 2 || table.unique_keys.is_empty() {
        return Ok(());
    }
    for unique in &table.unique_keys {
        let text_of = |row: &Row| unique_key_texts(unique, row);
        // The value each updated row gives up, with the row's position.
        let mut released: HashMap<Vec<String>, usize> = HashMap::new();
        for (index, before) in updated_from {
            if let Some(old) = text_of(before)
                && text_of(&rows[*index].row).as_ref() != Some(&old)
            {
                released.insert(old, *index);
            }
        }
        for (index, written) in rows.iter().enumerate() {
            let Some(new) = text_of(&written.row) else { continue };
            if let Some(later) = released.get(&new)
                && *later > index
            {
                let column = &table.columns[unique.columns[0]].name;
                let field = field_path(&written.path, column);
                return Err(WriteError::new(
                    Rejection::Conflict,
                    "unique_violation",
                    Some(field.clone()),
                    format!(
                        "{field}: the value ({}) still belongs to {} until that later row is updated (unique constraint {}); PostgreSQL updates the rows in order, so update that row first, or swap values through a temporary value in an earlier step",
                        new.join(", "),
                        field_path(&rows[*later].path, column),
                        unique.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The columns of `table` an SQL expression mentions, outside string
/// literals, in order of first mention.
pub(crate) fn columns_in(table: &Table, expression: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_literal = false;
    for c in expression.chars().chain(std::iter::once(' ')) {
        if c == '\'' {
            in_literal = !in_literal;
            word.clear();
            continue;
        }
        if !in_literal && (c.is_alphanumeric() || c == '_') {
            word.push(c);
            continue;
        }
        if !word.is_empty() && table.column_position(&word).is_some() && !found.contains(&word) {
            found.push(word.clone());
        }
        word.clear();
    }
    found
}

fn require_existing(
    table: &Table,
    change: &PlannedChange,
    current: &Staged,
    checked: &mut Checked,
) -> Result<Row, EngineError> {
    let Some(row) = current.row.clone() else {
        return Err(WriteError::new(
            Rejection::NotFound,
            "not_found",
            Some(change.path.clone()),
            format!(
                "{} {} does not exist in local or the buffer (or a delete of it is pending)",
                table.name, change.key
            ),
        )
        .into());
    };
    if !current.created_here {
        checked.preconditions.push(Precondition {
            table: table.name.clone(),
            key: change.key.clone(),
            rule: Rule::Exists,
            in_local: current.in_local,
        });
        checked.precondition_paths.push(PreconditionOrigin {
            path: change.path.clone(),
            what: format!("{} {}", table.name, change.key),
            reference: false,
        });
    }
    Ok(row)
}

/// Whether the transaction already changed the record; its staged state
/// then counts, not the merged view's.
fn is_staged(staged: &HashMap<(String, String), Staged>, table: &Table, key: &str) -> bool {
    staged.contains_key(&(table.name.clone(), key.to_owned()))
}

pub(crate) fn references_primary_key(fk: &ForeignKey, target: &Table) -> bool {
    fk.columns.len() == 1 && target.primary_key_column().is_some_and(|pk| fk.referenced_columns == [pk.name.clone()])
}

fn record_name(table: &str, key: &str) -> String {
    format!("{table}{RECORD_SEPARATOR}{key}")
}

fn repeated_value_error(constraint: &str, values: &[String], field: &str, earlier: &str) -> WriteError {
    WriteError::new(
        Rejection::Conflict,
        "unique_violation",
        Some(field.to_owned()),
        format!(
            "{field}: the value ({}) is also used by {earlier} of this request (unique constraint {constraint}); choose another value",
            values.join(", ")
        ),
    )
}

fn unique_error(table: &Table, constraint: &str, values: &[String], other: &str, field: &str) -> WriteError {
    WriteError::new(
        Rejection::Conflict,
        "unique_violation",
        Some(field.to_owned()),
        format!(
            "{field}: the value ({}) is already used by {} {other} (unique constraint {constraint}); choose another value",
            values.join(", "),
            table.name
        ),
    )
}

fn reference_error(path: &str, what: &str, failure: PreconditionFailure) -> WriteError {
    let reason = match failure {
        PreconditionFailure::Deleted | PreconditionFailure::PendingDelete => "has a pending delete",
        _ => "exists neither in local nor in the buffer",
    };
    WriteError::new(
        Rejection::Unprocessable,
        "reference_not_found",
        (!path.is_empty()).then(|| path.to_owned()),
        format!("{path} refers to {what}, which {reason}; create it first or refer to another record"),
    )
}

fn precondition_error(path: &str, what: &str, failure: PreconditionFailure) -> WriteError {
    let field = (!path.is_empty()).then(|| path.to_owned());
    match failure {
        PreconditionFailure::Deleted => WriteError::new(
            Rejection::NotFound,
            "not_found",
            field,
            format!("{what} has a pending delete, so it cannot be changed or referenced"),
        ),
        PreconditionFailure::Missing => WriteError::new(
            Rejection::NotFound,
            "not_found",
            field,
            format!("{what} exists neither in local nor in the buffer; create it first"),
        ),
        PreconditionFailure::PendingDelete => WriteError::new(
            Rejection::Conflict,
            "pending_delete",
            field,
            format!(
                "{what} has a pending delete that has not reached local yet; a record cannot be created again with the same key until it has, so use another key"
            ),
        ),
        PreconditionFailure::Exists => WriteError::new(
            Rejection::Conflict,
            "duplicate_key",
            field,
            format!("{what} already exists; update it instead, or use another key"),
        ),
    }
}

/// Turns changes into statements, joining consecutive creates of one table
/// into one insert.
pub fn operations(changes: Vec<(Arc<Table>, Value, Change)>) -> Vec<Operation> {
    let mut out: Vec<Operation> = Vec::new();
    for (table, key, change) in changes {
        match change {
            Change::Create(row) => {
                if let Some(Operation::Insert { table: last, rows }) = out.last_mut()
                    && last.name == table.name
                {
                    rows.push(row);
                    continue;
                }
                out.push(Operation::Insert { table, rows: vec![row] });
            }
            Change::Patch(patch) => {
                if !patch.is_empty() {
                    out.push(Operation::Update { table, key, patch });
                }
            }
            Change::Delete => out.push(Operation::Delete { table, key }),
        }
    }
    out
}
