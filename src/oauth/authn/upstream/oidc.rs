//! An upstream OpenID Connect provider: discovery (OpenID Connect Discovery 1.0 §4), the
//! code redeemed with PKCE, and the ID token validated with the `openidconnect` crate
//! (OpenID Connect Core §3.1.3.7: signature by the provider's keys, `iss`, `aud`, `azp`,
//! `exp`, and our `nonce`). Claims the ID token leaves out (some providers put them only in
//! userinfo) are read from the userinfo endpoint, whose `sub` must be the ID token's (§5.3.2).

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use openidconnect::core::{
    CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
};
use openidconnect::{
    ClaimsVerificationError, ClientId, ClientSecret, IssuerUrl, Nonce, SignatureVerificationError,
};
use serde::Deserialize;

use super::{
    DISCOVERY_TTL, Identity, KEYS_TTL, Provider, UpstreamError, get_json, token_error,
    token_request,
};
use crate::oauth::context::Context;

/// What we use of a provider's discovery document.
#[derive(Debug, Deserialize)]
pub struct Discovered {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// RFC 9207 §3.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

impl Discovered {
    /// Send the secret in the Authorization header (the default, RFC 8414 §2) unless the
    /// provider lists only `client_secret_post`.
    fn basic_auth(&self) -> bool {
        let m = &self.token_endpoint_auth_methods_supported;
        m.is_empty()
            || m.iter().any(|m| m == "client_secret_basic")
            || !m.iter().any(|m| m == "client_secret_post")
    }
}

/// The provider's discovery document, cached an hour. Its `issuer` must be the configured
/// one exactly (Discovery §4.3), or its tokens would be checked against another issuer.
pub async fn discover(ctx: &Context, p: &Provider) -> Result<Arc<Discovered>, UpstreamError> {
    let up = &ctx.authn.upstreams;
    let issuer = p.issuer();
    if let Some(d) = up.discovered.get(&issuer.to_string()) {
        return Ok(d);
    }
    let at = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let doc = get_json(ctx, &at, "application/json", None).await?;
    let d: Discovered = serde_json::from_value(doc)
        .map_err(|e| UpstreamError::Invalid(format!("discovery at {at}: {e}")))?;
    if d.issuer != issuer {
        return Err(UpstreamError::Invalid(format!(
            "discovery at {at} names the issuer {:?}, not {issuer:?}",
            d.issuer
        )));
    }
    let d = Arc::new(d);
    up.discovered
        .insert(issuer.to_string(), d.clone(), DISCOVERY_TTL);
    Ok(d)
}

/// The provider's keys, cached; `fresh` fetches them again (an unknown key id).
async fn keys(
    ctx: &Context,
    d: &Discovered,
    fresh: bool,
) -> Result<CoreJsonWebKeySet, UpstreamError> {
    let up = &ctx.authn.upstreams;
    let cached = if fresh {
        None
    } else {
        up.keys.get(&d.jwks_uri)
    };
    let raw = match cached {
        Some(raw) => raw,
        None => {
            let raw = Arc::new(
                get_json(
                    ctx,
                    &d.jwks_uri,
                    "application/jwk-set+json, application/json",
                    None,
                )
                .await?,
            );
            up.keys.insert(d.jwks_uri.clone(), raw.clone(), KEYS_TTL);
            raw
        }
    };
    serde_json::from_value((*raw).clone())
        .map_err(|e| UpstreamError::Invalid(format!("the provider's keys: {e}")))
}

/// The algorithms we accept for a provider's ID token: asymmetric ones only (never `none`,
/// never a MAC keyed with our client secret).
const ALGS: [CoreJwsSigningAlgorithm; 10] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EcdsaP521Sha512,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// What the callback redeems.
pub struct Redeem<'a> {
    pub code: &'a str,
    pub verifier: &'a str,
    pub nonce: &'a str,
    pub redirect_uri: &'a str,
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
    access_token: Option<String>,
}

/// Redeem the code and validate the ID token; the user it names.
pub async fn redeem(
    ctx: &Context,
    p: &Provider,
    d: &Discovered,
    r: Redeem<'_>,
) -> Result<Identity, UpstreamError> {
    let form = vec![
        ("grant_type", "authorization_code"),
        ("code", r.code),
        ("redirect_uri", r.redirect_uri),
        ("code_verifier", r.verifier),
    ];
    let (status, json) = token_request(ctx, p, &d.token_endpoint, form, d.basic_auth()).await?;
    if status != 200 {
        return Err(token_error(status, &json));
    }
    let tokens: TokenResponse = serde_json::from_value(json)
        .map_err(|e| UpstreamError::Invalid(format!("the token response: {e}")))?;
    let id_token: CoreIdToken = tokens
        .id_token
        .as_deref()
        .ok_or_else(|| UpstreamError::Invalid("the token response has no id_token".into()))?
        .parse()
        .map_err(|_| UpstreamError::Invalid("the id_token is not a JWT".into()))?;
    let issuer = IssuerUrl::new(d.issuer.clone())
        .map_err(|e| UpstreamError::Invalid(format!("issuer: {e}")))?;
    let now = ctx.now();
    let check = |jwks: CoreJsonWebKeySet| {
        let client_id = ClientId::new(p.record.client_id.clone());
        let verifier = match p.secret() {
            Some(s) => CoreIdTokenVerifier::new_confidential_client(
                client_id,
                ClientSecret::new(s.to_string()),
                issuer.clone(),
                jwks,
            ),
            None => CoreIdTokenVerifier::new_public_client(client_id, issuer.clone(), jwks),
        }
        .set_allowed_algs(ALGS)
        .set_time_fn(move || Utc.timestamp_opt(now, 0).single().unwrap_or_else(Utc::now));
        id_token
            .claims(&verifier, &Nonce::new(r.nonce.to_string()))
            .cloned()
    };
    let claims = match check(keys(ctx, d, false).await?) {
        // A key the cached set lacks: the provider rotated; fetch once more.
        Err(ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey,
        )) => check(keys(ctx, d, true).await?),
        other => other,
    }
    .map_err(|e| UpstreamError::Invalid(format!("the ID token: {e}")))?;

    let mut identity = Identity {
        issuer: d.issuer.clone(),
        subject: claims.subject().to_string(),
        email: claims.email().map(|e| e.to_string()),
        email_verified: claims.email_verified(),
        name: claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.to_string()),
    };
    if identity.email.is_none()
        && let (Some(at), Some(endpoint)) = (&tokens.access_token, &d.userinfo_endpoint)
    {
        userinfo(ctx, endpoint, at, &mut identity).await;
    }
    Ok(identity)
}

/// Fill what the ID token left out from userinfo, when its `sub` is the ID token's. A
/// failure leaves the identity as it was: the email only helps link.
async fn userinfo(ctx: &Context, endpoint: &str, access_token: &str, identity: &mut Identity) {
    let info = match get_json(ctx, endpoint, "application/json", Some(access_token)).await {
        Ok(v) => v,
        Err(e) => {
            tracing::info!(error = %e, "userinfo of an upstream provider unavailable");
            return;
        }
    };
    if info.get("sub").and_then(|s| s.as_str()) != Some(identity.subject.as_str()) {
        tracing::warn!("userinfo of an upstream provider names another subject; ignored");
        return;
    }
    let text = |k: &str| info.get(k).and_then(|v| v.as_str()).map(str::to_string);
    identity.email = text("email");
    identity.email_verified = info.get("email_verified").and_then(|v| v.as_bool());
    if identity.name.is_none() {
        identity.name = text("name");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(methods: &[&str]) -> Discovered {
        Discovered {
            issuer: "https://idp.example".into(),
            authorization_endpoint: String::new(),
            token_endpoint: String::new(),
            jwks_uri: String::new(),
            userinfo_endpoint: None,
            token_endpoint_auth_methods_supported: methods.iter().map(|m| m.to_string()).collect(),
            authorization_response_iss_parameter_supported: false,
        }
    }

    #[test]
    fn client_authentication_follows_what_the_provider_lists() {
        assert!(doc(&[]).basic_auth());
        assert!(doc(&["client_secret_basic", "client_secret_post"]).basic_auth());
        assert!(!doc(&["client_secret_post"]).basic_auth());
        assert!(doc(&["private_key_jwt"]).basic_auth());
    }
}
