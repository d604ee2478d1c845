//! Token exchange (RFC 8693): narrower tokens for another resource, with an `act` chain.

use concierge::oauth::client_metadata::RawClientMetadata;
use concierge::store::ExchangePolicy;
use serde_json::{Value, json};

use crate::both;
use crate::flow::*;
use crate::helpers::{TestApp, assert_error, post_form, split};

const TE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const AT: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A static confidential client allowed to exchange; returns (id, secret).
async fn server_client(app: &TestApp, id: &str) -> (String, String) {
    server_client_with(app, id, "client_secret_post").await
}

/// The same with another token endpoint auth method.
pub async fn server_client_with(app: &TestApp, id: &str, method: &str) -> (String, String) {
    let metadata = TestApp::operator_metadata(RawClientMetadata {
        grant_types: Some(vec![TE.into(), "client_credentials".into()]),
        token_endpoint_auth_method: Some(method.into()),
        ..Default::default()
    });
    let (id, secret) = app.add_client_metadata(Some(id), metadata).await;
    (id, secret.unwrap())
}

pub async fn allow(
    app: &TestApp,
    target: &str,
    client: &str,
    source: &str,
    map: &[(&str, &[&str])],
) {
    app.store()
        .save_exchange_policy(&ExchangePolicy {
            target: target.into(),
            client_id: client.into(),
            source: source.into(),
            scope_map: map
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
            created_at: 0,
        })
        .await
        .unwrap();
}

async fn exchange(
    app: &TestApp,
    id: &str,
    secret: &str,
    subject: &str,
    extra: &[(&str, &str)],
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let form = vec![
        ("grant_type", TE),
        ("client_id", id),
        ("client_secret", secret),
        ("subject_token", subject),
        ("subject_token_type", AT),
    ];
    post_form(app, "/token", form, extra).await
}

/// alice's token for the calendar (via the real code flow).
async fn user_calendar_token(app: &TestApp) -> (String, String) {
    let alice = seed(app).await;
    let client = public_client(app).await;
    let (verifier, challenge) = pkce();
    let mut params = auth_params(&client, &challenge, "calendar:read");
    params.retain(|(k, _)| k != "resource");
    params.push(("resource".into(), CALENDAR.into()));
    let back = authorize_and_approve(app, &browser(), &params).await;
    let (s, _, tokens) = redeem(app, &client, &query(&back)["code"], &verifier, &[]).await;
    assert_eq!(s, 200, "{tokens}");
    (alice, tokens["access_token"].as_str().unwrap().to_string())
}

both!(
    exchange_narrows_and_records_who_acts,
    |app: TestApp| async move {
        let (alice, subject) = user_calendar_token(&app).await;
        let (cal, cal_secret) = server_client(&app, "calendar-server").await;
        allow(
            &app,
            NOTES,
            &cal,
            CALENDAR,
            &[("calendar:read", &["notes:read"])],
        )
        .await;

        let (s, h, body) =
            exchange(&app, &cal, &cal_secret, &subject, &[("resource", NOTES)]).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(body["issued_token_type"], AT);
        assert_eq!(body["scope"], "notes:read");
        let c = verify(
            &app,
            body["access_token"].as_str().unwrap(),
            jsonwebtoken::Algorithm::ES256,
            NOTES,
        );
        assert_eq!(c["sub"], alice.as_str(), "same subject");
        assert_eq!(c["aud"], NOTES);
        assert_eq!(c["client_id"], "calendar-server");
        assert_eq!(c["act"], json!({"sub": "calendar-server"}));
        let subject_exp = claims(&subject)["exp"].as_i64().unwrap();
        assert!(
            c["exp"].as_i64().unwrap() <= subject_exp,
            "never outlives the subject"
        );

        // A second hop nests the chain: notes-server exchanges the new token toward the calendar.
        let (notes_srv, notes_secret) = server_client(&app, "notes-server").await;
        allow(
            &app,
            CALENDAR,
            &notes_srv,
            NOTES,
            &[("notes:read", &["calendar:read"])],
        )
        .await;
        let hop = body["access_token"].as_str().unwrap();
        let (s, _, b2) = exchange(
            &app,
            &notes_srv,
            &notes_secret,
            hop,
            &[("audience", CALENDAR)],
        )
        .await;
        assert_eq!(s, 200, "{b2}");
        assert_eq!(
            claims(b2["access_token"].as_str().unwrap())["act"],
            json!({"sub": "notes-server", "act": {"sub": "calendar-server"}})
        );
        app
    }
);

both!(
    exchange_refusals,
    |c: &mut concierge::Config| {
        c.tokens.max_delegation_depth = 1;
    },
    |app: TestApp| async move {
        let (_, subject) = user_calendar_token(&app).await;
        let (cal, cal_secret) = server_client(&app, "calendar-server").await;
        let (stranger, stranger_secret) = server_client(&app, "stranger").await;
        // Default deny: no policy.
        assert_error(
            &exchange(&app, &cal, &cal_secret, &subject, &[("resource", NOTES)]).await,
            400,
            "unauthorized_client",
            "no exchange policy",
        );
        allow(
            &app,
            NOTES,
            &cal,
            CALENDAR,
            &[("calendar:read", &["notes:read"])],
        )
        .await;
        // Another client is still denied.
        assert_error(
            &exchange(
                &app,
                &stranger,
                &stranger_secret,
                &subject,
                &[("resource", NOTES)],
            )
            .await,
            400,
            "unauthorized_client",
            "policy",
        );
        // Widening: a scope the policy does not give from the subject's scopes.
        assert_error(
            &exchange(
                &app,
                &cal,
                &cal_secret,
                &subject,
                &[("resource", NOTES), ("scope", "notes:write")],
            )
            .await,
            400,
            "invalid_scope",
            "notes:write",
        );
        // Bad targets and subjects.
        assert_error(
            &exchange(&app, &cal, &cal_secret, &subject, &[]).await,
            400,
            "invalid_target",
            "required",
        );
        assert_error(
            &exchange(
                &app,
                &cal,
                &cal_secret,
                &subject,
                &[("resource", "https://unknown.example/x")],
            )
            .await,
            400,
            "invalid_target",
            "not a registered",
        );
        assert_error(
            &exchange(&app, &cal, &cal_secret, "garbage", &[("resource", NOTES)]).await,
            400,
            "invalid_grant",
            "subject_token",
        );
        assert_error(
            &exchange(
                &app,
                &cal,
                &cal_secret,
                &subject,
                &[("resource", NOTES), ("subject_token_type", "urn:x")],
            )
            .await,
            400,
            "invalid_request",
            "subject_token_type",
        );
        assert_error(
            &exchange(
                &app,
                &cal,
                &cal_secret,
                &subject,
                &[
                    ("resource", NOTES),
                    (
                        "requested_token_type",
                        "urn:ietf:params:oauth:token-type:refresh_token",
                    ),
                ],
            )
            .await,
            400,
            "invalid_request",
            "requested_token_type",
        );
        // A client that did not register the grant.
        let public = public_client(&app).await;
        let form = [
            ("grant_type", TE),
            ("client_id", public.as_str()),
            ("subject_token", subject.as_str()),
            ("subject_token_type", AT),
            ("resource", NOTES),
        ];
        assert_error(
            &split(
                app.http
                    .post(app.url("/token"))
                    .form(&form)
                    .send()
                    .await
                    .unwrap(),
            )
            .await,
            400,
            "unauthorized_client",
            "token-exchange",
        );
        // Chain depth: one hop is fine, a second exceeds max_delegation_depth = 1.
        let (s, _, b) = exchange(&app, &cal, &cal_secret, &subject, &[("resource", NOTES)]).await;
        assert_eq!(s, 200, "{b}");
        let (notes_srv, notes_secret) = server_client(&app, "notes-server").await;
        allow(
            &app,
            CALENDAR,
            &notes_srv,
            NOTES,
            &[("notes:read", &["calendar:read"])],
        )
        .await;
        assert_error(
            &exchange(
                &app,
                &notes_srv,
                &notes_secret,
                b["access_token"].as_str().unwrap(),
                &[("resource", CALENDAR)],
            )
            .await,
            400,
            "invalid_grant",
            "delegation chain",
        );
        // A revoked subject cannot be exchanged: the agent that holds it revokes it.
        let holder = claims(&subject)["client_id"].as_str().unwrap().to_string();
        let res = app
            .http
            .post(app.url("/revoke"))
            .form(&[("client_id", holder.as_str()), ("token", subject.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_error(
            &exchange(&app, &cal, &cal_secret, &subject, &[("resource", NOTES)]).await,
            400,
            "invalid_grant",
            "revoked",
        );
        app
    }
);

/// A client's token for itself (client credentials) for the calendar.
async fn own_token(app: &TestApp, id: &str, secret: &str) -> String {
    let form = vec![
        ("grant_type", "client_credentials"),
        ("client_id", id),
        ("client_secret", secret),
        ("resource", CALENDAR),
    ];
    let (s, _, b) = post_form(app, "/token", form, &[]).await;
    assert_eq!(s, 200, "{b}");
    b["access_token"].as_str().unwrap().to_string()
}

/// An exchange of `subject` by `id` with `extra` parameters.
async fn send(
    app: &TestApp,
    id: &str,
    secret: &str,
    subject: &str,
    extra: Vec<(&'static str, String)>,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    exchange(app, id, secret, subject, &extra).await
}

both!(
    actor_tokens_are_checked_like_subjects,
    |app: TestApp| async move {
        let (_, subject) = user_calendar_token(&app).await;
        let (cal, cal_secret) = server_client(&app, "calendar-server").await;
        allow(
            &app,
            NOTES,
            &cal,
            CALENDAR,
            &[("calendar:read", &["notes:read"])],
        )
        .await;
        // The calendar server's own token, to name itself as the actor.
        let actor = own_token(&app, &cal, &cal_secret).await;

        // RFC 8693 §2.1: actor_token_type is required with an actor_token.
        assert_error(
            &exchange(
                &app,
                &cal,
                &cal_secret,
                &subject,
                &[("resource", NOTES), ("actor_token", &actor)],
            )
            .await,
            400,
            "invalid_request",
            "actor_token_type",
        );
        let with_actor = |token: &str| {
            vec![
                ("resource", NOTES.to_string()),
                ("actor_token", token.to_string()),
                ("actor_token_type", AT.to_string()),
            ]
        };
        let (s, _, ok) = send(&app, &cal, &cal_secret, &subject, with_actor(&actor)).await;
        assert_eq!(s, 200, "{ok}");
        assert_eq!(
            claims(ok["access_token"].as_str().unwrap())["act"],
            json!({"sub": "calendar-server"})
        );

        // Another client's token cannot be claimed as the actor.
        let (other, other_secret) = server_client(&app, "another-server").await;
        let stranger = own_token(&app, &other, &other_secret).await;
        assert_error(
            &send(&app, &cal, &cal_secret, &subject, with_actor(&stranger)).await,
            400,
            "invalid_grant",
            "another client",
        );

        // A revoked actor token is refused (it was accepted before the one check).
        let res = app
            .http
            .post(app.url("/revoke"))
            .form(&[
                ("client_id", cal.as_str()),
                ("client_secret", cal_secret.as_str()),
                ("token", actor.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_error(
            &send(&app, &cal, &cal_secret, &subject, with_actor(&actor)).await,
            400,
            "invalid_grant",
            "actor_token was revoked",
        );
        app
    }
);
