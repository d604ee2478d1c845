//! The device code grant at the token endpoint (RFC 8628 §3.4–3.5): polling answers
//! `authorization_pending`, `slow_down`, `expired_token` or `access_denied` until the user
//! decides; an approved code yields tokens once.

use async_trait::async_trait;

use super::user_tokens::{UserGrant, issue};
use super::{Grant, GrantType};
use crate::error::{ErrorCode, OAuthError};
use crate::oauth::clients::Client;
use crate::oauth::form::Form;
use crate::oauth::scope::Scope;
use crate::oauth::tokens::TokenResponse;
use crate::startup::AppState;
use crate::util;

pub struct DeviceCodeGrant;

/// How much longer a device must wait after polling too fast (RFC 8628 §3.5).
const SLOW_DOWN_STEP: i64 = 5;

#[async_trait]
impl Grant for DeviceCodeGrant {
    fn grant_type(&self) -> GrantType {
        GrantType::DeviceCode
    }

    async fn exchange(
        &self,
        state: &AppState,
        client: &Client,
        form: &Form,
        dpop_jkt: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let e = |code, d: &'static str| OAuthError::new(code, d);
        let raw = form
            .get("device_code")
            .ok_or_else(|| OAuthError::invalid_request("device_code is missing"))?;
        let hash = util::secret_hash(raw);
        let now = util::now();
        let d = state
            .store
            .device_by_code(&hash)
            .await?
            .filter(|d| d.client_id == client.client_id)
            .ok_or_else(|| {
                e(
                    ErrorCode::InvalidGrant,
                    "the device_code is unknown or was already used",
                )
            })?;
        if d.expires_at <= now {
            return Err(e(
                ErrorCode::ExpiredToken,
                "the device_code expired; start again",
            ));
        }
        if d.last_polled_at
            .is_some_and(|last| now - last < d.interval_secs)
        {
            state
                .store
                .record_poll(&hash, now, d.interval_secs + SLOW_DOWN_STEP)
                .await?;
            let mut err = e(
                ErrorCode::SlowDown,
                "polling too fast; wait longer between requests",
            );
            err.retry_after = Some((d.interval_secs + SLOW_DOWN_STEP) as u64);
            return Err(err);
        }
        state.store.record_poll(&hash, now, d.interval_secs).await?;
        match d.status.as_str() {
            "pending" => {
                return Err(e(
                    ErrorCode::AuthorizationPending,
                    "the user has not decided yet",
                ));
            }
            // RFC 8628 §3.5: a token endpoint error, so 400 like the others.
            "denied" => {
                return Err(e(ErrorCode::AccessDenied, "the user denied the request")
                    .with_status(http::StatusCode::BAD_REQUEST));
            }
            _ => {}
        }
        let d = state
            .store
            .redeem_device(&hash, now)
            .await?
            .ok_or_else(|| e(ErrorCode::InvalidGrant, "the device_code was already used"))?;
        let (Some(user_id), Some(auth_time)) = (d.user_id.as_deref(), d.auth_time) else {
            return Err(OAuthError::internal("an approved device code has no user"));
        };
        let scope = Scope::parse(&d.scope).map_err(OAuthError::internal)?;
        issue(
            state,
            form,
            UserGrant {
                client,
                user_id,
                resources: &d.resources,
                scope: &scope,
                granted_scope: &scope,
                auth_time,
                sid: d.sid.as_deref(),
                nonce: None,
                family_id: &util::random_id(),
                absolute_expires_at: None,
                new_refresh: true,
                dpop_jkt,
            },
        )
        .await
    }
}
