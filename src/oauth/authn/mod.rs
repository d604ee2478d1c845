//! Authentication: who the user is. Verifying a factor (a password today), the throttle
//! policy, establishing a session with `amr`, `acr` and `auth_time`, and where to send a
//! browser to sign in. Pages and handlers call in here; nothing here knows about them.

pub mod account;
pub mod acr;
pub mod factors;
pub mod linking;
pub mod passkey;
pub mod password;
pub mod session;
pub mod throttle;
pub mod totp;
pub mod upstream;

use std::net::IpAddr;

use super::context::Context;
use crate::audit::{Event, Kind};
use crate::config::Config;
use crate::store::{Session, StoreError, User};
use acr::Level;
use password::PasswordVerifier;
use throttle::{SigninThrottled, Throttle};

/// The RFC 8176 `amr` value of a password.
pub const AMR_PASSWORD: &str = "pwd";

/// How many password hashes are verified at once; the rest wait (argon2id takes tens of
/// milliseconds of a core each).
const CONCURRENT_PASSWORD_CHECKS: usize = 2;

/// The authentication module's state: the password verifier, the throttle limits, the
/// passkey relying party (None when the issuer's host is an IP address), and the upstream
/// identity providers.
pub struct Authentication {
    pub passwords: PasswordVerifier,
    pub throttle: Throttle,
    pub passkeys: Option<passkey::RelyingParty>,
    pub upstreams: upstream::Upstreams,
}

impl Authentication {
    pub fn new(config: &Config) -> Result<Self, crate::oauth::net_guard::FetchError> {
        Ok(Self {
            passwords: PasswordVerifier::new(CONCURRENT_PASSWORD_CHECKS),
            throttle: Throttle::new(&config.signin, &config.registration),
            passkeys: passkey::RelyingParty::for_issuer(&config.issuer),
            upstreams: upstream::Upstreams::new(&config.upstream)?,
        })
    }
}

/// A sign-in with a password, as the sign-in form sent it.
#[derive(Debug, Default)]
pub struct PasswordAttempt<'a> {
    pub username: &'a str,
    pub password: String,
    /// The new password, when an operator asked for one.
    pub new_password: Option<String>,
    /// The authenticator or recovery code sent with a new password (a user with a second
    /// factor changes a required password only with it).
    pub code: Option<&'a str>,
    /// How strongly the sign-in must authenticate (the authorization request's need);
    /// the server's policy raises it.
    pub level: Option<Level>,
    pub addr: Option<IpAddr>,
    /// The browser's current session, ended by the new one.
    pub replacing: Option<&'a str>,
}

/// A right password: signed in, or the second factor still to come.
#[derive(Debug)]
pub enum PasswordChecked {
    SignedIn(Box<SignedIn>),
    /// The user has a second factor (an authenticator app, a passkey): the session waits for
    /// it ([`sign_in_with_code`], [`passkey::second_factor_finish`]).
    CodeRequired(Box<User>),
    /// The sign-in needs a second factor the user does not have yet: they set up an
    /// authenticator first ([`enrol_at_signin`]).
    EnrollmentRequired(Box<User>),
}

/// How long the second step of a sign-in may take after the password, seconds.
pub const PENDING_TTL_SECS: i64 = 300;

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
    /// The second step's authenticator or recovery code was wrong (or already used).
    #[error("wrong code")]
    WrongCode,
    /// The second step's carried sign-in is not ours, not this browser's or too old.
    #[error("the sign-in expired")]
    PendingExpired,
    /// The password was right, but an operator disabled the account.
    #[error("this account is disabled")]
    Disabled,
    /// The password was right, but an operator asked for a new one and none was given
    /// (with the second factor's code, when the user has one: `code`).
    #[error("choose a new password")]
    PasswordChangeRequired { code: bool },
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
    attempt: PasswordAttempt<'_>,
) -> Result<PasswordChecked, SigninError> {
    let PasswordAttempt {
        username,
        password,
        new_password,
        code,
        level,
        addr,
        replacing,
    } = attempt;
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
    // A second factor (a confirmed authenticator, a passkey): the password alone establishes
    // nothing. (A pending authenticator, before its first code, does not count.)
    let second = second_factors(ctx, &user.id).await?;
    let has_code = second.authenticator;
    // An operator asked for a new password: the sign-in completes only with one, and for a
    // user with a second factor only with its code too, checked before the password changes
    // (a password alone must not lock the owner out).
    let mut amr = vec![AMR_PASSWORD.to_string()];
    if user.password_change_required {
        let asked = SigninError::PasswordChangeRequired { code: has_code };
        let new = new_password.ok_or(asked)?;
        let code = match (has_code, code.filter(|c| !c.trim().is_empty())) {
            (true, None) => return Err(SigninError::PasswordChangeRequired { code: true }),
            (_, code) => code,
        };
        let hash = new_password_hash(ctx, &user, new).await?;
        if has_code && let Some(code) = code {
            amr.push(second_factor(ctx, &user, code, addr).await?.to_string());
        }
        // Also ends every session and refresh token of the old password.
        ctx.users().set_password(&user.username, &hash, now).await?;
        tracing::info!(user_id = %user.id, "password changed at sign-in, as an operator asked");
    }
    // A code given with a required password change was the second factor.
    let second = if amr.len() > 1 {
        SecondFactors::default()
    } else {
        second
    };
    after_first_factor_with(ctx, user, amr, second, level, addr, replacing).await
}

/// The first factor (`amr`: a password, another provider) checked out: a user with a second
/// factor is asked for it; one who needs a second factor and has none sets one up; anyone
/// else is signed in.
pub async fn after_first_factor(
    ctx: &Context,
    user: User,
    amr: Vec<String>,
    level: Option<Level>,
    addr: Option<IpAddr>,
    replacing: Option<&str>,
) -> Result<PasswordChecked, SigninError> {
    let second = if amr.len() > 1 {
        // The second factor came with the first (a required password change).
        SecondFactors::default()
    } else {
        second_factors(ctx, &user.id).await?
    };
    after_first_factor_with(ctx, user, amr, second, level, addr, replacing).await
}

async fn after_first_factor_with(
    ctx: &Context,
    user: User,
    amr: Vec<String>,
    second: SecondFactors,
    level: Option<Level>,
    addr: Option<IpAddr>,
    replacing: Option<&str>,
) -> Result<PasswordChecked, SigninError> {
    if second.any() {
        tracing::info!(user_id = %user.id, "first factor right; asking for the second");
        return Ok(PasswordChecked::CodeRequired(Box::new(user)));
    }
    let need = level
        .unwrap_or(Level::OneFactor)
        .max(acr::policy_floor(ctx.config.signin.mfa));
    if need >= Level::MultiFactor && Level::of_amr(&amr) < Level::MultiFactor {
        tracing::info!(user_id = %user.id, "first factor right; a second factor is needed and the user has none: enrolling");
        return Ok(PasswordChecked::EnrollmentRequired(Box::new(user)));
    }
    let (cookie, session) = session::establish(ctx, &user.id, amr, None, replacing).await?;
    tracing::info!(user_id = %user.id, "signed in");
    ctx.audit.record(
        Event::new(Kind::SigninSucceeded)
            .user(&user.id)
            .ip(addr)
            .detail(serde_json::json!({ "sid": session.sid, "amr": session.amr })),
    );
    Ok(PasswordChecked::SignedIn(Box::new(SignedIn {
        cookie,
        session,
        user,
    })))
}

/// The stored hash of `new`, `user`'s next password: refused when it breaks the rules for
/// a new password or is the current one.
async fn new_password_hash(ctx: &Context, user: &User, new: String) -> Result<String, SigninError> {
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
    Ok(tokio::task::spawn_blocking(move || password::hash(&new))
        .await
        .map_err(|e| StoreError::Corrupt(e.to_string()))?
        .map_err(StoreError::Corrupt)?)
}

/// The text a carried half-done sign-in's tag covers: a fixed label, so no other tagged
/// value (a carried authorization request) can pass for one.
fn pending_text(
    user_id: &str,
    first: &str,
    expires: i64,
    binding: &str,
    return_to: &str,
) -> String {
    format!("concierge signin second step\n{user_id}\n{first}\n{expires}\n{binding}\n{return_to}")
}

/// A half-done sign-in: the user, and the `amr` of the first step they passed (a password,
/// another provider).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub user_id: String,
    pub first: &'static str,
}

impl Pending {
    /// The `amr` of the whole sign-in, with the second step's method.
    fn amr(&self, second: &str) -> Vec<String> {
        vec![self.first.to_string(), second.to_string()]
    }
}

/// The first-step methods a half-done sign-in may carry.
fn first_method(m: &str) -> Option<&'static str> {
    [AMR_PASSWORD, upstream::AMR_FEDERATED]
        .into_iter()
        .find(|k| *k == m)
}

/// A half-done sign-in (the first step checked out) carried by the second step's form: the
/// user, the first step's method, its expiry and a tag over them, the browser (`binding`)
/// and the way back, so it names only this user, in this browser, going there, for
/// [`PENDING_TTL_SECS`].
pub fn pending_token(
    kek: &crate::keys::Kek,
    pending: &Pending,
    binding: &str,
    return_to: &str,
    now: i64,
) -> String {
    let expires = now + PENDING_TTL_SECS;
    let (user_id, first) = (&pending.user_id, pending.first);
    let tag = kek.request_tag(&pending_text(user_id, first, expires, binding, return_to));
    format!(
        "{}.{first}.{expires}.{tag}",
        crate::util::b64(user_id.as_bytes())
    )
}

/// The half-done sign-in a carried token names, when it is ours, this browser's, for this
/// way back and not expired. Constant-time tag check.
pub fn pending_user(
    kek: &crate::keys::Kek,
    token: &str,
    binding: &str,
    return_to: &str,
    now: i64,
) -> Option<Pending> {
    let mut parts = token.splitn(4, '.');
    let (user, first, expires, tag) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let user_id = String::from_utf8(crate::util::b64_decode(user)?).ok()?;
    let first = first_method(first)?;
    let expires: i64 = expires.parse().ok()?;
    let text = pending_text(&user_id, first, expires, binding, return_to);
    (now < expires && expires <= now + PENDING_TTL_SECS && kek.verify_request_tag(&text, tag))
        .then_some(Pending { user_id, first })
}

/// The second step: an authenticator code (or a recovery code) for the user whose first
/// step checked out moments ago (the caller checked the carried [`pending_token`]).
pub async fn sign_in_with_code(
    ctx: &Context,
    pending: &Pending,
    code: &str,
    addr: Option<IpAddr>,
    replacing: Option<&str>,
) -> Result<SignedIn, SigninError> {
    let user_id = pending.user_id.as_str();
    let user = pending_signin_user(ctx, user_id).await?;
    let has_code = has_authenticator(ctx, user_id).await?;
    if !has_code {
        // Reset or removed since the first step: start again.
        return Err(SigninError::PendingExpired);
    }
    let kind = second_factor(ctx, &user, code, addr).await?;
    signed_in(ctx, user, pending.amr(kind), addr, replacing).await
}

/// The user a carried half-done sign-in names, still there and not disabled.
async fn pending_signin_user(ctx: &Context, user_id: &str) -> Result<User, SigninError> {
    let Some(user) = ctx.users().get_user(user_id).await? else {
        return Err(SigninError::PendingExpired);
    };
    if user.is_disabled() {
        return Err(SigninError::Disabled);
    }
    Ok(user)
}

/// A session for a user whose factors checked out, audited.
async fn signed_in(
    ctx: &Context,
    user: User,
    amr: Vec<String>,
    addr: Option<IpAddr>,
    replacing: Option<&str>,
) -> Result<SignedIn, SigninError> {
    let (cookie, session) = session::establish(ctx, &user.id, amr, None, replacing).await?;
    tracing::info!(user_id = %user.id, "signed in with a second factor");
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

/// The throttle bucket of a user's second-factor attempts: their own, so a right password
/// does not forget wrong codes.
fn second_factor_bucket(ctx: &Context, user_id: &str) -> String {
    ctx.keys
        .kek()
        .bucket_digest(&format!("second factor\n{user_id}"))
}

/// Count an attempt at a second factor before it is checked; refused while throttled.
async fn second_factor_attempt(
    ctx: &Context,
    user_id: &str,
    factor: &str,
    addr: Option<IpAddr>,
) -> Result<(), SigninError> {
    let who = second_factor_bucket(ctx, user_id);
    if let Err(t) = ctx
        .authn
        .throttle
        .signin_attempt(ctx.rate_limits(), &who, addr, ctx.now())
        .await?
    {
        tracing::warn!(user_id = %user_id, reason = t.reason(), "second sign-in step throttled");
        ctx.audit.record(
            Event::new(Kind::SigninThrottled)
                .user(user_id)
                .ip(addr)
                .detail(serde_json::json!({
                    "factor": factor, "reason": t.reason(), "retry_after": t.retry_after(),
                })),
        );
        return Err(SigninError::Throttled(t));
    }
    Ok(())
}

/// The outcome of a second-factor attempt, for the throttle and the audit log.
async fn second_factor_outcome(
    ctx: &Context,
    user: &User,
    ok: bool,
    recovery_code: bool,
    addr: Option<IpAddr>,
) -> Result<(), SigninError> {
    let who = second_factor_bucket(ctx, &user.id);
    let (throttle, limits) = (&ctx.authn.throttle, ctx.rate_limits());
    if ok {
        throttle.signin_succeeded(limits, &who, addr).await?;
        return Ok(());
    }
    throttle
        .signin_failed(limits, &who, addr, ctx.now())
        .await?;
    tracing::info!(user_id = %user.id, "second sign-in step failed: wrong code");
    ctx.audit.record(
        Event::new(Kind::MfaFailed).user(&user.id).ip(addr).detail(
            serde_json::json!({ "username": user.username, "recovery_code": recovery_code }),
        ),
    );
    Err(SigninError::WrongCode)
}

/// Check and spend a second factor's code (authenticator or recovery code) of `user`:
/// attempts are counted per user before the check, like passwords; a code is spent by one
/// atomic statement, so the same code never works twice. The `amr` value it proves.
async fn second_factor(
    ctx: &Context,
    user: &User,
    code: &str,
    addr: Option<IpAddr>,
) -> Result<&'static str, SigninError> {
    second_factor_attempt(ctx, &user.id, totp::AMR_OTP, addr).await?;
    let spent = factors::spend(ctx, &user.id, code).await?;
    second_factor_outcome(
        ctx,
        user,
        spent.is_some(),
        totp::is_recovery_code(code),
        addr,
    )
    .await?;
    spent.ok_or(SigninError::WrongCode)
}

/// The sign-in's enrolment step: a user who needed a second factor and had none confirms
/// the authenticator set up for them ([`factors::start`]) with its first code, and is
/// signed in with both factors. Throttled like the second step. The recovery codes to show
/// once come back with the session.
pub async fn enrol_at_signin(
    ctx: &Context,
    pending: &Pending,
    code: &str,
    addr: Option<IpAddr>,
    replacing: Option<&str>,
) -> Result<(SignedIn, Vec<String>), SigninError> {
    let user_id = pending.user_id.as_str();
    let user = pending_signin_user(ctx, user_id).await?;
    second_factor_attempt(ctx, user_id, totp::AMR_OTP, addr).await?;
    let codes = factors::confirm(ctx, user_id, code).await?;
    second_factor_outcome(ctx, &user, codes.is_some(), false, addr).await?;
    let codes = codes.ok_or(SigninError::WrongCode)?;
    let amr = pending.amr(totp::AMR_OTP);
    Ok((signed_in(ctx, user, amr, addr, replacing).await?, codes))
}

/// The second factors a user has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SecondFactors {
    /// A confirmed authenticator app.
    pub authenticator: bool,
    /// At least one passkey (on a server that offers them).
    pub passkey: bool,
}

impl SecondFactors {
    /// Has the user any? Then the password alone never establishes their session.
    pub fn any(self) -> bool {
        self.authenticator || self.passkey
    }
}

/// Which second factors the user has: the one place that answers it.
pub async fn second_factors(ctx: &Context, user_id: &str) -> Result<SecondFactors, StoreError> {
    Ok(SecondFactors {
        authenticator: has_authenticator(ctx, user_id).await?,
        passkey: passkey::has_passkey(ctx, user_id).await?,
    })
}

/// Has the user a confirmed authenticator? (A pending one, before its first code, does not
/// count.)
async fn has_authenticator(ctx: &Context, user_id: &str) -> Result<bool, StoreError> {
    Ok(ctx
        .factors()
        .get_totp(user_id)
        .await?
        .is_some_and(|f| f.confirmed_at.is_some()))
}

/// The strongest level `user_id` can reach at a sign-in now: a second factor they have, or
/// one they may set up (under the server's policy). A passkey reaches phishing resistance.
pub async fn reachable(ctx: &Context, user_id: &str) -> Result<Level, StoreError> {
    let second = second_factors(ctx, user_id).await?;
    Ok(if second.passkey {
        Level::PhishingResistant
    } else if second.authenticator || ctx.config.signin.mfa.offered() {
        Level::MultiFactor
    } else {
        Level::OneFactor
    })
}

/// What a user's sealed TOTP secret is bound to (the sealing's associated data), so a
/// sealed secret moved to another user's row does not open.
pub fn totp_kid(user_id: &str) -> String {
    format!("totp:{user_id}")
}

/// Where to send a browser to sign in: the sign-in page under `base_path`, coming back to
/// `return_to` (a path on this server) afterwards.
pub fn signin_url(
    base_path: &str,
    return_to: &str,
    login_hint: Option<&str>,
    level: Option<Level>,
) -> String {
    let mut q = vec![("return_to", return_to)];
    if let Some(h) = login_hint {
        q.push(("login_hint", h));
    }
    if let Some(l) = level.filter(|l| *l > Level::OneFactor) {
        q.push(("acr", l.acr()));
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
    fn a_half_done_signin_carries_its_first_method_under_the_tag() {
        let kek = crate::keys::Kek::from_base64(&crate::util::b64(&[7u8; 32])).unwrap();
        let fed = Pending {
            user_id: "u1".into(),
            first: upstream::AMR_FEDERATED,
        };
        let t = pending_token(&kek, &fed, "browser", "/back", 1000);
        assert_eq!(
            pending_user(&kek, &t, "browser", "/back", 1001),
            Some(fed.clone())
        );
        assert_eq!(fed.amr("otp"), vec!["fed".to_string(), "otp".to_string()]);
        // Another method, browser, way back, or an expired one: nothing.
        let forged = t.replacen(".fed.", ".pwd.", 1);
        assert_eq!(pending_user(&kek, &forged, "browser", "/back", 1001), None);
        assert_eq!(pending_user(&kek, &t, "other", "/back", 1001), None);
        assert_eq!(pending_user(&kek, &t, "browser", "/x", 1001), None);
        assert_eq!(
            pending_user(&kek, &t, "browser", "/back", 1000 + PENDING_TTL_SECS),
            None
        );
        let odd = t.replacen(".fed.", ".hwk.", 1);
        assert_eq!(pending_user(&kek, &odd, "browser", "/back", 1001), None);
    }

    #[test]
    fn signin_url_carries_the_way_back() {
        assert_eq!(
            signin_url("/t", "/t/authorize/continue?r=a&b", Some("al ice"), None),
            "/t/signin?return_to=%2Ft%2Fauthorize%2Fcontinue%3Fr%3Da%26b&login_hint=al+ice"
        );
        assert_eq!(
            signin_url("", "/device", None, Some(Level::OneFactor)),
            "/signin?return_to=%2Fdevice"
        );
        assert_eq!(
            signin_url("", "/x", None, Some(Level::MultiFactor)),
            "/signin?return_to=%2Fx&acr=urn%3Aconcierge%3Aacr%3Amfa"
        );
    }
}
