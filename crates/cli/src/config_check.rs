//! `opsbuffer config check`: the effective configuration of `opsbuffer
//! serve`, where each value came from, and whether main, local and Redis
//! answer.

use std::time::Duration;

use anyhow::bail;
use clap::parser::ValueSource;
use opsbuffer_engine::config::redact_url;
use opsbuffer_pg::connect::pool;
use opsbuffer_pg::reader::Reader;
use opsbuffer_redis::Buffer;

use crate::ServeArgs;
use crate::config_file::FileSettings;
use crate::text_table;

/// Whether a setting's value must not be printed.
fn is_secret(key: &str) -> bool {
    ["password", "token", "secret"].iter().any(|s| key.contains(s))
}

/// The value as printed: passwords in URLs and secret settings masked.
pub fn masked(key: &str, value: &str) -> String {
    if is_secret(key) {
        "***".to_owned()
    } else if value.contains("://") {
        redact_url(value)
    } else {
        value.to_owned()
    }
}

/// One printed setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub value: String,
    pub source: &'static str,
}

/// Every setting of `config check`'s arguments with its value and source.
pub fn effective(matches: &clap::ArgMatches, file: Option<&FileSettings>) -> Vec<Setting> {
    let command = <crate::Cli as clap::CommandFactory>::command();
    let check = command
        .find_subcommand("config")
        .and_then(|c| c.find_subcommand("check"))
        .expect("config check exists")
        .clone();
    let mut settings = Vec::new();
    let globals: Vec<clap::Arg> = command.get_arguments().filter(|a| a.is_global_set()).cloned().collect();
    for arg in check.get_arguments().chain(globals.iter()) {
        let Some(env) = arg.get_env() else { continue };
        let key = env.to_string_lossy().to_ascii_lowercase();
        if key == crate::config_file::CONFIG_ENV.to_ascii_lowercase() {
            continue;
        }
        let id = arg.get_id().as_str();
        let value = matches
            .get_raw(id)
            .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "environment",
            _ if file.is_some_and(|f| f.values.contains_key(&key)) => "file",
            _ => "default",
        };
        settings.push(Setting { value: masked(&key, &value), key, source });
    }
    settings.sort_by(|a, b| a.key.cmp(&b.key));
    settings.dedup_by(|a, b| a.key == b.key);
    settings
}

/// Runs a check under a timeout; the error as text.
async fn probe<T, E: std::fmt::Display>(
    timeout: Duration,
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

pub async fn run(
    serve: &ServeArgs,
    matches: &clap::ArgMatches,
    file: Option<&FileSettings>,
    offline: bool,
) -> anyhow::Result<()> {
    if let Some(file) = file {
        println!("configuration file: {}", file.path.display());
    }
    println!("precedence: flag > environment > file > default\n");
    let rows: Vec<Vec<String>> =
        effective(matches, file).into_iter().map(|s| vec![s.key, s.value, s.source.to_owned()]).collect();
    print!("{}", text_table::render(&["setting", "value", "source"], &rows));

    let config = serve.settings.site_config();
    let mut failures = Vec::new();
    if let Err(message) = config.drain.validate() {
        failures.push(message);
    }
    if offline {
        println!("\nconnectivity: not checked (--offline)");
    } else {
        println!();
        let timeout = config.main.connect_timeout + Duration::from_secs(1);
        let main = Reader::new(pool(&config.main)?, "main", timeout);
        let local = Reader::new(pool(&config.local)?, "local", timeout);
        let buffer = Buffer::new(&config.redis)?;
        let (main_status, local_status, redis) = tokio::join!(
            probe(timeout, main.status()),
            probe(timeout, local.status()),
            probe(timeout, buffer.persistence())
        );
        let mut report = |what: &str, target: &str, result: Result<String, String>| match result {
            Ok(detail) => println!("{what:<6} ok      {target} ({detail})"),
            Err(error) => {
                println!("{what:<6} FAILED  {target}: {error}");
                failures.push(format!("{what} at {target} did not answer: {error}"));
            }
        };
        report("main", &redact_url(&config.main.url), main_status.map(|s| format!("LSN {}", s.lsn)));
        report(
            "local",
            &redact_url(&config.local.url),
            local_status.map(|s| format!("in recovery {}, replay LSN {}", s.in_recovery, s.lsn)),
        );
        report(
            "redis",
            &redact_url(&config.redis.url),
            redis.map(|p| {
                format!(
                    "appendonly {}, appendfsync {}",
                    p.appendonly.map_or("unknown", |a| if a { "yes" } else { "no" }),
                    p.appendfsync.as_deref().unwrap_or("unknown")
                )
            }),
        );
    }
    if !failures.is_empty() {
        bail!("the configuration check failed:\n  {}", failures.join("\n  "));
    }
    println!("\nconfiguration ok");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked() {
        assert_eq!(masked("main_db_url", "postgres://ops:pw@h/db"), "postgres://ops:***@h/db");
        assert_eq!(masked("api_token", "opsb_x"), "***");
        assert_eq!(masked("site_name", "north"), "north");
    }
}
