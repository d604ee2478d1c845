//! Rate limits on the token endpoint, per client and per address, kept in memory by each
//! replica: issuing a token must not wait for a database write, so these counters are not
//! shared (N replicas allow N times the limit). The throttles that must hold across replicas
//! (sign-in, device codes, registration) are in [`super::authn::throttle`].
//!
//! Fixed one-minute windows ([`WindowCounts`]).

use std::net::IpAddr;

use super::window_counts::WindowCounts;
use crate::config::RateLimitConfig;
use crate::error::OAuthError;

const WINDOW_SECS: i64 = 60;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Client(String),
    Address(IpAddr),
}

/// The limits and their counters.
pub struct RequestLimits {
    per_client: u32,
    per_address: u32,
    counts: WindowCounts<Key>,
}

impl RequestLimits {
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            per_client: config.token_per_client,
            per_address: config.token_per_address,
            counts: WindowCounts::new(WINDOW_SECS),
        }
    }

    /// Count a token request from `addr`; refused over the per-address limit.
    pub fn address(&self, addr: Option<IpAddr>, now: i64) -> Result<(), OAuthError> {
        match addr {
            Some(a) => self.hit(
                Key::Address(a),
                self.per_address,
                now,
                "token requests from this address",
            ),
            None => Ok(()),
        }
    }

    /// Count a token request by the authenticated `client_id`; refused over the per-client
    /// limit. (Counted after authentication, so nobody can use up another client's
    /// allowance by sending its id.)
    pub fn client(&self, client_id: &str, now: i64) -> Result<(), OAuthError> {
        self.hit(
            Key::Client(client_id.to_string()),
            self.per_client,
            now,
            "token requests by this client",
        )
    }

    fn hit(&self, key: Key, limit: u32, now: i64, what: &str) -> Result<(), OAuthError> {
        if limit == 0 {
            return Ok(());
        }
        if self.counts.add(key, now) > limit {
            let retry_after = self.counts.retry_after(now) as u64;
            return Err(OAuthError::rate_limited(what, retry_after));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_per_key_and_reset_with_the_window() {
        let limits = RequestLimits::new(&RateLimitConfig {
            token_per_client: 3,
            token_per_address: 0,
        });
        let t = 6000;
        for _ in 0..3 {
            assert!(limits.client("a", t).is_ok());
        }
        let e = limits.client("a", t + 30).expect_err("over");
        assert_eq!(e.status, http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.retry_after, Some(30));
        assert!(limits.client("b", t).is_ok(), "another client has its own");
        assert!(limits.client("a", t + 60).is_ok(), "a new window");
        let ip: IpAddr = "203.0.113.1".parse().expect("ip");
        for _ in 0..100 {
            assert!(limits.address(Some(ip), t).is_ok(), "0 turns a limit off");
        }
    }
}
