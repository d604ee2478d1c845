//! The authorization endpoint (OAuth 2.1 §4.1.1, OpenID Connect Core §3.1.2) and its steps:
//! `GET|POST /authorize` checks the request once; the checked request then travels signed to
//! sign-in and back (`GET /authorize/continue`) and through the consent page to
//! `POST /authorize/decision`. What to do at each step is decided in `oauth::authorize`.

use axum::body::Bytes;
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use crate::http::has_content_type;
use crate::oauth::authorize::{
    self, AuthorizationRequest, AuthorizeError, Next, error_redirect, next_step,
};
use crate::oauth::consent;
use crate::oauth::form::Form;
use crate::state::AppState;
use crate::store::{Session, User};
use crate::ui::{self, see_other};

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
    start(&state, &headers, q.unwrap_or_default().as_bytes()).await
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
    if !has_content_type(&headers, "application/x-www-form-urlencoded") {
        return state.web.error_page(
            StatusCode::BAD_REQUEST,
            "The authorization request must be a form.",
        );
    }
    start(&state, &headers, &body).await
}

/// The request as sent: checked once, then on to the next step.
async fn start(state: &AppState, headers: &HeaderMap, raw: &[u8]) -> Response {
    let form = match Form::parse(raw) {
        Ok(f) => f,
        Err(e) => {
            return state
                .web
                .error_page(StatusCode::BAD_REQUEST, &e.description);
        }
    };
    if let Some(client_id) = form.get("client_id") {
        crate::http::access::note_client(client_id);
    }
    match authorize::validate(&state.oauth, &form).await {
        Ok(req) => proceed(state, headers, req).await,
        Err(e) => error_response(state, e),
    }
}

/// The signed request, carried back from sign-in.
#[derive(Deserialize)]
pub struct Carried {
    request: Option<String>,
}

/// `GET /authorize/continue?request=…`: where sign-in sends the browser back.
pub async fn resume(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<Carried>,
) -> Response {
    let Some(sealed) = q.request else {
        return state.web.error_page(
            StatusCode::BAD_REQUEST,
            "The link is incomplete. Start again from the application.",
        );
    };
    match authorize::unseal(&state.oauth, &sealed).await {
        Ok(req) => proceed(&state, &headers, req).await,
        Err(e) => error_response(&state, e),
    }
}

/// The next step for a checked request: sign-in, the consent page, or the code.
async fn proceed(state: &AppState, headers: &HeaderMap, req: AuthorizationRequest) -> Response {
    let signed_in = match super::signed_in(state, headers, Some(&req.client.client_id)).await {
        Ok(s) => s,
        Err(page) => return *page,
    };
    match next_step(&state.oauth, &req, signed_in.as_ref()).await {
        Ok(Next::SignIn(level)) => {
            // The way back carries the request as checked; the sign-in about to happen
            // satisfies `prompt=login` and `max_age`.
            let back = format!(
                "{}?{}",
                state.web.path("/authorize/continue"),
                serde_urlencoded::to_string([(
                    "request",
                    req.clone().signed_in().seal(&state.oauth)
                )])
                .unwrap_or_default()
            );
            super::to_signin(state, &back, req.login_hint.as_deref(), Some(level))
        }
        Ok(Next::Consent) => match &signed_in {
            Some(s) => consent_page(state, headers, &req, &s.user),
            None => state.web.internal_error("consent asked without a session"),
        },
        Ok(Next::Redirect(to)) => see_other(&to),
        Err(e) => error_response(state, e),
    }
}

/// `POST /authorize/decision`: the consent form's answer, with the request it was shown.
pub async fn decision(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match state.web.posted_form(&headers, &body) {
        Ok(f) => f,
        Err(page) => return *page,
    };
    let Some(sealed) = form.get("request") else {
        return state
            .web
            .error_page(StatusCode::BAD_REQUEST, "The form is incomplete.");
    };
    let req = match authorize::unseal(&state.oauth, sealed).await {
        Ok(r) => r,
        Err(e) => return error_response(&state, e),
    };
    let session: Session = match super::session_for_post(
        &state,
        &headers,
        "Start again from the application.",
    )
    .await
    {
        Ok(s) => s,
        Err(page) => return *page,
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
    let mut req = req;
    req.scope = consent::chosen_in(&req.scope, &form);
    match authorize::decide(&state.oauth, req, &session, approve).await {
        Ok(Next::Redirect(to)) => see_other(&to),
        Ok(_) => state
            .web
            .internal_error("a decision that needs another step"),
        Err(e) => error_response(&state, e),
    }
}

fn error_response(state: &AppState, e: AuthorizeError) -> Response {
    match e {
        AuthorizeError::Page(message) => state.web.error_page(StatusCode::BAD_REQUEST, &message),
        AuthorizeError::Internal(message) => state.web.error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("Something went wrong on our side: {message}."),
        ),
        AuthorizeError::Redirect {
            redirect_uri,
            code,
            description,
            state: st,
        } => see_other(&error_redirect(
            &state.oauth,
            &redirect_uri,
            code,
            &description,
            st.as_deref(),
        )),
    }
}

fn consent_page(
    state: &AppState,
    headers: &HeaderMap,
    req: &AuthorizationRequest,
    user: &User,
) -> Response {
    ui::consent::render(
        &state.web,
        headers,
        ui::consent::ConsentView {
            asked: req.asked(),
            client: &req.client,
            user,
            redirect_uri: Some(&req.redirect_uri),
            user_code: None,
            action: "/authorize/decision",
            params: vec![("request", req.seal(&state.oauth))],
        },
    )
}
