//! The shapes of the public endpoints' requests and answers, for the OpenAPI document
//! (`GET /openapi.json`). The handlers parse forms themselves (repeated parameters such as
//! `resource` and strict duplicate checks need it); these types describe what they accept.

use serde::Serialize;
use utoipa::ToSchema;

/// An error answer (RFC 6749 §5.2, RFC 7591 §3.2.2, RFC 6750 §3.1).
#[derive(Serialize, ToSchema)]
pub struct OAuthErrorResponse {
    /// The RFC error code, e.g. `invalid_request`, `invalid_client`, `invalid_grant`,
    /// `invalid_scope`, `invalid_target`.
    pub error: String,
    /// What is wrong, for the developer.
    pub error_description: String,
}

/// `POST /token` (RFC 6749 §3.2), form-encoded. Its schema is made from the grant
/// registry ([`token_request_schema`]): `grant_type` lists every grant, and each grant's
/// parameters are described with it, so the document cannot drift from the code.
pub struct TokenRequest;

impl utoipa::PartialSchema for TokenRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        token_request_schema(&crate::oauth::grants::GrantRegistry::standard()).into()
    }
}

impl ToSchema for TokenRequest {}

/// The token request's schema for the grants of `registry`: the parameters every request
/// may carry, then each grant's own.
pub fn token_request_schema(
    registry: &crate::oauth::grants::GrantRegistry,
) -> utoipa::openapi::schema::ObjectBuilder {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let text = |d: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(d))
    };
    let grants: Vec<&str> = registry.all().map(|g| g.grant_type()).collect();
    let mut doc = String::from("Which grant: ");
    for (i, g) in registry.all().enumerate() {
        if i > 0 {
            doc.push_str("; ");
        }
        doc.push_str(&format!("`{}`: {}", g.grant_type(), g.description()));
    }
    let mut schema = ObjectBuilder::new()
        .description(Some(
            "Which parameters apply depends on `grant_type`. Client authentication: HTTP \
             Basic, `client_id` + `client_secret`, or `client_assertion` (RFC 7523, \
             `private_key_jwt`); public clients send `client_id` only.",
        ))
        .property(
            "grant_type",
            text(&doc).enum_values(Some(grants.iter().copied())),
        )
        .required("grant_type");
    let mut seen: Vec<&str> = Vec::new();
    for g in registry.all() {
        for p in g.parameters() {
            if !seen.contains(&p.name) {
                seen.push(p.name);
                schema = schema.property(p.name, text(p.description));
            }
        }
    }
    for (name, description) in [
        (
            "resource",
            "The resource the token is for (RFC 8707); may repeat where a grant allows",
        ),
        ("scope", "Space-separated scopes"),
        ("client_id", "The client, unless HTTP Basic names it"),
        ("client_secret", "client_secret_post"),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", "private_key_jwt: the signed assertion"),
    ] {
        schema = schema.property(name, text(description));
    }
    schema
}

/// A token response (RFC 6749 §5.1). The access token is a JWT (RFC 9068) whose audience is
/// the resource.
#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// `Bearer`.
    pub token_type: String,
    pub expires_in: i64,
    pub scope: Option<String>,
    pub refresh_token: Option<String>,
    /// OpenID Connect, when `openid` was granted.
    pub id_token: Option<String>,
    /// Token exchange (RFC 8693 §2.2.1).
    pub issued_token_type: Option<String>,
}

/// `GET /authorize` query (or `POST` form): RFC 6749 §4.1.1 with PKCE (RFC 7636) required.
#[derive(Serialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuthorizationRequest {
    /// `code`: the only response type (OAuth 2.1).
    pub response_type: String,
    /// A registered client id or a Client ID Metadata Document URL.
    pub client_id: String,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    /// BASE64URL(SHA-256(code_verifier)).
    pub code_challenge: String,
    /// `S256`.
    pub code_challenge_method: String,
    /// RFC 8707; may repeat. Default: the configured default resource, or the only one.
    pub resource: Option<String>,
    /// OpenID Connect.
    pub nonce: Option<String>,
    /// OpenID Connect: `none`, `login` or `consent`.
    pub prompt: Option<String>,
}

/// The client information response (RFC 7591 §3.2.1, RFC 7592 §3): the metadata as stored,
/// plus the credentials. Secrets appear only when issued.
#[derive(Serialize, ToSchema)]
pub struct ClientInformation {
    pub client_id: String,
    pub client_secret: Option<String>,
    pub client_id_issued_at: Option<i64>,
    /// 0: the secret does not expire.
    pub client_secret_expires_at: Option<i64>,
    /// RFC 7592: for reading, updating and deleting this registration.
    pub registration_access_token: Option<String>,
    pub registration_client_uri: Option<String>,
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: String,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub client_name: Option<String>,
    pub scope: Option<String>,
}

/// `POST /introspect` (RFC 7662 §2.1) and `POST /revoke` (RFC 7009 §2.1), form-encoded, with
/// client authentication.
#[derive(Serialize, ToSchema)]
pub struct TokenRequestByValue {
    pub token: String,
    /// `access_token` or `refresh_token`.
    pub token_type_hint: Option<String>,
}

/// RFC 7662 §2.2. An inactive token is `{"active": false}` and nothing more.
#[derive(Serialize, ToSchema)]
pub struct IntrospectionResponse {
    pub active: bool,
    pub scope: Option<String>,
    pub client_id: Option<String>,
    pub sub: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub aud: Option<serde_json::Value>,
    pub iss: Option<String>,
    pub exp: Option<i64>,
    pub iat: Option<i64>,
    pub jti: Option<String>,
    pub token_type: Option<String>,
}

/// `POST /device_authorization` (RFC 8628 §3.1), form-encoded.
#[derive(Serialize, ToSchema)]
pub struct DeviceAuthorizationRequest {
    pub client_id: String,
    pub scope: Option<String>,
    /// RFC 8707; may repeat.
    pub resource: Option<String>,
}

/// RFC 8628 §3.2.
#[derive(Serialize, ToSchema)]
pub struct DeviceAuthorizationResponse {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_in: i64,
    pub interval: i64,
}

/// OpenID Connect CIBA Core §7.1 (client authentication as at the token endpoint).
#[derive(Serialize, ToSchema)]
pub struct BackchannelAuthenticationRequest {
    /// Must contain `openid`, with the scopes the client needs.
    pub scope: String,
    /// The user: a username or a verified email address. Exactly one of the three hints.
    pub login_hint: Option<String>,
    /// The user: an access token of this server issued for them.
    pub login_hint_token: Option<String>,
    /// The user: an ID token this server issued to the client (expired ones are fine).
    pub id_token_hint: Option<String>,
    /// Shown to the user beside the request, at most 100 characters of plain text.
    pub binding_message: Option<String>,
    /// Seconds the request may wait for the user (shortened to the server's maximum).
    pub requested_expiry: Option<i64>,
    /// Authentication context classes the approving sign-in must reach.
    pub acr_values: Option<String>,
    /// RFC 8707; may repeat.
    pub resource: Option<String>,
    /// RFC 9396: a JSON array; this server knows the type `mcp_tool_call`.
    pub authorization_details: Option<String>,
}

/// OpenID Connect CIBA Core §7.3.
#[derive(Serialize, ToSchema)]
pub struct BackchannelAuthenticationResponse {
    pub auth_req_id: String,
    pub expires_in: i64,
    pub interval: i64,
}

/// A JSON Web Key Set (RFC 7517 §5): the public signing keys.
#[derive(Serialize, ToSchema)]
pub struct JwkSet {
    #[schema(value_type = Vec<Object>)]
    pub keys: Vec<serde_json::Value>,
}

/// UserInfo claims (OpenID Connect Core §5.3.2): `sub` and what the granted scopes allow.
#[derive(Serialize, ToSchema)]
pub struct UserInfo {
    pub sub: String,
    pub name: Option<String>,
    pub preferred_username: Option<String>,
    pub email: Option<String>,
}

/// `POST /userinfo` with the token in the body (RFC 6750 §2.2) instead of the header.
#[derive(Serialize, ToSchema)]
pub struct UserInfoForm {
    pub access_token: Option<String>,
}
