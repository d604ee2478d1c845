//! `POST /register` (RFC 7591) and `GET|PUT|DELETE /register/{client_id}` (RFC 7592).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::audit::{Event, Kind};
use crate::error::{ErrorCode, OAuthError};
use crate::http::{ClientAddr, bearer_token, has_content_type};
use crate::oauth::client_metadata::{self, MAX_BODY_BYTES, Origin, RawClientMetadata};
use crate::oauth::registration::{self, apply_update, client_information, new_client};
use crate::state::AppState;
use crate::store::{ClientKind, ClientRecord};
use crate::util;

/// RFC 7591 §3.2.1: 201 with the client information; never cached.
fn json_response(status: StatusCode, body: Value) -> Response {
    let mut res = (status, Json(body)).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The body as JSON bytes, or the RFC 7591 error for a wrong type or size.
fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, OAuthError> {
    let is_json = has_content_type(headers, "application/json");
    if !is_json {
        return Err(OAuthError::invalid_client_metadata(
            "the request must have Content-Type: application/json",
        ));
    }
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            OAuthError::invalid_client_metadata(format!(
                "the body is larger than {} KiB",
                MAX_BODY_BYTES / 1024
            ))
        } else {
            OAuthError::invalid_client_metadata(format!("the body could not be read: {e}"))
        }
    })
}

/// `POST /register`.
#[utoipa::path(post, path = "/register", tag = "oauth",
    description = "Dynamic client registration (RFC 7591 §3).",
    request_body(content = crate::oauth::client_metadata::RawClientMetadata, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered (RFC 7591 §3.2.1)", body = crate::endpoints::schemas::ClientInformation),
        (status = 400, description = "`invalid_client_metadata` or `invalid_redirect_uri`", body = crate::endpoints::schemas::OAuthErrorResponse),
        (status = 403, description = "`access_denied`: registration is turned off", body = crate::endpoints::schemas::OAuthErrorResponse),
        (status = 429, description = "Rate limited", body = crate::endpoints::schemas::OAuthErrorResponse),
    ))]
pub async fn register(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let ctx = &state.oauth;
    let policy = &ctx.config.registration;
    if !policy.enabled {
        // Off means off: not only left out of the metadata.
        return Err(OAuthError::new(
            ErrorCode::AccessDenied,
            "dynamic client registration is turned off on this server; ask its operator for \
             a client",
        ));
    }
    if let Some(expected) = &policy.initial_access_token {
        // RFC 7591 §3: an initial access token, when the operator requires one.
        let ok = bearer_token(&headers).is_some_and(|given| {
            bool::from(util::secret_hash(given).ct_eq(&util::secret_hash(expected)))
        });
        if !ok {
            return Err(OAuthError::invalid_token(
                "registration requires a valid initial access token",
            ));
        }
    }
    let body = json_body(&headers, body)?;
    let raw = RawClientMetadata::from_json(&body)?;
    let metadata = client_metadata::validate(raw, Origin::Registration(policy), &ctx.grants)?;

    let now = ctx.now();
    let from = addr.map(|a| a.to_string());
    let ttl = i64::from(policy.unused_client_ttl_secs);
    let (record, secrets) = new_client(metadata, ClientKind::Dynamic, None, from, now, ttl);
    let event = Event::new(Kind::ClientRegistered)
        .client(&record.client_id)
        .ip(addr)
        .detail(serde_json::json!({
            "client_name": record.metadata.client_name,
            "redirect_uris": record.metadata.redirect_uris,
            "token_endpoint_auth_method": record.metadata.token_endpoint_auth_method.as_str(),
        }));
    if let Some(a) = addr {
        // Identical registrations (hosted agents: one client per user, all alike, from a few
        // egress addresses) are limited apart from distinct ones. The count, the client and
        // its audit event are one write: a refused registration stores nothing, and an
        // admitted one's answer waits for one commit.
        let fingerprint =
            registration::fingerprint(&record.metadata).map_err(OAuthError::internal)?;
        let throttle = &ctx.authn.throttle;
        let count = throttle.registration(a, &fingerprint, now);
        let counted = state
            .store
            .register_client(&record, &count, event.row())
            .await?;
        if let Err(t) = throttle.registration_verdict(&count, counted) {
            tracing::warn!(address = %a, limit = t.what(), "registration rate limit reached");
            return Err(OAuthError::rate_limited(t.what(), t.retry_after() as u64));
        }
        ctx.audit.stored(event.into_inner());
    } else {
        state.store.insert_client(&record).await?;
        ctx.audit.record(event);
    }
    crate::http::access::note_client(&record.client_id);
    tracing::info!(
        client_id = %record.client_id,
        client_name = record.metadata.client_name.as_deref().unwrap_or(""),
        auth_method = record.metadata.token_endpoint_auth_method.as_str(),
        "client registered"
    );
    let body = client_information(
        &record,
        secrets.client_secret.as_deref(),
        secrets.registration_access_token.as_deref(),
        ctx.issuer(),
    );
    Ok(json_response(StatusCode::CREATED, body))
}

/// Authenticate an RFC 7592 request: the registration access token of this client.
/// An unknown client and a wrong token answer alike (RFC 7592 §2.1: 401).
async fn authorized_client(
    state: &AppState,
    client_id: &str,
    headers: &HeaderMap,
) -> Result<(ClientRecord, String), OAuthError> {
    crate::http::access::note_client(client_id);
    let token = bearer_token(headers)
        .ok_or_else(|| OAuthError::invalid_token("the registration access token is missing"))?;
    let record = state
        .store
        .get_client(client_id, util::now())
        .await?
        .filter(|r| r.kind == ClientKind::Dynamic);
    match record {
        Some(r)
            if r.registration_token_hash
                .as_deref()
                .is_some_and(|h| util::verify_secret(token, h)) =>
        {
            Ok((r, token.to_string()))
        }
        _ => Err(OAuthError::invalid_token(
            "the registration access token is not valid for this client",
        )),
    }
}

/// `GET /register/{client_id}` (RFC 7592 §2.1).
#[utoipa::path(get, path = "/register/{client_id}", tag = "oauth",
    description = "Read a registration (RFC 7592 §2.1) with its registration access token.",
    params(("client_id" = String, Path)),
    security(("registration_access_token" = [])),
    responses(
        (status = 200, description = "The registration", body = crate::endpoints::schemas::ClientInformation),
        (status = 401, description = "`invalid_token`", body = crate::endpoints::schemas::OAuthErrorResponse),
    ))]
pub async fn read(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, OAuthError> {
    let (record, token) = authorized_client(&state, &client_id, &headers).await?;
    let body = client_information(&record, None, Some(&token), state.oauth.issuer());
    Ok(json_response(StatusCode::OK, body))
}

/// `PUT /register/{client_id}` (RFC 7592 §2.2): replace the metadata.
#[utoipa::path(put, path = "/register/{client_id}", tag = "oauth",
    description = "Replace a registration's metadata (RFC 7592 §2.2).",
    params(("client_id" = String, Path)),
    security(("registration_access_token" = [])),
    request_body(content = crate::oauth::client_metadata::RawClientMetadata, content_type = "application/json"),
    responses(
        (status = 200, description = "The registration as updated", body = crate::endpoints::schemas::ClientInformation),
        (status = 400, description = "`invalid_client_metadata` or `invalid_redirect_uri`", body = crate::endpoints::schemas::OAuthErrorResponse),
        (status = 401, description = "`invalid_token`", body = crate::endpoints::schemas::OAuthErrorResponse),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let (mut record, token) = authorized_client(&state, &client_id, &headers).await?;
    let body = json_body(&headers, body)?;
    let raw = RawClientMetadata::from_json(&body)?;
    if raw.client_id.as_deref() != Some(client_id.as_str()) {
        return Err(OAuthError::invalid_client_metadata(
            "client_id must be present and equal the client being updated (RFC 7592 §2.2)",
        ));
    }
    for (field, present) in [
        (
            "registration_access_token",
            raw.registration_access_token.is_some(),
        ),
        (
            "registration_client_uri",
            raw.registration_client_uri.is_some(),
        ),
        (
            "client_secret_expires_at",
            raw.client_secret_expires_at.is_some(),
        ),
        ("client_id_issued_at", raw.client_id_issued_at.is_some()),
    ] {
        if present {
            return Err(OAuthError::invalid_request(format!(
                "{field} is issued by the server and must not be sent (RFC 7592 §2.2)"
            )));
        }
    }
    if let Some(secret) = &raw.client_secret {
        let matches = record
            .secret_hash
            .as_deref()
            .is_some_and(|h| util::verify_secret(secret, h));
        if !matches {
            return Err(OAuthError::invalid_client_metadata(
                "client_secret does not match the client's current secret",
            ));
        }
    }
    let ctx = &state.oauth;
    let metadata = client_metadata::validate(
        raw,
        Origin::Registration(&ctx.config.registration),
        &ctx.grants,
    )?;
    let new_secret = apply_update(&mut record, metadata, util::now());
    let updated = state.store.update_client(&record).await?;
    ctx.clients.forget(&record.client_id);
    if !updated {
        return Err(OAuthError::invalid_token(
            "the registration access token is not valid for this client",
        ));
    }
    tracing::info!(client_id = %record.client_id, "client registration updated");
    ctx.audit
        .record(Event::new(Kind::ClientUpdated).client(&record.client_id));
    let body = client_information(&record, new_secret.as_deref(), Some(&token), ctx.issuer());
    Ok(json_response(StatusCode::OK, body))
}

/// `DELETE /register/{client_id}` (RFC 7592 §2.3): 204, and the client is gone.
#[utoipa::path(delete, path = "/register/{client_id}", tag = "oauth",
    description = "Delete a registration (RFC 7592 §2.3).",
    params(("client_id" = String, Path)),
    security(("registration_access_token" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "`invalid_token`", body = crate::endpoints::schemas::OAuthErrorResponse),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, OAuthError> {
    let (record, _) = authorized_client(&state, &client_id, &headers).await?;
    state.store.delete_client(&record.client_id).await?;
    state.oauth.clients.forget(&record.client_id);
    tracing::info!(client_id = %record.client_id, "client registration deleted");
    state
        .oauth
        .audit
        .record(Event::new(Kind::ClientDeleted).client(&record.client_id));
    Ok(StatusCode::NO_CONTENT.into_response())
}
