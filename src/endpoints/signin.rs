//! `GET|POST /signin` and `POST /signout`: the sign-in page and the session cookie. Who the
//! user is (factors, throttling, the session) is decided in `oauth::authn`.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use minijinja::context;
use serde::Deserialize;

use crate::http::ClientAddr;
use crate::oauth::authn::acr::Level;
use crate::oauth::authn::factors::{self, Enrollment};
use crate::oauth::authn::upstream;
use crate::oauth::authn::{self, PasswordAttempt, PasswordChecked, SignedIn, SigninError};
use crate::oauth::authorize;
use crate::oauth::form::Form;
use crate::state::AppState;
use crate::ui::{Browser, see_other};

#[derive(Deserialize)]
pub struct SigninQuery {
    return_to: Option<String>,
    login_hint: Option<String>,
    /// The authentication context the sign-in must reach (`acr`), when the authorization
    /// request needs more than a password. Not trusted: the request checks the session again.
    acr: Option<String>,
}

/// What the sign-in page shows besides its fields.
#[derive(Default)]
struct SigninView<'a> {
    return_to: &'a str,
    username: &'a str,
    /// The `acr` the sign-in must reach, carried in the form.
    acr: Option<Level>,
    error: Option<&'a str>,
    /// Ask for a new password (an operator asked for one).
    change_password: bool,
    /// And the second factor's code with it.
    ask_code: bool,
    /// Who asks the user to sign in (`ui::consent::who_asks`), when an application does.
    asker: Option<minijinja::Value>,
    /// The upstream providers to offer.
    providers: Vec<upstream::Button>,
}

fn render(state: &AppState, browser: &Browser, status: StatusCode, v: &SigninView<'_>) -> Response {
    let web = &state.web;
    let need = v.acr.filter(|l| *l > Level::OneFactor);
    let page = web.render(
        status,
        "signin.html",
        context! {
            base => web.base_path(),
            csrf => web.csrf(browser),
            return_to => v.return_to,
            username => v.username,
            error => v.error,
            change_password => v.change_password,
            ask_code => v.ask_code,
            acr => v.acr.map(Level::acr),
            need => need.map(Level::words),
            asker => v.asker,
            passkeys => authn::passkey::available(&state.oauth),
            providers => v.providers,
            provider_query => provider_query(v.return_to, v.acr),
        },
    );
    browser.apply(page)
}

/// What a provider's button carries to `/signin/upstream/{id}`: the way back and the level.
fn provider_query(return_to: &str, acr: Option<Level>) -> String {
    let mut q = vec![("return_to", return_to)];
    if let Some(l) = acr.filter(|l| *l > Level::OneFactor) {
        q.push(("acr", l.acr()));
    }
    serde_urlencoded::to_string(&q).unwrap_or_default()
}

/// The providers to offer on the sign-in page; none when they cannot be listed (the page
/// still works with a password).
async fn providers(state: &AppState) -> Vec<upstream::Button> {
    upstream::buttons(&state.oauth).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "upstream providers could not be listed");
        Vec::new()
    })
}

/// The level a sign-in form or link carries; unknown values mean none.
fn carried_level(acr: Option<&str>) -> Option<Level> {
    acr.and_then(Level::from_acr)
}

/// Who asks the user to sign in, when the way back continues an authorization request: its
/// client and where the browser goes after, as the consent page will show them. Nothing for
/// any other way back, or a request no longer valid (the request itself says so later).
async fn asker(state: &AppState, return_to: &str) -> Option<minijinja::Value> {
    let query = return_to.strip_prefix(&state.web.path("/authorize/continue?"))?;
    let sealed = serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find_map(|(k, v)| (k == "request").then_some(v))?;
    let req = authorize::unseal(&state.oauth, &sealed).await.ok()?;
    Some(crate::ui::consent::who_asks(
        &req.client,
        Some(&req.redirect_uri),
    ))
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
    let view = SigninView {
        return_to: &return_to,
        username: q.login_hint.as_deref().unwrap_or(""),
        acr: carried_level(q.acr.as_deref()),
        asker: asker(&state, &return_to).await,
        providers: providers(&state).await,
        ..SigninView::default()
    };
    render(&state, &browser, StatusCode::OK, &view)
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
    let level = carried_level(form.get("acr"));
    // The form again with a message; `change_password` adds the new-password fields (and
    // `ask_code` the second factor's). Who asks and the providers are looked up only then: a
    // right password needs neither.
    let again = async |status, msg: &str, change_password, ask_code| {
        let asker = asker(&state, &return_to).await;
        let providers = providers(&state).await;
        let view = SigninView {
            return_to: &return_to,
            username: &username,
            acr: level,
            error: Some(msg),
            change_password,
            ask_code,
            asker,
            providers,
        };
        render(&state, &browser, status, &view)
    };
    let fail = async |status, msg: &str| again(status, msg, false, false).await;
    let asked_code = form.get("code").is_some();
    let ask_new_password = async |status, msg: &str| again(status, msg, true, asked_code).await;
    if !state.web.csrf_ok(&headers, form.get("csrf")) {
        return fail(
            StatusCode::BAD_REQUEST,
            "The form expired. Please sign in again.",
        )
        .await;
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
        )
        .await;
    }
    let attempt = PasswordAttempt {
        username: &username,
        password,
        new_password,
        code: form.get("code"),
        level,
        addr,
        replacing: state.web.session(&headers),
    };
    let checked = match authn::sign_in_with_password(&state.oauth, attempt).await {
        Ok(checked) => checked,
        Err(SigninError::WrongCode) => {
            return ask_new_password(
                StatusCode::UNAUTHORIZED,
                "That code is not right, or was already used. Your password has not changed.",
            )
            .await;
        }
        Err(SigninError::PendingExpired) => {
            return fail(StatusCode::UNAUTHORIZED, "Wrong username or password.").await;
        }
        Err(SigninError::Throttled(t)) => {
            let wait = t.retry_after().max(1);
            let mut page = fail(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "Too many failed sign-ins. Try again in {}.",
                    wait_phrase(wait)
                ),
            )
            .await;
            page.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(wait));
            return page;
        }
        Err(SigninError::WrongCredentials) => {
            return fail(StatusCode::UNAUTHORIZED, "Wrong username or password.").await;
        }
        Err(SigninError::PasswordChangeRequired { code }) => {
            let msg = if code {
                "You are asked to choose a new password. Enter your current password, a new \
                 one, and a code from your authenticator app."
            } else {
                "You are asked to choose a new password. Enter your current password and a new one."
            };
            return again(StatusCode::OK, msg, true, code).await;
        }
        Err(SigninError::NewPasswordRejected(why)) => {
            return ask_new_password(
                StatusCode::BAD_REQUEST,
                &format!("That new password won't do: {why}."),
            )
            .await;
        }
        Err(SigninError::Disabled) => {
            return fail(
                StatusCode::FORBIDDEN,
                "This account is disabled. Ask the people who run this service.",
            )
            .await;
        }
        Err(SigninError::Store(e)) => {
            let message = crate::error::internal_message(e);
            return fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("Something went wrong on our side: {message}. Please try again."),
            )
            .await;
        }
    };
    after_first_step(&state, &browser, &return_to, checked, authn::AMR_PASSWORD).await
}

/// Where a sign-in goes once its first step (`first`: a password, another provider) checked
/// out: signed in, the second step's page, or the enrolment page.
pub async fn after_first_step(
    state: &AppState,
    browser: &Browser,
    return_to: &str,
    checked: PasswordChecked,
    first: &'static str,
) -> Response {
    let (user, code_required) = match checked {
        PasswordChecked::SignedIn(s) => return established(state, browser, return_to, &s),
        PasswordChecked::CodeRequired(user) => (user, true),
        PasswordChecked::EnrollmentRequired(user) => (user, false),
    };
    let pending = authn::pending_token(
        state.oauth.keys.kek(),
        &authn::Pending {
            user_id: user.id.clone(),
            first,
        },
        &browser.id,
        return_to,
        state.oauth.now(),
    );
    if code_required {
        let second = match authn::second_factors(&state.oauth, &user.id).await {
            Ok(s) => s,
            Err(e) => return state.web.internal_error(e),
        };
        let code = Code::new(return_to, &pending, second);
        return render_code(state, browser, StatusCode::OK, &code, None);
    }
    match factors::start(&state.oauth, &user.id, &user.username).await {
        Ok(Some(enrollment)) => render_enroll(
            state,
            browser,
            StatusCode::OK,
            return_to,
            &pending,
            &enrollment,
            None,
        ),
        Ok(None) => {
            let code = Code::new(return_to, &pending, TOTP_ONLY);
            render_code(state, browser, StatusCode::OK, &code, None)
        }
        Err(e) => state.web.internal_error(e),
    }
}

/// The session cookie set, and the browser on its way back.
fn established(
    state: &AppState,
    browser: &Browser,
    return_to: &str,
    signed_in: &SignedIn,
) -> Response {
    let target = after_signin(state, return_to);
    browser.apply(with_session_cookie(
        state,
        see_other(&target),
        &signed_in.cookie,
    ))
}

/// Where a browser goes once signed in: its way back, else its connected apps.
pub fn after_signin(state: &AppState, return_to: &str) -> String {
    if return_to.is_empty() {
        state.web.path("/account/apps")
    } else {
        return_to.to_string()
    }
}

/// `res` setting a new session's cookie (its value).
pub fn with_session_cookie(state: &AppState, mut res: Response, cookie: &str) -> Response {
    let ttl = i64::from(state.oauth.config.tokens.session_ttl_secs);
    res.headers_mut().append(
        header::SET_COOKIE,
        state
            .web
            .set_cookie(state.web.session_cookie(), cookie, Some(ttl)),
    );
    res
}

/// What the second step's page offers: the carried half-done sign-in, and the user's
/// second factors (the code form for an authenticator app, a button for a passkey).
struct Code<'a> {
    return_to: &'a str,
    pending: &'a str,
    second: authn::SecondFactors,
}

impl<'a> Code<'a> {
    fn new(return_to: &'a str, pending: &'a str, second: authn::SecondFactors) -> Self {
        Self {
            return_to,
            pending,
            second,
        }
    }
}

/// The code form alone (an authenticator app just confirmed, or a second step failed).
const TOTP_ONLY: authn::SecondFactors = authn::SecondFactors {
    authenticator: true,
    passkey: false,
};

/// The second step's page: the code form and/or the passkey button, carrying the half-done
/// sign-in.
fn render_code(
    state: &AppState,
    browser: &Browser,
    status: StatusCode,
    code: &Code<'_>,
    error: Option<&str>,
) -> Response {
    let web = &state.web;
    let page = web.render(
        status,
        "signin_code.html",
        context! {
            base => web.base_path(),
            csrf => web.csrf(browser),
            return_to => code.return_to,
            pending => code.pending,
            error => error,
            totp => code.second.authenticator,
            passkey => code.second.passkey,
        },
    );
    browser.apply(page)
}

/// A posted second step (`/signin/code`, `/signin/enroll`): its form, the way back, the
/// carried half-done sign-in and the user it names, checked against this browser and the
/// way back; never a user from a form field of its own. Else the page to start again.
struct SecondStep {
    browser: Browser,
    form: Form,
    return_to: String,
    pending: String,
    user: authn::Pending,
}

fn second_step(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<SecondStep, Box<Response>> {
    let browser = state.web.browser(headers);
    let form = Form::parse(body).unwrap_or_default();
    let return_to = form
        .get("return_to")
        .and_then(|r| state.web.safe_return_to(r))
        .unwrap_or_default();
    let pending = form.get("pending").unwrap_or("").to_string();
    let start_again = |status, msg: &str| {
        let view = SigninView {
            return_to: &return_to,
            error: Some(msg),
            ..SigninView::default()
        };
        render(state, &browser, status, &view)
    };
    if !state.web.csrf_ok(headers, form.get("csrf")) {
        return Err(Box::new(start_again(
            StatusCode::BAD_REQUEST,
            "The form expired. Please sign in again.",
        )));
    }
    let Some(user) = authn::pending_user(
        state.oauth.keys.kek(),
        &pending,
        &browser.id,
        &return_to,
        state.oauth.now(),
    ) else {
        return Err(Box::new(start_again(
            StatusCode::BAD_REQUEST,
            "That sign-in took too long or did not start here. Please sign in again.",
        )));
    };
    Ok(SecondStep {
        browser,
        form,
        return_to,
        pending,
        user,
    })
}

impl SecondStep {
    /// The answer to a second step that failed: its own page again (`again`) for a wrong code
    /// or a throttled attempt, else the sign-in page.
    fn refused(
        &self,
        state: &AppState,
        e: SigninError,
        again: impl Fn(StatusCode, &str) -> Response,
    ) -> Response {
        let start_again = |status, msg: &str| {
            let view = SigninView {
                return_to: &self.return_to,
                error: Some(msg),
                ..SigninView::default()
            };
            render(state, &self.browser, status, &view)
        };
        match e {
            SigninError::WrongCode => again(
                StatusCode::UNAUTHORIZED,
                "That code is not right, or was already used. Try the next one.",
            ),
            SigninError::Throttled(t) => {
                let wait = t.retry_after().max(1);
                let mut page = again(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!("Too many wrong codes. Try again in {}.", wait_phrase(wait)),
                );
                page.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from(wait));
                page
            }
            SigninError::Disabled => start_again(
                StatusCode::FORBIDDEN,
                "This account is disabled. Ask the people who run this service.",
            ),
            SigninError::Store(e) => state.web.internal_error(e),
            _ => start_again(StatusCode::BAD_REQUEST, "Please sign in again."),
        }
    }
}

/// `POST /signin/code`: the second step, an authenticator or recovery code.
pub async fn submit_code(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let step = match second_step(&state, &headers, &body) {
        Ok(s) => s,
        Err(page) => return *page,
    };
    let code = step.form.get("code").unwrap_or("");
    let replacing = state.web.session(&headers);
    match authn::sign_in_with_code(&state.oauth, &step.user, code, addr, replacing).await {
        Ok(signed_in) => established(&state, &step.browser, &step.return_to, &signed_in),
        Err(e) => {
            let second = authn::second_factors(&state.oauth, &step.user.user_id)
                .await
                .unwrap_or(TOTP_ONLY);
            let page = Code::new(&step.return_to, &step.pending, second);
            step.refused(&state, e, |status, msg: &str| {
                render_code(&state, &step.browser, status, &page, Some(msg))
            })
        }
    }
}

/// The enrolment step's page: the authenticator to set up, and its first code.
fn render_enroll(
    state: &AppState,
    browser: &Browser,
    status: StatusCode,
    return_to: &str,
    pending: &str,
    enrollment: &Enrollment,
    error: Option<&str>,
) -> Response {
    let web = &state.web;
    let page = web.render(
        status,
        "signin_enroll.html",
        context! {
            base => web.base_path(),
            csrf => web.csrf(browser),
            return_to => return_to,
            pending => pending,
            error => error,
            qr => crate::ui::qr_svg(&enrollment.uri),
            secret => enrollment.secret_base32.as_str(),
        },
    );
    browser.apply(page)
}

/// `POST /signin/enroll`: a user who must use a second factor and had none confirms the
/// authenticator set up for them; signed in, they see their recovery codes once and go on.
pub async fn submit_enroll(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let step = match second_step(&state, &headers, &body) {
        Ok(s) => s,
        Err(page) => return *page,
    };
    let code = step.form.get("code").unwrap_or("");
    let replacing = state.web.session(&headers);
    match authn::enrol_at_signin(&state.oauth, &step.user, code, addr, replacing).await {
        Ok((signed_in, codes)) => {
            let web = &state.web;
            let target = if step.return_to.is_empty() {
                web.path("/account/security")
            } else {
                step.return_to.clone()
            };
            let page = web.render(
                StatusCode::OK,
                "signin_recovery.html",
                context! {
                    base => web.base_path(),
                    recovery_codes => codes,
                    next => target,
                },
            );
            with_session_cookie(&state, step.browser.apply(page), &signed_in.cookie)
        }
        Err(e) => {
            let shown = factors::pending_of(&state.oauth, &step.user.user_id).await;
            step.refused(&state, e, |status, msg: &str| match &shown {
                Ok(Some(enrollment)) => render_enroll(
                    &state,
                    &step.browser,
                    status,
                    &step.return_to,
                    &step.pending,
                    enrollment,
                    Some(msg),
                ),
                _ => render_code(
                    &state,
                    &step.browser,
                    status,
                    &Code::new(&step.return_to, &step.pending, TOTP_ONLY),
                    Some(msg),
                ),
            })
        }
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
    signed_out(&state)
}

/// The browser sent to the sign-in page, its session cookie cleared (its session ended).
pub fn signed_out(state: &AppState) -> Response {
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
