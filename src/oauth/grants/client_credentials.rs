//! The client credentials grant (RFC 6749 §4.4): a machine acting for itself, with a token
//! bound to one resource (RFC 8707). Only for clients an operator allowed (see
//! [`policy::resource_for_client`]), and only with scopes an operator gave them.

use async_trait::async_trait;

use super::{Grant, TokenRequest};
use crate::error::OAuthError;
use crate::oauth::context::Context;
use crate::oauth::policy;
use crate::oauth::tokens::{AccessToken, TokenResponse, issue_access_token};

pub const GRANT_TYPE: &str = "client_credentials";

pub struct ClientCredentials;

#[async_trait]
impl Grant for ClientCredentials {
    fn grant_type(&self) -> &'static str {
        GRANT_TYPE
    }

    fn description(&self) -> &'static str {
        "A client's token for itself, for one resource (RFC 6749 §4.4)"
    }

    fn acts_for_user(&self) -> bool {
        false
    }

    async fn issue(
        &self,
        ctx: &Context,
        req: &TokenRequest<'_>,
    ) -> Result<TokenResponse, OAuthError> {
        machine_token(ctx, req).await
    }
}

/// A client's token for itself: one resource the client may have machine tokens for, the
/// scopes an operator gave it. Also what the jwt-bearer grant issues for a client's own or a
/// workload's assertion.
pub async fn machine_token(
    ctx: &Context,
    req: &TokenRequest<'_>,
) -> Result<TokenResponse, OAuthError> {
    let client = req.client;
    let resource = policy::resource_for_client(ctx, client, &req.form.all("resource")).await?;
    let scope = policy::scopes_for_client(client, &resource, req.form.get("scope"))?;
    let audience = [resource.uri.to_string()];
    Ok(issue_access_token(
        &ctx.keys,
        ctx.issuer(),
        &AccessToken {
            // RFC 9068 §2.2: with no resource owner, `sub` is the client.
            sub: &client.client_id,
            client_id: &client.client_id,
            audience: &audience,
            scope: &scope.to_string(),
            auth_time: None,
            amr: &[],
            acr: None,
            act: None,
            ttl: i64::from(ctx.config.tokens.access_token_ttl_secs),
            not_after: None,
            jkt: resource.dpop_binding(req.dpop_jkt)?,
            alg: resource.token_alg,
            authorization_details: None,
            delegation: None,
        },
    )?)
}
