//! The device authorization grant's two halves (RFC 8628): `POST /device_authorization`,
//! where a device asks for codes, and `/device`, where its user enters the user code, signs
//! in and sees the same consent screen as the code flow. The decisions are in
//! `oauth::grants::device_code` and `oauth::device`.

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
use crate::oauth::authn::throttle::Throttled;
use crate::oauth::authorize::Asked;
use crate::oauth::device::{self, LookupError};
use crate::oauth::grants::device_code;
use crate::state::AppState;
use crate::ui::{self, see_other};

/// `POST /device_authorization` (RFC 8628 §3.1–3.2).
#[utoipa::path(post, path = "/device_authorization", tag = "oauth",
    description = "Device authorization (RFC 8628 §3.1).",
    request_body(content = crate::endpoints::schemas::DeviceAuthorizationRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Codes for the device and the user (RFC 8628 §3.2)", body = crate::endpoints::schemas::DeviceAuthorizationResponse),
        (status = 400, description = "RFC 6749 §5.2 error", body = crate::endpoints::schemas::OAuthErrorResponse),
        (status = 401, description = "Client authentication failed", body = crate::endpoints::schemas::OAuthErrorResponse),
    ))]
pub async fn authorization(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let (form, client) = super::client_form(&state, &headers, body).await?;
    let answer = device_code::start(&state.oauth, &client, &form, addr).await?;
    Ok(super::no_store_json(answer))
}

#[derive(Deserialize)]
pub struct DeviceQuery {
    user_code: Option<String>,
}

fn device_page(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    user_code: &str,
    error: Option<&str>,
    done: Option<&str>,
) -> Response {
    let web = &state.web;
    let browser = web.browser(headers);
    let page = web.render(
        status,
        "device.html",
        context! {
            base => web.base_path(),
            csrf => web.csrf(&browser),
            user_code => user_code,
            error => error,
            done => done,
        },
    );
    browser.apply(page)
}

/// This address guessed wrong too often (RFC 8628 §5.1).
fn too_many_guesses(state: &AppState, headers: &HeaderMap, typed: &str, t: Throttled) -> Response {
    let minutes = (t.retry_after + 59) / 60;
    device_page(
        state,
        headers,
        StatusCode::TOO_MANY_REQUESTS,
        typed,
        Some(&format!(
            "Too many wrong codes. Try again in {minutes} minutes."
        )),
        None,
    )
}

/// `GET /device[?user_code=…]`: enter a code, or see what the device asks.
pub async fn page(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    Query(q): Query<DeviceQuery>,
) -> Response {
    let (session, user) = match super::current_session(&state, &headers).await {
        Ok(Some(signed_in)) => signed_in,
        Ok(None) => {
            let mut back = state.web.path("/device");
            if let Some(c) = &q.user_code {
                back.push('?');
                back.push_str(&serde_urlencoded::to_string([("user_code", c)]).unwrap_or_default());
            }
            return super::to_signin(&state, &back, None, None);
        }
        Err(page) => return *page,
    };
    let Some(typed) = q.user_code else {
        return device_page(&state, &headers, StatusCode::OK, "", None, None);
    };
    let request = match device::find_pending(&state.oauth, &typed, addr).await {
        Ok(r) => r,
        Err(LookupError::Throttled(t)) => return too_many_guesses(&state, &headers, &typed, t),
        Err(LookupError::NotFound) => {
            return device_page(
                &state,
                &headers,
                StatusCode::BAD_REQUEST,
                &typed,
                Some("That code is not valid, or it expired. Check your device."),
                None,
            );
        }
        Err(LookupError::Store(e)) => return state.web.internal_error(e),
    };
    let client = match state.oauth.clients.find(&request.client_id).await {
        Ok(Some(c)) => c,
        _ => {
            return state.web.error_page(
                StatusCode::BAD_REQUEST,
                "The application that asked no longer exists.",
            );
        }
    };
    let (resources, scope) = match device::asked(&state.oauth, &request).await {
        Ok(x) => x,
        Err(e) => {
            return state
                .web
                .error_page(StatusCode::BAD_REQUEST, &e.description);
        }
    };
    // A session weaker than the request needs signs in again, as strongly, and comes back.
    match device::required_level(&state.oauth, &request, &resources).await {
        Ok(Some(level)) if Level::of_session(session.acr.as_deref(), &session.amr) < level => {
            let back = format!(
                "{}?{}",
                state.web.path("/device"),
                serde_urlencoded::to_string([("user_code", &request.user_code)])
                    .unwrap_or_default()
            );
            return super::to_signin(&state, &back, None, Some(level));
        }
        Ok(_) => {}
        Err(e) => return state.web.internal_error(e.description),
    }
    ui::consent::render(
        &state.web,
        &headers,
        ui::consent::ConsentView {
            asked: Asked {
                client_id: &client.client_id,
                resources: &resources,
                scope: &scope,
                details: None,
            },
            client: &client,
            user: &user,
            redirect_uri: None,
            user_code: Some(&request.user_code),
            action: "/device/decision",
            params: vec![
                ("user_code", request.user_code.clone()),
                (
                    "entry",
                    device::entry_tag(&state.oauth, &session.sid, &request.user_code),
                ),
            ],
        },
    )
}

/// `POST /device`: the code form; on to the consent screen for that code.
pub async fn enter(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match state.web.posted_form(&headers, &body) {
        Ok(f) => f,
        Err(page) => return *page,
    };
    let typed = form.get("user_code").unwrap_or("");
    see_other(&format!(
        "{}?{}",
        state.web.path("/device"),
        serde_urlencoded::to_string([("user_code", typed)]).unwrap_or_default()
    ))
}

/// `POST /device/decision`: the consent form's answer for a device, for a code this
/// session entered.
pub async fn decision(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match state.web.posted_form(&headers, &body) {
        Ok(f) => f,
        Err(page) => return *page,
    };
    let session = match super::session_for_post(&state, &headers, "Start again.").await {
        Ok(s) => s,
        Err(page) => return *page,
    };
    let no_longer = |state: &AppState| {
        device_page(
            state,
            &headers,
            StatusCode::BAD_REQUEST,
            "",
            Some("That code is no longer waiting for a decision."),
            None,
        )
    };
    let ctx = &state.oauth;
    let (Some(code), Some(tag)) = (form.get("user_code"), form.get("entry")) else {
        return no_longer(&state);
    };
    let request = match device::for_decision(ctx, &session, code, tag, addr).await {
        Ok(r) => r,
        Err(LookupError::Throttled(t)) => return too_many_guesses(&state, &headers, "", t),
        Err(LookupError::NotFound) => return no_longer(&state),
        Err(LookupError::Store(e)) => return state.web.internal_error(e),
    };
    let approve = match form.get("decision") {
        Some("approve") => true,
        Some("deny") => false,
        _ => {
            return state
                .web
                .error_page(StatusCode::BAD_REQUEST, "Choose Allow or Deny.");
        }
    };
    // The scopes the user left ticked (the stored request's, narrowed).
    let granted = crate::oauth::consent::chosen_in(
        &crate::oauth::scope::Scope::parse(&request.scope).unwrap_or_default(),
        &form,
    );
    match device::decide(ctx, &request, &session, approve, &granted).await {
        Ok(true) => {
            let done = if approve {
                "Your device is connected"
            } else {
                "Access denied"
            };
            device_page(&state, &headers, StatusCode::OK, "", None, Some(done))
        }
        Ok(false) => no_longer(&state),
        Err(e) if e.code == crate::error::ErrorCode::ServerError => state
            .web
            .error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.description),
        Err(e) => state
            .web
            .error_page(StatusCode::BAD_REQUEST, &e.description),
    }
}
