//! Concierge: an OAuth 2.1 / OpenID Connect authorization server for AI agents and MCP servers.
//!
//! The map of the crate (see `../shared/DESIGN.md` §2 for the reasoning):
//! - [`config`]: layered configuration (defaults < `concierge.toml` < `CONCIERGE_*` env < flags).
//! - [`startup`]: builds the application from a [`config::Config`] and runs it.
//! - [`router`]: every route in one place.
//! - [`oauth`]: protocol logic without HTTP types, unit-tested.
//! - [`endpoints`]: thin axum handlers, one file per endpoint.
//! - [`keys`]: signing keys (generation, encryption at rest, rotation, JWKS, signing).
//! - [`store`]: storage traits and their SQLite and PostgreSQL implementations.

pub mod audit;
pub mod config;
pub mod endpoints;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod oauth;
pub mod router;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod ui;
pub mod util;

pub use config::Config;
pub use startup::{App, RunningServer};
