//! What deployed agents send (issue 18): resource identifiers as clients write them, a
//! sign-in with no resource at all, refresh tokens without `offline_access`, client secrets
//! in either place, and `application_type` left out.

use concierge::manage;
use concierge::oauth::resource::ScopeDef;
use serde_json::{Value, json};

use crate::both;
use crate::flow::{
    add_user, auth_params, authorize_and_approve, browser, claims, pkce, public_client, query,
    redeem, refresh,
};
use crate::helpers::{TestApp, assert_error, post_form};

const MCP: &str = "https://mcp.example.com/mcp";
const OLD_NAME: &str = "https://tools.example.net/mcp";

async fn add_mcp_resource(app: &TestApp) {
    manage::create_resource(
        app.store().as_ref(),
        MCP,
        "Tools",
        vec![ScopeDef::parse("tools:read=Use your tools").unwrap()],
        &manage::ResourceOptions {
            aliases: vec![OLD_NAME.to_string()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

async fn cc(app: &TestApp, id: &str, secret: &str, resource: &str) -> (u16, Value) {
    let res = app
        .http
        .post(app.url("/token"))
        .basic_auth(id, Some(secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", resource),
            ("scope", "tools:read"),
        ])
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

both!(resources_as_clients_write_them, |app: TestApp| async move {
    add_mcp_resource(&app).await;
    let (id, secret) = app
        .add_machine_client("client_secret_basic", Some("tools:read"))
        .await;
    // RFC 3986 §6.2.2 / §6.2.3: case, a default port and a trailing slash make no
    // difference; an operator's alias names the resource too. Tokens carry the registered form.
    for written in [
        MCP,
        "https://mcp.example.com/mcp/",
        "HTTPS://MCP.Example.COM:443/mcp",
        "https://mcp.example.com:443/mcp/",
        OLD_NAME,
        "https://TOOLS.example.net/mcp/",
    ] {
        let (status, body) = cc(&app, &id, &secret, written).await;
        assert_eq!(status, 200, "{written}: {body}");
        let c = claims(body["access_token"].as_str().unwrap());
        assert_eq!(c["aud"], MCP, "{written}");
    }
    // Anything else is still not the resource.
    for other in [
        "https://mcp.example.com/mcp2",
        "https://mcp.example.com/",
        "https://mcp.example.com:8443/mcp",
        "http://mcp.example.com/mcp",
    ] {
        let (status, body) = cc(&app, &id, &secret, other).await;
        assert_eq!(status, 400, "{other}: {body}");
        assert_eq!(body["error"], "invalid_target", "{other}");
    }

    // The code flow too: an agent that adds a slash gets the registered resource.
    add_user(&app, "alice").await;
    let client = public_client(&app).await;
    let (verifier, challenge) = pkce();
    let mut params = auth_params(&client, &challenge, "tools:read");
    params.retain(|(k, _)| k != "resource" && k != "nonce");
    params.push(("resource".into(), "https://mcp.example.com/mcp/".into()));
    let back = authorize_and_approve(&app, &browser(), &params).await;
    let got = redeem(
        &app,
        &client,
        &query(&back)["code"],
        &verifier,
        &[("resource", OLD_NAME)],
    )
    .await;
    assert_eq!(got.0, 200, "{}", got.2);
    assert_eq!(claims(got.2["access_token"].as_str().unwrap())["aud"], MCP);
    app
});

both!(
    aliases_never_name_two_resources,
    builder | b | b.with_admin_client(),
    |app: TestApp| async move {
        add_mcp_resource(&app).await;
        let store = app.store();
        for (uri, aliases, why) in [
            (
                "https://mcp.example.com/mcp/",
                vec![],
                "the registered URI's twin",
            ),
            (
                "https://other.example/mcp",
                vec![MCP.to_string()],
                "a registered URI",
            ),
            (
                "https://other.example/mcp",
                vec![format!("{OLD_NAME}/")],
                "an alias's twin",
            ),
            ("https://tools.example.net/mcp", vec![], "an alias"),
        ] {
            let options = manage::ResourceOptions {
                aliases,
                ..Default::default()
            };
            let got = manage::create_resource(store.as_ref(), uri, "Other", vec![], &options).await;
            assert!(
                matches!(got, Err(manage::ManageError::Conflict(_))),
                "{why}: {:?}",
                got.err()
            );
        }
        // The admin API takes and shows aliases.
        let admin = app.admin_client.clone().unwrap();
        let token = crate::flow::cc_token(
            &app,
            &admin.client_id,
            &admin.secret,
            &concierge::oauth::admin_token::admin_resource_uri(&app.issuer),
            "admin",
        )
        .await;
        let res = app
            .http
            .post(app.url("/admin/v1/resources"))
            .bearer_auth(&token)
            .json(&json!({
                "uri": "https://calendar.example/mcp",
                "name": "Calendar",
                "aliases": ["https://cal.example/mcp"],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["aliases"], json!(["https://cal.example/mcp"]));
        let res = app
            .http
            .post(app.url("/admin/v1/resources"))
            .bearer_auth(&token)
            .json(&json!({"uri": "https://cal.example/mcp/", "name": "Again"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 409, "an alias cannot be registered again");
        // Removing a resource frees its aliases.
        manage::delete_resource(store.as_ref(), MCP).await.unwrap();
        manage::create_resource(
            store.as_ref(),
            OLD_NAME,
            "Renamed",
            vec![],
            &Default::default(),
        )
        .await
        .unwrap();
        app
    }
);

both!(
    identity_only_sign_in_needs_no_resource,
    |app: TestApp| async move {
        // No resource registered at all: Concierge as a plain OpenID provider.
        add_user(&app, "alice").await;
        let client = public_client(&app).await;
        let (verifier, challenge) = pkce();
        let mut params = auth_params(&client, &challenge, "openid profile email");
        params.retain(|(k, _)| k != "resource");
        let b = browser();
        let back = authorize_and_approve(&app, &b, &params).await;
        let (status, _, tokens) =
            redeem(&app, &client, &query(&back)["code"], &verifier, &[]).await;
        assert_eq!(status, 200, "{tokens}");
        let id_token = claims(tokens["id_token"].as_str().unwrap());
        assert_eq!(id_token["aud"], client);
        assert_eq!(id_token["nonce"], "n-456");
        let access = claims(tokens["access_token"].as_str().unwrap());
        assert_eq!(access["aud"], app.url("/userinfo"), "userinfo alone");
        assert_eq!(access["scope"], "openid profile email");
        let info: Value = app
            .http
            .get(app.url("/userinfo"))
            .bearer_auth(tokens["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(info["preferred_username"], "alice", "{info}");

        // SEP-2207: a client that registered the refresh grant gets a refresh token without
        // asking for offline_access, and it works.
        let rt = tokens["refresh_token"].as_str().expect("a refresh token");
        let (status, _, again) = refresh(&app, &client, rt, &[]).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(
            claims(again["access_token"].as_str().unwrap())["aud"],
            app.url("/userinfo")
        );
        // Naming a resource on the token request cannot add one.
        let rt = again["refresh_token"].as_str().unwrap();
        let got = refresh(&app, &client, rt, &[("resource", MCP)]).await;
        assert_error(&got, 400, "invalid_target", "not granted");

        // Asking for a resource's scope still needs the resource (shown on a page: a
        // self-registered client's errors before sign-in are never redirects, RFC 9700 §4.11.2).
        let mut params = auth_params(&client, &challenge, "openid tools:read");
        params.retain(|(k, _)| k != "resource");
        let res = b
            .get(crate::flow::authorize_url(&app, &params))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
        let page = res.text().await.unwrap();
        assert!(page.contains("resource is required"), "{page}");
        app
    }
);

both!(client_secrets_either_way, |app: TestApp| async move {
    add_mcp_resource(&app).await;
    for registered in ["client_secret_basic", "client_secret_post"] {
        let (id, secret) = app.add_machine_client(registered, Some("tools:read")).await;
        // In the Authorization header…
        let (status, body) = cc(&app, &id, &secret, MCP).await;
        assert_eq!(status, 200, "{registered} as basic: {body}");
        // …or in the body.
        let form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", id.as_str()),
            ("client_secret", secret.as_str()),
            ("resource", MCP),
        ];
        let got = post_form(&app, "/token", form.clone(), &[]).await;
        assert_eq!(got.0, 200, "{registered} as post: {}", got.2);
        // Never both at once.
        let res = app
            .http
            .post(app.url("/token"))
            .basic_auth(&id, Some(&secret))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_error(
            &crate::helpers::split(res).await,
            400,
            "invalid_request",
            "one client authentication method",
        );
        // A wrong secret is a wrong secret either way.
        let (status, body) = cc(&app, &id, "not-the-secret", MCP).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client"))
        );
    }
    // Never a secret for a public client.
    let public = public_client(&app).await;
    let form = vec![
        ("grant_type", "authorization_code"),
        ("client_id", public.as_str()),
        ("client_secret", "anything"),
        ("code", "x"),
        ("code_verifier", "y"),
    ];
    let got = post_form(&app, "/token", form, &[]).await;
    assert_error(&got, 401, "invalid_client", "registered for none");
    app
});

both!(
    application_type_left_out_or_native,
    |app: TestApp| async move {
        for (redirect, expected) in [
            (
                "cursor://anysphere.cursor-retrieval/oauth/user-mcp/callback",
                "native",
            ),
            (
                "vscode://vscode.github-authentication/did-authenticate",
                "native",
            ),
            ("http://127.0.0.1:6274/oauth/callback", "native"),
            ("https://claude.ai/api/mcp/auth_callback", "web"),
        ] {
            let (status, _, body) = app
                .register(&json!({
                    "client_name": "Agent",
                    "redirect_uris": [redirect],
                    "token_endpoint_auth_method": "none",
                }))
                .await;
            assert_eq!(status, 201, "{redirect}: {body}");
            assert_eq!(body["application_type"], expected, "{redirect}");
        }
        // SEP-837: a web application uses https redirect URIs.
        let got = app
            .register(&json!({
                "redirect_uris": ["cursor://anysphere.cursor-retrieval/cb"],
                "application_type": "web",
                "token_endpoint_auth_method": "none",
            }))
            .await;
        assert_error(&got, 400, "invalid_redirect_uri", "native");
        app
    }
);

/// One recorded shape from `tests/fixtures/agents/`.
struct Fixture {
    file: String,
    shape: Value,
}

fn fixtures() -> Vec<Fixture> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agents");
    let mut out: Vec<Fixture> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| Fixture {
            file: p.file_name().unwrap().to_string_lossy().into_owned(),
            shape: serde_json::from_slice(&std::fs::read(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        })
        .collect();
    out.sort_by(|a, b| a.file.cmp(&b.file));
    assert!(out.len() >= 8, "the recorded shapes are there");
    out
}

/// Serve every fixture's metadata document on loopback under its file name.
async fn serve_documents(docs: Vec<(String, Value)>) -> String {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let docs: std::collections::HashMap<String, Value> = docs
        .into_iter()
        .map(|(file, mut doc)| {
            doc["client_id"] = json!(format!("{base}/{file}"));
            (format!("/{file}"), doc)
        })
        .collect();
    let docs = std::sync::Arc::new(docs);
    let app = axum::Router::new().fallback(get(move |uri: axum::http::Uri| {
        let docs = docs.clone();
        async move {
            match docs.get(uri.path()) {
                Some(d) => (
                    axum::http::StatusCode::OK,
                    [("content-type", "application/json")],
                    d.to_string(),
                ),
                None => (
                    axum::http::StatusCode::NOT_FOUND,
                    [("content-type", "text/plain")],
                    String::new(),
                ),
            }
        }
    }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

both!(
    recorded_agent_shapes,
    |c: &mut concierge::Config| c.cimd.allow_loopback = true,
    |app: TestApp| async move {
        add_mcp_resource(&app).await;
        let all = fixtures();
        let docs: Vec<(String, Value)> = all
            .iter()
            .filter_map(|f| Some((f.file.clone(), f.shape.get("metadata_document")?.clone())))
            .collect();
        let base = serve_documents(docs).await;
        for f in &all {
            let what = format!("{} ({})", f.file, f.shape["agent"]);
            assert!(
                f.shape["source"].as_str().is_some_and(|s| s.len() > 20),
                "{what}: say where the shape comes from"
            );
            let (client_id, redirect, info) = if let Some(body) = f.shape.get("registration") {
                let (status, _, info) = app.register(body).await;
                assert_eq!(status, 201, "{what}: {info}");
                (
                    info["client_id"].as_str().unwrap().to_string(),
                    body["redirect_uris"][0].as_str().unwrap().to_string(),
                    info,
                )
            } else {
                let doc = &f.shape["metadata_document"];
                let id = format!("{base}/{}", f.file);
                let client = app
                    .state
                    .oauth
                    .clients
                    .find(&id)
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e}"))
                    .unwrap_or_else(|| panic!("{what}: not found"));
                let info = serde_json::to_value(client.metadata.as_ref()).unwrap();
                (
                    id,
                    doc["redirect_uris"][0].as_str().unwrap().to_string(),
                    info,
                )
            };
            for (field, expected) in f.shape["expect"].as_object().unwrap() {
                assert_eq!(&info[field], expected, "{what}: {field}");
            }
            // The code flow starts: a redirect to the sign-in page, not an error.
            let (_, challenge) = pkce();
            let params = [
                ("response_type", "code"),
                ("client_id", client_id.as_str()),
                ("redirect_uri", redirect.as_str()),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
                ("scope", "tools:read"),
                ("state", "s"),
                ("resource", MCP),
            ];
            let res = browser()
                .get(format!(
                    "{}?{}",
                    app.url("/authorize"),
                    serde_urlencoded::to_string(params).unwrap()
                ))
                .send()
                .await
                .unwrap();
            let to = crate::flow::location(&res);
            assert_eq!(res.status(), 303, "{what}: {to}");
            assert!(to.contains("/signin?"), "{what}: {to}");
        }
        app
    }
);

both!(
    resources_choose_how_their_tokens_look,
    |app: TestApp| async move {
        // A resource server whose framework verifies RS256 Bearer tokens only (FastMCP's
        // JWTVerifier with its defaults), and one that takes only DPoP-bound tokens.
        let store = app.store();
        let tools = || vec![ScopeDef::parse("tools:read").unwrap()];
        let options = |alg: &str, dpop: &str| manage::ResourceOptions {
            token_alg: Some(alg.into()),
            dpop: Some(dpop.into()),
            ..Default::default()
        };
        let plain = "https://fastmcp.example/mcp";
        let strict = "https://strict.example/mcp";
        manage::create_resource(
            store.as_ref(),
            plain,
            "Plain",
            tools(),
            &options("RS256", "off"),
        )
        .await
        .unwrap();
        manage::create_resource(
            store.as_ref(),
            strict,
            "Strict",
            tools(),
            &options("ES256", "required"),
        )
        .await
        .unwrap();
        let bad =
            manage::create_resource(store.as_ref(), MCP, "X", tools(), &options("HS256", "off"))
                .await;
        assert!(
            matches!(bad, Err(manage::ManageError::Invalid { .. })),
            "{:?}",
            bad.err()
        );
        let (id, secret) = app
            .add_machine_client("client_secret_basic", Some("tools:read"))
            .await;
        let key = crate::dpop::DpopKey::new();
        let request = |resource: &'static str, proof: bool| {
            let mut req = app
                .http
                .post(app.url("/token"))
                .basic_auth(&id, Some(&secret))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("resource", resource),
                    ("scope", "tools:read"),
                ]);
            if proof {
                req = req.header("DPoP", key.proof("POST", &app.url("/token")));
            }
            req
        };

        // RFC 9449 §5: a proof may be answered with a Bearer token; the client sees token_type.
        let (s, _, body) = crate::helpers::split(request(plain, true).send().await.unwrap()).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        let at = body["access_token"].as_str().unwrap();
        let c = crate::flow::verify(&app, at, jsonwebtoken::Algorithm::RS256, plain);
        assert!(c.get("cnf").is_none(), "not bound: {c}");

        // Only bound tokens: no proof, no token.
        let got = crate::helpers::split(request(strict, false).send().await.unwrap()).await;
        assert_error(&got, 400, "invalid_dpop_proof", "only DPoP-bound");
        let (s, _, body) = crate::helpers::split(request(strict, true).send().await.unwrap()).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["token_type"], "DPoP");
        let c = crate::flow::verify(
            &app,
            body["access_token"].as_str().unwrap(),
            jsonwebtoken::Algorithm::ES256,
            strict,
        );
        assert_eq!(c["cnf"]["jkt"], key.jkt());
        app
    }
);
