//! SQLite's connections, held by the process instead of pooled by sqlx.
//!
//! sqlx returns a pooled connection to its pool in a task of its own and pings it first (a
//! round trip to the connection's thread), whatever the pool's options. So every statement
//! on a pool cost two more thread hand-offs and a task. For the one connection that may
//! write, that was worse: it stayed busy for the ping after every statement, and the next
//! writer waited for it. Here each connection sits behind a fair mutex and passes from one
//! user to the next in arrival order, with nothing in between.
//!
//! `&Connections` is an sqlx [`Executor`], so a statement runs on it as on a pool
//! (`.execute(&self.writer)`), and [`Connections::begin`] opens a transaction as a pool's
//! `begin` does.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteQueryResult, SqliteRow, SqliteStatement, SqliteTypeInfo,
};
use sqlx::{ConnectOptions, Describe, Either, Execute, Executor, SqlStr, Sqlite, SqliteConnection};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use super::PoolStats;

/// How long a statement waits for a connection before it fails (as a pool's acquire
/// timeout).
const WAIT: Duration = Duration::from_secs(10);

/// A fixed set of connections to one database, each opened on first use.
pub(super) struct Connections {
    options: SqliteConnectOptions,
    /// Each empty until first used.
    slots: Vec<Arc<Slot>>,
    /// Which connection a user waits for when none is free, in turn.
    next: AtomicUsize,
    /// How a transaction begins on these connections.
    begin: &'static str,
}

type Slot = Mutex<Option<Open>>;

struct Open {
    conn: SqliteConnection,
    /// A transaction was dropped open (its request was cancelled, or it returned early on an
    /// error): it is rolled back before the connection is used again.
    roll_back: bool,
}

impl Open {
    /// Roll back a transaction dropped open, if there was one.
    async fn settle(&mut self) {
        if self.roll_back {
            self.roll_back = false;
            // It fails only if the transaction never began (dropped before its BEGIN was
            // sent), and then there is nothing to undo.
            if let Err(e) = sqlx::query("ROLLBACK").execute(&mut self.conn).await {
                tracing::debug!(error = %e, "rolling back a dropped transaction");
            }
        }
    }
}

impl fmt::Debug for Connections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connections")
            .field("size", &self.slots.len())
            .finish()
    }
}

impl Connections {
    /// The one connection that writes, already open (`conn`, with the migrations applied).
    /// Its transactions take SQLite's write lock at once (`BEGIN IMMEDIATE`): the server's
    /// own writers queue here anyway, and another process writing the same file (an admin
    /// command) makes a transaction wait in the busy handler rather than fail when it
    /// upgrades a read to a write.
    pub(super) fn writer(options: SqliteConnectOptions, conn: SqliteConnection) -> Self {
        Self {
            options,
            slots: vec![Arc::new(Mutex::new(Some(Open {
                conn,
                roll_back: false,
            })))],
            next: AtomicUsize::new(0),
            begin: "BEGIN IMMEDIATE",
        }
    }

    /// `size` connections for reads, opened with `options` when first needed. A transaction
    /// on them is a deferred one, which reads one snapshot (WAL mode).
    pub(super) fn readers(options: SqliteConnectOptions, size: usize) -> Self {
        Self {
            options,
            slots: (0..size.max(1)).map(|_| Arc::default()).collect(),
            next: AtomicUsize::new(0),
            begin: "BEGIN",
        }
    }

    /// A connection: the first free one that is open, else one not yet opened, else the
    /// next in turn once the users queued before have finished with it (tokio's mutex is
    /// fair). It has no transaction open. Connections are tried in order, so a light load
    /// keeps to the first few and the rest are never opened.
    pub(super) async fn lock(&self) -> Result<Conn<'_>, sqlx::Error> {
        let mut unopened = None;
        let mut free = None;
        for slot in &self.slots {
            if let Ok(guard) = slot.try_lock() {
                if guard.is_some() {
                    free = Some((slot, guard));
                    break;
                }
                unopened.get_or_insert((slot, guard));
            }
        }
        let (which, mut slot) = match free.or(unopened) {
            Some(found) => found,
            None => {
                let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
                let slot = &self.slots[turn];
                let guard = tokio::time::timeout(WAIT, slot.lock())
                    .await
                    .map_err(|_| sqlx::Error::PoolTimedOut)?;
                (slot, guard)
            }
        };
        if slot.is_none() {
            *slot = Some(Open {
                conn: self.options.connect().await?,
                roll_back: false,
            });
        }
        let Ok(mut open) = MutexGuard::try_map(slot, Option::as_mut) else {
            return Err(sqlx::Error::PoolClosed);
        };
        open.settle().await;
        Ok(Conn { open, slot: which })
    }

    /// Begin a transaction on a connection, held until it commits or is dropped.
    pub(super) async fn begin(&self) -> Result<Tx<'_>, sqlx::Error> {
        // Marked open before BEGIN is sent: if this future is dropped once the statement has
        // reached the connection's thread, the next user rolls it back.
        let mut tx = Tx {
            conn: self.lock().await?,
            open: true,
        };
        sqlx::query(self.begin).execute(&mut *tx).await?;
        Ok(tx)
    }

    /// Open, idle and at most how many, for the metrics.
    pub(super) fn stats(&self) -> PoolStats {
        let mut stats = PoolStats::default();
        for slot in &self.slots {
            stats.max += 1;
            match slot.try_lock() {
                Ok(s) if s.is_some() => {
                    stats.open += 1;
                    stats.idle += 1;
                }
                Ok(_) => {}
                Err(_) => stats.open += 1,
            }
        }
        stats
    }
}

/// A connection, held.
pub(super) struct Conn<'a> {
    open: MappedMutexGuard<'a, Open>,
    /// Where it is held, for a rollback after it is let go.
    slot: &'a Arc<Slot>,
}

impl Deref for Conn<'_> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.open.conn
    }
}

impl DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.open.conn
    }
}

/// A transaction on a held connection; dropped without [`Tx::commit`], it is rolled back.
pub(super) struct Tx<'a> {
    conn: Conn<'a>,
    open: bool,
}

impl Tx<'_> {
    pub(super) async fn commit(mut self) -> Result<(), sqlx::Error> {
        sqlx::query("COMMIT").execute(&mut *self).await?;
        self.open = false;
        Ok(())
    }

    pub(super) async fn rollback(mut self) -> Result<(), sqlx::Error> {
        sqlx::query("ROLLBACK").execute(&mut *self).await?;
        self.open = false;
        Ok(())
    }
}

impl Deref for Tx<'_> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl DerefMut for Tx<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        // No statement can be awaited here. Whoever takes the connection next rolls back
        // first: a user queued for it, or else a task spawned for that alone, so that the
        // transaction does not hold SQLite's write lock against other processes on the file
        // (the CLI, another replica) until this one writes again.
        self.conn.open.roll_back = true;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let slot = Arc::clone(self.conn.slot);
            runtime.spawn(async move {
                if let Some(open) = slot.lock().await.as_mut() {
                    open.settle().await;
                }
            });
        }
    }
}

type Item = Either<SqliteQueryResult, SqliteRow>;

impl<'c> Executor<'c> for &'c Connections {
    type Database = Sqlite;

    /// The statement's results, collected while the connection is held (the store reads
    /// pages of rows at most), then streamed.
    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<Item, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Sqlite>,
    {
        stream::once(async move {
            let mut conn = self.lock().await?;
            (&mut *conn)
                .fetch_many(query)
                .try_collect::<Vec<Item>>()
                .await
        })
        .flat_map(|all| {
            stream::iter(match all {
                Ok(items) => items.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            })
        })
        .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<SqliteRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Sqlite>,
    {
        Box::pin(async move {
            let mut conn = self.lock().await?;
            (&mut *conn).fetch_optional(query).await
        })
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [SqliteTypeInfo],
    ) -> BoxFuture<'e, Result<SqliteStatement, sqlx::Error>>
    where
        'c: 'e,
    {
        Box::pin(async move {
            let mut conn = self.lock().await?;
            (&mut *conn).prepare_with(sql, parameters).await
        })
    }

    fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<Describe<Sqlite>, sqlx::Error>>
    where
        'c: 'e,
    {
        Box::pin(async move {
            let mut conn = self.lock().await?;
            (&mut *conn).describe(sql).await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    /// The test database in `dir`.
    fn file(dir: &tempfile::TempDir) -> SqliteConnectOptions {
        SqliteConnectOptions::from_str(&format!("sqlite://{}", dir.path().join("t.db").display()))
            .unwrap()
    }

    async fn writer(dir: &tempfile::TempDir) -> Connections {
        let options = file(dir).create_if_missing(true);
        let mut conn = options.connect().await.unwrap();
        sqlx::query("CREATE TABLE t (v INTEGER)")
            .execute(&mut conn)
            .await
            .unwrap();
        Connections::writer(options, conn)
    }

    async fn count(c: &Connections) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(c)
            .await
            .unwrap()
    }

    /// A transaction that inserts a row and is then dropped open, as when the request
    /// holding it is cancelled.
    async fn insert_and_drop(w: &Connections) {
        let mut tx = w.begin().await.unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut *tx)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_transaction_dropped_open_is_rolled_back_before_the_next_use() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir).await;
        insert_and_drop(&w).await;
        assert_eq!(count(&w).await, 0, "the dropped insert was not rolled back");
        // The connection is out of any transaction: another one begins and commits.
        let mut tx = w.begin().await.unwrap();
        sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(count(&w).await, 1);
    }

    #[tokio::test]
    async fn a_transaction_dropped_open_does_not_keep_other_processes_from_writing() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir).await;
        insert_and_drop(&w).await;
        // Another process on the file (the CLI, another replica), and nothing more from
        // this one: the rollback must not wait for this one's next write.
        let mut other = file(&dir)
            .busy_timeout(Duration::ZERO)
            .connect()
            .await
            .unwrap();
        for _ in 0..50 {
            if sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut other)
                .await
                .is_ok()
            {
                sqlx::query("COMMIT").execute(&mut other).await.unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the dropped transaction still holds the write lock");
    }

    #[tokio::test]
    async fn a_begin_cancelled_before_it_ran_leaves_the_connection_usable() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir).await;
        // Polled once: the lock is taken, the BEGIN may or may not have been sent.
        let mut begin = Box::pin(w.begin());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let _ = std::future::Future::poll(begin.as_mut(), &mut cx);
        drop(begin);
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&w)
            .await
            .unwrap();
        assert_eq!(
            count(&w).await,
            1,
            "the insert was swallowed by a dangling transaction"
        );
        let tx = w.begin().await.unwrap();
        tx.commit().await.unwrap();
    }

    #[tokio::test]
    async fn writers_queue_and_readers_open_only_what_they_need() {
        let dir = tempfile::tempdir().unwrap();
        let w = std::sync::Arc::new(writer(&dir).await);
        let held = w.lock().await.unwrap();
        assert_eq!(
            w.stats(),
            PoolStats {
                open: 1,
                idle: 0,
                max: 1
            }
        );
        let queued = tokio::spawn({
            let w = w.clone();
            async move {
                sqlx::query("INSERT INTO t VALUES (1)")
                    .execute(&*w)
                    .await
                    .map(|_| ())
            }
        });
        tokio::task::yield_now().await;
        assert!(!queued.is_finished(), "a second writer did not wait");
        drop(held);
        queued.await.unwrap().unwrap();

        let readers = Connections::readers(file(&dir).read_only(true), 4);
        for _ in 0..3 {
            assert_eq!(count(&readers).await, 1);
        }
        assert_eq!(
            readers.stats(),
            PoolStats {
                open: 1,
                idle: 1,
                max: 4
            }
        );
        let err = sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&readers)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
    }
}
