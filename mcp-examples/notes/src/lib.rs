//! `notes`: an MCP server (rmcp, streamable HTTP) protected by `concierge-guard`.
//!
//! Tools:
//! - `list_notes` — the caller's notes (needs `notes:read`, as every request does);
//! - `add_note { text }` — adds one (needs `notes:write` too; the guard answers a token
//!   without it with 403 `insufficient_scope`, `scope="notes:read notes:write"`: step-up);
//! - `whoami` — what the guard saw: `sub`, `client_id`, scopes and the `act` chain, read
//!   inside the tool from the HTTP request parts rmcp hands to tool handlers.
//!
//! [`app`] builds the axum router: the rmcp `StreamableHttpService` at the resource's path
//! (`/mcp`) behind the guard layer, and the RFC 9728 metadata routes beside it (public).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use concierge_guard::{Guard, Principal};
use http::request::Parts;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, Implementation, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The scope every request to the notes server needs.
pub const READ_SCOPE: &str = "notes:read";
/// The extra scope `add_note` needs.
pub const WRITE_SCOPE: &str = "notes:write";

/// Where the server trusts tokens from and what it is called.
#[derive(Debug, Clone, Default)]
pub struct NotesConfig {
    /// The authorization server's issuer, e.g. `http://127.0.0.1:8080`.
    pub issuer: String,
    /// This server's resource URI, e.g. `http://127.0.0.1:3001/mcp` (the `aud` of its tokens).
    pub resource: String,
}

impl NotesConfig {
    /// A configuration for `resource` trusting `issuer`.
    pub fn new(issuer: impl Into<String>, resource: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            resource: resource.into(),
        }
    }
}

/// One note.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Note {
    /// Position in the author's list, from 1.
    pub id: usize,
    /// The note's text.
    pub text: String,
    /// The client that wrote it (`client_id` of the token).
    pub written_by: String,
}

/// Notes per subject, shared by every request.
type Notebook = Arc<Mutex<HashMap<String, Vec<Note>>>>;

/// `add_note`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct AddNote {
    /// The note's text.
    pub text: String,
}

/// The MCP server: its tools and the notebook.
#[derive(Clone)]
pub struct NotesServer {
    notes: Notebook,
    tool_router: ToolRouter<Self>,
}

/// The principal the guard validated, from the request parts rmcp hands the tool.
pub fn principal(parts: &Parts) -> Result<Principal, ErrorData> {
    parts.extensions.get::<Principal>().cloned().ok_or_else(|| {
        // Only reachable when the router is built without the guard layer.
        ErrorData::internal_error("no validated principal for this request", None)
    })
}

/// The principal, refusing (as a tool error the caller sees) when `scope` is missing. The
/// guard already refuses such calls at the HTTP level; this keeps the tool correct on its own.
fn require(parts: &Parts, scope: &str) -> Result<Result<Principal, CallToolResult>, ErrorData> {
    let principal = principal(parts)?;
    if principal.has_scope(scope) {
        Ok(Ok(principal))
    } else {
        Ok(Err(CallToolResult::structured_error(json!({
            "error": "insufficient_scope",
            "scope": scope,
        }))))
    }
}

#[tool_router]
impl NotesServer {
    fn new(notes: Notebook) -> Self {
        Self {
            notes,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(description = "List your notes (needs notes:read).")]
    async fn list_notes(
        &self,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let principal = match require(&parts, READ_SCOPE)? {
            Ok(p) => p,
            Err(refused) => return Ok(refused),
        };
        let notes = self
            .notes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(principal.sub())
            .cloned()
            .unwrap_or_default();
        Ok(CallToolResult::structured(
            json!({ "sub": principal.sub(), "notes": notes }),
        ))
    }

    #[tool(description = "Add a note (needs notes:write).")]
    async fn add_note(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(AddNote { text }): Parameters<AddNote>,
    ) -> Result<CallToolResult, ErrorData> {
        let principal = match require(&parts, WRITE_SCOPE)? {
            Ok(p) => p,
            Err(refused) => return Ok(refused),
        };
        if text.trim().is_empty() || text.len() > 10_000 {
            return Err(ErrorData::invalid_params(
                "text must be between 1 and 10000 bytes",
                None,
            ));
        }
        let mut book = self.notes.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = book.entry(principal.sub().to_owned()).or_default();
        let note = Note {
            id: mine.len() + 1,
            text,
            written_by: principal.client_id().to_owned(),
        };
        mine.push(note.clone());
        Ok(CallToolResult::structured(json!({ "added": note })))
    }

    #[tool(
        description = "Who is calling: the token's subject, client, scopes and delegation chain."
    )]
    async fn whoami(
        &self,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let principal = principal(&parts)?;
        Ok(CallToolResult::structured(whoami_json(&principal)))
    }
}

/// The `whoami` answer for a principal.
#[must_use]
pub fn whoami_json(principal: &Principal) -> serde_json::Value {
    let act: Vec<_> = principal
        .act()
        .iter()
        .map(|a| json!({ "sub": a.sub, "client_id": a.client_id }))
        .collect();
    json!({
        "sub": principal.sub(),
        "client_id": principal.client_id(),
        "scopes": principal.scopes(),
        "act": act,
    })
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for NotesServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("mcp-notes", env!("CARGO_PKG_VERSION")))
            .with_instructions("Your notes. Scopes: notes:read to list, notes:write to add.")
    }
}

/// Logs to standard error (standard output carries the `listening on …` line), filtered
/// by `RUST_LOG` (default `info`). Shared by the example binaries.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// The `Host` values rmcp's DNS-rebinding check lets through: loopback names, and the
/// resource's own host (with and without its port).
#[must_use]
pub fn allowed_hosts(resource: &url::Url) -> Vec<String> {
    let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if let Some(host) = resource.host_str() {
        hosts.push(host.to_owned());
        if let Some(port) = resource.port() {
            hosts.push(format!("{host}:{port}"));
        }
    }
    hosts
}

/// The path the MCP endpoint is served at: the resource URI's path (`/mcp` by default).
pub fn mcp_path(resource: &url::Url) -> String {
    match resource.path() {
        "" => "/".to_owned(),
        p => p.to_owned(),
    }
}

/// The notes server: rmcp's streamable HTTP service at the resource's path behind the
/// concierge-guard layer (every request needs `notes:read`; `tools/call add_note` also
/// `notes:write`), plus the RFC 9728 metadata at
/// `/.well-known/oauth-protected-resource` and its path-inserted form.
///
/// Discovers the issuer at build time: fails when it is unreachable or misconfigured.
pub async fn app(cfg: NotesConfig) -> anyhow::Result<Router> {
    let resource = url::Url::parse(&cfg.resource)?;
    let guard = Guard::builder(cfg.issuer, cfg.resource)
        .required_scopes([READ_SCOPE])
        .tool_scopes("add_note", [WRITE_SCOPE])
        .resource_name("Notes (concierge example)")
        .build()
        .await?;
    let notes = Notebook::default();
    Ok(protected_router(&resource, &guard, move || {
        Ok(NotesServer::new(notes.clone()))
    }))
}

/// rmcp's streamable HTTP service for the handlers `factory` makes, at the resource's
/// path behind `guard`'s layer, with the guard's metadata routes beside it. Shared by the
/// examples.
///
/// Stateless: every POST carries its own token and is authorized on its own, so no
/// session outlives the token that opened it. Simple tool calls are answered with JSON.
pub fn protected_router<S>(
    resource: &url::Url,
    guard: &Guard,
    factory: impl Fn() -> Result<S, std::io::Error> + Send + Sync + 'static,
) -> Router
where
    S: ServerHandler + Send + 'static,
{
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_allowed_hosts(allowed_hosts(resource));
    let service: StreamableHttpService<S, LocalSessionManager> =
        StreamableHttpService::new(factory, Arc::default(), config);
    Router::new()
        .route_service(&mcp_path(resource), service)
        .layer(guard.layer())
        .merge(guard.metadata_router())
}
