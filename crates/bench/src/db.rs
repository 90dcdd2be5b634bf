//! Direct database sessions of the load generator: reference data and seed
//! rows on main, the replay LSN of local, and pausing replay on local.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use tokio_postgres::{Client, NoTls};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Maximum duration of one statement of the load generator's own sessions.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Maximum wait for the replica to show seed rows.
const REPLICATION_WAIT: Duration = Duration::from_secs(60);

/// Whether this process paused replay on the replica and has not resumed
/// it yet. The exit path resumes replay while it is set.
pub static REPLAY_PAUSED: AtomicBool = AtomicBool::new(false);

/// Runs `future` under `limit`, naming `what` when it times out.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    future: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(limit, future).await {
        Ok(result) => result,
        Err(_) => bail!("{what} timed out after {limit:?}"),
    }
}

/// Opens a session with connect and statement timeouts.
pub async fn connect(url: &str, label: &str) -> anyhow::Result<Client> {
    let mut config = tokio_postgres::Config::from_str(url).with_context(|| format!("invalid {label} URL"))?;
    config.connect_timeout(CONNECT_TIMEOUT);
    config.options(format!("-c statement_timeout={}", STATEMENT_TIMEOUT.as_millis()));
    config.application_name("opsbuffer-load");
    let (client, connection) = within(CONNECT_TIMEOUT * 2, &format!("connecting to {label}"), async {
        config.connect(NoTls).await.with_context(|| format!("cannot connect to {label}; run scripts/services.sh start"))
    })
    .await?;
    let label = label.to_owned();
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("load: the {label} session ended: {error}");
        }
    });
    Ok(client)
}

/// The database sessions of a run.
pub struct Databases {
    pub main_admin: Client,
    /// The replica, as the service's own user.
    pub local: Client,
    pub local_admin: Client,
}

/// Reference rows that written records point at.
#[derive(Debug, Clone)]
pub struct Reference {
    pub obs_unit: i32,
    pub instrument_module: i32,
}

/// Creates an observing program, an obs unit, an instrument and a module
/// on main, named after `run_tag`, and waits until local has them.
pub async fn create_reference(databases: &Databases, run_tag: &str) -> anyhow::Result<Reference> {
    let main = &databases.main_admin;
    let reference = within(STATEMENT_TIMEOUT, "creating reference data on main", async {
        let program: i32 = main
            .query_one(
                "INSERT INTO observing_program (short_name, title) VALUES ($1, 'opsbuffer-load') RETURNING id",
                &[&format!("bench-{run_tag}")],
            )
            .await
            .context("insert observing_program")?
            .get(0);
        let obs_unit: i32 = main
            .query_one(
                "INSERT INTO obs_unit (observing_program_id, name, target, scan_type) \
                 VALUES ($1, 'bench', 'Jupiter', 'constant_el') RETURNING id",
                &[&program],
            )
            .await
            .context("insert obs_unit")?
            .get(0);
        let instrument: i32 = main
            .query_one(
                "INSERT INTO instrument (name, telescope, kind) VALUES ($1, 'FYST', 'camera') RETURNING id",
                &[&format!("bench-{run_tag}")],
            )
            .await
            .context("insert instrument")?
            .get(0);
        let instrument_module: i32 = main
            .query_one(
                "INSERT INTO instrument_module (instrument_id, name) VALUES ($1, 'f280') RETURNING id",
                &[&instrument],
            )
            .await
            .context("insert instrument_module")?
            .get(0);
        Ok(Reference { obs_unit, instrument_module })
    })
    .await?;

    wait_for_count(
        &databases.local,
        "the instrument module on the replica",
        "SELECT count(*) FROM instrument_module WHERE id = $1::text::int",
        &reference.instrument_module.to_string(),
        1,
    )
    .await?;
    Ok(reference)
}

/// Inserts executed obs units with the given ids on main, then `files`
/// raw data files for each id in `with_files`, and waits until local has
/// every file. Rows go straight to main, so they reach local without the
/// service under test.
pub async fn seed_local(
    databases: &Databases,
    reference: &Reference,
    units: &[String],
    with_files: &[(String, usize)],
    run_tag: &str,
) -> anyhow::Result<()> {
    let main = &databases.main_admin;
    within(STATEMENT_TIMEOUT, "inserting seed rows on main", async {
        main.execute(
            "INSERT INTO executed_obs_unit (id, obs_unit_id, start_time, end_time, status) \
             SELECT id::uuid, $2::int, now() - interval '2 hours', now() - interval '1 hour', 'completed' \
             FROM unnest($1::text[]) AS id",
            &[&units, &reference.obs_unit],
        )
        .await
        .context("insert executed_obs_unit seed rows")?;
        for (unit, count) in with_files {
            main.execute(
                "INSERT INTO raw_data_file \
                 (id, name, relative_path, size_bytes, checksum, executed_obs_unit_id, instrument_module_id) \
                 SELECT gen_random_uuid(), format('rfsoc01_drone2_%s.g3', lpad(i::text, 5, '0')), \
                        format('bench-%s/%s/rfsoc01_drone2_%s.g3', $1::text, $2::text, lpad(i::text, 5, '0')), \
                        1073741824 + i, repeat('9f86d081', 8), $2::text::uuid, $3::int \
                 FROM generate_series(1, $4::int) AS i",
                &[&run_tag, unit, &reference.instrument_module, &(*count as i32)],
            )
            .await
            .context("insert raw_data_file seed rows")?;
        }
        Ok(())
    })
    .await?;

    for (unit, count) in with_files {
        wait_for_count(
            &databases.local,
            "the seed files on the replica",
            "SELECT count(*) FROM raw_data_file WHERE executed_obs_unit_id = $1::text::uuid",
            unit,
            *count as i64,
        )
        .await?;
    }
    Ok(())
}

/// Waits until `count_sql` (one text parameter) returns at least `expected`.
async fn wait_for_count(
    client: &Client,
    what: &str,
    count_sql: &str,
    parameter: &str,
    expected: i64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + REPLICATION_WAIT;
    loop {
        let count: i64 =
            client.query_one(count_sql, &[&parameter]).await.with_context(|| format!("counting {what}"))?.get(0);
        if count >= expected {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what}: {count} of {expected} rows arrived within {REPLICATION_WAIT:?}; is replay paused?");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Ids of up to `limit` raw data files of an executed obs unit on local.
pub async fn local_file_ids(local: &Client, unit: &str, limit: i64) -> anyhow::Result<Vec<String>> {
    let rows = local
        .query(
            "SELECT id::text FROM raw_data_file WHERE executed_obs_unit_id = $1::text::uuid ORDER BY id LIMIT $2",
            &[&unit, &limit],
        )
        .await
        .context("reading seed file ids from local")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Parses a WAL position written as `X/Y` (two hexadecimal halves).
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.split_once('/')?;
    let high = u64::from_str_radix(high, 16).ok()?;
    let low = u64::from_str_radix(low, 16).ok()?;
    (high <= u64::from(u32::MAX) && low <= u64::from(u32::MAX)).then_some((high << 32) | low)
}

/// Local's replay LSN, `pg_last_wal_replay_lsn()`.
pub async fn replay_lsn(local: &Client) -> anyhow::Result<u64> {
    let row = local.query_one("SELECT pg_last_wal_replay_lsn()::text", &[]).await.context("reading the replay LSN")?;
    let text: Option<String> = row.get(0);
    let text = text.ok_or_else(|| anyhow!("local is not a replica: pg_last_wal_replay_lsn() is NULL"))?;
    parse_lsn(&text).ok_or_else(|| anyhow!("invalid replay LSN {text:?}"))
}

/// Pauses or resumes replay on the replica and waits until it reports
/// the new state. `REPLAY_PAUSED` is set before pausing, so an interrupted
/// pause is still resumed at exit.
pub async fn set_replay_paused(local_admin: &Client, paused: bool) -> anyhow::Result<()> {
    let (function, expected) =
        if paused { ("pg_wal_replay_pause", "paused") } else { ("pg_wal_replay_resume", "not paused") };
    if paused {
        REPLAY_PAUSED.store(true, Ordering::SeqCst);
    }
    within(Duration::from_secs(30), function, async {
        local_admin
            .execute(&format!("SELECT {function}()"), &[])
            .await
            .with_context(|| format!("{function}() failed"))?;
        loop {
            let row = local_admin.query_one("SELECT pg_get_wal_replay_pause_state()", &[]).await?;
            let state: String = row.get(0);
            if state == expected {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await?;
    if !paused {
        REPLAY_PAUSED.store(false, Ordering::SeqCst);
    }
    Ok(())
}

/// Resumes replay if this process paused it, on a fresh session so it
/// works after the scenario's session failed.
pub async fn resume_replay_if_paused(local_admin_url: &str) {
    if !REPLAY_PAUSED.load(Ordering::SeqCst) {
        return;
    }
    eprintln!("load: resuming replay on the replica");
    let result = async {
        let client = connect(local_admin_url, "the replica (superuser)").await?;
        set_replay_paused(&client, false).await
    }
    .await;
    if let Err(error) = result {
        eprintln!(
            "load: error: could not resume replay on the replica: {error:#}; run scripts/services.sh resume-replay"
        );
    }
}

/// Waits up to `limit` until no test suite or demo runs; returns whether
/// none runs. Both pause replay and restart Redis, which would disturb a
/// measurement, and a measurement that pauses replay would disturb them.
pub async fn wait_for_test_suite(limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut announced = false;
    loop {
        let users = replay_users();
        if users.is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            eprintln!("load: still running after {limit:?}: {}", users.join(", "));
            return false;
        }
        if !announced {
            eprintln!("load: waiting for these to finish: {}", users.join(", "));
            announced = true;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Processes that pause replay themselves or need it running: the test
/// suite and the demo. Read from `/proc/*/cmdline`.
pub fn replay_users() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> =
            raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if is_replay_user(&args) {
            found.push(format!("{pid} {}", args.join(" ")));
        }
    }
    found
}

fn is_replay_user(args: &[String]) -> bool {
    let program = args.first().map(|a| a.rsplit('/').next().unwrap_or(a)).unwrap_or_default();
    let has = |word: &str| args.iter().skip(1).any(|a| a == word);
    let script = |name: &str| args.iter().any(|a| a.ends_with(name));
    (program == "cargo" && (has("test") || has("nextest")))
        || script("scripts/test.sh")
        || script("scripts/demo.sh")
        || (program == "opsbuffer" && has("demo"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_parses_both_halves() {
        assert_eq!(parse_lsn("0/650D7D0"), Some(0x650D7D0));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn("650D7D0"), None);
        assert_eq!(parse_lsn("x/1"), None);
    }

    #[test]
    fn test_suite_counts_as_replay_user() {
        let args = |text: &str| text.split(' ').map(str::to_owned).collect::<Vec<_>>();
        assert!(is_replay_user(&args("/root/.cargo/bin/cargo test --workspace")));
        assert!(is_replay_user(&args("bash scripts/test.sh")));
        assert!(!is_replay_user(&args("cargo build --release")));
        assert!(!is_replay_user(&args("opsbuffer serve")));
    }
}
