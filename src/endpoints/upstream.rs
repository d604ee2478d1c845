//! `GET /signin/upstream/{id}` (to the provider), `GET /signin/upstream/{id}/callback` (back
//! from it) and `POST /account/security/identities/link` (link a provider's account to the
//! signed-in user). The protocol is in `oauth::authn::upstream`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use super::signin;
use crate::http::ClientAddr;
use crate::oauth::authn::acr::Level;
use crate::oauth::authn::linking::LinkError;
use crate::oauth::authn::upstream::{
    self, AMR_FEDERATED, Callback, FLOW_COOKIE, FLOW_TTL_SECS, Start, UpstreamError,
};
use crate::oauth::context::Context;
use crate::state::AppState;
use crate::ui::{Browser, see_other};

/// Our redirect URI at provider `id` (register it there).
pub fn redirect_uri(ctx: &Context, id: &str) -> String {
    ctx.url(&format!("/signin/upstream/{id}/callback"))
}

/// `GET /signin/upstream/{id}?return_to=…&acr=…`: to the provider's sign-in.
pub async fn start(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let browser = state.web.browser(&headers);
    let q: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let return_to = get("return_to")
        .and_then(|r| state.web.safe_return_to(r))
        .unwrap_or_default();
    let level = get("acr").and_then(Level::from_acr);
    begin(&state, &browser, &id, &return_to, None, level).await
}

/// Send the browser to provider `id` with a new flow cookie.
async fn begin(
    state: &AppState,
    browser: &Browser,
    id: &str,
    return_to: &str,
    link_user: Option<&str>,
    level: Option<Level>,
) -> Response {
    let ctx = &state.oauth;
    let started = match upstream::find(ctx, id).await {
        Ok(p) => {
            let redirect_uri = redirect_uri(ctx, id);
            let s = Start {
                redirect_uri: &redirect_uri,
                return_to,
                binding: &browser.id,
                link_user,
                level,
            };
            upstream::start(ctx, &p, s).await
        }
        Err(e) => Err(e),
    };
    match started {
        Ok(started) => {
            let mut res = see_other(&started.location);
            res.headers_mut().append(
                header::SET_COOKIE,
                state
                    .web
                    .set_cookie(FLOW_COOKIE, &started.cookie, Some(FLOW_TTL_SECS)),
            );
            browser.apply(res)
        }
        Err(e) => browser.apply(failed(state, id, e, None)),
    }
}

/// `GET /signin/upstream/{id}/callback`: back from the provider.
pub async fn callback(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let browser = state.web.browser(&headers);
    let cb: Callback =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let cookie = crate::ui::cookie(&headers, FLOW_COOKIE);
    let res = match finish(&state, &headers, &browser, &id, cookie, &cb, addr).await {
        Ok(res) => res,
        Err(e) => failed(&state, &id, e, addr),
    };
    // The flow is spent whatever happened.
    let mut res = browser.apply(res);
    res.headers_mut().append(
        header::SET_COOKIE,
        state.web.set_cookie(FLOW_COOKIE, "", Some(0)),
    );
    res
}

async fn finish(
    state: &AppState,
    headers: &HeaderMap,
    browser: &Browser,
    id: &str,
    cookie: Option<&str>,
    cb: &Callback,
    addr: Option<std::net::IpAddr>,
) -> Result<Response, UpstreamError> {
    let ctx = &state.oauth;
    let p = upstream::find(ctx, id).await?;
    let f = upstream::finish(ctx, &p, &redirect_uri(ctx, id), cookie, &browser.id, cb).await?;
    if let Some(user_id) = &f.link_user {
        // Linking: still the user who asked, still signed in recently.
        let back = state.web.path("/account/security");
        let (_, user) = match super::recently_signed_in(state, headers, &back).await {
            Ok(found) => found,
            Err(page) => return Ok(*page),
        };
        if &user.id != user_id {
            return Err(UpstreamError::Flow);
        }
        upstream::link(ctx, &f, user_id).await?;
        return Ok(see_other(&format!("{back}#identities")));
    }
    let checked = upstream::sign_in(ctx, &p, &f, addr, state.web.session(headers)).await?;
    Ok(signin::after_first_step(state, browser, &f.return_to, checked, AMR_FEDERATED).await)
}

/// `POST /account/security/identities/link` (`provider`): link an account at a provider to
/// the signed-in user, who signed in recently; off to the provider to prove it is theirs.
pub async fn link(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match state.web.posted_form(&headers, &body) {
        Ok(f) => f,
        Err(page) => return *page,
    };
    let back = state.web.path("/account/security");
    let (_, user) = match super::recently_signed_in(&state, &headers, &back).await {
        Ok(found) => found,
        Err(page) => return *page,
    };
    let browser = state.web.browser(&headers);
    let id = form.get("provider").unwrap_or("");
    begin(&state, &browser, id, &back, Some(&user.id), None).await
}

/// The page for a sign-in through a provider that did not succeed (audited, except our own
/// failures, which are logged).
fn failed(
    state: &AppState,
    id: &str,
    e: UpstreamError,
    addr: Option<std::net::IpAddr>,
) -> Response {
    let web = &state.web;
    let (status, message) = match &e {
        UpstreamError::Store(err) => return web.internal_error(err),
        UpstreamError::Signin(crate::oauth::authn::SigninError::Store(err)) => {
            return web.internal_error(err);
        }
        UpstreamError::Link(LinkError::Store(err)) => return web.internal_error(err),
        UpstreamError::UnknownProvider => (
            StatusCode::NOT_FOUND,
            "There is no such sign-in provider here.".to_string(),
        ),
        UpstreamError::Flow => (
            StatusCode::BAD_REQUEST,
            "This sign-in did not start in this browser, or took too long. Please start again."
                .to_string(),
        ),
        UpstreamError::Denied(said) => (
            StatusCode::FORBIDDEN,
            format!("The provider did not sign you in ({said})."),
        ),
        UpstreamError::Invalid(_) | UpstreamError::Unreachable(_) | UpstreamError::Secret => (
            StatusCode::BAD_GATEWAY,
            "The provider's answer could not be checked, so you are not signed in. Please try \
             again, or ask the people who run this service."
                .to_string(),
        ),
        UpstreamError::LinkedElsewhere => (
            StatusCode::CONFLICT,
            "That account at the provider is already linked to another account here. Unlink \
             it there first."
                .to_string(),
        ),
        UpstreamError::Link(LinkError::NoAccount) => (
            StatusCode::FORBIDDEN,
            "No account here is linked to your account at this provider. Sign in another way \
             and link it from your account's security page."
                .to_string(),
        ),
        UpstreamError::Link(LinkError::Disabled) => (
            StatusCode::FORBIDDEN,
            "This account is disabled. Ask the people who run this service.".to_string(),
        ),
        UpstreamError::Signin(s) => (
            StatusCode::FORBIDDEN,
            format!("You are not signed in: {s}."),
        ),
        UpstreamError::Link(l) => (StatusCode::CONFLICT, format!("{l}.")),
    };
    upstream::refused(&state.oauth, id, &e, addr);
    web.error_page(status, &message)
}
