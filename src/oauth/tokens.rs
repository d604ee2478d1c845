//! Access tokens: RFC 9068 JWTs, audience-bound to one resource (RFC 8707).

use serde::Serialize;

use crate::keys::{Alg, KeyError, KeyManager};
use crate::util;

/// The claims of an access token (RFC 9068 §2.2).
#[derive(Debug, Serialize)]
pub struct AccessTokenClaims<'a> {
    pub iss: &'a str,
    pub sub: &'a str,
    pub aud: &'a str,
    pub client_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub scope: &'a str,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
}

/// What the token endpoint answers (RFC 6749 §5.1).
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// Sign an access token for `sub` at `aud`, valid `ttl` seconds from now.
pub fn issue_access_token(
    keys: &KeyManager,
    issuer: &str,
    sub: &str,
    client_id: &str,
    aud: &str,
    scope: &str,
    ttl: i64,
) -> Result<TokenResponse, KeyError> {
    let iat = util::now();
    let claims = AccessTokenClaims {
        iss: issuer,
        sub,
        aud,
        client_id,
        scope,
        jti: util::random_id(),
        iat,
        exp: iat + ttl,
    };
    Ok(TokenResponse {
        access_token: keys.sign_jwt(Alg::ES256, "at+jwt", &claims)?,
        token_type: "Bearer",
        expires_in: ttl,
        scope: (!scope.is_empty()).then(|| scope.to_string()),
    })
}
