//! Passkeys (WebAuthn, through `webauthn-rs`): registering one on the account page, signing
//! in with one alone (a discoverable credential, user verification required), or using one
//! as the second step after a password.
//!
//! The relying party is the issuer: its host is the RP ID and its scheme, host and port the
//! one origin accepted, so an assertion made for another site is refused. WebAuthn allows no
//! IP address as an RP ID: a server whose issuer's host is one offers no passkeys
//! ([`available`] is false and every ceremony answers [`PasskeyError::Unavailable`]).
//!
//! A ceremony's state (its challenge) is stored in the database, never in memory, so any
//! replica can finish it; it is single use, bound to the browser that started it (and to the
//! user, for registrations and second steps) and lives [`CEREMONY_TTL_SECS`].

use std::net::IpAddr;

use serde::Serialize;
use webauthn_rs::prelude::{
    AuthenticationResult, DiscoverableAuthentication, DiscoverableKey, Passkey,
    PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    Url, Uuid, Webauthn, WebauthnBuilder,
};

use super::super::context::Context;
use super::{SignedIn, SigninError};
use crate::audit::{Event, Kind};
use crate::store::{Ceremony, StoreError, StoredPasskey, User};
use crate::util;

/// The RFC 8176 `amr` value of a hardware-bound key (a passkey).
pub const AMR_HWK: &str = "hwk";
/// The RFC 8176 `amr` value of user presence and verification (the authenticator's PIN or
/// biometric), which a passwordless sign-in requires.
pub const AMR_USER: &str = "user";

/// How long a ceremony may take from its options to the browser's answer, seconds.
pub const CEREMONY_TTL_SECS: i64 = 300;

/// The longest name a passkey may have, in characters.
pub const MAX_NAME_CHARS: usize = 64;

const REGISTER: &str = "register";
const PASSWORDLESS: &str = "passwordless";
const SECOND_FACTOR: &str = "second_factor";

/// The relying party: this server as WebAuthn sees it.
pub struct RelyingParty {
    webauthn: Webauthn,
}

impl RelyingParty {
    /// The relying party of `issuer`: RP ID its host, origin its scheme://host[:port]. None
    /// when its host is an IP address (or it has none).
    pub fn for_issuer(issuer: &str) -> Option<Self> {
        let url = Url::parse(issuer).ok()?;
        let host = match url.host()? {
            url::Host::Domain(d) => d.to_string(),
            url::Host::Ipv4(_) | url::Host::Ipv6(_) => return None,
        };
        let origin = Url::parse(&url.origin().ascii_serialization()).ok()?;
        let webauthn = WebauthnBuilder::new(&host, &origin)
            .ok()?
            .rp_name(&host)
            .build()
            .ok()?;
        Some(Self { webauthn })
    }
}

impl std::fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelyingParty")
    }
}

/// Why a passkey ceremony did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    #[error(
        "passkeys are not available on this server: its issuer's host is an IP address, which \
         WebAuthn does not allow"
    )]
    Unavailable,
    /// Unknown, used already, expired, or started in another browser or for another user.
    #[error("the passkey request expired or was already used; start again")]
    CeremonyExpired,
    /// The browser's answer did not verify: wrong origin or challenge, bad signature, no user
    /// verification where it is required, a counter that went back, or not JSON we know.
    #[error("the passkey was not accepted")]
    Refused,
    /// No user has the passkey presented (or the user has none).
    #[error("this passkey is not registered here")]
    UnknownPasskey,
    #[error("this passkey is registered already")]
    Duplicate,
    #[error("give the passkey a name of 1 to {MAX_NAME_CHARS} characters")]
    BadName,
    /// The last second factor, where the server requires one.
    #[error("a second factor is required here: the last one cannot be removed")]
    LastFactor,
    #[error(transparent)]
    Signin(#[from] SigninError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the browser needs to run a ceremony: the ceremony's id (sent back with its answer)
/// and the options for `navigator.credentials.create`/`get` (`publicKey`, …).
#[derive(Debug, Serialize)]
pub struct Options {
    pub ceremony: String,
    #[serde(flatten)]
    pub options: serde_json::Value,
}

/// Does this server offer passkeys?
pub fn available(ctx: &Context) -> bool {
    ctx.authn.passkeys.is_some()
}

fn rp(ctx: &Context) -> Result<&Webauthn, PasskeyError> {
    ctx.authn
        .passkeys
        .as_ref()
        .map(|rp| &rp.webauthn)
        .ok_or(PasskeyError::Unavailable)
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// The verification failure, logged (it says why: origin, flags, signature, counter).
fn refused(what: &str, e: impl std::fmt::Display) -> PasskeyError {
    tracing::info!(error = %e, "passkey {what} refused");
    PasskeyError::Refused
}

/// A name as given: trimmed, 1 to [`MAX_NAME_CHARS`] characters, no control characters.
pub fn check_name(name: &str) -> Result<String, PasskeyError> {
    let name = name.trim();
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(PasskeyError::BadName);
    }
    Ok(name.to_string())
}

/// Store a new ceremony's state; the id the browser holds.
async fn begin(
    ctx: &Context,
    kind: &str,
    user_id: Option<&str>,
    binding: &str,
    state: &impl Serialize,
    options: &impl Serialize,
) -> Result<Options, PasskeyError> {
    let id = util::random_secret();
    let ceremony = Ceremony {
        kind: kind.to_string(),
        user_id: user_id.map(str::to_string),
        binding: binding.to_string(),
        state: serde_json::to_string(state).map_err(corrupt)?,
        expires_at: ctx.now() + CEREMONY_TTL_SECS,
    };
    ctx.passkeys()
        .put_ceremony(&util::secret_hash(&id), &ceremony)
        .await?;
    let options = serde_json::to_value(options).map_err(corrupt)?;
    Ok(Options {
        ceremony: id,
        options,
    })
}

/// Take a ceremony (it is gone afterwards, whatever follows): its state, when it is of this
/// kind, this browser's, this user's, and not expired.
async fn take<T: serde::de::DeserializeOwned>(
    ctx: &Context,
    id: &str,
    kind: &str,
    user_id: Option<&str>,
    binding: &str,
) -> Result<T, PasskeyError> {
    let Some(c) = ctx
        .passkeys()
        .take_ceremony(&util::secret_hash(id), ctx.now())
        .await?
    else {
        return Err(PasskeyError::CeremonyExpired);
    };
    if c.kind != kind || c.binding != binding || c.user_id.as_deref() != user_id {
        return Err(PasskeyError::CeremonyExpired);
    }
    Ok(serde_json::from_str(&c.state).map_err(corrupt)?)
}

/// The user's passkeys, stored and as the library reads them.
async fn load(ctx: &Context, user_id: &str) -> Result<Vec<(StoredPasskey, Passkey)>, StoreError> {
    ctx.passkeys()
        .list_passkeys(user_id)
        .await?
        .into_iter()
        .map(|s| {
            let p: Passkey = serde_json::from_str(&s.credential).map_err(corrupt)?;
            Ok((s, p))
        })
        .collect()
}

/// The user's passkeys, for their account page.
pub async fn list(ctx: &Context, user_id: &str) -> Result<Vec<StoredPasskey>, StoreError> {
    ctx.passkeys().list_passkeys(user_id).await
}

/// Has the user a passkey they can use here?
pub async fn has_passkey(ctx: &Context, user_id: &str) -> Result<bool, StoreError> {
    Ok(available(ctx) && !ctx.passkeys().list_passkeys(user_id).await?.is_empty())
}

/// A credential id as stored: base64url.
fn credential_id(p: &Passkey) -> String {
    util::b64(p.cred_id().as_ref())
}

/// Registration, first half: the options for `navigator.credentials.create`. The credential
/// is asked to be discoverable (so it signs in without a username) and user-verifying; the
/// user's passkeys are excluded (an authenticator holds one of theirs at most).
pub async fn register_start(
    ctx: &Context,
    user: &User,
    binding: &str,
) -> Result<Options, PasskeyError> {
    let webauthn = rp(ctx)?;
    let handle = ctx
        .passkeys()
        .passkey_handle(&user.id, &Uuid::new_v4().to_string(), ctx.now())
        .await?;
    let handle = Uuid::parse_str(&handle).map_err(corrupt)?;
    let exclude = load(ctx, &user.id)
        .await?
        .iter()
        .map(|(_, p)| p.cred_id().clone())
        .collect();
    let display = user.name.as_deref().unwrap_or(&user.username);
    let (ccr, state) = webauthn
        .start_passkey_registration(handle, &user.username, display, Some(exclude))
        .map_err(corrupt)?;
    // Discoverable: kept on the authenticator, so it signs in without a username.
    let mut ccr = serde_json::to_value(&ccr).map_err(corrupt)?;
    if let Some(sel) = ccr
        .pointer_mut("/publicKey/authenticatorSelection")
        .and_then(serde_json::Value::as_object_mut)
    {
        sel.insert("residentKey".into(), "required".into());
        sel.insert("requireResidentKey".into(), true.into());
    }
    begin(ctx, REGISTER, Some(&user.id), binding, &state, &ccr).await
}

/// Registration, second half: the browser's answer verified against the ceremony, and the
/// passkey stored under `name`.
pub async fn register_finish(
    ctx: &Context,
    user: &User,
    binding: &str,
    ceremony: &str,
    credential: serde_json::Value,
    name: &str,
) -> Result<StoredPasskey, PasskeyError> {
    let webauthn = rp(ctx)?;
    let name = check_name(name)?;
    let state: PasskeyRegistration = take(ctx, ceremony, REGISTER, Some(&user.id), binding).await?;
    let reg: RegisterPublicKeyCredential =
        serde_json::from_value(credential).map_err(|e| refused("registration", e))?;
    let passkey = webauthn
        .finish_passkey_registration(&reg, &state)
        .map_err(|e| refused("registration", e))?;
    let now = ctx.now();
    let stored = StoredPasskey {
        id: util::random_id(),
        user_id: user.id.clone(),
        credential_id: credential_id(&passkey),
        credential: serde_json::to_string(&passkey).map_err(corrupt)?,
        name,
        created_at: now,
        last_used_at: None,
    };
    match ctx.passkeys().insert_passkey(&stored).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Err(PasskeyError::Duplicate),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(user_id = %user.id, passkey = %stored.id, "passkey registered");
    ctx.audit.record(
        Event::new(Kind::PasskeyRegistered)
            .user(&user.id)
            .detail(serde_json::json!({ "passkey": stored.id, "name": stored.name })),
    );
    Ok(stored)
}

/// Rename the user's passkey `id`; false when they have none by that id.
pub async fn rename(
    ctx: &Context,
    user_id: &str,
    id: &str,
    name: &str,
) -> Result<bool, PasskeyError> {
    let name = check_name(name)?;
    let renamed = ctx.passkeys().rename_passkey(user_id, id, &name).await?;
    if renamed {
        ctx.audit.record(
            Event::new(Kind::PasskeyRenamed)
                .user(user_id)
                .detail(serde_json::json!({ "passkey": id, "name": name })),
        );
    }
    Ok(renamed)
}

/// Remove the user's passkey `id`; false when they have none by that id. Under
/// `[signin] mfa = "required"` the user's last second factor stays.
pub async fn remove(ctx: &Context, user_id: &str, id: &str) -> Result<bool, PasskeyError> {
    if ctx.config.signin.mfa == crate::config::MfaPolicy::Required {
        let passkeys = ctx.passkeys().list_passkeys(user_id).await?;
        let others = passkeys.iter().filter(|p| p.id != id).count();
        if passkeys.len() > others && others == 0 && !super::has_authenticator(ctx, user_id).await?
        {
            return Err(PasskeyError::LastFactor);
        }
    }
    let removed = ctx.passkeys().delete_passkey(user_id, id).await?;
    if removed {
        tracing::info!(user_id = %user_id, passkey = %id, "passkey removed");
        ctx.audit.record(
            Event::new(Kind::PasskeyRemoved)
                .user(user_id)
                .detail(serde_json::json!({ "passkey": id })),
        );
    }
    Ok(removed)
}

/// Record a successful use: when, and the credential's new counter (a counter that went back,
/// a sign of a cloned authenticator, was refused by the library before this).
async fn record_use(
    ctx: &Context,
    user_id: &str,
    mut passkeys: Vec<(StoredPasskey, Passkey)>,
    result: &AuthenticationResult,
) -> Result<(), StoreError> {
    let used = util::b64(result.cred_id().as_ref());
    let Some((_, passkey)) = passkeys.iter_mut().find(|(s, _)| s.credential_id == used) else {
        return Ok(());
    };
    let updated = match passkey.update_credential(result) {
        Some(true) => Some(serde_json::to_string(passkey).map_err(corrupt)?),
        _ => None,
    };
    ctx.passkeys()
        .passkey_used(user_id, &used, updated.as_deref(), ctx.now())
        .await?;
    Ok(())
}

/// Passwordless sign-in, first half: options for a discoverable credential (the browser's
/// autofill, or its passkey dialog), with user verification required.
pub async fn passwordless_start(ctx: &Context, binding: &str) -> Result<Options, PasskeyError> {
    let webauthn = rp(ctx)?;
    let (rcr, state) = webauthn
        .start_discoverable_authentication()
        .map_err(corrupt)?;
    begin(ctx, PASSWORDLESS, None, binding, &state, &rcr).await
}

/// Passwordless sign-in, second half: the passkey says who the user is; its assertion must
/// verify, with user verification. Attempts are counted like second steps (per user, before
/// the check). A disabled user is refused after the check.
pub async fn passwordless_finish(
    ctx: &Context,
    binding: &str,
    ceremony: &str,
    credential: serde_json::Value,
    addr: Option<IpAddr>,
    replacing: Option<&str>,
) -> Result<SignedIn, PasskeyError> {
    let webauthn = rp(ctx)?;
    let state: DiscoverableAuthentication =
        take(ctx, ceremony, PASSWORDLESS, None, binding).await?;
    let cred: PublicKeyCredential =
        serde_json::from_value(credential).map_err(|e| refused("sign-in", e))?;
    let (handle, _) = webauthn
        .identify_discoverable_authentication(&cred)
        .map_err(|e| refused("sign-in", e))?;
    let Some(user_id) = ctx
        .passkeys()
        .user_of_passkey_handle(&handle.to_string())
        .await?
    else {
        return Err(PasskeyError::UnknownPasskey);
    };
    let Some(user) = ctx.users().get_user(&user_id).await? else {
        return Err(PasskeyError::UnknownPasskey);
    };
    let passkeys = load(ctx, &user.id).await?;
    if passkeys.is_empty() {
        return Err(PasskeyError::UnknownPasskey);
    }
    super::second_factor_attempt(ctx, &user.id, AMR_HWK, addr).await?;
    let keys: Vec<DiscoverableKey> = passkeys.iter().map(|(_, p)| p.into()).collect();
    let verified = webauthn
        .finish_discoverable_authentication(&cred, state, &keys)
        .map_err(|e| refused("sign-in", e))
        .and_then(|r| {
            // The library requires it of discoverable sign-ins; checked again here, as a
            // passkey alone must be two factors.
            if r.user_verified() {
                Ok(r)
            } else {
                Err(refused("sign-in", "no user verification"))
            }
        });
    super::second_factor_outcome(ctx, &user, verified.is_ok(), false, addr)
        .await
        .map_err(|e| match e {
            SigninError::WrongCode => PasskeyError::Refused,
            e => e.into(),
        })?;
    let result = verified?;
    if user.is_disabled() {
        tracing::info!(user_id = %user.id, "passkey sign-in refused: the account is disabled");
        return Err(SigninError::Disabled.into());
    }
    record_use(ctx, &user.id, passkeys, &result).await?;
    let amr = vec![AMR_HWK.to_string(), AMR_USER.to_string()];
    Ok(super::signed_in(ctx, user, amr, addr, replacing).await?)
}

/// The second step with a passkey, first half: options naming the user's passkeys. The
/// caller checked the carried half-done sign-in that names `user_id`.
pub async fn second_factor_start(
    ctx: &Context,
    user_id: &str,
    binding: &str,
) -> Result<Options, PasskeyError> {
    let webauthn = rp(ctx)?;
    let passkeys: Vec<Passkey> = load(ctx, user_id)
        .await?
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    if passkeys.is_empty() {
        return Err(SigninError::PendingExpired.into());
    }
    let (rcr, state) = webauthn
        .start_passkey_authentication(&passkeys)
        .map_err(corrupt)?;
    begin(ctx, SECOND_FACTOR, Some(user_id), binding, &state, &rcr).await
}

/// The second step with a passkey, second half: counted and throttled like a code, then the
/// assertion verified against the ceremony started for this user in this browser.
pub async fn second_factor_finish(
    ctx: &Context,
    pending: &super::Pending,
    binding: &str,
    ceremony: &str,
    credential: serde_json::Value,
    addr: Option<IpAddr>,
    replacing: Option<&str>,
) -> Result<SignedIn, PasskeyError> {
    let webauthn = rp(ctx)?;
    let user_id = pending.user_id.as_str();
    let user = super::pending_signin_user(ctx, user_id).await?;
    let passkeys = load(ctx, user_id).await?;
    if passkeys.is_empty() {
        return Err(SigninError::PendingExpired.into());
    }
    super::second_factor_attempt(ctx, user_id, AMR_HWK, addr).await?;
    let state: PasskeyAuthentication =
        take(ctx, ceremony, SECOND_FACTOR, Some(user_id), binding).await?;
    let verified = serde_json::from_value::<PublicKeyCredential>(credential)
        .map_err(|e| refused("second step", e))
        .and_then(|cred| {
            webauthn
                .finish_passkey_authentication(&cred, &state)
                .map_err(|e| refused("second step", e))
        });
    super::second_factor_outcome(ctx, &user, verified.is_ok(), false, addr)
        .await
        .map_err(|e| match e {
            SigninError::WrongCode => PasskeyError::Refused,
            e => e.into(),
        })?;
    let result = verified?;
    record_use(ctx, user_id, passkeys, &result).await?;
    Ok(super::signed_in(ctx, user, pending.amr(AMR_HWK), addr, replacing).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(check_name("  Laptop  ").unwrap(), "Laptop");
        assert!(matches!(check_name("   "), Err(PasskeyError::BadName)));
        assert!(matches!(check_name("a\u{7}b"), Err(PasskeyError::BadName)));
        assert!(check_name(&"é".repeat(64)).is_ok());
        assert!(matches!(
            check_name(&"x".repeat(65)),
            Err(PasskeyError::BadName)
        ));
    }

    #[test]
    fn the_relying_party_is_the_issuer_and_never_an_ip_address() {
        assert!(RelyingParty::for_issuer("https://id.example.com/tenant").is_some());
        assert!(RelyingParty::for_issuer("http://localhost:8080").is_some());
        assert!(RelyingParty::for_issuer("http://127.0.0.1:8080").is_none());
        assert!(RelyingParty::for_issuer("http://[::1]:8080").is_none());
    }
}
