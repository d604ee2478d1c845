//! Sign-in, consent and the authorization code flow (issue 3), over HTTP on both stores.

use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::both;
use crate::flow::*;
use crate::helpers::{TestApp, assert_error, split};

both!(
    full_flow_with_openid_refresh_and_userinfo,
    |app: TestApp| async move {
        let alice = seed(&app).await;
        let client = public_client(&app).await;
        let (verifier, challenge) = pkce();
        let b = browser();
        let params = auth_params(
            &client,
            &challenge,
            "openid profile email offline_access notes:read",
        );
        let back = authorize_and_approve(&app, &b, &params).await;
        assert!(back.starts_with(REDIRECT), "{back}");
        let q = query(&back);
        assert_eq!(q["state"], "st-123");
        assert_eq!(q["iss"], app.issuer, "RFC 9207");
        let code = &q["code"];

        let (status, headers, body) = redeem(&app, &client, code, &verifier, &[]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(body["token_type"], "Bearer");
        let at = body["access_token"].as_str().unwrap();
        let at_claims = verify(&app, at, Algorithm::ES256, NOTES);
        assert_eq!(at_claims["sub"], alice.as_str());
        assert_eq!(at_claims["client_id"], client.as_str());
        assert_eq!(at_claims["aud"], json!([NOTES, app.url("/userinfo")]));
        assert!(
            at_claims["scope"]
                .as_str()
                .unwrap()
                .split(' ')
                .any(|s| s == "notes:read")
        );
        assert!(at_claims["auth_time"].as_i64().is_some());
        // How the user signed in flows from the session into the tokens (RFC 8176).
        assert_eq!(at_claims["amr"], json!(["pwd"]));

        let id = body["id_token"].as_str().unwrap();
        let idc = verify(&app, id, Algorithm::RS256, &client);
        assert_eq!(idc["sub"], alice.as_str());
        assert_eq!(idc["nonce"], "n-456");
        assert_eq!(idc["at_hash"], concierge::oauth::tokens::at_hash(at));
        assert!(idc["sid"].as_str().is_some() && idc["auth_time"].as_i64().is_some());
        assert_eq!(idc["amr"], json!(["pwd"]));
        assert_eq!(idc["auth_time"], at_claims["auth_time"]);
        assert_eq!(idc["email"], "alice@example.com");
        assert_eq!(idc["preferred_username"], "alice");

        // userinfo, GET and POST.
        let (s, _, ui) = split(
            app.http
                .get(app.url("/userinfo"))
                .bearer_auth(at)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 200, "{ui}");
        assert_eq!(ui["sub"], alice.as_str());
        assert_eq!(ui["email"], "alice@example.com");
        let (s, _, ui) = split(
            app.http
                .post(app.url("/userinfo"))
                .form(&[("access_token", at)])
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 200, "{ui}");
        let (s, h, _) = split(
            app.http
                .get(app.url("/userinfo"))
                .bearer_auth("garbage")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 401);
        assert!(
            h["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );

        // Refresh: public clients rotate, and reuse of an older token revokes the family
        // (a retry of the last rotated one within the grace window is `refresh.rs`'s).
        let rt1 = body["refresh_token"].as_str().unwrap().to_string();
        let (s, _, r2) = refresh(&app, &client, &rt1, &[]).await;
        assert_eq!(s, 200, "{r2}");
        let rt2 = r2["refresh_token"].as_str().unwrap().to_string();
        assert_ne!(rt1, rt2);
        let id2 = claims(r2["id_token"].as_str().unwrap());
        assert_eq!(id2["sub"], alice.as_str());
        // The refresh reads the user for the ID token's claims (and only for them).
        assert_eq!(id2["email"], "alice@example.com", "{id2}");
        assert_eq!(id2["preferred_username"], "alice", "{id2}");
        // A refreshed grant keeps how the user signed in.
        assert_eq!(
            claims(r2["access_token"].as_str().unwrap())["amr"],
            json!(["pwd"])
        );
        let (s, _, r3) = refresh(&app, &client, &rt2, &[]).await;
        assert_eq!(s, 200, "{r3}");
        let rt3 = r3["refresh_token"].as_str().unwrap().to_string();
        assert_error(
            &refresh(&app, &client, &rt1, &[]).await,
            400,
            "invalid_grant",
            "already used",
        );
        assert_error(
            &refresh(&app, &client, &rt3, &[]).await,
            400,
            "invalid_grant",
            "revoked",
        );
        app
    }
);

both!(
    second_authorization_skips_consent_unless_asked,
    |app: TestApp| async move {
        seed(&app).await;
        let client = public_client(&app).await;
        let (_, challenge) = pkce();
        let b = browser();
        let params = auth_params(&client, &challenge, "notes:read");
        authorize_and_approve(&app, &b, &params).await;
        // Same scopes again: straight back with a code.
        let res = b.get(authorize_url(&app, &params)).send().await.unwrap();
        assert_eq!(res.status(), 303);
        let back = location(&res);
        assert!(
            back.starts_with(REDIRECT) && query(&back).contains_key("code"),
            "{back}"
        );
        // A new scope: the consent page again, showing it.
        let wider = auth_params(&client, &challenge, "notes:read notes:write");
        let res = b.get(authorize_url(&app, &wider)).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let html = res.text().await.unwrap();
        assert!(html.contains("Change your notes"), "{html}");
        // prompt=consent: the page even with nothing new.
        let mut forced = params.clone();
        forced.push(("prompt".into(), "consent".into()));
        assert_eq!(
            b.get(authorize_url(&app, &forced))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        // prompt=none with a new scope: consent_required, by redirect.
        let mut none = wider.clone();
        none.push(("prompt".into(), "none".into()));
        let res = b.get(authorize_url(&app, &none)).send().await.unwrap();
        let q = query(&location(&res));
        assert_eq!(q["error"], "consent_required");
        assert_eq!(q["state"], "st-123");
        // prompt=none without a session: login_required, on a page, since nobody has seen
        // this self-registered client in this browser (RFC 9700 §4.11.2).
        let res = browser()
            .get(authorize_url(&app, &none))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
        assert!(res.text().await.unwrap().contains("login_required"));
        // prompt=login: back to the sign-in page although signed in.
        let mut login = params.clone();
        login.push(("prompt".into(), "login".into()));
        let res = b.get(authorize_url(&app, &login)).send().await.unwrap();
        let signin = location(&res);
        assert!(signin.contains("/signin?"), "{signin}");
        assert!(
            !signin.contains("prompt%3Dlogin"),
            "the way back drops prompt=login: {signin}"
        );
        app
    }
);

both!(
    consent_page_says_who_what_where,
    |app: TestApp| async move {
        seed(&app).await;
        let client = public_client(&app).await;
        let (_, challenge) = pkce();
        let b = browser();
        let mut params = auth_params(&client, &challenge, "notes:read calendar:read");
        params.push(("resource".into(), CALENDAR.into()));
        let res = b.get(authorize_url(&app, &params)).send().await.unwrap();
        let res = sign_in(
            &app,
            &b,
            &format!("{}{}", app.origin, location(&res)),
            "alice",
            PASSWORD,
        )
        .await;
        let page = b
            .get(format!("{}{}", app.origin, location(&res)))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        let h = page.headers().clone();
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer", "RFC 9700 §4.2");
        assert_eq!(h["cache-control"], "no-store");
        let html = unescape(&page.text().await.unwrap());
        for expected in [
            "Test Agent",
            "registered itself and was not verified",
            "Notes",
            NOTES,
            "Read your notes",
            "Calendar",
            "See your calendar",
            "127.0.0.1",
            "alice",
        ] {
            assert!(
                html.contains(expected),
                "consent page should show {expected:?}"
            );
        }
        assert!(
            !html.contains("Change your notes"),
            "only requested scopes are shown"
        );
        app
    }
);

both!(deny_and_csrf, |app: TestApp| async move {
    let alice = seed(&app).await;
    let client = public_client(&app).await;
    let (_, challenge) = pkce();
    let b = browser();
    let params = auth_params(&client, &challenge, "notes:read");
    let res = b.get(authorize_url(&app, &params)).send().await.unwrap();
    let html = sign_in_and_see(&app, &b, &res).await;

    // Without a token, or with another's: refused, nothing stored.
    let mut no_csrf: Vec<(String, String)> = hidden_inputs(&html)
        .into_iter()
        .filter(|(k, _)| k != "csrf")
        .collect();
    no_csrf.push(("decision".into(), "approve".into()));
    let res = b
        .post(app.url("/authorize/decision"))
        .form(&no_csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let mut wrong = no_csrf.clone();
    wrong.push(("csrf".into(), concierge::util::random_secret()));
    let res = b
        .post(app.url("/authorize/decision"))
        .form(&wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    // A forged form from another browser (no cookie) fails even with a valid-looking token.
    let res = browser()
        .post(app.url("/authorize/decision"))
        .form(&hidden_inputs(&html))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(
        app.store().list_consents(&alice).await.unwrap().is_empty(),
        "no consent stored"
    );

    let res = decide(&app, &b, &html, "deny").await;
    let q = query(&location(&res));
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "st-123");
    assert_eq!(q["iss"], app.issuer);
    assert!(
        app.store().list_consents(&alice).await.unwrap().is_empty(),
        "deny stores nothing"
    );
    app
});

both!(
    code_replay_revokes_what_it_issued,
    |app: TestApp| async move {
        seed(&app).await;
        let client = public_client(&app).await;
        let (verifier, challenge) = pkce();
        let b = browser();
        let back =
            authorize_and_approve(&app, &b, &auth_params(&client, &challenge, "notes:read")).await;
        let code = query(&back)["code"].clone();
        let (s, _, first) = redeem(&app, &client, &code, &verifier, &[]).await;
        assert_eq!(s, 200);
        let rt = first["refresh_token"].as_str().unwrap().to_string();
        assert_error(
            &redeem(&app, &client, &code, &verifier, &[]).await,
            400,
            "invalid_grant",
            "already used",
        );
        assert_error(
            &refresh(&app, &client, &rt, &[]).await,
            400,
            "invalid_grant",
            "revoked",
        );
        app
    }
);

both!(
    pkce_and_redirect_binding_at_the_token_endpoint,
    |app: TestApp| async move {
        seed(&app).await;
        let client = public_client(&app).await;
        let (verifier, challenge) = pkce();
        let b = browser();
        let params = auth_params(&client, &challenge, "notes:read");
        let back = authorize_and_approve(&app, &b, &params).await;
        let code = query(&back)["code"].clone();
        // Wrong or missing verifier, the challenge itself ("plain"), another redirect URI: refused.
        let (other_verifier, _) = pkce();
        assert_error(
            &redeem(&app, &client, &code, &other_verifier, &[]).await,
            400,
            "invalid_grant",
            "code_verifier",
        );
        // Each failure spent the code: a fresh one per case.
        for (extra, mention) in [
            (vec![("code_verifier", "")], "code_verifier"),
            (vec![("code_verifier", challenge.as_str())], "code_verifier"),
            (
                vec![("redirect_uri", "http://127.0.0.1/other")],
                "redirect_uri",
            ),
            (vec![("resource", CALENDAR)], "not granted"),
        ] {
            let code = remembered_code(&app, &b, &params).await;
            let got = redeem(&app, &client, &code, &verifier, &extra).await;
            let (status, code_name) = if mention == "not granted" {
                (400, "invalid_target")
            } else {
                (400, "invalid_grant")
            };
            assert_error(&got, status, code_name, mention);
        }
        // Another client cannot redeem it.
        let other = public_client(&app).await;
        let code = remembered_code(&app, &b, &params).await;
        assert_error(
            &redeem(&app, &other, &code, &verifier, &[]).await,
            400,
            "invalid_grant",
            "another client",
        );
        app
    }
);

both!(
    a_redemption_refused_after_its_spend_leaves_no_live_refresh_token,
    |app: TestApp| async move {
        use concierge::store::Spent;
        seed(&app).await;
        let client = public_client(&app).await;
        let (verifier, challenge) = pkce();
        let b = browser();
        let params = auth_params(&client, &challenge, "notes:read");
        authorize_and_approve(&app, &b, &params).await;
        let store = app.store();
        // The family of a spent code.
        let family = async |code: &str| match store
            .peek_code(&concierge::util::secret_key(code), concierge::util::now())
            .await
            .unwrap()
        {
            Spent::Replayed { family_id } => family_id,
            other => panic!("the code was not spent: {other:?}"),
        };
        // Refused after the write that spent the code and stored its refresh token: a
        // resource or a scope it was not granted.
        for (extra, error) in [
            (("resource", CALENDAR), "invalid_target"),
            (("scope", "notes:write"), "invalid_scope"),
        ] {
            let code = remembered_code(&app, &b, &params).await;
            let (status, _, body) = redeem(&app, &client, &code, &verifier, &[extra]).await;
            assert_eq!(status, 400, "{body}");
            assert_eq!(body["error"], error, "{body}");
            // Nothing of its family lives: revoking it revokes nothing.
            let revoked = store
                .revoke_family(&family(&code).await, concierge::util::now())
                .await
                .unwrap();
            assert_eq!(revoked, 0, "{error}");
        }
        // Redeemed: the family has the refresh token returned.
        let code = remembered_code(&app, &b, &params).await;
        let (status, _, body) = redeem(&app, &client, &code, &verifier, &[]).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["refresh_token"].is_string(), "{body}");
        let revoked = store
            .revoke_family(&family(&code).await, concierge::util::now())
            .await
            .unwrap();
        assert_eq!(revoked, 1);
        app
    }
);

both!(authorization_request_errors, |app: TestApp| async move {
    seed(&app).await;
    let client = public_client(&app).await;
    let (_, challenge) = pkce();
    let b = browser();
    let base = auth_params(&client, &challenge, "notes:read");
    let with = |k: &str, v: Option<&str>| {
        let mut p: Vec<(String, String)> = base.iter().filter(|(n, _)| n != k).cloned().collect();
        if let Some(v) = v {
            p.push((k.into(), v.into()));
        }
        p
    };
    // Errors shown on a page, never redirected: unknown client, redirect URI mismatches.
    for p in [
        with("client_id", Some("nobody")),
        with("client_id", None),
        with("redirect_uri", Some("http://127.0.0.1/callback/other")),
        with("redirect_uri", Some("http://127.0.0.1/callback?x=1")),
        with("redirect_uri", Some("http://evil.example/callback")),
        with("redirect_uri", Some("https://127.0.0.1/callback")),
    ] {
        let res = b.get(authorize_url(&app, &p)).send().await.unwrap();
        assert_eq!(res.status(), 400, "{p:?}");
        assert!(
            res.headers().get("location").is_none(),
            "never redirect: {p:?}"
        );
    }
    // The loopback port may differ (RFC 8252 §7.3).
    let res = b
        .get(authorize_url(
            &app,
            &with("redirect_uri", Some("http://127.0.0.1:53123/callback")),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    // Errors sent back to a client an operator registered; for a client that registered
    // itself, shown on a page until the user has seen it (RFC 9700 §4.11.2).
    let (operator, _) = app
        .add_client(concierge::oauth::client_metadata::RawClientMetadata {
            redirect_uris: Some(vec![REDIRECT.into()]),
            token_endpoint_auth_method: Some("none".into()),
            ..Default::default()
        })
        .await;
    for (p, error) in [
        (
            with("response_type", Some("token")),
            "unsupported_response_type",
        ),
        (with("code_challenge", None), "invalid_request"),
        (
            with("code_challenge_method", Some("plain")),
            "invalid_request",
        ),
        (with("code_challenge_method", None), "invalid_request"),
        (
            with("resource", Some("https://unknown.example/mcp")),
            "invalid_target",
        ),
        (with("scope", Some("calendar:read")), "invalid_scope"),
        (with("scope", Some("admin")), "invalid_scope"),
        (with("prompt", Some("none login")), "invalid_request"),
        (with("request", Some("eyJ.x.y")), "request_not_supported"),
    ] {
        let res = b.get(authorize_url(&app, &p)).send().await.unwrap();
        assert_eq!(res.status(), 400, "{error}");
        assert!(res.headers().get("location").is_none(), "{error}");
        assert!(res.text().await.unwrap().contains(error), "{error}");
        let p: Vec<(String, String)> = p
            .into_iter()
            .map(|(k, v)| {
                let v = if k == "client_id" {
                    operator.clone()
                } else {
                    v
                };
                (k, v)
            })
            .collect();
        let res = b.get(authorize_url(&app, &p)).send().await.unwrap();
        assert_eq!(res.status(), 303, "{error}");
        let back = location(&res);
        assert!(back.starts_with(REDIRECT), "{back}");
        let q = query(&back);
        assert_eq!(q["error"], error, "{back}");
        assert!(!q["error_description"].is_empty());
        assert_eq!(q["state"], "st-123");
        assert_eq!(q["iss"], app.issuer);
    }
    // A repeated parameter is refused.
    let mut dup = base.clone();
    dup.push(("scope".into(), "notes:write".into()));
    assert_eq!(
        b.get(authorize_url(&app, &dup))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    app
});

both!(
    no_resource_uses_the_documented_default,
    |c: &mut concierge::Config| {
        c.default_resource = Some(NOTES.into());
    },
    |app: TestApp| async move {
        seed(&app).await;
        let client = public_client(&app).await;
        let (verifier, challenge) = pkce();
        let b = browser();
        let params: Vec<(String, String)> = auth_params(&client, &challenge, "notes:read")
            .into_iter()
            .filter(|(k, _)| k != "resource")
            .collect();
        let back = authorize_and_approve(&app, &b, &params).await;
        let (s, _, body) = redeem(&app, &client, &query(&back)["code"], &verifier, &[]).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(claims(body["access_token"].as_str().unwrap())["aud"], NOTES);
        app
    }
);

// A consent revoked and granted again records its next use at once, though the replica
// recorded a use of the old one less than a minute before (`RecentUses` is told of the grant).
both!(
    a_consent_granted_anew_records_its_first_use,
    |app: TestApp| async move {
        let (alice, client, _, _) = connect_agent(&app, "notes:read").await;
        let store = app.store();
        let consents = store.list_consents(&alice).await.unwrap();
        let first = consents.iter().find(|c| c.client_id == client).unwrap();
        assert!(first.last_used_at.is_some(), "the first use is recorded");
        let now = concierge::util::now();
        assert!(
            store
                .revoke_consent(&alice, &client, &first.resource, now)
                .await
                .unwrap()
        );
        let (verifier, challenge) = pkce();
        // Another browser, so the consent page is reached as on a first authorization.
        let b = browser();
        let back =
            authorize_and_approve(&app, &b, &auth_params(&client, &challenge, "notes:read")).await;
        let (s, _, tokens) = redeem(&app, &client, &query(&back)["code"], &verifier, &[]).await;
        assert_eq!(s, 200, "{tokens}");
        let again = store
            .get_consent(&alice, &client, &first.resource)
            .await
            .unwrap()
            .expect("granted again");
        assert!(
            again.last_used_at.is_some(),
            "the new consent's first use was not recorded"
        );
        app
    }
);

both!(connected_apps_page_revokes, |app: TestApp| async move {
    let (alice, client, b, tokens) = connect_agent(&app, "notes:read").await;
    let rt = tokens["refresh_token"].as_str().unwrap().to_string();

    let page = b.get(app.url("/account/apps")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Test Agent") && html.contains("Notes") && html.contains("notes:read"),
        "{html}"
    );
    assert!(
        !html.contains("last used never"),
        "the token use is recorded"
    );
    // Revoke needs the form's token.
    let forms = hidden_inputs(&html);
    let bad: Vec<(String, String)> = forms.iter().filter(|(k, _)| k != "csrf").cloned().collect();
    assert_eq!(
        b.post(app.url("/account/apps/revoke"))
            .form(&bad)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    let revoke: Vec<(String, String)> = forms.iter().take(3).cloned().collect();
    let res = b
        .post(app.url("/account/apps/revoke"))
        .form(&revoke)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert!(app.store().list_consents(&alice).await.unwrap().is_empty());
    assert_error(
        &refresh(&app, &client, &rt, &[]).await,
        400,
        "invalid_grant",
        "revoked",
    );
    // Signed out, the page asks to sign in.
    let res = browser()
        .get(app.url("/account/apps"))
        .send()
        .await
        .unwrap();
    assert!(location(&res).contains("/signin"));
    app
});

both!(sign_in_failures_are_throttled, |app: TestApp| async move {
    seed(&app).await;
    let b = browser();
    let signin = app.url("/signin");
    for _ in 0..5 {
        let res = sign_in(&app, &b, &signin, "alice", "wrong password").await;
        assert_eq!(res.status(), 401);
        assert!(
            res.text()
                .await
                .unwrap()
                .contains("Wrong username or password")
        );
    }
    let res = sign_in(&app, &b, &signin, "alice", PASSWORD).await;
    assert_eq!(res.status(), 429, "even the right password waits");
    // Unknown users get the same answer as wrong passwords.
    let res = sign_in(&app, &b, &signin, "mallory", "whatever1").await;
    assert_eq!(res.status(), 401);
    app
});

both!(
    sign_in_throttling_holds_under_concurrency,
    builder |b: crate::helpers::TestAppBuilder<'static>| b.with_user("bob", PASSWORD),
    |app: TestApp| async move {
        // Forty wrong passwords at once get no more checks than five in a row would: each
        // attempt is counted before its password is verified.
        let b = browser();
        let page = b.get(app.url("/signin")).send().await.unwrap().text().await.unwrap();
        let form = hidden_inputs(&page);
        let mut attempts = tokio::task::JoinSet::new();
        for _ in 0..40 {
            let mut form = form.clone();
            form.push(("username".into(), "bob".into()));
            form.push(("password".into(), "not the password".into()));
            let (b, url) = (b.clone(), app.url("/signin"));
            attempts.spawn(async move { b.post(url).form(&form).send().await.unwrap().status().as_u16() });
        }
        let statuses: Vec<u16> = attempts.join_all().await;
        let checked = statuses.iter().filter(|s| **s == 401).count();
        let throttled = statuses.iter().filter(|s| **s == 429).count();
        assert!(checked <= 5, "{checked} passwords were checked: {statuses:?}");
        assert_eq!(checked + throttled, 40, "{statuses:?}");
        // Each checked attempt is a failed sign-in in the audit log; no more.
        app.state.oauth.audit.flush().await;
        let failed = app
            .store()
            .list_audit(&concierge::store::AuditQuery {
                kind: Some("signin.failed".into()),
                user_id: Some(app.users["bob"].clone()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(failed.len(), checked);
        app
    }
);

both!(confidential_client_code_flow, |app: TestApp| async move {
    let alice = seed(&app).await;
    let (_, _, reg) = app
        .register(
            &json!({"client_name": "Web App", "redirect_uris": [REDIRECT],
                          "grant_types": ["authorization_code", "refresh_token"]}),
        )
        .await;
    let id = reg["client_id"].as_str().unwrap().to_string();
    let secret = reg["client_secret"].as_str().unwrap().to_string();
    let (verifier, challenge) = pkce();
    let b = browser();
    let back = authorize_and_approve(&app, &b, &auth_params(&id, &challenge, "notes:read")).await;
    let code = query(&back)["code"].clone();
    // Without its secret the confidential client is refused.
    let res = app
        .http
        .post(app.url("/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", &id),
            ("code", &code),
            ("code_verifier", &verifier),
            ("redirect_uri", REDIRECT),
        ])
        .send()
        .await
        .unwrap();
    assert_error(
        &split(res).await,
        401,
        "invalid_client",
        "client_secret_basic",
    );
    let code = remembered_code(&app, &b, &auth_params(&id, &challenge, "notes:read")).await;
    let res = app
        .http
        .post(app.url("/token"))
        .basic_auth(&id, Some(&secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &verifier),
            ("redirect_uri", REDIRECT),
        ])
        .send()
        .await
        .unwrap();
    let (s, _, body) = split(res).await;
    assert_eq!(s, 200, "{body}");
    // Confidential clients keep their refresh token: no rotation.
    let rt = body["refresh_token"].as_str().unwrap();
    let use_refresh = || async {
        let res = app
            .http
            .post(app.url("/token"))
            .basic_auth(&id, Some(&secret))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", rt)])
            .send()
            .await
            .unwrap();
        split(res).await
    };
    for _ in 0..2 {
        let (s, _, r) = use_refresh().await;
        assert_eq!(s, 200, "{r}");
        assert!(r.get("refresh_token").is_none());
    }
    // Disabling the user revokes the token the client keeps: the refresh grant relies on
    // that, and reads the user only for an ID token's claims.
    disable_now(&app, &alice).await;
    let (s, _, r) = use_refresh().await;
    assert_eq!(
        (s.as_u16(), r["error"].as_str()),
        (400, Some("invalid_grant")),
        "{r}"
    );
    app
});

both!(metadata_lists_the_code_flow, |app: TestApp| async move {
    let (_, _, m) = app.get_json("/.well-known/openid-configuration").await;
    assert_eq!(m["authorization_endpoint"], app.url("/authorize"));
    assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(m["authorization_response_iss_parameter_supported"], true);
    assert_eq!(m["response_types_supported"], json!(["code"]));
    assert_eq!(m["userinfo_endpoint"], app.url("/userinfo"));
    assert_eq!(m["id_token_signing_alg_values_supported"], json!(["RS256"]));
    for g in ["authorization_code", "refresh_token", "client_credentials"] {
        assert!(
            m["grant_types_supported"]
                .as_array()
                .unwrap()
                .contains(&json!(g)),
            "{g}"
        );
    }
    assert!(
        m["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("openid"))
    );
    app
});

both!(
    codes_expire_and_max_age_asks_again,
    |c: &mut concierge::Config| {
        c.tokens.code_ttl_secs = 1;
    },
    |app: TestApp| async move {
        seed(&app).await;
        let client = public_client(&app).await;
        let (verifier, challenge) = pkce();
        let b = browser();
        let params = auth_params(&client, &challenge, "notes:read");
        let back = authorize_and_approve(&app, &b, &params).await;
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        let got = redeem(&app, &client, &query(&back)["code"], &verifier, &[]).await;
        assert_error(&got, 400, "invalid_grant", "expired");
        // The sign-in is now two seconds old: max_age=1 sends the user to sign in again.
        let mut fresh = params.clone();
        fresh.push(("max_age".into(), "1".into()));
        let res = b.get(authorize_url(&app, &fresh)).send().await.unwrap();
        let signin = location(&res);
        assert!(signin.contains("/signin?"), "{signin}");
        let res = sign_in(
            &app,
            &b,
            &format!("{}{}", app.origin, signin),
            "alice",
            PASSWORD,
        )
        .await;
        let res = b
            .get(format!("{}{}", app.origin, location(&res)))
            .send()
            .await
            .unwrap();
        assert!(
            query(&location(&res)).contains_key("code"),
            "straight back after signing in"
        );
        app
    }
);

both!(
    consent_lets_the_user_untick_scopes,
    |app: TestApp| async move {
        seed(&app).await;
        let client = public_client(&app).await;
        let b = browser();
        let (verifier, challenge) = pkce();
        let params = auth_params(&client, &challenge, "openid notes:read notes:write");
        let res = b.get(authorize_url(&app, &params)).send().await.unwrap();
        let html = sign_in_and_see(&app, &b, &res).await;
        assert!(html.contains("name=\"keep:notes:write\""), "{html}");
        assert!(
            !html.contains("name=\"keep:openid\""),
            "identity scopes stay: {html}"
        );
        // The user unticks notes:write; a forged form cannot add a scope the client did not
        // ask for.
        let mut form: Vec<(String, String)> = hidden_inputs(&html)
            .into_iter()
            .filter(|(n, _)| n != "keep:notes:write")
            .map(|(n, v)| match n.as_str() {
                "offered" => (n, format!("{v} calendar:read")),
                _ => (n, v),
            })
            .collect();
        form.push(("keep:calendar:read".into(), "on".into()));
        form.push(("decision".into(), "approve".into()));
        let res = b
            .post(app.url("/authorize/decision"))
            .form(&form)
            .send()
            .await
            .unwrap();
        let back = location(&res);
        let (s, _, tokens) = redeem(&app, &client, &query(&back)["code"], &verifier, &[]).await;
        assert_eq!(s, 200, "{tokens}");
        assert_eq!(tokens["scope"], "openid notes:read", "{tokens}");
        assert_eq!(
            claims(tokens["access_token"].as_str().unwrap())["scope"],
            "openid notes:read"
        );
        // What was unticked was not consented to: asking for it again asks the user again.
        let (_, challenge) = pkce();
        let again = auth_params(&client, &challenge, "notes:read notes:write");
        let res = b.get(authorize_url(&app, &again)).send().await.unwrap();
        assert_eq!(res.status(), 200, "the consent page again");
        let page = res.text().await.unwrap();
        assert!(page.contains("name=\"keep:notes:write\""), "{page}");
        // What stayed ticked was: asking for it alone goes straight back with a code.
        let (_, challenge) = pkce();
        let same = auth_params(&client, &challenge, "notes:read");
        let res = b.get(authorize_url(&app, &same)).send().await.unwrap();
        assert_eq!(res.status(), 303);
        assert!(location(&res).starts_with(REDIRECT), "{}", location(&res));
        app
    }
);

both!(
    consent_and_connected_apps_name_the_tools_each_scope_allows,
    |app: TestApp| async move {
        use concierge::oauth::resource::{Resource, ScopeDef};
        seed(&app).await;
        let tools = "http://127.0.0.1:9999/tools";
        let scopes = ScopeDef::with_tools(
            vec![
                ScopeDef::parse("t:read=Read your things").unwrap(),
                ScopeDef::parse("t:write=Change your things").unwrap(),
            ],
            &[
                "list_things=t:read=List your things".to_string(),
                "delete_thing=t:write=Delete one thing".to_string(),
            ],
        )
        .unwrap();
        app.store()
            .insert_resource(
                &Resource::new(tools, "Things", scopes, 0)
                    .unwrap()
                    .to_record(),
            )
            .await
            .unwrap();
        let client = public_client(&app).await;
        let b = browser();
        let (_, challenge) = pkce();
        let mut params = auth_params(&client, &challenge, "t:read t:write");
        params.retain(|(k, _)| k != "resource");
        params.push(("resource".into(), tools.into()));
        let res = b.get(authorize_url(&app, &params)).send().await.unwrap();
        let html = unescape(&sign_in_and_see(&app, &b, &res).await);
        assert!(
            html.contains(
                "Lets it use: <code class=\"tool\" title=\"List your things\">list_things</code>"
            ),
            "{html}"
        );
        assert!(html.contains(">delete_thing</code>"), "{html}");
        // The user unticks t:write: the app may use list_things only.
        let res = approve_unticking(&app, &b, &html, &["t:write"]).await;
        assert_eq!(res.status(), 303);
        let apps = unescape(&page_text(&b, &app.url("/account/apps")).await);
        assert!(apps.contains("May use the tools: <code class=\"tool\" title=\"List your things\">list_things</code>"), "{apps}");
        assert!(!apps.contains("delete_thing"), "{apps}");
        app
    }
);

both!(
    authorization_details_are_approved_on_the_consent_page,
    |app: TestApp| async move {
        seed(&app).await;
        let client = public_client(&app).await;
        let (verifier, challenge) = pkce();
        let details = serde_json::json!([{
            "type": "mcp_tool_call",
            "tool": "delete_note",
            "summary": "Delete the note “groceries”",
            "arguments": {"id": "groceries"},
        }]);
        let mut params = auth_params(&client, &challenge, "notes:write");
        params.push(("authorization_details".into(), details.to_string()));
        let b = browser();
        let res = b.get(authorize_url(&app, &params)).send().await.unwrap();
        let html = sign_in_and_see(&app, &b, &res).await;
        // The consent page says what exactly, in words, with the arguments.
        let text = unescape(&html);
        assert!(
            text.contains("Use the tool “delete_note” on Notes: Delete the note “groceries”"),
            "{html}"
        );
        assert!(text.contains("id = groceries"), "{html}");
        let res = decide(&app, &b, &html, "approve").await;
        let back = location(&res);
        let (s, _, tokens) = redeem(&app, &client, &query(&back)["code"], &verifier, &[]).await;
        assert_eq!(s, 200, "{tokens}");
        // Carried in the access token, with the MCP server filled in; one action, so no
        // refresh token.
        let mut carried = details.clone();
        carried[0]["locations"] = serde_json::json!([NOTES]);
        assert_eq!(
            claims(tokens["access_token"].as_str().unwrap())["authorization_details"],
            carried
        );
        assert!(tokens["refresh_token"].is_null(), "{tokens}");

        // Never approved from memory: the same request shows the page again, and
        // prompt=none answers consent_required.
        let res = b.get(authorize_url(&app, &params)).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(
            res.text()
                .await
                .unwrap()
                .contains("It asks to do this, once")
        );
        let mut none = params.clone();
        none.push(("prompt".into(), "none".into()));
        let res = b.get(authorize_url(&app, &none)).send().await.unwrap();
        assert_eq!(query(&location(&res))["error"], "consent_required");
        // The same scope without details: remembered, straight back with a code.
        let plain = auth_params(&client, &challenge, "notes:write");
        let res = b.get(authorize_url(&app, &plain)).send().await.unwrap();
        assert!(query(&location(&res)).contains_key("code"));

        // Details that do not conform: refused with invalid_authorization_details (back to
        // the client, which alice has approved before).
        for bad in [
            serde_json::json!([{"type": "payment_initiation"}]).to_string(),
            serde_json::json!([{"type": "mcp_tool_call", "tool": "x", "extra": 1}]).to_string(),
            serde_json::json!([{"type": "mcp_tool_call", "tool": "x", "locations": [CALENDAR]}])
                .to_string(),
            "not json".to_string(),
        ] {
            let mut p = auth_params(&client, &challenge, "notes:write");
            p.push(("authorization_details".into(), bad.clone()));
            let res = b.get(authorize_url(&app, &p)).send().await.unwrap();
            let body_or_redirect = if res.status() == 303 {
                location(&res)
            } else {
                res.text().await.unwrap()
            };
            assert!(
                body_or_redirect.contains("invalid_authorization_details"),
                "{bad}: {body_or_redirect}"
            );
        }
        app
    }
);
