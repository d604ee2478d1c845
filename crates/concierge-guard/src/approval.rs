//! Asking the user to approve one tool call (feature `approval`): an OpenID Connect CIBA
//! request in poll mode, made by this MCP server as its issuer's client, for the user whose
//! token it holds, with RFC 9396 `authorization_details` of type `mcp_tool_call` naming the
//! tool and its arguments. The user approves on their issuer's approvals page (or wherever
//! its notifications reach them); the tool waits, briefly, or answers that approval is
//! pending and checks again on the next call.

use std::fmt;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use thiserror::Error;

use crate::client::{Answer, post_form};
use crate::guard::Guard;

/// OpenID Connect CIBA Core §10.1 grant type.
const CIBA: &str = "urn:openid:params:grant-type:ciba";
/// RFC 8628 §3.5 (CIBA Core §11 follows it): how much longer to wait after `slow_down`.
const SLOW_DOWN: Duration = Duration::from_secs(5);

/// One tool call the user is asked to approve: becomes one `mcp_tool_call` authorization
/// detail, located at this server's resource.
///
/// ```
/// use concierge_guard::ToolCall;
/// let call = ToolCall::new("delete_note")
///     .summary("Delete the note “groceries”")
///     .arguments(serde_json::json!({"id": "n-42"}));
/// assert_eq!(call.tool(), "delete_note");
/// ```
#[derive(Debug, Clone)]
pub struct ToolCall {
    tool: String,
    summary: Option<String>,
    arguments: Option<Value>,
}

impl ToolCall {
    /// A call of `tool` (its MCP name).
    #[must_use]
    pub fn new(tool: impl Into<String>) -> Self {
        Self {
            tool: tool.into(),
            summary: None,
            arguments: None,
        }
    }

    /// What the call does, in a sentence the user reads (at most 200 characters).
    #[must_use]
    pub fn summary(mut self, summary: impl Into<String>) -> Self {
        self.summary = Some(summary.into());
        self
    }

    /// The call's arguments, as a JSON object (shown to the user; keep it small).
    #[must_use]
    pub fn arguments(mut self, arguments: Value) -> Self {
        self.arguments = Some(arguments);
        self
    }

    /// The tool's name.
    #[must_use]
    pub fn tool(&self) -> &str {
        &self.tool
    }

    fn details(&self, resource: &str) -> Value {
        let mut d = json!({"type": "mcp_tool_call", "tool": self.tool, "locations": [resource]});
        if let Some(s) = &self.summary {
            d["summary"] = Value::String(s.clone());
        }
        if let Some(a) = &self.arguments {
            d["arguments"] = a.clone();
        }
        json!([d])
    }
}

/// A request for the user's approval, waiting. Keep it to check again later
/// ([`Guard::check_approval`]). `Debug` does not show its `auth_req_id`.
#[derive(Clone)]
pub struct ApprovalRequest {
    auth_req_id: String,
    expires_at: Instant,
    interval: Duration,
    next_poll: Instant,
}

impl fmt::Debug for ApprovalRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApprovalRequest")
            .field("expires_at", &self.expires_at)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl ApprovalRequest {
    /// When the request stops waiting for the user.
    #[must_use]
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }
}

/// Where a request for approval stands.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Approval {
    /// The user approved. The access token (for this server, carrying the approved
    /// `authorization_details`) is the proof; `Debug` does not show it.
    Approved(ApprovedCall),
    /// The user has not decided yet: tell the caller to approve on their device, and check
    /// again later.
    Pending(ApprovalRequest),
    /// The user denied the call.
    Denied,
    /// The request expired (or was already used) before the user decided.
    Expired,
}

/// The proof of an approval: the issuer's access token for this server, with the approved
/// call in its `authorization_details` (RFC 9396 §9.1).
#[derive(Clone)]
pub struct ApprovedCall {
    access_token: String,
}

impl fmt::Debug for ApprovedCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApprovedCall").finish_non_exhaustive()
    }
}

impl ApprovedCall {
    /// The access token the issuer granted for the approved call.
    #[must_use]
    pub fn access_token(&self) -> &str {
        &self.access_token
    }
}

/// Why a request for approval could not be made or checked. The messages say what to
/// change.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ApprovalError {
    /// The guard was built without [`client_credentials`](crate::GuardBuilder::client_credentials).
    #[error(
        "asking for approval needs this server's client credentials: call \
         GuardBuilder::client_credentials"
    )]
    NoCredentials,
    /// The issuer's metadata names no `backchannel_authentication_endpoint` (or no token
    /// endpoint), or the guard has not reached the issuer yet.
    #[error(
        "the issuer offers no backchannel authentication (CIBA) endpoint in its metadata, or \
         it has not answered yet"
    )]
    NoEndpoint,
    /// The issuer does not let this server's client use CIBA (`unauthorized_client`).
    #[error(
        "the issuer does not let client {client_id} ask for approvals ({description}); register \
         it with the grant urn:openid:params:grant-type:ciba"
    )]
    NotAllowed {
        /// This server's client id.
        client_id: String,
        /// The issuer's `error_description`.
        description: String,
    },
    /// Another OAuth error (for example `invalid_authorization_details`).
    #[error("the issuer answered {error}: {description}")]
    Refused {
        /// The `error` code.
        error: String,
        /// The `error_description`, or empty.
        description: String,
    },
    /// The issuer could not be reached or answered nonsense.
    #[error("asking for approval failed: {0}")]
    Transport(String),
}

fn refused(client_id: &str, error: String, description: Option<String>) -> ApprovalError {
    let description = description.unwrap_or_default();
    match error.as_str() {
        "unauthorized_client" | "unsupported_grant_type" => ApprovalError::NotAllowed {
            client_id: client_id.to_owned(),
            description,
        },
        _ => ApprovalError::Refused { error, description },
    }
}

impl Guard {
    /// Asks the user whose access token this server received (`user_token`, the
    /// [`BearerToken`](crate::BearerToken) of the request) to approve `call`: a CIBA request
    /// at the issuer's backchannel authentication endpoint, authenticated as this server's
    /// [`client_credentials`](crate::GuardBuilder::client_credentials), naming the user with
    /// the token (`login_hint_token`). `binding_message` is shown to the user beside the
    /// request. Then [`await_approval`](Self::await_approval) or
    /// [`check_approval`](Self::check_approval).
    ///
    /// ```no_run
    /// # async fn run(guard: concierge_guard::Guard, incoming: concierge_guard::BearerToken)
    /// # -> Result<(), concierge_guard::ApprovalError> {
    /// use std::time::Duration;
    /// use concierge_guard::{Approval, ToolCall};
    /// let call = ToolCall::new("delete_note").summary("Delete the note “groceries”");
    /// let request = guard.request_approval(incoming.as_str(), &call, None).await?;
    /// match guard.await_approval(request, Duration::from_secs(20)).await? {
    ///     Approval::Approved(_) => { /* do it */ }
    ///     Approval::Pending(_) => { /* "approve on your device, then ask again" */ }
    ///     _ => { /* denied or expired: do not */ }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn request_approval(
        &self,
        user_token: &str,
        call: &ToolCall,
        binding_message: Option<&str>,
    ) -> Result<ApprovalRequest, ApprovalError> {
        let inner = &self.inner;
        let credentials = inner
            .credentials
            .as_ref()
            .ok_or(ApprovalError::NoCredentials)?;
        let endpoint = inner
            .issuers
            .first()
            .and_then(|i| i.connected())
            .and_then(|c| c.backchannel_endpoint.clone())
            .ok_or(ApprovalError::NoEndpoint)?;
        let mut form = vec![
            ("scope", "openid".to_owned()),
            ("login_hint_token", user_token.to_owned()),
            ("resource", inner.resource.clone()),
            (
                "authorization_details",
                call.details(&inner.resource).to_string(),
            ),
        ];
        if let Some(m) = binding_message {
            form.push(("binding_message", m.to_owned()));
        }
        let now = Instant::now();
        let json = match post_form(&inner.http, &endpoint, credentials, form)
            .await
            .map_err(ApprovalError::Transport)?
        {
            Answer::Ok(json) => json,
            Answer::Error {
                error, description, ..
            } => return Err(refused(credentials.client_id(), error, description)),
        };
        let auth_req_id = json
            .get("auth_req_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApprovalError::Transport("the answer has no auth_req_id".into()))?;
        let secs = |k: &str, default: u64| json.get(k).and_then(Value::as_u64).unwrap_or(default);
        let interval = Duration::from_secs(secs("interval", 5));
        Ok(ApprovalRequest {
            auth_req_id: auth_req_id.to_owned(),
            expires_at: now + Duration::from_secs(secs("expires_in", 0)),
            interval,
            next_poll: now + interval,
        })
    }

    /// Asks the issuer once where `request` stands (CIBA Core §10.1, §11). Too early a call
    /// (before the issuer's `interval` passed) answers `Pending` without asking.
    pub async fn check_approval(
        &self,
        request: ApprovalRequest,
    ) -> Result<Approval, ApprovalError> {
        let now = Instant::now();
        if now >= request.expires_at {
            return Ok(Approval::Expired);
        }
        if now < request.next_poll {
            return Ok(Approval::Pending(request));
        }
        let inner = &self.inner;
        let credentials = inner
            .credentials
            .as_ref()
            .ok_or(ApprovalError::NoCredentials)?;
        let endpoint = self.token_endpoint().ok_or(ApprovalError::NoEndpoint)?;
        let form = vec![
            ("grant_type", CIBA.to_owned()),
            ("auth_req_id", request.auth_req_id.clone()),
        ];
        let answer = post_form(&inner.http, &endpoint, credentials, form)
            .await
            .map_err(ApprovalError::Transport)?;
        let mut request = request;
        match answer {
            Answer::Ok(json) => {
                let access_token = json
                    .get("access_token")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ApprovalError::Transport("the answer has no access_token".into())
                    })?;
                Ok(Approval::Approved(ApprovedCall {
                    access_token: access_token.to_owned(),
                }))
            }
            Answer::Error {
                error, description, ..
            } => match error.as_str() {
                "authorization_pending" => {
                    request.next_poll = Instant::now() + request.interval;
                    Ok(Approval::Pending(request))
                }
                "slow_down" => {
                    request.interval += SLOW_DOWN;
                    request.next_poll = Instant::now() + request.interval;
                    Ok(Approval::Pending(request))
                }
                "access_denied" => Ok(Approval::Denied),
                "expired_token" | "invalid_grant" => Ok(Approval::Expired),
                _ => Err(refused(credentials.client_id(), error, description)),
            },
        }
    }

    /// Polls for `request` until the user decides, it expires, or `max_wait` passes (then
    /// `Pending`, to answer the caller now and check again later). Keep `max_wait` short
    /// enough for the MCP client's request timeout.
    pub async fn await_approval(
        &self,
        request: ApprovalRequest,
        max_wait: Duration,
    ) -> Result<Approval, ApprovalError> {
        let deadline = Instant::now() + max_wait;
        let mut request = request;
        loop {
            let wait = request.next_poll.saturating_duration_since(Instant::now());
            if Instant::now() + wait > deadline {
                return Ok(Approval::Pending(request));
            }
            tokio::time::sleep(wait).await;
            match self.check_approval(request).await? {
                Approval::Pending(r) => request = r,
                decided => return Ok(decided),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_call_becomes_one_mcp_tool_call_detail() {
        let d = ToolCall::new("delete_note")
            .summary("Delete it")
            .arguments(json!({"id": "n1"}))
            .details("https://notes.example/mcp");
        assert_eq!(
            d,
            json!([{"type": "mcp_tool_call", "tool": "delete_note", "summary": "Delete it",
                "arguments": {"id": "n1"}, "locations": ["https://notes.example/mcp"]}])
        );
        let bare = ToolCall::new("t").details("https://r.example");
        assert_eq!(bare[0].get("summary"), None);
    }

    #[test]
    fn refusals_are_named() {
        assert!(matches!(
            refused("c", "unauthorized_client".into(), None),
            ApprovalError::NotAllowed { .. }
        ));
        assert!(matches!(
            refused(
                "c",
                "invalid_authorization_details".into(),
                Some("x".into())
            ),
            ApprovalError::Refused { .. }
        ));
    }
}
