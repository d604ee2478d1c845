//! Grants: each grant type the token endpoint implements is one type implementing [`Grant`],
//! in its own file here, and one line in [`GrantRegistry::standard`]. A grant describes
//! itself — its `grant_type` (a name from RFC 6749 or an extension grant's URN, RFC 6749
//! §4.5), the parameters it reads, what it adds to discovery metadata, the audit event of
//! what it issues — so discovery (`oauth::metadata`), the OpenAPI token-request schema and the
//! token endpoint's audit record are derived from the registry and cannot drift from it.
//!
//! Adding a grant: its file, one line in [`GrantRegistry::standard`], its tests, and a
//! migration per backend only if it stores state (README: "How the code is laid out").

pub mod authorization_code;
pub mod ciba;
pub mod client_credentials;
pub mod device_code;
pub mod jwt_bearer;
pub mod polling;
pub mod refresh_token;
pub mod token_exchange;
pub mod user_grant;

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::clients::Client;
use super::context::Context;
use super::form::Form;
use super::tokens::TokenResponse;
use crate::audit::Kind;
use crate::config::Config;
use crate::error::OAuthError;

/// A token request parameter a grant reads (for documentation: the OpenAPI schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    pub name: &'static str,
    pub description: &'static str,
}

/// A token request, after the endpoint authenticated the client, checked that it registered
/// this grant, and checked the request's DPoP proof: `dpop_jkt` is its key's thumbprint, to
/// which the grant binds the access token it issues (RFC 9449 §5).
pub struct TokenRequest<'a> {
    pub client: &'a Client,
    pub form: &'a Form,
    pub dpop_jkt: Option<&'a str>,
    /// The client was authenticated by the grant's own assertion
    /// ([`Grant::assertion_client`]).
    pub by_assertion: bool,
}

/// What a grant's discovery metadata may depend on (`oauth::metadata` fills it in).
pub struct Advertised<'a> {
    pub issuer: &'a str,
    /// Does this server redeem ID-JAGs (an IdP is trusted, configured or stored)?
    pub id_jag_trusted: bool,
}

/// A grant type the token endpoint implements.
#[async_trait]
pub trait Grant: Send + Sync {
    /// The `grant_type` value.
    fn grant_type(&self) -> &'static str;
    /// One line for documentation.
    fn description(&self) -> &'static str;
    /// The token request parameters it reads, besides those every request may carry
    /// (`grant_type`, client authentication, `resource`, `scope`).
    fn parameters(&self) -> &'static [Param] {
        &[]
    }
    /// Does this configuration let the grant work? A grant that needs configuration (the
    /// jwt-bearer grant needs trusted issuers) is neither served nor advertised without it.
    fn enabled(&self, _config: &Config) -> bool {
        true
    }
    /// What the grant adds to the discovery document (RFC 8414) when enabled.
    fn metadata(&self, _c: &Advertised<'_>, _m: &mut Map<String, Value>) {}
    /// The audit event of a token it issues.
    fn audit_kind(&self) -> Kind {
        Kind::TokenIssued
    }
    /// Is the subject of what it issues a user (the audit event's `user_id`)? False for a
    /// client's own token.
    fn acts_for_user(&self) -> bool {
        true
    }
    /// For a grant whose assertion names and proves the client (RFC 7523 §2.1 and §3: the
    /// jwt-bearer grant with a workload token or a client's own signed assertion): the
    /// client, authenticated by it. `None`: the client authenticates as usual. The token
    /// endpoint asks this before anything else about the client.
    async fn assertion_client(
        &self,
        _ctx: &Context,
        _form: &Form,
    ) -> Result<Option<Client>, OAuthError> {
        Ok(None)
    }
    /// Issue what the request asks for, or say why not.
    async fn issue(
        &self,
        ctx: &Context,
        req: &TokenRequest<'_>,
    ) -> Result<TokenResponse, OAuthError>;
}

/// The grants a server implements, keyed by `grant_type`.
pub struct GrantRegistry {
    grants: Vec<Box<dyn Grant>>,
}

impl GrantRegistry {
    /// Every grant this build implements, in the order metadata lists them.
    pub fn standard() -> Self {
        Self::empty()
            .with(authorization_code::AuthorizationCode)
            .with(refresh_token::RefreshTokenGrant)
            .with(client_credentials::ClientCredentials)
            .with(token_exchange::TokenExchange)
            .with(device_code::DeviceCodeGrant)
            .with(jwt_bearer::JwtBearer)
            .with(ciba::Ciba)
    }

    pub fn empty() -> Self {
        Self { grants: Vec::new() }
    }

    /// Add a grant (replacing one of the same `grant_type`).
    pub fn with(mut self, grant: impl Grant + 'static) -> Self {
        self.grants.retain(|g| g.grant_type() != grant.grant_type());
        self.grants.push(Box::new(grant));
        self
    }

    /// Every grant, enabled or not.
    pub fn all(&self) -> impl Iterator<Item = &dyn Grant> {
        self.grants.iter().map(|g| g.as_ref())
    }

    /// The grants `config` enables, for discovery metadata.
    pub fn enabled<'a>(&'a self, config: &'a Config) -> impl Iterator<Item = &'a dyn Grant> {
        self.all().filter(move |g| g.enabled(config))
    }

    /// The grant for `grant_type`, if this server has it and `config` enables it.
    pub fn find<'a>(&'a self, grant_type: &str, config: &'a Config) -> Option<&'a dyn Grant> {
        self.enabled(config).find(|g| g.grant_type() == grant_type)
    }

    /// May a client register `grant_type`? Known grants only; the error says why not.
    pub fn check_registrable(&self, grant_type: &str) -> Result<(), String> {
        if self.all().any(|g| g.grant_type() == grant_type) {
            return Ok(());
        }
        Err(match grant_type {
            "implicit" | "password" => format!("'{grant_type}' is not allowed by OAuth 2.1"),
            _ => format!("'{grant_type}' is not a grant type this server knows"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_knows_its_grants_by_name() {
        let r = GrantRegistry::standard();
        let names: Vec<&str> = r.all().map(|g| g.grant_type()).collect();
        assert_eq!(
            names,
            [
                "authorization_code",
                "refresh_token",
                "client_credentials",
                "urn:ietf:params:oauth:grant-type:token-exchange",
                "urn:ietf:params:oauth:grant-type:device_code",
                "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "urn:openid:params:grant-type:ciba",
            ]
        );
        let config = Config::default();
        assert!(r.find("client_credentials", &config).is_some());
        // Served without configuration (a client's own assertion needs none).
        assert!(r.find(jwt_bearer::GRANT_TYPE, &config).is_some());
        assert!(r.check_registrable(jwt_bearer::GRANT_TYPE).is_ok());
        assert!(
            r.check_registrable("implicit")
                .unwrap_err()
                .contains("OAuth 2.1")
        );
        assert!(r.check_registrable("magic").unwrap_err().contains("knows"));
    }
}
