//! `/admin/v1/resources`: protected resources with their scopes, and the token exchange
//! policies between them (RFC 8693).

use std::collections::BTreeMap;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::AdminCaller;
use super::{ApiJson, ApiPath, ApiQuery, Page, PageQuery, paginate, record_change};
use crate::error::{ApiError, ApiErrorBody};
use crate::manage;
use crate::oauth::admin_token::admin_resource_uri;
use crate::oauth::resource::ScopeDef;
use crate::state::AppState;
use crate::store::{DetailsTypeDef, ExchangePolicy, ResourceRecord};

/// A protected resource (an MCP server or any API that accepts our tokens).
#[derive(Debug, Serialize, ToSchema)]
pub struct ResourceView {
    /// The resource URI clients send as `resource` (RFC 8707), normalised.
    pub uri: String,
    /// The name users see on the consent screen.
    pub name: String,
    pub scopes: Vec<ScopeDef>,
    /// Other URIs that name this resource; tokens carry `uri`.
    pub aliases: Vec<String>,
    /// `ES256` or `RS256`: how its access tokens are signed.
    pub access_token_alg: String,
    /// `off`, `optional` or `required`: whether it takes DPoP-bound tokens.
    pub dpop: String,
    /// The authentication context class every sign-in for it must reach
    /// (`urn:concierge:acr:mfa`, `phr`); absent: the server's policy alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_acr: Option<String>,
    /// RFC 9396 authorization details types it accepts, besides the built-in
    /// `mcp_tool_call`: a `type`, a `schema` and the `sentence` users see.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub authorization_details_types: Vec<DetailsTypeDef>,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&ResourceRecord> for ResourceView {
    fn from(r: &ResourceRecord) -> Self {
        Self {
            uri: r.uri.to_string(),
            name: r.name.clone(),
            scopes: r.scopes.clone(),
            aliases: r.aliases.clone(),
            access_token_alg: r.access_token_alg.clone(),
            dpop: r.dpop.clone(),
            required_acr: r.required_acr.clone(),
            authorization_details_types: r.details_types.clone(),
            created_at: super::time(r.created_at),
        }
    }
}

/// A resource to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateResource {
    pub uri: String,
    pub name: String,
    #[serde(default)]
    pub scopes: Vec<ScopeDef>,
    /// Other URIs that name this resource (an old host name, say). Case, default ports and
    /// a trailing slash need none: requests are compared in RFC 3986 normal form.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// `ES256` (default) or `RS256`, for resource servers whose verifier knows only RS256.
    #[serde(default)]
    pub access_token_alg: Option<String>,
    /// `off`, `optional` (default) or `required`. `off`: a client sending a DPoP proof gets
    /// a Bearer token (RFC 9449 §5), for resource servers that know only Bearer tokens.
    #[serde(default)]
    pub dpop: Option<String>,
    /// The authentication context class every sign-in for it must reach:
    /// `urn:concierge:acr:mfa` (a second factor) or `phr` (a passkey).
    #[serde(default)]
    pub required_acr: Option<String>,
    /// RFC 9396 types it accepts: each a `type` name, a `schema` (`{"type": "object",
    /// "properties": {…}, "required": […]}`; properties of type string (`maxLength`,
    /// `enum`), integer or number (`minimum`, `maximum`), boolean, or array of strings
    /// (`maxItems`)) and a `sentence` naming fields as `{field}`.
    #[serde(default)]
    pub authorization_details_types: Vec<DetailsTypeDef>,
}

/// List resources, ordered by URI.
#[utoipa::path(get, path = "/admin/v1/resources", tag = "resources",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of resources", body = Page<ResourceView>),
        (status = 400, description = "Bad pagination parameters", body = ApiErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<ResourceView>>, ApiError> {
    let all: Vec<ResourceView> = state
        .store
        .list_resources()
        .await?
        .iter()
        .map(ResourceView::from)
        .collect();
    Ok(Json(paginate(all, &q, |r| r.uri.clone())?))
}

/// Register a resource.
#[utoipa::path(post, path = "/admin/v1/resources", tag = "resources",
    request_body = CreateResource,
    responses(
        (status = 201, description = "Registered", body = ResourceView),
        (status = 400, description = "Invalid; `field` names the culprit", body = ApiErrorBody),
        (status = 409, description = "A resource with this URI exists", body = ApiErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
    ApiJson(body): ApiJson<CreateResource>,
) -> Result<(StatusCode, Json<ResourceView>), ApiError> {
    let r = manage::create_resource(
        state.store.as_ref(),
        &body.uri,
        &body.name,
        body.scopes,
        &manage::ResourceOptions {
            aliases: body.aliases,
            token_alg: body.access_token_alg,
            dpop: body.dpop,
            required_acr: body.required_acr,
            details_types: body.authorization_details_types,
        },
    )
    .await?;
    state.oauth.resources.forget(r.uri.as_str());
    record_change(
        &state,
        &caller,
        "resource.create",
        serde_json::json!({ "uri": r.uri.as_str(), "aliases": r.to_record().aliases }),
        None,
    );
    Ok((
        StatusCode::CREATED,
        Json(ResourceView::from(&r.to_record())),
    ))
}

/// One resource. The URI is percent-encoded in the path.
#[utoipa::path(get, path = "/admin/v1/resources/{uri}", tag = "resources",
    params(("uri" = String, Path, description = "The resource URI, percent-encoded")),
    responses(
        (status = 200, description = "The resource", body = ResourceView),
        (status = 404, description = "No such resource", body = ApiErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(uri): ApiPath<String>,
) -> Result<Json<ResourceView>, ApiError> {
    let uri = manage::resource_uri("uri", &uri)?;
    let r = state
        .store
        .get_resource(uri.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no resource {uri}")))?;
    Ok(Json(ResourceView::from(&r)))
}

/// Remove a resource. Tokens already issued for it stay valid until they expire.
#[utoipa::path(delete, path = "/admin/v1/resources/{uri}", tag = "resources",
    params(("uri" = String, Path, description = "The resource URI, percent-encoded")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such resource", body = ApiErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
    ApiPath(uri): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let uri = manage::resource_uri("uri", &uri)?;
    if uri.as_str() == admin_resource_uri(state.oauth.issuer()) {
        return Err(ApiError::conflict(
            "the admin API's own resource cannot be removed",
        ));
    }
    manage::delete_resource(state.store.as_ref(), uri.as_str()).await?;
    state.oauth.resources.forget(uri.as_str());
    record_change(
        &state,
        &caller,
        "resource.delete",
        serde_json::json!({ "uri": uri.as_str() }),
        None,
    );
    Ok(StatusCode::NO_CONTENT)
}

/// May `client_id` exchange tokens for `source` into tokens for `target`, and with which
/// scopes (RFC 8693)? No policy means no.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExchangePolicyView {
    /// The resource the new tokens are for.
    pub target: String,
    /// The client allowed to exchange (e.g. the MCP server that calls `target`).
    pub client_id: String,
    /// The resource the presented (subject) tokens are for.
    pub source: String,
    /// Source scope → the target scopes it may become. Unmapped scopes are never granted.
    pub scope_map: BTreeMap<String, Vec<String>>,
}

impl From<ExchangePolicy> for ExchangePolicyView {
    fn from(p: ExchangePolicy) -> Self {
        Self {
            target: p.target,
            client_id: p.client_id,
            source: p.source,
            scope_map: p.scope_map,
        }
    }
}

/// Which exchange policy to remove.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PolicyKey {
    pub target: String,
    pub client_id: String,
    pub source: String,
}

/// List exchange policies.
#[utoipa::path(get, path = "/admin/v1/exchange-policies", tag = "resources",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of policies", body = Page<ExchangePolicyView>),
        (status = 400, description = "Bad pagination parameters", body = ApiErrorBody),
    ))]
pub async fn list_exchanges(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<ExchangePolicyView>>, ApiError> {
    let all: Vec<ExchangePolicyView> = state
        .store
        .list_exchange_policies()
        .await?
        .into_iter()
        .map(ExchangePolicyView::from)
        .collect();
    Ok(Json(paginate(all, &q, |p| {
        format!("{}\n{}\n{}", p.target, p.client_id, p.source)
    })?))
}

/// Allow an exchange (creates or replaces the policy for target, client and source).
#[utoipa::path(put, path = "/admin/v1/exchange-policies", tag = "resources",
    request_body = ExchangePolicyView,
    responses(
        (status = 200, description = "The policy in force", body = ExchangePolicyView),
        (status = 400, description = "Invalid; `field` names the culprit", body = ApiErrorBody),
    ))]
pub async fn allow_exchange(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
    ApiJson(body): ApiJson<ExchangePolicyView>,
) -> Result<Json<ExchangePolicyView>, ApiError> {
    let p = manage::allow_exchange(
        state.store.as_ref(),
        &body.target,
        &body.client_id,
        &body.source,
        body.scope_map,
    )
    .await?;
    record_change(
        &state,
        &caller,
        "exchange_policy.allow",
        serde_json::json!({ "target": p.target, "client_id": p.client_id, "source": p.source }),
        None,
    );
    Ok(Json(p.into()))
}

/// Deny an exchange (removes its policy).
#[utoipa::path(delete, path = "/admin/v1/exchange-policies", tag = "resources",
    params(PolicyKey),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such policy", body = ApiErrorBody),
    ))]
pub async fn deny_exchange(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
    ApiQuery(key): ApiQuery<PolicyKey>,
) -> Result<StatusCode, ApiError> {
    manage::deny_exchange(
        state.store.as_ref(),
        &key.target,
        &key.client_id,
        &key.source,
    )
    .await?;
    record_change(
        &state,
        &caller,
        "exchange_policy.deny",
        serde_json::json!({ "target": key.target, "client_id": key.client_id, "source": key.source }),
        None,
    );
    Ok(StatusCode::NO_CONTENT)
}

/// A change to a resource: fields left out stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateResource {
    pub name: Option<String>,
    /// The whole new list of scopes: those left out are no longer granted (tokens already
    /// issued keep them until they expire).
    pub scopes: Option<Vec<ScopeDef>>,
    /// `ES256` or `RS256`.
    pub access_token_alg: Option<String>,
    /// `off`, `optional` or `required`.
    pub dpop: Option<String>,
    /// `urn:concierge:acr:mfa`, `phr`, or `none` to require nothing beyond the server's
    /// policy.
    pub required_acr: Option<String>,
    /// The whole new list of RFC 9396 types it accepts.
    pub authorization_details_types: Option<Vec<DetailsTypeDef>>,
}

/// Change a resource's name, scopes or token settings (its URI and aliases stay). The URI
/// is percent-encoded in the path.
#[utoipa::path(patch, path = "/admin/v1/resources/{uri}", tag = "resources",
    params(("uri" = String, Path, description = "The resource URI, percent-encoded")),
    request_body = UpdateResource,
    responses(
        (status = 200, description = "The changed resource", body = ResourceView),
        (status = 400, description = "Invalid; `field` names the culprit", body = ApiErrorBody),
        (status = 404, description = "No such resource", body = ApiErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
    ApiPath(uri): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateResource>,
) -> Result<Json<ResourceView>, ApiError> {
    let change = manage::ResourceChange {
        name: body.name,
        scopes: body.scopes,
        token_alg: body.access_token_alg,
        dpop: body.dpop,
        required_acr: body.required_acr,
        details_types: body.authorization_details_types,
    };
    let r =
        manage::update_resource(state.store.as_ref(), state.oauth.issuer(), &uri, change).await?;
    state.oauth.resources.forget(r.uri.as_str());
    let record = r.to_record();
    record_change(
        &state,
        &caller,
        "resource.update",
        serde_json::json!({
            "uri": record.uri,
            "scopes": record.scopes.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        }),
        None,
    );
    Ok(Json(ResourceView::from(&record)))
}
