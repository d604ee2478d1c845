//! What the two polled grants share — the device grant (RFC 8628 §3.4–3.5) and CIBA in poll
//! mode (OpenID Connect CIBA Core §7.3, §11): each poll is checked, in this order, for the
//! request's expiry (`expired_token`), for coming too soon after the last one (`slow_down`,
//! and the interval grows), and for the user's decision so far (`authorization_pending`,
//! `access_denied`). Only then is the approved request spent. (The device grant tries the
//! spend first, by a statement that makes the same checks, and comes here only when it spent
//! nothing, to answer why. CIBA reads first: in real use most of its polls come before the
//! user decides, and a read answers those without a write.)
//!
//! The spend of an approved request stores the new grant's first refresh token in the same
//! write ([`Redemption`]), and the tokens come from the request as spent ([`Approved`]).

use super::TokenRequest;
use super::user_grant::{
    Authenticated, Holder, NewRefresh, UserGrant, issue, may_refresh, new_refresh,
    revoked_if_refused,
};
use crate::error::{ErrorCode, OAuthError};
use crate::oauth::authorization_details;
use crate::oauth::context::Context;
use crate::oauth::scope::Scope;
use crate::oauth::tokens::TokenResponse;
use crate::store::{FirstRefresh, StoreError};
use crate::util;

/// How much longer a client must wait after polling too fast (RFC 8628 §3.5: "increased by
/// 5 seconds"; CIBA Core §11 refers to it).
pub const SLOW_DOWN_STEP: i64 = 5;

/// A polled request as stored.
#[derive(Debug, Clone, Copy)]
pub struct Polled<'a> {
    /// What the client polls with, for error descriptions (`device_code`, `auth_req_id`).
    pub name: &'static str,
    /// `pending`, `approved` or `denied`.
    pub status: &'a str,
    pub interval_secs: i64,
    pub last_polled_at: Option<i64>,
    pub expires_at: i64,
}

/// Check one poll at `now`; `record(interval)` remembers it and the interval the next poll
/// must wait. `Ok` means the request was approved and may be spent: that poll is not
/// recorded, since spending the request ends its polling (a write saved on the one poll
/// that yields tokens).
pub async fn check(
    now: i64,
    p: Polled<'_>,
    record: impl AsyncFnOnce(i64) -> Result<(), StoreError>,
) -> Result<(), OAuthError> {
    if p.expires_at <= now {
        return Err(OAuthError::new(
            ErrorCode::ExpiredToken,
            format!("the {} expired; start again", p.name),
        ));
    }
    if p.last_polled_at
        .is_some_and(|last| now - last < p.interval_secs)
    {
        let longer = p.interval_secs + SLOW_DOWN_STEP;
        record(longer).await?;
        let mut err = OAuthError::new(
            ErrorCode::SlowDown,
            format!("polling too fast; wait at least {longer} s between requests"),
        );
        err.retry_after = Some(longer as u64);
        return Err(err);
    }
    if p.status == "approved" {
        return Ok(());
    }
    record(p.interval_secs).await?;
    match p.status {
        "pending" => Err(OAuthError::new(
            ErrorCode::AuthorizationPending,
            "the user has not decided yet",
        )),
        // RFC 8628 §3.5, CIBA Core §11: a token endpoint error, so 400 like the others.
        "denied" => Err(
            OAuthError::new(ErrorCode::AccessDenied, "the user denied the request")
                .with_status(http::StatusCode::BAD_REQUEST),
        ),
        other => Err(OAuthError::internal(format!(
            "a polled request has the unknown status {other:?}"
        ))),
    }
}

/// An approved request as its spend returned it, whichever grant polled it: who approved it,
/// how they signed in, and what they approved.
#[derive(Debug, Clone, Copy)]
pub struct Approved<'a> {
    pub user_id: Option<&'a str>,
    pub auth_time: Option<i64>,
    pub amr: &'a [String],
    pub acr: Option<&'a str>,
    pub sid: Option<&'a str>,
    pub resources: &'a [String],
    pub scope: &'a str,
    /// RFC 9396 details the user approved, as stored (CIBA only).
    pub authorization_details: Option<&'a str>,
}

/// The new grant a poll spends its request for: its family, and the first refresh token the
/// spend stores in the same write (one write per redemption) when the client may refresh
/// and the request may have one (`refreshable`: RFC 9396 details approve one action, which
/// no refresh token may outlive).
pub struct Redemption {
    family_id: String,
    refresh: Option<(String, FirstRefresh)>,
}

impl Redemption {
    pub fn new(ctx: &Context, req: &TokenRequest<'_>, refreshable: bool, now: i64) -> Self {
        let client = req.client;
        Self {
            family_id: util::ordered_id(),
            refresh: (refreshable && may_refresh(client))
                .then(|| new_refresh(ctx, client, req.dpop_jkt, now)),
        }
    }

    /// What the spend stores beside it: the family's id and its first refresh token.
    pub fn stored_with(&self) -> Option<(&str, &FirstRefresh)> {
        self.refresh
            .as_ref()
            .map(|(_, t)| (self.family_id.as_str(), t))
    }

    /// The tokens of the request `a`, spent with this redemption's refresh token stored. If
    /// they are refused after the spend (the user disabled, a resource or scope refused),
    /// that token's family is revoked: nobody holds it.
    pub async fn issue(
        self,
        ctx: &Context,
        req: &TokenRequest<'_>,
        a: Approved<'_>,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let stored = self.refresh.map(|(raw, _)| raw);
        let issued = issued(ctx, req, a, stored.as_deref()).await;
        revoked_if_refused(ctx, issued, stored.is_some(), &self.family_id, now).await
    }
}

/// The tokens of the spent request `a`, with the refresh token `stored` with its spend, if
/// any.
async fn issued(
    ctx: &Context,
    req: &TokenRequest<'_>,
    a: Approved<'_>,
    stored: Option<&str>,
) -> Result<TokenResponse, OAuthError> {
    let (Some(user_id), Some(auth_time)) = (a.user_id, a.auth_time) else {
        return Err(OAuthError::internal("an approved request has no user"));
    };
    let details = authorization_details::stored(a.authorization_details)?;
    let scope = Scope::parse(a.scope).map_err(OAuthError::internal)?;
    issue(
        ctx,
        req.form,
        UserGrant {
            client: req.client,
            user_id,
            resources: a.resources,
            scope: &scope,
            authenticated: Authenticated {
                auth_time,
                amr: a.amr,
                acr: a.acr,
                sid: a.sid,
            },
            nonce: None,
            refresh: stored.map_or(NewRefresh::Keep, NewRefresh::Stored),
            dpop_jkt: req.dpop_jkt,
            authorization_details: details.as_ref(),
            holder: Holder::Read,
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn polled(status: &str, last: Option<i64>) -> Polled<'_> {
        Polled {
            name: "auth_req_id",
            status,
            interval_secs: 5,
            last_polled_at: last,
            expires_at: 100,
        }
    }

    async fn outcome(now: i64, p: Polled<'_>) -> (Result<(), &'static str>, Option<i64>) {
        let mut recorded = None;
        let r = check(now, p, async |i| {
            recorded = Some(i);
            Ok(())
        })
        .await
        .map_err(|e| e.code.as_str());
        (r, recorded)
    }

    #[tokio::test]
    async fn each_state_answers_as_the_specs_say() {
        assert_eq!(
            outcome(100, polled("approved", None)).await,
            (Err("expired_token"), None)
        );
        assert_eq!(
            outcome(50, polled("approved", Some(47))).await,
            (Err("slow_down"), Some(10))
        );
        assert_eq!(
            outcome(50, polled("pending", Some(45))).await,
            (Err("authorization_pending"), Some(5))
        );
        assert_eq!(
            outcome(50, polled("denied", None)).await,
            (Err("access_denied"), Some(5))
        );
        assert_eq!(outcome(50, polled("approved", None)).await, (Ok(()), None));
        // A status no code writes is not taken for an approval.
        assert_eq!(
            outcome(50, polled("approve", None)).await,
            (Err("server_error"), Some(5))
        );
    }
}
