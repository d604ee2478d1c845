//! Build the application from a [`Config`] and run it until told to stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::keys::{Kek, KeyManager};
use crate::oauth::cimd::CimdResolver;
use crate::oauth::client_assertion::AssertionVerifier;
use crate::oauth::clients::ClientDirectory;
use crate::oauth::resource::ResourceDirectory;
use crate::store::{self, Store};

/// What every handler can reach: the [`Services`] behind one `Arc`, so the clone axum makes
/// for each extractor and middleware is one counter increment.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The server's parts, shared by every request through [`AppState`].
pub struct Services {
    pub config: Arc<Config>,
    /// The issuer exactly as configured: metadata, tokens and `iss` parameters use it byte for
    /// byte (RFC 9207, RFC 8414 §3.3).
    pub issuer: Arc<str>,
    pub store: Arc<dyn Store>,
    pub keys: Arc<KeyManager>,
    pub clients: Arc<ClientDirectory>,
    /// Registered resources, cached within `resources.cache_secs`.
    pub resources: Arc<ResourceDirectory>,
    /// Verifies `private_key_jwt` client assertions (and caches clients' `jwks_uri` sets).
    pub assertions: Arc<AssertionVerifier>,
    pub cimd: Option<Arc<CimdResolver>>,
    pub pages: Arc<crate::ui::Pages>,
    /// The issuer's path ("" at the root): prefix of every link and form on our pages.
    pub base_path: Arc<str>,
    /// Queues security events for the audit log.
    pub audit: crate::audit::Audit,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// A built application, ready to serve.
pub struct App {
    pub state: AppState,
    issuer_path: String,
}

/// Open the configured store, creating the data directory for SQLite.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let url = config.database_url();
    if url.starts_with("sqlite:") && config.database_url.is_none() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    }
    store::connect(&url)
        .await
        .with_context(|| format!("opening the database ({})", redact_url(&url)))
}

/// The key-encryption key from config, or the generated one in the data directory.
pub fn load_kek(config: &Config) -> anyhow::Result<Kek> {
    if config.key_encryption_key.is_none() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    }
    Ok(
        Kek::load_or_create(config.key_encryption_key.as_deref(), &config.data_dir)?
            .with_previous(&config.previous_key_encryption_keys)?,
    )
}

/// A database URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        let issuer_url = config.issuer_url()?;
        let store = open_store(&config).await?;
        if store.backend() == "postgres" && config.key_encryption_key.is_none() {
            tracing::warn!(
                "no key_encryption_key configured: using the key file in the data directory; \
                 every replica sharing this database needs the same key \
                 (set CONCIERGE_KEY_ENCRYPTION_KEY)"
            );
        }
        let kek = load_kek(&config)?;
        let keys = KeyManager::start(store.clone(), kek, config.tokens.longest_signed_lifetime())
            .await
            .context("loading signing keys")?;
        let cimd = if config.cimd.enabled {
            Some(Arc::new(CimdResolver::new(config.cimd.clone())?))
        } else {
            None
        };
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let audit = crate::audit::Audit::start(store.clone(), metrics.clone());
        let clients = ClientDirectory::new(store.clone(), cimd.clone(), config.clients.cache_secs)
            .with_audit(audit.clone());
        let resources = ResourceDirectory::new(store.clone(), config.resources.cache_secs);
        let assertions = AssertionVerifier::new(
            &config.issuer,
            store.clone(),
            config.cimd.allow_loopback,
            config.cimd.timeout_ms,
        )?;
        let issuer_path = issuer_url.path().trim_end_matches('/').to_string();
        let state = AppState(Arc::new(Services {
            issuer: Arc::from(config.issuer.as_str()),
            config: Arc::new(config),
            store: store.clone(),
            keys: Arc::new(keys),
            clients: Arc::new(clients),
            resources: Arc::new(resources),
            assertions: Arc::new(assertions),
            cimd,
            pages: Arc::new(crate::ui::Pages::new().context("compiling page templates")?),
            base_path: Arc::from(issuer_path.as_str()),
            audit,
            metrics,
        }));
        Ok(Self { state, issuer_path })
    }

    /// Serve on `listener` until `shutdown` resolves, then finish in-flight requests.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let tasks = spawn_background(&self.state);
        let audit = self.state.audit.clone();
        let router = crate::router::build(self.state, &self.issuer_path);
        let result = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        for t in tasks {
            t.abort();
        }
        audit.flush().await;
        result.context("serving HTTP")
    }

    /// Bind `config.listen` and serve in the background; for tests and embedding.
    pub async fn spawn(self, listener: TcpListener) -> RunningServer {
        let addr = listener.local_addr().ok();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(self.serve(listener, async {
            let _ = rx.await;
        }));
        RunningServer {
            addr,
            stop: Some(tx),
            handle,
        }
    }
}

/// A server running in the background.
pub struct RunningServer {
    pub addr: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Stop accepting, finish in-flight requests, and wait.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.handle.await.context("server task")?
    }
}

/// Periodic work: reread keys (rotation elsewhere), sweep expired registrations, old
/// rate-limit windows and expired single-use `jti`s.
fn spawn_background(state: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let keys = state.keys.clone();
    let every = Duration::from_secs(state.config.keys.refresh_secs.max(1));
    let reload = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = keys.reload().await {
                tracing::error!(error = %e, "reloading signing keys failed");
            }
        }
    });
    let store = state.store.clone();
    let audit_retention = i64::from(state.config.audit.retention_days) * 86_400;
    let sweep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let now = crate::util::now();
            match store.delete_expired_clients(now).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(count = n, "expired unused client registrations removed"),
                Err(e) => tracing::error!(error = %e, "sweeping expired clients failed"),
            }
            if let Err(e) = store.purge_rate_limits(now - 86_400).await {
                tracing::error!(error = %e, "purging rate-limit windows failed");
            }
            if let Err(e) = store.purge_expired_grants(now).await {
                tracing::error!(error = %e, "purging expired codes and sessions failed");
            }
            if let Err(e) = store.purge_used(now).await {
                tracing::error!(error = %e, "purging expired single-use jtis failed");
            }
            if let Err(e) = store.purge_audit(now - audit_retention).await {
                tracing::error!(error = %e, "purging old audit events failed");
            }
        }
    });
    vec![reload, sweep]
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
