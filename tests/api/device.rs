//! The device authorization grant (RFC 8628).

use serde_json::{Value, json};

use crate::both;
use crate::flow::*;
use crate::helpers::{Server, TestApp, assert_error, split};

const DEVICE: &str = "urn:ietf:params:oauth:grant-type:device_code";

pub(crate) async fn device_client(app: &impl Server) -> String {
    let (s, _, b) = app
        .register(
            &json!({"client_name": "Smart TV", "grant_types": [DEVICE, "refresh_token"],
                          "token_endpoint_auth_method": "none"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    b["client_id"].as_str().unwrap().to_string()
}

pub(crate) async fn start(app: &impl Server, client: &str) -> Value {
    let (s, h, b) = split(
        app.http()
            .post(app.url("/device_authorization"))
            .form(&[
                ("client_id", client),
                ("scope", "notes:read"),
                ("resource", NOTES),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h["cache-control"], "no-store");
    b
}

pub(crate) async fn poll(
    app: &impl Server,
    client: &str,
    device_code: &str,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    split(
        app.http()
            .post(app.url("/token"))
            .form(&[
                ("grant_type", DEVICE),
                ("client_id", client),
                ("device_code", device_code),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// The user's part: sign in, enter the code (typed sloppily), decide.
pub(crate) async fn user_decides(app: &impl Server, user_code: &str, decision: &str) -> String {
    let b = browser();
    let res = b.get(app.url("/device")).send().await.unwrap();
    let entry = sign_in_and_see(app, &b, &res).await;
    let mut form = hidden_inputs(&entry);
    form.push((
        "user_code".into(),
        user_code.to_lowercase().replace('-', " "),
    ));
    let res = b.post(app.url("/device")).form(&form).send().await.unwrap();
    let consent = b
        .get(format!("{}{}", app.origin(), location(&res)))
        .send()
        .await
        .unwrap();
    assert_eq!(consent.status(), 200);
    let html = unescape(&consent.text().await.unwrap());
    assert!(
        html.contains("Smart TV")
            && html.contains("Read your notes")
            && html.contains("return to your device"),
        "{html}"
    );
    let mut form = hidden_inputs(&html);
    form.push(("decision".into(), decision.into()));
    let res = b
        .post(app.url("/device/decision"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

// A device its user approved, then an operator disabled the user before the device polled:
// nothing more is issued for a disabled user.
both!(
    a_device_approved_before_its_user_was_disabled_gets_nothing,
    |app: TestApp| async move {
        let alice = seed(&app).await;
        let client = device_client(&app).await;
        let d = start(&app, &client).await;
        let done = user_decides(&app, d["user_code"].as_str().unwrap(), "approve").await;
        assert!(done.contains("Your device is connected"), "{done}");
        disable_now(&app, &alice).await;
        assert_error(
            &poll(&app, &client, d["device_code"].as_str().unwrap()).await,
            400,
            "invalid_grant",
            "disabled",
        );
        // The refresh token stored by the write that spent the request is revoked with its
        // family: nothing of the refused grant lives on for when the user is enabled again.
        let rows = app.store().export_rows(false).await.unwrap();
        let tokens = &rows["refresh_tokens"];
        assert_eq!(tokens.len(), 1, "{tokens:?}");
        assert!(tokens[0]["revoked_at"].is_i64(), "{tokens:?}");
        app
    }
);

both!(
    device_flow_end_to_end,
    |c: &mut concierge::Config| {
        c.tokens.device_poll_interval_secs = 1;
    },
    |app: TestApp| async move {
        let alice = seed(&app).await;
        let client = device_client(&app).await;
        let d = start(&app, &client).await;
        let user_code = d["user_code"].as_str().unwrap().to_string();
        assert_eq!(user_code.len(), 9);
        assert_eq!(d["verification_uri"], app.url("/device"));
        assert!(
            d["verification_uri_complete"]
                .as_str()
                .unwrap()
                .contains(&user_code)
        );
        assert_eq!(d["interval"], 1);
        let dc = d["device_code"].as_str().unwrap().to_string();

        assert_error(
            &poll(&app, &client, &dc).await,
            400,
            "authorization_pending",
            "not decided",
        );
        // Polling again at once: slow down, and the interval grows.
        assert_error(
            &poll(&app, &client, &dc).await,
            400,
            "slow_down",
            "too fast",
        );
        let done = user_decides(&app, &user_code, "approve").await;
        assert!(done.contains("Your device is connected"), "{done}");
        tokio::time::sleep(std::time::Duration::from_millis(6200)).await;
        let (s, _, tokens) = poll(&app, &client, &dc).await;
        assert_eq!(s, 200, "{tokens}");
        let at = claims(tokens["access_token"].as_str().unwrap());
        assert_eq!(at["sub"], alice.as_str());
        assert_eq!(at["aud"], NOTES);
        assert!(tokens["refresh_token"].is_string());
        // Once only.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        assert_error(
            &poll(&app, &client, &dc).await,
            400,
            "invalid_grant",
            "already used",
        );
        // Metadata lists the endpoint and the grant.
        let (_, _, m) = app
            .get_json("/.well-known/oauth-authorization-server")
            .await;
        assert_eq!(
            m["device_authorization_endpoint"],
            app.url("/device_authorization")
        );
        assert!(
            m["grant_types_supported"]
                .as_array()
                .unwrap()
                .contains(&json!(DEVICE))
        );
        app
    }
);

// An approved request polled again within its interval is not spent: the device is told to
// slow down (RFC 8628 §3.5) and the code stays for its next poll.
both!(
    an_approved_device_polled_too_soon_slows_down_and_keeps_its_code,
    |c: &mut concierge::Config| {
        c.tokens.device_poll_interval_secs = 30;
    },
    |app: TestApp| async move {
        seed(&app).await;
        let client = device_client(&app).await;
        let d = start(&app, &client).await;
        let dc = d["device_code"].as_str().unwrap();
        assert_error(
            &poll(&app, &client, dc).await,
            400,
            "authorization_pending",
            "not decided",
        );
        let done = user_decides(&app, d["user_code"].as_str().unwrap(), "approve").await;
        assert!(done.contains("Your device is connected"), "{done}");
        let (s, h, b) = poll(&app, &client, dc).await;
        assert_error(&(s, h.clone(), b), 400, "slow_down", "wait at least 35 s");
        assert_eq!(h["retry-after"], "35");
        let kept = app
            .store()
            .device_by_code(&concierge::util::secret_key(dc))
            .await
            .unwrap()
            .expect("the approved code is not spent");
        assert_eq!((kept.status.as_str(), kept.interval_secs), ("approved", 35));
        app
    }
);

both!(
    device_denied_and_expired,
    |c: &mut concierge::Config| {
        c.tokens.device_poll_interval_secs = 0;
        c.tokens.device_code_ttl_secs = 2;
    },
    |app: TestApp| async move {
        seed(&app).await;
        let client = device_client(&app).await;
        let d = start(&app, &client).await;
        let done = user_decides(&app, d["user_code"].as_str().unwrap(), "deny").await;
        assert!(done.contains("Access denied"));
        assert_error(
            &poll(&app, &client, d["device_code"].as_str().unwrap()).await,
            400,
            "access_denied",
            "denied",
        );
        let late = start(&app, &client).await;
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        assert_error(
            &poll(&app, &client, late["device_code"].as_str().unwrap()).await,
            400,
            "expired_token",
            "expired",
        );
        // Another client cannot poll someone else's code.
        let other = device_client(&app).await;
        let fresh = start(&app, &client).await;
        assert_error(
            &poll(&app, &other, fresh["device_code"].as_str().unwrap()).await,
            400,
            "invalid_grant",
            "unknown",
        );
        app
    }
);

both!(
    device_refusals_and_code_guessing,
    |app: TestApp| async move {
        seed(&app).await;
        // A client without the grant.
        let code_client = public_client(&app).await;
        let got = split(
            app.http()
                .post(app.url("/device_authorization"))
                .form(&[("client_id", code_client.as_str()), ("resource", NOTES)])
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_error(&got, 400, "unauthorized_client", "device_code");
        let client = device_client(&app).await;
        let got = split(
            app.http()
                .post(app.url("/device_authorization"))
                .form(&[
                    ("client_id", client.as_str()),
                    ("resource", NOTES),
                    ("scope", "admin"),
                ])
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_error(&got, 400, "invalid_scope", "admin");
        // Wrong codes: an error, then a pause after too many.
        let b = browser();
        let res = b.get(app.url("/device")).send().await.unwrap();
        sign_in(
            &app,
            &b,
            &format!("{}{}", app.origin(), location(&res)),
            "alice",
            PASSWORD,
        )
        .await;
        for _ in 0..10 {
            let res = b
                .get(format!("{}?user_code=BCDF-GHJK", app.url("/device")))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 400);
        }
        let res = b
            .get(format!("{}?user_code=BCDF-GHJK", app.url("/device")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 429);
        app
    }
);
