//! Writes from many requests committed together (a group commit), on SQLite's one writer.
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

use std::any::Any;

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
    Batched(&'c mut DB::Connection),
}

impl<DB: sqlx::Database> Target<'_, DB> {
    /// The same target for one more statement, this one kept for the next.
    pub(in crate::store) fn again(&mut self) -> Target<'_, DB> {
        match self {
            Target::Alone(writer) => Target::Alone(*writer),
            Target::Batched(conn) => Target::Batched(&mut **conn),
        }
    }
}

/// One write: the statements, run on the [`Target`] given, and what they return.
pub(in crate::store) type Job<DB, R> =
    Box<dyn for<'c> Fn(Target<'c, DB>) -> BoxFuture<'c, Result<R, StoreError>> + Send + Sync>;

/// A kind of write whose jobs, queued together, run as one statement for all their inputs.
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

/// A job with where its answer goes, its result type erased so one queue holds all.
pub(super) trait Queued<DB: sqlx::Database>: Send + Any {
    /// Run in the batch's transaction, keep the result; whether it succeeded.
    fn run<'c>(&'c mut self, conn: &'c mut DB::Connection) -> BoxFuture<'c, bool>;
    /// Answer with what [`Queued::run`] kept (the batch committed).
    fn answer(self: Box<Self>);
    /// Run alone and answer with that (the batch did not commit).
    fn run_alone<'c>(self: Box<Self>, writer: &'c Connections<DB>) -> BoxFuture<'c, ()>;
    /// How many requests' writes this holds.
    fn jobs(&self) -> usize {
        1
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
    fn run<'c>(&'c mut self, conn: &'c mut DB::Connection) -> BoxFuture<'c, bool> {
        Box::pin(async move {
            let result = (self.job)(Target::Batched(conn)).await;
            let ok = result.is_ok();
            self.kept = Some(result);
            ok
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
}

impl<DB: sqlx::Database, K: Kind<DB>> Queued<DB> for Grouped<DB, K> {
    fn run<'c>(&'c mut self, conn: &'c mut DB::Connection) -> BoxFuture<'c, bool> {
        Box::pin(async move {
            match K::many(Target::Batched(conn), &self.inputs).await {
                Ok(outputs) if outputs.len() == self.inputs.len() => {
                    self.kept = outputs;
                    true
                }
                // Its error is not kept: the batch is rolled back, and each input written
                // again alone gets its own.
                _ => false,
            }
        })
    }

    fn answer(self: Box<Self>) {
        for (reply, output) in self.replies.into_iter().zip(self.kept) {
            let _ = reply.send(Ok(output));
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

/// `writer`'s queue, `slot`, with its task started on the current tokio runtime if there is
/// none yet or the last one ended with the runtime it ran on (a store opened in one runtime
/// and used in another, as tests do). `None` outside a runtime: the caller runs its job
/// alone. The task ends when the last clone of `writer` is dropped.
pub(super) fn queue<DB: sqlx::Database>(
    slot: &std::sync::Mutex<Option<Queue<DB>>>,
    writer: std::sync::Weak<super::Inner<DB>>,
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
    runtime.spawn(run_batches(writer, queued));
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
/// writer is dropped.
async fn run_batches<DB: sqlx::Database>(
    writer: std::sync::Weak<super::Inner<DB>>,
    mut queued: mpsc::UnboundedReceiver<Box<dyn Queued<DB>>>,
) where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    let (mut batch, mut received) = (Vec::with_capacity(MOST), Vec::with_capacity(MOST));
    while queued.recv_many(&mut received, MOST).await > 0 {
        let Some(inner) = writer.upgrade() else {
            return;
        };
        let writer = Connections { inner };
        merge(&mut received, &mut batch);
        run_batch(&writer, &mut batch).await;
    }
}

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
    if jobs > 1 && committed_together(writer, batch).await {
        for job in batch.drain(..) {
            job.answer();
        }
        return;
    }
    for job in batch.drain(..) {
        job.run_alone(writer).await;
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
    let Ok(mut tx) = writer.begin().await else {
        return false;
    };
    for job in batch.iter_mut() {
        if !job.run(&mut tx).await {
            // Rolled back here, or, if that fails, before the writer's next use.
            let _ = tx.rollback().await;
            return false;
        }
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
            Target::Batched(conn) => conn.fetch_many(query),
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
            Target::Batched(conn) => conn.fetch_optional(query),
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
            Target::Batched(conn) => conn.prepare_with(sql, parameters),
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
            Target::Batched(conn) => conn.describe(sql),
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
