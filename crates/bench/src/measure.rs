//! Closed-loop load: a fixed number of clients, each sending its next
//! request as soon as the previous one returned, until a request count or a
//! time budget is reached. Latencies are kept whole and sorted for the
//! percentiles, so no histogram rounding enters the figures.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;

/// Latencies and errors of one measurement.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub clients: usize,
    /// Latencies of the successful requests, sorted.
    pub latencies: Vec<Duration>,
    /// Send time (from the start of the run) and latency of each successful
    /// request, in send order.
    pub timeline: Vec<(Duration, Duration)>,
    pub errors: usize,
    pub first_error: Option<String>,
    /// From the first request sent to the last one finished.
    pub wall: Duration,
    /// Whether the time budget ended the run before the request count.
    pub stopped_by_budget: bool,
}

impl Measurement {
    pub fn count(&self) -> usize {
        self.latencies.len()
    }

    /// The `quantile` latency by the nearest-rank method.
    pub fn percentile(&self, quantile: f64) -> Option<Duration> {
        percentile(&self.latencies, quantile)
    }

    /// Successful requests per second of wall time.
    pub fn throughput(&self) -> Option<f64> {
        let seconds = self.wall.as_secs_f64();
        (seconds > 0.0 && !self.latencies.is_empty()).then(|| self.latencies.len() as f64 / seconds)
    }

    /// Fails when more than 1 % of the requests failed, because the
    /// latencies of the rest would then describe a broken service.
    pub fn check(&self, what: &str) -> anyhow::Result<()> {
        let total = self.errors + self.latencies.len();
        if self.errors * 100 > total || self.latencies.is_empty() {
            bail!(
                "{what}: {} of {total} requests failed; first error: {}",
                self.errors,
                self.first_error.as_deref().unwrap_or("none")
            );
        }
        Ok(())
    }

    /// Returns the median latency of the first and of the last tenth of
    /// the requests by send time, which shows whether latency drifts during
    /// the run (as the buffer grows, for example). `None` below 100 requests.
    pub fn drift(&self) -> Option<(Duration, Duration)> {
        let tenth = self.timeline.len() / 10;
        if tenth < 10 {
            return None;
        }
        let median = |part: &[(Duration, Duration)]| {
            let mut latencies: Vec<Duration> = part.iter().map(|(_, latency)| *latency).collect();
            latencies.sort_unstable();
            percentile(&latencies, 0.5)
        };
        Some((median(&self.timeline[..tenth])?, median(&self.timeline[self.timeline.len() - tenth..])?))
    }

    /// Remarks for the notes column: errors, an early stop and the drift.
    pub fn remarks(&self, budget: Duration) -> Vec<String> {
        let mut remarks = Vec::new();
        if let Some((first, last)) = self.drift() {
            remarks.push(format!(
                "p50 of the first and last 10 % of requests {:.2} and {:.2} ms",
                first.as_secs_f64() * 1000.0,
                last.as_secs_f64() * 1000.0
            ));
        }
        if self.stopped_by_budget {
            remarks.push(format!("stopped by the {} s time budget", budget.as_secs()));
        }
        if self.errors > 0 {
            remarks.push(format!("{} failed requests", self.errors));
        }
        remarks
    }
}

/// The `quantile` of sorted values by the nearest-rank method.
pub fn percentile(sorted: &[Duration], quantile: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Runs `total` requests from `clients` concurrent clients, or fewer when
/// `budget` runs out first. `request(i)` sends request number `i` and
/// returns its latency, timed around the HTTP call alone.
pub async fn closed_loop<F, Fut>(clients: usize, total: usize, budget: Duration, request: F) -> Measurement
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Duration>> + Send + 'static,
{
    let request = Arc::new(request);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + budget;
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients.max(1) {
        let request = request.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut timeline = Vec::new();
            let mut errors = 0;
            let mut first_error = None;
            let mut stopped_by_budget = false;
            loop {
                if Instant::now() >= deadline {
                    stopped_by_budget = next.load(Ordering::SeqCst) < total;
                    break;
                }
                let index = next.fetch_add(1, Ordering::SeqCst);
                if index >= total {
                    break;
                }
                let sent = started.elapsed();
                match request(index).await {
                    Ok(latency) => timeline.push((sent, latency)),
                    Err(error) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{error:#}"));
                    }
                }
            }
            (timeline, errors, first_error, stopped_by_budget, Instant::now())
        }));
    }

    let mut measurement = Measurement {
        clients,
        latencies: Vec::with_capacity(total),
        timeline: Vec::with_capacity(total),
        errors: 0,
        first_error: None,
        wall: Duration::ZERO,
        stopped_by_budget: false,
    };
    let mut last_finish = started;
    for task in tasks {
        match task.await {
            Ok((timeline, errors, first_error, stopped, finished)) => {
                measurement.timeline.extend(timeline);
                measurement.errors += errors;
                if measurement.first_error.is_none() {
                    measurement.first_error = first_error;
                }
                measurement.stopped_by_budget |= stopped;
                last_finish = last_finish.max(finished);
            }
            Err(error) => {
                measurement.errors += 1;
                measurement.first_error.get_or_insert_with(|| format!("a client task failed: {error}"));
            }
        }
    }
    measurement.wall = last_finish - started;
    measurement.timeline.sort_unstable_by_key(|(sent, _)| *sent);
    measurement.latencies = measurement.timeline.iter().map(|(_, latency)| *latency).collect();
    measurement.latencies.sort_unstable();
    measurement
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_millis(*v)).collect()
    }

    #[test]
    fn percentile_nearest_rank() {
        let values = millis(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(percentile(&values, 0.5), Some(Duration::from_millis(5)));
        assert_eq!(percentile(&values, 0.99), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&values, 0.0), Some(Duration::from_millis(1)));
    }

    #[test]
    fn percentile_of_nothing_is_none() {
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[tokio::test]
    async fn closed_loop_runs_every_request_once() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let measurement = closed_loop(4, 50, Duration::from_secs(10), move |i| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(i);
                Ok(Duration::from_micros(i as u64))
            }
        })
        .await;
        let mut seen = seen.lock().unwrap().clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        assert_eq!(measurement.count(), 50);
        assert!(!measurement.stopped_by_budget);
    }

    #[test]
    fn drift_compares_first_and_last_tenth() {
        let timeline: Vec<(Duration, Duration)> = (0..100u64)
            .map(|i| (Duration::from_millis(i), Duration::from_millis(if i < 50 { 1 } else { 9 })))
            .collect();
        let measurement = Measurement {
            clients: 1,
            latencies: Vec::new(),
            timeline,
            errors: 0,
            first_error: None,
            wall: Duration::ZERO,
            stopped_by_budget: false,
        };
        assert_eq!(measurement.drift(), Some((Duration::from_millis(1), Duration::from_millis(9))));
    }

    #[tokio::test]
    async fn closed_loop_counts_errors() {
        let measurement = closed_loop(2, 200, Duration::from_secs(10), |i| async move {
            if i == 7 { bail!("request 7 failed") } else { Ok(Duration::from_micros(1)) }
        })
        .await;
        assert_eq!(measurement.errors, 1);
        assert_eq!(measurement.count(), 199);
        assert!(measurement.check("test").is_ok(), "one error in 200 is within 1 %");
    }
}
