//! `GET|POST /signin` and `POST /signout`: local accounts, a session cookie, and throttling of
//! repeated failures per username and per address.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use minijinja::context;
use serde::Deserialize;

use super::ClientAddr;
use crate::audit::{Event, Kind};
use crate::oauth::form::Form;
use crate::oauth::password;
use crate::startup::AppState;
use crate::store::Session;
use crate::ui::{self, Browser, SESSION_COOKIE, see_other};
use crate::util;

/// Failed sign-ins allowed per username, and per address, in a window.
const MAX_FAILURES_PER_USER: i64 = 5;
const MAX_FAILURES_PER_ADDRESS: i64 = 20;
const FAILURE_WINDOW_SECS: i64 = 900;

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
) -> Response {
    let page = state.pages.render(
        status,
        "signin.html",
        context! {
            base => state.base_path.as_ref(),
            csrf => browser.csrf(state),
            return_to => return_to,
            username => username,
            error => error,
        },
    );
    browser.apply(page)
}

pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<SigninQuery>,
) -> Response {
    let browser = Browser::from_headers(&state, &headers);
    let return_to = q
        .return_to
        .as_deref()
        .and_then(|r| ui::safe_return_to(&state, r))
        .unwrap_or_default();
    render(
        &state,
        &browser,
        StatusCode::OK,
        &return_to,
        q.login_hint.as_deref().unwrap_or(""),
        None,
    )
}

pub async fn submit(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let browser = Browser::from_headers(&state, &headers);
    let form = Form::parse(&body).unwrap_or_default();
    let return_to = form
        .get("return_to")
        .and_then(|r| ui::safe_return_to(&state, r))
        .unwrap_or_default();
    let username = form.get("username").unwrap_or("").trim().to_string();
    let fail =
        |status, msg: &str| render(&state, &browser, status, &return_to, &username, Some(msg));
    if !ui::csrf_ok(&state, &headers, form.get("csrf")) {
        return fail(
            StatusCode::BAD_REQUEST,
            "The form expired. Please sign in again.",
        );
    }
    let now = util::now();
    let user_bucket = format!("signin-fail:user:{username}");
    let addr_bucket = format!(
        "signin-fail:addr:{}",
        addr.map(|a| a.to_string()).unwrap_or_default()
    );
    let over = async |bucket: &str, max: i64| {
        state
            .store
            .hits(bucket, FAILURE_WINDOW_SECS, now)
            .await
            .map(|n| n >= max)
            .unwrap_or(true)
    };
    if over(&user_bucket, MAX_FAILURES_PER_USER).await
        || over(&addr_bucket, MAX_FAILURES_PER_ADDRESS).await
    {
        tracing::warn!(username = %username, "sign-in throttled");
        return fail(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed sign-ins. Try again in 15 minutes.",
        );
    }
    let password = form.get("password").unwrap_or("");
    let user = match state.store.find_user(&username).await {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "loading a user");
            return fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong. Please try again.",
            );
        }
    };
    // An unknown user costs the same hash as a wrong password.
    let ok = match &user {
        Some(u) => password::verify(password, &u.password_hash),
        None => {
            password::verify(password, password::dummy_hash());
            false
        }
    };
    let known_id = user.as_ref().map(|u| u.id.clone());
    let Some(user) = user.filter(|_| ok) else {
        for b in [&user_bucket, &addr_bucket] {
            let _ = state.store.hit(b, FAILURE_WINDOW_SECS, now).await;
        }
        tracing::info!(username = %username, "sign-in failed");
        state.audit.record(
            Event::new(Kind::SigninFailed)
                .user_opt(known_id.as_deref())
                .ip(addr)
                .detail(
                    serde_json::json!({ "username": username, "known_user": known_id.is_some() }),
                ),
        );
        return fail(StatusCode::UNAUTHORIZED, "Wrong username or password.");
    };

    // A fresh session for every sign-in (no fixation); the old one, if any, ends.
    if let Some(old) = ui::cookie(&headers, SESSION_COOKIE) {
        let _ = state.store.delete_session(&util::secret_hash(old)).await;
    }
    let token = util::random_secret();
    let ttl = i64::from(state.config.tokens.session_ttl_secs);
    let session = Session {
        sid: util::random_id(),
        user_id: user.id.clone(),
        auth_time: now,
        created_at: now,
        expires_at: now + ttl,
    };
    if let Err(e) = state
        .store
        .insert_session(&util::secret_hash(&token), &session)
        .await
    {
        tracing::error!(error = %e, "storing a session");
        return fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong. Please try again.",
        );
    }
    tracing::info!(user_id = %user.id, "signed in");
    state.audit.record(
        Event::new(Kind::SigninSucceeded)
            .user(&user.id)
            .ip(addr)
            .detail(serde_json::json!({ "sid": session.sid })),
    );
    let target = if return_to.is_empty() {
        format!("{}/account/apps", state.base_path)
    } else {
        return_to.clone()
    };
    let mut res = see_other(&target);
    res.headers_mut().append(
        header::SET_COOKIE,
        ui::set_cookie(&state, SESSION_COOKIE, &token, Some(ttl)),
    );
    browser.apply(res)
}

pub async fn signout(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(page) = ui::posted_form(&state, &headers, &body) {
        return *page;
    }
    if let Some(token) = ui::cookie(&headers, SESSION_COOKIE) {
        let _ = state.store.delete_session(&util::secret_hash(token)).await;
    }
    let mut res = see_other(&format!("{}/signin", state.base_path));
    res.headers_mut().append(
        header::SET_COOKIE,
        ui::set_cookie(&state, SESSION_COOKIE, "", Some(0)),
    );
    res
}
