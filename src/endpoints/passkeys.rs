//! Passkeys from the pages: the JSON endpoints `/static/passkey.js` calls for each WebAuthn
//! ceremony, and the account page's forms to rename and remove passkeys. What a passkey
//! proves, and every check of a ceremony, is decided in `oauth::authn::passkey`.
//!
//! The JSON endpoints are same-origin POSTs: the page's anti-forgery token comes in the
//! `X-CSRF-Token` header, the body is JSON, and every refusal is an RFC 6749-style error
//! object (`error`, `error_description`), never a page. An account change needs a recent
//! sign-in; an older session gets `login_required` with the sign-in page to go to.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::{Value, context};
use serde::Deserialize;

use crate::http::ClientAddr;
use crate::oauth::authn::passkey::{self, PasskeyError};
use crate::oauth::authn::{self, SignedIn, SigninError};
use crate::state::AppState;
use crate::ui::{Browser, see_other};
use crate::util;

/// The header carrying the page's anti-forgery token.
const CSRF_HEADER: &str = "x-csrf-token";

/// What the script posts; each endpoint reads its part.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Posted {
    /// The ceremony id the options came with.
    ceremony: String,
    /// The browser's answer (`PublicKeyCredential` as JSON).
    credential: serde_json::Value,
    /// The carried half-done sign-in (second step).
    pending: String,
    /// Where the sign-in goes back to.
    return_to: String,
    /// A new passkey's name.
    name: String,
}

/// A JSON answer that no cache keeps.
fn json(status: StatusCode, body: serde_json::Value) -> Response {
    let mut res = (status, axum::Json(body)).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn error(status: StatusCode, code: &str, description: &str) -> Response {
    json(
        status,
        serde_json::json!({ "error": code, "error_description": description }),
    )
}

/// The answer to a refused ceremony.
fn refusal(e: PasskeyError) -> Response {
    let bad = StatusCode::BAD_REQUEST;
    match e {
        PasskeyError::Unavailable | PasskeyError::CeremonyExpired | PasskeyError::BadName => {
            error(bad, "invalid_request", &e.to_string())
        }
        PasskeyError::Refused | PasskeyError::UnknownPasskey => error(
            StatusCode::UNAUTHORIZED,
            "access_denied",
            "That passkey was not accepted. Try again, or use another way to sign in.",
        ),
        PasskeyError::Duplicate => error(StatusCode::CONFLICT, "invalid_request", &e.to_string()),
        PasskeyError::LastFactor => error(StatusCode::FORBIDDEN, "access_denied", &e.to_string()),
        PasskeyError::Signin(SigninError::Throttled(t)) => {
            let wait = t.retry_after().max(1);
            let mut res = error(
                StatusCode::TOO_MANY_REQUESTS,
                "slow_down",
                &format!("Too many failed attempts. Try again in {wait} seconds."),
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait));
            res
        }
        PasskeyError::Signin(SigninError::Disabled) => error(
            StatusCode::FORBIDDEN,
            "access_denied",
            "This account is disabled. Ask the people who run this service.",
        ),
        PasskeyError::Signin(SigninError::PendingExpired) => error(
            bad,
            "invalid_request",
            "That sign-in took too long or did not start here. Please sign in again.",
        ),
        PasskeyError::Signin(SigninError::Store(e)) | PasskeyError::Store(e) => internal(e),
        PasskeyError::Signin(e) => error(bad, "invalid_request", &e.to_string()),
    }
}

fn internal(e: impl std::fmt::Display) -> Response {
    let message = crate::error::internal_message(e);
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        &format!("Something went wrong on our side: {message}."),
    )
}

/// A posted ceremony step: this browser, its anti-forgery token checked, the JSON body read.
fn posted(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Browser, Posted), Box<Response>> {
    let token = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    if !state.web.csrf_ok(headers, token) {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "invalid_request",
            "This page expired or the request did not come from it. Reload the page and try again.",
        )));
    }
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    let posted: Posted = serde_json::from_slice(body).map_err(|_| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The request body is not the JSON expected.",
        ))
    })?;
    Ok((state.web.browser(headers), posted))
}

/// The way back after a sign-in, as the password form has it.
fn return_to(state: &AppState, posted: &Posted) -> String {
    state
        .web
        .safe_return_to(&posted.return_to)
        .unwrap_or_default()
}

/// A signed-in answer: the session cookie, and where the script sends the browser.
fn established(state: &AppState, return_to: &str, signed_in: &SignedIn) -> Response {
    let target = super::signin::after_signin(state, return_to);
    let res = json(StatusCode::OK, serde_json::json!({ "redirect": target }));
    super::signin::with_session_cookie(state, res, &signed_in.cookie)
}

fn options(o: Result<passkey::Options, PasskeyError>) -> Response {
    match o {
        Ok(o) => match serde_json::to_value(&o) {
            Ok(v) => json(StatusCode::OK, v),
            Err(e) => internal(e),
        },
        Err(e) => refusal(e),
    }
}

/// `POST /signin/passkey/options`: options for a passwordless sign-in.
pub async fn signin_options(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (browser, _) = match posted(&state, &headers, &body) {
        Ok(p) => p,
        Err(res) => return *res,
    };
    options(passkey::passwordless_start(&state.oauth, &browser.id).await)
}

/// `POST /signin/passkey`: a passwordless sign-in's answer.
pub async fn signin(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (browser, p) = match posted(&state, &headers, &body) {
        Ok(p) => p,
        Err(res) => return *res,
    };
    let back = return_to(&state, &p);
    let replacing = state.web.session(&headers);
    match passkey::passwordless_finish(
        &state.oauth,
        &browser.id,
        &p.ceremony,
        p.credential,
        addr,
        replacing,
    )
    .await
    {
        Ok(signed_in) => established(&state, &back, &signed_in),
        Err(e) => refusal(e),
    }
}

/// The user of the carried half-done sign-in, checked exactly as `/signin/code` checks it.
fn pending_user(
    state: &AppState,
    browser: &Browser,
    p: &Posted,
) -> Result<authn::Pending, Box<Response>> {
    authn::pending_user(
        state.oauth.keys.kek(),
        &p.pending,
        &browser.id,
        &return_to(state, p),
        state.oauth.now(),
    )
    .ok_or_else(|| Box::new(refusal(SigninError::PendingExpired.into())))
}

/// `POST /signin/code/passkey/options`: options for the second step with a passkey.
pub async fn second_options(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (browser, p) = match posted(&state, &headers, &body) {
        Ok(p) => p,
        Err(res) => return *res,
    };
    let pending = match pending_user(&state, &browser, &p) {
        Ok(u) => u,
        Err(res) => return *res,
    };
    options(passkey::second_factor_start(&state.oauth, &pending.user_id, &browser.id).await)
}

/// `POST /signin/code/passkey`: the second step's answer.
pub async fn second(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (browser, p) = match posted(&state, &headers, &body) {
        Ok(p) => p,
        Err(res) => return *res,
    };
    let pending = match pending_user(&state, &browser, &p) {
        Ok(u) => u,
        Err(res) => return *res,
    };
    let back = return_to(&state, &p);
    let replacing = state.web.session(&headers);
    match passkey::second_factor_finish(
        &state.oauth,
        &pending,
        &browser.id,
        &p.ceremony,
        p.credential,
        addr,
        replacing,
    )
    .await
    {
        Ok(signed_in) => established(&state, &back, &signed_in),
        Err(e) => refusal(e),
    }
}

/// The signed-in user of an account change made by the script, signed in recently; else the
/// answer (`login_required` with the sign-in page to go to, for an older session or none).
async fn recent_user(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<crate::store::User, Response> {
    let back = state.web.path("/account/security");
    match super::recently_signed_in(state, headers, &back).await {
        Ok((_, user)) => Ok(user),
        Err(res) if res.status() == StatusCode::SEE_OTHER => {
            let location = res
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            Err(json(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({
                    "error": "login_required",
                    "error_description": "Sign in again to change your passkeys.",
                    "location": location,
                }),
            ))
        }
        Err(res) => Err(*res),
    }
}

/// `POST /account/security/passkeys/options`: options to register a passkey.
pub async fn register_options(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (browser, _) = match posted(&state, &headers, &body) {
        Ok(p) => p,
        Err(res) => return *res,
    };
    let user = match recent_user(&state, &headers).await {
        Ok(u) => u,
        Err(res) => return res,
    };
    options(passkey::register_start(&state.oauth, &user, &browser.id).await)
}

/// `POST /account/security/passkeys`: a registration's answer, with the passkey's name.
pub async fn register(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let (browser, p) = match posted(&state, &headers, &body) {
        Ok(p) => p,
        Err(res) => return *res,
    };
    let user = match recent_user(&state, &headers).await {
        Ok(u) => u,
        Err(res) => return res,
    };
    match passkey::register_finish(
        &state.oauth,
        &user,
        &browser.id,
        &p.ceremony,
        p.credential,
        &p.name,
    )
    .await
    {
        Ok(stored) => json(
            StatusCode::OK,
            serde_json::json!({
                "redirect": state.web.path("/account/security"),
                "passkey": stored.id,
            }),
        ),
        Err(e) => refusal(e),
    }
}

/// A form of the passkeys section: its anti-forgery token checked, the user signed in
/// recently (else sent to sign in again), the passkey named.
async fn account_form(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(crate::oauth::form::Form, crate::store::User), Box<Response>> {
    let form = state.web.posted_form(headers, body)?;
    let (_, user) =
        super::recently_signed_in(state, headers, &state.web.path("/account/security")).await?;
    Ok((form, user))
}

/// The page's answer to a refused form.
fn form_refusal(state: &AppState, e: PasskeyError) -> Response {
    match e {
        PasskeyError::Store(e) => state.web.internal_error(e),
        PasskeyError::BadName => state.web.error_page(
            StatusCode::BAD_REQUEST,
            &format!(
                "Give the passkey a name of 1 to {} characters. Go back and try again.",
                passkey::MAX_NAME_CHARS
            ),
        ),
        PasskeyError::LastFactor => state.web.error_page(
            StatusCode::FORBIDDEN,
            "A second factor is required here: your last one cannot be removed. Add another \
             passkey or an authenticator app first.",
        ),
        e => state
            .web
            .error_page(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

/// `POST /account/security/passkeys/rename`: `id`, `name`.
pub async fn rename(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let (form, user) = match account_form(&state, &headers, &body).await {
        Ok(p) => p,
        Err(res) => return *res,
    };
    let (id, name) = (form.get("id").unwrap_or(""), form.get("name").unwrap_or(""));
    match passkey::rename(&state.oauth, &user.id, id, name).await {
        Ok(true) => see_other(&state.web.path("/account/security")),
        Ok(false) => state
            .web
            .error_page(StatusCode::NOT_FOUND, "You have no such passkey."),
        Err(e) => form_refusal(&state, e),
    }
}

/// `POST /account/security/passkeys/remove`: `id`.
pub async fn remove(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let (form, user) = match account_form(&state, &headers, &body).await {
        Ok(p) => p,
        Err(res) => return *res,
    };
    match passkey::remove(&state.oauth, &user.id, form.get("id").unwrap_or("")).await {
        Ok(true) => see_other(&state.web.path("/account/security")),
        Ok(false) => state
            .web
            .error_page(StatusCode::NOT_FOUND, "You have no such passkey."),
        Err(e) => form_refusal(&state, e),
    }
}

/// The account security page's passkeys section (`security_passkeys.html`): whether the
/// server offers passkeys, and the user's.
pub async fn section(state: &AppState, user_id: &str) -> Result<Value, crate::store::StoreError> {
    let available = passkey::available(&state.oauth);
    let items: Vec<Value> = if available {
        passkey::list(&state.oauth, user_id)
            .await?
            .into_iter()
            .map(|p| {
                context! {
                    id => p.id,
                    name => p.name,
                    created => util::rfc3339(p.created_at),
                    last_used => p.last_used_at.map(util::rfc3339).unwrap_or_else(|| "never".into()),
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(context! { available => available, items => items })
}
