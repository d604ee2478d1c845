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
/// proof would be too old anyway. Bounded: when full of live entries, new
/// proofs are refused rather than old ones forgotten, so a flood cannot make
/// the guard accept a replay.
pub(crate) struct ReplayCache {
    entries: Mutex<HashMap<Key, i64>>,
    capacity: usize,
}

/// What [`ReplayCache::spend`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spend {
    Fresh,
    Replayed,
    Full,
}

impl ReplayCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// Spend `id` until `until` (Unix seconds), at `now`.
    pub(crate) fn spend(&self, id: &str, until: i64, now: i64) -> Spend {
        let key = key(id);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.get(&key).is_some_and(|u| *u > now) {
            return Spend::Replayed;
        }
        if entries.len() >= self.capacity {
            entries.retain(|_, u| *u > now);
            if entries.len() >= self.capacity {
                return Spend::Full;
            }
        }
        entries.insert(key, until);
        Spend::Fresh
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

    #[test]
    fn replays_are_caught_until_they_expire_and_a_full_cache_refuses() {
        let cache = ReplayCache::new(2);
        assert_eq!(cache.spend("a", 100, 0), Spend::Fresh);
        assert_eq!(cache.spend("a", 100, 50), Spend::Replayed);
        assert_eq!(cache.spend("b", 10, 0), Spend::Fresh);
        assert_eq!(cache.spend("c", 100, 5), Spend::Full);
        assert_eq!(cache.spend("c", 100, 11), Spend::Fresh, "b expired");
        assert_eq!(cache.spend("a", 300, 101), Spend::Fresh, "a expired");
    }

    #[test]
    fn disabled_with_zero_capacity() {
        let cache = ValidationCache::new(0, Duration::from_secs(60));
        let t0 = Instant::now();
        cache.insert("a", &principal(5_000), t0, 1_000);
        assert!(cache.get("a", t0).is_none());
    }
}
