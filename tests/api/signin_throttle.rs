//! Sign-in throttling that slows guessing without locking anyone out: increasing waits per
//! username that the right password gets past, per-address failures counted per username,
//! unlocking by an operator, and client addresses behind trusted proxies.

use std::time::Duration;

use concierge::Config;
use concierge::store::{AuditEvent, AuditQuery};

use crate::both;
use crate::flow::*;
use crate::helpers::{TestApp, TestAppBuilder};

/// One sign-in attempt from a fresh page, with an `X-Forwarded-For` header if given.
async fn attempt(
    app: &TestApp,
    user: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> reqwest::Response {
    let b = browser();
    let page = b.get(app.url("/signin")).send().await.unwrap();
    let mut form = hidden_inputs(&page.text().await.unwrap());
    form.push(("username".into(), user.into()));
    form.push(("password".into(), password.into()));
    let mut req = b.post(app.url("/signin")).form(&form);
    if let Some(xff) = forwarded_for {
        req = req.header("x-forwarded-for", xff);
    }
    req.send().await.unwrap()
}

async fn status(app: &TestApp, user: &str, password: &str) -> u16 {
    attempt(app, user, password, None).await.status().as_u16()
}

async fn audit(app: &TestApp, kind: &str) -> Vec<AuditEvent> {
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

/// One failure makes alice wait (with one free failure and a long delay).
async fn lock(app: &TestApp) {
    assert_eq!(status(app, "alice", "wrong password").await, 401);
    assert_eq!(status(app, "alice", PASSWORD).await, 429, "waiting");
}

fn users(b: TestAppBuilder<'static>) -> TestAppBuilder<'static> {
    b.with_user("alice", PASSWORD).with_user("bob", PASSWORD)
}

both!(
    the_right_password_gets_in_once_the_wait_has_passed,
    builder |b: TestAppBuilder<'static>| users(b).configure(|c: &mut Config| {
        // Waits of a few seconds: long enough that a loaded machine (argon2 on every
        // attempt, the whole suite running) still makes the next attempts inside them.
        c.signin.user_free_failures = 2;
        c.signin.user_delay_secs = 3;
        c.signin.user_max_delay_secs = 6;
        c.signin.user_failure_reset_secs = 60;
    }),
    |app: TestApp| async move {
        assert_eq!(status(&app, "alice", "wrong password").await, 401);
        assert_eq!(status(&app, "alice", "wrong password").await, 401);
        // Inside the wait even the right password is not checked; the page says how long.
        let res = attempt(&app, "alice", PASSWORD, None).await;
        assert_eq!(res.status(), 429);
        let retry: i64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=3).contains(&retry), "{retry}");
        let page = res.text().await.unwrap();
        assert!(page.contains(&format!("Try again in {retry} second")), "{page}");
        // After it, the right password signs in.
        tokio::time::sleep(Duration::from_millis(3100)).await;
        let res = attempt(&app, "alice", PASSWORD, None).await;
        assert_eq!(res.status(), 303, "checked after the wait");
        // And forgets the failures: two free attempts again.
        assert_eq!(status(&app, "alice", "wrong password").await, 401);
        assert_eq!(status(&app, "alice", "wrong password").await, 401);
        assert_eq!(status(&app, "alice", "wrong password").await, 429);
        let throttled = audit(&app, "signin.throttled").await;
        assert_eq!(throttled.len(), 2, "{throttled:?}");
        let e = &throttled[0];
        assert_eq!(e.user_id.as_deref(), Some(app.users["alice"].as_str()));
        assert_eq!(e.detail["reason"], "user_delay");
        assert_eq!(e.detail["username"], "alice");
        assert_eq!(e.ip.as_deref(), Some("127.0.0.1"));
        app
    }
);

both!(
    one_users_failures_do_not_throttle_another_from_the_same_address,
    builder |b: TestAppBuilder<'static>| users(b).configure(|c: &mut Config| {
        c.signin.user_free_failures = 2;
        c.signin.user_delay_secs = 600;
        c.signin.address_max_usernames = 3;
    }),
    |app: TestApp| async move {
        for expected in [401, 401, 429] {
            assert_eq!(status(&app, "alice", "wrong password").await, expected);
        }
        assert_eq!(status(&app, "bob", PASSWORD).await, 303, "bob is not alice");
        // Spraying from this address: once three usernames failed, those may not be tried
        // again from here; a user who did not fail here still signs in, and a new username
        // is still checked.
        for u in ["mallory1", "mallory2"] {
            assert_eq!(status(&app, u, "Summer2025!").await, 401);
        }
        let res = attempt(&app, "mallory1", "Winter2025!", None).await;
        assert_eq!(res.status(), 429);
        assert_eq!(res.headers()["retry-after"], "900");
        assert_eq!(status(&app, "bob", PASSWORD).await, 303);
        assert_eq!(status(&app, "mallory3", "Summer2025!").await, 401);
        let throttled = audit(&app, "signin.throttled").await;
        let sprayed = throttled
            .iter()
            .find(|e| e.detail["reason"] == "address_usernames")
            .unwrap();
        assert_eq!(sprayed.detail["known_user"], false);
        assert!(sprayed.detail["username_digest"].is_string());
        assert!(sprayed.user_id.is_none());
        let text = serde_json::to_string(&throttled).unwrap();
        assert!(!text.contains("mallory"), "an unknown username is never stored: {text}");
        app
    }
);

both!(
    operators_unlock_from_the_command_line_and_the_admin_api,
    builder |b: TestAppBuilder<'static>| users(b).with_admin_client().configure(|c: &mut Config| {
        c.signin.user_free_failures = 1;
        c.signin.user_delay_secs = 600;
    }),
    |app: TestApp| async move {
        lock(&app).await;
        let db = app.config.database_url.clone().unwrap();
        let data_dir = app.config.data_dir.display().to_string();
        let cli = |user: &str| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_concierge"))
                .args(["--database-url", &db, "--data-dir", &data_dir, "user", "unlock", user])
                .env_remove("CONCIERGE_KEY_ENCRYPTION_KEY")
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr),
            )
        };
        let (ok, out) = cli("alice");
        assert!(ok && out.contains("unlocked alice"), "{out}");
        assert_eq!(status(&app, "alice", PASSWORD).await, 303, "unlocked");
        let (ok, out) = cli("alice");
        assert!(ok && out.contains("no failed sign-ins"), "{out}");
        let (ok, out) = cli("nobody");
        assert!(!ok && out.contains("no user nobody"), "{out}");

        lock(&app).await;
        let admin = app.admin_client.clone().unwrap();
        let token = cc_token(
            &app,
            &admin.client_id,
            &admin.secret,
            &concierge::oauth::admin_token::admin_resource_uri(&app.issuer),
            "admin",
        )
        .await;
        let unlock = |id: String| {
            let (app, token) = (&app, &token);
            async move {
                let res = app
                    .http
                    .post(app.url(&format!("/admin/v1/users/{id}/unlock")))
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap();
                let status = res.status().as_u16();
                (status, res.json::<serde_json::Value>().await.unwrap())
            }
        };
        let alice = app.users["alice"].clone();
        assert_eq!(unlock(alice.clone()).await, (200, serde_json::json!({ "cleared": true })));
        assert_eq!(status(&app, "alice", PASSWORD).await, 303, "unlocked");
        assert_eq!(unlock(alice.clone()).await, (200, serde_json::json!({ "cleared": false })));
        assert_eq!(unlock("no-such-id".into()).await.0, 404);
        // Both ways are in the audit log.
        let changes = audit(&app, "admin.change").await;
        let api: Vec<_> = changes
            .iter()
            .filter(|e| e.detail["action"] == "user.unlock")
            .collect();
        assert_eq!(api.len(), 2);
        assert_eq!(api[0].user_id.as_deref(), Some(alice.as_str()));
        assert!(
            changes
                .iter()
                .any(|e| e.detail["command"] == "user unlock alice"),
            "{changes:?}"
        );
        app
    }
);

both!(
    clients_behind_a_trusted_proxy_are_told_apart,
    |c: &mut Config| {
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        c.signin.address_max_usernames = 1;
    },
    |app: TestApp| async move {
        let one = Some("198.51.100.7, 203.0.113.1");
        let two = Some("203.0.113.2");
        assert_eq!(attempt(&app, "mallory", "guess", one).await.status(), 401);
        assert_eq!(attempt(&app, "mallory", "guess", one).await.status(), 429);
        assert_eq!(
            attempt(&app, "mallory", "guess", two).await.status(),
            401,
            "another client behind the same proxy"
        );
        let failed = audit(&app, "signin.failed").await;
        let mut ips: Vec<_> = failed.iter().map(|e| e.ip.clone().unwrap()).collect();
        ips.sort();
        assert_eq!(ips, ["203.0.113.1", "203.0.113.2"]);
        let throttled = audit(&app, "signin.throttled").await;
        assert_eq!(throttled[0].ip.as_deref(), Some("203.0.113.1"));
        app
    }
);

both!(
    an_untrusted_peers_forwarded_for_is_ignored,
    |c: &mut Config| {
        c.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
        c.signin.address_max_usernames = 1;
    },
    |app: TestApp| async move {
        let one = Some("203.0.113.1");
        let two = Some("203.0.113.2");
        assert_eq!(attempt(&app, "mallory", "guess", one).await.status(), 401);
        assert_eq!(
            attempt(&app, "mallory", "guess", two).await.status(),
            429,
            "the same peer, whatever it claims"
        );
        let failed = audit(&app, "signin.failed").await;
        assert_eq!(failed[0].ip.as_deref(), Some("127.0.0.1"));
        app
    }
);
