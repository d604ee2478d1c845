//! Snapshots (insta, in `tests/api/snapshots/`) of what clients read: the discovery
//! document, the list of documented operations, and the error bodies of a table of bad
//! requests. Both backends must produce the same snapshot. The server's port is redacted.
//! Update with `INSTA_UPDATE=always cargo test --test api documents` and review the diff.

use serde_json::{Value, json};

use crate::both;
use crate::helpers::{TOOLS_RESOURCE, TestApp, post_form, split};

/// `value` with the server's origin (and so its port) replaced by `http://[origin]`.
fn redact(value: Value, origin: &str) -> Value {
    match value {
        Value::String(s) => Value::String(s.replace(origin, "http://[origin]")),
        Value::Array(a) => Value::Array(a.into_iter().map(|v| redact(v, origin)).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, redact(v, origin))).collect())
        }
        other => other,
    }
}

both!(
    discovery_metadata,
    builder |b: crate::helpers::TestAppBuilder<'static>| b
        .with_resource(TOOLS_RESOURCE, "Tools", &["tools:read", "tools:write"]),
    |app: TestApp| async move {
        let (status, _, m) = app
            .get_json("/.well-known/oauth-authorization-server")
            .await;
        assert_eq!(status, 200);
        let (_, _, oidc) = app.get_json("/.well-known/openid-configuration").await;
        assert_eq!(m, oidc, "one document under both names");
        insta::assert_json_snapshot!("discovery_metadata", redact(m, &app.origin));
        app
    }
);

#[test]
fn documented_operations() {
    let doc = serde_json::to_value(concierge::router::openapi()).unwrap();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.push(format!(
                "{} {path} {}",
                method.to_uppercase(),
                op["operationId"].as_str().unwrap_or("")
            ));
        }
    }
    ops.sort();
    insta::assert_json_snapshot!("documented_operations", ops);
}

both!(
    error_bodies,
    builder |b: crate::helpers::TestAppBuilder<'static>| b
        .with_resource(TOOLS_RESOURCE, "Tools", &["tools:read"]),
    |app: TestApp| async move {
        let (id, secret) = app
            .add_machine_client("client_secret_post", Some("tools:read"))
            .await;
        let (id, secret) = (id.as_str(), secret.as_str());
        let cc = vec![
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
            ("resource", TOOLS_RESOURCE),
        ];
        let mut answers = Vec::new();
        let mut record = |name: &str, (status, _, body): (reqwest::StatusCode, _, Value)| {
            answers.push(json!({ "case": name, "status": status.as_u16(), "body": body }));
        };
        for (name, path, extra) in [
            ("token: no grant_type", "/token", vec![("grant_type", "")]),
            ("token: the password grant", "/token", vec![("grant_type", "password")]),
            ("token: wrong secret", "/token", vec![("client_secret", "nope")]),
            ("token: unknown client", "/token", vec![("client_id", "nobody")]),
            ("token: unknown resource", "/token", vec![("resource", "https://x.example/mcp")]),
            ("token: scope not given", "/token", vec![("scope", "tools:write")]),
            ("token: bad scope", "/token", vec![("scope", "a\"b")]),
            ("token: no code", "/token", vec![("grant_type", "authorization_code")]),
            ("introspect: not allowed", "/introspect", vec![("grant_type", ""), ("token", "x")]),
            ("revoke: no token", "/revoke", vec![("grant_type", "")]),
        ] {
            record(name, post_form(&app, path, cc.clone(), &extra).await);
        }
        let res = app
            .http
            .post(app.url("/register"))
            .json(&json!({ "redirect_uris": ["javascript:alert(1)"] }))
            .send()
            .await
            .unwrap();
        record("register: a javascript redirect", split(res).await);
        let res = app
            .http
            .post(app.url("/register"))
            .header("content-type", "application/json")
            .body("{")
            .send()
            .await
            .unwrap();
        record("register: not JSON", split(res).await);
        let res = app.http.get(app.url("/userinfo")).send().await.unwrap();
        record("userinfo: no token", split(res).await);
        insta::assert_json_snapshot!("error_bodies", redact(Value::Array(answers), &app.origin));
        app
    }
);
