//! A small bounded in-memory cache whose entries expire: what every per-replica cache here
//! (metadata documents, client records, client key sets) needs, written once.
//!
//! Bounded twice: each entry lives at most the TTL it was stored with, and the cache holds
//! at most `capacity` entries (expired ones are dropped first, then the one closest to
//! expiry). A poisoned lock behaves as an empty cache: a cache may forget, never fail.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Entry<V> {
    value: V,
    expires: Instant,
}

pub struct TtlCache<K, V> {
    capacity: usize,
    map: Mutex<HashMap<K, Entry<V>>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// A cache of at most `capacity` entries; 0 disables it.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The value stored for `key`, unless it expired.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let map = self.map.lock().ok()?;
        map.get(key)
            .filter(|e| e.expires > Instant::now())
            .map(|e| e.value.clone())
    }

    /// Store `value` for `ttl`, replacing any entry for `key`. A zero TTL stores nothing.
    pub fn insert(&self, key: K, value: V, ttl: Duration) {
        self.put(key, value, ttl, true);
    }

    /// Store `value` unless a live entry for `key` exists; true when stored. One lock, so
    /// of several callers racing for the same key exactly one wins.
    pub fn insert_if_absent(&self, key: K, value: V, ttl: Duration) -> bool {
        self.put(key, value, ttl, false)
    }

    /// Change a live entry in place (its expiry stays).
    pub fn update<Q>(&self, key: &Q, f: impl FnOnce(&mut V))
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Ok(mut map) = self.map.lock()
            && let Some(e) = map.get_mut(key)
            && e.expires > Instant::now()
        {
            f(&mut e.value);
        }
    }

    /// The live entries with the time each has left, in no particular order.
    pub fn entries(&self) -> Vec<(K, V, Duration)> {
        let Ok(map) = self.map.lock() else {
            return Vec::new();
        };
        let now = Instant::now();
        map.iter()
            .filter(|(_, e)| e.expires > now)
            .map(|(k, e)| (k.clone(), e.value.clone(), e.expires - now))
            .collect()
    }

    pub fn remove<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Ok(mut map) = self.map.lock() {
            map.remove(key);
        }
    }

    fn put(&self, key: K, value: V, ttl: Duration, replace: bool) -> bool {
        if self.capacity == 0 || ttl.is_zero() {
            return false;
        }
        let Ok(mut map) = self.map.lock() else {
            return false;
        };
        let now = Instant::now();
        if !replace && map.get(&key).is_some_and(|e| e.expires > now) {
            return false;
        }
        if !map.contains_key(&key) && map.len() >= self.capacity {
            map.retain(|_, e| e.expires > now);
            if map.len() >= self.capacity {
                let soonest = map
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone());
                if let Some(k) = soonest {
                    map.remove(&k);
                }
            }
        }
        map.insert(
            key,
            Entry {
                value,
                expires: now + ttl,
            },
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn entries_expire_and_capacity_is_kept() {
        let c: TtlCache<String, u32> = TtlCache::new(2);
        c.insert("a".into(), 1, MIN);
        c.insert("b".into(), 2, Duration::from_secs(30));
        assert_eq!(c.get("a"), Some(1));
        c.insert("c".into(), 3, MIN);
        assert_eq!(c.get("b"), None, "the entry closest to expiry made room");
        assert_eq!(c.get("a"), Some(1));
        assert_eq!(c.get("c"), Some(3));
        c.insert("d".into(), 4, Duration::from_nanos(1));
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(c.get("d"), None, "expired");
        c.remove("a");
        assert_eq!(c.get("a"), None);
        c.insert("z".into(), 0, Duration::ZERO);
        assert_eq!(c.get("z"), None, "a zero TTL stores nothing");
    }

    #[test]
    fn insert_if_absent_has_one_winner_and_update_keeps_expiry() {
        let c: TtlCache<&str, u32> = TtlCache::new(10);
        assert!(c.insert_if_absent("k", 1, MIN));
        assert!(!c.insert_if_absent("k", 2, MIN));
        c.update("k", |v| *v = 7);
        assert_eq!(c.get("k"), Some(7));
        let off: TtlCache<&str, u32> = TtlCache::new(0);
        off.insert("k", 1, MIN);
        assert_eq!(off.get("k"), None, "capacity 0 disables the cache");
    }
}
