//! [`StepUp`]: a handler's or tool's "this needs more" outcome, answered by the
//! guard with the challenge that makes the client ask for it.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use axum::response::{IntoResponse, Response};

use crate::challenge::{BearerChallenge, ChallengeError};

/// The JSON-RPC error code of a [`StepUp`] turned into rmcp's `ErrorData`
/// (feature `rmcp`), in the range JSON-RPC 2.0 §5.1 leaves to servers. A
/// client only sees it when the guard cannot answer with the HTTP challenge
/// (a tool that streams its answer as server-sent events).
pub const STEP_UP_ERROR_CODE: i32 = -32003;

/// What a [`StepUp`] asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Need {
    /// These scopes (RFC 6750 §3.1 `insufficient_scope`, 403).
    Scopes(Vec<String>),
    /// A stronger or more recent sign-in (RFC 9470 §3
    /// `insufficient_user_authentication`, 401).
    Authentication {
        /// Acceptable authentication context classes (`acr_values`); empty: any.
        acr_values: Vec<String>,
        /// The most seconds since the user's authentication (`max_age`).
        max_age: Option<u64>,
    },
}

/// "This request needs more than the token gives": a missing scope, or a
/// stronger authentication of the user. Made by
/// [`Principal::require_scopes`](crate::Principal::require_scopes) and
/// friends, or directly.
///
/// Returned from a tool or handler behind the [`GuardLayer`](crate::GuardLayer),
/// the guard answers the HTTP request with the challenge — `403
/// insufficient_scope` with `scope` (the request's scopes plus the missing
/// ones), or `401 insufficient_user_authentication` with `acr_values` and
/// `max_age` — so MCP clients step up. With the `rmcp` feature it converts
/// into rmcp's `ErrorData` (`?` in a tool); as an axum response it is the
/// challenge itself.
///
/// The HTTP answer needs the response to still be open: rmcp services the
/// guard mounts answer with JSON ([`Guard::mcp_router`](crate::Guard) sets
/// that). A tool that streams (sends progress first) answers with the
/// JSON-RPC error instead, code [`STEP_UP_ERROR_CODE`], whose `data` holds
/// the `error` and `scope`.
///
/// ```
/// use concierge_guard::StepUp;
/// let step_up = StepUp::scopes(["notes:share"]);
/// assert_eq!(step_up.to_string(), "this needs the scope notes:share");
/// assert_eq!(step_up.challenge().to_string(), r#"Bearer error="insufficient_scope", scope="notes:share""#);
/// ```
#[derive(Clone)]
pub struct StepUp {
    need: Need,
    context: Option<Arc<dyn StepUpSink>>,
}

/// What the guard's layer lends each request it lets through: where a
/// handler's step-up is recorded, and how a step-up is answered with the
/// request's scopes and metadata URL. (The layer implements it; principals
/// and step-ups only hold it, so they need not know the layer.)
pub(crate) trait StepUpSink: Send + Sync {
    /// The step-up recorded for this request, taken by the layer afterwards.
    fn needs(&self) -> &Mutex<Option<Need>>;
    /// The full answer to `need` for this request.
    fn answer(&self, need: &Need) -> Response;
}

impl fmt::Debug for StepUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepUp").field("need", &self.need).finish()
    }
}

impl fmt::Display for StepUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.need {
            Need::Scopes(scopes) if scopes.len() == 1 => {
                write!(f, "this needs the scope {}", scopes[0])
            }
            Need::Scopes(scopes) => write!(f, "this needs the scopes {}", scopes.join(" ")),
            Need::Authentication { .. } => {
                f.write_str("this needs a stronger or more recent sign-in")
            }
        }
    }
}

impl std::error::Error for StepUp {}

impl StepUp {
    /// Needs these scopes.
    ///
    /// ```
    /// let s = concierge_guard::StepUp::scopes(["a", "b"]);
    /// assert_eq!(s.challenge().http_status(), 403);
    /// ```
    #[must_use]
    pub fn scopes<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::from_need(Need::Scopes(scopes.into_iter().map(Into::into).collect()))
    }

    /// Needs a sign-in with one of `acr_values` (any when empty), at most
    /// `max_age` seconds ago (RFC 9470).
    ///
    /// ```
    /// let s = concierge_guard::StepUp::authentication(["mfa"], Some(300));
    /// assert_eq!(
    ///     s.challenge().to_string(),
    ///     r#"Bearer error="insufficient_user_authentication", error_description="a stronger or more recent sign-in is required", acr_values="mfa", max_age="300""#,
    /// );
    /// ```
    #[must_use]
    pub fn authentication<I, S>(acr_values: I, max_age: Option<u64>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::from_need(Need::Authentication {
            acr_values: acr_values.into_iter().map(Into::into).collect(),
            max_age,
        })
    }

    pub(crate) fn from_need(need: Need) -> Self {
        Self {
            need,
            context: None,
        }
    }

    pub(crate) fn in_context(mut self, context: Option<Arc<dyn StepUpSink>>) -> Self {
        self.context = context;
        self
    }

    /// What is needed.
    #[must_use]
    pub fn need(&self) -> &Need {
        &self.need
    }

    /// The challenge for this need alone (the guard adds the request's
    /// scopes and `resource_metadata`).
    #[must_use]
    pub fn challenge(&self) -> BearerChallenge {
        challenge_for(&self.need)
    }

    /// Tells the guard's layer, which answers the request with the challenge.
    pub(crate) fn record(&self) {
        if let Some(ctx) = &self.context {
            let mut slot = ctx.needs().lock().unwrap_or_else(PoisonError::into_inner);
            *slot = Some(match (slot.take(), &self.need) {
                (Some(Need::Scopes(mut have)), Need::Scopes(more)) => {
                    for s in more {
                        if !have.contains(s) {
                            have.push(s.clone());
                        }
                    }
                    Need::Scopes(have)
                }
                (Some(auth @ Need::Authentication { .. }), Need::Scopes(_)) => auth,
                (_, need) => need.clone(),
            });
        }
    }
}

/// The challenge for a need, without the request's scopes or metadata URL.
pub(crate) fn challenge_for(need: &Need) -> BearerChallenge {
    match need {
        Need::Scopes(scopes) => BearerChallenge::insufficient_scope(scopes),
        Need::Authentication {
            acr_values,
            max_age,
        } => BearerChallenge::new()
            .with_error(ChallengeError::InsufficientUserAuthentication)
            .with_error_description("a stronger or more recent sign-in is required")
            .with_acr_values(acr_values)
            .with_max_age(*max_age),
    }
}

impl IntoResponse for StepUp {
    fn into_response(self) -> axum::response::Response {
        self.record();
        match &self.context {
            Some(ctx) => ctx.answer(&self.need),
            None => {
                crate::rejection::GuardRejection::challenge_only(self.challenge()).into_response()
            }
        }
    }
}

#[cfg(feature = "rmcp")]
impl From<StepUp> for rmcp::ErrorData {
    /// rmcp's error for a tool that returns the step-up; recorded for the
    /// guard, which answers the HTTP request with the challenge.
    fn from(step_up: StepUp) -> Self {
        step_up.record();
        let data = match &step_up.need {
            Need::Scopes(scopes) => serde_json::json!({
                "error": ChallengeError::InsufficientScope.as_str(),
                "scope": scopes.join(" "),
            }),
            Need::Authentication {
                acr_values,
                max_age,
            } => serde_json::json!({
                "error": ChallengeError::InsufficientUserAuthentication.as_str(),
                "acr_values": acr_values.join(" "),
                "max_age": max_age,
            }),
        };
        rmcp::ErrorData::new(
            rmcp::model::ErrorCode(STEP_UP_ERROR_CODE),
            step_up.to_string(),
            Some(data),
        )
    }
}
