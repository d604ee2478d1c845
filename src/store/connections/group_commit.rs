//! Writes from many requests committed together (a group commit), on SQLite's one writer,
//! and on PostgreSQL for the kinds of write that one statement does for many requests
//! ([`Kind::GROUPED`]: a refresh token's rotation, an authorization code's storage and
//! redemption, a device request's redemption, a client's revocation of its token's family).
//!
//! Each write used to take its own turn on the writer's mutex and its own commit: between two
//! writes, the statement's answer had to wake the request's task on a tokio worker, and the
//! mutex then the next waiter's task, before the writer's thread had anything to do again.
//! And each commit appended its pages to the write-ahead log and made every reader connection
//! drop its page cache.
//!
//! Here a write is a [`Job`] queued to one task that takes the writer for every job queued
//! while its last batch ran, runs them one after another in one transaction, and answers
//! each job once that transaction has committed. A job's answer still comes after its
//! commit, as before; a batch of one runs as the job would alone. Under the code-redemption
//! load a batch held about eight jobs, and the paths that write answered 1.1–1.4× as fast
//! (`bench/README.md`, "Writes committed together").
//!
//! If any job of a batch fails, or the commit does, the batch is rolled back (SQLite undoes a
//! failed COMMIT's transaction, or it stays open and is rolled back first) and each job runs
//! again alone, its own commit: one job's error never undoes another's write, and each job
//! gets its own error. A job must be safe to run again after a rolled-back run; writes are.
//!
//! A job must not be queued by a caller that holds the writer (a [`super::Tx`] open): the
//! batch would wait for the writer, and the caller for the batch.
//!
//! A write of a [`Kind`] (spending a code, storing a refresh token, …) is queued as its input
//! instead of as statements: a batch's writes of one kind run as one statement of that kind
//! for all their inputs. Each statement is a round trip to SQLite's connection thread, with a
//! wake-up on both sides; under the code-redemption load a batch's sixteen became two
//! (`bench/README.md`, "A batch's writes of one kind in one statement").
//!
//! Nor do the batch's `BEGIN` and `COMMIT` take round trips of their own: the `BEGIN` goes
//! in front of the batch's first query, in its text, and the `COMMIT` after the last one
//! when that is a kind's one query ([`Kind::ONE_QUERY`]), moved last for that ([`Batch`]).
//! A refresh's batch is one query now (`bench/README.md`, "A batch's BEGIN and COMMIT in
//! its queries"), and so is a code redemption's: a code's spend stores its refresh token in
//! the same script ("A code redemption in one write").
//!
//! On PostgreSQL, whose writes run side by side on several connections, only a
//! [`Kind::GROUPED`] kind is queued. A batch that is one such write, the usual case, is its
//! one statement, committed by itself: no `BEGIN` or `COMMIT` at all. Up to [`IN_FLIGHT`]
//! batches run at once, so that one batch's wait for its commit does not hold up the next.
//! Under the refresh load a batch held two to eight rotations, and the database's CPU per
//! refresh fell (`bench/README.md`, "PostgreSQL's rotations committed together"; and for
//! the codes, "PostgreSQL's code and device redemptions committed together"). Not every
//! write gains: registrations committed together were slower ("PostgreSQL's registrations
//! committed together: tried, not landed").
//!
//! PostgreSQL's hot reads by key (introspection's refresh token, a signed-in request's
//! session, a user by id) are queued the same way, on a queue of their own
//! ([`Runs::Reads`]), one batch at a time: those of one kind queued while the last batch ran
//! are one `SELECT` of all their keys, never in a transaction. Each statement costs the
//! server a wake-up of its backend and a plan's run whatever it reads (`bench/README.md`,
//! "PostgreSQL's look-ups read together").

use std::any::Any;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use super::{Connections, Item};
use crate::store::StoreError;

/// The most jobs one transaction holds: a bound on how long the writer is held at once and
/// on how much a failed batch runs again.
const MOST: usize = 64;

/// Where a job runs its statements.
pub(in crate::store) enum Target<'c, DB: sqlx::Database> {
    /// Alone, as it would without batching: each statement commits, or the job sends a
    /// whole transaction itself (`Connections::transaction_script`).
    Alone(&'c Connections<DB>),
    /// On the writer, inside the batch's transaction: no `BEGIN` or `COMMIT` of its own.
    Batched(Batch<'c, DB>),
}

impl<DB: sqlx::Database> Target<'_, DB> {
    /// The same target for one more statement, this one kept for the next.
    pub(in crate::store) fn again(&mut self) -> Target<'_, DB> {
        match self {
            Target::Alone(writer) => Target::Alone(*writer),
            Target::Batched(batch) => Target::Batched(Batch {
                conn: &mut *batch.conn,
                begin: &mut *batch.begin,
                commit: &mut *batch.commit,
            }),
        }
    }
}

impl<'c, DB: sqlx::Database> Target<'c, DB>
where
    for<'x> &'x mut DB::Connection: sqlx::Executor<'x, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    /// The rows of `query`, run here; alone, as a whole transaction if `script` says it
    /// carries its own `BEGIN` and `COMMIT` (`sql::one_transaction!`).
    pub(in crate::store) async fn fetch_script<'q, E>(
        self,
        query: E,
        script: bool,
    ) -> Result<Vec<DB::Row>, sqlx::Error>
    where
        E: 'q + sqlx::Execute<'q, DB>,
    {
        match self {
            Target::Alone(writer) if script => writer.transaction_script(query).await,
            on => sqlx::Executor::fetch_all(on, query).await,
        }
    }

    /// Run `job`, a write of `input` that sends more than one query, here as one
    /// transaction: in the batch's, or, alone, in one of its own, its `BEGIN` in front of
    /// the job's first query as a batch's is. Alone, each query would otherwise commit by
    /// itself.
    pub(in crate::store) async fn atomic<I: ?Sized, R>(
        self,
        input: &I,
        job: impl for<'t> FnOnce(Target<'t, DB>, &'t I) -> BoxFuture<'t, Result<R, StoreError>>,
    ) -> Result<R, StoreError> {
        let writer = match self {
            Target::Alone(writer) => writer,
            on => return job(on, input).await,
        };
        let (mut tx, mut begin) = if writer.frames() {
            // Marked open before anything is sent, as in `committed_together`.
            let conn = writer.lock().await?;
            (super::Tx { conn, open: true }, Some(writer.inner.begin))
        } else {
            // A statement of its own: PostgreSQL prepares one statement per query.
            (writer.begin().await?, None)
        };
        let mut commit = Commit::Apart;
        let done = job(
            Target::Batched(Batch {
                conn: &mut tx,
                begin: &mut begin,
                commit: &mut commit,
            }),
            input,
        )
        .await;
        if begin.is_some() {
            // Nothing was sent: there is no transaction to end.
            tx.open = false;
            return done;
        }
        match done {
            Ok(r) => {
                tx.commit().await?;
                Ok(r)
            }
            Err(e) => {
                // Rolled back here, or, if that fails, before the writer's next use.
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }
}

/// The writer's connection, held for a batch's transaction.
///
/// The transaction's `BEGIN` goes in front of the batch's first query, and its `COMMIT`,
/// where it can, after the last one, in the same text: SQLite runs a query's statements one
/// after another on its connection's thread, so neither costs a round trip of its own to
/// that thread (each is a wake-up on both sides).
pub(in crate::store) struct Batch<'c, DB: sqlx::Database> {
    conn: &'c mut DB::Connection,
    /// The transaction's `BEGIN` while it is not yet sent.
    begin: &'c mut Option<&'static str>,
    /// Where the transaction's `COMMIT` goes.
    commit: &'c mut Commit,
}

/// Where a batch's `COMMIT` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Commit {
    /// On its own, after the batch's jobs.
    Apart,
    /// After the next query, in its text: the batch's last job sends one query, run to its
    /// end ([`Kind::ONE_QUERY`]).
    After,
    /// It ran, after that query, and the transaction is committed.
    Done,
}

/// A query with the batch's `BEGIN` in front of it, its `COMMIT` after it, or both, in the
/// same text. Its arguments are its own: `BEGIN` and `COMMIT` take none, so `$N` and `?`
/// count the same. SQLite only: PostgreSQL prepares one statement per query.
struct Framed<E> {
    begin: Option<&'static str>,
    commit: bool,
    query: E,
}

impl<'q, DB: sqlx::Database, E: sqlx::Execute<'q, DB>> sqlx::Execute<'q, DB> for Framed<E> {
    fn sql(self) -> sqlx::SqlStr {
        let sql = self.query.sql();
        let (begin, then) = self.begin.map_or(("", ""), |begin| (begin, "; "));
        let commit = if self.commit { "; COMMIT" } else { "" };
        sqlx::SqlSafeStr::into_sql_str(sqlx::AssertSqlSafe(format!(
            "{begin}{then}{}{commit}",
            sql.as_str()
        )))
    }

    /// Prepared as its own text: a statement prepared without the `BEGIN` is not it.
    fn statement(&self) -> Option<&DB::Statement> {
        None
    }

    fn take_arguments(
        &mut self,
    ) -> Result<Option<<DB as sqlx::Database>::Arguments>, sqlx::error::BoxDynError> {
        self.query.take_arguments()
    }

    fn persistent(&self) -> bool {
        self.query.persistent()
    }
}

/// One write: the statements, run on the [`Target`] given, and what they return.
pub(in crate::store) type Job<DB, R> =
    Box<dyn for<'c> Fn(Target<'c, DB>) -> BoxFuture<'c, Result<R, StoreError>> + Send + Sync>;

/// A kind of write whose jobs, queued together, run as one statement for all their inputs;
/// or a kind of read that PostgreSQL runs so (`Connections::read_kind`: it never clashes,
/// and its `many` is a `SELECT` whose rows say whose they are).
pub(in crate::store) trait Kind<DB: sqlx::Database>: Sized + 'static {
    /// What one job writes.
    type Input: Send + Sync + 'static;
    /// What one job returns.
    type Output: Send + 'static;

    /// Whether `a` and `b` must not be written by one statement (they are the same row's):
    /// the later one waits for a statement of its own, in the same transaction. Writes
    /// queued at once have no order among them, as concurrent requests have none.
    fn clash(a: &Self::Input, b: &Self::Input) -> bool;

    /// Write `input` alone on `on`.
    fn one<'c>(
        on: Target<'c, DB>,
        input: &'c Self::Input,
    ) -> BoxFuture<'c, Result<Self::Output, StoreError>>;

    /// Whether [`Kind::many`] sends one query, run to its end (`execute` or `fetch_all`, not
    /// `fetch_optional`): the batch's `COMMIT` may then go after it, in the same text.
    const ONE_QUERY: bool = false;

    /// Whether [`Kind::many`] writes (or reads) all its inputs with one statement (or one
    /// script), so that a batch of them costs the database about what one write does. Only
    /// these are committed together on PostgreSQL, whose writes otherwise run side by side
    /// on several connections ([`super::Grouping::Grouped`]), and only these are read
    /// together there (`Connections::read_kind`).
    const GROUPED: bool = false;

    /// Whether its writes only insert new rows under keys no other write takes (a code's
    /// insert, under a random hash), so that they never wait on a row lock. On PostgreSQL
    /// such a [`Kind::GROUPED`] kind is committed together on a lane of its own, one batch at
    /// a time ([`Runs::Inserts`]): one lane makes bigger batches than [`IN_FLIGHT`]'s two,
    /// and no write of it is held up behind one that waits on a lock.
    const TAKES_NO_LOCK: bool = false;

    /// Write `inputs`, none clashing, on `on`: one output for each, in their order. One
    /// statement where the store has one for it (SQLite's kinds); here, one per input.
    fn many<'c>(
        mut on: Target<'c, DB>,
        inputs: &'c [Self::Input],
    ) -> BoxFuture<'c, Result<Vec<Self::Output>, StoreError>> {
        Box::pin(async move {
            let mut outputs = Vec::with_capacity(inputs.len());
            for input in inputs {
                outputs.push(Self::one(on.again(), input).await?);
            }
            Ok(outputs)
        })
    }
}

/// How a queued write's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ran {
    /// It succeeded.
    Ok,
    /// The database refused a statement of it: nothing of that statement stands.
    Refused,
    /// It failed otherwise: after its statement ran (reading what it returned), or without
    /// a word from the database (a connection lost), so it may have been written.
    Failed,
}

impl Ran {
    fn of<T>(result: &Result<T, StoreError>) -> Self {
        match result {
            Ok(_) => Ran::Ok,
            Err(StoreError::Database(sqlx::Error::Database(_)) | StoreError::Conflict(_)) => {
                Ran::Refused
            }
            Err(_) => Ran::Failed,
        }
    }
}

/// A job with where its answer goes, its result type erased so one queue holds all.
pub(super) trait Queued<DB: sqlx::Database>: Send + Any {
    /// Run on `on` (in the batch's transaction, or alone when the batch is this one write),
    /// keep the result; how it ended.
    fn run<'c>(&'c mut self, on: Target<'c, DB>) -> BoxFuture<'c, Ran>;
    /// Answer with what [`Queued::run`] kept (the batch committed).
    fn answer(self: Box<Self>);
    /// Run alone and answer with that (the batch did not commit).
    fn run_alone<'c>(self: Box<Self>, writer: &'c Connections<DB>) -> BoxFuture<'c, ()>;
    /// How many requests' writes this holds.
    fn jobs(&self) -> usize {
        1
    }
    /// Whether [`Queued::run`] sends one query, run to its end ([`Kind::ONE_QUERY`]).
    fn one_query(&self) -> bool {
        false
    }
    /// Take `other`'s writes into this one's statement if they are of the same kind and do
    /// not clash; if not, `other` back.
    fn absorb(&mut self, other: Box<dyn Queued<DB>>) -> Result<(), Box<dyn Queued<DB>>> {
        Err(other)
    }
    /// This, to be told from other types of queued writes.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

struct Pending<DB: sqlx::Database, R> {
    job: Job<DB, R>,
    kept: Option<Result<R, StoreError>>,
    reply: oneshot::Sender<Result<R, StoreError>>,
}

impl<DB: sqlx::Database, R: Send + 'static> Queued<DB> for Pending<DB, R> {
    fn run<'c>(&'c mut self, on: Target<'c, DB>) -> BoxFuture<'c, Ran> {
        Box::pin(async move {
            let result = (self.job)(on).await;
            let ran = Ran::of(&result);
            self.kept = Some(result);
            ran
        })
    }

    fn answer(self: Box<Self>) {
        if let Some(result) = self.kept {
            // The request may be gone (cancelled): its write stands, as a statement sent
            // before a cancellation does.
            let _ = self.reply.send(result);
        }
    }

    fn run_alone<'c>(self: Box<Self>, writer: &'c Connections<DB>) -> BoxFuture<'c, ()> {
        Box::pin(async move {
            let result = (self.job)(Target::Alone(writer)).await;
            let _ = self.reply.send(result);
        })
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Writes of kind `K` from one or more requests, written by one statement.
struct Grouped<DB: sqlx::Database, K: Kind<DB>> {
    inputs: Vec<K::Input>,
    replies: Vec<oneshot::Sender<Result<K::Output, StoreError>>>,
    kept: Vec<K::Output>,
    /// Why [`Kind::many`] failed, for the answer if the batch committed all the same (its
    /// `COMMIT` ran after the query, and what failed came after that).
    failed: Option<String>,
}

impl<DB: sqlx::Database, K: Kind<DB>> Queued<DB> for Grouped<DB, K> {
    fn run<'c>(&'c mut self, on: Target<'c, DB>) -> BoxFuture<'c, Ran> {
        Box::pin(async move {
            let result = K::many(on, &self.inputs).await;
            let ran = Ran::of(&result);
            match result {
                Ok(outputs) if outputs.len() == self.inputs.len() => self.kept = outputs,
                // If the batch is rolled back, each input written again alone gets its own
                // error; this one is for a batch that committed.
                Ok(outputs) => {
                    self.failed = Some(format!(
                        "{} answers for {} writes",
                        outputs.len(),
                        self.inputs.len()
                    ));
                    return Ran::Failed;
                }
                Err(e) => self.failed = Some(e.to_string()),
            }
            ran
        })
    }

    fn answer(self: Box<Self>) {
        let mut kept = self.kept.into_iter();
        for reply in self.replies {
            let answer = kept
                .next()
                .ok_or_else(|| StoreError::Corrupt(self.failed.clone().unwrap_or_default()));
            let _ = reply.send(answer);
        }
    }

    fn run_alone<'c>(self: Box<Self>, writer: &'c Connections<DB>) -> BoxFuture<'c, ()> {
        Box::pin(async move {
            for (input, reply) in self.inputs.iter().zip(self.replies) {
                let _ = reply.send(K::one(Target::Alone(writer), input).await);
            }
        })
    }

    fn jobs(&self) -> usize {
        self.inputs.len()
    }

    fn one_query(&self) -> bool {
        K::ONE_QUERY
    }

    fn absorb(&mut self, mut other: Box<dyn Queued<DB>>) -> Result<(), Box<dyn Queued<DB>>> {
        let fits = |same: &Self| {
            !same
                .inputs
                .iter()
                .any(|b| self.inputs.iter().any(|a| K::clash(a, b)))
        };
        match other.as_any_mut().downcast_mut::<Self>() {
            Some(same) if fits(same) => {
                self.inputs.append(&mut same.inputs);
                self.replies.append(&mut same.replies);
                Ok(())
            }
            _ => Err(other),
        }
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Where a writer's jobs are queued: the sending end of its task's queue.
pub(super) type Queue<DB> = mpsc::UnboundedSender<Box<dyn Queued<DB>>>;

/// What a queue's task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Runs {
    /// Writes, committed together.
    Writes,
    /// Reads of a [`Kind::GROUPED`] kind (`Connections::read_kind`; PostgreSQL's): each
    /// kind's queued together as its one statement, never in a transaction, since a read
    /// commits nothing.
    Reads,
    /// Writes of a [`Kind::TAKES_NO_LOCK`] kind (PostgreSQL's), committed together as
    /// [`Runs::Writes`] are, [`INSERTS_IN_FLIGHT`] batches at a time.
    Inserts,
}

/// `writer`'s queue, `slot`, with its task started on the current tokio runtime if there is
/// none yet or the last one ended with the runtime it ran on (a store opened in one runtime
/// and used in another, as tests do). `None` outside a runtime: the caller runs its job
/// alone. The task ends when the last clone of `writer` is dropped.
pub(super) fn queue<DB: sqlx::Database>(
    slot: &std::sync::Mutex<Option<Queue<DB>>>,
    writer: std::sync::Weak<super::Inner<DB>>,
    runs: Runs,
) -> Option<Queue<DB>>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    let mut slot = slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(queue) = slot.as_ref().filter(|q| !q.is_closed()) {
        return Some(queue.clone());
    }
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let (queue, queued) = mpsc::unbounded_channel();
    runtime.spawn(run_batches(writer, queued, runs));
    *slot = Some(queue.clone());
    Some(queue)
}

/// Queue `job` on `queue` and wait for its answer.
pub(super) async fn run<DB: sqlx::Database, R: Send + 'static>(
    queue: Queue<DB>,
    job: Job<DB, R>,
) -> Result<R, StoreError> {
    let (reply, answer) = oneshot::channel();
    let pending = Box::new(Pending {
        job,
        kept: None,
        reply,
    });
    queued(queue, pending, answer).await
}

/// Queue `K`'s write of `input` on `queue` and wait for its answer.
pub(super) async fn run_kind<DB: sqlx::Database, K: Kind<DB>>(
    queue: Queue<DB>,
    input: K::Input,
) -> Result<K::Output, StoreError> {
    let (reply, answer) = oneshot::channel();
    let grouped = Box::new(Grouped::<DB, K> {
        inputs: vec![input],
        replies: vec![reply],
        kept: Vec::new(),
        failed: None,
    });
    queued(queue, grouped, answer).await
}

/// Send `job` to `queue`'s task and wait for its `answer`.
async fn queued<DB: sqlx::Database, R>(
    queue: Queue<DB>,
    job: Box<dyn Queued<DB>>,
    answer: oneshot::Receiver<Result<R, StoreError>>,
) -> Result<R, StoreError> {
    // The task is gone only if its runtime shut down since `queue` looked: the job never
    // ran, and is answered as a database worker lost.
    if queue.send(job).is_err() {
        return Err(sqlx::Error::WorkerCrashed.into());
    }
    answer
        .await
        .unwrap_or(Err(sqlx::Error::WorkerCrashed.into()))
}

/// The task: every job queued while the last batch ran, in one transaction, until the
/// writer is dropped. On SQLite's one writer a batch runs after the last; on PostgreSQL's
/// connections up to [`IN_FLIGHT`] run side by side, so that one batch's commit does not
/// hold up the next one's statement. Reads ([`Runs::Reads`]): every read queued while the
/// last batch ran, [`READS_IN_FLIGHT`] batches at a time.
async fn run_batches<DB: sqlx::Database>(
    writer: std::sync::Weak<super::Inner<DB>>,
    mut queued: mpsc::UnboundedReceiver<Box<dyn Queued<DB>>>,
    runs: Runs,
) where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(match runs {
        Runs::Writes => IN_FLIGHT,
        Runs::Reads => READS_IN_FLIGHT,
        Runs::Inserts => INSERTS_IN_FLIGHT,
    }));
    let (mut batch, mut received) = (Vec::with_capacity(MOST), Vec::with_capacity(MOST));
    loop {
        let Ok(turn) = in_flight.clone().acquire_owned().await else {
            return;
        };
        if queued.recv_many(&mut received, MOST).await == 0 {
            return;
        }
        let Some(inner) = writer.upgrade() else {
            return;
        };
        let writer = Connections { inner };
        merge(&mut received, &mut batch);
        if writer.frames() {
            run_batch(&writer, &mut batch).await;
            continue;
        }
        let mut this = std::mem::replace(&mut batch, Vec::with_capacity(MOST));
        tokio::spawn(async move {
            match runs {
                Runs::Writes | Runs::Inserts => run_batch(&writer, &mut this).await,
                Runs::Reads => run_reads(&writer, &mut this).await,
            }
            drop(turn);
        });
    }
}

/// How many batches run at once on PostgreSQL's connections (one at a time on SQLite's
/// writer, which is one connection). Fewer in flight make bigger batches: under the bench's
/// loads two answered 1.10–1.19× what four did, one 1.03–1.11× what two did (ratios of
/// medians; `bench/README.md`, "Batches in flight on PostgreSQL"). Two, not one, so that a
/// batch waiting on a row lock (a family's revocation, an operator's transaction) does not
/// hold up every other grouped write of the replica.
const IN_FLIGHT: usize = 2;

/// How many batches of writes that take no row lock ([`Runs::Inserts`]) run at once on
/// PostgreSQL's connections: one, so that the writes queued while it runs make the next
/// batch. Under the signed-in `/authorize` load (a code stored per request, its commit not
/// waiting for the disk) one batch in flight answered 1.06× what two did (`bench/README.md`,
/// "A code's storage without waiting for the disk on PostgreSQL"); such writes wait on no
/// lock, so one lane is not held up as the other writes' would be.
const INSERTS_IN_FLIGHT: usize = 1;

/// How many batches of reads run at once on PostgreSQL's connections: one, so that the
/// reads queued while it runs make the next batch. Against two, introspection answered
/// 1.33–1.46× as fast and `/authorize` 1.08–1.12× (`bench/README.md`, "PostgreSQL's
/// look-ups read together"). A read waits on no row lock (PostgreSQL's reads see a snapshot),
/// so one lane is not held up by a writer's transaction as a write's would be.
const READS_IN_FLIGHT: usize = 1;

/// Move `received` (emptied) to `batch`, each write of a [`Kind`] into the first one of its
/// kind it does not clash with, if there is one, so they run as one statement.
fn merge<DB: sqlx::Database>(
    received: &mut Vec<Box<dyn Queued<DB>>>,
    batch: &mut Vec<Box<dyn Queued<DB>>>,
) {
    'next: for mut job in received.drain(..) {
        for earlier in batch.iter_mut() {
            match earlier.absorb(job) {
                Ok(()) => continue 'next,
                Err(back) => job = back,
            }
        }
        batch.push(job);
    }
}

/// `batch` (emptied, its room kept for the next) in one transaction, each job answered after
/// its commit; if anything failed, each job run again alone. A batch of one job runs alone.
async fn run_batch<DB: sqlx::Database>(
    writer: &Connections<DB>,
    batch: &mut Vec<Box<dyn Queued<DB>>>,
) where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    let jobs: usize = batch.iter().map(|job| job.jobs()).sum();
    let answered = jobs > 1
        && match ran_as_one(writer, batch).await {
            Some(answered) => answered,
            None => committed_together(writer, batch).await,
        };
    if answered {
        for job in batch.drain(..) {
            job.answer();
        }
        return;
    }
    for job in batch.drain(..) {
        job.run_alone(writer).await;
    }
}

/// `batch`'s reads, emptied: each kind's as its one statement, the kinds side by side. A
/// statement the database refused (none should be) runs again read by read, so that each
/// gets its own answer.
async fn run_reads<DB: sqlx::Database>(
    readers: &Connections<DB>,
    batch: &mut Vec<Box<dyn Queued<DB>>>,
) where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    futures_util::future::join_all(batch.drain(..).map(|job| async move {
        run_batch(readers, &mut vec![job]).await;
    }))
    .await;
}

/// Run `batch` without a transaction of its own when it is one write of a [`Kind::GROUPED`]
/// kind on PostgreSQL (`Connections::frames` false): one statement, atomic by itself, and
/// committed by itself, without the round trips of a `BEGIN` and a `COMMIT`. `None` if it
/// is not such a batch; otherwise whether it is answered: `false` if the database refused
/// its statement (then nothing of it stands, and each of its writes runs again alone, not
/// the batch again in a transaction). A run that failed otherwise may have been written,
/// and is answered with its failure, as a batch that failed after its `COMMIT` is.
async fn ran_as_one<DB: sqlx::Database>(
    writer: &Connections<DB>,
    batch: &mut [Box<dyn Queued<DB>>],
) -> Option<bool>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    match batch {
        [one] if !writer.frames() => Some(one.run(Target::Alone(writer)).await != Ran::Refused),
        _ => None,
    }
}

/// Run every job of `batch` in one transaction: whether it committed. If not, nothing of it
/// stands.
async fn committed_together<DB: sqlx::Database>(
    writer: &Connections<DB>,
    batch: &mut [Box<dyn Queued<DB>>],
) -> bool
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    // Marked open before anything is sent, as `Connections::begin` does: if its `BEGIN` ran
    // and the batch does not commit, the transaction is rolled back.
    let Ok(conn) = writer.lock().await else {
        return false;
    };
    let mut tx = super::Tx { conn, open: true };
    let mut begin = Some(writer.inner.begin);
    if !writer.frames() {
        // A statement of its own: PostgreSQL prepares one statement per query.
        let begun = sqlx::Executor::execute(&mut *tx, writer.inner.begin).await;
        if tx.conn.open.noting(begun).is_err() {
            let _ = tx.rollback().await;
            return false;
        }
        begin = None;
    }
    let mut commit = Commit::Apart;
    // A job that sends one query last, so that the `COMMIT` can follow it. The batch's jobs
    // are concurrent requests', none answered yet: any order of them is one they could have
    // come in. Of one kind's groups, the last is taken, so they keep their order.
    if let Some(last) = batch.iter().rposition(|job| job.one_query()) {
        batch[last..].rotate_left(1);
    }
    let jobs = batch.len();
    for (n, job) in batch.iter_mut().enumerate() {
        if n + 1 == jobs && job.one_query() {
            commit = Commit::After;
        }
        let on = Batch {
            conn: &mut *tx,
            begin: &mut begin,
            commit: &mut commit,
        };
        let ran = job.run(Target::Batched(on)).await == Ran::Ok;
        if commit == Commit::Done {
            // Committed with the job's query, even if what it did after failed: it answers
            // with that failure, and no job runs again.
            tx.open = false;
            return true;
        }
        if !ran {
            if begin.is_some() {
                // Nothing was sent: there is no transaction to undo.
                tx.open = false;
            } else {
                // Rolled back here, or, if that fails, before the writer's next use.
                let _ = tx.rollback().await;
            }
            return false;
        }
    }
    if begin.is_some() {
        // No job sent a statement: nothing to commit.
        tx.open = false;
        return true;
    }
    tx.commit().await.is_ok()
}

/// A job's statements run on its target as on any executor: `query.execute(on)`.
impl<'c, DB: sqlx::Database> sqlx::Executor<'c> for Target<'c, DB>
where
    for<'x> &'x mut DB::Connection: sqlx::Executor<'x, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    type Database = DB;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> futures_util::stream::BoxStream<'e, Result<Item<DB>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + sqlx::Execute<'q, DB>,
    {
        match self {
            Target::Alone(writer) => writer.fetch_many(query),
            Target::Batched(batch) => {
                let begin = batch.begin.take();
                let commit = *batch.commit == Commit::After;
                if begin.is_none() && !commit {
                    return batch.conn.fetch_many(query);
                }
                *batch.commit = Commit::Apart;
                let framed = batch.conn.fetch_many(Framed {
                    begin,
                    commit,
                    query,
                });
                let done = &mut *batch.commit;
                // Run to its end whoever reads it, so that whether the `COMMIT` ran is known
                // here: it did if no statement failed before it or in it.
                Box::pin(
                    futures_util::stream::once(async move {
                        let mut items: Vec<_> = framed.collect().await;
                        // The `BEGIN`'s and the `COMMIT`'s own results are not the query's:
                        // SQLite reports the rows changed by the connection's last statement
                        // that changed any, from an earlier batch or from this query.
                        if commit && items.iter().all(Result::is_ok) {
                            *done = Commit::Done;
                            items.pop();
                        }
                        let begun = begin.is_some()
                            && matches!(items.first(), Some(Ok(sqlx::Either::Left(_))));
                        futures_util::stream::iter(items.into_iter().skip(usize::from(begun)))
                    })
                    .flatten(),
                )
            }
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<DB::Row>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + sqlx::Execute<'q, DB>,
    {
        match self {
            Target::Alone(writer) => writer.fetch_optional(query),
            // Not the `COMMIT`: the query stops at its first row.
            Target::Batched(batch) => match batch.begin.take() {
                None => batch.conn.fetch_optional(query),
                begin => batch.conn.fetch_optional(Framed {
                    begin,
                    commit: false,
                    query,
                }),
            },
        }
    }

    fn prepare_with<'e>(
        self,
        sql: sqlx::SqlStr,
        parameters: &'e [DB::TypeInfo],
    ) -> BoxFuture<'e, Result<DB::Statement, sqlx::Error>>
    where
        'c: 'e,
    {
        match self {
            Target::Alone(writer) => writer.prepare_with(sql, parameters),
            Target::Batched(batch) => batch.conn.prepare_with(sql, parameters),
        }
    }

    fn describe<'e>(
        self,
        sql: sqlx::SqlStr,
    ) -> BoxFuture<'e, Result<sqlx::Describe<DB>, sqlx::Error>>
    where
        'c: 'e,
    {
        match self {
            Target::Alone(writer) => writer.describe(sql),
            Target::Batched(batch) => batch.conn.describe(sql),
        }
    }
}

impl<DB: sqlx::Database> std::fmt::Debug for Target<'_, DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Target::Alone(_) => "Target::Alone",
            Target::Batched(_) => "Target::Batched",
        })
    }
}
