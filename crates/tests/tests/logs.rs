//! The logs of `opsbuffer serve`: one line per request with its fields,
//! and never a token.

use std::process::Stdio;
use std::time::Duration;

use opsbuffer_tests::{REPLAY, admin, eventually, opsbuffer_binary, run_opsbuffer, service_env};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn serve_logs_requests_but_never_tokens() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site_name = format!("logs-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let env = service_env(&site_name);

    let (status, token, stderr) =
        run_opsbuffer(&["token", "create", "--name", "log test", "--scopes", "admin"], &env).await;
    assert!(status.success(), "{stderr}");
    let token = token.trim().to_owned();
    let secret = token[14..].to_owned();

    let port = free_port();
    let mut child = tokio::process::Command::new(opsbuffer_binary())
        .arg("serve")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("API_LISTEN", format!("127.0.0.1:{port}"))
        .env("LOG_FORMAT", "json")
        .env("LOG_LEVEL", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn opsbuffer serve");
    let mut stderr = child.stderr.take().unwrap();
    let collected = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });

    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    eventually("the service to listen", || async { http.get(format!("{base}/health")).send().await.ok().map(|_| ()) })
        .await;
    let written: Value = http
        .post(format!("{base}/executed_obs_units/start"))
        .bearer_auth(&token)
        .header("x-request-id", "log-test-1")
        .json(&json!({"obs_unit_id": reference.obs_unit}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let transaction = written["transaction_id"].as_str().expect("a transaction id").to_owned();
    let created: Value = http
        .post(format!("{base}/tokens"))
        .bearer_auth(&token)
        .json(&json!({"name": "created in the log test", "scopes": ["read:observations"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second_token = created["token"].as_str().expect("a token").to_owned();
    let wrong = format!("{}{}", &token[..14], "B".repeat(43));
    let rejected = http.get(format!("{base}/tokens")).bearer_auth(&wrong).send().await.unwrap();
    assert_eq!(rejected.status().as_u16(), 401);

    child.kill().await.unwrap();
    let logs = tokio::time::timeout(Duration::from_secs(10), collected).await.unwrap().unwrap();
    assert!(!logs.contains(&secret), "the token's secret is in the logs");
    assert!(!logs.contains(&second_token[14..]), "the created token's secret is in the logs");
    assert!(!logs.contains(&wrong[14..]), "a rejected token's secret is in the logs");

    let lines: Vec<Value> = logs.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let completed = lines
        .iter()
        .find(|l| l["message"] == "request completed" && l["span"]["request_id"] == "log-test-1")
        .unwrap_or_else(|| panic!("no completion line for the write:\n{logs}"));
    assert_eq!(completed["level"], "INFO");
    assert_eq!(completed["status"], 201);
    assert!(completed["latency_ms"].as_f64().is_some(), "{completed}");
    let span = &completed["span"];
    assert_eq!(span["method"], "POST");
    assert_eq!(span["route"], "/executed_obs_units/start");
    assert_eq!(span["uri"], "/executed_obs_units/start");
    assert_eq!(span["token_id"], &token[5..13]);
    assert_eq!(span["transaction_id"], transaction.as_str());
    let buffered = lines
        .iter()
        .find(|l| l["message"] == "buffered transaction" && l["transaction_id"] == transaction.as_str())
        .unwrap_or_else(|| panic!("no buffered line:\n{logs}"));
    assert_eq!(buffered["span"]["request_id"], "log-test-1", "the engine's line carries the request span");
}
