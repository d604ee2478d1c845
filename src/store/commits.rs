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
//! ([`cover`]) and stored; [`CommitStore::settle`] otherwise. A client that got an answer can
//! rely on what it said, as when every commit waited; only a crash of the database between a
//! write and its answer can lose the write, and then no answer went out. A write outside a
//! request (a sweeper, a background task) is not deferred.
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

#[async_trait]
pub trait CommitStore: Send + Sync {
    /// Wait until every commit this process made so far is on disk. On PostgreSQL one write
    /// that waits for the WAL's flush (a sequence's `setval`: it logs, takes a transaction id,
    /// and locks no row, so concurrent requests do not queue on each other), which the flush
    /// being in order extends to every earlier commit; on SQLite nothing.
    async fn settle(&self) -> Result<(), StoreError>;
}

/// [`CommitStore::settle`]'s statement per backend (`None`: nothing to wait for).
macro_rules! settle {
    ("postgres") => {
        Some("SELECT setval('commit_barrier', 1)")
    };
    ("sqlite") => {
        None::<&str>
    };
}
pub(crate) use settle;

macro_rules! sql_impl {
    ($ty:ty, $dialect:tt) => {
        #[async_trait::async_trait]
        impl $crate::store::CommitStore for $ty {
            async fn settle(&self) -> Result<(), $crate::store::StoreError> {
                if let Some(sql) = $crate::store::commits::settle!($dialect) {
                    sqlx::query(sql).execute(&self.writer).await?;
                }
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

    #[test]
    fn outside_a_request_nothing_is_deferred() {
        assert!(!may_defer());
        cover();
    }
}
