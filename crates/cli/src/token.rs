//! `opsbuffer token create|list|revoke`: API token management without a
//! token, so an operator with access to the site's databases and Redis can
//! create the first admin token.
//!
//! The commands start an engine of their own and write through the normal
//! write path: at a secondary site a new token is buffered and works at
//! once at this site, even while main is unreachable.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use opsbuffer_engine::Engine;
use opsbuffer_engine::tokens::{Scope, TokenInfo};

use crate::settings::Connections;
use crate::text_table;

fn duration(text: &str) -> Result<Duration, String> {
    opsbuffer_engine::config::parse_duration(text)
}

fn scope(text: &str) -> Result<Scope, String> {
    Scope::parse(text)
}

/// `opsbuffer token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it once on standard output; it is stored only as a hash.
    Create {
        /// What the token is for, such as "rfsoc01 ingest".
        #[arg(long)]
        name: String,

        /// Comma-separated scopes: read:observations, write:observations, admin (admin grants all).
        #[arg(long, required = true, value_delimiter = ',', value_parser = scope)]
        scopes: Vec<Scope>,

        /// Lifetime such as 90d, 12h or 3600 (seconds); without it the token does not expire.
        #[arg(long, value_parser = duration)]
        expires_in: Option<Duration>,
    },
    /// List every token with its scopes, expiry, revocation and last use at this site.
    List,
    /// Revoke a token by its 8-character id or its uuid.
    Revoke {
        /// The token's 8-character id (the part after opsb_) or its uuid.
        id: String,
    },
}

/// Arguments shared by the token commands.
#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub connections: Connections,

    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

pub async fn run(command: TokenCommand, args: TokenArgs) -> anyhow::Result<()> {
    let engine = Engine::start(args.connections.site_config()).await.context("start-up failed")?;
    match command {
        TokenCommand::Create { name, scopes, expires_in } => {
            let mut scopes = scopes;
            scopes.sort();
            scopes.dedup();
            let expires_at = match expires_in {
                Some(lifetime) => Some(
                    opsbuffer_engine::tokens::expiry_after(lifetime)
                        .map_err(|e| anyhow::anyhow!("--expires-in: {e}"))?,
                ),
                None => None,
            };
            let created = engine.create_token(&name, &scopes, expires_at).await?;
            if args.json {
                let mut json = serde_json::to_value(&created.info)?;
                json["token"] = created.token.clone().into();
                json["transaction_id"] = created.transaction_id.to_string().into();
                json["status"] = created.status.into();
                println!("{}", serde_json::to_string_pretty(&json)?);
            } else {
                println!("{}", created.token);
                eprintln!(
                    "created token {} ({name}) with scopes {}{}; transaction {} {}",
                    created.info.token_id,
                    created.info.scopes.join(", "),
                    created.info.expires_at.as_deref().map(|e| format!(", expires {e}")).unwrap_or_default(),
                    created.transaction_id,
                    created.status
                );
                eprintln!("store the token now: only its hash is kept, so it cannot be shown again");
            }
        }
        TokenCommand::List => {
            let tokens = engine.list_tokens().await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else if tokens.is_empty() {
                println!("no tokens; create one with `opsbuffer token create --name NAME --scopes admin`");
            } else {
                print!("{}", render(&tokens));
            }
        }
        TokenCommand::Revoke { id } => {
            let before = engine.token(&id).await?;
            if before.revoked_at.is_some() {
                bail!(
                    "token {} ({}) was already revoked at {}",
                    before.token_id,
                    before.name,
                    before.revoked_at.unwrap_or_default()
                );
            }
            let info = engine.revoke_token(&id).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                println!(
                    "revoked token {} ({}); running services stop accepting it within 5 seconds",
                    info.token_id, info.name
                );
            }
        }
    }
    Ok(())
}

fn render(tokens: &[TokenInfo]) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.token_id.clone(),
                text_table::cell(&t.name),
                t.scopes.join(","),
                t.state.clone(),
                short_time(t.created_at.as_deref()),
                short_time(t.expires_at.as_deref()),
                short_time(t.last_used_at.as_deref()),
            ]
        })
        .collect();
    text_table::render(&["id", "name", "scopes", "state", "created", "expires", "last used"], &rows)
}

/// An RFC 3339 time to the minute, or `-`.
fn short_time(time: Option<&str>) -> String {
    time.map_or("-".to_owned(), |t| t.get(..16).unwrap_or(t).replace('T', " "))
}
