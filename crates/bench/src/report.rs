//! Result rows: printed as Markdown table rows the moment they are
//! measured, and optionally written as JSON at the end.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::measure::Measurement;

/// One line of the results.
#[derive(Debug, Clone, Serialize)]
pub struct ResultRow {
    pub scenario: String,
    pub clients: Option<usize>,
    /// Samples behind the figures: requests, transactions or records.
    pub n: Option<usize>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Transactions (or requests) per second.
    pub throughput_per_s: Option<f64>,
    pub notes: String,
    /// Figures of the row that have no column, for `--json` readers.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub values: Map<String, Value>,
}

impl ResultRow {
    pub fn new(scenario: impl Into<String>) -> ResultRow {
        ResultRow {
            scenario: scenario.into(),
            clients: None,
            n: None,
            p50_ms: None,
            p99_ms: None,
            throughput_per_s: None,
            notes: String::new(),
            values: Map::new(),
        }
    }

    /// Builds a row with the latency percentiles and throughput of a
    /// measurement. Its errors and an early stop go into the notes.
    pub fn latency(scenario: impl Into<String>, measurement: &Measurement, budget: Duration) -> ResultRow {
        let mut row = ResultRow::new(scenario);
        row.clients = Some(measurement.clients);
        row.n = Some(measurement.count());
        row.p50_ms = measurement.percentile(0.50).map(millis);
        row.p99_ms = measurement.percentile(0.99).map(millis);
        row.throughput_per_s = measurement.throughput();
        for remark in measurement.remarks(budget) {
            row.note(remark);
        }
        row
    }

    /// Appends a remark to the notes, separated by a semicolon.
    pub fn note(&mut self, remark: impl AsRef<str>) -> &mut ResultRow {
        if !self.notes.is_empty() {
            self.notes.push_str("; ");
        }
        self.notes.push_str(remark.as_ref());
        self
    }

    pub fn value(&mut self, name: &str, value: impl Into<Value>) -> &mut ResultRow {
        self.values.insert(name.to_owned(), value.into());
        self
    }

    pub fn markdown(&self) -> String {
        let count = |v: Option<usize>| v.map_or_else(|| "–".to_owned(), |v| v.to_string());
        let figure = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), format_figure);
        format!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            self.scenario,
            count(self.clients),
            count(self.n),
            figure(self.p50_ms),
            figure(self.p99_ms),
            figure(self.throughput_per_s),
            self.notes.replace('|', "\\|"),
        )
    }
}

pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Three significant digits for small figures, whole numbers from 100 up.
pub fn format_figure(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// Formats a byte count in KiB, MiB or GiB for notes.
pub fn format_bytes(bytes: f64) -> String {
    if bytes >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", bytes / (1024.0 * 1024.0 * 1024.0))
    } else if bytes >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
    } else if bytes >= 1024.0 {
        format!("{:.1} KiB", bytes / 1024.0)
    } else {
        format!("{bytes:.0} B")
    }
}

pub const HEADER: &str =
    "| scenario | clients | n | p50 ms | p99 ms | throughput /s | notes |\n|---|---:|---:|---:|---:|---:|---|";

/// The rows of one run.
pub struct Report {
    rows: Vec<ResultRow>,
    json_path: Option<PathBuf>,
}

impl Report {
    pub fn new(json_path: Option<PathBuf>) -> Report {
        Report { rows: Vec::new(), json_path }
    }

    /// Prints a section heading with the current load average, because
    /// builds or tests beside the measurement change its figures, and the
    /// table header.
    pub fn section(&self, title: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "\n### {title}\n\nLoad average at the start: {}\n\n{HEADER}", load_average());
        let _ = out.flush();
    }

    /// Prints the row and keeps it, with the load average at its end, for
    /// the JSON file.
    pub fn add(&mut self, mut row: ResultRow) {
        row.value("load_average", load_average());
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", row.markdown());
        let _ = out.flush();
        self.rows.push(row);
    }

    /// Writes every row to the `--json` file, if one was given.
    pub fn write_json(&self, header: &Map<String, Value>) -> anyhow::Result<()> {
        let Some(path) = &self.json_path else {
            return Ok(());
        };
        let document = serde_json::json!({"run": header, "rows": self.rows});
        let text = serde_json::to_string_pretty(&document)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Returns the 1, 5 and 15 minute load averages of `/proc/loadavg`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_keep_three_digits() {
        assert_eq!(format_figure(0.4567), "0.457");
        assert_eq!(format_figure(4.567), "4.57");
        assert_eq!(format_figure(45.67), "45.7");
        assert_eq!(format_figure(4567.0), "4567");
    }

    #[test]
    fn markdown_row_escapes_pipes() {
        let mut row = ResultRow::new("search");
        row.note("a | b");
        assert_eq!(row.markdown(), "| search | – | – | – | – | – | a \\| b |");
    }
}
