//! Consent: what a request asks of a user, whether they allowed it before, and remembering
//! that they did. Shared by the authorization endpoint and the device flow.
//!
//! Consent is always keyed by user *and* client (and resource): one user's decision never
//! reaches another user of the same client_id (a shared metadata document, say).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use super::authorize::Asked;
use super::context::Context;
use super::form::Form;
use super::scope::Scope;
use crate::audit::{Event, Kind};
use crate::store::{Allowed, Consent, StoreError};

/// The consent form's field that lists the scopes it let the user untick (space-separated),
/// and the prefix of each one's checkbox (`keep:notes:write`, sent only when ticked).
pub const OFFERED_FIELD: &str = "offered";
pub const KEEP_PREFIX: &str = "keep:";

/// The scope a user granted on the consent page: what was asked, less the offered scopes
/// they unticked (RFC 6749 §3.3: the server may grant less than asked, and says so in the
/// token response). `offered` is the form's list, `None` when it offered no choice; a
/// scope it did not offer is kept, and nothing outside `asked` is ever added, whatever the
/// form says.
pub fn chosen(asked: &Scope, offered: Option<&str>, ticked: impl Fn(&str) -> bool) -> Scope {
    let Some(offered) = offered else {
        return asked.clone();
    };
    let offered: Vec<&str> = offered.split(' ').collect();
    asked.retain(|t| !offered.contains(&t) || ticked(t))
}

/// [`chosen`] from a posted consent form.
pub fn chosen_in(asked: &Scope, form: &Form) -> Scope {
    chosen(asked, form.get(OFFERED_FIELD), |t| {
        form.get(&format!("{KEEP_PREFIX}{t}")).is_some()
    })
}

/// How often one consent's use is written: the time is kept to the minute (the store's
/// `touch_consent` writes nothing either within a minute of the last use it recorded).
const USE_RECORDED_EVERY: i64 = 60;

/// How many consents [`RecentUses`] remembers before it forgets the stale ones.
const RECENT_USES_CAPACITY: usize = 16_384;

/// The consents this replica recorded a use of in the last minute. A busy agent's every
/// token would otherwise send the store an update that changes nothing: one more turn on
/// SQLite's single writer, one more round trip on PostgreSQL. Another replica keeps its own
/// and writes at most once a minute too, and the store's own condition keeps the row to one
/// change a minute whatever the replicas do.
pub struct RecentUses {
    /// When each consent's use was last recorded, by a keyed hash of (user, client,
    /// resource): no allocation per token, and the key (random per process) keeps anyone
    /// from choosing ids that collide with another user's.
    recorded: Mutex<HashMap<u64, i64>>,
    keys: RandomState,
}

impl Default for RecentUses {
    fn default() -> Self {
        Self {
            recorded: Mutex::new(HashMap::new()),
            keys: RandomState::new(),
        }
    }
}

impl RecentUses {
    fn key(&self, user_id: &str, client_id: &str, resource: &str) -> u64 {
        self.keys.hash_one((user_id, client_id, resource))
    }

    /// Whether a use at `now` is to be written, noting it as written if so: no use was
    /// recorded in the minute before (a clock that went back counts as none).
    fn claim(&self, key: u64, now: i64) -> bool {
        // A poisoned lock remembers nothing: every use is written, as before this existed.
        let Ok(mut recorded) = self.recorded.lock() else {
            return true;
        };
        if recorded
            .get(&key)
            .is_some_and(|&at| at <= now && now - at < USE_RECORDED_EVERY)
        {
            return false;
        }
        if recorded.len() >= RECENT_USES_CAPACITY {
            recorded.retain(|_, at| *at <= now && now - *at < USE_RECORDED_EVERY);
            if recorded.len() >= RECENT_USES_CAPACITY {
                recorded.clear();
            }
        }
        recorded.insert(key, now);
        true
    }

    fn forget(&self, key: u64) {
        if let Ok(mut recorded) = self.recorded.lock() {
            recorded.remove(&key);
        }
    }
}

/// Record that `user_id` used their consent to `client_id` for `resource` (shown on their
/// page of connected agents), at most once a minute per consent and replica. A failure is
/// logged, not returned: the token it came with is already issued.
pub async fn record_use(ctx: &Context, user_id: &str, client_id: &str, resource: &str) {
    let (uses, now) = (&ctx.consent_uses, ctx.now());
    let key = uses.key(user_id, client_id, resource);
    if !uses.claim(key, now) {
        return;
    }
    if let Err(e) = ctx
        .consents()
        .touch_consent(user_id, client_id, &[resource.to_string()], now)
        .await
    {
        uses.forget(key);
        tracing::warn!(error = %e, "recording consent use failed");
    }
}

/// The key under which consent to identity scopes (openid, profile, …) is kept.
pub fn identity_key(ctx: &Context) -> String {
    ctx.issuer().to_string()
}

/// What the request asks of the user, as consent records: each resource with its requested
/// scopes, and the identity scopes under the issuer's own key.
fn consent_keys(ctx: &Context, asked: &Asked<'_>) -> Vec<(String, Vec<String>)> {
    let mut keys: Vec<(String, Vec<String>)> = asked
        .resources
        .iter()
        .map(|r| (r.uri.to_string(), asked.scopes_for(r)))
        .collect();
    let identity = asked.identity_scopes();
    if !identity.is_empty() {
        keys.push((identity_key(ctx), identity));
    }
    keys
}

/// Does this request ask for anything the user has not yet allowed this client, given what
/// they allowed it (`allowed`, each resource's consent, read with the session)?
pub fn missing(ctx: &Context, asked: &Asked<'_>, allowed: &[Allowed]) -> bool {
    not_all_allowed(consent_keys(ctx, asked), allowed)
}

/// Is any scope of `wanted` (each consent key with its scopes) outside what `allowed` has
/// under that key? A key with no consent allows nothing.
fn not_all_allowed(wanted: Vec<(String, Vec<String>)>, allowed: &[Allowed]) -> bool {
    wanted.into_iter().any(|(key, scopes)| {
        allowed.iter().find(|a| a.resource == key).is_none_or(|a| {
            let have: Vec<&str> = a.scopes.split(' ').collect();
            scopes.iter().any(|s| !have.contains(&s.as_str()))
        })
    })
}

/// Has this user approved anything for this client before (and not revoked it)?
pub async fn approved_before(
    ctx: &Context,
    user_id: &str,
    client_id: &str,
) -> Result<bool, StoreError> {
    let all = ctx.consents().list_consents(user_id).await?;
    Ok(all.iter().any(|c| c.client_id == client_id))
}

/// Remember the approval, adding to what was allowed before.
pub async fn save(ctx: &Context, user_id: &str, asked: &Asked<'_>) -> Result<(), StoreError> {
    let now = ctx.now();
    let grants = consent_keys(ctx, asked);
    let mut granted = serde_json::Map::new();
    for (resource, scopes) in grants {
        granted.insert(resource.clone(), serde_json::json!(scopes));
        let existing = ctx
            .consents()
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
        ctx.consents()
            .save_consent(&Consent {
                user_id: user_id.to_string(),
                client_id: asked.client_id.to_string(),
                resource: resource.clone(),
                scopes: all.join(" "),
                created_at: existing.as_ref().map_or(now, |c| c.created_at),
                updated_at: now,
                last_used_at: existing.and_then(|c| c.last_used_at),
            })
            .await?;
        // A consent granted anew (after a revocation, say) has its first use recorded.
        let uses = &ctx.consent_uses;
        uses.forget(uses.key(user_id, asked.client_id, &resource));
    }
    ctx.audit.record(
        Event::new(Kind::ConsentGranted)
            .client(asked.client_id)
            .user(user_id)
            .detail(serde_json::json!({ "granted": granted })),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_allowed_only_when_every_key_holds_every_scope() {
        let allowed = [
            Allowed {
                resource: "https://notes.example/".into(),
                scopes: "notes:read notes:write".into(),
            },
            Allowed {
                resource: "https://issuer.example".into(),
                scopes: "openid".into(),
            },
        ];
        let want = |keys: &[(&str, &[&str])]| -> Vec<(String, Vec<String>)> {
            keys.iter()
                .map(|(k, s)| (k.to_string(), s.iter().map(|t| t.to_string()).collect()))
                .collect()
        };
        let notes = "https://notes.example/";
        assert!(!not_all_allowed(want(&[]), &allowed));
        assert!(!not_all_allowed(
            want(&[(notes, &["notes:read"])]),
            &allowed
        ));
        assert!(!not_all_allowed(
            want(&[
                (notes, &["notes:write", "notes:read"]),
                ("https://issuer.example", &["openid"])
            ]),
            &allowed
        ));
        // A scope not allowed, one only spelled like an allowed one, a key never allowed.
        assert!(not_all_allowed(
            want(&[(notes, &["notes:admin"])]),
            &allowed
        ));
        assert!(not_all_allowed(want(&[(notes, &["notes"])]), &allowed));
        assert!(not_all_allowed(
            want(&[(notes, &["notes:read"]), ("https://cal.example/", &[])]),
            &allowed
        ));
        assert!(not_all_allowed(
            want(&[(notes, &["notes:read"])]),
            &allowed[1..]
        ));
    }

    #[test]
    fn unticked_scopes_are_left_out_and_nothing_is_added() {
        let asked = Scope::parse("openid notes:read notes:write").unwrap();
        let keep = |t: &str| t == "notes:read" || t == "admin";
        assert_eq!(chosen(&asked, None, keep), asked);
        let got = chosen(&asked, Some("notes:read notes:write admin"), keep);
        assert_eq!(got.to_string(), "openid notes:read");
        // A form claiming to offer openid cannot remove it unless unticked, nor add admin.
        let got = chosen(&asked, Some("openid notes:write"), |_| false);
        assert_eq!(got.to_string(), "notes:read");
    }

    #[test]
    fn a_consents_use_is_written_once_a_minute() {
        let uses = RecentUses::default();
        let a = uses.key("alice", "agent", "https://mcp.example/");
        let b = uses.key("bob", "agent", "https://mcp.example/");
        assert_ne!(a, b);
        assert!(uses.claim(a, 1000));
        assert!(!uses.claim(a, 1000));
        assert!(!uses.claim(a, 1059));
        assert!(uses.claim(b, 1059), "another user's consent is its own");
        assert!(uses.claim(a, 1060));
        assert!(uses.claim(a, 900), "a clock that went back writes");
        uses.forget(a);
        assert!(uses.claim(a, 901), "a forgotten use is written again");
    }

    #[test]
    fn recent_uses_stay_bounded() {
        let uses = RecentUses::default();
        for i in 0..RECENT_USES_CAPACITY as u64 {
            assert!(uses.claim(i, 1000));
        }
        // Full of live entries: they are dropped rather than the memory growing.
        assert!(uses.claim(u64::MAX, 1001));
        assert!(uses.recorded.lock().unwrap().len() <= RECENT_USES_CAPACITY);
        // Full of stale ones: those go, and nothing else was there.
        for i in 0..RECENT_USES_CAPACITY as u64 - 1 {
            uses.claim(i, 2000);
        }
        assert!(uses.claim(u64::MAX - 1, 2100));
        assert_eq!(uses.recorded.lock().unwrap().len(), 1);
    }
}
