//! Protect MCP servers with access tokens issued by Concierge.
//!
//! `concierge-guard` is for **MCP server authors**: you run an
//! [rmcp](https://crates.io/crates/rmcp) / [axum](https://crates.io/crates/axum)
//! server and want it to accept only requests that carry an OAuth 2.1 access
//! token issued by [Concierge](https://github.com/concierge-auth/concierge)
//! (or any other standards-compliant authorization server).
//!
//! The [MCP authorization specification] makes the MCP server an OAuth 2.0
//! *protected resource*. Such a server has to do two things besides checking
//! tokens:
//!
//! 1. **Publish protected resource metadata** ([RFC 9728]) at a well-known URL,
//!    telling clients which authorization server issues its tokens and which
//!    scopes it understands — see [`ProtectedResourceMetadata`],
//!    [`metadata_path`] and [`metadata_url`].
//! 2. **Answer unauthenticated or under-privileged requests with a
//!    `WWW-Authenticate: Bearer …` challenge** ([RFC 6750] §3) that points the
//!    client at that metadata (`resource_metadata`, [RFC 9728] §5.1) — see
//!    [`BearerChallenge`].
//!
//! # Status
//!
//! This is the first piece of the crate: the framework-independent protocol
//! types above. They depend only on `serde` and `url`, so they work with any
//! HTTP stack. A tower `Layer` that validates bearer tokens and emits these
//! challenges automatically, plus axum extractors that hand the verified
//! token's claims to your handlers, are planned but **not yet available**.
//!
//! # Example
//!
//! ```
//! use concierge_guard::{
//!     BearerChallenge, ChallengeError, ProtectedResourceMetadata, metadata_path, metadata_url,
//! };
//! use url::Url;
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // The MCP endpoint this server protects; it doubles as the resource identifier.
//!     let resource = Url::parse("https://mcp.example.com/mcp")?;
//!
//!     // 1. Metadata served as JSON at GET /.well-known/oauth-protected-resource/mcp
//!     let metadata = ProtectedResourceMetadata::new(resource.as_str(), "https://auth.example.com")
//!         .with_scopes(["notes:read", "notes:write"])
//!         .with_resource_name("Notes MCP server");
//!     assert_eq!(metadata_path(&resource), "/.well-known/oauth-protected-resource/mcp");
//!
//!     let json = serde_json::to_value(&metadata)?;
//!     assert_eq!(json["authorization_servers"][0], "https://auth.example.com");
//!     assert_eq!(json["bearer_methods_supported"][0], "header");
//!
//!     // 2. The challenge sent with a 401 when a request arrives without a token.
//!     let challenge = BearerChallenge::new()
//!         .with_scope(["notes:read"])
//!         .with_resource_metadata(metadata_url(&resource));
//!     assert_eq!(challenge.http_status(), 401);
//!     assert_eq!(
//!         challenge.to_string(),
//!         r#"Bearer scope="notes:read", resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp""#,
//!     );
//!
//!     // A token that lacks a required scope gets a 403 with `insufficient_scope`.
//!     let challenge = BearerChallenge::insufficient_scope(["notes:write"])
//!         .with_resource_metadata(metadata_url(&resource));
//!     assert_eq!(challenge.http_status(), 403);
//!     assert!(challenge.to_string().starts_with(r#"Bearer error="insufficient_scope", scope="notes:write""#));
//!     Ok(())
//! }
//! ```
//!
//! [MCP authorization specification]: https://modelcontextprotocol.io/specification/2025-06-18/basic/authorization
//! [RFC 6750]: https://www.rfc-editor.org/rfc/rfc6750
//! [RFC 9728]: https://www.rfc-editor.org/rfc/rfc9728

#![deny(missing_docs)]

use std::fmt;

use serde::{Deserialize, Serialize};
use url::Url;

/// The well-known URI suffix registered by [RFC 9728] §3.
///
/// [`metadata_path`] inserts this (with a `/.well-known/` prefix) in front of
/// the resource's path.
///
/// ```
/// assert_eq!(concierge_guard::WELL_KNOWN_SUFFIX, "oauth-protected-resource");
/// ```
///
/// [RFC 9728]: https://www.rfc-editor.org/rfc/rfc9728#section-3
pub const WELL_KNOWN_SUFFIX: &str = "oauth-protected-resource";

/// OAuth 2.0 protected resource metadata ([RFC 9728] §2).
///
/// Serve this as `application/json` at the URL returned by [`metadata_url`]
/// (path: [`metadata_path`]). MCP clients fetch it to discover which
/// authorization server(s) issue tokens for this resource.
///
/// When serialized, empty lists and `None` fields are omitted, as RFC 9728
/// treats absent and empty equivalently for these optional parameters.
/// Unknown members are ignored when deserializing.
///
/// `bearer_methods_supported` is `["header"]` when built with
/// [`new`](Self::new) — MCP only allows tokens in the `Authorization` header.
/// When *deserializing*, a missing member yields an empty list, since RFC 9728
/// implies no default for it.
///
/// # Example
///
/// ```
/// use concierge_guard::ProtectedResourceMetadata;
///
/// let metadata = ProtectedResourceMetadata::new(
///     "https://mcp.example.com/mcp",
///     "https://auth.example.com",
/// )
/// .with_scopes(["notes:read"])
/// .require_dpop();
///
/// assert_eq!(
///     serde_json::to_string(&metadata).unwrap(),
///     r#"{"resource":"https://mcp.example.com/mcp","authorization_servers":["https://auth.example.com"],"scopes_supported":["notes:read"],"bearer_methods_supported":["header"],"dpop_bound_access_tokens_required":true}"#,
/// );
/// ```
///
/// [RFC 9728]: https://www.rfc-editor.org/rfc/rfc9728#section-2
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProtectedResourceMetadata {
    /// The protected resource's resource identifier: an `https` URL without a
    /// fragment. Clients require it to match the URL they used to reach the
    /// resource (RFC 9728 §3.3), so use the exact MCP endpoint URL.
    pub resource: String,
    /// Issuer identifiers of the authorization servers that issue tokens for
    /// this resource (e.g. Concierge's issuer URL).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization_servers: Vec<String>,
    /// Scope values a client can request to access this resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes_supported: Vec<String>,
    /// How a bearer token may be presented ([RFC 6750]): any of `"header"`,
    /// `"body"`, `"query"`.
    ///
    /// [RFC 6750]: https://www.rfc-editor.org/rfc/rfc6750
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bearer_methods_supported: Vec<String>,
    /// Human-readable name of the resource, suitable for display to end users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
    /// URL of human-readable documentation for developers of clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_documentation: Option<String>,
    /// Whether the resource only accepts DPoP-bound access tokens ([RFC 9449]).
    ///
    /// [RFC 9449]: https://www.rfc-editor.org/rfc/rfc9449
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_bound_access_tokens_required: Option<bool>,
    /// URL of the resource's own JSON Web Key Set, if it signs responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
}

impl ProtectedResourceMetadata {
    /// Creates metadata for `resource`, protected by a single authorization
    /// server, accepting tokens in the `Authorization` header only.
    ///
    /// ```
    /// use concierge_guard::ProtectedResourceMetadata;
    ///
    /// let m = ProtectedResourceMetadata::new("https://mcp.example.com/mcp", "https://auth.example.com");
    /// assert_eq!(m.resource, "https://mcp.example.com/mcp");
    /// assert_eq!(m.authorization_servers, ["https://auth.example.com"]);
    /// assert_eq!(m.bearer_methods_supported, ["header"]);
    /// assert!(m.scopes_supported.is_empty());
    /// ```
    #[must_use]
    pub fn new(resource: impl Into<String>, authorization_server: impl Into<String>) -> Self {
        Self {
            resource: resource.into(),
            authorization_servers: vec![authorization_server.into()],
            scopes_supported: Vec::new(),
            bearer_methods_supported: vec!["header".to_owned()],
            resource_name: None,
            resource_documentation: None,
            dpop_bound_access_tokens_required: None,
            jwks_uri: None,
        }
    }

    /// Sets `scopes_supported`, replacing any previous value.
    ///
    /// ```
    /// use concierge_guard::ProtectedResourceMetadata;
    ///
    /// let m = ProtectedResourceMetadata::new("https://mcp.example.com/mcp", "https://auth.example.com")
    ///     .with_scopes(["notes:read", "notes:write"]);
    /// assert_eq!(m.scopes_supported, ["notes:read", "notes:write"]);
    /// ```
    #[must_use]
    pub fn with_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes_supported = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the human-readable `resource_name`.
    ///
    /// ```
    /// use concierge_guard::ProtectedResourceMetadata;
    ///
    /// let m = ProtectedResourceMetadata::new("https://mcp.example.com/mcp", "https://auth.example.com")
    ///     .with_resource_name("Notes");
    /// assert_eq!(m.resource_name.as_deref(), Some("Notes"));
    /// ```
    #[must_use]
    pub fn with_resource_name(mut self, name: impl Into<String>) -> Self {
        self.resource_name = Some(name.into());
        self
    }

    /// Declares that only DPoP-bound access tokens are accepted
    /// (`dpop_bound_access_tokens_required: true`).
    ///
    /// ```
    /// use concierge_guard::ProtectedResourceMetadata;
    ///
    /// let m = ProtectedResourceMetadata::new("https://mcp.example.com/mcp", "https://auth.example.com")
    ///     .require_dpop();
    /// assert_eq!(m.dpop_bound_access_tokens_required, Some(true));
    /// ```
    #[must_use]
    pub fn require_dpop(mut self) -> Self {
        self.dpop_bound_access_tokens_required = Some(true);
        self
    }
}

/// Returns the path at which the metadata for `resource` is served
/// ([RFC 9728] §3.1).
///
/// `/.well-known/oauth-protected-resource` is inserted between the host and
/// the resource's path. A root resource (path `/` or empty) gets the bare
/// well-known path. Any other path is appended verbatim (already
/// percent-encoded), including a trailing slash, because the resource
/// identifier must match exactly. The query and fragment are not part of the
/// returned path; [`metadata_url`] keeps the query.
///
/// ```
/// use concierge_guard::metadata_path;
/// use url::Url;
///
/// let root = Url::parse("https://mcp.example.com")?;
/// assert_eq!(metadata_path(&root), "/.well-known/oauth-protected-resource");
///
/// let mcp = Url::parse("https://mcp.example.com/mcp")?;
/// assert_eq!(metadata_path(&mcp), "/.well-known/oauth-protected-resource/mcp");
/// # Ok::<(), url::ParseError>(())
/// ```
///
/// [RFC 9728]: https://www.rfc-editor.org/rfc/rfc9728#section-3.1
#[must_use]
pub fn metadata_path(resource: &Url) -> String {
    let mut path = format!("/.well-known/{WELL_KNOWN_SUFFIX}");
    let resource_path = resource.path();
    if !resource_path.is_empty() && resource_path != "/" {
        // Only hierarchical URLs are meaningful resources; keep the result a
        // well-formed absolute path even for opaque ones like `urn:x`.
        if !resource_path.starts_with('/') {
            path.push('/');
        }
        path.push_str(resource_path);
    }
    path
}

/// Returns the absolute URL of the metadata for `resource`: its origin
/// (scheme, host, port) followed by [`metadata_path`].
///
/// Any query of the resource is kept, as RFC 9728 §3.1 requires; user
/// information and the fragment are dropped. Use the result as the
/// `resource_metadata` parameter of a [`BearerChallenge`].
///
/// ```
/// use concierge_guard::metadata_url;
/// use url::Url;
///
/// let resource = Url::parse("https://mcp.example.com:8443/mcp")?;
/// assert_eq!(
///     metadata_url(&resource).as_str(),
///     "https://mcp.example.com:8443/.well-known/oauth-protected-resource/mcp",
/// );
/// # Ok::<(), url::ParseError>(())
/// ```
#[must_use]
pub fn metadata_url(resource: &Url) -> Url {
    let path = metadata_path(resource);
    let mut url = resource.clone();
    // These only fail for URLs without a host (e.g. `urn:`), which cannot be
    // resources anyway; the values are then left untouched.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_fragment(None);
    url.set_path(&path);
    url
}

/// The `error` code of a bearer token challenge ([RFC 6750] §3.1).
///
/// ```
/// use concierge_guard::ChallengeError;
///
/// assert_eq!(ChallengeError::InsufficientScope.to_string(), "insufficient_scope");
/// assert_eq!(ChallengeError::InvalidToken.http_status(), 401);
/// ```
///
/// [RFC 6750]: https://www.rfc-editor.org/rfc/rfc6750#section-3.1
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChallengeError {
    /// `invalid_request`: the request is malformed (missing parameter,
    /// several tokens, …). Sent with status 400.
    InvalidRequest,
    /// `invalid_token`: the token is expired, revoked, malformed or for
    /// another resource. Sent with status 401.
    InvalidToken,
    /// `insufficient_scope`: the token is valid but lacks a required scope.
    /// Sent with status 403.
    InsufficientScope,
}

impl ChallengeError {
    /// The error code as it appears on the wire, e.g. `"invalid_token"`.
    ///
    /// ```
    /// use concierge_guard::ChallengeError;
    ///
    /// assert_eq!(ChallengeError::InvalidRequest.as_str(), "invalid_request");
    /// ```
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
        }
    }

    /// The HTTP status code RFC 6750 §3.1 prescribes for this error.
    ///
    /// ```
    /// use concierge_guard::ChallengeError;
    ///
    /// assert_eq!(ChallengeError::InvalidRequest.http_status(), 400);
    /// assert_eq!(ChallengeError::InvalidToken.http_status(), 401);
    /// assert_eq!(ChallengeError::InsufficientScope.http_status(), 403);
    /// ```
    #[must_use]
    pub const fn http_status(self) -> u16 {
        match self {
            Self::InvalidRequest => 400,
            Self::InvalidToken => 401,
            Self::InsufficientScope => 403,
        }
    }
}

impl fmt::Display for ChallengeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `WWW-Authenticate` challenge for the `Bearer` scheme ([RFC 6750] §3),
/// with the `resource_metadata` parameter of [RFC 9728] §5.1.
///
/// Its [`Display`](fmt::Display) output is the header value. Parameters
/// appear in the order `error`, `error_description`, `scope`,
/// `resource_metadata`; unset ones are omitted. A challenge without
/// parameters renders as just `Bearer`.
///
/// Every value is sent as an RFC 9110 quoted-string: `"` and `\` are escaped
/// with a backslash, control characters are removed, and non-ASCII
/// characters are replaced by `?` (RFC 6750 allows only ASCII in these
/// values). The output is therefore always a valid visible-ASCII header
/// value.
///
/// Pair the value with the status from [`http_status`](Self::http_status).
///
/// ```
/// use concierge_guard::{BearerChallenge, ChallengeError};
///
/// let challenge = BearerChallenge::new()
///     .with_error(ChallengeError::InvalidToken)
///     .with_error_description("token expired");
/// assert_eq!(challenge.http_status(), 401);
/// assert_eq!(
///     challenge.to_string(),
///     r#"Bearer error="invalid_token", error_description="token expired""#,
/// );
/// ```
///
/// [RFC 6750]: https://www.rfc-editor.org/rfc/rfc6750#section-3
/// [RFC 9728]: https://www.rfc-editor.org/rfc/rfc9728#section-5.1
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BearerChallenge {
    error: Option<ChallengeError>,
    error_description: Option<String>,
    scope: Option<String>,
    resource_metadata: Option<Url>,
}

impl BearerChallenge {
    /// A challenge without parameters: the response to a request that carried
    /// no token at all (RFC 6750 §3.1 says not to send an error code then).
    ///
    /// ```
    /// use concierge_guard::BearerChallenge;
    ///
    /// assert_eq!(BearerChallenge::new().to_string(), "Bearer");
    /// assert_eq!(BearerChallenge::new().http_status(), 401);
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Shorthand for an `invalid_token` challenge with a description.
    ///
    /// ```
    /// use concierge_guard::{BearerChallenge, ChallengeError};
    ///
    /// let c = BearerChallenge::invalid_token("token expired");
    /// assert_eq!(c.error(), Some(ChallengeError::InvalidToken));
    /// assert_eq!(c.to_string(), r#"Bearer error="invalid_token", error_description="token expired""#);
    /// ```
    #[must_use]
    pub fn invalid_token(description: impl Into<String>) -> Self {
        Self::new()
            .with_error(ChallengeError::InvalidToken)
            .with_error_description(description)
    }

    /// Shorthand for an `insufficient_scope` challenge naming the scopes
    /// needed for the request.
    ///
    /// ```
    /// use concierge_guard::BearerChallenge;
    ///
    /// let c = BearerChallenge::insufficient_scope(["notes:read", "notes:write"]);
    /// assert_eq!(c.http_status(), 403);
    /// assert_eq!(c.to_string(), r#"Bearer error="insufficient_scope", scope="notes:read notes:write""#);
    /// ```
    #[must_use]
    pub fn insufficient_scope<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::new()
            .with_error(ChallengeError::InsufficientScope)
            .with_scope(scopes)
    }

    /// Sets the `error` parameter.
    ///
    /// ```
    /// use concierge_guard::{BearerChallenge, ChallengeError};
    ///
    /// let c = BearerChallenge::new().with_error(ChallengeError::InvalidRequest);
    /// assert_eq!(c.to_string(), r#"Bearer error="invalid_request""#);
    /// assert_eq!(c.http_status(), 400);
    /// ```
    #[must_use]
    pub fn with_error(mut self, error: ChallengeError) -> Self {
        self.error = Some(error);
        self
    }

    /// Sets the human-readable `error_description` parameter (for developers,
    /// not end users).
    ///
    /// ```
    /// use concierge_guard::BearerChallenge;
    ///
    /// let c = BearerChallenge::new().with_error_description(r#"bad "aud""#);
    /// assert_eq!(c.to_string(), r#"Bearer error_description="bad \"aud\"""#);
    /// ```
    #[must_use]
    pub fn with_error_description(mut self, description: impl Into<String>) -> Self {
        self.error_description = Some(description.into());
        self
    }

    /// Sets the `scope` parameter to the given scopes joined by spaces,
    /// replacing any previous value. An empty list removes the parameter.
    ///
    /// ```
    /// use concierge_guard::BearerChallenge;
    ///
    /// let c = BearerChallenge::new().with_scope(["a", "b"]);
    /// assert_eq!(c.to_string(), r#"Bearer scope="a b""#);
    /// assert_eq!(BearerChallenge::new().with_scope(Vec::<String>::new()).to_string(), "Bearer");
    /// ```
    #[must_use]
    pub fn with_scope<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut joined = String::new();
        for scope in scopes {
            if !joined.is_empty() {
                joined.push(' ');
            }
            joined.push_str(scope.as_ref());
        }
        self.scope = (!joined.is_empty()).then_some(joined);
        self
    }

    /// Sets the `resource_metadata` parameter: the URL of this resource's
    /// [`ProtectedResourceMetadata`], usually from [`metadata_url`].
    ///
    /// ```
    /// use concierge_guard::{BearerChallenge, metadata_url};
    /// use url::Url;
    ///
    /// let resource = Url::parse("https://mcp.example.com/")?;
    /// let c = BearerChallenge::new().with_resource_metadata(metadata_url(&resource));
    /// assert_eq!(
    ///     c.to_string(),
    ///     r#"Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource""#,
    /// );
    /// # Ok::<(), url::ParseError>(())
    /// ```
    #[must_use]
    pub fn with_resource_metadata(mut self, url: Url) -> Self {
        self.resource_metadata = Some(url);
        self
    }

    /// The `error` parameter, if set.
    ///
    /// ```
    /// use concierge_guard::BearerChallenge;
    ///
    /// assert_eq!(BearerChallenge::new().error(), None);
    /// ```
    #[must_use]
    pub fn error(&self) -> Option<ChallengeError> {
        self.error
    }

    /// The HTTP status code to send with this challenge: 401 when there is no
    /// error code or it is `invalid_token`, 400 for `invalid_request`, 403
    /// for `insufficient_scope`.
    ///
    /// ```
    /// use concierge_guard::{BearerChallenge, ChallengeError};
    ///
    /// assert_eq!(BearerChallenge::new().http_status(), 401);
    /// assert_eq!(BearerChallenge::new().with_error(ChallengeError::InsufficientScope).http_status(), 403);
    /// ```
    #[must_use]
    pub fn http_status(&self) -> u16 {
        self.error.map_or(401, ChallengeError::http_status)
    }
}

impl fmt::Display for BearerChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bearer")?;
        let params = [
            ("error", self.error.map(ChallengeError::as_str)),
            ("error_description", self.error_description.as_deref()),
            ("scope", self.scope.as_deref()),
            (
                "resource_metadata",
                self.resource_metadata.as_ref().map(Url::as_str),
            ),
        ];
        let mut separator = " ";
        for (name, value) in params {
            if let Some(value) = value {
                write!(f, "{separator}{name}=")?;
                write_quoted(f, value)?;
                separator = ", ";
            }
        }
        Ok(())
    }
}

/// Writes `value` as an RFC 9110 quoted-string restricted to visible ASCII
/// and space: `"` and `\` are backslash-escaped, control characters dropped,
/// other non-ASCII characters replaced by `?`.
fn write_quoted(f: &mut fmt::Formatter<'_>, value: &str) -> fmt::Result {
    use fmt::Write as _;

    f.write_char('"')?;
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                f.write_char('\\')?;
                f.write_char(c)?;
            }
            c if c.is_control() => {}
            ' '..='~' => f.write_char(c)?,
            _ => f.write_char('?')?,
        }
    }
    f.write_char('"')
}

/// Compiles and runs the code blocks of `README.md` as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn metadata_path_for_root_resource() {
        assert_eq!(
            metadata_path(&url("https://mcp.example.com")),
            "/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            metadata_path(&url("https://mcp.example.com/")),
            "/.well-known/oauth-protected-resource"
        );
    }

    #[test]
    fn metadata_path_inserts_resource_path() {
        assert_eq!(
            metadata_path(&url("https://mcp.example.com/mcp")),
            "/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            metadata_path(&url("https://example.com/tenants/a%20b/mcp?x=1#frag")),
            "/.well-known/oauth-protected-resource/tenants/a%20b/mcp"
        );
    }

    #[test]
    fn metadata_path_keeps_trailing_slash_of_non_root_path() {
        assert_eq!(
            metadata_path(&url("https://mcp.example.com/mcp/")),
            "/.well-known/oauth-protected-resource/mcp/"
        );
    }

    #[test]
    fn metadata_path_of_opaque_url_is_still_absolute() {
        assert_eq!(
            metadata_path(&url("urn:example:mcp")),
            "/.well-known/oauth-protected-resource/example:mcp"
        );
    }

    #[test]
    fn metadata_url_uses_origin_and_keeps_query() {
        assert_eq!(
            metadata_url(&url("https://user:pw@mcp.example.com:8443/mcp?t=1#f")).as_str(),
            "https://mcp.example.com:8443/.well-known/oauth-protected-resource/mcp?t=1"
        );
        assert_eq!(
            metadata_url(&url("http://localhost:3000/")).as_str(),
            "http://localhost:3000/.well-known/oauth-protected-resource"
        );
    }

    #[test]
    fn challenge_without_parameters() {
        assert_eq!(BearerChallenge::new().to_string(), "Bearer");
    }

    #[test]
    fn challenge_parameter_order() {
        let challenge = BearerChallenge::new()
            .with_resource_metadata(url(
                "https://mcp.example.com/.well-known/oauth-protected-resource/mcp",
            ))
            .with_scope(["notes:read", "notes:write"])
            .with_error_description("need more")
            .with_error(ChallengeError::InsufficientScope);
        assert_eq!(
            challenge.to_string(),
            "Bearer error=\"insufficient_scope\", error_description=\"need more\", \
             scope=\"notes:read notes:write\", \
             resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\""
        );
    }

    #[test]
    fn challenge_escapes_quotes_and_backslashes() {
        let challenge = BearerChallenge::new().with_error_description(r#"say "hi" \o/"#);
        assert_eq!(
            challenge.to_string(),
            r#"Bearer error_description="say \"hi\" \\o/""#
        );
    }

    #[test]
    fn challenge_removes_control_and_replaces_non_ascii() {
        let challenge = BearerChallenge::new()
            .with_error_description("line1\r\nline2\t\u{7f}\u{85}end é")
            .with_scope(["a\"b", "c\nd"]);
        let value = challenge.to_string();
        assert_eq!(
            value,
            r#"Bearer error_description="line1line2end ?", scope="a\"b cd""#
        );
        assert!(value.bytes().all(|b| (b' '..=b'~').contains(&b)));
    }

    #[test]
    fn status_mapping() {
        assert_eq!(BearerChallenge::new().http_status(), 401);
        assert_eq!(BearerChallenge::invalid_token("x").http_status(), 401);
        assert_eq!(
            BearerChallenge::new()
                .with_error(ChallengeError::InvalidRequest)
                .http_status(),
            400
        );
        assert_eq!(
            BearerChallenge::insufficient_scope(["s"]).http_status(),
            403
        );
    }

    #[test]
    fn error_codes_render() {
        assert_eq!(
            ChallengeError::InvalidRequest.to_string(),
            "invalid_request"
        );
        assert_eq!(ChallengeError::InvalidToken.to_string(), "invalid_token");
        assert_eq!(
            ChallengeError::InsufficientScope.to_string(),
            "insufficient_scope"
        );
    }

    #[test]
    fn metadata_serialization_skips_empty_fields() {
        let mut metadata =
            ProtectedResourceMetadata::new("https://mcp.example.com/mcp", "https://as");
        metadata.bearer_methods_supported.clear();
        metadata.authorization_servers.clear();
        assert_eq!(
            serde_json::to_value(&metadata).unwrap(),
            json!({ "resource": "https://mcp.example.com/mcp" })
        );
    }

    #[test]
    fn metadata_serialization_full() {
        let mut metadata =
            ProtectedResourceMetadata::new("https://mcp.example.com/mcp", "https://as")
                .with_scopes(["notes:read"])
                .with_resource_name("Notes")
                .require_dpop();
        metadata.resource_documentation = Some("https://docs.example.com".to_owned());
        metadata.jwks_uri = Some("https://mcp.example.com/jwks.json".to_owned());
        assert_eq!(
            serde_json::to_value(&metadata).unwrap(),
            json!({
                "resource": "https://mcp.example.com/mcp",
                "authorization_servers": ["https://as"],
                "scopes_supported": ["notes:read"],
                "bearer_methods_supported": ["header"],
                "resource_name": "Notes",
                "resource_documentation": "https://docs.example.com",
                "dpop_bound_access_tokens_required": true,
                "jwks_uri": "https://mcp.example.com/jwks.json",
            })
        );
    }

    #[test]
    fn metadata_round_trips_and_tolerates_unknown_fields() {
        let metadata = ProtectedResourceMetadata::new("https://mcp.example.com/mcp", "https://as")
            .with_scopes(["a", "b"]);
        let json = serde_json::to_string(&metadata).unwrap();
        let back: ProtectedResourceMetadata = serde_json::from_str(&json).unwrap();
        assert_eq!(back, metadata);

        let minimal: ProtectedResourceMetadata = serde_json::from_value(json!({
            "resource": "https://mcp.example.com/mcp",
            "tls_client_certificate_bound_access_tokens": false,
        }))
        .unwrap();
        assert_eq!(minimal.resource, "https://mcp.example.com/mcp");
        assert!(minimal.authorization_servers.is_empty());
        assert!(minimal.bearer_methods_supported.is_empty());
        assert_eq!(minimal.dpop_bound_access_tokens_required, None);
    }

    #[test]
    fn metadata_requires_resource() {
        assert!(serde_json::from_value::<ProtectedResourceMetadata>(json!({})).is_err());
    }
}
