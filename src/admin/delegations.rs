//! `/admin/v1/users/{id}/delegations`: the delegation chains of a user's tokens (issue 14.5).
//! Every hop an exchange went through, with its whole chain from the app the user connected,
//! and cutting one as the user's apps page does: the tokens derived through it turn inactive
//! and no exchange goes through it again. An exchanged token names its hop in the claim
//! `delegation`, and its `token.exchanged` audit event names the hop and its chain.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::AdminCaller;
use super::users::find;
use super::{ApiPath, ApiQuery, Page, PageQuery, paginate, record_change, time};
use crate::error::{ApiError, ApiErrorBody};
use crate::oauth::delegation;
use crate::state::AppState;

/// One link of a chain: a client and the resource its token is for.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkView {
    pub client_id: String,
    pub resource: String,
}

/// One hop of a delegation chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct DelegationView {
    /// The hop's id: the `delegation` claim of the tokens exchanged through it.
    pub id: String,
    /// The hop above it; null for the first hop.
    pub parent_id: Option<String>,
    /// The client that exchanged, and the resource of the tokens it got.
    pub client_id: String,
    pub resource: String,
    /// From the app the user connected down to this hop.
    pub chain: Vec<LinkView>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, to the minute.
    pub last_used_at: String,
    /// RFC 3339; null while live.
    pub revoked_at: Option<String>,
    /// `user` (cut by the user or an operator) or `app` (the app was disconnected).
    pub cut_by: Option<String>,
}

/// A user's delegation hops, live and cut, each with its chain.
#[utoipa::path(get, path = "/admin/v1/users/{id}/delegations", tag = "users",
    params(("id" = String, Path), PageQuery),
    responses(
        (status = 200, description = "A page of hops", body = Page<DelegationView>),
        (status = 404, description = "No such user", body = ApiErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<DelegationView>>, ApiError> {
    let user = find(&state, &id).await?;
    let hops = state.store.list_delegations(&user.id).await?;
    let all: Vec<DelegationView> = delegation::chains(&hops)
        .into_iter()
        .map(|(hop, links)| DelegationView {
            chain: links
                .into_iter()
                .map(|l| LinkView {
                    client_id: l.client_id,
                    resource: l.resource,
                })
                .collect(),
            parent_id: (!hop.parent_id.is_empty()).then_some(hop.parent_id),
            id: hop.id,
            client_id: hop.client_id,
            resource: hop.resource,
            created_at: time(hop.created_at),
            last_used_at: time(hop.last_used_at),
            revoked_at: hop.revoked_at.map(time),
            cut_by: hop.cut_by,
        })
        .collect();
    // Oldest first: RFC 3339 times in UTC sort as text.
    Ok(Json(paginate(all, &q, |d| {
        format!("{}\n{}", d.created_at, d.id)
    })?))
}

/// Cut a hop and every hop below it.
#[utoipa::path(delete, path = "/admin/v1/users/{id}/delegations/{hop}", tag = "users",
    params(("id" = String, Path), ("hop" = String, Path)),
    responses(
        (status = 204, description = "Cut, with the hops below it"),
        (status = 404, description = "No such user, or no such live hop of theirs", body = ApiErrorBody),
    ))]
pub async fn cut(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
    ApiPath((id, hop)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let user = find(&state, &id).await?;
    let Some(chain) = delegation::cut(&state.oauth, &user.id, &hop).await? else {
        return Err(ApiError::not_found(format!(
            "user {id} has no live delegation hop {hop}"
        )));
    };
    record_change(
        &state,
        &caller,
        "delegation.cut",
        serde_json::json!({ "user_id": user.id, "id": hop, "chain": chain }),
        Some(&user.id),
    );
    Ok(StatusCode::NO_CONTENT)
}
