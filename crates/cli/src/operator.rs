//! Operator commands that work on the buffer in Redis directly, so they
//! work while the API is down: dead letters and transaction states.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use opsbuffer_redis::{Buffer, DEFAULT_RETENTION, TransactionRecord};
use uuid::Uuid;

use crate::settings::Connections;

/// `opsbuffer dead ...`.
#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// List dead-lettered transactions and the transactions they block.
    List,
    /// Show one dead letter: main's error and the records it writes.
    Show {
        /// The transaction id.
        id: Uuid,
    },
    /// Requeue a dead letter ahead of every later transaction (after fixing its cause).
    Retry {
        /// The transaction id.
        id: Uuid,
    },
    /// Discard a dead letter and its pending changes; the merged view stops showing them.
    Discard {
        /// The transaction id.
        id: Uuid,
    },
}

/// Arguments shared by the operator commands.
#[derive(Debug, Args)]
pub struct OperatorArgs {
    #[command(flatten)]
    pub connections: Connections,

    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

fn buffer(connections: &Connections) -> anyhow::Result<Buffer> {
    Buffer::new(&connections.buffer(DEFAULT_RETENTION)).context("cannot use REDIS_URL")
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Runs a dead-letter command.
pub async fn dead(command: DeadCommand, args: OperatorArgs) -> anyhow::Result<()> {
    let buffer = buffer(&args.connections)?;
    match command {
        DeadCommand::List => {
            let dead = buffer.dead_letters().await?;
            let blocked = buffer.blocked().await?;
            if args.json {
                let json = serde_json::json!({
                    "dead": dead.iter().map(record_json).collect::<Vec<_>>(),
                    "blocked": blocked.iter().map(record_json).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&json)?);
                return Ok(());
            }
            if dead.is_empty() {
                println!("no dead letters");
            } else {
                println!("{:<38} {:>9} {:>8}  error", "transaction", "sequence", "records");
                for record in &dead {
                    println!(
                        "{:<38} {:>9} {:>8}  {}",
                        record.id,
                        record.sequence,
                        record.entries.len(),
                        record.error.as_deref().unwrap_or("")
                    );
                }
            }
            if !blocked.is_empty() {
                println!("\n{} transaction(s) blocked by dead letters:", blocked.len());
                for record in &blocked {
                    let by: Vec<String> = record.blocked_by.iter().map(Uuid::to_string).collect();
                    println!("{:<38} {:>9} blocked by {}", record.id, record.sequence, by.join(", "));
                }
            }
        }
        DeadCommand::Show { id } => {
            let Some(record) = buffer.transaction(id).await? else { bail!("transaction {id} is unknown") };
            print_record(&record, args.json)?;
        }
        DeadCommand::Retry { id } => match buffer.retry_dead(id, now_ms()).await? {
            Some(released) => {
                tracing::info!(transaction_id = %id, released_blocked = released, "operator requeued a dead-lettered transaction");
                println!("requeued {id}; {released} blocked transaction(s) released");
            }
            None => bail!("transaction {id} is not dead-lettered"),
        },
        DeadCommand::Discard { id } => match buffer.discard_dead(id, now_ms()).await? {
            Some(released) => {
                tracing::warn!(transaction_id = %id, released_blocked = released, "operator discarded a dead-lettered transaction");
                println!("discarded {id} and its pending changes; {released} blocked transaction(s) released");
            }
            None => bail!("transaction {id} is not dead-lettered"),
        },
    }
    Ok(())
}

/// `opsbuffer tx show ID`.
pub async fn show_transaction(id: Uuid, args: OperatorArgs) -> anyhow::Result<()> {
    let buffer = buffer(&args.connections)?;
    let Some(record) = buffer.transaction(id).await? else {
        bail!(
            "transaction {id} is unknown: never buffered at this site, or replicated longer ago than the retention period"
        )
    };
    print_record(&record, args.json)
}

fn record_json(record: &TransactionRecord) -> serde_json::Value {
    serde_json::json!({
        "transaction_id": record.id,
        "sequence": record.sequence,
        "state": record.state,
        "attempts": record.attempts,
        "error": record.error,
        "sqlstate": record.sqlstate,
        "commit_lsn": record.commit_lsn.map(|l| l.to_string()),
        "blocked_by": record.blocked_by,
        "entries": record.entries.iter().map(|(t, f)| format!("{t} {f}")).collect::<Vec<_>>(),
    })
}

fn print_record(record: &TransactionRecord, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&record_json(record))?);
        return Ok(());
    }
    println!("transaction  {}", record.id);
    println!("sequence     {}", record.sequence);
    println!("state        {}", record.state);
    println!("attempts     {}", record.attempts);
    if let Some(lsn) = record.commit_lsn {
        println!("commit LSN   {lsn}");
    }
    if let Some(error) = &record.error {
        println!("error        {error}");
    }
    if let Some(sqlstate) = &record.sqlstate {
        println!("SQLSTATE     {sqlstate}");
    }
    if !record.blocked_by.is_empty() {
        let by: Vec<String> = record.blocked_by.iter().map(Uuid::to_string).collect();
        println!("blocked by   {}", by.join(", "));
    }
    println!("records:");
    for (table, field) in &record.entries {
        match opsbuffer_core::overlay::EntryId::parse(field) {
            Some(entry) => println!("  {} {table} {}", entry.kind.op_name(), entry.key),
            None => println!("  {table} {field}"),
        }
    }
    Ok(())
}
