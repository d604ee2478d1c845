//! Scope rules for MCP operations read from the JSON-RPC body: tools,
//! prompts and resources, alternatives, hierarchies, default-deny, rules
//! checked against the operations the server has, and a handler's step-up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::Router;
use axum::routing::post;
use common::{Protected, Reply};
use concierge_guard::test::TestIssuer;
use concierge_guard::{BuildError, Guard, Principal, ScopeRule, StepUp};
use serde_json::json;

fn call(method: &str, params: serde_json::Value) -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string()
}

fn tool(name: &str) -> String {
    call("tools/call", json!({"name": name, "arguments": {}}))
}

#[tokio::test]
async fn tools_prompts_and_resources_with_alternatives_and_a_hierarchy() {
    let issuer = TestIssuer::new();
    let app = Protected::start(&issuer, |b| {
        b.required_scopes(["notes:read"])
            .tool_scopes("add_note", ["notes:write"])
            .tool_scopes(
                "delete_note",
                ScopeRule::any_of(["notes:delete", "notes:admin"]),
            )
            .prompt_scopes("summarise", ["notes:summarise"])
            .resource_scopes("notes://*", ["notes:read"])
            .resource_scopes("notes://private/*", ["notes:private"])
            .scope_implies("notes:admin", ["notes:write", "notes:private"])
            .scope_implies("notes:write", ["notes:read"])
    })
    .await;
    let token = |scopes: &[&str]| issuer.token(&app.resource).scopes(scopes).sign();
    let post = |token: String, body: String| {
        let app = &app;
        async move { app.post("/mcp", Some(&token), &body).await }
    };
    let refused = |reply: Reply, scope: &str| {
        reply.assert_refused(403, Some("insufficient_scope"));
        reply.assert_challenge_contains(&format!("scope=\"{scope}\""));
    };

    refused(
        post(token(&["notes:read"]), tool("add_note")).await,
        "notes:read notes:write",
    );
    assert_eq!(
        post(token(&["notes:read", "notes:write"]), tool("add_note"))
            .await
            .status,
        200
    );
    // notes:write implies notes:read: the required scope is satisfied too.
    assert_eq!(
        post(token(&["notes:write"]), tool("add_note")).await.status,
        200
    );

    // any_of: either scope; the challenge names the first.
    refused(
        post(token(&["notes:read"]), tool("delete_note")).await,
        "notes:read notes:delete",
    );
    assert_eq!(
        post(token(&["notes:read", "notes:delete"]), tool("delete_note"))
            .await
            .status,
        200
    );
    // notes:admin passes delete_note directly and everything else through the hierarchy.
    for body in [
        tool("delete_note"),
        tool("add_note"),
        call("resources/read", json!({"uri": "notes://private/7"})),
    ] {
        assert_eq!(post(token(&["notes:admin"]), body).await.status, 200);
    }

    // prompts/get and resources/read, the most specific resource pattern winning.
    let summarise = call("prompts/get", json!({"name": "summarise"}));
    refused(
        post(token(&["notes:read"]), summarise.clone()).await,
        "notes:read notes:summarise",
    );
    assert_eq!(
        post(token(&["notes:read", "notes:summarise"]), summarise)
            .await
            .status,
        200
    );
    let private = call("resources/read", json!({"uri": "notes://private/7"}));
    refused(
        post(token(&["notes:read"]), private.clone()).await,
        "notes:read notes:private",
    );
    assert_eq!(
        post(
            token(&["notes:read"]),
            call("resources/read", json!({"uri": "notes://7"}))
        )
        .await
        .status,
        200
    );

    // The metadata lists every scope a rule or the hierarchy names.
    let doc = app.metadata().await;
    for s in [
        "notes:read",
        "notes:write",
        "notes:delete",
        "notes:admin",
        "notes:summarise",
        "notes:private",
    ] {
        assert!(
            doc["scopes_supported"]
                .as_array()
                .unwrap()
                .contains(&json!(s)),
            "{s} in {doc}"
        );
    }
}

#[tokio::test]
async fn default_deny_refuses_operations_without_a_rule() {
    let issuer = TestIssuer::new();
    let app = Protected::start(&issuer, |b| {
        b.default_deny(true)
            .tool_scopes("add_note", ["notes:write"])
            .tool_scopes("whoami", ScopeRule::all(Vec::<String>::new()))
    })
    .await;
    let all = issuer
        .token(&app.resource)
        .scopes(["notes:write", "notes:read"])
        .sign();
    let reply = app
        .post("/mcp", Some(&all), &tool("delete_everything"))
        .await;
    reply.assert_refused(403, Some("insufficient_scope"));
    assert!(
        reply.body["error_description"]
            .as_str()
            .unwrap()
            .contains("no scope rule")
    );
    assert_eq!(
        app.post("/mcp", Some(&all), &tool("add_note")).await.status,
        200
    );
    // A rule without scopes lets a tool through; other methods are not operations.
    let none = issuer.token(&app.resource).sign();
    assert_eq!(
        app.post("/mcp", Some(&none), &tool("whoami")).await.status,
        200
    );
    assert_eq!(
        app.post("/mcp", Some(&none), &call("tools/list", json!({})))
            .await
            .status,
        200
    );
    let reply = app
        .post(
            "/mcp",
            Some(&none),
            &call("prompts/get", json!({"name": "p"})),
        )
        .await;
    assert_eq!(reply.status, 403);
}

#[tokio::test]
async fn a_rule_for_an_operation_the_server_does_not_have_fails_the_build() {
    let issuer = TestIssuer::new();
    let err = Guard::builder(&issuer, "https://mcp.example.com/mcp")
        .known_tools(["add_note", "list_notes"])
        .tool_scopes("add_nte", ["notes:write"])
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(err, BuildError::UnknownOperation { kind: "tool", .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("add_nte") && text.contains("add_note, list_notes"),
        "{text}"
    );
    let err = Guard::builder(&issuer, "https://mcp.example.com/mcp")
        .known_prompts(["summarise"])
        .prompt_scopes("sumarise", ["x"])
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(err, BuildError::UnknownOperation { kind: "prompt", .. }),
        "{err:?}"
    );
    let err = Guard::builder(&issuer, "https://mcp.example.com/mcp")
        .tool_scopes("x", ScopeRule::any_of(Vec::<String>::new()))
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("any_of"), "{err}");
    Guard::builder(&issuer, "https://mcp.example.com/mcp")
        .known_tools(["add_note"])
        .tool_scopes("add_note", ["notes:write"])
        .build()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_handler_steps_up_with_the_right_challenge() {
    let issuer = TestIssuer::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let resource = format!("{origin}/mcp");
    let guard = Guard::builder(&issuer, resource.as_str())
        .required_scopes(["notes:read"])
        .build()
        .await
        .unwrap();
    // Sharing needs notes:share, deleting a recent sign-in: decided by the arguments.
    let app = Router::new()
        .route(
            "/mcp",
            post(|p: Principal, body: String| async move {
                if body.contains("share") {
                    p.require_scopes(["notes:share"])?;
                }
                if body.contains("delete") {
                    p.require_authentication(["mfa"], Some(std::time::Duration::from_secs(300)))?;
                }
                Ok::<_, StepUp>("done")
            }),
        )
        .layer(guard.layer());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let app = Protected {
        origin,
        resource: resource.clone(),
        guard,
        http: reqwest::Client::new(),
    };
    let reader = issuer.token(&resource).scopes(["notes:read"]).sign();
    assert_eq!(app.post("/mcp", Some(&reader), "read").await.status, 200);
    let reply = app.post("/mcp", Some(&reader), "share").await;
    reply.assert_refused(403, Some("insufficient_scope"));
    reply.assert_challenge_contains(r#"scope="notes:read notes:share""#);
    let sharer = issuer
        .token(&resource)
        .scopes(["notes:read", "notes:share"])
        .sign();
    assert_eq!(app.post("/mcp", Some(&sharer), "share").await.status, 200);

    // RFC 9470: 401 insufficient_user_authentication with acr_values and max_age.
    let reply = app.post("/mcp", Some(&reader), "delete").await;
    reply.assert_refused(401, Some("insufficient_user_authentication"));
    reply.assert_challenge_contains(r#"acr_values="mfa", max_age="300""#);
    let fresh = issuer
        .token(&resource)
        .scopes(["notes:read"])
        .claim("acr", "mfa")
        .claim("auth_time", common::now())
        .sign();
    assert_eq!(app.post("/mcp", Some(&fresh), "delete").await.status, 200);
}
