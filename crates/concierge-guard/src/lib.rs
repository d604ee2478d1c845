//! Protect MCP servers with access tokens issued by Concierge.
//!
//! `concierge-guard` is for **MCP server authors**: you run an
//! [rmcp](https://crates.io/crates/rmcp) / [axum](https://crates.io/crates/axum)
//! server and want it to accept only requests that carry an OAuth 2.1 access
//! token issued by [Concierge](https://github.com/concierge-auth/concierge)
//! (or any other standards-compliant authorization server).
//!
//! The [MCP authorization specification] makes the MCP server an OAuth 2.0
//! *protected resource*. This crate does what that takes:
//!
//! 1. **Validates access tokens** ([RFC 9068] JWTs): a [`Guard`] discovers the
//!    issuer's metadata (RFC 8414) and JSON Web Key Set, caches the keys
//!    (refetching on an unknown `kid` at most once per interval), and checks
//!    `typ: at+jwt`, the algorithm allow-list (ES256 and RS256 by default;
//!    never `none` or HMAC), the signature, `iss`, `aud`, `exp`, `nbf` and the
//!    scopes. Results are cached, so a repeated token costs a hash lookup.
//! 2. **Guards routes** with a tower [`GuardLayer`] (axum routers, rmcp's
//!    `StreamableHttpService`, any tower service), with global, per-route and
//!    **per-MCP-tool** scopes (read from the JSON-RPC `tools/call` body), and
//!    hands handlers the [`Principal`] (axum extractor, or request extensions).
//! 3. **Answers like the specifications say**: 401 with
//!    `WWW-Authenticate: Bearer resource_metadata="…", scope="…"` ([RFC 6750]
//!    §3, [RFC 9728] §5.1), `error="invalid_token"` when a token was sent,
//!    403 `insufficient_scope` for step-up — see [`BearerChallenge`].
//! 4. **Publishes protected resource metadata** ([RFC 9728]) with
//!    [`Guard::metadata_router`] — see [`ProtectedResourceMetadata`],
//!    [`metadata_path`] and [`metadata_url`].
//!
//! 5. **Calls other resources for the caller** with [`Guard::exchange`]
//!    (RFC 8693 token exchange with this server's [`ClientCredentials`],
//!    cached), and optionally **introspects** tokens (RFC 7662,
//!    [`Introspection`]): opaque ones, or every one so revoked JWTs fail.
//! 6. **Reports misconfiguration at start-up** ([`BuildError`]): an issuer
//!    that does not know the resource URI, a skewed clock, rejected client
//!    credentials, a client not allowed to introspect.
//!
//! It does not depend on the Concierge server.
//!
//! # Example
//!
//! ```no_run
//! use axum::{Router, routing::post};
//! use concierge_guard::{Guard, Principal};
//!
//! async fn mcp(principal: Principal) -> String {
//!     format!("hello {}, you may {:?}", principal.sub(), principal.scopes())
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let guard = Guard::builder("https://auth.example.com", "https://mcp.example.com/mcp")
//!         .required_scopes(["notes:read"])
//!         .tool_scopes("add_note", ["notes:write"])
//!         .resource_name("Notes")
//!         .build()
//!         .await?; // fails with a message naming what is misconfigured
//!
//!     let app = Router::new()
//!         .route("/mcp", post(mcp)) // or .route_service("/mcp", rmcp's StreamableHttpService)
//!         .layer(guard.layer())
//!         .merge(guard.metadata_router()); // public: GET /.well-known/oauth-protected-resource/mcp
//!
//!     let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```
//!
//! Inside an rmcp `#[tool]`, the principal is in the extensions of the
//! request's `http::request::Parts`:
//! `parts.extensions.get::<concierge_guard::Principal>()`.
//!
//! 5. **Checks DPoP-bound tokens** ([RFC 9449] §7): a token with `cnf.jkt`
//!    needs `Authorization: DPoP` and a fresh proof of that key for this
//!    request; the proof checks themselves are the public [`dpop`] module.
//!
//! # Not yet
//!
//! DPoP nonces issued by the resource server (RFC 9449 §9).
//!
//! [RFC 9449]: https://www.rfc-editor.org/rfc/rfc9449
//!
//! [MCP authorization specification]: https://modelcontextprotocol.io/specification/2025-06-18/basic/authorization
//! [RFC 6750]: https://www.rfc-editor.org/rfc/rfc6750
//! [RFC 9068]: https://www.rfc-editor.org/rfc/rfc9068
//! [RFC 9728]: https://www.rfc-editor.org/rfc/rfc9728

#![deny(missing_docs)]

mod cache;
mod challenge;
mod client;
mod config;
pub mod dpop;
mod error;
mod exchange;
mod extract;
mod guard;
mod introspect;
mod jwks;
mod layer;
mod metadata;
mod principal;
mod validate;

pub use challenge::{BearerChallenge, ChallengeError};
pub use client::ClientCredentials;
pub use config::{DEFAULT_MAX_BODY_BYTES, GuardBuilder};
pub use error::{BuildError, TokenError};
pub use exchange::{ExchangeError, ExchangedToken};
pub use guard::Guard;
pub use introspect::Introspection;
pub use jsonwebtoken::Algorithm;
pub use layer::{GuardLayer, GuardRejection, GuardService};
pub use metadata::{ProtectedResourceMetadata, WELL_KNOWN_SUFFIX, metadata_path, metadata_url};
pub use principal::{Actor, BearerToken, Principal};
pub use validate::MAX_TOKEN_BYTES;

/// Compiles and runs the code blocks of `README.md` as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
