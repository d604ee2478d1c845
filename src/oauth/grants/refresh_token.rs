//! The refresh token grant (OAuth 2.1 §4.3). Public clients' tokens rotate on every use and a
//! reused one revokes its whole family (RFC 9700 §4.14.2), except for a short grace window in
//! which the client that just rotated a token may present it again (a retry after a lost
//! response, two processes refreshing at once) and get a successor that replaces the first.
//! Confidential clients keep theirs, with a sliding idle expiry under an absolute cap.

use async_trait::async_trait;
use serde_json::json;

use super::user_grant::{self, Authenticated, Holder, NewRefresh, UserGrant, issue};
use super::{Grant, Param, TokenRequest};
use crate::audit::{Event, Kind};
use crate::error::{ErrorCode, OAuthError};
use crate::oauth::authn::acr::Level;
use crate::oauth::context::Context;
use crate::oauth::policy;
use crate::oauth::scope::Scope;
use crate::oauth::tokens::TokenResponse;
use crate::store::{Presented, RefreshToken, Rotating, Rotation, Spent, Successor};
use crate::util;

pub const GRANT_TYPE: &str = "refresh_token";

pub struct RefreshTokenGrant;

fn invalid_grant(d: &'static str) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidGrant, d)
}

fn invalid_token() -> OAuthError {
    invalid_grant("the refresh token is invalid, expired or revoked")
}

/// Everything a refresh request must pass before its token is spent, so that a refused
/// request (another client's token, a widened scope or resource, a missing DPoP proof, a
/// sign-in weaker than the resource now requires) spends nothing and the rightful client's
/// next refresh still works.
async fn check(
    ctx: &Context,
    token: &RefreshToken,
    req: &TokenRequest<'_>,
) -> Result<Scope, OAuthError> {
    if token.client_id != req.client.client_id {
        return Err(invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    // RFC 9449 §5: a bound refresh token needs a proof with its key.
    if let Some(jkt) = &token.dpop_jkt
        && req.dpop_jkt != Some(jkt.as_str())
    {
        return Err(OAuthError::invalid_dpop_proof(
            "this refresh token is bound to a DPoP key: send a DPoP proof made with that key",
        ));
    }
    let resource = user_grant::granted_resource(ctx, req.form, &token.resources).await?;
    // The approval must still reach what a token for the resource needs now.
    let defaults = &req.client.metadata.default_acr_values;
    policy::strong_enough(
        policy::required_for_grant(ctx, defaults, resource.as_deref()),
        Level::of_session(token.acr.as_deref(), &token.amr),
        resource.as_deref(),
    )?;
    let granted = Scope::parse(&token.scope).map_err(OAuthError::internal)?;
    policy::narrow(req.form.get("scope"), &granted)
}

/// What rotating the presented token `p` does, decided under the store's lock on it.
///
/// `passed` says whether the request passed [`check`] (its client, its DPoP key, no widened
/// scope or resource); `grace_secs` is `tokens.refresh_reuse_grace_secs`.
/// - A usable token rotates; one failing the checks is refused as it is (spends nothing).
/// - A spent token is a replay (RFC 9700 §4.14.2: revoke the family), unless all of these
///   hold, when it is a retry whose successor is replaced: the grace is on, it was rotated at
///   most `grace_secs` ago, the request passed the checks (so it comes from the same client),
///   neither it nor its family is revoked, its absolute expiry has not passed, and the
///   successor recorded then is live — a token whose successor was itself rotated is an
///   older ancestor, and a revoked successor must stay revoked.
/// - Anything else (unknown, expired or revoked, never spent) is invalid.
pub fn decide(p: &Presented, passed: bool, now: i64, grace_secs: i64) -> Rotation {
    if p.usable(now) {
        return if passed {
            Rotation::Rotate
        } else {
            Rotation::Refuse
        };
    }
    let Some(rotated_at) = p.used_at else {
        return Rotation::Invalid;
    };
    let retry = grace_secs > 0
        && now - rotated_at <= grace_secs
        && passed
        && !p.revoked
        && p.token.absolute_expires_at > now
        && p.successor == Some(Successor::Live);
    if retry {
        Rotation::Replace
    } else {
        Rotation::Replay
    }
}

#[async_trait]
impl Grant for RefreshTokenGrant {
    fn grant_type(&self) -> &'static str {
        GRANT_TYPE
    }

    fn description(&self) -> &'static str {
        "A refresh token for a new access token, never wider than the grant (OAuth 2.1 §4.3)"
    }

    fn parameters(&self) -> &'static [Param] {
        &[Param {
            name: "refresh_token",
            description: "refresh_token: the refresh token",
        }]
    }

    async fn issue(
        &self,
        ctx: &Context,
        req: &TokenRequest<'_>,
    ) -> Result<TokenResponse, OAuthError> {
        let client = req.client;
        let raw = req
            .form
            .get("refresh_token")
            .ok_or_else(|| OAuthError::invalid_request("refresh_token is missing"))?;
        let now = ctx.now();
        let hash = util::secret_key(raw);
        let public = client.metadata.is_public();
        let grace = i64::from(ctx.config.tokens.refresh_reuse_grace_secs);
        // The successor a public client's token rotates into (a confidential client's keeps
        // its token).
        let successor = || user_grant::next_refresh(ctx, client, req.dpop_jkt);
        let by = |one_resource| Rotating {
            client_id: &client.client_id,
            dpop_jkt: req.dpop_jkt,
            one_resource,
        };

        // Most refreshes ask for the grant as it is (no `scope`, no `resource`). A public
        // client's token is then rotated first, in one write that reads it too, when it is
        // usable, this client's, bound to no key or to the proof's, and granted at most one
        // resource. Of `check`, only what the server's settings decide is left: the resource
        // still exists, and the sign-in is still strong enough for it. A rotation those refuse
        // is undone (`unrotate`), so it spends nothing. Any other token is read first, below.
        if public && req.form.get("scope").is_none() && req.form.all("resource").is_empty() {
            let (value, next) = successor();
            let rotated = ctx
                .refresh_tokens()
                .rotate_usable(&hash, &by(true), &next, now)
                .await?;
            if let Some(token) = rotated {
                return match check(ctx, &token, req).await {
                    Ok(scope) => tokens(ctx, req, &token, &scope, Some(value.as_str())).await,
                    Err(e) => {
                        ctx.refresh_tokens()
                            .unrotate(&hash, &next.token_hash)
                            .await?;
                        Err(e)
                    }
                };
            }
        }

        let found = ctx
            .refresh_tokens()
            .find_refresh(&hash, now)
            .await?
            .ok_or_else(invalid_token)?;
        // The checks read only what never changes on a stored token, so their answer holds
        // for the decision below, whatever happens to the token meanwhile.
        let checked = match check(ctx, &found.token, req).await {
            Ok(s) => Some(s),
            // Refused before anything is spent.
            Err(e) if found.usable(now) => return Err(e),
            // A spent token failing them is a replay (`decide`); a dead one is invalid.
            Err(_) => None,
        };
        let family_id = &found.token.family_id;

        let (rotated, token) = if public {
            // Public clients: rotation (OAuth 2.1 §4.3.1, RFC 9700 §4.14.2).
            let (value, next) = successor();
            let passed = checked.is_some();
            // A token that was usable when read and passed the checks can only be rotated
            // (`decide`): tried first in one write, which rotates it if it is still usable.
            // Anything else (spent meanwhile, retried within the grace window, replayed) is
            // decided on the locked token.
            let rotated = passed
                && found.usable(now)
                && ctx
                    .refresh_tokens()
                    .rotate_usable(&hash, &by(false), &next, now)
                    .await?
                    .is_some();
            let decision = if rotated {
                Rotation::Rotate
            } else {
                let successor = next.of(&found.token, now);
                ctx.refresh_tokens()
                    .rotate_refresh(&hash, &successor, now, &|p| decide(p, passed, now, grace))
                    .await?
            };
            match decision {
                Rotation::Rotate => {}
                Rotation::Replace => {
                    tracing::info!(client_id = %client.client_id, "refresh token retried within the reuse grace window");
                    ctx.audit.record(
                        Event::new(Kind::RefreshReuseWithinGrace)
                            .client(&client.client_id)
                            .user(&found.token.user_id)
                            .detail(json!({ "family_id": family_id, "grace_secs": grace })),
                    );
                }
                Rotation::Replay => return Err(replayed(ctx, &client.client_id, family_id).await?),
                // Only when the token was usable at first and failed the checks, which
                // returned above; answer as the checks do.
                Rotation::Refuse => {
                    return Err(check(ctx, &found.token, req)
                        .await
                        .err()
                        .unwrap_or_else(invalid_token));
                }
                Rotation::Invalid => return Err(invalid_token()),
            }
            (Some(value), found.token)
        } else {
            let idle = i64::from(ctx.config.tokens.refresh_token_idle_secs);
            match ctx
                .refresh_tokens()
                .use_refresh(&hash, now, now + idle)
                .await?
            {
                Spent::Fresh(t) => (None, t),
                Spent::Replayed { family_id } => {
                    return Err(replayed(ctx, &client.client_id, &family_id).await?);
                }
                Spent::Invalid => return Err(invalid_token()),
            }
        };
        // Rotated or renewed: the checks passed (a token failing them is never spent).
        let scope = match checked {
            Some(s) => s,
            None => check(ctx, &token, req).await?,
        };
        tokens(ctx, req, &token, &scope, rotated.as_deref()).await
    }
}

/// The tokens of a refresh of `token`, spent (rotated into the successor `rotated`, or
/// renewed), for `scope`.
async fn tokens(
    ctx: &Context,
    req: &TokenRequest<'_>,
    token: &RefreshToken,
    scope: &Scope,
    rotated: Option<&str>,
) -> Result<TokenResponse, OAuthError> {
    issue(
        ctx,
        req.form,
        UserGrant {
            client: req.client,
            user_id: &token.user_id,
            resources: &token.resources,
            scope,
            authenticated: Authenticated {
                auth_time: token.auth_time,
                amr: &token.amr,
                acr: token.acr.as_deref(),
                sid: token.sid.as_deref(),
            },
            nonce: None,
            refresh: match rotated {
                Some(value) => NewRefresh::Stored(value),
                None => NewRefresh::Keep,
            },
            dpop_jkt: req.dpop_jkt,
            authorization_details: None,
            // Spent live: a refresh token is revoked when its user is disabled.
            holder: Holder::Spent,
        },
    )
    .await
}

/// A spent refresh token came back: revoke its family (RFC 9700 §4.14.2), record it, and
/// answer with the error to return.
async fn replayed(
    ctx: &Context,
    client_id: &str,
    family_id: &str,
) -> Result<OAuthError, OAuthError> {
    let n = ctx
        .refresh_tokens()
        .revoke_family(family_id, ctx.now())
        .await?;
    tracing::warn!(client_id = %client_id, revoked = n, "refresh token reuse detected");
    ctx.audit.record(
        Event::new(Kind::RefreshReuseDetected)
            .client(client_id)
            .detail(json!({ "family_id": family_id, "revoked": n })),
    );
    Ok(invalid_grant(
        "the refresh token was already used; its family is revoked",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;
    const GRACE: i64 = 30;

    fn token() -> RefreshToken {
        RefreshToken {
            token_hash: vec![1; 32],
            family_id: "fam".into(),
            client_id: "agent".into(),
            user_id: "alice".into(),
            resources: vec!["https://mcp.example.com".into()],
            scope: "notes:read".into(),
            auth_time: NOW - 100,
            amr: vec!["pwd".into()],
            acr: None,
            sid: None,
            created_at: NOW - 100,
            expires_at: NOW + 1000,
            absolute_expires_at: NOW + 10_000,
            dpop_jkt: None,
        }
    }

    fn unspent() -> Presented {
        Presented {
            token: token(),
            used_at: None,
            revoked: false,
            successor: None,
        }
    }

    /// Rotated `ago` seconds before `NOW`, its successor in the state given.
    fn rotated(ago: i64, successor: Option<Successor>) -> Presented {
        Presented {
            used_at: Some(NOW - ago),
            successor,
            ..unspent()
        }
    }

    #[test]
    fn a_usable_token_rotates_or_is_refused_as_it_is() {
        assert_eq!(decide(&unspent(), true, NOW, GRACE), Rotation::Rotate);
        assert_eq!(decide(&unspent(), false, NOW, GRACE), Rotation::Refuse);
    }

    #[test]
    fn a_dead_token_that_was_never_spent_is_invalid() {
        let revoked = Presented {
            revoked: true,
            ..unspent()
        };
        assert_eq!(decide(&revoked, true, NOW, GRACE), Rotation::Invalid);
        let mut idle = unspent();
        idle.token.expires_at = NOW;
        assert_eq!(decide(&idle, true, NOW, GRACE), Rotation::Invalid);
        let mut old = unspent();
        old.token.absolute_expires_at = NOW - 1;
        assert_eq!(decide(&old, false, NOW, GRACE), Rotation::Invalid);
    }

    #[test]
    fn a_retry_within_the_window_replaces_the_live_successor() {
        let live = Some(Successor::Live);
        assert_eq!(
            decide(&rotated(0, live), true, NOW, GRACE),
            Rotation::Replace
        );
        assert_eq!(
            decide(&rotated(GRACE, live), true, NOW, GRACE),
            Rotation::Replace
        );
        // The idle expiry of the spent token does not matter; the family's absolute one does.
        let mut p = rotated(5, live);
        p.token.expires_at = NOW - 1;
        assert_eq!(decide(&p, true, NOW, GRACE), Rotation::Replace);
        p.token.absolute_expires_at = NOW;
        assert_eq!(decide(&p, true, NOW, GRACE), Rotation::Replay);
    }

    #[test]
    fn reuse_after_the_window_or_without_grace_is_a_replay() {
        let live = Some(Successor::Live);
        assert_eq!(
            decide(&rotated(GRACE + 1, live), true, NOW, GRACE),
            Rotation::Replay
        );
        assert_eq!(decide(&rotated(0, live), true, NOW, 0), Rotation::Replay);
    }

    #[test]
    fn reuse_by_another_client_or_key_is_a_replay() {
        assert_eq!(
            decide(&rotated(1, Some(Successor::Live)), false, NOW, GRACE),
            Rotation::Replay
        );
    }

    #[test]
    fn an_older_ancestor_or_a_revoked_grant_is_a_replay() {
        // Its successor was rotated in its turn: it is not the last rotated token.
        assert_eq!(
            decide(&rotated(1, Some(Successor::Spent)), true, NOW, GRACE),
            Rotation::Replay
        );
        // A revoked successor (revoked by the user, or replaced) stays revoked.
        assert_eq!(
            decide(&rotated(1, Some(Successor::Revoked)), true, NOW, GRACE),
            Rotation::Replay
        );
        // Rotated before successors were recorded, or the successor is gone.
        assert_eq!(
            decide(&rotated(1, None), true, NOW, GRACE),
            Rotation::Replay
        );
        let revoked = Presented {
            revoked: true,
            ..rotated(1, Some(Successor::Live))
        };
        assert_eq!(decide(&revoked, true, NOW, GRACE), Rotation::Replay);
    }
}
