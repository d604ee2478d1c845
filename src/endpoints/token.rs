//! `POST /token` (RFC 6749 §3.2): parse, check the DPoP proof, authenticate the client, hand
//! to the grant the registry names, and record what was issued.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::audit::Event;
use crate::error::{ErrorCode, OAuthError};
use crate::http::{ClientAddr, form_body};
use crate::oauth::client_auth::{self, authenticate_client};
use crate::oauth::grants::{Grant, TokenRequest};
use crate::oauth::tokens::{Issued, TokenResponse};
use crate::oauth::{Context, dpop};
use crate::state::AppState;

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
    let ctx = &state.oauth;
    let result = issue(&state, addr, &headers, body).await;
    // RFC 9449 §8: with nonces required, every answer carries a fresh one.
    let nonce = ctx
        .config
        .dpop
        .require_nonce
        .then(|| dpop::current_nonce(ctx.keys.kek(), &ctx.config.dpop, ctx.now()));
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
    let ctx = &state.oauth;
    ctx.request_limits.address(addr, ctx.now())?;
    let form = form_body(headers, body)?;
    // The client as claimed, for the access log; replaced by the authenticated one below.
    if let Some(claimed) = form.get("client_id") {
        crate::http::access::note_client(claimed);
    }
    let name = form
        .get("grant_type")
        .ok_or_else(|| OAuthError::invalid_request("grant_type is missing"))?;
    let unsupported = |d: String| OAuthError::new(ErrorCode::UnsupportedGrantType, d);
    ctx.grants.check_registrable(name).map_err(unsupported)?;
    let grant = ctx
        .grants
        .find(name, &ctx.config)
        .ok_or_else(|| unsupported(format!("'{name}' is not supported by this server yet")))?;
    tracing::Span::current().record("grant_type", grant.grant_type());

    // The DPoP proof before client authentication, so a client asked for a nonce has not
    // spent its client assertion yet (RFC 9449 §5, §8).
    let proof = dpop::check(
        ctx,
        headers,
        dpop::Expect {
            method: "POST",
            url: &ctx.url("/token"),
            access_token: None,
            nonce: ctx.config.dpop.require_nonce,
        },
    )
    .await?;
    let (client, by_assertion) = match grant.assertion_client(ctx, &form).await? {
        Some(c) => {
            client_auth::only_the_assertion(headers, &form, &c.client_id)?;
            (c, true)
        }
        None => (authenticate_client(ctx, headers, &form).await?, false),
    };
    tracing::Span::current().record("client_id", client.client_id.as_str());
    crate::http::access::note_client(&client.client_id);
    ctx.request_limits.client(&client.client_id, ctx.now())?;
    if !client.metadata.has_grant(grant.grant_type()) {
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
    let request = TokenRequest {
        client: &client,
        form: &form,
        dpop_jkt: proof.as_ref().map(|p| p.jkt.as_str()),
        by_assertion,
    };
    let response = grant.issue(ctx, &request).await?;
    note_use(state, &client).await;
    record_issue(state, &client.client_id, grant, &response, addr);

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
    issued: &'a Issued,
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_token_type: Option<&'static str>,
    refresh_token_issued: bool,
}

/// The audit log's line and the metrics for an issued token, as the grant describes them.
fn record_issue(
    state: &AppState,
    client_id: &str,
    grant: &dyn Grant,
    response: &TokenResponse,
    addr: Option<std::net::IpAddr>,
) {
    let i = &response.issued;
    // Access tokens only: an ID-JAG (`token_type: N_A`) is an assertion for another server,
    // whose `aud` is that server's issuer, not one of our resources; its audit event counts it.
    if response.token_type != "N_A" {
        for resource in &i.audience {
            state.metrics.token_issued(grant.grant_type(), resource);
        }
    }
    let user = grant.acts_for_user().then_some(i.sub.as_str());
    let detail = IssueDetail {
        grant_type: grant.grant_type(),
        issued: i,
        issued_token_type: response.issued_token_type,
        refresh_token_issued: response.refresh_token.is_some(),
    };
    state.oauth.audit.record(
        Event::new(grant.audit_kind())
            .client(client_id)
            .user_opt(user)
            .ip(addr)
            .detail(&detail),
    );
}

/// Record that a stored client was used (ending its unused-registration expiry), at most
/// hourly. A client's first use is written before its tokens are answered, so a registration
/// holding a grant does not expire unused; later ones off the request path: issuing a token
/// needs no synchronous write.
async fn note_use(state: &AppState, client: &crate::oauth::clients::Client) {
    let ctx: &Context = &state.oauth;
    let now = ctx.now();
    if !ctx.clients.note_use(client, now) {
        return;
    }
    let store = state.store.clone();
    let id = client.client_id.clone();
    if client.last_used_at.is_none() {
        // A failure is logged, not answered: the tokens are issued. The sweeper keeps a
        // registration with a live refresh token anyway.
        if let Err(e) = store.touch_client(&id, now).await {
            tracing::warn!(error = %e, "recording client use failed");
        }
        return;
    }
    tokio::spawn(async move {
        if let Err(e) = store.touch_client(&id, now).await {
            tracing::warn!(error = %e, "recording client use failed");
        }
    });
}
