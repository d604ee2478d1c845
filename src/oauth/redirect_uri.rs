//! Redirect URIs: what may be registered, and how a requested one matches.

use url::Url;

/// Schemes never allowed as a redirect target, whatever the client type.
const FORBIDDEN_SCHEMES: &[&str] = &[
    "javascript",
    "data",
    "vbscript",
    "file",
    "blob",
    "about",
    "ftp",
    "ws",
    "wss",
    "mailto",
    "tel",
    "sms",
];

/// Longest redirect URI accepted.
pub const MAX_LEN: usize = 2000;

pub use crate::util::is_loopback_host;

/// A redirect URI that passed the registration rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectUri {
    raw: String,
    url: Url,
}

impl RedirectUri {
    /// Parse and check a redirect URI against the rules every client shares
    /// (OAuth 2.1 §2.3.1, RFC 8252 §7, RFC 9700 §2.1). The error says what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() > MAX_LEN {
            return Err(format!("is longer than {MAX_LEN} characters"));
        }
        let url = Url::parse(raw).map_err(|e| format!("is not an absolute URI ({e})"))?;
        if url.fragment().is_some() || raw.contains('#') {
            return Err("must not contain a fragment (RFC 6749 §3.1.2)".into());
        }
        let scheme = url.scheme();
        if FORBIDDEN_SCHEMES.contains(&scheme) {
            return Err(format!("uses the forbidden scheme '{scheme}'"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not contain user information".into());
        }
        match scheme {
            "https" if url.host().is_none() => {
                return Err("https redirect URIs need a host".into());
            }
            "http" if !is_loopback_host(&url) => {
                return Err(
                    "http is allowed only for loopback hosts (localhost, 127.0.0.1, [::1]); \
                     use https"
                        .into(),
                );
            }
            // A private-use scheme of a native app (RFC 8252 §7.1), e.g.
            // `com.example.app:/callback` or `cursor://…`.
            _ => {}
        }
        Ok(Self {
            raw: raw.to_string(),
            url,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn is_loopback(&self) -> bool {
        self.url.scheme() == "http" && is_loopback_host(&self.url)
    }

    /// Does a redirect URI sent on a request match this registered one? Exact string
    /// comparison, except that a loopback URI matches on any port (RFC 8252 §7.3): scheme,
    /// host, path and query must still be the same.
    pub fn matches(&self, requested: &str) -> bool {
        if requested == self.raw {
            return true;
        }
        if !self.is_loopback() {
            return false;
        }
        let Ok(req) = Url::parse(requested) else {
            return false;
        };
        req.scheme() == "http"
            && req.host() == self.url.host()
            && req.path() == self.url.path()
            && req.query() == self.url.query()
            && req.fragment().is_none()
            && req.username().is_empty()
            && req.password().is_none()
            // `Url` normalises, so also insist the request had no leftovers it dropped.
            && !requested.contains('#')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_real_clients_register() {
        for ok in [
            "https://app.example.com/callback",
            "http://localhost/callback",
            "http://localhost:33418/callback",
            "http://127.0.0.1:6274/oauth/callback",
            "http://[::1]:8080/cb",
            "com.example.app:/oauth2redirect",
            "cursor://anysphere.cursor-retrieval/oauth/callback",
            "https://app.example.com/cb?tenant=a",
        ] {
            RedirectUri::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn refuses_dangerous_uris() {
        for (bad, why) in [
            ("http://app.example.com/cb", "loopback"),
            ("https://app.example.com/cb#x", "fragment"),
            ("https://app.example.com/cb#", "fragment"),
            ("javascript:alert(1)", "forbidden"),
            ("data:text/html,hi", "forbidden"),
            ("file:///etc/passwd", "forbidden"),
            ("/relative/path", "absolute"),
            ("https://user:pw@app.example.com/cb", "user information"),
            ("http://localhost.evil.example/cb", "loopback"),
        ] {
            let e = RedirectUri::parse(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn loopback_matches_on_any_port_but_nothing_else_differs() {
        let r = RedirectUri::parse("http://localhost/callback").expect("valid");
        assert!(r.matches("http://localhost/callback"));
        assert!(r.matches("http://localhost:51234/callback"));
        assert!(!r.matches("http://localhost:51234/callback2"));
        assert!(!r.matches("http://localhost:51234/callback?x=1"));
        assert!(!r.matches("http://127.0.0.1:51234/callback"));
        assert!(!r.matches("https://localhost:51234/callback"));
        assert!(!r.matches("http://localhost:51234/callback#frag"));
        let q = RedirectUri::parse("http://127.0.0.1:9/cb?a=1").expect("valid");
        assert!(q.matches("http://127.0.0.1:4000/cb?a=1"));
        assert!(!q.matches("http://127.0.0.1:4000/cb?a=2"));
    }

    #[test]
    fn non_loopback_matches_exactly() {
        let r = RedirectUri::parse("https://app.example.com/cb").expect("valid");
        assert!(r.matches("https://app.example.com/cb"));
        assert!(!r.matches("https://app.example.com/cb/"));
        assert!(!r.matches("https://APP.example.com/cb"));
        assert!(!r.matches("https://app.example.com:443/cb"));
        assert!(!r.matches("https://app.example.com/cb?x=1"));
    }

    /// Property tests (README: Fuzzing).
    mod fuzz {
        use proptest::prelude::*;

        use super::*;
        use crate::fuzz::{config, uri_like};

        proptest! {
            #![proptest_config(config())]

            /// Any text: a redirect URI that keeps the rules, or a reason.
            #[test]
            fn any_text_is_a_safe_redirect_uri_or_refused(raw in uri_like()) {
                if let Ok(r) = RedirectUri::parse(&raw) {
                    prop_assert_eq!(r.as_str(), raw.as_str());
                    prop_assert!(!raw.contains('#') && raw.len() <= MAX_LEN);
                    prop_assert!(!FORBIDDEN_SCHEMES.contains(&r.url().scheme()));
                    prop_assert!(r.url().username().is_empty() && r.url().password().is_none());
                    prop_assert!(r.url().scheme() != "http" || r.is_loopback());
                    prop_assert!(r.url().scheme() != "https" || r.url().host().is_some());
                }
            }

            /// Matching is reflexive for registered URIs, and a loopback URI matches on any
            /// port with everything else the same.
            #[test]
            fn matching_is_reflexive_and_ignores_only_the_loopback_port(
                raw in uri_like(),
                port in any::<u16>(),
                requested in uri_like(),
            ) {
                let Ok(r) = RedirectUri::parse(&raw) else { return Ok(()) };
                prop_assert!(r.matches(&raw));
                if r.is_loopback() {
                    let mut other = r.url().clone();
                    if other.set_port(Some(port)).is_ok() {
                        prop_assert!(r.matches(other.as_str()), "{} vs {}", raw, other);
                    }
                }
                if r.matches(&requested) && requested != raw {
                    let req = Url::parse(&requested)?;
                    prop_assert!(r.is_loopback());
                    prop_assert_eq!((req.scheme(), req.host(), req.path(), req.query()),
                        (r.url().scheme(), r.url().host(), r.url().path(), r.url().query()));
                }
            }
        }
    }
}
