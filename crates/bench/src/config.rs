//! Service URLs and scenario sizes.
//!
//! The URLs come from the environment variables the service reads (and
//! `scripts/services.sh env` prints), with the same defaults. Every URL must
//! point at a loopback address, because the load generator only measures
//! services on this machine.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};

/// Connection URLs of the services under test.
#[derive(Debug, Clone)]
pub struct Urls {
    pub main: String,
    pub local: String,
    pub redis: String,
    /// Superuser on main, for reference data and seed rows.
    pub main_admin: String,
    /// Superuser on the replica, for pausing and resuming replay.
    pub local_admin: String,
}

impl Urls {
    /// Reads the URLs from the environment and checks that each one names
    /// a loopback host.
    pub fn from_env() -> anyhow::Result<Urls> {
        let read = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
        let urls = Urls {
            main: read("MAIN_DB_URL", "postgres://opsbuffer@127.0.0.1:54320/opsbuffer"),
            local: read("LOCAL_DB_URL", "postgres://opsbuffer@127.0.0.1:54321/opsbuffer"),
            redis: read("REDIS_URL", "redis://127.0.0.1:63790"),
            main_admin: read("MAIN_ADMIN_URL", "postgres://postgres@127.0.0.1:54320/opsbuffer"),
            local_admin: read("LOCAL_ADMIN_URL", "postgres://postgres@127.0.0.1:54321/opsbuffer"),
        };
        for (name, url) in [
            ("MAIN_DB_URL", &urls.main),
            ("LOCAL_DB_URL", &urls.local),
            ("REDIS_URL", &urls.redis),
            ("MAIN_ADMIN_URL", &urls.main_admin),
            ("LOCAL_ADMIN_URL", &urls.local_admin),
        ] {
            loopback_address(url).with_context(|| format!("invalid {name}"))?;
        }
        Ok(urls)
    }
}

/// Returns the loopback socket address of a `postgres://` or `redis://` URL.
/// Host names other than `localhost` are rejected rather than resolved.
pub fn loopback_address(url: &str) -> anyhow::Result<SocketAddr> {
    let parsed = url::Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
    let host = parsed.host_str().ok_or_else(|| anyhow!("{url:?} has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = if host == "localhost" {
        IpAddr::from([127, 0, 0, 1])
    } else {
        host.parse().map_err(|_| anyhow!("host {host:?} of {url:?} is not an IP address or localhost"))?
    };
    if !ip.is_loopback() {
        bail!(
            "host {ip} of {url:?} is not a loopback address; the load generator measures only services on this machine"
        );
    }
    let default_port = if parsed.scheme() == "redis" { 6379 } else { 5432 };
    Ok(SocketAddr::new(ip, parsed.port().unwrap_or(default_port)))
}

/// `url` with its host and port replaced by `address`.
pub fn url_through(url: &str, address: SocketAddr) -> anyhow::Result<String> {
    let mut parsed = url::Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
    parsed.set_ip_host(address.ip()).map_err(|()| anyhow!("cannot set the host of {url:?}"))?;
    parsed.set_port(Some(address.port())).map_err(|()| anyhow!("cannot set the port of {url:?}"))?;
    Ok(parsed.to_string())
}

/// Request counts and sample sizes of every scenario, for a full run or a
/// smoke run.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Concurrent clients of the many-client write runs.
    pub clients: usize,
    /// Single creates (and finishes) with one client and with `clients`.
    pub single_one: usize,
    pub single_many: usize,
    /// Bulk requests of 100 files with one client and with `clients`.
    pub bulk_one: usize,
    pub bulk_many: usize,
    /// Files per bulk request.
    pub files_per_bulk: usize,
    /// Requests per merged-search or get-by-id measurement.
    pub search_samples: usize,
    pub get_samples: usize,
    /// Overlay counts of the queried table at which the search is measured.
    pub overlay_levels: Vec<usize>,
    /// Overlays in another table for the cross-table search.
    pub other_table_overlays: usize,
    /// Records of the queried executed obs unit in local.
    pub matching_records: usize,
    /// Single-record transactions buffered before each drain.
    pub drain_transactions: usize,
    /// One-way latencies the fault proxy adds in each drain run.
    pub drain_latencies: Vec<Duration>,
    pub eviction_samples: usize,
    /// Single creates and bulk requests whose Redis memory is measured.
    pub memory_single: usize,
    pub memory_bulk: usize,
    /// Overlays at which the service's resident memory is read.
    pub memory_overlays: usize,
    /// Maximum duration of one measurement; it stops early with fewer samples.
    pub max_measurement: Duration,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            clients: 32,
            single_one: 2_000,
            single_many: 20_000,
            bulk_one: 200,
            bulk_many: 1_000,
            files_per_bulk: 100,
            search_samples: 300,
            get_samples: 1_000,
            overlay_levels: vec![0, 1_000, 10_000, 100_000],
            other_table_overlays: 100_000,
            matching_records: 100,
            drain_transactions: 10_000,
            drain_latencies: vec![Duration::ZERO, Duration::from_millis(50), Duration::from_millis(200)],
            eviction_samples: 30,
            memory_single: 10_000,
            memory_bulk: 100,
            memory_overlays: 100_000,
            max_measurement: Duration::from_secs(60),
        }
    }

    /// Returns sizes for a run of a few seconds per scenario that still exercises every code path.
    pub fn smoke() -> Sizes {
        Sizes {
            clients: 32,
            single_one: 20,
            single_many: 128,
            bulk_one: 5,
            bulk_many: 32,
            files_per_bulk: 100,
            search_samples: 10,
            get_samples: 20,
            overlay_levels: vec![0, 1_000],
            other_table_overlays: 1_000,
            matching_records: 100,
            drain_transactions: 200,
            drain_latencies: vec![Duration::ZERO, Duration::from_millis(50)],
            eviction_samples: 2,
            memory_single: 200,
            memory_bulk: 5,
            memory_overlays: 1_000,
            max_measurement: Duration::from_secs(10),
        }
    }
}

/// Everything the scenarios need to know about this run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub urls: Urls,
    /// The `opsbuffer` executable under test.
    pub binary: PathBuf,
    /// Folder of the services' log files.
    pub log_dir: PathBuf,
    /// Short unique text in site names and record names of this run.
    pub run_tag: String,
    pub sizes: Sizes,
    /// Maximum wait for a running test suite or demo to finish before each
    /// scenario. The eviction scenario then skips, because it pauses replay.
    pub wait_for_tests: Duration,
}
