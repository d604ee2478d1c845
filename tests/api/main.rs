//! Integration tests: the real server on port 0, spoken to over HTTP, on SQLite and on
//! PostgreSQL. One binary, so it links once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;
mod interop;
mod introspection;
mod mcp;
mod mcp_sdk;

mod admin;
mod agents;
mod audit;
mod caches;
mod cimd;
mod cli;
mod code_flow;
mod conformance;
mod deploy;
mod device;
mod documents;
mod dpop;
mod errors;
mod exchange;
mod fastmcp;
mod flow;
mod fuzz;
mod grants;
mod guard_concierge;
mod guard_oidc_provider;
mod id_jag;
mod id_jag_accounts;
mod keys;
mod layers;
mod metadata;
mod observability;
mod openapi;
mod private_key_jwt;
mod process;
mod refresh;
mod registration;
mod rmcp_client;
mod scale_out;
mod security;
mod signin_throttle;
mod store;
mod token;
mod workload;
