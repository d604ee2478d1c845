//! The user's side of the device authorization grant (RFC 8628 §3.3): user codes that are
//! easy to read and type, finding the request a typed code names (guessing is throttled),
//! and the user's decision. The device's side is in `grants::device_code`.

use std::net::IpAddr;
use std::sync::Arc;

use super::authn::acr::Level;
use super::authn::throttle::{Bucket, Throttled};
use super::authorize::Asked;
use super::consent;
use super::context::Context;
use super::policy;
use super::resource::Resource;
use super::scope::Scope;
use crate::audit::{Event, Kind};
use crate::error::{ErrorCode, OAuthError};
use crate::store::{DeviceApproval, DeviceCode, Session, StoreError};

/// Consonants only (no vowels, so no words; no look-alikes such as 0/O or 1/I).
const ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

/// A new user code, `XXXX-XXXX` (20^8 ≈ 2.6·10^10 codes; entry is rate-limited).
pub fn new_user_code() -> String {
    let bytes = crate::util::random_bytes::<8>();
    let chars: String = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    format!("{}-{}", &chars[..4], &chars[4..])
}

/// What a person typed, in the stored form: upper case, dashes and spaces ignored.
pub fn normalize_user_code(typed: &str) -> Option<String> {
    let chars: String = typed
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (chars.len() == 8 && chars.bytes().all(|b| ALPHABET.contains(&b)))
        .then(|| format!("{}-{}", &chars[..4], &chars[4..]))
}

/// Why a typed code leads nowhere.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("too many wrong codes; retry in {} s", .0.retry_after)]
    Throttled(Throttled),
    #[error("that code is not valid, or it expired")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The pending request a user typed the code of. Wrong codes from one address are
/// throttled (RFC 8628 §5.1: user codes are short, so guessing must be slow).
pub async fn find_pending(
    ctx: &Context,
    typed: &str,
    addr: Option<IpAddr>,
) -> Result<DeviceCode, LookupError> {
    pending_or_guess(ctx, normalize_user_code(typed).as_deref(), addr).await
}

/// The pending request with user code `code`, unless this address guessed wrong too often;
/// a miss (or `None`, an answer already known to be wrong) counts as a wrong guess.
async fn pending_or_guess(
    ctx: &Context,
    code: Option<&str>,
    addr: Option<IpAddr>,
) -> Result<DeviceCode, LookupError> {
    let now = ctx.now();
    let throttle = &ctx.authn.throttle;
    let bucket = Bucket::DeviceCodeGuess(addr);
    if let Some(t) = throttle.is_full(ctx.rate_limits(), bucket, now).await? {
        return Err(LookupError::Throttled(t));
    }
    let found = match code {
        Some(code) => ctx.devices().pending_device(code, now).await?,
        None => None,
    };
    match found {
        Some(d) => Ok(d),
        None => {
            throttle.failed(ctx.rate_limits(), bucket, now).await?;
            Err(LookupError::NotFound)
        }
    }
}

/// The proof, carried by the consent form, that this browser session entered `user_code`:
/// a decision is taken only for a code the deciding session typed (or opened from the
/// device's link), so the decision form cannot be used to guess codes (RFC 8628 §5.1).
pub fn entry_tag(ctx: &Context, sid: &str, user_code: &str) -> String {
    ctx.keys
        .kek()
        .request_tag(&format!("device-entry\n{sid}\n{user_code}"))
}

/// Did this session enter `user_code`? (See [`entry_tag`].)
pub fn entered_here(ctx: &Context, sid: &str, user_code: &str, tag: &str) -> bool {
    ctx.keys
        .kek()
        .verify_request_tag(&format!("device-entry\n{sid}\n{user_code}"), tag)
}

/// The pending request a consent form decides: only a code this session entered, and with
/// wrong ones throttled like code entry.
pub async fn for_decision(
    ctx: &Context,
    session: &Session,
    user_code: &str,
    tag: &str,
    addr: Option<IpAddr>,
) -> Result<DeviceCode, LookupError> {
    let entered = entered_here(ctx, &session.sid, user_code, tag).then_some(user_code);
    pending_or_guess(ctx, entered, addr).await
}

/// How strongly the user approving `request` must have signed in (see
/// [`policy::required_level`]); None: a password will do.
pub async fn required_level(
    ctx: &Context,
    request: &DeviceCode,
    resources: &[Arc<Resource>],
) -> Result<Option<Level>, OAuthError> {
    policy::required_level(ctx, &request.client_id, resources, &[]).await
}

/// The resources and scope a pending request asks for (resources looked up again, so one
/// removed since is refused).
pub async fn asked(
    ctx: &Context,
    request: &DeviceCode,
) -> Result<(Vec<Arc<Resource>>, Scope), OAuthError> {
    Ok((
        policy::stored_resources(ctx, &request.resources).await?,
        Scope::parse(&request.scope).unwrap_or_default(),
    ))
}

/// Record the user's decision on a pending request: approval remembers the consent and
/// binds the request to the user and how they signed in. False when the request was no
/// longer pending.
pub async fn decide(
    ctx: &Context,
    request: &DeviceCode,
    session: &Session,
    approve: bool,
    granted: &Scope,
) -> Result<bool, OAuthError> {
    // Never more than the device asked for.
    let granted = granted.retain(|t| request.scope.split(' ').any(|s| s == t));
    if approve {
        let (resources, _) = asked(ctx, request).await?;
        // The page sent a session that falls short to sign in again; a form posted anyway
        // is refused.
        if let Some(level) = required_level(ctx, request, &resources).await?
            && Level::of_session(session.acr.as_deref(), &session.amr) < level
        {
            return Err(OAuthError::new(
                ErrorCode::AccessDenied,
                format!("approving this needs a sign-in with {}", level.words()),
            ));
        }
        let asked = Asked {
            client_id: &request.client_id,
            resources: &resources,
            scope: &granted,
            details: None,
        };
        consent::save(ctx, &session.user_id, &asked).await?;
    }
    let by = approve.then_some(DeviceApproval {
        user_id: &session.user_id,
        auth_time: session.auth_time,
        amr: &session.amr,
        acr: session.acr.as_deref(),
        sid: &session.sid,
    });
    if !ctx
        .devices()
        .decide_device(&request.user_code, by, &granted.to_string(), ctx.now())
        .await?
    {
        return Ok(false);
    }
    tracing::info!(client_id = %request.client_id, approved = approve, "device decision");
    let kind = if approve {
        Kind::DeviceApproved
    } else {
        Kind::DeviceDenied
    };
    ctx.audit.record(
        Event::new(kind)
            .client(&request.client_id)
            .user(&session.user_id)
            .detail(
                serde_json::json!({ "scope": granted.to_string(), "resources": request.resources }),
            ),
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_round_trip_through_sloppy_typing() {
        let code = new_user_code();
        assert_eq!(code.len(), 9);
        assert_eq!(normalize_user_code(&code).as_deref(), Some(code.as_str()));
        let sloppy = code.to_lowercase().replace('-', " ");
        assert_eq!(normalize_user_code(&sloppy).as_deref(), Some(code.as_str()));
        assert_eq!(
            normalize_user_code("BCDF-GHJA"),
            None,
            "vowels never appear"
        );
        assert_eq!(normalize_user_code("BCD"), None);
    }

    /// Property tests (README: Fuzzing).
    mod fuzz {
        use proptest::prelude::*;

        use super::*;
        use crate::fuzz::{config, nasty_string};

        proptest! {
            #![proptest_config(config())]

            /// Any typed text: a code in stored form that normalises to itself, or none.
            #[test]
            fn normalised_codes_renormalise_to_themselves(typed in prop_oneof![
                nasty_string(),
                "[BCDFGHJKLMNPQRSTVWXZbcdfghjklmnpqrstvwxz -]{6,14}",
            ]) {
                if let Some(code) = normalize_user_code(&typed) {
                    let again = normalize_user_code(&code);
                    prop_assert_eq!(again.as_deref(), Some(code.as_str()));
                    prop_assert_eq!(code.len(), 9);
                    prop_assert_eq!(&code[4..5], "-");
                    prop_assert!(code.bytes().filter(|b| *b != b'-').all(|b| ALPHABET.contains(&b)));
                }
            }

            /// A new code typed sloppily (any case, dashes and spaces anywhere) is found.
            #[test]
            fn sloppy_typing_finds_the_code(noise in proptest::collection::vec((any::<bool>(), proptest::sample::select(&["", " ", "-", "  ", "--"][..])), 9)) {
                let code = new_user_code();
                let typed: String = code
                    .chars()
                    .filter(|c| *c != '-')
                    .zip(noise)
                    .map(|(c, (lower, sep))| {
                        let c = if lower { c.to_ascii_lowercase() } else { c };
                        format!("{sep}{c}")
                    })
                    .collect();
                prop_assert_eq!(normalize_user_code(&typed), Some(code));
            }
        }
    }
}
