//! The `opsbuffer` command.

mod config_check;
mod config_file;
mod demo;
mod drain_once;
mod operator;
mod query;
mod serve;
mod settings;
mod status;
mod text_table;
mod token;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::settings::{Connections, ServiceSettings};

/// opsbuffer: the site API of an observatory's operations database. Writes
/// are buffered durably in Redis and drained in order to the main database;
/// reads merge the local replica with everything still pending.
///
/// Settings come from flags, environment variables and an optional TOML file
/// (--config), in that order of precedence, then the built-in defaults.
#[derive(Debug, Parser)]
#[command(name = "opsbuffer", version)]
struct Cli {
    /// Log format: text for people, json for log collectors.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    /// Log filter in tracing's directive syntax, such as info or opsbuffer_engine=debug,info.
    #[arg(long, env = "LOG_LEVEL", default_value = "info", global = true)]
    log_level: String,

    /// TOML file of settings; keys are the lower-case environment variable names (main_db_url = "..."). Flags and environment variables override it.
    #[arg(long, env = "OPSBUFFER_CONFIG", value_name = "FILE", global = true)]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Arguments of `opsbuffer serve`, which `opsbuffer config check` shares.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub settings: ServiceSettings,

    /// Address to listen on.
    #[arg(long, env = "API_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the site API with its drainer and LSN watcher.
    Serve(ServeArgs),
    /// Apply the schema migrations to main (the replica follows by replication).
    Migrate {
        #[command(flatten)]
        connections: Connections,
    },
    /// Check the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print the health report (main, local, Redis, buffer, replication, drainer) as a table.
    Status(status::StatusArgs),
    /// Drain the queue to main now, in this process.
    Drain(drain_once::DrainArgs),
    /// Print records of the merged view (local with every pending change applied).
    Query(query::QueryArgs),
    /// Create, list or revoke API tokens.
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
        #[command(flatten)]
        args: token::TokenArgs,
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
enum ConfigCommand {
    /// Print the effective configuration with secrets masked and where each value came from, then check that main, local and Redis answer; exits non-zero when a check fails.
    Check {
        #[command(flatten)]
        serve: ServeArgs,

        /// Only print and validate the settings; do not connect.
        #[arg(long)]
        offline: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TxCommand {
    /// Show a transaction's state, attempts, error and records.
    Show {
        /// The transaction id.
        id: uuid::Uuid,
    },
}

fn init_logging(format: LogFormat, level: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(level).map_err(|e| format!("invalid LOG_LEVEL {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

/// Parses the command line, with the configuration file's values as
/// defaults. Returns the parsed command, its matches (for `config check`)
/// and the file.
fn parse_command_line(
    args: Vec<OsString>,
) -> Result<(Cli, clap::ArgMatches, Option<config_file::FileSettings>), clap::Error> {
    let mut command = Cli::command();
    let file = match config_file::config_path(&args) {
        Some(path) => match config_file::load(&path) {
            Ok(file) => Some(file),
            Err(message) => return Err(command.error(clap::error::ErrorKind::InvalidValue, message)),
        },
        None => None,
    };
    if let Some(file) = &file {
        command = match config_file::apply(command, file) {
            Ok(command) => command,
            Err(message) => return Err(Cli::command().error(clap::error::ErrorKind::InvalidValue, message)),
        };
    }
    let matches = command.try_get_matches_from(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    Ok((cli, matches, file))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let (cli, matches, file) = match parse_command_line(std::env::args_os().collect()) {
        Ok(parsed) => parsed,
        Err(error) => error.exit(),
    };
    // One-off commands print their results; their INFO lines would bury
    // them, so they log warnings only unless LOG_LEVEL says otherwise.
    let long_running = matches!(cli.command, Command::Serve(_) | Command::Demo(_));
    let level = match matches.value_source("log_level") {
        Some(clap::parser::ValueSource::DefaultValue) | None
            if !long_running && file.as_ref().is_none_or(|f| !f.values.contains_key("log_level")) =>
        {
            "warn"
        }
        _ => cli.log_level.as_str(),
    };
    if let Err(message) = init_logging(cli.log_format, level) {
        eprintln!("error: {message}");
        return std::process::ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Serve(args) => serve::run(args.settings, args.listen).await,
        Command::Migrate { connections } => migrate(connections).await,
        Command::Config { command: ConfigCommand::Check { serve, offline } } => {
            let config_matches = matches
                .subcommand_matches("config")
                .and_then(|m| m.subcommand_matches("check"))
                .expect("clap parsed config check");
            config_check::run(&serve, config_matches, file.as_ref(), offline).await
        }
        Command::Status(args) => status::run(args).await,
        Command::Drain(args) => drain_once::run(args).await,
        Command::Query(args) => query::run(args).await,
        Command::Token { command, args } => token::run(command, args).await,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with_file(args: &[&str], file: &str) -> ServeArgs {
        let path = std::env::temp_dir().join(format!("opsbuffer-test-{}.toml", uuid::Uuid::now_v7()));
        std::fs::write(&path, file).unwrap();
        let mut argv: Vec<OsString> = vec!["opsbuffer".into(), "--config".into(), path.clone().into()];
        argv.extend(args.iter().map(OsString::from));
        let parsed = parse_command_line(argv);
        std::fs::remove_file(&path).unwrap();
        match parsed.expect("the command line parses").0.command {
            Command::Serve(args) => args,
            other => panic!("expected serve, got {other:?}"),
        }
    }

    #[test]
    fn file_sets_defaults_and_flags_win() {
        let args =
            parse_with_file(&["serve", "--drain-retry-max", "9s"], "drain_retry_max = \"4s\"\nlsn_timeout = 45\n");
        assert_eq!(args.settings.drain_retry_max, std::time::Duration::from_secs(9));
        assert_eq!(args.settings.lsn_timeout, std::time::Duration::from_secs(45));
    }

    #[test]
    fn file_lists_split_like_flags() {
        let args = parse_with_file(&["serve"], "db_schemas = [\"public\", \"ops\"]\nauth_required = false\n");
        assert_eq!(args.settings.connections.db_schemas, vec!["public".to_owned(), "ops".to_owned()]);
        assert!(!args.settings.auth_required);
    }

    #[test]
    fn file_with_unknown_key_is_rejected() {
        let path = std::env::temp_dir().join(format!("opsbuffer-test-{}.toml", uuid::Uuid::now_v7()));
        std::fs::write(&path, "drain_retry_maximum = \"4s\"\n").unwrap();
        let argv: Vec<OsString> = vec!["opsbuffer".into(), "--config".into(), path.clone().into(), "serve".into()];
        let error = parse_command_line(argv).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(error.contains("drain_retry_maximum"), "{error}");
    }

    #[test]
    fn file_with_invalid_value_names_the_key() {
        let path = std::env::temp_dir().join(format!("opsbuffer-test-{}.toml", uuid::Uuid::now_v7()));
        std::fs::write(&path, "drain_retry_max = \"soon\"\n").unwrap();
        let argv: Vec<OsString> = vec!["opsbuffer".into(), "--config".into(), path.clone().into(), "serve".into()];
        let error = parse_command_line(argv).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(error.contains("drain_retry_max") && error.contains("soon"), "{error}");
    }

    #[test]
    fn every_argument_has_help() {
        fn check(command: &clap::Command, path: &str) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(arg.get_help().is_some(), "{path} --{id} has no help text");
            }
            for sub in command.get_subcommands() {
                assert!(sub.get_about().is_some(), "{path} {} has no help text", sub.get_name());
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        check(&Cli::command(), "opsbuffer");
    }
}
