//! DPoP (RFC 9449): proofs at the token endpoint, bound tokens for every grant, nonces,
//! bound refresh tokens of public clients, `dpop_jkt`, userinfo and introspection.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use concierge::oauth::client_metadata::RawClientMetadata;
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use serde_json::{Value, json};

use crate::both;
use crate::flow::*;
use crate::helpers::{TOOLS_RESOURCE, TestApp, add_tools_resource, assert_error, split};

/// A client's DPoP key pair (ES256).
pub(crate) struct DpopKey {
    key: EncodingKey,
    jwk: Jwk,
}

impl DpopKey {
    pub(crate) fn new() -> Self {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EncodingKey::from_ec_der(pkcs8.as_ref());
        let jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        Self { key, jwk }
    }

    pub(crate) fn jkt(&self) -> String {
        concierge_guard::dpop::thumbprint(&serde_json::to_value(&self.jwk).unwrap()).unwrap()
    }

    fn claims(htm: &str, htu: &str) -> Value {
        json!({
            "jti": concierge::util::random_id(),
            "htm": htm,
            "htu": htu,
            "iat": concierge::util::now(),
        })
    }

    /// A proof for `htm htu`, with `edit` applied to the claims.
    fn proof_with(&self, htm: &str, htu: &str, edit: impl FnOnce(&mut Value)) -> String {
        let mut claims = Self::claims(htm, htu);
        edit(&mut claims);
        self.sign(&claims, &self.jwk)
    }

    pub(crate) fn proof(&self, htm: &str, htu: &str) -> String {
        self.proof_with(htm, htu, |_| {})
    }

    /// Sign `claims` with this key but put `jwk` in the header.
    fn sign(&self, claims: &Value, jwk: &Jwk) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(jwk.clone());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

/// An operator's confidential client (client_secret_post) with the tools scopes; returns
/// (id, secret).
pub async fn machine(app: &TestApp, dpop_bound: bool) -> (String, String) {
    add_tools_resource(app).await;
    let (id, secret) = app
        .add_client(RawClientMetadata {
            grant_types: Some(vec!["client_credentials".into()]),
            token_endpoint_auth_method: Some("client_secret_post".into()),
            dpop_bound_access_tokens: Some(dpop_bound),
            scope: Some("tools:read tools:write".into()),
            ..Default::default()
        })
        .await;
    (id, secret.unwrap())
}

async fn token(
    app: &TestApp,
    form: &[(&str, &str)],
    proof: Option<&str>,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = app.http.post(app.url("/token")).form(form);
    if let Some(p) = proof {
        req = req.header("DPoP", p);
    }
    split(req.send().await.unwrap()).await
}

async fn client_credentials(
    app: &TestApp,
    (id, secret): (&str, &str),
    proof: Option<&str>,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    token(
        app,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
            ("scope", "tools:read"),
            ("resource", TOOLS_RESOURCE),
        ],
        proof,
    )
    .await
}

both!(
    client_credentials_token_is_bound,
    |app: TestApp| async move {
        let (id, secret) = machine(&app, false).await;
        let key = DpopKey::new();
        let htu = app.url("/token");
        let proof = key.proof("POST", &htu);
        let (status, _, body) = client_credentials(&app, (&id, &secret), Some(&proof)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "DPoP");
        let at = body["access_token"].as_str().unwrap();
        assert_eq!(claims(at)["cnf"]["jkt"], key.jkt());

        // The same proof again is a replay.
        let got = client_credentials(&app, (&id, &secret), Some(&proof)).await;
        assert_error(&got, 400, "invalid_dpop_proof", "already used");

        // Without a proof the client gets a bearer token (it did not register
        // dpop_bound_access_tokens).
        let (status, _, body) = client_credentials(&app, (&id, &secret), None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        assert!(claims(body["access_token"].as_str().unwrap())["cnf"].is_null());
        app
    }
);

both!(bad_proofs_are_refused, |app: TestApp| async move {
    let (id, secret) = machine(&app, false).await;
    let key = DpopKey::new();
    let other = DpopKey::new();
    let htu = app.url("/token");
    let now = concierge::util::now();
    let mut cases: Vec<(String, &str)> = vec![
        (key.proof("POST", &app.url("/userinfo")), "htu"),
        (key.proof("GET", &htu), "htm"),
        (
            key.proof_with("POST", &htu, |c| c["iat"] = json!(now - 300)),
            "iat",
        ),
        (
            key.proof_with("POST", &htu, |c| c["iat"] = json!(now + 300)),
            "iat",
        ),
        (
            key.proof_with("POST", &htu, |c| {
                c.as_object_mut().unwrap().remove("jti");
            }),
            "jti",
        ),
        // Signed by one key, naming another.
        (
            key.sign(&DpopKey::claims("POST", &htu), &other.jwk),
            "signature",
        ),
    ];
    // HS256 with a secret, and `none`.
    let mut hs = Header::new(Algorithm::HS256);
    hs.typ = Some("dpop+jwt".into());
    hs.jwk = Some(key.jwk.clone());
    let hs = jsonwebtoken::encode(
        &hs,
        &DpopKey::claims("POST", &htu),
        &EncodingKey::from_secret(b"secret").unwrap(),
    )
    .unwrap();
    cases.push((hs, "algorithm"));
    let b64 = |v: &Value| concierge::util::b64(v.to_string().as_bytes());
    let none = format!(
        "{}.{}.",
        b64(&json!({"typ":"dpop+jwt","alg":"none","jwk":key.jwk})),
        b64(&DpopKey::claims("POST", &htu))
    );
    cases.push((none, "signed JWT"));
    let none_sig = format!(
        "{}.{}.AAAA",
        b64(&json!({"typ":"dpop+jwt","alg":"none","jwk":key.jwk})),
        b64(&DpopKey::claims("POST", &htu))
    );
    cases.push((none_sig, "algorithm"));
    // A private key in the header.
    let mut private = serde_json::to_value(&key.jwk).unwrap();
    private["d"] = json!("AAAA");
    let priv_proof = format!(
        "{}.{}.AAAA",
        b64(&json!({"typ":"dpop+jwt","alg":"ES256","jwk":private})),
        b64(&DpopKey::claims("POST", &htu))
    );
    cases.push((priv_proof, "public key"));
    // Another typ.
    let mut jwt = Header::new(Algorithm::ES256);
    jwt.typ = Some("JWT".into());
    jwt.jwk = Some(key.jwk.clone());
    cases.push((
        jsonwebtoken::encode(&jwt, &DpopKey::claims("POST", &htu), &key.key).unwrap(),
        "typ",
    ));
    for (proof, mention) in cases {
        let got = client_credentials(&app, (&id, &secret), Some(&proof)).await;
        assert_error(&got, 400, "invalid_dpop_proof", mention);
    }
    // Two DPoP headers.
    let res = app
        .http
        .post(app.url("/token"))
        .header("DPoP", key.proof("POST", &htu))
        .header("DPoP", key.proof("POST", &htu))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id.as_str()),
            ("client_secret", secret.as_str()),
            ("resource", TOOLS_RESOURCE),
        ])
        .send()
        .await
        .unwrap();
    assert_error(&split(res).await, 400, "invalid_dpop_proof", "exactly one");
    // A proof for the URL with a query is still for this URL (RFC 9449 §4.3).
    let ok = key.proof("POST", &format!("{htu}?x=1"));
    let (status, _, body) = client_credentials(&app, (&id, &secret), Some(&ok)).await;
    assert_eq!(status, 200, "{body}");
    app
});

both!(
    nonces_when_required,
    |c: &mut concierge::config::Config| c.dpop.require_nonce = true,
    |app: TestApp| async move {
        let (id, secret) = machine(&app, false).await;
        let key = DpopKey::new();
        let htu = app.url("/token");
        let got = client_credentials(&app, (&id, &secret), Some(&key.proof("POST", &htu))).await;
        assert_error(&got, 400, "use_dpop_nonce", "nonce");
        let nonce = got.1["dpop-nonce"].to_str().unwrap().to_string();
        // A made-up nonce is refused the same way.
        let bad = key.proof_with("POST", &htu, |c| c["nonce"] = json!("made-up"));
        let got = client_credentials(&app, (&id, &secret), Some(&bad)).await;
        assert_error(&got, 400, "use_dpop_nonce", "nonce");
        let good = key.proof_with("POST", &htu, |c| c["nonce"] = json!(nonce));
        let (status, headers, body) = client_credentials(&app, (&id, &secret), Some(&good)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "DPoP");
        assert!(
            headers.contains_key("dpop-nonce"),
            "a fresh nonce on success"
        );
        app
    }
);

both!(
    dpop_bound_client_needs_a_proof,
    |c: &mut concierge::Config| c.registration.allow_client_credentials = true,
    |app: TestApp| async move {
        // Registration accepts and returns the metadata (RFC 9449 §5.2).
        add_tools_resource(&app).await;
        let (status, _, reg) = app
            .register(&json!({
                "grant_types": ["client_credentials"],
                "token_endpoint_auth_method": "client_secret_post",
                "dpop_bound_access_tokens": true,
                "scope": "tools:read",
            }))
            .await;
        assert_eq!(status, 201, "{reg}");
        assert_eq!(reg["dpop_bound_access_tokens"], true);
        let id = reg["client_id"].as_str().unwrap();
        let secret = reg["client_secret"].as_str().unwrap();
        let got = client_credentials(&app, (id, secret), None).await;
        assert_error(&got, 400, "invalid_dpop_proof", "dpop_bound_access_tokens");
        let key = DpopKey::new();
        let proof = key.proof("POST", &app.url("/token"));
        let (status, _, body) = client_credentials(&app, (id, secret), Some(&proof)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "DPoP");
        // A statically added client with the flag is refused too.
        let (id, secret) = machine(&app, true).await;
        let got = client_credentials(&app, (&id, &secret), None).await;
        assert_error(&got, 400, "invalid_dpop_proof", "DPoP proof");
        app
    }
);

both!(metadata_lists_dpop_algorithms, |app: TestApp| async move {
    let (status, _, m) = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(status, 200);
    let algs = m["dpop_signing_alg_values_supported"].as_array().unwrap();
    for alg in ["ES256", "RS256", "PS256", "EdDSA"] {
        assert!(algs.contains(&json!(alg)), "{alg} in {algs:?}");
    }
    assert!(!algs.contains(&json!("HS256")));
    app
});

/// Run the browser part in `b` and return the code: sign-in and consent the first time,
/// straight back to the client once `b` is signed in and the consent is stored.
async fn code_for(
    app: &TestApp,
    b: &reqwest::Client,
    client_id: &str,
    challenge: &str,
    jkt: Option<&str>,
) -> String {
    let mut params = auth_params(client_id, challenge, "openid offline_access notes:read");
    if let Some(j) = jkt {
        params.push(("dpop_jkt".into(), j.into()));
    }
    let res = b.get(authorize_url(app, &params)).send().await.unwrap();
    let back = location(&res);
    let back = if back.starts_with(REDIRECT) {
        back
    } else {
        authorize_and_approve(app, b, &params).await
    };
    query(&back)["code"].clone()
}

/// A token request of a public client: `grant_type`, `client_id` and `params`.
async fn grant(
    app: &TestApp,
    grant_type: &str,
    client_id: &str,
    params: &[(&str, &str)],
    proof: Option<&str>,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let mut form = vec![("grant_type", grant_type), ("client_id", client_id)];
    form.extend_from_slice(params);
    token(app, &form, proof).await
}

async fn redeem_with(
    app: &TestApp,
    client_id: &str,
    code: &str,
    verifier: &str,
    proof: Option<&str>,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let params = [
        ("code", code),
        ("code_verifier", verifier),
        ("redirect_uri", REDIRECT),
    ];
    grant(app, "authorization_code", client_id, &params, proof).await
}

async fn refresh_with(
    app: &TestApp,
    client_id: &str,
    refresh: &str,
    proof: Option<&str>,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let params = [("refresh_token", refresh)];
    grant(app, "refresh_token", client_id, &params, proof).await
}

async fn userinfo(
    app: &TestApp,
    authorization: &str,
    proof: Option<&str>,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = app
        .http
        .get(app.url("/userinfo"))
        .header("authorization", authorization);
    if let Some(p) = proof {
        req = req.header("DPoP", p);
    }
    split(req.send().await.unwrap()).await
}

both!(
    code_flow_refresh_userinfo_and_introspection,
    |app: TestApp| async move {
        seed(&app).await;
        let client_id = public_client(&app).await;
        let key = DpopKey::new();
        let other = DpopKey::new();
        let htu = app.url("/token");

        // The code flow with a proof: a bound access token and a bound refresh token.
        let (verifier, challenge) = pkce();
        let code = code_for(&app, &browser(), &client_id, &challenge, None).await;
        let (status, _, body) = redeem_with(
            &app,
            &client_id,
            &code,
            &verifier,
            Some(&key.proof("POST", &htu)),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "DPoP");
        let at = body["access_token"].as_str().unwrap().to_string();
        assert_eq!(claims(&at)["cnf"]["jkt"], key.jkt());
        let rt = body["refresh_token"].as_str().unwrap().to_string();

        // Refreshing needs a proof of the same key (RFC 9449 §5); failures do not spend it.
        let got = refresh_with(&app, &client_id, &rt, None).await;
        assert_error(&got, 400, "invalid_dpop_proof", "bound");
        let got = refresh_with(&app, &client_id, &rt, Some(&other.proof("POST", &htu))).await;
        assert_error(&got, 400, "invalid_dpop_proof", "bound");
        let (status, _, body) =
            refresh_with(&app, &client_id, &rt, Some(&key.proof("POST", &htu))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "DPoP");
        assert_eq!(
            claims(body["access_token"].as_str().unwrap())["cnf"]["jkt"],
            key.jkt()
        );
        // The rotated refresh token stays bound.
        let rt2 = body["refresh_token"].as_str().unwrap();
        let got = refresh_with(&app, &client_id, rt2, Some(&other.proof("POST", &htu))).await;
        assert_error(&got, 400, "invalid_dpop_proof", "bound");

        // Userinfo: DPoP scheme with a proof whose ath matches.
        let ui = app.url("/userinfo");
        let ath = concierge_guard::dpop::access_token_hash(&at);
        let good = key.proof_with("GET", &ui, |c| c["ath"] = json!(ath));
        let (status, _, body) = userinfo(&app, &format!("DPoP {at}"), Some(&good)).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["sub"].is_string());
        // A bound token as Bearer, without a proof, with a wrong ath, or another key: 401.
        let (status, headers, _) = userinfo(&app, &format!("Bearer {at}"), None).await;
        assert_eq!(status, 401);
        assert!(
            headers["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
        let (status, headers, _) = userinfo(&app, &format!("DPoP {at}"), None).await;
        assert_eq!(status, 401);
        assert!(
            headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("DPoP error=\"invalid_dpop_proof\"")
        );
        let wrong_ath = key.proof_with("GET", &ui, |c| c["ath"] = json!("x"));
        let (status, _, body) = userinfo(&app, &format!("DPoP {at}"), Some(&wrong_ath)).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "invalid_dpop_proof");
        let other_key = other.proof_with("GET", &ui, |c| c["ath"] = json!(ath));
        let (status, _, body) = userinfo(&app, &format!("DPoP {at}"), Some(&other_key)).await;
        assert_eq!(status, 401, "{body}");
        // A replayed proof at userinfo.
        let (status, _, body) = userinfo(&app, &format!("DPoP {at}"), Some(&good)).await;
        assert_eq!(status, 401, "{body}");

        // Introspection shows the binding.
        let (rs, rs_secret) =
            crate::introspection::static_client(&app, &["client_credentials"], true).await;
        let res = app
            .http
            .post(app.url("/introspect"))
            .form(&[
                ("client_id", rs.as_str()),
                ("client_secret", rs_secret.as_str()),
                ("token", at.as_str()),
            ])
            .send()
            .await
            .unwrap();
        let (status, _, body) = split(res).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["active"], true);
        assert_eq!(body["token_type"], "DPoP");
        assert_eq!(body["cnf"]["jkt"], key.jkt());
        app
    }
);

both!(dpop_jkt_binds_the_code, |app: TestApp| async move {
    seed(&app).await;
    let client_id = public_client(&app).await;
    let key = DpopKey::new();
    let other = DpopKey::new();
    let htu = app.url("/token");
    let b = browser();

    let (verifier, challenge) = pkce();
    let code = code_for(&app, &b, &client_id, &challenge, Some(&key.jkt())).await;
    let got = redeem_with(
        &app,
        &client_id,
        &code,
        &verifier,
        Some(&other.proof("POST", &htu)),
    )
    .await;
    assert_error(&got, 400, "invalid_dpop_proof", "dpop_jkt");

    let (verifier, challenge) = pkce();
    let code = code_for(&app, &b, &client_id, &challenge, Some(&key.jkt())).await;
    let got = redeem_with(&app, &client_id, &code, &verifier, None).await;
    assert_error(&got, 400, "invalid_dpop_proof", "dpop_jkt");

    let (verifier, challenge) = pkce();
    let code = code_for(&app, &b, &client_id, &challenge, Some(&key.jkt())).await;
    let (status, _, body) = redeem_with(
        &app,
        &client_id,
        &code,
        &verifier,
        Some(&key.proof("POST", &htu)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["cnf"]["jkt"],
        key.jkt()
    );

    // A malformed dpop_jkt is an authorization error (on a page: this client registered
    // itself and the request is refused before anyone has seen it).
    let (_, challenge) = pkce();
    let mut params = auth_params(&client_id, &challenge, "notes:read");
    params.push(("dpop_jkt".into(), "not-a-thumbprint".into()));
    let res = browser()
        .get(authorize_url(&app, &params))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let page = res.text().await.unwrap();
    assert!(
        page.contains("invalid_request") && page.contains("dpop_jkt"),
        "{page}"
    );
    app
});

both!(
    bound_subject_token_is_exchanged_by_its_holder,
    |app: TestApp| async move {
        seed(&app).await;
        let (client_id, secret) = app
            .add_client(RawClientMetadata {
                grant_types: Some(vec![
                    "client_credentials".into(),
                    "urn:ietf:params:oauth:grant-type:token-exchange".into(),
                ]),
                token_endpoint_auth_method: Some("client_secret_post".into()),
                scope: Some("calendar:read".into()),
                ..Default::default()
            })
            .await;
        allow_calendar_to_notes(&app, &client_id).await;
        let secret = secret.unwrap();
        let key = DpopKey::new();
        let htu = app.url("/token");
        let auth = [
            ("client_id", client_id.as_str()),
            ("client_secret", secret.as_str()),
        ];
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("resource", CALENDAR),
            ("scope", "calendar:read"),
        ];
        form.extend_from_slice(&auth);
        let (status, _, body) = token(&app, &form, Some(&key.proof("POST", &htu))).await;
        assert_eq!(status, 200, "{body}");
        let subject = body["access_token"].as_str().unwrap().to_string();
        assert_eq!(claims(&subject)["cnf"]["jkt"], key.jkt());

        let mut form = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", subject.as_str()),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
            ("resource", NOTES),
        ];
        form.extend_from_slice(&auth);
        let (status, _, body) = token(&app, &form, Some(&key.proof("POST", &htu))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "DPoP");
        let exchanged = claims(body["access_token"].as_str().unwrap());
        assert_eq!(exchanged["cnf"]["jkt"], key.jkt());
        assert_eq!(exchanged["aud"], NOTES);
        app
    }
);
