//! `GET /account/apps` and `POST /account/apps/revoke`: every agent a user connected, and a
//! way to disconnect it (the consent goes, and its refresh tokens stop working at once).
//! `/account/security`: the user's second factor (authenticator app, recovery codes); what
//! they are decided in `oauth::authn::factors`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use minijinja::context;

use crate::audit::{Event, Kind};
use crate::config::MfaPolicy;
use crate::oauth::authn::factors::{self, Enrollment, Status};
use crate::oauth::consent::identity_key;
use crate::oauth::resource::ResourceUri;
use crate::state::AppState;
use crate::store::User;
use crate::ui::see_other;
use crate::util;

pub async fn apps(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let ctx = &state.oauth;
    let user = match super::current_session(&state, &headers).await {
        Ok(Some((_, user))) => user,
        Ok(None) => return super::to_signin(&state, &state.web.path("/account/apps"), None, None),
        Err(page) => return *page,
    };
    let consents = match ctx.consents().list_consents(&user.id).await {
        Ok(c) => c,
        Err(e) => return state.web.internal_error(e),
    };
    let mut apps = Vec::new();
    for c in consents {
        let client_name = match ctx.clients.find(&c.client_id).await {
            Ok(Some(client)) => client.display_name(),
            _ => format!("{} (no longer registered)", c.client_id),
        };
        let resource_name = if c.resource == identity_key(ctx) {
            "Your identity".to_string()
        } else {
            let found = match ResourceUri::parse(&c.resource) {
                Ok(uri) => ctx.resources.get(&uri).await.ok().flatten(),
                Err(_) => None,
            };
            found.map_or_else(|| c.resource.clone(), |r| r.name.clone())
        };
        let scopes: Vec<&str> = c.scopes.split(' ').filter(|s| !s.is_empty()).collect();
        apps.push(context! {
            client_id => c.client_id,
            client_name => client_name,
            resource => c.resource,
            resource_name => resource_name,
            scopes => scopes,
            approved => util::rfc3339(c.created_at),
            last_used => c.last_used_at.map(util::rfc3339).unwrap_or_else(|| "never".into()),
        });
    }
    let web = &state.web;
    let browser = web.browser(&headers);
    let page = web.render(
        StatusCode::OK,
        "apps.html",
        context! {
            base => web.base_path(),
            username => user.username,
            apps => apps,
            csrf => web.csrf(&browser),
        },
    );
    browser.apply(page)
}

pub async fn revoke(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let ctx = &state.oauth;
    let form = match state.web.posted_form(&headers, &body) {
        Ok(f) => f,
        Err(page) => return *page,
    };
    let user = match super::current_session(&state, &headers).await {
        Ok(Some((_, user))) => user,
        Ok(None) => return see_other(&state.web.path("/signin")),
        Err(page) => return *page,
    };
    let (Some(client_id), Some(resource)) = (form.get("client_id"), form.get("resource")) else {
        return state
            .web
            .error_page(StatusCode::BAD_REQUEST, "Choose an app to revoke.");
    };
    match ctx
        .consents()
        .revoke_consent(&user.id, client_id, resource, ctx.now())
        .await
    {
        Ok(revoked) => {
            tracing::info!(user_id = %user.id, client_id = %client_id, "consent revoked");
            if revoked {
                ctx.audit.record(
                    Event::new(Kind::ConsentRevoked)
                        .client(client_id)
                        .user(&user.id)
                        .detail(serde_json::json!({ "resource": resource })),
                );
            }
            see_other(&state.web.path("/account/apps"))
        }
        Err(e) => state.web.internal_error(e),
    }
}

/// What the security page shows besides the status: an enrollment under way, recovery codes
/// to write down (shown once), a message.
#[derive(Default)]
struct Shown<'a> {
    enrollment: Option<&'a Enrollment>,
    recovery_codes: Option<&'a [String]>,
    error: Option<&'a str>,
}

/// The security page with `error` shown, answered with `status`.
async fn refused(
    state: &AppState,
    headers: &HeaderMap,
    user: &User,
    status: StatusCode,
    error: &str,
) -> Response {
    let shown = Shown {
        error: Some(error),
        ..Shown::default()
    };
    security_page(state, headers, user, status, shown).await
}

/// The security page showing new recovery codes, once.
async fn showing_codes(
    state: &AppState,
    headers: &HeaderMap,
    user: &User,
    codes: &[String],
) -> Response {
    let shown = Shown {
        recovery_codes: Some(codes),
        ..Shown::default()
    };
    security_page(state, headers, user, StatusCode::OK, shown).await
}

async fn security_page(
    state: &AppState,
    headers: &HeaderMap,
    user: &User,
    status: StatusCode,
    shown: Shown<'_>,
) -> Response {
    let web = &state.web;
    let browser = web.browser(headers);
    let (factor, left) = match factors::status(&state.oauth, &user.id).await {
        Ok(Status::None) => ("none", 0),
        Ok(Status::Pending) => ("pending", 0),
        Ok(Status::Confirmed {
            recovery_codes_left,
        }) => ("confirmed", recovery_codes_left),
        Err(e) => return web.internal_error(e),
    };
    let enrollment = shown.enrollment.map(|e| {
        context! {
            qr => crate::ui::qr_svg(&e.uri),
            secret => e.secret_base32.as_str(),
            uri => e.uri.as_str(),
        }
    });
    let page = web.render(
        status,
        "security.html",
        context! {
            base => web.base_path(),
            username => user.username,
            csrf => web.csrf(&browser),
            factor => factor,
            recovery_codes_left => left,
            enrollment => enrollment,
            recovery_codes => shown.recovery_codes,
            error => shown.error,
            offered => state.oauth.config.signin.mfa.offered(),
            required => state.oauth.config.signin.mfa == MfaPolicy::Required,
        },
    );
    browser.apply(page)
}

/// The signed-in user of a security form post, with the parsed form; or the page to answer.
async fn posted(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(crate::oauth::form::Form, User), Box<Response>> {
    let form = state.web.posted_form(headers, body)?;
    match super::current_session(state, headers).await? {
        Some((_, user)) => Ok((form, user)),
        None => Err(Box::new(see_other(&state.web.path("/signin")))),
    }
}

/// `GET /account/security`
pub async fn security(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let user = match super::current_session(&state, &headers).await {
        Ok(Some((_, user))) => user,
        Ok(None) => {
            return super::to_signin(&state, &state.web.path("/account/security"), None, None);
        }
        Err(page) => return *page,
    };
    security_page(&state, &headers, &user, StatusCode::OK, Shown::default()).await
}

/// `POST /account/security/totp/start`: a new secret, shown as a QR code and as text.
pub async fn totp_start(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, user) = match posted(&state, &headers, &body).await {
        Ok(p) => p,
        Err(page) => return *page,
    };
    if !state.oauth.config.signin.mfa.offered() {
        let error = "This service does not offer authenticator apps.";
        return refused(&state, &headers, &user, StatusCode::FORBIDDEN, error).await;
    }
    match factors::start(&state.oauth, &user.id, &user.username).await {
        Ok(Some(e)) => {
            let shown = Shown {
                enrollment: Some(&e),
                ..Shown::default()
            };
            security_page(&state, &headers, &user, StatusCode::OK, shown).await
        }
        Ok(None) => {
            let error = "An authenticator app is already set up. Remove it first.";
            refused(&state, &headers, &user, StatusCode::CONFLICT, error).await
        }
        Err(e) => state.web.internal_error(e),
    }
}

/// `POST /account/security/totp/confirm`: the first code; only a right one confirms.
pub async fn totp_confirm(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, user) = match posted(&state, &headers, &body).await {
        Ok(p) => p,
        Err(page) => return *page,
    };
    let code = form.get("code").unwrap_or("");
    match factors::confirm(&state.oauth, &user.id, code).await {
        Ok(Some(codes)) => showing_codes(&state, &headers, &user, &codes).await,
        Ok(None) => {
            let pending = match factors::pending(&state.oauth, &user.id, &user.username).await {
                Ok(p) => p,
                Err(e) => return state.web.internal_error(e),
            };
            let shown = Shown {
                enrollment: pending.as_ref(),
                error: Some(
                    "That code is not right. Check the app's clock and try the current code.",
                ),
                ..Shown::default()
            };
            security_page(&state, &headers, &user, StatusCode::BAD_REQUEST, shown).await
        }
        Err(e) => state.web.internal_error(e),
    }
}

/// `POST /account/security/recovery-codes`: new recovery codes, shown once; needs a current
/// code or a recovery code.
pub async fn recovery_codes(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, user) = match posted(&state, &headers, &body).await {
        Ok(p) => p,
        Err(page) => return *page,
    };
    let code = form.get("code").unwrap_or("");
    match factors::regenerate_recovery_codes(&state.oauth, &user.id, code).await {
        Ok(Some(codes)) => showing_codes(&state, &headers, &user, &codes).await,
        Ok(None) => {
            let error = "That code is not right, or was already used.";
            refused(&state, &headers, &user, StatusCode::BAD_REQUEST, error).await
        }
        Err(e) => state.web.internal_error(e),
    }
}

/// `POST /account/security/totp/remove`: needs a current code or a recovery code.
pub async fn totp_remove(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, user) = match posted(&state, &headers, &body).await {
        Ok(p) => p,
        Err(page) => return *page,
    };
    if state.oauth.config.signin.mfa == MfaPolicy::Required {
        let error = "A second factor is required here: the authenticator app cannot be \
                     removed. If you lost it, ask the people who run this service to reset it.";
        return refused(&state, &headers, &user, StatusCode::FORBIDDEN, error).await;
    }
    let code = form.get("code").unwrap_or("");
    match factors::remove(&state.oauth, &user.id, code).await {
        Ok(true) => see_other(&state.web.path("/account/security")),
        Ok(false) => {
            let error = "That code is not right, or was already used.";
            refused(&state, &headers, &user, StatusCode::BAD_REQUEST, error).await
        }
        Err(e) => state.web.internal_error(e),
    }
}
