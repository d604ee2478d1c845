//! The account security page beyond the second factor: a user changes their password, sees
//! and ends their sessions, unlinks identities at other issuers; every change needs a recent
//! sign-in and is audited. And the sign-in page says which application asks.

use std::sync::Arc;

use concierge::store::{LinkedBy, LinkedIdentity, Session};
use reqwest::cookie::Jar;

use crate::both;
use crate::flow::*;
use crate::helpers::{Server, TestApp};
use crate::mfa::{audit, between, post_security, signed_in};

const NEW_PASSWORD: &str = "a much longer new password";

async fn security_html(app: &TestApp, b: &reqwest::Client) -> String {
    let res = b.get(app.url("/account/security")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

/// Is `b` signed in? (The security page answers, or sends it to sign in.)
async fn is_signed_in(app: &TestApp, b: &reqwest::Client) -> bool {
    let res = b.get(app.url("/account/security")).send().await.unwrap();
    match res.status().as_u16() {
        200 => true,
        303 => {
            assert!(location(&res).contains("/signin"));
            false
        }
        other => panic!("unexpected {other}"),
    }
}

/// The session ids the security page lists, this browser's first.
fn listed_sessions(html: &str) -> (String, Vec<String>) {
    let mut this = None;
    let mut others = Vec::new();
    for item in html.split("<li class=\"session\" data-sid=\"").skip(1) {
        let sid = item.split('"').next().unwrap().to_string();
        if item.split('>').next().unwrap().contains("data-this") {
            this = Some(sid);
        } else {
            others.push(sid);
        }
    }
    (this.expect("this browser is listed"), others)
}

/// A browser whose cookie names a session of `user_id` signed in `age` seconds ago (made in
/// the store, as if the clock had moved on).
async fn browser_signed_in_ago(app: &TestApp, user_id: &str, age: i64) -> reqwest::Client {
    let token = concierge::util::random_secret();
    let now = concierge::util::now();
    let session = Session {
        sid: concierge::util::random_id(),
        user_id: user_id.into(),
        auth_time: now - age,
        amr: vec!["pwd".into()],
        acr: None,
        created_at: now - age,
        expires_at: now + 3600,
    };
    app.store()
        .insert_session(&concierge::util::secret_hash(&token), &session)
        .await
        .unwrap();
    let jar = Arc::new(Jar::default());
    let url = app.url("/").parse().unwrap();
    jar.add_cookie_str(
        &format!("{}={token}; Path=/", concierge::ui::SESSION_COOKIE),
        &url,
    );
    reqwest::Client::builder()
        .cookie_provider(jar)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

both!(a_user_changes_their_password, |app: TestApp| async move {
    let (_alice, client, a, tokens) = connect_agent(&app, "notes:read").await;
    let other = signed_in(&app, "alice").await;
    let html = security_html(&app, &a).await;
    assert!(html.contains("id=\"current-password\""), "{html}");

    let change = |current: &'static str, new: &'static str, again: &'static str| {
        let a = a.clone();
        let app = &app;
        async move {
            post_security(
                app,
                &a,
                "/account/security/password",
                &[
                    ("current_password", current),
                    ("new_password", new),
                    ("new_password_again", again),
                ],
            )
            .await
        }
    };
    // Refusals: nothing changes.
    let res = change("wrong password", NEW_PASSWORD, NEW_PASSWORD).await;
    assert_eq!(res.status(), 400);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("current password is not right")
    );
    let failed = audit(&app, "signin.failed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].detail["during"], "password_change");
    let res = change(PASSWORD, NEW_PASSWORD, "something else entirely").await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("differ"));
    let res = change(PASSWORD, "short", "short").await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("at least 8"));
    let res = change(PASSWORD, PASSWORD, PASSWORD).await;
    assert_eq!(res.status(), 400);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("different from the current")
    );
    assert!(is_signed_in(&app, &other).await);
    assert!(audit(&app, "password.changed").await.is_empty());

    // The change: this browser stays signed in under a new cookie; the others and the
    // agent's refresh token end.
    let res = change(PASSWORD, NEW_PASSWORD, NEW_PASSWORD).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("set-cookie").is_some());
    assert!(res.text().await.unwrap().contains("id=\"notice\""));
    assert!(is_signed_in(&app, &a).await);
    assert!(!is_signed_in(&app, &other).await);
    if let Some(rt) = tokens["refresh_token"].as_str() {
        let (status, _, body) = refresh(&app, &client, rt, &[]).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "invalid_grant");
    }
    let b = browser();
    let res = sign_in(&app, &b, &app.url("/signin"), "alice", PASSWORD).await;
    assert_eq!(res.status(), 401);
    let res = sign_in(&app, &b, &app.url("/signin"), "alice", NEW_PASSWORD).await;
    assert_eq!(res.status(), 303);
    let changed = audit(&app, "password.changed").await;
    assert_eq!(changed.len(), 1);
    assert!(!changed[0].detail.to_string().contains(NEW_PASSWORD));
    app
});

both!(
    a_user_sees_and_ends_their_sessions,
    |app: TestApp| async move {
        seed(&app).await;
        add_user(&app, "bob").await;
        let a = signed_in(&app, "alice").await;
        let b = signed_in(&app, "alice").await;
        let bob = signed_in(&app, "bob").await;
        let html = security_html(&app, &a).await;
        let (this, others) = listed_sessions(&html);
        assert_eq!(others.len(), 1, "bob's session is not alice's: {html}");
        assert!(html.contains("with password"));

        // Another user's session id ends nothing.
        let (bobs, _) = listed_sessions(&security_html(&app, &bob).await);
        let res = post_security(
            &app,
            &a,
            "/account/security/sessions/end",
            &[("sid", &bobs)],
        )
        .await;
        assert_eq!(res.status(), 404);
        assert!(is_signed_in(&app, &bob).await);

        // One other browser.
        let res = post_security(
            &app,
            &a,
            "/account/security/sessions/end",
            &[("sid", &others[0])],
        )
        .await;
        assert_eq!(res.status(), 200);
        assert!(!is_signed_in(&app, &b).await);
        assert!(is_signed_in(&app, &a).await);
        let ended = audit(&app, "session.ended").await;
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].detail["sid"], others[0].as_str());

        // Every other browser at once.
        let c = signed_in(&app, "alice").await;
        let d = signed_in(&app, "alice").await;
        let res = post_security(
            &app,
            &a,
            "/account/security/sessions/end",
            &[("others", "1")],
        )
        .await;
        assert_eq!(res.status(), 200);
        assert!(!is_signed_in(&app, &c).await && !is_signed_in(&app, &d).await);
        assert!(is_signed_in(&app, &a).await && is_signed_in(&app, &bob).await);

        // This browser: signed out, sent to the sign-in page.
        let res = post_security(
            &app,
            &a,
            "/account/security/sessions/end",
            &[("sid", &this)],
        )
        .await;
        assert_eq!(res.status(), 303);
        assert!(location(&res).ends_with("/signin"));
        assert!(!is_signed_in(&app, &a).await);
        app
    }
);

both!(changes_need_a_recent_sign_in, |app: TestApp| async move {
    let alice = seed(&app).await;
    let stale = browser_signed_in_ago(&app, &alice, 3600).await;
    // The page shows; it says to sign in again before changing anything.
    let html = security_html(&app, &stale).await;
    assert!(html.contains("id=\"reauthenticate\""), "{html}");
    for (path, fields) in [
        (
            "/account/security/password",
            vec![
                ("current_password", PASSWORD),
                ("new_password", NEW_PASSWORD),
                ("new_password_again", NEW_PASSWORD),
            ],
        ),
        ("/account/security/totp/start", vec![]),
        ("/account/security/sessions/end", vec![("others", "1")]),
    ] {
        let res = post_security(&app, &stale, path, &fields).await;
        assert_eq!(res.status(), 303, "{path}");
        let to = location(&res);
        assert!(to.contains("/signin?return_to="), "{to}");
        assert!(to.contains("login_hint=alice"), "{to}");
    }
    assert!(audit(&app, "password.changed").await.is_empty());
    // Signing in again (the same browser) makes the change possible.
    let signin = format!("{}{}", app.origin(), {
        let res = post_security(&app, &stale, "/account/security/totp/start", &[]).await;
        location(&res)
    });
    let res = sign_in(&app, &stale, &signin, "alice", PASSWORD).await;
    assert_eq!(res.status(), 303);
    assert!(location(&res).ends_with("/account/security"));
    let html = security_html(&app, &stale).await;
    assert!(!html.contains("id=\"reauthenticate\""));
    let res = post_security(&app, &stale, "/account/security/totp/start", &[]).await;
    assert_eq!(res.status(), 200);

    // A session nine minutes old is still recent.
    let recent = browser_signed_in_ago(&app, &alice, 540).await;
    let res = post_security(
        &app,
        &recent,
        "/account/security/sessions/end",
        &[("others", "1")],
    )
    .await;
    assert_eq!(res.status(), 200);
    app
});

both!(a_user_unlinks_an_identity, |app: TestApp| async move {
    let alice = seed(&app).await;
    let link = |user_id: &str, subject: &str| LinkedIdentity {
        issuer: "https://idp.example.com".into(),
        subject: subject.into(),
        user_id: user_id.into(),
        email: Some(format!("{subject}@idp.example.com")),
        linked_by: LinkedBy::Operator,
        created_at: concierge::util::now(),
    };
    app.store()
        .link_identity(&link(&alice, "alice-at-idp"))
        .await
        .unwrap();
    let a = signed_in(&app, "alice").await;
    let html = security_html(&app, &a).await;
    assert!(html.contains("alice-at-idp@idp.example.com"), "{html}");
    assert!(html.contains("idp.example.com</span>"), "{html}");

    // Someone else's identity: not theirs to unlink.
    let bob = add_user(&app, "bob").await;
    app.store()
        .link_identity(&link(&bob, "bob-at-idp"))
        .await
        .unwrap();
    let res = post_security(
        &app,
        &a,
        "/account/security/identities/unlink",
        &[
            ("issuer", "https://idp.example.com"),
            ("subject", "bob-at-idp"),
        ],
    )
    .await;
    assert_eq!(res.status(), 404);
    assert!(
        app.store()
            .find_identity("https://idp.example.com", "bob-at-idp")
            .await
            .unwrap()
            .is_some()
    );

    let unlink = [
        ("issuer", "https://idp.example.com"),
        ("subject", "alice-at-idp"),
    ];
    let res = post_security(&app, &a, "/account/security/identities/unlink", &unlink).await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(!html.contains("alice-at-idp@"), "{html}");
    let unlinked = audit(&app, "identity.unlinked").await;
    assert_eq!(unlinked.len(), 1);
    assert_eq!(unlinked[0].user_id.as_deref(), Some(alice.as_str()));
    let res = post_security(&app, &a, "/account/security/identities/unlink", &unlink).await;
    assert_eq!(res.status(), 404);
    app
});

both!(
    an_account_without_a_password_keeps_its_way_in,
    |app: TestApp| async move {
        seed(&app).await;
        // Provisioned for an identity at another issuer: no password.
        let now = concierge::util::now();
        let user = concierge::store::User {
            id: concierge::util::random_id(),
            username: "carol".into(),
            email: None,
            email_verified: false,
            name: None,
            password_hash: None,
            disabled_at: None,
            password_change_required: false,
            created_at: now,
            updated_at: now,
        };
        let identity = LinkedIdentity {
            issuer: "https://idp.example.com".into(),
            subject: "carol".into(),
            user_id: user.id.clone(),
            email: None,
            linked_by: LinkedBy::Provisioned,
            created_at: now,
        };
        app.store().provision_user(&user, &identity).await.unwrap();
        let b = browser_signed_in_ago(&app, &user.id, 10).await;
        let html = security_html(&app, &b).await;
        assert!(!html.contains("id=\"current-password\""), "{html}");
        let unlink = [("issuer", "https://idp.example.com"), ("subject", "carol")];
        let res = post_security(&app, &b, "/account/security/identities/unlink", &unlink).await;
        assert_eq!(res.status(), 409);
        assert!(res.text().await.unwrap().contains("only way to sign in"));
        // With a password set (no current one to give), the identity may go.
        let res = post_security(
            &app,
            &b,
            "/account/security/password",
            &[
                ("new_password", NEW_PASSWORD),
                ("new_password_again", NEW_PASSWORD),
            ],
        )
        .await;
        assert_eq!(res.status(), 200);
        let res = post_security(&app, &b, "/account/security/identities/unlink", &unlink).await;
        assert_eq!(res.status(), 200);
        let fresh = browser();
        let res = sign_in(&app, &fresh, &app.url("/signin"), "carol", NEW_PASSWORD).await;
        assert_eq!(res.status(), 303);
        app
    }
);

both!(the_signin_page_says_who_asks, |app: TestApp| async move {
    seed(&app).await;
    // A client that registered itself: named, its host shown, marked unverified.
    let client = public_client(&app).await;
    let (_, challenge) = pkce();
    let b = browser();
    let res = b
        .get(authorize_url(
            &app,
            &auth_params(&client, &challenge, "notes:read"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let signin = format!("{}{}", app.origin(), location(&res));
    let html = b.get(&signin).send().await.unwrap().text().await.unwrap();
    assert_eq!(
        between(&html, "<strong id=\"client-name\">", "<"),
        Some("Test Agent")
    );
    let host = url::Url::parse(REDIRECT).unwrap();
    assert_eq!(
        between(&html, "<strong id=\"redirect-host\">", "<"),
        host.host_str()
    );
    assert!(html.contains("id=\"unverified\""), "{html}");
    // A wrong password shows it again.
    let res = sign_in(&app, &b, &signin, "alice", "wrong password").await;
    assert_eq!(res.status(), 401);
    let html = res.text().await.unwrap();
    assert!(html.contains("id=\"client-name\"") && html.contains("id=\"unverified\""));

    // A client the operator registered is not marked unverified.
    let (operator_client, _) = app
        .add_client(
            serde_json::from_value(serde_json::json!({
                "client_name": "Operator Agent",
                "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "none",
            }))
            .unwrap(),
        )
        .await;
    let res = b
        .get(authorize_url(
            &app,
            &auth_params(&operator_client, &challenge, "notes:read"),
        ))
        .send()
        .await
        .unwrap();
    let html = b
        .get(format!("{}{}", app.origin(), location(&res)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        between(&html, "<strong id=\"client-name\">", "<"),
        Some("Operator Agent")
    );
    assert!(!html.contains("id=\"unverified\""), "{html}");

    // Signing in for nothing in particular, or with a tampered way back, names nobody.
    for url in [
        app.url("/signin"),
        app.url("/signin?return_to=%2Fauthorize%2Fcontinue%3Frequest%3Dforged.tag"),
    ] {
        let html = b.get(&url).send().await.unwrap().text().await.unwrap();
        assert!(!html.contains("id=\"client-name\""), "{html}");
    }
    app
});
