//! Browser sessions: established after the factors check out, with `auth_time`, `amr` and
//! `acr`, which flow from here into codes, ID tokens and access tokens.

use super::super::context::Context;
use super::acr::Level;
use crate::store::{Session, SignedIn, StoreError};
use crate::util;

/// How long after signing in a user may change how they sign in (a password, a passkey, an
/// authenticator, a linked identity, another session) without signing in again, seconds.
pub const RECENT_AUTH_SECS: i64 = 600;

/// Did the session's user authenticate within [`RECENT_AUTH_SECS`] of `now`? Changes to how
/// an account signs in need it, so a browser left signed in cannot be turned into a takeover.
pub fn is_recent(session: &Session, now: i64) -> bool {
    now.saturating_sub(session.auth_time) <= RECENT_AUTH_SECS
}

/// Start a session for `user_id` signed in with `amr` (its `acr` computed from them when
/// None), ending `replacing` (the browser's previous session, so a
/// sign-in never keeps an old session id: no fixation). Returns the cookie value, stored
/// only as its hash.
pub async fn establish(
    ctx: &Context,
    user_id: &str,
    amr: Vec<String>,
    acr: Option<String>,
    replacing: Option<&str>,
) -> Result<(String, Session), StoreError> {
    if let Some(old) = replacing {
        ctx.sessions()
            .delete_session(&util::secret_key(old))
            .await?;
    }
    let now = ctx.now();
    let (token, key) = ctx.new_secret();
    // The level the methods reach, unless the caller knows better.
    let acr = acr.or_else(|| Some(Level::of_amr(&amr).acr().to_string()));
    let session = Session {
        sid: util::ordered_id(),
        user_id: user_id.to_string(),
        auth_time: now,
        amr,
        acr,
        created_at: now,
        expires_at: now + i64::from(ctx.config.tokens.session_ttl_secs),
    };
    ctx.sessions().insert_session(&key, &session).await?;
    Ok((token, session))
}

/// A new cookie for `old`'s sign-in, after every session of the user ended (a password
/// change): the same `auth_time`, methods and level, a new id and value.
pub async fn renew(ctx: &Context, old: &Session) -> Result<(String, Session), StoreError> {
    let (token, key) = ctx.new_secret();
    let session = Session {
        sid: util::ordered_id(),
        created_at: ctx.now(),
        ..old.clone()
    };
    ctx.sessions().insert_session(&key, &session).await?;
    Ok((token, session))
}

/// The live session behind a cookie value, with its user and what the user allowed
/// `client_id` (nothing when `None`), in one read.
pub async fn current(
    ctx: &Context,
    token: &str,
    client_id: Option<&str>,
) -> Result<Option<SignedIn>, StoreError> {
    // A user disabled on another replica a moment ago: their session row is gone there, and
    // this read may still see it; the user row says so too.
    Ok(ctx
        .sessions()
        .get_signed_in(&util::secret_key(token), ctx.now(), client_id)
        .await?
        .filter(|s| !s.user.is_disabled()))
}

/// End the session behind a cookie value.
pub async fn end(ctx: &Context, token: &str) -> Result<(), StoreError> {
    ctx.sessions()
        .delete_session(&util::secret_key(token))
        .await
}
