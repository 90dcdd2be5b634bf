//! Property tests of the pure merge logic: overlays apply in acknowledgement
//! order whatever order they arrive in, a merged page equals the page of a
//! straightforward reference evaluation, keyset cursors never skip or repeat
//! a record, and LIKE agrees with a naive matcher.

use std::collections::HashMap;

use opsbuffer_core::merge::merge_page;
use opsbuffer_core::overlay::{Change, EntryId, OverlayEntry, RecordOverlay};
use opsbuffer_core::query::{Condition, Cursor, Operator, OrderTerm, Query, compare_rows, like_match};
use opsbuffer_core::row::Row;
use opsbuffer_core::value::Value;
use proptest::prelude::*;
use uuid::Uuid;

/// Rows of (id, score, name): id unique, score and name with NULLs and ties.
fn value_int() -> impl Strategy<Value = Value> {
    prop_oneof![1 => Just(Value::Null), 4 => (-3i64..4).prop_map(Value::Int)]
}

fn value_text() -> impl Strategy<Value = Value> {
    let words = prop::sample::select(vec!["a", "A", "b", "é", "Z", "", "ab", "a_", "%"]);
    prop_oneof![1 => Just(Value::Null), 4 => words.prop_map(|w| Value::Text(w.to_owned()))]
}

fn rows(max: usize) -> impl Strategy<Value = Vec<Row>> {
    prop::collection::vec((value_int(), value_text()), 0..max).prop_map(|cells| {
        cells.into_iter().enumerate().map(|(i, (score, name))| Row(vec![Value::Int(i as i64), score, name])).collect()
    })
}

fn order() -> impl Strategy<Value = Vec<OrderTerm>> {
    let term = (1usize..3, any::<bool>(), any::<bool>()).prop_map(|(column, descending, nulls_first)| OrderTerm {
        column,
        descending,
        nulls_first,
    });
    prop::collection::vec(term, 0..3).prop_map(|mut terms| {
        terms.dedup_by_key(|t| t.column);
        terms.push(OrderTerm::asc(0));
        terms
    })
}

fn condition() -> impl Strategy<Value = Condition> {
    let op = prop::sample::select(vec![Operator::Eq, Operator::Neq, Operator::Lt, Operator::Gte, Operator::IsNull]);
    (op, -3i64..4, any::<bool>()).prop_map(|(op, value, negated)| Condition {
        column: 1,
        op,
        negated,
        values: if op == Operator::IsNull { vec![] } else { vec![Value::Int(value)] },
    })
}

/// A change to one record with the given columns.
fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => (value_int(), value_text()).prop_map(|(s, n)| Change::Patch(vec![(1, s), (2, n)])),
        2 => value_int().prop_map(|s| Change::Patch(vec![(1, s)])),
        1 => Just(Change::Delete),
    ]
}

fn entry(seq: u64, key: &str, change: Change) -> OverlayEntry {
    OverlayEntry { id: EntryId::new(seq, 0, change.kind(), key), transaction_id: Uuid::from_u128(seq.into()), change }
}

/// The merged value computed the obvious way: changes applied one after
/// another in sequence order.
fn reference_apply(local: Option<&Row>, mut changes: Vec<(u64, Change)>) -> Option<Row> {
    changes.sort_by_key(|(seq, _)| *seq);
    let mut current = local.cloned();
    for (_, change) in changes {
        match change {
            Change::Create(row) => current = Some(row),
            Change::Patch(patch) => {
                if let Some(row) = current.as_mut() {
                    for (i, v) in patch {
                        row.0[i] = v;
                    }
                }
            }
            Change::Delete => current = None,
        }
    }
    current
}

/// Naive recursive LIKE: `%` any run, `_` one character, `\` escapes.
fn naive_like(text: &[char], pattern: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some(('%', rest)) => (0..=text.len()).any(|i| naive_like(&text[i..], rest)),
        Some(('_', rest)) => !text.is_empty() && naive_like(&text[1..], rest),
        Some(('\\', rest)) if !rest.is_empty() => text.first() == Some(&rest[0]) && naive_like(&text[1..], &rest[1..]),
        Some((c, rest)) => text.first() == Some(c) && naive_like(&text[1..], rest),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn overlay_applies_in_sequence_order(
        local in prop::option::of((value_int(), value_text())),
        changes in prop::collection::vec(change(), 0..8),
        shuffle in any::<u64>(),
    ) {
        let local = local.map(|(s, n)| Row(vec![Value::Int(1), s, n]));
        let numbered: Vec<(u64, Change)> = changes.into_iter().enumerate().map(|(i, c)| (i as u64 + 1, c)).collect();
        let mut shuffled = numbered.clone();
        let n = shuffled.len();
        for i in 0..n {
            shuffled.swap(i, ((shuffle >> (i % 60)) as usize + i) % n.max(1));
        }
        let mut overlay = RecordOverlay::new();
        for (seq, change) in shuffled {
            overlay.insert(entry(seq, "1", change));
        }
        prop_assert_eq!(overlay.apply(local.as_ref()), reference_apply(local.as_ref(), numbered));
    }

    #[test]
    fn merged_page_equals_reference(
        local in rows(30),
        patched in prop::collection::vec((0usize..30, change()), 0..10),
        created in prop::collection::vec((value_int(), value_text()), 0..5),
        conditions in prop::collection::vec(condition(), 0..2),
        order in order(),
        limit in 1usize..8,
    ) {
        // Overlays: changes of existing rows, and buffered creates.
        let mut overlays: HashMap<String, RecordOverlay> = HashMap::new();
        for (seq, (index, change)) in patched.into_iter().enumerate() {
            if index < local.len() {
                overlays.entry(index.to_string()).or_default().insert(entry(seq as u64 + 1, &index.to_string(), change));
            }
        }
        for (i, (score, name)) in created.into_iter().enumerate() {
            let id = 1000 + i as i64;
            let row = Row(vec![Value::Int(id), score, name]);
            overlays.entry(id.to_string()).or_default().insert(entry(100 + i as u64, &id.to_string(), Change::Create(row)));
        }
        let query = Query { conditions, order: order.clone(), limit, after: None };

        // Reference: merge everything, filter, sort, cut.
        let by_key: HashMap<String, Row> = local.iter().map(|r| (r.get(0).key_text(), r.clone())).collect();
        let mut expected: Vec<Row> = Vec::new();
        for row in &local {
            let key = row.get(0).key_text();
            let merged = match overlays.get(&key) { Some(o) => o.apply(Some(row)), None => Some(row.clone()) };
            expected.extend(merged.filter(|r| query.matches(r)));
        }
        for (key, overlay) in &overlays {
            if !by_key.contains_key(key) {
                expected.extend(overlay.apply(None).filter(|r| query.matches(r)));
            }
        }
        expected.sort_by(|a, b| compare_rows(&order, a, b));
        let has_more = expected.len() > limit;
        expected.truncate(limit);

        // What local would return: matching rows without overlays, sorted, limit + 1.
        let mut local_page: Vec<Row> = local.iter().filter(|r| !overlays.contains_key(&r.get(0).key_text()) && query.matches(r)).cloned().collect();
        local_page.sort_by(|a, b| compare_rows(&order, a, b));
        local_page.truncate(limit + 1);
        let overlaid: HashMap<String, Row> = by_key.into_iter().filter(|(k, _)| overlays.contains_key(k)).collect();

        let page = merge_page(&query, 0, local_page, overlays.iter(), &overlaid);
        let got: Vec<Row> = page.records.into_iter().map(|r| r.row).collect();
        prop_assert_eq!(got, expected);
        prop_assert_eq!(page.next.is_some(), has_more);
    }

    #[test]
    fn cursor_walk_visits_each_row_once(rows in rows(40), order in order(), page in 1usize..7) {
        let mut sorted = rows.clone();
        sorted.sort_by(|a, b| compare_rows(&order, a, b));
        let mut walked: Vec<Row> = Vec::new();
        let mut cursor: Option<Cursor> = None;
        for _ in 0..=rows.len() {
            let mut remaining: Vec<Row> = rows.iter().filter(|r| cursor.as_ref().is_none_or(|c| c.precedes(&order, r))).cloned().collect();
            remaining.sort_by(|a, b| compare_rows(&order, a, b));
            remaining.truncate(page);
            if remaining.is_empty() {
                break;
            }
            cursor = Some(Cursor::after_row(&order, remaining.last().unwrap()));
            walked.extend(remaining);
        }
        prop_assert_eq!(walked, sorted);
    }

    #[test]
    fn like_agrees_with_naive_matcher(text in "[ab_%é\\\\]{0,8}", pattern in "[ab_%é\\\\]{0,6}") {
        let t: Vec<char> = text.chars().collect();
        let p: Vec<char> = pattern.chars().collect();
        prop_assert_eq!(like_match(&text, &pattern, false), naive_like(&t, &p));
    }
}
