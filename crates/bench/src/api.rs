//! The HTTP client of the service under test. Every call has a timeout,
//! and a status other than the expected one is an error that names the
//! path, the status and the body.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::Value;

/// Maximum duration of one request, including reading the body.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A finished request: its status, its body and how long it took from
/// sending to the last byte of the body.
pub struct Reply {
    pub status: u16,
    pub body: bytes::Bytes,
    pub elapsed: Duration,
}

impl Reply {
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).context("the response body is not JSON")
    }

    /// Fails unless the status is `expected`.
    pub fn expect(self, expected: u16, what: &str) -> anyhow::Result<Reply> {
        if self.status != expected {
            let text = String::from_utf8_lossy(&self.body);
            let shown: String = text.chars().take(500).collect();
            bail!("{what}: expected status {expected}, got {}: {shown}", self.status);
        }
        Ok(self)
    }
}

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(base: String) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_max_idle_per_host(256)
            .no_proxy()
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Api { http, base })
    }

    /// Sends one request with an optional JSON body that is already
    /// serialized, so serialization is not part of the measured time.
    pub async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> anyhow::Result<Reply> {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        }
        let started = Instant::now();
        let response = request.send().await.with_context(|| format!("{method} {path} failed"))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.with_context(|| format!("reading the body of {method} {path} failed"))?;
        Ok(Reply { status, body, elapsed: started.elapsed() })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Reply> {
        self.send(Method::POST, path, Some(serde_json::to_vec(body)?)).await
    }

    /// `GET path`, expecting 200, as JSON.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        self.get(path).await?.expect(200, &format!("GET {path}"))?.json()
    }

    /// `GET /transactions/{id}`.
    pub async fn transaction(&self, id: &str) -> anyhow::Result<Value> {
        self.get_json(&format!("/transactions/{id}")).await
    }
}

/// Returns the text of a string field of a JSON object, or an error naming it.
pub fn text_field(value: &Value, field: &str) -> anyhow::Result<String> {
    value
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("the response has no text field {field:?}: {value}"))
}
