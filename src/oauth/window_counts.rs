//! Counts per key in fixed time windows, kept in memory: what the token endpoint's rate
//! limits and the metadata-document fetch budget count. A few independently locked shards,
//! so concurrent callers rarely wait for each other; keys of past windows are swept once a
//! shard grows large.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};

const SHARDS: usize = 16;
/// More keys than this in one shard and those of past windows are swept from it.
const SWEEP_AT: usize = 4096;

/// Per key: (window start, count in it).
pub struct WindowCounts<K> {
    window_secs: i64,
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<K, (i64, u32)>>>,
}

impl<K: Hash + Eq> WindowCounts<K> {
    /// Counters over windows of `window_secs` seconds (at least one).
    pub fn new(window_secs: i64) -> Self {
        Self {
            window_secs: window_secs.max(1),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Count one more for `key` in the window of `now`; the count so far, this one included.
    pub fn add(&self, key: K, now: i64) -> u32 {
        let window = self.window_of(now);
        let mut shard = self.shard(&key);
        if shard.len() > SWEEP_AT {
            shard.retain(|_, (start, _)| *start == window);
        }
        let entry = shard.entry(key).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1
    }

    /// The count for `key` in the window of `now`.
    pub fn get<Q>(&self, key: &Q, now: i64) -> u32
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let window = self.window_of(now);
        match self.shard(key).get(key) {
            Some((start, n)) if *start == window => *n,
            _ => 0,
        }
    }

    /// Seconds until the window of `now` ends (at least one).
    pub fn retry_after(&self, now: i64) -> i64 {
        (self.window_of(now) + self.window_secs - now).max(1)
    }

    fn window_of(&self, now: i64) -> i64 {
        now.div_euclid(self.window_secs) * self.window_secs
    }

    /// The locked shard of `key` (a panic elsewhere leaves counts usable).
    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> MutexGuard<'_, HashMap<K, (i64, u32)>> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_key_and_window() {
        let counts = WindowCounts::<String>::new(60);
        let t = 6000;
        assert_eq!(counts.add("a".into(), t), 1);
        assert_eq!(counts.add("a".into(), t + 59), 2);
        assert_eq!(counts.get("a", t + 30), 2);
        assert_eq!(counts.get("b", t), 0, "another key has its own");
        assert_eq!(counts.get("a", t + 60), 0, "a new window");
        assert_eq!(counts.add("a".into(), t + 60), 1);
        assert_eq!(counts.retry_after(t + 30), 30);
        assert_eq!(counts.retry_after(t + 59), 1);
    }

    #[test]
    fn past_windows_are_swept_from_a_full_shard() {
        let counts = WindowCounts::<u32>::new(60);
        let n = (SWEEP_AT * SHARDS * 2) as u32;
        for k in 0..n {
            counts.add(k, 0);
        }
        // Every shard holds more than SWEEP_AT keys of the first window: the first key of
        // the next window sweeps them.
        for k in n..2 * n {
            counts.add(k, 60);
        }
        let held: usize = counts
            .shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum();
        assert_eq!(held, n as usize);
    }
}
