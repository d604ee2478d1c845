//! JSON deliveries to an operator's endpoint (audit events to a SIEM or an OpenTelemetry
//! collector), signed when a secret is shared, retried.
//!
//! Each delivery is a `POST` of a JSON body with:
//! - `Concierge-Delivery`: an id, the same on every retry of one delivery (for deduplication);
//! - with a shared secret, `Concierge-Signature: t=<unix seconds>,v1=<hex>`, where `v1` is
//!   HMAC-SHA256 under the secret of `"<t>.<body>"`. A receiver recomputes it, compares in
//!   constant time, and refuses a `t` too far from its clock (a replayed delivery);
//! - any headers the operator configured (a collector's `Authorization`).
//!
//! A 2xx answer is delivered. A network error, a timeout, a 408, a 429 or a 5xx is retried
//! with exponential backoff (1 s, 2 s, 4 s, …, at most [`Retry::max_delay`]) up to
//! [`Retry::attempts`] attempts; any other answer is final (the receiver refused the body,
//! and sending it again would not change its mind).

use std::time::Duration;

use aws_lc_rs::hmac;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "concierge-signature";
/// The delivery-id header.
pub const DELIVERY_HEADER: &str = "concierge-delivery";

/// Why a delivery did not arrive.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("the receiver refused the delivery with HTTP {0}")]
    Refused(u16),
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp { attempts: u32, last: String },
}

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 6,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl Retry {
    /// The wait before attempt `n` (1-based; none before the first).
    fn delay(&self, n: u32) -> Duration {
        if n <= 1 {
            return Duration::ZERO;
        }
        let factor = 2u32.saturating_pow(n - 2);
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// The `Concierge-Signature` value for `body` sent at `t` under `key`.
pub fn signature(key: &[u8], t: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    format!("t={t},v1={}", crate::util::hex(tag.as_ref()))
}

/// One configured receiver.
#[derive(Clone)]
pub struct Webhook {
    url: String,
    /// The HMAC key, when deliveries are signed.
    key: Option<Vec<u8>>,
    headers: reqwest::header::HeaderMap,
    http: reqwest::Client,
    retry: Retry,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret or the headers (they may hold credentials).
        f.debug_struct("Webhook").field("url", &self.url).finish()
    }
}

/// A header the operator configured cannot be sent.
#[derive(Debug, thiserror::Error)]
#[error("the header {0:?} is not a valid HTTP header")]
pub struct BadHeader(pub String);

impl Webhook {
    /// A receiver at `url`: deliveries signed with `secret` when there is one, carrying
    /// `headers`; each attempt times out after `timeout`.
    pub fn new(
        url: &str,
        secret: Option<&str>,
        headers: &std::collections::BTreeMap<String, String>,
        timeout: Duration,
        retry: Retry,
    ) -> Result<Self, BadHeader> {
        let mut map = reqwest::header::HeaderMap::new();
        for (name, value) in headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| BadHeader(name.clone()))?;
            let mut value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| BadHeader(name.to_string()))?;
            value.set_sensitive(true);
            map.insert(name, value);
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Ok(Self {
            url: url.to_string(),
            key: secret.map(|s| s.as_bytes().to_vec()),
            headers: map,
            http,
            retry,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Deliver `body` (JSON), retrying as the module says. Returns how many attempts it took.
    pub async fn deliver(&self, body: Vec<u8>) -> Result<u32, WebhookError> {
        let delivery = crate::util::random_id();
        let mut last = String::new();
        for n in 1..=self.retry.attempts {
            tokio::time::sleep(self.retry.delay(n)).await;
            let mut req = self
                .http
                .post(&self.url)
                .headers(self.headers.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(DELIVERY_HEADER, &delivery);
            if let Some(key) = &self.key {
                req = req.header(SIGNATURE_HEADER, signature(key, crate::util::now(), &body));
            }
            let sent = req.body(body.clone()).send().await;
            match sent {
                Ok(res) if res.status().is_success() => return Ok(n),
                Ok(res) => {
                    let status = res.status().as_u16();
                    if !matches!(status, 408 | 429 | 500..=599) {
                        return Err(WebhookError::Refused(status));
                    }
                    last = format!("HTTP {status}");
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(WebhookError::GaveUp {
            attempts: self.retry.attempts,
            last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        // RFC 4231 test case 2's key and data, with "1." in front of the data (the value
        // computed independently, with Python's hmac module).
        let sig = signature(b"Jefe", 1, b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "t=1,v1=a9049465ce89cfb8e9aac62333abda66f80e3403f51f57f6bae3c3a4485eca38"
        );
        assert_ne!(sig, signature(b"Jefe", 2, b"what do ya want for nothing?"));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let r = Retry {
            attempts: 8,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
        };
        let delays: Vec<u64> = (1..=6).map(|n| r.delay(n).as_secs()).collect();
        assert_eq!(delays, [0, 1, 2, 4, 8, 10]);
    }
}
