//! Protected resource metadata (RFC 9728) and where it is served.

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
    /// The algorithms accepted for DPoP proofs ([RFC 9449] §5.1, RFC 9728 §2).
    ///
    /// [RFC 9449]: https://www.rfc-editor.org/rfc/rfc9449
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dpop_signing_alg_values_supported: Vec<String>,
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
            dpop_signing_alg_values_supported: Vec::new(),
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
/// `resource_metadata` parameter of a [`BearerChallenge`](crate::BearerChallenge).
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
