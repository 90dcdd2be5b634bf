//! The OpenAPI document against the router: every route is documented,
//! every documented operation is routed, and the documentation page loads
//! nothing from the internet.

use std::collections::BTreeSet;

use opsbuffer_tests::{SiteOptions, TestSite};
use reqwest::Method;
use serde_json::Value;

/// Every route of the router, as `METHOD path`. A route added to the
/// router must be added here, and the test then checks it is documented.
const ROUTES: &[&str] = &[
    "GET /buffer/blocked",
    "GET /buffer/dead",
    "DELETE /buffer/dead/{id}",
    "POST /buffer/dead/{id}/retry",
    "GET /docs",
    "GET /executed_obs_units/{obs_unit_id}",
    "POST /executed_obs_units/start",
    "PUT /executed_obs_units/{id}/finish",
    "GET /health",
    "GET /metrics",
    "GET /openapi.json",
    "POST /raw_data_files",
    "POST /raw_data_files/",
    "POST /raw_data_files/bulk",
    "GET /raw_data_files/{id}",
    "POST /raw_data_package",
    "POST /raw_data_package/",
    "GET /raw_data_package/{id}",
    "PUT /raw_data_package/{id}/finalize",
    "GET /records/{table}",
    "GET /records/{table}/{id}",
    "GET /records/{table}/{id}/{child_table}",
    "GET /schema",
    "POST /schema/reload",
    "GET /tokens",
    "POST /tokens",
    "GET /tokens/{id}",
    "DELETE /tokens/{id}",
    "POST /transactions",
    "GET /transactions/{id}",
];

fn documented_operations(document: &Value) -> BTreeSet<String> {
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_some() {
                operations.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    operations
}

/// A path with each `{parameter}` replaced by a plausible value.
fn concrete(path: &str) -> String {
    path.replace("{table}", "executed_obs_unit")
        .replace("{child_table}", "raw_data_file")
        .replace("{obs_unit_id}", "1")
        .replace("{id}", "01900000-0000-7000-8000-000000000000")
}

#[tokio::test]
async fn document_lists_every_route() {
    let site = TestSite::start(SiteOptions::default()).await;
    let (status, document) = site.get("/openapi.json").await;
    assert_eq!(status, 200);

    let documented = documented_operations(&document);
    let routed: BTreeSet<String> = ROUTES.iter().map(|r| (*r).to_owned()).collect();
    let undocumented: Vec<&String> = routed.difference(&documented).collect();
    assert!(undocumented.is_empty(), "routes missing from the document: {undocumented:?}");
    let unlisted: Vec<&String> = documented.difference(&routed).collect();
    assert!(unlisted.is_empty(), "documented operations missing from this test's list: {unlisted:?}");

    // The document built in-process is the one served.
    let built = serde_json::to_value(opsbuffer_http::openapi(&site.engine)).unwrap();
    assert_eq!(documented_operations(&built), documented);
    site.stop().await;
}

#[tokio::test]
async fn documented_operations_are_routed() {
    let site = TestSite::start(SiteOptions::default()).await;
    let (_, document) = site.get("/openapi.json").await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for operation in documented_operations(&document) {
        let (method, path) = operation.split_once(' ').unwrap();
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = client.request(method.clone(), format!("{}{}", site.base, concrete(path)));
        if method == Method::POST || method == Method::PUT {
            request = request.header("content-type", "application/json").body("{}");
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_ne!(body["error"]["code"], "no_route", "{operation} is documented but not routed: {status} {text}");
        assert_ne!(status, 405, "{operation}: method not allowed");
    }
    site.stop().await;
}

#[tokio::test]
async fn document_describes_types_and_security() {
    let site = TestSite::start(SiteOptions::default()).await;
    let (_, document) = site.get("/openapi.json").await;
    let schemas = document["components"]["schemas"].as_object().expect("schemas");
    for name in ["ErrorResponse", "WriteReceipt", "TransactionRequest", "RecordPage", "Health", "TokenInfo"] {
        assert!(schemas.contains_key(name), "schema {name} is missing");
    }
    assert_eq!(document["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let security = &document["paths"]["/transactions"]["post"]["security"];
    assert_eq!(security[0]["bearer"][0], "write:observations", "{security}");
    let request = &document["paths"]["/transactions"]["post"]["requestBody"];
    assert!(request.to_string().contains("TransactionRequest"), "{request}");
    site.stop().await;
}

#[tokio::test]
async fn docs_page_loads_without_internet() {
    let site = TestSite::start(SiteOptions::default()).await;
    let page = site.http.get(format!("{}/docs/", site.base)).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    let initializer = site.http.get(format!("{}/docs/swagger-initializer.js", site.base)).send().await.unwrap();
    assert_eq!(initializer.status().as_u16(), 200);
    let initializer = initializer.text().await.unwrap();
    assert!(initializer.contains("/openapi.json"), "{initializer}");
    assert!(initializer.contains("\"validatorUrl\": \"none\""), "{initializer}");
    for (name, text) in [("index page", &html), ("initializer", &initializer)] {
        assert!(!text.contains("http://"), "the {name} refers to an external URL: {text}");
        assert!(!text.contains("https://"), "the {name} refers to an external URL: {text}");
    }
    for asset in ["swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui-standalone-preset.js"] {
        let response = site.http.get(format!("{}/docs/{asset}", site.base)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{asset} is served from the binary");
    }
    site.stop().await;
}
