//! The TypeScript guide (`docs/guides/typescript-mcp-server.md`), run: its server
//! (`tests/interop/ts_mcp_server.mjs`: the MCP TypeScript SDK's `requireBearerAuth` with a
//! jose JWT verifier against Concierge's JWKS, `mcpAuthMetadataRouter`, and a step-up
//! middleware) registered in Concierge as the guide says (ES256, `--dpop off`), then: the 401
//! and its metadata; tokens for another resource, expired or tampered, refused; the 403
//! `insufficient_scope` step-up; and the official TypeScript and Python SDK clients' whole
//! journeys (discovery, registration, code flow with PKCE and `resource`, tools, step-up),
//! the user's part over plain HTTP. One server process per test.
//!
//! Needs Node with npm (and Python 3.10+ with `venv` for the Python client); skipped loudly
//! without them, failed under `CI=true`.

use concierge::keys::Alg;

use crate::both;
use crate::guides::{
    check_challenge, check_tokens, python_sdk_journey, register_notes, spawn,
    typescript_sdk_journey,
};
use crate::helpers::TestApp;
use crate::interop::node_ready;

both!(ts_server_follows_the_guide, |app: TestApp| async move {
    if !node_ready() {
        return app;
    }
    let server = spawn(&app, "node", "ts_mcp_server.mjs").await;
    register_notes(&app, &server.url, None, Some("off")).await;

    check_challenge(&app, &server, "Notes (TypeScript)").await;
    check_tokens(&app, &server, Alg::ES256).await;
    typescript_sdk_journey(&app, &server, "alice").await;
    // Any client that follows the MCP authorization specification: the Python SDK's too.
    python_sdk_journey(&app, &server, "bob").await;
    app
});
