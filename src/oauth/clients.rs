//! Looking a client up by its id: one place that serves registered clients and Client ID
//! Metadata Documents alike, so no endpoint can forget one kind.
//!
//! A document client_id is shared by every installation of that agent. Nothing stored per
//! user (consent, refresh tokens, revocation) is keyed by client_id alone: it is always
//! keyed by user *and* client, so one user's decisions never reach another user of the
//! same document.

use std::sync::Arc;

use url::Url;

use super::cimd::{CimdError, CimdResolver, is_document_client_id};
use super::client_metadata::ClientMetadata;
use crate::store::{ClientKind, Store, StoreError};

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

/// Finds clients of both kinds.
pub struct ClientDirectory {
    store: Arc<dyn Store>,
    cimd: Option<Arc<CimdResolver>>,
}

impl ClientDirectory {
    /// `cimd` is `None` when metadata documents are disabled.
    pub fn new(store: Arc<dyn Store>, cimd: Option<Arc<CimdResolver>>) -> Self {
        Self { store, cimd }
    }

    /// The client named `client_id`; `Ok(None)` when there is no such client (including an
    /// unused registration that expired). A metadata document that cannot be fetched or is
    /// invalid is an error, so callers can say why.
    pub async fn find(&self, client_id: &str) -> Result<Option<Client>, ClientLookupError> {
        if let Some(cimd) = &self.cimd
            && is_document_client_id(client_id, cimd.config())
        {
            let metadata = cimd.resolve(client_id).await?;
            return Ok(Some(Client {
                client_id: client_id.to_string(),
                source: ClientSource::MetadataDocument,
                metadata,
                secret_hash: None,
                last_used_at: None,
            }));
        }
        if client_id.contains("://") {
            return Ok(None);
        }
        let Some(record) = self.store.get_client(client_id, crate::util::now()).await? else {
            return Ok(None);
        };
        Ok(Some(Client {
            client_id: record.client_id,
            source: ClientSource::Stored(record.kind),
            metadata: Arc::new(record.metadata),
            secret_hash: record.secret_hash,
            last_used_at: record.last_used_at,
        }))
    }
}
