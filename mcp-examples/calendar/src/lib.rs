//! `calendar`: an MCP server that calls the `notes` MCP server on its caller's behalf.
//!
//! Its tool `agenda` exchanges the incoming token for a `notes` token at the issuer
//! (RFC 8693, through [`concierge_guard::Guard::exchange`], authenticated as calendar's
//! own client) — the incoming token is never forwarded — then calls notes' `whoami` and
//! `list_notes` with rmcp's streamable HTTP client and returns what notes saw, including
//! the `act` chain naming calendar's client.

use std::sync::Arc;

use axum::Router;
use concierge_guard::{BearerToken, ClientCredentials, Guard, Principal};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientConfig, Implementation, ServerCapabilities,
    ServerConfig,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ErrorData, ServerHandler, ServiceExt as _, tool, tool_handler, tool_router};
use serde_json::{Value, json};

/// The scope every request to the calendar needs.
pub const READ_SCOPE: &str = "calendar:read";

/// What the calendar server needs.
#[derive(Debug, Clone)]
pub struct CalendarConfig {
    /// The authorization server's issuer.
    pub issuer: String,
    /// This server's resource URI, e.g. `http://127.0.0.1:3002/mcp`.
    pub resource: String,
    /// The notes server's resource URI (its MCP endpoint), e.g. `http://127.0.0.1:3001/mcp`.
    pub notes: String,
    /// Calendar's own client at the issuer (allowed to exchange toward notes).
    pub credentials: ClientCredentials,
}

#[derive(Clone)]
struct Downstream {
    guard: Guard,
    notes: String,
}

/// The MCP server.
#[derive(Clone)]
pub struct CalendarServer {
    downstream: Arc<Downstream>,
    tool_router: ToolRouter<Self>,
}

/// A tool error the caller sees, with a code and a description.
fn refused(error: &str, description: impl ToString) -> CallToolResult {
    CallToolResult::structured_error(json!({
        "error": error,
        "error_description": description.to_string(),
    }))
}

#[tool_router]
impl CalendarServer {
    fn new(downstream: Arc<Downstream>) -> Self {
        Self {
            downstream,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "Your agenda, with your notes fetched from the notes server on your behalf."
    )]
    async fn agenda(
        &self,
        principal: Principal,
        incoming: BearerToken,
    ) -> Result<CallToolResult, ErrorData> {
        let Downstream { guard, notes } = self.downstream.as_ref();
        let token = match guard
            .exchange(incoming.as_str(), notes, &[mcp_notes::READ_SCOPE])
            .await
        {
            Ok(t) => t,
            Err(e) => return Ok(refused("exchange_failed", e)),
        };
        match call_notes(notes, token.access_token()).await {
            Ok((whoami, list)) => Ok(CallToolResult::structured(json!({
                "calendar_saw": mcp_notes::whoami_json(&principal),
                "notes_saw": whoami,
                "notes": list["notes"],
                "events": [],
            }))),
            Err(e) => Ok(refused("notes_unavailable", e)),
        }
    }
}

/// `whoami` and `list_notes` at the notes server with `token`.
async fn call_notes(url: &str, token: &str) -> anyhow::Result<(Value, Value)> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url).auth_header(token),
    );
    let client = ClientConfig::default().serve(transport).await?;
    let mut answers = Vec::new();
    for tool in ["whoami", "list_notes"] {
        let result = client.call_tool(CallToolRequestParams::new(tool)).await?;
        if result.is_error == Some(true) {
            anyhow::bail!("notes' {tool} failed: {:?}", result.content);
        }
        answers.push(result.structured_content.unwrap_or(Value::Null));
    }
    client.cancel().await?;
    let list = answers.pop().unwrap_or(Value::Null);
    let whoami = answers.pop().unwrap_or(Value::Null);
    Ok((whoami, list))
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for CalendarServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "mcp-calendar",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions("Your agenda; it reads your notes through token exchange.")
    }
}

/// The calendar server's router: rmcp at the resource's path behind the guard (needs
/// `calendar:read`), and the RFC 9728 metadata routes.
///
/// Builds the guard with calendar's client credentials, so a resource URI the issuer
/// does not know is reported at start-up (when the client may use client_credentials).
pub async fn app(cfg: CalendarConfig) -> anyhow::Result<Router> {
    let guard = Guard::builder(cfg.issuer, cfg.resource)
        .required_scopes([READ_SCOPE])
        .tools(&CalendarServer::tool_router())
        .resource_name("Calendar (concierge example)")
        .client_credentials(cfg.credentials)
        .build()
        .await?;
    let downstream = Arc::new(Downstream {
        guard: guard.clone(),
        notes: cfg.notes,
    });
    Ok(guard.mcp_router(move || Ok(CalendarServer::new(downstream.clone()))))
}
