//! A small cache of validation results, keyed by a SHA-256 of the token.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_lc_rs::digest::{SHA256, digest};

use crate::principal::Principal;

type Key = [u8; 32];

/// Bounded map from token hash to the [`Principal`] it validated to. An entry
/// lives until the token expires or `ttl` passes, whichever is first. Only
/// successes are cached; scope checks are per request and not cached.
pub(crate) struct ValidationCache {
    entries: Mutex<HashMap<Key, (Principal, Instant)>>,
    capacity: usize,
    ttl: Duration,
}

fn key(token: &str) -> Key {
    let mut key = [0; 32];
    key.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    key
}

impl ValidationCache {
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
            ttl,
        }
    }

    fn enabled(&self) -> bool {
        self.capacity > 0 && !self.ttl.is_zero()
    }

    pub(crate) fn get(&self, token: &str, now: Instant) -> Option<Principal> {
        if !self.enabled() {
            return None;
        }
        let key = key(token);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(&key) {
            Some((principal, until)) if *until > now => Some(principal.clone()),
            Some(_) => {
                entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remember `principal` for `token`; `unix_now` is compared with its `exp`.
    pub(crate) fn insert(&self, token: &str, principal: &Principal, now: Instant, unix_now: i64) {
        if !self.enabled() {
            return;
        }
        let remaining = principal.expires_at().saturating_sub(unix_now);
        let Ok(remaining) = u64::try_from(remaining) else {
            return;
        };
        if remaining == 0 {
            return;
        }
        let until = now + self.ttl.min(Duration::from_secs(remaining));
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity {
            entries.retain(|_, (_, until)| *until > now);
        }
        while entries.len() >= self.capacity {
            let Some(victim) = entries.keys().next().copied() else {
                break;
            };
            entries.remove(&victim);
        }
        entries.insert(key(token), (principal.clone(), until));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The DPoP proof ids seen recently (RFC 9449 §11.1), each kept until its
/// proof would be too old anyway, in one bounded set per DPoP key (`jkt`).
///
/// A key that has `per_key` live ids gets its further proofs refused until
/// some expire — it cannot make the guard forget an id and accept a replay,
/// and it fills only its own set: other keys are never refused because of it.
/// A proof is only spent after its signature, its `htu`/`htm`/`ath` and the
/// token's binding to its key were checked, so every key with a set holds a
/// valid token for this resource. Sets whose ids have all expired are dropped
/// along the way, so memory follows the keys active within the proof window.
#[cfg(feature = "dpop")]
pub(crate) struct ReplayCache {
    keys: Mutex<ReplayState>,
    per_key: usize,
}

#[cfg(feature = "dpop")]
struct ReplayState {
    sets: HashMap<Key, HashMap<Key, i64>>,
    /// Spends since the last sweep of expired sets.
    since_sweep: usize,
}

#[cfg(feature = "dpop")]
/// What [`ReplayCache::spend`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spend {
    Fresh,
    Replayed,
    /// This key holds `per_key` live ids.
    KeyFull,
}

#[cfg(feature = "dpop")]
impl ReplayCache {
    pub(crate) fn new(per_key: usize) -> Self {
        Self {
            keys: Mutex::new(ReplayState {
                sets: HashMap::new(),
                since_sweep: 0,
            }),
            per_key,
        }
    }

    /// Spend proof `id` of key `jkt` until `until` (Unix seconds), at `now`.
    pub(crate) fn spend(&self, jkt: &str, id: &str, until: i64, now: i64) -> Spend {
        let (jkt, id) = (key(jkt), key(id));
        let mut state = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        state.since_sweep += 1;
        if state.since_sweep >= 1024 {
            state.since_sweep = 0;
            state
                .sets
                .retain(|_, ids| ids.values().any(|until| *until > now));
        }
        let ids = state.sets.entry(jkt).or_default();
        if ids.get(&id).is_some_and(|u| *u > now) {
            return Spend::Replayed;
        }
        if ids.len() >= self.per_key {
            ids.retain(|_, u| *u > now);
            if ids.len() >= self.per_key {
                return Spend::KeyFull;
            }
        }
        ids.insert(id, until);
        Spend::Fresh
    }

    #[cfg(test)]
    fn keys(&self) -> usize {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sets
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::PrincipalData;
    use serde_json::Value;

    fn principal(exp: i64) -> Principal {
        PrincipalData {
            sub: "s".into(),
            client_id: "c".into(),
            scopes: vec![],
            effective: vec![],
            act: vec![],
            expires_at: exp,
            claims: Value::Null,
        }
        .into()
    }

    #[test]
    fn hit_until_ttl_or_expiry() {
        let cache = ValidationCache::new(10, Duration::from_secs(60));
        let t0 = Instant::now();
        cache.insert("a", &principal(1_000 + 3600), t0, 1_000);
        cache.insert("b", &principal(1_000 + 5), t0, 1_000);
        assert!(cache.get("a", t0).is_some());
        assert!(cache.get("b", t0 + Duration::from_secs(4)).is_some());
        assert!(cache.get("b", t0 + Duration::from_secs(5)).is_none());
        assert!(cache.get("a", t0 + Duration::from_secs(59)).is_some());
        assert!(cache.get("a", t0 + Duration::from_secs(60)).is_none());
        assert!(cache.get("c", t0).is_none());
    }

    #[test]
    fn expired_tokens_are_not_cached() {
        let cache = ValidationCache::new(10, Duration::from_secs(60));
        let t0 = Instant::now();
        cache.insert("a", &principal(999), t0, 1_000);
        cache.insert("b", &principal(1_000), t0, 1_000);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn bounded_size() {
        let cache = ValidationCache::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..10 {
            cache.insert(&format!("t{i}"), &principal(5_000), t0, 1_000);
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.get("t9", t0).is_some());
    }

    #[cfg(feature = "dpop")]
    #[test]
    fn replays_are_caught_until_they_expire_and_a_full_key_refuses_only_itself() {
        let cache = ReplayCache::new(2);
        assert_eq!(cache.spend("k1", "a", 100, 0), Spend::Fresh);
        assert_eq!(cache.spend("k1", "a", 100, 50), Spend::Replayed);
        assert_eq!(cache.spend("k1", "b", 10, 0), Spend::Fresh);
        assert_eq!(cache.spend("k1", "c", 100, 5), Spend::KeyFull);
        // Another key is never refused because k1 is full, and may reuse k1's ids.
        assert_eq!(cache.spend("k2", "c", 100, 5), Spend::Fresh);
        assert_eq!(cache.spend("k2", "a", 100, 5), Spend::Fresh);
        assert_eq!(cache.spend("k1", "c", 100, 11), Spend::Fresh, "b expired");
        assert_eq!(cache.spend("k1", "a", 300, 101), Spend::Fresh, "a expired");
    }

    #[cfg(feature = "dpop")]
    #[test]
    fn a_flood_of_one_key_never_refuses_others_and_idle_keys_are_dropped() {
        let cache = ReplayCache::new(8);
        let mut refused = 0;
        for i in 0..5_000 {
            if cache.spend("flooder", &format!("j{i}"), 60, 0) == Spend::KeyFull {
                refused += 1;
            }
        }
        assert_eq!(refused, 5_000 - 8);
        for k in 0..100 {
            assert_eq!(
                cache.spend(&format!("client-{k}"), "j0", 60, 0),
                Spend::Fresh
            );
        }
        assert_eq!(cache.keys(), 101);
        // Once the window has passed, a later sweep drops every expired set.
        for i in 0..1024 {
            cache.spend("late", &format!("j{i}"), 200, 100);
        }
        assert_eq!(cache.keys(), 1);
    }

    #[test]
    fn disabled_with_zero_capacity() {
        let cache = ValidationCache::new(0, Duration::from_secs(60));
        let t0 = Instant::now();
        cache.insert("a", &principal(5_000), t0, 1_000);
        assert!(cache.get("a", t0).is_none());
    }
}
