//! Signing in through an upstream identity provider ("Sign in with …"): any OpenID Connect
//! provider ([`oidc`]) or an OAuth 2.0 provider with a user endpoint ([`github`]).
//!
//! We are the provider's client. [`start`] sends the browser there with `state`, a PKCE
//! challenge (RFC 7636) and, for OpenID Connect, a `nonce`; what the callback needs to check
//! them travels in a cookie sealed under the key-encryption key ([`Flow`]), bound to this
//! browser and to the provider, for [`FLOW_TTL_SECS`]. [`finish`] checks the callback against
//! it (OAuth 2.0 Security BCP §4.7: `state` and PKCE against CSRF and code injection;
//! RFC 9207's `iss` against mix-up), redeems the code and reads who the user is. Then the
//! user is the local account linked to (issuer, subject) ([`super::linking`]), or the
//! identity is linked to the signed-in user who asked for it from their account page
//! ([`link`]).
//!
//! A sign-in through a provider counts as one factor (`amr` `["fed"]`): a user with a second
//! factor here is asked for it after, as after a password.

pub mod github;
pub mod oidc;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::super::context::Context;
use super::super::net_guard::{FetchError, SafeFetcher};
use super::super::pkce;
use super::super::ttl_cache::TtlCache;
use super::acr::Level;
use super::linking::{self, ForeignUser, LinkError, LinkPolicy};
use super::{PasswordChecked, SigninError};
use crate::audit::{Event, Kind};
use crate::store::{LinkedBy, LinkedIdentity, StoreError, UpstreamKind, UpstreamProvider};
use crate::util;

/// The `amr` value of a sign-in through another provider. RFC 8176 registers none for
/// federation; the value is ours, and counts as one factor.
pub const AMR_FEDERATED: &str = "fed";

/// How long a browser may spend at the provider, seconds.
pub const FLOW_TTL_SECS: i64 = 600;

/// The cookie carrying a sign-in in progress at a provider.
pub const FLOW_COOKIE: &str = "concierge_upstream";

/// Requests to a provider give up after this long.
const TIMEOUT_MS: u64 = 10_000;

/// The largest document (discovery, keys, token or user response) read from a provider.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// What the sealed flow cookie is bound to (the sealing's associated data).
const FLOW_KID: &str = "upstream flow";

/// The providers (configured and stored) and what is cached about them.
pub struct Upstreams {
    configured: Vec<UpstreamProvider>,
    fetcher: SafeFetcher,
    /// Issuer → its discovery document, an hour.
    discovered: TtlCache<String, Arc<oidc::Discovered>>,
    /// `jwks_uri` → its key set, five minutes (fetched again for an unknown key).
    keys: TtlCache<String, Arc<serde_json::Value>>,
}

impl Upstreams {
    pub fn new(configured: &[UpstreamProvider]) -> Result<Self, FetchError> {
        Ok(Self {
            configured: configured.to_vec(),
            fetcher: SafeFetcher::for_operator_urls(TIMEOUT_MS)?,
            discovered: TtlCache::new(64),
            keys: TtlCache::new(64),
        })
    }
}

/// Why a sign-in through a provider did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("there is no such provider")]
    UnknownProvider,
    /// No flow cookie, or one for another provider, browser or `state`, or too old.
    #[error("this sign-in was not started in this browser, or took too long")]
    Flow,
    /// The provider sent the browser back with an error (the user declined, say).
    #[error("the provider answered {0}")]
    Denied(String),
    /// What the provider answered does not check out (the ID token, the issuer, the code).
    #[error("the provider's answer is not valid: {0}")]
    Invalid(String),
    #[error("the provider could not be reached: {0}")]
    Unreachable(String),
    #[error("the provider's client secret cannot be decrypted with this key-encryption key")]
    Secret,
    /// Linking from the account page: the identity names another user here.
    #[error("this identity is already linked to another account here")]
    LinkedElsewhere,
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Signin(#[from] SigninError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<FetchError> for UpstreamError {
    fn from(e: FetchError) -> Self {
        Self::Unreachable(e.to_string())
    }
}

impl UpstreamError {
    /// A short word for the audit log and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnknownProvider => "unknown_provider",
            Self::Flow => "flow",
            Self::Denied(_) => "denied",
            Self::Invalid(_) => "invalid_response",
            Self::Unreachable(_) => "unreachable",
            Self::Secret => "secret",
            Self::LinkedElsewhere => "linked_elsewhere",
            Self::Link(_) => "link",
            Self::Signin(_) => "signin",
            Self::Store(_) => "store",
        }
    }
}

/// A provider ready for a sign-in: its record, the client secret in clear.
pub struct Provider {
    pub record: UpstreamProvider,
}

impl Provider {
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// The issuer its users' identities are linked under.
    pub fn issuer(&self) -> &str {
        match (&self.record.issuer, self.record.kind) {
            (Some(i), _) => i,
            (None, UpstreamKind::Github) => github::DEFAULT_ISSUER,
            (None, UpstreamKind::Oidc) => "",
        }
    }

    fn policy(&self) -> LinkPolicy {
        LinkPolicy {
            by_email: self.record.link_by_email,
            provision: self.record.provision,
        }
    }

    fn secret(&self) -> Option<&str> {
        self.record
            .client_secret
            .as_deref()
            .filter(|s| !s.is_empty())
    }

    fn scope(&self) -> String {
        let mut scopes = self.record.scopes.clone();
        match self.record.kind {
            UpstreamKind::Oidc => {
                if scopes.is_empty() {
                    scopes = vec!["openid".into(), "email".into(), "profile".into()];
                } else if !scopes.iter().any(|s| s == "openid") {
                    scopes.insert(0, "openid".into());
                }
            }
            UpstreamKind::Github if scopes.is_empty() => {
                scopes = vec!["read:user".into(), "user:email".into()];
            }
            UpstreamKind::Github => {}
        }
        scopes.join(" ")
    }
}

/// What the sealed secret of stored provider `id` is bound to.
pub fn secret_kid(id: &str) -> String {
    format!("upstream:{id}")
}

/// A provider's button: its id and label.
#[derive(Debug, Clone, Serialize)]
pub struct Button {
    pub id: String,
    pub name: String,
}

/// The providers to offer, the configuration file's first (a stored one with the same id
/// is hidden by it).
pub async fn buttons(ctx: &Context) -> Result<Vec<Button>, StoreError> {
    let configured = &ctx.authn.upstreams.configured;
    let mut out: Vec<Button> = configured
        .iter()
        .map(|p| Button {
            id: p.id.clone(),
            name: p.name.clone(),
        })
        .collect();
    for s in ctx.upstream_store().list_upstreams().await? {
        if !configured.iter().any(|c| c.id == s.provider.id) {
            out.push(Button {
                id: s.provider.id,
                name: s.provider.name,
            });
        }
    }
    Ok(out)
}

/// The provider `id`, configured or stored.
pub async fn find(ctx: &Context, id: &str) -> Result<Provider, UpstreamError> {
    if let Some(p) = ctx.authn.upstreams.configured.iter().find(|p| p.id == id) {
        return Ok(Provider { record: p.clone() });
    }
    let stored = ctx
        .upstream_store()
        .get_upstream(id)
        .await?
        .ok_or(UpstreamError::UnknownProvider)?;
    let mut record = stored.provider;
    if let Some(sealed) = &stored.secret_sealed {
        let plain = ctx
            .keys
            .kek()
            .open(&secret_kid(id), sealed)
            .map_err(|_| UpstreamError::Secret)?;
        record.client_secret =
            Some(String::from_utf8(plain.to_vec()).map_err(|_| UpstreamError::Secret)?);
    }
    Ok(Provider { record })
}

/// A sign-in at a provider in progress: what the callback checks, sealed in a cookie.
#[derive(Serialize, Deserialize)]
struct Flow {
    /// The provider's id.
    p: String,
    state: String,
    nonce: String,
    verifier: String,
    /// Where the browser goes after (a path here).
    return_to: String,
    /// Linking from the account page: the signed-in user the identity is for.
    link: Option<String>,
    /// The level the sign-in must reach (an authorization request's `acr`).
    acr: Option<String>,
    /// The browser (`concierge_browser`) it was started in.
    binding: String,
    exp: i64,
}

/// What starts a sign-in at a provider.
pub struct Start<'a> {
    /// `<issuer>/signin/upstream/<id>/callback`, as registered at the provider.
    pub redirect_uri: &'a str,
    pub return_to: &'a str,
    /// The browser's binding id.
    pub binding: &'a str,
    /// Linking from the account page: the signed-in user.
    pub link_user: Option<&'a str>,
    pub level: Option<Level>,
}

/// Where to send the browser, and the flow cookie's value.
pub struct Started {
    pub location: String,
    pub cookie: String,
}

/// Start a sign-in at `p`: the provider's authorization URL and the sealed flow.
pub async fn start(ctx: &Context, p: &Provider, s: Start<'_>) -> Result<Started, UpstreamError> {
    let endpoint = match p.record.kind {
        UpstreamKind::Oidc => oidc::discover(ctx, p).await?.authorization_endpoint.clone(),
        UpstreamKind::Github => github::authorization_endpoint(p).to_string(),
    };
    let flow = Flow {
        p: p.id().to_string(),
        state: util::random_secret(),
        nonce: util::random_secret(),
        verifier: util::random_secret(),
        return_to: s.return_to.to_string(),
        link: s.link_user.map(str::to_string),
        acr: s.level.map(|l| l.acr().to_string()),
        binding: s.binding.to_string(),
        exp: ctx.now() + FLOW_TTL_SECS,
    };
    let mut url = url::Url::parse(&endpoint)
        .map_err(|e| UpstreamError::Invalid(format!("authorization_endpoint: {e}")))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &p.record.client_id)
            .append_pair("redirect_uri", s.redirect_uri)
            .append_pair("scope", &p.scope())
            .append_pair("state", &flow.state)
            .append_pair("code_challenge", &pkce::s256(&flow.verifier))
            .append_pair("code_challenge_method", "S256");
        if p.record.kind == UpstreamKind::Oidc {
            q.append_pair("nonce", &flow.nonce);
        }
    }
    let json = serde_json::to_vec(&flow).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let sealed = ctx
        .keys
        .kek()
        .seal(FLOW_KID, &json)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(Started {
        location: url.to_string(),
        cookie: util::b64(&sealed),
    })
}

/// The callback's query, as the provider sent it.
#[derive(Debug, Default, Deserialize)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    /// RFC 9207: the issuer of the response.
    pub iss: Option<String>,
}

/// The user as the provider named them, and where the flow goes next.
#[derive(Debug)]
pub struct Finished {
    pub identity: Identity,
    pub return_to: String,
    pub link_user: Option<String>,
    pub level: Option<Level>,
}

/// The user at the provider.
#[derive(Debug, Clone)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub name: Option<String>,
}

/// The flow the cookie carries, when it is ours, for this provider and browser, not expired,
/// and its `state` is the callback's (constant time).
fn open_flow(
    ctx: &Context,
    p: &Provider,
    cookie: Option<&str>,
    binding: &str,
    state: Option<&str>,
) -> Option<Flow> {
    let sealed = util::b64_decode(cookie?)?;
    let plain = ctx.keys.kek().open(FLOW_KID, &sealed).ok()?;
    let flow: Flow = serde_json::from_slice(&plain).ok()?;
    let state = state?;
    let same_state = flow.state.len() == state.len()
        && bool::from(flow.state.as_bytes().ct_eq(state.as_bytes()));
    (flow.p == p.id() && flow.binding == binding && flow.exp > ctx.now() && same_state)
        .then_some(flow)
}

/// Check the callback against the browser's flow, redeem the code and read who the user is.
pub async fn finish(
    ctx: &Context,
    p: &Provider,
    redirect_uri: &str,
    cookie: Option<&str>,
    binding: &str,
    cb: &Callback,
) -> Result<Finished, UpstreamError> {
    let flow =
        open_flow(ctx, p, cookie, binding, cb.state.as_deref()).ok_or(UpstreamError::Flow)?;
    if let Some(error) = &cb.error {
        let mut said: String = error
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(64)
            .collect();
        if let Some(d) = &cb.error_description {
            said.push_str(": ");
            said.extend(d.chars().filter(|c| !c.is_control()).take(200));
        }
        return Err(UpstreamError::Denied(said));
    }
    let code = cb
        .code
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| UpstreamError::Invalid("the callback carries no code".into()))?;
    let identity = match p.record.kind {
        UpstreamKind::Oidc => {
            let d = oidc::discover(ctx, p).await?;
            // RFC 9207 §2.4: an `iss` must be the provider's; a provider that says it sends
            // one must send it.
            match &cb.iss {
                Some(iss) if iss != &d.issuer => {
                    return Err(UpstreamError::Invalid(format!(
                        "the response's iss {iss:?} is not the provider's issuer"
                    )));
                }
                None if d.authorization_response_iss_parameter_supported => {
                    return Err(UpstreamError::Invalid(
                        "the response carries no iss, and the provider says it sends one".into(),
                    ));
                }
                _ => {}
            }
            let redeem = oidc::Redeem {
                code,
                verifier: &flow.verifier,
                nonce: &flow.nonce,
                redirect_uri,
            };
            oidc::redeem(ctx, p, &d, redeem).await?
        }
        UpstreamKind::Github => github::redeem(ctx, p, code, &flow.verifier, redirect_uri).await?,
    };
    Ok(Finished {
        identity,
        return_to: flow.return_to,
        link_user: flow.link,
        level: flow.acr.as_deref().and_then(Level::from_acr),
    })
}

/// Sign in as the local user the provider's user is (linked, by verified email, or
/// provisioned, as the provider's policy allows); a user with a second factor here is asked
/// for it next, as after a password.
pub async fn sign_in(
    ctx: &Context,
    p: &Provider,
    f: &Finished,
    addr: Option<std::net::IpAddr>,
    replacing: Option<&str>,
) -> Result<PasswordChecked, UpstreamError> {
    let who = ForeignUser {
        issuer: &f.identity.issuer,
        subject: &f.identity.subject,
        email: f.identity.email.as_deref(),
        email_verified: f.identity.email_verified,
        name: f.identity.name.as_deref(),
    };
    let linked = linking::local_user(ctx, &who, p.policy()).await?;
    tracing::info!(user_id = %linked.user.id, upstream = %p.id(), "signed in at an upstream provider");
    let amr = vec![AMR_FEDERATED.to_string()];
    Ok(super::after_first_factor(ctx, linked.user, amr, f.level, addr, replacing).await?)
}

/// Link the provider's user to `user_id`, who asked for it from their account page (signed
/// in recently). Refused when the identity names another user here.
pub async fn link(ctx: &Context, f: &Finished, user_id: &str) -> Result<(), UpstreamError> {
    let id = &f.identity;
    let identities = ctx.identities();
    if let Some(existing) = identities.find_identity(&id.issuer, &id.subject).await? {
        return if existing.user_id == user_id {
            Ok(())
        } else {
            Err(UpstreamError::LinkedElsewhere)
        };
    }
    let winner = identities
        .link_identity(&LinkedIdentity {
            issuer: id.issuer.clone(),
            subject: id.subject.clone(),
            user_id: user_id.to_string(),
            email: id.email.clone(),
            linked_by: LinkedBy::User,
            created_at: ctx.now(),
        })
        .await?;
    if winner != user_id {
        return Err(UpstreamError::LinkedElsewhere);
    }
    ctx.audit.record(
        Event::new(Kind::IdentityLinked)
            .user(user_id)
            .detail(serde_json::json!({ "issuer": id.issuer, "linked_by": "user" })),
    );
    Ok(())
}

/// Record a refused sign-in through a provider (never the code or tokens).
pub fn refused(ctx: &Context, provider: &str, e: &UpstreamError, addr: Option<std::net::IpAddr>) {
    tracing::info!(upstream = %provider, reason = e.reason(), error = %e, "sign-in at an upstream provider refused");
    ctx.audit.record(
        Event::new(Kind::SigninFailed)
            .ip(addr)
            .detail(serde_json::json!({
                "upstream": provider,
                "reason": e.reason(),
                "error": e.to_string(),
            })),
    );
}

/// POST a form to a provider's token endpoint, with HTTP Basic client authentication
/// (RFC 6749 §2.3.1, both parts form-encoded) or the secret in the body; the JSON answer,
/// whatever the status (an error is JSON too).
async fn token_request(
    ctx: &Context,
    p: &Provider,
    endpoint: &str,
    mut form: Vec<(&str, &str)>,
    basic: bool,
) -> Result<(u16, serde_json::Value), UpstreamError> {
    let up = &ctx.authn.upstreams;
    let url = url::Url::parse(endpoint)
        .map_err(|e| UpstreamError::Invalid(format!("token_endpoint: {e}")))?;
    up.fetcher.check_url(&url)?;
    let mut req = up
        .fetcher
        .client()
        .post(url)
        .header(http::header::ACCEPT, "application/json");
    match p.secret() {
        Some(secret) if basic => {
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            req = req.basic_auth(enc(&p.record.client_id), Some(enc(secret)));
        }
        Some(secret) => form.extend([
            ("client_id", p.record.client_id.as_str()),
            ("client_secret", secret),
        ]),
        None => form.push(("client_id", p.record.client_id.as_str())),
    }
    let body =
        serde_urlencoded::to_string(&form).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let req = req
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(body);
    let (status, _, body) = up.fetcher.send(req, MAX_DOCUMENT_BYTES).await?;
    let json = serde_json::from_slice(&body).map_err(|_| {
        UpstreamError::Invalid(format!("the token endpoint answered {status} without JSON"))
    })?;
    Ok((status, json))
}

/// GET a JSON document from a provider, with an access token when given.
async fn get_json(
    ctx: &Context,
    url: &str,
    accept: &str,
    bearer: Option<&str>,
) -> Result<serde_json::Value, UpstreamError> {
    let up = &ctx.authn.upstreams;
    let url = url::Url::parse(url).map_err(|e| UpstreamError::Invalid(format!("{url}: {e}")))?;
    up.fetcher.check_url(&url)?;
    let mut req = up
        .fetcher
        .client()
        .get(url.clone())
        .header(http::header::ACCEPT, accept);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    match up.fetcher.send(req, MAX_DOCUMENT_BYTES).await? {
        (200, _, body) => serde_json::from_slice(&body)
            .map_err(|_| UpstreamError::Invalid(format!("{url} did not answer JSON"))),
        (status, _, _) => Err(UpstreamError::Unreachable(format!(
            "{url} answered {status}"
        ))),
    }
}

/// The error a token endpoint answered, in words.
fn token_error(status: u16, json: &serde_json::Value) -> UpstreamError {
    let error = json
        .get("error")
        .and_then(|e| e.as_str())
        .unwrap_or("no error code");
    UpstreamError::Invalid(format!(
        "the token endpoint refused the code ({status}, {})",
        error
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(64)
            .collect::<String>()
    ))
}

/// How long cached provider documents live.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
const KEYS_TTL: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(kind: UpstreamKind, scopes: &[&str]) -> Provider {
        Provider {
            record: UpstreamProvider {
                id: "p".into(),
                name: "P".into(),
                kind,
                issuer: None,
                client_id: "c".into(),
                client_secret: None,
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                link_by_email: false,
                provision: true,
                authorization_endpoint: None,
                token_endpoint: None,
                userinfo_endpoint: None,
            },
        }
    }

    #[test]
    fn scopes_default_and_openid_is_always_asked() {
        assert_eq!(
            provider(UpstreamKind::Oidc, &[]).scope(),
            "openid email profile"
        );
        assert_eq!(
            provider(UpstreamKind::Oidc, &["email"]).scope(),
            "openid email"
        );
        assert_eq!(
            provider(UpstreamKind::Github, &[]).scope(),
            "read:user user:email"
        );
        assert_eq!(
            provider(UpstreamKind::Github, &["read:user"]).scope(),
            "read:user"
        );
        assert_eq!(
            provider(UpstreamKind::Github, &[]).issuer(),
            "https://github.com"
        );
    }
}
