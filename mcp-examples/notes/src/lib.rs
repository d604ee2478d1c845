//! `notes`: an MCP server (rmcp, streamable HTTP) protected by `concierge-guard`.
//!
//! Tools:
//! - `list_notes` — the caller's notes (needs `notes:read`, as every request does);
//! - `add_note { text }` — adds one; it declares `notes:write` on itself, so the guard
//!   answers a token without it with 403 `insufficient_scope`,
//!   `scope="notes:read notes:write"` (step-up);
//! - `delete_note { id }` — deletes one note, but only once its owner approved that very call
//!   on their authorization server (OpenID Connect CIBA with an `mcp_tool_call`
//!   authorization detail, through [`Guard::request_approval`]); while the user has not
//!   decided, it answers `approval_pending` and the agent calls it again;
//! - `whoami` — what the guard saw: `sub`, `client_id`, scopes and the `act` chain.
//!
//! The tools take the validated [`Principal`] as a parameter. [`app`] is the whole server:
//! the guard, built from the tools' own scope declarations, mounts rmcp's streamable HTTP
//! service at the resource's path with the RFC 9728 metadata beside it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use concierge_guard::rmcp::scopes;
use concierge_guard::{
    Approval, ApprovalRequest, BearerToken, ClientCredentials, Guard, Principal, ToolCall,
};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, Implementation, ServerCapabilities, ServerConfig};
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
    /// This server's own client at the issuer (id, secret), registered for the CIBA grant:
    /// `delete_note` asks the user's approval with it. Without it, `delete_note` refuses.
    pub approval_client: Option<(String, String)>,
    /// How long `delete_note` waits for the user before answering `approval_pending`.
    pub approval_wait: std::time::Duration,
}

impl NotesConfig {
    /// A configuration for `resource` trusting `issuer`.
    pub fn new(issuer: impl Into<String>, resource: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            resource: resource.into(),
            approval_client: None,
            approval_wait: std::time::Duration::from_secs(20),
        }
    }

    /// Ask users' approval for `delete_note` as client `id` with `secret`.
    #[must_use]
    pub fn approvals(mut self, id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.approval_client = Some((id.into(), secret.into()));
        self
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

/// The sign-ins `clear_notes` accepts: Concierge's second factor, or a passkey.
pub const STEP_UP_ACR: [&str; 2] = ["urn:concierge:acr:mfa", "phr"];

/// How long ago that sign-in may be for `clear_notes`.
pub const STEP_UP_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(300);

/// Notes per subject, shared by every request.
pub type Notebook = Arc<Mutex<HashMap<String, Vec<Note>>>>;

/// `delete_note`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct DeleteNote {
    /// The note's `id`, as `list_notes` shows it.
    pub id: usize,
}

/// Approvals asked for and not decided yet, per (subject, note id).
type PendingApprovals = Arc<Mutex<HashMap<(String, usize), ApprovalRequest>>>;

/// What `delete_note` needs to ask for approval: the guard (with this server's client
/// credentials), where users approve, and how long to wait.
#[derive(Clone)]
pub struct Approvals {
    guard: Guard,
    approve_at: String,
    wait: std::time::Duration,
    pending: PendingApprovals,
}

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
    approvals: Option<Approvals>,
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl NotesServer {
    /// A server keeping its notes in `notes`.
    pub fn new(notes: Notebook) -> Self {
        Self {
            notes,
            approvals: None,
            tool_router: Self::tool_router(),
        }
    }

    /// Let `delete_note` ask for approvals.
    #[must_use]
    pub fn with_approvals(mut self, approvals: Approvals) -> Self {
        self.approvals = Some(approvals);
        self
    }

    /// List your notes.
    #[tool(description = "List your notes (needs notes:read).")]
    pub async fn list_notes(&self, principal: Principal) -> Result<CallToolResult, ErrorData> {
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

    /// Add a note.
    #[tool(description = "Add a note (needs notes:write).", meta = scopes([WRITE_SCOPE]))]
    pub async fn add_note(
        &self,
        principal: Principal,
        Parameters(AddNote { text }): Parameters<AddNote>,
    ) -> Result<CallToolResult, ErrorData> {
        // The guard enforces the declaration; checking again keeps the tool right on its own
        // (and makes a refusal a step-up challenge when it is the tool that decides).
        principal.require_scopes([WRITE_SCOPE])?;
        if text.trim().is_empty() || text.len() > 10_000 {
            return Err(ErrorData::invalid_params(
                "text must be between 1 and 10000 bytes",
                None,
            ));
        }
        let mut book = self.notes.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = book.entry(principal.sub().to_owned()).or_default();
        let note = Note {
            id: mine.iter().map(|n| n.id).max().unwrap_or(0) + 1,
            text,
            written_by: principal.client_id().to_owned(),
        };
        mine.push(note.clone());
        Ok(CallToolResult::structured(json!({ "added": note })))
    }

    /// Delete all your notes: consequential, so besides `notes:write` it needs a sign-in
    /// with a second factor in the last five minutes (RFC 9470 step-up). The guard asks for
    /// it before the call ([`app`]); checking here too keeps the tool right on its own.
    #[tool(
        description = "Delete all your notes (needs notes:write, and a sign-in with a second factor in the last 5 minutes).",
        meta = scopes([WRITE_SCOPE])
    )]
    pub async fn clear_notes(&self, principal: Principal) -> Result<CallToolResult, ErrorData> {
        principal.require_scopes([WRITE_SCOPE])?;
        principal.require_authentication(STEP_UP_ACR, Some(STEP_UP_MAX_AGE))?;
        let removed = self
            .notes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(principal.sub())
            .map_or(0, |n| n.len());
        Ok(CallToolResult::structured(json!({ "removed": removed })))
    }

    /// Delete one note, once its owner approved this very call on their device.
    #[tool(
        description = "Delete one note (needs notes:write and the user's approval of this call; \
                       when it answers approval_pending, the user approves on their device and \
                       you call it again).",
        meta = scopes([WRITE_SCOPE])
    )]
    pub async fn delete_note(
        &self,
        principal: Principal,
        token: BearerToken,
        Parameters(DeleteNote { id }): Parameters<DeleteNote>,
    ) -> Result<CallToolResult, ErrorData> {
        principal.require_scopes([WRITE_SCOPE])?;
        let Some(approvals) = &self.approvals else {
            return Err(ErrorData::internal_error(
                "this server cannot ask for approvals (no client registered for it)",
                None,
            ));
        };
        let sub = principal.sub().to_owned();
        let text = self
            .notes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&sub)
            .and_then(|mine| mine.iter().find(|n| n.id == id))
            .map(|n| n.text.clone())
            .ok_or_else(|| ErrorData::invalid_params(format!("there is no note {id}"), None))?;
        let key = (sub.clone(), id);
        let waiting = approvals
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
        let request = match waiting {
            Some(r) => r,
            None => {
                let shown: String = text.chars().take(60).collect();
                let call = ToolCall::new("delete_note")
                    .summary(format!("Delete the note “{shown}”"))
                    .arguments(json!({ "id": id }));
                approvals
                    .guard
                    .request_approval(token.as_str(), &call, None)
                    .await
                    .map_err(|e| ErrorData::internal_error(e.to_string(), None))?
            }
        };
        let outcome = approvals
            .guard
            .await_approval(request, approvals.wait)
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        Ok(CallToolResult::structured(match outcome {
            Approval::Approved(_) => {
                let mut book = self.notes.lock().unwrap_or_else(PoisonError::into_inner);
                let mine = book.entry(sub).or_default();
                mine.retain(|n| n.id != id);
                json!({ "status": "deleted", "id": id })
            }
            Approval::Pending(r) => {
                approvals
                    .pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(key, r);
                json!({
                    "status": "approval_pending",
                    "approve_at": approvals.approve_at,
                    "message": "Approval requested: approve deleting this note on your device \
                                (or at approve_at), then call delete_note again.",
                })
            }
            Approval::Denied => json!({ "status": "denied", "id": id }),
            _ => json!({ "status": "expired", "id": id,
                         "message": "the approval request expired; call delete_note again" }),
        }))
    }

    /// Who is calling.
    #[tool(
        description = "Who is calling: the token's subject, client, scopes and delegation chain."
    )]
    pub async fn whoami(&self, principal: Principal) -> Result<CallToolResult, ErrorData> {
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

/// The notes server: every request needs `notes:read`, `add_note` declares `notes:write`;
/// rmcp's streamable HTTP service at the resource's path behind the guard, and the
/// RFC 9728 metadata at `/.well-known/oauth-protected-resource` and its path-inserted form.
///
/// Discovers the issuer at build time: fails when it is unreachable or misconfigured.
pub async fn app(cfg: NotesConfig) -> anyhow::Result<Router> {
    let approve_at = format!("{}/account/approvals", cfg.issuer.trim_end_matches('/'));
    let mut builder = Guard::builder(cfg.issuer, cfg.resource)
        .required_scopes([READ_SCOPE])
        .tools(&NotesServer::tool_router())
        .tool_authentication("clear_notes", STEP_UP_ACR, Some(STEP_UP_MAX_AGE))
        .resource_name("Notes (concierge example)");
    if let Some((id, secret)) = &cfg.approval_client {
        builder = builder.client_credentials(ClientCredentials::secret_basic(id, secret));
    }
    let guard = builder.build().await?;
    let approvals = cfg.approval_client.is_some().then(|| Approvals {
        guard: guard.clone(),
        approve_at,
        wait: cfg.approval_wait,
        pending: PendingApprovals::default(),
    });
    let notes = Notebook::default();
    Ok(guard.mcp_router(move || {
        let server = NotesServer::new(notes.clone());
        Ok(match &approvals {
            Some(a) => server.with_approvals(a.clone()),
            None => server,
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tools_run_with_a_hand_made_principal() {
        let server = NotesServer::new(Notebook::default());
        let writer = Principal::builder()
            .subject("alice")
            .client_id("agent")
            .scopes([READ_SCOPE, WRITE_SCOPE])
            .build();
        let args = |text: &str| {
            Parameters(AddNote {
                text: text.to_owned(),
            })
        };
        server.add_note(writer.clone(), args("milk")).await.unwrap();
        let list = server.list_notes(writer).await.unwrap();
        let list = list.structured_content.unwrap();
        assert_eq!(list["notes"][0]["text"], "milk");
        assert_eq!(list["notes"][0]["written_by"], "agent");

        let reader = Principal::builder()
            .subject("bob")
            .scopes([READ_SCOPE])
            .build();
        let err = server.add_note(reader, args("x")).await.unwrap_err();
        assert_eq!(err.code.0, concierge_guard::STEP_UP_ERROR_CODE);
        assert_eq!(err.data.unwrap()["scope"], WRITE_SCOPE);
    }

    #[tokio::test]
    async fn clearing_needs_a_recent_second_factor() {
        let server = NotesServer::new(Notebook::default());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let signed_in = |acr: &str, ago: u64| {
            Principal::builder()
                .subject("alice")
                .scopes([READ_SCOPE, WRITE_SCOPE])
                .claim("acr", acr)
                .claim("auth_time", now - ago)
                .build()
        };
        let err = server
            .clear_notes(signed_in("urn:concierge:acr:1fa", 0))
            .await
            .unwrap_err();
        assert_eq!(err.code.0, concierge_guard::STEP_UP_ERROR_CODE);
        let data = err.data.unwrap();
        assert_eq!(data["error"], "insufficient_user_authentication");
        assert_eq!(data["max_age"], 300);
        let stale = server
            .clear_notes(signed_in("urn:concierge:acr:mfa", 900))
            .await
            .unwrap_err();
        assert_eq!(stale.code.0, concierge_guard::STEP_UP_ERROR_CODE);
        let done = server
            .clear_notes(signed_in("urn:concierge:acr:mfa", 10))
            .await
            .unwrap();
        assert_eq!(done.structured_content.unwrap()["removed"], 0);
    }
}
