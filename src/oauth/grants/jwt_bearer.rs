//! The JWT bearer grant (RFC 7523 §2.1). Its `assertion` is one of three things:
//!
//! - an ID-JAG (`typ` `oauth-id-jag+jwt`) from an enterprise IdP in `id_jag.trusted_issuers`,
//!   presented by a client that authenticates as usual (MCP enterprise-managed authorization;
//!   the checks are in [`crate::oauth::id_jag`]);
//! - a workload's platform token from an issuer in `workload_identity.issuers` (MCP SEP-1933;
//!   [`crate::oauth::workload`]): the token is the client's only credential;
//! - a client's own assertion, signed with a key it registered (`iss` = `sub` = its
//!   client_id, `aud` this server's issuer or token endpoint, the client-credentials
//!   extension `io.modelcontextprotocol/oauth-client-credentials`): checked exactly as a
//!   `private_key_jwt` client assertion, and likewise its only credential.
//!
//! The last two give the client's own token, as client credentials do.

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::{Advertised, Grant, Param, TokenRequest, client_credentials};
use crate::config::Config;
use crate::error::{ErrorCode, OAuthError};
use crate::oauth::client_assertion::{AssertionError, jws_header, unverified_payload};
use crate::oauth::clients::{Client, ClientLookupError};
use crate::oauth::context::Context;
use crate::oauth::form::Form;
use crate::oauth::tokens::TokenResponse;
use crate::oauth::{id_jag, workload};

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

pub struct JwtBearer;

fn refused(d: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidGrant, d.into())
}

/// `iss` and `sub` of an assertion, unverified: they only say whose keys to verify it with.
fn claimed_iss_sub(assertion: &str) -> Result<(String, Option<String>), OAuthError> {
    let payload = unverified_payload(assertion).map_err(|e| refused(e.to_string()))?;
    let text = |k: &str| payload.get(k).and_then(Value::as_str).map(str::to_string);
    let iss = text("iss").ok_or_else(|| refused("the assertion has no iss"))?;
    Ok((iss, text("sub")))
}

fn is_id_jag(assertion: &str) -> Result<bool, OAuthError> {
    let header = jws_header(assertion).map_err(|e| refused(e.to_string()))?;
    Ok(id_jag::is_id_jag_typ(header.typ.as_deref()))
}

#[async_trait]
impl Grant for JwtBearer {
    fn grant_type(&self) -> &'static str {
        GRANT_TYPE
    }

    fn description(&self) -> &'static str {
        "An ID-JAG from a trusted enterprise IdP, a workload's platform token, or a client's \
         own signed assertion (RFC 7523 §2.1)"
    }

    fn parameters(&self) -> &'static [Param] {
        &[Param {
            name: "assertion",
            description: "jwt-bearer: an ID-JAG (`oauth-id-jag+jwt`), a workload token, or the \
                          client's own signed JWT",
        }]
    }

    /// A client's own assertion needs no configuration, so the grant is always served.
    fn enabled(&self, _config: &Config) -> bool {
        true
    }

    /// ID-JAGs (draft-ietf-oauth-identity-assertion-authz-grant) only with a trusted IdP.
    fn metadata(&self, c: &Advertised<'_>, m: &mut Map<String, Value>) {
        if c.id_jag_trusted {
            m.insert(
                "authorization_grant_profiles_supported".into(),
                json!([id_jag::GRANT_PROFILE]),
            );
        }
    }

    async fn assertion_client(
        &self,
        ctx: &Context,
        form: &Form,
    ) -> Result<Option<Client>, OAuthError> {
        let Some(assertion) = form.get("assertion") else {
            return Ok(None);
        };
        if is_id_jag(assertion)? {
            return Ok(None);
        }
        let (iss, sub) = claimed_iss_sub(assertion)?;
        if let Some(w) = workload::trusted(&ctx.config.workload_identity, &iss) {
            return workload::authenticate(ctx, w, assertion).await.map(Some);
        }
        if sub.as_deref() == Some(iss.as_str()) {
            let client = match ctx.clients.find(&iss).await {
                Ok(Some(c)) => c,
                Ok(None) => return Err(refused("the assertion names an unknown client")),
                Err(ClientLookupError::Store(e)) => return Err(e.into()),
                Err(ClientLookupError::Document(e)) => return Err(refused(e.public())),
            };
            return match ctx.assertions.verify(&client, assertion).await {
                Ok(()) => Ok(Some(client)),
                Err(AssertionError::Store(e)) => Err(e.into()),
                Err(e) => Err(refused(
                    e.to_string().replace("client_assertion", "assertion"),
                )),
            };
        }
        Err(refused(
            "the assertion's typ is not oauth-id-jag+jwt (an ID-JAG), its issuer is not a \
             trusted workload issuer, and it is not signed by a client for itself \
             (iss = sub = its client_id)",
        ))
    }

    async fn issue(
        &self,
        ctx: &Context,
        req: &TokenRequest<'_>,
    ) -> Result<TokenResponse, OAuthError> {
        let assertion = req
            .form
            .get("assertion")
            .ok_or_else(|| OAuthError::invalid_request("assertion is missing"))?;
        if is_id_jag(assertion)? {
            return id_jag::redeem(ctx, req.client, req.form, req.dpop_jkt).await;
        }
        // Any other assertion authenticated the client before it got here.
        if !req.by_assertion {
            return Err(OAuthError::internal("an assertion that was not checked"));
        }
        client_credentials::machine_token(ctx, req).await
    }
}
