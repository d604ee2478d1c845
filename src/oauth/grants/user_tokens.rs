//! What the authorization code and refresh token grants share: choosing the resource a token
//! is for (narrowing, never widening), narrowing scopes, and issuing the access token, the
//! rotated refresh token and the ID token of a user's grant.

use serde_json::{Map, Value};

use super::GrantType;
use crate::error::{ErrorCode, OAuthError};
use crate::oauth::client_metadata::AuthMethod;
use crate::oauth::clients::Client;
use crate::oauth::form::Form;
use crate::oauth::resource::{OIDC_SCOPES, ResourceUri};
use crate::oauth::scope::Scope;
use crate::oauth::tokens::{
    AccessToken, IdToken, TokenResponse, issue_access_token, issue_id_token,
};
use crate::startup::AppState;
use crate::store::{RefreshToken, User};
use crate::util;

/// The one granted resource this token is for. `resource` on the token request may pick one
/// of the granted resources (narrow) but never name another (RFC 8707 §2.2).
pub fn select_resource(form: &Form, granted: &[String]) -> Result<String, OAuthError> {
    let target = |d: String| OAuthError::new(ErrorCode::InvalidTarget, d);
    match form.all("resource").as_slice() {
        [] => match granted {
            [only] => Ok(only.clone()),
            _ => Err(target(
                "several resources were granted: name one with resource".into(),
            )),
        },
        [one] => {
            let uri = ResourceUri::parse(one).map_err(|e| target(format!("resource {e}")))?;
            granted
                .iter()
                .find(|g| *g == uri.as_str())
                .cloned()
                .ok_or_else(|| {
                    target(format!(
                        "{uri} was not granted; a token request cannot widen the grant"
                    ))
                })
        }
        _ => Err(target("request one resource per token".into())),
    }
}

/// `scope` on a token request may narrow the granted scope, never widen it (RFC 6749 §6).
pub fn narrow_scope(form: &Form, granted: &Scope) -> Result<Scope, OAuthError> {
    let Some(requested) = form.get("scope") else {
        return Ok(granted.clone());
    };
    let requested = Scope::parse(requested)
        .map_err(|e| OAuthError::new(ErrorCode::InvalidScope, format!("scope {e}")))?;
    if let Some(t) = requested.tokens().iter().find(|t| !granted.contains(t)) {
        return Err(OAuthError::new(
            ErrorCode::InvalidScope,
            format!("{t} was not granted; a token request cannot widen the grant"),
        ));
    }
    Ok(requested)
}

/// The standard claims `scope` allows (OpenID Connect Core §5.4).
pub fn user_claims(user: &User, scope: &Scope) -> Map<String, Value> {
    let mut m = Map::new();
    if scope.contains("profile") {
        m.insert("preferred_username".into(), user.username.clone().into());
        if let Some(n) = &user.name {
            m.insert("name".into(), n.clone().into());
        }
        m.insert("updated_at".into(), user.updated_at.into());
    }
    if scope.contains("email")
        && let Some(e) = &user.email
    {
        m.insert("email".into(), e.clone().into());
        m.insert("email_verified".into(), false.into());
    }
    m
}

/// The grant being turned into tokens.
pub struct UserGrant<'a> {
    pub client: &'a Client,
    pub user_id: &'a str,
    /// Every resource granted; the refresh token keeps them all.
    pub resources: &'a [String],
    /// The scope for this response (possibly narrowed).
    pub scope: &'a Scope,
    /// The full granted scope, kept by a new refresh token.
    pub granted_scope: &'a Scope,
    pub auth_time: i64,
    pub sid: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub family_id: &'a str,
    /// When the family's refresh tokens must die, if one was issued before.
    pub absolute_expires_at: Option<i64>,
    /// Issue a new refresh token (first issue, or rotation).
    pub new_refresh: bool,
    /// The DPoP key of this token request: the access token is bound to it, and so is a new
    /// refresh token of a public client (RFC 9449 §5).
    pub dpop_jkt: Option<&'a str>,
}

/// Issue the access token (for one resource), a refresh token when allowed, and an ID token
/// when `openid` was granted.
pub async fn issue(
    state: &AppState,
    form: &Form,
    g: UserGrant<'_>,
) -> Result<TokenResponse, OAuthError> {
    let resource_uri = select_resource(form, g.resources)?;
    // Granted URIs were stored normalised, so they parse again.
    let uri = ResourceUri::parse(&resource_uri).map_err(OAuthError::internal)?;
    let resource = state.resources.get(&uri).await?.ok_or_else(|| {
        OAuthError::new(
            ErrorCode::InvalidGrant,
            format!("the resource {resource_uri} no longer exists"),
        )
    })?;
    let user = state
        .store
        .get_user(g.user_id)
        .await?
        .ok_or_else(|| OAuthError::new(ErrorCode::InvalidGrant, "the user no longer exists"))?;

    // The access token carries the scopes of its resource, plus the OpenID Connect ones.
    let token_scope: Vec<&str> = g
        .scope
        .tokens()
        .iter()
        .map(String::as_str)
        .filter(|t| OIDC_SCOPES.contains(t) || resource.scopes.iter().any(|s| s.name == *t))
        .collect();
    let token_scope = token_scope.join(" ");
    let openid = g.scope.contains("openid");
    // With openid, the token also works at our userinfo endpoint.
    let mut audience = vec![resource.uri.to_string()];
    if openid {
        audience.push(format!("{}/userinfo", state.issuer));
    }
    let tokens = &state.config.tokens;
    let mut response = issue_access_token(
        &state.keys,
        &state.issuer,
        &AccessToken {
            sub: &user.id,
            client_id: &g.client.client_id,
            audience: &audience,
            scope: &token_scope,
            auth_time: Some(g.auth_time),
            act: None,
            ttl: i64::from(tokens.access_token_ttl_secs),
            jkt: g.dpop_jkt,
        },
    )?;

    // Refresh tokens: for clients that registered the grant; with OpenID Connect only when
    // offline_access was granted (OpenID Connect Core §11).
    let may_refresh = g
        .client
        .metadata
        .grant_types
        .contains(&GrantType::RefreshToken)
        && (!g.granted_scope.contains("openid") || g.granted_scope.contains("offline_access"));
    if g.new_refresh && may_refresh {
        let now = util::now();
        let absolute = g
            .absolute_expires_at
            .unwrap_or(now + i64::from(tokens.refresh_token_absolute_secs));
        let raw = util::random_secret();
        state
            .store
            .insert_refresh(&RefreshToken {
                token_hash: util::secret_hash(&raw),
                family_id: g.family_id.to_string(),
                client_id: g.client.client_id.clone(),
                user_id: user.id.clone(),
                resources: g.resources.to_vec(),
                scope: g.granted_scope.to_string(),
                auth_time: g.auth_time,
                sid: g.sid.map(str::to_string),
                created_at: now,
                expires_at: (now + i64::from(tokens.refresh_token_idle_secs)).min(absolute),
                absolute_expires_at: absolute,
                // RFC 9449 §5: refresh tokens of public clients are bound to the DPoP key;
                // confidential clients' are bound to their client authentication instead.
                dpop_jkt: g
                    .dpop_jkt
                    .filter(|_| g.client.metadata.token_endpoint_auth_method == AuthMethod::None)
                    .map(str::to_string),
            })
            .await?;
        response.refresh_token = Some(raw);
    }
    if openid {
        response.id_token = Some(issue_id_token(
            &state.keys,
            &state.issuer,
            IdToken {
                sub: &user.id,
                client_id: &g.client.client_id,
                nonce: g.nonce,
                auth_time: g.auth_time,
                sid: g.sid,
                access_token: &response.access_token,
                ttl: i64::from(tokens.id_token_ttl_secs),
                claims: user_claims(&user, g.scope),
            },
        )?);
    }
    if let Err(e) = state
        .store
        .touch_consent(
            &user.id,
            &g.client.client_id,
            &[resource.uri.to_string()],
            util::now(),
        )
        .await
    {
        tracing::warn!(error = %e, "recording consent use failed");
    }
    Ok(response)
}
