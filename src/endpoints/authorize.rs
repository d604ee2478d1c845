//! `GET|POST /authorize` and `POST /authorize/decision`: the authorization endpoint
//! (OAuth 2.1 §4.1.1, OpenID Connect Core §3.1.2) and the consent form's answer.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use crate::audit::{Event, Kind};
use crate::error::ErrorCode;
use crate::oauth::authorize::{AuthorizationRequest, AuthorizeError, redirect_with, validate};
use crate::oauth::consent;
use crate::oauth::form::Form;
use crate::startup::AppState;
use crate::store::{AuthCode, Session, User};
use crate::ui::{self, see_other};
use crate::util;

#[utoipa::path(get, path = "/authorize", tag = "oauth",
    description = "The authorization endpoint (RFC 6749 §3.1): sign-in and consent pages, then a redirect with `code`, `state` and `iss` (RFC 9207).",
    params(crate::endpoints::schemas::AuthorizationRequest),
    responses(
        (status = 303, description = "To the sign-in or consent page, or back to the client's redirect URI with `code` or `error`"),
        (status = 200, description = "A page (sign-in, consent)", content_type = "text/html"),
        (status = 400, description = "An error page: the request cannot be sent back to the client", content_type = "text/html"),
    ))]
pub async fn authorize_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    run(&state, &headers, &q.unwrap_or_default()).await
}

/// OpenID Connect Core §3.1.2.1: the authorization endpoint also accepts a form POST.
#[utoipa::path(post, path = "/authorize", tag = "oauth",
    description = "The authorization endpoint with form-encoded parameters (as `GET /authorize`).",
    request_body(content = crate::endpoints::schemas::AuthorizationRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "To the sign-in or consent page, or back to the client's redirect URI"),
        (status = 400, description = "An error page", content_type = "text/html"),
    ))]
pub async fn authorize_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !super::has_content_type(&headers, "application/x-www-form-urlencoded") {
        return ui::error_page(
            &state,
            StatusCode::BAD_REQUEST,
            "The authorization request must be a form.",
        );
    }
    run(&state, &headers, &String::from_utf8_lossy(&body)).await
}

async fn run(state: &AppState, headers: &HeaderMap, raw: &str) -> Response {
    let form = match Form::parse(raw.as_bytes()) {
        Ok(f) => f,
        Err(e) => return ui::error_page(state, StatusCode::BAD_REQUEST, &e.description),
    };
    let req = match validate(state, &form).await {
        Ok(r) => r,
        Err(e) => return error_response(state, e),
    };
    let now = util::now();
    let fresh = |s: &Session| req.max_age.is_none_or(|m| now - s.auth_time <= m);
    let (session, user) = match ui::current_session(state, headers).await {
        Some((s, u)) if !req.prompt.login && fresh(&s) => (s, u),
        _ if req.prompt.none => {
            return error_response(
                state,
                req.error(ErrorCode::LoginRequired, "the user must sign in"),
            );
        }
        _ => return see_other(&signin_url(state, raw, req.login_hint.as_deref())),
    };
    let missing = match consent::missing(state, &user.id, &req.asked()).await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "loading consent");
            return error_response(
                state,
                req.error(ErrorCode::ServerError, "consent could not be checked"),
            );
        }
    };
    if missing || req.prompt.consent {
        if req.prompt.none {
            return error_response(
                state,
                req.error(
                    ErrorCode::ConsentRequired,
                    "the user must approve this request",
                ),
            );
        }
        return consent_page(state, headers, &req, &user, raw);
    }
    issue_code(state, &req, &session, &user).await
}

/// `POST /authorize/decision`: the consent form's answer. The request is checked again in
/// full; nothing is stored unless it still passes.
pub async fn decision(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match ui::posted_form(&state, &headers, &body) {
        Ok(f) => f,
        Err(page) => return *page,
    };
    let req = match validate(&state, &form).await {
        Ok(r) => r,
        Err(e) => return error_response(&state, e),
    };
    let Some((session, user)) = ui::current_session(&state, &headers).await else {
        return ui::error_page(
            &state,
            StatusCode::BAD_REQUEST,
            "You are no longer signed in. Start again from the application.",
        );
    };
    match form.get("decision") {
        Some("approve") => {}
        Some("deny") => {
            state.audit.record(
                Event::new(Kind::ConsentDenied)
                    .client(&req.client.client_id)
                    .user(&user.id),
            );
            return error_response(
                &state,
                req.error(ErrorCode::AccessDenied, "the user denied the request"),
            );
        }
        _ => return ui::error_page(&state, StatusCode::BAD_REQUEST, "Choose Allow or Deny."),
    }
    if let Err(e) = consent::save(&state, &user.id, &req.asked()).await {
        return error_response(&state, req.error(ErrorCode::ServerError, e.to_string()));
    }
    tracing::info!(client_id = %req.client.client_id, user_id = %user.id, "consent given");
    issue_code(&state, &req, &session, &user).await
}

fn error_response(state: &AppState, e: AuthorizeError) -> Response {
    match e {
        AuthorizeError::Page(message) => ui::error_page(state, StatusCode::BAD_REQUEST, &message),
        AuthorizeError::Redirect {
            redirect_uri,
            code,
            description,
            state: st,
        } => {
            let mut params = vec![
                ("error", code.as_str()),
                ("error_description", description.as_str()),
            ];
            if let Some(s) = &st {
                params.push(("state", s));
            }
            params.push(("iss", &state.issuer));
            see_other(&redirect_with(&redirect_uri, &params))
        }
    }
}

/// Sign-in, then back here. `prompt=login` and `max_age` are satisfied by that sign-in, so
/// they are dropped from the way back (otherwise it would loop).
fn signin_url(state: &AppState, raw: &str, login_hint: Option<&str>) -> String {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw).unwrap_or_default();
    let back: Vec<(String, String)> = pairs
        .into_iter()
        .filter(|(k, _)| k != "max_age")
        .filter_map(|(k, v)| {
            if k != "prompt" {
                return Some((k, v));
            }
            let rest: Vec<&str> = v
                .split(' ')
                .filter(|p| !matches!(*p, "login" | "select_account" | ""))
                .collect();
            (!rest.is_empty()).then(|| (k, rest.join(" ")))
        })
        .collect();
    let return_to = format!(
        "{}/authorize?{}",
        state.base_path,
        serde_urlencoded::to_string(&back).unwrap_or_default()
    );
    let mut q = vec![("return_to", return_to.as_str())];
    if let Some(h) = login_hint {
        q.push(("login_hint", h));
    }
    format!(
        "{}/signin?{}",
        state.base_path,
        serde_urlencoded::to_string(&q).unwrap_or_default()
    )
}

async fn issue_code(
    state: &AppState,
    req: &AuthorizationRequest,
    session: &Session,
    user: &User,
) -> Response {
    let raw = util::random_secret();
    let now = util::now();
    let code = AuthCode {
        code_hash: util::secret_hash(&raw),
        family_id: util::random_id(),
        client_id: req.client.client_id.clone(),
        user_id: user.id.clone(),
        redirect_uri: req.redirect_uri_sent.clone(),
        code_challenge: req.code_challenge.clone(),
        resources: req.resources.iter().map(|r| r.uri.to_string()).collect(),
        scope: req.scope.to_string(),
        nonce: req.nonce.clone(),
        auth_time: session.auth_time,
        sid: Some(session.sid.clone()),
        created_at: now,
        expires_at: now + i64::from(state.config.tokens.code_ttl_secs),
        dpop_jkt: req.dpop_jkt.clone(),
    };
    if let Err(e) = state.store.insert_code(&code).await {
        tracing::error!(error = %e, "storing an authorization code");
        return error_response(
            state,
            req.error(ErrorCode::ServerError, "the code could not be issued"),
        );
    }
    let mut params = vec![("code", raw.as_str())];
    if let Some(s) = &req.state {
        params.push(("state", s));
    }
    params.push(("iss", &state.issuer));
    see_other(&redirect_with(&req.redirect_uri, &params))
}

fn consent_page(
    state: &AppState,
    headers: &HeaderMap,
    req: &AuthorizationRequest,
    user: &User,
    raw: &str,
) -> Response {
    let params: Vec<(String, String)> = serde_urlencoded::from_str::<Vec<(String, String)>>(raw)
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, v)| !v.is_empty() && k != "csrf" && k != "decision")
        .collect();
    ui::consent::render(
        state,
        headers,
        ui::consent::ConsentView {
            asked: req.asked(),
            client: &req.client,
            user,
            redirect_uri: Some(&req.redirect_uri),
            action: "/authorize/decision",
            params,
        },
    )
}
