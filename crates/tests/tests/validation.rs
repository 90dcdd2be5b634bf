//! Every rejected write gets a 4xx naming the field, and leaves the buffer
//! in Redis exactly as it was.

use opsbuffer_tests::{REPLAY, SiteOptions, TestSite, admin};
use serde_json::{Value, json};

/// Sends a request that must be rejected and checks status, code, field
/// and that Redis did not change.
async fn assert_rejected(
    site: &TestSite,
    method: reqwest::Method,
    path: &str,
    body: Value,
    status: u16,
    code: &str,
    field: Option<&str>,
) {
    let before = site.redis_dump().await;
    let (got_status, got) = site.call(method, path, Some(body.clone())).await;
    let after = site.redis_dump().await;

    assert_eq!(got_status, status, "{path} {body}: {got}");
    assert_eq!(got["error"]["code"], code, "{path} {body}: {got}");
    if let Some(field) = field {
        assert_eq!(got["error"]["field"], field, "{path} {body}: {got}");
    }
    assert!(got["error"]["message"].as_str().is_some_and(|m| m.len() > 20), "a helpful message: {got}");
    assert_eq!(before, after, "{path} {body} changed Redis");
}

#[tokio::test]
async fn rejected_writes_leave_redis_unchanged() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    // Without a drainer nothing changes Redis in the background.
    let site = TestSite::start(SiteOptions { background: false, ..SiteOptions::default() }).await;
    let existing = site.start_unit(reference.obs_unit).await;
    let post = reqwest::Method::POST;
    let put = reqwest::Method::PUT;
    let start = "/executed_obs_units/start";

    assert_rejected(
        &site,
        post.clone(),
        start,
        json!({"obs_unit_id": reference.obs_unit, "colour": "red"}),
        400,
        "unknown_column",
        Some("colour"),
    )
    .await;
    assert_rejected(
        &site,
        post.clone(),
        start,
        json!({"obs_unit_id": "seven"}),
        400,
        "invalid_value",
        Some("obs_unit_id"),
    )
    .await;
    assert_rejected(
        &site,
        post.clone(),
        start,
        json!({"obs_unit_id": reference.obs_unit, "start_time": "yesterday"}),
        400,
        "invalid_value",
        Some("start_time"),
    )
    .await;
    assert_rejected(
        &site,
        post.clone(),
        start,
        json!({"obs_unit_id": reference.obs_unit, "start_time": "2026-10-01T10:40:00"}),
        400,
        "invalid_value",
        Some("start_time"),
    )
    .await;
    assert_rejected(&site, post.clone(), start, json!({}), 400, "missing_column", Some("obs_unit_id")).await;
    assert_rejected(
        &site,
        post.clone(),
        start,
        json!({"obs_unit_id": 2_000_000_000}),
        422,
        "reference_not_found",
        Some("obs_unit_id"),
    )
    .await;
    assert_rejected(
        &site,
        post.clone(),
        start,
        json!({"obs_unit_id": reference.obs_unit, "status": "paused"}),
        422,
        "check_violation",
        Some("status"),
    )
    .await;
    assert_rejected(
        &site,
        post.clone(),
        start,
        json!({"obs_unit_id": reference.obs_unit, "id": existing}),
        409,
        "duplicate_key",
        None,
    )
    .await;
    assert_rejected(&site, post.clone(), start, json!([1, 2]), 400, "invalid_body", None).await;

    let missing = uuid::Uuid::now_v7();
    assert_rejected(
        &site,
        put.clone(),
        &format!("/executed_obs_units/{missing}/finish"),
        json!({}),
        404,
        "not_found",
        None,
    )
    .await;
    assert_rejected(
        &site,
        put.clone(),
        "/executed_obs_units/not-a-uuid/finish",
        json!({}),
        400,
        "invalid_value",
        Some("id"),
    )
    .await;
    assert_rejected(
        &site,
        put.clone(),
        &format!("/executed_obs_units/{existing}/finish"),
        json!({"status": "running"}),
        400,
        "invalid_value",
        Some("status"),
    )
    .await;
    assert_rejected(
        &site,
        put.clone(),
        &format!("/executed_obs_units/{existing}/finish"),
        json!({"end_time": "2020-01-01T00:00:00Z"}),
        422,
        "check_violation",
        None,
    )
    .await;

    let transactions = "/transactions";
    assert_rejected(
        &site,
        post.clone(),
        transactions,
        json!({"steps": [{"op": "create", "table": "no_such_table", "data": {}}]}),
        400,
        "unknown_table",
        Some("steps[0].table"),
    )
    .await;
    assert_rejected(
        &site,
        post.clone(),
        transactions,
        json!({"steps": [{"op": "upsert", "table": "executed_obs_unit", "data": {}}]}),
        400,
        "invalid_value",
        Some("steps[0].op"),
    )
    .await;
    assert_rejected(&site, post.clone(), transactions, json!({"steps": []}), 400, "invalid_value", Some("steps")).await;
    assert_rejected(
        &site,
        post.clone(),
        transactions,
        json!({"steps": [{"op": "create", "table": "obs_unit", "data": {"observing_program_id": reference.program, "name": "x", "target": "y", "scan_type": "pong"}}]}),
        400,
        "main_generated_key",
        Some("steps[0].data"),
    )
    .await;
    // The second step is invalid: the first must not be queued either.
    assert_rejected(
        &site,
        post.clone(),
        transactions,
        json!({"steps": [
            {"op": "create", "table": "executed_obs_unit", "data": {"obs_unit_id": reference.obs_unit, "start_time": "2026-10-01T10:40:00Z"}},
            {"op": "update", "table": "ExecutedObsUnit", "id": missing.to_string(), "data": {"status": "completed"}}
        ]}),
        404,
        "not_found",
        Some("steps[1]"),
    )
    .await;
    assert_rejected(
        &site,
        post.clone(),
        "/raw_data_files/bulk",
        json!([{"name": "a.g3", "relative_path": format!("{}/a.g3", reference.tag), "size_bytes": -1, "checksum": "x", "executed_obs_unit_id": existing, "instrument_module_id": reference.module}]),
        422,
        "check_violation",
        Some("[0].size_bytes"),
    )
    .await;
    assert_rejected(
        &site,
        post.clone(),
        "/raw_data_files/bulk",
        json!([
            {"name": "a.g3", "relative_path": format!("{}/same.g3", reference.tag), "size_bytes": 1, "checksum": "x", "executed_obs_unit_id": existing, "instrument_module_id": reference.module},
            {"name": "b.g3", "relative_path": format!("{}/same.g3", reference.tag), "size_bytes": 1, "checksum": "x", "executed_obs_unit_id": existing, "instrument_module_id": reference.module}
        ]),
        409,
        "unique_violation",
        Some("[1].relative_path"),
    )
    .await;

    // The clash inside one request names the earlier row, whose generated
    // key the client never saw.
    let (_, body) = site
        .post(
            "/raw_data_files/bulk",
            json!([
                {"name": "a.g3", "relative_path": format!("{}/twice.g3", reference.tag), "size_bytes": 1, "checksum": "x", "executed_obs_unit_id": existing, "instrument_module_id": reference.module},
                {"name": "b.g3", "relative_path": format!("{}/twice.g3", reference.tag), "size_bytes": 1, "checksum": "x", "executed_obs_unit_id": existing, "instrument_module_id": reference.module}
            ]),
        )
        .await;
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("[0].relative_path of this request"), "{body}");

    assert_rejected(&site, post.clone(), "/transactions", json!({"steps": "x"}), 400, "invalid_value", Some("steps"))
        .await;
    for late in ["9999-12-31T20:00:00-10:00", "0000-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00"] {
        assert_rejected(
            &site,
            post.clone(),
            start,
            json!({"obs_unit_id": reference.obs_unit, "start_time": late}),
            400,
            "invalid_value",
            Some("start_time"),
        )
        .await;
    }
    assert_rejected(
        &site,
        post.clone(),
        "/raw_data_files/",
        json!({"name": "long.g3", "relative_path": format!("{}/{}", reference.tag, "x".repeat(3000)), "size_bytes": 1, "checksum": "x", "executed_obs_unit_id": existing, "instrument_module_id": reference.module}),
        422,
        "value_too_long",
        Some("relative_path"),
    )
    .await;

    // Swapping two unique paths in one bulk update fails on main row by
    // row, so it is refused; two files to swap are buffered first.
    let (status, files) = site
        .post(
            "/raw_data_files/bulk",
            json!([
                {"name": "a.g3", "relative_path": format!("{}/swap-a.g3", reference.tag), "size_bytes": 1, "checksum": "x", "executed_obs_unit_id": existing, "instrument_module_id": reference.module},
                {"name": "b.g3", "relative_path": format!("{}/swap-b.g3", reference.tag), "size_bytes": 1, "checksum": "x", "executed_obs_unit_id": existing, "instrument_module_id": reference.module}
            ]),
        )
        .await;
    assert_eq!(status, 201, "{files}");
    let swap = json!({"steps": [{"op": "bulk_update", "table": "raw_data_file", "rows": [
        {"id": files["ids"][0], "relative_path": format!("{}/swap-b.g3", reference.tag)},
        {"id": files["ids"][1], "relative_path": format!("{}/swap-a.g3", reference.tag)}
    ]}]});
    assert_rejected(
        &site,
        post.clone(),
        "/transactions",
        swap,
        409,
        "unique_violation",
        Some("steps[0].rows[0].relative_path"),
    )
    .await;
    assert_rejected(&site, post.clone(), "/transactions", json!({}), 400, "missing_field", Some("steps")).await;

    let too_many: Vec<Value> = (0..10_001)
        .map(|i| json!({"name": "f.g3", "relative_path": format!("{}/many/{i}", reference.tag), "size_bytes": 1, "checksum": "x", "executed_obs_unit_id": existing, "instrument_module_id": reference.module}))
        .collect();
    assert_rejected(&site, post.clone(), "/raw_data_files/bulk", json!(too_many), 413, "too_many_rows", Some("files"))
        .await;
    assert_rejected(
        &site,
        put.clone(),
        &format!("/raw_data_package/{}/finalize", uuid::Uuid::now_v7()),
        json!({"status": "open"}),
        400,
        "invalid_value",
        Some("status"),
    )
    .await;
    assert_rejected(
        &site,
        post.clone(),
        start,
        json!({"obs_unit_id": reference.obs_unit, "metadata": {"padding": "x".repeat(33 * 1024 * 1024)}}),
        413,
        "body_too_large",
        None,
    )
    .await;

    let before = site.redis_dump().await;
    let (status, body) = site.post_raw(start, "{not json").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_body");
    assert_eq!(before, site.redis_dump().await);
    site.stop().await;
}
