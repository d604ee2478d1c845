//! Authenticator codes (TOTP, RFC 6238) and recovery codes as the second sign-in factor:
//! enrollment, the second sign-in step, single use, throttling, removal and reset. Codes are
//! computed here by an implementation of our own (checked against RFC 6238's vectors), not
//! by the crate the server uses.

use std::time::{SystemTime, UNIX_EPOCH};

use concierge::Config;
use concierge::store::{AuditEvent, AuditQuery};
use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::both;
use crate::flow::*;
use crate::helpers::{Server, TestApp, TestAppBuilder};

/// HOTP (RFC 4226 §5.3): HMAC-SHA-1, dynamic truncation, 6 digits.
fn hotp(secret: &[u8], counter: u64) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let mac = aws_lc_rs::hmac::sign(&key, &counter.to_be_bytes());
    let h = mac.as_ref();
    let offset = usize::from(h[19] & 0x0f);
    let bin = (u32::from(h[offset]) & 0x7f) << 24
        | u32::from(h[offset + 1]) << 16
        | u32::from(h[offset + 2]) << 8
        | u32::from(h[offset + 3]);
    format!("{:06}", bin % 1_000_000)
}

/// TOTP (RFC 6238 §4): T0 = 0, X = 30.
pub fn totp(secret: &[u8], unix: u64) -> String {
    hotp(secret, unix / 30)
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn the_test_totp_matches_rfc_6238_appendix_b() {
    // SHA-1 rows; the vectors have 8 digits, the last 6 are the 6-digit code.
    let seed = b"12345678901234567890";
    for (t, code) in [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ] {
        assert_eq!(totp(seed, t), code[2..]);
    }
}

/// RFC 4648 base32, without padding.
pub fn base32_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    out
}

/// The text between `start` and the next `end` after it.
pub fn between<'a>(html: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = html.find(start)? + start.len();
    Some(&html[from..from + html[from..].find(end)?])
}

pub fn recovery_codes(html: &str) -> Vec<String> {
    html.split("<code class=\"recovery-code\">")
        .skip(1)
        .filter_map(|p| p.split('<').next())
        .map(str::to_string)
        .collect()
}

/// POST a form of the security page `html` (its CSRF token) to `path` with `fields`.
pub async fn post_security(
    app: &TestApp,
    b: &reqwest::Client,
    path: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let page = b.get(app.url("/account/security")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let csrf = between(&html, "name=\"csrf\" value=\"", "\"")
        .unwrap()
        .to_string();
    let mut form = vec![("csrf".to_string(), csrf)];
    form.extend(fields.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    b.post(app.url(path)).form(&form).send().await.unwrap()
}

/// A browser signed in as `user` with the password alone.
pub async fn signed_in(app: &TestApp, user: &str) -> reqwest::Client {
    let b = browser();
    let res = sign_in(app, &b, &app.url("/signin"), user, PASSWORD).await;
    assert_eq!(res.status(), 303);
    b
}

/// Set up an authenticator for the signed-in browser `b`: the secret and the recovery codes.
/// A wrong first code confirms nothing.
pub async fn enroll(app: &TestApp, b: &reqwest::Client) -> (Vec<u8>, Vec<String>) {
    let page = b.get(app.url("/account/security")).send().await.unwrap();
    assert!(page.text().await.unwrap().contains("data-status=\"none\""));
    let res = post_security(app, b, "/account/security/totp/start", &[]).await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("<svg"), "a QR code, inline: {html}");
    assert!(!html.contains("<script"));
    let secret = base32_decode(between(&html, "<code id=\"secret\">", "<").unwrap());
    assert_eq!(secret.len(), 20);
    // A wrong code does not confirm.
    let wrong = totp(&secret, now() + 300);
    let res = post_security(
        app,
        b,
        "/account/security/totp/confirm",
        &[("code", &wrong)],
    )
    .await;
    assert_eq!(res.status(), 400);
    let html = res.text().await.unwrap();
    assert!(html.contains("<svg"), "the QR code again");
    let page = b.get(app.url("/account/security")).send().await.unwrap();
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("data-status=\"pending\"")
    );
    // The right one does, and shows the recovery codes once.
    let code = totp(&secret, now());
    let res = post_security(app, b, "/account/security/totp/confirm", &[("code", &code)]).await;
    assert_eq!(res.status(), 200);
    let codes = recovery_codes(&res.text().await.unwrap());
    assert_eq!(codes.len(), 10);
    let page = b
        .get(app.url("/account/security"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("data-status=\"confirmed\""), "{page}");
    assert!(recovery_codes(&page).is_empty(), "shown once");
    (secret, codes)
}

/// Sign in with the password from a fresh browser: the second step's page.
pub async fn password_step(app: &impl Server, b: &reqwest::Client, user: &str) -> String {
    let res = sign_in(app, b, &app.url("/signin"), user, PASSWORD).await;
    assert_eq!(res.status(), 200, "no session after the password alone");
    let html = res.text().await.unwrap();
    assert!(html.contains("name=\"pending\""), "{html}");
    assert!(!is_signed_in(app, b).await);
    html
}

pub async fn code_step(
    app: &impl Server,
    b: &reqwest::Client,
    html: &str,
    code: &str,
) -> reqwest::Response {
    let mut form = hidden_inputs(html);
    form.push(("code".into(), code.into()));
    b.post(app.url("/signin/code"))
        .form(&form)
        .send()
        .await
        .unwrap()
}

/// Is `b` signed in?
pub async fn is_signed_in(app: &impl Server, b: &reqwest::Client) -> bool {
    b.get(app.url("/account/security"))
        .send()
        .await
        .unwrap()
        .status()
        == 200
}

pub async fn audit(app: &TestApp, kind: &str) -> Vec<AuditEvent> {
    app.state.oauth.audit.flush().await;
    app.store()
        .list_audit(&AuditQuery {
            kind: Some(kind.into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
}

both!(
    enrolled_users_need_a_code_and_it_reaches_the_id_token,
    |app: TestApp| async move {
        let alice = seed(&app).await;
        let b = signed_in(&app, "alice").await;
        let (secret, _) = enroll(&app, &b).await;
        assert_eq!(audit(&app, "mfa.enrolled").await.len(), 1);

        // An authorization code flow: password, then the code, then consent.
        let client = public_client(&app).await;
        let (verifier, challenge) = pkce();
        let b = browser();
        let params = auth_params(&client, &challenge, "openid notes:read");
        let res = b.get(authorize_url(&app, &params)).send().await.unwrap();
        let signin = format!("{}{}", app.origin(), location(&res));
        let res = sign_in(&app, &b, &signin, "alice", PASSWORD).await;
        assert_eq!(res.status(), 200);
        let html = res.text().await.unwrap();
        // The enrollment spent the current step; the next one is accepted (clock skew).
        let code = totp(&secret, now() + 30);
        let wrong = totp(&secret, now() + 600);
        let res = code_step(&app, &b, &html, &wrong).await;
        assert_eq!(res.status(), 401);
        assert_eq!(audit(&app, "mfa.failed").await.len(), 1);
        let res = code_step(&app, &b, &html, &code).await;
        assert_eq!(res.status(), 303);
        let consent = b
            .get(format!("{}{}", app.origin(), location(&res)))
            .send()
            .await
            .unwrap();
        assert_eq!(consent.status(), 200);
        let res = decide(&app, &b, &consent.text().await.unwrap(), "approve").await;
        let back = location(&res);
        let (s, _, tokens) = redeem(&app, &client, &query(&back)["code"], &verifier, &[]).await;
        assert_eq!(s, 200, "{tokens}");
        let idc = verify(
            &app,
            tokens["id_token"].as_str().unwrap(),
            Algorithm::RS256,
            &client,
        );
        assert_eq!(idc["sub"], alice.as_str());
        assert_eq!(idc["amr"], json!(["pwd", "otp"]), "RFC 8176");

        // The same code again, in another browser: refused.
        let b2 = browser();
        let html = password_step(&app, &b2, "alice").await;
        let res = code_step(&app, &b2, &html, &code).await;
        assert_eq!(res.status(), 401, "a code works once");
        assert!(!is_signed_in(&app, &b2).await);
        app
    }
);

both!(
    recovery_codes_work_once_and_regenerating_replaces_them,
    |app: TestApp| async move {
        seed(&app).await;
        let b = signed_in(&app, "alice").await;
        let (_, codes) = enroll(&app, &b).await;

        let b1 = browser();
        let html = password_step(&app, &b1, "alice").await;
        // Typed in lower case without dashes: still the code.
        let typed = codes[0].to_lowercase().replace('-', "");
        assert_eq!(code_step(&app, &b1, &html, &typed).await.status(), 303);
        assert!(is_signed_in(&app, &b1).await);

        let b2 = browser();
        let html = password_step(&app, &b2, "alice").await;
        assert_eq!(
            code_step(&app, &b2, &html, &codes[0]).await.status(),
            401,
            "used"
        );

        // Regenerating: the old ones stop working, the new ones work.
        let res = post_security(&app, &b1, "/account/security/recovery-codes", &[]).await;
        assert_eq!(res.status(), 400, "not without a code");
        let res = post_security(
            &app,
            &b1,
            "/account/security/recovery-codes",
            &[("code", &codes[2])],
        )
        .await;
        assert_eq!(res.status(), 200);
        let fresh = recovery_codes(&res.text().await.unwrap());
        assert_eq!(fresh.len(), 10);
        assert_eq!(audit(&app, "mfa.recovery_codes_regenerated").await.len(), 1);
        let html = password_step(&app, &b2, "alice").await;
        assert_eq!(
            code_step(&app, &b2, &html, &codes[1]).await.status(),
            401,
            "replaced"
        );
        assert_eq!(code_step(&app, &b2, &html, &fresh[0]).await.status(), 303);
        app
    }
);

// Recovery codes are stored under argon2id (60 bits is too little for a fast hash in a stolen
// database), not under the SHA-256 kept before; codes stored under SHA-256 before the upgrade
// still work once.
both!(
    recovery_codes_are_stored_under_a_slow_hash_and_older_ones_still_work,
    |app: TestApp| async move {
        use concierge::oauth::authn::totp::legacy_recovery_hash;
        let alice = seed(&app).await;
        let b = signed_in(&app, "alice").await;
        let (_, codes) = enroll(&app, &b).await;
        let store = app.store();
        let now = concierge::util::now();
        assert!(
            !store
                .spend_recovery_code(&alice, &legacy_recovery_hash(&alice, &codes[3]), now)
                .await
                .unwrap(),
            "not stored under the fast hash"
        );
        let b1 = browser();
        let html = password_step(&app, &b1, "alice").await;
        assert_eq!(code_step(&app, &b1, &html, &codes[3]).await.status(), 303);

        // A code stored by a release before this one.
        let old = "ABCD-EFGH-JKMN";
        store
            .replace_recovery_codes(&alice, &[legacy_recovery_hash(&alice, old)], now)
            .await
            .unwrap();
        let b2 = browser();
        let html = password_step(&app, &b2, "alice").await;
        assert_eq!(
            code_step(&app, &b2, &html, &codes[4]).await.status(),
            401,
            "replaced"
        );
        assert_eq!(code_step(&app, &b2, &html, old).await.status(), 303);
        let b3 = browser();
        let html = password_step(&app, &b3, "alice").await;
        assert_eq!(code_step(&app, &b3, &html, old).await.status(), 401, "used");
        app
    }
);

both!(
    the_carried_signin_cannot_be_forged_moved_or_given_to_another_user,
    |app: TestApp| async move {
        seed(&app).await;
        let bob = add_user(&app, "bob").await;
        let b = signed_in(&app, "alice").await;
        let (_, alice_codes) = enroll(&app, &b).await;
        let bb = signed_in(&app, "bob").await;
        let (_, bob_codes) = enroll(&app, &bb).await;

        let b1 = browser();
        let html = password_step(&app, &b1, "alice").await;
        let form = hidden_inputs(&html);
        let pending = form.iter().find(|(k, _)| k == "pending").unwrap().1.clone();
        // The user named in the carried value, changed to bob: refused.
        let (_, rest) = pending.split_once('.').unwrap();
        let forged = format!("{}.{rest}", concierge::util::b64(bob.as_bytes()));
        let mut f = form.clone();
        for (k, v) in f.iter_mut() {
            if k == "pending" {
                *v = forged.clone();
            }
        }
        f.push(("code".into(), bob_codes[0].clone()));
        let res = b1
            .post(app.url("/signin/code"))
            .form(&f)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
        // A user id in the form is not listened to.
        let mut f = form.clone();
        f.push(("user_id".into(), bob.clone()));
        f.push(("code".into(), bob_codes[1].clone()));
        let res = b1
            .post(app.url("/signin/code"))
            .form(&f)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "checked as alice's code");
        // Alice's carried sign-in in another browser: refused even with her right code.
        let other = browser();
        let page = other
            .get(app.url("/signin"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let csrf = hidden_inputs(&page)
            .into_iter()
            .find(|(k, _)| k == "csrf")
            .unwrap();
        let mut f: Vec<(String, String)> =
            form.iter().filter(|(k, _)| k != "csrf").cloned().collect();
        f.push(csrf);
        f.push(("code".into(), alice_codes[0].clone()));
        let res = other
            .post(app.url("/signin/code"))
            .form(&f)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
        assert!(!is_signed_in(&app, &other).await);
        // A changed way back: refused.
        let mut f = form.clone();
        for (k, v) in f.iter_mut() {
            if k == "return_to" {
                *v = "/account/apps".into();
            }
        }
        f.push(("code".into(), alice_codes[0].clone()));
        let res = b1
            .post(app.url("/signin/code"))
            .form(&f)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
        // The untouched one works.
        assert_eq!(
            code_step(&app, &b1, &html, &alice_codes[0]).await.status(),
            303
        );
        app
    }
);

both!(
    wrong_codes_are_throttled_per_user,
    builder |b: TestAppBuilder<'static>| b.configure(|c: &mut Config| {
        c.signin.user_free_failures = 2;
        c.signin.user_delay_secs = 60;
        c.signin.user_max_delay_secs = 120;
        c.signin.user_failure_reset_secs = 600;
    }),
    |app: TestApp| async move {
        seed(&app).await;
        let b = signed_in(&app, "alice").await;
        let (_, codes) = enroll(&app, &b).await;
        let b1 = browser();
        let html = password_step(&app, &b1, "alice").await;
        assert_eq!(code_step(&app, &b1, &html, "000000").await.status(), 401);
        assert_eq!(code_step(&app, &b1, &html, "111111").await.status(), 401);
        // Now even a right code waits; a new password step does not reset the count.
        let res = code_step(&app, &b1, &html, &codes[0]).await;
        assert_eq!(res.status(), 429);
        assert!(res.headers().contains_key("retry-after"));
        let html = password_step(&app, &b1, "alice").await;
        assert_eq!(code_step(&app, &b1, &html, &codes[0]).await.status(), 429);
        assert!(!is_signed_in(&app, &b1).await);
        assert!(!audit(&app, "signin.throttled").await.is_empty());
        app
    }
);

both!(
    removing_needs_a_code_and_returns_to_the_password_alone,
    |app: TestApp| async move {
        seed(&app).await;
        let b = signed_in(&app, "alice").await;
        let (_, codes) = enroll(&app, &b).await;
        let res = post_security(
            &app,
            &b,
            "/account/security/totp/remove",
            &[("code", "123456")],
        )
        .await;
        assert_eq!(res.status(), 400);
        let res = post_security(
            &app,
            &b,
            "/account/security/totp/remove",
            &[("code", &codes[3])],
        )
        .await;
        assert_eq!(res.status(), 303);
        assert_eq!(audit(&app, "mfa.removed").await.len(), 1);
        // The password alone signs in again.
        let b1 = browser();
        let res = sign_in(&app, &b1, &app.url("/signin"), "alice", PASSWORD).await;
        assert_eq!(res.status(), 303);
        app
    }
);

both!(
    a_pending_enrollment_is_not_a_factor,
    |app: TestApp| async move {
        seed(&app).await;
        let b = signed_in(&app, "alice").await;
        let res = post_security(&app, &b, "/account/security/totp/start", &[]).await;
        assert_eq!(res.status(), 200);
        let b1 = browser();
        let res = sign_in(&app, &b1, &app.url("/signin"), "alice", PASSWORD).await;
        assert_eq!(
            res.status(),
            303,
            "the password alone, while enrollment is unconfirmed"
        );
        app
    }
);

both!(
    operators_reset_factors_from_the_command_line_and_the_admin_api,
    builder |b: TestAppBuilder<'static>| b.with_user("alice", PASSWORD).with_admin_client(),
    |app: TestApp| async move {
        let db = app.config.database_url.clone().unwrap();
        let data_dir = app.config.data_dir.display().to_string();
        let cli = |user: &str| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_concierge"))
                .args(["--database-url", &db, "--data-dir", &data_dir, "user", "reset-factors", user])
                .env_remove("CONCIERGE_KEY_ENCRYPTION_KEY")
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr),
            )
        };
        let b = signed_in(&app, "alice").await;
        enroll(&app, &b).await;
        password_step(&app, &browser(), "alice").await;
        let (ok, out) = cli("alice");
        assert!(ok && out.contains("reset alice"), "{out}");
        let res = sign_in(&app, &browser(), &app.url("/signin"), "alice", PASSWORD).await;
        assert_eq!(res.status(), 303, "the password alone again");
        let (ok, out) = cli("alice");
        assert!(ok && out.contains("no second factor"), "{out}");
        let (ok, out) = cli("nobody");
        assert!(!ok && out.contains("no user nobody"), "{out}");

        let b = signed_in(&app, "alice").await;
        enroll(&app, &b).await;
        password_step(&app, &browser(), "alice").await;
        let admin = app.admin_client.clone().unwrap();
        let token = cc_token(
            &app,
            &admin.client_id,
            &admin.secret,
            &concierge::oauth::admin_token::admin_resource_uri(&app.issuer),
            "admin",
        )
        .await;
        let reset = |id: String| {
            let (app, token) = (&app, &token);
            async move {
                let res = app
                    .http
                    .post(app.url(&format!("/admin/v1/users/{id}/reset-factors")))
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap();
                let status = res.status().as_u16();
                (status, res.json::<serde_json::Value>().await.unwrap())
            }
        };
        let alice = app.users["alice"].clone();
        assert_eq!(reset(alice.clone()).await, (200, json!({ "removed": true })));
        let res = sign_in(&app, &browser(), &app.url("/signin"), "alice", PASSWORD).await;
        assert_eq!(res.status(), 303, "the password alone again");
        assert_eq!(reset(alice.clone()).await, (200, json!({ "removed": false })));
        assert_eq!(reset("no-such-id".into()).await.0, 404);
        let changes = audit(&app, "admin.change").await;
        assert_eq!(
            changes
                .iter()
                .filter(|e| e.detail["action"] == "user.reset_factors")
                .count(),
            2
        );
        assert!(changes.iter().any(|e| e.detail["actor"]["via"] == "cli"
            && e.detail.to_string().contains("reset-factors")));
        app
    }
);
