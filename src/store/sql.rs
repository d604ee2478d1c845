//! What the SQL of every aggregate shares, and the macro that implements every store trait
//! for a backend.
//!
//! Each aggregate module (`clients.rs`, `codes.rs`, …) holds its statements once, in a macro
//! that implements its trait for a type with a `pool` field (connections held by the process,
//! `connections.rs`) for reads and a `writer` field for every method that writes (the same
//! connections on PostgreSQL, one connection on SQLite: see `SqliteStore`). The statements use only what SQLite (3.35+) and
//! PostgreSQL share: `$n` placeholders, `ON CONFLICT … DO UPDATE`, `RETURNING`, BIGINT times
//! and TEXT JSON; where one round trip instead of several needs what only one backend has,
//! a macro has an arm per backend (`refresh_tokens::revoke_family!`). Rows are read into
//! `sqlx::FromRow` structs, which decode alike from either backend.

use super::StoreError;

/// A `FROM` item for a write whose commit need not wait for the disk. On PostgreSQL it sets
/// `synchronous_commit` off for the statement's own transaction alone (PostgreSQL §20.5.1
/// and §30.4, "asynchronous commit"): the commit returns once its WAL record is written,
/// before it is flushed. Every other session, every replica included, sees the write at once;
/// only a crash of the database itself in the next moment (at most three
/// `wal_writer_delay`s) can lose it, never leaving the data inconsistent. So it is for writes
/// that may be lost (a rate-limit window's count; an authorization code's storage, whose loss
/// fails closed, `codes::insert_many_postgres`), or that a later write of the same request
/// makes durable: the WAL is flushed in order, so a later commit that waits for the disk
/// flushes every commit before it (a code's redemption, then its refresh token). SQLite's
/// writer never waits for the disk on a commit (`synchronous = NORMAL` in WAL mode): nothing.
/// A write that only its request's answer must wait for is deferred instead (`commits`),
/// with `not_awaited!(from)` after a statement that has no `FROM`, or `not_awaited!(join)`
/// after one whose `FROM` it joins (PostgreSQL's text; `commits::deferrable!` leaves it off
/// on SQLite).
macro_rules! not_awaited {
    ("postgres") => {
        $crate::store::sql::not_awaited!(from)
    };
    ("sqlite") => {
        ""
    };
    (from) => {
        concat!(" FROM ", $crate::store::sql::not_awaited!(item))
    };
    (join) => {
        concat!(", ", $crate::store::sql::not_awaited!(item))
    };
    (item) => {
        "(SELECT set_config('synchronous_commit', 'off', true)) AS not_awaited"
    };
}
pub(crate) use not_awaited;

/// The statement the macro `$sql` makes with `$tail` after it (a `not_awaited!`) when the
/// write runs alone on `$on` (a `connections::Target`), in a transaction of its own; with
/// nothing after it in a group commit's batch, whose one transaction holds other writes:
/// `synchronous_commit` set there would hold for all of them.
macro_rules! when_alone {
    ($on:expr, $sql:ident, $tail:expr) => {
        match $on {
            $crate::store::connections::Target::Alone(_) => $sql!($tail),
            $crate::store::connections::Target::Batched(_) => $sql!(""),
        }
    };
}
pub(crate) use when_alone;

/// SQLite's script `$sql` (a literal, or a macro that makes one) of several statements that
/// make one write, for the target `$on` (`connections::Target`), and whether it is then a
/// whole transaction: in a group commit's batch as it is (the batch's transaction holds
/// it); alone, between a `BEGIN` and a `COMMIT` of its own. Sent with
/// `Target::fetch_script`.
macro_rules! one_transaction {
    ($on:expr, $sql:expr) => {
        match $on {
            $crate::store::connections::Target::Batched(_) => ($sql, false),
            $crate::store::connections::Target::Alone(_) => {
                (concat!("BEGIN IMMEDIATE; ", $sql, "; COMMIT"), true)
            }
        }
    };
}
pub(crate) use one_transaction;

/// The sqlx database of the dialect `$dialect` names.
macro_rules! db {
    ("postgres") => {
        sqlx::Postgres
    };
    ("sqlite") => {
        sqlx::Sqlite
    };
}
pub(crate) use db;

/// In an `impl Kind` of the group commit (`connections::Kind`): SQLite's `many`, the
/// statement `$many` that writes several inputs of the kind at once (a batch's). With a
/// second, `$postgres`, PostgreSQL's too, and the kind is committed together there as well
/// (`Kind::GROUPED`); without, PostgreSQL writes it alone, so never has several, and keeps
/// the default, one by one. `("postgres", grouped $postgres)` is PostgreSQL's part alone
/// (for `read_kind!` too).
macro_rules! many {
    ("postgres", grouped $postgres:path) => {
        const GROUPED: bool = true;

        fn many<'c>(
            on: $crate::store::connections::Target<'c, sqlx::Postgres>,
            inputs: &'c [Self::Input],
        ) -> futures_util::future::BoxFuture<
            'c,
            Result<Vec<Self::Output>, $crate::store::StoreError>,
        > {
            Box::pin($postgres(on, inputs))
        }
    };
    ("postgres", $many:path) => {};
    ("postgres", $sqlite:path, $postgres:path) => {
        $crate::store::sql::many!("postgres", grouped $postgres);
    };
    ("sqlite", $sqlite:path, $postgres:path) => {
        $crate::store::sql::many!("sqlite", $sqlite);
        const GROUPED: bool = true;
    };
    ("sqlite", $many:path) => {
        // Each of SQLite's `many` sends one statement or one script, with `execute` or
        // `fetch_all`.
        const ONE_QUERY: bool = true;

        fn many<'c>(
            on: $crate::store::connections::Target<'c, sqlx::Sqlite>,
            inputs: &'c [Self::Input],
        ) -> futures_util::future::BoxFuture<
            'c,
            Result<Vec<Self::Output>, $crate::store::StoreError>,
        > {
            Box::pin($many(on, inputs))
        }
    };
}
pub(crate) use many;

/// In a store's `sql_impl`: the `Kind` of a read by key (`Connections::read_kind`), `$look_up`,
/// whose answer is an `Option<$row>`. Alone it is the statement `$one`, with what `|$l|`'s
/// list says bound; on PostgreSQL the reads queued at once are `$postgres`'s one statement,
/// and the kind is grouped there (`Kind::GROUPED`). SQLite reads each alone on its readers,
/// in this process. Reads never clash: two look-ups of one key each get its row.
macro_rules! read_kind {
    ($dialect:tt, $look_up:ty, $row:ty, $one:expr, |$l:ident| [$($bind:expr),+ $(,)?], $postgres:path) => {
        impl $crate::store::connections::Kind<$crate::store::sql::db!($dialect)> for $look_up {
            type Input = Self;
            type Output = Option<$row>;

            fn clash(_: &Self, _: &Self) -> bool {
                false
            }

            fn one<'c>(
                on: $crate::store::connections::Target<'c, $crate::store::sql::db!($dialect)>,
                $l: &'c Self,
            ) -> futures_util::future::BoxFuture<'c, Result<Self::Output, $crate::store::StoreError>>
            {
                Box::pin(async move {
                    Ok(sqlx::query_as($one)$(.bind($bind))+.fetch_optional(on).await?)
                })
            }

            $crate::store::sql::read_kind!(@many $dialect, $postgres);
        }
    };
    (@many "postgres", $postgres:path) => {
        $crate::store::sql::many!("postgres", grouped $postgres);
    };
    (@many "sqlite", $postgres:path) => {};
}
pub(crate) use read_kind;

/// Map a unique-constraint violation to `Conflict(what)`.
pub(super) fn conflict(e: sqlx::Error, what: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(what.to_string())
        }
        _ => StoreError::Database(e),
    }
}

/// Run a transaction again when the database aborted it to break a deadlock or a
/// serialization conflict (PostgreSQL's `40P01` and `40001`): transactions that lock several
/// rows of one family (a rotation: the token, then its successor) and those that revoke many
/// (a family, a consent, a user's sign-out) can wait on each other, and PostgreSQL then
/// aborts one. Nothing of an aborted transaction was committed, so running it again is safe;
/// it is tried up to four times in all, after a short, growing pause.
pub(crate) async fn retrying<T, F, Fut>(mut transaction: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 0u32;
    loop {
        match transaction().await {
            Err(StoreError::Database(sqlx::Error::Database(e)))
                if attempt < 3 && matches!(e.code().as_deref(), Some("40P01" | "40001")) =>
            {
                attempt += 1;
                tracing::debug!(attempt, code = ?e.code(), "transaction aborted by the database; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(
                    u64::from(attempt) * 10 + u64::from(crate::util::random_bytes::<1>()[0] % 10),
                ))
                .await;
            }
            other => return other,
        }
    }
}

/// Can this text be a stored key? PostgreSQL's TEXT refuses NUL, so no stored key holds one,
/// and a lookup by a key from a request that does (a client_id, a username) must find
/// nothing on either backend rather than fail on one.
pub(super) fn may_be_stored(key: &str) -> bool {
    !key.contains('\0')
}

/// The rows a batch's statement returned (`RETURNING`, in no order), one for each of the
/// batch's inputs in their order: the row whose key `row_key` is the input's `input_key`, or
/// `None` when the statement wrote nothing for it. Keys are unique within a batch (its
/// inputs do not clash).
pub(super) fn by_input<I, R, K: PartialEq + ?Sized>(
    inputs: &[I],
    rows: Vec<R>,
    input_key: impl Fn(&I) -> &K,
    row_key: impl Fn(&R) -> &K,
) -> Vec<Option<R>> {
    let mut rows: Vec<Option<R>> = rows.into_iter().map(Some).collect();
    inputs
        .iter()
        .map(|input| {
            rows.iter_mut()
                .find(|row| {
                    row.as_ref()
                        .is_some_and(|row| row_key(row) == input_key(input))
                })
                .and_then(Option::take)
        })
        .collect()
}

/// The rows of a batch's read, each naming its input by `ordinal`, the input's place from 1
/// (`UNNEST … WITH ORDINALITY`), as one answer for each of the batch's `inputs`, in their
/// order: its row, or `None` when the read found none for it. Unlike [`by_input`], two
/// inputs may be the same (reads do not clash): each has its own row.
pub(super) fn by_ordinal<R>(
    inputs: usize,
    rows: Vec<sqlx::postgres::PgRow>,
) -> Result<Vec<Option<R>>, StoreError>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
{
    let mut answers: Vec<Option<R>> = std::iter::repeat_with(|| None).take(inputs).collect();
    for row in rows {
        let ordinal: i64 = sqlx::Row::try_get(&row, "ordinal")?;
        let answer = usize::try_from(ordinal)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| answers.get_mut(i))
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "a batched read's row for input {ordinal} of {inputs}"
                ))
            })?;
        *answer = Some(R::from_row(&row)?);
    }
    Ok(answers)
}

/// One column of a batch's inputs, `f` of each, to bind as a PostgreSQL array (read back by
/// `UNNEST`, in order).
pub(super) fn column<'a, I, T>(inputs: &'a [I], f: impl Fn(&'a I) -> T) -> Vec<T> {
    inputs.iter().map(f).collect()
}

pub(super) fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// JSON text read back; `what` names it in the error.
pub(super) fn from_json<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// Space-separated words (scopes, `amr` values) as stored, split.
pub(super) fn words(s: &str) -> Vec<String> {
    s.split(' ')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// The migrations applied to the database behind `$pool`, `(version, description)` (none
/// when it has no migrations table yet); `$count_table` counts tables named
/// `_sqlx_migrations`.
macro_rules! applied_migrations {
    ($pool:expr, $count_table:literal) => {{
        let tables: i64 = sqlx::query_scalar($count_table).fetch_one($pool).await?;
        if tables == 0 {
            Vec::new()
        } else {
            sqlx::query_as::<_, (i64, String)>(
                "SELECT version, description FROM _sqlx_migrations WHERE success \
                 ORDER BY version",
            )
            .fetch_all($pool)
            .await?
        }
    }};
}
pub(crate) use applied_migrations;

/// Implement every store trait for `$ty` (a type with `pool` and `writer` fields, each of
/// which runs statements and begins transactions, and a `stats()` method for its
/// connections), naming the backend (`"sqlite"` or `"postgres"`, which also picks the few
/// statements written apart for each, such as a family's revocation, and the writes
/// whose commits do not wait for the disk);
/// `$transfer` is its [`Dialect`](super::transfer::Dialect) for export and import.
macro_rules! sql_store {
    ($ty:ty, $name:tt, $transfer:expr) => {
        $crate::store::clients::sql_impl!($ty, $name);
        $crate::store::commits::sql_impl!($ty, $name);
        $crate::store::resources::sql_impl!($ty);
        $crate::store::keys::sql_impl!($ty);
        $crate::store::rate_limits::sql_impl!($ty, $name);
        $crate::store::replay::sql_impl!($ty);
        $crate::store::users::sql_impl!($ty, $name);
        $crate::store::identities::sql_impl!($ty);
        $crate::store::sessions::sql_impl!($ty, $name);
        $crate::store::factors::sql_impl!($ty);
        $crate::store::passkeys::sql_impl!($ty);
        $crate::store::upstreams::sql_impl!($ty);
        $crate::store::consents::sql_impl!($ty);
        $crate::store::delegations::sql_impl!($ty);
        $crate::store::codes::sql_impl!($ty, $name);
        $crate::store::refresh_tokens::sql_impl!($ty, $name);
        $crate::store::devices::sql_impl!($ty, $name);
        $crate::store::backchannel::sql_impl!($ty, $name);
        $crate::store::exchange_policies::sql_impl!($ty);
        $crate::store::id_jag::sql_impl!($ty);
        $crate::store::audit::sql_impl!($ty, $name);
        $crate::store::transfer::sql_impl!($ty, $transfer);

        #[async_trait::async_trait]
        impl $crate::store::HealthStore for $ty {
            async fn ping(&self) -> Result<(), $crate::store::StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            fn pool_stats(&self) -> $crate::store::PoolStats {
                self.stats()
            }
        }

        impl $crate::store::Store for $ty {
            fn backend(&self) -> &'static str {
                $name
            }
        }
    };
}
pub(crate) use sql_store;
