//! The id of the request being handled on this task, and the client a handler named, kept
//! in a task-local value that `crate::http::access` sets for each request, so code at any
//! layer (the error policy, the log formatter) can name the request it serves.

use std::sync::{Arc, Mutex};

use http::{HeaderMap, HeaderName};

/// The request- and response-header name.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest caller-supplied id we take.
const MAX_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: Arc<Current>;
}

/// What the request being handled on this task has told us so far.
#[derive(Debug)]
struct Current {
    id: RequestId,
    /// The client it concerns, once a handler knows ([`note_client`]).
    client: Mutex<Option<String>>,
}

/// A request's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// The caller's `X-Request-Id`, if there is exactly one and it is 1–128 characters of
    /// letters, digits and `-_.:/+=@` (nothing that could forge a log line); else a fresh id.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut values = headers.get_all(HEADER).iter();
        match (values.next(), values.next()) {
            (Some(v), None) => v
                .to_str()
                .ok()
                .filter(|s| is_plausible(s))
                .map_or_else(Self::fresh, |s| Self(s.into())),
            _ => Self::fresh(),
        }
    }

    /// 128 bits, base64url: the count of ids this process made, through SipHash (twice, told
    /// apart by a last byte) under a key drawn at random once per process. As with 128
    /// random bits, no two ids repeat in practice and no id tells another, nor how many
    /// requests the server answered (the count alone would). An id is no secret: drawing
    /// it from the random-number generator, a hardware draw each time, took 0.9% of the
    /// machine under the key set's load (issue 17.1).
    pub fn fresh() -> Self {
        use std::hash::BuildHasher;
        use std::sync::LazyLock;
        use std::sync::atomic::{AtomicU64, Ordering};
        static KEY: LazyLock<std::hash::RandomState> = LazyLock::new(Default::default);
        static MADE: AtomicU64 = AtomicU64::new(0);
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let mut bits = [0u8; 16];
        bits[..8].copy_from_slice(&KEY.hash_one((n, 0u8)).to_be_bytes());
        bits[8..].copy_from_slice(&KEY.hash_one((n, 1u8)).to_be_bytes());
        Self(crate::util::b64(&bits).into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_plausible(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(&b))
}

/// The id of the request being handled on this task, if any.
pub fn current() -> Option<RequestId> {
    CURRENT.try_with(|c| c.id.clone()).ok()
}

/// Name the client the request concerns, for the access log: handlers call it once they
/// know (the token endpoint after client authentication, the authorization endpoint, …),
/// whether they then succeed or fail. A client id the caller only claimed is logged as
/// claimed; control characters are dropped and it is cut at 256 characters, so no value
/// forges a line.
pub fn note_client(client_id: &str) {
    let _ = CURRENT.try_with(|c| {
        if let Ok(mut slot) = c.client.lock() {
            *slot = Some(
                client_id
                    .chars()
                    .filter(|ch| !ch.is_control())
                    .take(256)
                    .collect(),
            );
        }
    });
}

/// Run `fut` as the handling of the request `id`; returns its output and the client a
/// handler named ([`note_client`]).
///
/// A plain function, not an `async fn`: one would hold `fut` twice (`crate::util::run_with`).
pub fn scope<F: std::future::Future>(
    id: RequestId,
    fut: F,
) -> impl std::future::Future<Output = (F::Output, Option<String>)> {
    use futures_util::FutureExt;
    let current = Arc::new(Current {
        id,
        client: Mutex::new(None),
    });
    CURRENT.scope(current.clone(), fut).map(move |out| {
        let client = current.client.lock().ok().and_then(|c| c.clone());
        (out, client)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(HEADER, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_plausible_caller_id_is_kept() {
        let id = RequestId::from_headers(&headers(&["req-42_a.b:c/d+e=f@g"]));
        assert_eq!(id.as_str(), "req-42_a.b:c/d+e=f@g");
    }

    #[test]
    fn anything_else_gets_a_fresh_id() {
        let long = "a".repeat(MAX_LEN + 1);
        for h in [
            headers(&[]),
            headers(&[""]),
            headers(&["a b"]),
            headers(&["x\"y"]),
            headers(&[&long]),
            headers(&["one", "two"]),
        ] {
            let id = RequestId::from_headers(&h);
            assert_eq!(id.as_str().len(), 22, "{h:?}");
            assert!(is_plausible(id.as_str()));
        }
        assert_ne!(RequestId::fresh(), RequestId::fresh());
    }

    #[test]
    fn fresh_ids_do_not_repeat() {
        let ids: std::collections::HashSet<String> = (0..10_000)
            .map(|_| RequestId::fresh().as_str().to_string())
            .collect();
        assert_eq!(ids.len(), 10_000);
    }

    #[tokio::test]
    async fn current_is_the_id_of_the_task_in_scope() {
        assert_eq!(current(), None);
        let id = RequestId::fresh();
        let (seen, client) = scope(id.clone(), async {
            note_client("agent\nforged");
            current()
        })
        .await;
        assert_eq!(seen, Some(id));
        assert_eq!(client.as_deref(), Some("agentforged"));
    }
}
