//! Where each signing key is in its life, decided from the stored times and `now` alone, so
//! every replica reaches the same answer without talking to the others.
//!
//! A key is **pending** from its creation until `activates_at`: published, not signing. Then
//! it is **active** (the newest activated key of its algorithm signs) until a newer one
//! activates; from that moment it is **retired**: published until every token it can have
//! signed has expired (`retention` seconds), then **expired**. A **revoked** key is withdrawn
//! at once: neither published, nor trusted, nor used, whatever its times say.

use serde::Serialize;

/// The stored times of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeline {
    pub created_at: i64,
    /// Signs from then on (for keys made before publish-then-activate: `created_at`).
    pub activates_at: i64,
    /// Explicitly retired at (keys retired before publish-then-activate).
    pub retired_at: Option<i64>,
    /// Explicitly unpublished after.
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A key's state at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum KeyState {
    /// Published; starts signing at `activates_at`.
    Pending { activates_at: i64 },
    /// Signs new tokens of its algorithm.
    Active { since: i64 },
    /// Replaced at `since`; published until `published_until` for the tokens it signed.
    Retired { since: i64, published_until: i64 },
    /// Withdrawn at `at`.
    Revoked { at: i64 },
    /// No longer needed by anyone.
    Expired,
}

impl KeyState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending { .. } => "pending",
            Self::Active { .. } => "active",
            Self::Retired { .. } => "retired",
            Self::Revoked { .. } => "revoked",
            Self::Expired => "expired",
        }
    }

    /// In the JWKS, and trusted when we verify our own tokens.
    pub fn is_published(self) -> bool {
        matches!(
            self,
            Self::Pending { .. } | Self::Active { .. } | Self::Retired { .. }
        )
    }
}

/// What [`states`] needs to know of a key.
#[derive(Debug, Clone, Copy)]
pub struct KeyFacts<'a> {
    pub kid: &'a str,
    pub alg: &'a str,
    pub times: Timeline,
}

/// Later activation wins; the kid breaks ties so every replica picks the same key.
fn order<'a>(k: &KeyFacts<'a>) -> (i64, &'a str) {
    (k.times.activates_at, k.kid)
}

/// The state of each of `keys` (any algorithms, any order) at `now`, in the same order.
/// `retention`: how long a retired key stays published (the longest token lifetime plus
/// leeway).
pub fn states(keys: &[KeyFacts<'_>], now: i64, retention: i64) -> Vec<KeyState> {
    let usable = |k: &KeyFacts<'_>| {
        let t = k.times;
        t.revoked_at.is_none()
            && t.activates_at <= now
            && t.retired_at.is_none_or(|r| r > now)
            && t.expires_at.is_none_or(|e| e > now)
    };
    let active = |alg: &str| {
        keys.iter()
            .filter(|k| k.alg == alg && usable(k))
            .max_by(|a, b| order(a).cmp(&order(b)))
            .map(|k| k.kid)
    };
    keys.iter()
        .map(|k| {
            let t = k.times;
            if let Some(at) = t.revoked_at {
                return KeyState::Revoked { at };
            }
            if t.expires_at.is_some_and(|e| e <= now) {
                return KeyState::Expired;
            }
            if t.activates_at > now {
                return KeyState::Pending {
                    activates_at: t.activates_at,
                };
            }
            if active(k.alg) == Some(k.kid) {
                return KeyState::Active {
                    since: t.activates_at,
                };
            }
            // Replaced by the first unrevoked key of its algorithm activated after it.
            let successor = keys
                .iter()
                .filter(|j| {
                    j.alg == k.alg
                        && j.times.revoked_at.is_none()
                        && j.times.activates_at <= now
                        && order(j) > order(k)
                })
                .map(|j| j.times.activates_at)
                .min();
            let explicit = t.retired_at.filter(|r| *r <= now);
            let since = match (explicit, successor) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(s) => s,
                    None => return KeyState::Expired,
                },
            };
            let published_until = t
                .expires_at
                .unwrap_or_else(|| since.saturating_add(retention));
            if published_until <= now {
                KeyState::Expired
            } else {
                KeyState::Retired {
                    since,
                    published_until,
                }
            }
        })
        .collect()
}

/// The keys of `keys` due for a scheduled rotation at `now`: each algorithm whose active key
/// has signed for `rotate_after` seconds and has no pending successor. Returns (index of the
/// active key) per algorithm due.
pub fn due_for_rotation(
    keys: &[KeyFacts<'_>],
    states: &[KeyState],
    now: i64,
    rotate_after: i64,
) -> Vec<usize> {
    if rotate_after <= 0 {
        return Vec::new();
    }
    keys.iter()
        .zip(states)
        .enumerate()
        .filter(|(_, (k, s))| {
            let old = matches!(s, KeyState::Active { since } if since.saturating_add(rotate_after) <= now);
            let pending = keys.iter().zip(states).any(|(j, sj)| {
                j.alg == k.alg && matches!(sj, KeyState::Pending { .. })
            });
            old && !pending
        })
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETENTION: i64 = 1000;

    fn t(created: i64, activates: i64) -> Timeline {
        Timeline {
            created_at: created,
            activates_at: activates,
            retired_at: None,
            expires_at: None,
            revoked_at: None,
        }
    }

    fn facts<'a>(keys: &'a [(&'a str, &'a str, Timeline)]) -> Vec<KeyFacts<'a>> {
        keys.iter()
            .map(|(kid, alg, times)| KeyFacts {
                kid,
                alg,
                times: *times,
            })
            .collect()
    }

    fn at(keys: &[(&str, &str, Timeline)], now: i64) -> Vec<KeyState> {
        states(&facts(keys), now, RETENTION)
    }

    #[test]
    fn a_rotated_key_is_published_before_it_signs_then_retires_its_predecessor() {
        let keys = [("old", "ES256", t(0, 0)), ("new", "ES256", t(100, 160))];
        // Before activation: the old key signs, the new one is only published.
        assert_eq!(
            at(&keys, 150),
            vec![
                KeyState::Active { since: 0 },
                KeyState::Pending { activates_at: 160 }
            ]
        );
        // At activation: the new key signs, the old one is retired from that moment.
        assert_eq!(
            at(&keys, 160),
            vec![
                KeyState::Retired {
                    since: 160,
                    published_until: 160 + RETENTION
                },
                KeyState::Active { since: 160 }
            ]
        );
        // Once its tokens have expired, the old key is no longer published.
        assert_eq!(at(&keys, 160 + RETENTION)[0], KeyState::Expired);
        assert!(!KeyState::Expired.is_published());
    }

    #[test]
    fn algorithms_are_independent() {
        let keys = [
            ("e1", "ES256", t(0, 0)),
            ("r1", "RS256", t(0, 0)),
            ("e2", "ES256", t(10, 10)),
        ];
        let s = at(&keys, 20);
        assert_eq!(s[1], KeyState::Active { since: 0 });
        assert_eq!(s[2], KeyState::Active { since: 10 });
        assert_eq!(s[0].name(), "retired");
    }

    #[test]
    fn a_revoked_key_is_withdrawn_whatever_its_times() {
        let mut revoked = t(0, 0);
        revoked.revoked_at = Some(50);
        let keys = [("bad", "ES256", revoked), ("repl", "ES256", t(50, 50))];
        let s = at(&keys, 60);
        assert_eq!(s[0], KeyState::Revoked { at: 50 });
        assert!(!s[0].is_published());
        assert_eq!(s[1], KeyState::Active { since: 50 });
        // A revoked pending key never activates; the current key keeps signing.
        let mut pending = t(10, 100);
        pending.revoked_at = Some(20);
        let keys = [("cur", "ES256", t(0, 0)), ("p", "ES256", pending)];
        assert_eq!(
            at(&keys, 200),
            vec![KeyState::Active { since: 0 }, KeyState::Revoked { at: 20 }]
        );
    }

    #[test]
    fn a_revoked_successor_does_not_count_as_the_replacement() {
        // old → mid (revoked) → repl: old was replaced when repl activated as far as
        // anyone can tell now; it stays published at least that long.
        let mut mid = t(10, 10);
        mid.revoked_at = Some(30);
        let keys = [
            ("old", "ES256", t(0, 0)),
            ("mid", "ES256", mid),
            ("repl", "ES256", t(30, 30)),
        ];
        let s = at(&keys, 40);
        assert_eq!(
            s[0],
            KeyState::Retired {
                since: 30,
                published_until: 30 + RETENTION
            }
        );
        assert_eq!(s[2], KeyState::Active { since: 30 });
    }

    #[test]
    fn keys_retired_before_this_scheme_keep_their_stored_times() {
        let mut legacy = t(0, 0);
        legacy.retired_at = Some(10);
        legacy.expires_at = Some(500);
        let keys = [("legacy", "RS256", legacy), ("cur", "RS256", t(10, 10))];
        assert_eq!(
            at(&keys, 20)[0],
            KeyState::Retired {
                since: 10,
                published_until: 500
            }
        );
        assert_eq!(at(&keys, 500)[0], KeyState::Expired);
    }

    #[test]
    fn simultaneous_activations_agree_on_one_key() {
        let keys = [("b", "ES256", t(0, 5)), ("a", "ES256", t(0, 5))];
        let s = at(&keys, 5);
        assert_eq!(s[0], KeyState::Active { since: 5 });
        assert_eq!(s[1].name(), "retired");
        // Whatever order the rows come in.
        let rev = [keys[1], keys[0]];
        assert_eq!(at(&rev, 5)[1], KeyState::Active { since: 5 });
    }

    #[test]
    fn rotation_is_due_once_per_algorithm_and_never_while_one_is_pending() {
        let keys = [
            ("e", "ES256", t(0, 0)),
            ("r", "RS256", t(0, 0)),
            ("p", "RS256", t(90, 200)),
        ];
        let f = facts(&keys);
        let s = states(&f, 100, RETENTION);
        assert_eq!(due_for_rotation(&f, &s, 100, 100), vec![0]);
        assert!(due_for_rotation(&f, &s, 100, 101).is_empty(), "not old yet");
        assert!(due_for_rotation(&f, &s, 100, 0).is_empty(), "off");
    }
}
