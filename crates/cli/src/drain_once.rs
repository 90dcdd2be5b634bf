//! `opsbuffer drain --once`: drains the queue in this process and exits.
//!
//! It takes the drainer lease like `opsbuffer serve` does, so it never
//! drains beside another drainer. When another process holds the lease it
//! stops with a message, or with `--wait` waits until the lease is free.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use opsbuffer_engine::drain::{DrainOnce, Drainer};
use opsbuffer_engine::{Engine, watch};

use crate::settings::ServiceSettings;

fn duration(text: &str) -> Result<Duration, String> {
    opsbuffer_engine::config::parse_duration(text)
}

/// Arguments of `opsbuffer drain`.
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// Drain until the queue is empty, then exit (the only mode; a continuous drainer runs inside `opsbuffer serve`).
    #[arg(long, required = true)]
    pub once: bool,

    /// When another process holds the drainer lease, wait for it instead of failing.
    #[arg(long)]
    pub wait: bool,

    /// Give up after this long, waiting for the lease included (seconds, or with a unit: 90s, 10m).
    #[arg(long, default_value = "10m", value_parser = duration)]
    pub timeout: Duration,

    #[command(flatten)]
    pub settings: ServiceSettings,
}

/// How often `--wait` looks at the lease again.
const LEASE_POLL: Duration = Duration::from_secs(1);

pub async fn run(args: DrainArgs) -> anyhow::Result<()> {
    let deadline = Instant::now() + args.timeout;
    let engine = Engine::start(args.settings.site_config()).await.context("start-up failed")?;
    if !engine.is_secondary() {
        bail!("a main site writes through to main and has no queue to drain");
    }
    let queued = engine.buffer.stats().await.context("cannot read the queue from Redis")?.queued;
    let progress = Progress::new(queued);
    let mut drainer = Drainer::new(engine.clone());
    let outcome = loop {
        let outcome = drainer.drain_once(deadline, |applied, dead| progress.update(applied, dead)).await;
        match outcome {
            DrainOnce::LeaseHeld { holder } if args.wait && Instant::now() + LEASE_POLL < deadline => {
                progress.message(&format!(
                    "waiting for the drainer lease, held by {}",
                    holder.as_deref().unwrap_or("another process")
                ));
                tokio::time::sleep(LEASE_POLL).await;
            }
            other => break other,
        }
    };
    progress.finish();

    match outcome {
        DrainOnce::Drained { applied, dead_lettered } => {
            // Evict what local already replays, so `status` shows it.
            watch::check_once(&engine, &mut watch::LogState::default()).await;
            let stats = engine.buffer.stats().await?;
            println!(
                "drained: {applied} transaction(s) applied, {dead_lettered} dead-lettered; {} blocked, {} waiting for replication, {} dead letter(s) in the buffer",
                stats.blocked, stats.applied_waiting_replication, stats.dead
            );
            Ok(())
        }
        DrainOnce::LeaseHeld { holder } if args.wait => bail!(
            "the drainer lease was still held by {} when --timeout ({:?}) ran out; stop that process or give a longer --timeout",
            holder.as_deref().unwrap_or("another process"),
            args.timeout
        ),
        DrainOnce::LeaseHeld { holder } => bail!(
            "the drainer lease is held by {}, which is draining this site; stop it or run again with --wait",
            holder.as_deref().unwrap_or("another process")
        ),
        DrainOnce::LeaseLost { applied, .. } => {
            bail!("lost the drainer lease to another process after applying {applied} transaction(s)")
        }
        DrainOnce::TimedOut { applied, queued, .. } => bail!(
            "timed out after {:?} with {queued} transaction(s) still queued ({applied} applied); check main's reachability with `opsbuffer status`",
            args.timeout
        ),
    }
}

/// A progress bar on a terminal, one line per step elsewhere.
struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    /// The counts last printed, so plain output prints only changes.
    printed: std::cell::Cell<(u64, u64)>,
}

impl Progress {
    fn new(total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            if let Ok(style) =
                ProgressStyle::with_template("{bar:40} {pos}/{len} transactions applied ({per_sec}, eta {eta}) {msg}")
            {
                bar.set_style(style);
            }
            bar
        });
        if bar.is_none() {
            eprintln!("draining {total} queued transaction(s)");
        }
        Progress { bar, total, printed: std::cell::Cell::new((0, 0)) }
    }

    fn update(&self, applied: u64, dead_lettered: u64) {
        match &self.bar {
            Some(bar) => {
                if applied > bar.length().unwrap_or(0) {
                    bar.set_length(applied);
                }
                bar.set_position(applied);
                if dead_lettered > 0 {
                    bar.set_message(format!("{dead_lettered} dead-lettered"));
                }
            }
            None if self.printed.get() != (applied, dead_lettered) => {
                self.printed.set((applied, dead_lettered));
                eprintln!("applied {applied} of {} transaction(s), {dead_lettered} dead-lettered", self.total);
            }
            None => {}
        }
    }

    fn message(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(text.to_owned()),
            None => eprintln!("{text}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
