//! `GET /jwks`: every public key still needed to verify a token we signed (RFC 7517 §5).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

#[utoipa::path(get, path = "/jwks", tag = "oauth",
    description = "The public signing keys (RFC 7517), retired ones included until their tokens expire.",
    responses((status = 200, description = "The JWK Set", body = crate::endpoints::schemas::JwkSet)))]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let doc = state.oauth.keys.ring().jwks(crate::util::now());
    let mut res = Json(doc).into_response();
    // Short, so verifiers pick up a rotation soon; they refetch on an unknown kid anyway.
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    res
}
