//! Bearer tokens against the real services: the matrix of tokens and route
//! classes, tokens created while main is unreachable, revocation, last
//! use, and the token table kept out of the generic endpoints.

use std::time::Duration;

use opsbuffer_engine::OpenEndpoint;
use opsbuffer_engine::tokens::Scope;
use opsbuffer_tests::{REPLAY, SiteOptions, TestSite, admin, eventually};
use reqwest::Method;
use serde_json::{Value, json};

/// One request of a route class.
struct Route {
    class: &'static str,
    method: Method,
    path: String,
    body: Option<Value>,
}

/// One request of every route class; `obs_unit` is a reference obs unit.
fn routes(obs_unit: i32) -> Vec<Route> {
    vec![
        Route { class: "read", method: Method::GET, path: "/records/executed_obs_unit?limit=1".into(), body: None },
        Route {
            class: "write",
            method: Method::POST,
            path: "/executed_obs_units/start".into(),
            body: Some(json!({"obs_unit_id": obs_unit})),
        },
        Route { class: "admin", method: Method::GET, path: "/buffer/dead".into(), body: None },
        Route { class: "admin", method: Method::GET, path: "/tokens".into(), body: None },
        Route { class: "open", method: Method::GET, path: "/health".into(), body: None },
        Route { class: "open", method: Method::GET, path: "/metrics".into(), body: None },
        Route { class: "open", method: Method::GET, path: "/openapi.json".into(), body: None },
    ]
}

/// Sends a request and returns the status, the `WWW-Authenticate` header
/// and the body as JSON (or as a string when it is not JSON).
async fn send(site: &TestSite, route: &Route, token: Option<&str>) -> (u16, Option<String>, Value) {
    let mut request = site.http.request(route.method.clone(), format!("{}{}", site.base, route.path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = &route.body {
        request = request.json(body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let challenge = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap_or_default();
    (status, challenge, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// What one token must get on one route class.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Allowed,
    Unauthorized(&'static str),
    Forbidden,
}

#[tokio::test]
async fn token_matrix_covers_every_route_class() {
    let _replay = REPLAY.read().await;
    let admin_db = admin().await;
    let reference = admin_db.reference_data().await;
    let site =
        TestSite::start(SiteOptions::with_auth(&[OpenEndpoint::Health, OpenEndpoint::Metrics, OpenEndpoint::Docs]))
            .await;
    let engine = &site.engine;

    let admin_token = engine.create_token("admin", &[Scope::Admin], None).await.unwrap().token;
    let reader = engine.create_token("reader", &[Scope::ReadObservations], None).await.unwrap().token;
    let writer = engine.create_token("writer", &[Scope::WriteObservations], None).await.unwrap().token;
    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let expired = engine.create_token("expiring", &[Scope::Admin], Some(soon)).await.unwrap().token;
    let revoked = engine.create_token("revoked", &[Scope::Admin], None).await.unwrap();
    engine.revoke_token(&revoked.info.token_id).await.unwrap();
    let unknown = "opsb_abcdefgh_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    tokio::time::sleep(Duration::from_millis(1600)).await;

    use Expect::*;
    let cases: Vec<(&str, Option<&str>, [Expect; 4])> = vec![
        // token, then the expectation for read, write, admin, open.
        (
            "no token",
            None,
            [Unauthorized("missing_token"), Unauthorized("missing_token"), Unauthorized("missing_token"), Allowed],
        ),
        (
            "malformed",
            Some("not-a-token"),
            [Unauthorized("invalid_token"), Unauthorized("invalid_token"), Unauthorized("invalid_token"), Allowed],
        ),
        (
            "unknown",
            Some(unknown),
            [Unauthorized("invalid_token"), Unauthorized("invalid_token"), Unauthorized("invalid_token"), Allowed],
        ),
        (
            "expired",
            Some(&expired),
            [Unauthorized("token_expired"), Unauthorized("token_expired"), Unauthorized("token_expired"), Allowed],
        ),
        (
            "revoked",
            Some(&revoked.token),
            [Unauthorized("token_revoked"), Unauthorized("token_revoked"), Unauthorized("token_revoked"), Allowed],
        ),
        ("reader", Some(&reader), [Allowed, Forbidden, Forbidden, Allowed]),
        ("writer", Some(&writer), [Forbidden, Allowed, Forbidden, Allowed]),
        ("admin", Some(&admin_token), [Allowed, Allowed, Allowed, Allowed]),
    ];
    for (name, token, expectations) in cases {
        for route in routes(reference.obs_unit) {
            let index = ["read", "write", "admin", "open"].iter().position(|c| *c == route.class).unwrap();
            let expected = expectations[index];
            let (status, challenge, body) = send(&site, &route, token).await;
            let what = format!("{name} on {} {}: {status} {body}", route.method, route.path);
            match expected {
                Allowed => assert!((200..300).contains(&status), "{what}"),
                Unauthorized(code) => {
                    assert_eq!(status, 401, "{what}");
                    assert_eq!(body["error"]["code"], code, "{what}");
                    assert!(challenge.as_deref().is_some_and(|c| c.starts_with("Bearer")), "{what}: {challenge:?}");
                }
                Forbidden => {
                    assert_eq!(status, 403, "{what}");
                    assert_eq!(body["error"]["code"], "insufficient_scope", "{what}");
                    let needed = match route.class {
                        "read" => "read:observations",
                        "write" => "write:observations",
                        _ => "admin",
                    };
                    assert!(body["error"]["message"].as_str().unwrap().contains(needed), "{what}");
                    assert!(challenge.as_deref().is_some_and(|c| c.contains("insufficient_scope")), "{what}");
                }
            }
        }
    }
    site.stop().await;
}

#[tokio::test]
async fn closed_open_endpoints_need_any_token() {
    let site = TestSite::start(SiteOptions::with_auth(&[])).await;
    let reader = site.engine.create_token("reader", &[Scope::ReadObservations], None).await.unwrap().token;
    for path in ["/health", "/metrics", "/openapi.json"] {
        let (status, _) = site.get(path).await;
        assert_eq!(status, 401, "{path} without a token");
        let (status, body) = site.call_as(Method::GET, path, None, Some(&reader)).await;
        assert_eq!(status, 200, "{path} with a read token: {body}");
    }
    site.stop().await;
}

#[tokio::test]
async fn disabled_auth_lets_everything_through() {
    let site = TestSite::start(SiteOptions::default()).await;
    let (status, body) = site.get("/buffer/dead").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = site.call_as(Method::GET, "/tokens", None, Some("not-a-token")).await;
    assert_eq!(status, 200, "{body}");
    site.stop().await;
}

#[tokio::test]
async fn token_created_during_outage_works_at_once() {
    let _replay = REPLAY.read().await;
    let admin_db = admin().await;
    let reference = admin_db.reference_data().await;
    let site = TestSite::start(SiteOptions::with_auth(&[OpenEndpoint::Health])).await;
    let admin_token = site.engine.create_token("admin", &[Scope::Admin], None).await.unwrap().token;
    site.wait_drained().await;

    site.proxy().go_down();
    let (status, created) = site
        .call_as(
            Method::POST,
            "/tokens",
            Some(json!({"name": "outage writer", "scopes": ["write:observations", "read:observations"]})),
            Some(&admin_token),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "buffered");
    let token = created["token"].as_str().unwrap().to_owned();

    let (status, body) = site
        .call_as(
            Method::POST,
            "/tokens",
            Some(json!({"name": "forever", "scopes": ["admin"], "expires_in": "99999999d"})),
            Some(&admin_token),
        )
        .await;
    assert_eq!(status, 400, "an expiry past the year 9999: {body}");
    assert_eq!(body["error"]["field"], "expires_in", "{body}");
    let (status, body) =
        site.call_as(Method::POST, "/tokens", Some(json!({"scopes": ["admin"]})), Some(&admin_token)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "missing_field", "{body}");
    assert_eq!(body["error"]["field"], "name", "{body}");
    assert!(token.starts_with("opsb_"), "{created}");

    let (status, body) = site
        .call_as(
            Method::POST,
            "/executed_obs_units/start",
            Some(json!({"obs_unit_id": reference.obs_unit})),
            Some(&token),
        )
        .await;
    assert_eq!(status, 201, "the new token writes while main is down: {body}");
    let (status, body) = site.call_as(Method::GET, "/records/executed_obs_unit?limit=1", None, Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let health = site.get("/health").await.1;
    assert_eq!(health["main"]["reachable"], false, "{health}");

    // Once main is back the token row drains and replicates, and the token
    // keeps working from the replica after the verification cache expires.
    site.proxy().come_up();
    site.wait_drained().await;
    let on_main: i64 = admin_db
        .main
        .query_one("SELECT count(*) FROM api_token WHERE token_id = $1", &[&created["token_id"].as_str().unwrap()])
        .await
        .unwrap()
        .get(0);
    assert_eq!(on_main, 1);
    tokio::time::sleep(opsbuffer_engine::tokens::VERIFICATION_CACHE_TTL + Duration::from_millis(200)).await;
    let (status, body) = site.call_as(Method::GET, "/records/executed_obs_unit?limit=1", None, Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    site.stop().await;
}

#[tokio::test]
async fn revoked_token_is_rejected_at_once() {
    let site = TestSite::start(SiteOptions::with_auth(&[])).await;
    let admin_token = site.engine.create_token("admin", &[Scope::Admin], None).await.unwrap().token;
    let reader = site.engine.create_token("reader", &[Scope::ReadObservations], None).await.unwrap();
    let (status, _) = site.call_as(Method::GET, "/schema", None, Some(&reader.token)).await;
    assert_eq!(status, 200, "the reader works before revocation (and is now cached)");

    let path = format!("/tokens/{}", reader.info.token_id);
    let (status, body) = site.call_as(Method::DELETE, &path, None, Some(&admin_token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "revoked");
    let (status, body) = site.call_as(Method::GET, "/schema", None, Some(&reader.token)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "token_revoked");
    site.stop().await;
}

#[tokio::test]
async fn token_list_shows_last_use_without_secrets() {
    let site = TestSite::start(SiteOptions::with_auth(&[])).await;
    let admin_token = site.engine.create_token("admin", &[Scope::Admin], None).await.unwrap();
    let (status, _) = site.call_as(Method::GET, "/tokens", None, Some(&admin_token.token)).await;
    assert_eq!(status, 200);

    let listed = eventually("the admin token's last use", || async {
        let (_, body) = site.call_as(Method::GET, "/tokens", None, Some(&admin_token.token)).await;
        let entry = body.as_array()?.iter().find(|t| t["token_id"] == admin_token.info.token_id.as_str())?.clone();
        entry["last_used_at"].is_string().then_some(body)
    })
    .await;
    let text = listed.to_string();
    assert!(!text.contains(&admin_token.token), "the list must not contain the token");
    assert!(!text.contains("token_hash"), "the list must not contain hashes: {text}");
    site.stop().await;
}

#[tokio::test]
async fn token_table_is_hidden_from_generic_endpoints() {
    let site = TestSite::start(SiteOptions::default()).await;
    site.engine.create_token("hidden", &[Scope::Admin], None).await.unwrap();

    let (status, body) = site.get("/records/api_token").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "unknown_table");
    let (_, schema) = site.get("/schema").await;
    let names: Vec<&str> = schema["tables"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(!names.contains(&"api_token"), "{names:?}");
    let (status, body) = site
        .post(
            "/transactions",
            json!({"steps": [{"op": "create", "table": "api_token", "data": {
                "token_id": "aaaaaaaa", "token_hash": "0".repeat(64), "name": "forged", "scopes": ["admin"]
            }}]}),
        )
        .await;
    assert!((400..500).contains(&status), "creating a token through /transactions must fail: {status} {body}");
    site.stop().await;
}
