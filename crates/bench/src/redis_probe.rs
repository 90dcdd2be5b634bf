//! Direct Redis calls of the load generator: memory figures and the removal
//! of a finished site's keys. The service prefixes every key with
//! `{SITE_NAME}:`, so a site's keys are found by that prefix alone.

use std::time::Duration;

use anyhow::{Context, anyhow};
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

const TIMEOUT: Duration = Duration::from_secs(30);
/// Keys per SCAN step and per UNLINK or MEMORY USAGE pipeline.
const BATCH: usize = 1_000;

/// Opens a new connection for each call, so a restart of Redis between
/// calls (which the heavy tests do) costs one call, not the rest of the run.
#[derive(Clone)]
pub struct RedisProbe {
    client: redis::Client,
}

/// Memory figures of one site's keys and of the whole Redis instance.
#[derive(Debug, Clone, Copy)]
pub struct MemorySnapshot {
    /// Sum of `MEMORY USAGE key SAMPLES 0` over the site's keys.
    pub site_bytes: u64,
    pub site_keys: u64,
    /// `used_memory` of `INFO memory`: every key of every user of this Redis.
    pub used_memory: u64,
}

impl RedisProbe {
    /// Checks the URL and that Redis responds.
    pub async fn connect(url: &str) -> anyhow::Result<RedisProbe> {
        let client = redis::Client::open(url).context("invalid REDIS_URL")?;
        let probe = RedisProbe { client };
        probe.connection().await?;
        Ok(probe)
    }

    async fn connection(&self) -> anyhow::Result<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(TIMEOUT));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .context("cannot connect to Redis; run scripts/services.sh start")
    }

    /// Lists every key of a site with SCAN (not KEYS, which blocks Redis).
    pub async fn site_keys(&self, site: &str) -> anyhow::Result<Vec<String>> {
        let mut connection = self.connection().await?;
        let pattern = format!("{}:*", site_prefix(site));
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(BATCH)
                .query_async(&mut connection)
                .await
                .context("SCAN failed")?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    pub async fn memory(&self, site: &str) -> anyhow::Result<MemorySnapshot> {
        let mut connection = self.connection().await?;
        let keys = self.site_keys(site).await?;
        let mut site_bytes = 0u64;
        for chunk in keys.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("MEMORY").arg("USAGE").arg(key).arg("SAMPLES").arg(0);
            }
            let sizes: Vec<Option<u64>> = pipe.query_async(&mut connection).await.context("MEMORY USAGE failed")?;
            site_bytes += sizes.into_iter().flatten().sum::<u64>();
        }
        let info: String =
            redis::cmd("INFO").arg("memory").query_async(&mut connection).await.context("INFO failed")?;
        let used_memory = info
            .lines()
            .find_map(|line| line.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| anyhow!("INFO memory has no used_memory line"))?;
        Ok(MemorySnapshot { site_bytes, site_keys: keys.len() as u64, used_memory })
    }

    /// Removes every key of a site; returns how many there were.
    pub async fn delete_site(&self, site: &str) -> anyhow::Result<usize> {
        let mut connection = self.connection().await?;
        let keys = self.site_keys(site).await?;
        for chunk in keys.chunks(BATCH) {
            let _: u64 = redis::cmd("UNLINK").arg(chunk).query_async(&mut connection).await.context("UNLINK failed")?;
        }
        Ok(keys.len())
    }
}

/// Returns the key prefix of a site as the service writes it: `{site}`. The
/// braces make the site name a Redis Cluster hash tag and are no glob
/// characters, so the prefix is usable as a SCAN pattern as it is.
pub fn site_prefix(site: &str) -> String {
    format!("{{{site}}}")
}
