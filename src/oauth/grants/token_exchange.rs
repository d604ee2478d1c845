//! Token exchange (RFC 8693): a client holding one of our access tokens (the subject) gets a
//! narrower token for another resource, on the same subject's behalf, with an `act` claim
//! naming who acts. Never wider: scopes come only through the operator's policy for
//! (target, client, source) and from the subject's own scopes; the lifetime never outlasts
//! the subject token; `sub` stays the same. No policy, no exchange.
//!
//! The same grant turns one of our ID tokens into an ID-JAG when the client asks for one
//! (`requested_token_type` …:id-jag): the enterprise IdP's half of ID-JAG, in `id_jag`.

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::{Advertised, Grant, Param, TokenRequest};
use crate::audit::Kind;
use crate::error::{ErrorCode, OAuthError};
use crate::oauth::authn::acr::Level;
use crate::oauth::clients::Client;
use crate::oauth::context::Context;
use crate::oauth::form::Form;
use crate::oauth::tokens::{
    AccessClaims, AccessToken, TokenError, TokenResponse, check_access_token, issue_access_token,
};
use crate::oauth::{authorization_details, delegation, id_jag, policy};

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

pub struct TokenExchange;

fn err(code: ErrorCode, d: impl Into<String>) -> OAuthError {
    OAuthError::new(code, d.into())
}

/// How deep an `act` chain is (0 without one).
pub fn act_depth(act: Option<&Value>) -> usize {
    let mut depth = 0;
    let mut cur = act;
    while let Some(a) = cur.filter(|a| a.is_object()) {
        depth += 1;
        cur = a.get("act");
    }
    depth
}

/// The new `act`: the actor, with the subject token's chain nested inside (RFC 8693 §4.1).
pub fn nest_act(actor: &str, previous: Option<&Value>) -> Value {
    match previous.filter(|p| p.is_object()) {
        Some(p) => json!({ "sub": actor, "act": p }),
        None => json!({ "sub": actor }),
    }
}

/// A token type we accept for subject and actor tokens (RFC 8693 §3).
fn check_token_type(name: &str, value: Option<&str>) -> Result<(), OAuthError> {
    match value {
        Some(ACCESS_TOKEN_TYPE) | Some(JWT_TYPE) => Ok(()),
        Some(other) => Err(OAuthError::invalid_request(format!(
            "{name} {other:?} is not supported; use {ACCESS_TOKEN_TYPE}"
        ))),
        None => Err(OAuthError::invalid_request(format!("{name} is missing"))),
    }
}

/// One of our access tokens presented as `which` (`subject_token`, `actor_token`): valid and
/// not revoked, through the one access-token check.
async fn presented_token(
    ctx: &Context,
    which: &str,
    token: &str,
) -> Result<AccessClaims, OAuthError> {
    check_access_token(ctx, token, None)
        .await
        .map_err(|e| match e {
            TokenError::Invalid => err(
                ErrorCode::InvalidGrant,
                format!("the {which} is not a valid access token from this server"),
            ),
            TokenError::Revoked => err(ErrorCode::InvalidGrant, format!("the {which} was revoked")),
            TokenError::Store(e) => e.into(),
        })
}

/// Who acts (RFC 8693 §4.1): the authenticated client, or the party an `actor_token`
/// names. An actor token must be one of ours, unrevoked, and issued to this very client:
/// a client cannot claim another party's delegation.
async fn actor(ctx: &Context, client: &Client, form: &Form) -> Result<String, OAuthError> {
    let Some(token) = form.get("actor_token") else {
        if form.get("actor_token_type").is_some() {
            return Err(OAuthError::invalid_request(
                "actor_token_type was sent without an actor_token",
            ));
        }
        return Ok(client.client_id.clone());
    };
    // RFC 8693 §2.1: actor_token_type is REQUIRED when actor_token is present.
    check_token_type("actor_token_type", form.get("actor_token_type"))?;
    let claims = presented_token(ctx, "actor_token", token).await?;
    if claims.client_id != client.client_id {
        return Err(err(
            ErrorCode::InvalidGrant,
            "the actor_token was issued to another client: the actor must be the client \
             making the request",
        ));
    }
    Ok(claims.sub)
}

/// The one registered resource the new token is for: `resource` or `audience` (RFC 8693
/// §2.1), naming the same resource however often they are repeated.
async fn target(
    ctx: &Context,
    form: &Form,
) -> Result<std::sync::Arc<crate::oauth::resource::Resource>, OAuthError> {
    let targets: Vec<&str> = form
        .all("resource")
        .into_iter()
        .chain(form.get("audience"))
        .collect();
    let Some(first) = targets.first() else {
        return Err(err(
            ErrorCode::InvalidTarget,
            "resource (or audience) is required: the resource the new token is for",
        ));
    };
    let resource = policy::resolve(ctx, first).await?;
    for other in &targets[1..] {
        let same = policy::resolve(ctx, other).await.ok();
        if same.is_none_or(|o| o.uri != resource.uri) {
            return Err(err(
                ErrorCode::InvalidTarget,
                "request one target resource per exchange",
            ));
        }
    }
    Ok(resource)
}

#[async_trait]
impl Grant for TokenExchange {
    fn grant_type(&self) -> &'static str {
        GRANT_TYPE
    }

    fn description(&self) -> &'static str {
        "One of our access tokens for a narrower one for another resource, with an act \
         chain (RFC 8693); or an ID token for an ID-JAG"
    }

    fn parameters(&self) -> &'static [Param] {
        &[
            Param {
                name: "subject_token",
                description: "token-exchange: the presented token (RFC 8693 §2.1)",
            },
            Param {
                name: "subject_token_type",
                description: "token-exchange: urn:ietf:params:oauth:token-type:access_token \
                              (or …:id_token for an ID-JAG)",
            },
            Param {
                name: "actor_token",
                description: "token-exchange: a token naming who acts, issued to this client",
            },
            Param {
                name: "actor_token_type",
                description: "token-exchange: required with actor_token",
            },
            Param {
                name: "requested_token_type",
                description: "token-exchange: …:access_token (default) or …:id-jag",
            },
            Param {
                name: "audience",
                description: "token-exchange: the target (a resource, or for an ID-JAG the \
                              authorization server's issuer)",
            },
        ]
    }

    fn audit_kind(&self) -> Kind {
        Kind::TokenExchanged
    }

    fn metadata(&self, _c: &Advertised<'_>, _m: &mut Map<String, Value>) {}

    async fn issue(
        &self,
        ctx: &Context,
        req: &TokenRequest<'_>,
    ) -> Result<TokenResponse, OAuthError> {
        let (client, form) = (req.client, req.form);
        if form.get("requested_token_type") == Some(id_jag::ID_JAG_TOKEN_TYPE) {
            return id_jag::issue(ctx, client, form).await;
        }
        let now = ctx.now();
        let subject = form
            .get("subject_token")
            .ok_or_else(|| OAuthError::invalid_request("subject_token is missing"))?;
        check_token_type("subject_token_type", form.get("subject_token_type"))?;
        if let Some(t) = form.get("requested_token_type")
            && t != ACCESS_TOKEN_TYPE
            && t != JWT_TYPE
        {
            return Err(OAuthError::invalid_request(format!(
                "requested_token_type {t:?} is not supported; use {ACCESS_TOKEN_TYPE}"
            )));
        }
        let claims = presented_token(ctx, "subject_token", subject).await?;
        let actor = actor(ctx, client, form).await?;

        // RFC 8693 §4.4: when the subject token says who may act, only they may.
        if let Some(may) = &claims.may_act
            && may["sub"].as_str() != Some(actor.as_str())
        {
            return Err(err(
                ErrorCode::InvalidGrant,
                "the subject_token does not allow this actor to act (may_act)",
            ));
        }
        let act = nest_act(&actor, claims.act.as_ref());
        let max = ctx.config.tokens.max_delegation_depth as usize;
        if act_depth(Some(&act)) > max {
            return Err(err(
                ErrorCode::InvalidGrant,
                format!("the delegation chain would be longer than {max} hops"),
            ));
        }

        let target = target(ctx, form).await?;
        // The policy for (target, this client, the subject's resource).
        let mut found = None;
        for source in &claims.aud {
            if let Some(p) = ctx
                .exchange_policies()
                .get_exchange_policy(target.uri.as_str(), &client.client_id, source)
                .await?
            {
                found = Some((p, source.as_str()));
                break;
            }
        }
        let (policy, source) = found.ok_or_else(|| {
            err(
                ErrorCode::UnauthorizedClient,
                format!(
                    "no exchange policy lets this client exchange these tokens toward {}",
                    target.uri
                ),
            )
        })?;
        let scope = policy::exchanged_scopes(&policy, &claims.scopes(), form.get("scope"))?;
        // A user's token carries how they signed in; a token for the target must reach the
        // target's own requirement (`--require-mfa`), as a token issued for it directly
        // would. A machine's token (no `auth_time`) has no sign-in to measure. Checked once
        // a policy allows the exchange, so no other client learns what the target requires.
        if claims.auth_time.is_some() {
            policy::strong_enough(
                target.required_acr,
                Level::of_session(claims.acr.as_deref(), &claims.amr),
                Some(&target),
            )?;
        }

        let ttl = i64::from(ctx.config.tokens.access_token_ttl_secs).min(claims.exp - now);
        if ttl <= 0 {
            return Err(err(
                ErrorCode::InvalidGrant,
                "the subject_token has expired",
            ));
        }
        let details = authorization_details::narrowed(
            claims.authorization_details.as_ref(),
            form.get("authorization_details"),
        )?;
        // The hop this exchange makes in the user's delegation chain, unless they cut it.
        let subject = delegation::Subject {
            sub: &claims.sub,
            client_id: &claims.client_id,
            iat: claims.iat,
            delegation: claims.delegation.as_deref(),
        };
        let hop = delegation::record(ctx, subject, source, &client.client_id, target.uri.as_str())
            .await?;
        let audience = [target.uri.to_string()];
        let mut response = issue_access_token(
            &ctx.keys,
            ctx.issuer(),
            &AccessToken {
                sub: &claims.sub,
                client_id: &client.client_id,
                audience: &audience,
                scope: &scope.to_string(),
                auth_time: claims.auth_time,
                amr: &claims.amr,
                acr: claims.acr.as_deref(),
                act: Some(&act),
                ttl,
                // A bound subject token may be exchanged (its holder is the client presenting
                // it, or a resource server it was sent to); the new token is bound to this
                // request's proof, if any (RFC 9449 §5).
                not_after: Some(claims.exp),
                jkt: target.dpop_binding(req.dpop_jkt)?,
                alg: target.token_alg,
                authorization_details: details.as_ref(),
                delegation: hop.as_ref().map(|r| r.hop.id.as_str()),
            },
        )?;
        response.issued_token_type = Some(ACCESS_TOKEN_TYPE);
        // The audit log names the chain of the token, from the app the user connected.
        if let Some(r) = &hop {
            response.issued.extra.insert(
                "delegation".into(),
                delegation::audit_detail(&r.hop, &r.chain),
            );
        }
        tracing::info!(
            client_id = %client.client_id,
            target = %target.uri,
            act = %act,
            "token exchanged"
        );
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn act_chains_nest_and_count() {
        assert_eq!(act_depth(None), 0);
        let one = nest_act("calendar", None);
        assert_eq!(one, json!({"sub": "calendar"}));
        let two = nest_act("notes", Some(&one));
        assert_eq!(two, json!({"sub": "notes", "act": {"sub": "calendar"}}));
        assert_eq!(act_depth(Some(&two)), 2);
    }
}
