//! The refresh token grant (OAuth 2.1 §4.3). Public clients' tokens rotate on every use and a
//! reused one revokes its whole family (RFC 9700 §4.14.2); confidential clients keep theirs,
//! with a sliding idle expiry under an absolute cap.

use async_trait::async_trait;
use serde_json::json;

use super::user_grant::{Authenticated, UserGrant, issue};
use super::{Grant, Param, TokenRequest};
use crate::audit::{Event, Kind};
use crate::error::{ErrorCode, OAuthError};
use crate::oauth::context::Context;
use crate::oauth::policy;
use crate::oauth::scope::Scope;
use crate::oauth::tokens::TokenResponse;
use crate::store::{RefreshToken, Spent};
use crate::util;

pub const GRANT_TYPE: &str = "refresh_token";

pub struct RefreshTokenGrant;

fn invalid_grant(d: &'static str) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidGrant, d)
}

/// Everything a refresh request must pass before its token is spent, so that a refused
/// request (another client's token, a widened scope or resource, a missing DPoP proof)
/// spends nothing and the rightful client's next refresh still works.
async fn check(
    ctx: &Context,
    token: &RefreshToken,
    req: &TokenRequest<'_>,
) -> Result<(Scope, Scope), OAuthError> {
    if token.client_id != req.client.client_id {
        return Err(invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    // RFC 9449 §5: a bound refresh token needs a proof with its key.
    if let Some(jkt) = &token.dpop_jkt
        && req.dpop_jkt != Some(jkt.as_str())
    {
        return Err(OAuthError::invalid_dpop_proof(
            "this refresh token is bound to a DPoP key: send a DPoP proof made with that key",
        ));
    }
    policy::select_granted(ctx, &req.form.all("resource"), &token.resources).await?;
    let granted = Scope::parse(&token.scope).map_err(OAuthError::internal)?;
    let scope = policy::narrow(req.form.get("scope"), &granted)?;
    Ok((granted, scope))
}

#[async_trait]
impl Grant for RefreshTokenGrant {
    fn grant_type(&self) -> &'static str {
        GRANT_TYPE
    }

    fn description(&self) -> &'static str {
        "A refresh token for a new access token, never wider than the grant (OAuth 2.1 §4.3)"
    }

    fn parameters(&self) -> &'static [Param] {
        &[Param {
            name: "refresh_token",
            description: "refresh_token: the refresh token",
        }]
    }

    async fn issue(
        &self,
        ctx: &Context,
        req: &TokenRequest<'_>,
    ) -> Result<TokenResponse, OAuthError> {
        let client = req.client;
        let raw = req
            .form
            .get("refresh_token")
            .ok_or_else(|| OAuthError::invalid_request("refresh_token is missing"))?;
        let now = ctx.now();
        let rotate = client.metadata.is_public();
        let idle = i64::from(ctx.config.tokens.refresh_token_idle_secs);
        let hash = util::secret_hash(raw);
        if let Some(current) = ctx.refresh_tokens().get_refresh(&hash, now).await? {
            check(ctx, &current, req).await?;
        }
        let token = match ctx
            .refresh_tokens()
            .use_refresh(&hash, now, rotate, now + idle)
            .await?
        {
            Spent::Fresh(t) => t,
            Spent::Replayed { family_id } => {
                let n = ctx.refresh_tokens().revoke_family(&family_id, now).await?;
                tracing::warn!(client_id = %client.client_id, revoked = n, "refresh token reuse detected");
                ctx.audit.record(
                    Event::new(Kind::RefreshReuseDetected)
                        .client(&client.client_id)
                        .detail(json!({ "family_id": family_id, "revoked": n })),
                );
                return Err(invalid_grant(
                    "the refresh token was already used; its family is revoked",
                ));
            }
            Spent::Invalid => {
                return Err(invalid_grant(
                    "the refresh token is invalid, expired or revoked",
                ));
            }
        };
        // The same checks on what was spent (the token may have changed in between).
        let (granted, scope) = check(ctx, &token, req).await?;
        issue(
            ctx,
            req.form,
            UserGrant {
                client,
                user_id: &token.user_id,
                resources: &token.resources,
                scope: &scope,
                granted_scope: &granted,
                authenticated: Authenticated {
                    auth_time: token.auth_time,
                    amr: &token.amr,
                    acr: token.acr.as_deref(),
                    sid: token.sid.as_deref(),
                },
                nonce: None,
                family_id: &token.family_id,
                absolute_expires_at: Some(token.absolute_expires_at),
                new_refresh: rotate,
                dpop_jkt: req.dpop_jkt,
            },
        )
        .await
    }
}
