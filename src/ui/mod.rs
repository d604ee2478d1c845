//! Server-rendered pages (sign-in, consent, connected apps, errors): templates, cookies,
//! anti-forgery tokens and the headers every page carries (DESIGN.md §6).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use minijinja::{Environment, Value};

pub mod consent;

use crate::startup::AppState;
use crate::store::{Session, User};
use crate::util;

pub const SESSION_COOKIE: &str = "concierge_session";
pub const BROWSER_COOKIE: &str = "concierge_browser";
pub const STYLESHEET: &str = include_str!("concierge.css");

/// The compiled templates.
pub struct Pages {
    env: Environment<'static>,
}

impl Pages {
    pub fn new() -> Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        env.add_template("base.html", include_str!("templates/base.html"))?;
        env.add_template("error.html", include_str!("templates/error.html"))?;
        env.add_template("signin.html", include_str!("templates/signin.html"))?;
        env.add_template("consent.html", include_str!("templates/consent.html"))?;
        env.add_template("apps.html", include_str!("templates/apps.html"))?;
        env.add_template("device.html", include_str!("templates/device.html"))?;
        Ok(Self { env })
    }

    /// Render `name`; a template error becomes a plain error page (and a log line).
    pub fn render(&self, status: StatusCode, name: &str, ctx: Value) -> Response {
        let html = self
            .env
            .get_template(name)
            .and_then(|t| t.render(ctx))
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, template = name, "rendering a page failed");
                "<!doctype html><title>Error</title><p>Something went wrong.</p>".to_string()
            });
        with_page_headers((status, Html(html)).into_response())
    }
}

/// Headers for every page: no framing, no caching, a strict content policy.
pub fn with_page_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    // No form-action: after a consent decision the browser follows a redirect to the
    // client's redirect URI, which form-action would block.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// An error page (never a redirect: used when the client or redirect URI is not trusted).
pub fn error_page(state: &AppState, status: StatusCode, message: &str) -> Response {
    state.pages.render(
        status,
        "error.html",
        minijinja::context! { base => state.base_path.as_ref(), message => message },
    )
}

/// A cookie's value from the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Secure unless the issuer is plain http
/// (development on loopback). `max_age` None makes a browser-session cookie.
pub fn set_cookie(state: &AppState, name: &str, value: &str, max_age: Option<i64>) -> HeaderValue {
    let path = if state.base_path.is_empty() {
        "/"
    } else {
        &state.base_path
    };
    let mut c = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax");
    if state.issuer.starts_with("https://") {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("invalid=1; Max-Age=0"))
}

/// The browser's anti-forgery binding: the `concierge_browser` cookie, created when absent.
pub struct Browser {
    pub id: String,
    /// Set on the response when the cookie was new.
    pub set_cookie: Option<HeaderValue>,
}

impl Browser {
    pub fn from_headers(state: &AppState, headers: &HeaderMap) -> Self {
        match cookie(headers, BROWSER_COOKIE).filter(|v| v.len() == 22) {
            Some(id) => Self {
                id: id.to_string(),
                set_cookie: None,
            },
            None => {
                let id = util::random_id();
                let set_cookie = Some(set_cookie(state, BROWSER_COOKIE, &id, None));
                Self { id, set_cookie }
            }
        }
    }

    pub fn csrf(&self, state: &AppState) -> String {
        state.keys.kek().csrf_token(&self.id)
    }

    /// Attach the cookie if it is new.
    pub fn apply(&self, mut res: Response) -> Response {
        if let Some(c) = &self.set_cookie {
            res.headers_mut().append(header::SET_COOKIE, c.clone());
        }
        res
    }
}

/// Does the form's anti-forgery token belong to this browser? A form posted without the
/// browser cookie (a new browser) never passes.
pub fn csrf_ok(state: &AppState, headers: &HeaderMap, token: Option<&str>) -> bool {
    match (cookie(headers, BROWSER_COOKIE), token) {
        (Some(id), Some(t)) => state.keys.kek().verify_csrf(id, t),
        _ => false,
    }
}

/// A form posted from one of our pages: parsed, with its anti-forgery token checked. The
/// error is the page to answer with.
pub fn posted_form(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<crate::oauth::form::Form, Box<Response>> {
    let form = crate::oauth::form::Form::parse(body)
        .map_err(|e| Box::new(error_page(state, StatusCode::BAD_REQUEST, &e.description)))?;
    if !csrf_ok(state, headers, form.get("csrf")) {
        return Err(Box::new(error_page(
            state,
            StatusCode::BAD_REQUEST,
            "This form expired or did not come from this page. Go back and start again.",
        )));
    }
    Ok(form)
}

/// The signed-in user of this browser, if any.
pub async fn current_session(state: &AppState, headers: &HeaderMap) -> Option<(Session, User)> {
    let token = cookie(headers, SESSION_COOKIE)?;
    let now = util::now();
    let session = match state
        .store
        .get_session(&util::secret_hash(token), now)
        .await
    {
        Ok(s) => s?,
        Err(e) => {
            tracing::error!(error = %e, "loading a session");
            return None;
        }
    };
    let user = state.store.get_user(&session.user_id).await.ok()??;
    Some((session, user))
}

/// A path on this server that it is safe to send the browser back to after signing in.
pub fn safe_return_to(state: &AppState, return_to: &str) -> Option<String> {
    let ok = return_to.starts_with(&format!("{}/", state.base_path))
        && !return_to.starts_with("//")
        && !return_to.contains('\\')
        && !return_to.chars().any(char::is_control);
    ok.then(|| return_to.to_string())
}

/// A 303 to `location`.
pub fn see_other(location: &str) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
