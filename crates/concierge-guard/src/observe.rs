//! What the guard reports: a `tracing` event per refusal, and hooks for
//! metrics on accepted and refused requests.

use std::fmt;
use std::sync::Arc;

use crate::principal::Principal;

/// A refused request, as handed to the [`on_refuse`](crate::GuardBuilder::on_refuse)
/// hook (and logged as a `tracing` event with the same fields).
///
/// ```
/// # let guard = concierge_guard::Guard::builder("https://auth.example.com", "https://mcp.example.com/mcp");
/// let guard = guard.on_refuse(|refusal| {
///     // e.g. a counter labelled with refusal.reason: "no_token", "expired", …
///     let _ = (refusal.reason, refusal.status);
/// });
/// # let _ = guard;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Refusal {
    /// Why, as a short stable name: `no_token`, `invalid_request`,
    /// `insufficient_scope`, `no_scope_rule`, `too_large`,
    /// `insufficient_user_authentication`, or a [`TokenError::reason`](crate::TokenError::reason).
    pub reason: &'static str,
    /// The HTTP status answered.
    pub status: u16,
}

type AcceptHook = dyn Fn(&Principal) + Send + Sync;
type RefuseHook = dyn Fn(&Refusal) + Send + Sync;

/// The hooks configured on the builder.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub(crate) on_accept: Option<Arc<AcceptHook>>,
    pub(crate) on_refuse: Option<Arc<RefuseHook>>,
    pub(crate) on_ready: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("on_accept", &self.on_accept.is_some())
            .field("on_refuse", &self.on_refuse.is_some())
            .field("on_ready", &self.on_ready.is_some())
            .finish()
    }
}

impl Hooks {
    pub(crate) fn accepted(&self, principal: &Principal) {
        if let Some(hook) = &self.on_accept {
            hook(principal);
        }
    }

    /// Logs the refusal and calls the hook. `detail` is the description sent
    /// to the client; `hint` names the setting an operator may need.
    pub(crate) fn refused(&self, refusal: Refusal, detail: &str, hint: Option<&str>) {
        if refusal.reason == "no_token" {
            tracing::debug!(
                target: "concierge_guard",
                reason = refusal.reason,
                status = refusal.status,
                "request refused: no access token"
            );
        } else {
            tracing::info!(
                target: "concierge_guard",
                reason = refusal.reason,
                status = refusal.status,
                detail,
                hint,
                "request refused"
            );
        }
        if let Some(hook) = &self.on_refuse {
            hook(&refusal);
        }
    }
}
