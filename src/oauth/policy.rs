//! Resource and scope policy: the one place that decides which registered resources a
//! request names (RFC 8707) and which scopes it may carry. Every grant, the authorization
//! endpoint and device authorization call these named checks:
//!
//! - resolving resources: [`resolve`], [`resources_for_user`] (with the documented default),
//!   [`resource_for_client`] (a client's own token), [`select_granted`] (a token request
//!   picking one of a grant's resources);
//! - narrowing scopes: to what a resource offers ([`offered_by`], [`check_requested`]), to
//!   what an operator allowed a client ([`operator_scope`], [`scopes_for_client`]), and to
//!   what the user consented or the subject token holds ([`narrow`], [`exchanged_scopes`],
//!   [`asserted_scopes`], [`id_jag_scopes`]);
//! - the sign-in a token needs: at approval ([`required_level`]), and again for each new
//!   token from a grant, whose requirement may have risen since ([`required_for_grant`],
//!   [`strong_enough`]).
//!
//! Two rules hold throughout: "no registered scope" never means "every scope", and the admin
//! API's resource is reachable only by admin clients for themselves.

use std::sync::Arc;

use super::admin_token::{admin_resource_uri, is_admin_resource};
use super::authn::acr::{self, Level};
use super::clients::{Client, ClientSource};
use super::context::Context;
use super::resource::{OIDC_SCOPES, Resource, ResourceUri};
use super::scope::Scope;
use crate::error::{ErrorCode, OAuthError};
use crate::store::{ClientKind, ExchangePolicy, IdJagPolicy};

fn target(d: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidTarget, d.into())
}

fn scope_error(d: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidScope, d.into())
}

// ---------------------------------------------------------------------------------------
// Resources.

/// The registered resource `raw` names, compared in normal form (clients differ on a lone
/// trailing slash, case and default ports).
pub async fn resolve(ctx: &Context, raw: &str) -> Result<Arc<Resource>, OAuthError> {
    // A resource named in its normal form (as clients usually do) needs no URL parsing.
    if let Some(hit) = ctx.resources.cached(raw) {
        return Ok(hit);
    }
    let uri = ResourceUri::parse(raw).map_err(|e| target(format!("resource {e}")))?;
    ctx.resources
        .get(&uri)
        .await?
        .ok_or_else(|| target(format!("{uri} is not a registered resource")))
}

/// The resources a stored request or grant names, looked up again, so one removed since is
/// refused. A sign-in granted no resource (identity scopes only) stays without one.
pub async fn stored_resources(
    ctx: &Context,
    uris: &[String],
) -> Result<Vec<Arc<Resource>>, OAuthError> {
    if uris.is_empty() {
        return Ok(Vec::new());
    }
    let uris: Vec<&str> = uris.iter().map(String::as_str).collect();
    resources_for_user(ctx, &uris, None).await
}

/// How strongly the user approving a request of `client_id` for `resources` must have signed
/// in: the server's policy, the client's `default_acr_values`, the resources' requirements,
/// and the `acr_values` the request itself asked for (CIBA Core §7.1), whichever is highest;
/// None: a password will do.
pub async fn required_level(
    ctx: &Context,
    client_id: &str,
    resources: &[Arc<Resource>],
    asked_acr: &[String],
) -> Result<Option<Level>, OAuthError> {
    let defaults = match ctx.clients.find(client_id).await {
        Ok(Some(c)) => c.metadata.default_acr_values.clone(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(OAuthError::new(ErrorCode::ServerError, e.to_string())),
    };
    let policy = ctx.config.signin.mfa;
    let by_client = acr::required(policy, &defaults, resources.iter().map(|r| r.required_acr));
    let by_request = acr::required(policy, asked_acr, []);
    Ok(by_client.max(by_request))
}

/// What a new token from a user's grant for `resource` needs of the sign-in behind it now:
/// the server's policy, the client's `default_acr_values` and the resource's requirement,
/// which may all have risen since the user approved. None: a password will do.
pub fn required_for_grant(
    ctx: &Context,
    client_defaults: &[String],
    resource: Option<&Resource>,
) -> Option<Level> {
    acr::required(
        ctx.config.signin.mfa,
        client_defaults,
        resource.map(|r| r.required_acr),
    )
}

/// Refuse a new token when the sign-in behind it (`have`) falls short of what a token for
/// `resource` needs now (`required`). A grant from a weaker sign-in then stops yielding
/// tokens (`invalid_grant`, nothing spent), and the client sends the user through
/// authorization again, which asks for the stronger sign-in. Without this a refresh token
/// would carry a password-only approval past a new `--require-mfa` for as long as the
/// client keeps refreshing.
pub fn strong_enough(
    required: Option<Level>,
    have: Level,
    resource: Option<&Resource>,
) -> Result<(), OAuthError> {
    match required {
        Some(need) if have < need => Err(OAuthError::new(
            ErrorCode::InvalidGrant,
            format!(
                "the user approved this with {} and a token for {} now needs {}: send the \
                 user through authorization again",
                have.words(),
                resource.map_or("this client", |r| r.uri.as_str()),
                need.words()
            ),
        )),
        _ => Ok(()),
    }
}

/// The resources a user's authorization is for (the authorization endpoint, device
/// authorization): each `resource` sent, or without one the configured `default_resource`,
/// else the only registered resource. A sign-in that asks only for identity scopes (`openid`
/// with `profile`, `email`, `offline_access`) needs no resource when none of those applies:
/// its tokens are for the ID token and userinfo alone, so Concierge can be a plain OpenID
/// provider (the enterprise IdP of the identity-assertion flow). The admin API is never one of
/// them: a user cannot delegate administration to an agent.
pub async fn resources_for_user(
    ctx: &Context,
    requested: &[&str],
    scope: Option<&str>,
) -> Result<Vec<Arc<Resource>>, OAuthError> {
    if requested.is_empty() {
        return match default_resource(ctx).await? {
            Some(r) => Ok(vec![r]),
            None if identity_only(scope) => Ok(Vec::new()),
            None => Err(target(
                "resource is required: name the resource the token is for (RFC 8707)",
            )),
        };
    }
    let mut out: Vec<Arc<Resource>> = Vec::new();
    for raw in requested {
        let r = resolve(ctx, raw).await?;
        if is_admin_resource(ctx.issuer(), &r) {
            return Err(target(format!(
                "{} is the admin API: it is not available through user authorization",
                r.uri
            )));
        }
        if !out.iter().any(|o| o.uri == r.uri) {
            out.push(r);
        }
    }
    Ok(out)
}

/// Does `scope` ask only about the user (OpenID Connect scopes, `openid` among them)?
fn identity_only(scope: Option<&str>) -> bool {
    Scope::parse(scope.unwrap_or("")).is_ok_and(|s| {
        s.contains("openid") && s.tokens().iter().all(|t| OIDC_SCOPES.contains(&t.as_str()))
    })
}

/// The resource of a request that names none (some MCP clients send no `resource`): the
/// configured default, else the only registered one; `None` when there is none or several.
async fn default_resource(ctx: &Context) -> Result<Option<Arc<Resource>>, OAuthError> {
    if let Some(d) = &ctx.config.default_resource {
        let uri = ResourceUri::parse(d).map_err(|e| target(format!("default_resource {e}")))?;
        return ctx
            .resources
            .get(&uri)
            .await?
            .map(Some)
            .ok_or_else(|| target(format!("the default resource {uri} is not registered")));
    }
    let admin = admin_resource_uri(ctx.issuer());
    let mut all = ctx.resources.list().await?;
    all.retain(|r| r.uri.as_str() != admin);
    Ok(<[Resource; 1]>::try_from(all)
        .ok()
        .map(|[one]| Arc::new(one)))
}

/// May this client get tokens for itself (client credentials) for ordinary resources? Only
/// when an operator allowed it: an operator registered it, or the registration policy lets
/// self-registered and metadata-document clients do so (off by default).
pub fn may_get_machine_tokens(ctx: &Context, client: &Client) -> bool {
    client.source == ClientSource::Stored(ClientKind::Static)
        || ctx.config.registration.allow_client_credentials
}

/// The one resource of a client's own token (client credentials, RFC 8707 §2): exactly one
/// `resource`, registered. The admin API's resource only for admin clients; other resources
/// only for clients an operator allowed machine tokens.
pub async fn resource_for_client(
    ctx: &Context,
    client: &Client,
    requested: &[&str],
) -> Result<Arc<Resource>, OAuthError> {
    let raw = match requested {
        [one] => *one,
        [] => {
            return Err(target(
                "resource is required: name the registered resource the token is for (RFC 8707)",
            ));
        }
        _ => return Err(target("request one resource per token")),
    };
    let resource = resolve(ctx, raw).await?;
    let admin = is_admin_resource(ctx.issuer(), &resource);
    if admin && !client.metadata.admin {
        return Err(target(format!(
            "{} is the admin API: only admin clients (`concierge admin-client create`) get \
             tokens for it",
            resource.uri
        )));
    }
    if !admin && !may_get_machine_tokens(ctx, client) {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client registered itself: it gets tokens for a resource only through a \
             user's authorization, unless an operator allows client credentials",
        ));
    }
    Ok(resource)
}

/// The one granted resource a token is for. `resource` on a token request may pick one of
/// the granted resources (narrow), by any name of it (a trailing slash, an alias), but never
/// name another (RFC 8707 §2.2). `None` for a sign-in that was granted no resource (identity
/// scopes only).
pub async fn select_granted(
    ctx: &Context,
    requested: &[&str],
    granted: &[String],
) -> Result<Option<String>, OAuthError> {
    let uri = match requested {
        [] => return only_granted(granted),
        [one] => ResourceUri::parse(one).map_err(|e| target(format!("resource {e}")))?,
        _ => return Err(target("request one resource per token")),
    };
    if let Some(g) = granted_as(&uri, granted) {
        return Ok(Some(g));
    }
    if let Some(r) = ctx.resources.get(&uri).await?
        && let Some(g) = granted_as(&r.uri, granted)
    {
        return Ok(Some(g));
    }
    Err(target(format!(
        "{uri} was not granted; a token request cannot widen the grant"
    )))
}

/// Without `resource`, the only granted resource (or none for a sign-in without one).
fn only_granted(granted: &[String]) -> Result<Option<String>, OAuthError> {
    match granted {
        [] => Ok(None),
        [only] => Ok(Some(only.clone())),
        _ => Err(target(
            "several resources were granted: name one with resource",
        )),
    }
}

fn granted_as(uri: &ResourceUri, granted: &[String]) -> Option<String> {
    granted.iter().find(|g| *g == uri.as_str()).cloned()
}

// ---------------------------------------------------------------------------------------
// Scopes.

/// What of `scope` a token for `resource` carries: the resource's scopes, plus the OpenID
/// Connect ones (which concern the user, not the resource).
pub fn offered_by(scope: &Scope, resource: &Resource) -> Scope {
    scope.retain(|t| OIDC_SCOPES.contains(&t) || resource.offers(t))
}

/// The scope an operator gave a client, the only kind of registered scope that limits what
/// it may ask for. The `scope` a client asserts about itself (dynamic registration, a
/// metadata document) is no limit: RFC 7591 §2 leaves its meaning to the service, anyone may
/// register again with a wider one, and MCP clients register with the scope of the first
/// challenge and later step up to a wider one (MCP authorization, "Step-Up Authorization
/// Flow"); the official SDKs do not register again for that.
pub fn operator_scope(client: &Client) -> Option<Scope> {
    if client.source != ClientSource::Stored(ClientKind::Static) {
        return None;
    }
    client
        .metadata
        .scope
        .as_deref()
        .map(|s| Scope::parse(s).unwrap_or_default())
}

/// The scopes a user's authorization asks for: each an OpenID Connect scope or a scope of
/// one of `resources`, and within the operator's scope for an operator's client. What such a
/// request gets is then bounded by the user's consent.
pub fn check_requested(
    client: &Client,
    resources: &[Arc<Resource>],
    requested: Option<&str>,
) -> Result<Scope, OAuthError> {
    let scope =
        Scope::parse(requested.unwrap_or("")).map_err(|e| scope_error(format!("scope {e}")))?;
    let operator = operator_scope(client);
    for t in scope.tokens() {
        if OIDC_SCOPES.contains(&t.as_str()) {
            continue;
        }
        if !resources.iter().any(|r| r.offers(t)) {
            return Err(scope_error(format!(
                "{t} is not a scope of the requested resource"
            )));
        }
        if operator.as_ref().is_some_and(|op| !op.contains(t)) {
            return Err(scope_error(format!(
                "this client did not register the scope {t}"
            )));
        }
    }
    Ok(scope)
}

/// The scopes a client may have in a token for itself: the scope an operator gave it; for a
/// self-registered or metadata-document client the registration policy allowed to use
/// client credentials, the scope it registered. No scope means none, never every scope.
pub fn machine_scope(client: &Client) -> Scope {
    match client.source {
        ClientSource::Stored(ClientKind::Static) => operator_scope(client).unwrap_or_default(),
        _ => client
            .metadata
            .scope
            .as_deref()
            .map(|s| Scope::parse(s).unwrap_or_default())
            .unwrap_or_default(),
    }
}

/// The scopes of a client's own token (client credentials): requested ones must be the
/// resource's and within [`machine_scope`]; without `scope`, everything of it the resource
/// offers. A client that was given no scope gets none.
pub fn scopes_for_client(
    client: &Client,
    resource: &Resource,
    requested: Option<&str>,
) -> Result<Scope, OAuthError> {
    let allowed = machine_scope(client);
    match requested {
        Some(r) => {
            let s = Scope::parse(r).map_err(|e| scope_error(format!("scope {e}")))?;
            for t in s.tokens() {
                if !resource.offers(t) {
                    return Err(scope_error(format!(
                        "{t} is not a scope of {}",
                        resource.uri
                    )));
                }
                if !allowed.contains(t) {
                    return Err(scope_error(format!(
                        "this client may not have the scope {t}: an operator sets a client's \
                         scopes (`client add --scope`); a self-registered client has the \
                         scope it registered"
                    )));
                }
            }
            Ok(s)
        }
        None => Ok(allowed.retain(|t| resource.offers(t))),
    }
}

/// `scope` on a token request may narrow the granted scope, never widen it (RFC 6749 §6).
pub fn narrow(requested: Option<&str>, granted: &Scope) -> Result<Scope, OAuthError> {
    let Some(requested) = requested else {
        return Ok(granted.clone());
    };
    let requested = Scope::parse(requested).map_err(|e| scope_error(format!("scope {e}")))?;
    if let Some(t) = requested.tokens().iter().find(|t| !granted.contains(t)) {
        return Err(scope_error(format!(
            "{t} was not granted; a token request cannot widen the grant"
        )));
    }
    Ok(requested)
}

/// Token exchange (RFC 8693): the target scopes the operator's policy maps the subject
/// token's scopes to, narrowed by `scope` if sent. Never empty.
pub fn exchanged_scopes(
    policy: &ExchangePolicy,
    subject: &Scope,
    requested: Option<&str>,
) -> Result<Scope, OAuthError> {
    let allowed = mapped_scopes(policy, subject);
    let granted = match requested {
        Some(r) => {
            let r = Scope::parse(r).map_err(|e| scope_error(format!("scope {e}")))?;
            if let Some(t) = r.tokens().iter().find(|t| !allowed.contains(t)) {
                return Err(scope_error(format!(
                    "{t} is not allowed for this exchange: the subject token and the policy \
                     do not give it"
                )));
            }
            r
        }
        None => allowed,
    };
    if granted.is_empty() {
        return Err(scope_error(
            "the subject token's scopes map to no scope of the target",
        ));
    }
    Ok(granted)
}

/// The target scopes a policy allows from the subject's scopes.
pub fn mapped_scopes(policy: &ExchangePolicy, subject: &Scope) -> Scope {
    let mut out: Vec<&str> = Vec::new();
    for s in subject.tokens() {
        for t in policy.scope_map.get(s).into_iter().flatten() {
            if !out.contains(&t.as_str()) {
                out.push(t);
            }
        }
    }
    Scope::from_tokens(out)
}

/// A redeemed ID-JAG's scopes: the requested ones (each carried by the assertion) or all the
/// assertion's, kept to those the resource offers (the authorization server may narrow,
/// never widen).
pub fn asserted_scopes(
    assertion: &Scope,
    requested: Option<&str>,
    resource: &Resource,
) -> Result<Scope, OAuthError> {
    let wanted = match requested {
        Some(r) => {
            let r = Scope::parse(r).map_err(|e| scope_error(format!("scope {e}")))?;
            if let Some(t) = r.tokens().iter().find(|t| !assertion.contains(t)) {
                return Err(scope_error(format!(
                    "{t} is not granted by the assertion; a token request cannot widen it"
                )));
            }
            r
        }
        None => assertion.clone(),
    };
    let offered = wanted.retain(|t| resource.offers(t));
    if offered.is_empty() {
        return Err(scope_error(format!(
            "none of the assertion's scopes is a scope of {}",
            resource.uri
        )));
    }
    Ok(offered)
}

/// The scopes an ID-JAG we issue carries: the requested ones, each allowed by the policy;
/// without `scope`, all the policy allows.
pub fn id_jag_scopes(policy: &IdJagPolicy, requested: Option<&str>) -> Result<Scope, OAuthError> {
    let allowed = Scope::from_tokens(policy.scopes.iter().map(String::as_str));
    let Some(requested) = requested else {
        return Ok(allowed);
    };
    let requested = Scope::parse(requested).map_err(|e| scope_error(format!("scope {e}")))?;
    if let Some(t) = requested.tokens().iter().find(|t| !allowed.contains(t)) {
        return Err(scope_error(format!(
            "the ID-JAG policy for this client and resource does not allow {t}"
        )));
    }
    Ok(requested)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::resource::ScopeDef;

    fn client(source: ClientSource, scope: Option<&str>) -> Client {
        use crate::oauth::client_metadata::{Origin, RawClientMetadata, validate};
        let raw = RawClientMetadata {
            redirect_uris: Some(vec!["http://127.0.0.1/cb".into()]),
            grant_types: Some(vec![
                "authorization_code".into(),
                "client_credentials".into(),
            ]),
            token_endpoint_auth_method: Some("client_secret_basic".into()),
            scope: scope.map(str::to_string),
            ..Default::default()
        };
        Client {
            client_id: "c".into(),
            source,
            metadata: Arc::new(
                validate(
                    raw,
                    Origin::Operator,
                    &crate::oauth::grants::GrantRegistry::standard(),
                )
                .expect("valid"),
            ),
            secret_hash: None,
            previous_secret: None,
            last_used_at: None,
        }
    }

    fn notes() -> Arc<Resource> {
        Arc::new(
            Resource::new(
                "https://notes.example/mcp",
                "Notes",
                vec![
                    ScopeDef::parse("notes:read").expect("scope"),
                    ScopeDef::parse("notes:write").expect("scope"),
                ],
                0,
            )
            .expect("resource"),
        )
    }

    #[test]
    fn only_an_operators_registered_scope_limits_user_requests() {
        let wider = Some("notes:read notes:write");
        // An MCP client registers with the first challenge's scope and steps up later.
        for source in [
            ClientSource::Stored(ClientKind::Dynamic),
            ClientSource::MetadataDocument,
        ] {
            let c = client(source, Some("notes:read"));
            let got = check_requested(&c, &[notes()], wider).expect("allowed");
            assert!(got.contains("notes:write"));
        }
        let operator = client(ClientSource::Stored(ClientKind::Static), Some("notes:read"));
        let e = check_requested(&operator, &[notes()], wider).expect_err("limited");
        assert_eq!(e.code, ErrorCode::InvalidScope);
        assert!(e.description.contains("notes:write"), "{}", e.description);
        // Never beyond what the resource offers, whoever registered the client.
        let dynamic = client(ClientSource::Stored(ClientKind::Dynamic), None);
        let e = check_requested(&dynamic, &[notes()], Some("notes:admin")).expect_err("offer");
        assert_eq!(e.code, ErrorCode::InvalidScope);
    }

    #[test]
    fn a_grant_falls_short_only_below_what_is_required() {
        let notes = notes();
        assert!(strong_enough(None, Level::OneFactor, Some(&notes)).is_ok());
        let need = Some(Level::MultiFactor);
        assert!(strong_enough(need, Level::MultiFactor, Some(&notes)).is_ok());
        assert!(strong_enough(need, Level::PhishingResistant, Some(&notes)).is_ok());
        let e = strong_enough(need, Level::OneFactor, Some(&notes)).expect_err("short");
        assert_eq!(e.code, ErrorCode::InvalidGrant);
        assert!(
            e.description.contains("a password")
                && e.description.contains("a second factor")
                && e.description.contains("https://notes.example/mcp"),
            "{}",
            e.description
        );
        let e = strong_enough(Some(Level::PhishingResistant), Level::MultiFactor, None)
            .expect_err("short");
        assert!(e.description.contains("a passkey"), "{}", e.description);
    }

    #[test]
    fn no_operator_scope_means_no_machine_scope() {
        let none = client(ClientSource::Stored(ClientKind::Static), None);
        let e = scopes_for_client(&none, &notes(), Some("notes:read")).expect_err("refused");
        assert_eq!(e.code, ErrorCode::InvalidScope);
        assert!(
            scopes_for_client(&none, &notes(), None)
                .expect("empty")
                .is_empty()
        );
        let some = client(
            ClientSource::Stored(ClientKind::Static),
            Some("notes:read other"),
        );
        assert_eq!(
            scopes_for_client(&some, &notes(), None)
                .expect("defaults")
                .to_string(),
            "notes:read"
        );
        assert!(scopes_for_client(&some, &notes(), Some("notes:write")).is_err());
    }

    #[test]
    fn token_requests_narrow_and_never_widen() {
        let granted = Scope::parse("a b").expect("scope");
        assert_eq!(narrow(None, &granted).expect("same"), granted);
        assert_eq!(
            narrow(Some("b"), &granted).expect("narrow").to_string(),
            "b"
        );
        assert!(narrow(Some("c"), &granted).is_err());
        let g = vec![
            "https://a.example".to_string(),
            "https://b.example".to_string(),
        ];
        assert!(only_granted(&g).is_err(), "several: name one");
        assert_eq!(only_granted(&[]).expect("identity only"), None);
        let b = ResourceUri::parse("https://B.example/").expect("uri");
        assert_eq!(granted_as(&b, &g), Some("https://b.example".to_string()));
        let c = ResourceUri::parse("https://c.example").expect("uri");
        assert_eq!(granted_as(&c, &g), None);
        assert!(identity_only(Some("openid profile offline_access")));
        assert!(!identity_only(Some("profile")), "not a sign-in");
        assert!(!identity_only(Some("openid notes:read")));
    }

    #[test]
    fn exchange_maps_only_what_the_subject_has() {
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
        assert_eq!(mapped_scopes(&policy, &s).to_string(), "notes:read");
        let w = Scope::parse("calendar:write calendar:read").expect("scope");
        assert_eq!(
            mapped_scopes(&policy, &w).to_string(),
            "notes:read notes:write"
        );
        assert!(exchanged_scopes(&policy, &s, Some("notes:write")).is_err());
        assert!(exchanged_scopes(&policy, &Scope::default(), None).is_err());
    }
}
