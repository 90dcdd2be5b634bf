//! The settings parser of the `opsbuffer` binary: file < environment <
//! flag, masking of secrets, rejected keys and values, and the
//! connectivity checks of `opsbuffer config check`.

use std::path::PathBuf;

use opsbuffer_tests::{run_opsbuffer, service_env};

/// Writes a configuration file unique to this call.
fn config_file(text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("opsbuffer-config-{}.toml", uuid::Uuid::now_v7()));
    std::fs::write(&path, text).expect("write the configuration file");
    path
}

/// The value and source `config check` printed for `key`.
fn setting<'a>(output: &'a str, key: &str) -> (&'a str, &'a str) {
    let line = output
        .lines()
        .find(|l| l.split_whitespace().next() == Some(key))
        .unwrap_or_else(|| panic!("{key} is missing from:\n{output}"));
    let parts: Vec<&str> = line.split_whitespace().collect();
    (parts[1], parts[parts.len() - 1])
}

#[tokio::test]
async fn flag_beats_environment_beats_file() {
    let file = config_file(
        "drain_batch_size = 11\nlsn_timeout = \"41s\"\nsite_name = \"from-file\"\nauth_open_endpoints = [\"health\"]\n",
    );
    let env = vec![
        ("DRAIN_BATCH_SIZE", "22".to_owned()),
        ("SITE_NAME", "from-env".to_owned()),
        ("MAIN_DB_URL", "postgres://opsbuffer:s3cret@127.0.0.1:54320/opsbuffer".to_owned()),
    ];
    let path = file.to_str().unwrap();
    let (status, stdout, stderr) =
        run_opsbuffer(&["--config", path, "config", "check", "--offline", "--drain-batch-size", "33"], &env).await;
    std::fs::remove_file(&file).unwrap();
    assert!(status.success(), "{stdout}\n{stderr}");

    assert_eq!(setting(&stdout, "drain_batch_size"), ("33", "flag"));
    assert_eq!(setting(&stdout, "site_name"), ("from-env", "environment"));
    assert_eq!(setting(&stdout, "lsn_timeout"), ("41s", "file"));
    assert_eq!(setting(&stdout, "auth_open_endpoints"), ("health", "file"));
    assert_eq!(setting(&stdout, "drain_retry_max"), ("30s", "default"));
    assert_eq!(setting(&stdout, "main_db_url").0, "postgres://opsbuffer:***@127.0.0.1:54320/opsbuffer");
    assert!(!stdout.contains("s3cret"), "the password is printed:\n{stdout}");
    assert!(stdout.contains("not checked (--offline)"), "{stdout}");
}

#[tokio::test]
async fn config_from_environment_variable() {
    let file = config_file("site_name = \"named-by-env\"\n");
    let env = vec![("OPSBUFFER_CONFIG", file.to_str().unwrap().to_owned())];
    let (status, stdout, stderr) = run_opsbuffer(&["config", "check", "--offline"], &env).await;
    std::fs::remove_file(&file).unwrap();
    assert!(status.success(), "{stdout}\n{stderr}");
    assert_eq!(setting(&stdout, "site_name"), ("named-by-env", "file"));
}

#[tokio::test]
async fn unknown_file_key_is_rejected() {
    let file = config_file("drain_batch_sise = 5\n");
    let (status, stdout, stderr) =
        run_opsbuffer(&["--config", file.to_str().unwrap(), "config", "check", "--offline"], &[]).await;
    std::fs::remove_file(&file).unwrap();
    assert!(!status.success(), "{stdout}");
    assert!(stderr.contains("unknown setting \"drain_batch_sise\""), "{stderr}");
}

#[tokio::test]
async fn invalid_file_value_names_the_key() {
    let file = config_file("drain_batch_timeout = \"soon\"\n");
    let (status, _, stderr) = run_opsbuffer(&["--config", file.to_str().unwrap(), "serve"], &[]).await;
    std::fs::remove_file(&file).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("drain_batch_timeout"), "{stderr}");
    assert!(stderr.contains("soon"), "{stderr}");
}

#[tokio::test]
async fn invalid_environment_value_names_the_setting() {
    let env = vec![("DRAIN_BATCH_TIMEOUT", "soon".to_owned())];
    let (status, _, stderr) = run_opsbuffer(&["serve"], &env).await;
    assert!(!status.success());
    assert!(stderr.contains("--drain-batch-timeout"), "{stderr}");
    assert!(stderr.contains("DRAIN_BATCH_TIMEOUT"), "{stderr}");
}

#[tokio::test]
async fn zero_sizes_and_intervals_are_rejected() {
    for (name, flag) in [("DB_POOL_SIZE", "--db-pool-size"), ("LSN_CHECK_INTERVAL", "--lsn-check-interval")] {
        let env = vec![(name, "0".to_owned())];
        let (status, stdout, stderr) = run_opsbuffer(&["config", "check", "--offline"], &env).await;
        assert!(!status.success(), "{name}=0: {stdout}");
        assert!(stderr.contains(flag), "{name}=0: {stderr}");
        assert!(stderr.contains(name), "{name}=0: {stderr}");
    }
}

#[tokio::test]
async fn invalid_relation_fails_the_check() {
    let env = vec![("DRAIN_BATCH_TIMEOUT", "25s".to_owned()), ("DRAINER_LEASE_TTL", "30s".to_owned())];
    let (status, stdout, stderr) = run_opsbuffer(&["config", "check", "--offline"], &env).await;
    assert!(!status.success(), "{stdout}");
    assert!(stderr.contains("DRAIN_BATCH_TIMEOUT"), "{stderr}");
}

#[tokio::test]
async fn check_connects_to_the_services() {
    let env = service_env("config-check");
    let (status, stdout, stderr) = run_opsbuffer(&["config", "check"], &env).await;
    assert!(status.success(), "{stdout}\n{stderr}");
    for service in ["main", "local", "redis"] {
        let line = stdout.lines().find(|l| l.starts_with(&format!("{service} "))).unwrap_or_else(|| panic!("{stdout}"));
        assert!(line.contains(" ok "), "{line}");
    }
    assert!(stdout.contains("appendfsync always"), "{stdout}");
}

#[tokio::test]
async fn check_reports_an_unreachable_service() {
    // A port that was free a moment ago: nothing listens there.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut env = service_env("config-check");
    env.retain(|(name, _)| *name != "REDIS_URL");
    env.push(("REDIS_URL", format!("redis://127.0.0.1:{port}")));
    env.push(("REDIS_TIMEOUT", "1s".to_owned()));
    env.push(("DB_CONNECT_TIMEOUT", "1s".to_owned()));
    let (status, stdout, stderr) = run_opsbuffer(&["config", "check"], &env).await;
    assert!(!status.success(), "{stdout}");
    let line = stdout.lines().find(|l| l.starts_with("redis ")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("FAILED"), "{line}");
    assert!(stderr.contains("the configuration check failed"), "{stderr}");
}
