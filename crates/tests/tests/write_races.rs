//! Concurrent writes whose checks depend on each other: at most one of
//! them is acknowledged, however the requests interleave.

use std::collections::HashMap;

use futures::future::join_all;
use opsbuffer_redis::{AcknowledgeChecks, Acknowledgement, Guard, Guards};
use opsbuffer_tests::{REPLAY, SiteOptions, TestSite, admin};
use serde_json::{Value, json};

/// Builds the body of a raw data file of `unit` at `path`.
fn file(unit: &str, module: i32, path: &str) -> Value {
    json!({
        "name": path.rsplit('/').next().unwrap(),
        "relative_path": path,
        "size_bytes": 1,
        "checksum": "x",
        "executed_obs_unit_id": unit,
        "instrument_module_id": module,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_unique_values_acknowledged_once() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    // Without a drainer every write stays pending, so only the buffer's
    // side of the unique check decides.
    let site = TestSite::start(SiteOptions { background: false, ..SiteOptions::default() }).await;
    let unit = site.start_unit(reference.obs_unit).await;

    let groups = 20;
    let per_group = 3;
    let requests = (0..groups).flat_map(|group| {
        let path = format!("{}/race/{group}", reference.tag);
        let site = &site;
        let body = file(&unit, reference.module, &path);
        (0..per_group).map(move |_| {
            let body = body.clone();
            async move { (group, site.post("/raw_data_files/", body).await) }
        })
    });
    let answers = join_all(requests).await;

    let mut accepted: HashMap<usize, usize> = HashMap::new();
    for (group, (status, body)) in &answers {
        match status {
            201 => *accepted.entry(*group).or_default() += 1,
            409 => assert_eq!(body["error"]["code"], "unique_violation", "{body}"),
            other => panic!("group {group}: unexpected status {other}: {body}"),
        }
    }
    for group in 0..groups {
        assert_eq!(accepted.get(&group), Some(&1), "group {group}: exactly one write of its path is acknowledged");
    }

    let records =
        site.records(&format!("/records/raw_data_file?relative_path=like.{}/race/*&limit=1000", reference.tag)).await;
    assert_eq!(records.len(), groups, "each path once in the merged view");
    let mut paths: Vec<&str> = records.iter().map(|r| r["relative_path"].as_str().unwrap()).collect();
    paths.sort_unstable();
    paths.dedup();
    assert_eq!(paths.len(), groups, "no path twice in the merged view");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parent_delete_and_new_child_not_both_acknowledged() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = TestSite::start(SiteOptions { background: false, ..SiteOptions::default() }).await;

    let trials = 15;
    for trial in 0..trials {
        let unit = site.start_unit(reference.obs_unit).await;
        let delete = json!({"steps": [{"op": "delete", "table": "executed_obs_unit", "id": unit}]});
        let child = file(&unit, reference.module, &format!("{}/orphan/{trial}", reference.tag));
        let ((delete_status, delete_body), (child_status, child_body)) =
            tokio::join!(site.post("/transactions", delete), site.post("/raw_data_files/", child));

        assert!(
            !(delete_status == 201 && child_status == 201),
            "trial {trial}: the delete of {unit} and a new file of it were both acknowledged"
        );
        assert!(delete_status == 201 || child_status == 201, "trial {trial}: {delete_body} {child_body}");
        let (unit_status, _) = site.get(&format!("/records/executed_obs_unit/{unit}")).await;
        let files = site.records(&format!("/records/raw_data_file?executed_obs_unit_id=eq.{unit}")).await;
        if delete_status == 201 {
            assert_eq!(unit_status, 404, "trial {trial}: the deleted unit is gone");
            assert!(files.is_empty(), "trial {trial}: no file of the deleted unit");
        } else {
            assert_eq!(delete_status, 409, "trial {trial}: {delete_body}");
            assert_eq!(delete_body["error"]["code"], "referenced_by_children", "trial {trial}: {delete_body}");
            assert_eq!(unit_status, 200, "trial {trial}: the unit stays");
            assert_eq!(files.len(), 1, "trial {trial}: its file stays");
        }
    }
    site.stop().await;
}

#[tokio::test]
async fn guards_released_after_eviction() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = TestSite::start(SiteOptions::default()).await;
    let unit = site.start_unit(reference.obs_unit).await;
    let path = format!("{}/guarded/one", reference.tag);
    let (status, body) = site.post("/raw_data_files/", file(&unit, reference.module, &path)).await;
    assert_eq!(status, 201, "{body}");
    let guarded: Vec<String> = site
        .redis_dump()
        .await
        .into_iter()
        .filter_map(|(key, _)| key.split_once(":guard:").map(|(_, table)| table.to_owned()))
        .collect();
    // The unique path of the file, and the references of the file (to its
    // unit and module) and of the unit (to its obs unit).
    assert_eq!(guarded, ["executed_obs_unit", "instrument_module", "obs_unit", "raw_data_file"]);

    site.wait_drained().await;
    let left: Vec<String> =
        site.redis_dump().await.into_iter().map(|(key, _)| key).filter(|key| key.contains(":guard:")).collect();
    assert!(left.is_empty(), "eviction released every guard: {left:?}");

    // The path is now in local, which rejects a second file with it.
    let (status, body) = site.post("/raw_data_files/", file(&unit, reference.module, &path)).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "unique_violation", "{body}");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_keep_multi_column_check() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = TestSite::start(SiteOptions { background: false, ..SiteOptions::default() }).await;

    // Each update alone keeps end_time >= start_time; both together break it.
    for trial in 0..10 {
        let (status, body) = site
            .post(
                "/executed_obs_units/start",
                json!({"obs_unit_id": reference.obs_unit, "start_time": "2026-10-01T10:00:00Z"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let unit = body["id"].as_str().unwrap().to_owned();
        let later_start = json!({"steps": [{"op": "update", "table": "executed_obs_unit", "id": unit,
            "data": {"start_time": "2026-10-01T12:00:00Z"}}]});
        let early_end = json!({"end_time": "2026-10-01T11:00:00Z"});
        let finish = format!("/executed_obs_units/{unit}/finish");
        let ((start_status, start_body), (end_status, end_body)) =
            tokio::join!(site.post("/transactions", later_start), site.put(&finish, early_end));

        assert!(
            !(start_status == 201 && end_status == 200),
            "trial {trial}: both updates of {unit} were acknowledged: {start_body} {end_body}"
        );
        let (_, record) = site.get(&format!("/records/executed_obs_unit/{unit}")).await;
        if let (Some(start), Some(end)) = (record["start_time"].as_str(), record["end_time"].as_str()) {
            assert!(end >= start, "trial {trial}: the merged record breaks the check: {record}");
        }
    }
    site.stop().await;
}

#[tokio::test]
async fn resent_acknowledge_reports_duplicate() {
    let site = TestSite::start(SiteOptions { background: false, ..SiteOptions::default() }).await;
    let guard = Guard { table: "raw_data_file".into(), field: "u:resend".into() };
    let guards = Guards { expected: vec![(guard.clone(), 0)], added: vec![(guard, 1)] };
    let checks = AcknowledgeChecks { touched: &[], guards: &guards, preconditions: &[] };
    let id = uuid::Uuid::now_v7();

    let first = site.engine.buffer.acknowledge(id, 0, 0, checks, &[]).await.unwrap();
    assert!(matches!(first, Acknowledgement::Stored { .. }), "{first:?}");
    // The first attempt raised the guard it expected at 0; a resend after a
    // lost reply must still learn that the transaction is stored.
    let again = site.engine.buffer.acknowledge(id, 0, 0, checks, &[]).await.unwrap();
    assert!(matches!(again, Acknowledgement::Duplicate), "{again:?}");
    site.stop().await;
}
