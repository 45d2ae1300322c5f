//! `docs/openapi.yaml` against the real gateway (issue 16), both ways: every documented
//! operation is in the route table and served with its method and scope, every route of the
//! table is documented, no route is registered outside the table, and the examples and the
//! real answers validate against the documented schemas (a small JSON-schema checker below:
//! `type`, `const`, `enum`, `properties`, `required`, `additionalProperties`, `items`,
//! `oneOf`, `allOf`, `$ref` — the parts the document uses).

use std::collections::{BTreeSet, HashMap};

use kafclaw::http::table::{Access, Listener, Verb, ENDPOINTS};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use kafclaw_actors::channel::bridge::sign_bridge;
use kafclaw_actors::channel::whatsapp::sign_webhook;

use crate::channels::{options, wa_body, APP_SECRET, BRIDGE_SECRET, OWNER};
use crate::harness::{client, run, Gateway, TOKEN};
use crate::model_server::{self, ModelServer};

fn document() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml"))
        .expect("docs/openapi.yaml");
    serde_yaml_ng::from_str(&text).expect("docs/openapi.yaml is YAML")
}

/// `(listener, method, path)` of every documented operation, with its operation object.
fn operations(doc: &Value) -> Vec<(String, String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let listeners = match &op["x-kafclaw-listener"] {
                Value::String(one) => vec![one.clone()],
                Value::Array(many) => many.iter().map(|l| l.as_str().unwrap().into()).collect(),
                other => panic!("{method} {path}: x-kafclaw-listener is {other}"),
            };
            for listener in listeners {
                out.push((listener, method.clone(), path.clone(), op.clone()));
            }
        }
    }
    out
}

/// The security requirement a route's access means.
fn security(access: Access) -> Value {
    match access {
        Access::Public => json!([]),
        Access::PublicOrRead => json!([{}, {"bearer": ["read"]}]),
        Access::AnyToken => json!([{"bearer": []}]),
        Access::Read => json!([{"bearer": ["read"]}]),
        Access::Chat => json!([{"bearer": ["chat"]}]),
        Access::Admin => json!([{"bearer": ["admin"]}]),
        Access::WhatsAppSignature => json!(null),
        Access::BridgeSignature => json!([{"bridgeSignature": [], "bridgeTimestamp": []}]),
    }
}

#[test]
fn the_document_and_the_route_table_describe_the_same_routes() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let documented: BTreeSet<(String, String, String)> = operations(&doc)
        .into_iter()
        .map(|(l, m, p, _)| (l, m, p))
        .collect();
    let served: BTreeSet<(String, String, String)> = ENDPOINTS
        .iter()
        .filter(|e| !e.test_only)
        .map(|e| {
            (
                e.listener.as_str().into(),
                e.verb.as_str().into(),
                e.path.into(),
            )
        })
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from docs/openapi.yaml: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "documented but not served: {unserved:?}"
    );
    for e in ENDPOINTS.iter().filter(|e| !e.test_only) {
        let op = &doc["paths"][e.path][e.verb.as_str()];
        let expected = security(e.access);
        if !expected.is_null() {
            assert_eq!(
                op["security"], expected,
                "security of {:?} {}",
                e.verb, e.path
            );
        }
    }
    for e in ENDPOINTS.iter().filter(|e| e.test_only) {
        assert!(
            doc["paths"][e.path].is_null(),
            "test-only {} is documented",
            e.path
        );
    }
    // Every control message type is a documented variant.
    let variants: BTreeSet<String> = doc["components"]["schemas"]["ControlMessage"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let name = v["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
            doc["components"]["schemas"][name]["properties"]["type"]["const"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let known: BTreeSet<String> = kafclaw::http::routes::CONTROL_TYPES
        .iter()
        .map(|t| t.to_string())
        .collect();
    assert_eq!(variants, known, "control message types");
}

#[test]
fn no_route_is_registered_outside_the_table() {
    fn scan(dir: &std::path::Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                scan(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs")
                && !path.ends_with("http/table.rs")
            {
                let text = std::fs::read_to_string(&path).unwrap();
                for needle in [
                    "web::resource(",
                    "web::scope(",
                    ".service(",
                    ".route(",
                    "web::get()",
                    "web::post()",
                ] {
                    if text.contains(needle) {
                        found.push(format!("{} uses {needle}", path.display()));
                    }
                }
            }
        }
    }
    let mut found = Vec::new();
    scan(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &mut found,
    );
    assert!(
        found.is_empty(),
        "routes belong in src/gateway/http/table.rs: {found:?}"
    );
}

/// A tiny JSON-schema check of the parts the document uses; `Err` names the first mismatch.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.strip_prefix("#/components/schemas/").unwrap();
        return validate(doc, &doc["components"]["schemas"][name], value, at);
    }
    if let Some(expected) = schema.get("const") {
        if value != expected {
            return Err(format!("{at}: {value} is not {expected}"));
        }
    }
    if let Some(options) = schema["enum"].as_array() {
        if !options.contains(value) {
            return Err(format!("{at}: {value} not in {options:?}"));
        }
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => false,
        });
        if !ok {
            return Err(format!("{at}: {value} is not {types:?}"));
        }
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            validate(doc, s, value, at)?;
        }
    }
    if let Some(one) = schema["oneOf"].as_array() {
        let matching = one
            .iter()
            .filter(|s| validate(doc, s, value, at).is_ok())
            .count();
        if matching != 1 {
            return Err(format!("{at}: {value} matches {matching} of oneOf"));
        }
    }
    if let (Some(object), Some(props)) = (value.as_object(), schema["properties"].as_object()) {
        for required in schema["required"].as_array().into_iter().flatten() {
            if !object.contains_key(required.as_str().unwrap()) {
                return Err(format!("{at}: missing {required}"));
            }
        }
        for (key, item) in object {
            match props.get(key) {
                Some(s) => validate(doc, s, item, &format!("{at}.{key}"))?,
                None if schema["additionalProperties"] == json!(false) => {
                    return Err(format!("{at}: undocumented field {key}"))
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(schema)) = (value.as_array(), schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            validate(doc, schema, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// The JSON schema and example of one documented answer (responses by `$ref` resolved).
fn answer(doc: &Value, method: &str, path: &str, status: u16) -> (Value, Value) {
    let mut response = doc["paths"][path][method]["responses"][status.to_string()].clone();
    if let Some(reference) = response["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap();
        response = doc["components"]["responses"][name].clone();
    }
    assert!(
        !response.is_null(),
        "{method} {path} does not document {status}"
    );
    let json = &response["content"]["application/json"];
    (json["schema"].clone(), json["example"].clone())
}

#[test]
fn every_example_validates_against_its_schema() {
    let doc = document();
    let mut checked = 0;
    for (_, method, path, op) in operations(&doc) {
        for (status, _) in op["responses"].as_object().unwrap() {
            let (schema, example) = answer(&doc, &method, &path, status.parse().unwrap());
            if !example.is_null() {
                validate(
                    &doc,
                    &schema,
                    &example,
                    &format!("{method} {path} {status} example"),
                )
                .unwrap();
                checked += 1;
            }
        }
        let body = &op["requestBody"]["content"]["application/json"];
        if !body["example"].is_null() {
            validate(
                &doc,
                &body["schema"],
                &body["example"],
                &format!("{method} {path} body"),
            )
            .unwrap();
        }
    }
    assert!(checked > 20, "{checked} examples");
    // A control message the document's schema refuses.
    let message = json!({"$ref": "#/components/schemas/ControlMessage"});
    assert!(validate(&doc, &message, &json!({"type": "lockdown"}), "x").is_err());
    assert!(validate(&doc, &message, &json!({"type": "relax_tools", "x": 1}), "x").is_err());
}

/// One real request and the documented answer it must match.
struct Probe {
    method: Method,
    listener: Listener,
    path: &'static str,
    url: String,
    token: Option<String>,
    body: Option<(String, Vec<(&'static str, String)>)>,
    status: u16,
}

#[tokio::test]
async fn the_real_answers_match_the_document_and_every_route_is_served_with_its_scope() {
    let doc = document();
    let model = ModelServer::start(vec![]);
    model.fallback(model_server::text("hi", 1, 1));
    let home = tempfile::tempdir().unwrap();
    let token = |scope: &str| {
        let (code, out, err) = run(
            home.path(),
            &HashMap::new(),
            &["token", "create", "--scope", scope],
        );
        assert_eq!(code, 0, "{err}");
        out.trim().to_string()
    };
    let (read, chat) = (token("read"), token("chat"));
    // The scope probes below fail authentication on purpose, many times from one client.
    let gw = Gateway::start_in(
        home,
        options(&model)
            .env("KAFCLAW_SECURITY_AUTH_LOCKOUT_MAX_FAILURES", "1000")
            .env("KAFCLAW_INCIDENTS_AUTH_FAILURES_PER_IP", "0")
            .env("KAFCLAW_INCIDENTS_AUTH_FAILURES_GLOBAL", "0"),
    );
    let admin = Some(TOKEN.to_string());
    let url = |listener: Listener, path: &str| match listener {
        Listener::Gateway => gw.gw_url(path),
        Listener::Dashboard => gw.url(path),
    };

    // Every route answers its method, and 405 to another one.
    for e in ENDPOINTS.iter().filter(|e| !e.test_only) {
        let path = e
            .path
            .replace("{id}", "ap-unknown")
            .replace("{name}", "slack");
        let res = client()
            .request(Method::PUT, url(e.listener, &path))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "PUT {}",
            e.path
        );
        // The scope: too little is 403, nothing is 401.
        let weaker = match e.access {
            Access::Read => Some(&chat),
            Access::Admin | Access::Chat => Some(&read),
            _ => None,
        };
        let method = match e.verb {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
        };
        if let Some(weaker) = weaker {
            let res = client()
                .request(method.clone(), url(e.listener, &path))
                .bearer_auth(weaker)
                .send()
                .await
                .unwrap();
            assert_eq!(
                res.status(),
                StatusCode::FORBIDDEN,
                "{method} {} with a weaker token",
                e.path
            );
        }
        if matches!(
            e.access,
            Access::Read | Access::Admin | Access::Chat | Access::AnyToken
        ) {
            let res = client()
                .request(method.clone(), url(e.listener, &path))
                .send()
                .await
                .unwrap();
            assert_eq!(
                res.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {} without a token",
                e.path
            );
        }
    }

    let wa = wa_body(OWNER, "wamid.openapi", "hello");
    let bridge =
        json!({"message_id": "m-openapi", "sender_id": "U-OWNER", "chat_id": "C1", "text": "hi"})
            .to_string();
    let now = kafclaw_actors::clock::unix_now();
    let json_body = |v: Value| Some((v.to_string(), vec![]));
    let probe = |method: Method,
                 listener: Listener,
                 path: &'static str,
                 url_path: &str,
                 token: &Option<String>,
                 body,
                 status| Probe {
        method,
        listener,
        path,
        url: url(listener, url_path),
        token: token.clone(),
        body,
        status,
    };
    use Listener::{Dashboard as D, Gateway as G};
    let none = None;
    let (read, chat) = (Some(read), Some(chat));
    let probes = vec![
        probe(Method::GET, G, "/healthz", "/healthz", &none, None, 200),
        probe(Method::GET, D, "/healthz", "/healthz", &none, None, 200),
        probe(
            Method::POST,
            G,
            "/chat",
            "/chat",
            &chat,
            json_body(json!({"message": "hi", "session": "ops"})),
            200,
        ),
        probe(
            Method::POST,
            G,
            "/chat",
            "/chat",
            &chat,
            json_body(json!({"nothing": 1})),
            400,
        ),
        probe(
            Method::POST,
            G,
            "/chat",
            "/chat",
            &read,
            json_body(json!({"message": "hi"})),
            403,
        ),
        probe(
            Method::POST,
            G,
            "/webhooks/whatsapp",
            "/webhooks/whatsapp",
            &none,
            Some((
                wa.clone(),
                vec![(
                    "x-hub-signature-256",
                    sign_webhook(APP_SECRET.as_bytes(), wa.as_bytes()),
                )],
            )),
            200,
        ),
        probe(
            Method::POST,
            G,
            "/webhooks/whatsapp",
            "/webhooks/whatsapp",
            &none,
            Some((wa.clone(), vec![])),
            401,
        ),
        probe(
            Method::POST,
            G,
            "/webhooks/bridge/{name}",
            "/webhooks/bridge/slack",
            &none,
            Some((
                bridge.clone(),
                vec![
                    ("x-kafclaw-timestamp", now.to_string()),
                    (
                        "x-kafclaw-signature",
                        sign_bridge(BRIDGE_SECRET.as_bytes(), now, bridge.as_bytes()),
                    ),
                ],
            )),
            200,
        ),
        probe(
            Method::POST,
            G,
            "/webhooks/bridge/{name}",
            "/webhooks/bridge/nope",
            &none,
            Some((bridge.clone(), vec![])),
            404,
        ),
        probe(
            Method::GET,
            D,
            "/api/v1/status",
            "/api/v1/status",
            &none,
            None,
            200,
        ),
        probe(
            Method::GET,
            D,
            "/api/v1/status",
            "/api/v1/status",
            &read,
            None,
            200,
        ),
        probe(
            Method::GET,
            D,
            "/api/v1/auth/verify",
            "/api/v1/auth/verify",
            &read,
            None,
            200,
        ),
        probe(
            Method::GET,
            D,
            "/api/v1/supervisor",
            "/api/v1/supervisor",
            &read,
            None,
            200,
        ),
        probe(
            Method::GET,
            D,
            "/api/v1/timeline",
            "/api/v1/timeline",
            &read,
            None,
            200,
        ),
        probe(
            Method::GET,
            D,
            "/api/v1/timeline",
            "/api/v1/timeline?before=zz",
            &read,
            None,
            400,
        ),
        probe(
            Method::GET,
            D,
            "/api/v1/audit/head",
            "/api/v1/audit/head",
            &read,
            None,
            200,
        ),
        probe(
            Method::GET,
            D,
            "/api/v1/audit/verify",
            "/api/v1/audit/verify",
            &read,
            None,
            200,
        ),
        probe(
            Method::POST,
            D,
            "/api/v1/audit/verify",
            "/api/v1/audit/verify",
            &admin,
            None,
            200,
        ),
        probe(
            Method::GET,
            D,
            "/api/v1/approvals",
            "/api/v1/approvals",
            &read,
            None,
            200,
        ),
        probe(
            Method::POST,
            D,
            "/api/v1/approvals/{id}",
            "/api/v1/approvals/ap-unknown",
            &admin,
            json_body(json!({"approved": true})),
            404,
        ),
        probe(
            Method::GET,
            D,
            "/api/v1/channels",
            "/api/v1/channels",
            &read,
            None,
            200,
        ),
        probe(
            Method::GET,
            D,
            "/api/v1/channels",
            "/api/v1/channels",
            &none,
            None,
            401,
        ),
        probe(
            Method::GET,
            D,
            "/api/v1/channels/{name}/outbox",
            "/api/v1/channels/whatsapp/outbox?limit=10",
            &read,
            None,
            200,
        ),
        probe(
            Method::GET,
            D,
            "/api/v1/channels/{name}/outbox",
            "/api/v1/channels/nope/outbox",
            &read,
            None,
            404,
        ),
        probe(
            Method::GET,
            D,
            "/api/v1/channels/{name}/outbox",
            "/api/v1/channels/whatsapp/outbox?before=x",
            &read,
            None,
            400,
        ),
        probe(
            Method::GET,
            D,
            "/api/v1/incidents",
            "/api/v1/incidents",
            &read,
            None,
            200,
        ),
        probe(
            Method::GET,
            D,
            "/api/v1/lockouts",
            "/api/v1/lockouts",
            &read,
            None,
            200,
        ),
        probe(
            Method::GET,
            D,
            "/api/v1/tools",
            "/api/v1/tools",
            &read,
            None,
            200,
        ),
        probe(
            Method::GET,
            D,
            "/api/v1/usage",
            "/api/v1/usage",
            &read,
            None,
            200,
        ),
        probe(
            Method::POST,
            D,
            "/api/v1/admin/control",
            "/api/v1/admin/control",
            &admin,
            json_body(json!({"type": "relax_tools"})),
            200,
        ),
        probe(
            Method::POST,
            D,
            "/api/v1/admin/control",
            "/api/v1/admin/control",
            &admin,
            json_body(json!({"type": "explode"})),
            400,
        ),
        probe(
            Method::POST,
            D,
            "/api/v1/admin/control",
            "/api/v1/admin/control",
            &read,
            json_body(json!({"type": "relax_tools"})),
            403,
        ),
    ];
    let mut covered = BTreeSet::new();
    for p in &probes {
        let mut req = client().request(p.method.clone(), &p.url);
        if let Some(token) = &p.token {
            req = req.bearer_auth(token);
        }
        if let Some((body, headers)) = &p.body {
            req = req
                .header("content-type", "application/json")
                .body(body.clone());
            for (name, value) in headers {
                req = req.header(*name, value);
            }
        }
        let res = req.send().await.unwrap();
        let what = format!("{} {} ({})", p.method, p.url, p.listener.as_str());
        assert_eq!(res.status().as_u16(), p.status, "{what}");
        for (header, value) in [
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
            ("x-content-type-options", "nosniff"),
            ("cache-control", "no-store"),
        ] {
            assert_eq!(res.headers()[header], value, "{header} on {what}");
        }
        assert!(res.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'self'"));
        let method = p.method.as_str().to_ascii_lowercase();
        let (schema, _) = answer(&doc, &method, p.path, p.status);
        let body: Value = res.json().await.unwrap();
        validate(&doc, &schema, &body, &what).unwrap_or_else(|e| panic!("{e}\n{body:#}"));
        covered.insert((method, p.path.to_string(), p.status));
    }
    // Every documented example has a real answer it was checked against.
    for (_, method, path, op) in operations(&doc) {
        for (status, _) in op["responses"].as_object().unwrap() {
            let status: u16 = status.parse().unwrap();
            let (_, example) = answer(&doc, &method, &path, status);
            let direct = !op["responses"][status.to_string()]["$ref"].is_string();
            if !example.is_null() && direct && status < 500 {
                assert!(
                    covered.contains(&(method.clone(), path.clone(), status)),
                    "no probe checks the example of {method} {path} {status}"
                );
            }
        }
    }
    // The page and its assets carry no data and need no token.
    for (path, kind) in [
        ("/", "text/html"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
    ] {
        let res = client().get(gw.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{path}"
        );
        let text = res.text().await.unwrap();
        assert!(
            !text.contains(TOKEN) && !text.contains("whatsapp\""),
            "{path} carries no data"
        );
    }
}
