//! The throttle policy: one implementation for every place that limits how often something
//! may be tried (sign-in, guessing device user codes, device authorization requests,
//! registration). Counters live in the database ([`RateLimitStore`]), so replicas share them.
//!
//! Attempts are counted *before* the check they guard runs ([`Throttle::attempt`]): forty
//! concurrent wrong passwords for one user get no more verifications than forty sequential
//! ones would, because each takes its number first and only the first few numbers go on.

use std::net::IpAddr;

use crate::config::RegistrationConfig;
use crate::store::{RateLimitStore, StoreError};

/// At most `max` in `window_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub max: i64,
    pub window_secs: i64,
}

/// What is being counted, and for whom. The bucket names are made here only.
#[derive(Debug, Clone, Copy)]
pub enum Bucket<'a> {
    /// Sign-in attempts for one username.
    SigninUser(&'a str),
    /// Sign-in attempts from one address.
    SigninAddress(Option<IpAddr>),
    /// Wrong user codes typed from one address (RFC 8628 §5.1).
    DeviceCodeGuess(Option<IpAddr>),
    /// Device authorization requests from one address.
    DeviceAuthorization(Option<IpAddr>),
    /// Client registrations from one address (RFC 7591) with metadata it has not
    /// registered in the window.
    Registration(IpAddr),
    /// Registrations from one address repeating metadata it registered in the window.
    RegistrationIdentical(IpAddr),
    /// That one address registered metadata with this fingerprint in the window.
    RegistrationSeen(IpAddr, &'a str),
}

impl Bucket<'_> {
    fn key(&self) -> String {
        let addr = |a: &Option<IpAddr>| a.map(|a| a.to_string()).unwrap_or_default();
        match self {
            // Hashed: a username as typed may be long or hold what no store key can (NUL).
            Self::SigninUser(u) => format!(
                "signin-fail:user:{}",
                crate::util::b64(&crate::util::secret_hash(u))
            ),
            Self::SigninAddress(a) => format!("signin-fail:addr:{}", addr(a)),
            Self::DeviceCodeGuess(a) => format!("device-code-wrong:{}", addr(a)),
            Self::DeviceAuthorization(a) => format!("device-authorization:{}", addr(a)),
            Self::Registration(a) => format!("register:{a}"),
            Self::RegistrationIdentical(a) => format!("register-identical:{a}"),
            Self::RegistrationSeen(a, fingerprint) => format!("register-seen:{a}:{fingerprint}"),
        }
    }
}

/// Refused: try again after `retry_after` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: i64,
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

/// The limits of each bucket.
#[derive(Debug, Clone)]
pub struct Throttle {
    pub signin_user: Limit,
    pub signin_address: Limit,
    pub device_code_guess: Limit,
    pub device_authorization: Limit,
    pub registration: Limit,
    pub registration_identical: Limit,
}

impl Throttle {
    pub fn new(registration: &RegistrationConfig) -> Self {
        Self {
            signin_user: Limit {
                max: 5,
                window_secs: 900,
            },
            signin_address: Limit {
                max: 20,
                window_secs: 900,
            },
            device_code_guess: Limit {
                max: 10,
                window_secs: 600,
            },
            device_authorization: Limit {
                max: 60,
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
            Bucket::SigninUser(_) => self.signin_user,
            Bucket::SigninAddress(_) => self.signin_address,
            Bucket::DeviceCodeGuess(_) => self.device_code_guess,
            Bucket::DeviceAuthorization(_) => self.device_authorization,
            Bucket::Registration(_) | Bucket::RegistrationSeen(..) => self.registration,
            Bucket::RegistrationIdentical(_) => self.registration_identical,
        }
    }

    /// Count a registration from `addr` whose validated metadata has `fingerprint`, then say
    /// whether it may go on (RFC 7591 §3 leaves limits on registration to the server).
    ///
    /// Hosted agents register one client per user from a few shared egress addresses, with
    /// identical metadata each time: a registration repeating metadata the address registered
    /// in the window counts against `registration_identical`; one with metadata not seen from
    /// the address counts against `registration`, and only when admitted is its metadata
    /// remembered as seen, so a refused registration stays refused when sent again. Two
    /// concurrent first registrations of one metadata may both count as distinct: the safe
    /// side. Every registration from an address is thus bounded by the sum of both limits.
    pub async fn registration(
        &self,
        store: &dyn RateLimitStore,
        addr: IpAddr,
        fingerprint: &str,
        now: i64,
    ) -> Result<Result<(), RegistrationThrottled>, StoreError> {
        let seen = Bucket::RegistrationSeen(addr, fingerprint);
        let window = self.limit(&seen).window_secs;
        if store.hits(&seen.key(), window, now).await? > 0 {
            let r = self
                .attempt(store, Bucket::RegistrationIdentical(addr), now)
                .await?;
            return Ok(r.map_err(RegistrationThrottled::Identical));
        }
        let r = self.attempt(store, Bucket::Registration(addr), now).await?;
        if r.is_ok() {
            store.hit(&seen.key(), window, now).await?;
        }
        Ok(r.map_err(RegistrationThrottled::Distinct))
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
        Ok(if n > limit.max {
            Err(Throttled {
                retry_after: limit.window_secs,
            })
        } else {
            Ok(())
        })
    }

    /// Take back an attempt that turned out well (a correct password), so only failures
    /// accumulate.
    pub async fn forgive(
        &self,
        store: &dyn RateLimitStore,
        bucket: Bucket<'_>,
        now: i64,
    ) -> Result<(), StoreError> {
        let limit = self.limit(&bucket);
        store.forgive(&bucket.key(), limit.window_secs, now).await
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

    /// The fixed windows of `store::rate_limits`, in memory.
    #[derive(Default)]
    struct Windows(Mutex<HashMap<String, (i64, i64)>>);

    #[async_trait]
    impl RateLimitStore for Windows {
        async fn hit(&self, bucket: &str, window_secs: i64, now: i64) -> Result<i64, StoreError> {
            let mut m = self.0.lock().expect("lock");
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
            let m = self.0.lock().expect("lock");
            Ok(m.get(bucket)
                .filter(|e| e.0 > now - window_secs)
                .map_or(0, |e| e.1))
        }
        async fn forgive(&self, _: &str, _: i64, _: i64) -> Result<(), StoreError> {
            Ok(())
        }
    }

    fn throttle(distinct: u32, identical: u32) -> Throttle {
        Throttle::new(&RegistrationConfig {
            rate_limit_max: distinct,
            rate_limit_identical_max: identical,
            rate_limit_window_secs: 600,
            ..RegistrationConfig::default()
        })
    }

    #[tokio::test]
    async fn identical_registrations_count_apart_from_distinct_ones() {
        let (t, store) = (throttle(2, 3), Windows::default());
        let ip: IpAddr = "203.0.113.9".parse().expect("ip");
        let other: IpAddr = "203.0.113.10".parse().expect("ip");
        let reg = |fp: &'static str, addr: IpAddr, now: i64| {
            let (t, store) = (&t, &store);
            async move { t.registration(store, addr, fp, now).await.expect("store") }
        };
        // The first of a kind is distinct; three repeats are allowed, the fourth is not.
        assert_eq!(reg("a", ip, 0).await, Ok(()));
        for _ in 0..3 {
            assert_eq!(reg("a", ip, 1).await, Ok(()));
        }
        let refused = reg("a", ip, 2).await.expect_err("identical limit");
        assert!(matches!(refused, RegistrationThrottled::Identical(_)));
        assert_eq!(refused.retry_after(), 600);
        // Distinct ones have their own limit (two), and a refused one is not remembered as
        // registered: sending it again is still distinct, and still refused.
        assert_eq!(reg("b", ip, 3).await, Ok(()));
        for _ in 0..2 {
            assert!(matches!(
                reg("c", ip, 4).await,
                Err(RegistrationThrottled::Distinct(_))
            ));
        }
        // Another address counts on its own; a new window starts afresh.
        assert_eq!(reg("c", other, 5).await, Ok(()));
        assert_eq!(reg("c", ip, 700).await, Ok(()));
        assert_eq!(reg("c", ip, 701).await, Ok(()));
    }

    #[test]
    fn buckets_are_named_apart() {
        let ip: IpAddr = "203.0.113.9".parse().expect("ip");
        let alice = Bucket::SigninUser("alice").key();
        assert!(alice.starts_with("signin-fail:user:") && !alice.contains("alice"));
        assert_eq!(alice, Bucket::SigninUser("alice").key());
        assert_ne!(alice, Bucket::SigninUser("alice2").key());
        assert!(!Bucket::SigninUser("a\0b").key().contains('\0'));
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
