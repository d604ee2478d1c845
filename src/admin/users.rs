//! `/admin/v1/users`: local accounts.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::AdminCaller;
use super::{ApiJson, ApiPath, ApiQuery, Page, PageQuery, nullable, paginate, record_change, time};
use crate::error::{ApiError, ApiErrorBody};
use crate::manage;
use crate::state::AppState;
use crate::store::{LinkedBy, LinkedIdentity, User};

/// A local account (never its password hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    /// The address is known to be the user's; only verified addresses link accounts.
    pub email_verified: bool,
    pub name: Option<String>,
    /// The user must choose a new password at their next sign-in.
    pub password_change_required: bool,
    /// RFC 3339: when an operator disabled the account (absent while it is enabled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<String>,
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
            email_verified: u.email_verified,
            name: u.name.clone(),
            disabled_at: u.disabled_at.map(time),
            password_change_required: u.password_change_required,
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
    /// The address is known to be the user's (default false).
    #[serde(default)]
    pub email_verified: bool,
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
    let profile = manage::Profile {
        email: body.email,
        email_verified: body.email_verified,
        name: body.name,
    };
    let user =
        manage::create_user(state.store.as_ref(), &body.username, profile, password_hash).await?;
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

/// A change to a user: fields left out stay as they are; `null` clears one. A new address is
/// unverified unless `email_verified` is given too.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, nullable)]
    pub email: Option<Option<String>>,
    /// Mark the address as known to be the user's (or not).
    pub email_verified: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, nullable)]
    pub name: Option<Option<String>>,
}

/// Change a user's email address, its verified mark, or name.
#[utoipa::path(patch, path = "/admin/v1/users/{id}", tag = "users",
    params(("id" = String, Path)),
    request_body = UpdateUser,
    responses(
        (status = 200, description = "The changed user", body = UserView),
        (status = 400, description = "Invalid; `field` names the culprit", body = ApiErrorBody),
        (status = 404, description = "No such user", body = ApiErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateUser>,
) -> Result<Json<UserView>, ApiError> {
    let mut changed = Vec::new();
    for (field, given) in [
        ("email", body.email.is_some()),
        ("email_verified", body.email_verified.is_some()),
        ("name", body.name.is_some()),
    ] {
        if given {
            changed.push(field);
        }
    }
    let change = manage::ProfileChange {
        email: body.email,
        email_verified: body.email_verified,
        name: body.name,
    };
    let user = manage::update_user(state.store.as_ref(), &id, change).await?;
    record_change(
        &state,
        &caller,
        "user.update",
        serde_json::json!({
            "user_id": user.id,
            "fields": changed,
            "email_verified": user.email_verified,
        }),
        Some(&user.id),
    );
    Ok(Json(UserView::from(&user)))
}

/// An identity at another issuer (an enterprise IdP) that names this user.
#[derive(Debug, Serialize, ToSchema)]
pub struct IdentityView {
    pub issuer: String,
    pub subject: String,
    /// The address the issuer asserted when the link was made.
    pub email: Option<String>,
    pub linked_by: LinkedBy,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&LinkedIdentity> for IdentityView {
    fn from(l: &LinkedIdentity) -> Self {
        Self {
            issuer: l.issuer.clone(),
            subject: l.subject.clone(),
            email: l.email.clone(),
            linked_by: l.linked_by,
            created_at: time(l.created_at),
        }
    }
}

/// An identity at another issuer, by issuer and subject.
#[derive(Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct IdentityRef {
    /// The issuer's identifier (an ID-JAG's `iss`).
    pub issuer: String,
    /// The user's `sub` there.
    pub subject: String,
}

/// The identities at other issuers linked to a user.
#[utoipa::path(get, path = "/admin/v1/users/{id}/identities", tag = "users",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "Linked identities, by issuer", body = Vec<IdentityView>),
        (status = 404, description = "No such user", body = ApiErrorBody),
    ))]
pub async fn identities(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<IdentityView>>, ApiError> {
    let user = find(&state, &id).await?;
    let links = state.store.identities_of(&user.id).await?;
    Ok(Json(links.iter().map(IdentityView::from).collect()))
}

/// Link an identity at another issuer to a user: that issuer's ID-JAGs for it then name
/// this user.
#[utoipa::path(post, path = "/admin/v1/users/{id}/identities", tag = "users",
    params(("id" = String, Path)),
    request_body = IdentityRef,
    responses(
        (status = 201, description = "Linked", body = IdentityView),
        (status = 400, description = "Invalid; `field` names the culprit", body = ApiErrorBody),
        (status = 404, description = "No such user", body = ApiErrorBody),
        (status = 409, description = "The identity names another user", body = ApiErrorBody),
    ))]
pub async fn link(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<IdentityRef>,
) -> Result<(StatusCode, Json<IdentityView>), ApiError> {
    let user = find(&state, &id).await?;
    let link =
        manage::link_identity(state.store.as_ref(), &user, &body.issuer, &body.subject).await?;
    record_change(
        &state,
        &caller,
        "user.link_identity",
        serde_json::json!({ "user_id": user.id, "issuer": link.issuer, "subject": link.subject }),
        Some(&user.id),
    );
    Ok((StatusCode::CREATED, Json(IdentityView::from(&link))))
}

/// Unlink an identity at another issuer from a user. Tokens already issued stay valid
/// until they expire; the issuer's next ID-JAG for it is linked or provisioned afresh.
#[utoipa::path(delete, path = "/admin/v1/users/{id}/identities", tag = "users",
    params(("id" = String, Path), IdentityRef),
    responses(
        (status = 204, description = "Unlinked"),
        (status = 400, description = "issuer or subject missing", body = ApiErrorBody),
        (status = 404, description = "No such user or link", body = ApiErrorBody),
    ))]
pub async fn unlink(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<IdentityRef>,
) -> Result<StatusCode, ApiError> {
    let user = find(&state, &id).await?;
    manage::unlink_identity(state.store.as_ref(), &user, &q.issuer, &q.subject).await?;
    record_change(
        &state,
        &caller,
        "user.unlink_identity",
        serde_json::json!({ "user_id": user.id, "issuer": q.issuer, "subject": q.subject }),
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

/// What a reset of second factors removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct FactorsReset {
    /// Whether the user had an authenticator app or recovery codes.
    pub removed: bool,
}

/// Forget the user's authenticator app and recovery codes (a lost phone): they sign in with
/// the password alone until they set up another (`concierge user reset-factors` does the
/// same).
#[utoipa::path(post, path = "/admin/v1/users/{id}/reset-factors", tag = "users",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "Reset", body = FactorsReset),
        (status = 404, description = "No such user", body = ApiErrorBody),
    ))]
pub async fn reset_factors(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<FactorsReset>, ApiError> {
    let user = find(&state, &id).await?;
    let (user, removed) = manage::reset_factors(state.store.as_ref(), &user.username).await?;
    record_change(
        &state,
        &caller,
        "user.reset_factors",
        serde_json::json!({ "user_id": user.id, "username": user.username, "removed": removed }),
        Some(&user.id),
    );
    Ok(Json(FactorsReset { removed }))
}

/// Disable a user: they cannot sign in, their sessions end and their refresh tokens are
/// revoked, and nothing more is issued for them (ID-JAGs included) until they are enabled.
#[utoipa::path(post, path = "/admin/v1/users/{id}/disable", tag = "users",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "Disabled", body = UserView),
        (status = 404, description = "No such user", body = ApiErrorBody),
    ))]
pub async fn disable(
    state: State<AppState>,
    caller: Extension<AdminCaller>,
    id: ApiPath<String>,
) -> Result<Json<UserView>, ApiError> {
    set_disabled(state, caller, id, true).await
}

/// Enable a disabled user again (they sign in afresh; what was revoked stays revoked).
#[utoipa::path(post, path = "/admin/v1/users/{id}/enable", tag = "users",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "Enabled", body = UserView),
        (status = 404, description = "No such user", body = ApiErrorBody),
    ))]
pub async fn enable(
    state: State<AppState>,
    caller: Extension<AdminCaller>,
    id: ApiPath<String>,
) -> Result<Json<UserView>, ApiError> {
    set_disabled(state, caller, id, false).await
}

async fn set_disabled(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
    ApiPath(id): ApiPath<String>,
    disabled: bool,
) -> Result<Json<UserView>, ApiError> {
    let user = find(&state, &id).await?;
    let user = manage::set_user_disabled(state.store.as_ref(), &user, disabled).await?;
    record_change(
        &state,
        &caller,
        if disabled {
            "user.disable"
        } else {
            "user.enable"
        },
        serde_json::json!({ "user_id": user.id, "username": user.username }),
        Some(&user.id),
    );
    Ok(Json(UserView::from(&user)))
}

/// Ask a user to choose a new password: they are signed out everywhere and their refresh
/// tokens revoked now, and their next sign-in with the current password completes only once
/// they have set a new one.
#[utoipa::path(post, path = "/admin/v1/users/{id}/require-password-change", tag = "users",
    params(("id" = String, Path)),
    responses(
        (status = 204, description = "Asked"),
        (status = 400, description = "The user has no password", body = ApiErrorBody),
        (status = 404, description = "No such user", body = ApiErrorBody),
    ))]
pub async fn require_password_change(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let user = find(&state, &id).await?;
    manage::require_password_change(state.store.as_ref(), &user).await?;
    record_change(
        &state,
        &caller,
        "user.require_password_change",
        serde_json::json!({ "user_id": user.id, "username": user.username }),
        Some(&user.id),
    );
    Ok(StatusCode::NO_CONTENT)
}
