//! The `opsbuffer` command.

mod demo;
mod operator;
mod serve;
mod settings;

use std::net::SocketAddr;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::settings::{Connections, ServiceSettings};

/// opsbuffer: the site API of an observatory's operations database. Writes
/// are buffered durably in Redis and drained in order to the main database;
/// reads merge the local replica with everything still pending.
#[derive(Debug, Parser)]
#[command(name = "opsbuffer", version)]
struct Cli {
    /// Log format: text for people, json for log collectors.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the site API with its drainer and LSN watcher.
    Serve {
        #[command(flatten)]
        settings: ServiceSettings,

        /// Address to listen on.
        #[arg(long, env = "API_LISTEN", default_value = "127.0.0.1:8000")]
        listen: SocketAddr,
    },
    /// Apply the schema migrations to main (the replica follows by replication).
    Migrate {
        #[command(flatten)]
        connections: Connections,
    },
    /// Replay an observing night from a schedule against the site API, with main unreachable for part of it and replica replay paused for another part, then check that the replica ends with exactly every acknowledged record.
    Demo(demo::DemoArgs),
    /// Inspect, retry or discard dead-lettered transactions.
    Dead {
        #[command(subcommand)]
        command: operator::DeadCommand,
        #[command(flatten)]
        args: operator::OperatorArgs,
    },
    /// Inspect transactions.
    Tx {
        #[command(subcommand)]
        command: TxCommand,
        #[command(flatten)]
        args: operator::OperatorArgs,
    },
}

#[derive(Debug, Subcommand)]
enum TxCommand {
    /// Show a transaction's state, attempts, error and records.
    Show { id: uuid::Uuid },
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("LOG_LEVEL")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Serve { settings, listen } => serve::run(settings, listen).await,
        Command::Migrate { connections } => migrate(connections).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Dead { command, args } => operator::dead(command, args).await,
        Command::Tx { command: TxCommand::Show { id }, args } => operator::show_transaction(id, args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn migrate(connections: Connections) -> anyhow::Result<()> {
    let applied = opsbuffer_pg::migrate::run(&connections.main()).await?;
    if applied.is_empty() {
        println!("main is up to date");
    } else {
        for name in applied {
            println!("applied {name}");
        }
    }
    Ok(())
}
