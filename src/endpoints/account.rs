//! `GET /account/apps` and `POST /account/apps/revoke`: every agent a user connected, and a
//! way to disconnect it (the consent goes, and its refresh tokens stop working at once);
//! under each, the delegation chains that start from it, each link of which
//! `POST /account/apps/cut` cuts.
//! `/account/security`: how the user signs in — their password, second factor (authenticator
//! app, recovery codes), linked identities and sessions. Every change there needs a recent
//! sign-in; the changes themselves are made (and audited) in `oauth::authn`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use minijinja::context;

use crate::audit::{Event, Kind};
use crate::config::MfaPolicy;
use crate::http::ClientAddr;
use crate::oauth::authn::account::{self as changes, PasswordChange, UnlinkError};
use crate::oauth::authn::factors::{self, Enrollment, Status};
use crate::oauth::authn::{SigninError, session as sessions};
use crate::oauth::consent::identity_key;
use crate::oauth::delegation;
use crate::oauth::resource::ResourceUri;
use crate::state::AppState;
use crate::store::{Session, User};
use crate::ui::see_other;
use crate::util;

pub async fn apps(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let ctx = &state.oauth;
    let user = match super::current_session(&state, &headers).await {
        Ok(Some((_, user))) => user,
        Ok(None) => return super::to_signin(&state, &state.web.path("/account/apps"), None, None),
        Err(page) => return *page,
    };
    let (consents, hops) = match tokio::try_join!(
        ctx.consents().list_consents(&user.id),
        ctx.delegations().list_delegations(&user.id),
    ) {
        Ok(found) => found,
        Err(e) => return state.web.internal_error(e),
    };
    // Every chain, by the app (and resource) it starts from. Hops that ended with their
    // app's disconnection are kept only to refuse older tokens: nothing to show.
    let mut chains: Vec<((String, String), minijinja::Value)> = Vec::new();
    for (hop, links) in delegation::chains(&hops) {
        if delegation::ended_with_app(&hop) {
            continue;
        }
        let root = (hop.root_client_id.clone(), hop.root_resource.clone());
        chains.push((root, chain_view(ctx, &hop, &links).await));
    }
    let mut apps = Vec::new();
    for c in consents {
        let client_name = match ctx.clients.find(&c.client_id).await {
            Ok(Some(client)) => client.display_name(),
            _ => format!("{} (no longer registered)", c.client_id),
        };
        let scopes: Vec<&str> = c.scopes.split(' ').filter(|s| !s.is_empty()).collect();
        let (resource_name, tools) = if c.resource == identity_key(ctx) {
            ("Your identity".to_string(), Vec::new())
        } else {
            let found = match ResourceUri::parse(&c.resource) {
                Ok(uri) => ctx.resources.get(&uri).await.ok().flatten(),
                Err(_) => None,
            };
            match found {
                // The tools the consented scopes let the app use.
                Some(r) => (
                    r.name.clone(),
                    r.scopes
                        .iter()
                        .filter(|s| scopes.contains(&s.name.as_str()))
                        .flat_map(|s| s.tools.clone())
                        .collect(),
                ),
                None => (c.resource.clone(), Vec::new()),
            }
        };
        let key = (c.client_id.clone(), c.resource.clone());
        let (mine, rest): (Vec<_>, Vec<_>) = chains.into_iter().partition(|(k, _)| *k == key);
        chains = rest;
        apps.push(context! {
            chains => mine.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
            client_id => c.client_id,
            client_name => client_name,
            resource => c.resource,
            resource_name => resource_name,
            scopes => scopes,
            tools => tools,
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
            // Chains from an app with no consent left to show (a CIBA approval's, say).
            other_chains => chains.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
            csrf => web.csrf(&browser),
        },
    );
    browser.apply(page)
}

/// A hop for the apps page: its chain in names ("Assistant → Calendar → Notes"), who acts,
/// when it was last used, and whether it is cut.
async fn chain_view(
    ctx: &crate::oauth::Context,
    hop: &crate::store::Delegation,
    links: &[delegation::Link],
) -> minijinja::Value {
    let mut path = Vec::with_capacity(links.len() + 1);
    if let Some(first) = links.first() {
        path.push(client_name(ctx, &first.client_id).await);
    }
    for link in links {
        path.push(resource_name(ctx, &link.resource).await);
    }
    context! {
        id => hop.id,
        path => path,
        via => client_name(ctx, &hop.client_id).await,
        created => util::rfc3339(hop.created_at),
        last_used => util::rfc3339(hop.last_used_at),
        cut => delegation::cut_reason(hop),
    }
}

async fn client_name(ctx: &crate::oauth::Context, client_id: &str) -> String {
    match ctx.clients.find(client_id).await {
        Ok(Some(client)) => client.display_name(),
        _ => client_id.to_string(),
    }
}

async fn resource_name(ctx: &crate::oauth::Context, uri: &str) -> String {
    let found = match ResourceUri::parse(uri) {
        Ok(uri) => ctx.resources.get(&uri).await.ok().flatten(),
        Err(_) => None,
    };
    found.map_or_else(|| uri.to_string(), |r| r.name.clone())
}

/// `POST /account/apps/cut`: cut one hop of a delegation chain (`hop`), and the hops below.
pub async fn cut(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let ctx = &state.oauth;
    let (form, user) = match posted_by(&state, &headers, &body).await {
        Ok(p) => p,
        Err(page) => return *page,
    };
    let Some(hop) = form.get("hop") else {
        return state
            .web
            .error_page(StatusCode::BAD_REQUEST, "Choose a link to cut.");
    };
    match delegation::cut(ctx, &user.id, hop).await {
        // Cut now, or already: either way the page shows it cut.
        Ok(_) => see_other(&state.web.path("/account/apps")),
        Err(e) => state.web.internal_error(e),
    }
}

/// A form posted on the connected-apps page (its CSRF token checked) and the signed-in user
/// who posts it; else the page to answer (signed out: to sign in).
async fn posted_by(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(crate::oauth::form::Form, User), Box<Response>> {
    let form = state.web.posted_form(headers, body)?;
    match super::current_session(state, headers).await {
        Ok(Some((_, user))) => Ok((form, user)),
        Ok(None) => Err(Box::new(see_other(&state.web.path("/signin")))),
        Err(page) => Err(page),
    }
}

pub async fn revoke(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let ctx = &state.oauth;
    let (form, user) = match posted_by(&state, &headers, &body).await {
        Ok(p) => p,
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
    notice: Option<&'a str>,
}

/// Who is looking at the security page: the signed-in user and this browser's session.
struct Viewer {
    session: Session,
    user: User,
}

/// The security page with `error` shown, answered with `status`.
async fn refused(
    state: &AppState,
    headers: &HeaderMap,
    viewer: &Viewer,
    status: StatusCode,
    error: &str,
) -> Response {
    let shown = Shown {
        error: Some(error),
        ..Shown::default()
    };
    security_page(state, headers, viewer, status, shown).await
}

/// The security page with `notice` shown: a change made.
async fn done(state: &AppState, headers: &HeaderMap, viewer: &Viewer, notice: &str) -> Response {
    let shown = Shown {
        notice: Some(notice),
        ..Shown::default()
    };
    security_page(state, headers, viewer, StatusCode::OK, shown).await
}

/// The security page showing new recovery codes, once.
async fn showing_codes(
    state: &AppState,
    headers: &HeaderMap,
    viewer: &Viewer,
    codes: &[String],
) -> Response {
    let shown = Shown {
        recovery_codes: Some(codes),
        ..Shown::default()
    };
    security_page(state, headers, viewer, StatusCode::OK, shown).await
}

/// How a session signed in, in words (RFC 8176 `amr` values).
fn methods_in_words(amr: &[String]) -> String {
    let words: Vec<&str> = amr
        .iter()
        .filter_map(|m| match m.as_str() {
            "pwd" => Some("password"),
            "otp" => Some("authenticator code"),
            "mfa" => Some("recovery code"),
            "hwk" => Some("passkey"),
            "fed" => Some("another provider"),
            _ => None,
        })
        .collect();
    if words.is_empty() {
        "unknown".into()
    } else {
        words.join(" and ")
    }
}

async fn security_page(
    state: &AppState,
    headers: &HeaderMap,
    viewer: &Viewer,
    status: StatusCode,
    shown: Shown<'_>,
) -> Response {
    let (ctx, web) = (&state.oauth, &state.web);
    let Viewer { session, user } = viewer;
    let browser = web.browser(headers);
    let (factor, left) = match factors::status(ctx, &user.id).await {
        Ok(Status::None) => ("none", 0),
        Ok(Status::Pending) => ("pending", 0),
        Ok(Status::Confirmed {
            recovery_codes_left,
        }) => ("confirmed", recovery_codes_left),
        Err(e) => return web.internal_error(e),
    };
    let (live, linked) = match tokio::try_join!(
        ctx.sessions().list_user_sessions(&user.id, ctx.now()),
        ctx.identities().identities_of(&user.id),
    ) {
        Ok(found) => found,
        Err(e) => return web.internal_error(e),
    };
    let sessions: Vec<_> = live
        .iter()
        .map(|s| {
            context! {
                sid => s.sid,
                this => s.sid == session.sid,
                signed_in => util::rfc3339(s.auth_time),
                methods => methods_in_words(&s.amr),
                expires => util::rfc3339(s.expires_at),
            }
        })
        .collect();
    let identities: Vec<_> = linked
        .iter()
        .map(|l| {
            context! {
                issuer => l.issuer,
                subject => l.subject,
                email => l.email,
                linked => util::rfc3339(l.created_at),
                linked_by => l.linked_by.as_str(),
            }
        })
        .collect();
    let enrollment = shown.enrollment.map(|e| {
        context! {
            qr => crate::ui::qr_svg(&e.uri),
            secret => e.secret_base32.as_str(),
            uri => e.uri.as_str(),
        }
    });
    let providers = match crate::oauth::authn::upstream::buttons(ctx).await {
        Ok(p) => p,
        Err(e) => return web.internal_error(e),
    };
    let totp_stays = match totp_is_last_required(state, &user.id).await {
        Ok(stays) => stays,
        Err(e) => return web.internal_error(e),
    };
    let passkeys = match super::passkeys::section(state, &user.id).await {
        Ok(p) => p,
        Err(e) => return web.internal_error(e),
    };
    let page = web.render(
        status,
        "security.html",
        context! {
            base => web.base_path(),
            username => user.username,
            csrf => web.csrf(&browser),
            recent => sessions::is_recent(session, ctx.now()),
            reauthenticate => crate::oauth::authn::signin_url(
                web.base_path(),
                &web.path("/account/security"),
                Some(&user.username),
                None,
            ),
            has_password => user.password_hash.is_some(),
            factor => factor,
            recovery_codes_left => left,
            enrollment => enrollment,
            recovery_codes => shown.recovery_codes,
            error => shown.error,
            notice => shown.notice,
            offered => ctx.config.signin.mfa.offered(),
            totp_stays => totp_stays,
            sessions => sessions,
            identities => identities,
            providers => providers,
            passkeys => passkeys,
        },
    );
    browser.apply(page)
}

/// A posted change on the security page: its form (CSRF checked) and who posts it, signed in
/// recently; else the page to answer (a session older than
/// [`sessions::RECENT_AUTH_SECS`] is sent to sign in again, back to the security page).
async fn posted(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(crate::oauth::form::Form, Viewer), Box<Response>> {
    let form = state.web.posted_form(headers, body)?;
    let back = state.web.path("/account/security");
    let (session, user) = super::recently_signed_in(state, headers, &back).await?;
    Ok((form, Viewer { session, user }))
}

/// `GET /account/security`
pub async fn security(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (session, user) = match super::current_session(&state, &headers).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            return super::to_signin(&state, &state.web.path("/account/security"), None, None);
        }
        Err(page) => return *page,
    };
    let viewer = Viewer { session, user };
    security_page(&state, &headers, &viewer, StatusCode::OK, Shown::default()).await
}

/// `POST /account/security/password`: a new password, with the current one (when the
/// account has one). Other browsers are signed out and agents' refresh tokens end; this
/// browser stays signed in under a new cookie.
pub async fn password(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, viewer) = match posted(&state, &headers, &body).await {
        Ok(p) => p,
        Err(page) => return *page,
    };
    let new = form.get("new_password").unwrap_or("").to_string();
    if form.get("new_password_again") != Some(new.as_str()) {
        let error = "The two new passwords differ. Type the same one twice.";
        return refused(&state, &headers, &viewer, StatusCode::BAD_REQUEST, error).await;
    }
    let change = PasswordChange {
        current: form.get("current_password").unwrap_or(""),
        new,
        addr,
    };
    let (status, error) =
        match changes::change_password(&state.oauth, &viewer.user, &viewer.session, change).await {
            Ok(changed) => {
                let viewer = Viewer {
                    session: changed.session,
                    user: viewer.user,
                };
                let notice = "Your password is changed. Other browsers were signed out, and \
                              connected apps must sign in again.";
                let page = done(&state, &headers, &viewer, notice).await;
                return super::signin::with_session_cookie(&state, page, &changed.cookie);
            }
            Err(SigninError::WrongCredentials) => (
                StatusCode::BAD_REQUEST,
                "Your current password is not right. Your password has not changed.".to_string(),
            ),
            Err(SigninError::NewPasswordRejected(why)) => (
                StatusCode::BAD_REQUEST,
                format!("That new password won't do: {why}."),
            ),
            Err(SigninError::Throttled(t)) => (
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "Too many wrong passwords. Try again in {} seconds.",
                    t.retry_after().max(1)
                ),
            ),
            Err(e) => return state.web.internal_error(e),
        };
    refused(&state, &headers, &viewer, status, &error).await
}

/// `POST /account/security/sessions/end`: sign out one session (`sid`), or every other
/// one (`others`).
pub async fn end_session(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, viewer) = match posted(&state, &headers, &body).await {
        Ok(p) => p,
        Err(page) => return *page,
    };
    let ctx = &state.oauth;
    if form.get("others").is_some() {
        return match changes::end_other_sessions(ctx, &viewer.user, &viewer.session, addr).await {
            Ok(0) => done(&state, &headers, &viewer, "No other browser was signed in.").await,
            Ok(_) => {
                done(
                    &state,
                    &headers,
                    &viewer,
                    "Every other browser is signed out.",
                )
                .await
            }
            Err(e) => state.web.internal_error(e),
        };
    }
    let sid = form.get("sid").unwrap_or("");
    match changes::end_session(ctx, &viewer.user, sid, addr).await {
        Ok(true) if sid == viewer.session.sid => super::signin::signed_out(&state),
        Ok(true) => done(&state, &headers, &viewer, "That browser is signed out.").await,
        Ok(false) => {
            let error = "That session has already ended.";
            refused(&state, &headers, &viewer, StatusCode::NOT_FOUND, error).await
        }
        Err(e) => state.web.internal_error(e),
    }
}

/// `POST /account/security/identities/unlink`: the identity at another issuer (`issuer`,
/// `subject`) no longer names this account.
pub async fn unlink_identity(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, viewer) = match posted(&state, &headers, &body).await {
        Ok(p) => p,
        Err(page) => return *page,
    };
    let (issuer, subject) = (
        form.get("issuer").unwrap_or(""),
        form.get("subject").unwrap_or(""),
    );
    match changes::unlink_identity(&state.oauth, &viewer.user, issuer, subject, addr).await {
        Ok(()) => done(&state, &headers, &viewer, "That identity is unlinked.").await,
        Err(UnlinkError::NotFound) => {
            let error = "That identity is not linked to this account.";
            refused(&state, &headers, &viewer, StatusCode::NOT_FOUND, error).await
        }
        Err(UnlinkError::OnlyWayIn) => {
            let error = "That identity is the only way to sign in to this account. Set a \
                         password first.";
            refused(&state, &headers, &viewer, StatusCode::CONFLICT, error).await
        }
        Err(UnlinkError::Store(e)) => state.web.internal_error(e),
    }
}

/// `POST /account/security/totp/start`: a new secret, shown as a QR code and as text.
pub async fn totp_start(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, viewer) = match posted(&state, &headers, &body).await {
        Ok(p) => p,
        Err(page) => return *page,
    };
    if !state.oauth.config.signin.mfa.offered() {
        let error = "This service does not offer authenticator apps.";
        return refused(&state, &headers, &viewer, StatusCode::FORBIDDEN, error).await;
    }
    let user = &viewer.user;
    match factors::start(&state.oauth, &user.id, &user.username).await {
        Ok(Some(e)) => {
            let shown = Shown {
                enrollment: Some(&e),
                ..Shown::default()
            };
            security_page(&state, &headers, &viewer, StatusCode::OK, shown).await
        }
        Ok(None) => {
            let error = "An authenticator app is already set up. Remove it first.";
            refused(&state, &headers, &viewer, StatusCode::CONFLICT, error).await
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
    let (form, viewer) = match posted(&state, &headers, &body).await {
        Ok(p) => p,
        Err(page) => return *page,
    };
    let user = &viewer.user;
    let code = form.get("code").unwrap_or("");
    match factors::confirm(&state.oauth, &user.id, code).await {
        Ok(Some(codes)) => showing_codes(&state, &headers, &viewer, &codes).await,
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
            security_page(&state, &headers, &viewer, StatusCode::BAD_REQUEST, shown).await
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
    let (form, viewer) = match posted(&state, &headers, &body).await {
        Ok(p) => p,
        Err(page) => return *page,
    };
    let code = form.get("code").unwrap_or("");
    match factors::regenerate_recovery_codes(&state.oauth, &viewer.user.id, code).await {
        Ok(Some(codes)) => showing_codes(&state, &headers, &viewer, &codes).await,
        Ok(None) => {
            let error = "That code is not right, or was already used.";
            refused(&state, &headers, &viewer, StatusCode::BAD_REQUEST, error).await
        }
        Err(e) => state.web.internal_error(e),
    }
}

/// Under `[signin] mfa = "required"`, is the authenticator app the user's only second factor
/// (so it stays)? A passkey is another.
async fn totp_is_last_required(
    state: &AppState,
    user_id: &str,
) -> Result<bool, crate::store::StoreError> {
    Ok(state.oauth.config.signin.mfa == MfaPolicy::Required
        && !crate::oauth::authn::passkey::has_passkey(&state.oauth, user_id).await?)
}

/// `POST /account/security/totp/remove`: needs a current code or a recovery code.
pub async fn totp_remove(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, viewer) = match posted(&state, &headers, &body).await {
        Ok(p) => p,
        Err(page) => return *page,
    };
    match totp_is_last_required(&state, &viewer.user.id).await {
        Ok(false) => {}
        Ok(true) => {
            let error = "A second factor is required here: the authenticator app cannot be \
                         removed while it is your only one. If you lost it, ask the people who \
                         run this service to reset it.";
            return refused(&state, &headers, &viewer, StatusCode::FORBIDDEN, error).await;
        }
        Err(e) => return state.web.internal_error(e),
    }
    let code = form.get("code").unwrap_or("");
    match factors::remove(&state.oauth, &viewer.user.id, code).await {
        Ok(true) => see_other(&state.web.path("/account/security")),
        Ok(false) => {
            let error = "That code is not right, or was already used.";
            refused(&state, &headers, &viewer, StatusCode::BAD_REQUEST, error).await
        }
        Err(e) => state.web.internal_error(e),
    }
}
