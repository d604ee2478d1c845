//! The client credentials grant (RFC 6749 §4.4): a machine acting for itself, with a token
//! bound to one resource (RFC 8707).

use std::sync::Arc;

use async_trait::async_trait;

use super::{Grant, GrantType};
use crate::error::{ErrorCode, OAuthError};
use crate::oauth::clients::Client;
use crate::oauth::form::Form;
use crate::oauth::resource::{Resource, ResourceUri};
use crate::oauth::scope::Scope;
use crate::oauth::tokens::{AccessToken, TokenResponse, issue_access_token};
use crate::startup::AppState;

pub struct ClientCredentials;

#[async_trait]
impl Grant for ClientCredentials {
    fn grant_type(&self) -> GrantType {
        GrantType::ClientCredentials
    }

    async fn exchange(
        &self,
        state: &AppState,
        client: &Client,
        form: &Form,
        dpop_jkt: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let resource = requested_resource(state, form).await?;
        let scope = granted_scope(client, &resource, form.get("scope"))?;
        let ttl = i64::from(state.config.tokens.access_token_ttl_secs);
        let audience = [resource.uri.to_string()];
        Ok(issue_access_token(
            &state.keys,
            &state.issuer,
            &AccessToken {
                sub: &client.client_id,
                client_id: &client.client_id,
                audience: &audience,
                scope: &scope.to_string(),
                auth_time: None,
                act: None,
                ttl,
                jkt: dpop_jkt,
            },
        )?)
    }
}

/// The one registered resource the token is for (RFC 8707 §2).
async fn requested_resource(state: &AppState, form: &Form) -> Result<Arc<Resource>, OAuthError> {
    let target = |d: String| OAuthError::new(ErrorCode::InvalidTarget, d);
    let requested = form.all("resource");
    let raw = match requested.as_slice() {
        [one] => *one,
        [] => {
            return Err(target(
                "resource is required: name the registered resource the token is for (RFC 8707)"
                    .into(),
            ));
        }
        _ => return Err(target("request one resource per token".into())),
    };
    if let Some(hit) = state.resources.cached(raw) {
        return Ok(hit);
    }
    let uri = ResourceUri::parse(raw).map_err(|e| target(format!("resource {e}")))?;
    state
        .resources
        .get(&uri)
        .await?
        .ok_or_else(|| target(format!("{uri} is not a registered resource")))
}

/// Requested scopes must belong to the resource and, when the client registered a `scope`,
/// to that too. Without `scope`, the client's registered scopes that the resource offers.
fn granted_scope(
    client: &Client,
    resource: &Resource,
    requested: Option<&str>,
) -> Result<Scope, OAuthError> {
    let invalid = |d: String| OAuthError::new(ErrorCode::InvalidScope, d);
    let registered = match &client.metadata.scope {
        Some(s) => {
            Some(Scope::parse(s).map_err(|e| OAuthError::internal(format!("stored scope {e}")))?)
        }
        None => None,
    };
    let offered = |t: &str| resource.scopes.iter().any(|s| s.name == t);
    let scope = match requested {
        Some(r) => {
            let s = Scope::parse(r).map_err(|e| invalid(format!("scope {e}")))?;
            for t in s.tokens() {
                if !offered(t) {
                    return Err(invalid(format!("{t} is not a scope of {}", resource.uri)));
                }
                if registered.as_ref().is_some_and(|reg| !reg.contains(t)) {
                    return Err(invalid(format!(
                        "this client did not register the scope {t}"
                    )));
                }
            }
            s
        }
        None => {
            let reg = registered.ok_or_else(|| {
                invalid("scope is required: this client registered no default scope".into())
            })?;
            let tokens: Vec<&str> = reg
                .tokens()
                .iter()
                .map(String::as_str)
                .filter(|t| offered(t))
                .collect();
            Scope::parse(&tokens.join(" ")).map_err(|e| invalid(format!("scope {e}")))?
        }
    };
    Ok(scope)
}
