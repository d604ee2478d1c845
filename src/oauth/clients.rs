//! Looking a client up by its id: one place that serves registered clients and Client ID
//! Metadata Documents alike, so no endpoint can forget one kind.
//!
//! A document client_id is shared by every installation of that agent. Nothing stored per
//! user (consent, refresh tokens, revocation) is keyed by client_id alone: it is always
//! keyed by user *and* client, so one user's decisions never reach another user of the
//! same document.

use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::cimd::{CimdError, CimdResolver, is_document_client_id};
use super::ttl_cache::TtlCache;
use crate::store::{ClientKind, ClientMetadata, ClientStore, PreviousSecret, StoreError};

/// Where a client's metadata comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientSource {
    /// Stored: registered dynamically or by an operator.
    Stored(ClientKind),
    /// Fetched from the URL that is its client_id.
    MetadataDocument,
}

/// A client as the protocol sees it.
#[derive(Debug, Clone)]
pub struct Client {
    pub client_id: String,
    pub source: ClientSource,
    pub metadata: Arc<ClientMetadata>,
    /// SHA-256 of the client secret, for stored confidential clients.
    pub secret_hash: Option<Vec<u8>>,
    /// A secret being rotated out, accepted until it expires.
    pub previous_secret: Option<PreviousSecret>,
    /// When a stored client was last used at the token endpoint.
    pub last_used_at: Option<i64>,
}

impl Client {
    /// The name to show a user. For a metadata document the host of its URL is the part that
    /// is verified (we fetched it from there), so it leads.
    pub fn display_name(&self) -> String {
        match self.source {
            ClientSource::MetadataDocument => {
                let host = Url::parse(&self.client_id)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_string))
                    .unwrap_or_else(|| self.client_id.clone());
                match &self.metadata.client_name {
                    Some(name) => format!("{name} ({host})"),
                    None => host,
                }
            }
            ClientSource::Stored(_) => self
                .metadata
                .client_name
                .clone()
                .unwrap_or_else(|| self.client_id.clone()),
        }
    }

    /// A dynamically registered client said who it is, and nobody checked.
    pub fn is_unverified(&self) -> bool {
        self.source == ClientSource::Stored(ClientKind::Dynamic)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientLookupError {
    #[error(transparent)]
    Document(#[from] CimdError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Most stored client records a replica keeps in memory.
const CLIENT_CACHE_CAPACITY: usize = 10_000;

/// Finds clients of both kinds.
///
/// Stored clients are cached in memory for `clients.cache_secs` (default 10 s) so that the
/// token endpoint, the hot path, needs no database round trip per request. The cache is
/// dropped for a client as soon as this replica changes or deletes it ([`Self::forget`]);
/// another replica (or the CLI) sees such a change within `cache_secs`. A client that is not
/// found is never cached, so a new registration works at once everywhere.
pub struct ClientDirectory {
    store: Arc<dyn ClientStore>,
    cimd: Option<Arc<CimdResolver>>,
    cache: TtlCache<String, Client>,
    cache_ttl: Duration,
}

impl ClientDirectory {
    /// `cimd` is `None` when metadata documents are disabled; `cache_secs` 0 disables the
    /// stored-client cache.
    pub fn new(
        store: Arc<dyn ClientStore>,
        cimd: Option<Arc<CimdResolver>>,
        cache_secs: u64,
    ) -> Self {
        Self {
            store,
            cimd,
            cache: TtlCache::new(CLIENT_CACHE_CAPACITY),
            cache_ttl: Duration::from_secs(cache_secs),
        }
    }

    /// The client named `client_id`; `Ok(None)` when there is no such client (including an
    /// unused registration that expired). A metadata document that cannot be fetched or is
    /// invalid is an error, so callers can say why.
    pub async fn find(&self, client_id: &str) -> Result<Option<Client>, ClientLookupError> {
        if let Some(cimd) = &self.cimd
            && is_document_client_id(client_id, cimd.config())
        {
            // Failures are recorded in the audit log by the resolver, per host and window.
            let metadata = cimd.resolve(client_id).await?;
            return Ok(Some(Client {
                client_id: client_id.to_string(),
                source: ClientSource::MetadataDocument,
                metadata,
                secret_hash: None,
                previous_secret: None,
                last_used_at: None,
            }));
        }
        if client_id.contains("://") {
            return Ok(None);
        }
        if let Some(hit) = self.cache.get(client_id) {
            return Ok(Some(hit));
        }
        let now = crate::util::now();
        let Some(record) = self.store.get_client(client_id, now).await? else {
            return Ok(None);
        };
        // An unused registration must not outlive its expiry in the cache.
        let ttl = match record.expires_at {
            Some(e) => self
                .cache_ttl
                .min(Duration::from_secs((e - now).max(0) as u64)),
            None => self.cache_ttl,
        };
        let client = Client {
            client_id: record.client_id,
            source: ClientSource::Stored(record.kind),
            metadata: Arc::new(record.metadata),
            secret_hash: record.secret_hash,
            previous_secret: record.previous_secret,
            last_used_at: record.last_used_at,
        };
        self.cache
            .insert(client.client_id.clone(), client.clone(), ttl);
        Ok(Some(client))
    }

    /// Drop this replica's cached copy of a stored client after changing or deleting it.
    pub fn forget(&self, client_id: &str) {
        self.cache.remove(client_id);
    }

    /// Note that a stored client was used at `now`. True when the use should be written to
    /// the store: the first use in an hour. The cached copy learns of the use at once, so
    /// requests served from the cache do not each ask for the same write.
    pub fn note_use(&self, client: &Client, now: i64) -> bool {
        if !matches!(client.source, ClientSource::Stored(_)) {
            return false;
        }
        if client.last_used_at.is_some_and(|t| t > now - 3600) {
            return false;
        }
        self.cache.update(client.client_id.as_str(), |c| {
            c.last_used_at = Some(now);
        });
        true
    }
}
