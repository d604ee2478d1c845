//! The throttle policy: one implementation for every place that limits how often something
//! may be tried (sign-in, guessing device user codes, device authorization requests,
//! registration). Counters live in the database ([`RateLimitStore`]), so replicas share them.
//!
//! Attempts are counted *before* the check they guard runs ([`Throttle::attempt`],
//! [`Throttle::signin_attempt`]): forty concurrent wrong passwords for one user get no more
//! verifications than forty sequential ones would, because each takes its number first and
//! only the first few numbers go on.
//!
//! Sign-in is throttled so that guessing slows down without the right password ever being
//! refused for good (the `[signin]` configuration section):
//!
//! - **Per username**, from any address: the first `user_free_failures` attempts go on at
//!   once; each further one must wait `user_delay_secs` after the previous attempt, doubling
//!   with every failure up to `user_max_delay_secs` ([`BackoffPolicy`]). An attempt inside
//!   the wait is refused without its password being checked; one after it is checked, and a
//!   correct password signs in and forgets the failures. An operator can forget them at once
//!   ([`unlock`]: `concierge user unlock`, `POST /admin/v1/users/{id}/unlock`).
//! - **Per address, against password spraying**: failures are counted per (address,
//!   username), and the address counts the distinct usernames that failed from it. Once
//!   `address_max_usernames` have failed within `address_window_secs`, the address may not
//!   try again any username that failed from it in the window, until the window ends
//!   ([`spray_refuses`]). A username that did not fail from the address is never refused by
//!   this guard: failures for one user never throttle another user from the same address,
//!   and a user sharing an address with an attacker (a NAT, a proxy) who types the right
//!   password gets in. Each sprayed username is meanwhile still under its own per-username
//!   delays, which is what bounds the guesses any account gets.

use std::net::IpAddr;

use crate::config::{RegistrationConfig, SigninConfig};
use crate::store::{Backoff, Counted, RateLimitStore, RegistrationCount, StoreError};

/// At most `max` in `window_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub max: i64,
    pub window_secs: i64,
}

/// What is being counted, and for whom. The bucket names are made here only.
///
/// Sign-in buckets name a username by its keyed digest (`Kek::bucket_digest`), never as
/// typed: what was typed may be a password in the wrong field.
#[derive(Debug, Clone, Copy)]
pub enum Bucket<'a> {
    /// Sign-in attempts for one username (a [`Backoff`] record, not a window).
    SigninUser(&'a str),
    /// Failed sign-ins for one username from one address.
    SigninAddressUser(Option<IpAddr>, &'a str),
    /// Distinct usernames that failed to sign in from one address.
    SigninAddress(Option<IpAddr>),
    /// Wrong user codes typed from one address (RFC 8628 §5.1).
    DeviceCodeGuess(Option<IpAddr>),
    /// Device authorization requests from one address.
    DeviceAuthorization(Option<IpAddr>),
    /// Backchannel authentication (CIBA) requests by one client.
    Backchannel(&'a str),
    /// Client registrations from one address (RFC 7591) with metadata it has not
    /// registered in the window.
    Registration(IpAddr),
    /// Registrations from one address repeating metadata it registered in the window.
    RegistrationIdentical(IpAddr),
    /// That one address registered metadata with this fingerprint in the window.
    RegistrationSeen(IpAddr, &'a str),
}

/// The prefix of every [`Bucket::SigninAddressUser`] of one username (for [`unlock`]).
fn signin_address_user_prefix(user: &str) -> String {
    format!("signin-fail:addr-user:{user}:")
}

impl Bucket<'_> {
    fn key(&self) -> String {
        let addr = |a: &Option<IpAddr>| a.map(|a| a.to_string()).unwrap_or_default();
        match self {
            Self::SigninUser(u) => format!("signin-fail:user:{u}"),
            Self::SigninAddressUser(a, u) => {
                format!("{}{}", signin_address_user_prefix(u), addr(a))
            }
            Self::SigninAddress(a) => format!("signin-fail:addr:{}", addr(a)),
            Self::DeviceCodeGuess(a) => format!("device-code-wrong:{}", addr(a)),
            Self::DeviceAuthorization(a) => format!("device-authorization:{}", addr(a)),
            Self::Backchannel(c) => format!("backchannel:{c}"),
            Self::Registration(a) => format!("register:{a}"),
            Self::RegistrationIdentical(a) => format!("register-identical:{a}"),
            Self::RegistrationSeen(a, fingerprint) => format!("register-seen:{a}:{fingerprint}"),
        }
    }
}

impl Limit {
    /// May the attempt that made a window's count `hits` go on?
    fn admits(self, hits: i64) -> Result<(), Throttled> {
        if hits > self.max {
            Err(Throttled {
                retry_after: self.window_secs,
            })
        } else {
            Ok(())
        }
    }
}

/// Refused: try again after `retry_after` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: i64,
}

/// Which sign-in limit refused an attempt (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigninThrottled {
    /// The username's wait after its failures has not passed.
    User(Throttled),
    /// The address tried too many usernames, and this one already failed from it.
    Address(Throttled),
}

impl SigninThrottled {
    pub fn retry_after(self) -> i64 {
        match self {
            Self::User(t) | Self::Address(t) => t.retry_after,
        }
    }

    /// For the audit log.
    pub fn reason(self) -> &'static str {
        match self {
            Self::User(_) => "user_delay",
            Self::Address(_) => "address_usernames",
        }
    }
}

/// Which registration limit refused a registration (see [`Throttle::registration`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationThrottled {
    /// Too many registrations with distinct metadata.
    Distinct(Throttled),
    /// Too many repeats of metadata already registered.
    Identical(Throttled),
}

impl RegistrationThrottled {
    /// What was counted, for the error description.
    pub fn what(self) -> &'static str {
        match self {
            Self::Distinct(_) => "registrations with distinct metadata from this address",
            Self::Identical(_) => "identical registrations from this address",
        }
    }

    pub fn retry_after(self) -> i64 {
        match self {
            Self::Distinct(t) | Self::Identical(t) => t.retry_after,
        }
    }
}

/// Increasing waits between a username's sign-in attempts (the pure part of the per-user
/// throttle; the store only swaps records atomically).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Attempts counted before any wait.
    pub free: i64,
    /// The first wait, in seconds; each further failure doubles it.
    pub delay: i64,
    /// The longest wait.
    pub max_delay: i64,
    /// Failures are forgotten this long after the last counted attempt.
    pub reset: i64,
}

impl BackoffPolicy {
    /// How long after the last counted attempt the next may be made, with `failures`
    /// counted: none for the free ones, then `delay`, `2·delay`, `4·delay`, … up to
    /// `max_delay`.
    pub fn wait(&self, failures: i64) -> i64 {
        let doublings = failures.saturating_sub(self.free);
        if doublings < 0 {
            return 0;
        }
        let factor = 1_i64 << u32::try_from(doublings.min(62)).unwrap_or(62);
        self.delay.saturating_mul(factor).min(self.max_delay)
    }

    /// Decide an attempt at `now`, given the username's record: the record to store if it
    /// may go on (this attempt counted), or how long it must still wait.
    pub fn admit(&self, current: Option<Backoff>, now: i64) -> Result<Backoff, Throttled> {
        let live = current.filter(|b| now.saturating_sub(b.last_at) < self.reset);
        let Some(b) = live else {
            return Ok(Backoff {
                failures: 1,
                last_at: now,
            });
        };
        let wait = self.wait(b.failures);
        let ready_at = b.last_at.saturating_add(wait);
        if now < ready_at {
            // Never more than one whole wait, even if another replica's clock ran ahead.
            return Err(Throttled {
                retry_after: (ready_at - now).min(wait),
            });
        }
        Ok(Backoff {
            failures: b.failures.saturating_add(1),
            last_at: now,
        })
    }
}

/// The password-spraying guard's decision: an address that saw `distinct_usernames` fail
/// from it in the window may try a username again only if that username did not fail from
/// it, or if fewer than `max` did.
pub fn spray_refuses(failed_here: bool, distinct_usernames: i64, max: i64) -> bool {
    failed_here && distinct_usernames >= max
}

/// How often a sign-in attempt retries its compare-and-swap when concurrent attempts for
/// the same username keep winning; then it is refused (the others are being counted).
const SWAP_TRIES: usize = 16;

/// Forget a username's failed sign-ins, everywhere (`user` is its keyed digest). Returns
/// how many records there were.
pub async fn unlock(store: &dyn RateLimitStore, user: &str) -> Result<u64, StoreError> {
    let backoff = store.clear_backoff(&Bucket::SigninUser(user).key()).await?;
    let windows = store
        .clear_rate_limits_with_prefix(&signin_address_user_prefix(user))
        .await?;
    Ok(u64::from(backoff) + windows)
}

/// The limits of each bucket.
#[derive(Debug, Clone)]
pub struct Throttle {
    pub signin_user: BackoffPolicy,
    /// Distinct usernames failing from one address (the spraying guard).
    pub signin_address: Limit,
    pub device_code_guess: Limit,
    pub device_authorization: Limit,
    /// Approval requests (CIBA) one client may make: each may reach a person.
    pub backchannel: Limit,
    pub registration: Limit,
    pub registration_identical: Limit,
}

impl Throttle {
    pub fn new(signin: &SigninConfig, registration: &RegistrationConfig) -> Self {
        Self {
            signin_user: BackoffPolicy {
                free: i64::from(signin.user_free_failures),
                delay: i64::from(signin.user_delay_secs),
                max_delay: i64::from(signin.user_max_delay_secs),
                reset: i64::from(signin.user_failure_reset_secs),
            },
            signin_address: Limit {
                max: i64::from(signin.address_max_usernames),
                window_secs: i64::from(signin.address_window_secs),
            },
            device_code_guess: Limit {
                max: 10,
                window_secs: 600,
            },
            device_authorization: Limit {
                max: 60,
                window_secs: 600,
            },
            backchannel: Limit {
                max: 600,
                window_secs: 600,
            },
            registration: Limit {
                max: i64::from(registration.rate_limit_max),
                window_secs: i64::from(registration.rate_limit_window_secs),
            },
            registration_identical: Limit {
                max: i64::from(registration.rate_limit_identical_max),
                window_secs: i64::from(registration.rate_limit_window_secs),
            },
        }
    }

    fn limit(&self, bucket: &Bucket<'_>) -> Limit {
        match bucket {
            // Not windows of their own: these use the spraying guard's window.
            Bucket::SigninUser(_) | Bucket::SigninAddressUser(..) | Bucket::SigninAddress(_) => {
                self.signin_address
            }
            Bucket::DeviceCodeGuess(_) => self.device_code_guess,
            Bucket::DeviceAuthorization(_) => self.device_authorization,
            Bucket::Backchannel(_) => self.backchannel,
            Bucket::Registration(_) | Bucket::RegistrationSeen(..) => self.registration,
            Bucket::RegistrationIdentical(_) => self.registration_identical,
        }
    }

    /// Count a sign-in attempt for `user` (its keyed digest) from `addr` before its password
    /// is checked, and say whether it may go on (see the module documentation). The
    /// spraying guard only reads; the per-username record takes the attempt by an atomic
    /// swap, so concurrent attempts past the free ones get one check per wait.
    pub async fn signin_attempt(
        &self,
        store: &dyn RateLimitStore,
        user: &str,
        addr: Option<IpAddr>,
        now: i64,
    ) -> Result<Result<(), SigninThrottled>, StoreError> {
        let window = self.signin_address;
        let here = store
            .hits(
                &Bucket::SigninAddressUser(addr, user).key(),
                window.window_secs,
                now,
            )
            .await?;
        if here > 0 {
            let distinct = store
                .hits(&Bucket::SigninAddress(addr).key(), window.window_secs, now)
                .await?;
            if spray_refuses(true, distinct, window.max) {
                return Ok(Err(SigninThrottled::Address(Throttled {
                    retry_after: window.window_secs,
                })));
            }
        }
        let key = Bucket::SigninUser(user).key();
        for _ in 0..SWAP_TRIES {
            let current = store.backoff(&key).await?;
            match self.signin_user.admit(current, now) {
                Err(t) => return Ok(Err(SigninThrottled::User(t))),
                Ok(next) => {
                    if store.swap_backoff(&key, current, next).await? {
                        return Ok(Ok(()));
                    }
                }
            }
        }
        Ok(Err(SigninThrottled::User(Throttled { retry_after: 1 })))
    }

    /// The attempt's password was wrong (or the username unknown): count the failure
    /// against the address, once per distinct username in the window.
    pub async fn signin_failed(
        &self,
        store: &dyn RateLimitStore,
        user: &str,
        addr: Option<IpAddr>,
        now: i64,
    ) -> Result<(), StoreError> {
        let window = self.signin_address.window_secs;
        let here = store
            .hit(&Bucket::SigninAddressUser(addr, user).key(), window, now)
            .await?;
        if here == 1 {
            store
                .hit(&Bucket::SigninAddress(addr).key(), window, now)
                .await?;
        }
        Ok(())
    }

    /// The attempt's password was right: forget the username's failures, and that it failed
    /// from this address. (The address's count of distinct failing usernames stays.)
    pub async fn signin_succeeded(
        &self,
        store: &dyn RateLimitStore,
        user: &str,
        addr: Option<IpAddr>,
    ) -> Result<(), StoreError> {
        store.clear_backoff(&Bucket::SigninUser(user).key()).await?;
        store
            .clear_rate_limit(&Bucket::SigninAddressUser(addr, user).key())
            .await?;
        Ok(())
    }

    /// The count a registration from `addr`, whose validated metadata has `fingerprint`,
    /// makes in the write that stores its client (RFC 7591 §3 leaves limits on registration
    /// to the server; [`RegistrationCount`] says how it counts).
    ///
    /// Hosted agents register one client per user from a few shared egress addresses, with
    /// identical metadata each time: a registration repeating metadata the address registered
    /// in the window counts against `registration_identical`; one with metadata not seen from
    /// the address counts against `registration`, and only when admitted is its metadata
    /// remembered as seen, so a refused registration stays refused when sent again. Two
    /// concurrent first registrations of one metadata may both count as distinct: the safe
    /// side. Every registration from an address is thus bounded by the sum of both limits.
    pub fn registration(&self, addr: IpAddr, fingerprint: &str, now: i64) -> RegistrationCount {
        let (again, first) = (self.registration_identical, self.registration);
        RegistrationCount {
            seen: Bucket::RegistrationSeen(addr, fingerprint).key(),
            again: Bucket::RegistrationIdentical(addr).key(),
            first: Bucket::Registration(addr).key(),
            // Both limits count in windows of one length (`rate_limit_window_secs`), which
            // the store's one statement for the look and the count needs.
            window_secs: first.window_secs,
            now,
            max_again: again.max,
            max_first: first.max,
        }
    }

    /// Whether a registration whose `count` made `counted` went on, and if not, which limit
    /// refused it (the store stored its client only if it went on).
    pub fn registration_verdict(
        &self,
        count: &RegistrationCount,
        counted: Counted,
    ) -> Result<(), RegistrationThrottled> {
        if count.admits(counted) {
            return Ok(());
        }
        let throttled = Throttled {
            retry_after: count.window_secs,
        };
        Err(if counted.repeated {
            RegistrationThrottled::Identical(throttled)
        } else {
            RegistrationThrottled::Distinct(throttled)
        })
    }

    /// Count an attempt, then say whether it may go on: the count comes first, so concurrent
    /// attempts cannot all pass a check made before any of them was counted.
    pub async fn attempt(
        &self,
        store: &dyn RateLimitStore,
        bucket: Bucket<'_>,
        now: i64,
    ) -> Result<Result<(), Throttled>, StoreError> {
        let limit = self.limit(&bucket);
        let n = store.hit(&bucket.key(), limit.window_secs, now).await?;
        Ok(limit.admits(n))
    }

    /// Is the bucket already full? For failures counted only after the fact (a wrong user
    /// code is known to be wrong only once it was looked up).
    pub async fn is_full(
        &self,
        store: &dyn RateLimitStore,
        bucket: Bucket<'_>,
        now: i64,
    ) -> Result<Option<Throttled>, StoreError> {
        let limit = self.limit(&bucket);
        let n = store.hits(&bucket.key(), limit.window_secs, now).await?;
        Ok((n >= limit.max).then_some(Throttled {
            retry_after: limit.window_secs,
        }))
    }

    /// Count a failure after the fact (see [`Throttle::is_full`]).
    pub async fn failed(
        &self,
        store: &dyn RateLimitStore,
        bucket: Bucket<'_>,
        now: i64,
    ) -> Result<(), StoreError> {
        let limit = self.limit(&bucket);
        store.hit(&bucket.key(), limit.window_secs, now).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;

    /// The fixed windows and swapped records of `store::rate_limits`, in memory.
    #[derive(Default)]
    struct Windows {
        windows: Mutex<HashMap<String, (i64, i64)>>,
        backoffs: Mutex<HashMap<String, Backoff>>,
    }

    #[async_trait]
    impl RateLimitStore for Windows {
        async fn hit(&self, bucket: &str, window_secs: i64, now: i64) -> Result<i64, StoreError> {
            let mut m = self.windows.lock().expect("lock");
            let e = m.entry(bucket.to_string()).or_insert((now, 0));
            if e.0 <= now - window_secs {
                *e = (now, 0);
            }
            e.1 += 1;
            Ok(e.1)
        }
        async fn purge_rate_limits(&self, _before: i64) -> Result<u64, StoreError> {
            Ok(0)
        }
        async fn hits(&self, bucket: &str, window_secs: i64, now: i64) -> Result<i64, StoreError> {
            let m = self.windows.lock().expect("lock");
            Ok(m.get(bucket)
                .filter(|e| e.0 > now - window_secs)
                .map_or(0, |e| e.1))
        }
        async fn clear_rate_limit(&self, bucket: &str) -> Result<bool, StoreError> {
            Ok(self.windows.lock().expect("lock").remove(bucket).is_some())
        }
        async fn clear_rate_limits_with_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
            let mut m = self.windows.lock().expect("lock");
            let before = m.len();
            m.retain(|k, _| !k.starts_with(prefix));
            Ok((before - m.len()) as u64)
        }
        async fn backoff(&self, bucket: &str) -> Result<Option<Backoff>, StoreError> {
            Ok(self.backoffs.lock().expect("lock").get(bucket).copied())
        }
        async fn swap_backoff(
            &self,
            bucket: &str,
            expected: Option<Backoff>,
            next: Backoff,
        ) -> Result<bool, StoreError> {
            let mut m = self.backoffs.lock().expect("lock");
            if m.get(bucket).copied() != expected {
                return Ok(false);
            }
            m.insert(bucket.to_string(), next);
            Ok(true)
        }
        async fn clear_backoff(&self, bucket: &str) -> Result<bool, StoreError> {
            Ok(self.backoffs.lock().expect("lock").remove(bucket).is_some())
        }
        async fn purge_backoffs(&self, _before: i64) -> Result<u64, StoreError> {
            Ok(0)
        }
    }

    fn throttle(distinct: u32, identical: u32) -> Throttle {
        Throttle::new(
            &SigninConfig::default(),
            &RegistrationConfig {
                rate_limit_max: distinct,
                rate_limit_identical_max: identical,
                rate_limit_window_secs: 600,
                ..RegistrationConfig::default()
            },
        )
    }

    fn signin_throttle(free: u32, delay: u32, max_usernames: u32) -> Throttle {
        Throttle::new(
            &SigninConfig {
                user_free_failures: free,
                user_delay_secs: delay,
                user_max_delay_secs: 900,
                user_failure_reset_secs: 3600,
                address_max_usernames: max_usernames,
                address_window_secs: 600,
                ..SigninConfig::default()
            },
            &RegistrationConfig::default(),
        )
    }

    const POLICY: BackoffPolicy = BackoffPolicy {
        free: 3,
        delay: 10,
        max_delay: 900,
        reset: 3600,
    };

    #[test]
    fn waits_double_after_the_free_failures_up_to_the_cap() {
        let waits: Vec<i64> = (0..12).map(|f| POLICY.wait(f)).collect();
        assert_eq!(waits, [0, 0, 0, 10, 20, 40, 80, 160, 320, 640, 900, 900]);
        assert_eq!(POLICY.wait(i64::MAX), 900, "no overflow");
        assert_eq!(POLICY.wait(-1), 0);
    }

    #[test]
    fn an_attempt_after_its_wait_goes_on_and_one_inside_it_does_not() {
        let at = |failures, last_at| Some(Backoff { failures, last_at });
        // The first attempt, and the free ones, go on at once and are counted.
        assert_eq!(
            POLICY.admit(None, 100),
            Ok(Backoff {
                failures: 1,
                last_at: 100
            })
        );
        assert_eq!(POLICY.admit(at(2, 100), 100).map(|b| b.failures), Ok(3));
        // Three failures: the next waits 10 s after the last.
        assert_eq!(
            POLICY.admit(at(3, 100), 104),
            Err(Throttled { retry_after: 6 })
        );
        assert_eq!(
            POLICY.admit(at(3, 100), 110),
            Ok(Backoff {
                failures: 4,
                last_at: 110
            })
        );
        // Four: 20 s. A refused attempt is not counted, so it never pushes the wait further.
        assert_eq!(
            POLICY.admit(at(4, 110), 129),
            Err(Throttled { retry_after: 1 })
        );
        assert!(POLICY.admit(at(4, 110), 130).is_ok());
        // At the cap, still one attempt per 15 minutes: never refused for good.
        assert_eq!(
            POLICY.admit(at(40, 0), 899),
            Err(Throttled { retry_after: 1 })
        );
        assert!(POLICY.admit(at(40, 0), 900).is_ok());
        // Failures are forgotten `reset` after the last attempt.
        assert_eq!(POLICY.admit(at(40, 0), 3600).map(|b| b.failures), Ok(1));
        // A clock behind the record's (another replica) never asks for more than one wait.
        assert_eq!(
            POLICY.admit(at(3, 1000), 0),
            Err(Throttled { retry_after: 10 })
        );
    }

    #[test]
    fn the_spraying_guard_spares_usernames_that_did_not_fail_here() {
        assert!(!spray_refuses(false, 1000, 30));
        assert!(!spray_refuses(true, 29, 30));
        assert!(spray_refuses(true, 30, 30));
    }

    #[tokio::test]
    async fn a_username_waits_longer_and_the_right_password_resets_it() {
        let (t, store) = (signin_throttle(2, 10, 30), Windows::default());
        let ip: Option<IpAddr> = "203.0.113.9".parse().ok();
        let attempt = |now| t.signin_attempt(&store, "alice-digest", ip, now);
        assert_eq!(attempt(0).await.unwrap(), Ok(()));
        assert_eq!(attempt(0).await.unwrap(), Ok(()));
        let refused = attempt(5).await.unwrap().expect_err("waits");
        assert_eq!(refused, SigninThrottled::User(Throttled { retry_after: 5 }));
        assert_eq!(refused.reason(), "user_delay");
        // Another username is not affected.
        assert_eq!(
            t.signin_attempt(&store, "bob", ip, 5).await.unwrap(),
            Ok(())
        );
        assert_eq!(attempt(10).await.unwrap(), Ok(()));
        assert!(attempt(29).await.unwrap().is_err(), "now 20 s");
        // The right password (after its wait) forgets everything.
        assert_eq!(attempt(30).await.unwrap(), Ok(()));
        t.signin_succeeded(&store, "alice-digest", ip)
            .await
            .unwrap();
        assert_eq!(attempt(30).await.unwrap(), Ok(()));
        assert_eq!(attempt(30).await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn a_burst_gets_the_free_attempts_and_no_more() {
        let (t, store) = (signin_throttle(3, 60, 30), Windows::default());
        let mut admitted = 0;
        for _ in 0..40 {
            admitted += usize::from(
                t.signin_attempt(&store, "u", None, 0)
                    .await
                    .unwrap()
                    .is_ok(),
            );
        }
        assert_eq!(admitted, 3);
    }

    #[tokio::test]
    async fn a_spraying_address_cannot_retry_what_failed_but_others_still_can() {
        let (t, store) = (signin_throttle(5, 10, 3), Windows::default());
        let ip: Option<IpAddr> = "203.0.113.9".parse().ok();
        let other: Option<IpAddr> = "203.0.113.10".parse().ok();
        // The same username failing again and again counts once.
        for _ in 0..3 {
            assert!(t.signin_attempt(&store, "u1", ip, 0).await.unwrap().is_ok());
            t.signin_failed(&store, "u1", ip, 0).await.unwrap();
        }
        assert!(t.signin_attempt(&store, "u1", ip, 0).await.unwrap().is_ok());
        for u in ["u2", "u3"] {
            assert!(t.signin_attempt(&store, u, ip, 1).await.unwrap().is_ok());
            t.signin_failed(&store, u, ip, 1).await.unwrap();
        }
        // Three distinct usernames failed: those are refused from here, others are not.
        let refused = t.signin_attempt(&store, "u2", ip, 2).await.unwrap();
        assert_eq!(
            refused,
            Err(SigninThrottled::Address(Throttled { retry_after: 600 }))
        );
        assert!(
            t.signin_attempt(&store, "bob", ip, 2)
                .await
                .unwrap()
                .is_ok()
        );
        assert!(
            t.signin_attempt(&store, "u2", other, 2)
                .await
                .unwrap()
                .is_ok()
        );
        // The window ends.
        assert!(
            t.signin_attempt(&store, "u2", ip, 601)
                .await
                .unwrap()
                .is_ok()
        );
    }

    #[tokio::test]
    async fn unlock_forgets_a_username_everywhere_and_nothing_else() {
        let (t, store) = (signin_throttle(1, 600, 1), Windows::default());
        let a: Option<IpAddr> = "203.0.113.9".parse().ok();
        let b: Option<IpAddr> = "2001:db8::1".parse().ok();
        for (user, ip) in [("alice", a), ("alice", b), ("alicia", a)] {
            let _ = t.signin_attempt(&store, user, ip, 0).await.unwrap();
            t.signin_failed(&store, user, ip, 0).await.unwrap();
        }
        assert!(
            t.signin_attempt(&store, "alice", a, 1)
                .await
                .unwrap()
                .is_err()
        );
        assert_eq!(
            unlock(&store, "alice").await.unwrap(),
            3,
            "a record, two windows"
        );
        assert_eq!(unlock(&store, "alice").await.unwrap(), 0);
        assert!(
            t.signin_attempt(&store, "alice", b, 1)
                .await
                .unwrap()
                .is_ok()
        );
        assert!(
            t.signin_attempt(&store, "alicia", a, 1)
                .await
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn a_registration_counts_against_the_limit_of_what_it_repeated() {
        let t = throttle(2, 3);
        let ip: IpAddr = "203.0.113.9".parse().expect("ip");
        let count = t.registration(ip, "fp", 7);
        assert_eq!(count.seen, Bucket::RegistrationSeen(ip, "fp").key());
        assert_eq!(count.again, Bucket::RegistrationIdentical(ip).key());
        assert_eq!(count.first, Bucket::Registration(ip).key());
        assert_eq!((count.now, count.window_secs), (7, 600));
        let verdict = |repeated, hits| t.registration_verdict(&count, Counted { repeated, hits });
        // Distinct metadata: two; identical: three, the limit's hit included.
        assert_eq!(verdict(false, 2), Ok(()));
        let refused = verdict(false, 3).expect_err("distinct limit");
        assert!(matches!(refused, RegistrationThrottled::Distinct(_)));
        assert_eq!(refused.retry_after(), 600);
        assert_eq!(verdict(true, 3), Ok(()));
        assert!(matches!(
            verdict(true, 4),
            Err(RegistrationThrottled::Identical(_))
        ));
    }

    #[test]
    fn buckets_are_named_apart() {
        let ip: IpAddr = "203.0.113.9".parse().expect("ip");
        let alice = Bucket::SigninUser("alice").key();
        assert_eq!(alice, "signin-fail:user:alice");
        assert_ne!(alice, Bucket::SigninUser("alice2").key());
        let here = Bucket::SigninAddressUser(Some(ip), "alice").key();
        assert!(here.starts_with(&signin_address_user_prefix("alice")));
        assert!(!here.starts_with(&signin_address_user_prefix("alic")));
        assert_eq!(
            Bucket::SigninAddress(Some(ip)).key(),
            "signin-fail:addr:203.0.113.9"
        );
        assert_eq!(Bucket::Registration(ip).key(), "register:203.0.113.9");
        assert_ne!(
            Bucket::Registration(ip).key(),
            Bucket::RegistrationIdentical(ip).key()
        );
        assert_ne!(
            Bucket::RegistrationSeen(ip, "fp1").key(),
            Bucket::RegistrationSeen(ip, "fp2").key()
        );
        assert_ne!(
            Bucket::DeviceCodeGuess(Some(ip)).key(),
            Bucket::DeviceAuthorization(Some(ip)).key()
        );
    }
}
