//! Encryption of private signing keys at rest: AES-256-GCM under a key-encryption key (KEK),
//! with the key id as associated data so a ciphertext cannot be moved to another row.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use zeroize::Zeroizing;

use super::KeyError;
use crate::util;

const VERSION: u8 = 1;
/// The file the zero-configuration mode keeps its generated KEK in.
pub const KEK_FILE: &str = "key-encryption-key";

/// The key-encryption key. `Debug` never prints it.
pub struct Kek {
    key: LessSafeKey,
    /// HMAC key derived from the KEK for anti-forgery tokens: the same on every replica.
    csrf_key: aws_lc_rs::hmac::Key,
    /// HMAC key derived from the KEK for stateless DPoP nonces (RFC 9449 §8).
    dpop_nonce_key: aws_lc_rs::hmac::Key,
    /// HMAC key derived from the KEK for authorization requests carried between the steps
    /// of `/authorize` (sign-in, consent).
    request_key: aws_lc_rs::hmac::Key,
    /// HMAC key derived from the KEK for digests of values that must not be kept (an
    /// unknown username that may be a mistyped password), so the log cannot be searched with a
    /// dictionary.
    digest_key: aws_lc_rs::hmac::Key,
    /// First bytes of SHA-256(KEK), to tell "wrong KEK" from "corrupt row".
    fingerprint: String,
    /// Earlier KEKs, still accepted for opening (and for anti-forgery tokens) while a KEK
    /// rotation is under way; sealing always uses the current one.
    previous: Vec<Kek>,
    /// A KEK generated for the zero-configuration mode and not yet written to its file: it is
    /// written just before anything is sealed under it ([`Kek::ensure_saved`]), so a command
    /// that fails before then leaves no key file behind.
    unsaved: Mutex<Option<(PathBuf, Zeroizing<String>)>>,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kek(fingerprint {})", self.fingerprint)
    }
}

impl Kek {
    /// From base64 (url-safe or standard, padded or not) of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let bytes = Zeroizing::new(
            util::b64_decode(text.trim_end_matches('='))
                .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
                .ok_or_else(|| KeyError::Kek("is not base64".into()))?,
        );
        Self::from_bytes(&bytes)
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() != 32 {
            return Err(KeyError::Kek(format!(
                "must be 32 bytes, found {}",
                bytes.len()
            )));
        }
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| KeyError::Kek("rejected by AES-256-GCM".into()))?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
        // Purpose keys: HMAC(KEK, label), so one purpose's values never verify for another.
        let master = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, bytes);
        let derive = |label: &[u8]| {
            aws_lc_rs::hmac::Key::new(
                aws_lc_rs::hmac::HMAC_SHA256,
                aws_lc_rs::hmac::sign(&master, label).as_ref(),
            )
        };
        Ok(Self {
            key: LessSafeKey::new(unbound),
            csrf_key: derive(b"concierge csrf v1"),
            dpop_nonce_key: derive(b"concierge dpop nonce v1"),
            request_key: derive(b"concierge authorization request v1"),
            digest_key: derive(b"concierge log digest v1"),
            fingerprint: util::b64(&digest.as_ref()[..6]),
            previous: Vec::new(),
            unsaved: Mutex::new(None),
        })
    }

    /// Also accept these earlier KEKs (base64, like the current one) when opening.
    pub fn with_previous(mut self, previous: &[String]) -> Result<Self, KeyError> {
        for (i, text) in previous.iter().enumerate() {
            let kek = Self::from_base64(text).map_err(|e| {
                KeyError::Kek(format!("previous key-encryption key #{}: {e}", i + 1))
            })?;
            self.previous.push(kek);
        }
        Ok(self)
    }

    /// Was `sealed` sealed under the current KEK (rather than a previous one)?
    pub fn is_current(&self, kid: &str, sealed: &[u8]) -> bool {
        self.open_with_this(kid, sealed).is_ok()
    }

    /// The configured KEK, or the one in `<data_dir>/key-encryption-key`, generated there
    /// (mode 0600) when absent.
    pub fn load_or_create(configured: Option<&str>, data_dir: &Path) -> Result<Self, KeyError> {
        let kek = Self::load_or_generate(configured, data_dir)?;
        kek.ensure_saved()?;
        Ok(kek)
    }

    /// Like [`Kek::load_or_create`], but a generated KEK stays in memory until
    /// [`Kek::ensure_saved`]: callers save it only once they seal something under it.
    pub fn load_or_generate(configured: Option<&str>, data_dir: &Path) -> Result<Self, KeyError> {
        if let Some(text) = configured {
            return Self::from_base64(text);
        }
        let path = data_dir.join(KEK_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_base64(&text)
                .map_err(|e| KeyError::Kek(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let bytes = Zeroizing::new(util::random_bytes::<32>());
                let text = Zeroizing::new(util::b64(bytes.as_ref()));
                let kek = Self::from_bytes(bytes.as_ref())?;
                if let Ok(mut u) = kek.unsaved.lock() {
                    *u = Some((path, text));
                }
                Ok(kek)
            }
            Err(e) => Err(KeyError::Kek(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    /// Was this KEK generated just now, and not written to its file yet?
    pub fn is_unsaved(&self) -> bool {
        self.unsaved.lock().map(|u| u.is_some()).unwrap_or(false)
    }

    /// Write a generated KEK to its file (once). Call before sealing anything under it: a
    /// ciphertext must never outlive the only copy of its key.
    pub fn ensure_saved(&self) -> Result<(), KeyError> {
        let mut guard = self
            .unsaved
            .lock()
            .map_err(|_| KeyError::Kek("state poisoned".into()))?;
        if let Some((path, text)) = guard.as_ref() {
            write_private_file(path, text.as_bytes())
                .map_err(|e| KeyError::Kek(format!("cannot write {}: {e}", path.display())))?;
            *guard = None;
        }
        Ok(())
    }

    /// An anti-forgery token bound to `binding` (a browser id).
    pub fn csrf_token(&self, binding: &str) -> String {
        mac(&self.csrf_key, binding)
    }

    /// Is `token` the anti-forgery token of `binding`? Constant time.
    pub fn verify_csrf(&self, binding: &str, token: &str) -> bool {
        std::iter::once(self)
            .chain(&self.previous)
            .any(|k| verify_mac(&k.csrf_key, binding, token))
    }

    /// The DPoP nonce of time window `window` (RFC 9449 §8): the same on every replica.
    pub fn dpop_nonce(&self, window: i64) -> String {
        mac(&self.dpop_nonce_key, &window.to_string())
    }

    /// Is `nonce` the DPoP nonce of `window`? Constant time.
    pub fn verify_dpop_nonce(&self, window: i64, nonce: &str) -> bool {
        verify_mac(&self.dpop_nonce_key, &window.to_string(), nonce)
    }

    /// The tag that vouches for a carried authorization request's text.
    pub fn request_tag(&self, text: &str) -> String {
        mac(&self.request_key, text)
    }

    /// Is `tag` ours for `text`? Constant time; earlier KEKs too, so a rotation does not
    /// break sign-ins under way.
    pub fn verify_request_tag(&self, text: &str, tag: &str) -> bool {
        std::iter::once(self)
            .chain(&self.previous)
            .any(|k| verify_mac(&k.request_key, text, tag))
    }

    /// A short keyed digest of `text` for logs: the same text gives the same digest on
    /// every replica (until a KEK rotation), and without the KEK it reveals nothing, not even
    /// to a dictionary.
    pub fn log_digest(&self, text: &str) -> String {
        let mut d = mac(&self.digest_key, text);
        d.truncate(8);
        d
    }

    /// A keyed name for `text` in a stored key (sign-in throttle buckets name usernames as
    /// typed, which may be a password typed in the wrong field): stable across replicas
    /// sharing the KEK, and without the KEK no dictionary can reverse it.
    pub fn bucket_digest(&self, text: &str) -> String {
        mac(&self.digest_key, text)
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Encrypt under the current KEK, saving a generated one first.
    pub fn seal(&self, kid: &str, plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.ensure_saved()?;
        let nonce_bytes = util::random_bytes::<NONCE_LEN>();
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(kid.as_bytes()),
                &mut buf,
            )
            .map_err(|_| KeyError::Crypto("encryption failed".into()))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Open with the current KEK or, during a rotation, a previous one.
    pub fn open(&self, kid: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        match self.open_with_this(kid, sealed) {
            Ok(plain) => Ok(plain),
            Err(e) => self
                .previous
                .iter()
                .find_map(|k| k.open_with_this(kid, sealed).ok())
                .ok_or(e),
        }
    }

    fn open_with_this(&self, kid: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let undecryptable = || KeyError::Undecryptable {
            kid: kid.to_string(),
            fingerprint: self.fingerprint.clone(),
        };
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != VERSION {
            return Err(undecryptable());
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN])
            .map_err(|_| undecryptable())?;
        let mut buf = Zeroizing::new(sealed[1 + NONCE_LEN..].to_vec());
        let len = self
            .key
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut buf)
            .map_err(|_| undecryptable())?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

fn mac(key: &aws_lc_rs::hmac::Key, message: &str) -> String {
    util::b64(aws_lc_rs::hmac::sign(key, message.as_bytes()).as_ref())
}

fn verify_mac(key: &aws_lc_rs::hmac::Key, message: &str, tag: &str) -> bool {
    util::b64_decode(tag)
        .is_some_and(|t| aws_lc_rs::hmac::verify(key, message.as_bytes(), &t).is_ok())
}

fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_bound_to_kid() {
        let kek = Kek::from_bytes(&[7u8; 32]).expect("kek");
        let sealed = kek.seal("kid-1", b"private").expect("seal");
        assert_eq!(
            kek.open("kid-1", &sealed).expect("open").as_slice(),
            b"private"
        );
        assert!(kek.open("kid-2", &sealed).is_err(), "moved to another row");
        let other = Kek::from_bytes(&[8u8; 32]).expect("kek");
        let e = other.open("kid-1", &sealed).expect_err("wrong KEK");
        assert!(e.to_string().contains("kid-1"));
    }

    #[test]
    fn log_digests_are_keyed_and_short() {
        let kek = Kek::from_bytes(&[7u8; 32]).expect("kek");
        let d = kek.log_digest("hunter2");
        assert_eq!(d.len(), 8);
        assert_eq!(d, kek.log_digest("hunter2"), "stable, so repeats show");
        assert_ne!(d, kek.log_digest("hunter3"));
        let other = Kek::from_bytes(&[8u8; 32]).expect("kek");
        assert_ne!(
            d,
            other.log_digest("hunter2"),
            "keyed: no dictionary without the KEK"
        );
        let plain = util::b64(&util::secret_hash("hunter2"));
        assert!(!plain.starts_with(&d));
    }

    #[test]
    fn kek_file_is_created_once_and_private() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = Kek::load_or_create(None, dir.path()).expect("create");
        let b = Kek::load_or_create(None, dir.path()).expect("load");
        assert_eq!(a.fingerprint(), b.fingerprint());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEK_FILE))
                .expect("file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(format!("{a:?}").starts_with("Kek(fingerprint"));
        assert!(Kek::from_base64("c2hvcnQ").is_err());
    }

    #[test]
    fn a_generated_kek_is_written_only_when_something_is_sealed_under_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let kek = Kek::load_or_generate(None, dir.path()).expect("generate");
        assert!(kek.is_unsaved());
        assert!(kek.open("kid", &[1u8; 40]).is_err());
        assert!(
            !dir.path().join(KEK_FILE).exists(),
            "not written before it is used"
        );
        let sealed = kek.seal("kid", b"secret").expect("seal");
        assert!(!kek.is_unsaved());
        let again = Kek::load_or_generate(None, dir.path()).expect("load");
        assert!(!again.is_unsaved());
        assert_eq!(
            again.open("kid", &sealed).expect("open").as_slice(),
            b"secret"
        );
    }

    #[test]
    fn previous_keks_open_but_never_seal() {
        let old = Kek::from_bytes(&[1u8; 32]).expect("kek");
        let sealed_old = old.seal("kid", b"secret").expect("seal");
        let csrf_old = old.csrf_token("browser");
        let new = Kek::from_bytes(&[2u8; 32])
            .expect("kek")
            .with_previous(&[util::b64(&[1u8; 32])])
            .expect("previous");
        assert_eq!(
            new.open("kid", &sealed_old).expect("open").as_slice(),
            b"secret"
        );
        assert!(!new.is_current("kid", &sealed_old));
        let resealed = new.seal("kid", b"secret").expect("seal");
        assert!(new.is_current("kid", &resealed));
        assert!(
            old.open("kid", &resealed).is_err(),
            "sealed under the new KEK only"
        );
        assert!(new.verify_csrf("browser", &csrf_old));
        let e = Kek::from_bytes(&[2u8; 32])
            .expect("kek")
            .with_previous(&["bad".into()]);
        assert!(e.expect_err("bad previous").to_string().contains("#1"));
    }
}
