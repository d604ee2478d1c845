//! Concierge: an OAuth 2.1 / OpenID Connect authorization server for AI agents and MCP servers.
//!
//! The map of the crate, from the top down; arrows point down only (README: "How the code is
//! laid out"):
//! - [`startup`] builds the application from a [`config::Config`] and runs it on the
//!   [`listener`]; [`router`] holds every route.
//! - [`endpoints`] (thin handlers, one file per endpoint), [`admin`] (the admin API) and
//!   [`manage`] (operations shared by the CLI and the admin API) and [`export`] (export and
//!   import of the whole data set), over [`state`] and [`http`]
//!   (what handlers share) and [`ui`] (pages).
//! - [`oauth`]: protocol logic, with no handlers, pages or router.
//! - [`audit`], [`keys`], [`metrics`]: the audit log, signing keys, metrics.
//! - [`store`]: storage traits, records and their SQL for SQLite and PostgreSQL.
//! - [`config`], [`error`], [`util`], [`telemetry`]: the ground floor.

pub mod admin;
pub mod audit;
pub mod config;
pub mod endpoints;
pub mod error;
pub mod export;
#[cfg(test)]
pub(crate) mod fuzz;
pub mod http;
pub mod keys;
pub mod listener;
pub mod manage;
pub mod metrics;
pub mod oauth;
pub mod request_id;
pub mod router;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod ui;
pub mod util;
pub mod webhook;

pub use config::Config;
pub use startup::{App, RunningServer};
