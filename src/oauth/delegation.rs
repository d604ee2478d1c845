//! Delegation chains (issue 14.5): the paths a user's authority takes through token exchange,
//! so the user can see "Assistant → Calendar → Notes" and cut any link.
//!
//! The app the user connected holds a token for a resource (the root). Each exchange of a
//! token derived from it is a hop: a client (the resource server acting) gets a token for
//! another resource. A hop is recorded once per path and named by the exchanged token
//! (claim `delegation`); [`is_live`] runs in the one access-token check, so a cut hop's
//! tokens, and the tokens of every hop below it, are inactive at once, at introspection and
//! for further exchanges. Disconnecting the app at the root cuts its chains too (in the
//! consent store's revocation); a token the app gets after that comes from a new grant and
//! starts a new chain, while a cut the user made holds for as long as the app stays connected.

use serde::Serialize;
use serde_json::{Value, json};

use super::context::Context;
use crate::audit::{Event, Kind};
use crate::error::{ErrorCode, OAuthError};
use crate::store::delegations::{CUT_BY_APP, CUT_BY_USER};
use crate::store::{Delegation, HopPath, StoreError};
use crate::util;

/// A hop's use is written at most this often (seconds): exchanges in a burst cost reads only.
const TOUCH_EVERY_SECS: i64 = 60;

/// The longest chain followed upward; exchange refuses far shorter ones
/// (`tokens.max_delegation_depth`), this only bounds a walk over stored rows.
const MAX_WALK: usize = 32;

/// Is the hop `id` live, and `sub`'s? (A token naming another user's hop is not.)
pub async fn is_live(ctx: &Context, id: &str, sub: &str) -> Result<bool, StoreError> {
    Ok(ctx
        .delegations()
        .get_delegation(id)
        .await?
        .is_some_and(|d| d.is_live() && d.user_id == sub))
}

/// The presented token an exchange derives from, as far as its chain goes.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub sub: &'a str,
    pub client_id: &'a str,
    pub iat: i64,
    /// Its hop, when it was itself exchanged.
    pub delegation: Option<&'a str>,
}

fn refused(description: String) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidGrant, description)
}

/// The hop an exchange goes through, and its whole chain from the app the user connected.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub hop: Delegation,
    pub chain: Vec<Link>,
}

/// Record the hop of an exchange by `client_id` of `subject` (a token whose audience
/// `source` the exchange policy matched) toward `target`: answer it with its chain, or
/// refuse when the user cut it or disconnected the app. A client's own token (no user)
/// makes no chain: `None`.
pub async fn record(
    ctx: &Context,
    subject: Subject<'_>,
    source: &str,
    client_id: &str,
    target: &str,
) -> Result<Option<Recorded>, OAuthError> {
    // RFC 9068 §2.2: a token with no resource owner has the client as its subject.
    if subject.sub == subject.client_id {
        return Ok(None);
    }
    let store = ctx.delegations();
    let parent = match subject.delegation {
        Some(id) => Some(store.get_delegation(id).await?.ok_or_else(|| {
            refused("the subject_token's delegation chain has ended".to_string())
        })?),
        None => None,
    };
    let path = HopPath {
        user_id: subject.sub,
        root_client_id: parent
            .as_ref()
            .map_or(subject.client_id, |p| p.root_client_id.as_str()),
        root_resource: parent.as_ref().map_or(source, |p| p.root_resource.as_str()),
        parent_id: parent.as_ref().map_or("", |p| p.id.as_str()),
        client_id,
        resource: target,
    };
    let now = ctx.now();
    // A hop is shown, and its path remembered, as long as a refresh-token family lives.
    let keep_until = now + i64::from(ctx.config.tokens.refresh_token_absolute_secs);
    let fresh = || Delegation {
        id: util::random_id(),
        user_id: path.user_id.to_string(),
        root_client_id: path.root_client_id.to_string(),
        root_resource: path.root_resource.to_string(),
        parent_id: path.parent_id.to_string(),
        client_id: client_id.to_string(),
        resource: target.to_string(),
        created_at: now,
        last_used_at: now,
        expires_at: keep_until,
        revoked_at: None,
        cut_by: None,
    };
    // Twice at most: a concurrent exchange of the same path may insert or renew it first.
    let mut found = None;
    for _ in 0..2 {
        let Some(hop) = store.find_delegation(&path).await? else {
            // A new path: its user must still be there, and allowed in (a token issued
            // before they were deleted or disabled starts no chain).
            if ctx
                .users()
                .get_user(path.user_id)
                .await?
                .is_none_or(|u| u.is_disabled())
            {
                return Err(refused(
                    "the subject_token's user no longer exists or is disabled".into(),
                ));
            }
            let new = fresh();
            if store.insert_delegation(&new).await? {
                found = Some(new);
                break;
            }
            continue;
        };
        match (hop.revoked_at, hop.cut_by.as_deref()) {
            (None, _) => {
                if hop.last_used_at + TOUCH_EVERY_SECS <= now {
                    store.touch_delegation(&hop.id, now, keep_until).await?;
                }
                found = Some(hop);
                break;
            }
            // The app was disconnected: a token issued since comes from a new grant, and
            // starts the chain again; an older one does not.
            (Some(at), Some(CUT_BY_APP)) if subject.iat > at => {
                let new = fresh();
                if store.renew_delegation(&hop.id, &new).await? {
                    found = Some(new);
                    break;
                }
            }
            (Some(_), Some(CUT_BY_APP)) => {
                return Err(refused(
                    "the user disconnected the app this subject_token was issued to".into(),
                ));
            }
            (Some(_), _) => {
                return Err(refused(format!(
                    "the user cut the delegation from this chain to {target}"
                )));
            }
        }
    }
    let Some(hop) = found else {
        return Err(OAuthError::new(
            ErrorCode::TemporarilyUnavailable,
            "the delegation chain changed during this exchange; try again",
        ));
    };
    // The chain, from the parent already in hand: only the hops above it are read.
    let mut chain = match &parent {
        Some(p) => self::chain(ctx, p).await?,
        None => vec![Link {
            client_id: hop.root_client_id.clone(),
            resource: hop.root_resource.clone(),
        }],
    };
    chain.push(Link {
        client_id: hop.client_id.clone(),
        resource: hop.resource.clone(),
    });
    Ok(Some(Recorded { hop, chain }))
}

/// One link of a chain: a client, and the resource its token is for. The first link is the
/// app the user connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    pub client_id: String,
    pub resource: String,
}

/// The chain down to `hop`, from the app the user connected: each link the client holding a
/// token and its resource. Hops already swept end the walk.
pub async fn chain(ctx: &Context, hop: &Delegation) -> Result<Vec<Link>, StoreError> {
    let mut below = vec![hop.clone()];
    while below.len() < MAX_WALK {
        let top = &below[below.len() - 1];
        if top.parent_id.is_empty() {
            break;
        }
        match ctx.delegations().get_delegation(&top.parent_id).await? {
            Some(parent) => below.push(parent),
            None => break,
        }
    }
    Ok(links(&below))
}

/// The links of hops given bottom-up (a hop, its parent, …, the first hop).
fn links(bottom_up: &[Delegation]) -> Vec<Link> {
    let Some(first) = bottom_up.last() else {
        return Vec::new();
    };
    let root = Link {
        client_id: first.root_client_id.clone(),
        resource: first.root_resource.clone(),
    };
    std::iter::once(root)
        .chain(bottom_up.iter().rev().map(|h| Link {
            client_id: h.client_id.clone(),
            resource: h.resource.clone(),
        }))
        .collect()
}

/// The chain of every hop of `hops` (one user's), from their own rows: no further reads.
/// In tree order: each hop after the one above it, siblings oldest first.
pub fn chains(hops: &[Delegation]) -> Vec<(Delegation, Vec<Link>)> {
    // Each hop with its place in the tree: the (created, id) of every hop from the top.
    type Placed = (Vec<(i64, String)>, Delegation, Vec<Link>);
    let mut all: Vec<Placed> = hops
        .iter()
        .map(|hop| {
            let mut bottom_up = vec![hop.clone()];
            while bottom_up.len() < MAX_WALK {
                let top = &bottom_up[bottom_up.len() - 1];
                match hops.iter().find(|p| p.id == top.parent_id) {
                    Some(parent) if !top.parent_id.is_empty() => bottom_up.push(parent.clone()),
                    _ => break,
                }
            }
            let order = bottom_up
                .iter()
                .rev()
                .map(|h| (h.created_at, h.id.clone()))
                .collect();
            (order, hop.clone(), links(&bottom_up))
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all.into_iter()
        .map(|(_, hop, links)| (hop, links))
        .collect()
}

/// Cut `user_id`'s live hop `id` and every hop below it, and audit it: the tokens derived
/// through it turn inactive and no exchange goes through it again. The chain it cut, or
/// `None` when the user has no such live hop.
pub async fn cut(ctx: &Context, user_id: &str, id: &str) -> Result<Option<Vec<Link>>, StoreError> {
    let store = ctx.delegations();
    let Some(hop) = store
        .get_delegation(id)
        .await?
        .filter(|h| h.user_id == user_id && h.is_live())
    else {
        return Ok(None);
    };
    let chain = chain(ctx, &hop).await?;
    let hops = store.cut_delegation(user_id, id, ctx.now()).await?;
    if hops == 0 {
        return Ok(None);
    }
    tracing::info!(user_id = %user_id, hop = %id, hops, "delegation cut");
    ctx.audit.record(
        Event::new(Kind::DelegationCut)
            .client(&hop.client_id)
            .user(user_id)
            .detail(json!({ "id": id, "chain": chain, "hops": hops })),
    );
    Ok(Some(chain))
}

/// What the audit log keeps of an exchanged token's chain.
pub fn audit_detail(hop: &Delegation, chain: &[Link]) -> Value {
    json!({ "id": hop.id, "chain": chain })
}

/// Did this hop end because the app at its root was disconnected?
pub fn ended_with_app(hop: &Delegation) -> bool {
    hop.cut_by.as_deref() == Some(CUT_BY_APP)
}

/// Whether a hop is cut, in words for the pages: by whom.
pub fn cut_reason(hop: &Delegation) -> Option<&'static str> {
    match hop.cut_by.as_deref() {
        None if hop.revoked_at.is_none() => None,
        Some(CUT_BY_USER) => Some("cut"),
        Some(CUT_BY_APP) => Some("ended with the app"),
        _ => Some("cut"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(id: &str, parent: &str, client: &str, resource: &str) -> Delegation {
        Delegation {
            id: id.into(),
            user_id: "alice".into(),
            root_client_id: "assistant".into(),
            root_resource: "https://calendar".into(),
            parent_id: parent.into(),
            client_id: client.into(),
            resource: resource.into(),
            created_at: 0,
            last_used_at: 0,
            expires_at: 10,
            revoked_at: None,
            cut_by: None,
        }
    }

    #[test]
    fn chains_run_from_the_app_down_to_each_hop() {
        let a = hop("a", "", "calendar-server", "https://notes");
        let b = hop("b", "a", "notes-server", "https://tasks");
        let all = chains(&[b.clone(), a.clone()]);
        // The hop above comes first.
        assert_eq!(all[0].0.id, "a");
        let names = |links: &[Link]| -> Vec<String> {
            links
                .iter()
                .map(|l| format!("{}@{}", l.client_id, l.resource))
                .collect()
        };
        assert_eq!(
            names(&all[1].1),
            [
                "assistant@https://calendar",
                "calendar-server@https://notes",
                "notes-server@https://tasks"
            ]
        );
        assert_eq!(
            names(&all[0].1),
            [
                "assistant@https://calendar",
                "calendar-server@https://notes"
            ]
        );
        // A hop whose parent is gone (swept) still names its own root and itself.
        let orphan = chains(&[b]);
        assert_eq!(orphan[0].1.len(), 2);
    }
}
