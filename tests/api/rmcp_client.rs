//! Interop with rmcp, the Rust MCP SDK: its OAuth client code, not ours, against Concierge.
//! (a) client credentials with `private_key_jwt` (SEP-1046), discovering our metadata;
//! (b) enterprise-managed authorization: an ID token from one Concierge (the IdP) becomes an
//! ID-JAG there and an access token at a second Concierge (the MCP server's authorization
//! server).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use concierge::oauth::client_metadata::RawClientMetadata;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use oauth2::{ClientSecret, TokenResponse};
use rmcp::transport::JwtSigningAlgorithm;
use rmcp::transport::auth::enterprise::{
    EmaAuthorizationServer, EmaClientAuthentication, EmaError, EmaExchangeRequest, EmaExchangeStage,
};
use rmcp::transport::auth::{
    AuthorizationManager, ClientCredentialsConfig, default_oauth_http_client,
};
use serde_json::json;

use crate::both;
use crate::flow::{NOTES, claims, verify};
use crate::helpers::{Backend, TOOLS_RESOURCE, TestApp, add_tools_resource};
use crate::id_jag::{AS_CLIENT, IDP_CLIENT, Pair, both_pair};

/// A PKCS#8 PEM ES256 key for a client and its public JWK for our client record.
pub fn es256_key() -> (Vec<u8>, serde_json::Value) {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let encoding = EncodingKey::from_ec_der(pkcs8.as_ref());
    let jwk =
        serde_json::to_value(Jwk::from_encoding_key(&encoding, Algorithm::ES256).unwrap()).unwrap();
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pkcs8.as_ref());
    let lines: Vec<String> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    );
    (pem.into_bytes(), jwk)
}

both!(
    rmcp_client_credentials_with_private_key_jwt,
    |app: TestApp| async move {
        add_tools_resource(&app).await;
        let (pem, jwk) = es256_key();
        let metadata = TestApp::operator_metadata(RawClientMetadata {
            grant_types: Some(vec!["client_credentials".into()]),
            token_endpoint_auth_method: Some("private_key_jwt".into()),
            jwks: Some(json!({ "keys": [jwk] })),
            scope: Some("tools:read tools:write".into()),
            ..Default::default()
        });
        app.add_client_metadata(Some("rmcp-machine"), metadata)
            .await;

        let mut manager = AuthorizationManager::new(app.issuer.as_str())
            .await
            .unwrap();
        let resolved = manager.resolve_metadata().await.unwrap();
        assert_eq!(
            resolved.metadata.issuer.as_deref(),
            Some(app.issuer.as_str())
        );
        manager.set_metadata(resolved.metadata);
        let config = ClientCredentialsConfig::PrivateKeyJwt {
            client_id: "rmcp-machine".into(),
            signing_key: pem,
            signing_algorithm: JwtSigningAlgorithm::ES256,
            token_endpoint_audience: None,
            scopes: vec!["tools:read".into()],
            resource: Some(TOOLS_RESOURCE.into()),
        };
        manager
            .validate_client_credentials_metadata(&config)
            .unwrap();
        let token = manager.exchange_client_credentials(&config).await.unwrap();
        let at = token.access_token().secret();
        let c = verify(&app, at, Algorithm::ES256, TOOLS_RESOURCE);
        assert_eq!(c["client_id"], "rmcp-machine");
        assert_eq!(c["scope"], "tools:read");
        // rmcp signs a fresh assertion (new jti) each time, so a second token works too.
        assert!(manager.exchange_client_credentials(&config).await.is_ok());
        app
    }
);

// rmcp's enterprise-managed authorization helper, both exchanges, against two servers.
both_pair!(rmcp_enterprise_managed, |p: Pair| async move {
    let id_token = p.id_token().await;
    let idp = || {
        EmaAuthorizationServer::new(p.idp.issuer.as_str(), p.idp.url("/token"), IDP_CLIENT)
            .with_client_authentication(EmaClientAuthentication::ClientSecretPost(
                ClientSecret::new(p.idp_secret.clone()),
            ))
    };
    let rs_as = || {
        EmaAuthorizationServer::new(p.rs_as.issuer.as_str(), p.rs_as.url("/token"), AS_CLIENT)
            .with_client_authentication(EmaClientAuthentication::ClientSecretPost(
                ClientSecret::new(p.as_secret.clone()),
            ))
    };
    let http = default_oauth_http_client().unwrap();
    // Step by step: rmcp checks the ID-JAG's type, issuer, audience, client and resource.
    let jag = EmaExchangeRequest::new_with_id_token(idp(), rs_as(), NOTES, &id_token)
        .with_scopes(["notes:read"])
        .exchange_id_jag(&http)
        .await
        .unwrap();
    assert_eq!(
        jag.scopes().iter().map(String::as_str).collect::<Vec<_>>(),
        vec!["notes:read"]
    );
    let c = claims(jag.assertion().secret());
    assert_eq!(c["client_id"], AS_CLIENT);
    let token = jag.exchange(&http).await.unwrap();
    let at = token.access_token.secret();
    let v = verify(&p.rs_as, at, Algorithm::ES256, NOTES);
    let alice = claims(&id_token)["sub"].as_str().unwrap().to_string();
    assert_eq!(v["sub"], p.local_user_of(&alice).await.as_str());
    assert_eq!(v["scope"], "notes:read");
    assert!(token.scopes.contains("notes:read"));

    // Both exchanges in one call; a scope beyond the IdP's policy is refused there.
    let both = EmaExchangeRequest::new_with_id_token(idp(), rs_as(), NOTES, &id_token)
        .exchange(&http, &http)
        .await
        .unwrap();
    assert!(both.scopes.contains("notes:write"));
    let refused = EmaExchangeRequest::new_with_id_token(idp(), rs_as(), NOTES, &id_token)
        .with_scopes(["notes:admin"])
        .exchange(&http, &http)
        .await
        .unwrap_err();
    assert_eq!(
        refused,
        EmaError::OAuthRejected {
            stage: EmaExchangeStage::IdentityProvider,
            status: 400,
            code: "invalid_scope"
        }
    );
    p
});
