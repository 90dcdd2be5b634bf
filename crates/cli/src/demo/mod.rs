//! `opsbuffer demo`: replays an observing night against a running copy of
//! the site API. To be written.

use clap::Args;

use crate::settings::Connections;

/// Arguments of `opsbuffer demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// A schedule in the TOAST ground-schedule format.
    #[arg(long)]
    pub schedule: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub connections: Connections,
}

/// Runs the demo; returns an error when any check fails.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("the demo is not written yet")
}
