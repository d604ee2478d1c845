//! The guard as a client of its issuer: introspection (RFC 7662), and the
//! start-up checks that catch misconfiguration (a wrong clock, an unknown
//! resource, rejected credentials) — against a small fake issuer. The same
//! against the real Concierge server is in the workspace's `tests/api`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::{get, post};
use concierge_guard::test::TestKey;
use concierge_guard::{BuildError, ClientCredentials, Guard, Introspection, TokenError};
use serde_json::json;

/// A fake issuer with an introspection endpoint that knows two opaque tokens, a
/// token endpoint that knows no resource, and a `Date` header `skew` seconds
/// off (sent with `Age: age`).
async fn fake_issuer(skew: i64) -> (String, Arc<AtomicUsize>) {
    fake_issuer_aged(skew, 0).await
}

async fn fake_issuer_aged(skew: i64, age: u64) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let metadata = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/jwks"),
        "token_endpoint": format!("{issuer}/token"),
        "introspection_endpoint": format!("{issuer}/introspect"),
    });
    let jwk = TestKey::generate("k1").jwk().clone();
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let resource = "http://127.0.0.1:9/opaque".to_owned();
    let iss = issuer.clone();
    let app = Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get(move || async move {
                let off = std::time::Duration::from_secs(skew.unsigned_abs());
                let now = std::time::SystemTime::now();
                let when = if skew > 0 { now + off } else { now - off };
                (
                    [
                        ("date", httpdate::fmt_http_date(when)),
                        ("age", age.to_string()),
                    ],
                    axum::Json(metadata),
                )
            }),
        )
        .route(
            "/jwks",
            get(move || async move { axum::Json(json!({ "keys": [jwk] })) }),
        )
        .route(
            "/token",
            post(|| async {
                (
                    axum::http::StatusCode::BAD_REQUEST,
                    axum::Json(
                        json!({"error": "invalid_target", "error_description": "unknown resource"}),
                    ),
                )
            }),
        )
        .route(
            "/introspect",
            post(move |headers: axum::http::HeaderMap, body: String| {
                let counter = counter.clone();
                let resource = resource.clone();
                let iss = iss.clone();
                async move {
                    let basic = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    if basic != "Basic cnM6cnMtc2VjcmV0" {
                        return (
                            axum::http::StatusCode::UNAUTHORIZED,
                            axum::Json(json!({"error": "invalid_client"})),
                        );
                    }
                    let form: std::collections::HashMap<String, String> =
                        serde_urlencoded::from_str(&body).unwrap();
                    let answer = match form.get("token").map(String::as_str) {
                        Some("opaque-good") => {
                            counter.fetch_add(1, Ordering::SeqCst);
                            json!({"active": true, "iss": iss, "aud": resource,
                                "sub": "alice", "client_id": "agent", "scope": "notes:read",
                                "exp": common::now() + 600, "token_type": "Bearer"})
                        }
                        Some("opaque-refresh") => json!({"active": true, "iss": iss,
                            "aud": resource, "sub": "alice", "client_id": "agent",
                            "exp": common::now() + 600, "token_type": "refresh_token"}),
                        Some("opaque-elsewhere") => json!({"active": true, "aud": "http://x/y",
                            "sub": "alice", "client_id": "agent", "exp": common::now() + 600}),
                        _ => json!({"active": false}),
                    };
                    (axum::http::StatusCode::OK, axum::Json(answer))
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (issuer, asked)
}

#[tokio::test]
async fn opaque_tokens_are_introspected_and_cached() {
    let (issuer, asked) = fake_issuer(0).await;
    let guard = Guard::builder(&issuer, "http://127.0.0.1:9/opaque")
        .client_credentials(ClientCredentials::secret_basic("rs", "rs-secret"))
        .introspection(Introspection::OpaqueTokens)
        .check_resource_registration(false)
        .build()
        .await
        .unwrap();
    let p = guard.validate("opaque-good").await.unwrap();
    assert_eq!(p.sub(), "alice");
    assert_eq!(p.client_id(), "agent");
    assert_eq!(p.scopes(), ["notes:read"]);
    guard.validate("opaque-good").await.unwrap();
    assert_eq!(asked.load(Ordering::SeqCst), 1, "the answer is cached");
    for (token, why) in [
        ("opaque-unknown", TokenError::Inactive),
        ("opaque-refresh", TokenError::Inactive),
        ("opaque-elsewhere", TokenError::WrongAudience),
    ] {
        assert_eq!(guard.validate(token).await.unwrap_err(), why, "{token}");
    }

    // Off (the default): opaque tokens are malformed JWTs, never sent anywhere.
    let strict = Guard::builder(&issuer, "http://127.0.0.1:9/opaque")
        .build()
        .await
        .unwrap();
    assert!(matches!(
        strict.validate("opaque-good").await.unwrap_err(),
        TokenError::Malformed(_)
    ));
    assert_eq!(asked.load(Ordering::SeqCst), 1);

    // Wrong credentials and a missing client are configuration errors.
    let err = Guard::builder(&issuer, "http://127.0.0.1:9/opaque")
        .client_credentials(ClientCredentials::secret_basic("rs", "nope"))
        .introspection(Introspection::OpaqueTokens)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::ClientRejected { .. }), "{err:?}");
    let err = Guard::builder(&issuer, "http://127.0.0.1:9/opaque")
        .introspection(Introspection::OpaqueTokens)
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("client_credentials"), "{err}");
}

#[tokio::test]
async fn a_skewed_clock_is_named_at_build() {
    for skew in [600, -600] {
        let (issuer, _) = fake_issuer(skew).await;
        let err = Guard::builder(&issuer, "http://127.0.0.1:9/opaque")
            .build()
            .await
            .unwrap_err();
        assert!(matches!(err, BuildError::ClockSkew { .. }), "{err:?}");
        let text = err.to_string();
        let direction = if skew > 0 { "behind" } else { "ahead of" };
        assert!(text.contains(direction) && text.contains("clock"), "{text}");
        // Turned off, or within the leeway, it builds.
        Guard::builder(&issuer, "http://127.0.0.1:9/opaque")
            .check_clock(false)
            .build()
            .await
            .unwrap();
        Guard::builder(&issuer, "http://127.0.0.1:9/opaque")
            .leeway(std::time::Duration::from_secs(900))
            .build()
            .await
            .unwrap();
    }
    let (issuer, _) = fake_issuer(0).await;
    Guard::builder(&issuer, "http://127.0.0.1:9/opaque")
        .build()
        .await
        .unwrap();
}

#[tokio::test]
async fn the_clock_check_accounts_for_a_cache_s_age() {
    // The metadata was made ten minutes ago and a cache held it since: no skew.
    let (issuer, _) = fake_issuer_aged(-600, 600).await;
    Guard::builder(&issuer, "http://127.0.0.1:9/opaque")
        .build()
        .await
        .unwrap();
    // Without the Age header the same Date is ten minutes of skew.
    let (issuer, _) = fake_issuer_aged(-600, 0).await;
    let err = Guard::builder(&issuer, "http://127.0.0.1:9/opaque")
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::ClockSkew { .. }), "{err:?}");
}

#[tokio::test]
async fn start_up_probes_name_the_problem_and_can_be_switched_off() {
    let (issuer, _) = fake_issuer(0).await;
    let resource = "http://127.0.0.1:9/opaque";
    let creds = || ClientCredentials::secret_basic("rs", "rs-secret");
    // The token endpoint answers invalid_target: the resource is not registered there.
    let err = Guard::builder(&issuer, resource)
        .client_credentials(creds())
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(err, BuildError::ResourceNotRegistered { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(resource), "{err}");
    Guard::builder(&issuer, resource)
        .client_credentials(creds())
        .check_resource_registration(false)
        .build()
        .await
        .unwrap();
    // Wrong credentials at the introspection endpoint are named, unless the probe is off.
    let wrong = || ClientCredentials::secret_basic("rs", "nope");
    let err = Guard::builder(&issuer, resource)
        .client_credentials(wrong())
        .introspection(Introspection::OpaqueTokens)
        .check_resource_registration(false)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::ClientRejected { .. }), "{err:?}");
    let guard = Guard::builder(&issuer, resource)
        .client_credentials(wrong())
        .introspection(Introspection::OpaqueTokens)
        .check_resource_registration(false)
        .check_introspection_access(false)
        .build()
        .await
        .unwrap();
    // The guard runs; a refused introspection is reported per token.
    assert_eq!(
        guard.validate("opaque-good").await.unwrap_err(),
        TokenError::IntrospectionUnavailable
    );
}
