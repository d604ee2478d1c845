//! Token exchange (RFC 8693): a client holding one of our access tokens (the subject) gets a
//! narrower token for another resource, on the same subject's behalf, with an `act` claim
//! naming who acts. Never wider: scopes come only through the operator's policy for
//! (target, client, source) and from the subject's own scopes; the lifetime never outlasts
//! the subject token; `sub` stays the same. No policy, no exchange.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Grant, GrantType};
use crate::error::{ErrorCode, OAuthError};
use crate::oauth::clients::Client;
use crate::oauth::form::Form;
use crate::oauth::id_jag;
use crate::oauth::resource::ResourceUri;
use crate::oauth::scope::Scope;
use crate::oauth::tokens::{
    AccessToken, TokenResponse, issue_access_token, revoked_key, verify_access_token,
};
use crate::startup::AppState;
use crate::store::ExchangePolicy;
use crate::util;

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

/// Target scopes the policy allows from the subject's scopes.
pub fn mapped_scopes(policy: &ExchangePolicy, subject_scopes: &Scope) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in subject_scopes.tokens() {
        for t in policy.scope_map.get(s).into_iter().flatten() {
            if !out.contains(t) {
                out.push(t.clone());
            }
        }
    }
    out
}

#[async_trait]
impl Grant for TokenExchange {
    fn grant_type(&self) -> GrantType {
        GrantType::TokenExchange
    }

    async fn exchange(
        &self,
        state: &AppState,
        client: &Client,
        form: &Form,
        dpop_jkt: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        // An ID token for an ID-JAG: the enterprise IdP's half of ID-JAG (see `id_jag`).
        if form.get("requested_token_type") == Some(id_jag::ID_JAG_TOKEN_TYPE) {
            return id_jag::issue(state, client, form).await;
        }
        let now = util::now();
        // The subject: one of our access tokens, valid and not revoked.
        let subject = form
            .get("subject_token")
            .ok_or_else(|| OAuthError::invalid_request("subject_token is missing"))?;
        match form.get("subject_token_type") {
            Some(ACCESS_TOKEN_TYPE) | Some(JWT_TYPE) => {}
            Some(other) => {
                return Err(OAuthError::invalid_request(format!(
                    "subject_token_type {other:?} is not supported; use {ACCESS_TOKEN_TYPE}"
                )));
            }
            None => return Err(OAuthError::invalid_request("subject_token_type is missing")),
        }
        if let Some(t) = form.get("requested_token_type")
            && t != ACCESS_TOKEN_TYPE
            && t != JWT_TYPE
        {
            return Err(OAuthError::invalid_request(format!(
                "requested_token_type {t:?} is not supported; use {ACCESS_TOKEN_TYPE}"
            )));
        }
        let claims =
            verify_access_token(&state.keys, &state.issuer, subject, None).ok_or_else(|| {
                err(
                    ErrorCode::InvalidGrant,
                    "the subject_token is not a valid access token from this server",
                )
            })?;
        let jti = claims["jti"].as_str().unwrap_or_default();
        if state.store.is_used(&revoked_key(jti), now).await? {
            return Err(err(
                ErrorCode::InvalidGrant,
                "the subject_token was revoked",
            ));
        }
        let sub = claims["sub"].as_str().unwrap_or_default().to_string();
        let subject_exp = claims["exp"].as_i64().unwrap_or(now);

        // RFC 8693 §4.4: when the subject token says who may act, only they may.
        if let Some(may) = claims.get("may_act")
            && may["sub"].as_str() != Some(client.client_id.as_str())
        {
            return Err(err(
                ErrorCode::InvalidGrant,
                "the subject_token does not allow this client to act (may_act)",
            ));
        }

        // An actor token, if sent, names who acts; it must be ours and valid too.
        let actor = match form.get("actor_token") {
            None => client.client_id.clone(),
            Some(t) => {
                let a =
                    verify_access_token(&state.keys, &state.issuer, t, None).ok_or_else(|| {
                        err(
                            ErrorCode::InvalidGrant,
                            "the actor_token is not a valid access token from this server",
                        )
                    })?;
                a["sub"].as_str().unwrap_or_default().to_string()
            }
        };
        let act = nest_act(&actor, claims.get("act"));
        let max = state.config.tokens.max_delegation_depth as usize;
        if act_depth(Some(&act)) > max {
            return Err(err(
                ErrorCode::InvalidGrant,
                format!("the delegation chain would be longer than {max} hops"),
            ));
        }

        // The target: `resource` or `audience` (RFC 8693 §2.1), one registered resource.
        let targets: Vec<&str> = form
            .all("resource")
            .into_iter()
            .chain(form.get("audience"))
            .collect();
        let target = match targets.as_slice() {
            [] => {
                return Err(err(
                    ErrorCode::InvalidTarget,
                    "resource (or audience) is required: the resource the new token is for",
                ));
            }
            [first, rest @ ..] => {
                let uri = ResourceUri::parse(first)
                    .map_err(|e| err(ErrorCode::InvalidTarget, format!("resource {e}")))?;
                for other in rest {
                    if ResourceUri::parse(other).ok().as_ref() != Some(&uri) {
                        return Err(err(
                            ErrorCode::InvalidTarget,
                            "request one target resource per exchange",
                        ));
                    }
                }
                uri
            }
        };
        if state.resources.get(&target).await?.is_none() {
            return Err(err(
                ErrorCode::InvalidTarget,
                format!("{target} is not a registered resource"),
            ));
        }

        // The policy for (target, this client, the subject's resource).
        let sources: Vec<String> = match &claims["aud"] {
            Value::String(a) => vec![a.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let mut policy = None;
        for source in &sources {
            if let Some(p) = state
                .store
                .get_exchange_policy(target.as_str(), &client.client_id, source)
                .await?
            {
                policy = Some(p);
                break;
            }
        }
        let policy = policy.ok_or_else(|| {
            err(
                ErrorCode::UnauthorizedClient,
                format!(
                    "no exchange policy lets this client exchange these tokens toward {target}"
                ),
            )
        })?;

        let subject_scopes =
            Scope::parse(claims["scope"].as_str().unwrap_or("")).unwrap_or_default();
        let allowed = mapped_scopes(&policy, &subject_scopes);
        let granted: Vec<String> = match form.get("scope") {
            Some(r) => {
                let r = Scope::parse(r)
                    .map_err(|e| err(ErrorCode::InvalidScope, format!("scope {e}")))?;
                if let Some(t) = r.tokens().iter().find(|t| !allowed.contains(t)) {
                    return Err(err(
                        ErrorCode::InvalidScope,
                        format!(
                            "{t} is not allowed for this exchange: the subject token and the policy do not give it"
                        ),
                    ));
                }
                r.tokens().to_vec()
            }
            None => allowed,
        };
        if granted.is_empty() {
            return Err(err(
                ErrorCode::InvalidScope,
                "the subject token's scopes map to no scope of the target",
            ));
        }

        let ttl = i64::from(state.config.tokens.access_token_ttl_secs).min(subject_exp - now);
        if ttl <= 0 {
            return Err(err(
                ErrorCode::InvalidGrant,
                "the subject_token has expired",
            ));
        }
        let audience = [target.to_string()];
        let scope = granted.join(" ");
        let mut response = issue_access_token(
            &state.keys,
            &state.issuer,
            &AccessToken {
                sub: &sub,
                client_id: &client.client_id,
                audience: &audience,
                scope: &scope,
                auth_time: claims["auth_time"].as_i64(),
                act: Some(&act),
                ttl,
                // A bound subject token may be exchanged (its holder is the client presenting
                // it, or a resource server it was sent to); the new token is bound to this
                // request's proof, if any (RFC 9449 §5).
                jkt: dpop_jkt,
            },
        )?;
        response.issued_token_type = Some(ACCESS_TOKEN_TYPE);
        tracing::info!(
            client_id = %client.client_id,
            target = %target,
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

    #[test]
    fn scopes_map_only_what_the_subject_has() {
        let policy = ExchangePolicy {
            target: "t".into(),
            client_id: "c".into(),
            source: "s".into(),
            scope_map: [
                ("calendar:read".to_string(), vec!["notes:read".to_string()]),
                (
                    "calendar:write".to_string(),
                    vec!["notes:read".to_string(), "notes:write".to_string()],
                ),
            ]
            .into_iter()
            .collect(),
            created_at: 0,
        };
        let s = Scope::parse("calendar:read other").expect("scope");
        assert_eq!(mapped_scopes(&policy, &s), vec!["notes:read"]);
        let w = Scope::parse("calendar:write calendar:read").expect("scope");
        assert_eq!(
            mapped_scopes(&policy, &w),
            vec!["notes:read", "notes:write"]
        );
    }
}
