//! A user's own second factors: enrolling an authenticator app, confirming it with its first
//! code, recovery codes, removal. The account pages call in here; an operator's reset is
//! `manage::reset_factors`.

use zeroize::Zeroizing;

use super::super::context::Context;
use super::{totp, totp_kid};
use crate::audit::{Event, Kind};
use crate::store::StoreError;

/// Where a user's second factor stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    None,
    /// Enrollment started, not confirmed by a first code: not usable.
    Pending,
    Confirmed {
        recovery_codes_left: i64,
    },
}

pub async fn status(ctx: &Context, user_id: &str) -> Result<Status, StoreError> {
    Ok(match ctx.factors().get_totp(user_id).await? {
        None => Status::None,
        Some(f) if f.confirmed_at.is_none() => Status::Pending,
        Some(_) => Status::Confirmed {
            recovery_codes_left: ctx.factors().recovery_codes_left(user_id).await?,
        },
    })
}

/// What a user sees to set up an app: the secret in base32 and the `otpauth://` URI.
pub struct Enrollment {
    pub secret_base32: Zeroizing<String>,
    pub uri: Zeroizing<String>,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Enrollment(<secret>)")
    }
}

fn enrollment(ctx: &Context, secret: &[u8], username: &str) -> Enrollment {
    // The app lists the account under the issuer's host name.
    let issuer = url::Url::parse(ctx.issuer())
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "Concierge".into());
    Enrollment {
        secret_base32: Zeroizing::new(totp::secret_base32(secret)),
        uri: Zeroizing::new(totp::otpauth_uri(secret, &issuer, username)),
    }
}

fn seal_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// What is stored of `codes` ([`totp::recovery_hash`], slow: on the blocking pool, in turn
/// with password checks).
async fn recovery_hashes(
    ctx: &Context,
    user_id: &str,
    codes: &[String],
) -> Result<Vec<Vec<u8>>, StoreError> {
    let (user_id, codes) = (user_id.to_owned(), codes.to_vec());
    ctx.authn
        .passwords
        .run(move || {
            codes
                .iter()
                .map(|c| totp::recovery_hash(&user_id, c))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .ok_or_else(|| seal_err("the server is shutting down"))?
        .map_err(seal_err)
}

/// Start (or start again) setting up an authenticator: a new secret, stored sealed and
/// unconfirmed. None when one is already confirmed.
pub async fn start(
    ctx: &Context,
    user_id: &str,
    username: &str,
) -> Result<Option<Enrollment>, StoreError> {
    let secret = totp::new_secret();
    let sealed = ctx
        .keys
        .kek()
        .seal(&totp_kid(user_id), &secret)
        .map_err(seal_err)?;
    if !ctx
        .factors()
        .put_pending_totp(user_id, &sealed, ctx.now())
        .await?
    {
        return Ok(None);
    }
    Ok(Some(enrollment(ctx, &secret, username)))
}

/// The secret of the user's enrollment that waits for its first code, opened.
async fn pending_secret(
    ctx: &Context,
    user_id: &str,
) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, StoreError> {
    let Some(f) = ctx
        .factors()
        .get_totp(user_id)
        .await?
        .filter(|f| f.confirmed_at.is_none())
    else {
        return Ok(None);
    };
    ctx.keys
        .kek()
        .open(&totp_kid(user_id), &f.secret_sealed)
        .map(Some)
        .map_err(seal_err)
}

/// The pending enrollment again (to show after a wrong first code).
pub async fn pending(
    ctx: &Context,
    user_id: &str,
    username: &str,
) -> Result<Option<Enrollment>, StoreError> {
    let Some(secret) = pending_secret(ctx, user_id).await? else {
        return Ok(None);
    };
    Ok(Some(enrollment(ctx, &secret, username)))
}

/// The pending enrollment of `user_id` again, named by their username.
pub async fn pending_of(ctx: &Context, user_id: &str) -> Result<Option<Enrollment>, StoreError> {
    match ctx.users().get_user(user_id).await? {
        Some(user) => pending(ctx, user_id, &user.username).await,
        None => Ok(None),
    }
}

/// Confirm the pending enrollment with its first code: the recovery codes to show once, or
/// None when the code is wrong (or there is nothing pending).
pub async fn confirm(
    ctx: &Context,
    user_id: &str,
    code: &str,
) -> Result<Option<Vec<String>>, StoreError> {
    let Some(secret) = pending_secret(ctx, user_id).await? else {
        return Ok(None);
    };
    let Some(step) = totp::matching_step(&secret, code, ctx.now()) else {
        return Ok(None);
    };
    let codes = totp::new_recovery_codes();
    let hashes = recovery_hashes(ctx, user_id, &codes).await?;
    if !ctx
        .factors()
        .confirm_totp(user_id, step, &hashes, ctx.now())
        .await?
    {
        return Ok(None);
    }
    tracing::info!(user_id = %user_id, "authenticator app enrolled");
    ctx.audit.record(
        Event::new(Kind::MfaEnrolled)
            .user(user_id)
            .detail(serde_json::json!({ "factor": "totp" })),
    );
    Ok(Some(codes))
}

/// New recovery codes for a user with a confirmed authenticator, proven by a current code or
/// a recovery code (a borrowed session alone does not get them); the old ones stop working.
/// None without an authenticator or with a wrong code.
pub async fn regenerate_recovery_codes(
    ctx: &Context,
    user_id: &str,
    code: &str,
) -> Result<Option<Vec<String>>, StoreError> {
    if !spend_code(ctx, user_id, code).await? {
        return Ok(None);
    }
    let codes = totp::new_recovery_codes();
    let hashes = recovery_hashes(ctx, user_id, &codes).await?;
    ctx.factors()
        .replace_recovery_codes(user_id, &hashes, ctx.now())
        .await?;
    tracing::info!(user_id = %user_id, "recovery codes regenerated");
    ctx.audit
        .record(Event::new(Kind::MfaRecoveryCodesRegenerated).user(user_id));
    Ok(Some(codes))
}

/// Is `code` a current authenticator code or an unused recovery code of the user's confirmed
/// authenticator? Spends it either way (one atomic statement); a wrong one is audited.
pub async fn spend_code(ctx: &Context, user_id: &str, code: &str) -> Result<bool, StoreError> {
    let ok = spend(ctx, user_id, code).await?.is_some();
    if !ok {
        ctx.audit.record(
            Event::new(Kind::MfaFailed)
                .user(user_id)
                .detail(serde_json::json!({ "recovery_code": totp::is_recovery_code(code) })),
        );
    }
    Ok(ok)
}

/// Spend `code`, a current authenticator code or an unused recovery code of the user's
/// confirmed authenticator, by one atomic statement: the `amr` value it proves (`otp`, or
/// `mfa` for a recovery code), or None when it is wrong, used, or there is no authenticator.
pub async fn spend(
    ctx: &Context,
    user_id: &str,
    code: &str,
) -> Result<Option<&'static str>, StoreError> {
    let Some(f) = ctx
        .factors()
        .get_totp(user_id)
        .await?
        .filter(|f| f.confirmed_at.is_some())
    else {
        return Ok(None);
    };
    let now = ctx.now();
    if totp::is_recovery_code(code) {
        let slow = recovery_hashes(ctx, user_id, &[code.to_owned()])
            .await?
            .pop()
            .unwrap_or_default();
        let store = ctx.factors();
        // A code stored before its hash was slow is found by the fast one.
        let ok = store.spend_recovery_code(user_id, &slow, now).await?
            || store
                .spend_recovery_code(user_id, &totp::legacy_recovery_hash(user_id, code), now)
                .await?;
        return Ok(ok.then_some(totp::AMR_MFA));
    }
    let secret = ctx
        .keys
        .kek()
        .open(&totp_kid(user_id), &f.secret_sealed)
        .map_err(seal_err)?;
    let ok = match totp::matching_step(&secret, code, now) {
        Some(step) => ctx.factors().spend_totp_step(user_id, step).await?,
        None => false,
    };
    Ok(ok.then_some(totp::AMR_OTP))
}

/// Remove the authenticator and recovery codes, proven by a current code or a recovery
/// code. False when the code is wrong.
pub async fn remove(ctx: &Context, user_id: &str, code: &str) -> Result<bool, StoreError> {
    if !spend_code(ctx, user_id, code).await? {
        return Ok(false);
    }
    ctx.factors().delete_factors(user_id).await?;
    tracing::info!(user_id = %user_id, "authenticator app removed");
    ctx.audit.record(
        Event::new(Kind::MfaRemoved)
            .user(user_id)
            .detail(serde_json::json!({ "factor": "totp" })),
    );
    Ok(true)
}
