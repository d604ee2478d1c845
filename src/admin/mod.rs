//! The admin API under `/admin/v1`: JSON, one module per kind of thing administered, every
//! route documented with utoipa and registered in `crate::router`.
//!
//! Shared shapes, so every route answers alike:
//! - errors: [`crate::error::ApiError`] (`{"error": {"code", "message", "field"}}`);
//! - lists: [`Page`] (`{"items": […], "next": "<cursor>"|null}`) with `limit` and `cursor`;
//! - request bodies, paths and queries through [`ApiJson`], [`ApiPath`] and [`ApiQuery`],
//!   whose rejections are validation errors in that envelope (never a bare 400 or a 500).
//!
//! Every call needs an admin access token ([`auth`]); every change is recorded in the audit
//! log as `admin.change` ([`record_change`]).

pub mod audit;
pub mod auth;
pub mod clients;
pub mod consents;
pub mod delegations;
pub mod id_jag;
pub mod keys;
pub mod openapi;
pub mod resources;
pub mod users;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::audit::{Event, Kind};
use crate::error::ApiError;
use crate::state::AppState;

/// One page of a list. `next` is the cursor for the following page; absent on the last.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next: Option<String>,
}

/// Pagination parameters every list takes.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Most items per page: 1 to 200, default 50.
    pub limit: Option<String>,
    /// The `next` value of the previous page.
    pub cursor: Option<String>,
}

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

impl PageQuery {
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.limit.as_deref() {
            None => Ok(DEFAULT_LIMIT),
            Some(l) => match l.parse::<i64>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                _ => Err(ApiError::validation(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_LIMIT}"),
                )),
            },
        }
    }

    /// The decoded cursor: the sort key of the last item already seen.
    pub fn after(&self) -> Result<Option<String>, ApiError> {
        let Some(c) = self.cursor.as_deref() else {
            return Ok(None);
        };
        crate::util::b64_decode(c)
            .and_then(|b| String::from_utf8(b).ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::validation("cursor", "is not a cursor this API handed out (use `next`)")
            })
    }
}

/// The opaque cursor for a sort key.
pub fn cursor_for(key: &str) -> String {
    crate::util::b64(key.as_bytes())
}

/// Page through an in-memory list ordered by `key` (unique per item): the items after the
/// cursor's key, at most `limit`.
pub fn paginate<T, K: Fn(&T) -> String>(
    mut items: Vec<T>,
    q: &PageQuery,
    key: K,
) -> Result<Page<T>, ApiError> {
    let limit = q.limit()? as usize;
    let after = q.after()?;
    items.sort_by_key(|a| key(a));
    let mut rest: Vec<T> = match after {
        Some(a) => items.into_iter().filter(|i| key(i) > a).collect(),
        None => items,
    };
    let more = rest.len() > limit;
    rest.truncate(limit);
    let next = if more {
        rest.last().map(|i| cursor_for(&key(i)))
    } else {
        None
    };
    Ok(Page { items: rest, next })
}

/// A JSON body; a body that is not JSON or has a wrong field is a validation error naming
/// the field.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !crate::http::has_content_type(req.headers(), "application/json") {
            return Err(ApiError::bad_request(
                "the request must have Content-Type: application/json",
            ));
        }
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("the body could not be read: {e}")))?;
        let de = &mut serde_json::Deserializer::from_slice(&body);
        serde_path_to_error::deserialize(de)
            .map(ApiJson)
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                if let Some(field) = missing_field(&inner.to_string()) {
                    let field = if path == "." {
                        field
                    } else {
                        format!("{path}.{field}")
                    };
                    ApiError::validation(field, "is required")
                } else if inner.is_syntax() || inner.is_eof() || path == "." {
                    ApiError::bad_request(format!("the body is not the expected JSON: {inner}"))
                } else {
                    ApiError::validation(path, inner.to_string())
                }
            })
    }
}

/// Path parameters, percent-decoded.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(t)| ApiPath(t))
            .map_err(|e| ApiError::bad_request(format!("the path is not valid: {e}")))
    }
}

/// Query parameters.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(query)
            .map(ApiQuery)
            .map_err(|e| match missing_field(&e.to_string()) {
                Some(field) => ApiError::validation(field, "is a required query parameter"),
                None => ApiError::bad_request(format!("the query string is not valid: {e}")),
            })
    }
}

/// The field serde names in "missing field `x`".
fn missing_field(message: &str) -> Option<String> {
    let rest = message.split("missing field `").nth(1)?;
    rest.split('`').next().map(str::to_string)
}

/// Record an admin change: `action` (`client.create`), what it was done to, and the user
/// it concerns, if any. The event's `client_id` is the admin client that made the change
/// (also `detail.actor`) and its `ip` the address it called from. Never a secret in `target`.
pub fn record_change(
    state: &AppState,
    caller: &auth::AdminCaller,
    action: &str,
    target: serde_json::Value,
    user_id: Option<&str>,
) {
    state.oauth.audit.record(
        Event::new(Kind::AdminChange)
            .client(&caller.client_id)
            .user_opt(user_id)
            .ip(caller.ip)
            .detail(serde_json::json!({
                "action": action,
                "target": target,
                "actor": { "via": "admin_api", "client_id": caller.client_id },
            })),
    );
}

/// For a request body's field that may be left out (unchanged) or `null` (cleared):
/// `#[serde(default, deserialize_with = "nullable")]` on an `Option<Option<T>>`.
pub fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// RFC 3339 rendering for API answers.
pub fn time(t: i64) -> String {
    crate::util::rfc3339(t)
}
