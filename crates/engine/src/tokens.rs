//! API tokens: creation, listing, revocation and verification.
//!
//! A token reads `opsb_<id>_<secret>`: `<id>` is 8 lower-case letters or
//! digits that name the token in lists and logs, `<secret>` is 32 random
//! bytes from the operating system's generator in unpadded base64url. Only
//! the SHA-256 hash of the whole token is stored, in main's `api_token`
//! table, so the token is shown once, at creation.
//!
//! Tokens are written and read like any record: created and revoked
//! through [`Engine::submit`] and looked up in the merged view. A secondary
//! site therefore accepts a token created there at once, even while main
//! is unreachable, and learns tokens created elsewhere through its replica.
//!
//! A successful verification is cached in the process for
//! [`VERIFICATION_CACHE_TTL`], so a revocation made in another process or
//! at another site takes effect here after at most that long (plus the
//! replication delay for another site). A revocation made through this
//! process takes effect at once.
//!
//! The last use of each token is kept in Redis under the site prefix, not
//! in the database, and written at most once per [`LAST_USED_PRECISION`]
//! per token and process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use opsbuffer_core::query::{Condition, Query};
use opsbuffer_core::schema::Table;
use opsbuffer_core::tx::{Plan, PlanContext, PlannedStep, StepOp, plan_create, plan_update};
use opsbuffer_core::value::Value;
use rand::TryRngCore;
use rand::rngs::OsRng;
use serde::Serialize;
use serde_json::{Map, Value as Json, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::engine::{Engine, now_ms};
use crate::error::EngineError;
use crate::read::Consistency;

/// The table of API tokens on main, created by migration V3.
pub const TOKEN_TABLE: &str = "api_token";

/// The text every token starts with, so secret scanners and people can
/// recognize one.
pub const TOKEN_PREFIX: &str = "opsb_";

/// Length of the token id, the part that names a token.
const ID_LENGTH: usize = 8;

/// Random bytes in a token's secret.
const SECRET_BYTES: usize = 32;

/// How long a successful verification is reused without a lookup.
pub const VERIFICATION_CACHE_TTL: Duration = Duration::from_secs(5);

/// Minimum interval between two writes of one token's last use by one
/// process.
pub const LAST_USED_PRECISION: Duration = Duration::from_secs(60);

/// Maximum number of cached verifications; beyond it the cache is emptied.
const MAX_CACHED: usize = 10_000;

/// Maximum number of tokens a list returns.
const MAX_LISTED: usize = 1_000_000;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Read the merged view and transaction states.
    ReadObservations,
    /// Write observations and transactions.
    WriteObservations,
    /// Everything, including dead letters, schema reloads and tokens.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::ReadObservations, Scope::WriteObservations, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ReadObservations => "read:observations",
            Scope::WriteObservations => "write:observations",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|s| s.as_str() == text.trim())
            .ok_or_else(|| format!("unknown scope {text:?}; use read:observations, write:observations or admin"))
    }

    /// Parses a comma-separated list; it must name at least one scope.
    pub fn parse_list(text: &str) -> Result<Vec<Scope>, String> {
        let mut scopes = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let scope = Scope::parse(part)?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        if scopes.is_empty() {
            return Err("no scope given; use read:observations, write:observations or admin".into());
        }
        scopes.sort();
        Ok(scopes)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The caller a valid token identifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The row's primary key.
    pub id: Uuid,
    /// The short id inside the token, safe to log.
    pub token_id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
}

impl Principal {
    /// Whether the token grants `scope`; `admin` grants every scope.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TokenRejection {
    #[error("the bearer token is malformed; tokens look like opsb_<8 characters>_<43 characters>")]
    Malformed,
    #[error("the bearer token is not valid")]
    Unknown,
    #[error("the bearer token {token_id} expired at {expired_at}")]
    Expired { token_id: String, expired_at: String },
    #[error("the bearer token {token_id} was revoked")]
    Revoked { token_id: String },
    /// The lookup failed; the token may be valid.
    #[error("the bearer token could not be checked: {0}")]
    Unavailable(EngineError),
}

/// A token as listed: everything but its hash.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    /// The row's primary key.
    pub id: Uuid,
    /// The short id inside the token.
    pub token_id: String,
    pub name: String,
    #[schema(example = json!(["read:observations"]))]
    pub scopes: Vec<String>,
    /// RFC 3339 time of creation.
    pub created_at: Option<String>,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    /// The last request with this token at this site, to the minute. It is
    /// kept in Redis, so each site stores only its own uses.
    pub last_used_at: Option<String>,
    /// `active`, `expired` or `revoked`.
    pub state: String,
}

/// A newly created token.
#[derive(Debug, Clone)]
pub struct CreatedToken {
    /// The token itself: shown once, never stored.
    pub token: String,
    pub info: TokenInfo,
    pub transaction_id: Uuid,
    /// `buffered` or `committed`, as for any write.
    pub status: &'static str,
}

/// A verification reused for [`VERIFICATION_CACHE_TTL`].
#[derive(Debug, Clone)]
struct CachedVerification {
    hash: [u8; 32],
    principal: Principal,
    expires_at_ms: Option<i64>,
    checked_at: Instant,
}

/// The per-process state of token checks.
#[derive(Debug, Default)]
pub struct TokenCache {
    verified: Mutex<HashMap<String, CachedVerification>>,
    /// When this process last recorded each token's use.
    last_recorded: Mutex<HashMap<Uuid, Instant>>,
}

/// Returns the expiry time of a token that lives `lifetime` from now, or
/// an error when that time is after the year 9999, the last one RFC 3339
/// can write.
pub fn expiry_after(lifetime: Duration) -> Result<DateTime<Utc>, String> {
    let latest = DateTime::parse_from_rfc3339("9999-12-31T23:59:59Z").expect("a valid RFC 3339 time").to_utc();
    chrono::Duration::from_std(lifetime)
        .ok()
        .and_then(|lifetime| Utc::now().checked_add_signed(lifetime))
        .filter(|expiry| *expiry <= latest)
        .ok_or_else(|| "the expiry would be after the year 9999; give a shorter lifetime".to_owned())
}

/// The SHA-256 hash of a token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// Splits a token into its id, or `None` when it does not have the shape
/// of one.
pub fn token_id_of(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let id = rest.get(..ID_LENGTH)?;
    let secret = rest.get(ID_LENGTH..)?.strip_prefix('_')?;
    let id_ok = id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let secret_ok = secret.len() == 43 && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some(id)
}

/// Generates a new token from the operating system's random generator.
pub fn generate_token() -> Result<String, EngineError> {
    const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut random = [0u8; SECRET_BYTES + ID_LENGTH];
    OsRng
        .try_fill_bytes(&mut random)
        .map_err(|e| EngineError::Internal(format!("the operating system's random generator failed: {e}")))?;
    // 256 is not a multiple of 36, so the modulo favours the first letters
    // slightly. That is harmless because the id only names the token and
    // the secret protects it.
    let id: String =
        random[SECRET_BYTES..].iter().map(|b| ID_ALPHABET[*b as usize % ID_ALPHABET.len()] as char).collect();
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&random[..SECRET_BYTES]);
    Ok(format!("{TOKEN_PREFIX}{id}_{secret}"))
}

fn time_text(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_time(json: Option<&Json>) -> Option<DateTime<Utc>> {
    json.and_then(Json::as_str).and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc))
}

/// A token row of the merged view.
struct TokenRow {
    id: Uuid,
    token_id: String,
    hash: Option<[u8; 32]>,
    name: String,
    scopes: Vec<String>,
    created_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl TokenRow {
    fn from_json(object: &Map<String, Json>) -> Option<TokenRow> {
        let text = |name: &str| object.get(name).and_then(Json::as_str).map(str::to_owned);
        Some(TokenRow {
            id: text("id").and_then(|t| Uuid::parse_str(&t).ok())?,
            token_id: text("token_id")?,
            hash: text("token_hash").as_deref().and_then(unhex),
            name: text("name").unwrap_or_default(),
            scopes: object
                .get("scopes")
                .and_then(Json::as_array)
                .map(|a| a.iter().filter_map(Json::as_str).map(str::to_owned).collect())
                .unwrap_or_default(),
            created_at: parse_time(object.get("created_at")),
            expires_at: parse_time(object.get("expires_at")),
            revoked_at: parse_time(object.get("revoked_at")),
        })
    }

    fn state(&self, now: DateTime<Utc>) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        }
    }

    fn info(&self, last_used_ms: Option<i64>) -> TokenInfo {
        TokenInfo {
            id: self.id,
            token_id: self.token_id.clone(),
            name: self.name.clone(),
            scopes: self.scopes.clone(),
            created_at: self.created_at.map(time_text),
            expires_at: self.expires_at.map(time_text),
            revoked_at: self.revoked_at.map(time_text),
            last_used_at: last_used_ms.and_then(DateTime::<Utc>::from_timestamp_millis).map(time_text),
            state: self.state(Utc::now()).to_owned(),
        }
    }

    fn principal(&self) -> Principal {
        Principal {
            id: self.id,
            token_id: self.token_id.clone(),
            name: self.name.clone(),
            // Scopes this version does not know grant nothing.
            scopes: self.scopes.iter().filter_map(|s| Scope::parse(s).ok()).collect(),
        }
    }
}

impl Engine {
    /// The token table, which the HTTP layer's table lookups leave out.
    fn token_table(&self) -> Result<Arc<Table>, EngineError> {
        let (_, registry) = self.registry();
        registry.table(TOKEN_TABLE).cloned().ok_or_else(|| {
            EngineError::unavailable(
                "tokens_unavailable",
                format!("local has no {TOKEN_TABLE} table; run `opsbuffer migrate` on main, then reload the schema"),
                0,
            )
        })
    }

    /// Token rows of the merged view, all of them or those with one
    /// `token_id` or primary key.
    async fn token_rows(&self, filter: Option<(&str, Value)>) -> Result<Vec<TokenRow>, EngineError> {
        let table = self.token_table()?;
        let mut conditions = Vec::new();
        if let Some((column, value)) = filter {
            let position = table.column_position(column).ok_or_else(|| {
                EngineError::Internal(format!(
                    "the {TOKEN_TABLE} table has no {column} column; run `opsbuffer migrate`"
                ))
            })?;
            conditions.push(Condition::eq(position, value));
        }
        let page = if conditions.is_empty() {
            // A list follows the cursors through every token.
            self.query_all(&table, conditions, MAX_LISTED).await?
        } else {
            let query = Query { conditions, ..Query::all(&table, 2) };
            self.query(&table, &query, Consistency::Merged).await?
        };
        Ok(page.page.records.iter().filter_map(|r| TokenRow::from_json(&r.row.to_json(&table))).collect())
    }

    async fn last_used(&self, ids: &[Uuid]) -> Vec<Option<i64>> {
        match self.buffer.token_last_used(ids).await {
            Ok(times) => times,
            Err(error) => {
                tracing::warn!(%error, "could not read the tokens' last use from Redis");
                vec![None; ids.len()]
            }
        }
    }

    /// Creates a token through the normal write path and returns it with
    /// its secret, which is not stored anywhere.
    pub async fn create_token(
        &self,
        name: &str,
        scopes: &[Scope],
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<CreatedToken, EngineError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(
                opsbuffer_core::tx::WriteError::invalid("invalid_value", "name", "the token name is empty").into()
            );
        }
        if scopes.is_empty() {
            return Err(opsbuffer_core::tx::WriteError::invalid(
                "invalid_value",
                "scopes",
                "a token needs at least one scope: read:observations, write:observations or admin",
            )
            .into());
        }
        if expires_at.is_some_and(|e| e <= Utc::now()) {
            return Err(opsbuffer_core::tx::WriteError::invalid(
                "invalid_value",
                "expires_at",
                "the expiry time is in the past",
            )
            .into());
        }
        let table = self.token_table()?;
        let token = generate_token()?;
        let token_id = token_id_of(&token).expect("generated tokens are well-formed").to_owned();
        let now = Utc::now();
        let scope_names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        let mut data = Map::new();
        data.insert("token_id".into(), json!(token_id));
        data.insert("token_hash".into(), json!(hex(&hash_token(&token))));
        data.insert("name".into(), json!(name));
        data.insert("scopes".into(), json!(scope_names));
        data.insert("created_at".into(), json!(time_text(now)));
        data.insert("expires_at".into(), expires_at.map_or(Json::Null, |e| json!(time_text(e))));
        data.insert("created_site".into(), json!(self.config.site_name));

        let change = {
            let mut new_uuid = Uuid::now_v7;
            let mut ctx = PlanContext { now: now.timestamp_micros(), new_uuid: &mut new_uuid };
            plan_create(&table, &data, "", &mut ctx)?
        };
        let id = match &change.primary_key {
            Value::Uuid(id) => *id,
            other => return Err(EngineError::Internal(format!("api_token has a non-uuid key {other:?}"))),
        };
        let plan = Plan { steps: vec![PlannedStep { op: StepOp::Create, table, changes: vec![change] }] };
        let receipt = self.submit(plan).await?;
        tracing::info!(token_id = %token_id, name, scopes = ?scope_names, transaction_id = %receipt.transaction_id, "created an API token");
        let row = TokenRow {
            id,
            token_id,
            hash: None,
            name: name.to_owned(),
            scopes: scope_names.iter().map(|s| (*s).to_owned()).collect(),
            created_at: Some(now),
            expires_at,
            revoked_at: None,
        };
        Ok(CreatedToken { token, info: row.info(None), transaction_id: receipt.transaction_id, status: receipt.status })
    }

    /// Every token of the merged view, oldest first, without hashes.
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, EngineError> {
        let mut rows = self.token_rows(None).await?;
        rows.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let last_used = self.last_used(&ids).await;
        Ok(rows.iter().zip(last_used).map(|(row, used)| row.info(used)).collect())
    }

    /// One token by its primary key or its short id.
    async fn find_token(&self, id: &str) -> Result<TokenRow, EngineError> {
        let filter = match Uuid::parse_str(id) {
            Ok(uuid) => ("id", Value::Uuid(uuid)),
            Err(_) => ("token_id", Value::Text(id.to_owned())),
        };
        self.token_rows(Some(filter)).await?.pop().ok_or_else(|| {
            EngineError::not_found(
                "token_not_found",
                format!("no API token has the id {id:?}; `opsbuffer token list` shows them"),
            )
        })
    }

    /// One token by its primary key or its short id.
    pub async fn token(&self, id: &str) -> Result<TokenInfo, EngineError> {
        let row = self.find_token(id).await?;
        let used = self.last_used(&[row.id]).await.pop().flatten();
        Ok(row.info(used))
    }

    /// Revokes a token by its primary key or short id. Revoking a revoked
    /// token changes nothing. This process stops accepting it at once,
    /// others within [`VERIFICATION_CACHE_TTL`].
    pub async fn revoke_token(&self, id: &str) -> Result<TokenInfo, EngineError> {
        let mut row = self.find_token(id).await?;
        self.tokens.verified.lock().expect("token cache lock").remove(&row.token_id);
        if row.revoked_at.is_some() {
            return Ok(row.info(None));
        }
        let table = self.token_table()?;
        let now = Utc::now();
        let mut data = Map::new();
        data.insert("revoked_at".into(), json!(time_text(now)));
        let change = plan_update(&table, &json!(row.id), &data, "", "")?;
        let plan = Plan { steps: vec![PlannedStep { op: StepOp::Update, table, changes: vec![change] }] };
        let receipt = self.submit(plan).await?;
        tracing::info!(token_id = %row.token_id, name = %row.name, transaction_id = %receipt.transaction_id, "revoked an API token");
        row.revoked_at = Some(now);
        Ok(row.info(None))
    }

    /// Checks a bearer token: its shape, then its hash against the merged
    /// view (or a verification less than [`VERIFICATION_CACHE_TTL`] old),
    /// then expiry and revocation. Hashes are compared in constant time.
    pub async fn verify_token(&self, token: &str) -> Result<Principal, TokenRejection> {
        let result = self.verify_token_uncounted(token).await;
        let label = match &result {
            Ok(_) => "valid",
            Err(TokenRejection::Malformed | TokenRejection::Unknown) => "invalid",
            Err(TokenRejection::Expired { .. }) => "expired",
            Err(TokenRejection::Revoked { .. }) => "revoked",
            Err(TokenRejection::Unavailable(_)) => "unavailable",
        };
        self.metrics.observe_token(label);
        if let Ok(principal) = &result {
            self.record_token_use(principal.id);
        }
        result
    }

    async fn verify_token_uncounted(&self, token: &str) -> Result<Principal, TokenRejection> {
        let token_id = token_id_of(token).ok_or(TokenRejection::Malformed)?;
        let hash = hash_token(token);

        let cached = self.tokens.verified.lock().expect("token cache lock").get(token_id).cloned();
        if let Some(cached) = cached
            && cached.checked_at.elapsed() < VERIFICATION_CACHE_TTL
            && bool::from(cached.hash.ct_eq(&hash))
        {
            if cached.expires_at_ms.is_some_and(|e| e <= now_ms()) {
                self.tokens.verified.lock().expect("token cache lock").remove(token_id);
            } else {
                return Ok(cached.principal);
            }
        }

        let rows = self
            .token_rows(Some(("token_id", Value::Text(token_id.to_owned()))))
            .await
            .map_err(TokenRejection::Unavailable)?;
        // The unique constraint on token_id leaves at most one row.
        let row = rows.into_iter().find(|r| r.hash.is_some_and(|h| bool::from(h.ct_eq(&hash))));
        let Some(row) = row else {
            return Err(TokenRejection::Unknown);
        };
        if row.revoked_at.is_some() {
            return Err(TokenRejection::Revoked { token_id: row.token_id });
        }
        if let Some(expires_at) = row.expires_at
            && expires_at <= Utc::now()
        {
            return Err(TokenRejection::Expired { token_id: row.token_id, expired_at: time_text(expires_at) });
        }
        let principal = row.principal();
        let mut verified = self.tokens.verified.lock().expect("token cache lock");
        if verified.len() >= MAX_CACHED {
            verified.clear();
        }
        verified.insert(
            row.token_id.clone(),
            CachedVerification {
                hash,
                principal: principal.clone(),
                expires_at_ms: row.expires_at.map(|e| e.timestamp_millis()),
                checked_at: Instant::now(),
            },
        );
        Ok(principal)
    }

    /// Records a token's use in Redis in the background, at most once per
    /// [`LAST_USED_PRECISION`] per token in this process.
    fn record_token_use(&self, id: Uuid) {
        {
            let mut recorded = self.tokens.last_recorded.lock().expect("token use lock");
            if recorded.get(&id).is_some_and(|at| at.elapsed() < LAST_USED_PRECISION) {
                return;
            }
            if recorded.len() >= MAX_CACHED {
                recorded.clear();
            }
            recorded.insert(id, Instant::now());
        }
        let buffer = self.buffer.clone();
        tokio::spawn(async move {
            if let Err(error) = buffer.record_token_use(id, now_ms()).await {
                tracing::warn!(token = %id, %error, "could not record the token's last use in Redis");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse() {
        let token = generate_token().unwrap();
        assert!(token.starts_with("opsb_"), "{token}");
        assert_eq!(token.len(), 5 + 8 + 1 + 43, "{token}");
        let id = token_id_of(&token).expect("well-formed");
        assert_eq!(id, &token[5..13]);
        assert_ne!(generate_token().unwrap(), token);
    }

    #[test]
    fn malformed_tokens_have_no_id() {
        assert_eq!(token_id_of("opsb_short"), None);
        assert_eq!(token_id_of("Bearer opsb_abcdefgh_x"), None);
        assert_eq!(token_id_of(&format!("opsb_ABCDEFGH_{}", "a".repeat(43))), None);
        assert_eq!(token_id_of(&format!("opsb_abcdefgh_{}", "a".repeat(42))), None);
        assert_eq!(token_id_of(&format!("opsb_abcdefgh_{}", "a".repeat(43))), Some("abcdefgh"));
    }

    #[test]
    fn hashes_round_trip_as_hex() {
        let hash = hash_token("opsb_x");
        assert_eq!(unhex(&hex(&hash)), Some(hash));
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn admin_allows_every_scope() {
        let principal =
            Principal { id: Uuid::nil(), token_id: "abcdefgh".into(), name: "n".into(), scopes: vec![Scope::Admin] };
        assert!(Scope::ALL.iter().all(|s| principal.allows(*s)));
        let reader = Principal { scopes: vec![Scope::ReadObservations], ..principal };
        assert!(reader.allows(Scope::ReadObservations));
        assert!(!reader.allows(Scope::WriteObservations));
        assert!(!reader.allows(Scope::Admin));
    }

    #[test]
    fn scope_lists_parse() {
        assert_eq!(
            Scope::parse_list("write:observations, read:observations").unwrap(),
            vec![Scope::ReadObservations, Scope::WriteObservations]
        );
        assert!(Scope::parse_list("").is_err());
        assert!(Scope::parse_list("read").unwrap_err().contains("read"));
    }
}
