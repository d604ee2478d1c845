//! A request's `Host` header, checked as HTTP/1.1 and HTTP/2 require.
//!
//! RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without a `Host` header,
//! to a request with more than one, and to one whose `Host` is not a valid host. hyper
//! passes all three on; they are refused here, before any handler sees them. HTTP/1.0 may
//! omit the header, and HTTP/2 names the host in `:authority` instead (RFC 9113 §8.3.1);
//! a request that has both must name one host in them.

use std::future::Future;

use axum::extract::Request;
use axum::http::{Version, header, uri::Authority};
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
            let Some(host) = host
                .to_str()
                .ok()
                .and_then(|h| h.parse::<Authority>().ok())
                .filter(valid_host)
            else {
                return Some("the Host header is not a valid host (RFC 9112 §3.2)");
            };
            // RFC 9113 §8.3.1: a server SHOULD treat an HTTP/2 request as malformed when its
            // Host names another host than its `:authority` (which hyper puts in the URI).
            // HTTP/1.1's absolute form is not compared: there a server MUST ignore Host
            // (RFC 9112 §3.2.2).
            let h2 = matches!(req.version(), Version::HTTP_2 | Version::HTTP_3);
            match req.uri().authority() {
                Some(authority) if h2 && !same_host(&host, authority, req.uri().scheme_str()) => {
                    Some("the Host header names another host than :authority (RFC 9113 §8.3.1)")
                }
                _ => None,
            }
        }
    }
}

/// Whether two authorities name one host: the same name (case-insensitive, RFC 9110 §4.2.3)
/// and the same port, a port left out being the scheme's default.
fn same_host(a: &Authority, b: &Authority, scheme: Option<&str>) -> bool {
    let default = match scheme {
        Some("http") => Some(80),
        Some("https") => Some(443),
        _ => None,
    };
    let port = |x: &Authority| x.port_u16().or(default);
    a.host().eq_ignore_ascii_case(b.host()) && port(a) == port(b)
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

/// Answer 400 (`invalid_request`) to a request whose `Host` is missing where required,
/// repeated or invalid; let `inner` answer the others (a part of `crate::http::front`).
pub async fn around<F, Fut>(req: Request, inner: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    match problem(&req) {
        Some(why) => OAuthError::invalid_request(why).into_response(),
        None => inner(req).await,
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

    #[test]
    fn a_host_must_name_the_host_of_an_authority_in_the_target() {
        let ok = |v, uri: &str, host: &str| {
            let req = Request::builder()
                .uri(uri)
                .version(v)
                .header(header::HOST, host)
                .body(Body::empty())
                .unwrap();
            problem(&req).is_none()
        };
        // HTTP/2: `:authority` is in the URI.
        assert!(ok(Version::HTTP_2, "http://a.example/jwks", "a.example"));
        assert!(ok(Version::HTTP_2, "http://a.example/jwks", "A.Example:80"));
        assert!(ok(
            Version::HTTP_2,
            "https://a.example:443/jwks",
            "a.example"
        ));
        assert!(ok(Version::HTTP_2, "http://[::1]:8080/jwks", "[::1]:8080"));
        assert!(!ok(Version::HTTP_2, "http://a.example/jwks", "b.example"));
        assert!(!ok(
            Version::HTTP_2,
            "http://a.example/jwks",
            "a.example:8080"
        ));
        assert!(!ok(
            Version::HTTP_2,
            "https://a.example/jwks",
            "a.example:80"
        ));
        // HTTP/1.1 in the absolute form: Host is ignored (RFC 9112 §3.2.2), so not compared.
        assert!(ok(
            Version::HTTP_11,
            "http://a.example:8080/jwks",
            "b.example:8080"
        ));
        // The origin form has no authority to compare.
        assert!(ok(Version::HTTP_11, "/jwks", "b.example"));
    }
}
