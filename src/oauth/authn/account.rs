//! Changes a signed-in user makes to how they sign in, from their security page: a new
//! password, ending sessions, unlinking an identity at another issuer. The page lets them
//! through only with a recent sign-in ([`super::session::is_recent`]); every change is
//! audited here.

use std::net::IpAddr;

use super::super::context::Context;
use super::{SigninError, session};
use crate::audit::{Event, Kind};
use crate::store::{Session, StoreError, User};

/// A password change the user asked for.
#[derive(Debug)]
pub struct PasswordChange<'a> {
    /// The password they have now; not asked of an account without one.
    pub current: &'a str,
    pub new: String,
    pub addr: Option<IpAddr>,
}

/// The password changed: every other browser and every agent's refresh token of the old
/// password ended; this browser keeps its sign-in under a new cookie.
#[derive(Debug)]
pub struct PasswordChanged {
    pub cookie: String,
    pub session: Session,
}

/// Change `user`'s password from their signed-in `session`. The current password is
/// checked like a sign-in (counted by the same throttle, so a borrowed browser cannot guess
/// it faster than the sign-in page could).
pub async fn change_password(
    ctx: &Context,
    user: &User,
    session: &Session,
    change: PasswordChange<'_>,
) -> Result<PasswordChanged, SigninError> {
    let PasswordChange { current, new, addr } = change;
    if user.password_hash.is_some() {
        let (throttle, limits, now) = (&ctx.authn.throttle, ctx.rate_limits(), ctx.now());
        let who = ctx.keys.kek().bucket_digest(&user.username);
        if let Err(t) = throttle.signin_attempt(limits, &who, addr, now).await? {
            return Err(SigninError::Throttled(t));
        }
        let right = ctx
            .authn
            .passwords
            .verify(current.to_string(), user.password_hash.clone())
            .await;
        if !right {
            throttle.signin_failed(limits, &who, addr, now).await?;
            tracing::info!(user_id = %user.id, "password change refused: wrong current password");
            ctx.audit.record(
                Event::new(Kind::SigninFailed)
                    .user(&user.id)
                    .ip(addr)
                    .detail(serde_json::json!({
                        "username": user.username, "known_user": true, "during": "password_change",
                    })),
            );
            return Err(SigninError::WrongCredentials);
        }
        throttle.signin_succeeded(limits, &who, addr).await?;
    }
    let hash = super::new_password_hash(ctx, user, new).await?;
    // Ends every session and refresh token of the user, this browser's too; it gets a new one.
    ctx.users()
        .set_password(&user.username, &hash, ctx.now())
        .await?;
    let (cookie, renewed) = session::renew(ctx, session).await?;
    tracing::info!(user_id = %user.id, "password changed by its user");
    ctx.audit.record(
        Event::new(Kind::PasswordChanged)
            .user(&user.id)
            .ip(addr)
            .detail(serde_json::json!({ "sid": renewed.sid, "by": "user" })),
    );
    Ok(PasswordChanged {
        cookie,
        session: renewed,
    })
}

/// End `user`'s session `sid` (another browser, or this one); false when they have none by
/// that id.
pub async fn end_session(
    ctx: &Context,
    user: &User,
    sid: &str,
    addr: Option<IpAddr>,
) -> Result<bool, StoreError> {
    let ended = ctx.sessions().delete_user_session(&user.id, sid).await?;
    if ended {
        tracing::info!(user_id = %user.id, "session ended by its user");
        ctx.audit.record(
            Event::new(Kind::SessionEnded)
                .user(&user.id)
                .ip(addr)
                .detail(serde_json::json!({ "sid": sid })),
        );
    }
    Ok(ended)
}

/// End every session of `user` but `keep` (this browser's); how many ended.
pub async fn end_other_sessions(
    ctx: &Context,
    user: &User,
    keep: &Session,
    addr: Option<IpAddr>,
) -> Result<u64, StoreError> {
    let ended = ctx
        .sessions()
        .delete_other_sessions(&user.id, &keep.sid)
        .await?;
    if ended > 0 {
        tracing::info!(user_id = %user.id, ended, "other sessions ended by their user");
        ctx.audit.record(
            Event::new(Kind::SessionEnded)
                .user(&user.id)
                .ip(addr)
                .detail(serde_json::json!({ "kept": keep.sid, "ended": ended })),
        );
    }
    Ok(ended)
}

/// Why an identity was not unlinked.
#[derive(Debug, thiserror::Error)]
pub enum UnlinkError {
    #[error("no such linked identity")]
    NotFound,
    /// It is the account's only way in: no password, no passkey, no other identity.
    #[error("this identity is the only way to sign in to this account")]
    OnlyWayIn,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Unlink `user`'s identity (`issuer`, `subject`): that issuer's user no longer names them
/// here. Refused when it would leave the account without a way to sign in.
pub async fn unlink_identity(
    ctx: &Context,
    user: &User,
    issuer: &str,
    subject: &str,
    addr: Option<IpAddr>,
) -> Result<(), UnlinkError> {
    let linked = ctx.identities().identities_of(&user.id).await?;
    if !linked
        .iter()
        .any(|l| l.issuer == issuer && l.subject == subject)
    {
        return Err(UnlinkError::NotFound);
    }
    // A passkey signs in alone; a password or another identity is another way in.
    if user.password_hash.is_none()
        && linked.len() == 1
        && !super::passkey::has_passkey(ctx, &user.id).await?
    {
        return Err(UnlinkError::OnlyWayIn);
    }
    if !ctx
        .identities()
        .unlink_identity(&user.id, issuer, subject)
        .await?
    {
        return Err(UnlinkError::NotFound);
    }
    tracing::info!(user_id = %user.id, issuer = %issuer, "identity unlinked by its user");
    ctx.audit.record(
        Event::new(Kind::IdentityUnlinked)
            .user(&user.id)
            .ip(addr)
            .detail(serde_json::json!({ "issuer": issuer, "subject": subject, "by": "user" })),
    );
    Ok(())
}
