//! What protocol code works with: the issuer, the clock, the signing keys, the directories of
//! clients and resources, the audit log, the grant registry, the authentication module, each
//! configuration section, and the store — reached only through the narrow trait of the
//! aggregate a caller needs (`ctx.codes()`, `ctx.consents()`, …).
//!
//! Nothing here knows about HTTP, pages or the router: endpoints build a [`Context`] once at
//! start-up (the `startup` module) and hand it to the protocol functions they call.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use super::authn::Authentication;
use super::cimd::{CimdError, CimdResolver};
use super::client_assertion::AssertionVerifier;
use super::clients::ClientDirectory;
use super::grants::GrantRegistry;
use super::request_limits::RequestLimits;
use super::resource::ResourceDirectory;
use crate::audit::Audit;
use crate::config::Config;
use crate::keys::KeyManager;
use crate::store::{
    CodeStore, ConsentStore, DeviceStore, ExchangePolicyStore, FactorStore, IdJagPolicyStore,
    IdentityStore, PasskeyStore, RateLimitStore, RefreshTokenStore, ReplayStore, SessionStore,
    Store, UserStore,
};

/// The time protocol decisions are made at: the system clock, or a fixed time in tests.
#[derive(Debug, Clone, Default)]
pub struct Clock(Option<Arc<AtomicI64>>);

impl Clock {
    /// Seconds since the Unix epoch, from the system.
    pub fn system() -> Self {
        Self(None)
    }

    /// A clock that stands at `t` until [`Clock::set`] moves it.
    pub fn fixed(t: i64) -> Self {
        Self(Some(Arc::new(AtomicI64::new(t))))
    }

    /// Move a fixed clock (no effect on the system clock).
    pub fn set(&self, t: i64) {
        if let Some(c) = &self.0 {
            c.store(t, Ordering::Relaxed);
        }
    }

    pub fn now(&self) -> i64 {
        match &self.0 {
            Some(c) => c.load(Ordering::Relaxed),
            None => crate::util::now(),
        }
    }
}

/// The protocol's collaborators (see the module documentation).
pub struct Context {
    issuer: Arc<str>,
    pub config: Arc<Config>,
    pub clock: Clock,
    pub keys: Arc<KeyManager>,
    store: Arc<dyn Store>,
    pub clients: ClientDirectory,
    pub resources: ResourceDirectory,
    /// Verifies `private_key_jwt` client assertions (and caches clients' `jwks_uri` sets).
    pub assertions: AssertionVerifier,
    /// Client ID Metadata Documents; `None` when disabled.
    pub cimd: Option<Arc<CimdResolver>>,
    pub audit: Audit,
    pub grants: Arc<GrantRegistry>,
    pub authn: Authentication,
    /// The token endpoint's per-replica rate limits.
    pub request_limits: RequestLimits,
    /// Where new approval requests (CIBA) are announced (`ciba.notify`), if anywhere.
    pub approval_notify: Option<crate::webhook::Webhook>,
    /// The consents whose use this replica recorded in the last minute.
    pub consent_uses: super::consent::RecentUses,
}

impl Context {
    /// Assemble the context for `config` (already validated) over `store`.
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        keys: Arc<KeyManager>,
        audit: Audit,
        grants: GrantRegistry,
    ) -> Result<Self, CimdError> {
        let grants = Arc::new(grants);
        let cimd = if config.cimd.enabled {
            Some(Arc::new(
                CimdResolver::new(config.cimd.clone(), grants.clone())?.with_audit(audit.clone()),
            ))
        } else {
            None
        };
        let clients = ClientDirectory::new(store.clone(), cimd.clone(), config.clients.cache_secs);
        let resources = ResourceDirectory::new(store.clone(), config.resources.cache_secs);
        let assertions = AssertionVerifier::new(
            &config.issuer,
            store.clone(),
            config.cimd.allow_loopback,
            config.cimd.timeout_ms,
        )?;
        let approval_notify = config.ciba.notify.as_ref().and_then(|n| {
            crate::webhook::Webhook::new(
                &n.url,
                Some(&n.secret),
                &Default::default(),
                std::time::Duration::from_secs(u64::from(n.timeout_secs)),
                crate::webhook::Retry::default(),
            )
            .ok()
        });
        Ok(Self {
            approval_notify,
            issuer: Arc::from(config.issuer.as_str()),
            authn: Authentication::new(&config)?,
            request_limits: RequestLimits::new(&config.rate_limits),
            consent_uses: Default::default(),
            clock: Clock::system(),
            config,
            keys,
            store,
            clients,
            resources,
            assertions,
            cimd,
            audit,
            grants,
        })
    }

    /// The issuer exactly as configured: metadata, tokens and `iss` parameters use it byte
    /// for byte (RFC 9207, RFC 8414 §3.3).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// An endpoint's URL under the issuer, e.g. `url("/token")`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// A new secret to hand out and store (a code, a refresh token, a device code, a
    /// back-channel request's id, a session cookie) and its key in the store, in the shape
    /// `tokens.ordered_secrets` asks for ([`crate::util::stored_secret`]).
    pub fn new_secret(&self) -> (String, Vec<u8>) {
        crate::util::stored_secret(self.config.tokens.ordered_secrets)
    }

    pub fn users(&self) -> &dyn UserStore {
        &*self.store
    }
    pub fn identities(&self) -> &dyn IdentityStore {
        &*self.store
    }
    pub fn upstream_store(&self) -> &dyn crate::store::UpstreamStore {
        &*self.store
    }
    pub fn sessions(&self) -> &dyn SessionStore {
        &*self.store
    }
    pub fn factors(&self) -> &dyn FactorStore {
        &*self.store
    }
    pub fn passkeys(&self) -> &dyn PasskeyStore {
        &*self.store
    }
    pub fn consents(&self) -> &dyn ConsentStore {
        &*self.store
    }
    pub fn codes(&self) -> &dyn CodeStore {
        &*self.store
    }
    pub fn commits(&self) -> &dyn crate::store::CommitStore {
        &*self.store
    }
    pub fn refresh_tokens(&self) -> &dyn RefreshTokenStore {
        &*self.store
    }
    pub fn delegations(&self) -> &dyn crate::store::DelegationStore {
        &*self.store
    }
    pub fn backchannel(&self) -> &dyn crate::store::BackchannelStore {
        &*self.store
    }
    pub fn devices(&self) -> &dyn DeviceStore {
        &*self.store
    }
    pub fn replay(&self) -> &dyn ReplayStore {
        &*self.store
    }
    pub fn rate_limits(&self) -> &dyn RateLimitStore {
        &*self.store
    }
    pub fn exchange_policies(&self) -> &dyn ExchangePolicyStore {
        &*self.store
    }
    pub fn id_jag_policies(&self) -> &dyn IdJagPolicyStore {
        &*self.store
    }
}
