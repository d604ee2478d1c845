//! DPoP-bound tokens at the guard (RFC 9449 §7): the proof must match the
//! request, the token and its key, once; otherwise 401 and the handler never
//! runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::post;
use common::{now, sign};
use concierge_guard::test::{TestIssuer, TestKey as Key};
use concierge_guard::{Guard, GuardBuilder, Principal, dpop};
use jsonwebtoken::{Algorithm, Header};
use serde_json::{Value, json};

struct App {
    origin: String,
    resource: String,
    calls: Arc<AtomicUsize>,
    http: reqwest::Client,
}

struct Reply {
    status: u16,
    challenges: Vec<String>,
    nonce: Option<String>,
    body: Value,
}

impl App {
    async fn start(issuer: &str, dpop_required: bool) -> Self {
        Self::start_with(issuer, |b| {
            b.dpop_bound_access_tokens_required(dpop_required)
        })
        .await
    }

    async fn start_with(
        issuer: &str,
        configure: impl FnOnce(GuardBuilder) -> GuardBuilder,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let resource = format!("{origin}/mcp");
        let guard = configure(Guard::builder(issuer, resource.as_str()))
            .build()
            .await
            .unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let app = Router::new()
            .route(
                "/mcp",
                post(move |p: Principal| {
                    let counter = counter.clone();
                    async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        axum::Json(json!({"sub": p.sub(), "jkt": p.dpop_jkt()}))
                    }
                }),
            )
            .layer(guard.layer())
            .merge(guard.metadata_router());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            origin,
            resource,
            calls,
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, authorization: Option<String>, proofs: &[&str]) -> Reply {
        let mut req = self
            .http
            .post(format!("{}/mcp?x=1", self.origin))
            .body("{}");
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        for p in proofs {
            req = req.header("DPoP", *p);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let challenges = res
            .headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let nonce = res
            .headers()
            .get("dpop-nonce")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = res.json().await.unwrap_or(Value::Null);
        Reply {
            status,
            challenges,
            nonce,
            body,
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A proof made with `key` for `htm htu` and `token`, with `edit` applied.
fn proof(key: &Key, htm: &str, htu: &str, token: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut claims = json!({
        "jti": format!("j{}", NEXT.fetch_add(1, Ordering::SeqCst)),
        "htm": htm,
        "htu": htu,
        "iat": now(),
        "ath": dpop::access_token_hash(token),
    });
    edit(&mut claims);
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some("dpop+jwt".into());
    header.jwk = Some(serde_json::from_value(key.jwk().clone()).unwrap());
    jsonwebtoken::encode(&header, &claims, key.encoding_key()).unwrap()
}

fn jkt(key: &Key) -> String {
    dpop::thumbprint(key.jwk()).unwrap()
}

fn token(issuer: &Key, iss: &str, aud: &str, jkt: Option<&str>) -> String {
    let mut c = json!({
        "iss": iss, "aud": aud, "sub": "user-1", "client_id": "client-1",
        "scope": "notes:read", "iat": now(), "exp": now() + 600, "jti": "t1",
    });
    if let Some(j) = jkt {
        c["cnf"] = json!({ "jkt": j });
    }
    sign(issuer, &c)
}

fn assert_dpop_refused(reply: &Reply, error: &str, mention: &str) {
    assert_eq!(reply.status, 401, "{:?} {}", reply.challenges, reply.body);
    assert_eq!(reply.body["error"], error, "{}", reply.body);
    let bearer = &reply.challenges[0];
    assert!(bearer.starts_with("Bearer"), "{bearer}");
    assert!(bearer.contains("resource_metadata=\""), "{bearer}");
    let dpop = reply
        .challenges
        .iter()
        .find(|c| c.starts_with("DPoP "))
        .unwrap_or_else(|| panic!("no DPoP challenge in {:?}", reply.challenges));
    assert!(dpop.contains(&format!("error=\"{error}\"")), "{dpop}");
    assert!(dpop.contains("algs=\"ES256"), "{dpop}");
    assert!(
        reply.body["error_description"]
            .as_str()
            .unwrap()
            .contains(mention),
        "{mention:?} in {}",
        reply.body
    );
}

#[tokio::test]
async fn bound_tokens_need_a_matching_fresh_proof() {
    let issuer = TestIssuer::serve().await.unwrap();
    let signing = issuer.key().clone();
    let app = App::start(issuer.issuer(), false).await;
    let client = Key::generate("client");
    let other = Key::generate("other");
    let at = token(
        &signing,
        issuer.issuer(),
        &app.resource,
        Some(&jkt(&client)),
    );
    let htu = format!("{}/mcp", app.origin);
    let auth = || Some(format!("DPoP {at}"));

    // The right proof: the handler runs and sees the binding.
    let good = proof(&client, "POST", &htu, &at, |_| {});
    let reply = app.call(auth(), &[&good]).await;
    assert_eq!(reply.status, 200, "{:?} {}", reply.challenges, reply.body);
    assert_eq!(reply.body["jkt"], jkt(&client));
    assert_eq!(app.calls(), 1);

    let cases: Vec<(Vec<String>, &str)> = vec![
        // The same proof again.
        (vec![good.clone()], "already used"),
        // Another URL, another method.
        (
            vec![proof(
                &client,
                "POST",
                &format!("{}/admin", app.origin),
                &at,
                |_| {},
            )],
            "htu",
        ),
        (vec![proof(&client, "GET", &htu, &at, |_| {})], "htm"),
        // An ath for another token.
        (
            vec![proof(&client, "POST", &htu, &at, |c| {
                c["ath"] = json!(dpop::access_token_hash("other"))
            })],
            "ath",
        ),
        // Stale.
        (
            vec![proof(&client, "POST", &htu, &at, |c| {
                c["iat"] = json!(now() - 600)
            })],
            "iat",
        ),
        // Another key than the token is bound to.
        (
            vec![proof(&other, "POST", &htu, &at, |_| {})],
            "another key",
        ),
        // No proof, two proofs.
        (vec![], "required"),
        (
            vec![
                proof(&client, "POST", &htu, &at, |_| {}),
                proof(&client, "POST", &htu, &at, |_| {}),
            ],
            "exactly one",
        ),
    ];
    for (proofs, mention) in cases {
        let proofs: Vec<&str> = proofs.iter().map(String::as_str).collect();
        let reply = app.call(auth(), &proofs).await;
        assert_dpop_refused(&reply, "invalid_dpop_proof", mention);
    }

    // The bound token as a bearer token.
    let reply = app.call(Some(format!("Bearer {at}")), &[&good]).await;
    assert_dpop_refused(&reply, "invalid_token", "DPoP-bound");
    assert_eq!(app.calls(), 1, "the handler never ran for a refusal");
}

#[tokio::test]
async fn unbound_tokens_stay_bearer_unless_dpop_is_required() {
    let issuer = TestIssuer::serve().await.unwrap();
    let signing = issuer.key().clone();
    let app = App::start(issuer.issuer(), false).await;
    let client = Key::generate("client");
    let at = token(&signing, issuer.issuer(), &app.resource, None);
    let htu = format!("{}/mcp", app.origin);
    let reply = app.call(Some(format!("Bearer {at}")), &[]).await;
    assert_eq!(reply.status, 200);
    // An unbound token with the DPoP scheme is refused.
    let p = proof(&client, "POST", &htu, &at, |_| {});
    let reply = app.call(Some(format!("DPoP {at}")), &[&p]).await;
    assert_dpop_refused(&reply, "invalid_token", "not DPoP-bound");
    assert_eq!(app.calls(), 1);

    // A resource that requires DPoP refuses bearer tokens and says so in its metadata.
    let strict = App::start(issuer.issuer(), true).await;
    let at = token(&signing, issuer.issuer(), &strict.resource, None);
    let reply = strict.call(Some(format!("Bearer {at}")), &[]).await;
    assert_dpop_refused(&reply, "invalid_token", "DPoP-bound tokens only");
    let reply = strict.call(None, &[]).await;
    assert_eq!(reply.status, 401);
    assert!(reply.challenges.iter().any(|c| c.starts_with("DPoP algs=")));
    assert_eq!(strict.calls(), 0);
    let meta: Value = reqwest::get(format!(
        "{}/.well-known/oauth-protected-resource/mcp",
        strict.origin
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(meta["dpop_bound_access_tokens_required"], true);
    assert!(
        meta["dpop_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("ES256"))
    );
    let bound = token(
        &signing,
        issuer.issuer(),
        &strict.resource,
        Some(&jkt(&client)),
    );
    let p = proof(
        &client,
        "POST",
        &format!("{}/mcp", strict.origin),
        &bound,
        |_| {},
    );
    let reply = strict.call(Some(format!("DPoP {bound}")), &[&p]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[tokio::test]
async fn resource_nonces_are_required_when_configured() {
    let issuer = TestIssuer::serve().await.unwrap();
    let signing = issuer.key().clone();
    let app = App::start_with(issuer.issuer(), |b| b.dpop_nonces(true)).await;
    let client = Key::generate("client");
    let at = token(
        &signing,
        issuer.issuer(),
        &app.resource,
        Some(&jkt(&client)),
    );
    let htu = format!("{}/mcp", app.origin);
    let auth = || Some(format!("DPoP {at}"));

    // RFC 9449 §9: no nonce → 401 use_dpop_nonce, only the DPoP challenge, and a nonce.
    let first = proof(&client, "POST", &htu, &at, |_| {});
    let reply = app.call(auth(), &[&first]).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(reply.body["error"], "use_dpop_nonce");
    assert_eq!(reply.challenges.len(), 1, "{:?}", reply.challenges);
    assert!(
        reply.challenges[0].starts_with("DPoP error=\"use_dpop_nonce\""),
        "{:?}",
        reply.challenges
    );
    let nonce = reply.nonce.expect("a DPoP-Nonce header");
    assert_eq!(app.calls(), 0);

    // A made-up nonce is refused the same way.
    let forged = proof(&client, "POST", &htu, &at, |c| c["nonce"] = json!("1.AAAA"));
    let reply = app.call(auth(), &[&forged]).await;
    assert_eq!(reply.body["error"], "use_dpop_nonce");

    // With the nonce it passes, and the answer carries the current nonce.
    let with_nonce = proof(&client, "POST", &htu, &at, |c| c["nonce"] = json!(nonce));
    let reply = app.call(auth(), &[&with_nonce]).await;
    assert_eq!(reply.status, 200, "{:?} {}", reply.challenges, reply.body);
    assert!(
        reply.nonce.is_some(),
        "accepted answers carry the current nonce"
    );
    assert_eq!(app.calls(), 1);
    // Replays are still refused.
    let reply = app.call(auth(), &[&with_nonce]).await;
    assert_dpop_refused(&reply, "invalid_dpop_proof", "already used");

    // Bearer tokens are not affected by nonces.
    let plain = token(&signing, issuer.issuer(), &app.resource, None);
    assert_eq!(
        app.call(Some(format!("Bearer {plain}")), &[]).await.status,
        200
    );
}

#[tokio::test]
async fn one_key_flooding_proofs_never_refuses_another_client() {
    let issuer = TestIssuer::serve().await.unwrap();
    let signing = issuer.key().clone();
    let app = App::start_with(issuer.issuer(), |b| b.dpop_replay_cache_size(3)).await;
    let htu = format!("{}/mcp", app.origin);
    let flooder = Key::generate("flooder");
    let flood_token = token(
        &signing,
        issuer.issuer(),
        &app.resource,
        Some(&jkt(&flooder)),
    );
    let victim = Key::generate("victim");
    let victim_token = token(
        &signing,
        issuer.issuer(),
        &app.resource,
        Some(&jkt(&victim)),
    );

    // The flooder fills its own set of proof ids…
    for _ in 0..3 {
        let p = proof(&flooder, "POST", &htu, &flood_token, |_| {});
        let reply = app.call(Some(format!("DPoP {flood_token}")), &[&p]).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    // …and only it is refused from then on,
    for _ in 0..5 {
        let p = proof(&flooder, "POST", &htu, &flood_token, |_| {});
        let reply = app.call(Some(format!("DPoP {flood_token}")), &[&p]).await;
        assert_dpop_refused(&reply, "invalid_dpop_proof", "too many");
    }
    // while another client keeps being served.
    for _ in 0..3 {
        let p = proof(&victim, "POST", &htu, &victim_token, |_| {});
        let reply = app.call(Some(format!("DPoP {victim_token}")), &[&p]).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert_eq!(app.calls(), 6);
}
