//! Tokens from issuers other than Concierge, several issuers and audiences at
//! once, fixed keys and explicit JWKS URLs, a start while the issuer is down,
//! what the guard tells its operator (events, hooks), and what it tells
//! clients it supports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use common::{Protected, now};
use concierge_guard::test::{TestIssuer, TestKey};
use concierge_guard::{
    BuildError, ClaimMapping, Claims, Guard, Issuer, Principal, Refusal, TokenError,
};
use serde_json::{Value, json};

const RESOURCE: &str = "https://mcp.example.com/mcp";

/// An offline issuer at `url` signing with a fresh RS256 key, as most identity
/// providers do.
fn rsa_issuer(url: &str) -> TestIssuer {
    TestIssuer::with_issuer(url).with_key(TestKey::generate_rsa("rsa-1"))
}

/// Signs `claims` with the issuer's key and header `typ`.
fn signed(issuer: &TestIssuer, typ: Option<&str>, claims: Value) -> String {
    let key = issuer.key();
    key.sign_with(&claims, typ, Some(key.kid()))
}

/// The default access-token shapes of widely used identity providers: the
/// issuer, the header `typ`, the claims, and the scopes and client the guard
/// must read from them.
/// (name, issuer, header `typ`, claims, the scopes to read, the client to read)
type Shape = (
    &'static str,
    TestIssuer,
    Option<&'static str>,
    Value,
    Vec<&'static str>,
    &'static str,
);

fn provider_tokens() -> Vec<Shape> {
    let (iat, exp) = (now(), now() + 600);
    let auth0 = rsa_issuer("https://tenant.eu.auth0.com/");
    let entra =
        rsa_issuer("https://login.microsoftonline.com/0b5c2a8f-0000-4000-8000-00000000000a/v2.0");
    let entra_v1 = rsa_issuer("https://sts.windows.net/0b5c2a8f-0000-4000-8000-00000000000a/");
    let keycloak = rsa_issuer("https://sso.example.com/realms/mcp");
    let okta = rsa_issuer("https://example.okta.com/oauth2/default");
    vec![
        (
            // Auth0, RBAC on: `permissions` next to `scope`, the client in `azp`,
            // `aud` an array with the userinfo endpoint.
            "auth0",
            auth0,
            Some("JWT"),
            json!({"iss": "https://tenant.eu.auth0.com/", "sub": "auth0|64f1c2", "aud": [RESOURCE, "https://tenant.eu.auth0.com/userinfo"],
                "iat": iat, "exp": exp, "scope": "openid profile notes:read", "azp": "Xy12AbCd", "permissions": ["notes:read", "notes:write"]}),
            vec!["openid", "profile", "notes:read", "notes:write"],
            "Xy12AbCd",
        ),
        (
            // Entra ID v2: `scp` string, `azp`, an `api://` audience.
            "entra",
            entra,
            Some("JWT"),
            json!({"iss": "https://login.microsoftonline.com/0b5c2a8f-0000-4000-8000-00000000000a/v2.0", "aud": "api://notes",
                "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ", "oid": "00000000-0000-0000-66f3-3332eca7ea81",
                "tid": "0b5c2a8f-0000-4000-8000-00000000000a", "azp": "6e74172b-be56-4843-9ff4-e66a39bb12e3",
                "scp": "notes.read notes.write", "ver": "2.0", "iat": iat, "nbf": iat, "exp": exp}),
            vec!["notes.read", "notes.write"],
            "6e74172b-be56-4843-9ff4-e66a39bb12e3",
        ),
        (
            // Entra ID v1: the client in `appid`.
            "entra-v1",
            entra_v1,
            Some("JWT"),
            json!({"iss": "https://sts.windows.net/0b5c2a8f-0000-4000-8000-00000000000a/", "aud": "api://notes",
                "sub": "l3_roISQU222bULS9yi2k0XpqpOiMz5H3ZACo1GeXA", "appid": "75dbe77f-10a3-4e59-85fd-8c127544f17c",
                "scp": "notes.read", "ver": "1.0", "iat": iat, "exp": exp}),
            vec!["notes.read"],
            "75dbe77f-10a3-4e59-85fd-8c127544f17c",
        ),
        (
            // Keycloak: `typ: JWT`, space-separated `scope`, `azp`.
            "keycloak",
            keycloak,
            Some("JWT"),
            json!({"iss": "https://sso.example.com/realms/mcp", "aud": [RESOURCE, "account"], "sub": "f1e2d3c4-0000-4000-8000-000000000001",
                "typ": "Bearer", "azp": "mcp-agent", "scope": "openid email notes:read", "iat": iat, "exp": exp,
                "realm_access": {"roles": ["default-roles-mcp"]}}),
            vec!["openid", "email", "notes:read"],
            "mcp-agent",
        ),
        (
            // Okta: no `typ` at all, `scp` as an array, the client in `cid`.
            "okta",
            okta,
            None,
            json!({"ver": 1, "jti": "AT.abc", "iss": "https://example.okta.com/oauth2/default", "aud": "api://notes",
                "iat": iat, "exp": exp, "cid": "0oa1b2c3d4", "uid": "00u1b2c3d4", "scp": ["openid", "notes:read"],
                "sub": "alice@example.com"}),
            vec!["openid", "notes:read"],
            "0oa1b2c3d4",
        ),
    ]
}

#[tokio::test]
async fn tokens_shaped_like_identity_providers_pass_with_their_claim_mapping() {
    let concierge = TestIssuer::new();
    let providers = provider_tokens();
    let mut builder = Guard::builder(&concierge, RESOURCE).audiences(["api://notes"]);
    for (_, issuer, ..) in &providers {
        builder =
            builder.also_trust(Issuer::from(issuer).claims(ClaimMapping::identity_providers()));
    }
    let guard = builder.build().await.unwrap();

    // Every issuer is an authorization server of the resource (RFC 9728 §2).
    let servers = guard.metadata().authorization_servers;
    assert_eq!(servers.len(), 1 + providers.len());
    assert_eq!(servers[0], concierge.issuer());
    for (_, issuer, ..) in &providers {
        assert!(servers.iter().any(|s| s == issuer.issuer()), "{servers:?}");
    }

    for (name, issuer, typ, claims, scopes, client) in &providers {
        let token = signed(issuer, *typ, claims.clone());
        let p = guard
            .validate(&token)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(p.scopes(), scopes.as_slice(), "{name}");
        assert_eq!(p.client_id(), *client, "{name}");
        assert_eq!(p.issuer(), issuer.issuer(), "{name}");
        assert_eq!(p.sub(), claims["sub"], "{name}");
    }

    // The RFC 9068 issuer keeps its strict rules: a `typ: JWT` token of its own is refused.
    let strict = concierge.token(RESOURCE).typ(Some("JWT")).sign();
    assert_eq!(
        guard.validate(&strict).await.unwrap_err(),
        TokenError::WrongType
    );
    let ok = concierge.token(RESOURCE).scopes(["notes:read"]).sign();
    assert_eq!(guard.validate(&ok).await.unwrap().scopes(), ["notes:read"]);

    // Without the mapping the same provider tokens are refused, saying why.
    let (_, auth0, typ, claims, ..) = &providers[0];
    let default_mapping = Guard::builder(auth0, RESOURCE).build().await.unwrap();
    let token = signed(auth0, *typ, claims.clone());
    let err = default_mapping.validate(&token).await.unwrap_err();
    assert_eq!(err, TokenError::WrongType);
    assert!(err.hint().unwrap().contains("ClaimMapping"));
    let accept_typ = Guard::builder(
        Issuer::from(auth0).claims(ClaimMapping::rfc9068().accept_jwt_typ(true)),
        RESOURCE,
    )
    .build()
    .await
    .unwrap();
    assert_eq!(
        accept_typ.validate(&token).await.unwrap_err(),
        TokenError::InvalidClaim("client_id"),
        "azp is not read without the mapping"
    );

    // Another issuer, or an audience nobody configured, is refused.
    let stranger = rsa_issuer("https://evil.example");
    let mut c = claims.clone();
    c["iss"] = json!("https://evil.example");
    assert_eq!(
        guard
            .validate(&signed(&stranger, Some("JWT"), c))
            .await
            .unwrap_err(),
        TokenError::WrongIssuer
    );
    let mut c = providers[1].3.clone();
    c["aud"] = json!("api://other");
    assert_eq!(
        guard
            .validate(&signed(&providers[1].1, Some("JWT"), c))
            .await
            .unwrap_err(),
        TokenError::WrongAudience
    );
    // A token signed by one trusted issuer's key but naming another is checked with
    // the other's keys, and refused.
    let mut c = providers[1].3.clone();
    c["iss"] = json!(providers[4].1.issuer());
    assert_eq!(
        guard
            .validate(&signed(&providers[1].1, Some("JWT"), c))
            .await
            .unwrap_err(),
        TokenError::BadSignature
    );
}

#[tokio::test]
async fn node_oidc_provider_jwt_access_tokens_pass_with_the_default_mapping() {
    // What node-oidc-provider issues with resource indicators and
    // accessTokenFormat 'jwt': typ at+jwt, client_id, a space-separated scope.
    let issuer = TestIssuer::with_issuer("https://op.example.com");
    let guard = Guard::builder(&issuer, RESOURCE).build().await.unwrap();
    let token = signed(
        &issuer,
        Some("at+jwt"),
        json!({"jti": "pCK9uFa0nDgKb5WOiGBHr", "sub": "bench", "iat": now(), "exp": now() + 600,
            "scope": "tools:read tools:write", "client_id": "bench", "iss": "https://op.example.com", "aud": RESOURCE}),
    );
    let p = guard.validate(&token).await.unwrap();
    assert_eq!(p.scopes(), ["tools:read", "tools:write"]);
    assert!(
        p.is_client(),
        "client credentials: sub is the client (RFC 9068 §2.2)"
    );
}

#[tokio::test]
async fn is_client_tells_machine_tokens_from_user_and_delegated_ones() {
    let issuer = TestIssuer::new();
    let guard = Guard::builder(&issuer, RESOURCE).build().await.unwrap();
    let check = |token: String| {
        let guard = guard.clone();
        async move { guard.validate(&token).await.unwrap().is_client() }
    };
    assert!(
        check(
            issuer
                .token(RESOURCE)
                .subject("svc")
                .client_id("svc")
                .sign()
        )
        .await
    );
    assert!(
        !check(
            issuer
                .token(RESOURCE)
                .subject("alice")
                .client_id("svc")
                .sign()
        )
        .await
    );
    // A token the client got by exchange carries `act`: not the client's own.
    let exchanged = issuer
        .token(RESOURCE)
        .subject("svc")
        .client_id("svc")
        .claim("act", json!({"sub": "calendar"}))
        .sign();
    assert!(!check(exchanged).await);
    // With a mapping, the mapped client id counts (Keycloak service accounts).
    let keycloak = rsa_issuer("https://sso.example.com/realms/mcp");
    let lenient = Guard::builder(
        Issuer::from(&keycloak).claims(ClaimMapping::identity_providers()),
        RESOURCE,
    )
    .build()
    .await
    .unwrap();
    let machine = signed(
        &keycloak,
        Some("JWT"),
        json!({"iss": keycloak.issuer(), "aud": RESOURCE, "sub": "svc", "azp": "svc", "exp": now() + 60}),
    );
    assert!(lenient.validate(&machine).await.unwrap().is_client());
}

#[derive(Debug, serde::Deserialize)]
struct Tenant {
    tenant: String,
    #[serde(default)]
    roles: Vec<String>,
}

#[tokio::test]
async fn custom_claims_come_typed() {
    let issuer = TestIssuer::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let resource = format!("{origin}/mcp");
    let guard = Guard::builder(&issuer, resource.as_str())
        .build()
        .await
        .unwrap();
    let app = Router::new()
        .route(
            "/mcp",
            post(|Claims(t): Claims<Tenant>, p: Principal| async move {
                let again: Tenant = p.claims_as().unwrap();
                assert_eq!(again.tenant, t.tenant);
                format!("{} {:?}", t.tenant, t.roles)
            }),
        )
        .layer(guard.layer());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let call = |token: String| {
        let (http, url) = (http.clone(), format!("{origin}/mcp"));
        async move {
            let res = http.post(url).bearer_auth(token).send().await.unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        }
    };
    let token = issuer
        .token(&resource)
        .claim("tenant", "acme")
        .claim("roles", json!(["admin"]))
        .sign();
    assert_eq!(call(token).await, (200, r#"acme ["admin"]"#.to_owned()));
    // A token without the claim the handler needs is refused as invalid for it.
    let (status, _) = call(issuer.token(&resource).sign()).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn fixed_keys_and_an_explicit_jwks_url_need_no_discovery() {
    // Metadata that would fail discovery (it names another issuer): the JWKS URL skips it.
    let served = TestIssuer::serve_with(|m| m["issuer"] = json!("https://elsewhere.example"))
        .await
        .unwrap();
    let err = Guard::builder(served.issuer(), RESOURCE)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::IssuerMismatch { .. }), "{err}");
    let guard = Guard::builder(
        Issuer::new(served.issuer()).jwks_uri(format!("{}/jwks", served.issuer())),
        RESOURCE,
    )
    .build()
    .await
    .unwrap();
    assert_eq!(served.jwks_fetches(), 1);
    let token = served.token(RESOURCE).subject("alice").sign();
    assert_eq!(guard.validate(&token).await.unwrap().sub(), "alice");
    // Without discovery `iss` must byte-equal the configured issuer.
    let slash = served
        .token(RESOURCE)
        .claim("iss", format!("{}/", served.issuer()))
        .sign();
    assert_eq!(
        guard.validate(&slash).await.unwrap_err(),
        TokenError::WrongIssuer
    );

    // Fixed keys: nothing is fetched at all, and an unknown key stays unknown.
    let offline = TestIssuer::new();
    let guard = Guard::builder(Issuer::new(offline.issuer()).jwks(offline.jwks()), RESOURCE)
        .build()
        .await
        .unwrap();
    assert!(
        guard
            .validate(&offline.token(RESOURCE).sign())
            .await
            .is_ok()
    );
    let stranger = TestKey::generate("other");
    let token = offline.token(RESOURCE).signed_by(&stranger).sign();
    assert_eq!(
        guard.validate(&token).await.unwrap_err(),
        TokenError::UnknownKey
    );
    let err = Guard::builder(
        Issuer::new(offline.issuer()).jwks(json!({"keys": []})),
        RESOURCE,
    )
    .build()
    .await
    .unwrap_err();
    assert!(matches!(err, BuildError::JwksUnavailable { .. }), "{err}");
}

#[tokio::test]
async fn a_guard_started_in_the_background_becomes_ready_when_the_issuer_answers() {
    // A port nothing listens on yet.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let issuer_url = format!("http://127.0.0.1:{port}");
    let hooked = Arc::new(AtomicBool::new(false));
    let flag = hooked.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let resource = format!("{origin}/mcp");
    let guard = Guard::builder(issuer_url.as_str(), resource.as_str())
        .required_scopes(["notes:read"])
        .on_ready(move || flag.store(true, Ordering::SeqCst))
        .build_in_background()
        .unwrap();
    assert!(!guard.is_ready());
    let app = Protected::serve(listener, origin, resource.clone(), guard.clone());

    // Until the issuer answers: the metadata and the bare challenge are served,
    // and a token is answered 503 with Retry-After, not a reason to re-authorize.
    let doc = app.metadata().await;
    assert_eq!(doc["authorization_servers"], json!([issuer_url]));
    app.call(None).await.assert_refused(401, None);
    let early = TestIssuer::with_issuer(issuer_url.as_str());
    let reply = app.call(Some(&early.token(&resource).sign())).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.headers["retry-after"], "5");
    // The first attempt failed and says so.
    tokio::time::timeout(Duration::from_secs(60), async {
        while guard.startup_error().is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the failed attempt is reported");
    assert!(guard.startup_error().unwrap().contains(&issuer_url));

    // The issuer comes up on that port: the guard becomes ready by itself.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let issuer = TestIssuer::serve_on(listener, |_| {}).unwrap();
    tokio::time::timeout(Duration::from_secs(60), guard.ready())
        .await
        .expect("ready once the issuer answers");
    assert!(guard.is_ready());
    assert!(hooked.load(Ordering::SeqCst), "the readiness hook ran");
    let token = issuer.token(&resource).scopes(["notes:read"]).sign();
    assert_eq!(app.call(Some(&token)).await.status, 200);
}

/// Collects what `tracing` writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn refusals_are_events_and_hooks_count_them() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let accepted = Arc::new(AtomicUsize::new(0));
    let refused: Arc<Mutex<Vec<Refusal>>> = Arc::default();
    let (a, r) = (accepted.clone(), refused.clone());
    let issuer = TestIssuer::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let resource = format!("{origin}/mcp");
    let guard = Guard::builder(&issuer, resource.as_str())
        .required_scopes(["notes:read"])
        .on_accept(move |_| {
            a.fetch_add(1, Ordering::SeqCst);
        })
        .on_refuse(move |refusal| r.lock().unwrap().push(*refusal))
        .build()
        .await
        .unwrap();
    let app = Router::new()
        .route(
            "/mcp",
            post(|| async {
                tracing::info!("inside the handler");
                "ok"
            }),
        )
        .layer(guard.layer());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let call = |token: Option<String>| {
        let (http, url) = (http.clone(), format!("{origin}/mcp"));
        async move {
            let mut req = http.post(url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            req.send().await.unwrap().status().as_u16()
        }
    };
    let good = issuer
        .token(&resource)
        .subject("alice")
        .client_id("agent")
        .scopes(["notes:read"])
        .sign();
    let expired = issuer
        .token(&resource)
        .scopes(["notes:read"])
        .claim("exp", now() - 3600)
        .sign();
    let elsewhere = issuer
        .token("https://other.example/mcp")
        .scopes(["notes:read"])
        .sign();
    let narrow = issuer.token(&resource).scopes(["other"]).sign();
    assert_eq!(call(Some(good.clone())).await, 200);
    assert_eq!(call(None).await, 401);
    assert_eq!(call(Some(expired.clone())).await, 401);
    assert_eq!(call(Some(elsewhere.clone())).await, 401);
    assert_eq!(call(Some(narrow)).await, 403);

    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    let reasons: Vec<_> = refused
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r.reason, r.status))
        .collect();
    assert_eq!(
        reasons,
        [
            ("no_token", 401),
            ("expired", 401),
            ("wrong_audience", 401),
            ("insufficient_scope", 403)
        ]
    );
    let log = captured.text();
    for needle in [
        "reason=\"expired\"",
        "reason=\"wrong_audience\"",
        "reason=\"insufficient_scope\"",
        "hint=",
        // The expected and actual audience, at debug level.
        "expected=[\"http://127.0.0.1",
        "actual=\"https://other.example/mcp\"",
        // The handler ran inside the guard's span.
        "guard{sub=alice client_id=agent}",
    ] {
        assert!(log.contains(needle), "{needle:?} not in\n{log}");
    }
    for token in [&good, &expired, &elsewhere] {
        assert!(!log.contains(token.as_str()), "a token reached the log");
    }
}

#[tokio::test]
async fn offline_access_is_never_advertised_and_dpop_support_is_stated() {
    let issuer = TestIssuer::new();
    let app = Protected::start(&issuer, |b| {
        b.required_scopes(["notes:read", "offline_access"])
            .dpop_bound_access_tokens_required(true)
    })
    .await;
    let doc = app.metadata().await;
    assert_eq!(doc["scopes_supported"], json!(["notes:read"]));
    assert_eq!(doc["dpop_bound_access_tokens_required"], true);
    assert!(
        doc["dpop_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("ES256"))
    );
    let reply = app.call(None).await;
    assert_eq!(reply.status, 401);
    assert!(
        reply.challenge.contains(r#"scope="notes:read""#),
        "{reply:?}"
    );
    assert!(!reply.challenge.contains("offline_access"), "{reply:?}");

    let explicit = Guard::builder(&issuer, RESOURCE)
        .scopes_supported(["notes:read", "offline_access", "openid"])
        .build()
        .await
        .unwrap();
    assert_eq!(
        explicit.metadata().scopes_supported,
        ["notes:read", "openid"]
    );
    // Without DPoP required, the algorithms are still stated and the flag absent.
    let relaxed = Guard::builder(&issuer, RESOURCE).build().await.unwrap();
    assert_eq!(relaxed.metadata().dpop_bound_access_tokens_required, None);
    assert!(
        !relaxed
            .metadata()
            .dpop_signing_alg_values_supported
            .is_empty()
    );
}
