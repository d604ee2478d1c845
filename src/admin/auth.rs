//! Who may call the admin API: the bearer of an admin access token (RFC 6750 §2.1).
//!
//! An admin access token is one of our JWT access tokens (RFC 9068) that
//! - verifies (signature with a published key, `typ`, `iss`, `exp`) and is not revoked;
//! - has the admin API as audience (`<issuer>/admin/v1`, RFC 8707) and the `admin` scope;
//! - was issued to a pre-registered client for itself (client credentials: `sub` is the
//!   client, no `act`), and that client still exists. Dynamically registered clients choose
//!   their own scopes, and user-delegated tokens are the user's, not an operator's: neither
//!   may administer the server.
//!
//! No token or an invalid one: 401 with `WWW-Authenticate: Bearer` (RFC 6750 §3); a valid
//! token that is not an admin token: 403 `insufficient_scope` (RFC 6750 §3.1).

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::Value;

use crate::endpoints::bearer_token;
use crate::error::ApiError;
use crate::manage::{ADMIN_SCOPE, admin_resource_uri};
use crate::oauth::clients::ClientSource;
use crate::oauth::scope::Scope;
use crate::oauth::tokens::{revoked_key, verify_access_token};
use crate::startup::AppState;
use crate::store::ClientKind;

/// The admin client behind a request; handlers take it as `Extension<AdminCaller>`.
#[derive(Debug, Clone)]
pub struct AdminCaller {
    pub client_id: String,
}

/// Route layer: authenticate and authorise, then pass the [`AdminCaller`] on.
pub async fn require_admin(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = authorize(&state, bearer_token(req.headers())).await?;
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

async fn authorize(state: &AppState, token: Option<&str>) -> Result<AdminCaller, ApiError> {
    let token = token.ok_or_else(|| {
        ApiError::unauthorized(
            None,
            "an admin access token is required (Authorization: Bearer …); get one with the \
             client credentials grant, resource = <issuer>/admin/v1 and scope = admin",
        )
    })?;
    let claims = verify_access_token(&state.keys, &state.issuer, token, None).ok_or_else(|| {
        ApiError::unauthorized(
            Some("invalid_token"),
            "the access token is not valid: not ours, malformed or expired",
        )
    })?;
    let jti = claims["jti"].as_str().unwrap_or_default();
    if jti.is_empty()
        || state
            .store
            .is_used(&revoked_key(jti), crate::util::now())
            .await?
    {
        return Err(ApiError::unauthorized(
            Some("invalid_token"),
            "the access token was revoked",
        ));
    }
    let forbidden = |why: &str| {
        ApiError::forbidden(
            ADMIN_SCOPE,
            format!("this access token cannot administer the server: {why}"),
        )
    };
    let audience = admin_resource_uri(&state.issuer);
    let for_admin_api = match &claims["aud"] {
        Value::String(a) => *a == audience,
        Value::Array(list) => list.iter().any(|a| a.as_str() == Some(audience.as_str())),
        _ => false,
    };
    if !for_admin_api {
        return Err(forbidden(&format!("its audience is not {audience}")));
    }
    let scope = Scope::parse(claims["scope"].as_str().unwrap_or_default()).unwrap_or_default();
    if !scope.contains(ADMIN_SCOPE) {
        return Err(forbidden(&format!("it lacks the {ADMIN_SCOPE} scope")));
    }
    let client_id = claims["client_id"].as_str().unwrap_or_default();
    if claims["sub"].as_str() != Some(client_id) || !claims["act"].is_null() {
        return Err(forbidden(
            "it was issued for a user or by delegation, not to an admin client for itself",
        ));
    }
    match state.clients.find(client_id).await {
        Ok(Some(c)) if c.source == ClientSource::Stored(ClientKind::Static) => Ok(AdminCaller {
            client_id: client_id.to_string(),
        }),
        Ok(_) | Err(_) => Err(forbidden(
            "its client is not a pre-registered client (or no longer exists)",
        )),
    }
}
