//! `/admin/v1/keys`: signing keys and their rotation.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::AdminCaller;
use super::{ApiJson, ApiQuery, Page, PageQuery, paginate, record_change, time};
use crate::error::{ApiError, ApiErrorBody};
use crate::keys::Alg;
use crate::state::AppState;
use crate::store::KeyStatus;

/// A signing key (never its private part).
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub kid: String,
    /// `ES256` or `RS256`.
    pub alg: String,
    /// `active` (signs new tokens), `retired` (published until its tokens expire) or
    /// `expired`.
    pub status: &'static str,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, for a retired key.
    pub published_until: Option<String>,
}

/// Which algorithms to rotate.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    /// `ES256` or `RS256`; default both.
    pub alg: Option<String>,
}

/// The keys made active by a rotation.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rotated {
    pub kids: Vec<String>,
}

/// List signing keys, newest first.
#[utoipa::path(get, path = "/admin/v1/keys", tag = "keys",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of keys", body = Page<KeyView>),
        (status = 400, description = "Bad pagination parameters", body = ApiErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<KeyView>>, ApiError> {
    let now = crate::util::now();
    let keys = state.store.list_keys().await?;
    // Newest first: sort on a key that decreases with creation time.
    let rows: Vec<(String, KeyView)> = keys
        .into_iter()
        .map(|k| {
            let (status, until) = match k.status(now) {
                KeyStatus::Active => ("active", None),
                KeyStatus::Retired { published_until } => ("retired", Some(time(published_until))),
                KeyStatus::Expired => ("expired", None),
            };
            let order = format!("{:020}\n{}", i64::MAX - k.created_at, k.kid);
            let view = KeyView {
                kid: k.kid,
                alg: k.alg,
                status,
                created_at: time(k.created_at),
                published_until: until,
            };
            (order, view)
        })
        .collect();
    let page = paginate(rows, &q, |(order, _)| order.clone())?;
    Ok(Json(Page {
        items: page.items.into_iter().map(|(_, v)| v).collect(),
        next: page.next,
    }))
}

/// Make a new key active (for one algorithm or both). The previous keys stay published until
/// every token they signed has expired.
#[utoipa::path(post, path = "/admin/v1/keys/rotate", tag = "keys",
    request_body(content = Rotate, description = "Optional; `{}` rotates both algorithms"),
    responses(
        (status = 200, description = "Rotated", body = Rotated),
        (status = 400, description = "Invalid; `field` names the culprit", body = ApiErrorBody),
    ))]
pub async fn rotate(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
    ApiJson(body): ApiJson<Rotate>,
) -> Result<Json<Rotated>, ApiError> {
    let algs = match body.alg.as_deref() {
        None => Alg::ALL.to_vec(),
        Some(a) => vec![
            Alg::parse(a).ok_or_else(|| ApiError::validation("alg", "must be ES256 or RS256"))?,
        ],
    };
    let kids = state
        .oauth
        .keys
        .rotate(&algs)
        .await
        .map_err(ApiError::internal)?;
    record_change(
        &state,
        &caller,
        "key.rotate",
        serde_json::json!({ "kids": kids }),
        None,
    );
    Ok(Json(Rotated { kids }))
}
