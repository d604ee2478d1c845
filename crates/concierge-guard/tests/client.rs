//! The guard as a client of its issuer: token exchange (RFC 8693), introspection
//! (RFC 7662), and the start-up checks that catch misconfiguration — against the
//! real Concierge server, and a small fake issuer for what Concierge never does
//! (opaque tokens, a wrong clock).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use axum::Router;
use axum::routing::{get, post};
use common::{Protected, Server, start_concierge};
use concierge::oauth::client_metadata::{Origin, RawClientMetadata, validate};
use concierge::oauth::registration::new_client;
use concierge::store::{ClientKind, ExchangePolicy};
use concierge_guard::{
    Algorithm, BuildError, ClientCredentials, ExchangeError, Guard, Introspection, TokenError,
};
use jsonwebtoken::EncodingKey;
use jsonwebtoken::jwk::Jwk;
use serde_json::{Value, json};

const TE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const NOTES: &str = "http://127.0.0.1:9/notes";

impl Server {
    /// A static client with these grants and auth method (and keys); returns (id, secret).
    async fn add_client(
        &self,
        grants: &[&str],
        method: &str,
        jwks: Option<Value>,
        may_introspect: bool,
    ) -> (String, Option<String>) {
        let raw = RawClientMetadata {
            grant_types: Some(grants.iter().map(|g| (*g).to_owned()).collect()),
            token_endpoint_auth_method: Some(method.into()),
            jwks,
            ..Default::default()
        };
        let mut metadata = validate(
            raw,
            Origin::Operator,
            &concierge::oauth::grants::GrantRegistry::standard(),
        )
        .unwrap();
        metadata.may_introspect = may_introspect;
        let (record, secrets) =
            new_client(metadata, ClientKind::Static, None, None, common::now(), 0);
        self.app.store.insert_client(&record).await.unwrap();
        (record.client_id, secrets.client_secret)
    }

    /// A client-credentials token of a fresh client for `resource`.
    async fn token(&self, resource: &str, scope: &str) -> (String, String) {
        let (id, _, token) = self.token_and_secret(resource, scope).await;
        (id, token)
    }

    /// Same, with the client's secret: (id, secret, token).
    async fn token_and_secret(&self, resource: &str, scope: &str) -> (String, String, String) {
        let (id, secret) = self
            .add_client(&["client_credentials"], "client_secret_basic", None, false)
            .await;
        let form = [
            ("grant_type", "client_credentials"),
            ("resource", resource),
            ("scope", scope),
        ];
        let res = reqwest::Client::new()
            .post(format!("{}/token", self.issuer))
            .basic_auth(&id, secret.as_deref())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        let token = body["access_token"].as_str().unwrap().to_owned();
        (id, secret.unwrap(), token)
    }

    async fn allow(&self, target: &str, client: &str, source: &str) {
        self.app
            .store
            .save_exchange_policy(&ExchangePolicy {
                target: target.into(),
                client_id: client.into(),
                source: source.into(),
                scope_map: [("notes:read".to_owned(), vec!["notes:read".to_owned()])]
                    .into_iter()
                    .collect(),
                created_at: 0,
            })
            .await
            .unwrap();
    }
}

/// A resource URI on a port nothing listens on (the guard does not serve here).
fn resource_uri(name: &str) -> String {
    format!("http://127.0.0.1:9/{name}")
}

fn claims(jwt: &str) -> Value {
    use base64::Engine as _;
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn exchange_helper_gets_cached_downstream_tokens_with_typed_errors() {
    let server = start_concierge().await;
    let calendar = resource_uri("calendar");
    server.add_resource(&calendar).await;
    server.add_resource(NOTES).await;
    let (cal_id, cal_secret) = server
        .add_client(
            &[TE, "client_credentials"],
            "client_secret_basic",
            None,
            false,
        )
        .await;
    let creds = ClientCredentials::secret_basic(&cal_id, cal_secret.unwrap());
    let guard = Guard::builder(&server.issuer, &calendar)
        .client_credentials(creds)
        .build()
        .await
        .unwrap();
    let (caller, subject) = server.token(&calendar, "notes:read").await;

    // No policy yet: refused, typed.
    let err = guard
        .exchange(&subject, NOTES, &["notes:read"])
        .await
        .unwrap_err();
    assert!(matches!(err, ExchangeError::NotAllowed { .. }), "{err:?}");
    assert!(err.to_string().contains("exchange policy"), "{err}");

    server.allow(NOTES, &cal_id, &calendar).await;
    let token = guard
        .exchange(&subject, NOTES, &["notes:read"])
        .await
        .unwrap();
    assert_eq!(token.scope(), Some("notes:read"));
    let c = claims(token.access_token());
    assert_eq!(c["aud"], NOTES);
    assert_eq!(c["sub"], caller.as_str(), "same subject");
    assert_eq!(c["act"]["sub"], cal_id.as_str(), "calendar acts");
    assert!(!format!("{token:?}").contains(token.access_token()));

    // Cached per (subject, target, scope): the same token again, no new request.
    let again = guard
        .exchange(&subject, NOTES, &["notes:read"])
        .await
        .unwrap();
    assert_eq!(again.access_token(), token.access_token());
    let (_, other_subject) = server.token(&calendar, "notes:read").await;
    let other = guard
        .exchange(&other_subject, NOTES, &["notes:read"])
        .await
        .unwrap();
    assert_ne!(other.access_token(), token.access_token());

    // An unknown target, a scope the policy does not give.
    let err = guard
        .exchange(&subject, "http://127.0.0.1:9/nowhere", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExchangeError::TargetNotRegistered { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("resource add"), "{err}");
    let err = guard
        .exchange(&subject, NOTES, &["notes:write"])
        .await
        .unwrap_err();
    assert!(matches!(err, ExchangeError::InvalidScope(_)), "{err:?}");

    // Without credentials the helper says what is missing.
    let bare = Guard::builder(&server.issuer, &calendar)
        .build()
        .await
        .unwrap();
    assert_eq!(
        bare.exchange(&subject, NOTES, &[]).await.unwrap_err(),
        ExchangeError::NoCredentials
    );
    server.running.stop().await.unwrap();
}

#[tokio::test]
async fn exchange_helper_authenticates_with_private_key_jwt() {
    let server = start_concierge().await;
    let calendar = resource_uri("calendar");
    server.add_resource(&calendar).await;
    server.add_resource(NOTES).await;
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let key = EncodingKey::from_ec_der(pair.to_pkcs8v1().unwrap().as_ref());
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap()).unwrap();
    jwk["kid"] = json!("cal-1");
    jwk["use"] = json!("sig");
    let (cal_id, _) = server
        .add_client(
            &[TE, "client_credentials"],
            "private_key_jwt",
            Some(json!({ "keys": [jwk] })),
            false,
        )
        .await;
    server.allow(NOTES, &cal_id, &calendar).await;
    let creds =
        ClientCredentials::private_key_jwt(&cal_id, key, Algorithm::ES256, Some("cal-1".into()));
    assert!(!format!("{creds:?}").contains("BEGIN"));
    let guard = Guard::builder(&server.issuer, &calendar)
        .client_credentials(creds)
        .build()
        .await
        .unwrap();
    let (_, subject) = server.token(&calendar, "notes:read").await;
    let token = guard.exchange(&subject, NOTES, &[]).await.unwrap();
    assert_eq!(claims(token.access_token())["act"]["sub"], cal_id.as_str());
    server.running.stop().await.unwrap();
}

#[tokio::test]
async fn build_names_an_unregistered_resource_and_bad_credentials() {
    let server = start_concierge().await;
    let (id, secret) = server
        .add_client(&["client_credentials"], "client_secret_basic", None, false)
        .await;
    let secret = secret.unwrap();
    let unknown = resource_uri("typo");
    let err = Guard::builder(&server.issuer, &unknown)
        .client_credentials(ClientCredentials::secret_basic(&id, &secret))
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(err, BuildError::ResourceNotRegistered { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&unknown) && text.contains("register"),
        "{text}"
    );

    server.add_resource(&unknown).await;
    Guard::builder(&server.issuer, &unknown)
        .client_credentials(ClientCredentials::secret_basic(&id, &secret))
        .build()
        .await
        .unwrap();
    let err = Guard::builder(&server.issuer, &unknown)
        .client_credentials(ClientCredentials::secret_basic(&id, "wrong"))
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::ClientRejected { .. }), "{err:?}");
    server.running.stop().await.unwrap();
}

#[tokio::test]
async fn introspection_refuses_a_revoked_jwt() {
    let server = start_concierge().await;
    // Without the client_credentials grant the registration check is inconclusive and
    // skipped: the resource is only registered once the guard's port is known.
    let (rs_id, rs_secret) = server
        .add_client(&[TE], "client_secret_basic", None, true)
        .await;
    let creds = ClientCredentials::secret_basic(&rs_id, rs_secret.unwrap());
    let app = Protected::start(&server.issuer, |b| {
        b.client_credentials(creds.clone())
            .introspection(Introspection::AllTokens)
            .introspection_cache_ttl(std::time::Duration::ZERO)
    })
    .await;
    server.add_resource(&app.resource).await;
    let (client, secret, token) = server.token_and_secret(&app.resource, "notes:read").await;
    assert_eq!(app.call(Some(&token)).await.status, 200);

    // Revoke it (RFC 7009) as its client: the signature is still good, introspection is not.
    let res = reqwest::Client::new()
        .post(format!("{}/revoke", server.issuer))
        .basic_auth(&client, Some(&secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string([("token", token.as_str())]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let reply = app.call(Some(&token)).await;
    reply.assert_refused(401, Some("invalid_token"));
    reply.assert_challenge_contains("not active");
    assert_eq!(
        app.guard.validate(&token).await.unwrap_err(),
        TokenError::Inactive
    );

    // A client the operator did not allow to introspect is named at start-up.
    let (other, other_secret) = server
        .add_client(&["client_credentials"], "client_secret_basic", None, false)
        .await;
    let err = Guard::builder(&server.issuer, &app.resource)
        .client_credentials(ClientCredentials::secret_basic(
            &other,
            other_secret.unwrap(),
        ))
        .introspection(Introspection::OpaqueTokens)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(err, BuildError::IntrospectionNotAllowed { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("--may-introspect"), "{err}");
    server.running.stop().await.unwrap();
}

/// A fake issuer with an introspection endpoint that knows two opaque tokens, and a
/// `Date` header `skew` seconds off.
async fn fake_issuer(skew: i64) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let metadata = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/jwks"),
        "token_endpoint": format!("{issuer}/token"),
        "introspection_endpoint": format!("{issuer}/introspect"),
    });
    let jwk = common::Key::generate("k1").jwk;
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
                    [("date", httpdate::fmt_http_date(when))],
                    axum::Json(metadata),
                )
            }),
        )
        .route(
            "/jwks",
            get(move || async move { axum::Json(json!({ "keys": [jwk] })) }),
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
