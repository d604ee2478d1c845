//! The authorization code grant (OAuth 2.1 §4.1): issuing a code when the user approved an
//! authorization request, and redeeming it at the token endpoint. A code is single-use and
//! bound to the client, the redirect URI, the PKCE challenge and the granted resources.

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::user_grant::{
    Authenticated, Holder, NewRefresh, UserGrant, issue, live_user, may_refresh, new_refresh,
    revoked_if_refused,
};
use super::{Advertised, Grant, Param, TokenRequest};
use crate::audit::{Event, Kind};
use crate::error::{ErrorCode, OAuthError};
use crate::oauth::authorize::AuthorizationRequest;
use crate::oauth::context::Context;
use crate::oauth::resource::OIDC_SCOPES;
use crate::oauth::scope::Scope;
use crate::oauth::tokens::TokenResponse;
use crate::oauth::{authorization_details, pkce, policy};
use crate::store::{AuthCode, Redeemer, Session, Spent};
use crate::util;

pub const GRANT_TYPE: &str = "authorization_code";

pub struct AuthorizationCode;

fn invalid_grant(d: impl Into<std::borrow::Cow<'static, str>>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidGrant, d)
}

/// Issue a code for an approved authorization request; returns the code (stored only as its
/// hash). The session says who approved and how they signed in.
pub async fn issue_code(
    ctx: &Context,
    req: &AuthorizationRequest,
    session: &Session,
) -> Result<String, OAuthError> {
    let (raw, key) = ctx.new_secret();
    let now = ctx.now();
    let code = AuthCode {
        code_hash: key,
        family_id: util::ordered_id(),
        client_id: req.client.client_id.clone(),
        user_id: session.user_id.clone(),
        redirect_uri: req.redirect_uri_sent.clone(),
        code_challenge: req.code_challenge.clone(),
        resources: req.resources.iter().map(|r| r.uri.to_string()).collect(),
        scope: req.scope.to_string(),
        nonce: req.nonce.clone(),
        auth_time: session.auth_time,
        amr: session.amr.clone(),
        acr: session.acr.clone(),
        sid: Some(session.sid.clone()),
        created_at: now,
        expires_at: now + i64::from(ctx.config.tokens.code_ttl_secs),
        dpop_jkt: req.dpop_jkt.clone(),
        authorization_details: req.authorization_details.as_ref().map(Value::to_string),
    };
    ctx.codes().insert_code(&code).await?;
    Ok(raw)
}

/// RFC 9700 §4.5: a replayed code revokes what its first redemption issued.
async fn replayed(ctx: &Context, client_id: &str, family_id: &str) -> OAuthError {
    let n = match ctx
        .refresh_tokens()
        .revoke_family(family_id, ctx.now())
        .await
    {
        Ok(n) => n,
        Err(e) => return e.into(),
    };
    tracing::warn!(client_id = %client_id, revoked = n, "authorization code replayed");
    ctx.audit.record(
        Event::new(Kind::CodeReplayDetected)
            .client(client_id)
            .detail(json!({ "family_id": family_id, "revoked": n })),
    );
    invalid_grant("the code was already used; the tokens issued for it are revoked")
}

/// Why a redemption spent nothing: the code as it stands, and the first check it fails.
async fn refused(
    ctx: &Context,
    req: &TokenRequest<'_>,
    verifier: &str,
    hash: &[u8],
    now: i64,
) -> OAuthError {
    match ctx.codes().peek_code(hash, now).await {
        Ok(Spent::Fresh(c)) => match check(&c, req, verifier) {
            Err(e) => e,
            // The spend also checks the code's user (`store::codes::redeemable!`).
            Ok(()) => match live_user(ctx, &c.user_id).await {
                Err(e) => e,
                // The statement refused what the checks pass: refuse rather than guess.
                Ok(_) => invalid_grant("the code is invalid or expired"),
            },
        },
        Ok(Spent::Replayed { family_id }) => replayed(ctx, &req.client.client_id, &family_id).await,
        Ok(Spent::Invalid) => invalid_grant("the code is invalid or expired"),
        Err(e) => e.into(),
    }
}

/// The checks a redemption must pass to spend the code (made by the statement that spends
/// it, [`CodeStore::redeem_code`](crate::store::CodeStore::redeem_code); here they say which
/// one a refused redemption failed).
///
/// A refused redemption spends nothing: a wrong client, redirect URI, PKCE verifier or DPoP
/// key leaves the code for its rightful client. Spending it would let anyone who saw the
/// code (a leaked log line, a referrer) destroy the real client's redemption, while keeping
/// it gives a guesser nothing: the verifier carries 256 bits and the code lives a minute.
fn check(code: &AuthCode, req: &TokenRequest<'_>, verifier: &str) -> Result<(), OAuthError> {
    if code.client_id != req.client.client_id {
        return Err(invalid_grant("the code was issued to another client"));
    }
    if let Some(sent) = &code.redirect_uri
        && req.form.get("redirect_uri") != Some(sent.as_str())
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
        && req.dpop_jkt != Some(bound.as_str())
    {
        return Err(OAuthError::invalid_dpop_proof(
            "the authorization request named dpop_jkt: send a DPoP proof made with that key",
        ));
    }
    Ok(())
}

#[async_trait]
impl Grant for AuthorizationCode {
    fn grant_type(&self) -> &'static str {
        GRANT_TYPE
    }

    fn description(&self) -> &'static str {
        "A code from the authorization endpoint, with its PKCE verifier (OAuth 2.1 §4.1.3)"
    }

    fn parameters(&self) -> &'static [Param] {
        &[
            Param {
                name: "code",
                description: "authorization_code: the code from the authorization response",
            },
            Param {
                name: "redirect_uri",
                description: "authorization_code: as sent to /authorize, if it was sent",
            },
            Param {
                name: "code_verifier",
                description: "authorization_code: the PKCE verifier (RFC 7636)",
            },
        ]
    }

    /// The authorization endpoint and everything OpenID Connect adds to it.
    fn metadata(&self, c: &Advertised<'_>, m: &mut Map<String, Value>) {
        let issuer = c.issuer;
        let endpoint = |path: &str| Value::String(format!("{issuer}{path}"));
        m.insert("authorization_endpoint".into(), endpoint("/authorize"));
        m.insert("response_types_supported".into(), json!(["code"]));
        m.insert("response_modes_supported".into(), json!(["query"]));
        m.insert("code_challenge_methods_supported".into(), json!(["S256"]));
        m.insert(
            "authorization_response_iss_parameter_supported".into(),
            Value::Bool(true),
        );
        if let Some(Value::Array(scopes)) = m.get_mut("scopes_supported") {
            // OpenID Connect rides on the code flow.
            scopes.extend(OIDC_SCOPES.iter().map(|s| Value::from(*s)));
        }
        // OpenID Connect Discovery §3.
        m.insert("userinfo_endpoint".into(), endpoint("/userinfo"));
        m.insert("subject_types_supported".into(), json!(["public"]));
        m.insert(
            "id_token_signing_alg_values_supported".into(),
            json!(["RS256"]),
        );
        m.insert(
            "prompt_values_supported".into(),
            json!(["none", "login", "consent", "select_account"]),
        );
        m.insert(
            "claims_supported".into(),
            json!([
                "sub",
                "iss",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "amr",
                "acr",
                "nonce",
                "at_hash",
                "sid",
                "azp",
                "name",
                "preferred_username",
                "updated_at",
                "email",
                "email_verified"
            ]),
        );
        // OpenID Connect Discovery §3: the `acr` values `acr_values` may ask for (and the
        // tokens carry): one factor, two factors, phishing-resistant.
        m.insert(
            "acr_values_supported".into(),
            json!(crate::oauth::authn::acr::SUPPORTED),
        );
        m.insert("claims_parameter_supported".into(), Value::Bool(false));
        m.insert("request_parameter_supported".into(), Value::Bool(false));
        m.insert("request_uri_parameter_supported".into(), Value::Bool(false));
    }

    async fn issue(
        &self,
        ctx: &Context,
        req: &TokenRequest<'_>,
    ) -> Result<TokenResponse, OAuthError> {
        let client = req.client;
        let code = req
            .form
            .get("code")
            .ok_or_else(|| OAuthError::invalid_request("code is missing"))?;
        let verifier = req
            .form
            .get("code_verifier")
            .ok_or_else(|| invalid_grant("code_verifier is missing (PKCE is required)"))?;
        let hash = util::secret_key(code);
        let now = ctx.now();
        // The refresh token is stored by the write that spends the code (when the code
        // carries no RFC 9396 details): one write per redemption, and one wait for the disk.
        let refresh = may_refresh(client).then(|| new_refresh(ctx, client, req.dpop_jkt, now));
        // Spent in one statement that also makes the checks: of two concurrent redemptions
        // one wins, and the other is a replay. A verifier that is not one cannot match.
        let spent = if pkce::valid_verifier(verifier) {
            let redeemer = Redeemer {
                client_id: &client.client_id,
                redirect_uri: req.form.get("redirect_uri"),
                code_challenge: &pkce::s256(verifier),
                dpop_jkt: req.dpop_jkt,
            };
            let stored_with = refresh.as_ref().map(|(_, record)| record);
            ctx.codes()
                .redeem_code(&hash, &redeemer, now, stored_with)
                .await?
        } else {
            None
        };
        let Some(code) = spent else {
            return Err(refused(ctx, req, verifier, &hash, now).await);
        };
        let stored = refresh
            .filter(|_| code.authorization_details.is_none())
            .map(|(raw, _)| raw);
        let issued = issued(ctx, req, &code, stored.as_deref()).await;
        let issued = revoked_if_refused(ctx, issued, stored.is_some(), &code.family_id, now).await;
        // The redemption's commit did not wait for the disk when it stored no refresh token
        // (the client has no refresh grant, or the code carried RFC 9396 details): it is
        // made durable now, since a code spent stays spent after a crash once any answer
        // went out.
        if !issued.as_ref().is_ok_and(|r| r.refresh_token.is_some()) {
            ctx.commits().settle().await?;
        }
        issued
    }
}

/// The tokens of the spent `code`, with the refresh token `stored` with its spend, if any.
async fn issued(
    ctx: &Context,
    req: &TokenRequest<'_>,
    code: &AuthCode,
    stored: Option<&str>,
) -> Result<TokenResponse, OAuthError> {
    let granted = Scope::parse(&code.scope).map_err(OAuthError::internal)?;
    let scope = policy::narrow(req.form.get("scope"), &granted)?;
    let details = authorization_details::stored(code.authorization_details.as_deref())?;
    issue(
        ctx,
        req.form,
        UserGrant {
            client: req.client,
            user_id: &code.user_id,
            resources: &code.resources,
            scope: &scope,
            authenticated: Authenticated {
                auth_time: code.auth_time,
                amr: &code.amr,
                acr: code.acr.as_deref(),
                sid: code.sid.as_deref(),
            },
            nonce: code.nonce.as_deref(),
            refresh: stored.map_or(NewRefresh::Keep, NewRefresh::Stored),
            dpop_jkt: req.dpop_jkt,
            authorization_details: details.as_ref(),
            // Its spend checked the user (`store::codes::redeemable!`).
            holder: Holder::Spent,
        },
    )
    .await
}
