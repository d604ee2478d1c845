//! `GET|POST /signin` and `POST /signout`: the sign-in page and the session cookie. Who the
//! user is (factors, throttling, the session) is decided in `oauth::authn`.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use minijinja::context;
use serde::Deserialize;

use crate::http::ClientAddr;
use crate::oauth::authn::{self, PasswordChecked, SignedIn, SigninError};
use crate::oauth::form::Form;
use crate::state::AppState;
use crate::ui::{Browser, see_other};

#[derive(Deserialize)]
pub struct SigninQuery {
    return_to: Option<String>,
    login_hint: Option<String>,
}

fn render(
    state: &AppState,
    browser: &Browser,
    status: StatusCode,
    return_to: &str,
    username: &str,
    error: Option<&str>,
    change_password: bool,
) -> Response {
    let web = &state.web;
    let page = web.render(
        status,
        "signin.html",
        context! {
            base => web.base_path(),
            csrf => web.csrf(browser),
            return_to => return_to,
            username => username,
            error => error,
            change_password => change_password,
        },
    );
    browser.apply(page)
}

pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<SigninQuery>,
) -> Response {
    let browser = state.web.browser(&headers);
    let return_to = q
        .return_to
        .as_deref()
        .and_then(|r| state.web.safe_return_to(r))
        .unwrap_or_default();
    render(
        &state,
        &browser,
        StatusCode::OK,
        &return_to,
        q.login_hint.as_deref().unwrap_or(""),
        None,
        false,
    )
}

pub async fn submit(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let browser = state.web.browser(&headers);
    let form = Form::parse(&body).unwrap_or_default();
    let return_to = form
        .get("return_to")
        .and_then(|r| state.web.safe_return_to(r))
        .unwrap_or_default();
    let username = form.get("username").unwrap_or("").trim().to_string();
    // The form again with a message; `change_password` adds the new-password fields.
    let again = |status, msg: &str, change_password| {
        render(
            &state,
            &browser,
            status,
            &return_to,
            &username,
            Some(msg),
            change_password,
        )
    };
    let fail = |status, msg: &str| again(status, msg, false);
    let ask_new_password = |status, msg: &str| again(status, msg, true);
    if !state.web.csrf_ok(&headers, form.get("csrf")) {
        return fail(
            StatusCode::BAD_REQUEST,
            "The form expired. Please sign in again.",
        );
    }
    let password = form.get("password").unwrap_or("").to_string();
    let new_password = form
        .get("new_password")
        .filter(|p| !p.is_empty())
        .map(str::to_string);
    if new_password.is_some() && form.get("new_password_again") != new_password.as_deref() {
        return ask_new_password(
            StatusCode::BAD_REQUEST,
            "The two new passwords differ. Type the same one twice.",
        );
    }
    let signed_in = match authn::sign_in_with_password(
        &state.oauth,
        &username,
        password,
        new_password,
        addr,
        state.web.session(&headers),
    )
    .await
    {
        Ok(PasswordChecked::SignedIn(s)) => s,
        Ok(PasswordChecked::CodeRequired(user)) => {
            let pending = authn::pending_token(
                state.oauth.keys.kek(),
                &user.id,
                &browser.id,
                &return_to,
                state.oauth.now(),
            );
            return render_code(&state, &browser, StatusCode::OK, &return_to, &pending, None);
        }
        Err(SigninError::WrongCode | SigninError::PendingExpired) => {
            return fail(StatusCode::UNAUTHORIZED, "Wrong username or password.");
        }
        Err(SigninError::Throttled(t)) => {
            let wait = t.retry_after().max(1);
            let mut page = fail(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "Too many failed sign-ins. Try again in {}.",
                    wait_phrase(wait)
                ),
            );
            page.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(wait));
            return page;
        }
        Err(SigninError::WrongCredentials) => {
            return fail(StatusCode::UNAUTHORIZED, "Wrong username or password.");
        }
        Err(SigninError::PasswordChangeRequired) => {
            return ask_new_password(
                StatusCode::OK,
                "You are asked to choose a new password. Enter your current password and a new one.",
            );
        }
        Err(SigninError::NewPasswordRejected(why)) => {
            return ask_new_password(
                StatusCode::BAD_REQUEST,
                &format!("That new password won't do: {why}."),
            );
        }
        Err(SigninError::Disabled) => {
            return fail(
                StatusCode::FORBIDDEN,
                "This account is disabled. Ask the people who run this service.",
            );
        }
        Err(SigninError::Store(e)) => {
            let message = crate::error::internal_message(e);
            return fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("Something went wrong on our side: {message}. Please try again."),
            );
        }
    };
    established(&state, &browser, &return_to, &signed_in)
}

/// The session cookie set, and the browser on its way back.
fn established(
    state: &AppState,
    browser: &Browser,
    return_to: &str,
    signed_in: &SignedIn,
) -> Response {
    let target = if return_to.is_empty() {
        state.web.path("/account/apps")
    } else {
        return_to.to_string()
    };
    let ttl = i64::from(state.oauth.config.tokens.session_ttl_secs);
    let mut res = see_other(&target);
    res.headers_mut().append(
        header::SET_COOKIE,
        state
            .web
            .set_cookie(state.web.session_cookie(), &signed_in.cookie, Some(ttl)),
    );
    browser.apply(res)
}

/// The second step's page: the code form, carrying the half-done sign-in.
fn render_code(
    state: &AppState,
    browser: &Browser,
    status: StatusCode,
    return_to: &str,
    pending: &str,
    error: Option<&str>,
) -> Response {
    let web = &state.web;
    let page = web.render(
        status,
        "signin_code.html",
        context! {
            base => web.base_path(),
            csrf => web.csrf(browser),
            return_to => return_to,
            pending => pending,
            error => error,
        },
    );
    browser.apply(page)
}

/// `POST /signin/code`: the second step. The user comes from the carried half-done sign-in,
/// checked against this browser and the way back; never from a form field of its own.
pub async fn submit_code(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let browser = state.web.browser(&headers);
    let form = Form::parse(&body).unwrap_or_default();
    let return_to = form
        .get("return_to")
        .and_then(|r| state.web.safe_return_to(r))
        .unwrap_or_default();
    let pending = form.get("pending").unwrap_or("");
    let start_again =
        |status, msg: &str| render(&state, &browser, status, &return_to, "", Some(msg), false);
    if !state.web.csrf_ok(&headers, form.get("csrf")) {
        return start_again(
            StatusCode::BAD_REQUEST,
            "The form expired. Please sign in again.",
        );
    }
    let Some(user_id) = authn::pending_user(
        state.oauth.keys.kek(),
        pending,
        &browser.id,
        &return_to,
        state.oauth.now(),
    ) else {
        return start_again(
            StatusCode::BAD_REQUEST,
            "That sign-in took too long or did not start here. Please sign in again.",
        );
    };
    let code = form.get("code").unwrap_or("");
    let again =
        |status, msg: &str| render_code(&state, &browser, status, &return_to, pending, Some(msg));
    match authn::sign_in_with_code(
        &state.oauth,
        &user_id,
        code,
        addr,
        state.web.session(&headers),
    )
    .await
    {
        Ok(signed_in) => established(&state, &browser, &return_to, &signed_in),
        Err(SigninError::WrongCode) => again(
            StatusCode::UNAUTHORIZED,
            "That code is not right, or was already used. Try the next one.",
        ),
        Err(SigninError::Throttled(t)) => {
            let wait = t.retry_after().max(1);
            let mut page = again(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("Too many wrong codes. Try again in {}.", wait_phrase(wait)),
            );
            page.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(wait));
            page
        }
        Err(SigninError::Disabled) => start_again(
            StatusCode::FORBIDDEN,
            "This account is disabled. Ask the people who run this service.",
        ),
        Err(SigninError::Store(e)) => state.web.internal_error(e),
        Err(_) => start_again(StatusCode::BAD_REQUEST, "Please sign in again."),
    }
}

/// `secs` for people: "1 second", "40 seconds", "2 minutes" (rounded up).
fn wait_phrase(secs: i64) -> String {
    match secs {
        ..=1 => "1 second".into(),
        2..=90 => format!("{secs} seconds"),
        _ => format!("{} minutes", (secs + 59) / 60),
    }
}

pub async fn signout(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(page) = state.web.posted_form(&headers, &body) {
        return *page;
    }
    if let Some(token) = state.web.session(&headers)
        && let Err(e) = authn::session::end(&state.oauth, token).await
    {
        return state.web.internal_error(e);
    }
    let mut res = see_other(&state.web.path("/signin"));
    res.headers_mut().append(
        header::SET_COOKIE,
        state
            .web
            .set_cookie(state.web.session_cookie(), "", Some(0)),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::wait_phrase;

    #[test]
    fn waits_read_as_people_say_them() {
        assert_eq!(wait_phrase(0), "1 second");
        assert_eq!(wait_phrase(1), "1 second");
        assert_eq!(wait_phrase(30), "30 seconds");
        assert_eq!(wait_phrase(90), "90 seconds");
        assert_eq!(wait_phrase(91), "2 minutes");
        assert_eq!(wait_phrase(900), "15 minutes");
    }
}
