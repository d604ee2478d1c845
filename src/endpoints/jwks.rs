//! `GET /jwks`: every public key still needed to verify a token we signed (RFC 7517 §5).

use axum::extract::State;
use axum::response::Response;

use crate::state::AppState;

#[utoipa::path(get, path = "/jwks", tag = "oauth",
    description = "The public signing keys (RFC 7517), retired ones included until their tokens expire.",
    responses((status = 200, description = "The JWK Set", body = crate::endpoints::schemas::JwkSet)))]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let json = state.oauth.keys.ring().jwks_json(crate::util::now());
    // Short, so verifiers pick up a rotation soon; they refetch on an unknown kid anyway.
    super::public_json(json, "public, max-age=300")
}
