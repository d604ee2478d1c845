//! The guard in front of an axum app, with tokens we craft and sign ourselves
//! and a local issuer serving our keys: every way a token can be wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Protected, claims, now, served, sign};
use concierge_guard::test::{TestIssuer, TestKey};
use concierge_guard::{Algorithm, BuildError, Guard, TokenError};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

/// A served test issuer, its key, and the app trusting it.
async fn setup() -> (TestKey, TestIssuer, Protected) {
    let (issuer, app) = served(|b| {
        b.required_scopes(["notes:read"])
            .tool_scopes("add_note", ["notes:write"])
            .route_scopes("/admin", ["admin"])
            .resource_name("Notes")
    })
    .await;
    (issuer.key().clone(), issuer, app)
}

#[tokio::test]
async fn valid_token_reaches_the_handler_with_its_principal() {
    let (key, issuer, app) = setup().await;
    let mut c = claims(issuer.issuer(), &app.resource, "notes:read extra");
    c["act"] = json!({"sub": "agent-a", "act": {"sub": "agent-b"}});
    let token = sign(&key, &c);
    for _ in 0..3 {
        let reply = app.call(Some(&token)).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.body["sub"], "user-1");
        assert_eq!(reply.body["client_id"], "client-1");
        assert_eq!(reply.body["scopes"], json!(["notes:read", "extra"]));
        assert_eq!(reply.body["act"], json!(["agent-a", "agent-b"]));
        assert_eq!(reply.body["jti"], "j1");
        assert_eq!(reply.body["exp"], c["exp"]);
    }
    // An audience array and a `typ` with the media-type prefix are fine too.
    let mut c = claims(issuer.issuer(), "x", "notes:read");
    c["aud"] = json!(["https://other.example", app.resource]);
    let token = key.sign_with(&c, Some("application/at+jwt"), Some("test-key"));
    assert_eq!(app.call(Some(&token)).await.status, 200);
    // The optional layer: no token is fine, a token is validated.
    assert_eq!(app.get("/whoami", None).await.body, "anonymous");
    assert_eq!(app.get("/whoami", Some(&token)).await.body, "user-1");
    // The Principal extractor answers with the challenge when there is none.
    let reply = app.get("/me", None).await;
    reply.assert_refused(401, None);
    reply.assert_challenge_contains(r#"scope="notes:read""#);
    assert_eq!(app.get("/me", Some(&token)).await.body, "user-1");
    app.get("/whoami", Some("garbage"))
        .await
        .assert_refused(401, Some("invalid_token"));
    // Validation results are cached; the keys were fetched once, at build time.
    assert_eq!(issuer.jwks_fetches(), 1);
}

#[tokio::test]
async fn no_token_gets_the_resource_metadata_challenge() {
    let (_key, _issuer, app) = setup().await;
    let reply = app.call(None).await;
    reply.assert_refused(401, None);
    assert_eq!(
        reply.challenge,
        format!(
            r#"Bearer scope="notes:read", resource_metadata="{}/.well-known/oauth-protected-resource/mcp""#,
            app.origin
        )
    );
    // Another scheme counts as no bearer token.
    let res = app
        .http
        .post(format!("{}/mcp", app.origin))
        .basic_auth("a", Some("b"))
        .send()
        .await
        .unwrap();
    common::Reply::from(res).await.assert_refused(401, None);
    // Two Authorization headers are a malformed request.
    let res = app
        .http
        .post(format!("{}/mcp", app.origin))
        .header("authorization", "Bearer a")
        .header("authorization", "Bearer b")
        .send()
        .await
        .unwrap();
    common::Reply::from(res)
        .await
        .assert_refused(400, Some("invalid_request"));
    // CORS preflights pass through (here: axum's 405 for OPTIONS, not a 401).
    let res = app
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/mcp", app.origin))
        .send()
        .await
        .unwrap();
    assert_ne!(res.status(), 401);
}

#[tokio::test]
async fn wrong_audience_issuer_and_time_are_invalid_tokens() {
    let (key, issuer, app) = setup().await;
    let base = claims(issuer.issuer(), &app.resource, "notes:read");
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "aud",
            json!("https://another.example/mcp"),
            "not meant for this resource",
        ),
        (
            "aud",
            json!(format!("{}/mcp/", app.origin)),
            "not meant for this resource",
        ),
        (
            "iss",
            json!(format!("{}/", issuer.issuer())),
            "another issuer",
        ),
        ("exp", json!(now() - 3600), "expired"),
        ("nbf", json!(now() + 3600), "not valid yet"),
        ("cnf", json!({"jkt": "x"}), "DPoP"),
        ("client_id", Value::Null, "client_id"),
    ];
    for (claim, value, mention) in cases {
        let mut c = base.clone();
        c[claim] = value;
        let reply = app.call(Some(&sign(&key, &c))).await;
        reply.assert_refused(401, Some("invalid_token"));
        reply.assert_challenge_contains(mention);
        assert_eq!(reply.body["error"], "invalid_token");
    }
}

#[tokio::test]
async fn missing_scopes_get_403_with_the_needed_scopes() {
    let (key, issuer, app) = setup().await;
    let reply = app
        .call(Some(&sign(
            &key,
            &claims(issuer.issuer(), &app.resource, "other"),
        )))
        .await;
    reply.assert_refused(403, Some("insufficient_scope"));
    reply.assert_challenge_contains(r#"scope="notes:read""#);

    // Per-route scopes.
    let reader = sign(&key, &claims(issuer.issuer(), &app.resource, "notes:read"));
    let reply = app.post("/admin", Some(&reader), "{}").await;
    reply.assert_refused(403, Some("insufficient_scope"));
    reply.assert_challenge_contains(r#"scope="notes:read admin""#);
    let admin = sign(
        &key,
        &claims(issuer.issuer(), &app.resource, "notes:read admin"),
    );
    assert_eq!(app.post("/admin", Some(&admin), "{}").await.status, 200);
}

#[tokio::test]
async fn per_tool_scopes_from_the_json_rpc_body() {
    let (key, issuer, app) = setup().await;
    let add = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"add_note","arguments":{"text":"hi"}}}"#;
    let list = r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"list_notes"}}"#;
    let reader = sign(&key, &claims(issuer.issuer(), &app.resource, "notes:read"));
    let writer = sign(
        &key,
        &claims(issuer.issuer(), &app.resource, "notes:read notes:write"),
    );

    let reply = app.post("/mcp", Some(&reader), add).await;
    reply.assert_refused(403, Some("insufficient_scope"));
    reply.assert_challenge_contains(r#"scope="notes:read notes:write""#);
    // Without a token the challenge already names the tool's scope.
    let reply = app.post("/mcp", None, add).await;
    reply.assert_refused(401, None);
    reply.assert_challenge_contains(r#"scope="notes:read notes:write""#);

    let reply = app.post("/mcp", Some(&writer), add).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.body["body"], add,
        "the body reaches the handler intact"
    );
    assert_eq!(app.post("/mcp", Some(&reader), list).await.status, 200);

    // Bodies above the cap are refused before buffering them whole.
    let huge = format!(
        r#"{{"method":"tools/call","params":{{"name":"add_note","pad":"{}"}}}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    assert_eq!(app.post("/mcp", Some(&writer), &huge).await.status, 413);
}

#[tokio::test]
async fn garbage_truncated_and_oversized_tokens() {
    let (key, issuer, app) = setup().await;
    let good = sign(&key, &claims(issuer.issuer(), &app.resource, "notes:read"));
    let truncated = &good[..good.len() - 10];
    let no_signature = &good[..good.rfind('.').unwrap()];
    let mut padded = claims(issuer.issuer(), &app.resource, "notes:read");
    padded["pad"] = json!("x".repeat(9 * 1024));
    let oversized = sign(&key, &padded);
    for (token, mention) in [
        ("garbage", "malformed"),
        ("a.b.c", "malformed"),
        (truncated, "signature"),
        (no_signature, "malformed"),
        (oversized.as_str(), "too large"),
    ] {
        let reply = app.call(Some(token)).await;
        reply.assert_refused(401, Some("invalid_token"));
        reply.assert_challenge_contains(mention);
    }
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

#[tokio::test]
async fn alg_none_hmac_with_the_public_key_wrong_typ_and_wrong_key() {
    let (key, issuer, app) = setup().await;
    let c = claims(issuer.issuer(), &app.resource, "notes:read");

    let none_header = json!({"alg": "none", "typ": "at+jwt", "kid": "test-key"});
    for token in [
        format!("{}.{}.", b64(&none_header), b64(&c)),
        format!("{}.{}.c2ln", b64(&none_header), b64(&c)),
    ] {
        app.call(Some(&token))
            .await
            .assert_refused(401, Some("invalid_token"));
    }

    // HS256 with the issuer's public key as the HMAC secret: the classic confusion.
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    header.kid = Some("test-key".into());
    for secret in [
        serde_json::to_vec(key.jwk()).unwrap(),
        key.jwk()["x"].as_str().unwrap().as_bytes().to_vec(),
    ] {
        let token =
            jsonwebtoken::encode(&header, &c, &EncodingKey::from_secret(&secret).unwrap()).unwrap();
        let reply = app.call(Some(&token)).await;
        reply.assert_refused(401, Some("invalid_token"));
        reply.assert_challenge_contains("algorithm");
    }

    for typ in [Some("JWT"), None, Some("id_token+jwt")] {
        let reply = app
            .call(Some(&key.sign_with(&c, typ, Some("test-key"))))
            .await;
        reply.assert_refused(401, Some("invalid_token"));
        reply.assert_challenge_contains("type");
    }

    // Signed by another key that claims the same kid.
    let impostor = TestKey::generate("test-key");
    let reply = app.call(Some(&sign(&impostor, &c))).await;
    reply.assert_refused(401, Some("invalid_token"));
    reply.assert_challenge_contains("signature");
}

#[tokio::test]
async fn unknown_kid_flood_refetches_at_most_once_per_interval() {
    let issuer = TestIssuer::serve().await.unwrap();
    let app = Protected::start(issuer.issuer(), |b| {
        b.jwks_refetch_interval(Duration::from_secs(3))
    })
    .await;
    assert_eq!(issuer.jwks_fetches(), 1);

    let strangers: Vec<TestKey> = (0..5)
        .map(|i| TestKey::generate(&format!("unknown-{i}")))
        .collect();
    let c = claims(issuer.issuer(), &app.resource, "");
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..60 {
        let token = strangers[i % strangers.len()].sign_with(
            &c,
            Some("at+jwt"),
            Some(&format!("unknown-{i}")),
        );
        let (http, url) = (app.http.clone(), format!("{}/mcp", app.origin));
        flood.spawn(async move {
            common::Reply::from(http.post(url).bearer_auth(token).send().await.unwrap()).await
        });
    }
    while let Some(reply) = flood.join_next().await {
        let reply = reply.unwrap();
        reply.assert_refused(401, Some("invalid_token"));
        reply.assert_challenge_contains("unknown key");
    }
    // The build-time fetch plus at most one refetch for the whole flood.
    let after_flood = issuer.jwks_fetches();
    assert!(after_flood <= 2, "{after_flood} JWKS fetches");
    assert_eq!(app.guard.jwks_fetch_count() as usize, after_flood);

    // A key rotated in later is picked up once the interval has passed.
    let rotated = TestKey::generate("k2");
    issuer.publish_key(&rotated);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let token = sign(&rotated, &claims(issuer.issuer(), &app.resource, ""));
    assert_eq!(app.call(Some(&token)).await.status, 200);
    assert_eq!(issuer.jwks_fetches(), after_flood + 1);
}

#[tokio::test]
async fn metadata_is_served_at_the_path_inserted_and_root_urls() {
    let (_key, issuer, app) = setup().await;
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let res = app
            .http
            .get(format!("{}{path}", app.origin))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["access-control-allow-origin"], "*");
        assert_eq!(res.headers()["content-type"], "application/json");
        let doc: Value = res.json().await.unwrap();
        assert_eq!(
            doc,
            json!({
                "resource": app.resource,
                "authorization_servers": [issuer.issuer()],
                "scopes_supported": ["notes:read", "admin", "notes:write"],
                "bearer_methods_supported": ["header"],
                "resource_name": "Notes",
                "dpop_signing_alg_values_supported": [
                    "ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"
                ],
            })
        );
    }
    assert_eq!(
        app.guard.metadata_url().as_str(),
        format!("{}/.well-known/oauth-protected-resource/mcp", app.origin)
    );
}

#[tokio::test]
async fn validate_directly_and_dpop_flag_in_metadata() {
    let issuer = TestIssuer::serve().await.unwrap();
    let key = issuer.key().clone();
    let guard = Guard::builder(issuer.issuer(), "http://127.0.0.1:1/")
        .dpop_bound_access_tokens_required(true)
        .cache_size(0)
        .build()
        .await
        .unwrap();
    assert_eq!(
        guard.metadata().dpop_bound_access_tokens_required,
        Some(true)
    );
    // The resource is an origin: a token for it with or without the slash is accepted.
    for aud in ["http://127.0.0.1:1", "http://127.0.0.1:1/"] {
        let p = guard
            .validate(&sign(&key, &claims(issuer.issuer(), aud, "a b")))
            .await
            .unwrap();
        assert_eq!(p.scopes(), ["a", "b"]);
    }
    assert_eq!(
        guard.validate("x").await.unwrap_err(),
        TokenError::Malformed("not a signed JWT")
    );
}

#[tokio::test]
async fn build_errors_say_what_is_misconfigured() {
    let resource = "http://127.0.0.1:1/mcp";

    // Nothing listens on port 1.
    let err = Guard::builder("http://127.0.0.1:1", resource)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::IssuerUnreachable { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("/.well-known/oauth-authorization-server"),
        "{err}"
    );

    let other = TestIssuer::serve_with(|m| m["issuer"] = json!("https://evil.example"))
        .await
        .unwrap();
    let err = Guard::builder(other.issuer(), resource)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::IssuerMismatch { .. }), "{err}");

    let no_jwks = TestIssuer::serve_with(|m| {
        m.as_object_mut().unwrap().remove("jwks_uri");
    })
    .await
    .unwrap();
    let err = Guard::builder(no_jwks.issuer(), resource)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::MissingJwksUri { .. }), "{err}");

    let empty = TestIssuer::serve().await.unwrap();
    empty.withdraw_keys();
    let err = Guard::builder(empty.issuer(), resource)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::JwksUnavailable { .. }), "{err}");

    let ok = TestIssuer::serve().await.unwrap();
    let err = Guard::builder(ok.issuer(), "not a url")
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::InvalidUrl {
                what: "resource URI",
                ..
            }
        ),
        "{err}"
    );
    let err = Guard::builder("http://auth.example.com", resource)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::InsecureUrl { .. }), "{err}");
    let err = Guard::builder(ok.issuer(), resource)
        .algorithms([Algorithm::ES256, Algorithm::HS256])
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(err, BuildError::UnsafeAlgorithm(Algorithm::HS256)),
        "{err}"
    );
    // A trailing slash on the configured issuer is tolerated; the announced one is used.
    let guard = Guard::builder(format!("{}/", ok.issuer()), resource)
        .build()
        .await
        .unwrap();
    assert_eq!(guard.issuer(), ok.issuer());
}
