//! Asynchronous approval: OpenID Connect CIBA in poll mode, with RFC 9396 authorization
//! details, the approvals page, and the notification webhook.

use std::time::Duration;

use concierge::oauth::client_metadata::RawClientMetadata;
use serde_json::{Value, json};

use crate::both;
use crate::flow::*;
use crate::helpers::{Backend, Server, TestApp, assert_error, split};
use crate::interop::{node, ready};
use crate::mfa::audit;
use crate::operations::{expected_signature, receiver};

const CIBA: &str = "urn:openid:params:grant-type:ciba";
const MFA: &str = "urn:concierge:acr:mfa";

type Answer = (reqwest::StatusCode, reqwest::header::HeaderMap, Value);

/// A confidential client registered for CIBA (poll mode): its id and secret.
async fn ciba_client(app: &impl Server, name: &str) -> (String, String) {
    ciba_client_with(app, name, &[CIBA]).await
}

/// A confidential client registered for CIBA (poll mode) and the `grants` (CIBA among them):
/// its id and secret.
async fn ciba_client_with(app: &impl Server, name: &str, grants: &[&str]) -> (String, String) {
    let (s, _, b) = app
        .register(&json!({"client_name": name, "grant_types": grants,
            "token_endpoint_auth_method": "client_secret_basic",
            "backchannel_token_delivery_mode": "poll"}))
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["backchannel_token_delivery_mode"], "poll");
    (
        b["client_id"].as_str().unwrap().to_string(),
        b["client_secret"].as_str().unwrap().to_string(),
    )
}

async fn bc_authorize(
    app: &impl Server,
    client: &(String, String),
    params: &[(&str, &str)],
) -> Answer {
    split(
        app.http()
            .post(app.url("/bc-authorize"))
            .basic_auth(&client.0, Some(&client.1))
            .form(params)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// Start a request for alice's approval; the answer must be 200.
async fn ask_alice(app: &impl Server, client: &(String, String), extra: &[(&str, &str)]) -> Value {
    let mut params = vec![
        ("scope", "openid notes:read"),
        ("login_hint", "alice"),
        ("resource", NOTES),
    ];
    // An extra scope or resource replaces the default one.
    params.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    params.extend_from_slice(extra);
    let (s, h, b) = bc_authorize(app, client, &params).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h["cache-control"], "no-store");
    b
}

async fn poll(app: &impl Server, client: &(String, String), auth_req_id: &str) -> Answer {
    token(
        app,
        client,
        &[("grant_type", CIBA), ("auth_req_id", auth_req_id)],
    )
    .await
}

/// A token request of `client` (client_secret_basic).
async fn token(app: &impl Server, client: &(String, String), form: &[(&str, &str)]) -> Answer {
    split(
        app.http()
            .post(app.url("/token"))
            .basic_auth(&client.0, Some(&client.1))
            .form(form)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// Alice, signed in as `b`, on her approvals page.
async fn approvals(app: &impl Server, b: &reqwest::Client) -> String {
    let res = b.get(app.url("/account/approvals")).send().await.unwrap();
    if res.status() == 303 {
        let html = sign_in_and_see(app, b, &res).await;
        return unescape(&html);
    }
    assert_eq!(res.status(), 200);
    unescape(&res.text().await.unwrap())
}

/// Post a decision on the request with page id `id`.
async fn decide_on(
    app: &impl Server,
    b: &reqwest::Client,
    html: &str,
    id: &str,
    decision: &str,
) -> reqwest::Response {
    let csrf = csrf_of(html);
    b.post(app.url("/account/approvals/decide"))
        .form(&[("csrf", csrf.as_str()), ("id", id), ("decision", decision)])
        .send()
        .await
        .unwrap()
}

/// The page id of the request whose binding message is `marker`.
fn id_of(html: &str, marker: &str) -> String {
    let at = html
        .find(&format!("class=\"binding-message\">{marker}<"))
        .unwrap_or_else(|| panic!("{marker} not on the page: {html}"));
    let before = &html[..at];
    let tag = before
        .rfind("data-id=\"")
        .unwrap_or_else(|| panic!("no request before {marker}: {html}"));
    before[tag + 9..].split('"').next().unwrap().to_string()
}

fn secs(v: &Value) -> u64 {
    v.as_u64().unwrap()
}

both!(
    ciba_approval_end_to_end,
    |c: &mut concierge::Config| {
        c.ciba.poll_interval_secs = 1;
    },
    |app: TestApp| async move {
        let alice = seed(&app).await;
        let client = ciba_client(&app, "Assistant").await;
        let started = ask_alice(&app, &client, &[("binding_message", "Code 7H2K")]).await;
        assert_eq!(started["interval"], 1);
        assert_eq!(started["expires_in"], 300);
        let id = started["auth_req_id"].as_str().unwrap().to_string();
        assert_error(
            &poll(&app, &client, &id).await,
            400,
            "authorization_pending",
            "not decided",
        );
        assert_error(
            &poll(&app, &client, &id).await,
            400,
            "slow_down",
            "too fast",
        );

        let b = browser();
        let page = approvals(&app, &b).await;
        assert!(page.contains("Assistant asks for your approval"), "{page}");
        assert!(page.contains("Code 7H2K"));
        assert!(page.contains("Notes") && page.contains("notes:read"));
        assert!(page.contains("http-equiv=\"refresh\""));
        let res = decide_on(&app, &b, &page, &id_of(&page, "Code 7H2K"), "approve").await;
        assert_eq!(res.status(), 303);
        assert!(location(&res).ends_with("/account/approvals?done=approved"));
        let after = unescape(&page_text(&b, &format!("{}{}", app.origin(), location(&res))).await);
        assert!(after.contains("Approved."), "{after}");
        assert!(after.contains("Nothing is waiting"), "{after}");

        // The slowed interval (1 + 5 s) must pass.
        tokio::time::sleep(Duration::from_millis(6100)).await;
        let (s, h, tokens) = poll(&app, &client, &id).await;
        assert_eq!(s, 200, "{tokens}");
        assert_eq!(h["cache-control"], "no-store");
        let at = claims(tokens["access_token"].as_str().unwrap());
        assert_eq!(at["sub"], alice.as_str());
        assert_eq!(at["aud"], json!([NOTES, app.url("/userinfo")]));
        assert_eq!(at["client_id"], client.0.as_str());
        assert_eq!(at["amr"], json!(["pwd"]));
        let id_token = tokens["id_token"].as_str().unwrap().to_string();
        assert_eq!(claims(&id_token)["sub"], alice.as_str());
        assert_eq!(claims(&id_token)["aud"], client.0.as_str());
        // Once only.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_error(
            &poll(&app, &client, &id).await,
            400,
            "invalid_grant",
            "already used",
        );

        // The other hints name alice too: her ID token, and an access token of hers.
        for (hint, value) in [
            ("id_token_hint", id_token.as_str()),
            ("login_hint_token", tokens["access_token"].as_str().unwrap()),
            ("login_hint", "alice@example.com"),
        ] {
            let (s, _, b) = bc_authorize(
                &app,
                &client,
                &[
                    ("scope", "openid"),
                    (hint, value),
                    ("binding_message", hint),
                ],
            )
            .await;
            assert_eq!(s, 200, "{hint}: {b}");
        }
        let page = approvals(&app, &b).await;
        // alice@example.com is not verified: it names nobody.
        assert!(
            page.contains("id_token_hint") && page.contains("login_hint_token"),
            "{page}"
        );
        assert!(!page.contains(">login_hint<"), "{page}");

        // Discovery says how.
        for doc in [
            "/.well-known/oauth-authorization-server",
            "/.well-known/openid-configuration",
        ] {
            let (_, _, m) = app.get_json(doc).await;
            assert_eq!(
                m["backchannel_authentication_endpoint"],
                app.url("/bc-authorize"),
                "{doc}"
            );
            assert_eq!(
                m["backchannel_token_delivery_modes_supported"],
                json!(["poll"])
            );
            assert_eq!(m["backchannel_user_code_parameter_supported"], false);
            assert_eq!(
                m["authorization_details_types_supported"],
                json!(["mcp_tool_call"])
            );
            assert!(
                m["grant_types_supported"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(CIBA))
            );
        }
        let requested = audit(&app, "approval.requested").await;
        assert_eq!(requested.len(), 4);
        assert_eq!(audit(&app, "approval.approved").await.len(), 1);
        app
    }
);

both!(
    ciba_denial_expiry_and_unknown_users,
    |c: &mut concierge::Config| {
        c.ciba.poll_interval_secs = 0;
        c.ciba.max_expiry_secs = 600;
    },
    |app: TestApp| async move {
        seed(&app).await;
        let client = ciba_client(&app, "Assistant").await;
        let b = browser();

        let denied = ask_alice(&app, &client, &[("binding_message", "deny me")]).await;
        let page = approvals(&app, &b).await;
        let res = decide_on(&app, &b, &page, &id_of(&page, "deny me"), "deny").await;
        assert!(location(&res).ends_with("done=denied"));
        assert_error(
            &poll(&app, &client, denied["auth_req_id"].as_str().unwrap()).await,
            400,
            "access_denied",
            "denied",
        );
        // A decision is taken once.
        let again = decide_on(&app, &b, &page, &id_of(&page, "deny me"), "approve").await;
        assert_eq!(again.status(), 400);
        assert_eq!(audit(&app, "approval.denied").await.len(), 1);

        // requested_expiry: honoured, and capped.
        let short = ask_alice(&app, &client, &[("requested_expiry", "1")]).await;
        assert_eq!(short["expires_in"], 1);
        let long = ask_alice(&app, &client, &[("requested_expiry", "86400")]).await;
        assert_eq!(long["expires_in"], 600);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_error(
            &poll(&app, &client, short["auth_req_id"].as_str().unwrap()).await,
            400,
            "expired_token",
            "expired",
        );

        // A hint naming nobody is answered like one naming alice, and polls the same way.
        let known = ask_alice(&app, &client, &[]).await;
        let (s, _, unknown) = bc_authorize(
            &app,
            &client,
            &[
                ("scope", "openid notes:read"),
                ("login_hint", "nobody"),
                ("resource", NOTES),
            ],
        )
        .await;
        assert_eq!(s, 200, "{unknown}");
        let keys = |v: &Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&known), keys(&unknown));
        assert_eq!(secs(&known["expires_in"]), secs(&unknown["expires_in"]));
        assert_eq!(known["interval"], unknown["interval"]);
        let (sk, _, pk) = poll(&app, &client, known["auth_req_id"].as_str().unwrap()).await;
        let (su, _, pu) = poll(&app, &client, unknown["auth_req_id"].as_str().unwrap()).await;
        assert_eq!((sk, pk["error"].clone()), (su, pu["error"].clone()));
        assert_eq!(pu["error"], "authorization_pending");

        // Someone else's auth_req_id, an unknown one, none.
        let other = ciba_client(&app, "Other").await;
        assert_error(
            &poll(&app, &other, known["auth_req_id"].as_str().unwrap()).await,
            400,
            "invalid_grant",
            "unknown",
        );
        assert_error(
            &poll(&app, &client, "nope").await,
            400,
            "invalid_grant",
            "unknown",
        );
        let (s, _, b2) = split(
            app.http()
                .post(app.url("/token"))
                .basic_auth(&client.0, Some(&client.1))
                .form(&[("grant_type", CIBA)])
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_error(
            &(s, Default::default(), b2),
            400,
            "invalid_request",
            "auth_req_id",
        );
        app
    }
);

both!(
    ciba_refuses_what_is_not_allowed,
    |app: TestApp| async move {
        seed(&app).await;
        let client = ciba_client(&app, "Assistant").await;
        let ask = |params: Vec<(&'static str, String)>| {
            let app = &app;
            let client = &client;
            async move {
                let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
                bc_authorize(app, client, &p).await
            }
        };
        let base = |extra: &[(&'static str, &str)]| {
            let mut p = vec![
                ("scope", "openid notes:read".to_string()),
                ("resource", NOTES.to_string()),
            ];
            p.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
            p
        };
        for (params, error, words) in [
            (base(&[]), "invalid_request", "exactly one"),
            (
                base(&[("login_hint", "alice"), ("id_token_hint", "x")]),
                "invalid_request",
                "exactly one",
            ),
            (
                vec![
                    ("scope", "notes:read".into()),
                    ("login_hint", "alice".into()),
                    ("resource", NOTES.into()),
                ],
                "invalid_request",
                "openid",
            ),
            (
                base(&[
                    ("login_hint", "alice"),
                    ("binding_message", &"x".repeat(101)),
                ]),
                "invalid_binding_message",
                "binding_message",
            ),
            (
                base(&[("login_hint", "alice"), ("binding_message", "two\nlines")]),
                "invalid_binding_message",
                "plain text",
            ),
            (
                base(&[("login_hint", "alice"), ("requested_expiry", "soon")]),
                "invalid_request",
                "requested_expiry",
            ),
            (
                base(&[("login_hint", "alice"), ("requested_expiry", "0")]),
                "invalid_request",
                "requested_expiry",
            ),
            (
                base(&[("login_hint", "alice"), ("user_code", "1234")]),
                "invalid_request",
                "user_code",
            ),
            (
                base(&[("login_hint", "alice"), ("request", "eyJ.e30.x")]),
                "invalid_request",
                "signed",
            ),
            (
                base(&[("id_token_hint", "not-a-jwt")]),
                "invalid_request",
                "id_token_hint",
            ),
            (
                base(&[("login_hint_token", "not-a-jwt")]),
                "expired_login_hint_token",
                "login_hint_token",
            ),
            (
                base(&[("login_hint", "alice"), ("authorization_details", "{")]),
                "invalid_authorization_details",
                "JSON",
            ),
            (
                base(&[
                    ("login_hint", "alice"),
                    (
                        "authorization_details",
                        r#"[{"type":"payment_initiation"}]"#,
                    ),
                ]),
                "invalid_authorization_details",
                "not a type",
            ),
            (
                base(&[
                    ("login_hint", "alice"),
                    (
                        "authorization_details",
                        r#"[{"type":"mcp_tool_call","tool":"x","locations":["http://127.0.0.1:9999/calendar"]}]"#,
                    ),
                ]),
                "invalid_authorization_details",
                "locations",
            ),
            (
                vec![
                    ("scope", "openid admin".into()),
                    ("login_hint", "alice".into()),
                    ("resource", NOTES.into()),
                ],
                "invalid_scope",
                "",
            ),
            (
                vec![
                    ("scope", "openid".into()),
                    ("login_hint", "alice".into()),
                    ("resource", "https://unknown.example/mcp".into()),
                ],
                "invalid_target",
                "",
            ),
        ] {
            let got = ask(params.clone()).await;
            assert_error(&got, 400, error, words);
        }
        // Nothing was stored for alice by any of those.
        let page = approvals(&app, &browser()).await;
        assert!(page.contains("Nothing is waiting"), "{page}");

        // A client that did not register the grant; a client that cannot authenticate.
        let (m, m_secret) = machine_client(&app).await;
        let got = bc_authorize(
            &app,
            &(m, m_secret),
            &base(&[("login_hint", "alice")])
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
        )
        .await;
        assert_error(&got, 400, "unauthorized_client", "CIBA");
        let got = bc_authorize(
            &app,
            &(client.0.clone(), "wrong".into()),
            &[("scope", "openid"), ("login_hint", "alice")],
        )
        .await;
        assert_eq!(got.0, 401, "{}", got.2);
        // Registration: CIBA needs an authenticated client, and poll mode only.
        for (body, field) in [
            (
                json!({"grant_types": [CIBA], "token_endpoint_auth_method": "none"}),
                "grant_types",
            ),
            (
                json!({"grant_types": [CIBA], "backchannel_token_delivery_mode": "push"}),
                "backchannel_token_delivery_mode",
            ),
            (
                json!({"grant_types": [CIBA], "backchannel_token_delivery_mode": "ping",
                    "backchannel_client_notification_endpoint": "https://a.example/cb"}),
                "backchannel_token_delivery_mode",
            ),
            (
                json!({"grant_types": [CIBA], "backchannel_authentication_request_signing_alg": "ES256"}),
                "backchannel_authentication_request_signing_alg",
            ),
            (
                json!({"grant_types": [CIBA], "backchannel_user_code_parameter": true}),
                "backchannel_user_code_parameter",
            ),
        ] {
            let (s, _, b) = app.register(&body).await;
            assert_eq!(s, 400, "{body}: {b}");
            assert_eq!(b["error"], "invalid_client_metadata");
            assert!(
                b["error_description"].as_str().unwrap().contains(field),
                "{b}"
            );
        }
        // Without a mode named, poll is assumed.
        let (s, _, b) = app.register(&json!({"grant_types": [CIBA]})).await;
        assert_eq!(s, 201, "{b}");
        assert_eq!(b["backchannel_token_delivery_mode"], "poll");
        app
    }
);

both!(
    ciba_details_reach_the_page_and_the_token_and_strong_requests_need_strong_sign_in,
    |c: &mut concierge::Config| {
        c.ciba.poll_interval_secs = 0;
    },
    |app: TestApp| async move {
        let (introspector, introspector_secret) = {
            let mut rs = TestApp::operator_metadata(RawClientMetadata {
                grant_types: Some(vec!["client_credentials".into()]),
                token_endpoint_auth_method: Some("client_secret_basic".into()),
                ..Default::default()
            });
            rs.may_introspect = true;
            let (id, secret) = app.add_client_metadata(None, rs).await;
            (id, secret.unwrap())
        };
        seed(&app).await;
        let client = ciba_client(&app, "Notes agent").await;
        let details = json!([{"type": "mcp_tool_call", "tool": "delete_note",
            "summary": "Delete the note “groceries”", "arguments": {"id": "n-42"}}]);
        let started = ask_alice(
            &app,
            &client,
            &[
                ("binding_message", "delete?"),
                ("authorization_details", &details.to_string()),
            ],
        )
        .await;
        let b = browser();
        let page = approvals(&app, &b).await;
        assert!(
            page.contains("Use the tool “delete_note” on Notes: Delete the note “groceries”"),
            "{page}"
        );
        assert!(page.contains("id = n-42"), "{page}");
        decide_on(&app, &b, &page, &id_of(&page, "delete?"), "approve").await;
        let (s, _, tokens) = poll(&app, &client, started["auth_req_id"].as_str().unwrap()).await;
        assert_eq!(s, 200, "{tokens}");
        let at = tokens["access_token"].as_str().unwrap();
        let carried = &claims(at)["authorization_details"];
        assert_eq!(carried[0]["tool"], "delete_note");
        assert_eq!(carried[0]["locations"], json!([NOTES]));
        assert!(
            tokens.get("refresh_token").is_none(),
            "one action approved: no refresh token"
        );
        let (s, _, seen) = split(
            app.http()
                .post(app.url("/introspect"))
                .basic_auth(&introspector, Some(&introspector_secret))
                .form(&[("token", at)])
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 200, "{seen}");
        assert_eq!(seen["authorization_details"], *carried);

        // A request asking for a second factor: a password session is sent to sign in again,
        // and the request stays pending.
        let strong = ask_alice(
            &app,
            &client,
            &[("binding_message", "strong"), ("acr_values", MFA)],
        )
        .await;
        let page = approvals(&app, &b).await;
        assert!(page.contains("Approving needs a second factor"), "{page}");
        let res = decide_on(&app, &b, &page, &id_of(&page, "strong"), "approve").await;
        assert_eq!(res.status(), 303);
        assert!(location(&res).contains("/signin"), "{}", location(&res));
        assert_error(
            &poll(&app, &client, strong["auth_req_id"].as_str().unwrap()).await,
            400,
            "authorization_pending",
            "not decided",
        );
        app
    }
);

both!(
    ciba_tokens_carry_a_refresh_token_stored_with_the_spend,
    |app: TestApp| async move {
        let alice = seed(&app).await;
        let client = ciba_client_with(&app, "Refreshing agent", &[CIBA, "refresh_token"]).await;
        let b = browser();
        // Alice approves a request; its tokens carry a refresh token of her grant.
        let approved = async |marker: &str, extra: &[(&str, &str)]| {
            let mut params = vec![("binding_message", marker)];
            params.extend_from_slice(extra);
            let started = ask_alice(&app, &client, &params).await;
            let page = approvals(&app, &b).await;
            let res = decide_on(&app, &b, &page, &id_of(&page, marker), "approve").await;
            assert_eq!(res.status(), 303);
            started["auth_req_id"].as_str().unwrap().to_string()
        };
        let id = approved("first", &[]).await;
        let (s, _, tokens) = poll(&app, &client, &id).await;
        assert_eq!(s, 200, "{tokens}");
        let refresh_token = tokens["refresh_token"].as_str().expect("a refresh token");
        let (s, _, renewed) = token(
            &app,
            &client,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await;
        assert_eq!(s, 200, "{renewed}");
        let at = claims(renewed["access_token"].as_str().unwrap());
        assert_eq!(at["sub"], alice.as_str());
        assert_eq!(at["client_id"], client.0.as_str());
        assert_eq!(at["aud"], json!([NOTES, app.url("/userinfo")]));
        assert_eq!(at["scope"], "openid notes:read");
        assert_eq!(at["amr"], json!(["pwd"]));
        let stored =
            async || app.store().export_rows(false).await.unwrap()["refresh_tokens"].clone();
        assert_eq!(stored().await.len(), 1);

        // One action approved (RFC 9396): no refresh token, none stored.
        let details = json!([{"type": "mcp_tool_call", "tool": "delete_note",
            "arguments": {"id": "n-7"}}]);
        let id = approved(
            "one action",
            &[("authorization_details", &details.to_string())],
        )
        .await;
        let (s, _, tokens) = poll(&app, &client, &id).await;
        assert_eq!(s, 200, "{tokens}");
        assert!(tokens.get("refresh_token").is_none(), "{tokens}");
        assert_eq!(stored().await.len(), 1);

        // Approved, then alice is disabled (which revokes the grants she had): the poll is
        // refused, and the refresh token its spend stored after that is revoked with its
        // family.
        let id = approved("then disabled", &[]).await;
        disable_now(&app, &alice).await;
        assert_error(
            &poll(&app, &client, &id).await,
            400,
            "invalid_grant",
            "disabled",
        );
        let tokens = stored().await;
        assert_eq!(tokens.len(), 2, "{tokens:?}");
        assert!(
            tokens.iter().all(|t| t["revoked_at"].is_i64()),
            "{tokens:?}"
        );
        app
    }
);

/// New requests are announced, signed, to the operator's receiver (which refuses the first
/// attempt: it is retried); the delivery is in the audit log. Requests for nobody are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ciba_requests_are_announced_to_the_notify_webhook() {
    const SECRET: &str = "a-shared-secret-of-at-least-32-characters";
    let (url, seen) = receiver().await;
    let app = TestApp::builder(Backend::Sqlite)
        .configure(move |c| {
            c.ciba.notify = Some(concierge::config::NotifyWebhook {
                url,
                secret: SECRET.into(),
                timeout_secs: 5,
            });
        })
        .start()
        .await
        .unwrap();
    let alice = seed(&app).await;
    let client = ciba_client(&app, "Assistant").await;
    let (s, _, _) = bc_authorize(
        &app,
        &client,
        &[("scope", "openid"), ("login_hint", "nobody")],
    )
    .await;
    assert_eq!(s, 200);
    let details =
        json!([{"type": "mcp_tool_call", "tool": "delete_note", "summary": "Delete “groceries”"}]);
    ask_alice(
        &app,
        &client,
        &[
            ("binding_message", "Code 7H2K"),
            ("authorization_details", &details.to_string()),
        ],
    )
    .await;
    for _ in 0..100 {
        if seen.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one request announced, retried once");
    let (headers, body) = &seen[1];
    let sig = headers["concierge-signature"].to_str().unwrap();
    let (t, v1) = sig
        .strip_prefix("t=")
        .and_then(|s| s.split_once(",v1="))
        .unwrap();
    assert_eq!(v1, expected_signature(SECRET, t, body));
    let doc: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(doc["type"], "approval_request");
    assert_eq!(doc["user"]["id"], alice.as_str());
    assert_eq!(doc["user"]["username"], "alice");
    assert_eq!(doc["client"]["client_id"], client.0.as_str());
    assert_eq!(doc["client"]["name"], "Assistant");
    assert_eq!(doc["binding_message"], "Code 7H2K");
    assert_eq!(
        doc["summary"],
        json!(["Use the tool “delete_note” on Notes: Delete “groceries”"])
    );
    assert_eq!(doc["approve_url"], app.url("/account/approvals"));
    assert!(
        !String::from_utf8_lossy(body).contains("auth_req_id"),
        "the secret id is not sent"
    );
    let mut delivered = Vec::new();
    for _ in 0..50 {
        delivered = audit(&app, "approval.notified").await;
        if !delivered.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].detail["delivered"], true);
    assert_eq!(delivered[0].detail["attempts"], 2);
    app.finish().await;
}

/// openid-client's CIBA functions against Concierge, Chromium approving and denying on the
/// approvals page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openid_client_ciba_with_a_browser_on_the_approvals_page() {
    if !ready() {
        return;
    }
    let app = TestApp::builder(Backend::Sqlite)
        .configure(|c| c.ciba.poll_interval_secs = 1)
        .start()
        .await
        .unwrap();
    let alice = seed(&app).await;
    let client = ciba_client(&app, "openid-client agent").await;
    let profile = tempfile::tempdir().unwrap();
    let out = node(
        "openid_client_ciba.mjs",
        &[
            &app.issuer,
            &client.0,
            &client.1,
            NOTES,
            "alice",
            PASSWORD,
            profile.path().to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(out["pending"], 2, "{out}");
    assert_eq!(out["heading"], "openid-client agent asks for your approval");
    assert_eq!(out["binding"], "Code 7H2K");
    assert_eq!(
        out["detail"],
        "Use the tool “delete_note” on Notes: Delete the note “groceries”"
    );
    assert_eq!(out["argument"], "id = n-42");
    assert_eq!(out["refreshes"], 1);
    assert_eq!(out["afterApprove"], "Approved. The application can go on.");
    assert_eq!(out["afterDeny"], "Denied. The application was told no.");
    assert_eq!(out["left"], 0);
    assert_eq!(out["sub"], alice.as_str());
    assert_eq!(out["details"][0]["tool"], "delete_note");
    assert_eq!(out["hasRefresh"], false);
    assert_eq!(out["denied"], "access_denied");
    app.finish().await;
}

both!(
    token_exchange_keeps_or_drops_approved_details_but_never_widens_them,
    |c: &mut concierge::Config| {
        c.ciba.poll_interval_secs = 0;
    },
    |app: TestApp| async move {
        seed(&app).await;
        const TE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
        const AT: &str = "urn:ietf:params:oauth:token-type:access_token";
        let (s, _, reg) = app
            .register(
                &json!({"client_name": "Calendar agent", "grant_types": [CIBA, TE],
                "token_endpoint_auth_method": "client_secret_basic"}),
            )
            .await;
        assert_eq!(s, 201, "{reg}");
        let client = (
            reg["client_id"].as_str().unwrap().to_string(),
            reg["client_secret"].as_str().unwrap().to_string(),
        );
        allow_calendar_to_notes(&app, &client.0).await;
        let one = json!({"type": "mcp_tool_call", "tool": "share_event", "locations": [CALENDAR]});
        let two = json!({"type": "mcp_tool_call", "tool": "move_event", "locations": [CALENDAR]});
        let details = json!([one, two]);
        let started = ask_alice(
            &app,
            &client,
            &[
                ("scope", "openid calendar:read"),
                ("resource", CALENDAR),
                ("binding_message", "exchange"),
                ("authorization_details", &details.to_string()),
            ],
        )
        .await;
        let b = browser();
        let page = approvals(&app, &b).await;
        decide_on(&app, &b, &page, &id_of(&page, "exchange"), "approve").await;
        let (s, _, tokens) = poll(&app, &client, started["auth_req_id"].as_str().unwrap()).await;
        assert_eq!(s, 200, "{tokens}");
        let subject = tokens["access_token"].as_str().unwrap().to_string();
        let exchange = |extra: Option<String>| {
            let app = &app;
            let client = &client;
            let subject = subject.clone();
            async move {
                let mut form = vec![
                    ("grant_type", TE.to_string()),
                    ("subject_token", subject),
                    ("subject_token_type", AT.to_string()),
                    ("resource", NOTES.to_string()),
                ];
                if let Some(d) = extra {
                    form.push(("authorization_details", d));
                }
                split(
                    app.http()
                        .post(app.url("/token"))
                        .basic_auth(&client.0, Some(&client.1))
                        .form(&form)
                        .send()
                        .await
                        .unwrap(),
                )
                .await
            }
        };
        // Kept as approved.
        let (s, _, kept) = exchange(None).await;
        assert_eq!(s, 200, "{kept}");
        assert_eq!(
            claims(kept["access_token"].as_str().unwrap())["authorization_details"],
            details
        );
        // Narrowed to one of them.
        let (s, _, narrowed) = exchange(Some(json!([one]).to_string())).await;
        assert_eq!(s, 200, "{narrowed}");
        assert_eq!(
            claims(narrowed["access_token"].as_str().unwrap())["authorization_details"],
            json!([one])
        );
        // Never widened or changed.
        let other =
            json!({"type": "mcp_tool_call", "tool": "delete_event", "locations": [CALENDAR]});
        assert_error(
            &exchange(Some(json!([one, other]).to_string())).await,
            400,
            "invalid_authorization_details",
            "never widens",
        );
        app
    }
);

both!(
    resources_declare_their_own_details_types,
    |c: &mut concierge::Config| {
        c.ciba.poll_interval_secs = 0;
    },
    |app: TestApp| async move {
        seed(&app).await;
        let (_, _, admin) = crate::admin::admin_token(&app).await;
        let encoded: String = url::form_urlencoded::byte_serialize(NOTES.as_bytes()).collect();
        let path = format!("/admin/v1/resources/{encoded}");
        let share = json!({
            "type": "notes_share",
            "schema": {"type": "object", "required": ["note", "with"], "properties": {
                "note": {"type": "string", "maxLength": 60},
                "with": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
                "role": {"type": "string", "enum": ["reader", "editor"]},
            }},
            "sentence": "Share the note “{note}” with {with}",
        });
        // A schema using what the server would not enforce is refused, naming the field.
        let mut loose = share.clone();
        loose["schema"]["properties"]["note"]["pattern"] = json!("^[a-z]+$");
        let (s, _, body) = crate::admin::call(
            &app,
            Some(&admin),
            reqwest::Method::PATCH,
            &path,
            Some(json!({"authorization_details_types": [loose]})),
        )
        .await;
        assert_eq!(s, 400, "{body}");
        assert!(body.to_string().contains("pattern"), "{body}");
        let (s, _, body) = crate::admin::call(
            &app,
            Some(&admin),
            reqwest::Method::PATCH,
            &path,
            Some(json!({"authorization_details_types": [share]})),
        )
        .await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(
            body["authorization_details_types"][0]["type"],
            "notes_share"
        );
        app.state.oauth.resources.forget(NOTES);

        // Advertised beside the built-in type.
        let (_, _, meta) = split(
            app.http()
                .get(app.url("/.well-known/oauth-authorization-server"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            meta["authorization_details_types_supported"],
            json!(["mcp_tool_call", "notes_share"])
        );

        // Checked against the schema at the backchannel endpoint.
        let client = ciba_client(&app, "Sharing agent").await;
        for (bad, why) in [
            (
                json!([{"type": "notes_share", "note": "groceries"}]),
                "with is required",
            ),
            (
                json!([{"type": "notes_share", "note": "g", "with": ["bob"], "role": "owner"}]),
                "role",
            ),
            (
                json!([{"type": "notes_share", "note": "g", "with": ["bob"], "color": "red"}]),
                "color is not a field",
            ),
        ] {
            let (s, _, b) = bc_authorize(
                &app,
                &client,
                &[
                    ("scope", "openid notes:read"),
                    ("login_hint", "alice"),
                    ("resource", NOTES),
                    ("authorization_details", &bad.to_string()),
                ],
            )
            .await;
            assert_eq!(s, 400, "{b}");
            assert_eq!(b["error"], "invalid_authorization_details", "{b}");
            assert!(
                b["error_description"].as_str().unwrap().contains(why),
                "{why}: {b}"
            );
        }
        // A resource that does not declare it does not take it.
        let (s, _, b) = bc_authorize(
            &app,
            &client,
            &[
                ("scope", "openid calendar:read"),
                ("login_hint", "alice"),
                ("resource", CALENDAR),
                (
                    "authorization_details",
                    &json!([{"type": "notes_share", "note": "g", "with": ["b"]}]).to_string(),
                ),
            ],
        )
        .await;
        assert_eq!(b["error"], "invalid_authorization_details", "{s} {b}");

        // Shown with the resource's own sentence, carried into the token.
        let details = json!([{"type": "notes_share", "note": "groceries",
            "with": ["bob", "carol"], "role": "reader"}]);
        let started = ask_alice(
            &app,
            &client,
            &[
                ("binding_message", "share?"),
                ("authorization_details", &details.to_string()),
            ],
        )
        .await;
        let b = browser();
        let page = approvals(&app, &b).await;
        assert!(
            page.contains("On Notes: Share the note “groceries” with bob, carol"),
            "{page}"
        );
        assert!(page.contains("role = reader"), "{page}");
        decide_on(&app, &b, &page, &id_of(&page, "share?"), "approve").await;
        let (s, _, tokens) = poll(&app, &client, started["auth_req_id"].as_str().unwrap()).await;
        assert_eq!(s, 200, "{tokens}");
        let carried = &claims(tokens["access_token"].as_str().unwrap())["authorization_details"];
        assert_eq!(carried[0]["with"], json!(["bob", "carol"]));
        assert_eq!(carried[0]["locations"], json!([NOTES]));

        // And on the consent page of the code flow.
        let agent = public_client(&app).await;
        let (_, challenge) = pkce();
        let mut params = auth_params(&agent, &challenge, "notes:read");
        params.push(("authorization_details".into(), details.to_string()));
        let res = b.get(authorize_url(&app, &params)).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let html = unescape(&res.text().await.unwrap());
        assert!(
            html.contains("On Notes: Share the note “groceries” with bob, carol"),
            "{html}"
        );
        app
    }
);

both!(
    ciba_disabled_users_and_the_per_client_limit,
    |c: &mut concierge::Config| {
        c.ciba.poll_interval_secs = 0;
    },
    |app: TestApp| async move {
        let alice = seed(&app).await;
        let client = ciba_client(&app, "Assistant").await;
        // A disabled user is answered like anyone: the same keys, and pending forever.
        let known = ask_alice(&app, &client, &[]).await;
        app.store()
            .set_disabled(&alice, Some(concierge::util::now()), concierge::util::now())
            .await
            .unwrap();
        let disabled = ask_alice(&app, &client, &[]).await;
        let keys = |v: &Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&known), keys(&disabled));
        assert_eq!(known["expires_in"], disabled["expires_in"]);
        assert_error(
            &poll(&app, &client, disabled["auth_req_id"].as_str().unwrap()).await,
            400,
            "authorization_pending",
            "not decided",
        );
        // Nothing reaches a page: no user may decide on it.
        let pending = app
            .store()
            .pending_backchannel_for_user(&alice, concierge::util::now())
            .await
            .unwrap();
        assert_eq!(
            pending.len(),
            1,
            "only the request made before she was disabled"
        );
        app.store()
            .set_disabled(&alice, None, concierge::util::now())
            .await
            .unwrap();

        // Approved, then disabled before the client polls: the approval yields no token,
        // as a code or a device approval does not (`user_grant::holder` reads the user when
        // the tokens are issued).
        let approved = ask_alice(&app, &client, &[("binding_message", "Code D1S4")]).await;
        let b = browser();
        let page = approvals(&app, &b).await;
        let res = decide_on(&app, &b, &page, &id_of(&page, "Code D1S4"), "approve").await;
        assert_eq!(res.status(), 303);
        let now = concierge::util::now();
        app.store()
            .set_disabled(&alice, Some(now), now)
            .await
            .unwrap();
        assert_error(
            &poll(&app, &client, approved["auth_req_id"].as_str().unwrap()).await,
            400,
            "invalid_grant",
            "disabled",
        );
        app.store()
            .set_disabled(&alice, None, concierge::util::now())
            .await
            .unwrap();

        // Each request may reach a person: a client gets 600 per ten minutes, then 429.
        let now = concierge::util::now();
        let bucket = format!("backchannel:{}", client.0);
        // Three requests so far; 596 more make 599, so one more passes and the next does not.
        for _ in 0..596 {
            app.store().hit(&bucket, 600, now).await.unwrap();
        }
        ask_alice(&app, &client, &[]).await;
        let (s, h, b) = bc_authorize(
            &app,
            &client,
            &[
                ("scope", "openid notes:read"),
                ("login_hint", "alice"),
                ("resource", NOTES),
            ],
        )
        .await;
        assert_eq!(s, 429, "{b}");
        assert!(h.contains_key("retry-after"), "{h:?}");
        // Another client is not held back by this one.
        let other = ciba_client(&app, "Other").await;
        ask_alice(&app, &other, &[]).await;
        app
    }
);
