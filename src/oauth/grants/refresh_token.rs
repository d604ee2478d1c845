//! The refresh token grant (OAuth 2.1 §4.3). Public clients' tokens rotate on every use and a
//! reused one revokes its whole family (RFC 9700 §4.14.2); confidential clients keep theirs,
//! with a sliding idle expiry under an absolute cap.

use async_trait::async_trait;

use super::user_tokens::{UserGrant, issue, narrow_scope};
use super::{Grant, GrantType};
use crate::audit::{Event, Kind};
use crate::error::{ErrorCode, OAuthError};
use crate::oauth::client_metadata::AuthMethod;
use crate::oauth::clients::Client;
use crate::oauth::form::Form;
use crate::oauth::scope::Scope;
use crate::oauth::tokens::TokenResponse;
use crate::startup::AppState;
use crate::store::Spent;
use crate::util;

pub struct RefreshTokenGrant;

#[async_trait]
impl Grant for RefreshTokenGrant {
    fn grant_type(&self) -> GrantType {
        GrantType::RefreshToken
    }

    async fn exchange(
        &self,
        state: &AppState,
        client: &Client,
        form: &Form,
        dpop_jkt: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let invalid_grant = |d: &'static str| OAuthError::new(ErrorCode::InvalidGrant, d);
        let raw = form
            .get("refresh_token")
            .ok_or_else(|| OAuthError::invalid_request("refresh_token is missing"))?;
        let now = util::now();
        let rotate = client.metadata.token_endpoint_auth_method == AuthMethod::None;
        let idle = i64::from(state.config.tokens.refresh_token_idle_secs);
        let hash = util::secret_hash(raw);
        // RFC 9449 §5: a bound refresh token needs a proof with its key. Checked before the
        // token is spent, so a thief without the key cannot rotate it away.
        if let Some(bound) = state.store.get_refresh(&hash, now).await?
            && let Some(jkt) = &bound.dpop_jkt
            && dpop_jkt != Some(jkt.as_str())
        {
            return Err(OAuthError::invalid_dpop_proof(
                "this refresh token is bound to a DPoP key: send a DPoP proof made with that key",
            ));
        }
        let token = match state
            .store
            .use_refresh(&hash, now, rotate, now + idle)
            .await?
        {
            Spent::Fresh(t) => t,
            Spent::Replayed { family_id } => {
                let n = state.store.revoke_family(&family_id, now).await?;
                tracing::warn!(client_id = %client.client_id, revoked = n, "refresh token reuse detected");
                state.audit.record(
                    Event::new(Kind::RefreshReuseDetected)
                        .client(&client.client_id)
                        .detail(serde_json::json!({ "family_id": family_id, "revoked": n })),
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
        if token.client_id != client.client_id {
            return Err(invalid_grant(
                "the refresh token was issued to another client",
            ));
        }
        let granted = Scope::parse(&token.scope).map_err(OAuthError::internal)?;
        let scope = narrow_scope(form, &granted)?;
        issue(
            state,
            form,
            UserGrant {
                client,
                user_id: &token.user_id,
                resources: &token.resources,
                scope: &scope,
                granted_scope: &granted,
                auth_time: token.auth_time,
                sid: token.sid.as_deref(),
                nonce: None,
                family_id: &token.family_id,
                absolute_expires_at: Some(token.absolute_expires_at),
                new_refresh: rotate,
                dpop_jkt,
            },
        )
        .await
    }
}
