//! Prometheus metrics of one engine.
//!
//! Each [`Engine`](crate::Engine) owns its own registry instead of a global
//! recorder, so several engines in one process (as in the tests) keep
//! separate counts. The HTTP layer records request metrics here too and
//! serves [`Metrics::encode`] at `GET /metrics`.
//!
//! Counters and histograms move as events happen: requests, drained
//! batches, retries, dead letters, evictions, lease changes. The buffer
//! gauges are read from Redis when `/metrics` is scraped
//! ([`Engine::refresh_metrics`](crate::Engine::refresh_metrics)); the LSN
//! gauges are set by the drainer and the watcher.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use opsbuffer_core::lsn::Lsn;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::encode`]'s output: the OpenMetrics text
/// format, which Prometheus scrapes natively.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// The route template, such as `/records/{table}`, or `unmatched`.
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub class: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;
type FloatGauge = Gauge<f64, AtomicU64>;

fn latency_histogram() -> Histogram {
    // 1 ms to about 33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

fn batch_duration_histogram() -> Histogram {
    // 5 ms to about 80 s: a batch crosses a slow link.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// Every metric of one engine.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_request_duration: HistogramFamily<RequestLabels>,
    /// Transactions in the buffer by state, read at scrape time.
    pub buffer_transactions: Family<StateLabels, Gauge>,
    pub oldest_queued_age: FloatGauge,
    pub oldest_waiting_replication_age: FloatGauge,
    pub applied_transactions: Counter,
    pub batches: Counter,
    pub batch_size: Histogram,
    pub batch_duration: Histogram,
    pub retries: Family<ClassLabels, Counter>,
    pub dead_lettered: Counter,
    pub evicted_transactions: Counter,
    pub lease_changes: Family<EventLabels, Counter>,
    pub drainer_active: Gauge,
    pub commit_lsn: Gauge,
    pub replay_lsn: Gauge,
    pub replication_lag_bytes: Gauge,
    pub token_verifications: Family<ResultLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("opsbuffer");
        let metrics = Metrics {
            http_requests: Family::default(),
            http_request_duration: Family::new_with_constructor(latency_histogram),
            buffer_transactions: Family::default(),
            oldest_queued_age: FloatGauge::default(),
            oldest_waiting_replication_age: FloatGauge::default(),
            applied_transactions: Counter::default(),
            batches: Counter::default(),
            // 1 to 8192 transactions per batch.
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            batch_duration: batch_duration_histogram(),
            retries: Family::default(),
            dead_lettered: Counter::default(),
            evicted_transactions: Counter::default(),
            lease_changes: Family::default(),
            drainer_active: Gauge::default(),
            commit_lsn: Gauge::default(),
            replay_lsn: Gauge::default(),
            replication_lag_bytes: Gauge::default(),
            token_verifications: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "http_requests",
            "HTTP requests by method, route template and status",
            metrics.http_requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency by method, route template and status",
            metrics.http_request_duration.clone(),
        );
        r.register(
            "buffer_transactions",
            "Transactions in the buffer by state (queued, blocked, waiting_replication, dead), read at scrape time",
            metrics.buffer_transactions.clone(),
        );
        r.register(
            "buffer_oldest_queued_age_seconds",
            "Age of the oldest queued transaction; 0 when the queue is empty",
            metrics.oldest_queued_age.clone(),
        );
        r.register(
            "buffer_oldest_waiting_replication_age_seconds",
            "Time since the oldest applied transaction still missing on local was applied; 0 when none waits",
            metrics.oldest_waiting_replication_age.clone(),
        );
        r.register(
            "drain_applied_transactions",
            "Transactions this process applied on main",
            metrics.applied_transactions.clone(),
        );
        r.register("drain_batches", "Batches this process committed on main", metrics.batches.clone());
        r.register(
            "drain_batch_size_transactions",
            "Transactions per batch committed on main",
            metrics.batch_size.clone(),
        );
        r.register(
            "drain_batch_duration_seconds",
            "Time to apply and commit one batch on main, including failed attempts",
            metrics.batch_duration.clone(),
        );
        r.register(
            "drain_retries",
            "Drain attempts that failed transiently and will be retried, by error class",
            metrics.retries.clone(),
        );
        r.register(
            "drain_dead_lettered_transactions",
            "Transactions this process dead-lettered because main rejected them",
            metrics.dead_lettered.clone(),
        );
        r.register(
            "evicted_transactions",
            "Applied transactions whose overlays were evicted once local replayed their commit",
            metrics.evicted_transactions.clone(),
        );
        r.register(
            "drainer_lease_changes",
            "Changes of this process's drainer lease: acquired, lost or released",
            metrics.lease_changes.clone(),
        );
        r.register("drainer_active", "1 while this process holds the drainer lease", metrics.drainer_active.clone());
        r.register(
            "commit_lsn_bytes",
            "Main's WAL position after this process's last commit, as a byte offset",
            metrics.commit_lsn.clone(),
        );
        r.register("replay_lsn_bytes", "Local's replay LSN as a byte offset", metrics.replay_lsn.clone());
        r.register(
            "replication_lag_bytes",
            "WAL bytes between the newest commit waiting for replication and local's replay LSN; 0 when none waits",
            metrics.replication_lag_bytes.clone(),
        );
        r.register(
            "token_verifications",
            "API token checks by result (valid, cached, invalid, expired, revoked)",
            metrics.token_verifications.clone(),
        );
        Metrics { registry, ..metrics }
    }

    /// Records one HTTP request.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, latency: Duration) {
        let labels = RequestLabels { method: method.to_owned(), route: route.to_owned(), status };
        self.http_requests.get_or_create(&labels).inc();
        self.http_request_duration.get_or_create(&labels).observe(latency.as_secs_f64());
    }

    /// Records one committed batch.
    pub fn observe_batch(&self, transactions: usize, duration: Duration, commit_lsn: Lsn) {
        self.applied_transactions.inc_by(transactions as u64);
        self.batches.inc();
        self.batch_size.observe(transactions as f64);
        self.batch_duration.observe(duration.as_secs_f64());
        self.commit_lsn.set(lsn_gauge(commit_lsn));
    }

    /// Counts a retry of the drain after a transient failure of `class`.
    pub fn observe_retry(&self, class: &str) {
        self.retries.get_or_create(&ClassLabels { class: class.to_owned() }).inc();
    }

    /// Counts a change of this process's drainer lease.
    pub fn observe_lease(&self, event: &'static str) {
        self.lease_changes.get_or_create(&EventLabels { event }).inc();
        self.drainer_active.set(i64::from(event == "acquired"));
    }

    pub fn observe_token(&self, result: &'static str) {
        self.token_verifications.get_or_create(&ResultLabels { result }).inc();
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// An LSN as a gauge value. WAL positions stay far below 2^63 bytes in
/// practice; larger ones are clamped.
pub fn lsn_gauge(lsn: Lsn) -> i64 {
    i64::try_from(lsn.0).unwrap_or(i64::MAX)
}

/// The error class of a failed attempt on main, from its SQLSTATE: the
/// `class` label of `opsbuffer_drain_retries_total`.
pub fn retry_class(sqlstate: Option<&str>) -> String {
    match sqlstate {
        None => "connection".to_owned(),
        Some("57014") => "statement_timeout".to_owned(),
        Some("25006") => "read_only".to_owned(),
        Some("40001") | Some("40P01") => "serialization".to_owned(),
        Some(code) if code.starts_with("08") => "connection".to_owned(),
        Some(code) if code.starts_with("53") => "insufficient_resources".to_owned(),
        Some(code) if code.starts_with("57") => "server_shutdown".to_owned(),
        Some(code) => format!("sqlstate_{}", code.get(..2).unwrap_or(code)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_counts_requests_by_route() {
        let metrics = Metrics::new();
        metrics.observe_request("GET", "/records/{table}", 200, Duration::from_millis(3));
        metrics.observe_request("GET", "/records/{table}", 200, Duration::from_millis(5));
        let text = metrics.encode();
        assert!(
            text.contains(r#"opsbuffer_http_requests_total{method="GET",route="/records/{table}",status="200"} 2"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn retry_classes_follow_sqlstate() {
        assert_eq!(retry_class(None), "connection");
        assert_eq!(retry_class(Some("08006")), "connection");
        assert_eq!(retry_class(Some("57014")), "statement_timeout");
        assert_eq!(retry_class(Some("25006")), "read_only");
        assert_eq!(retry_class(Some("XX000")), "sqlstate_XX");
    }
}
