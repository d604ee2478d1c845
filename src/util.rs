//! Small helpers shared across modules: time, randomness, hashing, constant-time compare, and
//! a future run with a task-local value ([`run_with`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `n` random bytes from the system CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // aws-lc's RNG only fails if the OS entropy source is gone; there is no safe fallback.
    if aws_lc_rs::rand::fill(&mut buf).is_err() {
        std::process::abort();
    }
    buf
}

/// A 256-bit random secret, base64url without padding (43 characters).
pub fn random_secret() -> String {
    b64(&random_bytes::<32>())
}

/// A 128-bit random identifier, base64url without padding (22 characters).
pub fn random_id() -> String {
    b64(&random_bytes::<16>())
}

/// Bytes of the issue-time prefix of [`ordered_secret`] and [`ordered_id`].
const ORDER_PREFIX: usize = 8;

/// `N` bytes: the issue-time prefix (microseconds since the Unix epoch, big-endian), then
/// random bytes. Values made one after another sort one after another.
fn ordered_bytes<const N: usize>() -> [u8; N] {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let mut bytes = random_bytes::<N>();
    bytes[..ORDER_PREFIX].copy_from_slice(&micros.to_be_bytes());
    bytes
}

/// A secret the server stores by [`secret_key`] and looks up on every use (an authorization
/// code, a refresh token, a device code, a back-channel request's id, a session cookie): 8
/// bytes of its issue time, then 256 random bits, base64url without padding (54 characters).
///
/// The prefix is for the store. Keyed by a hash alone, each new secret lands on a random page
/// of its table's index; with 10⁶ stored grants that page is seldom in memory, so writing a
/// code or a refresh token read and rewrote one more page per index (issue 17.2: code
/// redemption at 0.86 of an empty store on SQLite, 0.96 keyed this way). Keyed behind the
/// prefix, new secrets go to the index's last pages, which stay in memory, and a lookup of a
/// recent one reads them too. The prefix tells only when the secret was issued, which its
/// holder knows already; its strength is the 256 random bits, as before.
pub fn ordered_secret() -> String {
    b64(&ordered_bytes::<{ ORDER_PREFIX + 32 }>())
}

/// An identifier that sorts by when it was made, for ids the store indexes and a grant or a
/// sign-in adds one of (a refresh-token family's, a session's `sid`): 8 bytes of its issue
/// time, then 128 random bits, base64url (32 characters).
pub fn ordered_id() -> String {
    b64(&ordered_bytes::<{ ORDER_PREFIX + 16 }>())
}

/// A new secret to store and its key ([`secret_key`]): [`ordered_secret`] when `ordered`
/// (`tokens.ordered_secrets`), else [`random_secret`], the shape releases before issue 17.2's
/// change issued and still read.
pub fn stored_secret(ordered: bool) -> (String, Vec<u8>) {
    let secret = if ordered {
        ordered_secret()
    } else {
        random_secret()
    };
    let key = secret_key(&secret);
    (secret, key)
}

/// The key a secret is stored and looked up by, never the secret itself: for one from
/// [`ordered_secret`], its issue-time prefix then SHA-256 of the whole secret; for any other
/// (such as the 43-character secrets earlier releases issued, still stored under their hash),
/// SHA-256 alone. A presented value with a made-up prefix finds nothing: the hash after it
/// must match too.
pub fn secret_key(secret: &str) -> Vec<u8> {
    // base64url of 40 bytes; checked first so that nothing else is decoded.
    const ORDERED_LEN: usize = 54;
    let hash = secret_hash(secret);
    let bytes = (secret.len() == ORDERED_LEN)
        .then(|| b64_decode(secret))
        .flatten();
    match bytes {
        Some(bytes) if bytes.len() == ORDER_PREFIX + 32 => {
            [&bytes[..ORDER_PREFIX], &hash[..]].concat()
        }
        _ => hash,
    }
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `bytes` in lowercase hex (a webhook's signature; SQLite's `unhex()` reads it back).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]])
        .map(char::from)
        .collect()
}

pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// SHA-256 of a high-entropy secret. Stored secrets (client secrets, registration access
/// tokens, codes, refresh tokens) are 256-bit random, so a fast hash is the right tool
/// (a slow KDF adds nothing to 256 random bits); user passwords use argon2id instead.
pub fn secret_hash(secret: &str) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes())
        .as_ref()
        .to_vec()
}

/// Does `secret` hash to `stored`? Constant time in the compared bytes.
pub fn verify_secret(secret: &str, stored: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    let h = secret_hash(secret);
    h.len() == stored.len() && bool::from(h.ct_eq(stored))
}

/// Is the URL's host a loopback host (`localhost`, 127.0.0.0/8, `[::1]`)? RFC 8252 §7.3.
pub fn is_loopback_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// RFC 3339 rendering of a Unix time, for CLI listings.
pub fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// Write `contents` to `path`, readable by its owner only (0600) whether or not it existed:
/// written to a new file beside it, then renamed over it, so a reader never sees half.
pub fn write_private(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("not a file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", random_id()));
    let tmp = path.with_file_name(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut f| {
        f.write_all(contents)?;
        f.sync_all()
    });
    match written.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

pin_project_lite::pin_project! {
    /// What [`run_with`] returns.
    pub struct RunWith<T: 'static, F> {
        #[pin]
        inner: tokio::task::futures::TaskLocalFuture<T, F>,
    }
}

/// `fut` run with `value` as `key`'s, answering its output and the value as `fut` left it.
///
/// Tokio's `scope` keeps the value to itself; wrapping it in an `async fn` to read the value
/// back holds the future twice (the argument, and the moved copy awaited), and a stack of such
/// wrappers doubled in size at each one: the layer every request passes through
/// (`crate::http::front`) was a future of 30 KB, allocated and copied for every request (issue
/// 17.1). This polls the scope where it lies. The value is `None` only if something took it,
/// which nothing does.
pub fn run_with<T: 'static, F: Future>(
    key: &'static tokio::task::LocalKey<T>,
    value: T,
    fut: F,
) -> RunWith<T, F> {
    RunWith {
        inner: key.scope(value, fut),
    }
}

impl<T: 'static, F: Future> Future for RunWith<T, F> {
    type Output = (F::Output, Option<T>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut inner = self.project().inner;
        let out = ready!(inner.as_mut().poll(cx));
        Poll::Ready((out, inner.take_value()))
    }
}

/// A future that holds 4 KiB across its wait: for tests that a wrapper does not copy what it
/// wraps.
#[cfg(test)]
pub(crate) async fn large_future() -> usize {
    let buffer = [7u8; 4096];
    tokio::task::yield_now().await;
    buffer.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_and_distinct() {
        let a = random_secret();
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_secret());
        assert_eq!(random_id().len(), 22);
    }

    #[test]
    fn ordered_secrets_sort_by_issue_and_are_keyed_behind_their_prefix() {
        let a = ordered_secret();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = ordered_secret();
        assert_eq!(a.len(), 54);
        assert_eq!(ordered_id().len(), 32);
        let (ka, kb) = (secret_key(&a), secret_key(&b));
        assert_eq!(ka.len(), 40);
        assert!(ka < kb, "a later secret sorts after an earlier one");
        assert_eq!(ka[..8], b64_decode(&a).unwrap()[..8]);
        assert_eq!(ka[8..], secret_hash(&a)[..]);
        // A secret of an earlier release, or anything else, is keyed by its hash alone.
        let old = random_secret();
        assert_eq!(secret_key(&old), secret_hash(&old));
        let not_base64 = "not base64 but 54 characters long, more or less!!!!!!!";
        assert_eq!(secret_key(not_base64), secret_hash(not_base64));
        // Another secret's prefix in front of this one's random part is a different key.
        let mut forged = b64_decode(&a).unwrap();
        forged[..8].copy_from_slice(&b64_decode(&b).unwrap()[..8]);
        assert_ne!(secret_key(&b64(&forged)), ka);
        assert_ne!(secret_key(&b64(&forged)), kb);
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_the_owners_only_even_when_replacing_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export.json");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }

    #[test]
    fn verify_secret_matches_only_the_same_secret() {
        let h = secret_hash("s3cret");
        assert!(verify_secret("s3cret", &h));
        assert!(!verify_secret("s3cres", &h));
        assert!(!verify_secret("s3cret", &h[..31]));
    }

    tokio::task_local! {
        static SEEN: std::cell::Cell<u32>;
    }

    #[tokio::test]
    async fn run_with_answers_the_value_the_future_left() {
        let (out, seen) = run_with(&SEEN, std::cell::Cell::new(1), async {
            tokio::task::yield_now().await;
            SEEN.with(|s| s.set(s.get() + 41));
            "done"
        })
        .await;
        assert_eq!(out, "done");
        assert_eq!(seen.map(std::cell::Cell::into_inner), Some(42));
    }

    /// The reason it exists: wrapping a future costs a few bytes, not the future again (an
    /// `async fn` taking it held it twice).
    #[test]
    fn run_with_holds_the_future_once() {
        let big = large_future();
        let inner = std::mem::size_of_val(&big);
        let wrapped = run_with(&SEEN, std::cell::Cell::new(0), big);
        assert!(inner >= 4096);
        assert!(std::mem::size_of_val(&wrapped) < inner + 64);
    }
}
