//! Operating a site: back-pressure, Redis durability at start-up, eviction
//! when local is main itself, overdue replication in health, and shutdown
//! on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use opsbuffer_engine::{Engine, EngineError};
use opsbuffer_redis::{Buffer, BufferSettings};
use opsbuffer_tests::{REPLAY, SiteOptions, TestSite, admin, eventually, main_url, opsbuffer_binary, site_config};
use serde_json::json;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn full_buffer_answers_503_with_retry_after() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = TestSite::start(SiteOptions { max_pending: 3, ..SiteOptions::default() }).await;
    site.proxy().go_down();
    for _ in 0..3 {
        site.start_unit(reference.obs_unit).await;
    }

    let response = site
        .http
        .post(format!("{}/executed_obs_units/start", site.base))
        .json(&json!({"obs_unit_id": reference.obs_unit}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(retry_after.as_deref(), Some("5"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "buffer_full");
    assert_eq!(site.engine.buffer.stats().await.unwrap().queued, 3, "the refused write was not queued");

    site.proxy().come_up();
    site.wait_drained().await;
    site.start_unit(reference.obs_unit).await;
    site.stop().await;
}

#[tokio::test]
async fn secondary_refuses_redis_without_fsync() {
    let _replay = REPLAY.read().await;
    admin().await;
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("opsbuffer-redis-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut redis = tokio::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
        .args(["--appendfsync", "everysec", "--dir", dir.to_str().unwrap()])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server runs (scripts/services.sh installs it)");
    let url = format!("redis://127.0.0.1:{port}");
    let probe = Buffer::new(&BufferSettings {
        url: url.clone(),
        site: "probe".into(),
        timeout: Duration::from_secs(2),
        retention: Duration::from_secs(60),
    })
    .unwrap();
    eventually("the extra Redis to answer", || async { probe.ping().await.ok() }).await;

    let options = SiteOptions { redis_url: Some(url.clone()), ..SiteOptions::default() };
    let refused = Engine::start(site_config(&options, "durability-refused", &main_url())).await;
    match refused {
        Err(EngineError::Unavailable { code, message, .. }) => {
            assert_eq!(code, "redis_not_durable");
            assert!(message.contains("appendfsync=everysec"), "{message}");
            assert!(message.contains("REDIS_ALLOW_UNSAFE_PERSISTENCE"), "the message names the opt-out: {message}");
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("a secondary site started on a Redis without appendfsync always"),
    }

    let allowed = SiteOptions { redis_url: Some(url), allow_unsafe_redis: true, ..SiteOptions::default() };
    let engine =
        Engine::start(site_config(&allowed, "durability-allowed", &main_url())).await.expect("starts when allowed");
    let health = engine.health().await;
    assert!(!health.redis.durable);
    assert_eq!(health.status, "degraded");
    assert!(health.problems.iter().any(|p| p.contains("fsync")), "{:?}", health.problems);
    let _ = redis.kill().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn eviction_follows_commit_when_local_is_main() {
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let options = SiteOptions { local_url: Some(main_url()), proxy_main: false, ..SiteOptions::default() };
    let site = TestSite::start(options).await;
    let (status, body) = site.post("/executed_obs_units/start", json!({"obs_unit_id": reference.obs_unit})).await;
    assert_eq!(status, 201, "{body}");
    let transaction = body["transaction_id"].as_str().unwrap().to_owned();

    let state = site.wait_transaction(&transaction, &["replicated"]).await;
    assert_eq!(state["state"], "replicated");
    let (_, health) = site.get("/health").await;
    assert_eq!(health["local"]["in_recovery"], false, "{health}");
    assert_eq!(health["buffer"]["applied_waiting_replication"], 0);
    site.stop().await;
}

#[tokio::test]
async fn overdue_replication_degrades_health() {
    let _replay = REPLAY.write().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = TestSite::start(SiteOptions { lsn_timeout: Duration::from_millis(200), ..SiteOptions::default() }).await;

    admin.pause_replay().await;
    let (_, body) = site.post("/executed_obs_units/start", json!({"obs_unit_id": reference.obs_unit})).await;
    let transaction = body["transaction_id"].as_str().unwrap().to_owned();
    site.wait_transaction(&transaction, &["applied"]).await;
    let health = eventually("health to report the overdue transaction", || async {
        let (_, health) = site.get("/health").await;
        (health["replication"]["overdue"] == true).then_some(health)
    })
    .await;
    admin.resume_replay().await;

    assert_eq!(health["status"], "degraded");
    assert_eq!(health["buffer"]["applied_waiting_replication"], 1);
    assert!(health["replication"]["lag_seconds"].as_f64().unwrap() >= 0.2, "{health}");
    assert!(health["replication"]["lag_bytes"].as_u64().unwrap() > 0, "{health}");
    let (_, record) = site.get(&format!("/records/executed_obs_unit/{}", body["id"].as_str().unwrap())).await;
    assert_eq!(record["obs_unit_id"], reference.obs_unit, "the overlay stays visible while replication is late");

    site.wait_drained().await;
    eventually("health to clear", || async {
        let (_, health) = site.get("/health").await;
        (health["replication"]["overdue"] == false).then_some(())
    })
    .await;
    site.stop().await;
}

#[tokio::test]
async fn sigterm_releases_the_lease_and_exits() {
    let _replay = REPLAY.read().await;
    admin().await;
    let site_name = format!("sigterm-{}", free_port());
    let mut child = tokio::process::Command::new(opsbuffer_binary())
        .arg("serve")
        .env("SITE_NAME", &site_name)
        .env("API_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("AUTH_REQUIRED", "false")
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn opsbuffer serve");
    let buffer = Buffer::new(&BufferSettings {
        url: opsbuffer_tests::redis_url(),
        site: site_name.clone(),
        timeout: Duration::from_secs(2),
        retention: Duration::from_secs(60),
    })
    .unwrap();
    eventually("the child to take the drainer lease", || async { buffer.current_lease().await.ok().flatten() }).await;

    let pid = child.id().expect("child pid").to_string();
    let status = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait()).await.expect("exits after SIGTERM").unwrap();
    assert!(exit.success(), "exit status {exit}");
    assert_eq!(buffer.current_lease().await.unwrap(), None, "the lease was released, not left to expire");
}
