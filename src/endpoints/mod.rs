//! Thin axum handlers, one file per endpoint. They parse the request, call protocol logic in
//! `oauth`, and shape the response; decisions live there.

pub mod account;
pub mod authorize;
pub mod backchannel;
pub mod device;
pub mod health;
pub mod introspect;
pub mod jwks;
pub mod passkeys;
pub mod register;
pub mod revoke;
pub mod schemas;
pub mod signin;
pub mod token;
pub mod upstream;
pub mod userinfo;
pub mod well_known;

use axum::http::HeaderMap;
use axum::response::Response;

use crate::oauth::authn;
use crate::state::AppState;
use crate::store::{Session, SignedIn, User};
use crate::ui;

/// A server-facing form post (device authorization, backchannel authentication): the form,
/// and the client it authenticated (RFC 6749 §2.3).
pub async fn client_form(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(crate::oauth::form::Form, crate::oauth::clients::Client), crate::error::OAuthError> {
    let form = crate::http::form_body(headers, body)?;
    let client =
        crate::oauth::client_auth::authenticate_client(&state.oauth, headers, &form).await?;
    crate::http::access::note_client(&client.client_id);
    Ok((form, client))
}

/// A JSON answer that carries something the client keeps secret (a device code, an
/// `auth_req_id`): never cached.
pub fn no_store_json(answer: impl serde::Serialize) -> Response {
    use axum::response::IntoResponse;
    let mut res = axum::Json(answer).into_response();
    res.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    res
}

/// A public document answered as the JSON it was kept as (the key set, the discovery
/// metadata), which caches may keep for `cache_control`.
pub fn public_json(json: bytes::Bytes, cache_control: &'static str) -> Response {
    use axum::http::{HeaderValue, header};
    use axum::response::IntoResponse;
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(cache_control),
            ),
        ],
        json,
    )
        .into_response()
}

/// The signed-in user of this browser, if any; a store failure is the error page to answer
/// with.
pub async fn current_session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(Session, User)>, Box<Response>> {
    Ok(signed_in(state, headers, None)
        .await?
        .map(|s| (s.session, s.user)))
}

/// The browser's live session with its user and what the user allowed `client_id` (nothing
/// when `None`), in one read; `None` when not signed in.
pub async fn signed_in(
    state: &AppState,
    headers: &HeaderMap,
    client_id: Option<&str>,
) -> Result<Option<SignedIn>, Box<Response>> {
    let Some(token) = state.web.session(headers) else {
        return Ok(None);
    };
    authn::session::current(&state.oauth, token, client_id)
        .await
        .map_err(|e| Box::new(state.web.internal_error(e)))
}

/// The signed-in session a form post needs; without one, a page saying so (`start_again`
/// tells the user where to begin).
pub async fn session_for_post(
    state: &AppState,
    headers: &HeaderMap,
    start_again: &str,
) -> Result<Session, Box<Response>> {
    match current_session(state, headers).await? {
        Some((session, _)) => Ok(session),
        None => Err(Box::new(state.web.error_page(
            axum::http::StatusCode::BAD_REQUEST,
            &format!("You are no longer signed in. {start_again}"),
        ))),
    }
}

/// The signed-in session of an account page that changes how the user signs in: signed in
/// within [`authn::session::RECENT_AUTH_SECS`]. Without a session, or with an older one, a
/// 303 to sign in (again), coming back to `return_to`; the user's name is filled in.
pub async fn recently_signed_in(
    state: &AppState,
    headers: &HeaderMap,
    return_to: &str,
) -> Result<(Session, User), Box<Response>> {
    match current_session(state, headers).await? {
        Some((session, user)) if authn::session::is_recent(&session, state.oauth.now()) => {
            Ok((session, user))
        }
        Some((_, user)) => Err(Box::new(to_signin(
            state,
            return_to,
            Some(&user.username),
            None,
        ))),
        None => Err(Box::new(to_signin(state, return_to, None, None))),
    }
}

/// A 303 to the sign-in page, coming back to `return_to` (a path under the issuer).
pub fn to_signin(
    state: &AppState,
    return_to: &str,
    login_hint: Option<&str>,
    level: Option<authn::acr::Level>,
) -> Response {
    ui::see_other(&authn::signin_url(
        state.web.base_path(),
        return_to,
        login_hint,
        level,
    ))
}
