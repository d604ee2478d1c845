//! Asynchronous approval (OpenID Connect CIBA, poll mode): `POST /bc-authorize`, where a
//! client asks for a user's approval, and `/account/approvals`, where the user sees what is
//! waiting and decides. The decisions are in `oauth::ciba`; polling is the token endpoint's
//! `urn:openid:params:grant-type:ciba` grant.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use minijinja::context;
use serde::Deserialize;

use crate::error::OAuthError;
use crate::http::ClientAddr;
use crate::oauth::authn::acr::Level;
use crate::oauth::ciba::{self, Decided};
use crate::state::AppState;
use crate::ui::see_other;
use crate::util;

/// `POST /bc-authorize` (CIBA Core §7).
#[utoipa::path(post, path = "/bc-authorize", tag = "oauth",
    description = "Backchannel authentication: ask for a user's approval (OpenID Connect CIBA Core §7.1, poll mode).",
    request_body(content = crate::endpoints::schemas::BackchannelAuthenticationRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The request waits for the user (CIBA Core §7.3)", body = crate::endpoints::schemas::BackchannelAuthenticationResponse),
        (status = 400, description = "CIBA Core §13 error", body = crate::endpoints::schemas::OAuthErrorResponse),
        (status = 401, description = "Client authentication failed", body = crate::endpoints::schemas::OAuthErrorResponse),
    ))]
pub async fn authorize(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let (form, client) = super::client_form(&state, &headers, body).await?;
    let answer = ciba::start(&state.oauth, &client, &form, addr).await?;
    Ok(super::no_store_json(answer))
}

#[derive(Deserialize)]
pub struct PageQuery {
    /// `approved` or `denied`: what the user just did.
    done: Option<String>,
}

/// `GET /account/approvals`: what agents wait for the user to approve. The page reloads
/// itself, so a request appears while the user looks at it.
pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    let (session, user) = match super::current_session(&state, &headers).await {
        Ok(Some(signed_in)) => signed_in,
        Ok(None) => {
            return super::to_signin(&state, &state.web.path("/account/approvals"), None, None);
        }
        Err(page) => return *page,
    };
    let ctx = &state.oauth;
    let pending = match ciba::pending_for(ctx, &user.id).await {
        Ok(p) => p,
        Err(e) => return state.web.internal_error(e.description),
    };
    let level = Level::of_session(session.acr.as_deref(), &session.amr);
    let requests: Vec<_> = pending
        .iter()
        .map(|p| {
            let resources: Vec<_> = p
                .resources
                .iter()
                .map(|r| context! { name => r.name, uri => r.uri.as_str() })
                .collect();
            let details: Vec<_> = p
                .details
                .iter()
                .map(|d| context! { text => d.text, arguments => d.arguments })
                .collect();
            context! {
                id => p.request.id,
                client_name => p.client.display_name(),
                client_id => p.client.client_id,
                binding_message => p.request.binding_message,
                scopes => p.scope.tokens().to_vec(),
                resources => resources,
                details => details,
                asked => util::rfc3339(p.request.created_at),
                expires => util::rfc3339(p.request.expires_at),
                step_up => p.required.filter(|l| level < *l).map(Level::words),
            }
        })
        .collect();
    let web = &state.web;
    let browser = web.browser(&headers);
    let page = web.render(
        StatusCode::OK,
        "approvals.html",
        context! {
            base => web.base_path(),
            username => user.username,
            requests => requests,
            done => q.done.as_deref().filter(|d| matches!(*d, "approved" | "denied")),
            csrf => web.csrf(&browser),
        },
    );
    browser.apply(page)
}

/// `POST /account/approvals/decide`: approve or deny one request (`id`, `decision`).
pub async fn decide(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match state.web.posted_form(&headers, &body) {
        Ok(f) => f,
        Err(page) => return *page,
    };
    let session = match super::session_for_post(&state, &headers, "Sign in and try again.").await {
        Ok(s) => s,
        Err(page) => return *page,
    };
    let (Some(id), Some(decision)) = (form.get("id"), form.get("decision")) else {
        return state
            .web
            .error_page(StatusCode::BAD_REQUEST, "Choose a request and a decision.");
    };
    let approve = match decision {
        "approve" => true,
        "deny" => false,
        _ => {
            return state
                .web
                .error_page(StatusCode::BAD_REQUEST, "Approve or deny: nothing else.");
        }
    };
    let back = state.web.path("/account/approvals");
    match ciba::decide(&state.oauth, &session, id, approve).await {
        Ok(Decided::Done) => see_other(&format!(
            "{back}?done={}",
            if approve { "approved" } else { "denied" }
        )),
        Ok(Decided::Gone) => state.web.error_page(
            StatusCode::BAD_REQUEST,
            "That request is no longer waiting for a decision: it was decided elsewhere, or it expired.",
        ),
        Ok(Decided::SignInAgain(level)) => super::to_signin(&state, &back, None, Some(level)),
        Err(e) => state.web.internal_error(e.description),
    }
}
