//! The operator subcommands of the built `opsbuffer` binary against the
//! real services: token, status, query, drain, dead and tx.

use opsbuffer_tests::{REPLAY, SiteOptions, TestSite, admin, run_opsbuffer, service_env};
use serde_json::{Value, json};

/// A site without a drainer, so what it writes stays queued until a test
/// drains it.
async fn idle_site() -> TestSite {
    TestSite::start(SiteOptions { background: false, ..SiteOptions::default() }).await
}

async fn opsbuffer(site: &TestSite, args: &[&str]) -> (bool, String, String) {
    let (status, stdout, stderr) = run_opsbuffer(args, &service_env(&site.site_name)).await;
    (status.success(), stdout, stderr)
}

#[tokio::test]
async fn token_create_list_revoke() {
    let site = idle_site().await;
    let (ok, token, stderr) = opsbuffer(
        &site,
        &[
            "token",
            "create",
            "--name",
            "ingest rfsoc01",
            "--scopes",
            "write:observations,read:observations",
            "--expires-in",
            "90d",
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    let token = token.trim().to_owned();
    assert!(token.starts_with("opsb_"), "only the token goes to standard output: {token:?}");
    assert_eq!(token.len(), 57, "{token}");
    assert!(stderr.contains("read:observations, write:observations"), "{stderr}");
    assert!(stderr.contains("cannot be shown again"), "{stderr}");
    let token_id = &token[5..13];

    // The token works at once through the API of the same site.
    let principal = site.engine.verify_token(&token).await.expect("the new token is valid");
    assert_eq!(principal.name, "ingest rfsoc01");

    let (ok, list, stderr) = opsbuffer(&site, &["token", "list"]).await;
    assert!(ok, "{stderr}");
    let row = list.lines().find(|l| l.starts_with(token_id)).unwrap_or_else(|| panic!("{list}"));
    assert!(row.contains("ingest rfsoc01"), "{row}");
    assert!(row.contains("active"), "{row}");
    assert!(!list.contains(&token), "the list must not show the token");

    let (ok, json_list, _) = opsbuffer(&site, &["token", "list", "--json"]).await;
    assert!(ok);
    let parsed: Value = serde_json::from_str(&json_list).unwrap();
    let entry = parsed.as_array().unwrap().iter().find(|t| t["token_id"] == token_id).unwrap();
    assert_eq!(entry["scopes"], json!(["read:observations", "write:observations"]));
    assert!(entry["expires_at"].is_string(), "{entry}");

    let (ok, revoked, stderr) = opsbuffer(&site, &["token", "revoke", token_id]).await;
    assert!(ok, "{stderr}");
    assert!(revoked.contains(&format!("revoked token {token_id}")), "{revoked}");
    let (ok, _, stderr) = opsbuffer(&site, &["token", "revoke", token_id]).await;
    assert!(!ok, "revoking twice fails");
    assert!(stderr.contains("already revoked"), "{stderr}");
    let (_, list, _) = opsbuffer(&site, &["token", "list"]).await;
    let row = list.lines().find(|l| l.starts_with(token_id)).unwrap();
    assert!(row.contains("revoked"), "{row}");
    site.stop().await;
}

#[tokio::test]
async fn token_create_rejects_bad_scopes() {
    let site = idle_site().await;
    let (ok, stdout, stderr) = opsbuffer(&site, &["token", "create", "--name", "x", "--scopes", "read"]).await;
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("unknown scope"), "{stderr}");

    let (ok, stdout, stderr) =
        opsbuffer(&site, &["token", "create", "--name", "x", "--scopes", "admin", "--expires-in", "99999999d"]).await;
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("--expires-in"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    site.stop().await;
}

#[tokio::test]
async fn status_prints_the_health_table() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = idle_site().await;
    site.start_unit(reference.obs_unit).await;
    site.start_unit(reference.obs_unit).await;

    let (ok, table, stderr) = opsbuffer(&site, &["status"]).await;
    assert!(ok, "{stderr}");
    let line = |key: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("{key} is missing:\n{table}"))
            .to_owned()
    };
    assert!(line("site").contains(&format!("{} (secondary)", site.site_name)), "{table}");
    assert!(line("status").ends_with("healthy"), "{table}");
    assert!(line("queued").ends_with(" 2"), "{table}");
    assert!(line("main").contains("reachable"), "{table}");
    assert!(line("redis").contains("(durable)"), "{table}");

    let (ok, json_text, _) = opsbuffer(&site, &["status", "--json"]).await;
    assert!(ok);
    let health: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(health["buffer"]["queued"], 2);
    site.stop().await;
}

#[tokio::test]
async fn status_reports_an_unreachable_service() {
    // A port that was free a moment ago: nothing listens there.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut env = service_env("status-unreachable");
    env.retain(|(name, _)| *name != "REDIS_URL");
    env.push(("REDIS_URL", format!("redis://127.0.0.1:{port}")));
    env.push(("REDIS_TIMEOUT", "1s".to_owned()));
    let (status, table, stderr) = run_opsbuffer(&["status"], &env).await;
    assert!(status.success(), "{stderr}");
    let redis = table.lines().find(|l| l.starts_with("redis ")).unwrap_or_else(|| panic!("{table}"));
    assert!(redis.contains("UNREACHABLE"), "{redis}");
    let main = table.lines().find(|l| l.starts_with("main ")).unwrap_or_else(|| panic!("{table}"));
    assert!(main.contains("reachable"), "{main}");
    assert!(!main.contains("UNREACHABLE"), "{main}");
    assert!(table.contains("problem: Redis is unreachable"), "{table}");
    let queued = table.lines().find(|l| l.starts_with("queued ")).unwrap_or_else(|| panic!("{table}"));
    assert!(queued.contains("unknown"), "counts Redis cannot give are not zero: {queued}");
}

#[tokio::test]
async fn query_prints_the_merged_view() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = idle_site().await;
    let first = site.start_unit(reference.obs_unit).await;
    let second = site.start_unit(reference.obs_unit).await;
    let filter = format!("obs_unit_id=eq.{}", reference.obs_unit);

    let (ok, table, stderr) = opsbuffer(&site, &["query", "executed_obs_unit", &filter]).await;
    assert!(ok, "{stderr}");
    assert!(table.lines().next().unwrap().starts_with("id "), "{table}");
    assert!(table.contains(&first), "buffered records are in the merged view:\n{table}");
    assert!(table.contains(&second), "{table}");
    assert!(table.contains("(2 records)"), "{table}");

    let (ok, page, _) =
        opsbuffer(&site, &["query", "ExecutedObsUnit", &filter, "--limit", "1", "--order", "id.desc", "--json"]).await;
    assert!(ok);
    let page: Value = serde_json::from_str(&page).unwrap();
    assert_eq!(page["records"].as_array().unwrap().len(), 1);
    assert_eq!(page["records"][0]["id"], second.as_str());
    let cursor = page["next"].as_str().expect("a next cursor").to_owned();
    let (ok, rest, _) = opsbuffer(
        &site,
        &["query", "ExecutedObsUnit", &filter, "--limit", "1", "--order", "id.desc", "--after", &cursor, "--json"],
    )
    .await;
    assert!(ok);
    let rest: Value = serde_json::from_str(&rest).unwrap();
    assert_eq!(rest["records"][0]["id"], first.as_str());

    let (ok, replica, _) = opsbuffer(&site, &["query", "executed_obs_unit", &filter, "--consistency", "replica"]).await;
    assert!(ok);
    assert!(replica.contains("(0 records)"), "the replica alone does not have them yet:\n{replica}");

    let (ok, _, stderr) = opsbuffer(&site, &["query", "executed_obs_unit", "obs_unit_id=gt.abc"]).await;
    assert!(!ok);
    assert!(stderr.contains("obs_unit_id"), "{stderr}");
    let (ok, _, stderr) = opsbuffer(&site, &["query", "api_token"]).await;
    assert!(!ok);
    assert!(stderr.contains("unknown table"), "{stderr}");
    site.stop().await;
}

#[tokio::test]
async fn drain_once_empties_the_queue() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = idle_site().await;
    let mut transactions = Vec::new();
    for _ in 0..5 {
        let (_, body) = site.post("/executed_obs_units/start", json!({"obs_unit_id": reference.obs_unit})).await;
        transactions.push(body["transaction_id"].as_str().unwrap().to_owned());
    }

    let (ok, stdout, stderr) = opsbuffer(&site, &["drain", "--once", "--drain-batch-size", "2"]).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("drained: 5 transaction(s) applied, 0 dead-lettered"), "{stdout}");
    assert!(stderr.contains("draining 5 queued transaction(s)"), "plain progress lines off a terminal: {stderr}");
    assert!(stderr.contains("applied 5 of 5"), "{stderr}");
    let stats = site.engine.buffer.stats().await.unwrap();
    assert_eq!(stats.queued, 0);
    for transaction in &transactions {
        site.wait_transaction(transaction, &["applied", "replicated"]).await;
    }
    let lease = site.engine.buffer.current_lease().await.unwrap();
    assert_eq!(lease, None, "drain --once releases the lease");
    site.stop().await;
}

#[tokio::test]
async fn drain_once_respects_the_lease() {
    let _replay = REPLAY.read().await;
    let draining = TestSite::start(SiteOptions::default()).await;
    opsbuffer_tests::eventually("the site's drainer to take the lease", || async {
        draining.engine.buffer.current_lease().await.ok().flatten()
    })
    .await;
    let (ok, stdout, stderr) = opsbuffer(&draining, &["drain", "--once"]).await;
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("the drainer lease is held by"), "{stderr}");
    assert!(stderr.contains(&draining.engine.holder_id), "the message names the holder: {stderr}");
    assert!(stderr.contains("--wait"), "{stderr}");

    let (ok, _, stderr) = opsbuffer(&draining, &["drain", "--once", "--wait", "--timeout", "2s"]).await;
    assert!(!ok, "the lease stays held, so the wait runs out");
    assert!(stderr.contains("waiting for the drainer lease"), "{stderr}");
    draining.stop().await;
}

#[tokio::test]
async fn dead_and_tx_commands_repair_a_dead_letter() {
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

    let (ok, list, stderr) = opsbuffer(&site, &["dead", "list"]).await;
    assert!(ok, "{stderr}");
    assert!(list.contains(&transaction), "{list}");
    assert!(list.contains("foreign key"), "{list}");

    let (ok, shown, _) = opsbuffer(&site, &["dead", "show", &transaction]).await;
    assert!(ok);
    assert!(shown.contains("state        dead"), "{shown}");
    assert!(shown.contains("SQLSTATE     23503"), "{shown}");
    assert!(shown.contains("  create executed_obs_unit "), "operations named as in the API: {shown}");

    let (ok, tx, _) = opsbuffer(&site, &["tx", "show", &transaction, "--json"]).await;
    assert!(ok);
    let tx: Value = serde_json::from_str(&tx).unwrap();
    assert_eq!(tx["state"], "dead");

    // Fix the cause on main, then retry from the command line.
    admin
        .main
        .execute(
            "INSERT INTO obs_unit (id, observing_program_id, name, target, scan_type) VALUES ($1, $2, 'restored', 'Mars', 'constant_el')",
            &[&reference.second_obs_unit, &reference.program],
        )
        .await
        .unwrap();
    let (ok, retried, stderr) = opsbuffer(&site, &["dead", "retry", &transaction]).await;
    assert!(ok, "{stderr}");
    assert!(retried.contains(&format!("requeued {transaction}")), "{retried}");
    site.wait_transaction(&transaction, &["applied", "replicated"]).await;
    let (ok, list, _) = opsbuffer(&site, &["dead", "list"]).await;
    assert!(ok);
    assert!(list.contains("no dead letters"), "{list}");

    let (ok, _, stderr) = opsbuffer(&site, &["dead", "discard", &transaction]).await;
    assert!(!ok, "only dead letters can be discarded");
    assert!(stderr.contains("not dead-lettered"), "{stderr}");
    site.stop().await;
}

#[tokio::test]
async fn every_subcommand_has_help() {
    for command in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["config", "check", "--help"],
        vec!["status", "--help"],
        vec!["drain", "--help"],
        vec!["query", "--help"],
        vec!["token", "create", "--help"],
        vec!["token", "list", "--help"],
        vec!["token", "revoke", "--help"],
        vec!["dead", "list", "--help"],
        vec!["tx", "show", "--help"],
    ] {
        let (status, stdout, stderr) = run_opsbuffer(&command, &[]).await;
        assert!(status.success(), "{command:?}: {stderr}");
        assert!(stdout.contains("Usage: opsbuffer"), "{command:?}: {stdout}");
    }
}
