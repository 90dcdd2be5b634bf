//! The merge of local rows with overlays into one page of the merged view.
//!
//! Filtering happens after merging, so a pending patch can move a record
//! into or out of a filter. The caller supplies two sets of local rows: the
//! page of rows without overlays (already filtered, ordered and cut by
//! local), and the rows of records that have overlays (unfiltered). Any
//! record in the true first page is in one of the two, so sorting their union
//! and cutting it to the limit gives the exact page.

use std::collections::HashMap;

use crate::overlay::{RecordOverlay, TableOverlays};
use crate::query::{Cursor, Query, compare_rows};
use crate::row::Row;

/// Where a merged record's value comes from, as `_provenance.source` reports
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The local row, unchanged.
    Database,
    /// A record created in the buffer that nothing pending has patched.
    Buffer,
    /// A record a pending patch changed.
    ReadBuffer,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Database => "database",
            Source::Buffer => "buffer",
            Source::ReadBuffer => "read_buffer",
        }
    }

    /// The source of a record with this overlay.
    pub fn of(overlay: &RecordOverlay) -> Source {
        let patched = overlay.entries().iter().any(|e| matches!(e.change, crate::overlay::Change::Patch(_)));
        if patched {
            Source::ReadBuffer
        } else if overlay.has_create() {
            Source::Buffer
        } else {
            Source::Database
        }
    }
}

/// One record of a merged page.
#[derive(Debug, Clone, PartialEq)]
pub struct MergedRecord {
    pub key: String,
    pub row: Row,
    pub source: Source,
}

/// A page of the merged view and the cursor of the next page, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub records: Vec<MergedRecord>,
    pub next: Option<Cursor>,
}

/// Merges one page. `local_page` holds up to `limit + 1` local rows that
/// match the query and have no overlay; `local_overlaid` holds the local
/// rows of records with overlays, by key.
pub fn merge_page<'o>(
    query: &Query,
    primary_key: usize,
    local_page: Vec<Row>,
    overlays: impl IntoIterator<Item = (&'o String, &'o RecordOverlay)>,
    local_overlaid: &HashMap<String, Row>,
) -> Page {
    let mut candidates: Vec<MergedRecord> = local_page
        .into_iter()
        .map(|row| MergedRecord { key: row.get(primary_key).key_text(), row, source: Source::Database })
        .collect();

    for (key, overlay) in overlays {
        let local = if overlay.has_create() { None } else { local_overlaid.get(key) };
        if let Some(row) = overlay.apply(local)
            && query.matches(&row)
        {
            candidates.push(MergedRecord { key: key.clone(), row, source: Source::of(overlay) });
        }
    }

    select_page(query, candidates)
}

/// Sorts matching candidates by the query's order and cuts them to its
/// limit. The candidates must already match the query; the cursor of the
/// next page is set when more candidates remain than the limit.
pub fn select_page(query: &Query, mut candidates: Vec<MergedRecord>) -> Page {
    let order = |a: &MergedRecord, b: &MergedRecord| compare_rows(&query.order, &a.row, &b.row);
    // Only the first limit + 1 matter; select them before sorting when the
    // candidates are many (such as thousands of buffered records).
    if candidates.len() > query.limit + 1 {
        candidates.select_nth_unstable_by(query.limit, order);
        candidates.truncate(query.limit + 1);
    }
    candidates.sort_by(order);
    let has_more = candidates.len() > query.limit;
    candidates.truncate(query.limit);
    let next = if has_more { candidates.last().map(|r| Cursor::after_row(&query.order, &r.row)) } else { None };
    Page { records: candidates, next }
}

/// The merged value of one record, from its local row and overlay.
pub fn merge_record(local: Option<&Row>, overlay: Option<&RecordOverlay>) -> Option<(Row, Source)> {
    match overlay {
        None => local.map(|row| (row.clone(), Source::Database)),
        Some(overlay) => {
            let base = if overlay.has_create() { None } else { local };
            overlay.apply(base).map(|row| (row, Source::of(overlay)))
        }
    }
}

/// The keys of overlaid records whose local row the merge needs: those not
/// created in the buffer.
pub fn keys_needing_local_rows(overlays: &TableOverlays) -> Vec<String> {
    overlays.records.iter().filter(|(_, o)| !o.has_create()).map(|(k, _)| k.clone()).collect()
}
