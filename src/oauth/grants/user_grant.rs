//! Turning a user's grant into tokens, for the grants that carry one (authorization code,
//! refresh token, device code): the access token for one of the granted resources, the
//! rotated refresh token, and the ID token.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{ErrorCode, OAuthError};
use crate::oauth::clients::Client;
use crate::oauth::context::Context;
use crate::oauth::form::Form;
use crate::oauth::policy;
use crate::oauth::resource::{Alg, OIDC_SCOPES, Resource, ResourceUri};
use crate::oauth::scope::Scope;
use crate::oauth::tokens::{
    AccessToken, IdToken, TokenResponse, issue_access_token, issue_id_token,
};
use crate::store::{FirstRefresh, NextRefresh, User};

/// Whether `scope` asks for any of the user's standard claims ([`user_claims`]): an ID token
/// for it needs the user's record.
fn asks_user_claims(scope: &Scope) -> bool {
    scope.contains("profile") || scope.contains("email")
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
        m.insert("email_verified".into(), user.email_verified.into());
    }
    m
}

/// How the user signed in for a grant.
#[derive(Debug, Clone, Copy)]
pub struct Authenticated<'a> {
    pub auth_time: i64,
    pub amr: &'a [String],
    pub acr: Option<&'a str>,
    pub sid: Option<&'a str>,
}

/// The grant being turned into tokens.
pub struct UserGrant<'a> {
    pub client: &'a Client,
    pub user_id: &'a str,
    /// Every resource granted; the refresh token keeps them all.
    pub resources: &'a [String],
    /// The scope for this response (possibly narrowed).
    pub scope: &'a Scope,
    pub authenticated: Authenticated<'a>,
    pub nonce: Option<&'a str>,
    /// The refresh token of the response.
    pub refresh: NewRefresh<'a>,
    /// The DPoP key of this token request: the access token is bound to it, and so is a new
    /// refresh token of a public client (RFC 9449 §5).
    pub dpop_jkt: Option<&'a str>,
    /// RFC 9396: what exactly the user approved, carried into the access token.
    pub authorization_details: Option<&'a Value>,
    /// How the user is known to be still allowed tokens.
    pub holder: Holder,
}

/// How [`issue`] knows that the grant's user may still be given tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// Read the user now, and refuse a deleted or disabled one.
    Read,
    /// The grant's own write proved the user live when it spent what it spent, so the user
    /// is read only when the ID token's claims need them:
    /// - a refresh token that was live: disabling a user revokes all their refresh tokens in
    ///   the same transaction (`UserStore::set_disabled`), deleting one deletes them
    ///   (`ON DELETE CASCADE`), and the spend and that revocation take the token's lock one
    ///   after the other;
    /// - a code: its spend's statement checks that its user exists and is not disabled
    ///   (`store::codes::redeemable!`).
    Spent,
}

/// The refresh token a response carries.
#[derive(Debug, Clone, Copy)]
pub enum NewRefresh<'a> {
    /// None (a confidential client keeps the refresh token it has, or the client may not
    /// refresh).
    Keep,
    /// One the grant's own write already stored: a rotation's successor (see
    /// [`next_refresh`]), or a new grant's first ([`new_refresh`], stored with the spend of its
    /// code or polled request); this is its value.
    Stored(&'a str),
}

/// Whether `client` gets refresh tokens: every client that registered the grant, whether or
/// not it asked for offline_access (MCP SEP-2207: MCP clients do not send it, and resource
/// servers do not list it; OpenID Connect Core §11 lets the server issue them without it).
pub fn may_refresh(client: &Client) -> bool {
    client.metadata.has_grant(super::refresh_token::GRANT_TYPE)
}

/// A refresh token for a new grant (a new family), issued at `now` to `client`: a new value
/// and the columns that are not the grant's (as a code redemption stores it,
/// `CodeStore::redeem_code`), bound to the request's DPoP key.
pub fn new_refresh(
    ctx: &Context,
    client: &Client,
    dpop_jkt: Option<&str>,
    now: i64,
) -> (String, FirstRefresh) {
    let absolute = now + i64::from(ctx.config.tokens.refresh_token_absolute_secs);
    let (raw, key) = ctx.new_secret();
    let record = FirstRefresh {
        token_hash: key,
        expires_at: refresh_idle_expiry(ctx, now, absolute),
        absolute_expires_at: absolute,
        dpop_jkt: refresh_binding(client, dpop_jkt),
    };
    (raw, record)
}

/// A grant's tokens as `issued`; if issuing failed after the grant's write stored a refresh
/// token (`stored`, of the family `family_id`: a code, a device code or a backchannel
/// request spent, the user then found disabled, a resource or scope refused), that family
/// revoked. Nobody holds the token, and it must not outlive the refusal.
pub async fn revoked_if_refused(
    ctx: &Context,
    issued: Result<TokenResponse, OAuthError>,
    stored: bool,
    family_id: &str,
    now: i64,
) -> Result<TokenResponse, OAuthError> {
    if issued.is_err()
        && stored
        && let Err(e) = ctx.refresh_tokens().revoke_family(family_id, now).await
    {
        tracing::warn!(error = %e, "a refused grant's stored refresh token was not revoked");
    }
    issued
}

/// When a refresh token issued at `now` expires unused: the idle lifetime, capped by the
/// family's absolute expiry.
fn refresh_idle_expiry(ctx: &Context, now: i64, absolute: i64) -> i64 {
    (now + i64::from(ctx.config.tokens.refresh_token_idle_secs)).min(absolute)
}

/// The DPoP key a new refresh token is bound to: RFC 9449 §5, refresh tokens of public
/// clients are bound to the key of the request; confidential clients' are bound to their
/// client authentication instead.
fn refresh_binding(client: &Client, dpop_jkt: Option<&str>) -> Option<String> {
    dpop_jkt
        .filter(|_| client.metadata.is_public())
        .map(str::to_string)
}

/// The token a refresh token of `client` rotates into (a new value and its record's own
/// columns): the same grant, created now, bound to the request's DPoP key. The rotation
/// stores it ([`NewRefresh::Stored`]).
pub fn next_refresh(
    ctx: &Context,
    client: &Client,
    dpop_jkt: Option<&str>,
) -> (String, NextRefresh) {
    let (raw, key) = ctx.new_secret();
    let next = NextRefresh {
        token_hash: key,
        // Capped by the parent's absolute expiry (`NextRefresh::of`).
        idle_until: refresh_idle_expiry(ctx, ctx.now(), i64::MAX),
        dpop_jkt: refresh_binding(client, dpop_jkt),
    };
    (raw, next)
}

/// The granted resource a token request is for ([`policy::select_granted`]), looked up
/// again: `invalid_grant` when it was removed since. None for a sign-in granted no resource.
pub async fn granted_resource(
    ctx: &Context,
    form: &Form,
    granted: &[String],
) -> Result<Option<Arc<Resource>>, OAuthError> {
    let Some(resource_uri) = policy::select_granted(ctx, &form.all("resource"), granted).await?
    else {
        return Ok(None);
    };
    if let Some(hit) = ctx.resources.cached(&resource_uri) {
        return Ok(Some(hit));
    }
    // Granted URIs were stored normalised, so they parse again.
    let uri = ResourceUri::parse(&resource_uri).map_err(OAuthError::internal)?;
    let resource = ctx.resources.get(&uri).await?.ok_or_else(|| {
        OAuthError::new(
            ErrorCode::InvalidGrant,
            format!("the resource {resource_uri} no longer exists"),
        )
    })?;
    Ok(Some(resource))
}

/// The user a grant's tokens are for, as read now: `invalid_grant` when they were deleted or
/// disabled since they approved it. Disabling revokes their refresh tokens and sessions
/// (`UserStore::set_disabled`) but not what they approved moments before: an approved
/// device or back-channel request still pending is refused here, when redeemed (a code, by
/// its spend: [`Holder::Spent`]).
pub async fn live_user(ctx: &Context, user_id: &str) -> Result<User, OAuthError> {
    match ctx.users().get_user(user_id).await? {
        Some(u) if u.is_disabled() => Err(OAuthError::new(
            ErrorCode::InvalidGrant,
            "the user's account is disabled",
        )),
        Some(u) => Ok(u),
        None => Err(OAuthError::new(
            ErrorCode::InvalidGrant,
            "the user no longer exists",
        )),
    }
}

/// Issue the access token (for one resource), a refresh token when allowed, and an ID token
/// when `openid` was granted.
pub async fn issue(
    ctx: &Context,
    form: &Form,
    g: UserGrant<'_>,
) -> Result<TokenResponse, OAuthError> {
    let resource = granted_resource(ctx, form, g.resources).await?;
    let openid = g.scope.contains("openid");
    // The user's record: to refuse a deleted or disabled user unless the grant's write proved
    // them live (`Holder`), and for an ID token's claims.
    let user = match g.holder {
        Holder::Spent if !(openid && asks_user_claims(g.scope)) => None,
        _ => Some(live_user(ctx, g.user_id).await?),
    };

    // The access token carries the scopes of its resource, plus the OpenID Connect ones;
    // with openid it also works at our userinfo endpoint. A sign-in granted no resource gets
    // a token for userinfo alone.
    let token_scope = match &resource {
        Some(r) => policy::offered_by(g.scope, r),
        None => g.scope.retain(|t| OIDC_SCOPES.contains(&t)),
    }
    .to_string();
    let mut audience: Vec<String> = resource.iter().map(|r| r.uri.to_string()).collect();
    if openid {
        audience.push(ctx.url("/userinfo"));
    }
    let tokens = &ctx.config.tokens;
    let auth = g.authenticated;
    let mut response = issue_access_token(
        &ctx.keys,
        ctx.issuer(),
        &AccessToken {
            sub: g.user_id,
            client_id: &g.client.client_id,
            audience: &audience,
            scope: &token_scope,
            auth_time: Some(auth.auth_time),
            amr: auth.amr,
            acr: auth.acr,
            act: None,
            ttl: i64::from(tokens.access_token_ttl_secs),
            not_after: None,
            jkt: match &resource {
                Some(r) => r.dpop_binding(g.dpop_jkt)?,
                None => g.dpop_jkt,
            },
            alg: resource.as_ref().map_or(Alg::ES256, |r| r.token_alg),
            authorization_details: g.authorization_details,
            delegation: None,
        },
    )?;

    if let NewRefresh::Stored(raw) = g.refresh {
        response.refresh_token = Some(raw.to_string());
    }
    if openid {
        response.id_token = Some(issue_id_token(
            &ctx.keys,
            ctx.issuer(),
            IdToken {
                sub: g.user_id,
                client_id: &g.client.client_id,
                nonce: g.nonce,
                auth_time: auth.auth_time,
                amr: auth.amr,
                acr: auth.acr,
                sid: auth.sid,
                access_token: &response.access_token,
                ttl: i64::from(tokens.id_token_ttl_secs),
                claims: user
                    .as_ref()
                    .map(|u| user_claims(u, g.scope))
                    .unwrap_or_default(),
            },
        )?);
    }
    // The consent this use relied on: the resource's, or the sign-in's own.
    let used = match &resource {
        Some(r) => r.uri.to_string(),
        None => crate::oauth::consent::identity_key(ctx),
    };
    crate::oauth::consent::record_use(ctx, g.user_id, &g.client.client_id, &used).await;
    Ok(response)
}
