//! Who another issuer's user is here: account linking. An enterprise IdP's user redeeming
//! an ID-JAG (and, later, a user signing in with an upstream provider) is named by
//! (issuer, subject); every token we issue for them names a local user, so a resource
//! server never sees one issuer's `sub` where it expects another's.
//!
//! In order (draft-ietf-oauth-identity-assertion-authz-grant §4.3 notes that `iss` + `sub`
//! is the stable key and `email` helps find existing users):
//! 1. **By subject:** the (issuer, subject) pair linked before — by an operator
//!    (`concierge user link`, the admin API), by email, or when it was provisioned.
//! 2. **By verified email**, only when the issuer's policy allows it: the one local account
//!    whose verified address equals the asserted one (without case), if the assertion does
//!    not say `email_verified: false`. Several such accounts, or an account already linked
//!    to another subject of the same issuer (an address reassigned at the IdP), is refused:
//!    an operator decides.
//! 3. **Provisioned:** a new account without a password, when the issuer's policy allows it
//!    (the default); otherwise refused.

use super::super::context::Context;
use crate::audit::{Event, Kind};
use crate::store::{LinkedBy, LinkedIdentity, StoreError, User};
use crate::util;

/// The user as another issuer names them.
#[derive(Debug, Clone, Copy)]
pub struct ForeignUser<'a> {
    pub issuer: &'a str,
    pub subject: &'a str,
    pub email: Option<&'a str>,
    pub email_verified: Option<bool>,
    pub name: Option<&'a str>,
}

/// What an issuer's policy allows beyond links already made.
#[derive(Debug, Clone, Copy)]
pub struct LinkPolicy {
    pub by_email: bool,
    pub provision: bool,
}

/// The local user, and how they were found.
#[derive(Debug)]
pub struct Linked {
    pub user: User,
    /// `None` for a link that existed before this request.
    pub made: Option<LinkedBy>,
}

/// Why no local user names the foreign one.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(
        "no account here is linked to this user, and this issuer's users are not provisioned; \
         an operator can link one"
    )]
    NoAccount,
    #[error("several accounts here have this verified email address; an operator must link one")]
    AmbiguousEmail,
    #[error(
        "the account with this email address is linked to another user of this issuer; an \
         operator must link one"
    )]
    LinkedElsewhere,
    #[error("the account here linked to this user is disabled")]
    Disabled,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The address to link by, when the policy and the assertion allow it.
fn email_to_link(who: &ForeignUser<'_>, policy: LinkPolicy) -> Option<String> {
    if !policy.by_email || who.email_verified == Some(false) {
        return None;
    }
    who.email
        .map(str::trim)
        .filter(|e| looks_like_email(e))
        .map(str::to_string)
}

/// One `@` with something on both sides, printable, of a sane length: enough to compare,
/// not a validation of deliverability.
pub fn looks_like_email(e: &str) -> bool {
    e.len() <= 254
        && !e.chars().any(|c| c.is_control() || c.is_whitespace())
        && matches!(e.split_once('@'), Some((l, d)) if !l.is_empty() && !d.is_empty() && !d.contains('@'))
}

/// The username a provisioned account gets: the asserted address, or `subject@issuer-host`,
/// with `~` and a random suffix on later tries (the name is taken).
fn provisioned_username(who: &ForeignUser<'_>, attempt: u32) -> String {
    let base = match who.email.map(str::trim).filter(|e| looks_like_email(e)) {
        Some(e) => e.to_string(),
        None => {
            let host = url::Url::parse(who.issuer)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| "idp".into());
            format!("{}@{host}", who.subject)
        }
    };
    let base: String = base.chars().filter(|c| !c.is_control()).take(180).collect();
    if attempt == 0 {
        base
    } else {
        format!("{base}~{}", &util::random_id()[..6])
    }
}

/// The local user `who` is, linking or provisioning as the policy allows.
pub async fn local_user(
    ctx: &Context,
    who: &ForeignUser<'_>,
    policy: LinkPolicy,
) -> Result<Linked, LinkError> {
    let identities = ctx.identities();
    if let Some(link) = identities.find_identity(who.issuer, who.subject).await?
        && let Some(user) = ctx.users().get_user(&link.user_id).await?
    {
        if user.is_disabled() {
            return Err(LinkError::Disabled);
        }
        return Ok(Linked { user, made: None });
    }
    let now = ctx.now();
    let link = |user_id: &str, linked_by| LinkedIdentity {
        issuer: who.issuer.to_string(),
        subject: who.subject.to_string(),
        user_id: user_id.to_string(),
        email: who.email.map(str::to_string),
        linked_by,
        created_at: now,
    };

    if let Some(email) = email_to_link(who, policy) {
        let mut found = ctx.users().users_with_verified_email(&email, 2).await?;
        if found.len() > 1 {
            return Err(LinkError::AmbiguousEmail);
        }
        if let Some(user) = found.pop() {
            if user.is_disabled() {
                return Err(LinkError::Disabled);
            }
            let taken = identities
                .identities_of(&user.id)
                .await?
                .iter()
                .any(|l| l.issuer == who.issuer && l.subject != who.subject);
            if taken {
                return Err(LinkError::LinkedElsewhere);
            }
            let winner = identities
                .link_identity(&link(&user.id, LinkedBy::Email))
                .await?;
            return finish(ctx, who, winner, LinkedBy::Email).await;
        }
    }

    if !policy.provision {
        return Err(LinkError::NoAccount);
    }
    let mut attempt = 0;
    loop {
        let user = User {
            id: util::random_id(),
            username: provisioned_username(who, attempt),
            email: who.email.map(str::to_string),
            email_verified: who.email.is_some() && who.email_verified == Some(true),
            name: who.name.map(|n| n.chars().take(200).collect()),
            password_hash: None,
            disabled_at: None,
            password_change_required: false,
            created_at: now,
            updated_at: now,
        };
        match identities
            .provision_user(&user, &link(&user.id, LinkedBy::Provisioned))
            .await
        {
            Ok(winner) => return finish(ctx, who, winner, LinkedBy::Provisioned).await,
            Err(StoreError::Conflict(_)) if attempt < 3 => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Read back the user a new link names and record the link in the audit log.
async fn finish(
    ctx: &Context,
    who: &ForeignUser<'_>,
    user_id: String,
    how: LinkedBy,
) -> Result<Linked, LinkError> {
    let user = ctx
        .users()
        .get_user(&user_id)
        .await?
        .ok_or(LinkError::NoAccount)?;
    ctx.audit.record(
        Event::new(Kind::IdentityLinked)
            .user(&user.id)
            .detail(serde_json::json!({ "issuer": who.issuer, "linked_by": how.as_str() })),
    );
    Ok(Linked {
        user,
        made: Some(how),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who<'a>(email: Option<&'a str>, verified: Option<bool>) -> ForeignUser<'a> {
        ForeignUser {
            issuer: "https://idp.example:8443/tenant",
            subject: "u-42",
            email,
            email_verified: verified,
            name: None,
        }
    }

    const BOTH: LinkPolicy = LinkPolicy {
        by_email: true,
        provision: true,
    };

    #[test]
    fn email_links_only_when_allowed_and_not_denied() {
        assert_eq!(
            email_to_link(&who(Some(" a@b.example "), None), BOTH).as_deref(),
            Some("a@b.example")
        );
        assert!(email_to_link(&who(Some("a@b.example"), Some(true)), BOTH).is_some());
        assert!(email_to_link(&who(Some("a@b.example"), Some(false)), BOTH).is_none());
        let off = LinkPolicy {
            by_email: false,
            provision: true,
        };
        assert!(email_to_link(&who(Some("a@b.example"), Some(true)), off).is_none());
        for bad in ["", "@b", "a@", "a b@c", "a@b@c", "a\u{0}@b"] {
            assert!(
                email_to_link(&who(Some(bad), None), BOTH).is_none(),
                "{bad:?}"
            );
        }
        assert!(email_to_link(&who(None, Some(true)), BOTH).is_none());
    }

    #[test]
    fn provisioned_usernames() {
        assert_eq!(
            provisioned_username(&who(Some("a@b.example"), None), 0),
            "a@b.example"
        );
        assert_eq!(
            provisioned_username(&who(None, None), 0),
            "u-42@idp.example"
        );
        let again = provisioned_username(&who(None, None), 1);
        assert!(
            again.starts_with("u-42@idp.example~") && again.len() == 23,
            "{again}"
        );
        let long = "x".repeat(500);
        let w = ForeignUser {
            subject: &long,
            ..who(None, None)
        };
        assert!(provisioned_username(&w, 2).chars().count() <= 200);
    }
}
