//! Introspection (RFC 7662) and revocation (RFC 7009).

use concierge::oauth::client_metadata::RawClientMetadata;
use serde_json::{Value, json};

use crate::both;
use crate::flow::*;
use crate::helpers::{TOOLS_RESOURCE, TestApp, add_tools_resource, assert_error, split};

/// An operator's confidential client (client_secret_post) with the tools scopes; returns
/// (id, secret).
pub async fn static_client(
    app: &TestApp,
    grants: &[&str],
    may_introspect: bool,
) -> (String, String) {
    let mut m = TestApp::operator_metadata(RawClientMetadata {
        grant_types: Some(grants.iter().map(|g| g.to_string()).collect()),
        token_endpoint_auth_method: Some("client_secret_post".into()),
        scope: Some("tools:read tools:write".into()),
        ..Default::default()
    });
    m.may_introspect = may_introspect;
    let (id, secret) = app.add_client_metadata(None, m).await;
    (id, secret.unwrap())
}

async fn post(
    app: &TestApp,
    path: &str,
    form: &[(&str, &str)],
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    split(
        app.http
            .post(app.url(path))
            .form(form)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn machine_token(app: &TestApp, id: &str, secret: &str) -> String {
    let (s, _, body) = post(
        app,
        "/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
            ("resource", TOOLS_RESOURCE),
            ("scope", "tools:read"),
        ],
    )
    .await;
    assert_eq!(s, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

both!(
    introspection_for_allowed_resource_servers_only,
    |app: TestApp| async move {
        add_tools_resource(&app).await;
        let (machine, machine_secret) = static_client(&app, &["client_credentials"], false).await;
        let (rs, rs_secret) = static_client(&app, &["client_credentials"], true).await;
        let at = machine_token(&app, &machine, &machine_secret).await;

        let (s, h, body) = post(
            &app,
            "/introspect",
            &[
                ("client_id", &rs),
                ("client_secret", &rs_secret),
                ("token", &at),
            ],
        )
        .await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(body["active"], true);
        assert_eq!(body["client_id"], machine.as_str());
        assert_eq!(body["aud"], TOOLS_RESOURCE);
        assert_eq!(body["scope"], "tools:read");
        assert_eq!(body["iss"], app.issuer.as_str());
        assert!(body["exp"].as_i64().is_some());

        for junk in ["garbage", "a.b.c", &format!("{at}x")] {
            let (_, _, b) = post(
                &app,
                "/introspect",
                &[
                    ("client_id", &rs),
                    ("client_secret", &rs_secret),
                    ("token", junk),
                ],
            )
            .await;
            assert_eq!(b, json!({"active": false}), "{junk}");
        }
        // Not a resource server the operator allowed: 403. Not authenticated: 401.
        let got = post(
            &app,
            "/introspect",
            &[
                ("client_id", &machine),
                ("client_secret", &machine_secret),
                ("token", &at),
            ],
        )
        .await;
        assert_error(&got, 403, "unauthorized_client", "introspect");
        let got = post(&app, "/introspect", &[("token", &at)]).await;
        assert_error(&got, 401, "invalid_client", "authentication");
        let got = post(
            &app,
            "/introspect",
            &[
                ("client_id", &rs),
                ("client_secret", "wrong"),
                ("token", &at),
            ],
        )
        .await;
        assert_error(&got, 401, "invalid_client", "failed");

        // Metadata lists both endpoints.
        let (_, _, m) = app
            .get_json("/.well-known/oauth-authorization-server")
            .await;
        assert_eq!(m["introspection_endpoint"], app.url("/introspect"));
        assert_eq!(m["revocation_endpoint"], app.url("/revoke"));
        app
    }
);

both!(
    revoked_access_tokens_are_inactive,
    |app: TestApp| async move {
        add_tools_resource(&app).await;
        let (machine, machine_secret) = static_client(&app, &["client_credentials"], false).await;
        let (other, other_secret) = static_client(&app, &["client_credentials"], false).await;
        let (rs, rs_secret) = static_client(&app, &["client_credentials"], true).await;
        let at = machine_token(&app, &machine, &machine_secret).await;
        let active = async |t: &str| {
            post(
                &app,
                "/introspect",
                &[
                    ("client_id", &rs),
                    ("client_secret", &rs_secret),
                    ("token", t),
                ],
            )
            .await
            .2["active"]
                .as_bool()
                .unwrap()
        };
        // Another client cannot revoke it; the answer is 200 all the same (RFC 7009 §2.2).
        let (s, _, _) = post(
            &app,
            "/revoke",
            &[
                ("client_id", &other),
                ("client_secret", &other_secret),
                ("token", &at),
            ],
        )
        .await;
        assert_eq!(s, 200);
        assert!(active(&at).await);
        let (s, _, _) = post(
            &app,
            "/revoke",
            &[
                ("client_id", &machine),
                ("client_secret", &machine_secret),
                ("token", &at),
                ("token_type_hint", "access_token"),
            ],
        )
        .await;
        assert_eq!(s, 200);
        assert!(!active(&at).await, "revoked");
        // Unknown tokens: 200 too. No authentication: 401.
        let (s, _, _) = post(
            &app,
            "/revoke",
            &[
                ("client_id", &machine),
                ("client_secret", &machine_secret),
                ("token", "unknown"),
            ],
        )
        .await;
        assert_eq!(s, 200);
        assert_error(
            &post(&app, "/revoke", &[("token", &at)]).await,
            401,
            "invalid_client",
            "authentication",
        );
        assert_error(
            &post(
                &app,
                "/revoke",
                &[("client_id", &machine), ("client_secret", &machine_secret)],
            )
            .await,
            400,
            "invalid_request",
            "token",
        );
        app
    }
);

both!(
    revoking_a_refresh_token_ends_the_grant,
    |app: TestApp| async move {
        seed(&app).await;
        let client = public_client(&app).await;
        let (verifier, challenge) = pkce();
        let b = browser();
        let back = authorize_and_approve(
            &app,
            &b,
            &auth_params(&client, &challenge, "openid notes:read offline_access"),
        )
        .await;
        let (_, _, tokens) = redeem(&app, &client, &query(&back)["code"], &verifier, &[]).await;
        let rt = tokens["refresh_token"].as_str().unwrap();
        let at = tokens["access_token"].as_str().unwrap();
        let (rs, rs_secret) = static_client(&app, &["client_credentials"], true).await;
        let (_, _, b1) = post(
            &app,
            "/introspect",
            &[
                ("client_id", &rs),
                ("client_secret", &rs_secret),
                ("token", rt),
            ],
        )
        .await;
        assert_eq!(b1["active"], true);
        assert_eq!(b1["token_type"], "refresh_token");
        // A public client revokes with its client_id alone.
        let (s, _, _) = post(&app, "/revoke", &[("client_id", &client), ("token", rt)]).await;
        assert_eq!(s, 200);
        assert_error(
            &refresh(&app, &client, rt, &[]).await,
            400,
            "invalid_grant",
            "revoked",
        );
        let (_, _, b2) = post(
            &app,
            "/introspect",
            &[
                ("client_id", &rs),
                ("client_secret", &rs_secret),
                ("token", rt),
            ],
        )
        .await;
        assert_eq!(b2, json!({"active": false}));
        // A revoked access token no longer works at userinfo either.
        assert_eq!(
            app.http
                .get(app.url("/userinfo"))
                .bearer_auth(at)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        post(&app, "/revoke", &[("client_id", &client), ("token", at)]).await;
        assert_eq!(
            app.http
                .get(app.url("/userinfo"))
                .bearer_auth(at)
                .send()
                .await
                .unwrap()
                .status(),
            401
        );
        app
    }
);
