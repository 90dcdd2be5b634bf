//! The drain under injected faults: main unreachable, a lost COMMIT reply,
//! a poison transaction, two processes on one Redis, and a slow link. A
//! fault proxy in front of main, owned by each test, injects the faults.

use std::collections::HashMap;
use std::time::Duration;

use opsbuffer_tests::{Admin, REPLAY, Reference, SiteOptions, TestSite, admin, eventually};
use serde_json::{Value, json};

/// Acknowledges a create of an executed obs unit and two updates of it,
/// in three transactions; returns the unit id and the expected final row
/// fields.
async fn unit_with_history(site: &TestSite, obs_unit: i32, n: usize) -> (String, Value) {
    let (status, body) = site
        .post(
            "/executed_obs_units/start",
            json!({"obs_unit_id": obs_unit, "start_time": "2026-10-01T10:40:00Z", "metadata": {"n": n, "step": 1}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let (status, body) = site
        .post(
            "/transactions",
            json!({"steps": [{"op": "update", "table": "executed_obs_unit", "id": id, "data": {"metadata": {"n": n, "step": 2}}}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let end = format!("2026-10-01T11:{:02}:00Z", n % 60);
    let (status, body) = site.put(&format!("/executed_obs_units/{id}/finish"), json!({"end_time": end})).await;
    assert_eq!(status, 200, "{body}");
    (id, json!({"status": "completed", "end_time": end, "metadata": {"n": n, "step": 2}}))
}

/// The executed obs units of `obs_unit` on main, by id, as
/// (status, end_time, metadata).
async fn main_units(admin: &Admin, obs_unit: i32) -> HashMap<String, (String, String, Value)> {
    let rows = admin
        .main
        .query(
            "SELECT id::text, status, to_char(end_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), metadata::text \
             FROM executed_obs_unit WHERE obs_unit_id = $1",
            &[&obs_unit],
        )
        .await
        .expect("query main");
    rows.iter()
        .map(|r| {
            let metadata: String = r.get(3);
            (
                r.get(0),
                (r.get(1), r.get::<_, Option<String>>(2).unwrap_or_default(), serde_json::from_str(&metadata).unwrap()),
            )
        })
        .collect()
}

/// Asserts the merged view lists every expected unit exactly once with its
/// expected fields.
async fn assert_merged(site: &TestSite, reference: &Reference, expected: &HashMap<String, Value>) {
    let records =
        site.records(&format!("/records/executed_obs_unit?obs_unit_id=eq.{}&limit=10000", reference.obs_unit)).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for record in &records {
        let id = record["id"].as_str().unwrap().to_owned();
        *seen.entry(id.clone()).or_default() += 1;
        let want = &expected[&id];
        for field in ["status", "end_time", "metadata"] {
            assert_eq!(record[field], want[field], "{id} {field}");
        }
    }
    assert_eq!(seen.len(), expected.len(), "every acknowledged unit is in the merged view");
    assert!(seen.values().all(|n| *n == 1), "no unit appears twice: {seen:?}");
}

#[tokio::test]
async fn outage_writes_reach_main_once_in_order() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = TestSite::start(SiteOptions::default()).await;
    site.proxy().go_down();

    let mut expected = HashMap::new();
    for n in 0..30 {
        let (id, fields) = unit_with_history(&site, reference.obs_unit, n).await;
        expected.insert(id, fields);
    }
    assert_merged(&site, &reference, &expected).await;
    assert!(main_units(&admin, reference.obs_unit).await.is_empty(), "nothing reaches main during the outage");
    let health = site.get("/health").await.1;
    assert_eq!(health["buffer"]["queued"], 90, "{health}");
    assert_eq!(health["main"]["reachable"], false, "{health}");

    site.proxy().come_up();
    site.wait_drained().await;
    assert_merged(&site, &reference, &expected).await;

    let on_main = main_units(&admin, reference.obs_unit).await;
    assert_eq!(on_main.len(), expected.len());
    for (id, want) in &expected {
        let (status, end_time, metadata) = &on_main[id];
        assert_eq!(status, want["status"].as_str().unwrap(), "{id}");
        assert_eq!(end_time, want["end_time"].as_str().unwrap(), "{id}");
        assert_eq!(metadata, &want["metadata"], "{id}");
    }
    let ledger = admin
        .main
        .query(
            "SELECT sequence, applied_at FROM opsbuffer_ledger WHERE site_name = $1 ORDER BY sequence",
            &[&site.site_name],
        )
        .await
        .unwrap();
    assert_eq!(ledger.len(), 90, "one ledger row per transaction");
    let times: Vec<std::time::SystemTime> = ledger.iter().map(|r| r.get(1)).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "transactions committed in acknowledgement order");
    site.stop().await;
}

#[tokio::test]
async fn lost_commit_reply_applies_once() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = TestSite::start(SiteOptions::default()).await;
    site.proxy().go_down();
    let (status, body) = site.post("/executed_obs_units/start", json!({"obs_unit_id": reference.obs_unit})).await;
    assert_eq!(status, 201);
    let transaction = body["transaction_id"].as_str().unwrap().to_owned();

    site.proxy().cut_after_next_commit();
    site.proxy().come_up();
    let state = site.wait_transaction(&transaction, &["applied", "replicated"]).await;

    assert_eq!(site.proxy().commits_cut(), 1, "the COMMIT reply was cut once");
    assert!(state["attempts"].as_u64().unwrap() >= 1, "the cut attempt was counted: {state}");
    assert_eq!(main_units(&admin, reference.obs_unit).await.len(), 1, "the unit exists once on main");
    let ledger: i64 = admin
        .main
        .query_one("SELECT count(*) FROM opsbuffer_ledger WHERE transaction_id = $1::text::uuid", &[&transaction])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ledger, 1);
    site.wait_drained().await;
    site.stop().await;
}

#[tokio::test]
async fn poison_transaction_is_dead_lettered_then_retried() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = TestSite::start(SiteOptions::default()).await;
    site.proxy().go_down();

    // The unit refers to obs unit 2 of the reference; delete that on main
    // behind opsbuffer's back, so main rejects the unit's foreign key.
    let (_, poison) = site.post("/executed_obs_units/start", json!({"obs_unit_id": reference.second_obs_unit})).await;
    let poison_unit = poison["id"].as_str().unwrap().to_owned();
    let poison_tx = poison["transaction_id"].as_str().unwrap().to_owned();
    let (_, dependent) = site.put(&format!("/executed_obs_units/{poison_unit}/finish"), json!({})).await;
    let dependent_tx = dependent["transaction_id"].as_str().unwrap().to_owned();
    // A file of the unit: held by the dead letter and by the blocked finish.
    let file = json!({"name": "held.g3", "relative_path": format!("{}/held.g3", reference.tag), "size_bytes": 1,
        "checksum": "x", "executed_obs_unit_id": poison_unit, "instrument_module_id": reference.module});
    let (status, second) = site.post("/raw_data_files/", file).await;
    assert_eq!(status, 201, "{second}");
    let second_tx = second["transaction_id"].as_str().unwrap().to_owned();
    let unrelated_unit = site.start_unit(reference.obs_unit).await;
    admin.main.execute("DELETE FROM obs_unit WHERE id = $1", &[&reference.second_obs_unit]).await.unwrap();

    site.proxy().come_up();
    let dead = site.wait_transaction(&poison_tx, &["dead"]).await;
    assert_eq!(dead["sqlstate"], "23503", "a foreign-key violation: {dead}");
    assert!(dead["error"].as_str().unwrap().contains("foreign key"), "{dead}");
    let blocked = site.wait_transaction(&dependent_tx, &["blocked"]).await;
    assert_eq!(blocked["blocked_by"], json!([poison_tx]));
    let blocked = site.wait_transaction(&second_tx, &["blocked"]).await;
    assert_eq!(blocked["blocked_by"], json!([poison_tx]), "the dead letter at the root, once");
    eventually("the unrelated unit on main", || async {
        main_units(&admin, reference.obs_unit).await.contains_key(&unrelated_unit).then_some(())
    })
    .await;

    let (_, listed) = site.get("/buffer/dead").await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["transaction_id"], poison_tx);
    let (_, record) = site.get(&format!("/records/executed_obs_unit/{poison_unit}?provenance=true")).await;
    assert_eq!(record["status"], "completed", "dead and blocked changes stay visible");
    let states: Vec<&Value> =
        record["_provenance"]["pending_transactions"].as_array().unwrap().iter().map(|p| &p["state"]).collect();
    assert_eq!(states, vec![&json!("dead"), &json!("blocked")]);
    let health = site.get("/health").await.1;
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["buffer"]["dead"], 1);

    // Fix the cause on main, then retry: both drain, in order.
    admin
        .main
        .execute(
            "INSERT INTO obs_unit (id, observing_program_id, name, target, scan_type) VALUES ($1, $2, 'restored', 'Mars', 'constant_el')",
            &[&reference.second_obs_unit, &reference.program],
        )
        .await
        .unwrap();
    let (status, body) = site.post(&format!("/buffer/dead/{poison_tx}/retry"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["released_blocked"], 2);
    site.wait_transaction(&dependent_tx, &["applied", "replicated"]).await;
    site.wait_transaction(&second_tx, &["applied", "replicated"]).await;
    site.wait_drained().await;
    let on_main = main_units(&admin, reference.second_obs_unit).await;
    assert_eq!(on_main[&poison_unit].0, "completed", "the dependent finish applied after the retried create");
    site.stop().await;
}

#[tokio::test]
async fn shared_parents_do_not_block_siblings() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = TestSite::start(SiteOptions::default()).await;
    let unit = site.start_unit(reference.obs_unit).await;
    site.wait_drained().await;
    site.proxy().go_down();

    let file = |name: &str| {
        json!({"name": name, "relative_path": format!("{}/{name}", reference.tag), "size_bytes": 1, "checksum": "x",
               "executed_obs_unit_id": unit, "instrument_module_id": reference.module})
    };
    let (_, poison) = site.post("/raw_data_files/", file("taken.g3")).await;
    let poison_tx = poison["transaction_id"].as_str().unwrap().to_owned();
    let poison_file = poison["id"].as_str().unwrap().to_owned();
    let update =
        json!({"steps": [{"op": "update", "table": "raw_data_file", "id": poison_file, "data": {"size_bytes": 2}}]});
    let (status, dependent) = site.post("/transactions", update).await;
    assert_eq!(status, 201, "{dependent}");
    let dependent_tx = dependent["transaction_id"].as_str().unwrap().to_owned();
    let (status, sibling) = site.post("/raw_data_files/", file("free.g3")).await;
    assert_eq!(status, 201, "{sibling}");
    let sibling_tx = sibling["transaction_id"].as_str().unwrap().to_owned();

    // Main gets the poison file's path behind opsbuffer's back, so main
    // rejects the poison file with a unique violation.
    admin
        .main
        .execute(
            "INSERT INTO raw_data_file (id, name, relative_path, size_bytes, checksum, executed_obs_unit_id, instrument_module_id) \
             VALUES ($1::text::uuid, 'other.g3', $2, 1, 'x', $3::text::uuid, $4)",
            &[&uuid::Uuid::now_v7().to_string(), &format!("{}/taken.g3", reference.tag), &unit, &reference.module],
        )
        .await
        .unwrap();
    site.proxy().come_up();

    let dead = site.wait_transaction(&poison_tx, &["dead"]).await;
    assert_eq!(dead["sqlstate"], "23505", "{dead}");
    let blocked = site.wait_transaction(&dependent_tx, &["blocked"]).await;
    assert_eq!(blocked["blocked_by"], json!([poison_tx]), "the update of the dead letter's file waits");
    // The sibling shares only the unit and the module it refers to.
    site.wait_transaction(&sibling_tx, &["applied", "replicated"]).await;
    site.stop().await;
}

#[tokio::test]
async fn discarded_dead_letter_disappears_from_merged_view() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = TestSite::start(SiteOptions::default()).await;
    site.proxy().go_down();
    let (_, poison) = site.post("/executed_obs_units/start", json!({"obs_unit_id": reference.second_obs_unit})).await;
    let unit = poison["id"].as_str().unwrap().to_owned();
    let transaction = poison["transaction_id"].as_str().unwrap().to_owned();
    admin.main.execute("DELETE FROM obs_unit WHERE id = $1", &[&reference.second_obs_unit]).await.unwrap();
    site.proxy().come_up();
    site.wait_transaction(&transaction, &["dead"]).await;

    let (status, body) = site.call(reqwest::Method::DELETE, &format!("/buffer/dead/{transaction}"), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = site.get(&format!("/records/executed_obs_unit/{unit}")).await;
    assert_eq!(status, 404, "a discarded create is gone from the merged view");
    let (status, body) = site.post(&format!("/buffer/dead/{transaction}/retry"), json!({})).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_dead_lettered");
    site.stop().await;
}

#[tokio::test]
async fn one_of_two_processes_drains_and_hands_over() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let first = TestSite::start(SiteOptions::default()).await;
    let second = TestSite::start_named(SiteOptions::default(), first.site_name.clone()).await;

    eventually("one drainer to take the lease", || async {
        (first.engine.drain_status().active || second.engine.drain_status().active).then_some(())
    })
    .await;
    for _ in 0..10 {
        let active = [first.engine.drain_status().active, second.engine.drain_status().active];
        assert_eq!(active.iter().filter(|a| **a).count(), 1, "exactly one process drains: {active:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Writes through either process drain.
    let through_second = second.start_unit(reference.obs_unit).await;
    let through_first = first.start_unit(reference.obs_unit).await;
    first.wait_drained().await;
    let on_main = main_units(&admin, reference.obs_unit).await;
    assert!(on_main.contains_key(&through_first) && on_main.contains_key(&through_second));

    // Crash the holder without releasing the lease; the other takes over
    // when the lease expires.
    let (mut holder, other) = if first.engine.drain_status().active { (first, second) } else { (second, first) };
    holder.crash();
    let after_crash = other.start_unit(reference.obs_unit).await;
    eventually("the other process to take the lease", || async { other.engine.drain_status().active.then_some(()) })
        .await;
    other.wait_drained().await;
    assert!(main_units(&admin, reference.obs_unit).await.contains_key(&after_crash));
    other.stop().await;
}

#[tokio::test]
async fn batching_cuts_round_trips_over_a_slow_link() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = TestSite::start(SiteOptions::default()).await;
    site.proxy().go_down();
    let count = 400;
    for _ in 0..count {
        site.start_unit(reference.obs_unit).await;
    }
    let before = site.engine.drain_status();

    // 50 ms each way: one transaction per round trip would drain 10 per
    // second.
    site.proxy().set_latency(Duration::from_millis(50));
    site.proxy().come_up();
    let started = std::time::Instant::now();
    site.wait_drained().await;
    let elapsed = started.elapsed();

    let after = site.engine.drain_status();
    let applied = after.applied_total - before.applied_total;
    let batches = after.batches_total - before.batches_total;
    assert_eq!(applied, count);
    assert!(
        batches * 10 <= applied,
        "{applied} transactions took {batches} batches; batching must put at least 10 in each"
    );
    println!(
        "drained {applied} transactions in {batches} batches over a 100 ms round trip in {elapsed:?} ({:.0}/s)",
        applied as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(main_units(&admin, reference.obs_unit).await.len(), count as usize);
    site.stop().await;
}
