//! A request's `Host` header, checked as HTTP/1.1 requires.
//!
//! RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without a `Host` header,
//! to a request with more than one, and to one whose `Host` is not a valid host. hyper
//! passes all three on; they are refused here, before any handler sees them. HTTP/1.0 may
//! omit the header, and HTTP/2 names the host in `:authority` instead (RFC 9113 §8.3.1).

use axum::extract::Request;
use axum::http::{Version, header, uri::Authority};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::OAuthError;

/// What is wrong with `req`'s `Host`, if anything.
pub fn problem(req: &Request) -> Option<&'static str> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if req.version() == Version::HTTP_11 => {
            Some("an HTTP/1.1 request needs a Host header (RFC 9112 §3.2)")
        }
        (None, _) => None,
        (Some(_), Some(_)) => Some("send one Host header (RFC 9112 §3.2)"),
        (Some(host), None) => {
            let valid = host
                .to_str()
                .ok()
                .and_then(|h| h.parse::<Authority>().ok())
                .is_some_and(|a| valid_host(&a));
            (!valid).then_some("the Host header is not a valid host (RFC 9112 §3.2)")
        }
    }
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2), where `port` is digits: no user information, no
/// empty host, no port that is not a number (which `Authority` lets through).
fn valid_host(a: &Authority) -> bool {
    let port = a.as_str().strip_prefix(a.host());
    !a.host().is_empty()
        && port.is_some_and(|p| {
            p.is_empty()
                || p.strip_prefix(':')
                    .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// Middleware: answer 400 (`invalid_request`) to a request whose `Host` is missing where
/// required, repeated or invalid; pass the others on.
pub async fn layer(req: Request, next: Next) -> Response {
    match problem(&req) {
        Some(why) => OAuthError::invalid_request(why).into_response(),
        None => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;

    use super::*;

    fn request(version: Version, hosts: &[&str]) -> Request {
        let mut b = Request::builder().uri("/jwks").version(version);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(Body::empty()).unwrap()
    }

    #[test]
    fn http_1_1_needs_exactly_one_valid_host() {
        let ok = |v, hosts: &[&str]| problem(&request(v, hosts)).is_none();
        assert!(ok(Version::HTTP_11, &["auth.example.com"]));
        assert!(ok(Version::HTTP_11, &["127.0.0.1:8080"]));
        assert!(ok(Version::HTTP_11, &["[::1]:8080"]));
        assert!(ok(Version::HTTP_10, &[]));
        assert!(ok(Version::HTTP_2, &[]));
        assert!(!ok(Version::HTTP_11, &[]));
        assert!(!ok(Version::HTTP_11, &["a.example", "b.example"]));
        assert!(!ok(Version::HTTP_2, &["a.example", "a.example"]));
        assert!(!ok(Version::HTTP_11, &["user@a.example"]));
        assert!(!ok(Version::HTTP_11, &["a.example/path"]));
        assert!(!ok(Version::HTTP_11, &["a example"]));
        assert!(!ok(Version::HTTP_11, &[""]));
        assert!(!ok(Version::HTTP_10, &["a.example:port"]));
        assert!(!ok(Version::HTTP_11, &["a.example:80:80"]));
        assert!(ok(Version::HTTP_11, &["a.example:"]));
    }
}
