//! Asynchronous approval: OpenID Connect Client-Initiated Backchannel Authentication (CIBA
//! Core 1.0) in poll mode. A confidential client (an agent, or an MCP server acting for its
//! caller) asks at the backchannel authentication endpoint for a user's approval (§7); the
//! user sees the request on the account area's approvals page and approves or denies it
//! after signing in as strongly as the request needs; the client polls the token endpoint
//! (`grants::ciba`).
//!
//! A hint that names no user is not an error the client can see: the request is stored and
//! answered like any other, and it simply never completes (CIBA §13 allows
//! `unknown_user_id`; we do not use it, so clients cannot enumerate users).

use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};

use super::authn::acr::Level;
use super::authn::throttle::Bucket;
use super::authorization_details;
use super::clients::Client;
use super::context::Context;
use super::form::Form;
use super::grants::ciba::GRANT_TYPE;
use super::policy;
use super::resource::Resource;
use super::scope::Scope;
use super::tokens;
use crate::audit::{Event, Kind};
use crate::error::{ErrorCode, OAuthError};
use crate::store::{AuthMethod, BackchannelRequest, DeviceApproval, Session, User};
use crate::util;

/// Longest `binding_message`, in characters (CIBA §7.1: "relatively short").
const MAX_BINDING_MESSAGE: usize = 100;

/// The backchannel authentication response (CIBA Core §7.3).
#[derive(Debug, Serialize)]
pub struct BackchannelResponse {
    pub auth_req_id: String,
    pub expires_in: i64,
    pub interval: i64,
}

fn invalid(d: impl Into<String>) -> OAuthError {
    OAuthError::invalid_request(d.into())
}

/// A client asks for a user's approval (CIBA Core §7.1, §7.2).
pub async fn start(
    ctx: &Context,
    client: &Client,
    form: &Form,
    addr: Option<IpAddr>,
) -> Result<BackchannelResponse, OAuthError> {
    // §4: CIBA clients are confidential; their registration names the grant and poll mode.
    if !client.metadata.has_grant(GRANT_TYPE) {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client did not register the CIBA grant (urn:openid:params:grant-type:ciba)",
        ));
    }
    if client.metadata.token_endpoint_auth_method == AuthMethod::None {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "CIBA is for confidential clients: this client does not authenticate",
        ));
    }
    let now = ctx.now();
    if let Err(t) = ctx
        .authn
        .throttle
        .attempt(
            ctx.rate_limits(),
            Bucket::Backchannel(&client.client_id),
            now,
        )
        .await?
    {
        return Err(OAuthError::rate_limited(
            "approval requests by this client",
            t.retry_after as u64,
        ));
    }
    // §7.1.1: signed authentication requests are optional; this server does not take them
    // (its metadata lists no backchannel_authentication_request_signing_alg_values).
    if form.get("request").is_some() {
        return Err(invalid(
            "signed authentication requests (request) are not supported; send the parameters \
             themselves",
        ));
    }
    if form.get("user_code").is_some() {
        return Err(invalid(
            "user_code is not supported (backchannel_user_code_parameter_supported is false)",
        ));
    }
    // §7.1: "CIBA authentication requests MUST therefore contain the openid scope value".
    let scope_raw = form.get("scope").unwrap_or("");
    if !scope_raw.split(' ').any(|s| s == "openid") {
        return Err(invalid(
            "scope must contain openid (CIBA Core §7.1), with the scopes the client needs",
        ));
    }
    let user = hinted_user(ctx, client, form).await?;
    let binding_message = binding_message(form.get("binding_message"))?;
    let expires_in = requested_expiry(ctx, form.get("requested_expiry"))?;
    let resources =
        policy::resources_for_user(ctx, &form.all("resource"), form.get("scope")).await?;
    let scope = policy::check_requested(client, &resources, form.get("scope"))?;
    let resource_uris: Vec<String> = resources.iter().map(|r| r.uri.to_string()).collect();
    let details = form
        .get("authorization_details")
        .map(|raw| authorization_details::parse(raw, &resources))
        .transpose()?;
    let acr_values: Vec<String> = form
        .get("acr_values")
        .map(|a| {
            a.split(' ')
                .filter(|v| !v.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();

    let (auth_req_id, key) = ctx.new_secret();
    let request = BackchannelRequest {
        auth_req_hash: key,
        id: util::random_id(),
        client_id: client.client_id.clone(),
        user_id: user.as_ref().map(|u| u.id.clone()),
        resources: resource_uris,
        scope: scope.to_string(),
        authorization_details: details.as_ref().map(Value::to_string),
        binding_message,
        acr_values,
        status: "pending".into(),
        auth_time: None,
        amr: Vec::new(),
        acr: None,
        sid: None,
        interval_secs: i64::from(ctx.config.ciba.poll_interval_secs),
        last_polled_at: None,
        created_at: now,
        expires_at: now + expires_in,
    };
    ctx.backchannel().insert_backchannel(&request).await?;
    ctx.audit.record(
        Event::new(Kind::ApprovalRequested)
            .client(&client.client_id)
            .user_opt(request.user_id.as_deref())
            .ip(addr)
            .detail(json!({
                "id": request.id,
                "scope": request.scope,
                "resources": request.resources,
                "authorization_details": details,
                "expires_at": request.expires_at,
            })),
    );
    if let Some(user) = &user {
        notify(ctx, client, user, &request, &resources, details.as_ref());
    }
    Ok(BackchannelResponse {
        auth_req_id,
        expires_in,
        interval: request.interval_secs,
    })
}

/// The user the request's one hint names, if any (§7.1: exactly one of `login_hint`,
/// `login_hint_token`, `id_token_hint`). A hint that names nobody is `None`, never an error.
async fn hinted_user(
    ctx: &Context,
    client: &Client,
    form: &Form,
) -> Result<Option<User>, OAuthError> {
    let hints = [
        ("login_hint", form.get("login_hint")),
        ("login_hint_token", form.get("login_hint_token")),
        ("id_token_hint", form.get("id_token_hint")),
    ];
    let given: Vec<(&str, &str)> = hints
        .iter()
        .filter_map(|(name, v)| v.map(|v| (*name, v)))
        .collect();
    let [(name, value)] = given[..] else {
        return Err(invalid(
            "name the user with exactly one of login_hint, login_hint_token and id_token_hint",
        ));
    };
    let user_id = match name {
        // A username, or an email address verified for exactly one user.
        "login_hint" => {
            let user = match ctx.users().find_user(value).await? {
                Some(u) => Some(u),
                None if value.contains('@') => {
                    let mut found = ctx.users().users_with_verified_email(value, 2).await?;
                    if found.len() == 1 { found.pop() } else { None }
                }
                None => None,
            };
            return Ok(user.filter(|u| !u.is_disabled()));
        }
        // One of our access tokens for the user: what an MCP server holds for its caller
        // when it asks that caller to approve something.
        "login_hint_token" => match tokens::check_access_token(ctx, value, None).await {
            Ok(claims) if !claims.is_clients_own() => claims.sub,
            Ok(_) => {
                return Err(invalid(
                    "login_hint_token is a client's own token: it names no user",
                ));
            }
            Err(tokens::TokenError::Store(e)) => return Err(e.into()),
            Err(_) => {
                return Err(OAuthError::new(
                    ErrorCode::ExpiredLoginHintToken,
                    "login_hint_token is not a valid access token of this server, or it \
                     expired",
                ));
            }
        },
        // An ID token we issued to this client; expired ones are fine as hints (OpenID
        // Connect Core §3.1.2.1).
        _ => match tokens::id_token_hint_subject(&ctx.keys, ctx.issuer(), value, &client.client_id)
        {
            Some(sub) => sub,
            None => {
                return Err(invalid(
                    "id_token_hint is not an ID token this server issued to this client",
                ));
            }
        },
    };
    Ok(ctx
        .users()
        .get_user(&user_id)
        .await?
        .filter(|u| !u.is_disabled()))
}

/// §7.1 `binding_message`: shown on the client's device and the user's, so short plain text.
fn binding_message(v: Option<&str>) -> Result<Option<String>, OAuthError> {
    let Some(m) = v else { return Ok(None) };
    if m.trim().is_empty()
        || m.chars().count() > MAX_BINDING_MESSAGE
        || m.chars().any(char::is_control)
    {
        return Err(OAuthError::new(
            ErrorCode::InvalidBindingMessage,
            format!("binding_message must be 1 to {MAX_BINDING_MESSAGE} characters of plain text"),
        ));
    }
    Ok(Some(m.to_string()))
}

/// §7.1 `requested_expiry`: a positive integer of seconds; longer than the server allows is
/// shortened (the response's `expires_in` says how long it got).
fn requested_expiry(ctx: &Context, v: Option<&str>) -> Result<i64, OAuthError> {
    let c = &ctx.config.ciba;
    match v {
        None => Ok(i64::from(c.default_expiry_secs)),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n > 0 => Ok(n.min(i64::from(c.max_expiry_secs))),
            _ => Err(invalid(
                "requested_expiry must be a positive whole number of seconds",
            )),
        },
    }
}

/// Announce a new request to the operator's receiver, in the background; the outcome goes
/// to the audit log. The body says who is asked, by whom, for what, and where to decide.
fn notify(
    ctx: &Context,
    client: &Client,
    user: &User,
    request: &BackchannelRequest,
    resources: &[Arc<Resource>],
    details: Option<&Value>,
) {
    let Some(hook) = ctx.approval_notify.clone() else {
        return;
    };
    let sentences: Vec<String> = details
        .map(|d| {
            authorization_details::sentences(d, resources)
                .into_iter()
                .map(|s| s.text)
                .collect()
        })
        .unwrap_or_default();
    let body = json!({
        "type": "approval_request",
        "id": request.id,
        "user": {"id": user.id, "username": user.username, "email": user.email},
        "client": {"client_id": client.client_id, "name": client.display_name()},
        "binding_message": request.binding_message,
        "scope": request.scope,
        "resources": request.resources,
        "authorization_details": details,
        "summary": sentences,
        "created_at": request.created_at,
        "expires_at": request.expires_at,
        "approve_url": ctx.url("/account/approvals"),
    });
    let audit = ctx.audit.clone();
    let (client_id, user_id, id) = (
        client.client_id.clone(),
        user.id.clone(),
        request.id.clone(),
    );
    tokio::spawn(async move {
        let outcome = match hook.deliver(body.to_string().into_bytes()).await {
            Ok(attempts) => json!({"id": id, "delivered": true, "attempts": attempts}),
            Err(e) => {
                tracing::warn!(error = %e, "announcing an approval request failed");
                json!({"id": id, "delivered": false, "error": e.to_string()})
            }
        };
        audit.record(
            Event::new(Kind::ApprovalNotified)
                .client(client_id)
                .user(user_id)
                .detail(outcome),
        );
    });
}

/// A pending request as the approvals page shows it.
pub struct Pending {
    pub request: BackchannelRequest,
    pub client: Client,
    pub resources: Vec<Arc<Resource>>,
    pub scope: Scope,
    pub details: Vec<authorization_details::Sentence>,
    /// How strongly the user must have signed in to approve it.
    pub required: Option<Level>,
}

/// A user's pending requests, with what each asks in words. A request whose client or
/// resource has gone since is left out (it can no longer be approved).
pub async fn pending_for(ctx: &Context, user_id: &str) -> Result<Vec<Pending>, OAuthError> {
    let mut out = Vec::new();
    for request in ctx
        .backchannel()
        .pending_backchannel_for_user(user_id, ctx.now())
        .await?
    {
        if let Some(p) = explain(ctx, request).await? {
            out.push(p);
        }
    }
    Ok(out)
}

async fn explain(
    ctx: &Context,
    request: BackchannelRequest,
) -> Result<Option<Pending>, OAuthError> {
    let Ok(Some(client)) = ctx.clients.find(&request.client_id).await else {
        return Ok(None);
    };
    let Ok(resources) = policy::stored_resources(ctx, &request.resources).await else {
        return Ok(None);
    };
    let details = match authorization_details::stored(request.authorization_details.as_deref())? {
        Some(v) => authorization_details::sentences(&v, &resources),
        None => Vec::new(),
    };
    let required =
        policy::required_level(ctx, &request.client_id, &resources, &request.acr_values).await?;
    Ok(Some(Pending {
        scope: Scope::parse(&request.scope).unwrap_or_default(),
        request,
        client,
        resources,
        details,
        required,
    }))
}

/// What became of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decided {
    Done,
    /// Not this user's, or no longer pending (decided elsewhere, expired).
    Gone,
    /// The session is weaker than the request needs: sign in again at this level.
    SignInAgain(Level),
}

/// The signed-in user decides on their pending request `id`. Approval needs the session to
/// be as strong as the request demands (the page sends a weaker session to sign in again; a
/// form posted anyway is refused here).
pub async fn decide(
    ctx: &Context,
    session: &Session,
    id: &str,
    approve: bool,
) -> Result<Decided, OAuthError> {
    let now = ctx.now();
    // Only the request decided on is explained (its client, resources and level).
    let request = ctx
        .backchannel()
        .pending_backchannel_for_user(&session.user_id, now)
        .await?
        .into_iter()
        .find(|r| r.id == id);
    let explained = match request {
        Some(r) => explain(ctx, r).await?,
        None => None,
    };
    let Some(p) = explained else {
        return Ok(Decided::Gone);
    };
    if approve
        && let Some(level) = p.required
        && Level::of_session(session.acr.as_deref(), &session.amr) < level
    {
        return Ok(Decided::SignInAgain(level));
    }
    let by = approve.then_some(DeviceApproval {
        user_id: &session.user_id,
        auth_time: session.auth_time,
        amr: &session.amr,
        acr: session.acr.as_deref(),
        sid: &session.sid,
    });
    if !ctx
        .backchannel()
        .decide_backchannel(id, &session.user_id, by, now)
        .await?
    {
        return Ok(Decided::Gone);
    }
    tracing::info!(client_id = %p.request.client_id, approved = approve, "approval decision");
    let kind = if approve {
        Kind::ApprovalApproved
    } else {
        Kind::ApprovalDenied
    };
    ctx.audit.record(
        Event::new(kind)
            .client(&p.request.client_id)
            .user(&session.user_id)
            .detail(json!({
                "id": id,
                "scope": p.request.scope,
                "resources": p.request.resources,
            })),
    );
    Ok(Decided::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_messages_are_short_plain_text() {
        assert_eq!(binding_message(None).unwrap(), None);
        assert_eq!(
            binding_message(Some("Code 7H2K")).unwrap().as_deref(),
            Some("Code 7H2K")
        );
        for bad in ["", "  ", "a\nb", &"x".repeat(101)] {
            let e = binding_message(Some(bad)).unwrap_err();
            assert_eq!(e.code.as_str(), "invalid_binding_message");
        }
    }
}
