//! Who may call the admin API: the bearer of an admin access token (RFC 6750 §2.1). What an
//! admin access token is, is decided in `oauth::admin_token`; here it becomes an answer:
//! no token or an invalid one: 401 with `WWW-Authenticate: Bearer` (RFC 6750 §3); a valid
//! token that is not an admin token: 403 `insufficient_scope` (RFC 6750 §3.1).

use axum::Extension;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ApiError;
use crate::http::bearer_token;
use crate::oauth::admin_token::{ADMIN_SCOPE, AdminRefusal, check_admin_token};
use crate::state::AppState;

/// The admin client behind a request, and where it called from; handlers take it as
/// `Extension<AdminCaller>`, and the audit log records both with each change.
#[derive(Debug, Clone)]
pub struct AdminCaller {
    pub client_id: String,
    pub ip: Option<std::net::IpAddr>,
}

/// Route layer: authenticate and authorise, then pass the [`AdminCaller`] on.
pub async fn require_admin(
    Extension(state): Extension<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let client_id = check_admin_token(&state.oauth, bearer_token(req.headers()))
        .await
        .map_err(|e| match e {
            AdminRefusal::Missing => ApiError::unauthorized(None, e.to_string()),
            AdminRefusal::Invalid(why) => ApiError::unauthorized(Some("invalid_token"), why),
            AdminRefusal::NotAdmin(_) => ApiError::forbidden(ADMIN_SCOPE, e.to_string()),
            AdminRefusal::Store(e) => ApiError::internal(e),
        })?;
    let ip = crate::http::client_addr(req.headers(), req.extensions(), &state.oauth.config);
    req.extensions_mut().insert(AdminCaller { client_id, ip });
    Ok(next.run(req).await)
}
