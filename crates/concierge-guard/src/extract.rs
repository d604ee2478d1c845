//! axum extractors for [`Principal`].

use std::convert::Infallible;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;

use crate::challenge::BearerChallenge;
use crate::layer::{GuardContext, GuardRejection};
use crate::principal::Principal;

/// Takes the principal the [`GuardLayer`](crate::GuardLayer) validated.
/// Without one (an [`optional`](crate::GuardLayer::optional) layer and no
/// token, or no layer at all) the handler is not called and the client gets
/// the 401 challenge.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = GuardRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        let challenge = match parts.extensions.get::<GuardContext>() {
            Some(ctx) => ctx.guard.challenge(&ctx.scopes),
            None => {
                tracing::error!(
                    "a handler extracts Principal but no GuardLayer runs in front of it"
                );
                BearerChallenge::new()
            }
        };
        Err(GuardRejection::challenge_only(challenge))
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
