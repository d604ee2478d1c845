//! Grant types: the ones OAuth defines that Concierge knows, and the registry of those this
//! build implements. Discovery metadata lists grants from [`implemented`] only, so it cannot
//! advertise what the code does not do. Adding a grant: its file here, one line in
//! [`implemented`], its tests.

pub mod authorization_code;
pub mod client_credentials;
pub mod device_code;
pub mod jwt_bearer;
pub mod refresh_token;
pub mod token_exchange;
pub mod user_tokens;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::clients::Client;
use super::form::Form;
use super::tokens::TokenResponse;
use crate::config::Config;
use crate::error::OAuthError;
use crate::startup::AppState;

/// Grant types a client may register for (RFC 7591 §2 `grant_types`).
///
/// OAuth 2.1 removes `implicit` and `password`; they are refused by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GrantType {
    #[serde(rename = "authorization_code")]
    AuthorizationCode,
    #[serde(rename = "refresh_token")]
    RefreshToken,
    #[serde(rename = "client_credentials")]
    ClientCredentials,
    /// RFC 8628.
    #[serde(rename = "urn:ietf:params:oauth:grant-type:device_code")]
    DeviceCode,
    /// RFC 8693.
    #[serde(rename = "urn:ietf:params:oauth:grant-type:token-exchange")]
    TokenExchange,
    /// RFC 7523 (and ID-JAG).
    #[serde(rename = "urn:ietf:params:oauth:grant-type:jwt-bearer")]
    JwtBearer,
}

impl GrantType {
    pub const ALL: [GrantType; 6] = [
        Self::AuthorizationCode,
        Self::RefreshToken,
        Self::ClientCredentials,
        Self::DeviceCode,
        Self::TokenExchange,
        Self::JwtBearer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::RefreshToken => "refresh_token",
            Self::ClientCredentials => "client_credentials",
            Self::DeviceCode => "urn:ietf:params:oauth:grant-type:device_code",
            Self::TokenExchange => "urn:ietf:params:oauth:grant-type:token-exchange",
            Self::JwtBearer => "urn:ietf:params:oauth:grant-type:jwt-bearer",
        }
    }

    /// Parse a grant type name; the error says why it is refused.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(g) = Self::ALL.into_iter().find(|g| g.as_str() == s) {
            return Ok(g);
        }
        Err(match s {
            "implicit" | "password" => format!("'{s}' is not allowed by OAuth 2.1"),
            _ => format!("'{s}' is not a grant type this server knows"),
        })
    }

    /// Does this grant send the user through the authorization endpoint?
    pub fn uses_authorization_endpoint(self) -> bool {
        matches!(self, Self::AuthorizationCode)
    }
}

/// A grant type the token endpoint implements. The endpoint has already authenticated the
/// client and checked that it registered this grant, and checked the request's DPoP proof:
/// `dpop_jkt` is its key's thumbprint, to which the grant binds the access token it issues
/// (RFC 9449 §5).
#[async_trait]
pub trait Grant: Send + Sync {
    fn grant_type(&self) -> GrantType;
    /// Does this configuration let the grant work? A grant that needs configuration (the
    /// jwt-bearer grant needs trusted issuers) is neither served nor advertised without it.
    fn enabled(&self, _config: &Config) -> bool {
        true
    }
    async fn exchange(
        &self,
        state: &AppState,
        client: &Client,
        form: &Form,
        dpop_jkt: Option<&str>,
    ) -> Result<TokenResponse, OAuthError>;
}

/// The registry: every grant the token endpoint implements, in the order metadata lists them.
static GRANTS: &[&dyn Grant] = &[
    &authorization_code::AuthorizationCode,
    &refresh_token::RefreshTokenGrant,
    &client_credentials::ClientCredentials,
    &token_exchange::TokenExchange,
    &device_code::DeviceCodeGrant,
    &jwt_bearer::JwtBearer,
];

/// The grant types implemented and enabled by `config`, for discovery metadata.
pub fn implemented(config: &Config) -> Vec<GrantType> {
    GRANTS
        .iter()
        .filter(|g| g.enabled(config))
        .map(|g| g.grant_type())
        .collect()
}

/// The implementation of `grant_type`, if this build has one and `config` enables it.
pub fn find(grant_type: GrantType, config: &Config) -> Option<&'static dyn Grant> {
    GRANTS
        .iter()
        .copied()
        .find(|g| g.grant_type() == grant_type && g.enabled(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for g in GrantType::ALL {
            assert_eq!(GrantType::parse(g.as_str()), Ok(g));
            let json = serde_json::to_string(&g).expect("serialise");
            assert_eq!(json, format!("\"{}\"", g.as_str()));
        }
        assert!(
            GrantType::parse("implicit")
                .unwrap_err()
                .contains("OAuth 2.1")
        );
        assert!(GrantType::parse("magic").unwrap_err().contains("knows"));
    }
}
