//! Deletes, field-by-field updates, consistency modes and page walks on the
//! merged view, against the real services.

use std::collections::HashSet;

use opsbuffer_tests::{REPLAY, SiteOptions, TestSite, admin, eventually};
use serde_json::{Value, json};

async fn main_count(admin: &opsbuffer_tests::Admin, id: &str) -> i64 {
    admin
        .main
        .query_one("SELECT count(*) FROM executed_obs_unit WHERE id = $1::text::uuid", &[&id])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn pending_delete_hides_record_until_replicated() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = TestSite::start(SiteOptions::default()).await;
    let id = site.start_unit(reference.obs_unit).await;
    site.wait_drained().await;

    site.proxy().go_down();
    let (status, body) =
        site.post("/transactions", json!({"steps": [{"op": "delete", "table": "executed_obs_unit", "id": id}]})).await;
    assert_eq!(status, 201, "{body}");

    let (status, _) = site.get(&format!("/records/executed_obs_unit/{id}")).await;
    assert_eq!(status, 404, "a pending delete hides get-by-id");
    let listed = site.records(&format!("/records/executed_obs_unit?obs_unit_id=eq.{}", reference.obs_unit)).await;
    assert!(listed.is_empty(), "a pending delete hides the record from lists: {listed:?}");
    let by_status = site.records("/records/executed_obs_unit?status=eq.running&limit=10000").await;
    assert!(!by_status.iter().any(|r| r["id"] == id), "and from any other filter");
    let (_, replica) = site.get(&format!("/records/executed_obs_unit/{id}?consistency=replica")).await;
    assert_eq!(replica["id"], id, "the replica still has it");

    // Changing or recreating a record with a pending delete is refused.
    let (status, body) = site.put(&format!("/executed_obs_units/{id}/finish"), json!({})).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) =
        site.post("/executed_obs_units/start", json!({"id": id, "obs_unit_id": reference.obs_unit})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "pending_delete");

    site.proxy().come_up();
    site.wait_drained().await;
    assert_eq!(main_count(&admin, &id).await, 0);
    let (status, _) = site.get(&format!("/records/executed_obs_unit/{id}")).await;
    assert_eq!(status, 404, "still gone once the delete replicated");
    site.stop().await;
}

#[tokio::test]
async fn create_then_delete_before_drain_leaves_nothing() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = TestSite::start(SiteOptions::default()).await;
    site.proxy().go_down();
    let id = site.start_unit(reference.obs_unit).await;
    let (status, body) =
        site.post("/transactions", json!({"steps": [{"op": "delete", "table": "ExecutedObsUnit", "id": id}]})).await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = site.get(&format!("/records/executed_obs_unit/{id}")).await;
    assert_eq!(status, 404);

    let (status, body) = site
        .post(
            "/transactions",
            json!({"steps": [
                {"op": "delete", "table": "executed_obs_unit", "id": id},
            ]}),
        )
        .await;
    assert_eq!(status, 404, "deleting twice is refused: {body}");

    site.proxy().come_up();
    site.wait_drained().await;
    assert_eq!(main_count(&admin, &id).await, 0, "create and delete both applied; nothing remains");
    site.stop().await;
}

#[tokio::test]
async fn delete_then_recreate_in_one_transaction_is_refused() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = TestSite::start(SiteOptions { background: false, ..SiteOptions::default() }).await;
    let id = site.start_unit(reference.obs_unit).await;
    let (status, body) = site
        .post(
            "/transactions",
            json!({"steps": [
                {"op": "delete", "table": "executed_obs_unit", "id": id},
                {"op": "create", "table": "executed_obs_unit", "data": {"id": id, "obs_unit_id": reference.obs_unit, "start_time": "2026-10-01T10:00:00Z"}},
            ]}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "pending_delete");
    assert_eq!(body["error"]["field"], "steps[1].data");
    site.stop().await;
}

#[tokio::test]
async fn updates_merge_field_by_field_latest_wins() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = TestSite::start(SiteOptions::default()).await;
    site.proxy().go_down();
    let a = site.start_unit(reference.obs_unit).await;
    let b = site.start_unit(reference.obs_unit).await;
    let (status, body) = site
        .post(
            "/transactions",
            json!({"steps": [
                {"op": "bulk_update", "table": "executed_obs_unit", "rows": [
                    {"id": a, "status": "failed", "metadata": {"v": 1}},
                    {"id": b, "metadata": {"v": 1}},
                ]},
                {"op": "update", "table": "executed_obs_unit", "id": a, "data": {"metadata": {"v": 2}}},
            ]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) =
        site.put(&format!("/executed_obs_units/{b}/finish"), json!({"end_time": "2026-10-01T11:00:00Z"})).await;
    assert_eq!(status, 200);

    let (_, ra) = site.get(&format!("/records/executed_obs_unit/{a}")).await;
    let (_, rb) = site.get(&format!("/records/executed_obs_unit/{b}")).await;
    assert_eq!((ra["status"].clone(), ra["metadata"].clone()), (json!("failed"), json!({"v": 2})));
    assert_eq!(
        (rb["status"].clone(), rb["metadata"].clone(), rb["end_time"].clone()),
        (json!("completed"), json!({"v": 1}), json!("2026-10-01T11:00:00Z"))
    );
    assert_eq!(ra["start_time"], "2026-10-01T10:40:00Z", "columns no update touched keep their value");

    site.proxy().come_up();
    site.wait_drained().await;
    let (_, after) = site.get(&format!("/records/executed_obs_unit/{a}?provenance=true")).await;
    assert_eq!(after["metadata"], json!({"v": 2}));
    assert_eq!(after["_provenance"]["source"], "database");
    site.stop().await;
}

#[tokio::test]
async fn replicated_consistency_waits_or_times_out() {
    let _replay = REPLAY.write().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = TestSite::start(SiteOptions::default()).await;

    // Replay paused: the write drains but never becomes visible on local.
    admin.pause_replay().await;
    let id = site.start_unit(reference.obs_unit).await;
    let (status, body) =
        site.get(&format!("/records/executed_obs_unit/{id}?consistency=replicated&timeout_ms=300")).await;
    admin.resume_replay().await;
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["error"]["code"], "replication_timeout");
    assert!(body["error"]["message"].as_str().unwrap().contains("replayed up to"), "{body}");

    let (status, body) =
        site.get(&format!("/records/executed_obs_unit/{id}?consistency=replicated&timeout_ms=10000")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], id);

    // consistency=replica never shows what is only buffered.
    site.proxy().go_down();
    let buffered = site.start_unit(reference.obs_unit).await;
    let (status, _) = site.get(&format!("/records/executed_obs_unit/{buffered}?consistency=replica")).await;
    assert_eq!(status, 404);
    let (status, _) = site.get(&format!("/records/executed_obs_unit/{buffered}")).await;
    assert_eq!(status, 200);
    let (status, body) = site.get("/records/executed_obs_unit?consistency=eventually").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "consistency");
    site.stop().await;
}

#[tokio::test]
async fn page_walk_returns_each_record_once_while_draining() {
    let _replay = REPLAY.write().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = TestSite::start(SiteOptions::default()).await;
    site.proxy().go_down();
    let mut expected = HashSet::new();
    for _ in 0..60 {
        expected.insert(site.start_unit(reference.obs_unit).await);
    }

    // Walk pages of 7 while the drain and replication move the records.
    admin.pause_replay().await;
    site.proxy().come_up();
    let mut seen: Vec<String> = Vec::new();
    let mut after: Option<String> = None;
    let mut page = 0;
    loop {
        let mut path =
            format!("/records/executed_obs_unit?obs_unit_id=eq.{}&order=created_at.desc&limit=7", reference.obs_unit);
        if let Some(cursor) = &after {
            path.push_str(&format!("&after={cursor}"));
        }
        let (status, body) = site.get(&path).await;
        assert_eq!(status, 200, "{body}");
        seen.extend(body["records"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()));
        page += 1;
        if page == 3 {
            admin.resume_replay().await;
        }
        match body["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), unique.len(), "no record repeats across pages");
    assert_eq!(unique, expected, "no record is skipped");

    let (status, body) =
        site.get(&format!("/records/executed_obs_unit?order=start_time.asc&after={}", after.unwrap_or_default())).await;
    assert_eq!(status, 400, "a cursor is refused with another order: {body}");
    assert_eq!(body["error"]["field"], "after");
    site.wait_drained().await;
    site.stop().await;
}

#[tokio::test]
async fn bad_queries_name_the_parameter() {
    let _replay = REPLAY.read().await;
    admin().await;
    let site = TestSite::start(SiteOptions { background: false, ..SiteOptions::default() }).await;
    let cases: &[(&str, &str)] = &[
        ("/records/executed_obs_unit?start_time=gt.yesterday", "start_time"),
        ("/records/executed_obs_unit?nonsense=eq.1", "nonsense"),
        ("/records/executed_obs_unit?limit=0", "limit"),
        ("/records/executed_obs_unit?limit=10001", "limit"),
        ("/records/executed_obs_unit?offset=10", "offset"),
        ("/records/executed_obs_unit?order=metadata.asc", "order"),
        ("/records/executed_obs_unit?order=start_time.sideways", "order"),
        ("/records/executed_obs_unit?metadata=gt.{}", "metadata"),
        ("/records/executed_obs_unit?obs_unit_id=like.1*", "obs_unit_id"),
        ("/records/executed_obs_unit?status=in.(running", "status"),
        ("/records/executed_obs_unit?status=like.abc%5C", "status"),
        ("/records/executed_obs_unit?after=garbage", "after"),
        ("/records/executed_obs_unit?provenance=maybe", "provenance"),
        ("/records/executed_obs_unit?status", "status"),
        ("/records/executed_obs_unit?status=not.not.eq.running", "status"),
        ("/records/executed_obs_unit?status=like.a%00b", "status"),
        ("/records/executed_obs_unit?start_time=gt.9999-12-31T20:00:00-10:00", "start_time"),
        ("/records/executed_obs_unit/not-a-uuid", "id"),
        (&format!("/records/executed_obs_unit/{}/raw_data_file?via=name", uuid::Uuid::nil()), "via"),
        (&format!("/records/observing_program/{}/raw_data_file", 1), "via"),
    ];
    for (path, field) in cases {
        let (status, body) = site.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["field"], *field, "{path}: {body}");
    }
    let (status, body) = site.get("/records/no_such_table").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "unknown_table");
    site.stop().await;
}

#[tokio::test]
async fn child_records_follow_the_foreign_key() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = TestSite::start(SiteOptions::default()).await;
    site.proxy().go_down();
    let unit = site.start_unit(reference.obs_unit).await;
    let files: Vec<Value> = (0..3)
        .map(|i| {
            json!({"name": format!("f{i}.g3"), "relative_path": format!("{}/{unit}/f{i}.g3", reference.tag), "size_bytes": 100 * i,
                   "checksum": "x", "executed_obs_unit_id": unit, "instrument_module_id": reference.module})
        })
        .collect();
    let (status, body) = site.post("/raw_data_files/bulk", json!(files)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["count"], 3);

    let children =
        site.records(&format!("/records/executed_obs_unit/{unit}/raw_data_file?order=size_bytes.desc")).await;
    let sizes: Vec<&Value> = children.iter().map(|c| &c["size_bytes"]).collect();
    assert_eq!(sizes, vec![&json!(200), &json!(100), &json!(0)]);
    let filtered = site
        .records(&format!("/records/ExecutedObsUnit/{unit}/RawDataFile?via=executed_obs_unit_id&size_bytes=gt.50"))
        .await;
    assert_eq!(filtered.len(), 2);
    let (_, units) = site.get(&format!("/executed_obs_units/{}", reference.obs_unit)).await;
    assert_eq!(units[0]["raw_data_files"].as_array().unwrap().len(), 3, "{units}");

    site.proxy().come_up();
    eventually("the files to be read from the database", || async {
        let (_, units) = site.get(&format!("/executed_obs_units/{}?provenance=true", reference.obs_unit)).await;
        let files = units[0]["raw_data_files"].as_array().cloned().unwrap_or_default();
        (files.len() == 3 && files.iter().all(|f| f["_provenance"]["source"] == "database")).then_some(())
    })
    .await;
    site.stop().await;
}
