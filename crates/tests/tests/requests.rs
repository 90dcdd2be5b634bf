//! The request layer: request ids, route templates in the metrics, and
//! JSON bodies for the errors the router makes itself.

use opsbuffer_tests::{SiteOptions, TestSite};

#[tokio::test]
async fn request_id_is_returned() {
    let site = TestSite::start(SiteOptions::default()).await;
    let response = site.http.get(format!("{}/schema", site.base)).send().await.unwrap();
    let generated = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");

    let response =
        site.http.get(format!("{}/schema", site.base)).header("x-request-id", "batch-42.a").send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "batch-42.a", "the client's id is kept");

    let response = site
        .http
        .get(format!("{}/schema", site.base))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let replaced = response.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(replaced).is_ok(), "an id unfit for logs is replaced: {replaced}");
    site.stop().await;
}

#[tokio::test]
async fn unknown_paths_share_one_route_label() {
    let site = TestSite::start(SiteOptions::default()).await;
    for path in ["/nothing/here", "/or/here"] {
        let (status, body) = site.get(path).await;
        assert_eq!(status, 404);
        assert_eq!(body["error"]["code"], "no_route");
    }
    let text = site.http.get(format!("{}/metrics", site.base)).send().await.unwrap().text().await.unwrap();
    assert!(text.contains(r#"opsbuffer_http_requests_total{method="GET",route="unmatched",status="404"} 2"#), "{text}");
    assert!(!text.contains("/nothing/here"), "unknown paths must not become labels");
    site.stop().await;
}

#[tokio::test]
async fn wrong_method_gets_json_error() {
    let site = TestSite::start(SiteOptions::default()).await;
    let response = site.http.delete(format!("{}/raw_data_files/", site.base)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let allow = response.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("POST"), "{allow}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("Allow header"), "{body}");
    site.stop().await;
}
