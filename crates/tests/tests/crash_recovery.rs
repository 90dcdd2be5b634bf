//! Long fault scenarios, built only with the `heavy` feature
//! (`OPSBUFFER_HEAVY_TESTS=1 make test`): the serving process killed with
//! SIGKILL again and again during a drain, and Redis restarted while the
//! buffer holds acknowledged writes. Each runs alone in this test binary
//! because restarting Redis affects every site.
#![cfg(feature = "heavy")]

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opsbuffer_tests::{REPLAY, SiteOptions, TestSite, admin, eventually, opsbuffer_binary, replace_host_port};
use serde_json::json;
use tokio::sync::Mutex;

/// Restarting Redis must not overlap with the kill test's reads.
static ALONE: Mutex<()> = Mutex::const_new(());

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_drain_loses_and_doubles_nothing() {
    let _alone = ALONE.lock().await;
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;

    // The acknowledging site has no drainer; killed child processes drain.
    let writer = Arc::new(TestSite::start(SiteOptions { background: false, ..SiteOptions::default() }).await);
    let count = 3000;
    let mut acknowledged = HashSet::new();
    // One transaction per record, so the drain has many to apply.
    for n in 0..count {
        let step = json!({"op": "create", "table": "executed_obs_unit", "data": {
            "obs_unit_id": reference.obs_unit, "start_time": "2026-10-01T10:40:00Z", "metadata": {"n": n}
        }});
        let (status, body) = writer.post("/transactions", json!({"steps": [step]})).await;
        assert_eq!(status, 201, "{body}");
        acknowledged.insert(body["ids"][0].as_str().unwrap().to_owned());
    }

    // A reader polls the merged view the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (writer, stop, acknowledged) = (writer.clone(), stop.clone(), acknowledged.clone());
        let obs_unit = reference.obs_unit;
        tokio::spawn(async move {
            let mut polls = 0;
            while !stop.load(Ordering::SeqCst) {
                let records =
                    writer.records(&format!("/records/executed_obs_unit?obs_unit_id=eq.{obs_unit}&limit=10000")).await;
                let mut seen: HashMap<String, usize> = HashMap::new();
                for r in &records {
                    *seen.entry(r["id"].as_str().unwrap().to_owned()).or_default() += 1;
                }
                assert!(seen.values().all(|n| *n == 1), "a record appeared twice during the drain");
                let ids: HashSet<String> = seen.into_keys().collect();
                assert_eq!(ids, acknowledged, "the merged view lost or invented a record during the drain");
                polls += 1;
            }
            polls
        })
    };

    // Slow the link a little so the drain lasts through the kills.
    let proxy =
        opsbuffer_proxy::FaultProxy::start(format!("127.0.0.1:{}", main_port()).parse().unwrap()).await.unwrap();
    proxy.set_latency(Duration::from_millis(3));
    let main_url = replace_host_port(&opsbuffer_tests::main_url(), proxy.address());

    let mut kills = 0;
    let mut rounds = 0;
    loop {
        let stats = writer.engine.buffer.stats().await.unwrap();
        if stats.queued == 0 && stats.applied_waiting_replication == 0 {
            break;
        }
        rounds += 1;
        assert!(rounds < 200, "the drain did not finish: {stats:?}");
        let mut child = tokio::process::Command::new(opsbuffer_binary())
            .arg("serve")
            .env("SITE_NAME", &writer.site_name)
            .env("MAIN_DB_URL", &main_url)
            .env("API_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("DRAIN_BATCH_SIZE", "5")
            .env("DRAIN_BATCH_TIMEOUT", "1s")
            .env("DRAINER_LEASE_TTL", "2s")
            .env("DRAIN_RETRY_INITIAL", "20ms")
            .env("LSN_CHECK_INTERVAL", "20ms")
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn opsbuffer serve");

        // Wait until this child drains, then kill it at a random moment.
        let applied_before = stats.queued;
        let drained_some = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let now = writer.engine.buffer.stats().await.unwrap();
                if now.queued < applied_before || now.queued == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        if drained_some.is_ok() && kills < 25 {
            let pause = 10 + (uuid::Uuid::now_v7().as_u128() % 200) as u64;
            tokio::time::sleep(Duration::from_millis(pause)).await;
            child.start_kill().expect("SIGKILL");
            let _ = child.wait().await;
            kills += 1;
        } else {
            // Let the last child finish the drain.
            eventually("the drain to finish", || async {
                let s = writer.engine.buffer.stats().await.unwrap();
                (s.queued == 0 && s.applied_waiting_replication == 0).then_some(())
            })
            .await;
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let polls = reader.await.expect("the reader saw every record exactly once");

    assert!(kills >= 20, "only {kills} kills happened before the drain finished");
    assert!(polls > 10, "the reader polled only {polls} times");
    let rows = admin
        .main
        .query("SELECT id::text FROM executed_obs_unit WHERE obs_unit_id = $1", &[&reference.obs_unit])
        .await
        .unwrap();
    let on_main: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let unique: HashSet<String> = on_main.iter().cloned().collect();
    assert_eq!(on_main.len(), count, "main holds each acknowledged record once");
    assert_eq!(unique, acknowledged, "main holds exactly the acknowledged records");
    let ledger: i64 = admin
        .main
        .query_one("SELECT count(*) FROM opsbuffer_ledger WHERE site_name = $1", &[&writer.site_name])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ledger, count as i64);
    let stats = writer.engine.buffer.stats().await.unwrap();
    assert_eq!((stats.queued, stats.blocked, stats.dead, stats.applied_waiting_replication), (0, 0, 0, 0));
    println!("{count} transactions drained through {kills} SIGKILLs; the reader polled {polls} times");
}

fn main_port() -> u16 {
    let config: tokio_postgres::Config = opsbuffer_tests::main_url().parse().unwrap();
    config.get_ports().first().copied().unwrap_or(5432)
}

#[tokio::test]
async fn redis_restart_keeps_acknowledged_writes() {
    let _alone = ALONE.lock().await;
    let _replay = REPLAY.read().await;
    let admin = admin().await;
    let reference = admin.reference_data().await;
    let site = TestSite::start(SiteOptions::default()).await;
    site.proxy().go_down();
    let mut acknowledged = HashSet::new();
    for _ in 0..200 {
        acknowledged.insert(site.start_unit(reference.obs_unit).await);
    }

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services.sh");
    let status = tokio::process::Command::new("bash").arg(script).arg("restart-redis").status().await.unwrap();
    assert!(status.success(), "scripts/services.sh restart-redis failed");

    let records = eventually("reads after the Redis restart", || async {
        let (status, body) =
            site.get(&format!("/records/executed_obs_unit?obs_unit_id=eq.{}&limit=10000", reference.obs_unit)).await;
        (status == 200).then(|| body["records"].as_array().cloned().unwrap_or_default())
    })
    .await;
    let ids: HashSet<String> = records.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, acknowledged, "every acknowledged write survived the restart");

    site.proxy().come_up();
    site.wait_drained().await;
    let on_main: i64 = admin
        .main
        .query_one("SELECT count(*) FROM executed_obs_unit WHERE obs_unit_id = $1", &[&reference.obs_unit])
        .await
        .unwrap()
        .get(0);
    assert_eq!(on_main, 200);
    site.stop().await;
}
