//! `/admin/v1/users/{id}/consents`: what a user allowed which client at which resource, and
//! revoking it (as the account page does: the consent goes and, in the same transaction,
//! every refresh token the user holds for that client is revoked).

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::AdminCaller;
use super::users::find;
use super::{ApiPath, ApiQuery, Page, PageQuery, paginate, record_change, time};
use crate::error::{ApiError, ApiErrorBody};
use crate::state::AppState;
use crate::store::Consent;

/// A user's consent: a client, a resource, the scopes granted.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentView {
    pub client_id: String,
    /// The resource URI, or the issuer for the identity (OpenID Connect) consent.
    pub resource: String,
    pub scopes: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// RFC 3339; null when never used.
    pub last_used_at: Option<String>,
}

impl From<Consent> for ConsentView {
    fn from(c: Consent) -> Self {
        Self {
            scopes: c
                .scopes
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            client_id: c.client_id,
            resource: c.resource,
            created_at: time(c.created_at),
            updated_at: time(c.updated_at),
            last_used_at: c.last_used_at.map(time),
        }
    }
}

/// Which consent to revoke.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsentKey {
    pub client_id: String,
    pub resource: String,
}

/// A user's consents, ordered by client and resource.
#[utoipa::path(get, path = "/admin/v1/users/{id}/consents", tag = "users",
    params(("id" = String, Path), PageQuery),
    responses(
        (status = 200, description = "A page of consents", body = Page<ConsentView>),
        (status = 404, description = "No such user", body = ApiErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<ConsentView>>, ApiError> {
    let user = find(&state, &id).await?;
    let all: Vec<ConsentView> = state
        .store
        .list_consents(&user.id)
        .await?
        .into_iter()
        .map(ConsentView::from)
        .collect();
    Ok(Json(paginate(all, &q, |c| {
        format!("{}\n{}", c.client_id, c.resource)
    })?))
}

/// Revoke a consent and every refresh token the user holds for that client.
#[utoipa::path(delete, path = "/admin/v1/users/{id}/consents", tag = "users",
    params(("id" = String, Path), ConsentKey),
    responses(
        (status = 204, description = "Revoked, with the client's refresh tokens"),
        (status = 404, description = "No such user or consent", body = ApiErrorBody),
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(key): ApiQuery<ConsentKey>,
) -> Result<StatusCode, ApiError> {
    let user = find(&state, &id).await?;
    if !state
        .store
        .revoke_consent(&user.id, &key.client_id, &key.resource, crate::util::now())
        .await?
    {
        return Err(ApiError::not_found(format!(
            "user {id} has no consent for client {} at {}",
            key.client_id, key.resource
        )));
    }
    record_change(
        &state,
        &caller,
        "consent.revoke",
        serde_json::json!({
            "user_id": user.id, "client_id": key.client_id, "resource": key.resource
        }),
        Some(&user.id),
    );
    Ok(StatusCode::NO_CONTENT)
}
