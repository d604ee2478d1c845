//! The store's connections, held by the process instead of pooled by sqlx.
//!
//! sqlx returns a pooled connection to its pool in a task of its own and pings it first, whatever
//! the pool's options: a round trip to the connection's thread on SQLite, to the server on
//! PostgreSQL, after every statement. So every statement on a pool cost two more thread
//! hand-offs, a task and that round trip, and the connection stayed busy for the ping: on
//! SQLite's one writing connection the next writer waited for it, on PostgreSQL the server
//! answered twice per statement. Here each connection sits behind a fair mutex and passes from
//! one user to the next in arrival order, with nothing in between.
//!
//! `&Connections` is an sqlx [`Executor`], so a statement runs on it as on a pool
//! (`.execute(&self.writer)`), and [`Connections::begin`] opens a transaction as a pool's
//! `begin` does. Like a pool, it is cheap to clone: clones share the connections.
//!
//! A connection that failed as a connection (its socket or thread is gone, or the server said
//! it is shutting it down) is replaced before its next use; one idle longer than
//! `check_idle_after` (PostgreSQL's: the server, a proxy or a failover may have dropped it
//! meanwhile) is pinged first and replaced if the ping fails. The sqlx pool did both.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};
use sqlx::{ConnectOptions, Connection, Database, Describe, Either, Execute, Executor, SqlStr};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use super::PoolStats;

mod group_commit;

pub(super) use group_commit::{Job, Kind, Target};

/// How long a statement waits for a connection, opening it included, before it fails (as a
/// pool's acquire timeout).
const WAIT: Duration = Duration::from_secs(10);

/// Open one connection within [`WAIT`]: a server that does not answer (a dropped packet, a
/// firewall) is an error after that, not a wait for the operating system's TCP timeout.
pub(super) async fn connect<C: Connection>(options: &C::Options) -> Result<C, sqlx::Error> {
    match tokio::time::timeout(WAIT, options.connect()).await {
        Ok(connected) => connected,
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the database did not answer within {} s", WAIT.as_secs()),
        ))),
    }
}

/// A fixed set of connections to one database, each opened on first use.
pub(super) struct Connections<DB: Database> {
    inner: Arc<Inner<DB>>,
}

struct Inner<DB: Database> {
    options: <DB::Connection as Connection>::Options,
    /// Each empty until first used, and again after its connection broke.
    slots: Vec<Arc<Slot<DB>>>,
    /// Which connection a user waits for when none is free, in turn.
    next: AtomicUsize,
    /// How a transaction begins on these connections.
    begin: &'static str,
    /// A connection idle this long is pinged before it is used (`None`: never).
    check_idle_after: Option<Duration>,
    /// Where writes queue to be committed together (`None`: each runs alone), and which.
    group_commit: Option<(Grouping, std::sync::Mutex<Option<group_commit::Queue<DB>>>)>,
    /// Where reads of a [`Kind::GROUPED`] kind queue to be run as one statement (`None`:
    /// each runs alone): PostgreSQL's, beside its group commit.
    group_reads: Option<std::sync::Mutex<Option<group_commit::Queue<DB>>>>,
    /// Where writes of a [`Kind::TAKES_NO_LOCK`] kind queue on a lane of their own (`None`:
    /// with the others): PostgreSQL's, beside its group commit.
    group_inserts: Option<std::sync::Mutex<Option<group_commit::Queue<DB>>>>,
}

/// Which writes the group commit takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Grouping {
    /// Every write (SQLite's one writer, where they would queue anyway). A batch's `BEGIN`
    /// and `COMMIT` go in its queries' text.
    Every,
    /// Only the writes of a [`Kind`] that writes a batch's inputs with one statement
    /// ([`Kind::GROUPED`]; PostgreSQL, whose writers run side by side otherwise): a batch
    /// of them is one statement and one commit instead of one of each per request. Its
    /// `BEGIN` and `COMMIT` are statements of their own (PostgreSQL prepares one statement
    /// per query).
    Grouped,
}

type Slot<DB> = Mutex<Option<Open<DB>>>;

struct Open<DB: Database> {
    conn: DB::Connection,
    /// A transaction was dropped open (its request was cancelled, or it returned early on an
    /// error): it is rolled back before the connection is used again.
    roll_back: bool,
    /// A statement failed as only a lost connection fails: it is replaced before its next use.
    broken: bool,
    /// When it was last handed out, for `check_idle_after`.
    used: Instant,
}

impl<DB: Database> Open<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    fn new(conn: DB::Connection) -> Self {
        Self {
            conn,
            roll_back: false,
            broken: false,
            used: Instant::now(),
        }
    }

    /// Roll back a transaction dropped open, if there was one.
    async fn settle(&mut self) {
        if self.roll_back {
            // It fails only if the transaction never began (dropped before its BEGIN was
            // sent), and then there is nothing to undo, or if the connection is lost. Marked
            // done only once it ran: if this is cancelled first, the next user rolls back.
            let done = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
            self.roll_back = false;
            if let Err(e) = self.noting(done) {
                tracing::debug!(error = %e, "rolling back a dropped transaction");
            }
        }
    }

    /// `result`, having marked the connection for replacement if its error says the
    /// connection is lost.
    fn noting<T>(&mut self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        if let Err(e) = &result {
            self.broken |= breaks(e);
        }
        result
    }
}

/// Whether an error means the connection cannot be used again: its socket or thread is gone,
/// or the server ended the session (SQLSTATE class 08, connection exception, and 57P…, the
/// server shutting down, terminating the backend, dropping the database or timing out an
/// idle session).
fn breaks(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

impl<DB: Database> Clone for Connections<DB> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<DB: Database> fmt::Debug for Connections<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connections")
            .field("size", &self.inner.slots.len())
            .finish()
    }
}

impl<DB: Database> Connections<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    /// `size` connections, the first already open (`first`), the rest opened with `options`
    /// when first needed. A transaction on them begins with `begin`.
    fn new(
        options: <DB::Connection as Connection>::Options,
        first: Option<DB::Connection>,
        size: usize,
        begin: &'static str,
        check_idle_after: Option<Duration>,
        group_commit: Option<Grouping>,
    ) -> Self {
        let mut first = first.map(Open::new);
        let slots = (0..size.max(1))
            .map(|_| Arc::new(Mutex::new(first.take())))
            .collect();
        Self {
            inner: Arc::new(Inner {
                options,
                slots,
                next: AtomicUsize::new(0),
                begin,
                check_idle_after,
                group_commit: group_commit.map(|how| (how, std::sync::Mutex::new(None))),
                group_reads: (group_commit == Some(Grouping::Grouped))
                    .then(|| std::sync::Mutex::new(None)),
                group_inserts: (group_commit == Some(Grouping::Grouped))
                    .then(|| std::sync::Mutex::new(None)),
            }),
        }
    }

    /// A connection: the first free one that is open, else one not yet opened, else the
    /// next in turn once the users queued before have finished with it (tokio's mutex is
    /// fair). It has no transaction open. Connections are tried in order, so a light load
    /// keeps to the first few and the rest are never opened.
    pub(super) async fn lock(&self) -> Result<Conn<'_, DB>, sqlx::Error> {
        tokio::time::timeout(WAIT, self.lock_within())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
    }

    async fn lock_within(&self) -> Result<Conn<'_, DB>, sqlx::Error> {
        let inner = &*self.inner;
        let mut unopened = None;
        let mut free = None;
        for slot in &inner.slots {
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
                let turn = inner.next.fetch_add(1, Ordering::Relaxed) % inner.slots.len();
                let slot = &inner.slots[turn];
                (slot, slot.lock().await)
            }
        };
        if let Some(open) = slot.as_mut() {
            open.settle().await;
            let idle = inner
                .check_idle_after
                .is_some_and(|d| open.used.elapsed() >= d);
            if !open.broken && idle {
                let pinged = open.conn.ping().await;
                open.noting(pinged).ok();
            }
        }
        if let Some(lost) = slot.take_if(|open| open.broken) {
            tracing::debug!("replacing a lost database connection");
            // Dropped, not closed: its socket or thread is gone already.
            drop(lost);
        }
        if slot.is_none() {
            *slot = Some(Open::new(inner.options.connect().await?));
        }
        let Ok(mut open) = MutexGuard::try_map(slot, Option::as_mut) else {
            return Err(sqlx::Error::PoolClosed);
        };
        open.used = Instant::now();
        Ok(Conn {
            open,
            slot: which,
            settle: settle::<DB>,
        })
    }

    /// Begin a transaction on a connection, held until it commits or is dropped.
    pub(super) async fn begin(&self) -> Result<Tx<'_, DB>, sqlx::Error> {
        // Marked open before BEGIN is sent: if this future is dropped once the statement has
        // reached the connection, the next user rolls it back.
        let mut tx = Tx {
            conn: self.lock().await?,
            open: true,
        };
        let begun = sqlx::query(self.inner.begin).execute(&mut *tx).await;
        tx.conn.open.noting(begun)?;
        Ok(tx)
    }

    /// Run `job`, one write, and return what it returns once it is committed. On SQLite's
    /// writer it is queued and committed together with the writes of other requests queued
    /// meanwhile (`group_commit`); elsewhere it runs alone, as the statements it sends would.
    pub(super) async fn write<R: Send + 'static>(
        &self,
        job: Job<DB, R>,
    ) -> Result<R, super::StoreError> {
        match self.queue(Grouping::Every) {
            Some(queue) => group_commit::run(queue, job).await,
            None => job(Target::Alone(self)).await,
        }
    }

    /// Write `input`, a write of kind `K`, and return what it returns once it is committed.
    /// On SQLite's writer it is queued as [`Connections::write`]'s jobs are, and the writes
    /// of its kind queued with it run as one statement; on PostgreSQL too if `K` writes them
    /// with one statement ([`Kind::GROUPED`]); otherwise it runs alone.
    pub(super) async fn write_kind<K: Kind<DB>>(
        &self,
        input: K::Input,
    ) -> Result<K::Output, super::StoreError> {
        let takes = if K::GROUPED {
            Grouping::Grouped
        } else {
            Grouping::Every
        };
        let lane = (K::GROUPED && K::TAKES_NO_LOCK)
            .then_some(self.inner.group_inserts.as_ref())
            .flatten()
            .and_then(|slot| {
                group_commit::queue(
                    slot,
                    Arc::downgrade(&self.inner),
                    group_commit::Runs::Inserts,
                )
            });
        match lane.or_else(|| self.queue(takes)) {
            Some(queue) => group_commit::run_kind::<DB, K>(queue, input).await,
            None => K::one(Target::Alone(self), &input).await,
        }
    }

    /// The group commit's queue, if these connections have one that takes a write `takes`
    /// would: every group commit takes [`Grouping::Grouped`]'s, SQLite's writer every write.
    fn queue(&self, takes: Grouping) -> Option<group_commit::Queue<DB>> {
        self.inner
            .group_commit
            .as_ref()
            .filter(|(how, _)| *how == Grouping::Every || takes == Grouping::Grouped)
            .and_then(|(_, slot)| {
                group_commit::queue(
                    slot,
                    Arc::downgrade(&self.inner),
                    group_commit::Runs::Writes,
                )
            })
    }

    /// Read `input`, a read of kind `K`, and return what it returns. On PostgreSQL, if `K`
    /// reads several inputs with one statement ([`Kind::GROUPED`]), it is queued, and the
    /// reads of its kind queued with it run as that one statement: each statement costs
    /// the server a wake-up of its backend and a plan's run whatever it reads
    /// (`bench/README.md`, "PostgreSQL's look-ups read together"). Otherwise (SQLite, whose
    /// reads are in this process) it runs alone.
    pub(super) async fn read_kind<K: Kind<DB>>(
        &self,
        input: K::Input,
    ) -> Result<K::Output, super::StoreError> {
        let queue = self
            .inner
            .group_reads
            .as_ref()
            .filter(|_| K::GROUPED)
            .and_then(|slot| {
                group_commit::queue(slot, Arc::downgrade(&self.inner), group_commit::Runs::Reads)
            });
        match queue {
            Some(queue) => group_commit::run_kind::<DB, K>(queue, input).await,
            None => K::one(Target::Alone(self), &input).await,
        }
    }

    /// Whether a batch's `BEGIN` and `COMMIT` go in its queries' text (SQLite's writer).
    fn frames(&self) -> bool {
        matches!(self.inner.group_commit, Some((Grouping::Every, _)))
    }

    /// The rows of `script`, a whole transaction sent as one query: its own `BEGIN`, its
    /// statements, its `COMMIT`. SQLite runs a query of several statements on its
    /// connection's thread without coming back between them, so the transaction costs one
    /// hand-off to that thread instead of one per statement, and the writer is held for that
    /// long only. If the script fails or is cancelled part-way, the transaction it left open
    /// is rolled back before the connection is used again, as a dropped [`Tx`] is.
    pub(super) async fn transaction_script<'q, E>(
        &self,
        script: E,
    ) -> Result<Vec<DB::Row>, sqlx::Error>
    where
        E: 'q + Execute<'q, DB>,
    {
        // Marked open before the script is sent, as `begin` does.
        let mut tx = Tx {
            conn: self.lock().await?,
            open: true,
        };
        let rows = (&mut *tx.conn).fetch_all(script).await;
        match tx.conn.open.noting(rows) {
            Ok(rows) => {
                tx.open = false;
                Ok(rows)
            }
            Err(e) => {
                // Fails when the script stopped before its `BEGIN` ran (no transaction to
                // undo) or the connection is lost (replaced before its next use).
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    /// Open, idle and at most how many, for the metrics.
    pub(super) fn stats(&self) -> PoolStats {
        let mut stats = PoolStats::default();
        for slot in &self.inner.slots {
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

impl Connections<sqlx::Sqlite> {
    /// SQLite's one connection that writes, already open (`conn`, with the migrations
    /// applied). Its transactions take SQLite's write lock at once (`BEGIN IMMEDIATE`): the
    /// server's own writers queue here anyway, and another process writing the same file (an
    /// admin command) makes a transaction wait in the busy handler rather than fail when it
    /// upgrades a read to a write.
    pub(super) fn writer(
        options: sqlx::sqlite::SqliteConnectOptions,
        conn: sqlx::SqliteConnection,
    ) -> Self {
        Self::new(
            options,
            Some(conn),
            1,
            "BEGIN IMMEDIATE",
            None,
            Some(Grouping::Every),
        )
    }

    /// `size` SQLite connections for reads, opened with `options` when first needed. A
    /// transaction on them is a deferred one, which reads one snapshot (WAL mode). The file
    /// is local: a connection is never idle-checked.
    pub(super) fn readers(options: sqlx::sqlite::SqliteConnectOptions, size: usize) -> Self {
        Self::new(options, None, size, "BEGIN", None, None)
    }
}

impl Connections<sqlx::Postgres> {
    /// `size` PostgreSQL connections for reads and writes alike (its writers do not contend
    /// as SQLite's do), `first` already open (the one that migrated), the rest opened when
    /// first needed; one idle `check_idle_after` or longer is pinged before it is used. The
    /// writes of a [`Kind::GROUPED`] kind queued at once are committed together.
    pub(super) fn shared(
        options: sqlx::postgres::PgConnectOptions,
        first: sqlx::PgConnection,
        size: usize,
        check_idle_after: Duration,
    ) -> Self {
        Self::new(
            options,
            Some(first),
            size,
            "BEGIN",
            Some(check_idle_after),
            Some(Grouping::Grouped),
        )
    }
}

/// A connection, held.
pub(super) struct Conn<'a, DB: Database> {
    open: MappedMutexGuard<'a, Open<DB>>,
    /// Where it is held, for a rollback after it is let go.
    slot: &'a Arc<Slot<DB>>,
    /// That rollback ([`settle`]; `Drop` cannot name the bounds it needs).
    settle: fn(Arc<Slot<DB>>) -> BoxFuture<'static, ()>,
}

impl<DB: Database> Deref for Conn<'_, DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        &self.open.conn
    }
}

impl<DB: Database> DerefMut for Conn<'_, DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.open.conn
    }
}

/// A transaction on a held connection; dropped without [`Tx::commit`], it is rolled back.
pub(super) struct Tx<'a, DB: Database> {
    conn: Conn<'a, DB>,
    open: bool,
}

impl<DB: Database> Tx<'_, DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    pub(super) async fn commit(self) -> Result<(), sqlx::Error> {
        self.end("COMMIT").await
    }

    pub(super) async fn rollback(self) -> Result<(), sqlx::Error> {
        self.end("ROLLBACK").await
    }

    async fn end(mut self, how: &'static str) -> Result<(), sqlx::Error> {
        let ended = sqlx::query(how).execute(&mut *self).await;
        // Only a statement that ran ends the transaction; else it is rolled back on drop.
        self.conn.open.noting(ended)?;
        self.open = false;
        Ok(())
    }
}

impl<DB: Database> Deref for Tx<'_, DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        &self.conn
    }
}

impl<DB: Database> DerefMut for Tx<'_, DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.conn
    }
}

impl<DB: Database> Drop for Tx<'_, DB> {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        // No statement can be awaited here. Whoever takes the connection next rolls back
        // first: a user queued for it, or else a task spawned for that alone, so that the
        // transaction does not hold its locks (SQLite's write lock against other processes
        // on the file, PostgreSQL's row locks against other replicas) until this connection
        // is used again.
        self.conn.open.roll_back = true;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let slot = Arc::clone(self.conn.slot);
            runtime.spawn((self.conn.settle)(slot));
        }
    }
}

/// Roll back what a transaction dropped open left on the connection in `slot`.
fn settle<DB: Database>(slot: Arc<Slot<DB>>) -> BoxFuture<'static, ()>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    Box::pin(async move {
        if let Some(open) = slot.lock().await.as_mut() {
            open.settle().await;
        }
    })
}

type Item<DB> = Either<<DB as Database>::QueryResult, <DB as Database>::Row>;

impl<'c, DB: Database> Executor<'c> for &'c Connections<DB>
where
    for<'x> &'x mut DB::Connection: Executor<'x, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    type Database = DB;

    /// The statement's results, collected while the connection is held (the store reads
    /// pages of rows at most), then streamed.
    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<Item<DB>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, DB>,
    {
        stream::once(async move {
            let mut conn = self.lock().await?;
            let all = (&mut *conn)
                .fetch_many(query)
                .try_collect::<Vec<Item<DB>>>()
                .await;
            conn.open.noting(all)
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
    ) -> BoxFuture<'e, Result<Option<DB::Row>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, DB>,
    {
        Box::pin(async move {
            let mut conn = self.lock().await?;
            let row = (&mut *conn).fetch_optional(query).await;
            conn.open.noting(row)
        })
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [DB::TypeInfo],
    ) -> BoxFuture<'e, Result<DB::Statement, sqlx::Error>>
    where
        'c: 'e,
    {
        Box::pin(async move {
            let mut conn = self.lock().await?;
            let prepared = (&mut *conn).prepare_with(sql, parameters).await;
            conn.open.noting(prepared)
        })
    }

    fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<Describe<DB>, sqlx::Error>>
    where
        'c: 'e,
    {
        Box::pin(async move {
            let mut conn = self.lock().await?;
            let described = (&mut *conn).describe(sql).await;
            conn.open.noting(described)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::Sqlite;
    use sqlx::sqlite::SqliteConnectOptions;

    use super::*;

    /// The test database in `dir`.
    fn file(dir: &tempfile::TempDir) -> SqliteConnectOptions {
        SqliteConnectOptions::from_str(&format!("sqlite://{}", dir.path().join("t.db").display()))
            .unwrap()
    }

    async fn writer(dir: &tempfile::TempDir) -> Connections<Sqlite> {
        let options = file(dir).create_if_missing(true);
        let mut conn = options.connect().await.unwrap();
        sqlx::query("CREATE TABLE t (v INTEGER)")
            .execute(&mut conn)
            .await
            .unwrap();
        Connections::writer(options, conn)
    }

    /// The values in `table`, in order.
    async fn values(c: &Connections<Sqlite>, table: &str) -> Vec<i64> {
        let sql = format!("SELECT v FROM {table} ORDER BY v");
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(c)
            .await
            .unwrap()
    }

    async fn count(c: &Connections<Sqlite>) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(c)
            .await
            .unwrap()
    }

    /// A transaction that inserts a row and is then dropped open, as when the request
    /// holding it is cancelled.
    async fn insert_and_drop(w: &Connections<Sqlite>) {
        let mut tx = w.begin().await.unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut *tx)
            .await
            .unwrap();
    }

    /// Insert `v` on its own, then begin and commit a transaction: the connection is out of
    /// any transaction left before.
    async fn insert_and_begin_again(w: &Connections<Sqlite>, v: i64) {
        sqlx::query("INSERT INTO t VALUES ($1)")
            .bind(v)
            .execute(w)
            .await
            .unwrap();
        let tx = w.begin().await.unwrap();
        tx.commit().await.unwrap();
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
    async fn a_transaction_script_commits_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir).await;
        let rows = w
            .transaction_script(sqlx::query(
                "BEGIN IMMEDIATE; INSERT INTO t VALUES (1); \
                 INSERT INTO t SELECT 2 WHERE changes() = 1 RETURNING v; COMMIT",
            ))
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(count(&w).await, 2);
        // The second insert fails once the first has run: the first is undone, and the
        // connection is left out of any transaction.
        let failed = w
            .transaction_script(sqlx::query(
                "BEGIN IMMEDIATE; INSERT INTO t VALUES (3); INSERT INTO missing VALUES (4); COMMIT",
            ))
            .await;
        assert!(failed.is_err());
        assert_eq!(
            count(&w).await,
            2,
            "the failed script's first insert stayed"
        );
        insert_and_begin_again(&w, 5).await;
        assert_eq!(count(&w).await, 3);
    }

    #[tokio::test]
    async fn a_transaction_script_cancelled_part_way_is_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir).await;
        // Polled once: the script may have reached the connection's thread and run its
        // BEGIN and first insert, with nobody left to read its results.
        let mut script = Box::pin(w.transaction_script(sqlx::query(
            "BEGIN IMMEDIATE; INSERT INTO t VALUES (1); SELECT v FROM t; COMMIT",
        )));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let _ = std::future::Future::poll(script.as_mut(), &mut cx);
        drop(script);
        insert_and_begin_again(&w, 2).await;
        // Read on another connection, which sees only what is committed.
        let readers = Connections::readers(file(&dir).read_only(true), 1);
        let values = values(&readers, "t").await;
        assert!(
            values == [2] || values == [1, 2],
            "the next statement ran inside the dangling transaction: {values:?}"
        );
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

    /// A job that inserts `v` into `table`.
    fn insert(table: &'static str, v: i64) -> Job<Sqlite, ()> {
        Box::new(move |on| {
            Box::pin(async move {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO {table} VALUES ($1)"
                )))
                .bind(v)
                .execute(on)
                .await?;
                Ok(())
            })
        })
    }

    /// The frames in `dir`'s write-ahead log, never checkpointed: each commit appends the
    /// pages it changed (a frame is a 24-byte header and a 4 KiB page, after the log's
    /// 32-byte header).
    fn wal_frames(dir: &tempfile::TempDir) -> u64 {
        let len = std::fs::metadata(dir.path().join("t.db-wal")).map_or(0, |m| m.len());
        len.saturating_sub(32) / (24 + 4096)
    }

    #[tokio::test]
    async fn writes_queued_together_commit_together() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir).await;
        for pragma in ["PRAGMA journal_mode = WAL", "PRAGMA wal_autocheckpoint = 0"] {
            sqlx::query(pragma).execute(&w).await.unwrap();
        }

        // One after another: a commit each, each appending the table's page at least.
        let before = wal_frames(&dir);
        for v in 0..40 {
            w.write(insert("t", v)).await.unwrap();
        }
        let alone = wal_frames(&dir) - before;
        assert!(alone >= 40, "{alone} frames for 40 commits");

        // Queued at once: one transaction, one commit.
        let before = wal_frames(&dir);
        let all = futures_util::future::join_all((40..80).map(|v| w.write(insert("t", v)))).await;
        assert!(all.iter().all(Result::is_ok), "{all:?}");
        let together = wal_frames(&dir) - before;
        assert!(
            together <= 4,
            "{together} frames for 40 writes queued together"
        );
        assert_eq!(count(&w).await, 80);
    }

    #[tokio::test]
    async fn a_write_that_fails_in_a_batch_undoes_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir).await;
        sqlx::query("CREATE TABLE u (v INTEGER UNIQUE)")
            .execute(&w)
            .await
            .unwrap();
        let all =
            futures_util::future::join_all([1, 2, 2, 3, 4].map(|v| w.write(insert("u", v)))).await;
        let failed: Vec<_> = all.iter().map(Result::is_err).collect();
        assert_eq!(failed, [false, false, true, false, false], "{all:?}");
        match &all[2] {
            Err(crate::store::StoreError::Database(sqlx::Error::Database(e))) => {
                assert!(e.is_unique_violation(), "{e}")
            }
            other => panic!("not the duplicate's own error: {other:?}"),
        }
        assert_eq!(values(&w, "u").await, [1, 2, 3, 4]);
    }

    /// A write of `v` into the table named, `Put`, the test's kind: alone, one INSERT; several
    /// at once, one INSERT of all, each call's table and size noted in [`PUT_MANY`].
    struct Put;

    static PUT_MANY: std::sync::Mutex<Vec<(&'static str, usize)>> =
        std::sync::Mutex::new(Vec::new());

    impl Kind<Sqlite> for Put {
        type Input = (&'static str, i64);
        type Output = i64;
        const ONE_QUERY: bool = true;

        fn clash(a: &Self::Input, b: &Self::Input) -> bool {
            a == b
        }

        fn one<'c>(
            on: Target<'c, Sqlite>,
            &(table, v): &'c Self::Input,
        ) -> BoxFuture<'c, Result<i64, crate::store::StoreError>> {
            Box::pin(async move {
                let sql = format!("INSERT INTO {table} VALUES ($1) RETURNING v");
                let v = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .bind(v)
                    .fetch_one(on)
                    .await?;
                Ok(v)
            })
        }

        fn many<'c>(
            on: Target<'c, Sqlite>,
            inputs: &'c [Self::Input],
        ) -> BoxFuture<'c, Result<Vec<i64>, crate::store::StoreError>> {
            Box::pin(async move {
                let table = inputs[0].0;
                assert!(inputs.iter().all(|(t, _)| *t == table));
                PUT_MANY.lock().unwrap().push((table, inputs.len()));
                let values: Vec<i64> = inputs.iter().map(|&(_, v)| v).collect();
                let sql = format!(
                    "INSERT INTO {table} SELECT value FROM json_each($1) ORDER BY key RETURNING v"
                );
                let mut stored: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .bind(serde_json::to_string(&values).unwrap())
                    .fetch_all(on)
                    .await?;
                stored.sort_unstable();
                Ok(values
                    .iter()
                    .map(|v| stored[stored.binary_search(v).unwrap()])
                    .collect())
            })
        }
    }

    #[tokio::test]
    async fn writes_of_one_kind_queued_together_run_as_one_statement() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir).await;
        sqlx::query("CREATE TABLE p (v INTEGER)")
            .execute(&w)
            .await
            .unwrap();
        // Between other jobs, which run as before, in the same transaction.
        let puts = futures_util::future::join_all((0..20).map(|v| w.write_kind::<Put>(("p", v))));
        let others = futures_util::future::join_all((0..3).map(|v| w.write(insert("t", v))));
        let (puts, others) = tokio::join!(puts, others);
        let puts: Vec<i64> = puts.into_iter().map(Result::unwrap).collect();
        assert_eq!(puts, (0..20).collect::<Vec<_>>());
        assert!(others.iter().all(Result::is_ok), "{others:?}");
        let calls: Vec<_> = PUT_MANY
            .lock()
            .unwrap()
            .iter()
            .filter(|(table, _)| *table == "p")
            .map(|&(_, n)| n)
            .collect();
        assert_eq!(calls, [20], "one statement for the twenty");
        assert_eq!(count(&w).await, 3);

        // A write queued alone runs alone: no batch, no `many`.
        assert_eq!(w.write_kind::<Put>(("p", 20)).await.unwrap(), 20);
        assert_eq!(
            PUT_MANY
                .lock()
                .unwrap()
                .iter()
                .filter(|(t, _)| *t == "p")
                .count(),
            1
        );
    }

    #[tokio::test]
    async fn a_write_of_a_kind_that_fails_or_clashes_gets_its_own_answer() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir).await;
        sqlx::query("CREATE TABLE q (v INTEGER UNIQUE)")
            .execute(&w)
            .await
            .unwrap();
        w.write_kind::<Put>(("q", 100)).await.unwrap();
        // The second 2 clashes with the first: its own statement, after the first's, which
        // it then fails against. 100 is taken: the statement of the others fails, and each is
        // written again alone.
        let all = futures_util::future::join_all(
            [1, 2, 2, 100, 3].map(|v| w.write_kind::<Put>(("q", v))),
        )
        .await;
        let ok: Vec<_> = all.iter().map(Result::is_ok).collect();
        assert_eq!(ok, [true, true, false, false, true], "{all:?}");
        for failed in [&all[2], &all[3]] {
            match failed {
                Err(crate::store::StoreError::Database(sqlx::Error::Database(e))) => {
                    assert!(e.is_unique_violation(), "{e}")
                }
                other => panic!("not its own error: {other:?}"),
            }
        }
        assert_eq!(values(&w, "q").await, [1, 2, 3, 100]);
    }

    /// A write of `v` into `t` whose batch statement (`many`) commits with the batch and
    /// then fails: a query whose result cannot be read, say. Alone, it writes and succeeds.
    struct FailsAfter;

    impl Kind<Sqlite> for FailsAfter {
        type Input = i64;
        type Output = ();
        const ONE_QUERY: bool = true;

        fn clash(_: &i64, _: &i64) -> bool {
            false
        }

        fn one<'c>(
            on: Target<'c, Sqlite>,
            v: &'c i64,
        ) -> BoxFuture<'c, Result<(), crate::store::StoreError>> {
            Box::pin(async move {
                sqlx::query("INSERT INTO t VALUES ($1)")
                    .bind(v)
                    .execute(on)
                    .await?;
                Ok(())
            })
        }

        fn many<'c>(
            on: Target<'c, Sqlite>,
            inputs: &'c [i64],
        ) -> BoxFuture<'c, Result<Vec<()>, crate::store::StoreError>> {
            Box::pin(async move {
                sqlx::query("INSERT INTO t SELECT value FROM json_each($1)")
                    .bind(serde_json::to_string(inputs).unwrap())
                    .execute(on)
                    .await?;
                Err(crate::store::StoreError::Corrupt("unreadable".into()))
            })
        }
    }

    /// Rows of `t` from `values` marked by one statement (`UPDATE`), each answered with the
    /// rows that statement changed, as `execute` counts them.
    struct Mark;

    impl Kind<Sqlite> for Mark {
        type Input = i64;
        type Output = u64;
        const ONE_QUERY: bool = true;

        fn clash(a: &i64, b: &i64) -> bool {
            a == b
        }

        fn one<'c>(
            on: Target<'c, Sqlite>,
            v: &'c i64,
        ) -> BoxFuture<'c, Result<u64, crate::store::StoreError>> {
            Box::pin(async move {
                let done = sqlx::query("UPDATE t SET v = v WHERE v = $1")
                    .bind(v)
                    .execute(on)
                    .await?;
                Ok(done.rows_affected())
            })
        }

        fn many<'c>(
            on: Target<'c, Sqlite>,
            inputs: &'c [i64],
        ) -> BoxFuture<'c, Result<Vec<u64>, crate::store::StoreError>> {
            Box::pin(async move {
                let done =
                    sqlx::query("UPDATE t SET v = v WHERE v IN (SELECT value FROM json_each($1))")
                        .bind(serde_json::to_string(inputs).unwrap())
                        .execute(on)
                        .await?;
                Ok(vec![done.rows_affected(); inputs.len()])
            })
        }
    }

    /// A batch's `BEGIN` goes with its first query and its `COMMIT` with its last kind's
    /// one: what a job counts is its own statement's, not those two's, which SQLite reports
    /// as the rows the connection's last write changed.
    #[tokio::test]
    async fn a_batch_s_begin_and_commit_add_nothing_to_what_its_writes_count() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir).await;
        let seven = sqlx::query("INSERT INTO t VALUES (1), (2), (3), (4), (5), (6), (7)")
            .execute(&w)
            .await
            .unwrap();
        assert_eq!(seven.rows_affected(), 7);

        // Alone in its batch, the kind's statement is both the first and the last.
        let marked =
            futures_util::future::join_all([1, 2, 3].map(|v| w.write_kind::<Mark>(v))).await;
        let marked: Vec<u64> = marked.into_iter().map(Result::unwrap).collect();
        assert_eq!(marked, [3, 3, 3]);

        // After other jobs: the first is a job's own statement, counted as alone.
        let update = |v: i64| -> Job<Sqlite, u64> {
            Box::new(move |on| {
                Box::pin(async move {
                    let done = sqlx::query("UPDATE t SET v = v WHERE v >= $1")
                        .bind(v)
                        .execute(on)
                        .await?;
                    Ok(done.rows_affected())
                })
            })
        };
        let jobs = futures_util::future::join_all([6, 5].map(|v| w.write(update(v))));
        let marks = futures_util::future::join_all([1, 2].map(|v| w.write_kind::<Mark>(v)));
        let (jobs, marks) = tokio::join!(jobs, marks);
        let jobs: Vec<u64> = jobs.into_iter().map(Result::unwrap).collect();
        let marks: Vec<u64> = marks.into_iter().map(Result::unwrap).collect();
        assert_eq!((jobs, marks), (vec![2, 3], vec![2, 2]));

        // Committed, and the connection out of any transaction: another process sees the
        // rows, and the writer begins again.
        let mut other = file(&dir).connect().await.unwrap();
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&mut other)
            .await
            .unwrap();
        assert_eq!(rows, 7);
        insert_and_begin_again(&w, 8).await;
    }

    /// The `COMMIT` after a kind's statement ran: what fails after it cannot undo the batch,
    /// so the kind's writes answer with that failure and nothing is written twice. If the
    /// statement itself fails, the `COMMIT` does not run, the batch is undone and each write
    /// runs again alone.
    #[tokio::test]
    async fn a_kind_that_fails_after_the_batch_committed_is_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir).await;
        let kinds =
            futures_util::future::join_all([1, 2, 3].map(|v| w.write_kind::<FailsAfter>(v)));
        let others = futures_util::future::join_all([10, 11].map(|v| w.write(insert("t", v))));
        let (kinds, others) = tokio::join!(kinds, others);
        for answer in &kinds {
            assert!(
                matches!(answer, Err(crate::store::StoreError::Corrupt(m)) if m.contains("unreadable")),
                "{answer:?}"
            );
        }
        assert!(others.iter().all(Result::is_ok), "{others:?}");
        assert_eq!(
            values(&w, "t").await,
            [1, 2, 3, 10, 11],
            "each written once"
        );

        // The kind's statement fails (a duplicate): nothing of the batch stands, and each
        // write runs again alone with its own answer.
        sqlx::query("CREATE TABLE q (v INTEGER UNIQUE)")
            .execute(&w)
            .await
            .unwrap();
        w.write_kind::<Put>(("q", 100)).await.unwrap();
        let others = futures_util::future::join_all([20, 21].map(|v| w.write(insert("t", v))));
        let puts = futures_util::future::join_all([5, 100].map(|v| w.write_kind::<Put>(("q", v))));
        let (others, puts) = tokio::join!(others, puts);
        assert!(others.iter().all(Result::is_ok), "{others:?}");
        assert!(puts[0].is_ok() && puts[1].is_err(), "{puts:?}");
        assert_eq!(values(&w, "q").await, [5, 100]);
        assert_eq!(count(&w).await, 7);
    }
}
