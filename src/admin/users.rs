//! `/admin/v1/users`: local accounts.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::AdminCaller;
use super::{ApiJson, ApiPath, ApiQuery, Page, PageQuery, paginate, record_change, time};
use crate::error::{ApiError, ApiErrorBody};
use crate::manage;
use crate::state::AppState;
use crate::store::User;

/// A local account (never its password hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub name: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.clone(),
            username: u.username.clone(),
            email: u.email.clone(),
            name: u.name.clone(),
            created_at: time(u.created_at),
            updated_at: time(u.updated_at),
        }
    }
}

/// A user to add.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub username: String,
    /// At least 8 characters; stored only as an argon2id hash.
    pub password: String,
    pub email: Option<String>,
    pub name: Option<String>,
}

/// A new password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPassword {
    /// At least 8 characters.
    pub password: String,
}

/// Hash off the async executor: argon2id is slow on purpose.
async fn hash(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || manage::hash_new_password(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}

/// The user with this id, or 404.
pub(super) async fn find(state: &AppState, id: &str) -> Result<User, ApiError> {
    state
        .store
        .get_user(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user with id {id}")))
}

/// List users, ordered by username.
#[utoipa::path(get, path = "/admin/v1/users", tag = "users",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of users", body = Page<UserView>),
        (status = 400, description = "Bad pagination parameters", body = ApiErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<UserView>>, ApiError> {
    let all: Vec<UserView> = state
        .store
        .list_users()
        .await?
        .iter()
        .map(UserView::from)
        .collect();
    Ok(Json(paginate(all, &q, |u| u.username.clone())?))
}

/// Add a user.
#[utoipa::path(post, path = "/admin/v1/users", tag = "users",
    request_body = CreateUser,
    responses(
        (status = 201, description = "Added", body = UserView),
        (status = 400, description = "Invalid; `field` names the culprit", body = ApiErrorBody),
        (status = 409, description = "The username is taken", body = ApiErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    manage::check_username(&body.username)?;
    let password_hash = hash(body.password).await?;
    let user = manage::create_user(
        state.store.as_ref(),
        &body.username,
        body.email,
        body.name,
        password_hash,
    )
    .await?;
    record_change(
        &state,
        &caller,
        "user.create",
        serde_json::json!({ "user_id": user.id, "username": user.username }),
        Some(&user.id),
    );
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}

/// One user.
#[utoipa::path(get, path = "/admin/v1/users/{id}", tag = "users",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 404, description = "No such user", body = ApiErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<UserView>, ApiError> {
    Ok(Json(UserView::from(&find(&state, &id).await?)))
}

/// Remove a user, with their sessions, consents and tokens.
#[utoipa::path(delete, path = "/admin/v1/users/{id}", tag = "users",
    params(("id" = String, Path)),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such user", body = ApiErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let user = find(&state, &id).await?;
    if !state.store.delete_user(&user.username).await? {
        return Err(ApiError::not_found(format!("no user with id {id}")));
    }
    record_change(
        &state,
        &caller,
        "user.delete",
        serde_json::json!({ "user_id": user.id, "username": user.username }),
        Some(&user.id),
    );
    Ok(StatusCode::NO_CONTENT)
}

/// Set a new password; the user is signed out everywhere.
#[utoipa::path(put, path = "/admin/v1/users/{id}/password", tag = "users",
    params(("id" = String, Path)),
    request_body = SetPassword,
    responses(
        (status = 204, description = "Changed"),
        (status = 400, description = "Invalid; `field` names the culprit", body = ApiErrorBody),
        (status = 404, description = "No such user", body = ApiErrorBody),
    ))]
pub async fn set_password(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<SetPassword>,
) -> Result<StatusCode, ApiError> {
    let user = find(&state, &id).await?;
    let password_hash = hash(body.password).await?;
    if !state
        .store
        .set_password(&user.username, &password_hash, crate::util::now())
        .await?
    {
        return Err(ApiError::not_found(format!("no user with id {id}")));
    }
    record_change(
        &state,
        &caller,
        "user.set_password",
        serde_json::json!({ "user_id": user.id }),
        Some(&user.id),
    );
    Ok(StatusCode::NO_CONTENT)
}

/// What an unlock forgot.
#[derive(Debug, Serialize, ToSchema)]
pub struct Unlocked {
    /// Whether the user had failed sign-ins to forget.
    pub cleared: bool,
}

/// Forget the user's failed sign-ins, so they may try again at once: the increasing wait
/// between attempts after failures, and the failures counted against the addresses they
/// came from (`concierge user unlock` does the same).
#[utoipa::path(post, path = "/admin/v1/users/{id}/unlock", tag = "users",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "Unlocked", body = Unlocked),
        (status = 404, description = "No such user", body = ApiErrorBody),
    ))]
pub async fn unlock(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Unlocked>, ApiError> {
    let user = find(&state, &id).await?;
    let (user, cleared) =
        manage::unlock_user(state.store.as_ref(), state.oauth.keys.kek(), &user.username).await?;
    record_change(
        &state,
        &caller,
        "user.unlock",
        serde_json::json!({ "user_id": user.id, "username": user.username, "cleared": cleared }),
        Some(&user.id),
    );
    Ok(Json(Unlocked {
        cleared: cleared > 0,
    }))
}
