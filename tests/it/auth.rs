//! CONTRACT §3.1: strict bearer authentication, exemptions, local mode.

use reqwest::StatusCode;

use std::collections::HashMap;

use crate::harness::{client, run, security_check_row, Gateway, Options, TOKEN};

async fn get(url: &str, auth: Option<&str>) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut req = client().get(url);
    if let Some(value) = auth {
        req = req.header("Authorization", value);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    (status, headers, res.text().await.unwrap())
}

#[tokio::test]
async fn protected_routes_need_exactly_a_bearer_token() {
    let gw = Gateway::start(
        Options::default()
            .token()
            .env("KAFCLAW_SECURITY_AUTH_LOCKOUT_MAX_FAILURES", "1000")
            .env("KAFCLAW_INCIDENTS_AUTH_FAILURES_PER_IP", "0"),
    );
    let url = gw.url("/api/v1/supervisor");
    let bearer = format!("Bearer {TOKEN}");
    let lower = format!("bearer {TOKEN}");
    let two_spaces = format!("Bearer  {TOKEN}");
    let basic = format!("Basic {TOKEN}");
    let wrong = format!("Bearer {}x", &TOKEN[..TOKEN.len() - 1]);
    let prefix = format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]);

    let refused: &[(&str, Option<&str>)] = &[
        ("no header", None),
        ("wrong token", Some(&wrong)),
        ("prefix of the token", Some(&prefix)),
        ("raw token without scheme", Some(TOKEN)),
        ("two spaces", Some(&two_spaces)),
        ("basic scheme", Some(&basic)),
        ("empty bearer", Some("Bearer ")),
    ];
    for (case, auth) in refused {
        let (status, headers, body) = get(&url, *auth).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}");
        assert_eq!(headers["www-authenticate"], "Bearer", "{case}");
        assert_eq!(body, r#"{"error":"unauthorized"}"#, "{case}");
        assert!(!body.contains(TOKEN));
    }
    let (status, _, _) = get(&format!("{url}?token={TOKEN}"), None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "token in the query string"
    );
    let (status, _, _) = get(&format!("{url}?access_token={TOKEN}"), None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "access_token in the query string"
    );
    let cookie = client()
        .get(&url)
        .header("Cookie", format!("token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        cookie.status(),
        StatusCode::UNAUTHORIZED,
        "token in a cookie"
    );

    for auth in [&bearer, &lower] {
        let (status, _, body) = get(&url, Some(auth)).await;
        assert_eq!(status, StatusCode::OK, "{auth}");
        assert!(body.contains("\"store\""));
    }
    let (status, _, body) = get(&gw.url("/api/v1/auth/verify"), Some(&bearer)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        r#"{"auth_required":true,"scope":"admin","valid":true}"#
    );
    let (status, _, _) = get(&gw.url("/api/v1/timeline"), Some(&bearer)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn exemptions_are_exactly_healthz_and_minimal_status() {
    let gw = Gateway::start(Options::default().token());
    for url in [gw.url("/healthz"), gw.gw_url("/healthz")] {
        let (status, _, body) = get(&url, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, r#"{"ok":true}"#);
    }
    let (status, _, body) = get(&gw.url("/api/v1/status"), None).await;
    assert_eq!(status, StatusCode::OK);
    let minimal: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut keys: Vec<_> = minimal.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["ok", "uptime_seconds", "version"]);

    let (_, _, full) = get(&gw.url("/api/v1/status"), Some(&format!("Bearer {TOKEN}"))).await;
    let full: serde_json::Value = serde_json::from_str(&full).unwrap();
    assert_eq!(full["mode"], "loopback");
    assert!(full["supervisor"]["children"].as_u64().unwrap() >= 1);

    let (status, _, _) = get(&gw.url("/api/v1/status"), Some("Bearer nope")).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a wrong token on status is still refused"
    );
    for path in [
        "/api/v1/auth/verify",
        "/api/v1/timeline",
        "/api/v1/supervisor",
    ] {
        let (status, _, _) = get(&gw.url(path), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let chat = client()
        .post(gw.gw_url("/chat"))
        .json(&serde_json::json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn local_mode_allows_loopback_without_a_token() {
    let gw = Gateway::start(Options::default());
    let (status, _, body) = get(&gw.url("/api/v1/auth/verify"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, r#"{"auth_required":false,"valid":true}"#);
    let (status, _, _) = get(&gw.url("/api/v1/supervisor"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, status_body) = get(&gw.url("/api/v1/status"), None).await;
    assert!(status_body.contains("\"mode\":\"local\""));
}

/// "No token configured" means no token at all: once an operator issues one (any scope) on a
/// running loopback gateway, a tokenless loopback request is refused like a remote one, also
/// for admin routes; revoking the last token brings local mode back.
#[tokio::test]
async fn an_issued_token_ends_tokenless_local_mode_on_a_running_gateway() {
    let gw = Gateway::start(Options::default());
    let home = gw.home_path();
    let control = gw.url("/api/v1/admin/control");
    let relax = serde_json::json!({"type": "relax_tools"});
    for scope in ["chat", "read", "admin"] {
        let (code, token, err) = run(
            &home,
            &HashMap::new(),
            &["token", "create", "--scope", scope, "--name", scope],
        );
        assert_eq!(code, 0, "{err}");
        let (status, _, _) = get(&gw.url("/api/v1/auth/verify"), None).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "verify after a {scope} token"
        );
        let (status, _, _) = get(&gw.url("/api/v1/supervisor"), None).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "read after a {scope} token"
        );
        let res = client().post(&control).json(&relax).send().await.unwrap();
        assert_eq!(
            res.status(),
            StatusCode::UNAUTHORIZED,
            "control after a {scope} token"
        );
        let bearer = format!("Bearer {}", token.trim());
        let (status, _, body) = get(&gw.url("/api/v1/auth/verify"), Some(&bearer)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains(&format!("\"scope\":\"{scope}\"")), "{body}");
        if scope != "chat" {
            let (_, _, status_body) = get(&gw.url("/api/v1/status"), Some(&bearer)).await;
            assert!(
                status_body.contains("\"mode\":\"loopback\""),
                "{status_body}"
            );
        }
        let row = security_check_row(&home, &HashMap::new(), "local_mode");
        assert_eq!(
            row["status"], "pass",
            "the running gateway's tokens count: {row}"
        );
        let (code, _, err) = run(&home, &HashMap::new(), &["token", "revoke", scope]);
        assert_eq!(code, 0, "{err}");
    }
    let (status, _, body) = get(&gw.url("/api/v1/auth/verify"), None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "every token revoked: local mode again"
    );
    assert_eq!(body, r#"{"auth_required":false,"valid":true}"#);
}

#[tokio::test]
async fn a_token_never_reaches_the_logs() {
    let mut gw = Gateway::start(Options::default().token());
    get(
        &gw.url("/api/v1/supervisor"),
        Some(&format!("Bearer {TOKEN}")),
    )
    .await;
    get(
        &gw.url("/api/v1/supervisor"),
        Some("Bearer wrong-token-value"),
    )
    .await;
    gw.signal("TERM");
    gw.wait_exit(std::time::Duration::from_secs(10));
    let logs = gw.stderr();
    assert!(logs.contains("authentication failed"), "{logs}");
    assert!(!logs.contains(TOKEN));
    assert!(!logs.contains("wrong-token-value"));
}

#[tokio::test]
async fn repeated_failures_lock_out_that_ip_only() {
    let gw = Gateway::start(Options::default().token());
    let url = gw.url("/api/v1/supervisor");
    let bearer = format!("Bearer {TOKEN}");
    for i in 0..10 {
        let (status, _, _) = get(&url, Some("Bearer wrong")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "failure {i}");
    }
    let asked = std::time::Instant::now();
    let (status, headers, body) = get(&url, Some(&bearer)).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "the right token is refused while locked out"
    );
    assert!(
        asked.elapsed() >= std::time::Duration::from_millis(200),
        "a locked-out client is tarpitted"
    );
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((290..=300).contains(&retry), "{retry}");
    assert!(body.contains("error"));

    // Another client (source address 127.0.0.2) is unaffected.
    let other = reqwest::Client::builder()
        .no_proxy()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let res = other
        .get(&url)
        .header("Authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn concurrent_failures_cannot_slip_past_the_lockout_threshold() {
    let gw = Gateway::start(Options::default().token());
    let url = gw.url("/api/v1/supervisor");
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            client()
                .get(url)
                .header("Authorization", "Bearer wrong")
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut unauthorized = 0;
    let mut locked = 0;
    for task in tasks {
        match task.await.unwrap() {
            StatusCode::UNAUTHORIZED => unauthorized += 1,
            StatusCode::TOO_MANY_REQUESTS => locked += 1,
            other => panic!("unexpected {other}"),
        }
    }
    // At most one request per HTTP worker can be between the check and the count.
    assert!(
        unauthorized <= 11,
        "{unauthorized} failures got through before the lockout"
    );
    assert_eq!(unauthorized + locked, 40);
}
