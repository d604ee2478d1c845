//! Attacks from the threat model (SECURITY.md), each tried over HTTP against the real server
//! on both stores, with the refusal it must meet.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::both;
use crate::flow::*;
use crate::helpers::{TestApp, assert_error, split};

// A refresh token presented by another client, or asking for more than was granted, is
// refused without being spent: the rightful client's next plain refresh works.
both!(refused_refreshes_spend_nothing, |app: TestApp| async move {
    let (_, client, _, tokens) = connect_agent(&app, "notes:read").await;
    let rt = tokens["refresh_token"].as_str().unwrap().to_string();
    let thief = public_client(&app).await;
    assert_error(
        &refresh(&app, &thief, &rt, &[]).await,
        400,
        "invalid_grant",
        "another client",
    );
    assert_error(
        &refresh(&app, &client, &rt, &[("scope", "notes:read notes:write")]).await,
        400,
        "invalid_scope",
        "notes:write",
    );
    assert_error(
        &refresh(&app, &client, &rt, &[("resource", CALENDAR)]).await,
        400,
        "invalid_target",
        "not granted",
    );
    let (s, _, body) = refresh(&app, &client, &rt, &[]).await;
    assert_eq!(s, 200, "the token was not spent: {body}");
    app
});

// A grant of two resources refreshes for the one the request names (RFC 8707 §2.2). Without
// `resource` it is refused, and spends nothing: the named refresh after it works.
both!(
    a_grant_of_two_resources_refreshes_for_the_one_named,
    |app: TestApp| async move {
        let (_, client, _, tokens) = connect_agent(&app, "notes:read").await;
        let rt = tokens["refresh_token"].as_str().unwrap();
        let granted = stored_refresh(&app, rt).await.token;
        let raw = concierge::util::random_secret();
        let two = concierge::store::RefreshToken {
            token_hash: concierge::util::secret_hash(&raw),
            family_id: concierge::util::random_secret(),
            resources: vec![NOTES.into(), CALENDAR.into()],
            ..granted
        };
        app.store().insert_refresh(&two).await.unwrap();
        assert_error(
            &refresh(&app, &client, &raw, &[]).await,
            400,
            "invalid_target",
            "several resources",
        );
        let found = stored_refresh(&app, &raw).await;
        assert_eq!((found.used_at, found.successor), (None, None));
        let (s, _, body) = refresh(&app, &client, &raw, &[("resource", NOTES)]).await;
        assert_eq!(s, 200, "the token was not spent: {body}");
        app
    }
);

// A code redeemed with a wrong verifier, by another client or with another redirect URI is
// refused and stays redeemable by its client (see `authorization_code::check`).
both!(
    refused_code_redemptions_spend_nothing,
    |app: TestApp| async move {
        seed(&app).await;
        let client = public_client(&app).await;
        let other = public_client(&app).await;
        let (verifier, challenge) = pkce();
        let back = authorize_and_approve(
            &app,
            &browser(),
            &auth_params(&client, &challenge, "notes:read"),
        )
        .await;
        let code = query(&back)["code"].clone();
        let (wrong, _) = pkce();
        assert_error(
            &redeem(&app, &client, &code, &wrong, &[]).await,
            400,
            "invalid_grant",
            "code_verifier",
        );
        assert_error(
            &redeem(&app, &other, &code, &verifier, &[]).await,
            400,
            "invalid_grant",
            "another client",
        );
        assert_error(
            &redeem(
                &app,
                &client,
                &code,
                &verifier,
                &[("redirect_uri", "http://127.0.0.1/other")],
            )
            .await,
            400,
            "invalid_grant",
            "redirect_uri",
        );
        let (s, _, body) = redeem(&app, &client, &code, &verifier, &[]).await;
        assert_eq!(s, 200, "{body}");
        app
    }
);

// RFC 9700 §4.11.2: a client that registered itself (or names itself with a metadata
// document) gets its errors on a page until the user has signed in and seen it; a client an
// operator registered gets them at its redirect URI; after the consent page, a denial goes
// back to any client.
both!(no_open_redirector, |app: TestApp| async move {
    seed(&app).await;
    let dynamic = public_client(&app).await;
    let (static_id, _) = app
        .add_client(concierge::oauth::client_metadata::RawClientMetadata {
            redirect_uris: Some(vec![REDIRECT.into()]),
            token_endpoint_auth_method: Some("none".into()),
            ..Default::default()
        })
        .await;
    let (_, challenge) = pkce();
    let mut bad = auth_params(&dynamic, &challenge, "notes:read");
    bad.retain(|(k, _)| k != "code_challenge");
    let res = app
        .http
        .get(authorize_url(&app, &bad))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.headers().get("location").is_none(), "no redirect");
    assert!(res.text().await.unwrap().contains("code_challenge"));
    // Also for prompt=none with no session (a silent redirect would be the worst kind).
    let mut silent = auth_params(&dynamic, &challenge, "notes:read");
    silent.push(("prompt".into(), "none".into()));
    let res = app
        .http
        .get(authorize_url(&app, &silent))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.headers().get("location").is_none());

    let mut bad = auth_params(&static_id, &challenge, "notes:read");
    bad.retain(|(k, _)| k != "code_challenge");
    let res = app
        .http
        .get(authorize_url(&app, &bad))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let back = location(&res);
    assert!(back.starts_with(REDIRECT), "{back}");
    assert_eq!(query(&back)["error"], "invalid_request");

    // After sign-in and the consent page, the self-registered client hears the denial.
    let b = browser();
    let res = b
        .get(authorize_url(
            &app,
            &auth_params(&dynamic, &challenge, "notes:read"),
        ))
        .send()
        .await
        .unwrap();
    let html = sign_in_and_see(&app, &b, &res).await;
    let res = decide(&app, &b, &html, "deny").await;
    assert_eq!(res.status(), 303);
    assert_eq!(query(&location(&res))["error"], "access_denied");

    // Signed in but never approved this client: a silent request's error is still a page.
    let mut silent = auth_params(&dynamic, &challenge, "notes:read");
    silent.push(("prompt".into(), "none".into()));
    let res = b.get(authorize_url(&app, &silent)).send().await.unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.headers().get("location").is_none());
    // Once the user approved it, they have seen it: consent_required goes back to it.
    let res = b
        .get(authorize_url(
            &app,
            &auth_params(&dynamic, &challenge, "notes:read"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the consent page, already signed in");
    let res = decide(&app, &b, &res.text().await.unwrap(), "approve").await;
    assert!(query(&location(&res)).contains_key("code"));
    let mut wider = auth_params(&dynamic, &challenge, "notes:read notes:write");
    wider.push(("prompt".into(), "none".into()));
    let res = b.get(authorize_url(&app, &wider)).send().await.unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(query(&location(&res))["error"], "consent_required");
    app
});

async fn preflight(app: &TestApp, path: &str) -> Option<String> {
    let res = app
        .http
        .request(reqwest::Method::OPTIONS, app.url(path))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    res.headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_string())
}

// CORS only on what browser-based clients call directly; never on the authorization
// endpoint, sign-in, consent, device or account pages.
both!(cors_only_where_intended, |app: TestApp| async move {
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
        "/jwks",
        "/token",
        "/register",
        "/revoke",
        "/userinfo",
    ] {
        assert_eq!(preflight(&app, path).await.as_deref(), Some("*"), "{path}");
    }
    for path in [
        "/authorize",
        "/authorize/decision",
        "/authorize/continue",
        "/signin",
        "/signout",
        "/device",
        "/device/decision",
        "/device_authorization",
        "/introspect",
        "/account/apps",
        "/account/apps/revoke",
    ] {
        assert_eq!(preflight(&app, path).await, None, "{path}");
    }
    // A simple cross-origin GET of a page gets no CORS header either.
    let res = app
        .http
        .get(app.url("/signin"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    app
});

// The device flow's decision form decides only a code this browser session entered, and
// forged decisions count as wrong guesses; the consent page shows the code to compare.
both!(
    device_decisions_only_for_codes_entered_here,
    |c: &mut concierge::Config| c.tokens.device_poll_interval_secs = 1,
    |app: TestApp| async move {
        seed(&app).await;
        let client = crate::device::device_client(&app).await;
        let d = crate::device::start(&app, &client).await;
        let code = d["user_code"].as_str().unwrap().to_string();
        // Another signed-in session that never entered the code posts a decision for it.
        let b = browser();
        let res = b.get(app.url("/device")).send().await.unwrap();
        let page = sign_in_and_see(&app, &b, &res).await;
        let csrf: Vec<(String, String)> = hidden_inputs(&page);
        for _ in 0..12 {
            let mut form = csrf.clone();
            form.push(("user_code".into(), code.clone()));
            form.push(("entry".into(), "forged".into()));
            form.push(("decision".into(), "approve".into()));
            let res = b
                .post(app.url("/device/decision"))
                .form(&form)
                .send()
                .await
                .unwrap();
            assert!(
                matches!(res.status().as_u16(), 400 | 429),
                "{}",
                res.status()
            );
        }
        // Guessing through the decision form is throttled like code entry.
        let mut form = csrf.clone();
        form.push(("user_code".into(), code.clone()));
        form.push(("entry".into(), "forged".into()));
        form.push(("decision".into(), "approve".into()));
        let res = b
            .post(app.url("/device/decision"))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 429);
        // The request is still pending: nobody approved it.
        let pending = app
            .store()
            .pending_device(&code, concierge::util::now())
            .await
            .unwrap();
        assert!(pending.is_some());
        app
    }
);

// The consent page of the device flow shows the user code (RFC 8628 §5.4).
both!(
    device_consent_shows_the_user_code,
    |app: TestApp| async move {
        seed(&app).await;
        let client = crate::device::device_client(&app).await;
        let d = crate::device::start(&app, &client).await;
        let code = d["user_code"].as_str().unwrap();
        let b = browser();
        let res = b
            .get(format!("{}?user_code={code}", app.url("/device")))
            .send()
            .await
            .unwrap();
        let html = sign_in_and_see(&app, &b, &res).await;
        assert!(
            html.contains(&format!("<strong id=\"user-code\">{code}</strong>")),
            "{html}"
        );
        app
    }
);

// `/metrics` can require a bearer token.
both!(
    metrics_need_their_token,
    |c: &mut concierge::Config| c.metrics.bearer_token = Some("scrape-me-0123456789".into()),
    |app: TestApp| async move {
        let url = format!("{}/metrics", app.origin);
        let res = app.http.get(&url).send().await.unwrap();
        assert_eq!(res.status(), 401);
        let res = app
            .http
            .get(&url)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        let res = app
            .http
            .get(&url)
            .bearer_auth("scrape-me-0123456789")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        app
    }
);

/// `/metrics` (and health) can move to a management address, off the public listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_a_management_listener() {
    // A port found free can be taken by another test before the server binds it (the
    // management listener then never answers): try another.
    let mut found = None;
    for _ in 0..5 {
        let port = crate::process::free_port();
        let app = TestApp::builder(crate::helpers::Backend::Sqlite)
            .configure(move |c| c.metrics.listen = Some(([127, 0, 0, 1], port).into()))
            .start()
            .await
            .unwrap();
        let management = format!("http://127.0.0.1:{port}");
        let mut status = None;
        for _ in 0..50 {
            if let Ok(res) = app.http.get(format!("{management}/metrics")).send().await {
                status = Some(res.status());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        match status {
            Some(s) => {
                assert_eq!(s, 200, "metrics answer on the management address");
                found = Some((app, management));
                break;
            }
            None => app.finish().await,
        }
    }
    let (app, management) = found.expect("a management listener on a free port");
    let public = app
        .http
        .get(format!("{}/metrics", app.origin))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
    let res = app
        .http
        .get(format!("{management}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    app.finish().await;
}

/// Read until the server closes the connection; true when it did within `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

fn addr(app: &TestApp) -> String {
    app.origin.trim_start_matches("http://").to_string()
}

// Slow clients are cut off: trickled headers, a trickled body, an idle kept-alive
// connection, and connections over the cap. (Bounds, not timings: each must happen well
// within a generous limit.)
both!(
    slow_clients_are_cut_off,
    |c: &mut concierge::Config| {
        c.http.header_read_timeout_secs = 1;
        c.http.body_timeout_secs = 1;
        c.http.idle_timeout_secs = 2;
        c.http.max_connections = 3;
    },
    |app: TestApp| async move {
        let limit = Duration::from_secs(15);
        // Headers, a byte at a time.
        let mut s = tokio::net::TcpStream::connect(addr(&app)).await.unwrap();
        s.write_all(b"GET /jwks HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let trickle = async {
            for _ in 0..30 {
                if s.write_all(b"X").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        };
        trickle.await;
        assert!(
            closed_within(&mut s, limit).await,
            "trickled headers are cut off"
        );

        // A body that never arrives: the request is answered 400 (or the connection closed).
        let mut s = tokio::net::TcpStream::connect(addr(&app)).await.unwrap();
        s.write_all(
            b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type=",
        )
        .await
        .unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(limit, async {
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        answer.extend_from_slice(&buf[..n]);
                        if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                }
            }
        })
        .await;
        assert!(read.is_ok(), "a missing body is not waited for forever");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.is_empty() || !text.starts_with("HTTP/1.1 2"), "{text}");

        // An idle kept-alive connection is closed.
        let mut s = tokio::net::TcpStream::connect(addr(&app)).await.unwrap();
        s.write_all(b"GET /jwks HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        assert!(
            closed_within(&mut s, limit).await,
            "idle connections are closed"
        );

        // Over the cap, a new connection is closed at once (three held open here).
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut c = tokio::net::TcpStream::connect(addr(&app)).await.unwrap();
            c.write_all(b"GET /jwks HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let n = c.read(&mut buf).await.unwrap();
            assert!(n > 0);
            held.push(c);
        }
        let mut extra = tokio::net::TcpStream::connect(addr(&app)).await.unwrap();
        let _ = extra
            .write_all(b"GET /jwks HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        assert!(
            closed_within(&mut extra, Duration::from_secs(5)).await,
            "over the cap"
        );
        drop(held);
        app
    }
);

// A kept-alive HTTP/1.1 connection waits for its next request as long as the idle timeout,
// not the header timeout (hyper's header timer alone closed it then, and a client's pool
// racing that close lost a request); a head that starts and stalls is still cut off, and so
// is a connection that never sends one. HTTP/2 frames are not a head.
#[tokio::test]
async fn kept_alive_connections_wait_out_the_idle_timeout() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Backend::Sqlite, |c| {
        c.http.header_read_timeout_secs = 1;
        c.http.idle_timeout_secs = 60;
    })
    .await
    .unwrap();
    let limit = Duration::from_secs(15);
    let mut buf = [0u8; 8192];
    let mut s = tokio::net::TcpStream::connect(addr(&app)).await.unwrap();
    for round in 0..2 {
        s.write_all(b"GET /jwks HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let n = s.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 200"), "round {round}: {head}");
        if round == 0 {
            // Three header timeouts, far below the idle timeout.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }
    // The next head starts, then stalls: cut off although the connection was busy before.
    s.write_all(b"GET /jwks HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut s, limit).await,
        "a stalled head is cut off"
    );

    // A connection that never sends a head.
    let mut silent = tokio::net::TcpStream::connect(addr(&app)).await.unwrap();
    assert!(
        closed_within(&mut silent, limit).await,
        "a connection without a request is closed"
    );

    // HTTP/2 with prior knowledge: the preface and settings, then quiet past the header
    // timeout; the connection is still there to answer a PING (RFC 9113 §6.7).
    let mut h2 = tokio::net::TcpStream::connect(addr(&app)).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    h2.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap(); // empty SETTINGS
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ping = [0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    h2.write_all(&ping).await.unwrap();
    let mut seen = Vec::new();
    let acked = tokio::time::timeout(limit, async {
        loop {
            match h2.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
            // A PING frame with the ACK flag and our payload.
            if seen
                .windows(17)
                .any(|w| w[3] == 6 && w[4] == 1 && w[9..] == ping[9..])
            {
                return true;
            }
        }
    })
    .await;
    assert_eq!(acked, Ok(true), "an idle HTTP/2 connection stays open");
    app.finish().await;
}

// With an https issuer the cookies carry the `__Host-` prefix and `Secure`.
both!(
    cookies_are_host_bound_and_secure_with_https,
    |c: &mut concierge::Config| c.issuer = c.issuer.replace("http://", "https://"),
    |app: TestApp| async move {
        let res = app
            .http
            .get(format!("{}/signin", app.origin))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(cookie.starts_with("__Host-concierge_browser="), "{cookie}");
        assert!(
            cookie.contains("; Secure") && cookie.contains("Path=/;"),
            "{cookie}"
        );
        app
    }
);

// Anti-forgery tokens expire: a form token older than its lifetime is refused even with
// the right browser.
both!(csrf_tokens_expire, |app: TestApp| async move {
    seed(&app).await;
    let b = browser();
    let res = b.get(app.url("/signin")).send().await.unwrap();
    let browser_id = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find_map(|c| c.strip_prefix("concierge_browser="))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string();
    let old = concierge::util::now() - concierge::ui::CSRF_TTL_SECS - 10;
    let tag = app
        .state
        .oauth
        .keys
        .kek()
        .csrf_token(&format!("{browser_id}\n{old}"));
    let stale = format!("{old}.{tag}");
    let res = b
        .post(app.url("/signin"))
        .form(&[
            ("csrf", stale.as_str()),
            ("username", "alice"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("expired"));
    // A fresh one from the page works.
    let page = b
        .get(app.url("/signin"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut form = hidden_inputs(&page);
    form.push(("username".into(), "alice".into()));
    form.push(("password".into(), PASSWORD.into()));
    let res = b.post(app.url("/signin")).form(&form).send().await.unwrap();
    assert_eq!(res.status(), 303);
    app
});

// The token endpoint's rate limits answer 429 with `Retry-After`.
both!(
    token_endpoint_rate_limits,
    |c: &mut concierge::Config| c.rate_limits.token_per_client = 3,
    |app: TestApp| async move {
        seed(&app).await;
        let (id, secret) = machine_client(&app).await;
        for _ in 0..3 {
            let (s, _, t) = machine_token(&app, &id, &secret).await;
            assert_eq!(s, 200, "{t}");
        }
        let (s, h, body): (reqwest::StatusCode, _, Value) = machine_token(&app, &id, &secret).await;
        assert_eq!(s, 429, "{body}");
        assert_eq!(body["error"], "temporarily_unavailable");
        assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() <= 60);
        // Another client is not affected.
        let (other, other_secret) = machine_client(&app).await;
        assert_eq!(machine_token(&app, &other, &other_secret).await.0, 200);
        app
    }
);

// `error_description` keeps to the characters RFC 6749 §5.2 allows, even when it quotes
// the client's input.
both!(
    error_descriptions_keep_to_the_rfc_characters,
    |app: TestApp| async move {
        let res = app
            .http
            .post(app.url("/token"))
            .form(&[("grant_type", "caf\u{e9} \"quoted\" back\\slash")])
            .send()
            .await
            .unwrap();
        let (s, _, body) = split(res).await;
        assert_eq!(s, 400, "{body}");
        let d = body["error_description"].as_str().unwrap();
        assert!(
            d.chars()
                .all(|c| matches!(c, '\x20'..='\x21' | '\x23'..='\x5B' | '\x5D'..='\x7E')),
            "{d}"
        );
        let _ = json!(null);
        app
    }
);

/// `request`, sent as raw bytes on a new connection, and everything the server answers
/// before it closes it (the request asks it to).
async fn raw_exchange(app: &TestApp, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr(app)).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

// RFC 9112 §3.2: an HTTP/1.1 request without Host, with two, or with an invalid one is
// answered 400; HTTP/1.0 may leave it out.
both!(a_request_needs_one_valid_host, |app: TestApp| async move {
    for (request, why) in [
        (&b"GET /jwks HTTP/1.1\r\nConnection: close\r\n\r\n"[..], "needs a Host"),
        (
            &b"GET /jwks HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n"[..],
            "one Host",
        ),
        (
            &b"GET /jwks HTTP/1.1\r\nHost: user@a.example\r\nConnection: close\r\n\r\n"[..],
            "not a valid host",
        ),
    ] {
        let answer = raw_exchange(&app, request).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("\"invalid_request\""), "{answer}");
        assert!(answer.contains(why), "{answer}");
        let headers = answer.to_ascii_lowercase();
        assert!(headers.contains("x-request-id:"), "{answer}");
        assert!(headers.contains("x-content-type-options: nosniff"), "{answer}");
    }
    let answer = raw_exchange(&app, b"GET /jwks HTTP/1.0\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
    let answer = raw_exchange(
        &app,
        b"GET /jwks HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    app
});

// RFC 9113 §8.3.1: an HTTP/2 request whose Host names another host than its `:authority` is
// malformed; one naming the same host, or with no Host, is served.
both!(an_http2_request_names_one_host, |app: TestApp| async move {
    let addr = addr(&app);
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    for (host, status) in [
        (None, 200),
        (Some(addr.as_str()), 200),
        (Some("other.example"), 400),
        (Some("127.0.0.1:1"), 400),
    ] {
        let mut request = axum::http::Request::get(format!("http://{addr}/jwks"));
        if let Some(host) = host {
            request = request.header("host", host);
        }
        let (response, _) = client
            .send_request(request.body(()).unwrap(), true)
            .unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status().as_u16(), status, "Host {host:?}");
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&bytes);
        if status == 400 {
            assert!(text.contains("\"invalid_request\""), "{text}");
            assert!(text.contains(":authority"), "{text}");
        } else {
            assert!(text.contains("\"keys\""), "{text}");
        }
        client = client.ready().await.unwrap();
    }
    app
});
