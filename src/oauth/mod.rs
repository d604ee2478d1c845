//! Protocol logic: no axum types here, everything unit-tested.

pub mod authorize;
pub mod cimd;
pub mod client_assertion;
pub mod client_auth;
pub mod client_metadata;
pub mod clients;
pub mod consent;
pub mod device;
pub mod dpop;
pub mod form;
pub mod grants;
pub mod id_jag;
pub mod metadata;
pub mod net_guard;
pub mod password;
pub mod pkce;
pub mod redirect_uri;
pub mod registration;
pub mod resource;
pub mod scope;
pub mod tokens;
pub mod ttl_cache;
