//! How strongly the user signed in (`acr`): `acr_values`, a client's `default_acr_values`,
//! a resource's `--require-mfa` and the server's `[signin] mfa` policy; enrolment at sign-in
//! for users who have no second factor; `acr`/`amr` in ID tokens, access tokens and
//! introspection; and the guard's RFC 9470 step-up for a sensitive tool, end to end.

use concierge::config::MfaPolicy;
use serde_json::{Value, json};

use crate::both;
use crate::flow::*;
use crate::helpers::{Server, TestApp, assert_error, split};
use crate::mfa::{
    audit, base32_decode, between, code_step, enroll, is_signed_in, now, password_step,
    recovery_codes, signed_in, totp,
};

const MFA: &str = "urn:concierge:acr:mfa";
const ONE: &str = "urn:concierge:acr:1fa";

/// `params` with `extra` added (replacing any of the same name).
fn with(params: &[(String, String)], extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<_> = params
        .iter()
        .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
        .cloned()
        .collect();
    out.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    out
}

/// `concierge resource update <Notes> <flag>`, the operator's command, then the cache of
/// this replica forgets Notes (as another replica's would within its lifetime).
fn update_notes(app: &TestApp, flag: &str) {
    let mut args = vec![
        "--database-url",
        app.config.database_url.as_deref().unwrap(),
        "resource",
        "update",
        NOTES,
    ];
    args.extend(flag.split(' '));
    let data_dir = app.config.data_dir.display().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_concierge"))
        .args(["--data-dir", &data_dir])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    app.state.oauth.resources.forget(NOTES);
}

/// Follow a redirect on this server.
async fn follow(app: &TestApp, b: &reqwest::Client, res: &reqwest::Response) -> reqwest::Response {
    b.get(format!("{}{}", app.origin(), location(res)))
        .send()
        .await
        .unwrap()
}

/// The enrolment step after a right password: confirm the authenticator shown with a wrong
/// code (refused, shown again), then a right one. Returns the secret, the recovery codes and
/// where the page's "continue" goes.
async fn enrol_at_signin(
    app: &TestApp,
    b: &reqwest::Client,
    res: reqwest::Response,
) -> (Vec<u8>, Vec<String>, String) {
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("Set up an authenticator app"), "{html}");
    assert!(html.contains("<svg"), "a QR code: {html}");
    // (A browser stepping up keeps its weaker session meanwhile; a fresh one has none.)
    let had_session = is_signed_in(app, b).await;
    let secret = base32_decode(between(&html, "<code id=\"secret\">", "<").unwrap());
    let post = |code: String, html: String| async move {
        let mut form = hidden_inputs(&html);
        form.push(("code".into(), code));
        b.post(app.url("/signin/enroll"))
            .form(&form)
            .send()
            .await
            .unwrap()
    };
    let wrong = post(totp(&secret, now() + 600), html.clone()).await;
    assert_eq!(wrong.status(), 401);
    let again = wrong.text().await.unwrap();
    assert!(
        again.contains("<svg"),
        "the same authenticator again: {again}"
    );
    assert_eq!(is_signed_in(app, b).await, had_session);
    let done = post(totp(&secret, now()), again).await;
    assert_eq!(done.status(), 200);
    assert!(done.headers().get("set-cookie").is_some());
    let page = done.text().await.unwrap();
    let codes = recovery_codes(&page);
    assert_eq!(codes.len(), 10, "{page}");
    let next = unescape(between(&page, "id=\"continue\" href=\"", "\"").unwrap());
    assert!(is_signed_in(app, b).await);
    (secret, codes, next)
}

/// Introspect `token` as an operator's resource server.
pub(crate) async fn introspect(app: &TestApp, token: &str) -> Value {
    let (id, secret) =
        crate::introspection::static_client(app, &["client_credentials"], true).await;
    let (s, _, body) = split(
        app.http
            .post(app.url("/introspect"))
            .form(&[
                ("token", token),
                ("client_id", &id),
                ("client_secret", &secret),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    body
}

both!(
    acr_values_enrol_a_user_without_a_factor_and_every_token_says_so,
    |app: TestApp| async move {
        seed(&app).await;
        let (s, _, meta) = split(
            app.http
                .get(app.url("/.well-known/openid-configuration"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(meta["acr_values_supported"], json!([ONE, MFA, "phr"]));

        let client = public_client(&app).await;
        let (verifier, challenge) = pkce();
        let params = with(
            &auth_params(&client, &challenge, "openid notes:read"),
            &[("acr_values", &format!("urn:other:gold {MFA}"))],
        );
        let b = browser();
        let res = b.get(authorize_url(&app, &params)).send().await.unwrap();
        assert_eq!(res.status(), 303);
        let signin = location(&res);
        assert!(
            signin.contains("acr=urn%3Aconcierge%3Aacr%3Amfa"),
            "{signin}"
        );
        let page = follow(&app, &b, &res).await.text().await.unwrap();
        assert!(page.contains("id=\"need\""), "the page says why: {page}");
        let res = sign_in(
            &app,
            &b,
            &format!("{}{signin}", app.origin()),
            "alice",
            PASSWORD,
        )
        .await;
        assert!(
            !is_signed_in(&app, &b).await,
            "no session before the second factor"
        );
        let (secret, _, next) = enrol_at_signin(&app, &b, res).await;
        assert_eq!(audit(&app, "mfa.enrolled").await.len(), 1);
        let consent = b
            .get(format!("{}{next}", app.origin()))
            .send()
            .await
            .unwrap();
        assert_eq!(consent.status(), 200);
        let res = decide(&app, &b, &consent.text().await.unwrap(), "approve").await;
        let (s, _, tokens) = redeem(
            &app,
            &client,
            &query(&location(&res))["code"],
            &verifier,
            &[],
        )
        .await;
        assert_eq!(s, 200, "{tokens}");
        let id = claims(tokens["id_token"].as_str().unwrap());
        assert_eq!(id["acr"], MFA);
        assert_eq!(id["amr"], json!(["pwd", "otp"]));
        let access = tokens["access_token"].as_str().unwrap();
        assert_eq!(claims(access)["acr"], MFA);
        let seen = introspect(&app, access).await;
        assert_eq!(seen["active"], true);
        assert_eq!(seen["acr"], MFA);
        assert_eq!(seen["amr"], json!(["pwd", "otp"]));

        // From now on the password alone is not enough, anywhere.
        let b2 = browser();
        let html = password_step(&app, &b2, "alice").await;
        let res = code_step(&app, &b2, &html, &totp(&secret, now() + 30)).await;
        assert_eq!(res.status(), 303);
        app
    }
);

both!(
    a_resource_that_requires_mfa_steps_up_a_password_session,
    |app: TestApp| async move {
        seed(&app).await;
        // A session with the password alone.
        let b = signed_in(&app, "alice").await;
        let client = public_client(&app).await;

        // Notes now requires a second factor (the operator's command).
        update_notes(&app, "--require-mfa");

        let (verifier, challenge) = pkce();
        let params = auth_params(&client, &challenge, "openid notes:read");
        // prompt=none cannot step up.
        let res = b
            .get(authorize_url(&app, &with(&params, &[("prompt", "none")])))
            .send()
            .await
            .unwrap();
        // (An error page: the client registered itself and was never approved.)
        assert_eq!(res.status(), 400);
        assert!(res.text().await.unwrap().contains("login_required"));
        let res = b.get(authorize_url(&app, &params)).send().await.unwrap();
        let signin = location(&res);
        assert!(
            signin.contains("/signin?") && signin.contains("acr="),
            "{signin}"
        );
        let res = sign_in(
            &app,
            &b,
            &format!("{}{signin}", app.origin()),
            "alice",
            PASSWORD,
        )
        .await;
        let (_, _, next) = enrol_at_signin(&app, &b, res).await;
        let consent = b
            .get(format!("{}{next}", app.origin()))
            .send()
            .await
            .unwrap();
        let res = decide(&app, &b, &consent.text().await.unwrap(), "approve").await;
        let (s, _, tokens) = redeem(
            &app,
            &client,
            &query(&location(&res))["code"],
            &verifier,
            &[],
        )
        .await;
        assert_eq!(s, 200, "{tokens}");
        assert_eq!(claims(tokens["access_token"].as_str().unwrap())["acr"], MFA);

        // The stronger session serves the next request without asking again.
        let (_, challenge) = pkce();
        let again = auth_params(&client, &challenge, "openid notes:read");
        let res = b.get(authorize_url(&app, &again)).send().await.unwrap();
        assert!(
            location(&res).starts_with(REDIRECT),
            "a code at once: {}",
            location(&res)
        );
        app
    }
);

both!(
    a_password_grant_stops_refreshing_when_its_resource_requires_mfa,
    |app: TestApp| async move {
        // Alice approves with her password alone; her agent refreshes as usual.
        let (_, client, _, tokens) = connect_agent(&app, "openid notes:read").await;
        let rt = tokens["refresh_token"].as_str().unwrap();
        let (s, _, body) = refresh(&app, &client, rt, &[]).await;
        assert_eq!(s, 200, "{body}");
        let rt = body["refresh_token"].as_str().unwrap().to_string();

        // The operator raises Notes to a second factor: the password-only grant stops
        // yielding tokens for it, and says why.
        update_notes(&app, "--require-mfa");
        let refused = refresh(&app, &client, &rt, &[]).await;
        assert_error(&refused, 400, "invalid_grant", "a second factor");
        assert_error(&refused, 400, "invalid_grant", "with a password");
        // With a passkey required instead, the same.
        update_notes(&app, "--require-acr phr");
        assert_error(
            &refresh(&app, &client, &rt, &[]).await,
            400,
            "invalid_grant",
            "a passkey",
        );

        // Refused, not spent: the store still holds it unused, and once the requirement is
        // lifted the same token rotates.
        let stored = stored_refresh(&app, &rt).await;
        assert_eq!((stored.used_at, stored.revoked), (None, false));
        // Nor any successor left of a rotation undone.
        assert_eq!(stored.successor, None);
        update_notes(&app, "--require-acr none");
        let (s, _, body) = refresh(&app, &client, &rt, &[]).await;
        assert_eq!(s, 200, "{body}");
        app
    }
);

both!(
    a_password_grant_stops_refreshing_under_the_required_policy,
    |c: &mut concierge::Config| c.signin.mfa = MfaPolicy::Required,
    |app: TestApp| async move {
        // Two grants of Alice's made before the server required a second factor of everyone:
        // one approved with her password alone, one with her authenticator's code too.
        let alice = seed(&app).await;
        let client = public_client(&app).await;
        let now = concierge::util::now();
        let grant = |amr: &[&str], acr: &str| {
            let raw = concierge::util::random_secret();
            let token = concierge::store::RefreshToken {
                token_hash: concierge::util::secret_hash(&raw),
                family_id: concierge::util::random_secret(),
                client_id: client.clone(),
                user_id: alice.clone(),
                resources: vec![NOTES.into()],
                scope: "notes:read".into(),
                auth_time: now - 60,
                amr: amr.iter().map(|m| m.to_string()).collect(),
                acr: Some(acr.into()),
                sid: None,
                created_at: now - 60,
                expires_at: now + 3600,
                absolute_expires_at: now + 86_400,
                dpop_jkt: None,
            };
            (raw, token)
        };
        let (weak, weak_token) = grant(&["pwd"], ONE);
        let (strong, strong_token) = grant(&["pwd", "otp"], MFA);
        for t in [&weak_token, &strong_token] {
            app.store().insert_refresh(t).await.unwrap();
        }
        assert_error(
            &refresh(&app, &client, &weak, &[]).await,
            400,
            "invalid_grant",
            "a second factor",
        );
        let (s, _, body) = refresh(&app, &client, &strong, &[]).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(claims(body["access_token"].as_str().unwrap())["acr"], MFA);
        app
    }
);

both!(
    the_required_policy_enrols_everyone_and_keeps_the_factor,
    |c: &mut concierge::Config| c.signin.mfa = MfaPolicy::Required,
    |app: TestApp| async move {
        seed(&app).await;
        let b = browser();
        let res = sign_in(&app, &b, &app.url("/signin"), "alice", PASSWORD).await;
        let (_, codes, next) = enrol_at_signin(&app, &b, res).await;
        assert!(next.ends_with("/account/security"), "{next}");
        let page = page_text(&b, &app.url("/account/security")).await;
        assert!(page.contains("cannot be removed"), "{page}");
        let res = remove_authenticator(&app, &b, &page, &codes[0]).await;
        assert_eq!(res.status(), 403);
        app
    }
);

both!(
    the_off_policy_offers_no_authenticator,
    |c: &mut concierge::Config| c.signin.mfa = MfaPolicy::Off,
    |app: TestApp| async move {
        seed(&app).await;
        let b = signed_in(&app, "alice").await;
        let page = page_text(&b, &app.url("/account/security")).await;
        assert!(!page.contains("id=\"setup\""), "{page}");
        let signin = page_text(&b, &app.url("/signin")).await;
        let csrf = between(&signin, "name=\"csrf\" value=\"", "\"").unwrap();
        let res = b
            .post(app.url("/account/security/totp/start"))
            .form(&[("csrf", csrf)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
        // A voluntary acr_values is not met by force: the token says what was reached.
        let client = public_client(&app).await;
        let (verifier, challenge) = pkce();
        let params = with(
            &auth_params(&client, &challenge, "openid notes:read"),
            &[("acr_values", MFA)],
        );
        let back = authorize_and_approve(&app, &browser(), &params).await;
        let (s, _, tokens) = redeem(&app, &client, &query(&back)["code"], &verifier, &[]).await;
        assert_eq!(s, 200, "{tokens}");
        assert_eq!(claims(tokens["id_token"].as_str().unwrap())["acr"], ONE);
        app
    }
);

both!(
    a_required_password_change_waits_for_the_second_factor,
    |app: TestApp| async move {
        let alice = seed(&app).await;
        let b = signed_in(&app, "alice").await;
        let (secret, _) = enroll(&app, &b).await;
        assert!(
            app.store()
                .require_password_change(&alice, concierge::util::now())
                .await
                .unwrap()
        );

        let b = browser();
        let res = sign_in(&app, &b, &app.url("/signin"), "alice", PASSWORD).await;
        assert_eq!(res.status(), 200);
        let html = res.text().await.unwrap();
        assert!(html.contains("name=\"new_password\""), "{html}");
        assert!(
            html.contains("name=\"code\""),
            "the code is asked with it: {html}"
        );
        let post = |code: String| {
            let (b, app) = (&b, &app);
            let html = html.clone();
            async move {
                let mut form = hidden_inputs(&html);
                for (k, v) in [
                    ("username", "alice"),
                    ("password", PASSWORD),
                    ("new_password", "a brand new passphrase"),
                    ("new_password_again", "a brand new passphrase"),
                ] {
                    form.push((k.into(), v.into()));
                }
                form.push(("code".into(), code));
                b.post(app.url("/signin")).form(&form).send().await.unwrap()
            }
        };
        // The password alone (and a wrong code) changes nothing: the owner is not locked out.
        let res = post(totp(&secret, now() + 900)).await;
        assert_eq!(res.status(), 401);
        assert!(!is_signed_in(&app, &b).await);
        let stored = app.store().get_user(&alice).await.unwrap().unwrap();
        assert!(stored.password_change_required, "still the old password");
        // With the code, the password changes and the session has both factors.
        let res = post(totp(&secret, now() + 30)).await;
        assert_eq!(res.status(), 303);
        assert!(is_signed_in(&app, &b).await);
        let stored = app.store().get_user(&alice).await.unwrap().unwrap();
        assert!(!stored.password_change_required);
        app
    }
);

both!(
    default_acr_values_are_checked_at_registration_and_required_at_sign_in,
    |app: TestApp| async move {
        seed(&app).await;
        let (s, _, body) = app
            .register(&json!({
                "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "none",
                "default_acr_values": ["urn:mace:incommon:iap:gold"],
            }))
            .await;
        assert_eq!(s, 400, "{body}");
        assert_eq!(body["error"], "invalid_client_metadata");
        let (s, _, body) = app
            .register(&json!({
                "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "none",
                "default_acr_values": [MFA],
            }))
            .await;
        assert_eq!(s, 201, "{body}");
        assert_eq!(body["default_acr_values"], json!([MFA]));
        let client = body["client_id"].as_str().unwrap().to_string();
        let b = signed_in(&app, "alice").await;
        let (_, challenge) = pkce();
        let res = b
            .get(authorize_url(
                &app,
                &auth_params(&client, &challenge, "notes:read"),
            ))
            .send()
            .await
            .unwrap();
        let signin = location(&res);
        assert!(
            signin.contains("/signin?") && signin.contains("acr="),
            "{signin}"
        );
        app
    }
);

// The guard's per-tool step-up (RFC 9470) with `mcp-notes`' `clear_notes`.
both!(
    the_guard_steps_up_a_sensitive_tool_and_concierge_answers,
    |app: TestApp| async move {
        seed(&app).await;
        let notes = crate::mcp::spawn_notes(&app).await;
        let client = public_client(&app).await;
        let clear = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "clear_notes", "arguments": {}}});
        let call = |token: String| {
            let (app, notes, clear) = (&app, &notes, clear.clone());
            async move {
                split(
                    app.http
                        .post(notes.as_str())
                        .header("accept", "application/json, text/event-stream")
                        .bearer_auth(token)
                        .json(&clear)
                        .send()
                        .await
                        .unwrap(),
                )
                .await
            }
        };
        // A token from a password sign-in.
        let b = browser();
        let (verifier, challenge) = pkce();
        let params = with(
            &auth_params(&client, &challenge, "notes:read notes:write"),
            &[("resource", &notes)],
        );
        let back = authorize_and_approve(&app, &b, &params).await;
        let (s, _, tokens) = redeem(&app, &client, &query(&back)["code"], &verifier, &[]).await;
        assert_eq!(s, 200, "{tokens}");
        let weak = tokens["access_token"].as_str().unwrap().to_string();
        assert_eq!(claims(&weak)["acr"], ONE);
        let (s, h, _) = call(weak).await;
        assert_eq!(s, 401);
        let challenge_header = h["www-authenticate"].to_str().unwrap().to_string();
        assert!(
            challenge_header.contains("error=\"insufficient_user_authentication\""),
            "{challenge_header}"
        );
        assert!(
            challenge_header.contains(&format!("acr_values=\"{MFA} phr\"")),
            "{challenge_header}"
        );
        assert!(
            challenge_header.contains("max_age=\"300\""),
            "{challenge_header}"
        );

        // The client asks again with what the challenge named; Concierge steps the user up.
        let (verifier, challenge) = pkce();
        let params = with(
            &auth_params(&client, &challenge, "notes:read notes:write"),
            &[
                ("resource", &notes),
                ("acr_values", &format!("{MFA} phr")),
                ("max_age", "300"),
            ],
        );
        let res = b.get(authorize_url(&app, &params)).send().await.unwrap();
        let signin = location(&res);
        assert!(signin.contains("acr="), "{signin}");
        let res = sign_in(
            &app,
            &b,
            &format!("{}{signin}", app.origin()),
            "alice",
            PASSWORD,
        )
        .await;
        let (_, _, next) = enrol_at_signin(&app, &b, res).await;
        let res = b
            .get(format!("{}{next}", app.origin()))
            .send()
            .await
            .unwrap();
        // Consent was given before: straight back with a code.
        let back = location(&res);
        assert!(back.starts_with(REDIRECT), "{back}");
        let (s, _, tokens) = redeem(&app, &client, &query(&back)["code"], &verifier, &[]).await;
        assert_eq!(s, 200, "{tokens}");
        let strong = tokens["access_token"].as_str().unwrap().to_string();
        assert_eq!(claims(&strong)["acr"], MFA);
        let (s, _, body) = call(strong).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["result"]["structuredContent"]["removed"], 0, "{body}");
        app
    }
);

/// Under `mfa = "required"`, the authenticator app can go when the user has a passkey: it is
/// not their only second factor (the passkey then stays, as the last one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_with_a_passkey_may_remove_the_required_authenticator() {
    for backend in [
        crate::helpers::Backend::Sqlite,
        crate::helpers::Backend::Postgres,
    ] {
        // Passkeys need a host name: `localhost`.
        let Some(app) = TestApp::builder(backend)
            .on_localhost()
            .configure(|c| c.signin.mfa = MfaPolicy::Required)
            .start()
            .await
        else {
            continue;
        };
        let alice = seed(&app).await;
        let b = browser();
        let res = sign_in(&app, &b, &app.url("/signin"), "alice", PASSWORD).await;
        let (_, codes, _) = enrol_at_signin(&app, &b, res).await;
        app.store()
            .insert_passkey(&concierge::store::StoredPasskey {
                id: "pk-1".into(),
                user_id: alice.clone(),
                credential_id: "Y3JlZA".into(),
                credential: "{}".into(),
                name: "Laptop".into(),
                created_at: concierge::util::now(),
                last_used_at: None,
            })
            .await
            .unwrap();
        let page = page_text(&b, &app.url("/account/security")).await;
        assert!(!page.contains("cannot be removed"), "{page}");
        let res = remove_authenticator(&app, &b, &page, &codes[0]).await;
        assert_eq!(res.status(), 303);
        assert!(
            app.store().get_totp(&alice).await.unwrap().is_none(),
            "removed"
        );
        app.finish().await;
    }
}

/// Post the security page's form removing the authenticator app, with `code`.
async fn remove_authenticator(
    app: &TestApp,
    b: &reqwest::Client,
    page: &str,
    code: &str,
) -> reqwest::Response {
    let csrf = between(page, "name=\"csrf\" value=\"", "\"").unwrap();
    b.post(app.url("/account/security/totp/remove"))
        .form(&[("csrf", csrf), ("code", code)])
        .send()
        .await
        .unwrap()
}
