//! `/admin/v1/id-jag/trusted-issuers`: the enterprise IdPs whose ID-JAGs this server redeems
//! (MCP enterprise-managed authorization), besides the configuration file's.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::auth::AdminCaller;
use super::{ApiJson, ApiPath, record_change};
use crate::error::{ApiError, ApiErrorBody};
use crate::manage;
use crate::state::AppState;
use crate::store::TrustedIssuer;

/// The IdPs an operator trusts here (the configuration file's are listed by `concierge
/// id-jag list`, and changed in the file).
#[utoipa::path(get, path = "/admin/v1/id-jag/trusted-issuers", tag = "id-jag",
    responses((status = 200, description = "Trusted IdPs, by issuer", body = Vec<TrustedIssuer>)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<TrustedIssuer>>, ApiError> {
    Ok(Json(state.store.list_trusted_issuers().await?))
}

/// Trust an IdP: its ID-JAGs are redeemed with the jwt-bearer grant. Again for the same
/// issuer replaces its keys.
#[utoipa::path(post, path = "/admin/v1/id-jag/trusted-issuers", tag = "id-jag",
    request_body = TrustedIssuer,
    responses(
        (status = 201, description = "Trusted", body = TrustedIssuer),
        (status = 400, description = "Invalid; `field` names the culprit", body = ApiErrorBody),
    ))]
pub async fn trust(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
    ApiJson(body): ApiJson<TrustedIssuer>,
) -> Result<(StatusCode, Json<TrustedIssuer>), ApiError> {
    manage::trust_id_jag_issuer(state.store.as_ref(), &body).await?;
    // The metadata says whether any issuer is trusted.
    state.oauth.resources.forget_derived();
    record_change(
        &state,
        &caller,
        "id_jag.trust",
        serde_json::json!({ "issuer": body.issuer, "jwks_uri": body.jwks_uri }),
        None,
    );
    Ok((StatusCode::CREATED, Json(body)))
}

/// Stop redeeming an IdP's ID-JAGs. The issuer is percent-encoded in the path.
#[utoipa::path(delete, path = "/admin/v1/id-jag/trusted-issuers/{issuer}", tag = "id-jag",
    params(("issuer" = String, Path, description = "The IdP's issuer, percent-encoded")),
    responses(
        (status = 204, description = "No longer trusted"),
        (status = 404, description = "Not trusted through the API or CLI", body = ApiErrorBody),
    ))]
pub async fn distrust(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
    ApiPath(issuer): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    manage::distrust_id_jag_issuer(state.store.as_ref(), &issuer).await?;
    state.oauth.resources.forget_derived();
    record_change(
        &state,
        &caller,
        "id_jag.distrust",
        serde_json::json!({ "issuer": issuer }),
        None,
    );
    Ok(StatusCode::NO_CONTENT)
}
