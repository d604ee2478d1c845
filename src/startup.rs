//! Build the application from a [`Config`] and run it until told to stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::keys::{Kek, KeyManager, KeyPolicy};
use crate::oauth::Context;
use crate::oauth::grants::GrantRegistry;
use crate::state::{AppState, Services};
use crate::store::{self, Open, Schema, Store};

/// A built application, ready to serve.
pub struct App {
    pub state: AppState,
}

/// Open the configured store, creating the data directory for SQLite.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    open_store_as(config, Open::Migrate)
        .await
        .map(|(store, _)| store)
}

/// Open the configured database as `how` says (creating the data directory only when the
/// database may be created); with where its schema stands.
pub async fn open_store_as(config: &Config, how: Open) -> anyhow::Result<(Arc<dyn Store>, Schema)> {
    let url = config.database_url();
    if how == Open::Migrate && url.starts_with("sqlite:") && config.database_url.is_none() {
        create_data_dir(&config.data_dir)?;
    }
    store::open(&url, how)
        .await
        .with_context(|| format!("opening the database ({})", redact_url(&url)))
}

/// The database for an operator command: as `how` says, said on standard error (which
/// database, which issuer) once per process, and refused when its schema is behind this
/// binary (only `serve` and `concierge migrate` change the schema).
pub async fn open_cli_store(config: &Config, how: Open) -> anyhow::Result<Arc<dyn Store>> {
    open_cli_store_schema(config, how)
        .await
        .map(|(store, _)| store)
}

/// [`open_cli_store`], with where the schema stands.
pub async fn open_cli_store_schema(
    config: &Config,
    how: Open,
) -> anyhow::Result<(Arc<dyn Store>, Schema)> {
    static SAID: std::sync::Once = std::sync::Once::new();
    let (store, schema) = open_store_as(config, how).await?;
    let url = redact_url(&config.database_url());
    SAID.call_once(|| eprintln!("concierge: database {url}, issuer {}", config.issuer));
    if !schema.pending.is_empty() {
        anyhow::bail!(
            "the database at {url} is older than this concierge: {} migration(s) pending ({}); \
             run `concierge migrate` first (servers apply them when they start)",
            schema.pending.len(),
            schema.pending.join(", ")
        );
    }
    if !schema.unknown.is_empty() {
        eprintln!(
            "concierge: warning: the database has {} migration(s) newer than this binary ({}); \
             changes are made under the expand-then-contract rule (UPGRADE.md)",
            schema.unknown.len(),
            schema.unknown.join(", ")
        );
    }
    Ok((store, schema))
}

/// The data directory (the SQLite database, the generated key-encryption key), created
/// readable by its owner only: it holds every secret's hash and the key that unlocks the
/// signing keys. An existing directory keeps the permissions its operator gave it.
fn create_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))
}

/// The key-encryption key from config, or the one in the data directory. When there is
/// none, a new one is generated but written to its file only when something is first sealed
/// under it ([`Kek::ensure_saved`]), so a command that fails leaves no stray key file.
pub fn load_kek(config: &Config) -> anyhow::Result<Kek> {
    if config.key_encryption_key.is_none() {
        create_data_dir(&config.data_dir)?;
    }
    Ok(
        Kek::load_or_generate(config.key_encryption_key.as_deref(), &config.data_dir)?
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
    /// The application with the standard grants.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with(config, GrantRegistry::standard()).await
    }

    /// The application serving `grants` (tests, and servers that add a grant of their own).
    pub async fn build_with(config: Config, grants: GrantRegistry) -> anyhow::Result<Self> {
        config.validate()?;
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        crate::oauth::id_jag::check_config(&config.id_jag)
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        let issuer_url = config.issuer_url()?;
        let (store, schema) = open_store_as(&config, Open::Migrate).await?;
        if !schema.unknown.is_empty() {
            // A newer release migrated this database (a rolling update, or a rollback): its
            // migrations only add (expand-then-contract, UPGRADE.md), so this one runs on.
            tracing::warn!(
                unknown = %schema.unknown.join(", "),
                "the database has {} migration(s) newer than this binary; running on it \
                 (expand-then-contract, see UPGRADE.md)",
                schema.unknown.len()
            );
        }
        if store.backend() == "postgres" && config.key_encryption_key.is_none() {
            tracing::warn!(
                "no key_encryption_key configured: using the key file in the data directory; \
                 every replica sharing this database needs the same key \
                 (set CONCIERGE_KEY_ENCRYPTION_KEY)"
            );
        }
        // The admin API is a resource of this server's issuer, registered by the server
        // itself, so the CLI can tell whether it is configured for the same issuer.
        crate::manage::ensure_admin_resource(store.as_ref(), &config.issuer)
            .await
            .context("registering the admin API as a resource")?;
        let kek = load_kek(&config)?;
        let keys = Arc::new(
            KeyManager::start(store.clone(), kek, KeyPolicy::from_config(&config))
                .await
                .context("loading signing keys")?,
        );
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let audit = crate::audit::Audit::start(
            store.clone(),
            metrics.clone(),
            crate::audit::Push::from_config(&config.audit).context("audit push")?,
            config.audit.durable_tokens,
        );
        let base_path = issuer_url.path().trim_end_matches('/').to_string();
        let secure = issuer_url.scheme() == "https";
        let config = Arc::new(config);
        let oauth = Context::new(config, store.clone(), keys.clone(), audit, grants)
            .context("preparing outbound fetches")?;
        let web =
            crate::ui::Web::new(&base_path, secure, keys).context("compiling page templates")?;
        let state = AppState(Arc::new(Services {
            oauth: Arc::new(oauth),
            store,
            web,
            metrics,
        }));
        Ok(Self { state })
    }

    /// Serve on `listener` until `shutdown` resolves, then finish in-flight requests. With
    /// `metrics.listen` set, metrics and health are served on that address too.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let config = self.state.oauth.config.clone();
        let management = match config.metrics.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("listening on {addr} (metrics.listen)"))?,
            ),
            None => None,
        };
        let tasks = spawn_background(&self.state);
        let audit = self.state.oauth.audit.clone();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let management = management.map(|l| {
            let router = crate::router::management(self.state.clone());
            let mut stop = stop_rx.clone();
            let limits = config.http.clone();
            tokio::spawn(crate::listener::serve(l, router, limits, async move {
                let _ = stop.changed().await;
            }))
        });
        let router = crate::router::build(self.state);
        let result = crate::listener::serve(listener, router, config.http.clone(), shutdown).await;
        let _ = stop_tx.send(true);
        if let Some(m) = management {
            let _ = m.await;
        }
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
/// rate-limit windows, expired codes, sessions and refresh tokens, expired single-use
/// `jti`s and old audit events.
fn spawn_background(state: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let config = state.oauth.config.clone();
    let keys = state.oauth.keys.clone();
    let every = Duration::from_secs(config.keys.refresh_secs.max(1));
    let reload = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = keys.reload().await {
                tracing::error!(error = %e, "reloading signing keys failed");
                continue;
            }
            if let Err(e) = keys.rotate_due(crate::util::now()).await {
                tracing::error!(error = %e, "scheduled signing key rotation failed");
            }
        }
    });
    let store = state.store.clone();
    let audit_retention = i64::from(config.audit.retention_days) * 86_400;
    let backoff_reset = i64::from(config.signin.user_failure_reset_secs);
    let sweep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let now = crate::util::now();
            sweep(store.as_ref(), now, audit_retention, backoff_reset).await;
        }
    });
    vec![reload, sweep]
}

/// One pass of the sweeper; a failure is logged and the next pass tries again.
async fn sweep(store: &dyn Store, now: i64, audit_retention: i64, backoff_reset: i64) {
    match store.delete_expired_clients(now).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(count = n, "expired unused client registrations removed"),
        Err(e) => tracing::error!(error = %e, "sweeping expired clients failed"),
    }
    let purges = [
        (
            "rate-limit windows",
            store.purge_rate_limits(now - 86_400).await,
        ),
        (
            "failed sign-in records",
            store.purge_backoffs(now - backoff_reset).await,
        ),
        ("authorization codes", store.purge_codes(now).await),
        // A day late: a client polling just after expiry still hears `expired_token`.
        (
            "device codes and approval requests",
            store.purge_polled_requests(now - 86_400).await,
        ),
        ("sessions", store.purge_sessions(now).await),
        ("passkey ceremonies", store.purge_ceremonies(now).await),
        ("refresh tokens", store.purge_refresh_tokens(now).await),
        ("delegation hops", store.purge_delegations(now).await),
        ("single-use jtis", store.purge_used(now).await),
        (
            "audit events",
            store.purge_audit(now - audit_retention).await,
        ),
    ];
    for (what, result) in purges {
        if let Err(e) = result {
            tracing::error!(error = %e, "purging expired {what} failed");
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is called, not when
/// the future is first polled: call it before announcing that the server listens, or a
/// SIGTERM sent right after the announcement kills the process instead of stopping it
/// gracefully (the default action of a signal nobody handles yet).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            async fn next(s: Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                _ = next(interrupt) => {},
                _ = next(terminate) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down: finishing in-flight requests");
    }
}
