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
    /// Client registrations from one address (RFC 7591).
    Registration(IpAddr),
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
        }
    }
}

/// Refused: try again after `retry_after` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: i64,
}

/// The limits of each bucket.
#[derive(Debug, Clone)]
pub struct Throttle {
    pub signin_user: Limit,
    pub signin_address: Limit,
    pub device_code_guess: Limit,
    pub device_authorization: Limit,
    pub registration: Limit,
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
        }
    }

    fn limit(&self, bucket: &Bucket<'_>) -> Limit {
        match bucket {
            Bucket::SigninUser(_) => self.signin_user,
            Bucket::SigninAddress(_) => self.signin_address,
            Bucket::DeviceCodeGuess(_) => self.device_code_guess,
            Bucket::DeviceAuthorization(_) => self.device_authorization,
            Bucket::Registration(_) => self.registration,
        }
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
    use super::*;

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
            Bucket::DeviceCodeGuess(Some(ip)).key(),
            Bucket::DeviceAuthorization(Some(ip)).key()
        );
    }
}
