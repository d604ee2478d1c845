//! The authorization request (OAuth 2.1 §4.1.1, RFC 8707, OpenID Connect Core §3.1.2).
//!
//! [`validate`] checks a request once, as a list of small named steps in the order that
//! decides how errors are reported: until the client and its redirect URI are known to be
//! good, errors are shown on a page; after that they go back to the client (§4.1.2.1).
//! The checked request then travels between the steps of the flow (sign-in, the consent
//! page, the decision) in one signed form ([`AuthorizationRequest::seal`], [`unseal`]), so it
//! is never parsed from raw parameters again. [`next_step`] says what the user must do next.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use url::Url;

use super::authn::{
    self,
    acr::{self, Level, Needed},
};
use super::clients::{Client, ClientSource};
use super::consent;
use super::context::Context;
use super::form::Form;
use super::grants::authorization_code;
use super::resource::{OIDC_SCOPES, Resource};
use super::scope::Scope;
use super::{dpop, pkce, policy};
use crate::error::{ErrorCode, OAuthError};
use crate::store::{Session, SignedIn, StoreError};
use crate::util;

/// How long a checked request may wait for the user to sign in and decide.
pub const PENDING_TTL_SECS: i64 = 1800;

/// Why an authorization request stops.
#[derive(Debug)]
pub enum AuthorizeError {
    /// The client or redirect URI cannot be trusted: show this on a page, never redirect.
    Page(String),
    /// Our fault (logged with a correlation id): show this on a page, as a 500.
    Internal(String),
    /// Tell the client, at its redirect URI.
    Redirect {
        redirect_uri: String,
        code: ErrorCode,
        description: String,
        state: Option<String>,
    },
}

impl AuthorizeError {
    /// A store or internal error: logged with its correlation id, shown generically.
    fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(crate::error::internal_message(e))
    }
}

/// What `prompt` asks for (OpenID Connect Core §3.1.2.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prompt {
    pub none: bool,
    pub login: bool,
    pub consent: bool,
}

/// A checked authorization request.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    pub client: Client,
    /// Where the answer goes.
    pub redirect_uri: String,
    /// The redirect URI as sent, which the token request must repeat (None if not sent).
    pub redirect_uri_sent: Option<String>,
    pub state: Option<String>,
    pub code_challenge: String,
    pub resources: Vec<Arc<Resource>>,
    pub scope: Scope,
    pub nonce: Option<String>,
    pub prompt: Prompt,
    pub max_age: Option<i64>,
    pub login_hint: Option<String>,
    /// The authentication the client asked for (`acr_values`, OpenID Connect Core
    /// §3.1.2.1): the weakest value of ours it listed.
    pub acr: Option<Level>,
    /// RFC 9449 §10: the DPoP key the code must be redeemed with.
    pub dpop_jkt: Option<String>,
    /// RFC 9396: the particular actions asked for, checked (`authorization_details::parse`).
    /// Always shown on the consent page, never approved from memory.
    pub authorization_details: Option<serde_json::Value>,
    /// May errors go back to the client's redirect URI? For a client an operator registered,
    /// yes; for one that registered itself or is a metadata document, only once the user
    /// has signed in and seen it (RFC 9700 §4.11.2: otherwise anyone could register a
    /// redirect URI and use us as an open redirector). Until then errors are pages.
    pub redirect_errors: bool,
}

/// What a request asks a user to allow: a client, resources, scopes.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    pub client_id: &'a str,
    pub resources: &'a [Arc<Resource>],
    pub scope: &'a Scope,
    /// RFC 9396 details, checked: shown in words on the consent page.
    pub details: Option<&'a serde_json::Value>,
}

impl Asked<'_> {
    /// The scopes of `resource` asked for.
    pub fn scopes_for(&self, resource: &Resource) -> Vec<String> {
        self.scope
            .tokens()
            .iter()
            .filter(|t| resource.offers(t))
            .cloned()
            .collect()
    }

    /// The OpenID Connect scopes asked for (openid, profile, email, offline_access).
    pub fn identity_scopes(&self) -> Vec<String> {
        self.scope
            .tokens()
            .iter()
            .filter(|t| OIDC_SCOPES.contains(&t.as_str()))
            .cloned()
            .collect()
    }
}

impl AuthorizationRequest {
    /// A request whose client and redirect URI are known; the rest is filled in by the
    /// following steps.
    fn with_redirect(client: Client, redirect_uri: String, sent: Option<String>) -> Self {
        Self {
            redirect_errors: is_operator_client(&client),
            client,
            redirect_uri,
            redirect_uri_sent: sent,
            state: None,
            code_challenge: String::new(),
            resources: Vec::new(),
            scope: Scope::default(),
            nonce: None,
            prompt: Prompt::default(),
            max_age: None,
            login_hint: None,
            acr: None,
            dpop_jkt: None,
            authorization_details: None,
        }
    }

    pub fn asked(&self) -> Asked<'_> {
        Asked {
            client_id: &self.client.client_id,
            resources: &self.resources,
            scope: &self.scope,
            details: self.authorization_details.as_ref(),
        }
    }

    /// An error for the client: at its redirect URI (its description kept to the characters
    /// RFC 6749 §4.1.2.1 allows) when [`Self::redirect_errors`], else on a page.
    pub fn error(&self, code: ErrorCode, description: impl Into<String>) -> AuthorizeError {
        let description = crate::error::rfc6749_text(description.into().into()).into_owned();
        if !self.redirect_errors {
            return AuthorizeError::Page(format!(
                "The application's request cannot be completed ({}): {description}. \
                 You are not sent back to it because it registered itself and you have not \
                 approved it.",
                code.as_str()
            ));
        }
        AuthorizeError::Redirect {
            redirect_uri: self.redirect_uri.clone(),
            code,
            description,
            state: self.state.clone(),
        }
    }

    fn refused(&self, e: OAuthError) -> AuthorizeError {
        if e.code == ErrorCode::ServerError {
            return AuthorizeError::Internal(e.description.into_owned());
        }
        self.error(e.code, e.description)
    }

    /// The request in the signed form it travels in between steps (a query parameter or a
    /// hidden form field): the checked values, an expiry, and a tag only this server (any
    /// replica sharing the key-encryption key) can make.
    pub fn seal(&self, ctx: &Context) -> String {
        let pending = Pending {
            exp: ctx.now() + PENDING_TTL_SECS,
            client_id: self.client.client_id.clone(),
            redirect_uri: self.redirect_uri.clone(),
            redirect_uri_sent: self.redirect_uri_sent.clone(),
            state: self.state.clone(),
            code_challenge: self.code_challenge.clone(),
            resources: self.resources.iter().map(|r| r.uri.to_string()).collect(),
            scope: self.scope.to_string(),
            nonce: self.nonce.clone(),
            prompt: self.prompt,
            max_age: self.max_age,
            login_hint: self.login_hint.clone(),
            acr: self.acr,
            dpop_jkt: self.dpop_jkt.clone(),
            authorization_details: self.authorization_details.clone(),
        };
        let text = util::b64(&serde_json::to_vec(&pending).unwrap_or_default());
        let tag = ctx.keys.kek().request_tag(&text);
        format!("{text}.{tag}")
    }

    /// The request once the user signed in for it: `prompt=login`, `max_age` and the
    /// `acr_values` asked for are satisfied by that sign-in, as far as the user could
    /// (otherwise the flow would loop); what is required is checked again.
    pub fn signed_in(mut self) -> Self {
        self.prompt.login = false;
        self.max_age = None;
        self.acr = None;
        self
    }

    /// What the request needs of the user's authentication: the server's policy, the
    /// client's `default_acr_values` and the resources' requirements must be reached;
    /// `acr_values` is asked for.
    pub fn needed(&self, ctx: &Context) -> Needed {
        let required = acr::required(
            ctx.config.signin.mfa,
            &self.client.metadata.default_acr_values,
            self.resources.iter().map(|r| r.required_acr),
        );
        Needed {
            required,
            requested: self.acr,
        }
    }
}

/// A checked request as it travels between steps.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    exp: i64,
    client_id: String,
    redirect_uri: String,
    redirect_uri_sent: Option<String>,
    state: Option<String>,
    code_challenge: String,
    resources: Vec<String>,
    scope: String,
    nonce: Option<String>,
    prompt: Prompt,
    max_age: Option<i64>,
    login_hint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    acr: Option<Level>,
    dpop_jkt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    authorization_details: Option<serde_json::Value>,
}

/// The request a step received in its signed form. The tag and expiry are checked; the
/// client and resources are looked up again (one may have been removed meanwhile), nothing
/// else is re-validated.
pub async fn unseal(ctx: &Context, sealed: &str) -> Result<AuthorizationRequest, AuthorizeError> {
    let expired = || {
        AuthorizeError::Page(
            "This sign-in took too long or its link was changed. Start again from the \
             application."
                .into(),
        )
    };
    let (text, tag) = sealed.rsplit_once('.').ok_or_else(expired)?;
    if !ctx.keys.kek().verify_request_tag(text, tag) {
        return Err(expired());
    }
    let p: Pending = util::b64_decode(text)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(expired)?;
    if p.exp <= ctx.now() {
        return Err(expired());
    }
    let client = find_client(ctx, &p.client_id).await?;
    // The client may have changed its registration since.
    if !client.metadata.redirect_uri_matches(&p.redirect_uri)
        && !client.metadata.redirect_uris.contains(&p.redirect_uri)
    {
        return Err(AuthorizeError::Page(
            "The application's redirect URI changed meanwhile. Start again from the \
             application."
                .into(),
        ));
    }
    let mut req = AuthorizationRequest::with_redirect(client, p.redirect_uri, p.redirect_uri_sent);
    req.state = p.state;
    for uri in &p.resources {
        let r = policy::resolve(ctx, uri)
            .await
            .map_err(|e| req.refused(e))?;
        req.resources.push(r);
    }
    req.code_challenge = p.code_challenge;
    req.scope = Scope::parse(&p.scope).map_err(AuthorizeError::internal)?;
    req.nonce = p.nonce;
    req.prompt = p.prompt;
    req.max_age = p.max_age;
    req.login_hint = p.login_hint;
    req.acr = p.acr;
    req.dpop_jkt = p.dpop_jkt;
    req.authorization_details = p.authorization_details;
    Ok(req)
}

/// Add response parameters to a redirect URI, keeping its own query (RFC 6749 §3.1.2).
pub fn redirect_with(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    match Url::parse(redirect_uri) {
        Ok(mut url) => {
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in params {
                    q.append_pair(k, v);
                }
            }
            url.to_string()
        }
        Err(_) => redirect_uri.to_string(),
    }
}

/// The authorization response's redirect: the code, `state`, and `iss` (RFC 9207).
pub fn code_redirect(ctx: &Context, req: &AuthorizationRequest, code: &str) -> String {
    let mut params = vec![("code", code)];
    if let Some(s) = &req.state {
        params.push(("state", s));
    }
    params.push(("iss", ctx.issuer()));
    redirect_with(&req.redirect_uri, &params)
}

/// An error response's redirect (RFC 6749 §4.1.2.1), with `iss` (RFC 9207).
pub fn error_redirect(
    ctx: &Context,
    redirect_uri: &str,
    code: ErrorCode,
    description: &str,
    state: Option<&str>,
) -> String {
    let mut params = vec![("error", code.as_str()), ("error_description", description)];
    if let Some(s) = state {
        params.push(("state", s));
    }
    params.push(("iss", ctx.issuer()));
    redirect_with(redirect_uri, &params)
}

// ---------------------------------------------------------------------------------------
// Validation, step by step.

/// Check an authorization request, in the order that decides how errors are reported.
pub async fn validate(ctx: &Context, form: &Form) -> Result<AuthorizationRequest, AuthorizeError> {
    let client = client(ctx, form).await?;
    let (redirect_uri, sent) = redirect_uri(&client, form)?;
    let mut req = AuthorizationRequest::with_redirect(client, redirect_uri, sent);
    req.state = form.get("state").map(str::to_string);
    no_request_objects(&req, form)?;
    response_type(&req, form)?;
    req.code_challenge = code_challenge(&req, form)?;
    req.resources = policy::resources_for_user(ctx, &form.all("resource"), form.get("scope"))
        .await
        .map_err(|e| req.refused(e))?;
    req.scope = policy::check_requested(&req.client, &req.resources, form.get("scope"))
        .map_err(|e| req.refused(e))?;
    openid_parameters(&mut req, form)?;
    req.dpop_jkt = dpop_jkt(&req, form)?;
    req.authorization_details = details(&req, form)?;
    Ok(req)
}

async fn find_client(ctx: &Context, client_id: &str) -> Result<Client, AuthorizeError> {
    match ctx.clients.find(client_id).await {
        Ok(Some(c)) => Ok(c),
        Ok(None) => Err(AuthorizeError::Page(format!(
            "There is no client {client_id:?}. The application may need to register again."
        ))),
        Err(super::clients::ClientLookupError::Document(e)) => Err(AuthorizeError::Page(format!(
            "The application cannot be used: {}.",
            e.public()
        ))),
        Err(super::clients::ClientLookupError::Store(e)) => Err(AuthorizeError::internal(e)),
    }
}

/// 1. The client.
async fn client(ctx: &Context, form: &Form) -> Result<Client, AuthorizeError> {
    let client_id = form
        .get("client_id")
        .ok_or_else(|| AuthorizeError::Page("The request has no client_id.".into()))?;
    find_client(ctx, client_id).await
}

/// 2. The redirect URI: exact match (loopback port aside), or the only registered one.
fn redirect_uri(client: &Client, form: &Form) -> Result<(String, Option<String>), AuthorizeError> {
    let sent = form.get("redirect_uri").map(str::to_string);
    let uri = match &sent {
        Some(r) if client.metadata.redirect_uri_matches(r) => r.clone(),
        Some(r) => {
            return Err(AuthorizeError::Page(format!(
                "The redirect URI {r:?} is not registered for this client, so you are not sent back to it."
            )));
        }
        None => match client.metadata.redirect_uris.as_slice() {
            [only] => only.clone(),
            _ => {
                return Err(AuthorizeError::Page(
                    "The request has no redirect_uri, and the client registered several.".into(),
                ));
            }
        },
    };
    Ok((uri, sent))
}

/// 3. Request objects are not supported (OpenID Connect Core §6).
fn no_request_objects(req: &AuthorizationRequest, form: &Form) -> Result<(), AuthorizeError> {
    if form.get("request").is_some() {
        return Err(req.error(
            ErrorCode::RequestNotSupported,
            "request objects are not supported",
        ));
    }
    if form.get("request_uri").is_some() {
        return Err(req.error(
            ErrorCode::RequestUriNotSupported,
            "request_uri is not supported",
        ));
    }
    Ok(())
}

/// 4. Response type and mode: the code flow only (OAuth 2.1), for a client that registered it.
fn response_type(req: &AuthorizationRequest, form: &Form) -> Result<(), AuthorizeError> {
    match form.get("response_type") {
        None => return Err(req.error(ErrorCode::InvalidRequest, "response_type is missing")),
        Some("code") => {}
        Some(other) => {
            return Err(req.error(
                ErrorCode::UnsupportedResponseType,
                format!("response_type {other:?} is not supported; use 'code'"),
            ));
        }
    }
    if form.get("response_mode").is_some_and(|m| m != "query") {
        return Err(req.error(ErrorCode::InvalidRequest, "response_mode must be 'query'"));
    }
    if !req
        .client
        .metadata
        .has_grant(authorization_code::GRANT_TYPE)
    {
        return Err(req.error(
            ErrorCode::UnauthorizedClient,
            "this client did not register the authorization_code grant",
        ));
    }
    Ok(())
}

/// 5. PKCE, S256 only.
fn code_challenge(req: &AuthorizationRequest, form: &Form) -> Result<String, AuthorizeError> {
    let invalid = |d: &str| req.error(ErrorCode::InvalidRequest, d);
    let challenge = form
        .get("code_challenge")
        .ok_or_else(|| invalid("code_challenge is required (PKCE with S256)"))?;
    if form.get("code_challenge_method") != Some("S256") {
        return Err(invalid("code_challenge_method must be S256"));
    }
    if !pkce::valid_challenge(challenge) {
        return Err(invalid(
            "code_challenge must be the base64url SHA-256 of the verifier (43 characters)",
        ));
    }
    Ok(challenge.to_string())
}

/// 8. OpenID Connect parameters, and the lengths of what we carry.
fn openid_parameters(req: &mut AuthorizationRequest, form: &Form) -> Result<(), AuthorizeError> {
    let nonce = form.get("nonce").map(str::to_string);
    if nonce.as_ref().is_some_and(|n| n.len() > 512) {
        return Err(req.error(
            ErrorCode::InvalidRequest,
            "nonce is longer than 512 characters",
        ));
    }
    if req.state.as_ref().is_some_and(|s| s.len() > 2048) {
        return Err(req.error(
            ErrorCode::InvalidRequest,
            "state is longer than 2048 characters",
        ));
    }
    let mut prompt = Prompt::default();
    for p in form
        .get("prompt")
        .unwrap_or("")
        .split(' ')
        .filter(|p| !p.is_empty())
    {
        match p {
            "none" => prompt.none = true,
            "login" | "select_account" => prompt.login = true,
            "consent" => prompt.consent = true,
            other => {
                return Err(req.error(
                    ErrorCode::InvalidRequest,
                    format!("prompt {other:?} is not supported"),
                ));
            }
        }
    }
    if prompt.none && (prompt.login || prompt.consent) {
        return Err(req.error(
            ErrorCode::InvalidRequest,
            "prompt=none cannot be combined with other prompt values",
        ));
    }
    let max_age = match form.get("max_age") {
        None => None,
        Some(v) => Some(v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            req.error(
                ErrorCode::InvalidRequest,
                "max_age must be a non-negative integer",
            )
        })?),
    };
    let login_hint = form.get("login_hint").map(str::to_string);
    if login_hint.as_ref().is_some_and(|h| h.len() > 512) {
        return Err(req.error(
            ErrorCode::InvalidRequest,
            "login_hint is longer than 512 characters",
        ));
    }
    req.nonce = nonce;
    req.prompt = prompt;
    req.max_age = max_age;
    req.login_hint = login_hint;
    req.acr = form.get("acr_values").and_then(acr::requested);
    Ok(())
}

/// 9. DPoP binding of the code (RFC 9449 §10).
fn dpop_jkt(req: &AuthorizationRequest, form: &Form) -> Result<Option<String>, AuthorizeError> {
    let jkt = form.get("dpop_jkt").map(str::to_string);
    if jkt.as_deref().is_some_and(|j| !dpop::valid_jkt(j)) {
        return Err(req.error(
            ErrorCode::InvalidRequest,
            "dpop_jkt must be the base64url SHA-256 JWK thumbprint of the DPoP key (RFC 9449 §10)",
        ));
    }
    Ok(jkt)
}

/// 10. RFC 9396 details (§2, §5), checked against the requested resources.
///
/// Their locations are filled in; a detail that does not conform is refused with
/// `invalid_authorization_details`.
fn details(
    req: &AuthorizationRequest,
    form: &Form,
) -> Result<Option<serde_json::Value>, AuthorizeError> {
    let Some(raw) = form.get("authorization_details") else {
        return Ok(None);
    };
    crate::oauth::authorization_details::parse(raw, &req.resources)
        .map(Some)
        .map_err(|e| req.refused(e))
}

// ---------------------------------------------------------------------------------------
// What happens next.

/// What a checked request needs from the user now.
#[derive(Debug)]
pub enum Next {
    /// Sign in (again), as strongly as this, then come back.
    SignIn(Level),
    /// Show the consent page.
    Consent,
    /// Done: redirect the browser here with a code.
    Redirect(String),
}

/// Decide the next step for `req` with the browser's session (if any, read with what its
/// user allowed `req`'s client): sign in when there is no session fresh enough, consent when
/// something is not yet allowed, else a code.
pub async fn next_step(
    ctx: &Context,
    req: &AuthorizationRequest,
    signed_in: Option<&SignedIn>,
) -> Result<Next, AuthorizeError> {
    let now = ctx.now();
    let fresh = |s: &&SignedIn| req.max_age.is_none_or(|m| now - s.session.auth_time <= m);
    let needed = req.needed(ctx);
    let (session, allowed) = match signed_in.filter(fresh) {
        Some(s) if !req.prompt.login => (&s.session, &s.allowed),
        _ if req.prompt.none => {
            return Err(req.error(ErrorCode::LoginRequired, "the user must sign in"));
        }
        // Who will sign in is not known yet: ask for what is required, and for what was
        // asked when users may set up a second factor (those who have one use it anyway).
        _ => {
            let reachable = if ctx.config.signin.mfa.offered() {
                Level::PhishingResistant
            } else {
                Level::OneFactor
            };
            return Ok(Next::SignIn(needed.target(reachable)));
        }
    };
    // Strong enough? (Checked against what the user could reach only when it is not.)
    let have = Level::of_session(session.acr.as_deref(), &session.amr);
    if !needed.met_by(have, Level::PhishingResistant) {
        let reachable = authn::reachable(ctx, &session.user_id)
            .await
            .map_err(AuthorizeError::internal)?;
        // A requirement can always be met with an authenticator set up at sign-in.
        let can = reachable.max(Level::MultiFactor);
        if let Some(required) = needed.required.filter(|r| *r > can) {
            let req = seen_by(ctx, req, &session.user_id).await?;
            return Err(req.error(
                ErrorCode::UnmetAuthenticationRequirements,
                format!(
                    "signing in here needs {}, which the user has not set up",
                    required.words()
                ),
            ));
        }
        if !needed.met_by(have, reachable) {
            if req.prompt.none {
                return Err(req.error(
                    ErrorCode::LoginRequired,
                    "the user must sign in again, more strongly",
                ));
            }
            return Ok(Next::SignIn(needed.target(reachable)));
        }
    }
    let missing = consent::missing(ctx, &req.asked(), allowed);
    // Details ask for particular actions: the user approves each request for them (RFC 9396
    // §3 leaves it to the server; remembering scopes says nothing about actions).
    if missing || req.prompt.consent || req.authorization_details.is_some() {
        if req.prompt.none {
            let req = seen_by(ctx, req, &session.user_id).await?;
            return Err(req.error(
                ErrorCode::ConsentRequired,
                "the user must approve this request",
            ));
        }
        return Ok(Next::Consent);
    }
    // Everything asked was approved before: the user has seen this client.
    let mut req = req.clone();
    req.redirect_errors = true;
    issue(ctx, &req, session).await
}

/// `req` with its errors redirected if the signed-in user approved this client before
/// (then they have seen it and its redirect URI; RFC 9700 §4.11.2). Asked only on the way
/// to an error, so the common path costs no query.
async fn seen_by(
    ctx: &Context,
    req: &AuthorizationRequest,
    user_id: &str,
) -> Result<AuthorizationRequest, AuthorizeError> {
    let mut req = req.clone();
    if !req.redirect_errors {
        req.redirect_errors = consent::approved_before(ctx, user_id, &req.client.client_id)
            .await
            .map_err(AuthorizeError::internal)?;
    }
    Ok(req)
}

/// The user's answer on the consent page. Approval is remembered and a code issued; a
/// denial goes back to the client as `access_denied`.
pub async fn decide(
    ctx: &Context,
    mut req: AuthorizationRequest,
    session: &Session,
    approve: bool,
) -> Result<Next, AuthorizeError> {
    // The user signed in and saw who asks: from here errors go back to the client.
    req.redirect_errors = true;
    let req = &req;
    if !approve {
        ctx.audit.record(
            crate::audit::Event::new(crate::audit::Kind::ConsentDenied)
                .client(&req.client.client_id)
                .user(&session.user_id),
        );
        return Err(req.error(ErrorCode::AccessDenied, "the user denied the request"));
    }
    consent::save(ctx, &session.user_id, &req.asked())
        .await
        .map_err(AuthorizeError::internal)?;
    tracing::info!(client_id = %req.client.client_id, user_id = %session.user_id, "consent given");
    issue(ctx, req, session).await
}

async fn issue(
    ctx: &Context,
    req: &AuthorizationRequest,
    session: &Session,
) -> Result<Next, AuthorizeError> {
    let code = authorization_code::issue_code(ctx, req, session)
        .await
        .map_err(|e| req.refused(e))?;
    Ok(Next::Redirect(code_redirect(ctx, req, &code)))
}

/// Did an operator register this client? Only such clients get errors redirected before
/// the user has seen them (RFC 9700 §4.11.2).
pub fn is_operator_client(client: &Client) -> bool {
    matches!(
        client.source,
        ClientSource::Stored(crate::store::ClientKind::Static)
    )
}

impl From<StoreError> for AuthorizeError {
    fn from(e: StoreError) -> Self {
        Self::internal(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_keeps_the_clients_query() {
        assert_eq!(
            redirect_with(
                "https://a.example/cb?x=1",
                &[("code", "c d"), ("state", "s")]
            ),
            "https://a.example/cb?x=1&code=c+d&state=s"
        );
        assert_eq!(
            redirect_with("com.example.app:/cb", &[("code", "c")]),
            "com.example.app:/cb?code=c"
        );
    }

    #[test]
    fn the_carried_form_round_trips_its_fields() {
        let p = Pending {
            exp: 10,
            client_id: "c".into(),
            redirect_uri: "http://127.0.0.1/cb".into(),
            redirect_uri_sent: None,
            state: Some("s t".into()),
            code_challenge: "x".into(),
            resources: vec!["https://r.example".into()],
            scope: "a b".into(),
            nonce: None,
            prompt: Prompt {
                none: false,
                login: true,
                consent: false,
            },
            max_age: Some(0),
            login_hint: None,
            acr: Some(Level::MultiFactor),
            dpop_jkt: None,
            authorization_details: Some(serde_json::json!([{"type": "mcp_tool_call"}])),
        };
        let text = serde_json::to_string(&p).expect("json");
        let back: Pending = serde_json::from_str(&text).expect("back");
        assert_eq!(back.state.as_deref(), Some("s t"));
        assert_eq!(back.authorization_details, p.authorization_details);
        assert!(back.prompt.login);
        assert_eq!(back.acr, Some(Level::MultiFactor));
        assert_eq!(back.max_age, Some(0));
    }

    /// Property tests (README: Fuzzing).
    mod fuzz {
        use proptest::prelude::*;

        use super::*;
        use crate::fuzz::{config, nasty_string};
        use crate::oauth::redirect_uri::RedirectUri;

        proptest! {
            #![proptest_config(config())]

            /// Response parameters (a client's `state`, a description) of any text reach the
            /// client unchanged, after the registered URI's own query.
            #[test]
            fn response_parameters_reach_the_client_unchanged(
                uri in crate::fuzz::uri_like(),
                state in nasty_string(),
                description in nasty_string(),
            ) {
                let Ok(registered) = RedirectUri::parse(&uri) else { return Ok(()) };
                let params = [("error", "invalid_request"), ("error_description", description.as_str()), ("state", state.as_str())];
                let out = Url::parse(&redirect_with(registered.as_str(), &params))?;
                let pairs: Vec<(String, String)> = out.query_pairs().into_owned().collect();
                let own: Vec<(String, String)> = registered.url().query_pairs().into_owned().collect();
                prop_assert_eq!(&pairs[..own.len()], &own[..]);
                let added: Vec<(&str, &str)> = pairs[own.len()..].iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                prop_assert_eq!(added, params.to_vec());
                prop_assert_eq!((out.scheme(), out.host(), out.path()), (registered.url().scheme(), registered.url().host(), registered.url().path()));
            }
        }
    }
}
