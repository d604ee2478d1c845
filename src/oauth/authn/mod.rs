//! Authentication: who the user is. Verifying a factor (a password today), the throttle
//! policy, establishing a session with `amr`, `acr` and `auth_time`, and where to send a
//! browser to sign in. Pages and handlers call in here; nothing here knows about them.

pub mod linking;
pub mod password;
pub mod session;
pub mod throttle;

use std::net::IpAddr;

use super::context::Context;
use crate::audit::{Event, Kind};
use crate::config::Config;
use crate::store::{Session, StoreError, User};
use password::PasswordVerifier;
use throttle::{SigninThrottled, Throttle};

/// The RFC 8176 `amr` value of a password.
pub const AMR_PASSWORD: &str = "pwd";

/// How many password hashes are verified at once; the rest wait (argon2id takes tens of
/// milliseconds of a core each).
const CONCURRENT_PASSWORD_CHECKS: usize = 2;

/// The authentication module's state: the password verifier and the throttle limits.
pub struct Authentication {
    pub passwords: PasswordVerifier,
    pub throttle: Throttle,
}

impl Authentication {
    pub fn new(config: &Config) -> Self {
        Self {
            passwords: PasswordVerifier::new(CONCURRENT_PASSWORD_CHECKS),
            throttle: Throttle::new(&config.signin, &config.registration),
        }
    }
}

/// A successful sign-in: the session and the cookie value that names it.
#[derive(Debug)]
pub struct SignedIn {
    pub cookie: String,
    pub session: Session,
    pub user: User,
}

/// Why a sign-in did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum SigninError {
    #[error("too many failed sign-ins; retry in {} s", .0.retry_after())]
    Throttled(SigninThrottled),
    #[error("wrong username or password")]
    WrongCredentials,
    /// The password was right, but an operator disabled the account.
    #[error("this account is disabled")]
    Disabled,
    /// The password was right, but an operator asked for a new one and none was given.
    #[error("choose a new password")]
    PasswordChangeRequired,
    /// The new password given is not acceptable; why.
    #[error("the new password: {0}")]
    NewPasswordRejected(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Sign in with a username and a password. Every attempt is counted (`throttle`) before the
/// password is checked; one refused by the throttle is audited as `signin.throttled` and its
/// password is not checked. A correct password forgets the username's failures.
pub async fn sign_in_with_password(
    ctx: &Context,
    username: &str,
    password: String,
    new_password: Option<String>,
    addr: Option<IpAddr>,
    replacing: Option<&str>,
) -> Result<SignedIn, SigninError> {
    let now = ctx.now();
    let throttle = &ctx.authn.throttle;
    let limits = ctx.rate_limits();
    let kek = ctx.keys.kek();
    let who = kek.bucket_digest(username);
    // Looked up before the throttle decides, so a refusal costs the same for every username.
    let user = ctx.users().find_user(username).await?;
    let known = user.as_ref().map(|u| u.id.clone());
    let known = known.as_deref();
    // What was typed as the username of an unknown user may be a password typed in the
    // wrong field: it is neither logged nor kept, only a short keyed digest that tells
    // repeated attempts apart.
    let named = || match known {
        Some(_) => serde_json::json!({ "username": username, "known_user": true }),
        None => {
            serde_json::json!({ "username_digest": kek.log_digest(username), "known_user": false })
        }
    };
    if let Err(t) = throttle.signin_attempt(limits, &who, addr, now).await? {
        let mut detail = named();
        if let Some(d) = detail.as_object_mut() {
            d.insert("reason".into(), t.reason().into());
            d.insert("retry_after".into(), t.retry_after().into());
        }
        tracing::warn!(
            username_digest = %kek.log_digest(username),
            reason = t.reason(),
            retry_after = t.retry_after(),
            "sign-in throttled"
        );
        ctx.audit.record(
            Event::new(Kind::SigninThrottled)
                .user_opt(known)
                .ip(addr)
                .detail(detail),
        );
        return Err(SigninError::Throttled(t));
    }
    let stored = user.as_ref().and_then(|u| u.password_hash.clone());
    let ok = ctx.authn.passwords.verify(password, stored).await;
    let Some(user) = user.filter(|_| ok) else {
        throttle.signin_failed(limits, &who, addr, now).await?;
        match known {
            Some(_) => tracing::info!(username = %username, "sign-in failed"),
            None => {
                tracing::info!(username_digest = %kek.log_digest(username), "sign-in failed for an unknown username")
            }
        }
        ctx.audit.record(
            Event::new(Kind::SigninFailed)
                .user_opt(known)
                .ip(addr)
                .detail(named()),
        );
        return Err(SigninError::WrongCredentials);
    };
    // Said only after the right password, so it tells a guesser nothing.
    if user.is_disabled() {
        tracing::info!(user_id = %user.id, "sign-in refused: the account is disabled");
        ctx.audit.record(
            Event::new(Kind::SigninFailed)
                .user(&user.id)
                .ip(addr)
                .detail(serde_json::json!({ "username": username, "known_user": true, "disabled": true })),
        );
        return Err(SigninError::Disabled);
    }
    throttle.signin_succeeded(limits, &who, addr).await?;
    // An operator asked for a new password: the sign-in completes only with one.
    if user.password_change_required {
        let new = new_password.ok_or(SigninError::PasswordChangeRequired)?;
        password::check_new(&new).map_err(SigninError::NewPasswordRejected)?;
        if ctx
            .authn
            .passwords
            .verify(new.clone(), user.password_hash.clone())
            .await
        {
            return Err(SigninError::NewPasswordRejected(
                "choose one different from the current password".into(),
            ));
        }
        let hash = tokio::task::spawn_blocking(move || password::hash(&new))
            .await
            .map_err(|e| StoreError::Corrupt(e.to_string()))?
            .map_err(StoreError::Corrupt)?;
        // Also ends every session and refresh token of the old password.
        ctx.users().set_password(&user.username, &hash, now).await?;
        tracing::info!(user_id = %user.id, "password changed at sign-in, as an operator asked");
    }
    let (cookie, session) = session::establish(
        ctx,
        &user.id,
        vec![AMR_PASSWORD.to_string()],
        None,
        replacing,
    )
    .await?;
    tracing::info!(user_id = %user.id, "signed in");
    ctx.audit.record(
        Event::new(Kind::SigninSucceeded)
            .user(&user.id)
            .ip(addr)
            .detail(serde_json::json!({ "sid": session.sid, "amr": session.amr })),
    );
    Ok(SignedIn {
        cookie,
        session,
        user,
    })
}

/// Where to send a browser to sign in: the sign-in page under `base_path`, coming back to
/// `return_to` (a path on this server) afterwards.
pub fn signin_url(base_path: &str, return_to: &str, login_hint: Option<&str>) -> String {
    let mut q = vec![("return_to", return_to)];
    if let Some(h) = login_hint {
        q.push(("login_hint", h));
    }
    format!(
        "{base_path}/signin?{}",
        serde_urlencoded::to_string(&q).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signin_url_carries_the_way_back() {
        assert_eq!(
            signin_url("/t", "/t/authorize/continue?r=a&b", Some("al ice")),
            "/t/signin?return_to=%2Ft%2Fauthorize%2Fcontinue%3Fr%3Da%26b&login_hint=al+ice"
        );
        assert_eq!(
            signin_url("", "/device", None),
            "/signin?return_to=%2Fdevice"
        );
    }
}
