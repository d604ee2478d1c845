//! One wait for the disk per request, on PostgreSQL.
//!
//! A PostgreSQL commit waits for its WAL record to be flushed. A request that writes and then
//! stores a change's audit event (which waits too, `crate::audit`) would wait for the disk
//! twice, one flush after the other. The WAL is flushed in order, so the later wait makes the
//! earlier write durable as well.
//!
//! So a request runs inside [`deferring`] (a layer of the router does it), and a write made
//! there may commit without waiting for the disk (`sql::not_awaited`): its statement asks
//! [`may_defer`]. Before the response goes out, the layer waits once for everything the
//! request committed: the change's audit event, when one was recorded after the write
//! ([`cover`]) and stored; [`CommitStore::settle`] otherwise, shared by the requests that
//! settle at the same time ([`Settles`]). A client that got an answer can rely on what it
//! said, as when every commit waited; only a crash of the database between a write and its
//! answer can lose the write, and then no answer went out. A write outside a request (a
//! sweeper, a background task) is not deferred.
//!
//! SQLite's commits never wait for the disk (`synchronous = NORMAL` in WAL mode, durable
//! against a crash of the process): nothing is deferred, and settling is free.

use std::cell::Cell;
use std::future::Future;

use async_trait::async_trait;

use super::StoreError;

/// What a request's deferred commits need before its answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Deferred {
    /// No commit was deferred.
    #[default]
    None,
    /// Every deferred commit was followed by a change's audit event: storing the event makes
    /// them durable, unless storing it failed.
    Covered,
    /// A deferred commit came after the last change's event (or there was none): only
    /// [`CommitStore::settle`] makes it durable.
    Uncovered,
}

tokio::task_local! {
    static DEFERRED: Cell<Deferred>;
}

/// Run `request` with deferrable commits, and say what they need before the answer.
/// (Without the value back, which cannot happen, it answers `Uncovered`: the answer then waits
/// for the disk.)
pub fn deferring<F: Future>(request: F) -> impl Future<Output = (F::Output, Deferred)> {
    use futures_util::FutureExt;
    crate::util::run_with(&DEFERRED, Cell::new(Deferred::None), request)
        .map(|(out, d)| (out, d.map_or(Deferred::Uncovered, Cell::into_inner)))
}

/// May a write commit without waiting for the disk? Yes inside [`deferring`], which then
/// settles it; no elsewhere.
pub(crate) fn may_defer() -> bool {
    DEFERRED.try_with(|d| d.set(Deferred::Uncovered)).is_ok()
}

/// Whether this runs inside [`deferring`]; unlike [`may_defer`], says nothing of a write.
pub(crate) fn in_request() -> bool {
    DEFERRED.try_with(|_| ()).is_ok()
}

/// A change's audit event was recorded: it is stored after every commit the request made so
/// far, and the answer waits for it, so those commits need nothing more (unless storing the
/// event fails).
pub(crate) fn cover() {
    let _ = DEFERRED.try_with(|d| {
        if d.get() == Deferred::Uncovered {
            d.set(Deferred::Covered);
        }
    });
}

/// The statement `$sql` (a literal, or a macro that makes one) for a write that may be
/// deferred: on PostgreSQL, with `$tail` after it when [`may_defer`] says so
/// (`sql::not_awaited!(from)` or `(join)`, whichever continues `$sql`); on SQLite as it is.
macro_rules! deferrable {
    ("postgres", $sql:expr, $tail:expr) => {
        if $crate::store::commits::may_defer() {
            concat!($sql, $tail)
        } else {
            $sql
        }
    };
    ("sqlite", $sql:expr, $tail:expr) => {
        $sql
    };
}
pub(crate) use deferrable;

/// For a write of dialect `$dialect` that says it was deferred only once it knows what it
/// wrote: whether it may commit without waiting for the disk (inside [`deferring`]; on
/// SQLite never, as `deferrable!` does not ask), without saying yet that it did. Asked on
/// the request's task; the write calls [`may_defer`] after, if what it wrote must be
/// durable before the answer (a registration's client; its count alone may be lost).
macro_rules! defers {
    ("postgres") => {
        $crate::store::commits::in_request()
    };
    ("sqlite") => {
        false
    };
}
pub(crate) use defers;

#[async_trait]
pub trait CommitStore: Send + Sync {
    /// Wait until every commit this process made so far is on disk. On PostgreSQL one write
    /// that waits for the WAL's flush, which the flush being in order extends to every
    /// earlier commit, shared by the settles asked for meanwhile ([`Settles`]); on SQLite
    /// nothing.
    async fn settle(&self) -> Result<(), StoreError>;
}

/// Settles asked for at about the same time, run as one: one statement at a time, and a
/// caller that asked while one ran waits for the next, which serves every caller waiting
/// then. A request's answer waits for a settle that began after its commits (the WAL is
/// flushed in order, so that settle's flush covers them); it need not have a statement of
/// its own. Under load a settle per request was a round trip and a transaction each, one
/// more statement for PostgreSQL than the change itself.
#[derive(Default)]
pub(crate) struct Settles {
    /// How many settles have begun.
    begun: std::sync::atomic::AtomicU64,
    /// Held while one runs; the number of the last that finished.
    finished: tokio::sync::Mutex<u64>,
}

impl Settles {
    /// Return once a settle that began after this call finished, running `settle` for it
    /// unless another caller's did. Its error goes to the caller that ran it; those waiting
    /// try again with a settle of their own.
    pub(crate) async fn run<F, Fut>(&self, settle: F) -> Result<(), StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), StoreError>>,
    {
        use std::sync::atomic::Ordering::SeqCst;
        let asked = self.begun.load(SeqCst);
        let mut finished = self.finished.lock().await;
        if *finished > asked {
            return Ok(());
        }
        let this = self.begun.fetch_add(1, SeqCst) + 1;
        settle().await?;
        *finished = this;
        Ok(())
    }
}

/// [`CommitStore`] for `$ty` of `$dialect`: on PostgreSQL one write that waits for the WAL's
/// flush (a sequence's `setval`: it logs, takes a transaction id, and locks no row), shared
/// by the settles asked for meanwhile ([`Settles`], the store's `settles`); on SQLite
/// nothing.
macro_rules! sql_impl {
    ($ty:ty, "postgres") => {
        #[async_trait::async_trait]
        impl $crate::store::CommitStore for $ty {
            async fn settle(&self) -> Result<(), $crate::store::StoreError> {
                self.settles
                    .run(|| async {
                        sqlx::query("SELECT setval('commit_barrier', 1)")
                            .execute(&self.writer)
                            .await?;
                        Ok(())
                    })
                    .await
            }
        }
    };
    ($ty:ty, "sqlite") => {
        #[async_trait::async_trait]
        impl $crate::store::CommitStore for $ty {
            async fn settle(&self) -> Result<(), $crate::store::StoreError> {
                Ok(())
            }
        }
    };
}
pub(crate) use sql_impl;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_deferred_commit_is_covered_only_by_a_later_event() {
        let ((), d) = deferring(async {}).await;
        assert_eq!(d, Deferred::None);
        let (_, d) = deferring(async {
            cover();
            may_defer()
        })
        .await;
        assert_eq!(d, Deferred::Uncovered, "the event came before the write");
        let (_, d) = deferring(async {
            may_defer();
            cover()
        })
        .await;
        assert_eq!(d, Deferred::Covered);
        let (_, d) = deferring(async {
            may_defer();
            cover();
            may_defer()
        })
        .await;
        assert_eq!(d, Deferred::Uncovered, "a write after the last event");
    }

    /// Settles asked for while one runs share the next; one asked after a settle began is
    /// not served by it; a failed one serves nobody.
    #[tokio::test]
    async fn settles_asked_together_share_one_that_began_after_them() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let settles = Arc::new(Settles::default());
        let ran = Arc::new(AtomicUsize::new(0));
        let (release, gate) = tokio::sync::watch::channel(false);
        // A slow settle, running until released.
        let slow = |ran: Arc<AtomicUsize>, mut gate: tokio::sync::watch::Receiver<bool>| {
            move || async move {
                ran.fetch_add(1, Ordering::SeqCst);
                let _ = gate.wait_for(|open| *open).await;
                Ok(())
            }
        };
        let first = tokio::spawn({
            let (settles, ran, gate) = (settles.clone(), ran.clone(), gate.clone());
            async move { settles.run(slow(ran, gate)).await }
        });
        while ran.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // Ten more asked while the first runs: they need one that begins after them.
        let waiting: Vec<_> = (0..10)
            .map(|_| {
                let (settles, ran, gate) = (settles.clone(), ran.clone(), gate.clone());
                tokio::spawn(async move { settles.run(slow(ran, gate)).await })
            })
            .collect();
        tokio::task::yield_now().await;
        release.send(true).unwrap();
        first.await.unwrap().unwrap();
        for w in waiting {
            w.await.unwrap().unwrap();
        }
        assert_eq!(
            ran.load(Ordering::SeqCst),
            2,
            "the first, then one for the ten"
        );
        // Asked after those finished: a settle of its own.
        settles.run(slow(ran.clone(), gate.clone())).await.unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 3);
        // A failed settle serves nobody: the next runs again.
        let failed = settles
            .run(|| async { Err(StoreError::Corrupt("no".into())) })
            .await;
        assert!(failed.is_err());
        settles.run(slow(ran.clone(), gate)).await.unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn outside_a_request_nothing_is_deferred() {
        assert!(!may_defer());
        cover();
    }
}
