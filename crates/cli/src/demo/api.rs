//! A small HTTP client for the site API, as an instrument script would use
//! it. Every request has a timeout, and an error response becomes an error
//! that names the request, the status and the service's message.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use reqwest::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value as Json};

/// Maximum time for one request, including the response body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Records per page of `/records` reads; the service caps `limit` at 10000.
const PAGE_SIZE: usize = 5000;

/// Maximum number of values in one `in.(...)` filter, to keep URLs short.
const MAX_IN_VALUES: usize = 50;

/// The view a read requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Local replica rows with every pending overlay applied (the default).
    Merged,
    /// Local replica rows only.
    Replica,
}

impl View {
    fn parameter(self) -> &'static str {
        match self {
            View::Merged => "merged",
            View::Replica => "replica",
        }
    }
}

/// The response to a write: `id` for one-record writes, `ids` for bulk ones.
#[derive(Debug, Clone, Deserialize)]
pub struct Receipt {
    #[serde(default)]
    pub id: Option<Json>,
    #[serde(default)]
    pub ids: Vec<Json>,
    pub transaction_id: String,
    /// `buffered` at a secondary site, `committed` at a main site.
    pub status: String,
}

impl Receipt {
    /// Returns the id of a one-record write as text.
    pub fn single_id(&self) -> anyhow::Result<String> {
        match &self.id {
            Some(Json::String(id)) => Ok(id.clone()),
            other => bail!("the response has no record id: {other:?}"),
        }
    }

    /// Returns the ids of a bulk write as text, in request order.
    pub fn all_ids(&self) -> anyhow::Result<Vec<String>> {
        self.ids
            .iter()
            .map(|id| match id {
                Json::String(id) => Ok(id.clone()),
                other => Err(anyhow!("the response lists a record id that is not a string: {other}")),
            })
            .collect()
    }
}

/// The parts of `GET /health` the demo reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Health {
    pub status: String,
    #[serde(default)]
    pub problems: Vec<String>,
    pub main: Reachability,
    pub local: LocalHealth,
    pub buffer: BufferCounts,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Reachability {
    pub reachable: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LocalHealth {
    #[serde(default)]
    pub replay_paused: Option<bool>,
}

/// The buffer counts of `/health`. A count that is null there (Redis
/// cannot be read) is read as `u64::MAX`, so it never looks drained.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct BufferCounts {
    #[serde(deserialize_with = "unknown_as_max")]
    pub queued: u64,
    #[serde(default, deserialize_with = "unknown_as_max")]
    pub blocked: u64,
    #[serde(deserialize_with = "unknown_as_max")]
    pub applied_waiting_replication: u64,
    #[serde(deserialize_with = "unknown_as_max")]
    pub dead: u64,
}

fn unknown_as_max<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    Ok(Option::<u64>::deserialize(deserializer)?.unwrap_or(u64::MAX))
}

impl BufferCounts {
    /// Whether nothing is pending: every acknowledged transaction is applied
    /// on main and replayed on local, and none is dead-lettered.
    pub fn is_empty(&self) -> bool {
        self.queued == 0 && self.blocked == 0 && self.applied_waiting_replication == 0 && self.dead == 0
    }
}

/// A client of one running site API.
#[derive(Debug, Clone)]
pub struct Api {
    client: reqwest::Client,
    base_url: String,
}

impl Api {
    /// Creates a client for the API at `base_url`, such as `http://127.0.0.1:8000`.
    pub fn new(base_url: &str) -> anyhow::Result<Api> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .no_proxy()
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Api { client, base_url: base_url.trim_end_matches('/').to_owned() })
    }

    /// Sends one request and returns the parsed JSON body of a 2xx response.
    async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Json>,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path_and_query}", self.base_url);
        let mut request = self.client.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.with_context(|| format!("{method} {path_and_query} failed"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("{method} {path_and_query}: cannot read the response body"))?;
        if !status.is_success() {
            let message = serde_json::from_str::<Json>(&text)
                .ok()
                .and_then(|j| j.pointer("/error/message").and_then(Json::as_str).map(str::to_owned))
                .unwrap_or(text);
            bail!("{method} {path_and_query} returned {status}: {message}");
        }
        serde_json::from_str(&text)
            .with_context(|| format!("{method} {path_and_query}: the response is not the expected JSON: {text}"))
    }

    pub async fn health(&self) -> anyhow::Result<Health> {
        self.request(Method::GET, "/health", None).await
    }

    /// `POST /executed_obs_units/start`.
    pub async fn start_executed_obs_unit(&self, body: &Json) -> anyhow::Result<Receipt> {
        self.request(Method::POST, "/executed_obs_units/start", Some(body)).await
    }

    /// `PUT /executed_obs_units/{id}/finish`.
    pub async fn finish_executed_obs_unit(&self, id: &str, body: &Json) -> anyhow::Result<Receipt> {
        self.request(Method::PUT, &format!("/executed_obs_units/{id}/finish"), Some(body)).await
    }

    /// `POST /raw_data_files/bulk`.
    pub async fn create_raw_data_files(&self, files: &Json) -> anyhow::Result<Receipt> {
        self.request(Method::POST, "/raw_data_files/bulk", Some(files)).await
    }

    /// `POST /raw_data_package/`.
    pub async fn create_raw_data_package(&self, body: &Json) -> anyhow::Result<Receipt> {
        self.request(Method::POST, "/raw_data_package/", Some(body)).await
    }

    /// `PUT /raw_data_package/{id}/finalize`.
    pub async fn finalize_raw_data_package(&self, id: &str, body: &Json) -> anyhow::Result<Receipt> {
        self.request(Method::PUT, &format!("/raw_data_package/{id}/finalize"), Some(body)).await
    }

    /// `POST /transactions`.
    pub async fn transaction(&self, body: &Json) -> anyhow::Result<Receipt> {
        self.request(Method::POST, "/transactions", Some(body)).await
    }

    /// `GET /executed_obs_units/{obs_unit_id}`: the executed obs units of an
    /// obs unit, each with `raw_data_packages` and `raw_data_files`.
    pub async fn executed_obs_units_of(&self, obs_unit_id: i32, view: View) -> anyhow::Result<Vec<Map<String, Json>>> {
        let path = format!("/executed_obs_units/{obs_unit_id}?consistency={}&limit=10000", view.parameter());
        self.request(Method::GET, &path, None).await
    }

    /// Reads every record of `table` whose `column` is one of `values`, page
    /// by page through `/records/{table}`.
    pub async fn records_where_in(
        &self,
        table: &str,
        column: &str,
        values: &[String],
        view: View,
    ) -> anyhow::Result<Vec<Map<String, Json>>> {
        let mut records = Vec::new();
        for chunk in values.chunks(MAX_IN_VALUES) {
            let filter = format!("in.({})", chunk.join(","));
            let mut after: Option<String> = None;
            loop {
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                query
                    .append_pair(column, &filter)
                    .append_pair("consistency", view.parameter())
                    .append_pair("limit", &PAGE_SIZE.to_string());
                if let Some(cursor) = &after {
                    query.append_pair("after", cursor);
                }
                let path = format!("/records/{table}?{}", query.finish());
                let page: RecordsPage = self.request(Method::GET, &path, None).await?;
                records.extend(page.records);
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        Ok(records)
    }
}

#[derive(Debug, Deserialize)]
struct RecordsPage {
    records: Vec<Map<String, Json>>,
    next: Option<String>,
}
