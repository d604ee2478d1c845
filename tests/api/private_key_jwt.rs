//! `private_key_jwt` client authentication at `POST /token` (RFC 7523 §2.2/§3): keys inline,
//! at a `jwks_uri`, and in a Client ID Metadata Document; every refusal.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use axum::Router;
use axum::routing::get;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::both;
use crate::helpers::{TOOLS_RESOURCE, TestApp, add_tools_resource, assert_error, split};

const RESOURCE: &str = TOOLS_RESOURCE;
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A client signing key and its public JWK (with `kid`).
pub(crate) struct TestKey {
    alg: Algorithm,
    kid: String,
    encoding: EncodingKey,
    pub(crate) jwk: Value,
}

impl TestKey {
    pub(crate) fn es256(kid: &str) -> Self {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        Self::new(
            Algorithm::ES256,
            kid,
            EncodingKey::from_ec_der(pkcs8.as_ref()),
        )
    }

    fn eddsa(kid: &str) -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let public = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let x = concierge::util::b64(public.public_key().as_ref());
        Self {
            alg: Algorithm::EdDSA,
            kid: kid.into(),
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA"}),
        }
    }

    fn new(alg: Algorithm, kid: &str, encoding: EncodingKey) -> Self {
        let mut jwk =
            serde_json::to_value(Jwk::from_encoding_key(&encoding, alg).unwrap()).unwrap();
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        Self {
            alg,
            kid: kid.into(),
            encoding,
            jwk,
        }
    }

    /// Sign `claims` with this key, naming `kid` in the header.
    fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, claims, &self.encoding).unwrap()
    }

    pub(crate) fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }
}

/// Claims a well-behaved client sends: iss = sub = client_id, aud = issuer, 60 s lifetime.
fn claims(app: &TestApp, client_id: &str) -> Value {
    let now = concierge::util::now();
    json!({
        "iss": client_id,
        "sub": client_id,
        "aud": app.issuer,
        "iat": now,
        "exp": now + 60,
        "jti": concierge::util::random_id(),
    })
}

/// Register a client_credentials client with `private_key_jwt` and these key fields.
async fn register(app: &TestApp, keys: Value) -> String {
    let mut body = json!({
        "client_name": "Signer",
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "private_key_jwt",
        "scope": "tools:read tools:write",
    });
    for (k, v) in keys.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, _, info) = app.register(&body).await;
    assert_eq!(status, 201, "{info}");
    assert!(info.get("client_secret").is_none());
    info["client_id"].as_str().unwrap().to_string()
}

async fn token(
    app: &TestApp,
    assertion: &str,
    extra: &[(&str, &str)],
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    send_token(&app.http, &app.url("/token"), assertion, extra).await
}

async fn send_token(
    http: &reqwest::Client,
    url: &str,
    assertion: &str,
    extra: &[(&str, &str)],
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", assertion),
        ("resource", RESOURCE),
        ("scope", "tools:read"),
    ];
    form.extend_from_slice(extra);
    let res = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(&form).unwrap())
        .send()
        .await
        .unwrap();
    split(res).await
}

fn assert_token(got: &(reqwest::StatusCode, reqwest::header::HeaderMap, Value), client_id: &str) {
    let (status, _, body) = got;
    assert_eq!(status.as_u16(), 200, "{body}");
    let claims: Value =
        jsonwebtoken::dangerous::insecure_decode_claims(body["access_token"].as_str().unwrap())
            .unwrap();
    assert_eq!(claims["client_id"], client_id);
    assert_eq!(claims["aud"], RESOURCE);
}

/// A refusal: 401 invalid_client whose description mentions `mention` and never contains
/// the assertion.
fn assert_refused(
    got: &(reqwest::StatusCode, reqwest::header::HeaderMap, Value),
    assertion: &str,
    mention: &str,
) {
    assert_error(got, 401, "invalid_client", mention);
    let d = got.2["error_description"].as_str().unwrap();
    assert!(!d.contains(assertion), "the assertion is never echoed");
}

both!(
    inline_jwks_and_every_refusal,
    |c: &mut concierge::Config| c.registration.allow_client_credentials = true,
    |app: TestApp| async move {
        add_tools_resource(&app).await;
        let key = TestKey::es256("k1");
        let id = register(&app, json!({"jwks": {"keys": [key.jwk]}})).await;

        // Metadata advertises the method and the algorithms.
        let (_, _, meta) = app
            .get_json("/.well-known/oauth-authorization-server")
            .await;
        assert!(
            meta["token_endpoint_auth_methods_supported"]
                .as_array()
                .unwrap()
                .contains(&json!("private_key_jwt"))
        );
        assert_eq!(
            meta["token_endpoint_auth_signing_alg_values_supported"],
            json!(["ES256", "ES384", "RS256", "PS256", "EdDSA"])
        );

        // Success, with client_id in the body too (it agrees).
        let a = key.sign(&claims(&app, &id));
        assert_token(&token(&app, &a, &[("client_id", &id)]).await, &id);
        // Replay of the very same assertion.
        assert_refused(&token(&app, &a, &[]).await, &a, "used before");

        let with = |f: &dyn Fn(&mut Value)| {
            let mut c = claims(&app, &id);
            f(&mut c);
            c
        };
        let now = concierge::util::now();
        let cases: Vec<(Value, &str)> = vec![
            (
                with(&|c| c["aud"] = json!("https://elsewhere.example")),
                "aud must be",
            ),
            (with(&|c| c["exp"] = json!(now - 600)), "expired"),
            (with(&|c| c["exp"] = json!(now + 3600)), "short-lived"),
            (
                with(&|c| drop(c.as_object_mut().unwrap().remove("jti"))),
                "must carry a jti claim",
            ),
            (
                with(&|c| drop(c.as_object_mut().unwrap().remove("exp"))),
                "must carry the exp claim",
            ),
            (
                with(&|c| c["iss"] = json!("someone-else")),
                "iss must be the client_id",
            ),
            (with(&|c| c["nbf"] = json!(now + 600)), "nbf"),
            (with(&|c| c["jti"] = json!(42)), "malformed"),
            (with(&|c| c["iat"] = json!(now + 600)), "iat"),
        ];
        for (c, mention) in cases {
            let a = key.sign(&c);
            assert_refused(&token(&app, &a, &[]).await, &a, mention);
        }
        // aud as an array containing the token endpoint is fine.
        let a = key.sign(&with(&|c| {
            c["aud"] = json!(["https://elsewhere.example", format!("{}/token", app.issuer)])
        }));
        assert_token(&token(&app, &a, &[]).await, &id);

        // Signed by a key that is not the client's, under the client's kid.
        let other = TestKey::es256("k1");
        let a = other.sign(&claims(&app, &id));
        assert_refused(&token(&app, &a, &[]).await, &a, "signature does not verify");
        // A kid the client does not have.
        let a = key.sign_as("nope", &claims(&app, &id));
        assert_refused(&token(&app, &a, &[]).await, &a, "kid");

        // alg none, and HMAC with anything as the secret.
        let b64 = |v: Value| concierge::util::b64(v.to_string().as_bytes());
        let none = format!(
            "{}.{}.",
            b64(json!({"alg": "none", "kid": "k1"})),
            b64(claims(&app, &id))
        );
        assert_refused(&token(&app, &none, &[]).await, &none, "'none'");
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        let secret = serde_json::to_vec(&key.jwk).unwrap();
        let hs = jsonwebtoken::encode(
            &h,
            &claims(&app, &id),
            &EncodingKey::from_secret(&secret).unwrap(),
        )
        .unwrap();
        assert_refused(&token(&app, &hs, &[]).await, &hs, "HS256");

        // sub naming another client than the body's client_id; then not a JWT at all.
        let a = key.sign(&claims(&app, &id));
        assert_refused(
            &token(&app, &a, &[("client_id", "another")]).await,
            &a,
            "differs",
        );
        assert_refused(&token(&app, "garbage", &[]).await, "garbage", "compact JWS");
        // Mixing methods is a malformed request.
        let a = key.sign(&claims(&app, &id));
        assert_error(
            &token(&app, &a, &[("client_secret", "x")]).await,
            400,
            "invalid_request",
            "one client authentication method",
        );
        app
    }
);

both!(
    eddsa_with_aud_the_token_endpoint,
    |c: &mut concierge::Config| c.registration.allow_client_credentials = true,
    |app: TestApp| async move {
        add_tools_resource(&app).await;
        let key = TestKey::eddsa("ed");
        let id = register(&app, json!({"jwks": {"keys": [key.jwk]}})).await;
        let mut c = claims(&app, &id);
        c["aud"] = json!(format!("{}/token", app.issuer));
        let a = key.sign(&c);
        assert_token(&token(&app, &a, &[]).await, &id);
        // A client registered for private_key_jwt cannot fall back to nothing.
        let got = token(&app, &a, &[]).await;
        assert_refused(&got, &a, "used before");
        let res = app
            .http
            .post(app.url("/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=client_credentials&client_id={id}&resource={RESOURCE}"
            ))
            .send()
            .await
            .unwrap();
        assert_error(&split(res).await, 401, "invalid_client", "private_key_jwt");
        app
    }
);

/// A loopback server publishing a JWK Set (or a document) and counting fetches.
async fn serve(
    path: &'static str,
    body: Arc<std::sync::Mutex<Value>>,
) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let router = Router::new().route(
        path,
        get(move || {
            let (h, body) = (h.clone(), body.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                let v = body.lock().unwrap().clone();
                ([("content-type", "application/json")], v.to_string())
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (base, hits)
}

both!(
    jwks_uri_cached_and_unknown_kids_do_not_refetch,
    |c: &mut concierge::Config| {
        c.cimd.allow_loopback = true;
        c.registration.allow_client_credentials = true;
    },
    |app: TestApp| async move {
        add_tools_resource(&app).await;
        let key = TestKey::es256("k1");
        let set = Arc::new(std::sync::Mutex::new(json!({"keys": [key.jwk]})));
        let (base, hits) = serve("/jwks.json", set).await;
        let id = register(&app, json!({"jwks_uri": format!("{base}/jwks.json")})).await;

        assert_token(&token(&app, &key.sign(&claims(&app, &id)), &[]).await, &id);
        assert_token(&token(&app, &key.sign(&claims(&app, &id)), &[]).await, &id);
        assert_eq!(hits.load(Ordering::SeqCst), 1, "the set is cached");

        // A flood of made-up kids, concurrently: at most one refetch per 30 s per URI, and
        // the first fetch was just now, so none.
        let mut tasks = Vec::new();
        for i in 0..20 {
            let a = key.sign_as(&format!("unknown-{i}"), &claims(&app, &id));
            let (http, url) = (app.http.clone(), app.url("/token"));
            tasks.push(tokio::spawn(async move {
                send_token(&http, &url, &a, &[]).await
            }));
        }
        for t in tasks {
            let got = t.await.unwrap();
            assert_error(&got, 401, "invalid_client", "kid");
        }
        assert_eq!(hits.load(Ordering::SeqCst), 1, "no refetch storm");
        app
    }
);

both!(
    metadata_document_client_with_private_key_jwt,
    |c: &mut concierge::Config| {
        c.cimd.allow_loopback = true;
        c.registration.allow_client_credentials = true;
    },
    |app: TestApp| async move {
        add_tools_resource(&app).await;
        let key = TestKey::es256("doc-key");
        let doc = Arc::new(std::sync::Mutex::new(Value::Null));
        let (base, _) = serve("/agent.json", doc.clone()).await;
        let id = format!("{base}/agent.json");
        *doc.lock().unwrap() = json!({
            "client_id": id,
            "client_name": "Document signer",
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "private_key_jwt",
            "scope": "tools:read",
            "jwks": {"keys": [key.jwk]},
        });
        let a = key.sign(&claims(&app, &id));
        assert_token(&token(&app, &a, &[]).await, &id);
        assert_refused(&token(&app, &a, &[]).await, &a, "used before");
        // Another key under the document's kid is refused.
        let a = TestKey::es256("doc-key").sign(&claims(&app, &id));
        assert_refused(&token(&app, &a, &[]).await, &a, "signature");
        app
    }
);

both!(
    metadata_document_with_auth_method_choices,
    |c: &mut concierge::Config| c.cimd.allow_loopback = true,
    |app: TestApp| async move {
        use crate::flow::{
            REDIRECT, auth_params, authorize_url, browser, decide, location, pkce, query, redeem,
            seed,
        };
        seed(&app).await;
        let key = TestKey::es256("agent-key");
        let doc = Arc::new(std::sync::Mutex::new(Value::Null));
        let (base, _) = serve("/oauth/client.json", doc.clone()).await;
        let id = format!("{base}/oauth/client.json");
        // As agents publish them: OpenID Connect RP Metadata Choices instead of one method,
        // grant types this server does not give such clients, fields nobody defined yet.
        *doc.lock().unwrap() = json!({
            "client_id": id,
            "client_name": "Choosy Agent",
            "redirect_uris": [REDIRECT, "http://localhost:33418/callback"],
            "grant_types": ["authorization_code", "refresh_token",
                "urn:ietf:params:oauth:grant-type:jwt-bearer", "implicit"],
            "response_types": ["code"],
            "token_endpoint_auth_methods_supported": ["none", "private_key_jwt", "tls_client_auth"],
            "jwks": {"keys": [key.jwk]},
            "software_statement_version": 3,
            "x-vendor": {"anything": true},
        });
        for method in ["private_key_jwt", "none"] {
            let (verifier, challenge) = pkce();
            let b = browser();
            let res = b
                .get(authorize_url(
                    &app,
                    &auth_params(&id, &challenge, "notes:read"),
                ))
                .send()
                .await
                .unwrap();
            let signin = format!("{}{}", app.origin, location(&res));
            let after =
                crate::flow::sign_in(&app, &b, &signin, "alice", crate::flow::PASSWORD).await;
            let page = b
                .get(format!("{}{}", app.origin, location(&after)))
                .send()
                .await
                .unwrap();
            let back = if page.status() == 303 {
                // Approved the first time round: remembered.
                location(&page)
            } else {
                let html = page.text().await.unwrap();
                // CIMD: the redirect host is always shown; a loopback-only document gets a note.
                assert!(html.contains("id=\"redirect-host\""), "{html}");
                assert!(html.contains("id=\"loopback-note\""), "{html}");
                location(&decide(&app, &b, &html, "approve").await)
            };
            let code = query(&back)["code"].clone();
            let assertion = key.sign(&claims(&app, &id));
            let extra: Vec<(&str, &str)> = if method == "private_key_jwt" {
                vec![
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", &assertion),
                ]
            } else {
                vec![]
            };
            let (status, _, body) = redeem(&app, &id, &code, &verifier, &extra).await;
            assert_eq!(status, 200, "{method}: {body}");
        }
        app
    }
);
