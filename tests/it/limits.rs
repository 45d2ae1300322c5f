//! CONTRACT §3.2: body caps, malformed JSON, unknown paths, wrong methods, CORS.

use reqwest::StatusCode;

use crate::harness::{client, Gateway, Options, TOKEN};

/// Every error body is JSON with an `error` string and no host path.
fn check_error_body(body: &str, home: &str) {
    let value: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
    assert!(value["error"].is_string(), "{body}");
    assert!(!body.contains(home), "host path in {body}");
    assert!(
        !body.contains("/tmp") && !body.contains("/root"),
        "host path in {body}"
    );
}

#[tokio::test]
async fn errors_are_json_without_host_paths() {
    let gw = Gateway::start(Options::default().token());
    let home = gw.home_path().display().to_string();
    let auth = format!("Bearer {TOKEN}");
    let c = client();

    let res = c.get(gw.url("/no/such/path")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let body = res.text().await.unwrap();
    assert_eq!(body, r#"{"error":"not found"}"#);

    let res = c.post(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    check_error_body(&res.text().await.unwrap(), &home);

    let res = c.get(gw.gw_url("/chat")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);

    let res = c
        .post(gw.gw_url("/chat"))
        .header("Authorization", &auth)
        .header("content-type", "application/json")
        .body("{\"message\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body = res.text().await.unwrap();
    check_error_body(&body, &home);
    assert!(body.starts_with(r#"{"error":"invalid json: "#), "{body}");

    let big = vec![b'a'; 2 * 1024 * 1024];
    let res = c
        .post(gw.gw_url("/chat"))
        .header("Authorization", &auth)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    check_error_body(&res.text().await.unwrap(), &home);

    let res = c
        .get(gw.url("/api/v1/timeline?limit=abc"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    check_error_body(&res.text().await.unwrap(), &home);

    let res = c
        .post(gw.gw_url("/chat"))
        .header("Authorization", &auth)
        .json(&serde_json::json!({"message": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        res.text().await.unwrap(),
        r#"{"error":"no model provider configured"}"#
    );
}

#[tokio::test]
async fn cross_origin_requests_are_refused_unless_listed() {
    let gw = Gateway::start(
        Options::default().env("KAFCLAW_GATEWAY_CORS_ORIGINS", "https://ops.example.com"),
    );
    let c = client();
    let res = c
        .get(gw.url("/api/v1/status"))
        .header("Origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.headers().get("access-control-allow-origin").is_none());

    let res = c
        .get(gw.url("/api/v1/status"))
        .header("Origin", "https://ops.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://ops.example.com"
    );

    let same = format!("http://{}", gw.dashboard);
    let res = c
        .get(gw.url("/api/v1/status"))
        .header("Origin", same)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "same origin is not cross-origin"
    );
    assert!(res.headers().get("access-control-allow-origin").is_none());
}
