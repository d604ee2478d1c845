//! The CIBA grant (OpenID Connect CIBA Core 1.0, poll mode): the client polls the token
//! endpoint with its `auth_req_id` (§10.1) and hears `authorization_pending`, `slow_down`,
//! `expired_token` or `access_denied` (§11) until the user decides; an approved request
//! yields tokens once (an ID token, since the request carried `openid`). Starting a request
//! and the user's side are in [`crate::oauth::ciba`].
//!
//! A request that carried `authorization_details` approved one action: its tokens carry the
//! details (RFC 9396 §9.1) and no refresh token, so the approval cannot outlive them.

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::polling::{self, Approved, Polled, Redemption};
use super::{Advertised, Grant, Param, TokenRequest};
use crate::error::{ErrorCode, OAuthError};
use crate::oauth::context::Context;
use crate::oauth::tokens::TokenResponse;
use crate::util;

pub const GRANT_TYPE: &str = "urn:openid:params:grant-type:ciba";

pub struct Ciba;

#[async_trait]
impl Grant for Ciba {
    fn grant_type(&self) -> &'static str {
        GRANT_TYPE
    }

    fn description(&self) -> &'static str {
        "A client polls with its auth_req_id until the user approves or denies its \
         backchannel authentication request (OpenID Connect CIBA Core §10.1)"
    }

    fn parameters(&self) -> &'static [Param] {
        &[Param {
            name: "auth_req_id",
            description: "auth_req_id: from the backchannel authentication response (CIBA \
                          Core §7.3)",
        }]
    }

    fn metadata(&self, c: &Advertised<'_>, m: &mut Map<String, Value>) {
        let issuer = c.issuer;
        m.insert(
            "backchannel_authentication_endpoint".into(),
            Value::String(format!("{issuer}/bc-authorize")),
        );
        m.insert(
            "backchannel_token_delivery_modes_supported".into(),
            Value::from(vec!["poll"]),
        );
        m.insert(
            "backchannel_user_code_parameter_supported".into(),
            Value::Bool(false),
        );
    }

    async fn issue(
        &self,
        ctx: &Context,
        req: &TokenRequest<'_>,
    ) -> Result<TokenResponse, OAuthError> {
        let client = req.client;
        let raw = req
            .form
            .get("auth_req_id")
            .ok_or_else(|| OAuthError::invalid_request("auth_req_id is missing"))?;
        let hash = util::secret_key(raw);
        let now = ctx.now();
        let unknown = || {
            OAuthError::new(
                ErrorCode::InvalidGrant,
                "the auth_req_id is unknown or was already used",
            )
        };
        let r = ctx
            .backchannel()
            .backchannel_by_auth_req(&hash)
            .await?
            .filter(|r| r.client_id == client.client_id)
            .ok_or_else(unknown)?;
        let polled = Polled {
            name: "auth_req_id",
            status: &r.status,
            interval_secs: r.interval_secs,
            last_polled_at: r.last_polled_at,
            expires_at: r.expires_at,
        };
        polling::check(now, polled, async |interval| {
            ctx.backchannel()
                .record_backchannel_poll(&hash, now, interval)
                .await
        })
        .await?;
        // The grant's refresh token is stored by the write that spends the request.
        let spend = Redemption::new(ctx, req, r.authorization_details.is_none(), now);
        let r = ctx
            .backchannel()
            .redeem_backchannel(&hash, &client.client_id, now, spend.stored_with())
            .await?
            .ok_or_else(unknown)?;
        let approved = Approved {
            user_id: r.user_id.as_deref(),
            auth_time: r.auth_time,
            amr: &r.amr,
            acr: r.acr.as_deref(),
            sid: r.sid.as_deref(),
            resources: &r.resources,
            scope: &r.scope,
            authorization_details: r.authorization_details.as_deref(),
        };
        spend.issue(ctx, req, approved, now).await
    }
}
