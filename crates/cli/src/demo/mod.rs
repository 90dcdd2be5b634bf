//! `opsbuffer demo`: replays an observing night against a site API that the
//! demo starts itself. Main is unreachable for the second third of the
//! night and replica replay is paused for the last third. At the end the
//! demo checks that the replica contains exactly every acknowledged record.
//!
//! The demo runs a fault proxy in front of main and `opsbuffer serve` as a
//! child process that reaches main through the proxy. Reference data goes
//! straight to main; everything an instrument script writes goes through
//! the HTTP API.

mod api;
mod checks;
mod example;
mod input;
mod input_set;
mod night;
mod reference;
mod report;
mod services;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use opsbuffer_engine::SiteType;
use opsbuffer_engine::config::redact_url;
use opsbuffer_proxy::FaultProxy;

use self::api::{Api, Health, View};
use self::input_set::InputSet;
use self::night::{NightContext, NightLog};
use self::reference::{Reference, ReferenceInput};
use self::report::{Check, ViewCounts};
use self::services::ApiProcess;
use crate::settings::Connections;

/// Maximum wait within a phase: after phase 1 for its writes to reach
/// the replica, in phase 3 for the drainer to apply the buffer on main.
const PHASE_WAIT: Duration = Duration::from_secs(60);
/// How often the drain wait prints the buffer counts.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

fn duration(text: &str) -> Result<Duration, String> {
    opsbuffer_engine::config::parse_duration(text)
}

/// Arguments of `opsbuffer demo`. The API it starts always runs as a
/// secondary site named `demo-<unix time>`, so `--site-name` is not used.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// A schedule in the TOAST ground-schedule format; one executed obs unit per row.
    #[arg(long, required_unless_present = "write_example")]
    pub schedule: Option<PathBuf>,

    /// A source list CSV (name,RA,DEC,width,height,priority,velocity,scan_type); one obs unit per row.
    #[arg(long)]
    pub sources: Option<PathBuf>,

    /// An instrument YAML with centerFrequency (Hz), wavelength (µm) and spatialPixels; one instrument module per band. Without it the instrument gets one module named `all`.
    #[arg(long)]
    pub instrument: Option<PathBuf>,

    /// A YAML list of toast_ground_schedule arguments; the schedule is checked against its elevation window and maximum scan length.
    #[arg(long)]
    pub params: Option<PathBuf>,

    /// A JSON object whose forwarded_keys lists the allowed obs_unit.scan_params keys. Without it scan_params stay empty.
    #[arg(long)]
    pub scan_params: Option<PathBuf>,

    /// Write a small synthetic input set into DIR and exit.
    #[arg(long, value_name = "DIR")]
    pub write_example: Option<PathBuf>,

    /// Name of the instrument that gets the modules; created on main when missing.
    #[arg(long, default_value = "Prime-Cam")]
    pub instrument_name: String,

    /// Superuser URL of main, used to create the reference data.
    #[arg(long, env = "MAIN_ADMIN_URL", default_value = "postgres://postgres@127.0.0.1:54320/opsbuffer")]
    pub main_admin_url: String,

    /// Superuser URL of the replica, used to pause and resume WAL replay and to read the run's rows.
    #[arg(long, env = "LOCAL_ADMIN_URL", default_value = "postgres://postgres@127.0.0.1:54321/opsbuffer")]
    pub local_admin_url: String,

    /// Folder for the log file of the API the demo starts.
    #[arg(long, default_value = "target/demo")]
    pub log_dir: PathBuf,

    /// Maximum wait at the end of the night for the buffer to drain and the replica to catch up (seconds, or with a unit: 90s, 5m).
    #[arg(long, default_value = "5m", value_parser = duration)]
    pub drain_timeout: Duration,

    #[command(flatten)]
    pub connections: Connections,
}

/// Runs the demo; returns an error when any check fails.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.write_example {
        return write_example(dir);
    }
    if args.connections.site_type != SiteType::Secondary {
        bail!("the demo needs a secondary site; leave SITE_TYPE unset or set it to secondary");
    }
    let inputs = InputSet::load(&args)?;
    inputs.print_summary();
    if inputs.schedule.scans.len() < 3 {
        bail!("the schedule has {} scans; the demo needs at least 3, one per phase", inputs.schedule.scans.len());
    }

    let run_id = chrono::Utc::now().timestamp();
    let site_name = format!("demo-{run_id}");
    let program = format!("{}-demo-{run_id}", inputs.schedule.site.telescope.to_lowercase());
    println!();
    println!("Run {site_name}: observing program {program}");

    let mut main_admin = services::connect_db(&args.main_admin_url, "main (superuser)").await?;
    let local_admin = services::connect_db(&args.local_admin_url, "replica (superuser)").await?;

    let proxy = services::start_proxy(&args.connections.main_db_url).await?;
    let proxied_main = services::url_through(&args.connections.main_db_url, proxy.address())?;
    println!("Fault proxy on {} in front of main ({})", proxy.address(), redact_url(&args.connections.main_db_url));
    let mut process = ApiProcess::spawn(&args.connections, &proxied_main, &site_name, &args.log_dir)?;
    println!("Site API at {} (log: {})", process.base_url, process.log_path.display());
    let api = Api::new(&process.base_url)?;
    let mut stack = Stack { proxy, process: None, local_admin, replay_paused_by_demo: false };
    let outcome = match process.wait_ready(&api).await {
        Ok(()) => {
            stack.process = Some(process);
            let work = async {
                let reference = create_reference(&mut main_admin, &stack.local_admin, &inputs, &args, &program).await?;
                replay_night(&api, &main_admin, &mut stack, &inputs, &reference, &site_name, &args).await
            };
            tokio::select! {
                result = work => result,
                _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            }
        }
        Err(error) => {
            let _ = process.stop().await;
            Err(error)
        }
    };
    stack.shut_down().await;

    let outcome = outcome?;
    println!();
    println!("== Checks");
    let failed = report::print_checks(&outcome.checks);
    println!();
    print_summary(&outcome, &site_name);
    if failed > 0 {
        bail!("{failed} of {} checks failed", outcome.checks.len());
    }
    println!("All {} checks passed.", outcome.checks.len());
    Ok(())
}

fn write_example(dir: &Path) -> anyhow::Result<()> {
    let paths = example::write(dir)?;
    println!("Wrote a synthetic example input set:");
    for path in paths {
        println!("  {}", path.display());
    }
    Ok(())
}

/// Processes and settings the demo started or changed, so that every exit
/// can undo them.
struct Stack {
    proxy: FaultProxy,
    process: Option<ApiProcess>,
    local_admin: tokio_postgres::Client,
    replay_paused_by_demo: bool,
}

impl Stack {
    async fn pause_replay(&mut self) -> anyhow::Result<()> {
        self.replay_paused_by_demo = true;
        services::set_replay_paused(&self.local_admin, true).await
    }

    async fn resume_replay(&mut self) -> anyhow::Result<()> {
        services::set_replay_paused(&self.local_admin, false).await?;
        self.replay_paused_by_demo = false;
        Ok(())
    }

    /// Resumes replay if the demo paused it, lets connections through the
    /// proxy again and stops the API. Problems are printed, not returned,
    /// so they do not hide the error that ended the run.
    async fn shut_down(&mut self) {
        if self.replay_paused_by_demo
            && let Err(error) = self.resume_replay().await
        {
            println!(
                "WARNING: cannot resume WAL replay on the replica: {error:#}. Run `scripts/services.sh resume-replay`."
            );
        }
        self.proxy.come_up();
        if let Some(process) = self.process.take() {
            let log = process.log_path.clone();
            match process.stop().await {
                Ok(()) => println!("Stopped the site API (log: {}).", log.display()),
                Err(error) => println!("WARNING: stopping the site API: {error:#}"),
            }
        }
    }
}

/// Creates the run's reference data on main, prints the keys main
/// assigned, and waits until the replica shows them.
async fn create_reference(
    main_admin: &mut tokio_postgres::Client,
    local_admin: &tokio_postgres::Client,
    inputs: &InputSet,
    args: &DemoArgs,
    program: &str,
) -> anyhow::Result<Reference> {
    println!();
    println!("== Reference data on main");
    let reference = reference::create(
        main_admin,
        &ReferenceInput {
            program_short_name: program,
            instrument_name: &args.instrument_name,
            schedule: &inputs.schedule,
            sources: &inputs.sources,
            bands: &inputs.bands,
            params: inputs.params.as_ref(),
            scan_param_keys: inputs.scan_param_keys.as_ref(),
        },
    )
    .await?;

    let modules: Vec<String> = reference.modules.iter().map(|m| format!("{} (id {})", m.name, m.id)).collect();
    println!(
        "observing program id {}; instrument {} id {} with modules {}",
        reference.program_id,
        args.instrument_name,
        reference.instrument_id,
        modules.join(", ")
    );
    for ((patch, pass), id) in &reference.pass_units {
        println!("obs unit {id}: {patch} pass {pass} (constant_el)");
    }
    if !reference.source_units.is_empty() {
        println!(
            "obs units {}: one per source",
            reference.source_units.iter().map(i32::to_string).collect::<Vec<_>>().join(", ")
        );
    }
    if !reference.rejected_keys.is_empty() {
        let keys: Vec<&str> = reference.rejected_keys.iter().map(String::as_str).collect();
        println!("note: scan_params left out keys that the allowed list lacks: {}", keys.join(", "));
    }

    let waited = reference::wait_for_replica(local_admin, &reference).await?;
    println!("the replica shows the reference data after {:.1} s", waited.as_secs_f64());
    Ok(reference)
}

/// Timings and results of the night.
struct Outcome {
    log: NightLog,
    checks: Vec<Check>,
    phase_times: Vec<Duration>,
    drain_time: Duration,
    final_counts: ViewCounts,
}

/// Scan index ranges of the three phases: the first, second and last third.
fn phase_ranges(count: usize) -> [std::ops::Range<usize>; 3] {
    let first = count / 3;
    let second = 2 * count / 3;
    [0..first, first..second, second..count]
}

async fn replay_night(
    api: &Api,
    main_admin: &tokio_postgres::Client,
    stack: &mut Stack,
    inputs: &InputSet,
    reference: &Reference,
    site_name: &str,
    args: &DemoArgs,
) -> anyhow::Result<Outcome> {
    let scans = &inputs.schedule.scans;
    let ctx = NightContext {
        api,
        data_root: site_name.to_owned(),
        modules: &reference.modules,
        pass_units: &reference.pass_units,
        truncated_lines: night::truncated_lines(&inputs.schedule),
        total_scans: scans.len(),
    };
    let obs_units = reference.pass_unit_ids();
    let mut log = NightLog::default();
    let mut checks = Vec::new();
    let mut phase_times = Vec::new();
    let ranges = phase_ranges(scans.len());
    let titles = [
        "normal operation",
        "main unreachable, the fault proxy refuses connections",
        "main reachable again, replica replay paused",
    ];

    let mut merged_at_end_of_night = None;
    for (index, range) in ranges.iter().enumerate() {
        let phase = index + 1;
        println!();
        println!("== Phase {phase} of 3, scans {} to {}: {}", range.start + 1, range.end, titles[index]);
        match phase {
            2 => {
                stack.proxy.go_down();
                println!("main is now unreachable through the proxy");
            }
            3 => {
                stack.pause_replay().await?;
                stack.proxy.come_up();
                println!("replay paused on the replica; main is reachable again");
            }
            _ => {}
        }

        let started = Instant::now();
        for number in range.clone() {
            let unit = night::replay_scan(&ctx, &scans[number], number + 1, phase).await?;
            log.units.push(unit);
        }
        phase_times.push(started.elapsed());

        match phase {
            1 => {
                println!("waiting for phase 1 to reach main and the replica");
                let drained = wait_for_buffer(api, PHASE_WAIT, Until::Empty).await?;
                if !drained.reached {
                    println!("note: the buffer did not drain within {PHASE_WAIT:?}");
                }
            }
            3 => {
                println!("waiting for the drainer to apply the buffered writes on main");
                let applied = wait_for_buffer(api, PHASE_WAIT, Until::Applied).await?;
                if !applied.reached {
                    println!("note: the drainer did not apply every write within {PHASE_WAIT:?}");
                }
            }
            _ => {}
        }

        let on_main = report::database_counts(main_admin, &obs_units).await?;
        let replica = report::read_counts(api, &obs_units, View::Replica).await?;
        let merged = report::read_counts(api, &obs_units, View::Merged).await?;
        let health = api.health().await?;
        println!("after phase {phase}:");
        report::print_views(&on_main, &replica, &merged, &health);
        checks.extend(checks::phase_checks(phase, &log, &replica, &merged, &health));

        if phase == 3 {
            // The merged view at the end of the night, before anything
            // drains: the final checksum compares the replica with it.
            merged_at_end_of_night = Some(report::api_rows(api, &obs_units, View::Merged).await?);
        }
    }

    println!();
    println!("== End of the night: replay resumed, waiting for the buffer to drain");
    stack.resume_replay().await?;
    stack.proxy.come_up();
    let drain = wait_for_buffer(api, args.drain_timeout, Until::Empty).await?;
    let drain_time = drain.waited;
    let health = drain.health;
    checks.push(Check::new(
        format!("the buffer drained within {} s", args.drain_timeout.as_secs_f64()),
        drain.reached,
        format!("after {:.1} s: {}", drain_time.as_secs_f64(), report::describe_buffer(&health.buffer)),
    ));

    let final_counts = report::read_counts(api, &obs_units, View::Replica).await?;
    let merged_rows = merged_at_end_of_night.context("phase 3 did not run")?;
    checks.extend(checks::final_checks(api, &stack.local_admin, &log, &obs_units, &merged_rows, &health).await?);
    Ok(Outcome { log, checks, phase_times, drain_time, final_counts })
}

/// The buffer state at which a wait ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    /// Every transaction applied on main; replication may still lag.
    Applied,
    /// Every transaction applied and replayed on the replica.
    Empty,
}

/// The result of a wait on the buffer.
struct BufferWait {
    reached: bool,
    waited: Duration,
    /// The last health report read.
    health: Health,
}

/// Polls `/health` until the buffer reaches `until`, a transaction is
/// dead-lettered, or `limit` passes, printing the counts every few seconds.
async fn wait_for_buffer(api: &Api, limit: Duration, until: Until) -> anyhow::Result<BufferWait> {
    let started = Instant::now();
    let mut last_print = Instant::now();
    loop {
        let health = api.health().await?;
        let buffer = health.buffer;
        let reached = match until {
            Until::Applied => buffer.queued == 0 && buffer.blocked == 0 && buffer.dead == 0,
            Until::Empty => buffer.is_empty(),
        };
        let waited = started.elapsed();
        if reached {
            println!("  {:>5.1} s: done; {}", waited.as_secs_f64(), report::describe_buffer(&buffer));
            return Ok(BufferWait { reached, waited, health });
        }
        if buffer.dead > 0 {
            println!("  {} transaction(s) were dead-lettered; see GET /buffer/dead", buffer.dead);
            return Ok(BufferWait { reached, waited, health });
        }
        if waited > limit {
            println!("  {:>5.1} s: gave up; {}", waited.as_secs_f64(), report::describe_buffer(&buffer));
            return Ok(BufferWait { reached, waited, health });
        }
        if last_print.elapsed() >= PROGRESS_INTERVAL {
            println!("  {:>5.1} s: {}", waited.as_secs_f64(), report::describe_buffer(&buffer));
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn print_summary(outcome: &Outcome, site_name: &str) {
    let log = &outcome.log;
    println!("== Summary of run {site_name}");
    for (index, time) in outcome.phase_times.iter().enumerate() {
        let phase = index + 1;
        let mut latencies: Vec<Duration> =
            log.units.iter().filter(|u| u.phase == phase).flat_map(|u| u.latencies.iter().copied()).collect();
        latencies.sort();
        let scans = log.units.iter().filter(|u| u.phase == phase).count();
        let median = latencies.get(latencies.len() / 2).copied().unwrap_or_default();
        let max = latencies.last().copied().unwrap_or_default();
        println!(
            "phase {phase}: {scans} scans, {} writes in {:.2} s; acknowledgement median {:.1} ms, max {:.1} ms",
            latencies.len(),
            time.as_secs_f64(),
            median.as_secs_f64() * 1000.0,
            max.as_secs_f64() * 1000.0
        );
    }
    println!("drain and replication after the night: {:.1} s", outcome.drain_time.as_secs_f64());
    let counts = &outcome.final_counts;
    println!(
        "the replica holds {} executed obs units, {} raw data files and {} raw data packages of this run",
        counts.units(),
        counts.files,
        counts.packages()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_split_in_thirds() {
        assert_eq!(phase_ranges(15), [0..5, 5..10, 10..15]);
        assert_eq!(phase_ranges(6), [0..2, 2..4, 4..6]);
        assert_eq!(phase_ranges(7), [0..2, 2..4, 4..7]);
        assert_eq!(phase_ranges(3), [0..1, 1..2, 2..3]);
    }
}
