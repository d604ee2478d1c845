//! The password factor: argon2id, the server's slow hash, for passwords and for recovery codes
//! (stored secrets of 256 random bits use SHA-256). Slow hashing runs on the blocking pool
//! behind a semaphore, so a flood of sign-ins waits its turn instead of stalling the async
//! workers that serve `/token`.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};

/// Hash a password for storage (PHC string).
pub fn hash(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Does `password` match the stored hash?
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|h| {
            argon2::PasswordVerifier::verify_password(&Argon2::default(), password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// argon2id of a short random secret (a recovery code), with a salt drawn from `salt_of` and
/// not at random, so that the same secret of the same owner always hashes alike and the stored
/// value is found by what is typed. Slow on purpose: call it off the async workers
/// ([`PasswordVerifier::run`]).
pub fn hash_with_derived_salt(secret: &[u8], salt_of: &str) -> Result<Vec<u8>, argon2::Error> {
    let salt = crate::util::secret_hash(&format!("concierge slow-hash salt\n{salt_of}"));
    let mut out = vec![0u8; 32];
    Argon2::default().hash_password_into(secret, &salt[..16], &mut out)?;
    Ok(out)
}

/// A hash to verify against when the user does not exist, so an unknown username costs as
/// much time as a wrong password.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash("not a real password").unwrap_or_default())
}

/// Verifies passwords off the async executor, a bounded number at a time.
pub struct PasswordVerifier {
    permits: tokio::sync::Semaphore,
}

impl PasswordVerifier {
    /// At most `concurrent` verifications run at once; the rest wait.
    pub fn new(concurrent: usize) -> Self {
        Self {
            permits: tokio::sync::Semaphore::new(concurrent.max(1)),
        }
    }

    /// Run `work` (slow hashing) on the blocking pool once a permit is free; `None` if it
    /// could not run (the runtime is shutting down).
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let _permit = self.permits.acquire().await.ok()?;
        tokio::task::spawn_blocking(work).await.ok()
    }

    /// Does `password` match `stored`? Without a stored hash (an unknown user, or one without
    /// a password) a dummy hash is verified instead, so the answer takes as long either way.
    pub async fn verify(&self, password: String, stored: Option<String>) -> bool {
        let known = stored.is_some();
        let result = self
            .run(move || {
                let hash = stored.as_deref().unwrap_or_else(|| dummy_hash());
                verify(&password, hash)
            })
            .await;
        known && result.unwrap_or(false)
    }
}

/// Minimum rules for a new password.
pub fn check_new(password: &str) -> Result<(), String> {
    if password.chars().count() < 8 {
        return Err("the password must have at least 8 characters".into());
    }
    if password.len() > 1024 {
        return Err("the password is longer than 1024 bytes".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_round_trip() {
        let h = hash("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse", &h));
        assert!(!verify("wrong horse", &h));
        assert!(!verify("x", "not a hash"));
        assert!(check_new("short").is_err());
        assert!(!dummy_hash().is_empty());
    }
}
