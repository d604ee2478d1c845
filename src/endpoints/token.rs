//! `POST /token` (RFC 6749 §3.2): parse, authenticate the client, hand to the grant.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::ClientAddr;
use crate::audit::{Event, Kind};
use crate::error::{ErrorCode, OAuthError};
use crate::oauth::dpop;
use crate::oauth::grants::{self, GrantType};
use crate::startup::AppState;
use crate::util;

#[utoipa::path(post, path = "/token", tag = "oauth",
    description = "The token endpoint (RFC 6749 §3.2): every grant Concierge implements.",
    request_body(content = crate::endpoints::schemas::TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Tokens (RFC 6749 §5.1); `Cache-Control: no-store`", body = crate::endpoints::schemas::TokenResponse),
        (status = 400, description = "RFC 6749 §5.2 error", body = crate::endpoints::schemas::OAuthErrorResponse),
        (status = 401, description = "Client authentication failed", body = crate::endpoints::schemas::OAuthErrorResponse),
        (status = 429, description = "Rate limited", body = crate::endpoints::schemas::OAuthErrorResponse),
    ))]
/// The span records the grant decision: the grant type, the client and, on refusal, the RFC
/// error (its description never holds a secret).
#[tracing::instrument(
    name = "token_request",
    level = "debug",
    skip_all,
    fields(grant_type = tracing::field::Empty, client_id = tracing::field::Empty),
    err(Display, level = "info")
)]
pub async fn token(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let result = issue(&state, addr, &headers, body).await;
    // RFC 9449 §8: with nonces required, every answer carries a fresh one.
    let nonce = state
        .config
        .dpop
        .require_nonce
        .then(|| dpop::current_nonce(state.keys.kek(), &state.config.dpop, util::now()));
    match result {
        Ok(mut res) => {
            if let Some(v) = nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
                res.headers_mut().insert(dpop::NONCE_HEADER, v);
            }
            Ok(res)
        }
        Err(mut e) => {
            e.dpop_nonce = e.dpop_nonce.or(nonce);
            Err(e)
        }
    }
}

async fn issue(
    state: &AppState,
    addr: Option<std::net::IpAddr>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let form = super::form_body(headers, body)?;
    let name = form
        .get("grant_type")
        .ok_or_else(|| OAuthError::invalid_request("grant_type is missing"))?;
    let unsupported = |d: String| OAuthError::new(ErrorCode::UnsupportedGrantType, d);
    let grant_type = GrantType::parse(name).map_err(unsupported)?;
    tracing::Span::current().record("grant_type", grant_type.as_str());
    let grant = grants::find(grant_type, &state.config)
        .ok_or_else(|| unsupported(format!("'{name}' is not supported by this server yet")))?;

    // The DPoP proof before client authentication, so a client asked for a nonce has not
    // spent its client assertion yet (RFC 9449 §5, §8).
    let token_url = format!("{}/token", state.issuer);
    let proof = dpop::check(
        state,
        headers,
        dpop::Expect {
            method: "POST",
            url: &token_url,
            access_token: None,
            nonce: state.config.dpop.require_nonce,
        },
    )
    .await?;
    let client = super::authenticated_client(state, headers, &form).await?;
    tracing::Span::current().record("client_id", client.client_id.as_str());
    if !client.metadata.grant_types.contains(&grant_type) {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            format!("this client did not register the grant type {name}"),
        ));
    }
    if proof.is_none() && client.metadata.dpop_bound_access_tokens {
        return Err(OAuthError::invalid_dpop_proof(
            "this client registered dpop_bound_access_tokens: send a DPoP proof (RFC 9449 §5.2)",
        ));
    }
    let jkt = proof.as_ref().map(|p| p.jkt.as_str());
    let response = grant.exchange(state, &client, &form, jkt).await?;
    note_use(state, &client);
    record_issue(state, &client.client_id, grant_type, &response, addr);

    let mut res = Json(response).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(res)
}

/// The audit detail of an issued token, serialised straight from the response: this runs
/// for every token issued, so no `serde_json::Value` is built on the way.
#[derive(serde::Serialize)]
struct IssueDetail<'a> {
    grant_type: &'static str,
    #[serde(flatten)]
    issued: &'a crate::oauth::tokens::Issued,
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_token_type: Option<&'static str>,
    refresh_token_issued: bool,
}

/// The audit log's line for an issued token: exchanges with their `act` chain (RFC 8693
/// §4.1), every other grant as `token.issued`.
fn record_issue(
    state: &AppState,
    client_id: &str,
    grant_type: GrantType,
    response: &crate::oauth::tokens::TokenResponse,
    addr: Option<std::net::IpAddr>,
) {
    let kind = match grant_type {
        GrantType::TokenExchange => Kind::TokenExchanged,
        _ => Kind::TokenIssued,
    };
    let i = &response.issued;
    // Access tokens only: an ID-JAG (`token_type: N_A`) is an assertion for another server,
    // whose `aud` is that server's issuer, not one of our resources; its audit event counts it.
    if response.token_type != "N_A" {
        for resource in &i.audience {
            state.metrics.token_issued(grant_type.as_str(), resource);
        }
    }
    // A client's own token (client credentials) has the client as `sub`, not a user.
    let user = (grant_type != GrantType::ClientCredentials).then_some(i.sub.as_str());
    let detail = IssueDetail {
        grant_type: grant_type.as_str(),
        issued: i,
        issued_token_type: response.issued_token_type,
        refresh_token_issued: response.refresh_token.is_some(),
    };
    state.audit.record(
        Event::new(kind)
            .client(client_id)
            .user_opt(user)
            .ip(addr)
            .detail(&detail),
    );
}

/// Record that a stored client was used (ending its unused-registration expiry), at most
/// hourly and off the request path: issuing a token needs no synchronous write.
fn note_use(state: &AppState, client: &crate::oauth::clients::Client) {
    let now = util::now();
    if !state.clients.note_use(client, now) {
        return;
    }
    let store = state.store.clone();
    let id = client.client_id.clone();
    tokio::spawn(async move {
        if let Err(e) = store.touch_client(&id, now).await {
            tracing::warn!(error = %e, "recording client use failed");
        }
    });
}
