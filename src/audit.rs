//! The audit log: every security-relevant event, stored in the database and
//! queryable through the admin API.
//!
//! Request paths call [`Audit::record`], which only queues the event: a background writer
//! appends queued events in batches, so issuing a token still needs no synchronous database
//! write. [`Audit::flush`] waits until everything queued so far is stored (the admin API and
//! shutdown use it). Events never carry secrets or tokens; tokens are named by `jti`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::metrics::Metrics;
use crate::store::{NewAuditEvent, Store};
use crate::util;

/// The kinds of event. The dotted names are what is stored and what the admin API filters on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `POST /register` created a client (RFC 7591).
    ClientRegistered,
    /// A registered client changed or deleted itself (RFC 7592).
    ClientUpdated,
    ClientDeleted,
    /// A Client ID Metadata Document could not be fetched or was refused.
    CimdFetchFailed,
    SigninSucceeded,
    SigninFailed,
    /// A sign-in attempt was refused by the throttle before its password was checked;
    /// `detail.reason` says which limit (`user_delay`, `address_usernames`) and
    /// `detail.retry_after` when to come back. Unknown usernames appear only as a keyed
    /// digest, as in `signin.failed`.
    SigninThrottled,
    ConsentGranted,
    ConsentDenied,
    ConsentRevoked,
    /// Any grant issued tokens; `detail.grant_type` says which.
    TokenIssued,
    /// A token exchange (RFC 8693) issued a token; `detail.act` is the delegation chain.
    TokenExchanged,
    /// A token was revoked (RFC 7009).
    TokenRevoked,
    /// A rotated refresh token came back: its family was revoked.
    RefreshReuseDetected,
    /// A just-rotated refresh token came back from its client within the reuse grace window
    /// (`tokens.refresh_reuse_grace_secs`): a retry, not a replay. A new successor replaced
    /// the previous one; nothing else was revoked.
    RefreshReuseWithinGrace,
    /// A spent authorization code came back: what it produced was revoked.
    CodeReplayDetected,
    /// A DPoP proof's `jti` came back (RFC 9449 §11.1).
    DpopProofReplayed,
    DeviceApproved,
    DeviceDenied,
    /// A signing key was made; `detail.activates_at` says when it signs.
    KeyRotated,
    /// A signing key was withdrawn at once; `detail.replacement` names the key that took
    /// over signing, when it was the active one.
    KeyRevoked,
    /// An ID-JAG request was refused, in either role: an ID token we would not turn into an
    /// ID-JAG, or an ID-JAG we would not redeem. `detail.role` says which, `detail.error` why.
    IdJagRefused,
    /// An identity at another issuer was linked to a local user, by email or by provisioning
    /// the user (`detail.issuer`, `detail.linked_by`); operators' links are `admin.change`.
    IdentityLinked,
    /// Something changed through the admin API or the CLI; `detail.action` says what.
    AdminChange,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientRegistered => "client.registered",
            Self::ClientUpdated => "client.updated",
            Self::ClientDeleted => "client.deleted",
            Self::CimdFetchFailed => "cimd.fetch_failed",
            Self::SigninSucceeded => "signin.succeeded",
            Self::SigninFailed => "signin.failed",
            Self::SigninThrottled => "signin.throttled",
            Self::ConsentGranted => "consent.granted",
            Self::ConsentDenied => "consent.denied",
            Self::ConsentRevoked => "consent.revoked",
            Self::TokenIssued => "token.issued",
            Self::TokenExchanged => "token.exchanged",
            Self::TokenRevoked => "token.revoked",
            Self::RefreshReuseDetected => "refresh.reuse_detected",
            Self::RefreshReuseWithinGrace => "refresh.reuse_within_grace",
            Self::CodeReplayDetected => "code.replay_detected",
            Self::DpopProofReplayed => "dpop.proof_replayed",
            Self::DeviceApproved => "device.approved",
            Self::DeviceDenied => "device.denied",
            Self::KeyRotated => "key.rotated",
            Self::KeyRevoked => "key.revoked",
            Self::IdJagRefused => "id_jag.refused",
            Self::IdentityLinked => "identity.linked",
            Self::AdminChange => "admin.change",
        }
    }
}

/// An event being built: `Event::new(Kind::SigninFailed).ip(addr).detail(json!({…}))`.
#[derive(Debug, Clone)]
pub struct Event(NewAuditEvent);

impl Event {
    pub fn new(kind: Kind) -> Self {
        Self(NewAuditEvent {
            at: util::now(),
            kind: kind.as_str(),
            client_id: None,
            user_id: None,
            ip: None,
            detail: "{}".to_string(),
        })
    }

    pub fn client(mut self, client_id: impl Into<String>) -> Self {
        self.0.client_id = Some(client_id.into());
        self
    }

    pub fn user(mut self, user_id: impl Into<String>) -> Self {
        self.0.user_id = Some(user_id.into());
        self
    }

    pub fn user_opt(mut self, user_id: Option<&str>) -> Self {
        self.0.user_id = user_id.map(str::to_string);
        self
    }

    pub fn ip(mut self, ip: Option<IpAddr>) -> Self {
        self.0.ip = ip.map(|a| a.to_string());
        self
    }

    /// The particulars: anything that serialises as a JSON object (`json!({…})`, or a struct
    /// where the event is frequent). Never put a secret or a token here.
    pub fn detail(mut self, detail: impl Serialize) -> Self {
        match serde_json::to_string(&detail) {
            Ok(text) if text.starts_with('{') => self.0.detail = text,
            Ok(_) => tracing::error!(kind = self.0.kind, "audit detail is not a JSON object"),
            Err(e) => {
                tracing::error!(kind = self.0.kind, error = %e, "audit detail did not serialise")
            }
        }
        self
    }

    pub fn into_inner(self) -> NewAuditEvent {
        self.0
    }
}

enum Msg {
    Event(Box<NewAuditEvent>),
    Flush(oneshot::Sender<()>),
}

/// Queue events for the background writer. Cheap to clone.
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::Sender<Msg>,
    /// Cuts the writer's linger short when someone waits in [`Audit::flush`].
    flush_asked: Arc<Notify>,
    metrics: Arc<Metrics>,
}

/// How many events may wait for the writer before `record` has to wait for room.
const QUEUE: usize = 8192;
/// The most events one append writes.
const BATCH: usize = 512;
/// How long the writer lets events gather after the first one before it writes them. Under
/// load this turns hundreds of small INSERTs a second into a few large ones: most of an
/// append's cost is per statement and per wake-up, not per row (lingering cut the audit
/// log's share of a client-credentials token by more than half in `bench/run.sh`). When idle
/// it only delays an event's arrival in the table; [`Audit::flush`] does not wait for it.
const LINGER: Duration = Duration::from_millis(100);

impl Audit {
    /// Start the writer on the current Tokio runtime. It ends when every `Audit` is dropped,
    /// after storing what was queued.
    pub fn start(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let flush_asked = Arc::new(Notify::new());
        tokio::spawn(write_loop(store, rx, flush_asked.clone()));
        Self {
            tx,
            flush_asked,
            metrics,
        }
    }

    /// Queue an event. Never blocks the caller: when the queue is full (the database is
    /// slower than the traffic), the event is handed to a task that waits for room.
    pub fn record(&self, event: Event) {
        let event = event.into_inner();
        self.metrics.security_event(event.kind);
        // The table is the record; this line is for debugging only (it would cost a log
        // line per token issued at info level).
        tracing::debug!(
            target: "concierge::audit",
            kind = %event.kind,
            client_id = event.client_id.as_deref().unwrap_or(""),
            user_id = event.user_id.as_deref().unwrap_or(""),
            "audit"
        );
        match self.tx.try_send(Msg::Event(Box::new(event))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(msg).await;
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("audit writer has stopped; an event was lost");
            }
        }
    }

    /// Wait until every event queued before this call is stored (or failed to store).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            self.flush_asked.notify_one();
            let _ = wait.await;
        }
    }
}

async fn write_loop(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Msg>, flush_asked: Arc<Notify>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut waiting = Vec::new();
    while let Some(first) = rx.recv().await {
        // Let more events gather, unless someone is already waiting for a flush. The queue
        // is not polled meanwhile, so recording an event wakes nobody.
        if matches!(first, Msg::Event(_)) {
            tokio::select! {
                () = tokio::time::sleep(LINGER) => {}
                () = flush_asked.notified() => {}
            }
        }
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                Msg::Event(e) => batch.push(*e),
                Msg::Flush(done) => waiting.push(done),
            }
            if batch.len() == BATCH {
                append(store.as_ref(), &mut batch).await;
            }
            next = rx.try_recv().ok();
        }
        append(store.as_ref(), &mut batch).await;
        // Everything queued before each flush request is stored now.
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

async fn append(store: &dyn Store, batch: &mut Vec<NewAuditEvent>) {
    if batch.is_empty() {
        return;
    }
    if let Err(e) = store.append_audit(batch).await {
        tracing::error!(error = %e, count = batch.len(), "storing audit events failed");
    }
    batch.clear();
}
