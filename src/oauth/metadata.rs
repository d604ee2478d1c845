//! Authorization server metadata (RFC 8414 §2), built from what this build and this
//! configuration actually do, so it cannot advertise a feature that is not there.

use serde_json::{Map, Value, json};

use super::client_metadata::AuthMethod;
use super::grants::GrantType;
use super::resource::OIDC_SCOPES;
use super::{client_assertion, client_auth};

/// What the server does right now.
#[derive(Debug, Clone)]
pub struct Capabilities<'a> {
    pub issuer: &'a str,
    /// Grants implemented at the token endpoint (`grants::implemented()`).
    pub grants: &'a [GrantType],
    pub registration_enabled: bool,
    pub cimd_enabled: bool,
    /// Every scope of every registered resource.
    pub scopes: Vec<String>,
}

/// The RFC 8414 document. `openid-configuration` serves the same document.
pub fn authorization_server_metadata(c: &Capabilities<'_>) -> Map<String, Value> {
    let endpoint = |path: &str| Value::String(format!("{}{path}", c.issuer));
    let mut m = Map::new();
    m.insert("issuer".into(), Value::String(c.issuer.to_string()));
    let code_flow = c.grants.iter().any(|g| g.uses_authorization_endpoint());
    if code_flow {
        m.insert("authorization_endpoint".into(), endpoint("/authorize"));
    }
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
        for endpoint_name in ["revocation", "introspection"] {
            let path = if endpoint_name == "revocation" {
                "/revoke"
            } else {
                "/introspect"
            };
            m.insert(format!("{endpoint_name}_endpoint"), endpoint(path));
            m.insert(
                format!("{endpoint_name}_endpoint_auth_methods_supported"),
                methods.clone(),
            );
            if with_keys {
                m.insert(
                    format!("{endpoint_name}_endpoint_auth_signing_alg_values_supported"),
                    algs.clone(),
                );
            }
        }
    }
    // The jwt-bearer grant is enabled only with trusted ID-JAG issuers, and redeems only
    // ID-JAGs (draft-ietf-oauth-identity-assertion-authz-grant, MCP enterprise-managed
    // authorization).
    if c.grants.contains(&GrantType::JwtBearer) {
        m.insert(
            "authorization_grant_profiles_supported".into(),
            json!([super::id_jag::GRANT_PROFILE]),
        );
    }
    if c.grants.contains(&GrantType::DeviceCode) {
        m.insert(
            "device_authorization_endpoint".into(),
            endpoint("/device_authorization"),
        );
    }
    m.insert("jwks_uri".into(), endpoint("/jwks"));
    if c.registration_enabled {
        m.insert("registration_endpoint".into(), endpoint("/register"));
    }
    let mut scopes = c.scopes.clone();
    if code_flow {
        // OpenID Connect rides on the code flow.
        scopes.extend(OIDC_SCOPES.iter().map(|s| s.to_string()));
    }
    m.insert("scopes_supported".into(), json!(scopes));
    // Required by RFC 8414; empty until the authorization endpoint exists.
    m.insert(
        "response_types_supported".into(),
        json!(if code_flow { vec!["code"] } else { vec![] }),
    );
    // Listed explicitly even when empty: an absent list would mean the RFC 8414 default,
    // which names grants this server does not do.
    m.insert(
        "grant_types_supported".into(),
        json!(c.grants.iter().map(|g| g.as_str()).collect::<Vec<_>>()),
    );
    if code_flow {
        m.insert("response_modes_supported".into(), json!(["query"]));
        m.insert("code_challenge_methods_supported".into(), json!(["S256"]));
        m.insert(
            "authorization_response_iss_parameter_supported".into(),
            Value::Bool(true),
        );
        // OpenID Connect Discovery §3.
        m.insert("userinfo_endpoint".into(), endpoint("/userinfo"));
        m.insert("subject_types_supported".into(), json!(["public"]));
        m.insert(
            "id_token_signing_alg_values_supported".into(),
            json!(["RS256"]),
        );
        m.insert(
            "prompt_values_supported".into(),
            json!(["none", "login", "consent", "select_account"]),
        );
        m.insert(
            "claims_supported".into(),
            json!([
                "sub",
                "iss",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "nonce",
                "at_hash",
                "sid",
                "azp",
                "name",
                "preferred_username",
                "updated_at",
                "email",
                "email_verified"
            ]),
        );
        m.insert("claims_parameter_supported".into(), Value::Bool(false));
        m.insert("request_parameter_supported".into(), Value::Bool(false));
        m.insert("request_uri_parameter_supported".into(), Value::Bool(false));
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

    #[test]
    fn lists_only_what_is_there() {
        let c = Capabilities {
            issuer: "https://as.example",
            grants: &[],
            registration_enabled: true,
            cimd_enabled: true,
            scopes: vec!["notes:read".into()],
        };
        let m = authorization_server_metadata(&c);
        assert_eq!(m["issuer"], "https://as.example");
        assert_eq!(m["registration_endpoint"], "https://as.example/register");
        assert_eq!(m["jwks_uri"], "https://as.example/jwks");
        assert_eq!(m["grant_types_supported"], json!([]));
        assert!(!m.contains_key("token_endpoint"));
        assert!(!m.contains_key("authorization_endpoint"));
        assert_eq!(m["client_id_metadata_document_supported"], true);

        let with_code = Capabilities {
            grants: &[GrantType::AuthorizationCode, GrantType::RefreshToken],
            registration_enabled: false,
            cimd_enabled: false,
            ..c
        };
        let m = authorization_server_metadata(&with_code);
        assert_eq!(m["authorization_endpoint"], "https://as.example/authorize");
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
