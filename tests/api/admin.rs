//! The admin API (`/admin/v1`): admin tokens only, every kind of thing administered, the
//! error envelope, pagination, the audit log, and the OpenAPI document.

use serde_json::{Value, json};

use crate::both;
use crate::flow::*;
use crate::helpers::{TOOLS_RESOURCE, TestApp, add_tools_resource, split};

pub type Answer = (reqwest::StatusCode, reqwest::header::HeaderMap, Value);

/// An admin client made as `concierge admin-client create` makes it, and a token for it
/// from the token endpoint (client credentials).
pub async fn admin_token(app: &TestApp) -> (String, String, String) {
    let (record, secret) =
        concierge::manage::create_admin_client(app.store().as_ref(), &app.issuer, "ops")
            .await
            .unwrap();
    let token = cc_token(
        app,
        &record.client_id,
        &secret,
        &concierge::oauth::admin_token::admin_resource_uri(&app.issuer),
        "admin",
    )
    .await;
    (record.client_id, secret, token)
}

pub async fn call(
    app: &TestApp,
    token: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Answer {
    let mut req = app.http.request(method, app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    split(req.send().await.unwrap()).await
}

async fn get(app: &TestApp, token: &str, path: &str) -> Answer {
    call(app, Some(token), reqwest::Method::GET, path, None).await
}

async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> Answer {
    call(app, Some(token), reqwest::Method::POST, path, Some(body)).await
}

async fn delete(app: &TestApp, token: &str, path: &str) -> Answer {
    call(app, Some(token), reqwest::Method::DELETE, path, None).await
}

/// A validation error naming `field`.
fn assert_invalid(got: &Answer, field: &str) {
    let (s, _, body) = got;
    assert_eq!(s.as_u16(), 400, "{body}");
    assert_eq!(body["error"]["code"], "validation_failed", "{body}");
    assert_eq!(body["error"]["field"], field, "{body}");
    assert!(!body["error"]["message"].as_str().unwrap().is_empty());
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

both!(admin_calls_need_an_admin_token, |app: TestApp| async move {
    // No token: 401 with a bare Bearer challenge (RFC 6750 §3.1) and the envelope.
    let (s, h, body) = call(&app, None, reqwest::Method::GET, "/admin/v1/clients", None).await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(h["www-authenticate"], "Bearer");
    assert_eq!(body["error"]["code"], "unauthorized");
    for path in ["/admin/v1/users", "/admin/v1/audit", "/admin/v1/keys"] {
        let (s, _, _) = call(&app, None, reqwest::Method::GET, path, None).await;
        assert_eq!(s, 401, "{path}");
    }
    let (s, _, _) = call(
        &app,
        None,
        reqwest::Method::POST,
        "/admin/v1/keys/rotate",
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 401);
    // Not a token of ours.
    let (s, h, _) = call(
        &app,
        Some("not.a.jwt"),
        reqwest::Method::GET,
        "/admin/v1/users",
        None,
    )
    .await;
    assert_eq!(s, 401);
    assert!(
        h["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );

    // A valid token for another resource, or without the admin scope: 403.
    add_tools_resource(&app).await;
    let (tools_client, tools_secret) = {
        let (r, s) = concierge::manage::create_client(
            app.store().as_ref(),
            &concierge::oauth::grants::GrantRegistry::standard(),
            concierge::manage::NewClient {
                name: "tools".into(),
                grant_types: vec!["client_credentials".into()],
                scope: Some("tools:read".into()),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
        (r.client_id, s.unwrap())
    };
    let other = cc_token(
        &app,
        &tools_client,
        &tools_secret,
        TOOLS_RESOURCE,
        "tools:read",
    )
    .await;
    let (s, h, body) = get(&app, &other, "/admin/v1/users").await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(
        h["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );

    // A dynamically registered client cannot make itself an admin client.
    let (_, _, token) = admin_token(&app).await;
    let (s, _, reg) = app
        .register(&json!({
            "client_name": "sneaky",
            "grant_types": ["client_credentials"],
            "scope": "admin"
        }))
        .await;
    assert_eq!(s, 201, "{reg}");
    let res = app
        .http
        .post(app.url("/token"))
        .basic_auth(
            reg["client_id"].as_str().unwrap(),
            reg["client_secret"].as_str(),
        )
        .form(&[
            ("grant_type", "client_credentials"),
            (
                "resource",
                concierge::oauth::admin_token::admin_resource_uri(&app.issuer).as_str(),
            ),
            ("scope", "admin"),
        ])
        .send()
        .await
        .unwrap();
    let (s, _, body) = split(res).await;
    if s == 200 {
        let sneaky = body["access_token"].as_str().unwrap();
        let (s, _, _) = get(&app, sneaky, "/admin/v1/users").await;
        assert_eq!(s, 403, "a dynamic client's token is not an admin token");
    }

    // Users cannot delegate administration: /authorize refuses the admin resource.
    let agent = public_client(&app).await;
    let (_, challenge) = pkce();
    let admin_uri = concierge::oauth::admin_token::admin_resource_uri(&app.issuer);
    let params: Vec<(String, String)> = auth_params(&agent, &challenge, "admin")
        .into_iter()
        .map(|(k, v)| {
            if k == "resource" {
                (k, admin_uri.clone())
            } else {
                (k, v)
            }
        })
        .collect();
    let res = browser()
        .get(authorize_url(&app, &params))
        .send()
        .await
        .unwrap();
    // A self-registered client the user has not seen hears it on a page (RFC 9700 §4.11.2).
    assert_eq!(res.status(), 400);
    assert!(res.headers().get("location").is_none());
    assert!(res.text().await.unwrap().contains("invalid_target"));

    // Metadata does not advertise the admin scope to every client.
    let (_, _, m) = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert!(
        !m["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("admin")),
        "{m}"
    );
    assert!(
        m["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("tools:read")),
        "{m}"
    );

    // The admin token works.
    let (s, _, _) = get(&app, &token, "/admin/v1/users").await;
    assert_eq!(s, 200);
    app
});

both!(
    revoked_admin_tokens_are_refused,
    |app: TestApp| async move {
        let (id, secret, token) = admin_token(&app).await;
        assert_eq!(get(&app, &token, "/admin/v1/keys").await.0, 200);
        let res = app
            .http
            .post(app.url("/revoke"))
            .basic_auth(&id, Some(&secret))
            .form(&[("token", token.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let (s, h, body) = get(&app, &token, "/admin/v1/keys").await;
        assert_eq!(s, 401, "{body}");
        assert!(
            h["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        app
    }
);

both!(resources_and_exchange_policies, |app: TestApp| async move {
    let (_, _, t) = admin_token(&app).await;
    let (s, _, r) = post(
        &app,
        &t,
        "/admin/v1/resources",
        json!({"uri": "https://notes.example/mcp/", "name": "Notes",
               "scopes": [{"name": "notes:read", "description": "Read notes"}]}),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["uri"], "https://notes.example/mcp/");
    assert_eq!(r["scopes"][0]["name"], "notes:read");
    // Tools, declared with the scope each needs.
    let (s, _, r) = post(
        &app,
        &t,
        "/admin/v1/resources",
        json!({"uri": "https://things.example/mcp", "name": "Things",
               "scopes": [{"name": "t:read", "description": "Read",
                           "tools": [{"name": "list_things", "description": "List things"}]}]}),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["scopes"][0]["tools"][0]["name"], "list_things");
    assert_invalid(
        &post(&app, &t, "/admin/v1/resources",
            json!({"uri": "https://y.example/m", "name": "Y",
                   "scopes": [{"name": "a", "description": "A", "tools": [{"name": "bad name", "description": "x"}]}]}))
        .await,
        "scopes[0]",
    );
    // Duplicate: 409.
    let (s, _, body) = post(
        &app,
        &t,
        "/admin/v1/resources",
        json!({"uri": "https://notes.example/mcp/", "name": "Again"}),
    )
    .await;
    assert_eq!(s, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    // Validation errors name the field.
    assert_invalid(
        &post(&app, &t, "/admin/v1/resources",
            json!({"uri": "https://x.example/m", "name": "X",
                   "scopes": [{"name": "a", "description": "A"}, {"name": "openid", "description": "no"}]}))
        .await,
        "scopes[1]",
    );
    assert_invalid(
        &post(
            &app,
            &t,
            "/admin/v1/resources",
            json!({"uri": "not a uri", "name": "X"}),
        )
        .await,
        "uri",
    );
    assert_invalid(
        &post(
            &app,
            &t,
            "/admin/v1/resources",
            json!({"uri": "https://x.example/m", "name": 7}),
        )
        .await,
        "name",
    );
    // Not JSON at all: still the envelope, never a 500.
    let res = app
        .http
        .post(app.url("/admin/v1/resources"))
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    let (s, _, body) = split(res).await;
    assert_eq!(s, 400);
    assert_eq!(body["error"]["code"], "validation_failed");

    let path = format!("/admin/v1/resources/{}", enc("https://notes.example/mcp/"));
    let (s, _, got) = get(&app, &t, &path).await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(got["name"], "Notes");
    let (s, _, list) = get(&app, &t, "/admin/v1/resources").await;
    assert_eq!(s, 200);
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "Notes")
    );

    // Exchange policies: allow, list, deny.
    post(
        &app,
        &t,
        "/admin/v1/resources",
        json!({"uri": "https://cal.example/mcp", "name": "Cal",
               "scopes": [{"name": "cal:read", "description": "Read"}]}),
    )
    .await;
    let policy = json!({"target": "https://cal.example/mcp", "client_id": "notes-server",
        "source": "https://notes.example/mcp/", "scope_map": {"notes:read": ["cal:read"]}});
    let (s, _, body) = call(
        &app,
        Some(&t),
        reqwest::Method::PUT,
        "/admin/v1/exchange-policies",
        Some(policy),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let bad = json!({"target": "https://cal.example/mcp", "client_id": "notes-server",
        "source": "https://notes.example/mcp/", "scope_map": {"notes:read": ["cal:write"]}});
    assert_invalid(
        &call(
            &app,
            Some(&t),
            reqwest::Method::PUT,
            "/admin/v1/exchange-policies",
            Some(bad),
        )
        .await,
        "scope_map.notes:read[0]",
    );
    assert_invalid(
        &call(
            &app,
            Some(&t),
            reqwest::Method::DELETE,
            "/admin/v1/exchange-policies?target=https%3A%2F%2Fcal.example%2Fmcp",
            None,
        )
        .await,
        "client_id",
    );
    assert_invalid(
        &post(&app, &t, "/admin/v1/resources", json!({"name": "No URI"})).await,
        "uri",
    );
    let (_, _, list) = get(&app, &t, "/admin/v1/exchange-policies").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let deny = format!(
        "/admin/v1/exchange-policies?target={}&client_id=notes-server&source={}",
        enc("https://cal.example/mcp"),
        enc("https://notes.example/mcp/")
    );
    assert_eq!(delete(&app, &t, &deny).await.0, 204);
    assert_eq!(delete(&app, &t, &deny).await.0, 404);

    // Delete; then 404, and the resource cache forgot it.
    assert_eq!(delete(&app, &t, &path).await.0, 204);
    let (s, _, body) = get(&app, &t, &path).await;
    assert_eq!(s, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let uri = concierge::oauth::resource::ResourceUri::parse("https://notes.example/mcp/").unwrap();
    assert!(app.state.oauth.resources.get(&uri).await.unwrap().is_none());
    // The admin API's own resource stays.
    let own = format!(
        "/admin/v1/resources/{}",
        enc(&concierge::oauth::admin_token::admin_resource_uri(
            &app.issuer
        ))
    );
    assert_eq!(delete(&app, &t, &own).await.0, 409);
    app
});

/// Serve one Client ID Metadata Document on loopback (cacheable for 60 s); its client_id.
async fn serve_document() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let id = format!(
        "http://127.0.0.1:{}/agent.json",
        listener.local_addr().unwrap().port()
    );
    let doc = json!({
        "client_id": id, "client_name": "Doc Agent",
        "redirect_uris": ["http://127.0.0.1/callback"], "token_endpoint_auth_method": "none"
    })
    .to_string();
    let app = axum::Router::new().route(
        "/agent.json",
        axum::routing::get(move || async move {
            (
                [
                    ("content-type", "application/json"),
                    ("cache-control", "max-age=60"),
                ],
                doc,
            )
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    id
}

both!(
    clients_pre_registered_and_dynamic,
    |c: &mut concierge::Config| c.cimd.allow_loopback = true,
    |app: TestApp| async move {
        let (admin_id, _, t) = admin_token(&app).await;
        assert_invalid(
        &post(&app, &t, "/admin/v1/clients",
            json!({"client_name": "Bad", "redirect_uris": ["https://ok.example/cb", "ftp://x"]}))
        .await,
        "redirect_uris[1]",
    );
        assert_invalid(
            &post(
                &app,
                &t,
                "/admin/v1/clients",
                json!({"client_name": "Bad", "grant_types": ["client_credentials"],
                   "token_endpoint_auth_method": "magic"}),
            )
            .await,
            "token_endpoint_auth_method",
        );
        let (s, _, made) = post(
            &app,
            &t,
            "/admin/v1/clients",
            json!({"client_name": "Backend", "client_id": "backend-1",
               "grant_types": ["client_credentials"], "scope": "tools:read"}),
        )
        .await;
        assert_eq!(s, 201, "{made}");
        assert_eq!(made["client"]["registration"], "pre_registered");
        let secret = made["client_secret"].as_str().unwrap();
        // The secret works at the token endpoint.
        add_tools_resource(&app).await;
        cc_token(&app, "backend-1", secret, TOOLS_RESOURCE, "tools:read").await;
        let (s, _, body) = post(&app, &t, "/admin/v1/clients",
        json!({"client_name": "Again", "client_id": "backend-1", "grant_types": ["client_credentials"]})).await;
        assert_eq!(s, 409, "{body}");

        let dynamic = public_client(&app).await;
        let (_, _, list) = get(&app, &t, "/admin/v1/clients").await;
        let kind = |id: &str| {
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["client_id"] == id)
                .map(|c| c["registration"].clone())
        };
        assert_eq!(kind("backend-1"), Some(json!("pre_registered")));
        assert_eq!(kind(&dynamic), Some(json!("dynamic")));
        assert_eq!(kind(&admin_id), Some(json!("pre_registered")));
        assert!(
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c.get("client_secret").is_none())
        );

        let (s, _, one) = get(&app, &t, &format!("/admin/v1/clients/{dynamic}")).await;
        assert_eq!(s, 200);
        assert_eq!(one["client_name"], "Test Agent");
        let (s, _, docs) = get(&app, &t, "/admin/v1/clients/metadata-documents").await;
        assert_eq!(s, 200, "{docs}");
        assert_eq!(docs["items"], json!([]));
        // A document client, once resolved, is listed while cached.
        let doc_id = serve_document().await;
        app.state
            .oauth
            .clients
            .find(&doc_id)
            .await
            .unwrap()
            .unwrap();
        let (_, _, docs) = get(&app, &t, "/admin/v1/clients/metadata-documents").await;
        let listed = &docs["items"][0];
        assert_eq!(listed["client_id"], doc_id.as_str(), "{docs}");
        assert_eq!(listed["client_name"], "Doc Agent");
        assert!(
            (1..=60).contains(&listed["expires_in"].as_u64().unwrap()),
            "{docs}"
        );

        assert_eq!(delete(&app, &t, "/admin/v1/clients/backend-1").await.0, 204);
        assert_eq!(get(&app, &t, "/admin/v1/clients/backend-1").await.0, 404);
        // Deleted means deleted at once on this replica: the cache forgot it.
        let res = app
            .http
            .post(app.url("/token"))
            .basic_auth("backend-1", Some(secret))
            .form(&[
                ("grant_type", "client_credentials"),
                ("resource", TOOLS_RESOURCE),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        app
    }
);

both!(users_and_consents, |app: TestApp| async move {
    let (_, _, t) = admin_token(&app).await;
    assert_invalid(
        &post(
            &app,
            &t,
            "/admin/v1/users",
            json!({"username": "bob", "password": "short"}),
        )
        .await,
        "password",
    );
    assert_invalid(
        &post(
            &app,
            &t,
            "/admin/v1/users",
            json!({"username": " ", "password": "long enough pw"}),
        )
        .await,
        "username",
    );
    let (s, _, bob) = post(
        &app,
        &t,
        "/admin/v1/users",
        json!({"username": "bob", "password": "long enough pw", "email": "bob@example.com"}),
    )
    .await;
    assert_eq!(s, 201, "{bob}");
    assert!(bob.get("password_hash").is_none() && bob.get("password").is_none());
    let bob_id = bob["id"].as_str().unwrap().to_string();
    assert_eq!(
        post(
            &app,
            &t,
            "/admin/v1/users",
            json!({"username": "bob", "password": "long enough pw"})
        )
        .await
        .0,
        409
    );
    let (s, _, got) = get(&app, &t, &format!("/admin/v1/users/{bob_id}")).await;
    assert_eq!((s.as_u16(), got["username"].clone()), (200, json!("bob")));
    let (s, _, _) = call(
        &app,
        Some(&t),
        reqwest::Method::PUT,
        &format!("/admin/v1/users/{bob_id}/password"),
        Some(json!({"password": "another long one"})),
    )
    .await;
    assert_eq!(s, 204);
    let stored = app.store().get_user(&bob_id).await.unwrap().unwrap();
    assert!(concierge::oauth::authn::password::verify(
        "another long one",
        stored.password_hash.as_deref().unwrap()
    ));
    assert_eq!(
        delete(&app, &t, &format!("/admin/v1/users/{bob_id}"))
            .await
            .0,
        204
    );
    assert_eq!(
        get(&app, &t, &format!("/admin/v1/users/{bob_id}")).await.0,
        404
    );

    // Alice connects an agent; revoking her consent ends its refresh tokens.
    let (alice, client, _, tokens) = connect_agent(&app, "notes:read").await;
    let rt = tokens["refresh_token"].as_str().unwrap().to_string();
    let (s, _, consents) = get(&app, &t, &format!("/admin/v1/users/{alice}/consents")).await;
    assert_eq!(s, 200, "{consents}");
    let c = consents["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["resource"] == NOTES)
        .unwrap()
        .clone();
    assert_eq!(c["client_id"], client.as_str());
    assert!(
        c["scopes"]
            .as_array()
            .unwrap()
            .contains(&json!("notes:read"))
    );
    let revoke = format!(
        "/admin/v1/users/{alice}/consents?client_id={}&resource={}",
        enc(&client),
        enc(NOTES)
    );
    assert_eq!(delete(&app, &t, &revoke).await.0, 204);
    assert_eq!(delete(&app, &t, &revoke).await.0, 404);
    let (s, _, body) = refresh(&app, &client, &rt, &[]).await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    app
});

both!(key_rotation_shows_in_jwks, |app: TestApp| async move {
    let (admin_id, admin_secret, t) = admin_token(&app).await;
    let (s, _, keys) = get(&app, &t, "/admin/v1/keys").await;
    assert_eq!(s, 200);
    assert!(
        keys["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["status"] == "active")
    );
    assert_invalid(
        &post(&app, &t, "/admin/v1/keys/rotate", json!({"alg": "HS256"})).await,
        "alg",
    );
    let (s, _, rotated) = post(&app, &t, "/admin/v1/keys/rotate", json!({"alg": "ES256"})).await;
    assert_eq!(s, 200, "{rotated}");
    let kid = rotated["kids"][0].as_str().unwrap().to_string();
    let (_, _, jwks) = app.get_json("/jwks").await;
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == kid.as_str()),
        "{jwks}"
    );
    // Published now, signing only after the activation delay.
    assert_eq!(rotated["keys"][0]["kid"], kid.as_str());
    assert!(rotated["keys"][0]["activates_at"].is_string(), "{rotated}");
    let (_, _, keys) = get(&app, &t, "/admin/v1/keys").await;
    let items = keys["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{keys}");
    let new = items.iter().find(|k| k["kid"] == kid.as_str()).unwrap();
    assert_eq!(new["status"], "pending", "{keys}");
    assert!(new["activates_at"].is_string(), "{keys}");
    let old = items
        .iter()
        .find(|k| k["alg"] == "ES256" && k["status"] == "active")
        .unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_string();
    // A second rotation while one is pending is refused.
    let (s, _, body) = post(&app, &t, "/admin/v1/keys/rotate", json!({"alg": "ES256"})).await;
    assert_eq!(s, 409, "{body}");

    // Revocation: unknown, pending (no replacement needed), active (replaced at once).
    let (s, _, _) = post(&app, &t, "/admin/v1/keys/nope/revoke", json!({})).await;
    assert_eq!(s, 404);
    let (s, _, r) = post(&app, &t, &format!("/admin/v1/keys/{kid}/revoke"), json!({})).await;
    assert_eq!(s, 200, "{r}");
    assert!(r["replacement"].is_null(), "{r}");
    let (s, _, _) = post(&app, &t, &format!("/admin/v1/keys/{kid}/revoke"), json!({})).await;
    assert_eq!(s, 409, "already revoked");
    let (s, _, r) = post(&app, &t, &format!("/admin/v1/keys/{old}/revoke"), json!({})).await;
    assert_eq!(s, 200, "{r}");
    let replacement = r["replacement"].as_str().unwrap().to_string();
    let (_, _, jwks) = app.get_json("/jwks").await;
    let published: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(published.contains(&replacement.as_str()), "{jwks}");
    assert!(!published.contains(&old.as_str()) && !published.contains(&kid.as_str()));
    // The admin token was signed with the revoked key: refused now, like every such token.
    let (s, _, _) = get(&app, &t, "/admin/v1/keys").await;
    assert_eq!(s, 401);
    let t = cc_token(
        &app,
        &admin_id,
        &admin_secret,
        &concierge::oauth::admin_token::admin_resource_uri(&app.issuer),
        "admin",
    )
    .await;
    let (_, _, keys) = get(&app, &t, "/admin/v1/keys").await;
    let status = |k: &str| {
        keys["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["kid"] == k)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status(&old), "revoked");
    assert_eq!(status(&replacement), "active");
    // Both revocations are audited.
    let (_, _, audit) = get(&app, &t, "/admin/v1/audit?type=key.revoked").await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 2, "{audit}");
    app
});

both!(audit_filters_and_pages, |app: TestApp| async move {
    let (admin_id, _, t) = admin_token(&app).await;
    for i in 0..5 {
        let (s, _, _) = post(
            &app,
            &t,
            "/admin/v1/resources",
            json!({"uri": format!("https://r{i}.example/mcp"), "name": format!("R{i}")}),
        )
        .await;
        assert_eq!(s, 201);
    }
    // Five admin changes by this client, newest first, two at a time.
    let mut seen = Vec::new();
    let mut path = "/admin/v1/audit?type=admin.change&limit=2".to_string();
    loop {
        let (s, _, page) = get(&app, &t, &path).await;
        assert_eq!(s, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        for e in items {
            assert_eq!(e["type"], "admin.change");
            assert_eq!(e["client_id"], admin_id.as_str());
            assert_eq!(e["detail"]["action"], "resource.create");
            seen.push(e["id"].as_i64().unwrap());
        }
        match page["next"].as_str() {
            Some(next) => {
                path = format!(
                    "/admin/v1/audit?type=admin.change&limit=2&cursor={}",
                    enc(next)
                )
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seen:?}"
    );
    // A kind's first part matches; other filters narrow.
    let (_, _, tokens) = get(&app, &t, "/admin/v1/audit?type=token").await;
    assert!(
        tokens["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "token.issued")
    );
    let (_, _, none) = get(
        &app,
        &t,
        &format!("/admin/v1/audit?client_id={}", enc("nobody")),
    )
    .await;
    assert_eq!(none["items"], json!([]));
    let (_, _, future) = get(&app, &t, "/admin/v1/audit?since=2999-01-01T00:00:00Z").await;
    assert_eq!(future["items"], json!([]));
    let (_, _, past) = get(&app, &t, "/admin/v1/audit?until=1000000").await;
    assert_eq!(past["items"], json!([]));
    let (_, _, recent) = get(
        &app,
        &t,
        &format!("/admin/v1/audit?since={}", concierge::util::now() - 600),
    )
    .await;
    assert!(!recent["items"].as_array().unwrap().is_empty());
    assert_invalid(
        &get(&app, &t, "/admin/v1/audit?since=yesterday").await,
        "since",
    );
    assert_invalid(&get(&app, &t, "/admin/v1/audit?limit=0").await, "limit");
    assert_invalid(&get(&app, &t, "/admin/v1/audit?cursor=!!").await, "cursor");
    assert_invalid(
        &get(&app, &t, "/admin/v1/audit?type=DROP%20TABLE").await,
        "type",
    );
    // Lists share the page shape.
    assert_invalid(
        &get(&app, &t, "/admin/v1/resources?limit=abc").await,
        "limit",
    );
    let (_, _, page) = get(&app, &t, "/admin/v1/resources?limit=2").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().unwrap();
    let (_, _, page2) = get(
        &app,
        &t,
        &format!("/admin/v1/resources?limit=2&cursor={}", enc(next)),
    )
    .await;
    assert_ne!(page["items"][0], page2["items"][0]);
    app
});

both!(openapi_document_is_served, |app: TestApp| async move {
    let (s, _, doc) = app.get_json("/openapi.json").await;
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let committed: Value = serde_json::from_str(&concierge::router::openapi_json()).unwrap();
    assert_eq!(doc, committed);
    for path in [
        "/token",
        "/authorize",
        "/register",
        "/introspect",
        "/revoke",
        "/device_authorization",
        "/userinfo",
        "/jwks",
        "/.well-known/oauth-authorization-server",
        "/admin/v1/clients",
        "/admin/v1/audit",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} documented");
    }
    app
});

both!(
    only_admin_clients_get_admin_tokens,
    builder |b: crate::helpers::TestAppBuilder<'static>| b
        .with_admin_client()
        // A service client an operator registered without a scope (as the calendar server
        // of mcp-examples/README.md is).
        .with_machine_client("Calendar server", None),
    |app: TestApp| async move {
        let admin_uri = concierge::oauth::admin_token::admin_resource_uri(&app.issuer);
        let service = app.machine_clients[0].clone();
        let res = app
            .http
            .post(app.url("/token"))
            .basic_auth(&service.client_id, Some(&service.secret))
            .form(&[
                ("grant_type", "client_credentials"),
                ("resource", admin_uri.as_str()),
                ("scope", "admin"),
            ])
            .send()
            .await
            .unwrap();
        crate::helpers::assert_error(&split(res).await, 400, "invalid_target", "admin");
        // Without asking for the scope either.
        let res = app
            .http
            .post(app.url("/token"))
            .basic_auth(&service.client_id, Some(&service.secret))
            .form(&[
                ("grant_type", "client_credentials"),
                ("resource", admin_uri.as_str()),
            ])
            .send()
            .await
            .unwrap();
        crate::helpers::assert_error(&split(res).await, 400, "invalid_target", "admin");

        // The admin client gets one and may call the API.
        let admin = app.admin_client.clone().unwrap();
        let token = cc_token(&app, &admin.client_id, &admin.secret, &admin_uri, "admin").await;
        let (s, _, body) = call(&app, Some(&token), reqwest::Method::GET, "/admin/v1/clients", None).await;
        assert_eq!(s, 200, "{body}");
        app
    }
);

both!(
    a_new_password_ends_sessions_and_agents_grants,
    |app: TestApp| async move {
        // alice connects an agent (a refresh token) in a browser session.
        let (alice, client, b, tokens) = connect_agent(&app, "notes:read").await;
        let rt = tokens["refresh_token"].as_str().unwrap().to_string();
        let apps = b.get(app.url("/account/apps")).send().await.unwrap();
        assert_eq!(apps.status(), 200, "signed in");

        // An operator sets a new password.
        let (_, _, token) = admin_token(&app).await;
        let (s, _, _) = call(
            &app,
            Some(&token),
            reqwest::Method::PUT,
            &format!("/admin/v1/users/{alice}/password"),
            Some(json!({"password": "a brand new password"})),
        )
        .await;
        assert_eq!(s, 204);

        // The browser is signed out and the agent must ask again.
        let apps = b.get(app.url("/account/apps")).send().await.unwrap();
        assert_eq!(apps.status(), 303, "signed out");
        let (s, _, body) = refresh(&app, &client, &rt, &[]).await;
        assert_eq!(s, 400, "{body}");
        assert_eq!(body["error"], "invalid_grant");
        app
    }
);

// A deleted user's refresh tokens go with them (`ON DELETE CASCADE`): the refresh grant
// relies on that, and reads the user only for an ID token's claims.
both!(
    a_deleted_users_refresh_token_is_refused,
    |app: TestApp| async move {
        let (_, client, _, tokens) = connect_agent(&app, "notes:read").await;
        let rt = tokens["refresh_token"].as_str().unwrap();
        let (s, _, body) = refresh(&app, &client, rt, &[]).await;
        assert_eq!(s, 200, "{body}");
        let rt = body["refresh_token"].as_str().unwrap();
        assert!(app.store().delete_user("alice").await.unwrap());
        let (s, _, body) = refresh(&app, &client, rt, &[]).await;
        assert_eq!(
            (s.as_u16(), body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{body}"
        );
        app
    }
);

// Issue 15.2: an operator disables a user: the right password no longer signs them in,
// their refresh tokens are revoked, `/userinfo` refuses their access tokens, a code they
// approved just before is not redeemed; enabled again, they sign in afresh.
both!(disabled_users_get_nothing, |app: TestApp| async move {
    let (alice, client, b, tokens) = connect_agent(&app, "openid notes:read").await;
    // Approved (her consent remembered) before she is disabled, redeemed after.
    let (verifier, challenge) = pkce();
    let params = auth_params(&client, &challenge, "openid notes:read");
    let pending = remembered_code(&app, &b, &params).await;
    let (_, _, token) = admin_token(&app).await;
    let at = tokens["access_token"].as_str().unwrap().to_string();
    let rt = tokens["refresh_token"].as_str().unwrap().to_string();
    let userinfo = || async {
        let res = app
            .http
            .get(app.url("/userinfo"))
            .bearer_auth(&at)
            .send()
            .await
            .unwrap();
        res.status().as_u16()
    };
    assert_eq!(userinfo().await, 200);
    add_tools_resource(&app).await;
    let (rs, rs_secret) =
        crate::introspection::static_client(&app, &["client_credentials"], true).await;
    let introspect = || async {
        let form = [
            ("client_id", rs.as_str()),
            ("client_secret", rs_secret.as_str()),
            ("token", at.as_str()),
        ];
        let (s, _, body) = crate::helpers::post_form(&app, "/introspect", form.to_vec(), &[]).await;
        assert_eq!(s, 200, "{body}");
        body
    };
    assert_eq!(introspect().await["active"], true);

    let (s, _, u) = post(
        &app,
        &token,
        &format!("/admin/v1/users/{alice}/disable"),
        json!({}),
    )
    .await;
    assert_eq!(s, 200, "{u}");
    assert!(u["disabled_at"].is_string(), "{u}");
    let (s, _, body) = refresh(&app, &client, &rt, &[]).await;
    assert_eq!(
        (s.as_u16(), body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    assert_eq!(userinfo().await, 401);
    assert_eq!(introspect().await, json!({ "active": false }));
    let (s, _, body) = redeem(&app, &client, &pending, &verifier, &[]).await;
    assert_eq!(
        (s.as_u16(), body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    // The code's spend checks its user; the refusal says why.
    assert_eq!(
        body["error_description"], "the user's account is disabled",
        "{body}"
    );
    let b = browser();
    let res = sign_in(&app, &b, &app.url("/signin"), "alice", PASSWORD).await;
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("disabled"));
    let wrong = sign_in(&app, &b, &app.url("/signin"), "alice", "not it at all").await;
    assert_eq!(
        wrong.status(),
        401,
        "a wrong password says nothing about the account"
    );

    let (s, _, u) = post(
        &app,
        &token,
        &format!("/admin/v1/users/{alice}/enable"),
        json!({}),
    )
    .await;
    assert_eq!(s, 200, "{u}");
    assert!(u.get("disabled_at").is_none(), "{u}");
    let res = sign_in(&app, &browser(), &app.url("/signin"), "alice", PASSWORD).await;
    assert_eq!(res.status(), 303);
    let (s, _, body) = refresh(&app, &client, &rt, &[]).await;
    assert_eq!(s, 400, "what was revoked stays revoked: {body}");
    // Her access token lives on with her account; deleted, she holds nothing.
    assert_eq!(introspect().await["active"], true);
    assert!(app.store().delete_user("alice").await.unwrap());
    assert_eq!(introspect().await, json!({ "active": false }));
    app
});

// Issue 15.2: admin clients are listed as such and revoked by deleting them; a revoked
// admin client's token is refused at once on this replica.
both!(
    admin_clients_are_revoked_by_deleting_them,
    |app: TestApp| async move {
        let (first, _, token) = admin_token(&app).await;
        let (second, _, second_token) = admin_token(&app).await;
        let (s, _, c) = get(&app, &token, &format!("/admin/v1/clients/{second}")).await;
        assert_eq!(s, 200, "{c}");
        assert_eq!(c["admin"], true);
        let (s, _, _) = get(&app, &second_token, "/admin/v1/users").await;
        assert_eq!(s, 200);
        let (s, _, _) = delete(&app, &token, &format!("/admin/v1/clients/{second}")).await;
        assert_eq!(s, 204);
        let (s, _, body) = get(&app, &second_token, "/admin/v1/users").await;
        assert_eq!(s, 403, "{body}");
        let (s, _, _) = get(&app, &token, &format!("/admin/v1/clients/{first}")).await;
        assert_eq!(s, 200, "the other admin client still works");
        app
    }
);

// Issue 15.2: a client secret is rotated with an overlap: both work until it ends; a second
// rotation ends the previous overlap at once; overlap 0 ends the old secret at once.
both!(
    client_secrets_rotate_with_an_overlap,
    |app: TestApp| async move {
        seed(&app).await;
        let (_, _, token) = admin_token(&app).await;
        let (id, first) = machine_client(&app).await;
        let works = |secret: String| {
            let (app, id) = (&app, id.clone());
            async move { machine_token(app, &id, &secret).await.0.as_u16() == 200 }
        };
        let rotate = |overlap: i64| {
            let (app, token, id) = (&app, token.clone(), id.clone());
            async move {
                post(
                    app,
                    &token,
                    &format!("/admin/v1/clients/{id}/secret"),
                    json!({ "overlap_secs": overlap }),
                )
                .await
            }
        };
        let (s, _, r) = rotate(600).await;
        assert_eq!(s, 200, "{r}");
        let second = r["client_secret"].as_str().unwrap().to_string();
        assert!(r["previous_secret_expires_at"].is_string(), "{r}");
        assert!(
            works(first.clone()).await,
            "the old secret, during the overlap"
        );
        assert!(works(second.clone()).await, "the new secret at once");

        let (s, _, r) = rotate(0).await;
        assert_eq!(s, 200, "{r}");
        assert!(r.get("previous_secret_expires_at").is_none(), "{r}");
        let third = r["client_secret"].as_str().unwrap().to_string();
        assert!(
            !works(first).await,
            "a second rotation ends the first overlap"
        );
        assert!(
            !works(second).await,
            "overlap 0: the old secret stops at once"
        );
        assert!(works(third).await);

        let (s, _, e) = rotate(-1).await;
        assert_eq!(
            (s.as_u16(), e["error"]["field"].as_str()),
            (400, Some("overlap_secs")),
            "{e}"
        );
        let (s, _, _) = post(&app, &token, "/admin/v1/clients/nobody/secret", json!({})).await;
        assert_eq!(s, 404);
        let public = public_client(&app).await;
        let (s, _, e) = post(
            &app,
            &token,
            &format!("/admin/v1/clients/{public}/secret"),
            json!({}),
        )
        .await;
        assert_eq!(s, 400, "a public client has no secret: {e}");
        app
    }
);

// Issue 15.2: an operator edits a resource's scopes and name; what was removed is no longer
// granted; the admin API's own resource is not edited here.
both!(resources_are_edited, |app: TestApp| async move {
    seed(&app).await;
    let (_, _, token) = admin_token(&app).await;
    let path = format!(
        "/admin/v1/resources/{}",
        url::form_urlencoded::byte_serialize(NOTES.as_bytes()).collect::<String>()
    );
    let patch = |body: Value| {
        let (app, token, path) = (&app, token.clone(), path.clone());
        async move { call(app, Some(&token), reqwest::Method::PATCH, &path, Some(body)).await }
    };
    let (s, _, r) = patch(json!({
        "name": "Team notes",
        "scopes": [{ "name": "notes:read", "description": "Read your notes" }],
    }))
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["name"], "Team notes");
    assert_eq!(r["scopes"].as_array().unwrap().len(), 1, "{r}");
    let (id, secret) = machine_client(&app).await;
    let write = [
        ("grant_type", "client_credentials"),
        ("client_id", id.as_str()),
        ("client_secret", secret.as_str()),
        ("resource", NOTES),
        ("scope", "notes:write"),
    ];
    let r = crate::helpers::post_form(&app, "/token", write.to_vec(), &[]).await;
    crate::helpers::assert_error(&r, 400, "invalid_scope", "notes:write");
    let (s, _, _) = machine_token(&app, &id, &secret).await;
    assert_eq!(s, 200, "notes:read is still granted");

    let (s, _, e) = patch(json!({ "scopes": [
        { "name": "a", "description": "A" }, { "name": "a", "description": "again" }
    ]}))
    .await;
    assert_eq!(
        (s.as_u16(), e["error"]["field"].as_str()),
        (400, Some("scopes[1].name")),
        "{e}"
    );
    let (s, _, e) = patch(json!({ "dpop": "sometimes" })).await;
    assert_eq!(
        (s.as_u16(), e["error"]["field"].as_str()),
        (400, Some("dpop")),
        "{e}"
    );
    let admin_path = format!(
        "/admin/v1/resources/{}",
        url::form_urlencoded::byte_serialize(
            concierge::oauth::admin_token::admin_resource_uri(&app.issuer).as_bytes()
        )
        .collect::<String>()
    );
    let (s, _, e) = call(
        &app,
        Some(&token),
        reqwest::Method::PATCH,
        &admin_path,
        Some(json!({ "scopes": [] })),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    let (s, _, _) = call(
        &app,
        Some(&token),
        reqwest::Method::PATCH,
        "/admin/v1/resources/https%3A%2F%2Fnowhere.example",
        Some(json!({ "name": "x" })),
    )
    .await;
    assert_eq!(s, 404);
    app
});

// Issue 15.2: a pre-registered client with inline keys (no jwks_uri to host), changed in
// place: new keys replace the old at once; bad changes name the field; dynamically
// registered clients are their registrant's to change.
both!(clients_are_updated_in_place, |app: TestApp| async move {
    use crate::private_key_jwt::TestKey;
    seed(&app).await;
    let (_, _, token) = admin_token(&app).await;
    let (k1, k2) = (TestKey::es256("k1"), TestKey::es256("k2"));
    let (s, _, c) = post(
        &app,
        &token,
        "/admin/v1/clients",
        json!({
            "client_name": "Signer",
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": { "keys": [k1.jwk] },
            "scope": "notes:read",
        }),
    )
    .await;
    assert_eq!(s, 201, "{c}");
    let id = c["client"]["client_id"]
        .as_str()
        .or(c["client_id"].as_str())
        .unwrap()
        .to_string();
    let with_key = |key: &TestKey| {
        let now = concierge::util::now();
        let assertion = key.sign(&json!({
            "iss": id, "sub": id, "aud": app.issuer, "iat": now, "exp": now + 60,
            "jti": concierge::util::random_id(),
        }));
        let (app, id) = (&app, id.clone());
        async move {
            let form = vec![
                ("grant_type", "client_credentials".to_string()),
                ("client_id", id),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ),
                ("client_assertion", assertion),
                ("resource", NOTES.into()),
                ("scope", "notes:read".into()),
            ];
            let res = app
                .http
                .post(app.url("/token"))
                .form(&form)
                .send()
                .await
                .unwrap();
            res.status().as_u16()
        }
    };
    assert_eq!(with_key(&k1).await, 200);
    assert_eq!(with_key(&k2).await, 401, "not its key yet");

    let path = format!("/admin/v1/clients/{id}");
    let patch = |body: Value| {
        let (app, token, path) = (&app, token.clone(), path.clone());
        async move { call(app, Some(&token), reqwest::Method::PATCH, &path, Some(body)).await }
    };
    let (s, _, c) = patch(json!({ "client_name": "Signer 2", "jwks": { "keys": [k2.jwk] } })).await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["client_name"], "Signer 2");
    assert_eq!(with_key(&k2).await, 200, "the new key at once");
    assert_eq!(with_key(&k1).await, 401, "the old key no longer");

    let (s, _, e) = patch(json!({ "jwks_uri": "https://keys.example/jwks" })).await;
    assert_eq!(s, 400, "jwks and jwks_uri both: {e}");
    let (s, _, e) = patch(json!({ "grant_types": ["password"] })).await;
    assert_eq!(s, 400, "{e}");
    let (s, _, e) = patch(json!({ "client_name": " " })).await;
    assert_eq!(
        (s.as_u16(), e["error"]["field"].as_str()),
        (400, Some("client_name")),
        "{e}"
    );
    let (s, _, _) = call(
        &app,
        Some(&token),
        reqwest::Method::PATCH,
        "/admin/v1/clients/nobody",
        Some(json!({ "client_name": "x" })),
    )
    .await;
    assert_eq!(s, 404);
    let dynamic = public_client(&app).await;
    let (s, _, e) = call(
        &app,
        Some(&token),
        reqwest::Method::PATCH,
        &format!("/admin/v1/clients/{dynamic}"),
        Some(json!({ "client_name": "x" })),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    app
});

// Issue 15.2: an operator makes a user choose a new password: they are signed out and their
// refresh tokens revoked; the right password alone no longer completes a sign-in; a new one
// (twice, acceptable, not the old one) does, and the old one stops working.
both!(
    password_change_is_required_at_next_sign_in,
    |app: TestApp| async move {
        let (alice, client, _, tokens) = connect_agent(&app, "notes:read").await;
        let (_, _, token) = admin_token(&app).await;
        let rt = tokens["refresh_token"].as_str().unwrap().to_string();
        let (s, _, _) = post(
            &app,
            &token,
            &format!("/admin/v1/users/{alice}/require-password-change"),
            json!({}),
        )
        .await;
        assert_eq!(s, 204);
        let (s, _, u) = get(&app, &token, &format!("/admin/v1/users/{alice}")).await;
        assert_eq!(
            (s.as_u16(), &u["password_change_required"]),
            (200, &json!(true)),
            "{u}"
        );
        let (s, _, _) = refresh(&app, &client, &rt, &[]).await;
        assert_eq!(s, 400, "refresh tokens revoked");

        let attempt = |password: &'static str, new: Option<(&'static str, &'static str)>| {
            let app = &app;
            async move {
                let b = browser();
                let page = b.get(app.url("/signin")).send().await.unwrap();
                let mut form = hidden_inputs(&page.text().await.unwrap());
                form.push(("username".into(), "alice".into()));
                form.push(("password".into(), password.into()));
                if let Some((a, b2)) = new {
                    form.push(("new_password".into(), a.into()));
                    form.push(("new_password_again".into(), b2.into()));
                }
                let res = b.post(app.url("/signin")).form(&form).send().await.unwrap();
                let status = res.status().as_u16();
                (status, res.text().await.unwrap())
            }
        };
        let (s, page) = attempt(PASSWORD, None).await;
        assert_eq!(s, 200);
        assert!(page.contains("name=\"new_password\"") && page.contains("choose a new password"));
        let (s, page) = attempt(PASSWORD, Some(("a brand new one", "a brand new two"))).await;
        assert_eq!(s, 400, "{page}");
        let (s, _) = attempt(PASSWORD, Some(("short", "short"))).await;
        assert_eq!(s, 400);
        let (s, _) = attempt(PASSWORD, Some((PASSWORD, PASSWORD))).await;
        assert_eq!(s, 400, "the old password again");
        let (s, _) = attempt(
            "not the password",
            Some(("a brand new one", "a brand new one")),
        )
        .await;
        assert_eq!(s, 401, "a wrong current password changes nothing");
        let (s, _) = attempt(PASSWORD, Some(("a brand new one", "a brand new one"))).await;
        assert_eq!(s, 303, "signed in with the new password set");
        let (s, _) = attempt(PASSWORD, None).await;
        assert_eq!(s, 401, "the old password is gone");
        let (s, _) = attempt("a brand new one", None).await;
        assert_eq!(s, 303, "and nothing more is asked");
        app
    }
);

// Discovery is cached (`resources.cache_secs`); a change through the admin API shows in it
// at once, not after the cache expires.
both!(
    discovery_shows_an_admin_change_at_once,
    |app: TestApp| async move {
        let (_, _, t) = admin_token(&app).await;
        let scopes = |m: &Value| m["scopes_supported"].as_array().unwrap().clone();
        let (_, _, before) = app
            .get_json("/.well-known/oauth-authorization-server")
            .await;
        assert!(!scopes(&before).contains(&json!("fresh:read")), "{before}");
        let (s, _, r) = post(
            &app,
            &t,
            "/admin/v1/resources",
            json!({"uri": "https://fresh.example/mcp", "name": "Fresh",
                   "scopes": [{"name": "fresh:read", "description": "Read"}]}),
        )
        .await;
        assert_eq!(s, 201, "{r}");
        let (_, _, after) = app
            .get_json("/.well-known/oauth-authorization-server")
            .await;
        assert!(scopes(&after).contains(&json!("fresh:read")), "{after}");
        app
    }
);
