//! Access tokens (RFC 9068 JWTs, audience-bound per RFC 8707), ID tokens (OpenID Connect
//! Core §2) and the token response (RFC 6749 §5.1).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::context::Context;
use super::scope::Scope;
use crate::keys::{Alg, KeyError, KeyManager};
use crate::store::StoreError;
use crate::util;

/// The claims of an access token (RFC 9068 §2.2).
#[derive(Debug, Serialize)]
struct AccessTokenClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    /// One audience as a string, several as an array (RFC 7519 §4.1.3).
    aud: Value,
    client_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    scope: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_time: Option<i64>,
    /// How the user signed in (RFC 9068 §2.2.1, RFC 8176).
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    amr: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    acr: Option<&'a str>,
    /// Delegation (RFC 8693 §4.1): who acts for `sub`, nested for each further hop.
    #[serde(skip_serializing_if = "Option::is_none")]
    act: Option<&'a Value>,
    /// Proof-of-possession key (RFC 7800 §3.1, RFC 9449 §6.1): `{"jkt": …}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    cnf: Option<Value>,
    /// What exactly was approved (RFC 9396 §9.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    authorization_details: Option<&'a Value>,
    /// The delegation hop an exchanged token came through (Concierge's own claim): cutting
    /// the hop makes the token inactive.
    #[serde(skip_serializing_if = "Option::is_none")]
    delegation: Option<&'a str>,
    jti: String,
    iat: i64,
    exp: i64,
}

/// What to put in an access token.
#[derive(Debug)]
pub struct AccessToken<'a> {
    pub sub: &'a str,
    pub client_id: &'a str,
    pub audience: &'a [String],
    pub scope: &'a str,
    pub auth_time: Option<i64>,
    /// How the user signed in; empty for a client's own token.
    pub amr: &'a [String],
    pub acr: Option<&'a str>,
    pub act: Option<&'a Value>,
    pub ttl: i64,
    /// Never valid past this time, whatever `ttl` says: an exchanged token's subject token's
    /// `exp` (RFC 8693 §2.2.1: the new token must not outlive what it was derived from). The
    /// cap is applied at signing time, so a second passing between the caller's clock
    /// reading and the signature cannot stretch it.
    pub not_after: Option<i64>,
    /// Bind the token to this DPoP key thumbprint (RFC 9449 §6): `cnf.jkt`, `token_type`
    /// DPoP.
    pub jkt: Option<&'a str>,
    /// The signing algorithm: the resource's (`Resource::token_alg`), ES256 by default.
    pub alg: Alg,
    /// RFC 9396 §9.1: the authorization details the user approved.
    pub authorization_details: Option<&'a Value>,
    /// The delegation hop (`crate::oauth::delegation`) an exchanged token comes through.
    pub delegation: Option<&'a str>,
}

/// What the token endpoint answers (RFC 6749 §5.1).
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// RFC 8693 §2.2.1, for token exchange.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
    /// What was issued, for the audit log; never sent.
    #[serde(skip)]
    pub issued: Issued,
}

/// The audit log's view of an issued access token: who, for where, and its `jti`, never the
/// token itself.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Issued {
    pub sub: String,
    pub audience: Vec<String>,
    pub scope: String,
    pub jti: String,
    pub exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub act: Option<Value>,
    /// The DPoP key the token is bound to.
    #[serde(rename = "dpop_jkt", skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
    /// Grant-specific particulars for the audit log (e.g. the redeemed ID-JAG's issuer),
    /// beside the others.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Sign an access token.
pub fn issue_access_token(
    keys: &KeyManager,
    issuer: &str,
    t: &AccessToken<'_>,
) -> Result<TokenResponse, KeyError> {
    let iat = util::now();
    let exp = t.not_after.map_or(iat + t.ttl, |cap| cap.min(iat + t.ttl));
    let aud = match t.audience {
        [one] => Value::String(one.clone()),
        many => Value::from(many.to_vec()),
    };
    let claims = AccessTokenClaims {
        iss: issuer,
        sub: t.sub,
        aud,
        client_id: t.client_id,
        scope: t.scope,
        auth_time: t.auth_time,
        amr: t.amr,
        acr: t.acr,
        act: t.act,
        cnf: t.jkt.map(|k| serde_json::json!({ "jkt": k })),
        authorization_details: t.authorization_details,
        delegation: t.delegation,
        jti: util::random_id(),
        iat,
        exp,
    };
    let issued = Issued {
        sub: t.sub.to_string(),
        audience: t.audience.to_vec(),
        scope: t.scope.to_string(),
        jti: claims.jti.clone(),
        exp: claims.exp,
        act: t.act.cloned(),
        jkt: t.jkt.map(str::to_string),
        extra: Map::new(),
    };
    Ok(TokenResponse {
        access_token: keys.sign_jwt(t.alg, "at+jwt", &claims)?,
        token_type: if t.jkt.is_some() { "DPoP" } else { "Bearer" },
        expires_in: exp - iat,
        scope: (!t.scope.is_empty()).then(|| t.scope.to_string()),
        refresh_token: None,
        id_token: None,
        issued_token_type: None,
        issued,
    })
}

/// `at_hash`: the left half of SHA-256 of the access token, base64url (OpenID Connect
/// Core §3.1.3.6, for RS256/ES256).
pub fn at_hash(access_token: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, access_token.as_bytes());
    util::b64(&d.as_ref()[..16])
}

/// What to put in an ID token.
#[derive(Debug)]
pub struct IdToken<'a> {
    pub sub: &'a str,
    pub client_id: &'a str,
    pub nonce: Option<&'a str>,
    pub auth_time: i64,
    pub amr: &'a [String],
    pub acr: Option<&'a str>,
    pub sid: Option<&'a str>,
    pub access_token: &'a str,
    pub ttl: i64,
    /// Profile and email claims the granted scopes allow.
    pub claims: Map<String, Value>,
}

/// Sign an ID token with RS256, the algorithm every OpenID provider must offer.
pub fn issue_id_token(keys: &KeyManager, issuer: &str, t: IdToken<'_>) -> Result<String, KeyError> {
    let iat = util::now();
    let mut claims = t.claims;
    claims.insert("iss".into(), issuer.into());
    claims.insert("sub".into(), t.sub.into());
    claims.insert("aud".into(), t.client_id.into());
    claims.insert("azp".into(), t.client_id.into());
    claims.insert("iat".into(), iat.into());
    claims.insert("exp".into(), (iat + t.ttl).into());
    claims.insert("auth_time".into(), t.auth_time.into());
    if !t.amr.is_empty() {
        claims.insert("amr".into(), t.amr.into());
    }
    if let Some(acr) = t.acr {
        claims.insert("acr".into(), acr.into());
    }
    claims.insert("at_hash".into(), at_hash(t.access_token).into());
    if let Some(n) = t.nonce {
        claims.insert("nonce".into(), n.into());
    }
    if let Some(s) = t.sid {
        claims.insert("sid".into(), s.into());
    }
    keys.sign_jwt(Alg::RS256, "JWT", &claims)
}

/// The claims of one of our access tokens, after [`check_access_token`].
#[derive(Debug, Clone, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    /// One audience or several (RFC 7519 §4.1.3), always as a list here.
    #[serde(deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    pub client_id: String,
    #[serde(default)]
    pub scope: String,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(default)]
    pub auth_time: Option<i64>,
    #[serde(default)]
    pub amr: Vec<String>,
    #[serde(default)]
    pub acr: Option<String>,
    /// The delegation chain (RFC 8693 §4.1).
    #[serde(default)]
    pub act: Option<Value>,
    /// Who may act for the subject (RFC 8693 §4.4).
    #[serde(default)]
    pub may_act: Option<Value>,
    /// The proof-of-possession key (RFC 7800, RFC 9449 §6.1).
    #[serde(default)]
    pub cnf: Option<Value>,
    /// What exactly was approved (RFC 9396 §9.1).
    #[serde(default)]
    pub authorization_details: Option<Value>,
    /// The delegation hop an exchanged token came through.
    #[serde(default)]
    pub delegation: Option<String>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(a) => vec![a],
        OneOrMany::Many(a) => a,
    })
}

impl AccessClaims {
    pub fn scopes(&self) -> Scope {
        Scope::parse(&self.scope).unwrap_or_default()
    }

    /// Is `audience` among the token's audiences?
    pub fn is_for(&self, audience: &str) -> bool {
        self.aud.iter().any(|a| a == audience)
    }

    /// The DPoP key thumbprint the token is bound to (`cnf.jkt`).
    pub fn jkt(&self) -> Option<&str> {
        self.cnf.as_ref()?.get("jkt")?.as_str()
    }

    /// A token a client got for itself (client credentials, RFC 9068 §2.2: `sub` is the
    /// client), not one acting for a user or by delegation.
    pub fn is_clients_own(&self) -> bool {
        self.sub == self.client_id && self.act.is_none()
    }

    /// The `aud` claim as issued: a string for one audience, an array for several.
    pub fn aud_claim(&self) -> Value {
        match self.aud.as_slice() {
            [one] => Value::String(one.clone()),
            many => Value::from(many.to_vec()),
        }
    }
}

/// Why an access token is not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the access token is not valid: not ours, malformed, expired or for another audience")]
    Invalid,
    #[error("the access token was revoked")]
    Revoked,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The one check of our own access tokens: ES256 with a published key, `typ` at+jwt, our
/// issuer, not expired (30 s leeway), meant for `audience` when one is given, and not
/// revoked (RFC 7009: a revoked token's `jti` is listed until it expires). Introspection,
/// userinfo, the admin API and token exchange (subject and actor alike) all call this.
pub async fn check_access_token(
    ctx: &Context,
    token: &str,
    audience: Option<&str>,
) -> Result<AccessClaims, TokenError> {
    let claims = verify_own_jwt(
        &ctx.keys,
        ctx.issuer(),
        token,
        Alg::ES256,
        "at+jwt",
        audience,
    )
    .and_then(|v| serde_json::from_value::<AccessClaims>(v).ok())
    .ok_or(TokenError::Invalid)?;
    if ctx
        .replay()
        .is_used(&revoked_key(&claims.jti), ctx.now())
        .await?
    {
        return Err(TokenError::Revoked);
    }
    // A token derived through token exchange lives only as long as every hop of its chain
    // (issue 14.5): cutting one, or disconnecting the app at the root, ends it at once.
    if let Some(hop) = &claims.delegation
        && !crate::oauth::delegation::is_live(ctx, hop, &claims.sub).await?
    {
        return Err(TokenError::Revoked);
    }
    Ok(claims)
}

/// Signature, `typ`, issuer and expiry of one of our access tokens, without the revocation
/// check: for the revocation endpoint, which revokes what it finds (a second time is
/// harmless).
pub fn decode_access_token(ctx: &Context, token: &str) -> Option<AccessClaims> {
    verify_own_jwt(&ctx.keys, ctx.issuer(), token, Alg::ES256, "at+jwt", None)
        .and_then(|v| serde_json::from_value(v).ok())
}

/// The replay-store key under which a revoked access token's `jti` is listed until it
/// expires.
pub fn revoked_key(jti: &str) -> String {
    format!("revoked_access_token:{jti}")
}

/// Check one of our ID tokens: RS256 with a published key, our issuer, not expired, and
/// `client_id` among its audiences (OpenID Connect Core §3.1.3.7). Returns the claims.
pub fn verify_id_token(
    keys: &KeyManager,
    issuer: &str,
    token: &str,
    client_id: &str,
) -> Option<Value> {
    verify_own_jwt(keys, issuer, token, Alg::RS256, "JWT", Some(client_id))
}

/// The subject of an ID token we issued to `client_id`, offered as a hint (`id_token_hint`):
/// signature, issuer and audience are checked, expiry is not (OpenID Connect Core §3.1.2.1:
/// an expired ID token is still a fine hint).
pub fn id_token_hint_subject(
    keys: &KeyManager,
    issuer: &str,
    token: &str,
    client_id: &str,
) -> Option<String> {
    let claims = decode_own_jwt(
        keys,
        issuer,
        token,
        Alg::RS256,
        "JWT",
        Some(client_id),
        false,
    )?;
    claims.get("sub")?.as_str().map(str::to_string)
}

/// A JWT this server signed with `alg` and `typ`: signature with a published key, `iss`,
/// `exp` (30 s leeway) and, when given, `aud`.
fn verify_own_jwt(
    keys: &KeyManager,
    issuer: &str,
    token: &str,
    alg: Alg,
    typ: &str,
    audience: Option<&str>,
) -> Option<Value> {
    decode_own_jwt(keys, issuer, token, alg, typ, audience, true)
}

/// [`verify_own_jwt`], with the expiry checked only when `check_exp`.
fn decode_own_jwt(
    keys: &KeyManager,
    issuer: &str,
    token: &str,
    alg: Alg,
    typ: &str,
    audience: Option<&str>,
    check_exp: bool,
) -> Option<Value> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    if token.len() > 8192 {
        return None;
    }
    let jose_alg = match alg {
        Alg::ES256 => Algorithm::ES256,
        Alg::RS256 => Algorithm::RS256,
    };
    let header = jsonwebtoken::decode_header(token).ok()?;
    if header.alg != jose_alg || header.typ.as_deref() != Some(typ) {
        return None;
    }
    let ring = keys.ring();
    // Published keys only: never a revoked or expired one, though this replica may still
    // hold it until its next reload.
    let key = ring
        .verifier(header.kid.as_deref()?, crate::util::now())
        .filter(|k| k.alg == alg)?;
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.public_jwk.clone()).ok()?;
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    let mut v = Validation::new(jose_alg);
    v.set_issuer(&[issuer]);
    match audience {
        Some(a) => v.set_audience(&[a]),
        None => v.validate_aud = false,
    }
    v.leeway = 30;
    if !check_exp {
        v.validate_exp = false;
        v.required_spec_claims.remove("exp");
    }
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .ok()
        .map(|d| d.claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_matches_the_openid_example() {
        // OpenID Connect Core, Appendix A.3.
        assert_eq!(
            at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }
}
