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
    let token = calendar_token(app, &client, &browser()).await;
    (alice, token)
}

/// Alice's calendar token, and the calendar server's client (id, secret), which a policy lets
/// exchange calendar:read for notes:read: (alice's id, her token, the id, the secret).
async fn calendar_may_exchange_for_notes(app: &TestApp) -> (String, String, String, String) {
    let (alice, subject) = user_calendar_token(app).await;
    let (cal, cal_secret) = server_client(app, "calendar-server").await;
    allow(
        app,
        NOTES,
        &cal,
        CALENDAR,
        &[("calendar:read", &["notes:read"])],
    )
    .await;
    (alice, subject, cal, cal_secret)
}

/// alice (seeded) connects `client` to the calendar in browser `b` (signing in there): the
/// access token.
async fn calendar_token(app: &TestApp, client: &str, b: &reqwest::Client) -> String {
    let (verifier, challenge) = pkce();
    let mut params = auth_params(client, &challenge, "calendar:read");
    params.retain(|(k, _)| k != "resource");
    params.push(("resource".into(), CALENDAR.into()));
    let back = authorize_and_approve(app, b, &params).await;
    let (s, _, tokens) = redeem(app, client, &query(&back)["code"], &verifier, &[]).await;
    assert_eq!(s, 200, "{tokens}");
    tokens["access_token"].as_str().unwrap().to_string()
}

both!(
    exchange_narrows_and_records_who_acts,
    |app: TestApp| async move {
        let (alice, subject, cal, cal_secret) = calendar_may_exchange_for_notes(&app).await;

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
    a_password_token_is_not_exchanged_toward_a_resource_that_requires_mfa,
    |app: TestApp| async move {
        // Alice's calendar token, from her password alone; the calendar server may exchange
        // it for a notes token.
        let (_, subject, cal, cal_secret) = calendar_may_exchange_for_notes(&app).await;
        let (s, _, body) =
            exchange(&app, &cal, &cal_secret, &subject, &[("resource", NOTES)]).await;
        assert_eq!(s, 200, "{body}");

        // Notes now requires a second factor: a token for it must come from a sign-in that
        // reached one, through an exchange as much as from the user's own grant.
        set_required_acr(&app, NOTES, Some("urn:concierge:acr:mfa")).await;
        assert_error(
            &exchange(&app, &cal, &cal_secret, &subject, &[("resource", NOTES)]).await,
            400,
            "invalid_grant",
            "a second factor",
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
        assert_eq!(revoke_public(&app, &holder, &subject).await, 200);
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
        let (_, subject, cal, cal_secret) = calendar_may_exchange_for_notes(&app).await;
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

/// A two-hop chain: alice's agent holds a calendar token (the root); the calendar server
/// exchanges it for a notes token (hop 1), the notes server exchanges that for a calendar
/// token (hop 2).
pub struct Chain {
    pub alice: String,
    /// The agent alice connected, and her browser, signed in.
    pub agent: String,
    pub browser: reqwest::Client,
    pub root: String,
    pub cal: (String, String),
    pub notes: (String, String),
    /// The exchanged tokens and their hops (`delegation` claims).
    pub t1: String,
    pub hop1: String,
    pub t2: String,
    pub hop2: String,
}

pub async fn two_hop_chain(app: &TestApp) -> Chain {
    let alice = seed(app).await;
    let agent = public_client(app).await;
    let b = browser();
    let root = calendar_token(app, &agent, &b).await;
    let cal = server_client(app, "calendar-server").await;
    allow(
        app,
        NOTES,
        &cal.0,
        CALENDAR,
        &[("calendar:read", &["notes:read"])],
    )
    .await;
    let notes = server_client(app, "notes-server").await;
    allow(
        app,
        CALENDAR,
        &notes.0,
        NOTES,
        &[("notes:read", &["calendar:read"])],
    )
    .await;
    let t1 = exchanged(exchange(app, &cal.0, &cal.1, &root, &[("resource", NOTES)]).await);
    let t2 = exchanged(exchange(app, &notes.0, &notes.1, &t1, &[("audience", CALENDAR)]).await);
    let hop = |t: &str| claims(t)["delegation"].as_str().unwrap().to_string();
    Chain {
        alice,
        agent,
        browser: b,
        hop1: hop(&t1),
        hop2: hop(&t2),
        root,
        cal,
        notes,
        t1,
        t2,
    }
}

fn exchanged(answer: (reqwest::StatusCode, reqwest::header::HeaderMap, Value)) -> String {
    let (s, _, body) = answer;
    assert_eq!(s, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

/// Is `token` active at introspection?
pub async fn active(app: &TestApp, token: &str) -> bool {
    let (id, secret) =
        crate::introspection::static_client(app, &["client_credentials"], true).await;
    let (s, _, body) = post_form(
        app,
        "/introspect",
        vec![("client_id", id.as_str()), ("client_secret", &secret)],
        &[("token", token)],
    )
    .await;
    assert_eq!(s, 200, "{body}");
    body["active"] == true
}

both!(
    delegation_chains_are_recorded_shown_and_cut,
    |app: TestApp| async move {
        let c = two_hop_chain(&app).await;
        assert_ne!(c.hop1, c.hop2);
        // The same path again is the same hop.
        let again =
            exchanged(exchange(&app, &c.cal.0, &c.cal.1, &c.root, &[("resource", NOTES)]).await);
        assert_eq!(claims(&again)["delegation"], c.hop1.as_str());
        for t in [&c.root, &c.t1, &c.t2] {
            assert!(active(&app, t).await);
        }

        // The audit log names the chain of each exchanged token, from the app alice connected.
        let chain = json!([
            {"client_id": c.agent, "resource": CALENDAR},
            {"client_id": "calendar-server", "resource": NOTES},
            {"client_id": "notes-server", "resource": CALENDAR},
        ]);
        let events = crate::mfa::audit(&app, "token.exchanged").await;
        let e = events
            .iter()
            .find(|e| e.detail["delegation"]["id"] == c.hop2.as_str())
            .expect("the second hop's exchange is audited");
        assert_eq!(e.detail["delegation"]["chain"], chain);
        assert_eq!(e.user_id.as_deref(), Some(c.alice.as_str()));

        // So does the admin API, for every hop.
        let (_, _, admin) = crate::admin::admin_token(&app).await;
        let path = format!("/admin/v1/users/{}/delegations", c.alice);
        let (s, _, list) =
            crate::admin::call(&app, Some(&admin), reqwest::Method::GET, &path, None).await;
        assert_eq!(s, 200, "{list}");
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{list}");
        let second = items.iter().find(|i| i["id"] == c.hop2.as_str()).unwrap();
        assert_eq!(second["chain"], chain);
        assert_eq!(second["parent_id"], c.hop1.as_str());
        assert!(second["revoked_at"].is_null());

        // The connected-apps page shows both chains under the agent, in names.
        let html = unescape(&page_text(&c.browser, &app.url("/account/apps")).await);
        for hop in [&c.hop1, &c.hop2] {
            assert!(html.contains(&format!("data-hop=\"{hop}\"")), "{html}");
        }
        assert!(
            html.contains("<span class=\"link\">Test Agent</span> → <span class=\"link\">Calendar</span> → <span class=\"link\">Notes</span> → <span class=\"link\">Calendar</span>"),
            "{html}"
        );

        // Cutting needs the form's token.
        let csrf = csrf_of(&html);
        let cut = |form: Vec<(&'static str, String)>| {
            let b = c.browser.clone();
            let url = app.url("/account/apps/cut");
            async move { b.post(url).form(&form).send().await.unwrap().status() }
        };
        assert_eq!(cut(vec![("hop", c.hop1.clone())]).await, 400);
        assert!(active(&app, &c.t1).await);
        // Cutting the first hop ends both derived tokens at once; the agent's own stays.
        assert_eq!(
            cut(vec![("csrf", csrf.clone()), ("hop", c.hop1.clone())]).await,
            303
        );
        assert!(!active(&app, &c.t1).await);
        assert!(!active(&app, &c.t2).await);
        assert!(active(&app, &c.root).await);
        // No exchange goes through it again: not from a derived token, nor from the root.
        assert_error(
            &exchange(
                &app,
                &c.notes.0,
                &c.notes.1,
                &c.t1,
                &[("audience", CALENDAR)],
            )
            .await,
            400,
            "invalid_grant",
            "revoked",
        );
        assert_error(
            &exchange(&app, &c.cal.0, &c.cal.1, &c.root, &[("resource", NOTES)]).await,
            400,
            "invalid_grant",
            "cut",
        );
        // Audited, with both hops; the page and the admin API show them cut.
        let cuts = crate::mfa::audit(&app, "delegation.cut").await;
        assert_eq!(cuts.len(), 1);
        assert_eq!(cuts[0].detail["hops"], 2);
        assert_eq!(
            cuts[0].detail["chain"],
            json!(chain.as_array().unwrap()[..2])
        );
        let html = page_text(&c.browser, &app.url("/account/apps")).await;
        assert_eq!(html.matches("is-cut").count(), 2, "{html}");
        assert!(
            !html.contains("button type=\"submit\" class=\"secondary cut\""),
            "{html}"
        );
        let (_, _, list) =
            crate::admin::call(&app, Some(&admin), reqwest::Method::GET, &path, None).await;
        for item in list["items"].as_array().unwrap() {
            assert_eq!(item["cut_by"], "user", "{list}");
        }
        // Cutting again changes nothing.
        assert_eq!(
            cut(vec![("csrf", csrf), ("hop", c.hop1.clone())]).await,
            303
        );
        assert_eq!(crate::mfa::audit(&app, "delegation.cut").await.len(), 1);
        app
    }
);

both!(
    cutting_a_lower_hop_or_disconnecting_the_app,
    |app: TestApp| async move {
        let c = two_hop_chain(&app).await;
        let (_, _, admin) = crate::admin::admin_token(&app).await;
        let hop2 = format!("/admin/v1/users/{}/delegations/{}", c.alice, c.hop2);
        let (s, _, body) =
            crate::admin::call(&app, Some(&admin), reqwest::Method::DELETE, &hop2, None).await;
        assert_eq!(s, 204, "{body}");
        let (s, _, body) =
            crate::admin::call(&app, Some(&admin), reqwest::Method::DELETE, &hop2, None).await;
        assert_eq!(s, 404, "{body}");
        // The second hop is cut; the first lives on.
        assert!(!active(&app, &c.t2).await);
        assert!(active(&app, &c.t1).await);
        assert_error(
            &exchange(
                &app,
                &c.notes.0,
                &c.notes.1,
                &c.t1,
                &[("audience", CALENDAR)],
            )
            .await,
            400,
            "invalid_grant",
            "cut",
        );
        let t1 =
            exchanged(exchange(&app, &c.cal.0, &c.cal.1, &c.root, &[("resource", NOTES)]).await);
        assert_eq!(claims(&t1)["delegation"], c.hop1.as_str());

        // Disconnecting the agent ends every chain from it.
        let html = page_text(&c.browser, &app.url("/account/apps")).await;
        let csrf = csrf_of(&html);
        let res = c
            .browser
            .post(app.url("/account/apps/revoke"))
            .form(&[
                ("csrf", csrf.as_str()),
                ("client_id", &c.agent),
                ("resource", CALENDAR),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 303);
        assert!(!active(&app, &c.t1).await);
        assert!(!active(&app, &t1).await);
        // The page no longer shows the chains that ended with the app.
        let html = page_text(&c.browser, &app.url("/account/apps")).await;
        assert!(!html.contains(&c.hop1), "{html}");
        assert!(!html.contains("class=\"chain"), "{html}");
        // A token the agent got before cannot start the chain again.
        assert_error(
            &exchange(&app, &c.cal.0, &c.cal.1, &c.root, &[("resource", NOTES)]).await,
            400,
            "invalid_grant",
            "disconnected",
        );
        // Connected again (a new grant, a second later), the agent's chain starts afresh.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let root = calendar_token(&app, &c.agent, &browser()).await;
        let fresh =
            exchanged(exchange(&app, &c.cal.0, &c.cal.1, &root, &[("resource", NOTES)]).await);
        let hop = claims(&fresh)["delegation"].as_str().unwrap().to_string();
        assert_ne!(hop, c.hop1);
        assert!(active(&app, &fresh).await);
        assert!(!active(&app, &t1).await, "the old chain stays ended");
        let path = format!("/admin/v1/users/{}/delegations", c.alice);
        let (_, _, list) =
            crate::admin::call(&app, Some(&admin), reqwest::Method::GET, &path, None).await;
        let live: Vec<&Value> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["revoked_at"].is_null())
            .collect();
        assert_eq!(live.len(), 1, "{list}");
        assert_eq!(live[0]["id"], hop.as_str());

        // A client's own token (no user) makes no chain.
        let metadata = TestApp::operator_metadata(RawClientMetadata {
            grant_types: Some(vec![TE.into(), "client_credentials".into()]),
            token_endpoint_auth_method: Some("client_secret_post".into()),
            scope: Some("calendar:read".into()),
            ..Default::default()
        });
        let (robot, secret) = app.add_client_metadata(Some("robot"), metadata).await;
        let secret = secret.unwrap();
        allow(
            &app,
            NOTES,
            &robot,
            CALENDAR,
            &[("calendar:read", &["notes:read"])],
        )
        .await;
        let form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", robot.as_str()),
            ("client_secret", secret.as_str()),
            ("resource", CALENDAR),
            ("scope", "calendar:read"),
        ];
        let (s, _, own) = post_form(&app, "/token", form, &[]).await;
        assert_eq!(s, 200, "{own}");
        let own = own["access_token"].as_str().unwrap();
        let machine = exchange(&app, &robot, &secret, own, &[("resource", NOTES)]).await;
        assert_eq!(machine.0, 200, "{}", machine.2);
        assert!(claims(machine.2["access_token"].as_str().unwrap())["delegation"].is_null());
        // Exchanged by another client, the machine's token still names no user: active at
        // introspection, where a deleted user's token is not.
        let (s, _, by_other) =
            exchange(&app, &c.cal.0, &c.cal.1, own, &[("resource", NOTES)]).await;
        assert_eq!(s, 200, "{by_other}");
        let by_other = by_other["access_token"].as_str().unwrap();
        assert_eq!(claims(by_other)["sub"], robot.as_str());
        assert!(claims(by_other)["delegation"].is_null());
        assert!(active(&app, by_other).await);

        // A disabled user's token starts no new chain.
        app.store()
            .set_disabled(
                &c.alice,
                Some(concierge::util::now()),
                concierge::util::now(),
            )
            .await
            .unwrap();
        assert_error(
            &exchange(
                &app,
                &c.notes.0,
                &c.notes.1,
                &fresh,
                &[("audience", CALENDAR)],
            )
            .await,
            400,
            "invalid_grant",
            "disabled",
        );
        app
    }
);
