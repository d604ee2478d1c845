//! The clock, and — with the `exchange` or `introspection` feature — the
//! resource server as an OAuth client of its issuer.

use std::time::{SystemTime, UNIX_EPOCH};

#[cfg(any(feature = "exchange", feature = "introspection"))]
pub use crate::credentials::ClientCredentials;
#[cfg(any(feature = "exchange", feature = "introspection"))]
pub(crate) use crate::credentials::{Answer, post_form};

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
