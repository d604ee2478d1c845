//! Protocol logic: what OAuth 2.1, OpenID Connect and their extensions decide, with no HTTP
//! handlers, pages or router here. Everything receives a [`context::Context`] (or less) and
//! is unit-tested where it can be.
//!
//! Where to look:
//! - [`authorize`]: the authorization request, checked once and carried signed between steps;
//! - [`grants`]: one file per grant type and the registry the token endpoint, discovery and
//!   the OpenAPI document are derived from;
//! - [`policy`]: which resources a request names and which scopes it may carry;
//! - [`tokens`]: issuing tokens, and the one check of our own access tokens;
//! - [`authn`]: who the user is (factors, throttling, sessions);
//! - [`client_auth`], [`clients`], [`client_metadata`], [`cimd`], [`registration`]: clients;
//! - [`admin_token`]: who may use the admin API.

pub mod admin_token;
pub mod authn;
pub mod authorization_details;
pub mod authorize;
pub mod ciba;
pub mod cimd;
pub mod client_assertion;
pub mod client_auth;
pub mod client_metadata;
pub mod clients;
pub mod consent;
pub mod context;
pub mod delegation;
pub mod details_type;
pub mod device;
pub mod dpop;
pub mod form;
pub mod grants;
pub mod id_jag;
pub mod metadata;
pub mod net_guard;
pub mod pkce;
pub mod policy;
pub mod redirect_uri;
pub mod registration;
pub mod request_limits;
pub mod resource;
pub mod scope;
pub mod tokens;
pub mod ttl_cache;
pub mod window_counts;
pub mod workload;

pub use context::Context;
