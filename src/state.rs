//! What every handler can reach: the protocol's [`Context`], the pages, the metrics, and the
//! store for the admin API's listings. Built once by `crate::startup`.

use std::sync::Arc;

use axum::extract::FromRef;

use crate::metrics::Metrics;
use crate::oauth::Context;
use crate::store::Store;
use crate::ui::Web;

/// The [`Services`] behind one `Arc`, so the clone axum makes for each extractor and
/// middleware is one counter increment.
#[derive(Clone)]
pub struct AppState(pub Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The server's parts, shared by every request through [`AppState`].
pub struct Services {
    /// Everything protocol code works with.
    pub oauth: Arc<Context>,
    /// The whole store, for the admin API's listings and the background sweeper; protocol
    /// decisions go through `oauth`.
    pub store: Arc<dyn Store>,
    pub web: Web,
    pub metrics: Arc<Metrics>,
}

impl FromRef<AppState> for Arc<Metrics> {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}
