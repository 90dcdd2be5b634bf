//! The optional TOML configuration file (`--config FILE` or
//! `OPSBUFFER_CONFIG`).
//!
//! Its keys are the lower-case names of the environment variables
//! (`main_db_url`, `drain_batch_size`, ...). Precedence, highest first:
//! command-line flags, environment variables, the file, built-in defaults.
//! The file's values become the defaults of the matching arguments, so
//! clap applies the same precedence and the same parsers to them. Unknown
//! keys and invalid values are rejected with the key named.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Command;
use clap::builder::Resettable;

/// The environment variable that names the file when `--config` is not
/// given.
pub const CONFIG_ENV: &str = "OPSBUFFER_CONFIG";

/// Settings read from a configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSettings {
    pub path: PathBuf,
    /// Lower-case environment variable name → value as text.
    pub values: BTreeMap<String, String>,
}

/// The file named by `--config FILE` or `--config=FILE` in `args`, or by
/// `OPSBUFFER_CONFIG`.
pub fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            break;
        }
        if text == "--config" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// Reads and parses a configuration file.
pub fn load(path: &Path) -> Result<FileSettings, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the configuration file {}: {e}", path.display()))?;
    parse(path, &text)
}

/// Parses the text of a configuration file. Values may be strings,
/// numbers, booleans or arrays of those (joined with commas, as for
/// `db_schemas`).
pub fn parse(path: &Path, text: &str) -> Result<FileSettings, String> {
    let table: toml::Table = toml::from_str(text)
        .map_err(|e| format!("the configuration file {} is not valid TOML: {e}", path.display()))?;
    let mut values = BTreeMap::new();
    for (key, value) in table {
        let text = scalar_text(&value)
            .or_else(|| match &value {
                toml::Value::Array(items) => {
                    items.iter().map(scalar_text).collect::<Option<Vec<_>>>().map(|parts| parts.join(","))
                }
                _ => None,
            })
            .ok_or_else(|| {
                format!(
                    "{}: setting {key} must be a string, number, boolean or a list of those, not a {}",
                    path.display(),
                    value.type_str()
                )
            })?;
        values.insert(key, text);
    }
    Ok(FileSettings { path: path.to_owned(), values })
}

fn scalar_text(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The lower-case environment variable names of every argument of
/// `command` and its subcommands: the keys a file may set.
pub fn known_keys(command: &Command) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    collect_keys(command, &mut keys);
    keys.remove(&CONFIG_ENV.to_ascii_lowercase());
    keys
}

fn collect_keys(command: &Command, keys: &mut BTreeSet<String>) {
    for arg in command.get_arguments() {
        if let Some(env) = arg.get_env() {
            keys.insert(env.to_string_lossy().to_ascii_lowercase());
        }
    }
    for sub in command.get_subcommands() {
        collect_keys(sub, keys);
    }
}

/// Checks the file's keys and values against `command` and makes its values
/// the defaults of the matching arguments, in every subcommand.
pub fn apply(command: Command, file: &FileSettings) -> Result<Command, String> {
    let known = known_keys(&command);
    if let Some(unknown) = file.values.keys().find(|k| !known.contains(*k)) {
        return Err(format!(
            "{}: unknown setting {unknown:?}; the keys are the lower-case environment variable names: {}",
            file.path.display(),
            known.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    validate(&command, file)?;
    Ok(set_defaults(command, file))
}

/// Runs each value through its argument's parser, so an invalid value
/// fails at start-up naming the file and the key even when a flag or the
/// environment overrides it.
fn validate(command: &Command, file: &FileSettings) -> Result<(), String> {
    for arg in command.get_arguments() {
        let Some(env) = arg.get_env() else { continue };
        let key = env.to_string_lossy().to_ascii_lowercase();
        let Some(value) = file.values.get(&key) else { continue };
        let Some(long) = arg.get_long() else { continue };
        // A one-argument command parses the value with the argument's own
        // parser and delimiter, ignoring the environment.
        let probe = Command::new("opsbuffer")
            .no_binary_name(true)
            .arg(arg.clone().env(Resettable::Reset).default_value(Resettable::Reset).required(false));
        probe.try_get_matches_from([format!("--{long}={value}")]).map_err(|e| {
            let detail = e.to_string();
            let detail = detail.lines().next().unwrap_or_default().trim_start_matches("error: ").to_owned();
            format!("{}: invalid value for setting {key}: {detail}", file.path.display())
        })?;
    }
    for sub in command.get_subcommands() {
        validate(sub, file)?;
    }
    Ok(())
}

fn set_defaults(mut command: Command, file: &FileSettings) -> Command {
    let overridden: Vec<(clap::Id, &'static str)> = command
        .get_arguments()
        .filter_map(|arg| {
            let key = arg.get_env()?.to_string_lossy().to_ascii_lowercase();
            let value = file.values.get(&key)?;
            // Clap keeps defaults as `&'static str`; the file is read once
            // per process, so leaking its values is bounded.
            Some((arg.get_id().clone(), &*Box::leak(value.clone().into_boxed_str())))
        })
        .collect();
    for (id, value) in overridden {
        command = command.mut_arg(id, |arg| arg.default_value(value));
    }
    let names: Vec<String> = command.get_subcommands().map(|s| s.get_name().to_owned()).collect();
    for name in names {
        command = command.mut_subcommand(name, |sub| set_defaults(sub, file));
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_path_reads_both_flag_forms() {
        let args = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(config_path(&args(&["opsbuffer", "--config", "a.toml", "serve"])), Some("a.toml".into()));
        assert_eq!(config_path(&args(&["opsbuffer", "serve", "--config=b.toml"])), Some("b.toml".into()));
    }

    #[test]
    fn values_become_text() {
        let file = parse(
            Path::new("x.toml"),
            "site_name = \"north\"\ndrain_batch_size = 50\nauth_required = false\ndb_schemas = [\"public\", \"ops\"]\n",
        )
        .unwrap();
        assert_eq!(file.values["site_name"], "north");
        assert_eq!(file.values["drain_batch_size"], "50");
        assert_eq!(file.values["auth_required"], "false");
        assert_eq!(file.values["db_schemas"], "public,ops");
    }

    #[test]
    fn tables_are_rejected_with_the_key() {
        let error = parse(Path::new("x.toml"), "[drain]\nbatch_size = 5\n").unwrap_err();
        assert!(error.contains("drain"), "{error}");
    }
}
