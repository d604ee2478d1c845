//! Who may administer the server: the admin API is a resource of its own
//! (`<issuer>/admin/v1`, RFC 8707) with one scope, `admin`, and an admin access token is one
//! of our access tokens that
//! - passes the one access-token check (signature, `typ`, issuer, expiry, not revoked);
//! - has the admin API as audience and the `admin` scope;
//! - was issued to a client for itself (client credentials: `sub` is the client, no `act`),
//!   and that client still exists and is an admin client (made with
//!   `concierge admin-client create`). User-delegated tokens are the user's, not an
//!   operator's; other clients, whoever registered them, may not administer the server.

use super::context::Context;
use super::resource::Resource;
use super::tokens::{TokenError, check_access_token};
use crate::store::StoreError;

/// The scope an admin access token must carry (on the admin resource).
pub const ADMIN_SCOPE: &str = "admin";

/// The admin API's own resource: `<issuer>/admin/v1`.
pub fn admin_resource_uri(issuer: &str) -> String {
    format!("{}/admin/v1", issuer.trim_end_matches('/'))
}

/// Is `resource` the admin API of the server at `issuer`?
pub fn is_admin_resource(issuer: &str, resource: &Resource) -> bool {
    resource.uri.as_str() == admin_resource_uri(issuer)
}

/// Why a request may not use the admin API.
#[derive(Debug, thiserror::Error)]
pub enum AdminRefusal {
    /// No token at all (RFC 6750 §3.1: no error code).
    #[error(
        "an admin access token is required (Authorization: Bearer …); get one with the client \
         credentials grant, resource = <issuer>/admin/v1 and scope = admin"
    )]
    Missing,
    /// Not a valid token of ours (401 `invalid_token`).
    #[error("{0}")]
    Invalid(&'static str),
    /// A valid token that is not an admin token (403 `insufficient_scope`).
    #[error("this access token cannot administer the server: {0}")]
    NotAdmin(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Check an admin access token; the answer is the admin client's id.
pub async fn check_admin_token(ctx: &Context, token: Option<&str>) -> Result<String, AdminRefusal> {
    let token = token.ok_or(AdminRefusal::Missing)?;
    let claims = check_access_token(ctx, token, None)
        .await
        .map_err(|e| match e {
            TokenError::Invalid => AdminRefusal::Invalid(
                "the access token is not valid: not ours, malformed or expired",
            ),
            TokenError::Revoked => AdminRefusal::Invalid("the access token was revoked"),
            TokenError::Store(e) => AdminRefusal::Store(e),
        })?;
    let not_admin = |why: String| AdminRefusal::NotAdmin(why);
    let audience = admin_resource_uri(ctx.issuer());
    if !claims.is_for(&audience) {
        return Err(not_admin(format!("its audience is not {audience}")));
    }
    if !claims.scopes().contains(ADMIN_SCOPE) {
        return Err(not_admin(format!("it lacks the {ADMIN_SCOPE} scope")));
    }
    if !claims.is_clients_own() {
        return Err(not_admin(
            "it was issued for a user or by delegation, not to an admin client for itself".into(),
        ));
    }
    match ctx.clients.find(&claims.client_id).await {
        Ok(Some(c)) if c.metadata.admin => Ok(claims.client_id),
        Ok(_) => Err(not_admin(
            "its client is not an admin client (or no longer exists)".into(),
        )),
        Err(super::clients::ClientLookupError::Store(e)) => Err(e.into()),
        Err(_) => Err(not_admin("its client is not an admin client".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_resource_is_under_the_issuer() {
        assert_eq!(
            admin_resource_uri("https://auth.example/"),
            "https://auth.example/admin/v1"
        );
    }
}
