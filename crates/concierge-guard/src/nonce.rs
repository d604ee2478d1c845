//! DPoP nonces issued by the resource server (RFC 9449 §9): stateless, made
//! from a secret and the current time period, so any replica sharing the
//! secret accepts them.

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Makes and checks nonces. A nonce is the period number and a MAC of it;
/// the nonce of the current period and of the one before are accepted, so a
/// nonce lives between one and two periods.
pub(crate) struct Nonces {
    key: hmac::Key,
    period: i64,
}

impl Nonces {
    /// With `secret` (shared by replicas) and a period in seconds (at least 1).
    pub(crate) fn new(secret: &[u8], period: i64) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            period: period.max(1),
        }
    }

    fn tag(&self, epoch: i64) -> String {
        let mac = hmac::sign(&self.key, &epoch.to_be_bytes());
        URL_SAFE_NO_PAD.encode(&mac.as_ref()[..16])
    }

    /// The nonce to hand out at `now` (Unix seconds).
    pub(crate) fn current(&self, now: i64) -> String {
        let epoch = now.div_euclid(self.period);
        format!("{epoch}.{}", self.tag(epoch))
    }

    /// Was `nonce` issued by us in this period or the previous one?
    pub(crate) fn accepts(&self, nonce: &str, now: i64) -> bool {
        let Some((epoch, tag)) = nonce.split_once('.') else {
            return false;
        };
        let Ok(epoch) = epoch.parse::<i64>() else {
            return false;
        };
        let current = now.div_euclid(self.period);
        if epoch != current && epoch != current - 1 {
            return false;
        }
        let Ok(tag) = URL_SAFE_NO_PAD.decode(tag) else {
            return false;
        };
        let mac = hmac::sign(&self.key, &epoch.to_be_bytes());
        tag.len() == 16
            && aws_lc_rs::constant_time::verify_slices_are_equal(&mac.as_ref()[..16], &tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_live_one_to_two_periods_and_need_the_secret() {
        let n = Nonces::new(b"secret", 60);
        let at = 1_800_000_010;
        let nonce = n.current(at);
        assert!(n.accepts(&nonce, at));
        assert!(
            n.accepts(&nonce, at + 60),
            "the next period still accepts it"
        );
        assert!(
            !n.accepts(&nonce, at + 120),
            "two periods later it is stale"
        );
        assert!(!n.accepts(&nonce, at - 60), "not from the future");
        assert!(!Nonces::new(b"other", 60).accepts(&nonce, at));
        let (epoch, tag) = nonce.split_once('.').unwrap();
        let forged = format!("{}.{tag}", epoch.parse::<i64>().unwrap() + 1);
        assert!(!n.accepts(&forged, at + 60));
        for garbage in ["", ".", "x.y", "1", "1.", &format!("{epoch}.AAAA")] {
            assert!(!n.accepts(garbage, at), "{garbage:?}");
        }
    }
}
