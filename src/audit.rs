//! The audit log: every security-relevant event, stored in the database and
//! queryable through the admin API.
//!
//! Request paths call [`Audit::record`], which only queues the event: background writers
//! (one for token issuance, one for the rest, see [`Audit`]) append queued events in
//! batches, so issuing a token still needs no synchronous database write. A change whose
//! write can append its event itself (a registration, a client's revocation) does, and
//! tells [`Audit::stored`]. [`Audit::flush`] waits until everything queued so far is stored
//! (the admin API and shutdown use it). Events never carry secrets or tokens; tokens are
//! named by `jti`.
//!
//! With `[audit.webhook]` or `[audit.otlp]`, stored events are also pushed to a SIEM or an
//! OpenTelemetry collector ([`Push`]), by a task of its own, so a slow or absent receiver
//! never holds up storage or requests.

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::config::AuditConfig;
use crate::metrics::{Metrics, PushOutcome};
use crate::store::{AuditStore, NewAuditEvent};
use crate::util;
use crate::webhook::{BadHeader, Retry, Webhook};

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
    /// A user confirmed an authenticator app (TOTP) with its first code.
    MfaEnrolled,
    /// A user removed their authenticator app and recovery codes.
    MfaRemoved,
    /// A user made new recovery codes; the old ones stopped working.
    MfaRecoveryCodesRegenerated,
    /// A wrong (or already used) authenticator or recovery code at sign-in or in the account
    /// pages; `detail.recovery_code` says which kind was tried.
    MfaFailed,
    /// A user changed their own password on the security page; their other sessions and
    /// refresh tokens ended. (An operator's change is `admin.change`.)
    PasswordChanged,
    /// A user ended one of their sessions (`detail.sid`) or all but this one
    /// (`detail.ended`).
    SessionEnded,
    /// A user unlinked an identity at another issuer (`detail.issuer`, `detail.subject`);
    /// an operator's unlink is `admin.change`.
    IdentityUnlinked,
    /// A user registered a passkey (`detail.passkey`, `detail.name`).
    PasskeyRegistered,
    /// A user renamed a passkey.
    PasskeyRenamed,
    /// A user removed a passkey.
    PasskeyRemoved,
    /// A client asked for a user's approval (CIBA, `detail.id`); `user_id` is empty when its
    /// hint named no user.
    ApprovalRequested,
    /// A user approved a client's request (CIBA).
    ApprovalApproved,
    /// A user denied a client's request (CIBA).
    ApprovalDenied,
    /// A new request was announced to `ciba.notify` (`detail.delivered`, `detail.attempts`
    /// or `detail.error`).
    ApprovalNotified,
    /// A user (or an operator) cut a hop of a delegation chain (`detail.id`, `detail.chain`,
    /// `detail.hops` cut with the ones below).
    DelegationCut,
}

impl Kind {
    /// Every kind, for checking filters.
    pub const ALL: [Self; 39] = [
        Self::ClientRegistered,
        Self::ClientUpdated,
        Self::ClientDeleted,
        Self::CimdFetchFailed,
        Self::SigninSucceeded,
        Self::SigninFailed,
        Self::SigninThrottled,
        Self::ConsentGranted,
        Self::ConsentDenied,
        Self::ConsentRevoked,
        Self::TokenIssued,
        Self::TokenExchanged,
        Self::TokenRevoked,
        Self::RefreshReuseDetected,
        Self::RefreshReuseWithinGrace,
        Self::CodeReplayDetected,
        Self::DpopProofReplayed,
        Self::DeviceApproved,
        Self::DeviceDenied,
        Self::KeyRotated,
        Self::KeyRevoked,
        Self::IdJagRefused,
        Self::IdentityLinked,
        Self::AdminChange,
        Self::MfaEnrolled,
        Self::MfaRemoved,
        Self::MfaRecoveryCodesRegenerated,
        Self::MfaFailed,
        Self::PasswordChanged,
        Self::SessionEnded,
        Self::IdentityUnlinked,
        Self::PasskeyRegistered,
        Self::PasskeyRenamed,
        Self::PasskeyRemoved,
        Self::ApprovalRequested,
        Self::ApprovalApproved,
        Self::ApprovalDenied,
        Self::ApprovalNotified,
        Self::DelegationCut,
    ];

    /// Does `filter` name a kind (`token.issued`) or the first part of one (`token`)?
    pub fn is_filter(filter: &str) -> bool {
        Self::ALL.iter().any(|k| {
            let name = k.as_str();
            name == filter || name.split('.').next() == Some(filter)
        })
    }

    /// Is this the record of a change (a client, consent, grant, key, link or setting made,
    /// changed or ended)? A change's event is stored before its response is sent
    /// (`crate::http::durable`). Token issuance and the refusals an attacker can repeat at will
    /// are not: they are stored within the writer's linger (about 100 ms), unless
    /// `audit.durable_tokens` makes token issuance wait too.
    pub fn is_change(self) -> bool {
        !matches!(
            self,
            Self::TokenIssued
                | Self::TokenExchanged
                | Self::SigninFailed
                | Self::SigninThrottled
                | Self::MfaFailed
                | Self::CimdFetchFailed
                | Self::DpopProofReplayed
                | Self::IdJagRefused
                | Self::ApprovalNotified
        )
    }

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
            Self::MfaEnrolled => "mfa.enrolled",
            Self::MfaRemoved => "mfa.removed",
            Self::MfaRecoveryCodesRegenerated => "mfa.recovery_codes_regenerated",
            Self::MfaFailed => "mfa.failed",
            Self::PasswordChanged => "password.changed",
            Self::SessionEnded => "session.ended",
            Self::IdentityUnlinked => "identity.unlinked",
            Self::PasskeyRegistered => "passkey.registered",
            Self::PasskeyRenamed => "passkey.renamed",
            Self::PasskeyRemoved => "passkey.removed",
            Self::ApprovalRequested => "approval.requested",
            Self::ApprovalApproved => "approval.approved",
            Self::ApprovalDenied => "approval.denied",
            Self::ApprovalNotified => "approval.notified",
            Self::DelegationCut => "delegation.cut",
        }
    }
}

/// An event being built: `Event::new(Kind::SigninFailed).ip(addr).detail(json!({…}))`.
#[derive(Debug, Clone)]
pub struct Event(NewAuditEvent, Kind);

impl Event {
    pub fn new(kind: Kind) -> Self {
        Self(
            NewAuditEvent {
                at: util::now(),
                kind: kind.as_str(),
                client_id: None,
                user_id: None,
                ip: None,
                detail: "{}".to_string(),
            },
            kind,
        )
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

    /// The row this event appends, for a write that stores it with its change (then
    /// [`Audit::stored`], not [`Audit::record`]).
    pub fn row(&self) -> &NewAuditEvent {
        &self.0
    }
}

enum Msg {
    Event(Box<NewAuditEvent>),
    /// An event its change's write stored ([`Audit::stored`]): only to push.
    Stored(Box<NewAuditEvent>),
    /// Answered with whether every event queued before it (in its queue) was stored.
    Flush(oneshot::Sender<bool>),
}

/// Queue events for the background writers. Cheap to clone.
///
/// Two queues, each with a writer of its own: token issuance (unless `audit.durable_tokens`
/// makes its answer wait for it) and every other kind, among them the events a response
/// waits for (a change's, [`Kind::is_change`]). Under load, token events come by the
/// thousand a second, and their writer spends most of its time appending them, several
/// batches a round; a revocation or a registration waiting for its event behind those took
/// 16 ms at the median and 80 ms at the 99th percentile in the soak (`bench/README.md`).
/// With a writer of their own, changes wait for their own append alone (on SQLite, whose
/// one writing connection commits the appends with the requests' writes in batches, also for
/// the rest of the batch theirs joins). So a
/// token's issuance may reach the table (and take its id) after a change recorded later,
/// within the linger; each event keeps its `at`, and the other kinds keep their order.
#[derive(Clone)]
pub struct Audit {
    /// Token issuance, which no response waits for.
    lazy: Queue,
    /// The rest, among them the events a response waits for.
    urgent: Queue,
    /// Events that found a queue full and wait for room in it, in their request or in a
    /// task of their own (see [`Audit::record`]).
    waiting: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    /// Whether stored events are pushed (`[audit.webhook]`, `[audit.otlp]`): then the
    /// events [`Audit::stored`] is told of go to the urgent writer, to be pushed with its.
    pushes: bool,
    /// Token issuance waits for its event too (`audit.durable_tokens`).
    durable_tokens: bool,
}

/// What the request handled on a task recorded, for the layer that holds its answer back
/// (`crate::http::durable`), which hands it to [`Audit::hand_over`].
#[derive(Default)]
pub struct Recorded {
    /// An event that must be stored before the response goes out ([`Kind::is_change`]).
    must_store: bool,
    /// The tasks that put the events that found the writer's queue full into it, waiting
    /// for room. The response waits for them: a database slower than the traffic slows the
    /// answers down instead of piling events up in memory without bound. (Tasks, not the
    /// request itself: a request dropped because its client went away must not drop its
    /// events with it.)
    spilled: Vec<tokio::task::JoinHandle<()>>,
}

tokio::task_local! {
    static RECORDED: RefCell<Recorded>;
}

/// Run `request`, and say what it recorded. When it recorded an event that must be stored
/// before its response goes out, the layer waits for it ([`Audit::hand_over`]): a client
/// that got an answer can rely on the record, and a crash (`kill -9`) right after loses no
/// change's event.
pub fn recording<F: std::future::Future>(
    request: F,
) -> impl std::future::Future<Output = (F::Output, Recorded)> {
    use futures_util::FutureExt;
    crate::util::run_with(&RECORDED, RefCell::new(Recorded::default()), request)
        .map(|(out, recorded)| (out, recorded.map(RefCell::into_inner).unwrap_or_default()))
}

/// How many events may wait for a writer in its queue before `record` has to wait for room.
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
    /// Start the writers on the current Tokio runtime, and the pusher when `push` is given.
    /// The writers end when every `Audit` is dropped, after storing what was queued.
    pub fn start(
        store: Arc<dyn AuditStore>,
        metrics: Arc<Metrics>,
        push: Option<Push>,
        durable_tokens: bool,
    ) -> Self {
        Self::start_queue(QUEUE, LINGER, store, metrics, push, durable_tokens)
    }

    /// [`Audit::start`] with queues of `queue` events and a linger of `linger`.
    fn start_queue(
        queue: usize,
        linger: Duration,
        store: Arc<dyn AuditStore>,
        metrics: Arc<Metrics>,
        push: Option<Push>,
        durable_tokens: bool,
    ) -> Self {
        let pushed = push.map(|push| {
            let (tx, rx) = mpsc::channel(PUSH_QUEUE);
            tokio::spawn(push_loop(push, rx, metrics.clone()));
            tx
        });
        let writer = Writer {
            store,
            metrics: metrics.clone(),
            pushed: pushed.clone(),
        };
        Self {
            lazy: Queue::start(queue, linger, writer.clone()),
            urgent: Queue::start(queue, linger, writer),
            waiting: Arc::new(AtomicUsize::new(0)),
            metrics,
            pushes: pushed.is_some(),
            durable_tokens,
        }
    }

    /// Queue an event. Never blocks the caller: when the queue is full (the database is
    /// slower than the traffic), the event is handed to a task that waits for room, and the
    /// response of the request that recorded it waits for that task ([`Audit::hand_over`]).
    pub fn record(&self, event: Event) {
        let Event(event, kind) = event;
        let token = matches!(kind, Kind::TokenIssued | Kind::TokenExchanged);
        let must_store = kind.is_change() || (self.durable_tokens && token);
        if must_store {
            // Outside a request (a background task) there is no response to hold back.
            let _ = RECORDED.try_with(|r| r.borrow_mut().must_store = true);
            // Stored after the request's writes so far, and awaited: it settles them.
            crate::store::commits::cover();
        }
        self.noted(&event);
        // Only token issuance, the bulk of the log, goes to the lazy writer: every other kind
        // keeps its order against the changes (a failed sign-in before the success after it).
        let urgent = must_store || !token;
        let queue = if urgent { &self.urgent } else { &self.lazy };
        match queue.tx.try_send(Msg::Event(Box::new(event))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => {
                self.waiting.fetch_add(1, Ordering::Relaxed);
                let queued = tokio::spawn(self.clone().queue(msg, urgent));
                // Outside a request (a background task, which records few) nobody waits.
                let _ = RECORDED.try_with(|r| r.borrow_mut().spilled.push(queued));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("audit writer has stopped; an event was lost");
            }
        }
    }

    /// An event its change's own write stored, in the change's transaction (a registration's,
    /// `ClientStore::register_client`; a revocation's, `RefreshTokenStore::revoke_family_of`):
    /// counted and pushed as the writers' events are. Nothing waits for the audit writer:
    /// the change's commit was the event's, so once the request's writes are durable
    /// (`crate::store::commits`) a client that got its answer can rely on the record, as
    /// with [`Audit::record`]'s wait (`bench/README.md`, "A change's audit event in the
    /// change's own write").
    pub fn stored(&self, event: NewAuditEvent) {
        self.noted(&event);
        self.metrics.audit_written(1, true);
        // Pushed with the urgent writer's next round, so a busy server still pushes a batch
        // per linger, not a delivery per event.
        if self.pushes
            && self
                .urgent
                .tx
                .try_send(Msg::Stored(Box::new(event)))
                .is_err()
        {
            self.metrics.audit_pushed(1, PushOutcome::Dropped);
            tracing::warn!("the audit writer is behind: an event was not pushed (it is stored)");
        }
    }

    /// Count `event` and log it at DEBUG.
    fn noted(&self, event: &NewAuditEvent) {
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
    }

    /// How many events wait for the writer (those that wait for room in its queue, in a
    /// request or a task, included).
    pub fn queued(&self) -> usize {
        self.lazy.held() + self.urgent.held() + self.waiting.load(Ordering::Relaxed)
    }

    /// Put `msg` in its writer's queue (the urgent one when `urgent`), waiting for room.
    async fn queue(self, msg: Msg, urgent: bool) {
        let sent = if urgent { &self.urgent } else { &self.lazy }
            .tx
            .send(msg)
            .await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        if sent.is_err() {
            tracing::error!("audit writer has stopped; an event was lost");
        }
    }

    /// What a request recorded, at its end: wait until the events that found the queue
    /// full are in it, then, when one of them must be stored before the response goes out,
    /// until it is stored. True when such an event was stored; false when there was none or
    /// storing failed.
    pub async fn hand_over(&self, recorded: Recorded) -> bool {
        for queued in recorded.spilled {
            let _ = queued.await;
        }
        recorded.must_store && self.urgent.flush().await
    }

    /// Wait until every event queued before this call is stored, or failed to store: true
    /// when all were stored.
    pub async fn flush(&self) -> bool {
        let (lazy, urgent) = tokio::join!(self.lazy.flush(), self.urgent.flush());
        lazy && urgent
    }
}

/// One queue and its writer.
#[derive(Clone)]
struct Queue {
    tx: mpsc::Sender<Msg>,
    /// Cuts the writer's linger short when someone waits in [`Queue::flush`].
    flush_asked: Arc<Notify>,
}

impl Queue {
    /// A queue of `size` events, and its writer on the current Tokio runtime (it ends when
    /// the queue's last sender is dropped, after storing what was queued).
    fn start(size: usize, linger: Duration, writer: Writer) -> Self {
        let (tx, rx) = mpsc::channel(size);
        let flush_asked = Arc::new(Notify::new());
        tokio::spawn(write_loop(writer, rx, flush_asked.clone(), linger));
        Self { tx, flush_asked }
    }

    /// Events in the queue.
    fn held(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Wait until every event queued here before this call is stored, or failed to store:
    /// true when all were stored.
    async fn flush(&self) -> bool {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_err() {
            return false;
        }
        self.flush_asked.notify_one();
        wait.await.unwrap_or(false)
    }
}

/// Where stored events go.
#[derive(Clone)]
struct Writer {
    store: Arc<dyn AuditStore>,
    metrics: Arc<Metrics>,
    /// To the pusher, when `[audit.webhook]` is set.
    pushed: Option<mpsc::Sender<Vec<NewAuditEvent>>>,
}

impl Writer {
    /// Store `batch` (emptied), then hand it to the pusher. False when storing it failed.
    async fn append(&self, batch: &mut Vec<NewAuditEvent>) -> bool {
        if batch.is_empty() {
            return true;
        }
        let stored = match self.store.append_audit(batch).await {
            Ok(()) => {
                self.metrics.audit_written(batch.len(), true);
                true
            }
            Err(e) => {
                self.metrics.audit_written(batch.len(), false);
                tracing::error!(error = %e, count = batch.len(), "storing audit events failed");
                false
            }
        };
        self.push(std::mem::take(batch));
        stored
    }

    /// Hand stored `events` to the pusher, when there is one. When it is behind they are
    /// not pushed; they are stored.
    fn push(&self, events: Vec<NewAuditEvent>) {
        let Some(pushed) = &self.pushed else {
            return;
        };
        let count = events.len();
        if pushed.try_send(events).is_err() {
            self.metrics.audit_pushed(count, PushOutcome::Dropped);
            tracing::warn!(
                count,
                "the audit webhook is behind: events were not pushed (they are stored)"
            );
        }
    }
}

async fn write_loop(
    writer: Writer,
    mut rx: mpsc::Receiver<Msg>,
    flush_asked: Arc<Notify>,
    linger: Duration,
) {
    let mut batch = Vec::with_capacity(BATCH);
    // Events stored by their changes' writes, to push.
    let mut already = Vec::new();
    let mut waiting = Vec::new();
    while let Some(first) = rx.recv().await {
        // Let more events gather, unless someone is already waiting for a flush. The queue
        // is not polled meanwhile, so recording an event wakes nobody.
        if matches!(first, Msg::Event(_) | Msg::Stored(_)) {
            tokio::select! {
                () = tokio::time::sleep(linger) => {}
                () = flush_asked.notified() => {}
            }
        }
        let mut next = Some(first);
        // Whether every append of this round stored its batch.
        let mut stored = true;
        while let Some(msg) = next {
            match msg {
                Msg::Event(e) => batch.push(*e),
                Msg::Stored(e) => already.push(*e),
                Msg::Flush(done) => waiting.push(done),
            }
            if batch.len() == BATCH {
                stored &= writer.append(&mut batch).await;
            }
            if already.len() == BATCH {
                writer.push(std::mem::take(&mut already));
            }
            next = rx.try_recv().ok();
        }
        stored &= writer.append(&mut batch).await;
        if !already.is_empty() {
            writer.push(std::mem::take(&mut already));
        }
        // Everything queued before each flush request is stored now, or failed to be.
        for done in waiting.drain(..) {
            let _ = done.send(stored);
        }
    }
}

/// Batches waiting for the pusher; a stored batch that finds no room is not pushed.
const PUSH_QUEUE: usize = 256;

/// A push destination that cannot be configured as written.
#[derive(Debug, thiserror::Error)]
pub enum PushConfigError {
    #[error(transparent)]
    Header(#[from] BadHeader),
    #[error(
        "{0}.kinds: {1:?} is not an event kind (such as signin.failed) or its first part \
         (such as signin)"
    )]
    Kind(&'static str, String),
}

/// Pushes stored events to where the operator asked (`[audit.webhook]`, `[audit.otlp]`),
/// one delivery per stored batch and destination, each filtered to its kinds.
pub struct Push {
    sinks: Vec<Sink>,
}

/// One destination.
struct Sink {
    to: Webhook,
    kinds: Vec<String>,
    format: Format,
}

/// What a destination reads.
enum Format {
    /// `{"events": [...]}`, each event as the admin API lists it.
    Events,
    /// An OTLP `ExportLogsServiceRequest` in the JSON encoding of OTLP/HTTP.
    OtlpLogs { service: String },
}

impl Push {
    /// The destinations `config` names; `None` when there are none.
    pub fn from_config(config: &AuditConfig) -> Result<Option<Self>, PushConfigError> {
        let named = [
            ("audit.webhook", config.webhook.as_ref().map(|w| &w.kinds)),
            ("audit.otlp", config.otlp.as_ref().map(|o| &o.kinds)),
        ];
        for (section, kinds) in named {
            if let Some(k) = kinds.into_iter().flatten().find(|k| !Kind::is_filter(k)) {
                return Err(PushConfigError::Kind(section, k.clone()));
            }
        }
        let mut sinks = Vec::new();
        if let Some(w) = &config.webhook {
            sinks.push(Sink {
                to: Webhook::new(
                    &w.url,
                    Some(&w.secret),
                    &Default::default(),
                    Duration::from_secs(u64::from(w.timeout_secs)),
                    Retry::default(),
                )?,
                kinds: w.kinds.clone(),
                format: Format::Events,
            });
        }
        if let Some(o) = &config.otlp {
            sinks.push(Sink {
                to: Webhook::new(
                    &o.endpoint,
                    None,
                    &o.headers,
                    Duration::from_secs(u64::from(o.timeout_secs)),
                    Retry::default(),
                )?,
                kinds: o.kinds.clone(),
                format: Format::OtlpLogs {
                    service: o.service_name.clone(),
                },
            });
        }
        Ok((!sinks.is_empty()).then_some(Self { sinks }))
    }
}

/// Is an event of `kind` wanted by a destination of `kinds`? (All when none are named.)
fn wanted(kinds: &[String], kind: &str) -> bool {
    kinds.is_empty()
        || kinds
            .iter()
            .any(|k| k == kind || kind.split('.').next() == Some(k.as_str()))
}

/// An event as pushed: the admin API's shape.
#[derive(Serialize)]
struct Pushed<'a> {
    at: String,
    #[serde(rename = "type")]
    kind: &'a str,
    client_id: Option<&'a str>,
    user_id: Option<&'a str>,
    ip: Option<&'a str>,
    detail: serde_json::Value,
}

impl<'a> From<&'a NewAuditEvent> for Pushed<'a> {
    fn from(e: &'a NewAuditEvent) -> Self {
        Self {
            at: util::rfc3339(e.at),
            kind: e.kind,
            client_id: e.client_id.as_deref(),
            user_id: e.user_id.as_deref(),
            ip: e.ip.as_deref(),
            detail: serde_json::from_str(&e.detail).unwrap_or_default(),
        }
    }
}

/// An OTLP string attribute.
fn attribute(key: &str, value: &str) -> serde_json::Value {
    serde_json::json!({ "key": key, "value": { "stringValue": value } })
}

/// One OTLP log record per event (OTLP/HTTP JSON encoding: 64-bit integers as strings).
fn otlp_logs(events: &[&NewAuditEvent], service: &str, now: i64) -> serde_json::Value {
    let nanos = |t: i64| (i128::from(t) * 1_000_000_000).to_string();
    let records: Vec<serde_json::Value> = events
        .iter()
        .map(|e| {
            let mut attributes = vec![attribute("event.name", e.kind)];
            for (key, value) in [
                ("concierge.client_id", e.client_id.as_deref()),
                ("concierge.user_id", e.user_id.as_deref()),
                ("client.address", e.ip.as_deref()),
            ] {
                if let Some(v) = value {
                    attributes.push(attribute(key, v));
                }
            }
            attributes.push(attribute("concierge.detail", &e.detail));
            serde_json::json!({
                "timeUnixNano": nanos(e.at),
                "observedTimeUnixNano": nanos(now),
                "severityNumber": 9,
                "severityText": "INFO",
                "eventName": e.kind,
                "body": { "stringValue": e.kind },
                "attributes": attributes,
            })
        })
        .collect();
    serde_json::json!({
        "resourceLogs": [{
            "resource": { "attributes": [attribute("service.name", service)] },
            "scopeLogs": [{
                "scope": { "name": "concierge.audit", "version": env!("CARGO_PKG_VERSION") },
                "logRecords": records,
            }],
        }],
    })
}

impl Sink {
    /// The body for the events of `batch` this destination wants, if any.
    fn body(&self, batch: &[NewAuditEvent]) -> Option<(usize, Vec<u8>)> {
        let events: Vec<&NewAuditEvent> = batch
            .iter()
            .filter(|e| wanted(&self.kinds, e.kind))
            .collect();
        if events.is_empty() {
            return None;
        }
        let count = events.len();
        let doc = match &self.format {
            Format::Events => {
                let events: Vec<Pushed<'_>> = events.into_iter().map(Pushed::from).collect();
                serde_json::json!({ "events": events })
            }
            Format::OtlpLogs { service } => otlp_logs(&events, service, util::now()),
        };
        serde_json::to_vec(&doc).ok().map(|b| (count, b))
    }
}

async fn push_loop(push: Push, mut rx: mpsc::Receiver<Vec<NewAuditEvent>>, metrics: Arc<Metrics>) {
    while let Some(batch) = rx.recv().await {
        for sink in &push.sinks {
            let Some((count, body)) = sink.body(&batch) else {
                continue;
            };
            match sink.to.deliver(body).await {
                Ok(_) => metrics.audit_pushed(count, PushOutcome::Pushed),
                Err(e) => {
                    metrics.audit_pushed(count, PushOutcome::Failed);
                    tracing::warn!(
                        url = sink.to.url(),
                        error = %e,
                        count,
                        "pushing audit events failed (they are stored)"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditEvent, AuditQuery, StoreError};

    /// Stores one batch per permit of its gate, and keeps the kinds it stored.
    struct Gated {
        gate: tokio::sync::Semaphore,
        kept: std::sync::Mutex<Vec<&'static str>>,
    }

    impl Gated {
        fn new(permits: usize) -> Arc<Self> {
            Arc::new(Self {
                gate: tokio::sync::Semaphore::new(permits),
                kept: Default::default(),
            })
        }

        fn kept(&self) -> Vec<&'static str> {
            self.kept.lock().map(|k| k.clone()).unwrap_or_default()
        }
    }

    #[async_trait::async_trait]
    impl AuditStore for Gated {
        async fn append_audit(&self, events: &[NewAuditEvent]) -> Result<(), StoreError> {
            if let Ok(permit) = self.gate.acquire().await {
                permit.forget();
            }
            let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            kept.extend(events.iter().map(|e| e.kind));
            Ok(())
        }
        async fn list_audit(&self, _: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
            Ok(Vec::new())
        }
        async fn purge_audit(&self, _: i64) -> Result<u64, StoreError> {
            Ok(0)
        }
    }

    /// Every request's future is wrapped in both of these (`crate::http::durable`): each
    /// adds a few bytes, not a second copy of what it wraps.
    #[test]
    fn the_wrappers_every_request_passes_hold_its_future_once() {
        let request = crate::util::large_future();
        let inner = std::mem::size_of_val(&request);
        let wrapped = crate::store::commits::deferring(recording(request));
        assert!(inner >= 4096);
        assert!(std::mem::size_of_val(&wrapped) < inner + 256);
    }

    #[tokio::test]
    async fn a_full_queue_holds_answers_back_and_loses_no_event() {
        let store = Gated::new(0);
        let audit = Audit::start_queue(4, LINGER, store.clone(), Arc::default(), None, false);
        // A request records ten token events; the writer (not yet run) has room for four.
        let ((), recorded) = recording(async {
            for _ in 0..10 {
                audit.record(Event::new(Kind::TokenIssued));
            }
        })
        .await;
        assert_eq!(audit.queued(), 10, "those waiting for room count as queued");
        // The store is stuck: the answer waits for room instead of leaving the six behind in
        // memory. Its client gives up, and the request is dropped.
        let answer = tokio::time::timeout(Duration::from_millis(300), audit.hand_over(recorded));
        assert!(
            answer.await.is_err(),
            "the answer went out with its events still waiting"
        );
        // The store recovers: every event is stored, the dropped request's too.
        store.gate.add_permits(1_000);
        assert!(audit.flush().await);
        assert_eq!(store.kept().len(), 10);
        assert_eq!(audit.queued(), 0);
    }

    #[tokio::test]
    async fn a_change_is_stored_without_waiting_behind_token_events() {
        let store = Gated::new(1_000);
        // A linger longer than the test: the token events are written only when flushed.
        let linger = Duration::from_secs(3_600);
        let audit = Audit::start_queue(64, linger, store.clone(), Arc::default(), None, false);
        for _ in 0..20 {
            audit.record(Event::new(Kind::TokenIssued));
        }
        audit.record(Event::new(Kind::SigninFailed));
        let ((), recorded) = recording(async {
            audit.record(Event::new(Kind::TokenRevoked));
        })
        .await;
        let answer = tokio::time::timeout(Duration::from_secs(30), audit.hand_over(recorded));
        assert_eq!(
            answer.await.ok(),
            Some(true),
            "the change's event was not stored"
        );
        assert_eq!(
            store.kept(),
            ["signin.failed", "token.revoked"],
            "the token events were written first, or the others out of order"
        );
        // A request that recorded no change waits for nothing.
        let ((), recorded) = recording(async {
            audit.record(Event::new(Kind::TokenIssued));
        })
        .await;
        assert!(!audit.hand_over(recorded).await);
        assert_eq!(store.kept().len(), 2, "token events wait for their linger");
        // A flush writes everything, whatever the linger.
        assert!(audit.flush().await);
        assert_eq!(store.kept().len(), 23);
        assert_eq!(audit.queued(), 0);
    }

    #[test]
    fn every_kind_is_listed_once_and_filters_by_name_or_first_part() {
        let names: std::collections::BTreeSet<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), Kind::ALL.len());
        assert!(Kind::is_filter("token.issued"));
        assert!(Kind::is_filter("token"));
        assert!(Kind::is_filter("admin.change"));
        assert!(!Kind::is_filter("token.issue"));
        assert!(!Kind::is_filter("tokens"));
        assert!(!Kind::is_filter(""));
        assert!(!Kind::is_filter("token."));
    }

    #[test]
    fn a_destination_takes_the_configured_kinds() {
        let kinds = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(wanted(&[], "token.issued"));
        let k = kinds(&["signin", "admin.change"]);
        assert!(wanted(&k, "signin.failed"));
        assert!(wanted(&k, "admin.change"));
        assert!(!wanted(&k, "token.issued"));
        assert!(!wanted(&k, "signin_other.x"));
    }

    #[test]
    fn otlp_records_carry_the_event() {
        let e = NewAuditEvent {
            at: 1_700_000_000,
            kind: "signin.failed",
            client_id: None,
            user_id: Some("u1".into()),
            ip: Some("192.0.2.1".into()),
            detail: r#"{"reason":"password"}"#.into(),
        };
        let doc = otlp_logs(&[&e], "svc", 1_700_000_001);
        let record = &doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0];
        assert_eq!(record["timeUnixNano"], "1700000000000000000");
        assert_eq!(record["observedTimeUnixNano"], "1700000001000000000");
        assert_eq!(record["body"]["stringValue"], "signin.failed");
        let attrs = record["attributes"].as_array().unwrap();
        let keys: Vec<&str> = attrs.iter().map(|a| a["key"].as_str().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "event.name",
                "concierge.user_id",
                "client.address",
                "concierge.detail"
            ]
        );
        assert_eq!(
            doc["resourceLogs"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            "svc"
        );
    }
}
