//! The JWT bearer grant (RFC 7523 §2.1), for Identity Assertion JWT Authorization Grants
//! only: `assertion` is an ID-JAG from a trusted enterprise IdP. Enabled (served and
//! advertised) only when `id_jag.trusted_issuers` names at least one issuer. The checks are
//! in [`crate::oauth::id_jag`].

use async_trait::async_trait;

use super::{Grant, GrantType};
use crate::config::Config;
use crate::error::OAuthError;
use crate::oauth::clients::Client;
use crate::oauth::form::Form;
use crate::oauth::id_jag;
use crate::oauth::tokens::TokenResponse;
use crate::startup::AppState;

pub struct JwtBearer;

#[async_trait]
impl Grant for JwtBearer {
    fn grant_type(&self) -> GrantType {
        GrantType::JwtBearer
    }

    fn enabled(&self, config: &Config) -> bool {
        !config.id_jag.trusted_issuers.is_empty()
    }

    async fn exchange(
        &self,
        state: &AppState,
        client: &Client,
        form: &Form,
        dpop_jkt: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        id_jag::redeem(state, client, form, dpop_jkt).await
    }
}
