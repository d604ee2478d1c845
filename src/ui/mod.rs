//! Server-rendered pages (sign-in, consent, connected apps, device, errors): templates,
//! cookies, anti-forgery tokens and the headers every page carries (SECURITY.md). [`Web`]
//! holds what pages need; it knows nothing of the protocol beyond what a page shows.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use minijinja::{Environment, Value};

pub mod consent;

use crate::keys::KeyManager;
use crate::oauth::form::Form;
use crate::util;

/// The session cookie's name, before its prefix (see [`Web::new`]).
pub const SESSION_COOKIE: &str = "concierge_session";
/// The anti-forgery binding cookie's name, before its prefix.
pub const BROWSER_COOKIE: &str = "concierge_browser";
pub const STYLESHEET: &str = include_str!("concierge.css");
/// The one script of the pages: the WebAuthn ceremonies of passkeys (`/static/passkey.js`).
pub const PASSKEY_SCRIPT: &str = include_str!("passkey.js");

/// How long a form's anti-forgery token is good for, in seconds.
pub const CSRF_TTL_SECS: i64 = 3600;

/// The compiled templates, and what every page needs: the issuer's base path, whether
/// cookies are `Secure`, and the key that makes anti-forgery tokens.
pub struct Web {
    env: Environment<'static>,
    /// The issuer's path ("" at the root): prefix of every link and form on our pages.
    base_path: String,
    /// The issuer is https: cookies are `Secure` (and prefixed).
    secure: bool,
    /// The cookies' names, with their prefix.
    session_cookie: String,
    browser_cookie: String,
    keys: Arc<KeyManager>,
}

impl Web {
    /// Pages for an issuer at `base_path`. With an https issuer the cookies are `Secure`
    /// and carry a prefix the browser enforces: `__Host-` (Secure, `Path=/`, no `Domain`)
    /// for an issuer at the root of its origin; `__Secure-` for an issuer with a path, whose
    /// cookies must stay under that path (so two issuers on one origin keep theirs apart).
    pub fn new(
        base_path: &str,
        secure: bool,
        keys: Arc<KeyManager>,
    ) -> Result<Self, minijinja::Error> {
        let prefix = match (secure, base_path.is_empty()) {
            (false, _) => "",
            (true, true) => "__Host-",
            (true, false) => "__Secure-",
        };
        let mut env = Environment::new();
        env.add_template("base.html", include_str!("templates/base.html"))?;
        env.add_template("error.html", include_str!("templates/error.html"))?;
        env.add_template("signin.html", include_str!("templates/signin.html"))?;
        env.add_template("consent.html", include_str!("templates/consent.html"))?;
        env.add_template("asker.html", include_str!("templates/asker.html"))?;
        env.add_template("apps.html", include_str!("templates/apps.html"))?;
        env.add_template("chains.html", include_str!("templates/chains.html"))?;
        env.add_template("approvals.html", include_str!("templates/approvals.html"))?;
        env.add_template("device.html", include_str!("templates/device.html"))?;
        env.add_template(
            "signin_code.html",
            include_str!("templates/signin_code.html"),
        )?;
        env.add_template("security.html", include_str!("templates/security.html"))?;
        env.add_template(
            "security_passkeys.html",
            include_str!("templates/security_passkeys.html"),
        )?;
        env.add_template(
            "signin_passkey.html",
            include_str!("templates/signin_passkey.html"),
        )?;
        env.add_template(
            "signin_providers.html",
            include_str!("templates/signin_providers.html"),
        )?;
        env.add_template(
            "signin_code_passkey.html",
            include_str!("templates/signin_code_passkey.html"),
        )?;
        env.add_template(
            "signin_enroll.html",
            include_str!("templates/signin_enroll.html"),
        )?;
        env.add_template(
            "signin_recovery.html",
            include_str!("templates/signin_recovery.html"),
        )?;
        Ok(Self {
            env,
            base_path: base_path.to_string(),
            secure,
            session_cookie: format!("{prefix}{SESSION_COOKIE}"),
            browser_cookie: format!("{prefix}{BROWSER_COOKIE}"),
            keys,
        })
    }

    /// The session cookie's name (with its prefix).
    pub fn session_cookie(&self) -> &str {
        &self.session_cookie
    }

    /// The browser's session cookie value, if it sent one.
    pub fn session<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        cookie(headers, &self.session_cookie)
    }

    /// The issuer's path ("" at the root).
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// A path on this server, under the issuer's path.
    pub fn path(&self, path: &str) -> String {
        format!("{}{path}", self.base_path)
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

    /// An error page (never a redirect: used when the client or redirect URI is not trusted).
    pub fn error_page(&self, status: StatusCode, message: &str) -> Response {
        self.render(
            status,
            "error.html",
            minijinja::context! { base => self.base_path, message => message },
        )
    }

    /// The page for our own fault: the detail is logged under a correlation id, the page
    /// shows only the id.
    pub fn internal_error(&self, detail: impl std::fmt::Display) -> Response {
        let message = crate::error::internal_message(detail);
        self.error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("Something went wrong on our side: {message}."),
        )
    }

    /// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Secure unless the issuer is plain http
    /// (development on loopback). `max_age` None makes a browser-session cookie.
    pub fn set_cookie(&self, name: &str, value: &str, max_age: Option<i64>) -> HeaderValue {
        let path = if self.base_path.is_empty() {
            "/"
        } else {
            &self.base_path
        };
        let mut c = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax");
        if self.secure {
            c.push_str("; Secure");
        }
        if let Some(age) = max_age {
            c.push_str(&format!("; Max-Age={age}"));
        }
        HeaderValue::from_str(&c)
            .unwrap_or_else(|_| HeaderValue::from_static("invalid=1; Max-Age=0"))
    }

    /// The browser's anti-forgery binding, created when absent.
    pub fn browser(&self, headers: &HeaderMap) -> Browser {
        match cookie(headers, &self.browser_cookie).filter(|v| v.len() == 22) {
            Some(id) => Browser {
                id: id.to_string(),
                set_cookie: None,
            },
            None => {
                let id = util::random_id();
                let set_cookie = Some(self.set_cookie(&self.browser_cookie, &id, None));
                Browser { id, set_cookie }
            }
        }
    }

    /// The anti-forgery token of `browser`, for a form: when it was made, and a tag over
    /// that time and the browser, good for [`CSRF_TTL_SECS`].
    pub fn csrf(&self, browser: &Browser) -> String {
        let issued = util::now();
        let tag = self
            .keys
            .kek()
            .csrf_token(&format!("{}\n{issued}", browser.id));
        format!("{issued}.{tag}")
    }

    /// Does the form's anti-forgery token belong to this browser, and is it recent? A form
    /// posted without the browser cookie (a new browser) never passes.
    pub fn csrf_ok(&self, headers: &HeaderMap, token: Option<&str>) -> bool {
        let (Some(id), Some(token)) = (cookie(headers, &self.browser_cookie), token) else {
            return false;
        };
        let Some((issued, tag)) = token.split_once('.') else {
            return false;
        };
        let Ok(at) = issued.parse::<i64>() else {
            return false;
        };
        let now = util::now();
        let fresh = at <= now + 60 && now - at <= CSRF_TTL_SECS;
        fresh && self.keys.kek().verify_csrf(&format!("{id}\n{issued}"), tag)
    }

    /// A form posted from one of our pages: parsed, with its anti-forgery token checked. The
    /// error is the page to answer with.
    pub fn posted_form(&self, headers: &HeaderMap, body: &[u8]) -> Result<Form, Box<Response>> {
        let form = Form::parse(body)
            .map_err(|e| Box::new(self.error_page(StatusCode::BAD_REQUEST, &e.description)))?;
        if !self.csrf_ok(headers, form.get("csrf")) {
            return Err(Box::new(self.error_page(
                StatusCode::BAD_REQUEST,
                "This form expired or did not come from this page. Go back and start again.",
            )));
        }
        Ok(form)
    }

    /// A path on this server that it is safe to send the browser back to after signing in.
    pub fn safe_return_to(&self, return_to: &str) -> Option<String> {
        let ok = return_to.starts_with(&format!("{}/", self.base_path))
            && !return_to.starts_with("//")
            && !return_to.contains('\\')
            && !return_to.chars().any(char::is_control);
        ok.then(|| return_to.to_string())
    }
}

/// A QR code of `text` as an inline `<svg>` element (drawn here, so the page needs no script
/// and no image fetch). Empty when the text does not fit in a QR code.
pub fn qr_svg(text: &str) -> String {
    let Ok(code) = qrcode::QrCode::new(text.as_bytes()) else {
        return String::new();
    };
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(220, 220)
        .build();
    // Inline in HTML: without the XML declaration.
    svg.find("<svg")
        .map_or(svg.clone(), |at| svg[at..].to_string())
}

/// Headers for every page: no framing, no caching, a strict content policy.
pub fn with_page_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    // No form-action: after a consent decision the browser follows a redirect to the
    // client's redirect URI, which form-action would block. Scripts and their requests only
    // from this origin (the passkey ceremonies' `/static/passkey.js`), never inline.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; \
             img-src 'self'; base-uri 'none'; frame-ancestors 'none'",
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

/// The browser's anti-forgery binding: the `concierge_browser` cookie.
pub struct Browser {
    pub id: String,
    /// Set on the response when the cookie was new.
    pub set_cookie: Option<HeaderValue>,
}

impl Browser {
    /// Attach the cookie if it is new.
    pub fn apply(&self, mut res: Response) -> Response {
        if let Some(c) = &self.set_cookie {
            res.headers_mut().append(header::SET_COOKIE, c.clone());
        }
        res
    }
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
