//! The authorization request (OAuth 2.1 §4.1.1, RFC 8707, OpenID Connect Core §3.1.2), as a
//! sequence of small checks. Until the client and its redirect URI are known to be good,
//! errors are shown on a page; after that they go back to the client (§4.1.2.1).

use url::Url;

use super::clients::{Client, ClientSource};
use super::form::Form;
use super::grants::GrantType;
use super::resource::{OIDC_SCOPES, Resource, ResourceUri};
use super::scope::Scope;
use super::{dpop, pkce};
use crate::error::ErrorCode;
use crate::startup::AppState;
use crate::store::ClientKind;

/// Why an authorization request stops.
#[derive(Debug)]
pub enum AuthorizeError {
    /// The client or redirect URI cannot be trusted: show this on a page, never redirect.
    Page(String),
    /// Tell the client, at its redirect URI.
    Redirect {
        redirect_uri: String,
        code: ErrorCode,
        description: String,
        state: Option<String>,
    },
}

/// What `prompt` asks for (OpenID Connect Core §3.1.2.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
    pub resources: Vec<Resource>,
    pub scope: Scope,
    pub nonce: Option<String>,
    pub prompt: Prompt,
    pub max_age: Option<i64>,
    pub login_hint: Option<String>,
    /// RFC 9449 §10: the DPoP key the code must be redeemed with.
    pub dpop_jkt: Option<String>,
}

/// What a request asks a user to allow: a client, resources, scopes.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    pub client_id: &'a str,
    pub resources: &'a [Resource],
    pub scope: &'a Scope,
}

impl Asked<'_> {
    /// The scopes of `resource` asked for.
    pub fn scopes_for(&self, resource: &Resource) -> Vec<String> {
        self.scope
            .tokens()
            .iter()
            .filter(|t| resource.scopes.iter().any(|s| &s.name == *t))
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
    pub fn asked(&self) -> Asked<'_> {
        Asked {
            client_id: &self.client.client_id,
            resources: &self.resources,
            scope: &self.scope,
        }
    }

    pub fn error(&self, code: ErrorCode, description: impl Into<String>) -> AuthorizeError {
        AuthorizeError::Redirect {
            redirect_uri: self.redirect_uri.clone(),
            code,
            description: description.into(),
            state: self.state.clone(),
        }
    }
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

/// Check an authorization request, in the order that decides how errors are reported.
pub async fn validate(
    state: &AppState,
    form: &Form,
) -> Result<AuthorizationRequest, AuthorizeError> {
    let page = |s: String| AuthorizeError::Page(s);

    // 1. The client.
    let client_id = form
        .get("client_id")
        .ok_or_else(|| page("The request has no client_id.".into()))?;
    let client = match state.clients.find(client_id).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Err(page(format!(
                "There is no client {client_id:?}. The application may need to register again."
            )));
        }
        Err(e) => return Err(page(format!("The client could not be loaded: {e}."))),
    };

    // 2. The redirect URI: exact match (loopback port aside), or the only registered one.
    let sent = form.get("redirect_uri").map(str::to_string);
    let redirect_uri = match &sent {
        Some(r) if client.metadata.redirect_uri_matches(r) => r.clone(),
        Some(r) => {
            return Err(page(format!(
                "The redirect URI {r:?} is not registered for this client, so you are not sent back to it."
            )));
        }
        None => match client.metadata.redirect_uris.as_slice() {
            [only] => only.clone(),
            _ => {
                return Err(page(
                    "The request has no redirect_uri, and the client registered several.".into(),
                ));
            }
        },
    };
    let state_param = form.get("state").map(str::to_string);
    let partial = AuthorizationRequest {
        client,
        redirect_uri,
        redirect_uri_sent: sent,
        state: state_param,
        code_challenge: String::new(),
        resources: Vec::new(),
        scope: Scope::default(),
        nonce: None,
        prompt: Prompt::default(),
        max_age: None,
        login_hint: None,
        dpop_jkt: None,
    };
    let invalid = |d: &str| partial.error(ErrorCode::InvalidRequest, d);

    // 3. Request objects are not supported (OpenID Connect Core §6).
    if form.get("request").is_some() {
        return Err(partial.error(
            ErrorCode::RequestNotSupported,
            "request objects are not supported",
        ));
    }
    if form.get("request_uri").is_some() {
        return Err(partial.error(
            ErrorCode::RequestUriNotSupported,
            "request_uri is not supported",
        ));
    }

    // 4. Response type and mode: the code flow only (OAuth 2.1).
    match form.get("response_type") {
        None => return Err(invalid("response_type is missing")),
        Some("code") => {}
        Some(other) => {
            return Err(partial.error(
                ErrorCode::UnsupportedResponseType,
                format!("response_type {other:?} is not supported; use 'code'"),
            ));
        }
    }
    if form.get("response_mode").is_some_and(|m| m != "query") {
        return Err(invalid("response_mode must be 'query'"));
    }
    if !partial
        .client
        .metadata
        .grant_types
        .contains(&GrantType::AuthorizationCode)
    {
        return Err(partial.error(
            ErrorCode::UnauthorizedClient,
            "this client did not register the authorization_code grant",
        ));
    }

    // 5. PKCE, S256 only.
    let code_challenge = form
        .get("code_challenge")
        .ok_or_else(|| invalid("code_challenge is required (PKCE with S256)"))?;
    if form.get("code_challenge_method") != Some("S256") {
        return Err(invalid("code_challenge_method must be S256"));
    }
    if !pkce::valid_challenge(code_challenge) {
        return Err(invalid(
            "code_challenge must be the base64url SHA-256 of the verifier (43 characters)",
        ));
    }

    // 6. Resources (RFC 8707), with the documented default.
    let resources = requested_resources(state, &form.all("resource"))
        .await
        .map_err(|(code, d)| partial.error(code, d))?;

    // 7. Scopes: OpenID Connect scopes, or scopes of a requested resource.
    let scope = check_scope(&partial.client, &resources, form.get("scope"))
        .map_err(|(code, d)| partial.error(code, d))?;

    // 8. OpenID Connect parameters.
    let nonce = form.get("nonce").map(str::to_string);
    if nonce.as_ref().is_some_and(|n| n.len() > 512) {
        return Err(invalid("nonce is longer than 512 characters"));
    }
    if partial.state.as_ref().is_some_and(|s| s.len() > 2048) {
        return Err(invalid("state is longer than 2048 characters"));
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
            other => return Err(invalid(&format!("prompt {other:?} is not supported"))),
        }
    }
    if prompt.none && (prompt.login || prompt.consent) {
        return Err(invalid(
            "prompt=none cannot be combined with other prompt values",
        ));
    }
    let max_age = match form.get("max_age") {
        None => None,
        Some(v) => Some(
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| invalid("max_age must be a non-negative integer"))?,
        ),
    };

    // 9. DPoP binding of the code (RFC 9449 §10).
    let dpop_jkt = form.get("dpop_jkt").map(str::to_string);
    if dpop_jkt.as_deref().is_some_and(|j| !dpop::valid_jkt(j)) {
        return Err(invalid(
            "dpop_jkt must be the base64url SHA-256 JWK thumbprint of the DPoP key (RFC 9449 §10)",
        ));
    }

    Ok(AuthorizationRequest {
        dpop_jkt,
        code_challenge: code_challenge.to_string(),
        resources,
        scope,
        nonce,
        prompt,
        max_age,
        login_hint: form.get("login_hint").map(str::to_string),
        ..partial
    })
}

/// Check requested scopes: each is an OpenID Connect scope or a scope of one of `resources`,
/// and, for a client an operator registered with a `scope`, within that scope.
///
/// The `scope` a client asserts about itself (dynamic registration, a metadata document) is no
/// limit here: RFC 7591 §2 leaves its meaning to the service, anyone may register again with a
/// wider one, and MCP clients register with the scope of the first challenge and later step up
/// to the wider scope of a 403 `insufficient_scope` challenge (MCP authorization, "Step-Up
/// Authorization Flow"); the official SDKs do not register again for that. What such a client
/// gets is bounded by the resource's scopes and the user's consent.
pub fn check_scope(
    client: &Client,
    resources: &[Resource],
    requested: Option<&str>,
) -> Result<Scope, (ErrorCode, String)> {
    let invalid = |d: String| (ErrorCode::InvalidScope, d);
    let scope = Scope::parse(requested.unwrap_or("")).map_err(|e| invalid(format!("scope {e}")))?;
    let registered = client
        .metadata
        .scope
        .as_deref()
        .filter(|_| client.source == ClientSource::Stored(ClientKind::Static))
        .map(Scope::parse);
    for t in scope.tokens() {
        if OIDC_SCOPES.contains(&t.as_str()) {
            continue;
        }
        if !resources
            .iter()
            .any(|r| r.scopes.iter().any(|s| &s.name == t))
        {
            return Err(invalid(format!(
                "{t} is not a scope of the requested resource"
            )));
        }
        if let Some(Ok(reg)) = &registered
            && !reg.contains(t)
        {
            return Err(invalid(format!(
                "this client did not register the scope {t}"
            )));
        }
    }
    Ok(scope)
}

/// The registered resources named by `resource` parameters, or the default: the configured
/// `default_resource`, else the only registered resource.
pub async fn requested_resources(
    state: &AppState,
    requested: &[&str],
) -> Result<Vec<Resource>, (ErrorCode, String)> {
    let target = |d: String| (ErrorCode::InvalidTarget, d);
    let internal = |e: crate::store::StoreError| {
        tracing::error!(error = %e, "loading resources");
        (
            ErrorCode::ServerError,
            "the resources could not be loaded".to_string(),
        )
    };
    if requested.is_empty() {
        if let Some(d) = &state.config.default_resource {
            let uri = ResourceUri::parse(d).map_err(|e| target(format!("default_resource {e}")))?;
            let r = state.resources.get(&uri).await.map_err(internal)?;
            return r
                .map(|r| vec![(*r).clone()])
                .ok_or_else(|| target(format!("the default resource {uri} is not registered")));
        }
        let admin = crate::manage::admin_resource_uri(&state.issuer);
        let mut all = state.store.list_resources().await.map_err(internal)?;
        all.retain(|r| r.uri.as_str() != admin);
        return match <[Resource; 1]>::try_from(all) {
            Ok([one]) => Ok(vec![one]),
            Err(_) => Err(target(
                "resource is required: name the resource (RFC 8707)".into(),
            )),
        };
    }
    let mut out: Vec<Resource> = Vec::new();
    for raw in requested {
        let uri = ResourceUri::parse(raw).map_err(|e| target(format!("resource {e}")))?;
        let r = state
            .resources
            .get(&uri)
            .await
            .map_err(internal)?
            .ok_or_else(|| target(format!("{uri} is not a registered resource")))?;
        // The admin API takes only tokens its clients get for themselves (client
        // credentials); a user cannot delegate administration to an agent.
        if r.uri.as_str() == crate::manage::admin_resource_uri(&state.issuer) {
            return Err(target(format!(
                "{uri} is the admin API: it is not available through user authorization"
            )));
        }
        if !out.iter().any(|o| o.uri == r.uri) {
            out.push((*r).clone());
        }
    }
    Ok(out)
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

    fn client(source: ClientSource, scope: &str) -> Client {
        use crate::oauth::client_metadata::{Origin, RawClientMetadata, validate};
        let raw = RawClientMetadata {
            redirect_uris: Some(vec!["http://127.0.0.1/cb".into()]),
            token_endpoint_auth_method: Some("none".into()),
            scope: Some(scope.into()),
            ..Default::default()
        };
        Client {
            client_id: "c".into(),
            source,
            metadata: std::sync::Arc::new(validate(raw, Origin::Operator).unwrap()),
            secret_hash: None,
            last_used_at: None,
        }
    }

    #[test]
    fn only_an_operators_registered_scope_limits_requests() {
        let notes = Resource::new(
            "https://notes.example/mcp",
            "Notes",
            vec![
                crate::oauth::resource::ScopeDef::parse("notes:read").unwrap(),
                crate::oauth::resource::ScopeDef::parse("notes:write").unwrap(),
            ],
            0,
        )
        .unwrap();
        let wider = Some("notes:read notes:write");
        // An MCP client registers with the first challenge's scope and steps up later.
        for source in [
            ClientSource::Stored(ClientKind::Dynamic),
            ClientSource::MetadataDocument,
        ] {
            let c = client(source, "notes:read");
            let got = check_scope(&c, std::slice::from_ref(&notes), wider).unwrap();
            assert!(got.contains("notes:write"));
        }
        let operator = client(ClientSource::Stored(ClientKind::Static), "notes:read");
        let (code, why) = check_scope(&operator, std::slice::from_ref(&notes), wider).unwrap_err();
        assert_eq!(code, ErrorCode::InvalidScope);
        assert!(why.contains("notes:write"), "{why}");
        // Never beyond what the resource offers, whoever registered the client.
        let dynamic = client(ClientSource::Stored(ClientKind::Dynamic), "notes:read");
        let (code, _) =
            check_scope(&dynamic, std::slice::from_ref(&notes), Some("notes:admin")).unwrap_err();
        assert_eq!(code, ErrorCode::InvalidScope);
    }
}
