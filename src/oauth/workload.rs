//! Workload identity federation (MCP SEP-1933, `io.modelcontextprotocol/auth/wif`): a headless
//! agent presents a JWT its platform issued (a Kubernetes service-account token, a SPIFFE
//! JWT-SVID, any OpenID Connect issuer's token) as the `assertion` of the jwt-bearer grant
//! (RFC 7523 §2.1) and acts as the client an operator's rule maps its subject to.
//!
//! The token is checked as RFC 7523 §3 asks: an issuer from `workload_identity.issuers` (keys
//! inline, at a `jwks_uri`, or by OpenID Connect discovery through the safe fetcher), a valid
//! signature, `aud` naming this server, live `exp`/`nbf`/`iat`, and a `jti`, when present,
//! used once. Every refusal is `invalid_grant` (RFC 7523 §3.1).

use jsonwebtoken::Validation;
use serde::Deserialize;

use super::client_assertion::{DecodeFailure, JwsHeader, decode_with_any, jws_header};
use super::clients::Client;
use super::context::Context;
use super::resource::ResourceUri;
use crate::config::{WorkloadIdentityConfig, WorkloadIssuer, WorkloadRule};
use crate::error::{ErrorCode, OAuthError};
use crate::util;

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
const LEEWAY_SECS: i64 = 60;
/// Longest lifetime accepted: platform tokens are short-lived (Kubernetes projects one hour
/// by default); a day bounds what a leaked one is worth.
const MAX_LIFETIME_SECS: i64 = 24 * 3600;

fn refused(d: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidGrant, d.into())
}

#[derive(Debug, Deserialize)]
struct WorkloadClaims {
    sub: String,
    exp: i64,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    jti: Option<String>,
}

/// The trusted workload issuer `iss` names, compared in normal form.
pub fn trusted<'a>(config: &'a WorkloadIdentityConfig, iss: &str) -> Option<&'a WorkloadIssuer> {
    let iss = ResourceUri::parse(iss).ok()?;
    config
        .issuers
        .iter()
        .find(|w| ResourceUri::parse(&w.issuer).ok().as_ref() == Some(&iss))
}

/// The client the first matching rule maps `(issuer, subject)` to.
pub fn client_for<'a>(rules: &'a [WorkloadRule], issuer: &str, subject: &str) -> Option<&'a str> {
    rules
        .iter()
        .filter(|r| r.issuer == issuer)
        .find(|r| match r.subject.strip_suffix('*') {
            Some(prefix) => subject.starts_with(prefix) && subject.len() > prefix.len(),
            None => subject == r.subject,
        })
        .map(|r| r.client_id.as_str())
}

/// Verify a workload token from `issuer` and return the client it acts as.
pub async fn authenticate(
    ctx: &Context,
    issuer: &WorkloadIssuer,
    assertion: &str,
) -> Result<Client, OAuthError> {
    let JwsHeader { alg, kid, .. } = jws_header(assertion).map_err(|e| refused(e.to_string()))?;
    let verifier = &ctx.assertions;
    let discovered;
    let jwks_uri = match (&issuer.jwks, &issuer.jwks_uri) {
        (None, None) => {
            discovered = verifier
                .discovered_jwks_uri(&issuer.issuer)
                .await
                .map_err(|e| refused(format!("the workload issuer's keys: {e}")))?;
            Some(discovered.as_str())
        }
        (_, uri) => uri.as_deref(),
    };
    let keys = verifier
        .keys_from(issuer.jwks.as_ref(), jwks_uri, alg, kid.as_deref())
        .await
        .map_err(|e| refused(format!("the workload issuer's keys: {e}")))?;

    let mut validation = Validation::new(alg);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = LEEWAY_SECS as u64;
    validation.validate_nbf = true;
    let with_slash = format!("{}/", issuer.issuer.trim_end_matches('/'));
    validation.set_issuer(&[issuer.issuer.as_str(), with_slash.as_str()]);
    validation.set_audience(verifier.audiences());
    let claims: WorkloadClaims =
        decode_with_any(assertion, &keys, &validation).map_err(|e| match e {
            DecodeFailure::Signature => {
                refused("the workload token's signature does not verify with its issuer's keys")
            }
            DecodeFailure::Claim(kind) => {
                use jsonwebtoken::errors::ErrorKind;
                refused(match kind {
                    ErrorKind::ExpiredSignature => "the workload token has expired (exp)".into(),
                    ErrorKind::ImmatureSignature => "the workload token is not valid yet".into(),
                    ErrorKind::InvalidAudience => format!(
                        "the workload token's aud must name this server ({})",
                        ctx.issuer()
                    ),
                    ErrorKind::MissingRequiredClaim(c) => {
                        format!("the workload token must carry the {c} claim")
                    }
                    _ => "the workload token's claims are malformed".to_string(),
                })
            }
        })?;
    let now = ctx.now();
    if claims.iat.is_some_and(|iat| iat > now + LEEWAY_SECS) {
        return Err(refused("the workload token's iat is in the future"));
    }
    if claims.exp > now + MAX_LIFETIME_SECS + LEEWAY_SECS {
        return Err(refused(format!(
            "the workload token lives more than {MAX_LIFETIME_SECS} s; ask the platform for \
             a shorter-lived one"
        )));
    }
    // RFC 7523 §3 (7): a jti, when there is one, is used once across replicas.
    if let Some(jti) = claims.jti.as_deref().filter(|j| !j.is_empty()) {
        let key = format!(
            "workload:{}",
            util::b64(&util::secret_hash(&format!(
                "{}:{}:{jti}",
                issuer.issuer.len(),
                issuer.issuer
            )))
        );
        if !verifier.spend_once(&key, claims.exp + LEEWAY_SECS).await? {
            return Err(refused(
                "the workload token was used before (same jti); present a fresh one",
            ));
        }
    }
    let client_id = client_for(
        &ctx.config.workload_identity.rules,
        &issuer.issuer,
        &claims.sub,
    )
    .ok_or_else(|| {
        refused(format!(
            "no workload_identity rule maps the subject {:?} of {} to a client",
            claims.sub.chars().take(200).collect::<String>(),
            issuer.issuer
        ))
    })?;
    match ctx.clients.find(client_id).await {
        Ok(Some(c)) => Ok(c),
        Ok(None) => Err(refused(format!(
            "the client {client_id} a workload rule names does not exist"
        ))),
        Err(super::clients::ClientLookupError::Store(e)) => Err(e.into()),
        Err(super::clients::ClientLookupError::Document(e)) => Err(refused(e.public())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(subject: &str, client_id: &str) -> WorkloadRule {
        WorkloadRule {
            issuer: "https://k8s.example".into(),
            subject: subject.into(),
            client_id: client_id.into(),
        }
    }

    #[test]
    fn rules_map_subjects_exactly_or_by_prefix() {
        let rules = [
            rule("system:serviceaccount:agents:indexer", "indexer"),
            rule("system:serviceaccount:agents:*", "agents"),
        ];
        let k8s = "https://k8s.example";
        assert_eq!(
            client_for(&rules, k8s, "system:serviceaccount:agents:indexer"),
            Some("indexer")
        );
        assert_eq!(
            client_for(&rules, k8s, "system:serviceaccount:agents:mailer"),
            Some("agents")
        );
        assert_eq!(
            client_for(&rules, k8s, "system:serviceaccount:agents:"),
            None
        );
        assert_eq!(
            client_for(&rules, k8s, "system:serviceaccount:other:x"),
            None
        );
        assert_eq!(
            client_for(
                &rules,
                "https://other.example",
                "system:serviceaccount:agents:indexer"
            ),
            None,
            "rules are per issuer"
        );
    }

    #[test]
    fn issuers_compare_in_normal_form() {
        let config = WorkloadIdentityConfig {
            issuers: vec![WorkloadIssuer {
                issuer: "https://k8s.example".into(),
                jwks_uri: None,
                jwks: None,
            }],
            rules: Vec::new(),
        };
        assert!(trusted(&config, "https://K8S.example/").is_some());
        assert!(trusted(&config, "https://evil.example").is_none());
        assert!(trusted(&config, "not a url").is_none());
    }
}
