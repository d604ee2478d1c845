//! The MCP examples in front of a real Concierge: `mcp-notes` (rmcp's StreamableHttpService
//! behind concierge-guard) spoken to with rmcp's client and with plain HTTP.

use concierge::oauth::resource::{Resource, ScopeDef};
use rmcp::ServiceExt as _;
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

use crate::both;
use crate::flow::*;
use crate::helpers::{TestApp, split};

/// A listener on a free loopback port and the `/mcp` resource URI on it.
pub async fn listener() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let resource = format!("http://{}/mcp", l.local_addr().unwrap());
    (l, resource)
}

/// Register `uri` at Concierge with `scopes` (`name=description`).
pub async fn register_resource(app: &TestApp, uri: &str, name: &str, scopes: &[&str]) {
    let scopes = scopes.iter().map(|s| ScopeDef::parse(s).unwrap()).collect();
    app.store()
        .insert_resource(&Resource::new(uri, name, scopes, 0).unwrap().to_record())
        .await
        .unwrap();
}

/// Start `mcp-notes` for `app`'s issuer with its resource registered; returns the resource.
pub async fn spawn_notes(app: &TestApp) -> String {
    spawn_notes_with(app, |c| c).await
}

/// The notes server as `configure` adjusts its configuration (approvals, for one).
pub async fn spawn_notes_with(
    app: &TestApp,
    configure: impl FnOnce(mcp_notes::NotesConfig) -> mcp_notes::NotesConfig,
) -> String {
    let (l, resource) = listener().await;
    register_resource(
        app,
        &resource,
        "Notes",
        &[
            "notes:read=Read your notes",
            "notes:write=Change your notes",
        ],
    )
    .await;
    let config = configure(mcp_notes::NotesConfig::new(&app.issuer, &resource));
    let router = mcp_notes::app(config).await.unwrap();
    tokio::spawn(async move { axum::serve(l, router).await });
    resource
}

/// alice's access token for `resource` with `scope`, through the real code flow.
pub async fn user_token(app: &TestApp, resource: &str, scope: &str) -> String {
    let client = public_client(app).await;
    let (verifier, challenge) = pkce();
    let mut params = auth_params(&client, &challenge, scope);
    params.retain(|(k, _)| k != "resource");
    params.push(("resource".into(), resource.into()));
    let back = authorize_and_approve(app, &browser(), &params).await;
    let (s, _, tokens) = redeem(app, &client, &query(&back)["code"], &verifier, &[]).await;
    assert_eq!(s, 200, "{tokens}");
    tokens["access_token"].as_str().unwrap().to_string()
}

/// An rmcp client connected to `url` with `token`.
pub async fn mcp_client(
    url: &str,
    token: &str,
) -> rmcp::service::RunningService<rmcp::RoleClient, ClientConfig> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url).auth_header(token),
    );
    ClientConfig::default().serve(transport).await.unwrap()
}

/// Call `tool` and return its structured content.
pub async fn call(
    client: &rmcp::service::RunningService<rmcp::RoleClient, ClientConfig>,
    tool: &'static str,
    args: Value,
) -> Value {
    let mut params = CallToolRequestParams::new(tool);
    if let Value::Object(map) = args {
        params = params.with_arguments(map);
    }
    let result = client.call_tool(params).await.unwrap();
    assert_ne!(result.is_error, Some(true), "{result:?}");
    result.structured_content.unwrap()
}

/// A raw JSON-RPC POST to the MCP endpoint.
async fn post(
    app: &TestApp,
    url: &str,
    token: Option<&str>,
    body: Value,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = app
        .http
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    split(req.send().await.unwrap()).await
}

fn www_authenticate(h: &reqwest::header::HeaderMap) -> String {
    h["www-authenticate"].to_str().unwrap().to_string()
}

both!(
    notes_serves_tools_to_a_concierge_token,
    |app: TestApp| async move {
        let alice = seed(&app).await;
        let notes = spawn_notes(&app).await;
        let token = user_token(&app, &notes, "notes:read notes:write").await;

        let client = mcp_client(&notes, &token).await;
        let tools = client.list_all_tools().await.unwrap();
        let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "add_note",
                "clear_notes",
                "delete_note",
                "list_notes",
                "whoami"
            ]
        );

        let me = call(&client, "whoami", json!({})).await;
        assert_eq!(me["sub"], alice.as_str(), "the principal reaches the tool");
        assert_eq!(me["scopes"], json!(["notes:read", "notes:write"]));
        assert_eq!(me["act"], json!([]));
        assert!(me["client_id"].as_str().is_some_and(|c| !c.is_empty()));

        let added = call(&client, "add_note", json!({"text": "buy milk"})).await;
        assert_eq!(added["added"]["text"], "buy milk");
        let list = call(&client, "list_notes", json!({})).await;
        assert_eq!(list["notes"][0]["text"], "buy milk");
        assert_eq!(list["sub"], alice.as_str());
        client.cancel().await.unwrap();
        app
    }
);

both!(notes_challenges_and_steps_up, |app: TestApp| async move {
    seed(&app).await;
    let notes = spawn_notes(&app).await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}});

    // No token: 401 pointing at the metadata, asking for notes:read.
    let (s, h, _) = post(&app, &notes, None, init.clone()).await;
    assert_eq!(s, 401);
    let challenge = www_authenticate(&h);
    let metadata_url = notes.replace("/mcp", "/.well-known/oauth-protected-resource/mcp");
    assert!(
        challenge.contains(&format!("resource_metadata=\"{metadata_url}\"")),
        "{challenge}"
    );
    assert!(challenge.contains("scope=\"notes:read\""), "{challenge}");
    // The metadata names Concierge, at the path-inserted and the root URL.
    for url in [
        metadata_url.clone(),
        notes.replace("/mcp", "/.well-known/oauth-protected-resource"),
    ] {
        let (s, _, m) = split(app.http.get(&url).send().await.unwrap()).await;
        assert_eq!(s, 200);
        assert_eq!(m["resource"], notes.as_str());
        assert_eq!(m["authorization_servers"], json!([app.issuer]));
    }

    // A read-only token works for reading, and add_note asks for notes:write (step-up).
    let read_only = user_token(&app, &notes, "notes:read").await;
    let client = mcp_client(&notes, &read_only).await;
    let list = call(&client, "list_notes", json!({})).await;
    assert_eq!(list["notes"], json!([]));
    client.cancel().await.unwrap();
    let add = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "add_note", "arguments": {"text": "x"}}});
    let (s, h, body) = post(&app, &notes, Some(&read_only), add).await;
    assert_eq!(s, 403, "{body}");
    let challenge = www_authenticate(&h);
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("scope=\"notes:read notes:write\""),
        "{challenge}"
    );

    // A token for another resource is refused.
    let calendar = user_token(&app, CALENDAR, "calendar:read").await;
    let (s, h, _) = post(&app, &notes, Some(&calendar), init).await;
    assert_eq!(s, 401);
    let challenge = www_authenticate(&h);
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(
        challenge.contains("not meant for this resource"),
        "{challenge}"
    );
    app
});

both!(
    calendar_reads_notes_through_token_exchange,
    |app: TestApp| async move {
        let alice = seed(&app).await;
        let notes = spawn_notes(&app).await;
        let (l, calendar) = listener().await;
        register_resource(
            &app,
            &calendar,
            "Calendar",
            &["calendar:read=See your calendar"],
        )
        .await;
        let (cal_id, secret) =
            crate::exchange::server_client_with(&app, "calendar-server", "client_secret_basic")
                .await;
        let router = mcp_calendar::app(mcp_calendar::CalendarConfig {
            issuer: app.issuer.clone(),
            resource: calendar.clone(),
            notes: notes.clone(),
            credentials: concierge_guard::ClientCredentials::secret_basic(&cal_id, secret),
        })
        .await
        .unwrap();
        tokio::spawn(async move { axum::serve(l, router).await });

        let token = user_token(&app, &calendar, "calendar:read").await;
        let client = mcp_client(&calendar, &token).await;

        // No exchange policy: the tool says so, and notes is never called with calendar's token.
        let refused = client
            .call_tool(CallToolRequestParams::new("agenda"))
            .await
            .unwrap();
        assert_eq!(refused.is_error, Some(true), "{refused:?}");
        let why = refused.structured_content.unwrap();
        assert_eq!(why["error"], "exchange_failed");
        assert!(
            why["error_description"]
                .as_str()
                .unwrap()
                .contains("exchange policy"),
            "{why}"
        );

        crate::exchange::allow(
            &app,
            &notes,
            &cal_id,
            &calendar,
            &[("calendar:read", &["notes:read"])],
        )
        .await;
        let agenda = call(&client, "agenda", json!({})).await;
        let seen = &agenda["notes_saw"];
        assert_eq!(seen["sub"], alice.as_str(), "notes sees the user");
        assert_eq!(seen["client_id"], "calendar-server");
        assert_eq!(seen["scopes"], json!(["notes:read"]));
        assert_eq!(
            seen["act"],
            json!([{"sub": "calendar-server", "client_id": null}]),
            "and calendar acting for them"
        );
        assert_eq!(agenda["calendar_saw"]["act"], json!([]));
        assert_eq!(agenda["notes"], json!([]));
        client.cancel().await.unwrap();
        app
    }
);

both!(
    agent_signs_in_calls_tools_and_refreshes,
    |c: &mut concierge::config::Config| c.tokens.access_token_ttl_secs = 4,
    |app: TestApp| async move {
        let alice = seed(&app).await;
        let notes = spawn_notes(&app).await;
        let (tx, rx) = tokio::sync::oneshot::channel::<String>();
        let opts = mcp_agent::AgentOptions::new(&notes);
        let agent = tokio::spawn(async move {
            mcp_agent::Agent::connect(&opts, move |url| {
                let _ = tx.send(url.to_owned());
            })
            .await
        });

        // Play the browser: the link goes to Concierge, sign in, approve, come back.
        let link = rx.await.unwrap();
        assert!(link.starts_with(&app.url("/authorize?")), "{link}");
        let params: Vec<(String, String)> = url::Url::parse(&link)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert_eq!(get("code_challenge_method"), "S256");
        assert_eq!(get("resource"), notes);
        assert!(get("scope").contains("notes:read"), "{link}");
        let b = browser();
        let back = authorize_and_approve(&app, &b, &params).await;
        assert!(back.starts_with("http://127.0.0.1:"), "{back}");
        let res = b.get(&back).send().await.unwrap();
        assert_eq!(res.status(), 200, "the agent's loopback listener answers");
        let agent = agent.await.unwrap().unwrap();

        let mut tools = agent.tools().await.unwrap();
        tools.sort();
        assert_eq!(
            tools,
            [
                "add_note",
                "clear_notes",
                "delete_note",
                "list_notes",
                "whoami"
            ]
        );
        let me = agent.call("whoami", json!({})).await.unwrap();
        assert_eq!(me["sub"], alice.as_str());
        let first = agent.access_token().await.unwrap();

        // The 4 s token expires; the next call goes out with a refreshed one.
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        let list = agent.call("list_notes", json!({})).await.unwrap();
        assert_eq!(list["sub"], alice.as_str());
        let second = agent.access_token().await.unwrap();
        assert_ne!(first, second, "refreshed");
        assert_eq!(claims(&second)["sub"], alice.as_str());
        agent.close().await.unwrap();
        app
    }
);

both!(
    a_tool_the_user_unticked_is_refused_by_the_guard,
    |app: TestApp| async move {
        seed(&app).await;
        let notes = spawn_notes(&app).await;
        // The agent asks for reading and writing; alice unticks writing on the consent page.
        let client = public_client(&app).await;
        let (verifier, challenge) = pkce();
        let mut params = auth_params(&client, &challenge, "notes:read notes:write");
        params.retain(|(k, _)| k != "resource");
        params.push(("resource".into(), notes.clone()));
        let b = browser();
        let res = b.get(authorize_url(&app, &params)).send().await.unwrap();
        let html = sign_in_and_see(&app, &b, &res).await;
        assert!(html.contains("name=\"keep:notes:write\""), "{html}");
        let res = approve_unticking(&app, &b, &html, &["notes:write"]).await;
        let back = location(&res);
        let (s, _, tokens) = redeem(&app, &client, &query(&back)["code"], &verifier, &[]).await;
        assert_eq!(s, 200, "{tokens}");
        assert_eq!(tokens["scope"], "notes:read");
        let token = tokens["access_token"].as_str().unwrap();

        // The ticked tool works; the unticked one is refused by the guard, asking for the
        // scope the user left out.
        let mcp = mcp_client(&notes, token).await;
        let list = call(&mcp, "list_notes", json!({})).await;
        assert_eq!(list["notes"], json!([]));
        mcp.cancel().await.unwrap();
        let add = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "add_note", "arguments": {"text": "x"}}});
        let (s, h, body) = post(&app, &notes, Some(token), add).await;
        assert_eq!(s, 403, "{body}");
        let challenge = www_authenticate(&h);
        assert!(
            challenge.contains("error=\"insufficient_scope\""),
            "{challenge}"
        );
        assert!(challenge.contains("notes:write"), "{challenge}");
        app
    }
);
