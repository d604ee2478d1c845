//! Consent: what a request asks of a user, whether they allowed it before, and remembering
//! that they did. Shared by the authorization endpoint and the device flow.
//!
//! Consent is always keyed by user *and* client (and resource): one user's decision never
//! reaches another user of the same client_id (a shared metadata document, say).

use super::authorize::Asked;
use crate::audit::{Event, Kind};
use crate::startup::AppState;
use crate::store::{Consent, StoreError};
use crate::util;

/// The key under which consent to identity scopes (openid, profile, …) is kept.
pub fn identity_key(state: &AppState) -> String {
    state.issuer.to_string()
}

/// What the request asks of the user, as consent records: each resource with its requested
/// scopes, and the identity scopes under the issuer's own key.
fn consent_keys(state: &AppState, asked: &Asked<'_>) -> Vec<(String, Vec<String>)> {
    let mut keys: Vec<(String, Vec<String>)> = asked
        .resources
        .iter()
        .map(|r| (r.uri.to_string(), asked.scopes_for(r)))
        .collect();
    let identity = asked.identity_scopes();
    if !identity.is_empty() {
        keys.push((identity_key(state), identity));
    }
    keys
}

/// Does this request ask for anything the user has not yet allowed this client?
pub async fn missing(
    state: &AppState,
    user_id: &str,
    asked: &Asked<'_>,
) -> Result<bool, StoreError> {
    let wanted = consent_keys(state, asked);
    for (resource, scopes) in wanted {
        let Some(c) = state
            .store
            .get_consent(user_id, asked.client_id, &resource)
            .await?
        else {
            return Ok(true);
        };
        let have: Vec<&str> = c.scopes.split(' ').collect();
        if scopes.iter().any(|s| !have.contains(&s.as_str())) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Remember the approval, adding to what was allowed before.
pub async fn save(state: &AppState, user_id: &str, asked: &Asked<'_>) -> Result<(), StoreError> {
    let now = util::now();
    let grants = consent_keys(state, asked);
    let mut granted = serde_json::Map::new();
    for (resource, scopes) in grants {
        granted.insert(resource.clone(), serde_json::json!(scopes));
        let existing = state
            .store
            .get_consent(user_id, asked.client_id, &resource)
            .await?;
        let mut all: Vec<String> = existing
            .as_ref()
            .map(|c| {
                c.scopes
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        for s in scopes {
            if !all.contains(&s) {
                all.push(s);
            }
        }
        state
            .store
            .save_consent(&Consent {
                user_id: user_id.to_string(),
                client_id: asked.client_id.to_string(),
                resource,
                scopes: all.join(" "),
                created_at: existing.as_ref().map_or(now, |c| c.created_at),
                updated_at: now,
                last_used_at: existing.and_then(|c| c.last_used_at),
            })
            .await?;
    }
    state.audit.record(
        Event::new(Kind::ConsentGranted)
            .client(asked.client_id)
            .user(user_id)
            .detail(serde_json::json!({ "granted": granted })),
    );
    Ok(())
}
