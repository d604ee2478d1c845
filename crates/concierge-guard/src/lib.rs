//! Protect MCP servers with access tokens issued by Concierge — or any other
//! standards-compliant authorization server.
//!
//! `concierge-guard` is for **MCP server authors**: you run an
//! [rmcp](https://crates.io/crates/rmcp) / [axum](https://crates.io/crates/axum)
//! server and want it to accept only requests that carry an OAuth 2.1 access
//! token for it. The [MCP authorization specification] makes the MCP server
//! an OAuth 2.0 *protected resource*; this crate does what that takes:
//!
//! 1. **Validates access tokens** ([RFC 9068] JWTs): a [`Guard`] discovers
//!    each trusted issuer's metadata (RFC 8414) and JSON Web Key Set — or
//!    takes a JWKS URL or fixed keys — caches the keys (refetching on an
//!    unknown `kid` at most once per interval), and checks `typ`, the
//!    algorithm allow-list (ES256 and RS256 by default; never `none` or
//!    HMAC), the signature, `iss`, `aud`, `exp`, `nbf` and the scopes.
//!    Results are cached. Tokens of other identity providers are read
//!    through a [`ClaimMapping`] (`typ: JWT`, `scp`, `permissions`, `azp`, …).
//! 2. **Guards routes** with a tower [`GuardLayer`] (axum routers, rmcp's
//!    `StreamableHttpService`, any tower service), with global, per-route and
//!    **per-operation** scopes — MCP tools, prompts and resources, read from
//!    the JSON-RPC body — with alternatives ([`ScopeRule::any_of`]), scope
//!    hierarchies and an optional default-deny, and hands handlers the
//!    [`Principal`].
//! 3. **Answers like the specifications say**: 401 with
//!    `WWW-Authenticate: Bearer resource_metadata="…", scope="…"` ([RFC 6750]
//!    §3, [RFC 9728] §5.1), `error="invalid_token"` when a token was sent,
//!    403 `insufficient_scope` for step-up — also when a tool decides it
//!    needs more ([`StepUp`]) — see [`BearerChallenge`].
//! 4. **Publishes protected resource metadata** ([RFC 9728]) with
//!    [`Guard::metadata_router`], including its DPoP support.
//! 5. **Checks DPoP-bound tokens** ([RFC 9449] §7, feature `dpop`, on by
//!    default), with replay protection per key and, when asked, nonces (§9).
//! 6. **Calls other resources for the caller** (`Guard::exchange`, RFC 8693,
//!    feature `exchange`), **asks the user to approve one call**
//!    (`Guard::request_approval`, OpenID Connect CIBA with an RFC 9396 detail, feature
//!    `approval`) and **introspects** tokens (RFC 7662, feature `introspection`).
//! 7. **Reports misconfiguration at start-up** ([`BuildError`] names the
//!    setting to change), or starts in the background while the issuer is
//!    down ([`GuardBuilder::build_in_background`]); every refusal is a
//!    `tracing` event, with [hooks](GuardBuilder::on_refuse) for metrics.
//!
//! With the `rmcp` feature, a tool takes the principal as a parameter, scopes
//! are declared on the tool itself, and [`Guard`]`::mcp_router` mounts the
//! whole protected endpoint; see the `rmcp` module. With `test-util`, the
//! `test` module mints tokens for tests without an authorization server.
//! The crate does not depend on the Concierge server.
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
//!         .route("/mcp", post(mcp)) // or Guard::mcp_router for an rmcp server
//!         .layer(guard.layer())
//!         .merge(guard.metadata_router()); // public: GET /.well-known/oauth-protected-resource/mcp
//!
//!     let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```
//!
//! # Features
//!
//! | Feature | Default | What |
//! | --- | --- | --- |
//! | `dpop` | yes | DPoP-bound tokens, nonces, the [`dpop`] module; without it bound tokens are refused |
//! | `rustls` | yes | TLS for discovery, keys and the issuer's endpoints (`native-tls` instead: the platform's) |
//! | `exchange` | no | `Guard::exchange`, `ClientCredentials` |
//! | `approval` | no | `Guard::request_approval` and its `ToolCall`, `Approval` (implies `exchange`) |
//! | `introspection` | no | `Introspection`, `ClientCredentials` |
//! | `rmcp` | no | the `rmcp` module |
//! | `test-util` | no | the `test` module |
//!
//! [RFC 9449]: https://www.rfc-editor.org/rfc/rfc9449
//! [MCP authorization specification]: https://modelcontextprotocol.io/specification/2025-06-18/basic/authorization
//! [RFC 6750]: https://www.rfc-editor.org/rfc/rfc6750
//! [RFC 9068]: https://www.rfc-editor.org/rfc/rfc9068
//! [RFC 9728]: https://www.rfc-editor.org/rfc/rfc9728

#![deny(missing_docs)]

#[cfg(feature = "approval")]
mod approval;
mod cache;
mod challenge;
mod claims;
mod client;
mod config;
#[cfg(any(feature = "exchange", feature = "introspection"))]
mod credentials;
#[cfg(feature = "dpop")]
pub mod dpop;
#[cfg(feature = "dpop")]
mod dpop_rules;
mod error;
#[cfg(feature = "exchange")]
mod exchange;
mod extract;
mod guard;
#[cfg(feature = "introspection")]
mod introspect;
mod issuer;
mod jwks;
mod layer;
mod metadata;
#[cfg(feature = "dpop")]
mod nonce;
mod observe;
mod principal;
mod rejection;
mod scopes;
mod startup;
mod stepup;
mod validate;

/// rmcp integration: the principal as a tool parameter, scopes declared on
/// the tools, and [`Guard::mcp_router`].
#[cfg(feature = "rmcp")]
#[path = "mcp.rs"]
pub mod rmcp;

/// A local test issuer that mints tokens (feature `test-util`).
#[cfg(feature = "test-util")]
#[path = "testing.rs"]
pub mod test;

#[cfg(feature = "approval")]
pub use approval::{Approval, ApprovalError, ApprovalRequest, ApprovedCall, ToolCall};
pub use challenge::{BearerChallenge, ChallengeError};
pub use claims::ClaimMapping;
#[cfg(any(feature = "exchange", feature = "introspection"))]
pub use client::ClientCredentials;
pub use config::{DEFAULT_MAX_BODY_BYTES, GuardBuilder};
pub use error::{BuildError, TokenError};
#[cfg(feature = "exchange")]
pub use exchange::{ExchangeError, ExchangedToken};
pub use extract::Claims;
pub use guard::Guard;
#[cfg(feature = "introspection")]
pub use introspect::Introspection;
pub use issuer::Issuer;
pub use jsonwebtoken::Algorithm;
pub use layer::{GuardLayer, GuardRejection, GuardService};
pub use metadata::{ProtectedResourceMetadata, WELL_KNOWN_SUFFIX, metadata_path, metadata_url};
pub use observe::Refusal;
pub use principal::{Actor, BearerToken, Principal, PrincipalBuilder};
pub use scopes::{ScopeHierarchy, ScopeRule};
pub use stepup::{Need, STEP_UP_ERROR_CODE, StepUp};
pub use validate::MAX_TOKEN_BYTES;

/// Compiles and runs the code blocks of `README.md` as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
