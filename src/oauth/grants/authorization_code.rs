//! The authorization code grant (OAuth 2.1 §4.1.3): a single-use code, bound to the client,
//! the redirect URI, the PKCE verifier and the granted resources.

use async_trait::async_trait;

use super::user_tokens::{UserGrant, issue, narrow_scope};
use super::{Grant, GrantType};
use crate::audit::{Event, Kind};
use crate::error::{ErrorCode, OAuthError};
use crate::oauth::clients::Client;
use crate::oauth::form::Form;
use crate::oauth::pkce;
use crate::oauth::scope::Scope;
use crate::oauth::tokens::TokenResponse;
use crate::startup::AppState;
use crate::store::Spent;
use crate::util;

pub struct AuthorizationCode;

fn invalid_grant(d: impl Into<std::borrow::Cow<'static, str>>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidGrant, d)
}

#[async_trait]
impl Grant for AuthorizationCode {
    fn grant_type(&self) -> GrantType {
        GrantType::AuthorizationCode
    }

    async fn exchange(
        &self,
        state: &AppState,
        client: &Client,
        form: &Form,
        dpop_jkt: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let code = form
            .get("code")
            .ok_or_else(|| OAuthError::invalid_request("code is missing"))?;
        let verifier = form
            .get("code_verifier")
            .ok_or_else(|| invalid_grant("code_verifier is missing (PKCE is required)"))?;
        let now = util::now();
        let code = match state
            .store
            .redeem_code(&util::secret_hash(code), now)
            .await?
        {
            Spent::Fresh(c) => c,
            Spent::Replayed { family_id } => {
                // RFC 9700 §4.5: a replayed code revokes what its first redemption issued.
                let n = state.store.revoke_family(&family_id, now).await?;
                tracing::warn!(client_id = %client.client_id, revoked = n, "authorization code replayed");
                state.audit.record(
                    Event::new(Kind::CodeReplayDetected)
                        .client(&client.client_id)
                        .detail(serde_json::json!({ "family_id": family_id, "revoked": n })),
                );
                return Err(invalid_grant(
                    "the code was already used; the tokens issued for it are revoked",
                ));
            }
            Spent::Invalid => return Err(invalid_grant("the code is invalid or expired")),
        };
        if code.client_id != client.client_id {
            return Err(invalid_grant("the code was issued to another client"));
        }
        if let Some(sent) = &code.redirect_uri
            && form.get("redirect_uri") != Some(sent.as_str())
        {
            return Err(invalid_grant(
                "redirect_uri must equal the one of the authorization request",
            ));
        }
        if !pkce::verify(verifier, &code.code_challenge) {
            return Err(invalid_grant(
                "code_verifier does not match the code_challenge",
            ));
        }
        // RFC 9449 §10: a code requested with dpop_jkt is redeemed with a proof of that key.
        if let Some(bound) = &code.dpop_jkt
            && dpop_jkt != Some(bound.as_str())
        {
            return Err(OAuthError::invalid_dpop_proof(
                "the authorization request named dpop_jkt: send a DPoP proof made with that key",
            ));
        }
        let granted = Scope::parse(&code.scope).map_err(OAuthError::internal)?;
        let scope = narrow_scope(form, &granted)?;
        issue(
            state,
            form,
            UserGrant {
                client,
                user_id: &code.user_id,
                resources: &code.resources,
                scope: &scope,
                granted_scope: &granted,
                auth_time: code.auth_time,
                sid: code.sid.as_deref(),
                nonce: code.nonce.as_deref(),
                family_id: &code.family_id,
                absolute_expires_at: None,
                new_refresh: true,
                dpop_jkt,
            },
        )
        .await
    }
}
