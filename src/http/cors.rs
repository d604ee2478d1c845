//! CORS (the Fetch standard's "CORS protocol") for the endpoints browser-based MCP clients
//! call directly: any origin, no credentials, fixed lists of methods and headers.
//!
//! Every answer gets the same headers whatever the request's `Origin` and
//! `Access-Control-Request-*` say (`*`, and fixed lists, none echoed back), so no cache needs
//! to tell them apart and none gets `Vary` (the Fetch standard, "CORS protocol and HTTP
//! caches", asks for `Vary: Origin` where the allowed origin is chosen per request).
//!
//! A layer of our own rather than tower-http's `CorsLayer`: with nothing chosen per request,
//! the headers are constants, and the layer is nothing to copy. tower-http's copied its whole
//! configuration and built a header map for every request (issue 17.1: a profile of the key
//! set's requests).

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, header};
use axum::response::Response;
use futures_util::FutureExt;
use futures_util::future::{Either, Map};

/// What a page's script may call with: any method these endpoints have.
const ALLOW_METHODS: HeaderValue = HeaderValue::from_static("GET,POST,PUT,DELETE");
/// What it may send beyond the CORS-safelisted headers: a token, a JSON or form body, a DPoP
/// proof (RFC 9449), MCP's version header.
const ALLOW_HEADERS: HeaderValue =
    HeaderValue::from_static("authorization,content-type,dpop,mcp-protocol-version");
/// What it may read beyond the CORS-safelisted response headers: the challenge of a refused
/// token (RFC 6750 §3), how long to wait when limited, DPoP's nonce (RFC 9449 §8).
const EXPOSE_HEADERS: HeaderValue =
    HeaderValue::from_static("www-authenticate,retry-after,dpop-nonce");
const ANY_ORIGIN: HeaderValue = HeaderValue::from_static("*");

/// What a route answers (it cannot fail: axum's routes answer every error).
type Answer = Result<Response, Infallible>;

/// The layer: [`Public`] around each route it is put on.
#[derive(Clone, Copy, Debug, Default)]
pub struct PublicLayer;

impl<S> tower::Layer<S> for PublicLayer {
    type Service = Public<S>;

    fn layer(&self, inner: S) -> Public<S> {
        Public { inner }
    }
}

/// A route that answers a preflight (any `OPTIONS` request) itself and lets scripts of any
/// origin read its other answers.
#[derive(Clone, Debug)]
pub struct Public<S> {
    inner: S,
}

impl<S> tower::Service<Request> for Public<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Answer>, Map<S::Future, fn(Answer) -> Answer>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if req.method() == Method::OPTIONS {
            Either::Left(ready(Ok(preflight())))
        } else {
            let readable: fn(Answer) -> Answer = |res| res.map(readable);
            Either::Right(self.inner.call(req).map(readable))
        }
    }
}

/// The answer to a preflight: 200, empty, with what the actual request may be.
fn preflight() -> Response {
    let mut res = Response::new(Body::empty());
    let headers = res.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, ANY_ORIGIN);
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
    res
}

/// Any answer, readable by a script of any origin.
fn readable(mut res: Response) -> Response {
    let headers = res.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, ANY_ORIGIN);
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE_HEADERS);
    res
}
