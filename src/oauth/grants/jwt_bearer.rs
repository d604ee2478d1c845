//! The JWT bearer grant (RFC 7523 §2.1), for Identity Assertion JWT Authorization Grants
//! only: `assertion` is an ID-JAG from a trusted enterprise IdP. Enabled (served and
//! advertised) only when `id_jag.trusted_issuers` names at least one issuer. The checks are
//! in [`crate::oauth::id_jag`].

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::{Grant, Param, TokenRequest};
use crate::config::Config;
use crate::error::OAuthError;
use crate::oauth::context::Context;
use crate::oauth::id_jag;
use crate::oauth::tokens::TokenResponse;

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

pub struct JwtBearer;

#[async_trait]
impl Grant for JwtBearer {
    fn grant_type(&self) -> &'static str {
        GRANT_TYPE
    }

    fn description(&self) -> &'static str {
        "An ID-JAG from a trusted enterprise IdP (RFC 7523 §2.1, MCP enterprise-managed \
         authorization)"
    }

    fn parameters(&self) -> &'static [Param] {
        &[Param {
            name: "assertion",
            description: "jwt-bearer: the ID-JAG (an `oauth-id-jag+jwt`)",
        }]
    }

    fn enabled(&self, config: &Config) -> bool {
        !config.id_jag.trusted_issuers.is_empty()
    }

    /// It redeems only ID-JAGs (draft-ietf-oauth-identity-assertion-authz-grant).
    fn metadata(&self, _issuer: &str, m: &mut Map<String, Value>) {
        m.insert(
            "authorization_grant_profiles_supported".into(),
            json!([id_jag::GRANT_PROFILE]),
        );
    }

    async fn issue(
        &self,
        ctx: &Context,
        req: &TokenRequest<'_>,
    ) -> Result<TokenResponse, OAuthError> {
        id_jag::redeem(ctx, req.client, req.form, req.dpop_jkt).await
    }
}
