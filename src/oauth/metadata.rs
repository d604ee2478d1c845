//! Authorization server metadata (RFC 8414 §2), built from what this build and this
//! configuration actually do, so it cannot advertise a feature that is not there.

use serde_json::{Map, Value, json};

use super::grants::{Advertised, Grant};
use super::{client_assertion, client_auth};
use crate::store::AuthMethod;

/// What the server does right now.
pub struct Capabilities<'a> {
    pub issuer: &'a str,
    /// Does this server redeem ID-JAGs (an IdP is trusted, configured or stored)?
    pub id_jag_trusted: bool,
    /// The grants enabled at the token endpoint (`GrantRegistry::enabled`).
    pub grants: Vec<&'a dyn Grant>,
    pub registration_enabled: bool,
    pub cimd_enabled: bool,
    /// Every scope of every registered resource.
    pub scopes: Vec<String>,
    /// RFC 9396 types: the built-in ones and those resources declare.
    pub details_types: Vec<String>,
}

/// The RFC 8414 document. `openid-configuration` serves the same document. The grants add
/// what they bring (the authorization endpoint and OpenID Connect with the code flow, the
/// device authorization endpoint, grant profiles), so nothing is advertised that is not
/// served.
pub fn authorization_server_metadata(c: &Capabilities<'_>) -> Map<String, Value> {
    let endpoint = |path: &str| Value::String(format!("{}{path}", c.issuer));
    let mut m = Map::new();
    m.insert("issuer".into(), Value::String(c.issuer.to_string()));
    if !c.grants.is_empty() {
        m.insert("token_endpoint".into(), endpoint("/token"));
        let methods = json!(
            client_auth::IMPLEMENTED
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
        );
        let algs = json!(client_assertion::signing_alg_names());
        let with_keys = client_auth::IMPLEMENTED.contains(&AuthMethod::PrivateKeyJwt);
        m.insert(
            "token_endpoint_auth_methods_supported".into(),
            methods.clone(),
        );
        if with_keys {
            m.insert(
                "token_endpoint_auth_signing_alg_values_supported".into(),
                algs.clone(),
            );
        }
        // RFC 9449 §5.1: the token endpoint takes DPoP proofs with these algorithms.
        m.insert(
            "dpop_signing_alg_values_supported".into(),
            json!(super::dpop::algorithm_names()),
        );
        // Introspection (RFC 7662) and revocation (RFC 7009) authenticate clients the same way.
        for (name, path) in [("revocation", "/revoke"), ("introspection", "/introspect")] {
            m.insert(format!("{name}_endpoint"), endpoint(path));
            m.insert(
                format!("{name}_endpoint_auth_methods_supported"),
                methods.clone(),
            );
            if with_keys {
                m.insert(
                    format!("{name}_endpoint_auth_signing_alg_values_supported"),
                    algs.clone(),
                );
            }
        }
    }
    m.insert("jwks_uri".into(), endpoint("/jwks"));
    if c.registration_enabled {
        m.insert("registration_endpoint".into(), endpoint("/register"));
    }
    m.insert("scopes_supported".into(), json!(c.scopes));
    // RFC 9396 §10: taken at the authorization and backchannel endpoints.
    if !c.grants.is_empty() {
        m.insert(
            "authorization_details_types_supported".into(),
            json!(c.details_types),
        );
    }
    // Required by RFC 8414; the code flow's grant fills it in.
    m.insert("response_types_supported".into(), json!([]));
    // Listed explicitly even when empty: an absent list would mean the RFC 8414 default,
    // which names grants this server does not do.
    m.insert(
        "grant_types_supported".into(),
        json!(c.grants.iter().map(|g| g.grant_type()).collect::<Vec<_>>()),
    );
    for g in &c.grants {
        g.metadata(
            &Advertised {
                issuer: c.issuer,
                id_jag_trusted: c.id_jag_trusted,
            },
            &mut m,
        );
    }
    if c.cimd_enabled {
        m.insert(
            "client_id_metadata_document_supported".into(),
            Value::Bool(true),
        );
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::Config;
    use crate::oauth::grants::GrantRegistry;

    #[test]
    fn lists_only_what_is_there() {
        let registry = GrantRegistry::standard();
        let config = Config::default();
        let c = Capabilities {
            issuer: "https://as.example",
            id_jag_trusted: false,
            grants: Vec::new(),
            registration_enabled: true,
            cimd_enabled: true,
            scopes: vec!["notes:read".into()],
            details_types: vec!["mcp_tool_call".into()],
        };
        let m = authorization_server_metadata(&c);
        assert!(!m.contains_key("authorization_details_types_supported"));
        assert_eq!(m["issuer"], "https://as.example");
        assert_eq!(m["registration_endpoint"], "https://as.example/register");
        assert_eq!(m["jwks_uri"], "https://as.example/jwks");
        assert_eq!(m["grant_types_supported"], json!([]));
        assert!(!m.contains_key("token_endpoint"));
        assert!(!m.contains_key("authorization_endpoint"));
        assert_eq!(m["client_id_metadata_document_supported"], true);

        let with_code = Capabilities {
            grants: registry
                .enabled(&config)
                .filter(|g| ["authorization_code", "refresh_token"].contains(&g.grant_type()))
                .collect(),
            registration_enabled: false,
            cimd_enabled: false,
            ..c
        };
        let m = authorization_server_metadata(&with_code);
        assert_eq!(m["authorization_endpoint"], "https://as.example/authorize");
        assert_eq!(
            m["authorization_details_types_supported"],
            json!(["mcp_tool_call"])
        );
        assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(m["authorization_response_iss_parameter_supported"], true);
        assert_eq!(
            m["token_endpoint_auth_methods_supported"],
            json!([
                "client_secret_basic",
                "client_secret_post",
                "private_key_jwt",
                "none"
            ])
        );
        assert_eq!(
            m["token_endpoint_auth_signing_alg_values_supported"],
            json!(["ES256", "ES384", "RS256", "PS256", "EdDSA"])
        );
        assert!(!m.contains_key("registration_endpoint"));
        assert!(!m.contains_key("client_id_metadata_document_supported"));
    }
}
