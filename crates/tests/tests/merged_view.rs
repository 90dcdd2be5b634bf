//! The merged view against the real services: buffered records, the
//! field-by-field merge, filtering after the merge, and a record moving from
//! buffer to replica while replay is paused.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use opsbuffer_tests::{REPLAY, SiteOptions, TestSite, admin, eventually};
use serde_json::{Value, json};

#[tokio::test]
async fn buffered_record_is_returned_once_from_buffer() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = TestSite::start(SiteOptions::default()).await;
    site.proxy().go_down();

    let id = site.start_unit(reference.obs_unit).await;
    let records = site
        .records(&format!("/records/executed_obs_unit?obs_unit_id=eq.{}&provenance=true", reference.obs_unit))
        .await;

    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["id"], id);
    assert_eq!(records[0]["status"], "running");
    assert_eq!(records[0]["_provenance"]["source"], "buffer");
    assert_eq!(records[0]["_provenance"]["pending_transactions"][0]["state"], "queued");
    site.stop().await;
}

/// Creates a unit, waits until local has it and its overlay is gone.
async fn replicated_unit(site: &TestSite, obs_unit: i32) -> String {
    let id = site.start_unit(obs_unit).await;
    eventually("the unit to be read from the database", || async {
        let (_, body) = site.get(&format!("/records/executed_obs_unit/{id}?provenance=true")).await;
        (body["_provenance"]["source"] == "database").then_some(())
    })
    .await;
    id
}

#[tokio::test]
async fn merge_applies_patch_over_local_row() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = TestSite::start(SiteOptions::default()).await;
    let id = replicated_unit(&site, reference.obs_unit).await;
    let (_, local_row) = site.get(&format!("/records/executed_obs_unit/{id}?consistency=replica")).await;
    assert_eq!(local_row["status"], "running");
    assert_eq!(local_row["end_time"], Value::Null);

    site.proxy().go_down();
    let (status, body) =
        site.put(&format!("/executed_obs_units/{id}/finish"), json!({"end_time": "2026-10-01T10:53:00Z"})).await;
    assert_eq!(status, 200, "{body}");
    let (_, merged) = site.get(&format!("/records/executed_obs_unit/{id}?provenance=true")).await;

    assert_eq!(merged["status"], "completed");
    assert_eq!(merged["end_time"], "2026-10-01T10:53:00Z");
    for column in ["id", "obs_unit_id", "start_time", "metadata", "created_at"] {
        assert_eq!(merged[column], local_row[column], "column {column}");
    }
    assert_eq!(merged["_provenance"]["source"], "read_buffer");
    site.stop().await;
}

#[tokio::test]
async fn filter_applies_after_merge_both_ways() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = TestSite::start(SiteOptions::default()).await;
    let finished = replicated_unit(&site, reference.obs_unit).await;
    let still_running = replicated_unit(&site, reference.obs_unit).await;

    site.proxy().go_down();
    let (status, _) = site.put(&format!("/executed_obs_units/{finished}/finish"), json!({})).await;
    assert_eq!(status, 200);

    let running = site
        .records(&format!("/records/executed_obs_unit?obs_unit_id=eq.{}&status=eq.running", reference.obs_unit))
        .await;
    let ids: Vec<&Value> = running.iter().map(|r| &r["id"]).collect();
    assert_eq!(ids, vec![&json!(still_running)], "the patched-out unit must not match status=running");

    let completed = site
        .records(&format!("/records/executed_obs_unit?obs_unit_id=eq.{}&status=eq.completed", reference.obs_unit))
        .await;
    let ids: Vec<&Value> = completed.iter().map(|r| &r["id"]).collect();
    assert_eq!(ids, vec![&json!(finished)], "the patched-in unit must match status=completed");
    site.stop().await;
}

#[tokio::test]
async fn record_moves_to_replica_without_gap_or_double() {
    let _replay = REPLAY.write().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = Arc::new(TestSite::start(SiteOptions::default()).await);

    admin.pause_replay().await;
    let (status, body) = site.post("/executed_obs_units/start", json!({"obs_unit_id": reference.obs_unit})).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let transaction = body["transaction_id"].as_str().unwrap().to_owned();
    site.wait_transaction(&transaction, &["applied"]).await;

    let (_, record) = site.get(&format!("/records/executed_obs_unit/{id}?provenance=true")).await;
    assert_eq!(record["_provenance"]["source"], "buffer", "drained but not replicated: still from the buffer");

    // Poll both a list and a get while the record moves.
    let stop = Arc::new(AtomicBool::new(false));
    let polls = Arc::new(AtomicUsize::new(0));
    let poller = {
        let (site, stop, polls, id) = (site.clone(), stop.clone(), polls.clone(), id.clone());
        let obs_unit = reference.obs_unit;
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let list = site.records(&format!("/records/executed_obs_unit?obs_unit_id=eq.{obs_unit}")).await;
                let copies = list.iter().filter(|r| r["id"] == id).count();
                let (status, _) = site.get(&format!("/records/executed_obs_unit/{id}")).await;
                seen.push((copies, status));
                polls.fetch_add(1, Ordering::SeqCst);
            }
            seen
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    admin.resume_replay().await;

    eventually("the record to be read from the database", || async {
        let (_, body) = site.get(&format!("/records/executed_obs_unit/{id}?provenance=true")).await;
        let from_database =
            body["_provenance"]["source"] == "database" && body["_provenance"]["pending_transactions"] == json!([]);
        from_database.then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::SeqCst);
    let seen = poller.await.unwrap();

    assert!(polls.load(Ordering::SeqCst) > 5, "the poller ran too few times to mean anything");
    let bad: Vec<_> = seen.iter().filter(|(copies, status)| *copies != 1 || *status != 200).collect();
    assert!(bad.is_empty(), "the record was missing or doubled in {} of {} polls: {bad:?}", bad.len(), seen.len());
    let state = site.wait_transaction(&transaction, &["replicated"]).await;
    assert_eq!(state["state"], "replicated");
}
