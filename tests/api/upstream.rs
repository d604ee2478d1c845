//! Issue 13.4: signing in through upstream identity providers. A second Concierge as a real
//! OpenID Connect provider (both stores); a stand-in provider that answers with forged ID
//! tokens for every refusal (wrong `nonce`, `aud`, `iss`, signature, expiry; `state` and
//! `iss` mismatches); a stand-in with GitHub's documented response shapes; linking from the
//! account page, and its refusal for an identity linked to another user.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use concierge::store::{LinkedBy, UpstreamKind, UpstreamProvider};
use serde_json::{Value, json};

use crate::flow::*;
use crate::helpers::{Backend, Server, TestApp, spawn_app_on};
use crate::private_key_jwt::TestKey;

fn provider(
    id: &str,
    issuer: Option<String>,
    client_id: &str,
    secret: Option<String>,
) -> UpstreamProvider {
    UpstreamProvider {
        id: id.into(),
        name: format!("{id} SSO"),
        kind: UpstreamKind::Oidc,
        issuer,
        client_id: client_id.into(),
        client_secret: secret,
        scopes: Vec::new(),
        link_by_email: false,
        provision: true,
        authorization_endpoint: None,
        token_endpoint: None,
        userinfo_endpoint: None,
    }
}

async fn bind() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", l.local_addr().unwrap().port());
    (l, base)
}

/// `corp`: the relying party at `rp_issuer` registered at the Concierge `idp` by dynamic
/// registration, as a confidential client (client_secret_basic).
async fn registered_at(idp: &TestApp, rp_issuer: &str) -> UpstreamProvider {
    let (s, _, reg) = idp
        .register(&json!({
            "client_name": "Concierge downstream",
            "redirect_uris": [format!("{rp_issuer}/signin/upstream/corp/callback")],
            "grant_types": ["authorization_code"],
            "token_endpoint_auth_method": "client_secret_basic",
        }))
        .await;
    assert_eq!(s, 201, "{reg}");
    provider(
        "corp",
        Some(idp.url("")),
        reg["client_id"].as_str().unwrap(),
        reg["client_secret"].as_str().map(str::to_string),
    )
}

/// A Concierge as the OpenID Connect provider (with alice) and one signing users in through
/// it as `corp`, its client registered there by dynamic registration (client_secret_basic).
struct Federation {
    idp: TestApp,
    rp: TestApp,
}

impl Federation {
    async fn start(
        backend: Backend,
        configure: impl FnOnce(&mut UpstreamProvider),
    ) -> Option<Self> {
        let (l_idp, _) = bind().await;
        let (l_rp, rp_issuer) = bind().await;
        let idp = spawn_app_on(backend, l_idp, "", |_| {}).await?;
        seed(&idp).await;
        let mut p = registered_at(&idp, &rp_issuer).await;
        configure(&mut p);
        let rp = spawn_app_on(backend, l_rp, "", |c| c.upstream = vec![p]).await?;
        Some(Self { idp, rp })
    }

    async fn finish(self) {
        self.idp.finish().await;
        self.rp.finish().await;
    }
}

/// A GET's 303 target, made absolute against `app`.
fn next(app: &impl Server, res: &reqwest::Response) -> String {
    let l = location(res);
    if l.starts_with("http") {
        l
    } else {
        format!("{}{l}", app.origin())
    }
}

/// The browser at the provider (its own cookie jar): from the authorization request to the
/// redirect back to the relying party, signing in as alice and approving when asked.
async fn through_idp(idp: &TestApp, b: &reqwest::Client, authorize: &str) -> String {
    let res = b.get(authorize).send().await.unwrap();
    assert_eq!(res.status(), 303, "{authorize}");
    let mut at = next(idp, &res);
    if at.contains("/signin?") {
        let res = sign_in(idp, b, &at, "alice", PASSWORD).await;
        assert_eq!(res.status(), 303);
        at = next(idp, &res);
    }
    if at.starts_with(idp.origin()) && at.contains("/authorize/continue") {
        let page = b.get(&at).send().await.unwrap();
        if page.status() == 303 {
            return location(&page);
        }
        let html = page.text().await.unwrap();
        let res = decide(idp, b, &html, "approve").await;
        assert_eq!(res.status(), 303);
        return location(&res);
    }
    at
}

/// Start at the relying party's button and come back through the provider; the relying
/// party's answer to the callback.
async fn sign_in_through(
    f: &Federation,
    rp_b: &reqwest::Client,
    idp_b: &reqwest::Client,
    start: &str,
) -> reqwest::Response {
    let res = rp_b.get(f.rp.url(start)).send().await.unwrap();
    assert_eq!(res.status(), 303);
    let authorize = location(&res);
    assert!(
        authorize.starts_with(&f.idp.url("/authorize?")),
        "{authorize}"
    );
    let q = query(&authorize);
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q.contains_key("nonce") && q.contains_key("state"));
    let back = through_idp(&f.idp, idp_b, &authorize).await;
    assert!(
        back.starts_with(&f.rp.url("/signin/upstream/corp/callback?")),
        "{back}"
    );
    assert_eq!(query(&back)["iss"], f.idp.url(""), "RFC 9207");
    rp_b.get(&back).send().await.unwrap()
}

/// The user the relying party's browser is signed in as (its security page says), and the
/// `amr` of that user's newest session.
async fn signed_in_as(app: &TestApp, b: &reqwest::Client) -> Option<(String, Vec<String>)> {
    let page = b.get(app.url("/account/security")).send().await.unwrap();
    if page.status() != 200 {
        return None;
    }
    let html = page.text().await.unwrap();
    let (_, rest) = html.split_once("Signed in as <strong>")?;
    let (name, _) = rest.split_once("</strong>")?;
    let name = unescape(name);
    let store = app.store();
    let user = store.find_user(&name).await.unwrap()?;
    let sessions = store
        .list_user_sessions(&user.id, concierge::util::now())
        .await
        .unwrap();
    // This browser's session is the one the page marks.
    let (before, _) = html.split_once("data-this=\"true\"")?;
    let (_, sid) = before.rsplit_once("data-sid=\"")?;
    let sid = sid.split('"').next()?;
    let this = sessions.iter().find(|s| s.sid == sid)?;
    Some((name, this.amr.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_concierge_signs_users_in_provisioned_then_by_subject() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(f) = Federation::start(backend, |_| {}).await else {
            continue;
        };
        // The sign-in page offers the provider, carrying the way back, without script.
        let (rp_b, idp_b) = (browser(), browser());
        let html = page_text(&rp_b, &f.rp.url("/signin?return_to=%2Faccount%2Fsecurity")).await;
        assert!(html.contains("Sign in with corp SSO"), "{html}");
        assert!(
            unescape(&html).contains("/signin/upstream/corp?return_to=%2Faccount%2Fsecurity"),
            "{html}"
        );

        let res = sign_in_through(
            &f,
            &rp_b,
            &idp_b,
            "/signin/upstream/corp?return_to=%2Faccount%2Fsecurity",
        )
        .await;
        assert_eq!(res.status(), 303, "{:?}", res.text().await);
        assert_eq!(location(&res), "/account/security");
        let store = f.rp.store();
        let user = store
            .find_user("alice@example.com")
            .await
            .unwrap()
            .expect("provisioned");
        assert!(user.password_hash.is_none());
        assert!(!user.email_verified, "the provider said it is not verified");
        let links = store.identities_of(&user.id).await.unwrap();
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].issuer, f.idp.url(""));
        assert_eq!(links[0].linked_by, LinkedBy::Provisioned);
        let (name, amr) = signed_in_as(&f.rp, &rp_b).await.expect("signed in");
        assert_eq!(name, "alice@example.com");
        assert_eq!(amr, vec!["fed".to_string()]);
        let page = page_text(&rp_b, &f.rp.url("/account/security")).await;
        let page = unescape(&page);
        assert!(
            page.contains(&f.idp.url("")) && page.contains("provisioned"),
            "{page}"
        );

        // Again from another browser (the provider remembers alice): the same account.
        let other = browser();
        let res = sign_in_through(&f, &other, &idp_b, "/signin/upstream/corp").await;
        assert_eq!(res.status(), 303);
        assert_eq!(location(&res), "/account/apps");
        assert_eq!(
            store.list_users().await.unwrap().len(),
            1,
            "no second account"
        );

        // The callback is spent: replaying it (code and state) in the first browser fails.
        f.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linking_from_the_account_page_and_never_to_a_second_user() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(f) = Federation::start(backend, |p| p.provision = false).await else {
            continue;
        };
        add_user(&f.rp, "bob").await;
        add_user(&f.rp, "carol").await;
        let idp_b = browser();

        // Not provisioned, not linked: refused, and said so.
        let stranger = browser();
        let res = sign_in_through(&f, &stranger, &idp_b, "/signin/upstream/corp").await;
        assert_eq!(res.status(), 403);
        let page = res.text().await.unwrap();
        assert!(page.contains("No account here is linked"), "{page}");

        // bob signs in with his password and links his account at the provider.
        let bob = browser();
        let res = sign_in(&f.rp, &bob, &f.rp.url("/signin"), "bob", PASSWORD).await;
        assert_eq!(res.status(), 303);
        let link = |b: reqwest::Client| {
            let rp = &f.rp;
            async move {
                let html = page_text(&b, &rp.url("/account/security")).await;
                assert!(html.contains("Link an account at corp SSO"), "{html}");
                let mut form: Vec<(String, String)> = hidden_inputs(&html)
                    .into_iter()
                    .filter(|(k, _)| k == "csrf")
                    .take(1)
                    .collect();
                form.push(("provider".into(), "corp".into()));
                b.post(rp.url("/account/security/identities/link"))
                    .form(&form)
                    .send()
                    .await
                    .unwrap()
            }
        };
        let res = link(bob.clone()).await;
        assert_eq!(res.status(), 303);
        let back = through_idp(&f.idp, &idp_b, &location(&res)).await;
        let res = bob.get(&back).send().await.unwrap();
        assert_eq!(res.status(), 303);
        assert_eq!(location(&res), "/account/security#identities");
        let store = f.rp.store();
        let bob_user = store.find_user("bob").await.unwrap().unwrap();
        let links = store.identities_of(&bob_user.id).await.unwrap();
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].linked_by, LinkedBy::User);

        // Now the provider signs bob in; with an authenticator set up here, its code is
        // still asked after the provider, and the session says both.
        let (secret, _) = crate::mfa::enroll(&f.rp, &bob).await;
        let res = sign_in_through(&f, &stranger, &idp_b, "/signin/upstream/corp").await;
        assert_eq!(res.status(), 200, "the second step, not a session");
        let html = res.text().await.unwrap();
        assert!(html.contains("name=\"pending\""), "{html}");
        assert!(signed_in_as(&f.rp, &stranger).await.is_none());
        let code = crate::mfa::totp(&secret, crate::mfa::now() + 30);
        let res = crate::mfa::code_step(&f.rp, &stranger, &html, &code).await;
        assert_eq!(res.status(), 303);
        let (name, amr) = signed_in_as(&f.rp, &stranger).await.unwrap();
        assert_eq!(name, "bob");
        assert_eq!(amr, vec!["fed".to_string(), "otp".to_string()]);

        // carol cannot link the same identity: it is bob's.
        let carol = browser();
        sign_in(&f.rp, &carol, &f.rp.url("/signin"), "carol", PASSWORD).await;
        let res = link(carol.clone()).await;
        let back = through_idp(&f.idp, &idp_b, &location(&res)).await;
        let res = carol.get(&back).send().await.unwrap();
        assert_eq!(res.status(), 409);
        assert!(
            res.text()
                .await
                .unwrap()
                .contains("already linked to another account")
        );
        let carol_user = store.find_user("carol").await.unwrap().unwrap();
        assert!(
            store
                .identities_of(&carol_user.id)
                .await
                .unwrap()
                .is_empty()
        );

        // Linking is a change to how the account signs in: it needs a recent sign-in, and a
        // form from this browser.
        let res = carol
            .post(f.rp.url("/account/security/identities/link"))
            .form(&[("provider", "corp"), ("csrf", "forged")])
            .send()
            .await
            .unwrap();
        assert_ne!(res.status(), 303);
        f.finish().await;
    }
}

/// A stand-in OpenID Connect provider whose token endpoint answers the ID token the test
/// sets, signed by its key (or another), so every check of the ID token can be shown to
/// refuse.
type TokenRequest = (Option<String>, String);

/// Makes the ID token a case answers, from the flow's nonce.
type Forge<'a> = Box<dyn Fn(&str) -> String + 'a>;

#[derive(Clone)]
struct StandIn {
    base: String,
    id_token: Arc<Mutex<String>>,
    /// Each token request: its Authorization header and body.
    token_requests: Arc<Mutex<Vec<TokenRequest>>>,
}

async fn stand_in(key_jwk: Value, iss_in_response: bool) -> StandIn {
    let (l, base) = bind().await;
    let s = StandIn {
        base: base.clone(),
        id_token: Arc::new(Mutex::new(String::new())),
        token_requests: Arc::new(Mutex::new(Vec::new())),
    };
    let discovery = json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "authorization_response_iss_parameter_supported": iss_in_response,
    });
    let jwks = json!({ "keys": [key_jwk] });
    let app = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { axum::Json(discovery) }),
        )
        .route("/jwks", get(move || async move { axum::Json(jwks) }))
        .route(
            "/token",
            post(|State(s): State<StandIn>, headers: HeaderMap, body: String| async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                s.token_requests.lock().unwrap().push((auth, body));
                let id_token = s.id_token.lock().unwrap().clone();
                axum::Json(json!({ "access_token": "at", "token_type": "Bearer", "id_token": id_token }))
            }),
        )
        .with_state(s.clone());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_id_tokens_and_mismatched_callbacks_are_refused() {
    let key = TestKey::es256("k1");
    let other_key = TestKey::es256("k1");
    let idp = stand_in(key.jwk.clone(), true).await;
    let mut p = provider(
        "corp",
        Some(idp.base.clone()),
        "rp-client",
        Some("s3cret/+=".into()),
    );
    p.link_by_email = false;
    let Some(rp) = crate::helpers::spawn_app_with(Backend::Sqlite, |c| c.upstream = vec![p]).await
    else {
        return;
    };
    // Start a sign-in; the provider's half is played by the test: (browser, state, nonce).
    let begin = || async {
        let b = browser();
        let res = b.get(rp.url("/signin/upstream/corp")).send().await.unwrap();
        assert_eq!(res.status(), 303);
        let q = query(&location(&res));
        assert_eq!(q["client_id"], "rp-client");
        assert_eq!(q["scope"], "openid email profile");
        (b, q["state"].clone(), q["nonce"].clone())
    };
    let good = |nonce: &str| {
        let now = concierge::util::now();
        json!({
            "iss": idp.base, "sub": "emp-7", "aud": "rp-client", "nonce": nonce,
            "iat": now, "exp": now + 300, "email": "emp7@corp.example", "email_verified": true,
            "name": "Emp Seven",
        })
    };
    let callback = |b: reqwest::Client, state: String, extra: &'static str| {
        let url = rp.url(&format!(
            "/signin/upstream/corp/callback?code=c1&state={state}&iss={}{extra}",
            urlencode(&idp.base)
        ));
        async move { b.get(url).send().await.unwrap() }
    };

    let cases: Vec<(&str, Forge)> = vec![
        (
            "wrong nonce",
            Box::new(|_n: &str| key.sign(&good("another nonce"))),
        ),
        (
            "wrong aud",
            Box::new(|n: &str| {
                let mut c = good(n);
                c["aud"] = json!("someone-else");
                key.sign(&c)
            }),
        ),
        (
            "wrong iss",
            Box::new(|n: &str| {
                let mut c = good(n);
                c["iss"] = json!("https://evil.example");
                key.sign(&c)
            }),
        ),
        ("another key", Box::new(|n: &str| other_key.sign(&good(n)))),
        (
            "expired",
            Box::new(|n: &str| {
                let mut c = good(n);
                c["exp"] = json!(concierge::util::now() - 600);
                key.sign(&c)
            }),
        ),
        (
            "unsigned",
            Box::new(|n: &str| {
                let h = concierge::util::b64(br#"{"alg":"none"}"#);
                let c = concierge::util::b64(good(n).to_string().as_bytes());
                format!("{h}.{c}.")
            }),
        ),
    ];
    for (what, forge) in &cases {
        let (b, state, nonce) = begin().await;
        *idp.id_token.lock().unwrap() = forge(&nonce);
        let res = callback(b.clone(), state, "").await;
        assert_eq!(res.status(), 502, "{what}");
        assert!(signed_in_as(&rp, &b).await.is_none(), "{what}");
    }
    assert!(
        rp.store().list_users().await.unwrap().is_empty(),
        "nobody provisioned"
    );

    // A callback whose state is not this browser's flow, or from a browser with no flow.
    let (b, state, nonce) = begin().await;
    *idp.id_token.lock().unwrap() = key.sign(&good(&nonce));
    let res = callback(b.clone(), "not-the-state".into(), "").await;
    assert_eq!(res.status(), 400);
    let res = callback(browser(), state.clone(), "").await;
    assert_eq!(res.status(), 400, "another browser");
    // A response from another issuer (mix-up, RFC 9207), and the provider's own error.
    let (b, state, _) = begin().await;
    let url = rp.url(&format!(
        "/signin/upstream/corp/callback?code=c1&state={state}&iss=https%3A%2F%2Fevil.example"
    ));
    assert_eq!(b.get(url).send().await.unwrap().status(), 502);
    // The provider says it sends `iss`: a response without one is refused too.
    let (b, state, nonce) = begin().await;
    *idp.id_token.lock().unwrap() = key.sign(&good(&nonce));
    let url = rp.url(&format!(
        "/signin/upstream/corp/callback?code=c1&state={state}"
    ));
    assert_eq!(b.get(url).send().await.unwrap().status(), 502);
    let (b, state, _) = begin().await;
    let url = rp.url(&format!(
        "/signin/upstream/corp/callback?error=access_denied&state={state}"
    ));
    let res = b.get(url).send().await.unwrap();
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("access_denied"));

    // The well-formed one signs in, once: the flow cookie is spent.
    let (b, state, nonce) = begin().await;
    *idp.id_token.lock().unwrap() = key.sign(&good(&nonce));
    let res = callback(b.clone(), state.clone(), "").await;
    assert_eq!(res.status(), 303);
    let (name, amr) = signed_in_as(&rp, &b).await.unwrap();
    assert_eq!(
        (name.as_str(), amr),
        ("emp7@corp.example", vec!["fed".to_string()])
    );
    let again = callback(b.clone(), state, "").await;
    assert_eq!(again.status(), 400, "the flow is spent");
    // The token request: PKCE verifier, the code, Basic auth with the form-encoded secret.
    let reqs = idp.token_requests.lock().unwrap().clone();
    let (auth, body) = reqs.last().unwrap();
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        b"rp-client:s3cret%2F%2B%3D",
    );
    assert_eq!(auth.as_deref(), Some(format!("Basic {basic}").as_str()));
    assert!(
        body.contains("code_verifier=") && body.contains("code=c1"),
        "{body}"
    );
    assert!(!body.contains("client_secret"), "{body}");

    // Every refusal is in the audit log, without the code.
    let events = crate::mfa::audit(&rp, "signin.failed").await;
    assert!(events.len() >= cases.len() + 3, "{}", events.len());
    assert!(events.iter().all(|e| e.detail["upstream"] == "corp"));
    assert!(
        !serde_json::to_string(&events.iter().map(|e| &e.detail).collect::<Vec<_>>())
            .unwrap()
            .contains("c1\"")
    );
    rp.finish().await;
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)]).unwrap()[1..].to_string()
}

/// A stand-in answering with GitHub's documented shapes: the token endpoint (form in, JSON
/// out with `Accept: application/json`), `GET /user` and `GET /user/emails`.
async fn github_stand_in() -> (String, Arc<Mutex<Vec<String>>>) {
    let (l, base) = bind().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let authorized = |h: &HeaderMap| {
        h.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer gho_test")
    };
    let app = Router::new()
        .route(
            "/login/oauth/access_token",
            post(move |body: String| {
                let s = s.clone();
                async move {
                    s.lock().unwrap().push(body.clone());
                    if body.contains("code=gh-code") && body.contains("client_secret=gh-secret") {
                        axum::Json(json!({ "access_token": "gho_test", "token_type": "bearer", "scope": "read:user,user:email" }))
                    } else {
                        axum::Json(json!({ "error": "bad_verification_code", "error_description": "The code passed is incorrect or expired." }))
                    }
                }
            }),
        )
        .route(
            "/user",
            get(move |h: HeaderMap| async move {
                if !authorized(&h) {
                    return (axum::http::StatusCode::UNAUTHORIZED, axum::Json(json!({"message": "Bad credentials"})));
                }
                (axum::http::StatusCode::OK, axum::Json(json!({
                    "login": "octocat", "id": 583231, "node_id": "MDQ6VXNlcjE=",
                    "type": "User", "name": "The Octocat", "email": null,
                })))
            }),
        )
        .route(
            "/user/emails",
            get(move |h: HeaderMap| async move {
                if !authorized(&h) {
                    return (axum::http::StatusCode::UNAUTHORIZED, axum::Json(json!({"message": "Bad credentials"})));
                }
                (axum::http::StatusCode::OK, axum::Json(json!([
                    { "email": "octo@other.example", "primary": false, "verified": true, "visibility": null },
                    { "email": "octocat@github.example", "primary": true, "verified": true, "visibility": "public" },
                ])))
            }),
        );
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (base, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_users_link_by_verified_email_when_allowed() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (gh, seen) = github_stand_in().await;
        let p = UpstreamProvider {
            kind: UpstreamKind::Github,
            link_by_email: true,
            authorization_endpoint: Some(format!("{gh}/login/oauth/authorize")),
            token_endpoint: Some(format!("{gh}/login/oauth/access_token")),
            userinfo_endpoint: Some(gh.clone()),
            ..provider("github", None, "gh-client", Some("gh-secret".into()))
        };
        let Some(rp) = crate::helpers::spawn_app_with(backend, |c| c.upstream = vec![p]).await
        else {
            continue;
        };
        // A local account with the same address, verified: GitHub's verified primary links.
        let store = rp.store();
        let id = add_user(&rp, "octo").await;
        let mut u = store.get_user(&id).await.unwrap().unwrap();
        u.email = Some("OctoCat@github.example".into());
        u.email_verified = true;
        store
            .update_profile(&u, concierge::util::now())
            .await
            .unwrap();

        let b = browser();
        let res = b
            .get(rp.url("/signin/upstream/github"))
            .send()
            .await
            .unwrap();
        let authorize = location(&res);
        assert!(
            authorize.starts_with(&format!("{gh}/login/oauth/authorize?")),
            "{authorize}"
        );
        let q = query(&authorize);
        assert_eq!(q["scope"], "read:user user:email");
        assert!(!q.contains_key("nonce"), "no OpenID Connect here");
        let state = &q["state"];
        // A wrong code: GitHub's 200 with an error member is a refusal.
        let url = rp.url(&format!(
            "/signin/upstream/github/callback?code=wrong&state={state}"
        ));
        assert_eq!(b.get(url).send().await.unwrap().status(), 502);

        let res = b
            .get(rp.url("/signin/upstream/github"))
            .send()
            .await
            .unwrap();
        let q = query(&location(&res));
        let url = rp.url(&format!(
            "/signin/upstream/github/callback?code=gh-code&state={}",
            q["state"]
        ));
        let res = b.get(url).send().await.unwrap();
        assert_eq!(res.status(), 303, "{:?}", res.text().await);
        let links = store.identities_of(&id).await.unwrap();
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].issuer, "https://github.com");
        assert_eq!(links[0].subject, "583231", "the numeric id, not the login");
        assert_eq!(links[0].linked_by, LinkedBy::Email);
        assert_eq!(signed_in_as(&rp, &b).await.unwrap().0, "octo");
        // PKCE: the verifier sent matches the challenge in the authorization request.
        let body = seen.lock().unwrap().last().unwrap().clone();
        let form: std::collections::HashMap<String, String> =
            serde_urlencoded::from_str(&body).unwrap();
        let d =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, form["code_verifier"].as_bytes());
        assert_eq!(concierge::util::b64(d.as_ref()), q["code_challenge"]);
        rp.finish().await;
    }
}

/// The `action` and fields of the one form of a page node-oidc-provider renders.
fn form_of(html: &str) -> (String, Vec<(String, String)>) {
    let (_, rest) = html.split_once("<form").expect("a form");
    let (_, rest) = rest.split_once("action=\"").unwrap();
    let (action, _) = rest.split_once('"').unwrap();
    let mut fields = hidden_inputs(html);
    if html.contains("name=\"login\"") {
        fields.push(("login".into(), "ada".into()));
        fields.push(("password".into(), "anything".into()));
    }
    (unescape(action), fields)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_oidc_provider_signs_users_in() {
    let (l_rp, rp_issuer) = bind().await;
    let callback = format!("{rp_issuer}/signin/upstream/node/callback");
    // node-oidc-provider as the upstream, our callback registered there.
    let Some(peer) = crate::guard_oidc_provider::Peer::run("upstream.mjs", &callback).await else {
        return;
    };
    let issuer = peer.issuer.clone();
    let p = UpstreamProvider {
        name: "node-oidc-provider".into(),
        ..provider(
            "node",
            Some(issuer.clone()),
            "concierge",
            Some("concierge-secret-0123456789abcdef0123456789abcdef".into()),
        )
    };
    let Some(rp) = spawn_app_on(Backend::Sqlite, l_rp, "", |c| c.upstream = vec![p]).await else {
        return;
    };
    let (b, idp_b) = (browser(), browser());
    let res = b.get(rp.url("/signin/upstream/node")).send().await.unwrap();
    assert_eq!(res.status(), 303);
    let mut at = location(&res);
    assert!(at.starts_with(&format!("{issuer}/auth?")), "{at}");
    // Through its development login and consent pages, as a browser would.
    let mut back = None;
    for _ in 0..12 {
        let res = idp_b.get(&at).send().await.unwrap();
        let res = if res.status() == 200 {
            let (action, fields) = form_of(&res.text().await.unwrap());
            let action = if action.starts_with("http") {
                action
            } else {
                format!("{issuer}{action}")
            };
            idp_b.post(action).form(&fields).send().await.unwrap()
        } else {
            res
        };
        assert!(res.status().is_redirection(), "{}", res.status());
        let next = location(&res);
        let next = if next.starts_with("http") {
            next
        } else {
            format!("{issuer}{next}")
        };
        if next.starts_with(&callback) {
            back = Some(next);
            break;
        }
        at = next;
    }
    let back = back.expect("back at the callback");
    assert_eq!(query(&back)["iss"], issuer);
    let res = b.get(&back).send().await.unwrap();
    assert_eq!(res.status(), 303, "{:?}", res.text().await);
    // Provisioned from the claims it serves at userinfo (not in its ID token by default).
    let (name, amr) = signed_in_as(&rp, &b).await.expect("signed in");
    assert_eq!(name, "ada@upstream.example");
    assert_eq!(amr, vec!["fed".to_string()]);
    let store = rp.store();
    let user = store.find_user(&name).await.unwrap().unwrap();
    assert!(user.email_verified);
    assert_eq!(user.name.as_deref(), Some("User ada"));
    let links = store.identities_of(&user.id).await.unwrap();
    assert_eq!(
        (links[0].issuer.as_str(), links[0].subject.as_str()),
        (issuer.as_str(), "ada")
    );
    rp.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_the_button_goes_through_the_provider_and_back() {
    if !crate::interop::ready() {
        return;
    }
    // The provider on `localhost`, the relying party on 127.0.0.1: two sites, two cookie jars.
    let (l_rp, rp_issuer) = bind().await;
    let idp = TestApp::builder(Backend::Sqlite)
        .on_localhost()
        .start()
        .await
        .unwrap();
    seed(&idp).await;
    let p = registered_at(&idp, &rp_issuer).await;
    let rp = spawn_app_on(Backend::Sqlite, l_rp, "", |c| c.upstream = vec![p])
        .await
        .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let cfg = json!({
        "signin": rp.url("/signin?return_to=%2Faccount%2Fsecurity"),
        "provider": "corp",
        "username": "alice",
        "password": PASSWORD,
        "backPrefix": rp.url("/account/security"),
        "profile": profile.path(),
    });
    let seen = crate::interop::node("upstream_browser.mjs", &[&cfg.to_string()], &[]).await;
    assert_eq!(seen["buttons"], json!(["Sign in with corp SSO"]), "{seen}");
    assert_eq!(seen["askerAtProvider"], "Concierge downstream", "{seen}");
    assert_eq!(seen["signedInAs"], "alice@example.com", "{seen}");
    assert_eq!(seen["identities"], json!([idp.url("")]), "{seen}");
    idp.finish().await;
    rp.finish().await;
}
