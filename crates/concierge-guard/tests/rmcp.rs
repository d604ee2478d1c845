//! The rmcp integration: `Principal` and `Claims<T>` as tool parameters,
//! scopes declared on the tools and checked at start-up, a tool's step-up
//! becoming the HTTP challenge, and `Guard::mcp_router` mounting it all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Reply;
use concierge_guard::rmcp::{any_scope, scopes};
use concierge_guard::test::TestIssuer;
use concierge_guard::{BuildError, Claims, Guard, Principal};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde_json::{Value, json};

#[derive(Clone)]
struct Notes {
    tool_router: ToolRouter<Self>,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct AddNote {
    text: String,
    #[serde(default)]
    shared: bool,
}

#[derive(Debug, serde::Deserialize)]
struct Tenant {
    tenant: String,
}

#[tool_router]
impl Notes {
    fn new() -> Self {
        Self {
            tool_router: Self::tool_router(),
        }
    }

    #[tool(description = "Who is calling.")]
    async fn whoami(&self, principal: Principal) -> Result<CallToolResult, ErrorData> {
        Ok(CallToolResult::structured(json!({
            "sub": principal.sub(),
            "client_id": principal.client_id(),
            "scopes": principal.scopes(),
        })))
    }

    #[tool(description = "Add a note; sharing it needs notes:share.", meta = scopes(["notes:write"]))]
    async fn add_note(
        &self,
        principal: Principal,
        Parameters(AddNote { text, shared }): Parameters<AddNote>,
    ) -> Result<CallToolResult, ErrorData> {
        if shared {
            principal.require_scopes(["notes:share"])?;
        }
        Ok(CallToolResult::structured(
            json!({"added": text, "shared": shared}),
        ))
    }

    #[tool(description = "Delete a note.", meta = any_scope(["notes:delete", "notes:admin"]))]
    async fn delete_note(&self) -> Result<CallToolResult, ErrorData> {
        Ok(CallToolResult::structured(json!({"deleted": true})))
    }

    #[tool(description = "The caller's tenant, from a custom claim.")]
    async fn tenant(&self, Claims(t): Claims<Tenant>) -> Result<CallToolResult, ErrorData> {
        Ok(CallToolResult::structured(json!({"tenant": t.tenant})))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Notes {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

struct Server {
    url: String,
    issuer: TestIssuer,
    http: reqwest::Client,
}

impl Server {
    async fn start() -> Self {
        let issuer = TestIssuer::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let guard = Guard::builder(&issuer, url.as_str())
            .required_scopes(["notes:read"])
            .tools(&Notes::tool_router())
            .build()
            .await
            .unwrap();
        let app = guard.mcp_router(|| Ok(Notes::new()));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            issuer,
            http: reqwest::Client::new(),
        }
    }

    fn token(&self, scopes: &[&str]) -> String {
        self.issuer
            .token(&self.url)
            .subject("alice")
            .client_id("agent")
            .scopes(scopes)
            .claim("tenant", "acme")
            .sign()
    }

    async fn rpc(&self, token: &str, method: &str, params: Value) -> Reply {
        let res = self
            .http
            .post(&self.url)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
            .send()
            .await
            .unwrap();
        Reply::from(res).await
    }

    async fn tool(&self, token: &str, name: &str, arguments: Value) -> Reply {
        self.rpc(
            token,
            "tools/call",
            json!({"name": name, "arguments": arguments}),
        )
        .await
    }
}

#[tokio::test]
async fn the_principal_is_a_tool_parameter_and_declared_scopes_are_enforced() {
    let server = Server::start().await;
    let reader = server.token(&["notes:read"]);
    let reply = server.tool(&reader, "whoami", json!({})).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let me = &reply.body["result"]["structuredContent"];
    assert_eq!(me["sub"], "alice");
    assert_eq!(me["client_id"], "agent");
    assert_eq!(me["scopes"], json!(["notes:read"]));
    let reply = server.tool(&reader, "tenant", json!({})).await;
    assert_eq!(reply.body["result"]["structuredContent"]["tenant"], "acme");

    // Declared on the tool: add_note needs notes:write, at the HTTP layer.
    let reply = server.tool(&reader, "add_note", json!({"text": "x"})).await;
    reply.assert_refused(403, Some("insufficient_scope"));
    reply.assert_challenge_contains(r#"scope="notes:read notes:write""#);
    let writer = server.token(&["notes:read", "notes:write"]);
    let reply = server.tool(&writer, "add_note", json!({"text": "x"})).await;
    assert_eq!(
        reply.body["result"]["structuredContent"]["added"], "x",
        "{reply:?}"
    );

    // any_scope: either one.
    let reply = server.tool(&reader, "delete_note", json!({})).await;
    reply.assert_refused(403, Some("insufficient_scope"));
    reply.assert_challenge_contains(r#"scope="notes:read notes:delete""#);
    let admin = server.token(&["notes:read", "notes:admin"]);
    assert_eq!(
        server.tool(&admin, "delete_note", json!({})).await.status,
        200
    );

    // Clients see the declarations in tools/list.
    let reply = server.rpc(&reader, "tools/list", json!({})).await;
    let tools = reply.body["result"]["tools"].as_array().unwrap();
    let add = tools.iter().find(|t| t["name"] == "add_note").unwrap();
    assert_eq!(
        add["_meta"]["securitySchemes"],
        json!([{"type": "oauth2", "scopes": ["notes:write"]}])
    );
}

#[tokio::test]
async fn a_tool_s_step_up_becomes_the_403_challenge() {
    let server = Server::start().await;
    let writer = server.token(&["notes:read", "notes:write"]);
    // The argument decides: sharing needs notes:share, which only the tool knows.
    let reply = server
        .tool(&writer, "add_note", json!({"text": "x", "shared": true}))
        .await;
    reply.assert_refused(403, Some("insufficient_scope"));
    reply.assert_challenge_contains(r#"scope="notes:read notes:write notes:share""#);
    let sharer = server.token(&["notes:read", "notes:write", "notes:share"]);
    let reply = server
        .tool(&sharer, "add_note", json!({"text": "x", "shared": true}))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["result"]["structuredContent"]["shared"], true);
}

#[tokio::test]
async fn rules_for_tools_the_router_does_not_have_fail_the_build() {
    let issuer = TestIssuer::new();
    let err = Guard::builder(&issuer, "https://mcp.example.com/mcp")
        .tools(&Notes::tool_router())
        .tool_scopes("add_nte", ["notes:write"])
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(err, BuildError::UnknownOperation { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("add_note, delete_note, tenant, whoami"),
        "{err}"
    );

    // The mount's rmcp settings follow the resource URI.
    let guard = Guard::builder(&issuer, "https://mcp.example.com/mcp")
        .tools(&Notes::tool_router())
        .build()
        .await
        .unwrap();
    assert_eq!(guard.mcp_path(), "/mcp");
    assert_eq!(guard.allowed_hosts(), ["mcp.example.com"]);
    let config = guard.mcp_config();
    assert!(config.json_response && !config.legacy_session_mode);
}

#[tokio::test]
async fn principal_builder_unit_tests_a_tool_without_a_server() {
    // Tools are plain methods: call them with a hand-made principal.
    let notes = Notes::new();
    let alice = Principal::builder()
        .subject("alice")
        .scopes(["notes:read"])
        .build();
    let result = notes.whoami(alice.clone()).await.unwrap();
    assert_eq!(result.structured_content.unwrap()["sub"], "alice");
    let err = notes
        .add_note(
            alice,
            Parameters(AddNote {
                text: "x".into(),
                shared: true,
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code.0, concierge_guard::STEP_UP_ERROR_CODE);
    assert_eq!(err.data.unwrap()["scope"], "notes:share");
}
