//! `/metrics` values as writes, outages, drains and replication happen.

use std::collections::HashMap;

use opsbuffer_tests::{REPLAY, SiteOptions, TestSite, admin, eventually};
use serde_json::json;

/// The samples of an OpenMetrics text, by series (name and labels).
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(site: &TestSite) -> HashMap<String, f64> {
    let response = site.http.get(format!("{}/metrics", site.base)).send().await.expect("scrape");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    samples(&response.text().await.unwrap())
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

const STARTS: &str = r#"opsbuffer_http_requests_total{method="POST",route="/executed_obs_units/start",status="201"}"#;
const QUEUED: &str = r#"opsbuffer_buffer_transactions{state="queued"}"#;
const WAITING: &str = r#"opsbuffer_buffer_transactions{state="waiting_replication"}"#;
const DEAD: &str = r#"opsbuffer_buffer_transactions{state="dead"}"#;

#[tokio::test]
async fn metrics_follow_writes_outage_and_drain() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = TestSite::start(SiteOptions::default()).await;
    let before = scrape(&site).await;
    assert_eq!(value(&before, STARTS), 0.0);
    assert_eq!(value(&before, QUEUED), 0.0);

    site.proxy().go_down();
    for _ in 0..3 {
        site.start_unit(reference.obs_unit).await;
    }
    let during = eventually("a retry counted during the outage", || async {
        let samples = scrape(&site).await;
        let retries: f64 =
            samples.iter().filter(|(k, _)| k.starts_with("opsbuffer_drain_retries_total{")).map(|(_, v)| v).sum();
        (retries > 0.0).then_some(samples)
    })
    .await;
    assert_eq!(value(&during, STARTS), 3.0);
    assert_eq!(value(&during, QUEUED), 3.0);
    assert!(value(&during, "opsbuffer_buffer_oldest_queued_age_seconds") > 0.0);
    assert_eq!(value(&during, "opsbuffer_drain_applied_transactions_total"), 0.0);
    assert_eq!(value(&during, r#"opsbuffer_drainer_lease_changes_total{event="acquired"}"#), 1.0);
    assert_eq!(value(&during, "opsbuffer_drainer_active"), 1.0);
    let latency_count = r#"opsbuffer_http_request_duration_seconds_count{method="POST",route="/executed_obs_units/start",status="201"}"#;
    assert_eq!(value(&during, latency_count), 3.0);

    site.proxy().come_up();
    site.wait_drained().await;
    let after = eventually("every eviction counted", || async {
        let samples = scrape(&site).await;
        (value(&samples, "opsbuffer_evicted_transactions_total") >= 3.0).then_some(samples)
    })
    .await;
    assert_eq!(value(&after, "opsbuffer_drain_applied_transactions_total"), 3.0);
    assert_eq!(value(&after, "opsbuffer_evicted_transactions_total"), 3.0);
    let batches = value(&after, "opsbuffer_drain_batches_total");
    assert!((1.0..=3.0).contains(&batches), "{batches}");
    assert_eq!(value(&after, "opsbuffer_drain_batch_size_transactions_count"), batches);
    assert_eq!(value(&after, "opsbuffer_drain_batch_size_transactions_sum"), 3.0);
    assert_eq!(value(&after, "opsbuffer_drain_batch_duration_seconds_count"), batches);
    assert_eq!(value(&after, QUEUED), 0.0);
    assert_eq!(value(&after, "opsbuffer_buffer_oldest_queued_age_seconds"), 0.0);
    let commit = value(&after, "opsbuffer_commit_lsn_bytes");
    assert!(commit > 0.0);
    assert!(value(&after, "opsbuffer_replay_lsn_bytes") >= commit, "local replayed the last commit");
    assert_eq!(value(&after, "opsbuffer_replication_lag_bytes"), 0.0);
    site.stop().await;
}

#[tokio::test]
async fn metrics_report_replication_lag() {
    let _replay = REPLAY.write().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = TestSite::start(SiteOptions::default()).await;
    admin.pause_replay().await;
    site.start_unit(reference.obs_unit).await;
    let lagging = eventually("the applied transaction waiting for replication", || async {
        let samples = scrape(&site).await;
        (value(&samples, WAITING) == 1.0).then_some(samples)
    })
    .await;
    admin.resume_replay().await;
    assert!(value(&lagging, "opsbuffer_replication_lag_bytes") > 0.0);
    assert!(value(&lagging, "opsbuffer_buffer_oldest_waiting_replication_age_seconds") >= 0.0);
    assert!(value(&lagging, "opsbuffer_commit_lsn_bytes") > value(&lagging, "opsbuffer_replay_lsn_bytes"));

    site.wait_drained().await;
    let caught_up = eventually("the lag back at zero", || async {
        let samples = scrape(&site).await;
        (value(&samples, WAITING) == 0.0).then_some(samples)
    })
    .await;
    assert_eq!(value(&caught_up, "opsbuffer_replication_lag_bytes"), 0.0);
    site.stop().await;
}

#[tokio::test]
async fn metrics_count_dead_letters() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = TestSite::start(SiteOptions::default()).await;
    site.proxy().go_down();
    let (_, poison) = site.post("/executed_obs_units/start", json!({"obs_unit_id": reference.second_obs_unit})).await;
    let transaction = poison["transaction_id"].as_str().unwrap().to_owned();
    admin.main.execute("DELETE FROM obs_unit WHERE id = $1", &[&reference.second_obs_unit]).await.unwrap();
    site.proxy().come_up();
    site.wait_transaction(&transaction, &["dead"]).await;

    let samples = scrape(&site).await;
    assert_eq!(value(&samples, "opsbuffer_drain_dead_lettered_transactions_total"), 1.0);
    assert_eq!(value(&samples, DEAD), 1.0);
    site.stop().await;
}

#[tokio::test]
async fn engines_in_one_process_count_separately() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let first = TestSite::start(SiteOptions { background: false, ..SiteOptions::default() }).await;
    let second = TestSite::start(SiteOptions { background: false, ..SiteOptions::default() }).await;
    first.start_unit(reference.obs_unit).await;
    first.start_unit(reference.obs_unit).await;

    let first_samples = scrape(&first).await;
    let second_samples = scrape(&second).await;
    assert_eq!(value(&first_samples, STARTS), 2.0);
    assert_eq!(value(&second_samples, STARTS), 0.0);
    assert_eq!(value(&first_samples, QUEUED), 2.0);
    assert_eq!(value(&second_samples, QUEUED), 0.0);
    first.stop().await;
    second.stop().await;
}
