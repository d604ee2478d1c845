//! Passkeys (WebAuthn): registering, renaming and removing them on the account security page,
//! signing in with one alone (discoverable, with user verification) and as the second step
//! after a password, in headless Chromium with a virtual authenticator (DevTools protocol,
//! `WebAuthn` domain); and the refusals: no user verification, another origin, a replayed
//! ceremony, an old session, a forged anti-forgery token, a server whose issuer is an IP
//! address.

use concierge::store::StoredPasskey;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::both;
use crate::flow::*;
use crate::helpers::{TestApp, TestAppBuilder, split};
use crate::mfa::{audit, between, signed_in};

/// The anti-forgery token of a page.
fn csrf(html: &str) -> String {
    between(html, "name=\"csrf\" value=\"", "\"")
        .or_else(|| between(html, "data-csrf=\"", "\""))
        .expect("a token on the page")
        .to_string()
}

async fn page(b: &reqwest::Client, url: &str) -> String {
    let res = b.get(url).send().await.unwrap();
    assert_eq!(res.status(), 200, "{url}");
    res.text().await.unwrap()
}

/// POST JSON as `/static/passkey.js` does, with `token` in `X-CSRF-Token` (if any).
async fn post_json(
    app: &TestApp,
    b: &reqwest::Client,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = b
        .post(app.url(path))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.header("x-csrf-token", t);
    }
    split(req.send().await.unwrap()).await
}

/// Make every session older by `secs`, as if signed in that long ago.
async fn age_sessions(app: &TestApp, secs: i64) {
    let url = app.config.database_url.clone().unwrap();
    let sql = "UPDATE sessions SET auth_time = auth_time - $1";
    if url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query(sql).bind(secs).execute(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query(sql).bind(secs).execute(&pool).await.unwrap();
        pool.close().await;
    }
}

/// A passkey row as if registered (its credential is not one the library can read: enough
/// for what counts passkeys, not for a ceremony).
fn fake_passkey(user_id: &str) -> StoredPasskey {
    StoredPasskey {
        id: "pk-1".into(),
        user_id: user_id.into(),
        credential_id: "Y3JlZA".into(),
        credential: "{}".into(),
        name: "Old phone".into(),
        created_at: concierge::util::now(),
        last_used_at: None,
    }
}

both!(
    the_ceremony_endpoints_check_token_body_ceremony_and_session,
    builder |b: TestAppBuilder| b.on_localhost().with_user("alice", PASSWORD).with_user("bob", PASSWORD),
    |app: TestApp| async move {
        assert!(app.issuer.starts_with("http://localhost:"));
        // The sign-in page: the button (shown by the script), the autofill hint, one script
        // from this origin and nothing inline; the policy allows no more.
        let b = browser();
        let res = b.get(app.url("/signin")).send().await.unwrap();
        let csp = res.headers()["content-security-policy"].to_str().unwrap().to_string();
        assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe") && csp.contains("default-src 'none'"), "{csp}");
        let html = res.text().await.unwrap();
        assert!(html.contains("autocomplete=\"username webauthn\""), "{html}");
        assert!(html.contains("id=\"passkey-signin-button\""));
        assert!(html.contains("<script src=\"/static/passkey.js\" defer></script>"));
        assert_eq!(html.matches("<script").count(), 1, "no inline script");
        let res = b.get(app.url("/static/passkey.js")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/javascript; charset=utf-8");
        let token = csrf(&html);

        // Without the page's token, or with another browser's: refused, as JSON.
        let got = post_json(&app, &b, "/signin/passkey/options", None, "{}").await;
        assert_eq!((got.0, got.2["error"].as_str()), (StatusCode::FORBIDDEN, Some("invalid_request")));
        let other = browser();
        let other_token = csrf(&page(&other, &app.url("/signin")).await);
        let got = post_json(&app, &b, "/signin/passkey/options", Some(&other_token), "{}").await;
        assert_eq!(got.0, StatusCode::FORBIDDEN, "{}", got.2);

        // Options for a passwordless sign-in: user verification required, this RP.
        let (s, h, opts) = post_json(&app, &b, "/signin/passkey/options", Some(&token), "{}").await;
        assert_eq!(s, 200, "{opts}");
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(opts["publicKey"]["userVerification"], "required");
        assert_eq!(opts["publicKey"]["rpId"], "localhost");
        assert!(opts["publicKey"]["challenge"].as_str().unwrap().len() >= 43);
        let ceremony = opts["ceremony"].as_str().unwrap();

        // Bad bodies and unknown ceremonies are refused, never a server error.
        let got = post_json(&app, &b, "/signin/passkey", Some(&token), "not json").await;
        assert_eq!((got.0, got.2["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));
        let unknown = json!({ "ceremony": "nope", "credential": {} }).to_string();
        let got = post_json(&app, &b, "/signin/passkey", Some(&token), &unknown).await;
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "{}", got.2);
        // Another browser cannot finish this browser's ceremony (and spends it trying).
        let theirs = json!({ "ceremony": ceremony, "credential": {"id": "x"} }).to_string();
        let got = post_json(&app, &other, "/signin/passkey", Some(&other_token), &theirs).await;
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "{}", got.2);
        let (s, _, opts) = post_json(&app, &b, "/signin/passkey/options", Some(&token), "{}").await;
        assert_eq!(s, 200);
        let garbage = json!({ "ceremony": opts["ceremony"], "credential": {"id": "x"} }).to_string();
        let got = post_json(&app, &b, "/signin/passkey", Some(&token), &garbage).await;
        assert_eq!((got.0, got.2["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("access_denied")));
        // Single use: the same ceremony again is unknown.
        let got = post_json(&app, &b, "/signin/passkey", Some(&token), &garbage).await;
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "{}", got.2);

        // The second step needs a carried half-done sign-in that is ours.
        let forged = json!({ "pending": "YWxpY2U.9999999999.AAAA", "return_to": "" }).to_string();
        let got = post_json(&app, &b, "/signin/code/passkey/options", Some(&token), &forged).await;
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "{}", got.2);
        let got = post_json(&app, &b, "/signin/code/passkey", Some(&token), &forged).await;
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "{}", got.2);

        // Registering needs a session, signed in recently.
        let got = post_json(&app, &b, "/account/security/passkeys/options", Some(&token), "{}").await;
        assert_eq!(got.2["error"], "login_required", "{}", got.2);
        let alice = signed_in(&app, "alice").await;
        let html = page(&alice, &app.url("/account/security")).await;
        assert!(html.contains("id=\"passkeys\" data-count=\"0\""), "{html}");
        assert!(html.contains("id=\"passkey-register\""));
        let token = csrf(&html);
        let (s, _, reg) =
            post_json(&app, &alice, "/account/security/passkeys/options", Some(&token), "{}").await;
        assert_eq!(s, 200, "{reg}");
        let pk = &reg["publicKey"];
        assert_eq!(pk["rp"]["id"], "localhost");
        assert_eq!(pk["user"]["name"], "alice");
        assert_eq!(pk["authenticatorSelection"]["residentKey"], "required");
        assert_eq!(pk["authenticatorSelection"]["userVerification"], "required");
        // The WebAuthn user handle is random, not the user id.
        let handle = pk["user"]["id"].as_str().unwrap();
        assert_ne!(handle, concierge::util::b64(app.users["alice"].as_bytes()));
        // Bob's token in alice's browser: refused.
        let bob = signed_in(&app, "bob").await;
        let bob_token = csrf(&page(&bob, &app.url("/account/security")).await);
        let got =
            post_json(&app, &alice, "/account/security/passkeys/options", Some(&bob_token), "{}").await;
        assert_eq!(got.0, StatusCode::FORBIDDEN);
        // A registration answer for bob's ceremony from alice: refused (the ceremony is bob's).
        let (_, _, bobs) =
            post_json(&app, &bob, "/account/security/passkeys/options", Some(&bob_token), "{}").await;
        let answer = json!({ "ceremony": bobs["ceremony"], "credential": {}, "name": "x" }).to_string();
        let got = post_json(&app, &alice, "/account/security/passkeys", Some(&token), &answer).await;
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "{}", got.2);
        // Names: 1 to 64 characters, checked first.
        let answer = json!({ "ceremony": reg["ceremony"], "credential": {}, "name": "   " }).to_string();
        let got = post_json(&app, &alice, "/account/security/passkeys", Some(&token), &answer).await;
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "{}", got.2);

        // Older than ten minutes: sent to sign in again, for the script and for the forms.
        age_sessions(&app, 700).await;
        let got =
            post_json(&app, &alice, "/account/security/passkeys/options", Some(&token), "{}").await;
        assert_eq!(got.0, StatusCode::UNAUTHORIZED);
        assert_eq!(got.2["error"], "login_required");
        let to = got.2["location"].as_str().unwrap();
        assert!(to.starts_with("/signin?return_to=%2Faccount%2Fsecurity&login_hint=alice"), "{to}");
        for path in ["/account/security/passkeys/rename", "/account/security/passkeys/remove"] {
            let res = alice
                .post(app.url(path))
                .form(&[("csrf", token.as_str()), ("id", "pk-1"), ("name", "New")])
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 303, "{path}");
            assert!(location(&res).starts_with("/signin?return_to=%2Faccount%2Fsecurity"));
        }
        // A stale or foreign token on the forms: refused before anything else.
        let res = alice
            .post(app.url("/account/security/passkeys/remove"))
            .form(&[("csrf", bob_token.as_str()), ("id", "pk-1")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
        app
    }
);

both!(
    an_issuer_on_an_ip_address_offers_no_passkeys,
    builder |b: TestAppBuilder| b.with_user("alice", PASSWORD),
    |app: TestApp| async move {
        let b = browser();
        let html = page(&b, &app.url("/signin")).await;
        assert!(!html.contains("passkey"), "{html}");
        let token = csrf(&html);
        let got = post_json(&app, &b, "/signin/passkey/options", Some(&token), "{}").await;
        assert_eq!(got.0, StatusCode::BAD_REQUEST);
        assert!(got.2["error_description"].as_str().unwrap().contains("IP address"), "{}", got.2);
        let alice = signed_in(&app, "alice").await;
        let html = page(&alice, &app.url("/account/security")).await;
        assert!(!html.contains("id=\"passkeys\""));
        app
    }
);

both!(
    a_passkey_asks_for_itself_after_the_password_and_a_reset_removes_it,
    builder |b: TestAppBuilder| b.on_localhost().with_user("alice", PASSWORD),
    |app: TestApp| async move {
        let alice = app.users["alice"].clone();
        app.store().insert_passkey(&fake_passkey(&alice)).await.unwrap();
        // The password alone does not sign in: the second step offers the passkey, and no
        // code form (alice has no authenticator app).
        let b = browser();
        let res = sign_in(&app, &b, &app.url("/signin"), "alice", PASSWORD).await;
        assert_eq!(res.status(), 200);
        let html = res.text().await.unwrap();
        assert!(html.contains("id=\"passkey-second\""), "{html}");
        assert!(html.contains("data-pending=\""));
        assert!(!html.contains("name=\"code\""), "{html}");
        // The passkey reaches phishing resistance.
        let level = concierge::oauth::authn::reachable(&app.state.oauth, &alice).await.unwrap();
        assert_eq!(level, concierge::oauth::authn::acr::Level::PhishingResistant);

        // An operator's reset of the second factors removes passkeys too.
        let (_, had) = concierge::manage::reset_factors(app.store().as_ref(), "alice").await.unwrap();
        assert!(had);
        assert!(app.store().list_passkeys(&alice).await.unwrap().is_empty());
        let res = sign_in(&app, &b, &app.url("/signin"), "alice", PASSWORD).await;
        assert_eq!(res.status(), 303);
        app
    }
);

both!(
    the_last_second_factor_stays_where_one_is_required,
    builder |b: TestAppBuilder| b
        .on_localhost()
        .with_user("alice", PASSWORD)
        .configure(|c| c.signin.mfa = concierge::config::MfaPolicy::Required),
    |app: TestApp| async move {
        use concierge::oauth::authn::passkey::{self, PasskeyError};
        let alice = app.users["alice"].clone();
        let ctx = &app.state.oauth;
        app.store().insert_passkey(&fake_passkey(&alice)).await.unwrap();
        let refused = passkey::remove(ctx, &alice, "pk-1").await;
        assert!(matches!(refused, Err(PasskeyError::LastFactor)), "{refused:?}");
        let second = StoredPasskey {
            id: "pk-2".into(),
            credential_id: "Y3JlZDI".into(),
            ..fake_passkey(&alice)
        };
        app.store().insert_passkey(&second).await.unwrap();
        assert!(passkey::remove(ctx, &alice, "pk-1").await.unwrap());
        assert!(matches!(passkey::remove(ctx, &alice, "pk-2").await, Err(PasskeyError::LastFactor)));
        app
    }
);

/// Every ceremony in one Chromium run (SQLite): register, rename, passwordless sign-in on
/// the way to an authorization (ID token and introspection say `phr`, `hwk`), the second
/// step after a password, a replayed answer, another origin, no user verification, removal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ceremony_in_chromium_with_a_virtual_authenticator() {
    if !crate::interop::ready() {
        return;
    }
    let app = TestApp::builder(crate::helpers::Backend::Sqlite)
        .on_localhost()
        .start()
        .await
        .unwrap();
    let alice = seed(&app).await;
    let client = public_client(&app).await;
    let (verifier, challenge) = pkce();
    let url = authorize_url(&app, &auth_params(&client, &challenge, "openid notes:read"));
    let profile = tempfile::tempdir().unwrap();
    let cfg = json!({
        "issuer": app.issuer,
        "username": "alice",
        "password": PASSWORD,
        "authorizeUrl": url,
        "redirectPrefix": REDIRECT,
        "profile": profile.path(),
    });
    let seen = crate::interop::node("passkeys.mjs", &[&cfg.to_string()], &[]).await;

    assert_eq!(
        seen["signinPage"]["autocomplete"], "username webauthn",
        "{seen}"
    );
    assert_eq!(seen["signinPage"]["button"], true, "{seen}");
    assert_eq!(seen["registered"], json!(["My laptop"]), "{seen}");
    assert_eq!(
        seen["authenticator"],
        json!([{ "resident": true, "rpId": "localhost" }]),
        "{seen}"
    );
    // Trimmed, and shown as text: no markup from a name.
    assert_eq!(seen["renamed"], json!(["Work <b>laptop</b>"]), "{seen}");
    assert_eq!(seen["renamedMarkup"], 0);

    // The passwordless sign-in went on to the authorization: its tokens say how.
    let callback = seen["passwordless"]["callback"]
        .as_str()
        .expect("a callback");
    let q = query(callback);
    let (s, _, tokens) = redeem(&app, &client, &q["code"], &verifier, &[]).await;
    assert_eq!(s, 200, "{tokens}");
    let id = claims(tokens["id_token"].as_str().unwrap());
    assert_eq!(id["acr"], "phr", "{id}");
    assert_eq!(id["amr"], json!(["hwk", "user"]));
    let (iid, isecret) =
        crate::introspection::static_client(&app, &["client_credentials"], true).await;
    let (s, _, seen_at) = split(
        app.http
            .post(app.url("/introspect"))
            .form(&[
                ("token", tokens["access_token"].as_str().unwrap()),
                ("client_id", &iid),
                ("client_secret", &isecret),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(seen_at["acr"], "phr", "{seen_at}");
    assert_eq!(seen_at["amr"], json!(["hwk", "user"]));

    // The second step: the passkey button, no code form (no authenticator app).
    assert_eq!(seen["secondStep"]["codeForm"], 0, "{seen}");
    assert_eq!(seen["secondStep"]["names"], json!(["Work <b>laptop</b>"]));
    // Replayed: the first answer signs in; again, or for another ceremony, refused.
    assert_eq!(
        seen["replay"],
        json!({ "first": 200, "again": 400, "againError": "invalid_request", "swapped": 401 })
    );
    // Made on another origin: refused.
    assert_eq!(
        seen["otherOrigin"],
        json!({ "status": 401, "error": "access_denied" })
    );
    // Without user verification: refused, still on the sign-in page.
    let no_uv = &seen["noUserVerification"];
    assert!(
        no_uv["error"].as_str().unwrap().contains("not accepted"),
        "{seen}"
    );
    assert!(no_uv["url"].as_str().unwrap().contains("/signin"), "{seen}");
    // Removed; the page has no inline script.
    assert_eq!(seen["removed"], json!([]), "{seen}");
    assert_eq!(seen["csp"], 0);
    assert!(app.store().list_passkeys(&alice).await.unwrap().is_empty());

    let kinds = |k: &'static str| {
        let app = &app;
        async move { audit(app, k).await }
    };
    assert_eq!(kinds("passkey.registered").await.len(), 1);
    assert_eq!(kinds("passkey.renamed").await.len(), 1);
    assert_eq!(kinds("passkey.removed").await.len(), 1);
    let signins = kinds("signin.succeeded").await;
    let amrs: Vec<&Value> = signins.iter().map(|e| &e.detail["amr"]).collect();
    assert!(amrs.contains(&&json!(["hwk", "user"])), "{amrs:?}");
    assert!(amrs.contains(&&json!(["pwd", "hwk"])), "{amrs:?}");
    app.finish().await;
}
