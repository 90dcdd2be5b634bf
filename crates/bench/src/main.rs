//! `opsbuffer-load`: the load generator of opsbuffer.
//!
//! It starts the service under test as a child process for each scenario
//! (a new `SITE_NAME` each time, main reached through an in-process fault
//! proxy), drives it over HTTP on loopback and prints the results as
//! Markdown table rows. Only services on loopback are used: the PostgreSQL
//! main and replica and the Redis of `scripts/services.sh`.
//!
//! On exit, also after an error or Ctrl-C, it stops the services it
//! started, removes their Redis keys and resumes replay on the replica if
//! it paused it.

mod api;
mod config;
mod db;
mod measure;
mod redis_probe;
mod report;
mod scenarios;
mod service;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};

use crate::config::{Settings, Sizes, Urls};
use crate::db::Databases;
use crate::redis_probe::RedisProbe;
use crate::report::{Report, load_average};
use crate::scenarios::Context;
use crate::service::{LIVE_SITES, Main};

/// Maximum duration of `opsbuffer migrate`.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Parser)]
#[command(
    name = "opsbuffer-load",
    about = "Measures opsbuffer: starts `opsbuffer serve` as a child process on loopback and prints Markdown table rows.",
    after_help = "The service URLs come from MAIN_DB_URL, LOCAL_DB_URL, REDIS_URL, MAIN_ADMIN_URL and LOCAL_ADMIN_URL \
                  (defaults: the services of scripts/services.sh); each must be on loopback. The child inherits the \
                  environment, so service settings such as DRAIN_BATCH_SIZE or LSN_CHECK_INTERVAL apply to it."
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,

    /// The opsbuffer executable to measure.
    #[arg(long, global = true, default_value = "target/release/opsbuffer")]
    binary: PathBuf,

    /// Run every scenario with small sizes, in a few seconds each, to check that the harness works.
    #[arg(long, global = true)]
    smoke: bool,

    /// Also write the results to this file as JSON.
    #[arg(long, global = true)]
    json: Option<PathBuf>,

    /// Folder for the log files of the services started.
    #[arg(long, global = true, default_value = "target/bench")]
    log_dir: PathBuf,

    /// Text printed in the heading of the results, such as `baseline`.
    #[arg(long, global = true)]
    label: Option<String>,

    /// Maximum duration of one measurement, in seconds; a measurement that reaches it stops with fewer samples and notes that.
    #[arg(long, global = true)]
    max_seconds: Option<u64>,

    /// Concurrent clients of the many-client write runs.
    #[arg(long, global = true)]
    clients: Option<usize>,

    /// Requests per merged-search and get-by-id measurement.
    #[arg(long, global = true)]
    samples: Option<usize>,

    /// Single-record transactions buffered before each drain.
    #[arg(long, global = true)]
    drain_transactions: Option<usize>,

    /// Whether main is reachable during the write scenario.
    #[arg(long, global = true, value_enum, default_value_t = MainChoice::Both)]
    main: MainChoice,

    /// Maximum wait, in seconds, for a running test suite or demo to finish before each scenario. After it the eviction scenario is skipped and the others run with a warning.
    #[arg(long, global = true, default_value_t = 600)]
    wait_for_tests: u64,

    /// Do not run `opsbuffer migrate` against main first.
    #[arg(long, global = true)]
    skip_migrate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
enum Scenario {
    /// Buffered writes: single create, bulk of 100 files, finish; 1 and 32 clients.
    Writes,
    /// Merged search at 0 to 100 000 overlays, the same on local alone, and get by id.
    Search,
    /// Drain throughput with 0, 50 and 200 ms of one-way latency added to main.
    Drain,
    /// Delay from local replaying a commit to the service evicting its overlays.
    Eviction,
    /// Redis memory per buffered record and the service's resident memory.
    Memory,
    /// Every scenario in turn.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MainChoice {
    Down,
    Up,
    Both,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("load: error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(supervise(cli));
    runtime.shutdown_timeout(Duration::from_secs(5));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("load: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the scenarios in a task, so a panic or Ctrl-C still reaches the
/// clean-up below.
async fn supervise(cli: Cli) -> anyhow::Result<()> {
    let urls = Urls::from_env()?;
    let mut work = tokio::spawn(run(cli, urls.clone()));
    let outcome = tokio::select! {
        joined = &mut work => match joined {
            Ok(result) => result,
            Err(error) => Err(anyhow!("the run failed: {error}")),
        },
        signal = interrupted() => {
            work.abort();
            let _ = work.await;
            Err(anyhow!("interrupted by {signal}"))
        }
    };
    clean_up(&urls).await;
    outcome
}

async fn interrupted() -> &'static str {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(error) => {
            eprintln!("load: cannot listen for SIGTERM: {error}");
            let _ = tokio::signal::ctrl_c().await;
            return "Ctrl-C";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = terminate.recv() => "SIGTERM",
    }
}

/// Resumes replay if this process paused it and removes the Redis keys of
/// sites that were not stopped cleanly. Their services were killed when
/// their handles were dropped.
async fn clean_up(urls: &Urls) {
    db::resume_replay_if_paused(&urls.local_admin).await;
    let sites = LIVE_SITES.lock().expect("site list lock").clone();
    if sites.is_empty() {
        return;
    }
    // Give the killed services a moment to be gone before their keys are removed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    match RedisProbe::connect(&urls.redis).await {
        Ok(redis) => {
            for site in sites {
                eprintln!("load: removing the Redis keys of site {site}");
                if let Err(error) = service::remove_site(&redis, &site).await {
                    eprintln!("load: error: {error:#}");
                }
            }
        }
        Err(error) => eprintln!("load: error: cannot remove the Redis keys of {sites:?}: {error:#}"),
    }
}

async fn run(cli: Cli, urls: Urls) -> anyhow::Result<()> {
    if !cli.binary.is_file() {
        bail!(
            "{} does not exist; build it with cargo build --release -p opsbuffer or pass --binary",
            cli.binary.display()
        );
    }
    let mut sizes = if cli.smoke { Sizes::smoke() } else { Sizes::full() };
    if let Some(seconds) = cli.max_seconds {
        sizes.max_measurement = Duration::from_secs(seconds);
    }
    if let Some(clients) = cli.clients {
        sizes.clients = clients.max(1);
    }
    if let Some(samples) = cli.samples {
        sizes.search_samples = samples.max(1);
        sizes.get_samples = samples.max(1);
    }
    if let Some(count) = cli.drain_transactions {
        sizes.drain_transactions = count.max(1);
    }
    let run_tag = uuid::Uuid::now_v7().simple().to_string()[24..].to_owned();
    let settings = Settings {
        urls,
        binary: cli.binary.clone(),
        log_dir: cli.log_dir.clone(),
        run_tag,
        sizes,
        wait_for_tests: Duration::from_secs(cli.wait_for_tests),
    };

    let header = run_header(&cli, &settings);
    print_header(&header);
    if !cli.skip_migrate
        && let Err(error) = migrate(&settings).await
    {
        // A database migrated by a newer build has migrations an older
        // binary does not know, and refinery then refuses to run. The
        // schema is still usable when migrations only add, so go on; a
        // missing table or column fails the first request, which reports it.
        eprintln!("load: warning: {error:#}; going on with the schema main has");
    }

    let databases = Databases {
        main_admin: db::connect(&settings.urls.main_admin, "main (superuser)").await?,
        local: db::connect(&settings.urls.local, "the replica").await?,
        local_admin: db::connect(&settings.urls.local_admin, "the replica (superuser)").await?,
    };
    let redis = RedisProbe::connect(&settings.urls.redis).await?;
    let reference = db::create_reference(&databases, &settings.run_tag).await?;
    let context = Context { settings, databases, redis, reference };
    let mut report = Report::new(cli.json.clone());

    let states: &[Main] = match cli.main {
        MainChoice::Down => &[Main::Down],
        MainChoice::Up => &[Main::Up],
        MainChoice::Both => &[Main::Down, Main::Up],
    };
    let selected = |scenario: Scenario| cli.scenario == Scenario::All || cli.scenario == scenario;
    if selected(Scenario::Writes) {
        before_scenario(&context).await;
        scenarios::writes::run(&context, &mut report, states).await?;
    }
    if selected(Scenario::Search) {
        before_scenario(&context).await;
        scenarios::search::run(&context, &mut report).await?;
    }
    if selected(Scenario::Drain) {
        before_scenario(&context).await;
        scenarios::drain::run(&context, &mut report).await?;
    }
    if selected(Scenario::Eviction) {
        scenarios::eviction::run(&context, &mut report).await?;
    }
    if selected(Scenario::Memory) {
        before_scenario(&context).await;
        scenarios::memory::run(&context, &mut report).await?;
    }

    println!("\nLoad average at the end: {}", load_average());
    report.write_json(&header)
}

/// Waits for a running test suite or demo to finish, and goes on with a
/// warning in the output when it does not finish in time.
async fn before_scenario(context: &Context) {
    if !db::wait_for_test_suite(context.settings.wait_for_tests).await {
        println!("\n> Warning: the test suite or the demo ran during the next scenario, so its figures are disturbed.");
    }
}

/// Applies the binary's own migrations to main, directly (not through a
/// proxy), so the schema matches the binary under test.
async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    eprintln!("load: applying migrations with {} migrate", settings.binary.display());
    let output = tokio::process::Command::new(&settings.binary)
        .arg("migrate")
        .env("MAIN_DB_URL", &settings.urls.main)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(MIGRATE_TIMEOUT, output)
        .await
        .map_err(|_| anyhow!("opsbuffer migrate timed out after {MIGRATE_TIMEOUT:?}"))?
        .context("cannot run opsbuffer migrate")?;
    if !output.status.success() {
        bail!(
            "opsbuffer migrate failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Describes what is measured, where and how, for the heading and the JSON file.
fn run_header(cli: &Cli, settings: &Settings) -> Map<String, Value> {
    let (cores, model) = cpu_info();
    let header = json!({
        "label": cli.label,
        "scenario": format!("{:?}", cli.scenario).to_lowercase(),
        "mode": if cli.smoke { "smoke" } else { "full" },
        "binary": settings.binary.display().to_string(),
        "binary_modified": modified_time(&settings.binary),
        "cores": cores,
        "cpu": model,
        "memory_total_bytes": memory_total(),
        "load_average_at_start": load_average(),
        "started_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "run_tag": settings.run_tag,
    });
    header.as_object().cloned().unwrap_or_default()
}

fn print_header(header: &Map<String, Value>) {
    let text = |name: &str| match header.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "–".to_owned(),
        Some(other) => other.to_string(),
    };
    let memory = header.get("memory_total_bytes").and_then(Value::as_u64).unwrap_or(0);
    println!("## opsbuffer-load {} ({})", text("scenario"), text("mode"));
    println!();
    if header.get("label").is_some_and(|l| !l.is_null()) {
        println!("- label: {}", text("label"));
    }
    println!("- binary: {} (modified {})", text("binary"), text("binary_modified"));
    println!("- machine: {} cores ({}), {} memory", text("cores"), text("cpu"), report::format_bytes(memory as f64));
    println!("- load average at the start: {}", text("load_average_at_start"));
    println!("- started: {}; site names start with bench-{}", text("started_at"), text("run_tag"));
}

/// Returns the number of logical CPUs and the model name from `/proc/cpuinfo`.
fn cpu_info() -> (usize, String) {
    let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("model name").map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    (cores, model)
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn memory_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.trim_start_matches("MemTotal:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

fn modified_time(path: &Path) -> Option<String> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
    let time: chrono::DateTime<chrono::Utc> = modified.into();
    Some(time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}
