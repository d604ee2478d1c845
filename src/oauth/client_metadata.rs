//! Client metadata (RFC 7591 §2): parsing with errors that name the field, and the rules
//! that registered clients and Client ID Metadata Documents share.

use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::authn::acr;
use super::grants::{GrantRegistry, authorization_code, ciba, client_credentials};
use super::redirect_uri::{RedirectUri, is_loopback_host};
use super::scope::Scope;
use crate::config::RegistrationConfig;
use crate::error::OAuthError;
pub use crate::store::{ApplicationType, AuthMethod, ClientMetadata};

/// Largest metadata body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
const MAX_REDIRECT_URIS: usize = 20;
const MAX_TEXT: usize = 200;

/// Metadata as a client sent it. Unknown fields are ignored (RFC 7591 §2); a field of the
/// wrong type is an error that names it.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct RawClientMetadata {
    pub redirect_uris: Option<Vec<String>>,
    pub token_endpoint_auth_method: Option<String>,
    /// OpenID Connect RP Metadata Choices §2: every method the client can use, instead of (or
    /// besides) one `token_endpoint_auth_method`. Agents' metadata documents list e.g.
    /// `["none", "private_key_jwt"]`.
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    pub grant_types: Option<Vec<String>>,
    pub response_types: Option<Vec<String>>,
    pub client_name: Option<String>,
    pub client_uri: Option<String>,
    pub logo_uri: Option<String>,
    pub tos_uri: Option<String>,
    pub policy_uri: Option<String>,
    pub scope: Option<String>,
    pub contacts: Option<Vec<String>>,
    pub jwks_uri: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<Value>,
    pub software_id: Option<String>,
    pub software_version: Option<String>,
    /// `web` or `native`.
    pub application_type: Option<String>,
    /// RFC 9449 §5.2: the client always uses DPoP at the token endpoint.
    pub dpop_bound_access_tokens: Option<bool>,
    /// OpenID Connect Dynamic Client Registration §2: the authentication context classes
    /// the client's authorization requests need when they name none (`acr_values`). Here a
    /// floor: every sign-in for the client reaches the weakest value listed.
    pub default_acr_values: Option<Vec<String>>,
    /// OpenID Connect CIBA Core §4: how a CIBA client gets its tokens; only `poll` here.
    pub backchannel_token_delivery_mode: Option<String>,
    /// CIBA Core §4, for the ping and push modes: refused (poll only).
    pub backchannel_client_notification_endpoint: Option<String>,
    /// CIBA Core §4: signed authentication requests: refused (not supported).
    pub backchannel_authentication_request_signing_alg: Option<String>,
    /// CIBA Core §4: refused when true (`backchannel_user_code_parameter_supported` is false).
    pub backchannel_user_code_parameter: Option<bool>,
    /// Present in documents (must equal their URL) and in RFC 7592 updates.
    pub client_id: Option<String>,
    /// Present only in RFC 7592 updates (must equal the current secret).
    pub client_secret: Option<String>,
    // Server-issued fields a client must not send back (RFC 7592 §2.2) and that a
    // metadata document must not contain.
    #[schema(ignore)]
    pub client_secret_expires_at: Option<Value>,
    #[schema(ignore)]
    pub client_id_issued_at: Option<Value>,
    #[schema(ignore)]
    pub registration_access_token: Option<Value>,
    #[schema(ignore)]
    pub registration_client_uri: Option<Value>,
}

impl RawClientMetadata {
    /// Parse a JSON body. Errors say which field is wrong.
    pub fn from_json(bytes: &[u8]) -> Result<Self, OAuthError> {
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(OAuthError::invalid_client_metadata(
                "the body must be a JSON object of client metadata",
            ));
        }
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                OAuthError::invalid_client_metadata(format!("the body is not valid JSON: {inner}"))
            } else if path == "." {
                OAuthError::invalid_client_metadata(format!(
                    "the body must be a JSON object of client metadata: {inner}"
                ))
            } else {
                OAuthError::invalid_client_metadata(format!("{path}: {inner}"))
            }
        })
    }
}

/// The protocol's rules about a stored client's metadata (the record is the store's).
impl ClientMetadata {
    /// Does `requested` match one of the registered redirect URIs?
    pub fn redirect_uri_matches(&self, requested: &str) -> bool {
        self.redirect_uris.iter().any(|r| {
            RedirectUri::parse(r)
                .map(|r| r.matches(requested))
                .unwrap_or(false)
        })
    }
}

/// Where metadata comes from; the rules differ a little.
#[derive(Debug, Clone, Copy)]
pub enum Origin<'a> {
    /// `POST /register` or an RFC 7592 update, under the registration policy.
    Registration(&'a RegistrationConfig),
    /// A Client ID Metadata Document fetched from `url`.
    Document { url: &'a str },
    /// An operator (CLI, admin API): the registration policy does not apply.
    Operator,
}

fn bad(field: &str, why: impl std::fmt::Display) -> OAuthError {
    OAuthError::invalid_client_metadata(format!("{field} {why}"))
}

/// Grant and response types (RFC 7591 §2.1). A registration naming a grant this server does
/// not offer is refused, so its author learns at once; a metadata document is published for
/// many servers, so such grants (and response types other than `code`) are dropped instead.
fn grant_and_response_types(
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
    is_document: bool,
    grants: &GrantRegistry,
) -> Result<(Vec<String>, Vec<String>), OAuthError> {
    let grant_types = match grant_types {
        None => vec![authorization_code::GRANT_TYPE.to_string()],
        Some(list) if list.is_empty() => return Err(bad("grant_types", "must not be empty")),
        Some(list) => {
            let mut out: Vec<String> = Vec::new();
            for g in list {
                match grants.check_registrable(&g) {
                    Ok(()) if !out.contains(&g) => out.push(g),
                    Ok(()) => {}
                    Err(_) if is_document => {}
                    Err(e) => return Err(bad("grant_types", e)),
                }
            }
            if out.is_empty() {
                return Err(bad(
                    "grant_types",
                    "lists no grant type this server offers (it offers authorization_code)",
                ));
            }
            out
        }
    };
    let uses_code = grant_types
        .iter()
        .any(|g| g == authorization_code::GRANT_TYPE);
    let response_types = match response_types {
        None if uses_code => vec!["code".to_string()],
        None => Vec::new(),
        Some(_) if is_document => {
            if uses_code {
                vec!["code".to_string()]
            } else {
                Vec::new()
            }
        }
        Some(list) => {
            for r in &list {
                if r != "code" {
                    return Err(bad(
                        "response_types",
                        format!("contains '{r}'; only 'code' is supported (OAuth 2.1)"),
                    ));
                }
            }
            let mut list = list;
            list.dedup();
            list
        }
    };
    if uses_code != response_types.iter().any(|r| r == "code") {
        return Err(bad(
            "response_types",
            "must contain 'code' exactly when grant_types contains 'authorization_code' \
             (RFC 7591 §2.1)",
        ));
    }
    Ok((grant_types, response_types))
}

/// Redirect URIs and the application type they imply (OpenID Connect Registration §2, MCP
/// SEP-837): `native` apps may use loopback http and private-use schemes (`cursor://…`,
/// RFC 8252 §7), `web` apps https only. Without `application_type` the type is inferred from
/// the redirect URIs; the omission alone is never a reason to refuse.
fn check_redirect_uris(
    redirect_uris: &[String],
    uses_code: bool,
    application_type: Option<String>,
    origin: Origin<'_>,
) -> Result<ApplicationType, OAuthError> {
    if uses_code && redirect_uris.is_empty() {
        return Err(OAuthError::invalid_redirect_uri(
            "redirect_uris is required for the authorization_code grant",
        ));
    }
    if redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(OAuthError::invalid_redirect_uri(format!(
            "redirect_uris has more than {MAX_REDIRECT_URIS} entries"
        )));
    }
    let declared = match application_type.as_deref() {
        None => None,
        Some("web") => Some(ApplicationType::Web),
        Some("native") => Some(ApplicationType::Native),
        Some(other) => {
            return Err(bad(
                "application_type",
                format!("'{other}' is not 'web' or 'native'"),
            ));
        }
    };
    let mut native_only = false;
    for (i, r) in redirect_uris.iter().enumerate() {
        let parsed = RedirectUri::parse(r)
            .map_err(|e| OAuthError::invalid_redirect_uri(format!("redirect_uris[{i}] {e}")))?;
        if let Origin::Registration(policy) = origin {
            check_redirect_policy(&parsed, policy)
                .map_err(|e| OAuthError::invalid_redirect_uri(format!("redirect_uris[{i}] {e}")))?;
        }
        let https = parsed.url().scheme() == "https";
        if !https && declared == Some(ApplicationType::Web) {
            return Err(OAuthError::invalid_redirect_uri(format!(
                "redirect_uris[{i}] is not https, which a web application must use; a native \
                 app (loopback or private-use scheme redirect) registers with \
                 application_type 'native'"
            )));
        }
        native_only |= !https;
    }
    Ok(match declared {
        Some(t) => t,
        None if native_only => ApplicationType::Native,
        None => ApplicationType::Web,
    })
}

/// How the client authenticates at the token endpoint: one `token_endpoint_auth_method`
/// (RFC 7591 §2) and, when the client lists them (OpenID Connect RP Metadata Choices §2),
/// every method it may use. Listed methods this server does not implement, or that the
/// client cannot use here (a secret in a document, `private_key_jwt` without keys), are
/// dropped. Without a single method, a public client stays public when it lists `none`;
/// otherwise the client's first usable choice is taken. Returns the method and the full
/// list (empty when the client listed none).
fn auth_methods(
    method: Option<&str>,
    listed: Option<Vec<String>>,
    is_document: bool,
    has_keys: bool,
) -> Result<(AuthMethod, Vec<AuthMethod>), OAuthError> {
    let usable = |m: &AuthMethod| {
        !(is_document && m.uses_secret()) && (*m != AuthMethod::PrivateKeyJwt || has_keys)
    };
    let mut choices: Vec<AuthMethod> = Vec::new();
    for m in listed.iter().flatten() {
        if let Ok(m) = AuthMethod::parse(m)
            && usable(&m)
            && !choices.contains(&m)
        {
            choices.push(m);
        }
    }
    let auth = match method {
        Some(m) => AuthMethod::parse(m).map_err(|e| bad("token_endpoint_auth_method", e))?,
        None if choices.contains(&AuthMethod::None) => AuthMethod::None,
        None if !choices.is_empty() => choices[0],
        None if listed.as_ref().is_some_and(|l| !l.is_empty()) => {
            return Err(bad(
                "token_endpoint_auth_methods_supported",
                format!(
                    "lists no method this server can check for this client (it supports {}; \
                     private_key_jwt needs jwks or jwks_uri; a metadata document cannot hold \
                     a secret)",
                    AuthMethod::ALL.map(AuthMethod::as_str).join(", ")
                ),
            ));
        }
        // A document cannot hold a secret, so its default is a public client.
        None if is_document => AuthMethod::None,
        // RFC 7591 §2: the default is client_secret_basic.
        None => AuthMethod::ClientSecretBasic,
    };
    if is_document && auth.uses_secret() {
        return Err(bad(
            "token_endpoint_auth_method",
            format!(
                "'{}' needs a shared secret, which a client metadata document cannot hold; \
                 use 'none' or 'private_key_jwt'",
                auth.as_str()
            ),
        ));
    }
    if auth == AuthMethod::PrivateKeyJwt && !has_keys {
        return Err(bad(
            "token_endpoint_auth_method",
            "'private_key_jwt' needs the client's keys in jwks or jwks_uri",
        ));
    }
    // A secret is issued only to a client whose own method is a secret one.
    choices.retain(|m| !m.uses_secret() || auth.uses_secret());
    if choices.is_empty() {
        return Ok((auth, Vec::new()));
    }
    choices.retain(|m| *m != auth);
    choices.insert(0, auth);
    Ok((auth, choices))
}

/// Check metadata and fill in the RFC 7591 defaults.
pub fn validate(
    raw: RawClientMetadata,
    origin: Origin<'_>,
    grants: &GrantRegistry,
) -> Result<ClientMetadata, OAuthError> {
    let is_document = matches!(origin, Origin::Document { .. });
    if let Origin::Document { url } = origin {
        match raw.client_id.as_deref() {
            Some(id) if id == url => {}
            Some(id) => {
                return Err(bad(
                    "client_id",
                    format!("{id:?} does not equal the document URL {url:?}"),
                ));
            }
            None => return Err(bad("client_id", "is missing from the metadata document")),
        }
        for (field, present) in [
            ("client_secret", raw.client_secret.is_some()),
            (
                "client_secret_expires_at",
                raw.client_secret_expires_at.is_some(),
            ),
        ] {
            if present {
                return Err(bad(field, "must not appear in a client metadata document"));
            }
        }
    }

    let (grant_types, response_types) =
        grant_and_response_types(raw.grant_types, raw.response_types, is_document, grants)?;
    let uses_code = grant_types
        .iter()
        .any(|g| g == authorization_code::GRANT_TYPE);
    let redirect_uris = raw.redirect_uris.unwrap_or_default();
    let application_type =
        check_redirect_uris(&redirect_uris, uses_code, raw.application_type, origin)?;

    if raw.jwks.is_some() && raw.jwks_uri.is_some() {
        return Err(bad(
            "jwks",
            "and jwks_uri must not both be present (RFC 7591 §2)",
        ));
    }
    if let Some(jwks) = &raw.jwks {
        check_jwks(jwks)?;
    }
    let has_keys = raw.jwks.is_some() || raw.jwks_uri.is_some();
    let (auth, also_accepted) = auth_methods(
        raw.token_endpoint_auth_method.as_deref(),
        raw.token_endpoint_auth_methods_supported,
        is_document,
        has_keys,
    )?;
    // A client that may act without authenticating never gets tokens for itself.
    let public = auth == AuthMethod::None || also_accepted.contains(&AuthMethod::None);
    let mut grant_types = grant_types;
    if public
        && grant_types
            .iter()
            .any(|g| g == client_credentials::GRANT_TYPE)
    {
        if !is_document {
            return Err(bad(
                "grant_types",
                "contains 'client_credentials', which needs an authenticated client; \
                 this client may use token_endpoint_auth_method 'none'",
            ));
        }
        // A public document's client cannot use it: dropped, not a reason to refuse.
        grant_types.retain(|g| g != client_credentials::GRANT_TYPE);
        if grant_types.is_empty() {
            return Err(bad(
                "grant_types",
                "lists no grant type a public client can use here (authorization_code)",
            ));
        }
    }

    let backchannel_token_delivery_mode = backchannel(
        &grant_types,
        public,
        raw.backchannel_token_delivery_mode,
        raw.backchannel_client_notification_endpoint.is_some(),
        raw.backchannel_authentication_request_signing_alg.is_some(),
        raw.backchannel_user_code_parameter.unwrap_or(false),
    )?;

    let scope = match raw.scope {
        None => None,
        Some(s) => {
            let parsed = Scope::parse(&s).map_err(|e| bad("scope", e))?;
            (!parsed.is_empty()).then(|| parsed.to_string())
        }
    };

    let contacts = raw.contacts.unwrap_or_default();
    if contacts.len() > 10 || contacts.iter().any(|c| !plain_text_ok(c)) {
        return Err(bad(
            "contacts",
            format!("must be at most 10 entries of 1 to {MAX_TEXT} printable characters"),
        ));
    }

    Ok(ClientMetadata {
        redirect_uris,
        token_endpoint_auth_method: auth,
        token_endpoint_auth_methods_supported: also_accepted,
        grant_types,
        response_types,
        application_type,
        client_name: text_field("client_name", raw.client_name)?,
        client_uri: web_uri_field("client_uri", raw.client_uri)?,
        logo_uri: web_uri_field("logo_uri", raw.logo_uri)?,
        tos_uri: web_uri_field("tos_uri", raw.tos_uri)?,
        policy_uri: web_uri_field("policy_uri", raw.policy_uri)?,
        scope,
        contacts,
        jwks_uri: web_uri_field("jwks_uri", raw.jwks_uri)?,
        jwks: raw.jwks,
        software_id: text_field("software_id", raw.software_id)?,
        software_version: text_field("software_version", raw.software_version)?,
        may_introspect: false,
        admin: false,
        dpop_bound_access_tokens: raw.dpop_bound_access_tokens.unwrap_or(false),
        default_acr_values: default_acr_values(raw.default_acr_values)?,
        backchannel_token_delivery_mode,
    })
}

/// CIBA registration (CIBA Core §4): the grant needs an authenticated client, and only poll
/// mode is offered, without signed requests or user codes. Its mode is kept, `poll` when the
/// client registered the grant without naming one.
fn backchannel(
    grant_types: &[String],
    public: bool,
    mode: Option<String>,
    notification_endpoint: bool,
    signing_alg: bool,
    user_code: bool,
) -> Result<Option<String>, OAuthError> {
    let field = "backchannel_token_delivery_mode";
    if let Some(m) = mode.as_deref().filter(|m| *m != "poll") {
        return Err(bad(
            field,
            format!("{m:?} is not offered: this server delivers CIBA tokens in poll mode only"),
        ));
    }
    if notification_endpoint {
        return Err(bad(
            "backchannel_client_notification_endpoint",
            "is for the ping and push modes; this server offers poll mode only",
        ));
    }
    if signing_alg {
        return Err(bad(
            "backchannel_authentication_request_signing_alg",
            "is not supported: send backchannel authentication requests unsigned",
        ));
    }
    if user_code {
        return Err(bad(
            "backchannel_user_code_parameter",
            "is not supported (backchannel_user_code_parameter_supported is false)",
        ));
    }
    if !grant_types.iter().any(|g| g == ciba::GRANT_TYPE) {
        return Ok(None);
    }
    if public {
        return Err(bad(
            "grant_types",
            "contains the CIBA grant, which needs an authenticated client; this client may \
             use token_endpoint_auth_method 'none'",
        ));
    }
    Ok(Some("poll".to_string()))
}

/// `default_acr_values`: values this server issues only (one it does not know would
/// silently require nothing), without repeats.
fn default_acr_values(v: Option<Vec<String>>) -> Result<Vec<String>, OAuthError> {
    let mut out: Vec<String> = Vec::new();
    for value in v.unwrap_or_default() {
        if !acr::SUPPORTED.contains(&value.as_str()) {
            return Err(bad(
                "default_acr_values",
                format!(
                    "lists {value:?}, which this server does not issue (it issues {})",
                    acr::SUPPORTED.join(", ")
                ),
            ));
        }
        if !out.contains(&value) {
            out.push(value);
        }
    }
    Ok(out)
}

fn plain_text_ok(s: &str) -> bool {
    !s.trim().is_empty() && s.chars().count() <= MAX_TEXT && !s.chars().any(char::is_control)
}

fn text_field(field: &str, v: Option<String>) -> Result<Option<String>, OAuthError> {
    match v {
        Some(s) if !plain_text_ok(&s) => Err(bad(
            field,
            format!("must be 1 to {MAX_TEXT} characters without control characters"),
        )),
        other => Ok(other),
    }
}

/// A URI shown to users or fetched by us: https, or http on a loopback host.
fn web_uri_field(field: &str, v: Option<String>) -> Result<Option<String>, OAuthError> {
    let Some(s) = v else { return Ok(None) };
    let url = Url::parse(&s).map_err(|e| bad(field, format!("is not an absolute URI ({e})")))?;
    let ok_scheme = url.scheme() == "https" || (url.scheme() == "http" && is_loopback_host(&url));
    if !ok_scheme || url.host().is_none() {
        return Err(bad(field, "must be an https URI"));
    }
    if s.len() > 2000 || !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            field,
            "must be at most 2000 characters without user information",
        ));
    }
    Ok(Some(s))
}

/// `jwks` must be a JWK Set of public keys (RFC 7517 §5).
fn check_jwks(jwks: &Value) -> Result<(), OAuthError> {
    const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "k", "oth"];
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("jwks", "must be a JWK Set: an object with a 'keys' array"))?;
    if keys.is_empty() || keys.len() > 10 {
        return Err(bad("jwks", "must hold 1 to 10 keys"));
    }
    for (i, k) in keys.iter().enumerate() {
        let obj = k
            .as_object()
            .ok_or_else(|| bad(&format!("jwks.keys[{i}]"), "is not an object"))?;
        if let Some(m) = PRIVATE_MEMBERS.iter().find(|m| obj.contains_key(**m)) {
            return Err(bad(
                &format!("jwks.keys[{i}]"),
                format!("contains the private member '{m}'; publish public keys only"),
            ));
        }
        serde_json::from_value::<jsonwebtoken::jwk::Jwk>(k.clone()).map_err(|e| {
            bad(
                &format!("jwks.keys[{i}]"),
                format!("is not a usable JWK: {e}"),
            )
        })?;
    }
    Ok(())
}

/// The operator's redirect policy: allowed schemes and hosts.
fn check_redirect_policy(uri: &RedirectUri, policy: &RegistrationConfig) -> Result<(), String> {
    let url = uri.url();
    if !policy.allowed_redirect_schemes.is_empty()
        && !policy
            .allowed_redirect_schemes
            .iter()
            .any(|s| s.eq_ignore_ascii_case(url.scheme()))
    {
        return Err(format!(
            "uses the scheme '{}', which this server's registration policy does not allow",
            url.scheme()
        ));
    }
    let web = matches!(url.scheme(), "https" | "http");
    if web && !uri.is_loopback() && !policy.allowed_redirect_hosts.is_empty() {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let allowed = policy.allowed_redirect_hosts.iter().any(|h| {
            let h = h.to_ascii_lowercase();
            match h.strip_prefix("*.") {
                Some(suffix) => host.ends_with(&format!(".{suffix}")),
                None => host == h,
            }
        });
        if !allowed {
            return Err(format!(
                "points at the host '{host}', which this server's registration policy does not allow"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn reg(json: &str) -> Result<ClientMetadata, OAuthError> {
        let policy = RegistrationConfig::default();
        validate(
            RawClientMetadata::from_json(json.as_bytes())?,
            Origin::Registration(&policy),
            &GrantRegistry::standard(),
        )
    }

    #[test]
    fn typical_mcp_client_registration() {
        let m = reg(
            r#"{"client_name":"Claude","redirect_uris":["http://localhost:6274/oauth/callback"],
            "grant_types":["authorization_code","refresh_token"],"response_types":["code"],
            "token_endpoint_auth_method":"none","scope":"notes:read","resource":"https://x"}"#,
        )
        .expect("valid");
        assert_eq!(m.token_endpoint_auth_method, AuthMethod::None);
        // No application_type: inferred from the loopback redirect (SEP-837).
        assert_eq!(m.application_type, ApplicationType::Native);
        assert!(m.redirect_uri_matches("http://localhost:9999/oauth/callback"));
    }

    #[test]
    fn application_type_is_inferred_and_checked() {
        let web = reg(r#"{"redirect_uris":["https://a.example/cb"]}"#).expect("valid");
        assert_eq!(web.application_type, ApplicationType::Web);
        for uri in [
            "cursor://anysphere.cursor-retrieval/oauth/callback",
            "http://127.0.0.1:33418/",
        ] {
            let native = reg(&format!(
                r#"{{"redirect_uris":["https://a.example/cb","{uri}"]}}"#
            ))
            .expect("valid");
            assert_eq!(native.application_type, ApplicationType::Native, "{uri}");
            let declared = reg(&format!(
                r#"{{"redirect_uris":["{uri}"],"application_type":"native"}}"#
            ))
            .expect("native may use it");
            assert_eq!(declared.application_type, ApplicationType::Native);
            let e = reg(&format!(
                r#"{{"redirect_uris":["{uri}"],"application_type":"web"}}"#
            ))
            .expect_err("web is https only");
            assert_eq!(e.code, ErrorCode::InvalidRedirectUri);
            assert!(e.description.contains("native"), "{}", e.description);
        }
    }

    /// A metadata document at https://agent.example/client.json with a loopback redirect and
    /// `extra` fields (JSON members, each with a leading comma).
    fn doc(extra: &str) -> Result<ClientMetadata, OAuthError> {
        let url = "https://agent.example/client.json";
        validate(
            RawClientMetadata::from_json(
                format!(
                    r#"{{"client_id":"{url}","redirect_uris":["http://127.0.0.1/cb"]{extra}}}"#
                )
                .as_bytes(),
            )
            .expect("json"),
            Origin::Document { url },
            &GrantRegistry::standard(),
        )
    }

    #[test]
    fn listed_auth_methods_are_choices() {
        // OpenID Connect RP Metadata Choices: a public client that may also sign.
        let m = doc(
            r#","token_endpoint_auth_methods_supported":["none","private_key_jwt","tls_client_auth","client_secret_basic"],
            "jwks_uri":"https://agent.example/jwks.json","future_field":{"x":1}"#,
        )
        .expect("valid");
        assert_eq!(m.token_endpoint_auth_method, AuthMethod::None);
        assert_eq!(
            m.token_endpoint_auth_methods_supported,
            vec![AuthMethod::None, AuthMethod::PrivateKeyJwt],
            "unsupported and secret methods are dropped"
        );
        assert!(m.accepts(AuthMethod::PrivateKeyJwt) && m.accepts(AuthMethod::None));
        assert!(!m.accepts(AuthMethod::ClientSecretPost));
        assert!(m.is_public());
        // Without keys, private_key_jwt is no choice.
        let m = doc(r#","token_endpoint_auth_methods_supported":["private_key_jwt","none"]"#)
            .expect("valid");
        assert_eq!(m.token_endpoint_auth_method, AuthMethod::None);
        assert!(!m.accepts(AuthMethod::PrivateKeyJwt));
        // Nothing usable listed: refused, naming the field.
        let e = doc(r#","token_endpoint_auth_methods_supported":["client_secret_basic"]"#)
            .expect_err("no usable method");
        assert!(
            e.description
                .contains("token_endpoint_auth_methods_supported")
        );
        // A registration takes the client's first usable choice, and secrets either way.
        let m = reg(
            r#"{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_methods_supported":["client_secret_post","private_key_jwt"]}"#,
        )
        .expect("valid");
        assert_eq!(m.token_endpoint_auth_method, AuthMethod::ClientSecretPost);
        assert!(
            m.accepts(AuthMethod::ClientSecretBasic),
            "a secret either way"
        );
        assert!(!m.accepts(AuthMethod::PrivateKeyJwt), "no keys");
        assert!(!m.accepts(AuthMethod::None));
        let pk = reg(
            r#"{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks_uri":"https://a.example/j","token_endpoint_auth_methods_supported":["client_secret_basic"]}"#,
        )
        .expect("valid");
        assert!(
            !pk.accepts(AuthMethod::ClientSecretBasic),
            "never a secret for a key client"
        );
    }

    #[test]
    fn documents_drop_what_this_server_does_not_offer() {
        let m = doc(
            r#","grant_types":["authorization_code","refresh_token","implicit","urn:example:future","client_credentials"],"response_types":["code","token"]"#,
        )
        .expect("valid");
        assert_eq!(m.grant_types, vec!["authorization_code", "refresh_token"]);
        assert_eq!(m.response_types, vec!["code"]);
        assert!(doc(r#","grant_types":["urn:example:future"]"#).is_err());
        // A registration is told at once.
        assert!(reg(r#"{"redirect_uris":["https://a.example/cb"],"grant_types":["authorization_code","urn:example:future"]}"#).is_err());
    }

    #[test]
    fn defaults_follow_rfc_7591() {
        let m = reg(r#"{"redirect_uris":["https://a.example/cb"]}"#).expect("valid");
        assert_eq!(m.token_endpoint_auth_method, AuthMethod::ClientSecretBasic);
        assert_eq!(m.grant_types, vec!["authorization_code"]);
        assert_eq!(m.response_types, vec!["code"]);
        let cc = reg(r#"{"grant_types":["client_credentials"]}"#).expect("valid");
        assert!(cc.response_types.is_empty());
        assert!(cc.redirect_uris.is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"redirect_uris":"https://a.example/cb"}"#,
                "redirect_uris",
            ),
            (
                r#"{"redirect_uris":["https://a.example/cb"],"grant_types":["implicit"]}"#,
                "grant_types",
            ),
            (
                r#"{"redirect_uris":["https://a.example/cb"],"response_types":["token"]}"#,
                "response_types",
            ),
            (
                r#"{"grant_types":["client_credentials"],"response_types":["code"]}"#,
                "response_types",
            ),
            (
                r#"{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"client_secret_jwt"}"#,
                "token_endpoint_auth_method",
            ),
            (
                r#"{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt"}"#,
                "token_endpoint_auth_method",
            ),
            (
                r#"{"redirect_uris":["https://a.example/cb"],"application_type":"desktop"}"#,
                "application_type",
            ),
            (
                r#"{"redirect_uris":["https://a.example/cb"],"logo_uri":"javascript:alert(1)"}"#,
                "logo_uri",
            ),
            (
                r#"{"redirect_uris":["https://a.example/cb"],"client_uri":"http://a.example"}"#,
                "client_uri",
            ),
            (
                r#"{"redirect_uris":["https://a.example/cb"],"scope":"a\\b"}"#,
                "scope",
            ),
            (
                r#"{"grant_types":["client_credentials"],"token_endpoint_auth_method":"none"}"#,
                "grant_types",
            ),
            (
                r#"{"redirect_uris":["https://a.example/cb"],"jwks":{"keys":[{"kty":"EC","crv":"P-256","x":"a","y":"b","d":"c"}]}}"#,
                "jwks.keys[0]",
            ),
            (
                r#"{"redirect_uris":["https://a.example/cb"],"jwks":{"keys":[]},"jwks_uri":"https://a.example/j"}"#,
                "jwks",
            ),
            ("[1,2]", "JSON object"),
            ("{not json", "not valid JSON"),
        ];
        for (json, field) in cases {
            let e = reg(json).expect_err(json);
            assert_eq!(e.code, ErrorCode::InvalidClientMetadata, "{json}");
            assert!(e.description.contains(field), "{json}: {}", e.description);
        }
    }

    #[test]
    fn redirect_errors_are_invalid_redirect_uri() {
        for json in [
            r#"{"redirect_uris":["http://evil.example/cb"]}"#,
            r#"{"redirect_uris":["https://a.example/cb#frag"]}"#,
            r#"{"redirect_uris":["javascript:alert(1)"]}"#,
            r#"{"redirect_uris":["data:text/html,x"]}"#,
            r#"{"redirect_uris":[]}"#,
            r#"{}"#,
        ] {
            let e = reg(json).expect_err(json);
            assert_eq!(e.code, ErrorCode::InvalidRedirectUri, "{json}");
            assert!(
                e.description.contains("redirect_uris"),
                "{json}: {}",
                e.description
            );
        }
    }

    #[test]
    fn registration_policy_limits_schemes_and_hosts() {
        let policy = RegistrationConfig {
            allowed_redirect_hosts: vec!["*.example.com".into(), "app.test".into()],
            allowed_redirect_schemes: vec!["https".into(), "http".into()],
            ..RegistrationConfig::default()
        };
        let check = |uri: &str| {
            let raw = RawClientMetadata {
                redirect_uris: Some(vec![uri.into()]),
                ..Default::default()
            };
            validate(
                raw,
                Origin::Registration(&policy),
                &GrantRegistry::standard(),
            )
        };
        assert!(check("https://a.example.com/cb").is_ok());
        assert!(check("https://app.test/cb").is_ok());
        assert!(
            check("http://127.0.0.1/cb").is_ok(),
            "loopback is not host-limited"
        );
        assert!(check("https://example.com/cb").is_err());
        assert!(check("https://evil.test/cb").is_err());
        assert!(check("com.example.app:/cb").is_err());
    }

    #[test]
    fn documents_must_name_themselves_and_hold_no_secret() {
        let url = "https://agent.example/client.json";
        let doc = |json: &str| {
            validate(
                RawClientMetadata::from_json(json.as_bytes()).expect("json"),
                Origin::Document { url },
                &GrantRegistry::standard(),
            )
        };
        let ok = doc(r#"{"client_id":"https://agent.example/client.json","redirect_uris":["http://localhost/cb"]}"#)
            .expect("valid");
        assert_eq!(ok.token_endpoint_auth_method, AuthMethod::None);
        assert!(doc(r#"{"client_id":"https://agent.example/other.json","redirect_uris":["http://localhost/cb"]}"#).is_err());
        assert!(doc(r#"{"redirect_uris":["http://localhost/cb"]}"#).is_err());
        assert!(doc(r#"{"client_id":"https://agent.example/client.json","redirect_uris":["http://localhost/cb"],"token_endpoint_auth_method":"client_secret_post"}"#).is_err());
        assert!(doc(r#"{"client_id":"https://agent.example/client.json","redirect_uris":["http://localhost/cb"],"client_secret":"x"}"#).is_err());
    }

    /// Property tests (README: Fuzzing).
    mod fuzz {
        use proptest::prelude::*;
        use serde_json::{Map, json};

        use super::*;
        use crate::fuzz::{config, json_text_edge, json_value, nasty_bytes, nasty_string};

        const DOCUMENT: &str = "https://agent.example/client.json";

        /// A value for a metadata field: usually one of its plausible values, else anything.
        fn field(name: &'static str) -> impl Strategy<Value = Value> {
            let plausible: Vec<Value> = match name {
                "redirect_uris" => vec![
                    json!(["https://app.example/cb"]),
                    json!(["http://localhost/cb", "http://127.0.0.1:8/cb?x=1"]),
                    json!(["com.example.app:/cb"]),
                    json!([]),
                ],
                "token_endpoint_auth_method" => vec![
                    json!("none"),
                    json!("client_secret_basic"),
                    json!("client_secret_post"),
                    json!("private_key_jwt"),
                    json!("client_secret_jwt"),
                ],
                "grant_types" => vec![
                    json!(["authorization_code", "refresh_token"]),
                    json!(["client_credentials"]),
                    json!(["urn:ietf:params:oauth:grant-type:device_code"]),
                    json!(["implicit"]),
                    json!([]),
                ],
                "response_types" => {
                    vec![json!(["code"]), json!(["code", "code"]), json!(["token"])]
                }
                "application_type" => vec![json!("web"), json!("native")],
                "scope" => vec![json!("notes:read notes:write"), json!("openid")],
                "client_id" => vec![json!(DOCUMENT)],
                "jwks" => vec![
                    json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}),
                    json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "d": "c"}]}),
                    json!({"keys": []}),
                ],
                "dpop_bound_access_tokens" => vec![json!(true), json!(false)],
                "default_acr_values" => vec![json!(["urn:concierge:acr:mfa"]), json!(["gold"])],
                _ => vec![json!("https://app.example/x"), json!("An app")],
            };
            prop_oneof![
                3 => proptest::sample::select(plausible),
                1 => json_value(),
                1 => nasty_string().prop_map(Value::from),
                1 => proptest::collection::vec(nasty_string(), 0..3).prop_map(Value::from),
            ]
        }

        const FIELDS: &[&str] = &[
            "redirect_uris",
            "token_endpoint_auth_method",
            "grant_types",
            "response_types",
            "client_name",
            "client_uri",
            "logo_uri",
            "tos_uri",
            "policy_uri",
            "scope",
            "contacts",
            "jwks_uri",
            "jwks",
            "software_id",
            "software_version",
            "application_type",
            "dpop_bound_access_tokens",
            "default_acr_values",
            "client_id",
            "client_secret",
            "client_secret_expires_at",
            "registration_access_token",
        ];

        /// A metadata object: some of the known fields, of any type, and unknown ones.
        fn metadata_json() -> impl Strategy<Value = Vec<u8>> {
            let fields: Vec<_> = FIELDS
                .iter()
                .map(|name| {
                    proptest::option::weighted(0.4, field(name)).prop_map(move |v| (*name, v))
                })
                .collect();
            let object = (
                fields,
                proptest::collection::btree_map(nasty_string(), json_value(), 0..3),
            )
                .prop_map(|(fields, extra)| {
                    let mut m: Map<String, Value> = extra.into_iter().collect();
                    for (name, v) in fields {
                        if let Some(v) = v {
                            m.insert(name.into(), v);
                        }
                    }
                    Value::Object(m).to_string().into_bytes()
                });
            prop_oneof![
                4 => object,
                1 => nasty_bytes(),
                1 => json_text_edge().prop_map(String::into_bytes),
                1 => json_value().prop_map(|v| v.to_string().into_bytes()),
            ]
        }

        proptest! {
            #![proptest_config(config())]

            /// Any body, from any origin: metadata that keeps the rules, or an error of the
            /// RFC 7591 kinds; and what passes passes again unchanged.
            #[test]
            fn metadata_is_valid_or_refused_by_field(body in metadata_json()) {
                let grants = GrantRegistry::standard();
                let policy = RegistrationConfig::default();
                for origin in [Origin::Registration(&policy), Origin::Document { url: DOCUMENT }, Origin::Operator] {
                    let raw = match RawClientMetadata::from_json(&body) {
                        Ok(raw) => raw,
                        Err(e) => {
                            prop_assert_eq!(e.code, ErrorCode::InvalidClientMetadata);
                            continue;
                        }
                    };
                    match validate(raw, origin, &grants) {
                        Ok(m) => {
                            for r in &m.redirect_uris {
                                prop_assert!(RedirectUri::parse(r).is_ok(), "{}", r);
                                prop_assert!(m.redirect_uri_matches(r));
                            }
                            let code = m.has_grant(authorization_code::GRANT_TYPE);
                            prop_assert!(!code || !m.redirect_uris.is_empty());
                            prop_assert_eq!(code, m.response_types.iter().any(|r| r == "code"));
                            prop_assert!(m.response_types.iter().all(|r| r == "code"));
                            if let Some(scope) = &m.scope {
                                prop_assert_eq!(&Scope::parse(scope).map(|s| s.to_string()), &Ok(scope.clone()));
                            }
                            if matches!(origin, Origin::Document { .. }) {
                                prop_assert!(!m.token_endpoint_auth_method.uses_secret());
                            }
                            prop_assert!(!m.admin && !m.may_introspect);
                            // Validated metadata, sent again, validates to itself.
                            let again = RawClientMetadata::from_json(&serde_json::to_vec(&m)?)
                                .and_then(|raw| {
                                    let mut raw = raw;
                                    if matches!(origin, Origin::Document { .. }) {
                                        raw.client_id = Some(DOCUMENT.into());
                                    }
                                    validate(raw, origin, &grants)
                                });
                            prop_assert_eq!(again.ok(), Some(m));
                        }
                        Err(e) => prop_assert!(
                            matches!(e.code, ErrorCode::InvalidClientMetadata | ErrorCode::InvalidRedirectUri),
                            "{:?}", e.code
                        ),
                    }
                }
            }
        }
    }
}
