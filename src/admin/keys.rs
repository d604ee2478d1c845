//! `/admin/v1/keys`: signing keys, their rotation (publish-then-activate) and revocation.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::AdminCaller;
use super::{ApiJson, ApiPath, ApiQuery, Page, PageQuery, paginate, record_change, time};
use crate::error::{ApiError, ApiErrorBody};
use crate::keys::{Activation, Alg, KeyError, KeyPolicy, KeyState};
use crate::state::AppState;

/// A signing key (never its private part).
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub kid: String,
    /// `ES256` or `RS256`.
    pub alg: String,
    /// `pending` (published, signs from `activates_at`), `active` (signs new tokens),
    /// `retired` (published until its tokens expire), `revoked` (withdrawn) or `expired`.
    pub status: &'static str,
    /// RFC 3339; published from then on.
    pub created_at: String,
    /// RFC 3339: when it signs (pending) or started signing (active).
    pub activates_at: Option<String>,
    /// RFC 3339, for a retired key: when a newer key replaced it.
    pub retired_at: Option<String>,
    /// RFC 3339, for a retired key.
    pub published_until: Option<String>,
    /// RFC 3339, for a revoked key.
    pub revoked_at: Option<String>,
}

/// Which algorithms to rotate, and when the new keys sign.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    /// `ES256` or `RS256`; default both.
    pub alg: Option<String>,
    /// Emergency: the new keys sign at once instead of after `keys.activation_delay_secs`.
    /// Replicas that have not reread keys yet (up to `keys.refresh_secs`) do not publish them
    /// meanwhile, so tokens they sign may be refused there. Default false.
    #[serde(default)]
    pub now: bool,
}

/// A key made by a rotation.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewKeyView {
    pub kid: String,
    pub alg: String,
    /// RFC 3339: when it starts signing.
    pub activates_at: String,
}

/// The keys made by a rotation.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rotated {
    pub kids: Vec<String>,
    pub keys: Vec<NewKeyView>,
}

/// What a revocation did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    pub kid: String,
    pub alg: String,
    /// When the revoked key was the active one: the new key that signs instead, at once
    /// (replicas that have not reread keys yet do not publish it for up to
    /// `keys.refresh_secs`).
    pub replacement: Option<String>,
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
    let policy = KeyPolicy::from_config(&state.oauth.config);
    let states = crate::keys::row_states(&keys, now, policy.retention_secs);
    // Newest first: sort on a key that decreases with creation time.
    let rows: Vec<(String, KeyView)> = keys
        .into_iter()
        .zip(states)
        .map(|(k, s)| {
            let order = format!("{:020}\n{}", i64::MAX - k.created_at, k.kid);
            (order, KeyView::new(k, s))
        })
        .collect();
    let page = paginate(rows, &q, |(order, _)| order.clone())?;
    Ok(Json(Page {
        items: page.items.into_iter().map(|(_, v)| v).collect(),
        next: page.next,
    }))
}

impl KeyView {
    /// A stored key in the state it is in (the admin API's and `keys list --output json`'s).
    pub fn new(k: crate::store::StoredKey, s: KeyState) -> Self {
        let mut view = KeyView {
            kid: k.kid,
            alg: k.alg,
            status: s.name(),
            created_at: time(k.created_at),
            activates_at: None,
            retired_at: None,
            published_until: None,
            revoked_at: None,
        };
        match s {
            KeyState::Pending { activates_at } => view.activates_at = Some(time(activates_at)),
            KeyState::Active { since } => view.activates_at = Some(time(since)),
            KeyState::Retired {
                since,
                published_until,
            } => {
                view.retired_at = Some(time(since));
                view.published_until = Some(time(published_until));
            }
            KeyState::Revoked { at } => view.revoked_at = Some(time(at)),
            KeyState::Expired => {}
        }
        view
    }
}

/// Add a new key (for one algorithm or both). It is published at once and signs after
/// `keys.activation_delay_secs`, when every replica publishes it; the previous key then
/// retires and stays published until every token it signed has expired.
#[utoipa::path(post, path = "/admin/v1/keys/rotate", tag = "keys",
    request_body(content = Rotate, description = "Optional; `{}` rotates both algorithms"),
    responses(
        (status = 200, description = "Rotated", body = Rotated),
        (status = 400, description = "Invalid; `field` names the culprit", body = ApiErrorBody),
        (status = 409, description = "A rotation of the algorithm is already pending", body = ApiErrorBody),
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
    let when = if body.now {
        Activation::Now
    } else {
        Activation::Delayed
    };
    let made = state
        .oauth
        .keys
        .rotate(&algs, when)
        .await
        .map_err(key_error)?;
    let kids: Vec<String> = made.iter().map(|k| k.kid.clone()).collect();
    record_change(
        &state,
        &caller,
        "key.rotate",
        serde_json::json!({ "kids": kids, "now": body.now }),
        None,
    );
    Ok(Json(Rotated {
        kids,
        keys: made
            .into_iter()
            .map(|k| NewKeyView {
                kid: k.kid,
                alg: k.alg.to_string(),
                activates_at: time(k.activates_at),
            })
            .collect(),
    }))
}

/// Withdraw a key at once (a compromised key): it leaves the JWKS, and tokens it signed stop
/// verifying at every replica within `keys.refresh_secs`. When it was the active key of its
/// algorithm, a new key signs instead at once.
#[utoipa::path(post, path = "/admin/v1/keys/{kid}/revoke", tag = "keys",
    params(("kid" = String, Path)),
    responses(
        (status = 200, description = "Revoked", body = Revoked),
        (status = 404, description = "No such key", body = ApiErrorBody),
        (status = 409, description = "Already revoked", body = ApiErrorBody),
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
    ApiPath(kid): ApiPath<String>,
) -> Result<Json<Revoked>, ApiError> {
    let r = state.oauth.keys.revoke(&kid).await.map_err(key_error)?;
    record_change(
        &state,
        &caller,
        "key.revoke",
        serde_json::json!({ "kid": r.kid, "replacement": r.replacement }),
        None,
    );
    Ok(Json(Revoked {
        kid: r.kid,
        alg: r.alg.to_string(),
        replacement: r.replacement,
    }))
}

fn key_error(e: KeyError) -> ApiError {
    match e {
        KeyError::UnknownKey(_) => ApiError::not_found(e.to_string()),
        KeyError::AlreadyRevoked(_) | KeyError::AlreadyPending(_) => {
            ApiError::conflict(e.to_string())
        }
        e => ApiError::internal(e),
    }
}
