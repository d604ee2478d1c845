//! The jwt-bearer grant beyond ID-JAGs (issue 18.7, 18.9): a client's own signed assertion
//! (the MCP client-credentials extension) and workload identity federation (MCP SEP-1933)
//! with a local OpenID Connect issuer standing in for Kubernetes or SPIFFE.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::get;
use concierge::oauth::client_metadata::RawClientMetadata;
use serde_json::{Value, json};

use crate::both;
use crate::flow::claims;
use crate::helpers::{TOOLS_RESOURCE, TestApp, add_tools_resource, assert_error, post_form};
use crate::private_key_jwt::TestKey;

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const AGENTS_CLIENT: &str = "k8s-agents";

async fn jwt_bearer(
    app: &TestApp,
    assertion: &str,
    extra: &[(&str, &str)],
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    post_form(
        app,
        "/token",
        vec![
            ("grant_type", JWT_BEARER),
            ("assertion", assertion),
            ("resource", TOOLS_RESOURCE),
            ("scope", "tools:read"),
        ],
        extra,
    )
    .await
}

fn assertion_claims(iss: &str, sub: &str, aud: &str) -> Value {
    let now = concierge::util::now();
    json!({
        "iss": iss, "sub": sub, "aud": aud,
        "iat": now, "exp": now + 120,
        "jti": concierge::util::random_id(),
    })
}

both!(a_clients_own_assertion, |app: TestApp| async move {
    add_tools_resource(&app).await;
    let key = TestKey::es256("own");
    let raw = |grants: Vec<&str>| RawClientMetadata {
        grant_types: Some(grants.into_iter().map(str::to_string).collect()),
        token_endpoint_auth_method: Some("private_key_jwt".into()),
        jwks: Some(json!({"keys": [key.jwk]})),
        scope: Some("tools:read".into()),
        ..Default::default()
    };
    let (id, _) = app.add_client(raw(vec![JWT_BEARER])).await;

    // Metadata: the grant is served without any configuration; ID-JAG profiles are not.
    let (_, _, m) = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert!(
        m["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(JWT_BEARER))
    );
    assert!(m.get("authorization_grant_profiles_supported").is_none());

    let a = key.sign(&assertion_claims(&id, &id, &app.issuer));
    let (s, _, body) = jwt_bearer(&app, &a, &[]).await;
    assert_eq!(s, 200, "{body}");
    let c = claims(body["access_token"].as_str().unwrap());
    assert_eq!(
        (c["sub"].as_str(), c["aud"].as_str()),
        (Some(id.as_str()), Some(TOOLS_RESOURCE))
    );
    assert_eq!(body["scope"], "tools:read");
    // Once only; the token endpoint as audience works too; a client_id may repeat it.
    assert_error(
        &jwt_bearer(&app, &a, &[]).await,
        400,
        "invalid_grant",
        "used before",
    );
    let a = key.sign(&assertion_claims(
        &id,
        &id,
        &format!("{}/token", app.issuer),
    ));
    let got = jwt_bearer(&app, &a, &[("client_id", &id)]).await;
    assert_eq!(got.0, 200, "{}", got.2);
    // Another key, another audience, a second credential: refused.
    let a = TestKey::es256("own").sign(&assertion_claims(&id, &id, &app.issuer));
    assert_error(
        &jwt_bearer(&app, &a, &[]).await,
        400,
        "invalid_grant",
        "signature",
    );
    let a = key.sign(&assertion_claims(&id, &id, "https://elsewhere.example"));
    assert_error(
        &jwt_bearer(&app, &a, &[]).await,
        400,
        "invalid_grant",
        "aud",
    );
    let a = key.sign(&assertion_claims(&id, &id, &app.issuer));
    assert_error(
        &jwt_bearer(&app, &a, &[("client_secret", "x")]).await,
        400,
        "invalid_request",
        "no other client credentials",
    );
    // A client that did not register the grant, and one nobody knows.
    let (other, _) = app.add_client(raw(vec!["client_credentials"])).await;
    let a = key.sign(&assertion_claims(&other, &other, &app.issuer));
    assert_error(
        &jwt_bearer(&app, &a, &[]).await,
        400,
        "unauthorized_client",
        JWT_BEARER,
    );
    let a = key.sign(&assertion_claims("nobody", "nobody", &app.issuer));
    assert_error(
        &jwt_bearer(&app, &a, &[]).await,
        400,
        "invalid_grant",
        "unknown client",
    );
    // An assertion nobody vouches for.
    let a = key.sign(&assertion_claims(
        "https://random.example",
        "someone",
        &app.issuer,
    ));
    assert_error(
        &jwt_bearer(&app, &a, &[]).await,
        400,
        "invalid_grant",
        "not oauth-id-jag+jwt",
    );
    app
});

/// A local OpenID Connect issuer: discovery and a JWK Set, counting discovery fetches.
async fn oidc_issuer(key: &TestKey) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let hits = Arc::new(AtomicUsize::new(0));
    let (b, h) = (base.clone(), hits.clone());
    let jwks = json!({"keys": [key.jwk]});
    let app = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || {
                h.fetch_add(1, Ordering::SeqCst);
                let doc = json!({"issuer": b, "jwks_uri": format!("{b}/keys")});
                async move { axum::Json(doc) }
            }),
        )
        .route("/keys", get(move || async move { axum::Json(jwks) }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_federation() {
    for backend in [
        crate::helpers::Backend::Sqlite,
        crate::helpers::Backend::Postgres,
    ] {
        let key = TestKey::es256("platform-key");
        let (platform, discovery_hits) = oidc_issuer(&key).await;
        let p = platform.clone();
        let Some(app) = TestApp::builder(backend)
            .configure(move |c| {
                c.cimd.allow_loopback = true;
                c.workload_identity.issuers = vec![concierge::config::WorkloadIssuer {
                    issuer: p.clone(),
                    jwks_uri: None,
                    jwks: None,
                }];
                c.workload_identity.rules = vec![concierge::config::WorkloadRule {
                    issuer: p,
                    subject: "system:serviceaccount:agents:*".into(),
                    client_id: AGENTS_CLIENT.into(),
                }];
            })
            .start()
            .await
        else {
            continue;
        };
        add_tools_resource(&app).await;
        // The client a workload acts as: no secret, no keys of its own, the one grant.
        let metadata = TestApp::operator_metadata(RawClientMetadata {
            grant_types: Some(vec![JWT_BEARER.into()]),
            token_endpoint_auth_method: Some("none".into()),
            scope: Some("tools:read".into()),
            ..Default::default()
        });
        app.add_client_metadata(Some(AGENTS_CLIENT), metadata).await;

        let token = |sub: &str, aud: &str| key.sign(&assertion_claims(&platform, sub, aud));
        let t = token("system:serviceaccount:agents:indexer", &app.issuer);
        let (s, _, body) = jwt_bearer(&app, &t, &[]).await;
        assert_eq!(s, 200, "{body}");
        let c = claims(body["access_token"].as_str().unwrap());
        assert_eq!(c["client_id"], AGENTS_CLIENT);
        assert_eq!(c["aud"], TOOLS_RESOURCE);
        // A second workload: keys and discovery come from the cache.
        let t2 = token("system:serviceaccount:agents:mailer", &app.issuer);
        assert_eq!(jwt_bearer(&app, &t2, &[]).await.0, 200);
        assert_eq!(
            discovery_hits.load(Ordering::SeqCst),
            1,
            "discovery is cached"
        );

        // Refusals, each for its reason, as invalid_grant (RFC 7523 §3.1).
        assert_error(
            &jwt_bearer(&app, &t, &[]).await,
            400,
            "invalid_grant",
            "used before",
        );
        let other = token("system:serviceaccount:billing:x", &app.issuer);
        assert_error(
            &jwt_bearer(&app, &other, &[]).await,
            400,
            "invalid_grant",
            "no workload_identity rule",
        );
        let wrong_aud = token(
            "system:serviceaccount:agents:indexer",
            "https://elsewhere.example",
        );
        assert_error(
            &jwt_bearer(&app, &wrong_aud, &[]).await,
            400,
            "invalid_grant",
            "aud",
        );
        let now = concierge::util::now();
        let mut old = assertion_claims(
            &platform,
            "system:serviceaccount:agents:indexer",
            &app.issuer,
        );
        old["exp"] = json!(now - 600);
        old["iat"] = json!(now - 1200);
        assert_error(
            &jwt_bearer(&app, &key.sign(&old), &[]).await,
            400,
            "invalid_grant",
            "expired",
        );
        let forged = TestKey::es256("platform-key").sign(&assertion_claims(
            &platform,
            "system:serviceaccount:agents:indexer",
            &app.issuer,
        ));
        assert_error(
            &jwt_bearer(&app, &forged, &[]).await,
            400,
            "invalid_grant",
            "signature",
        );
        let t3 = token("system:serviceaccount:agents:third", &app.issuer);
        assert_error(
            &jwt_bearer(&app, &t3, &[("client_secret", "x")]).await,
            400,
            "invalid_request",
            "no other client credentials",
        );
        app.finish().await;
    }
}
