//! axum extractors for [`Principal`] and typed claims.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::challenge::{BearerChallenge, ChallengeError};
use crate::layer::{GuardContext, GuardRejection};
use crate::principal::Principal;

/// The challenge for a request that reached a handler without a principal.
fn missing(parts: &Parts) -> GuardRejection {
    let challenge = match parts.extensions.get::<Arc<GuardContext>>() {
        Some(ctx) => ctx.guard.challenge(&ctx.scopes),
        None => {
            tracing::error!(
                target: "concierge_guard",
                "a handler extracts Principal but no GuardLayer runs in front of it"
            );
            BearerChallenge::new()
        }
    };
    GuardRejection::challenge_only(challenge)
}

/// Takes the principal the [`GuardLayer`](crate::GuardLayer) validated.
/// Without one (an [`optional`](crate::GuardLayer::optional) layer and no
/// token, or no layer at all) the handler is not called and the client gets
/// the 401 challenge.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = GuardRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| missing(parts))
    }
}

/// `Option<Principal>`: `None` when the request carried no token (with an
/// [`optional`](crate::GuardLayer::optional) layer).
impl<S: Send + Sync> OptionalFromRequestParts<S> for Principal {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Principal>().cloned())
    }
}

/// The token's claims as your own type: an axum extractor (and, with the
/// `rmcp` feature, a tool parameter) for custom claims. A token whose claims
/// do not fit is refused with 401 `invalid_token`, so declare optional claims
/// as `Option` or `#[serde(default)]`.
///
/// ```
/// use axum::{Router, routing::get};
/// use concierge_guard::Claims;
///
/// #[derive(serde::Deserialize)]
/// struct Tenant {
///     tenant: String,
/// }
///
/// async fn handler(Claims(t): Claims<Tenant>) -> String {
///     t.tenant
/// }
/// let app: Router = Router::new().route("/tenant", get(handler));
/// ```
#[derive(Debug, Clone)]
pub struct Claims<T>(pub T);

impl<T: DeserializeOwned> Claims<T> {
    /// The claims of `principal` as `T`.
    pub(crate) fn of(principal: &Principal) -> Result<Self, String> {
        principal
            .claims_as()
            .map(Claims)
            .map_err(|e| format!("the token's claims do not have the shape this server needs: {e}"))
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Claims<T> {
    type Rejection = GuardRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let principal =
            <Principal as FromRequestParts<S>>::from_request_parts(parts, state).await?;
        Self::of(&principal).map_err(|description| {
            let challenge = match parts.extensions.get::<Arc<GuardContext>>() {
                Some(ctx) => ctx.guard.challenge(&ctx.scopes),
                None => BearerChallenge::new(),
            };
            GuardRejection::challenge_only(
                challenge
                    .with_error(ChallengeError::InvalidToken)
                    .with_error_description(description),
            )
        })
    }
}
