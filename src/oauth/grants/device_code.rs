//! The device authorization grant (RFC 8628): starting a request at the device
//! authorization endpoint (§3.1–3.2), and polling the token endpoint (§3.4–3.5), which
//! answers `authorization_pending`, `slow_down`, `expired_token` or `access_denied` until the
//! user decides; an approved code yields tokens once. The user's side is in
//! [`crate::oauth::device`].

use std::net::IpAddr;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{Map, Value};

use super::polling::{self, Approved, Polled, Redemption};
use super::{Advertised, Grant, Param, TokenRequest};
use crate::error::{ErrorCode, OAuthError};
use crate::oauth::authn::throttle::Bucket;
use crate::oauth::clients::Client;
use crate::oauth::context::Context;
use crate::oauth::device::new_user_code;
use crate::oauth::form::Form;
use crate::oauth::policy;
use crate::oauth::tokens::TokenResponse;
use crate::store::{DeviceCode, FirstRefresh, StoreError};
use crate::util;

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";

pub struct DeviceCodeGrant;

/// The device authorization response (RFC 8628 §3.2).
#[derive(Debug, Serialize)]
pub struct DeviceAuthorization {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    pub expires_in: i64,
    pub interval: i64,
}

/// A device asks for codes (RFC 8628 §3.1): the client registered the grant, the address is
/// within its limit, and the resources and scopes pass the same policy as the authorization
/// endpoint's.
pub async fn start(
    ctx: &Context,
    client: &Client,
    form: &Form,
    addr: Option<IpAddr>,
) -> Result<DeviceAuthorization, OAuthError> {
    if !client.metadata.has_grant(GRANT_TYPE) {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client did not register the device_code grant",
        ));
    }
    let now = ctx.now();
    if let Err(t) = ctx
        .authn
        .throttle
        .attempt(ctx.rate_limits(), Bucket::DeviceAuthorization(addr), now)
        .await?
    {
        return Err(OAuthError::rate_limited(
            "device authorization requests from this address",
            t.retry_after as u64,
        ));
    }
    let resources =
        policy::resources_for_user(ctx, &form.all("resource"), form.get("scope")).await?;
    let scope = policy::check_requested(client, &resources, form.get("scope"))?;
    let tokens = &ctx.config.tokens;
    let (device_code, key) = ctx.new_secret();
    let ttl = i64::from(tokens.device_code_ttl_secs);
    let interval = i64::from(tokens.device_poll_interval_secs);
    let mut record = DeviceCode {
        device_code_hash: key,
        user_code: new_user_code(),
        client_id: client.client_id.clone(),
        resources: resources.iter().map(|r| r.uri.to_string()).collect(),
        scope: scope.to_string(),
        status: "pending".into(),
        user_id: None,
        auth_time: None,
        amr: Vec::new(),
        acr: None,
        sid: None,
        interval_secs: interval,
        last_polled_at: None,
        created_at: now,
        expires_at: now + ttl,
    };
    // User codes are short: on the rare collision, draw again.
    let mut attempts = 0;
    loop {
        match ctx.devices().insert_device(&record).await {
            Ok(()) => break,
            Err(StoreError::Conflict(_)) if attempts < 5 => {
                attempts += 1;
                record.user_code = new_user_code();
            }
            Err(e) => return Err(e.into()),
        }
    }
    let verification_uri = ctx.url("/device");
    let complete = format!(
        "{verification_uri}?{}",
        serde_urlencoded::to_string([("user_code", &record.user_code)]).unwrap_or_default()
    );
    Ok(DeviceAuthorization {
        device_code,
        user_code: record.user_code,
        verification_uri,
        verification_uri_complete: complete,
        expires_in: ttl,
        interval,
    })
}

#[async_trait]
impl Grant for DeviceCodeGrant {
    fn grant_type(&self) -> &'static str {
        GRANT_TYPE
    }

    fn description(&self) -> &'static str {
        "A device polls with its device code until the user decides (RFC 8628 §3.4)"
    }

    fn parameters(&self) -> &'static [Param] {
        &[Param {
            name: "device_code",
            description: "device_code: the device code (RFC 8628 §3.4)",
        }]
    }

    fn metadata(&self, c: &Advertised<'_>, m: &mut Map<String, Value>) {
        let issuer = c.issuer;
        m.insert(
            "device_authorization_endpoint".into(),
            Value::String(format!("{issuer}/device_authorization")),
        );
    }

    async fn issue(
        &self,
        ctx: &Context,
        req: &TokenRequest<'_>,
    ) -> Result<TokenResponse, OAuthError> {
        let client = req.client;
        let raw = req
            .form
            .get("device_code")
            .ok_or_else(|| OAuthError::invalid_request("device_code is missing"))?;
        let hash = util::secret_key(raw);
        let now = ctx.now();
        // The grant's refresh token is stored by the write that spends the request: one
        // write per redemption.
        let spend = Redemption::new(ctx, req, true, now);
        // Spent first, by the one statement that also makes the checks (this client's,
        // approved, unexpired, not polled too soon): of two concurrent polls one wins, and an
        // approved request costs one write. Only a poll that spent nothing reads the request,
        // to answer why.
        let spent = ctx
            .devices()
            .redeem_device(&hash, &client.client_id, now, spend.stored_with())
            .await?;
        let d = match spent {
            Some(d) => d,
            None => spend_checked(ctx, &client.client_id, &hash, now, spend.stored_with()).await?,
        };
        let approved = Approved {
            user_id: d.user_id.as_deref(),
            auth_time: d.auth_time,
            amr: &d.amr,
            acr: d.acr.as_deref(),
            sid: d.sid.as_deref(),
            resources: &d.resources,
            scope: &d.scope,
            authorization_details: None,
        };
        spend.issue(ctx, req, approved, now).await
    }
}

/// A poll whose first spend took nothing: the request as stored says why (RFC 8628 §3.5:
/// unknown or spent, expired, polled too soon, pending or denied), the poll recorded as
/// `polling::check` says. One that passes every check now was approved after the first
/// spend: it is spent now, by the same statement.
async fn spend_checked(
    ctx: &Context,
    client_id: &str,
    hash: &[u8],
    now: i64,
    refresh: Option<(&str, &FirstRefresh)>,
) -> Result<DeviceCode, OAuthError> {
    let invalid = |d: &'static str| OAuthError::new(ErrorCode::InvalidGrant, d);
    let d = ctx
        .devices()
        .device_by_code(hash)
        .await?
        .filter(|d| d.client_id == client_id)
        .ok_or_else(|| invalid("the device_code is unknown or was already used"))?;
    let polled = Polled {
        name: "device_code",
        status: &d.status,
        interval_secs: d.interval_secs,
        last_polled_at: d.last_polled_at,
        expires_at: d.expires_at,
    };
    polling::check(now, polled, async |interval| {
        ctx.devices().record_poll(hash, now, interval).await
    })
    .await?;
    ctx.devices()
        .redeem_device(hash, client_id, now, refresh)
        .await?
        .ok_or_else(|| invalid("the device_code was already used"))
}
