//! `/admin/v1/clients`: stored clients (pre-registered by an operator or dynamically
//! registered through RFC 7591), and the Client ID Metadata Documents cached right now.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::AdminCaller;
use super::{ApiJson, ApiPath, ApiQuery, Page, PageQuery, paginate, record_change, time};
use crate::error::{ApiError, ApiErrorBody};
use crate::manage::{self, NewClient};
use crate::state::AppState;
use crate::store::{ClientKind, ClientRecord};

/// How a client came to exist.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Registration {
    /// By an operator (CLI or this API).
    PreRegistered,
    /// Through `POST /register` (RFC 7591): the client described itself, nobody checked.
    Dynamic,
}

/// A stored client. Secrets are never shown after creation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientView {
    pub client_id: String,
    pub registration: Registration,
    pub client_name: Option<String>,
    pub token_endpoint_auth_method: String,
    pub grant_types: Vec<String>,
    pub redirect_uris: Vec<String>,
    pub scope: Option<String>,
    pub jwks_uri: Option<String>,
    /// May call the introspection endpoint (a resource server).
    pub may_introspect: bool,
    /// An admin client (may call this API; revoke it by deleting it).
    pub admin: bool,
    /// For dynamic clients: the address they registered from.
    pub registered_from: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; null when never used.
    pub last_used_at: Option<String>,
    /// RFC 3339: an unused dynamic registration disappears then unless used first.
    pub expires_at: Option<String>,
}

impl From<&ClientRecord> for ClientView {
    fn from(c: &ClientRecord) -> Self {
        let m = &c.metadata;
        Self {
            client_id: c.client_id.clone(),
            registration: match c.kind {
                ClientKind::Static => Registration::PreRegistered,
                ClientKind::Dynamic => Registration::Dynamic,
            },
            client_name: m.client_name.clone(),
            token_endpoint_auth_method: m.token_endpoint_auth_method.as_str().to_string(),
            grant_types: m
                .grant_types
                .iter()
                .map(|g| g.as_str().to_string())
                .collect(),
            redirect_uris: m.redirect_uris.clone(),
            scope: m.scope.clone(),
            jwks_uri: m.jwks_uri.clone(),
            may_introspect: m.may_introspect,
            admin: m.admin,
            registered_from: c.registered_from.clone(),
            created_at: time(c.created_at),
            last_used_at: c.last_used_at.map(time),
            expires_at: c.expires_at.map(time),
        }
    }
}

/// A client to pre-register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClient {
    /// The name users see.
    pub client_name: String,
    /// Default: generated. 1 to 200 characters, not a URL.
    pub client_id: Option<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Default: `authorization_code` and `refresh_token`.
    #[serde(default)]
    pub grant_types: Vec<String>,
    /// `none`, `client_secret_basic` (default), `client_secret_post` or `private_key_jwt`.
    pub token_endpoint_auth_method: Option<String>,
    /// Scopes this client may ask for (space-separated).
    pub scope: Option<String>,
    /// The client's public keys for `private_key_jwt`.
    pub jwks_uri: Option<String>,
    /// The client's public keys inline (a JWK Set), instead of `jwks_uri`.
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<serde_json::Value>,
    #[serde(default)]
    pub may_introspect: bool,
}

/// The new client, with its secret: shown this once, stored only as a hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedClient {
    pub client: ClientView,
    pub client_secret: Option<String>,
}

/// List stored clients (pre-registered and dynamic), ordered by client_id.
#[utoipa::path(get, path = "/admin/v1/clients", tag = "clients",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of clients", body = Page<ClientView>),
        (status = 400, description = "Bad pagination parameters", body = ApiErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<ClientView>>, ApiError> {
    let all: Vec<ClientView> = state
        .store
        .list_clients(crate::util::now())
        .await?
        .iter()
        .map(ClientView::from)
        .collect();
    Ok(Json(paginate(all, &q, |c| c.client_id.clone())?))
}

/// Pre-register a client.
#[utoipa::path(post, path = "/admin/v1/clients", tag = "clients",
    request_body = CreateClient,
    responses(
        (status = 201, description = "Registered; the secret is shown once", body = CreatedClient),
        (status = 400, description = "Invalid; `field` names the culprit", body = ApiErrorBody),
        (status = 409, description = "The client_id is taken", body = ApiErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
    ApiJson(body): ApiJson<CreateClient>,
) -> Result<(StatusCode, Json<CreatedClient>), ApiError> {
    let (record, client_secret) = manage::create_client(
        state.store.as_ref(),
        &state.oauth.grants,
        NewClient {
            name: body.client_name,
            client_id: body.client_id,
            redirect_uris: body.redirect_uris,
            grant_types: body.grant_types,
            auth_method: body.token_endpoint_auth_method,
            scope: body.scope,
            jwks_uri: body.jwks_uri,
            jwks: body.jwks,
            may_introspect: body.may_introspect,
            admin: false,
        },
        None,
    )
    .await?;
    state.oauth.clients.forget(&record.client_id);
    record_change(
        &state,
        &caller,
        "client.create",
        serde_json::json!({ "client_id": record.client_id }),
        None,
    );
    Ok((
        StatusCode::CREATED,
        Json(CreatedClient {
            client: ClientView::from(&record),
            client_secret,
        }),
    ))
}

/// One stored client.
#[utoipa::path(get, path = "/admin/v1/clients/{client_id}", tag = "clients",
    params(("client_id" = String, Path)),
    responses(
        (status = 200, description = "The client", body = ClientView),
        (status = 404, description = "No such client", body = ApiErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(client_id): ApiPath<String>,
) -> Result<Json<ClientView>, ApiError> {
    let c = state
        .store
        .get_client(&client_id, crate::util::now())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no client {client_id}")))?;
    Ok(Json(ClientView::from(&c)))
}

/// Remove a stored client; its tokens stop working for new requests at once.
#[utoipa::path(delete, path = "/admin/v1/clients/{client_id}", tag = "clients",
    params(("client_id" = String, Path)),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such client", body = ApiErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
    ApiPath(client_id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    if !state.store.delete_client(&client_id).await? {
        return Err(ApiError::not_found(format!("no client {client_id}")));
    }
    state.oauth.clients.forget(&client_id);
    record_change(
        &state,
        &caller,
        "client.delete",
        serde_json::json!({ "client_id": client_id }),
        None,
    );
    Ok(StatusCode::NO_CONTENT)
}

/// A Client ID Metadata Document in this replica's cache.
#[derive(Debug, Serialize, ToSchema)]
pub struct CachedDocument {
    /// The document's URL, which is the client_id.
    pub client_id: String,
    pub client_name: Option<String>,
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: String,
    /// Seconds until it is fetched again.
    pub expires_in: u64,
}

/// The Client ID Metadata Documents this replica has cached (read-only).
#[utoipa::path(get, path = "/admin/v1/clients/metadata-documents", tag = "clients",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of cached documents", body = Page<CachedDocument>),
        (status = 400, description = "Bad pagination parameters", body = ApiErrorBody),
    ))]
pub async fn metadata_documents(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<CachedDocument>>, ApiError> {
    let all: Vec<CachedDocument> = state
        .oauth
        .cimd
        .as_ref()
        .map(|c| c.cached())
        .unwrap_or_default()
        .into_iter()
        .map(|(client_id, m, expires_in)| CachedDocument {
            client_id,
            client_name: m.client_name.clone(),
            redirect_uris: m.redirect_uris.clone(),
            token_endpoint_auth_method: m.token_endpoint_auth_method.as_str().to_string(),
            expires_in,
        })
        .collect();
    Ok(Json(paginate(all, &q, |d| d.client_id.clone())?))
}

/// How long the secret being replaced keeps working.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// Seconds the previous secret keeps working (default 3600; 0: it stops at once; at most
    /// 30 days). A secret already being rotated out stops at once.
    #[serde(default = "an_hour")]
    pub overlap_secs: i64,
}

fn an_hour() -> i64 {
    3600
}

/// A new client secret, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedSecret {
    pub client_id: String,
    pub client_secret: String,
    /// RFC 3339: until when the previous secret works (absent: it no longer does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<String>,
}

/// Give a client that authenticates with a secret a new one. The previous secret keeps
/// working for `overlap_secs`, so the client can switch without downtime; other replicas
/// learn the new secret within `clients.cache_secs`.
#[utoipa::path(post, path = "/admin/v1/clients/{client_id}/secret", tag = "clients",
    params(("client_id" = String, Path)),
    request_body = RotateSecret,
    responses(
        (status = 200, description = "The new secret, shown once", body = RotatedSecret),
        (status = 400, description = "Invalid; `field` names the culprit", body = ApiErrorBody),
        (status = 404, description = "No such client", body = ApiErrorBody),
    ))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
    ApiPath(client_id): ApiPath<String>,
    ApiJson(body): ApiJson<RotateSecret>,
) -> Result<Json<RotatedSecret>, ApiError> {
    let (record, secret) =
        manage::rotate_client_secret(state.store.as_ref(), &client_id, body.overlap_secs).await?;
    state.oauth.clients.forget(&client_id);
    let until = record.previous_secret.as_ref().map(|p| p.expires_at);
    record_change(
        &state,
        &caller,
        "client.rotate_secret",
        serde_json::json!({ "client_id": client_id, "previous_secret_expires_at": until }),
        None,
    );
    Ok(Json(RotatedSecret {
        client_id,
        client_secret: secret,
        previous_secret_expires_at: until.map(time),
    }))
}

/// A change to a pre-registered client: fields left out stay; `null` clears one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateClient {
    pub client_name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    pub grant_types: Option<Vec<String>>,
    #[serde(default, deserialize_with = "super::nullable")]
    #[schema(value_type = Option<String>, nullable)]
    pub scope: Option<Option<String>>,
    #[serde(default, deserialize_with = "super::nullable")]
    #[schema(value_type = Option<String>, nullable)]
    pub jwks_uri: Option<Option<String>>,
    /// A JWK Set.
    #[serde(default, deserialize_with = "super::nullable")]
    #[schema(value_type = Option<Object>, nullable)]
    pub jwks: Option<Option<serde_json::Value>>,
}

/// Change a pre-registered client's name, redirect URIs, grants, scopes or keys (checked as
/// a new client's are). Dynamically registered clients are changed by their registrant
/// (RFC 7592).
#[utoipa::path(patch, path = "/admin/v1/clients/{client_id}", tag = "clients",
    params(("client_id" = String, Path)),
    request_body = UpdateClient,
    responses(
        (status = 200, description = "The changed client", body = ClientView),
        (status = 400, description = "Invalid; `field` names the culprit", body = ApiErrorBody),
        (status = 404, description = "No such client", body = ApiErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
    ApiPath(client_id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateClient>,
) -> Result<Json<ClientView>, ApiError> {
    let change = manage::ClientChange {
        name: body.client_name,
        redirect_uris: body.redirect_uris,
        grant_types: body.grant_types,
        scope: body.scope,
        jwks_uri: body.jwks_uri,
        jwks: body.jwks,
    };
    let record = manage::update_client(
        state.store.as_ref(),
        &state.oauth.grants,
        &client_id,
        change,
    )
    .await?;
    state.oauth.clients.forget(&client_id);
    record_change(
        &state,
        &caller,
        "client.update",
        serde_json::json!({ "client_id": client_id }),
        None,
    );
    Ok(Json(ClientView::from(&record)))
}
