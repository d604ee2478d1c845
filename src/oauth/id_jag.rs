//! Identity Assertion JWT Authorization Grants (ID-JAG,
//! draft-ietf-oauth-identity-assertion-authz-grant; the grant behind MCP enterprise-managed
//! authorization), in both roles.
//!
//! **As the enterprise IdP** ([`issue`], reached through token exchange, RFC 8693): a client
//! presents an ID token we issued to it (`subject_token_type=…:id_token`) and asks for
//! `requested_token_type=…:id-jag` for one `resource` at one authorization server
//! (`audience`, its issuer). An operator's policy (`id_jag.policies` in the configuration
//! file, or `concierge id-jag allow` in the database; default deny) says which
//! client may do so, with which scopes, and what the client is called there. The answer is a
//! short-lived JWT with `typ: oauth-id-jag+jwt` (draft §4.3), not an access token:
//! `token_type: N_A`, no refresh token.
//!
//! **As the MCP server's authorization server** ([`redeem`], the RFC 7523 §2.1 jwt-bearer
//! grant): the client presents an ID-JAG from an issuer in `id_jag.trusted_issuers`. It must
//! be signed with one of the issuer's keys (allow-listed asymmetric algorithms only), have
//! `typ` `oauth-id-jag+jwt`, `aud` our issuer, `client_id` the authenticated client, a
//! `resource` we protect, live `exp`/`iat`, and a `jti` never seen before (draft §4.4.1,
//! RFC 7523 §3). The access token is bound to that resource; its scopes are the requested
//! ones ∩ the assertion's ∩ the resource's.
//!
//! **Who the user is here.** The access token's `sub` is always a local user: the one the
//! IdP's (`iss`, `sub`) is linked to, found or made as the trusted issuer's policy says
//! (by subject, then by verified email when `link_by_email` is on, else provisioned unless
//! `provision` is off; see [`super::authn::linking`]). One IdP's `sub` never reaches a
//! resource server as if it were ours. As the IdP we put the user's `email` and
//! `email_verified` in the ID-JAG when the ID token carried them (draft §4.3 implementation
//! notes), so the other side can link by address.
//!
//! Every refusal is an OAuth error with a description and an `id_jag.refused` audit event.

use jsonwebtoken::Validation;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::authn::acr::Level;
use super::authn::linking::{self, ForeignUser, LinkError, LinkPolicy};
use super::client_assertion::{AssertionError, DecodeFailure, JwsHeader, LEEWAY_SECS};
use super::client_assertion::{decode_with_any, jws_header, signing_alg_names, unverified_payload};
use super::clients::Client;
use super::context::Context;
use super::form::Form;
use super::policy;
use super::resource::ResourceUri;
use super::scope::Scope;
use super::tokens::{AccessToken, Issued, TokenResponse, issue_access_token, verify_id_token};
use crate::audit::{Event, Kind};
use crate::config::{IdJagConfig, TrustedIssuer};
use crate::error::{ErrorCode, OAuthError};
use crate::keys::Alg;
use crate::store::IdJagPolicy;
use crate::util;

/// `requested_token_type` / `issued_token_type` of an ID-JAG (draft §4.3, §7).
pub const ID_JAG_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id-jag";
/// `subject_token_type` of an OpenID Connect ID token (RFC 8693 §3).
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
/// The JWT `typ` header of an ID-JAG (draft §4.3.3).
pub const ID_JAG_TYP: &str = "oauth-id-jag+jwt";
/// Metadata's `authorization_grant_profiles_supported` value.
pub const GRANT_PROFILE: &str = "urn:ietf:params:oauth:grant-profile:id-jag";
/// The longest an ID-JAG we redeem may claim to live (`exp` ahead of now).
pub const MAX_LIFETIME_SECS: i64 = 3600;

fn err(code: ErrorCode, d: impl Into<String>) -> OAuthError {
    OAuthError::new(code, d.into())
}

fn grant_err(d: impl Into<String>) -> OAuthError {
    err(ErrorCode::InvalidGrant, d)
}

/// The claims of an ID-JAG (draft §4.3.3).
#[derive(Debug, Serialize, Deserialize)]
pub struct IdJagClaims {
    pub iss: String,
    pub sub: String,
    /// The target authorization server's issuer.
    pub aud: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Value>,
    pub client_id: String,
    pub jti: String,
    pub exp: i64,
    pub iat: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// The user's address, for linking accounts by email (ID token claims, OIDC Core §5.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Record a refusal in the audit log and hand the error back.
fn refused(
    ctx: &Context,
    client: &Client,
    role: &str,
    detail: Map<String, Value>,
    e: OAuthError,
) -> OAuthError {
    let mut d = detail;
    d.insert("role".into(), role.into());
    d.insert("error".into(), e.code.as_str().into());
    d.insert("error_description".into(), e.description.to_string().into());
    ctx.audit.record(
        Event::new(Kind::IdJagRefused)
            .client(&client.client_id)
            .detail(Value::Object(d)),
    );
    e
}

/// The single value of a parameter that may appear at most once.
fn single<'a>(form: &'a Form, name: &str, code: ErrorCode) -> Result<Option<&'a str>, OAuthError> {
    match form.all(name).as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        _ => Err(err(code, format!("send one {name} per request"))),
    }
}

// ---------------------------------------------------------------------------------------
// The enterprise IdP: ID token → ID-JAG.

/// The policy letting `client_id` obtain ID-JAGs for `resource` at `audience` (compared in
/// normal form: clients differ on a lone trailing slash and on case).
pub fn find_policy<'a>(
    policies: &'a [IdJagPolicy],
    client_id: &str,
    audience: &ResourceUri,
    resource: &ResourceUri,
) -> Option<&'a IdJagPolicy> {
    policies.iter().find(|p| {
        p.client_id == client_id
            && ResourceUri::parse(&p.audience).ok().as_ref() == Some(audience)
            && ResourceUri::parse(&p.resource).ok().as_ref() == Some(resource)
    })
}

/// Is a policy well-formed? (URIs, scope tokens, non-empty client ids.) For policies from
/// the configuration file (checked at start-up) and from `concierge id-jag allow`.
pub fn check_policy(p: &IdJagPolicy) -> Result<(), String> {
    url::Url::parse(&p.audience).map_err(|e| format!("audience: {e}"))?;
    ResourceUri::parse(&p.resource).map_err(|e| format!("resource {e}"))?;
    Scope::parse(&p.scopes.join(" ")).map_err(|e| format!("scopes {e}"))?;
    if p.client_id.is_empty() || p.target_client_id.is_empty() {
        return Err("client_id and target_client_id must not be empty".into());
    }
    Ok(())
}

/// Check the `id_jag` configuration section's policies (start-up).
pub fn check_config(config: &IdJagConfig) -> Result<(), String> {
    for p in &config.policies {
        check_policy(p).map_err(|why| {
            format!(
                "id_jag.policies (client {:?}, audience {:?}): {why}",
                p.client_id, p.audience
            )
        })?;
    }
    Ok(())
}

/// Token exchange of one of our ID tokens for an ID-JAG (draft §4.3).
pub async fn issue(
    ctx: &Context,
    client: &Client,
    form: &Form,
) -> Result<TokenResponse, OAuthError> {
    let mut detail = Map::new();
    for name in ["audience", "resource"] {
        if let Some(v) = form.get(name) {
            detail.insert(name.into(), v.chars().take(300).collect::<String>().into());
        }
    }
    issue_checked(ctx, client, form)
        .await
        .map_err(|e| refused(ctx, client, "idp", detail, e))
}

async fn issue_checked(
    ctx: &Context,
    client: &Client,
    form: &Form,
) -> Result<TokenResponse, OAuthError> {
    match form.get("subject_token_type") {
        Some(ID_TOKEN_TYPE) => {}
        Some(other) => {
            return Err(OAuthError::invalid_request(format!(
                "an ID-JAG is issued for an ID token: subject_token_type must be \
                 {ID_TOKEN_TYPE}, not {other:?}"
            )));
        }
        None => return Err(OAuthError::invalid_request("subject_token_type is missing")),
    }
    let subject = form
        .get("subject_token")
        .ok_or_else(|| OAuthError::invalid_request("subject_token is missing"))?;
    if form.get("actor_token").is_some() {
        return Err(OAuthError::invalid_request(
            "actor_token is not supported for ID-JAG requests",
        ));
    }
    // The subject: an ID token we issued to this very client, not expired.
    let id_token = verify_id_token(&ctx.keys, ctx.issuer(), subject, &client.client_id)
        .ok_or_else(|| {
            grant_err(
                "the subject_token is not a valid, unexpired ID token this server issued to \
                 this client",
            )
        })?;
    let sub = id_token["sub"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| grant_err("the ID token has no sub"))?;
    let user = ctx
        .users()
        .get_user(sub)
        .await?
        .ok_or_else(|| grant_err("the ID token's user no longer exists"))?;
    if user.is_disabled() {
        return Err(grant_err("the ID token's user is disabled"));
    }

    // RFC 8693 §2.1: `audience` names the authorization server (its issuer), `resource`
    // the protected resource there. Both are required for an ID-JAG here: the policy is
    // per (client, audience, resource).
    let audience = single(form, "audience", ErrorCode::InvalidTarget)?.ok_or_else(|| {
        OAuthError::invalid_request(
            "audience is required: the issuer of the authorization server the ID-JAG is for",
        )
    })?;
    let audience = ResourceUri::parse(audience)
        .map_err(|e| err(ErrorCode::InvalidTarget, format!("audience {e}")))?;
    let resource = single(form, "resource", ErrorCode::InvalidTarget)?.ok_or_else(|| {
        err(
            ErrorCode::InvalidTarget,
            "resource is required: the protected resource the ID-JAG is for",
        )
    })?;
    let resource = ResourceUri::parse(resource)
        .map_err(|e| err(ErrorCode::InvalidTarget, format!("resource {e}")))?;
    // The configuration file's policies, then those made with the CLI.
    let stored = ctx
        .id_jag_policies()
        .id_jag_policies_for(&client.client_id)
        .await?;
    let policy = find_policy(
        &ctx.config.id_jag.policies,
        &client.client_id,
        &audience,
        &resource,
    )
    .or_else(|| find_policy(&stored, &client.client_id, &audience, &resource))
    .ok_or_else(|| {
        // RFC 8693 §2.2.2: unwilling to issue a token for the indicated target.
        err(
            ErrorCode::InvalidTarget,
            format!(
                "no ID-JAG policy lets this client obtain ID-JAGs for {resource} at {audience}"
            ),
        )
    })?;
    let scope = policy::id_jag_scopes(policy, form.get("scope"))?;

    let now = ctx.now();
    let ttl = i64::from(ctx.config.tokens.id_jag_ttl_secs);
    let scope_str = scope.to_string();
    let claims = IdJagClaims {
        iss: ctx.issuer().to_string(),
        sub: user.id.clone(),
        // The policy's spelling of the issuer: the target compares `aud` with its own.
        aud: Value::String(policy.audience.clone()),
        resource: Some(Value::String(resource.to_string())),
        client_id: policy.target_client_id.clone(),
        jti: util::random_id(),
        exp: now + ttl,
        iat: now,
        scope: (!scope.is_empty()).then(|| scope_str.clone()),
        auth_time: id_token["auth_time"].as_i64(),
        // What the ID token told this client, the ID-JAG may tell the other server.
        email: id_token["email"].as_str().map(str::to_string),
        email_verified: id_token["email_verified"].as_bool(),
        name: id_token["name"].as_str().map(str::to_string),
    };
    let jag = ctx.keys.sign_jwt(Alg::ES256, ID_JAG_TYP, &claims)?;
    let mut extra = Map::new();
    extra.insert(
        "id_jag".into(),
        json!({ "resource": resource.to_string(), "client_id": policy.target_client_id }),
    );
    Ok(TokenResponse {
        access_token: jag,
        // RFC 8693 §2.2.1: the issued token is not an access token.
        token_type: "N_A",
        expires_in: ttl,
        scope: (!scope.is_empty()).then_some(scope_str.clone()),
        refresh_token: None,
        id_token: None,
        issued_token_type: Some(ID_JAG_TOKEN_TYPE),
        issued: Issued {
            sub: user.id,
            audience: vec![policy.audience.clone()],
            scope: scope_str,
            jti: claims.jti,
            exp: claims.exp,
            act: None,
            // An ID-JAG is an assertion for another server, not bound to a DPoP key here.
            jkt: None,
            extra,
        },
    })
}

// ---------------------------------------------------------------------------------------
// The MCP server's authorization server: ID-JAG → access token.

/// The trusted issuer named `iss` (compared in normal form).
pub fn trusted_issuer<'a>(trusted: &'a [TrustedIssuer], iss: &str) -> Option<&'a TrustedIssuer> {
    let iss = ResourceUri::parse(iss).ok()?;
    trusted
        .iter()
        .find(|t| ResourceUri::parse(&t.issuer).ok().as_ref() == Some(&iss))
}

/// The trusted IdP `iss` names: the configuration file's, else one an operator added with
/// the CLI or the admin API.
pub async fn find_trusted(ctx: &Context, iss: &str) -> Result<Option<TrustedIssuer>, OAuthError> {
    if let Some(t) = trusted_issuer(&ctx.config.id_jag.trusted_issuers, iss) {
        return Ok(Some(t.clone()));
    }
    let stored = ctx.id_jag_policies().list_trusted_issuers().await?;
    Ok(trusted_issuer(&stored, iss).cloned())
}

/// Does this server trust any IdP's ID-JAGs (configured or stored)?
pub async fn trusts_any(ctx: &Context) -> Result<bool, OAuthError> {
    Ok(!ctx.config.id_jag.trusted_issuers.is_empty()
        || !ctx
            .id_jag_policies()
            .list_trusted_issuers()
            .await?
            .is_empty())
}

/// Is `typ` the ID-JAG media type? RFC 7515 §4.1.9: the `application/` prefix may be left
/// out, and media types compare case-insensitively.
pub fn is_id_jag_typ(typ: Option<&str>) -> bool {
    typ.is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        t == ID_JAG_TYP || t == format!("application/{ID_JAG_TYP}")
    })
}

/// The jwt-bearer grant with an ID-JAG (RFC 7523 §2.1, draft §4.4).
pub async fn redeem(
    ctx: &Context,
    client: &Client,
    form: &Form,
    dpop_jkt: Option<&str>,
) -> Result<TokenResponse, OAuthError> {
    let mut detail = Map::new();
    // Unverified, for the audit log only: who the assertion claims to come from.
    if let Some(p) = form
        .get("assertion")
        .and_then(|a| unverified_payload(a).ok())
    {
        for name in ["iss", "jti"] {
            if let Some(v) = p.get(name).and_then(Value::as_str) {
                detail.insert(name.into(), v.chars().take(300).collect::<String>().into());
            }
        }
    }
    redeem_checked(ctx, client, form, dpop_jkt)
        .await
        .map_err(|e| refused(ctx, client, "authorization_server", detail, e))
}

fn header_err(e: AssertionError) -> OAuthError {
    grant_err(match e {
        AssertionError::Alg(a) => format!(
            "the assertion uses alg {a:?}; accepted: {}",
            signing_alg_names().join(", ")
        ),
        AssertionError::Header(h) => format!("the assertion's header: {h}"),
        AssertionError::TooLarge => "the assertion is too large".into(),
        _ => "the assertion is not a compact JWS (three base64url parts)".into(),
    })
}

async fn redeem_checked(
    ctx: &Context,
    client: &Client,
    form: &Form,
    dpop_jkt: Option<&str>,
) -> Result<TokenResponse, OAuthError> {
    let assertion = single(form, "assertion", ErrorCode::InvalidRequest)?
        .ok_or_else(|| OAuthError::invalid_request("assertion is missing"))?;
    let JwsHeader { alg, kid, typ } = jws_header(assertion).map_err(header_err)?;
    // Explicit typing (RFC 8725 §3.11): an ID token or access token is not an ID-JAG.
    if !is_id_jag_typ(typ.as_deref()) {
        return Err(grant_err(format!(
            "the assertion's typ must be {ID_JAG_TYP}: only ID-JAGs are accepted here"
        )));
    }
    // Which issuer's keys to verify with: the payload's iss, checked by the signature below.
    let claimed_iss = unverified_payload(assertion)
        .ok()
        .and_then(|p| p.get("iss").and_then(Value::as_str).map(str::to_string))
        .ok_or_else(|| grant_err("the assertion has no iss"))?;
    let trusted = find_trusted(ctx, &claimed_iss).await?.ok_or_else(|| {
        grant_err(format!(
            "the assertion's issuer {:?} is not trusted here",
            claimed_iss.chars().take(200).collect::<String>()
        ))
    })?;
    let keys = ctx
        .assertions
        .keys_from(
            trusted.jwks.as_ref(),
            trusted.jwks_uri.as_deref(),
            alg,
            kid.as_deref(),
        )
        .await
        .map_err(|e| grant_err(format!("the issuer's keys: {e}")))?;

    let now = ctx.now();
    let mut validation = Validation::new(alg);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = LEEWAY_SECS as u64;
    validation.validate_nbf = true;
    validation.set_issuer(&[&claimed_iss]);
    let issuer = ctx.issuer();
    let mut audiences = vec![issuer.to_string()];
    if let Ok(u) = ResourceUri::parse(issuer)
        && u.as_str() != issuer
    {
        audiences.push(u.to_string());
    }
    if url::Url::parse(issuer).is_ok_and(|u| u.path() == "/") {
        audiences.push(format!("{issuer}/"));
    }
    validation.set_audience(&audiences);
    let claims: IdJagClaims =
        decode_with_any(assertion, &keys, &validation).map_err(|e| match e {
            DecodeFailure::Signature => {
                grant_err("the assertion's signature does not verify with the issuer's keys")
            }
            DecodeFailure::Claim(kind) => {
                use jsonwebtoken::errors::ErrorKind;
                grant_err(match kind {
                    ErrorKind::ExpiredSignature => "the assertion has expired (exp)".to_string(),
                    ErrorKind::ImmatureSignature => "the assertion is not valid yet (nbf)".into(),
                    ErrorKind::InvalidAudience => {
                        format!("the assertion's aud must be this server's issuer ({issuer})")
                    }
                    ErrorKind::InvalidIssuer => "the assertion's iss does not match".into(),
                    ErrorKind::MissingRequiredClaim(c) => {
                        format!("the assertion must carry the {c} claim")
                    }
                    _ => "the assertion's claims are malformed (an ID-JAG carries iss, sub, \
                          aud, client_id, jti, exp and iat)"
                        .into(),
                })
            }
        })?;
    if claims.iat > now + LEEWAY_SECS {
        return Err(grant_err("the assertion's iat is in the future"));
    }
    if claims.exp > now + MAX_LIFETIME_SECS + LEEWAY_SECS {
        return Err(grant_err(format!(
            "the assertion's exp is more than {MAX_LIFETIME_SECS} s ahead; ID-JAGs are \
             short-lived"
        )));
    }
    // OIDC Core §2: a `sub` is at most 255 ASCII characters.
    if claims.sub.is_empty()
        || claims.sub.len() > 255
        || claims.sub.chars().any(char::is_control)
        || claims.jti.is_empty()
        || claims.jti.len() > 256
    {
        return Err(grant_err(
            "the assertion needs a sub of 1 to 255 characters and a jti of 1 to 256 characters",
        ));
    }
    // Draft §4.4.1: the client presenting the ID-JAG is the one it was issued for.
    if claims.client_id != client.client_id {
        return Err(grant_err(format!(
            "the assertion was issued for client_id {:?}, not for the authenticated client",
            claims.client_id.chars().take(200).collect::<String>()
        )));
    }

    // The resource: the assertion's claim (one value); a `resource` parameter may repeat it.
    let target = |d: String| err(ErrorCode::InvalidTarget, d);
    let claimed = match &claims.resource {
        None => None,
        Some(Value::String(r)) => Some(r.as_str()),
        Some(Value::Array(a)) if a.len() == 1 => a[0].as_str(),
        Some(_) => return Err(target("the assertion must name one resource".into())),
    };
    let param = single(form, "resource", ErrorCode::InvalidTarget)?;
    let raw = claimed.or(param).ok_or_else(|| {
        target("the assertion names no resource; send the resource parameter".into())
    })?;
    let uri = ResourceUri::parse(raw).map_err(|e| target(format!("resource {e}")))?;
    if let Some(p) = param
        && ResourceUri::parse(p).ok().as_ref() != Some(&uri)
    {
        return Err(target(format!(
            "resource {p} differs from the assertion's resource {uri}"
        )));
    }
    let resource = ctx
        .resources
        .get(&uri)
        .await?
        .ok_or_else(|| target(format!("{uri} is not a resource this server protects")))?;
    let asserted = Scope::parse(claims.scope.as_deref().unwrap_or(""))
        .map_err(|e| grant_err(format!("the assertion's scope {e}")))?;
    let scope = policy::asserted_scopes(&asserted, form.get("scope"), &resource)?;
    // How the user signed in at the IdP is nothing this server can weigh (an ID-JAG's `acr`,
    // if it has one, is in the IdP's vocabulary, and the token issued here carries none): a
    // resource that requires more than a password (`--require-mfa`) gets no token from one.
    // The user authorizes through this server instead, where the requirement is met.
    if let Some(need) = resource.required_acr.filter(|l| *l > Level::OneFactor) {
        return Err(grant_err(format!(
            "{} requires {} at sign-in, which an ID-JAG does not attest here: the user must \
             authorize through this server",
            resource.uri,
            need.words()
        )));
    }

    // Last, once everything else holds: spend the jti (one atomic statement, so replicas
    // agree). Scoped by issuer, hashed to a fixed size.
    let key = format!(
        "id_jag:{}",
        util::b64(&util::secret_hash(&format!(
            "{}:{}:{}",
            claimed_iss.len(),
            claimed_iss,
            claims.jti
        )))
    );
    if !ctx
        .replay()
        .use_once(&key, claims.exp + LEEWAY_SECS, now)
        .await?
    {
        return Err(grant_err(
            "the assertion was used before (same jti); get a new ID-JAG from the IdP",
        ));
    }

    // Who the IdP's user is here: the token names a local user, never the IdP's `sub`.
    let who = ForeignUser {
        issuer: &claimed_iss,
        subject: &claims.sub,
        email: claims.email.as_deref(),
        email_verified: claims.email_verified,
        name: claims.name.as_deref(),
    };
    let policy = LinkPolicy {
        by_email: trusted.link_by_email,
        provision: trusted.provision,
    };
    let linked = linking::local_user(ctx, &who, policy)
        .await
        .map_err(|e| match e {
            LinkError::Store(e) => OAuthError::from(e),
            e => grant_err(e.to_string()),
        })?;

    let audience = [resource.uri.to_string()];
    let mut response = issue_access_token(
        &ctx.keys,
        ctx.issuer(),
        &AccessToken {
            sub: &linked.user.id,
            client_id: &client.client_id,
            audience: &audience,
            scope: &scope.to_string(),
            auth_time: claims.auth_time,
            amr: &[],
            acr: None,
            act: None,
            not_after: None,
            jkt: resource.dpop_binding(dpop_jkt)?,
            alg: resource.token_alg,
            authorization_details: None,
            delegation: None,
            ttl: i64::from(ctx.config.tokens.access_token_ttl_secs),
        },
    )?;
    response.issued.extra.insert(
        "id_jag".into(),
        json!({
            "iss": claimed_iss,
            "jti": claims.jti,
            "sub": claims.sub,
            "linked_by": linked.made.map(|m| m.as_str()),
        }),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::resource::ScopeDef;

    fn policy() -> IdJagPolicy {
        IdJagPolicy {
            client_id: "agent".into(),
            audience: "https://as.example/".into(),
            resource: "https://mcp.example/mcp".into(),
            target_client_id: "agent-there".into(),
            scopes: vec!["notes:read".into(), "notes:write".into()],
        }
    }

    #[test]
    fn policies_match_in_normal_form_and_deny_by_default() {
        let p = [policy()];
        let aud = ResourceUri::parse("https://AS.example").expect("aud");
        let res = ResourceUri::parse("https://mcp.example/mcp").expect("res");
        assert!(find_policy(&p, "agent", &aud, &res).is_some());
        assert!(find_policy(&p, "other", &aud, &res).is_none());
        let other = ResourceUri::parse("https://mcp.example/other").expect("res");
        assert!(find_policy(&p, "agent", &aud, &other).is_none());
        assert!(find_policy(&[], "agent", &aud, &res).is_none());
    }

    #[test]
    fn policy_scopes_never_widen() {
        let p = policy();
        assert_eq!(
            policy::id_jag_scopes(&p, None).expect("all").to_string(),
            "notes:read notes:write"
        );
        assert_eq!(
            policy::id_jag_scopes(&p, Some("notes:read"))
                .expect("one")
                .to_string(),
            "notes:read"
        );
        let e = policy::id_jag_scopes(&p, Some("notes:read admin")).expect_err("wider");
        assert_eq!(e.code, ErrorCode::InvalidScope);
        assert!(check_policy(&p).is_ok());
        assert!(
            check_policy(&IdJagPolicy {
                target_client_id: String::new(),
                ..p
            })
            .is_err()
        );
    }

    #[test]
    fn typ_must_be_the_id_jag_type() {
        assert!(is_id_jag_typ(Some("oauth-id-jag+jwt")));
        assert!(is_id_jag_typ(Some("application/OAuth-ID-JAG+JWT")));
        assert!(!is_id_jag_typ(Some("JWT")));
        assert!(!is_id_jag_typ(Some("at+jwt")));
        assert!(!is_id_jag_typ(None));
    }

    #[test]
    fn scopes_are_requested_and_asserted_and_offered() {
        let resource = crate::oauth::resource::Resource::new(
            "https://mcp.example/mcp",
            "Notes",
            vec![ScopeDef {
                name: "notes:read".into(),
                description: "Read".into(),
                tools: Vec::new(),
            }],
            0,
        )
        .expect("resource");
        let asserted = Scope::parse("notes:read other").expect("scope");
        let all = policy::asserted_scopes(&asserted, None, &resource).expect("all");
        assert_eq!(all.to_string(), "notes:read");
        let e = policy::asserted_scopes(&asserted, Some("notes:read notes:write"), &resource)
            .expect_err("widening");
        assert_eq!(e.code, ErrorCode::InvalidScope);
        let none = Scope::parse("other").expect("scope");
        assert!(policy::asserted_scopes(&none, None, &resource).is_err());
    }

    #[test]
    fn trusted_issuers_compare_in_normal_form() {
        let t = [TrustedIssuer {
            issuer: "https://idp.example".into(),
            jwks_uri: Some("https://idp.example/jwks".into()),
            jwks: None,
            link_by_email: false,
            provision: true,
        }];
        assert!(trusted_issuer(&t, "https://idp.example/").is_some());
        assert!(trusted_issuer(&t, "https://evil.example").is_none());
        assert!(trusted_issuer(&t, "not a url").is_none());
    }

    /// Property tests (README: Fuzzing).
    mod fuzz {
        use proptest::prelude::*;
        use proptest::test_runner::TestRunner;

        use super::*;
        use crate::fuzz::{claims, compact_jws, config, nasty_string, sign};

        proptest! {
            #![proptest_config(config())]

            /// Any assertion's header is read or refused as `invalid_grant`; only an ID-JAG
            /// `typ` passes the type check.
            #[test]
            fn any_assertion_header_is_read_or_an_invalid_grant(token in compact_jws()) {
                match jws_header(&token) {
                    Ok(h) => {
                        if is_id_jag_typ(h.typ.as_deref()) {
                            let typ = h.typ.unwrap_or_default().to_ascii_lowercase();
                            prop_assert!(typ.ends_with(ID_JAG_TYP));
                        }
                    }
                    Err(e) => prop_assert_eq!(header_err(e).code, ErrorCode::InvalidGrant),
                }
            }

            /// Issuers are matched in normal form, and only to a trusted one.
            #[test]
            fn only_trusted_issuers_match(iss in prop_oneof![nasty_string(), Just("https://IDP.example/".to_string())]) {
                let trusted = [TrustedIssuer {
                    issuer: "https://idp.example".into(),
                    jwks_uri: None,
                    jwks: None,
                    link_by_email: false,
                    provision: true,
                }];
                if trusted_issuer(&trusted, &iss).is_some() {
                    prop_assert_eq!(ResourceUri::parse(&iss).ok().map(String::from), Some("https://idp.example".to_string()));
                }
            }
        }

        /// ID-JAGs signed by a trusted key over claims of every shape: decoded into
        /// [`IdJagClaims`] or refused, never a panic; what decodes carries our audience.
        #[test]
        fn signed_id_jag_claims_decode_or_are_refused() {
            let (key, jwk) = crate::fuzz::es256_key("idp");
            let now = util::now();
            let issuer = "https://as.example";
            let strategy = claims(
                vec![
                    ("iss", json!("https://idp.example")),
                    ("sub", json!("user-1")),
                    ("aud", json!(issuer)),
                    ("client_id", json!("agent")),
                    ("resource", json!("https://mcp.example/mcp")),
                    ("scope", json!("notes:read")),
                    ("jti", json!("j1")),
                    ("exp", json!(now + 60)),
                    ("iat", json!(now)),
                    ("auth_time", json!(now - 10)),
                ],
                now,
            );
            let mut validation = Validation::new(jsonwebtoken::Algorithm::ES256);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            validation.leeway = LEEWAY_SECS as u64;
            validation.validate_nbf = true;
            validation.set_issuer(&["https://idp.example"]);
            validation.set_audience(&[issuer]);
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
            header.typ = Some(ID_JAG_TYP.into());
            let mut runner = TestRunner::new(config());
            let result = runner.run(&strategy, |claims| {
                let token = sign(&key, &header, &claims);
                match jws_header(&token) {
                    Ok(jws) => prop_assert!(is_id_jag_typ(jws.typ.as_deref())),
                    Err(e) => prop_assert!(matches!(e, AssertionError::TooLarge), "{}", e),
                }
                if let Ok(c) =
                    decode_with_any::<IdJagClaims>(&token, std::slice::from_ref(&jwk), &validation)
                {
                    prop_assert_eq!(&c.iss, "https://idp.example");
                    let ours = match &c.aud {
                        Value::Array(a) => a.iter().any(|a| a == issuer),
                        a => a == issuer,
                    };
                    prop_assert!(ours, "aud {}", c.aud);
                    prop_assert!(c.exp >= now - LEEWAY_SECS - 5);
                }
                Ok(())
            });
            if let Err(e) = result {
                panic!("{e}");
            }
        }
    }
}
