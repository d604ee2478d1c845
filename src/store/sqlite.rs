//! SQLite: the embedded, zero-configuration store (one file, WAL mode).

use std::str::FromStr;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use super::connections::Connections;
use super::{Open, PoolStats, Schema, StoreError};

/// Reads and writes go to separate connections, held by the process (see `connections.rs`).
/// SQLite lets one connection write at a time; with writes spread over a pool, a writer that found the lock taken slept in SQLite's busy
/// handler (1, 2, 5, 10 … ms) however soon the lock came free, and a transaction that read
/// and then wrote could fail outright when another commit came between. One writing
/// connection makes writers queue in the process instead, in arrival order, and leaves the
/// read connections to WAL's concurrent readers.
pub struct SqliteStore {
    /// Reads. Its connections are opened read-only (except in memory, where they share the
    /// writer's database), so a write sent here by mistake fails in tests rather than
    /// contending.
    pool: Connections<sqlx::Sqlite>,
    /// Every statement of a method that writes, and every transaction that may.
    writer: Connections<sqlx::Sqlite>,
}

/// Create the database file readable by its owner only (SQLite gives its `-wal` and `-shm`
/// files the same mode); an existing file keeps the mode its operator gave it.
fn create_private(path: &std::path::Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Database(sqlx::Error::Io(e))),
    }
}

/// This binary's migrations. Applied migrations it does not know (a newer release's, during
/// a rolling update or after a rollback) are not an error: under the expand-then-contract
/// rule (UPGRADE.md) this binary still runs on that schema; the caller warns.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate::Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("./migrations/sqlite")
};

/// The newest migration this binary has.
pub(super) fn latest_migration() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

impl SqliteStore {
    pub async fn open(url: &str, how: Open) -> Result<(Self, Schema), StoreError> {
        let options = SqliteConnectOptions::from_str(url)?;
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if how == Open::Existing && !in_memory && !options.get_filename().exists() {
            return Err(StoreError::Missing(
                options.get_filename().display().to_string(),
            ));
        }
        if how == Open::Migrate && !in_memory {
            create_private(options.get_filename())?;
        }
        let options = options
            .create_if_missing(how == Open::Migrate)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        // The writer first: it creates the file, sets WAL (which persists in the file) and
        // migrates before any reader opens it.
        let mut writer = options.connect().await?;
        if how == Open::Migrate {
            MIGRATOR.run(&mut writer).await?;
        }
        let pool = if in_memory {
            // An in-memory database is one shared cache; a read-only connection would open
            // a database of its own.
            Connections::readers(options.clone(), readers())
        } else {
            let read_only = options.clone().create_if_missing(false).read_only(true);
            Connections::readers(read_only.pragma("cache_size", READER_CACHE), readers())
        };
        let applied = super::sql::applied_migrations!(
            &pool,
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
        );
        let writer = Connections::writer(options, writer);
        Ok((Self { pool, writer }, Schema::compare(&MIGRATOR, applied)))
    }

    /// The read connections and the writer's one.
    fn stats(&self) -> PoolStats {
        let (reads, write) = (self.pool.stats(), self.writer.stats());
        PoolStats {
            open: reads.open + write.open,
            idle: reads.idle + write.idle,
            max: reads.max + write.max,
        }
    }
}

/// How many read connections: twice the cores (as `available_parallelism` counts them, which
/// follows a container's CPU quota), from 2 to 8; twice, so that a reader waiting on the disk
/// leaves the cores busy. WAL lets them all read while the writer writes, but each runs its
/// statements on a thread of its own, so many more readers than cores only queue for them,
/// and each one more holds its own page cache ([`READER_CACHE`]), parsed schema and prepared
/// statements. On two cores, four instead of eight read as fast and held the SQLite soak's
/// memory within 34.0–37.6 MiB where eight reached 35.6–40.5 (`bench/README.md`, "Read
/// connections by the cores").
fn readers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (2 * cores).clamp(2, 8)
}

/// Each read connection's page cache: 512 KiB (`PRAGMA cache_size`, negative in KiB), where
/// SQLite's default is 2 MiB. At the default, the process grew by a quarter over a ten-minute
/// soak as the eight readers' caches filled, up to 16 MiB in all (`bench/README.md`, "SQLite's
/// read caches bounded"). In WAL mode a reader drops its cache whenever another connection
/// has committed since its last read, so under writes a large one holds little of use. A store
/// of 10⁶ grants still wants the upper levels of its indexes cached: at 256 KiB, introspection
/// on such a store ran at 0.82 of the default, at 512 KiB within the noise. The writer keeps
/// the default: no other connection's commit drops its cache. (At 1 MiB on the writer too the
/// soak held flat, but on a store of 10⁶ rows code redemption and refresh ran 5–8% slower;
/// sized by the database's file, the cache grew with the audit log: `bench/README.md`, "The
/// writer's page cache, settled".)
const READER_CACHE: &str = "-512";

/// Export and import: a deferred transaction reads one snapshot (WAL mode); an explicit
/// `id` sets the audit log's AUTOINCREMENT counter by itself.
const TRANSFER: super::transfer::Dialect = super::transfer::Dialect {
    snapshot: None,
    keep_ids: "",
    after_audit: None,
    columns: "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p \
              WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' \
              AND m.name <> '_sqlx_migrations' ORDER BY m.name, p.cid",
};

super::sql::sql_store!(SqliteStore, "sqlite", TRANSFER);

#[cfg(test)]
mod tests {
    use super::*;

    /// The read connections' page cache is bounded; the writer's is SQLite's default.
    #[tokio::test]
    async fn readers_hold_a_small_page_cache_and_the_writer_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let (store, _) = SqliteStore::open(&url, Open::Migrate).await.unwrap();
        assert_eq!(cache_size(&store.pool).await, -512);
        assert_eq!(cache_size(&store.writer).await, -2000);
    }

    /// Twice the cores read, within 2 to 8.
    #[tokio::test]
    async fn read_connections_follow_the_cores() {
        let cores = std::thread::available_parallelism().unwrap().get();
        let (store, _) = SqliteStore::open("sqlite::memory:", Open::Migrate)
            .await
            .unwrap();
        let readers = store.pool.stats().max as usize;
        assert_eq!(readers, (2 * cores).clamp(2, 8));
        assert_eq!(store.stats().max as usize, readers + 1);
    }

    /// The audit log's appends are jobs of the writer's group commit: appends queued at once
    /// commit together, so they add a fraction of the write-ahead log's pages that the same
    /// appends add one after another, a commit each.
    #[tokio::test]
    async fn audit_appends_queued_together_commit_together() {
        use crate::store::{AuditStore, NewAuditEvent};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        let (store, _) = SqliteStore::open(&url, Open::Migrate).await.unwrap();
        sqlx::query("PRAGMA wal_autocheckpoint = 0")
            .execute(&store.writer)
            .await
            .unwrap();
        let wal = || std::fs::metadata(dir.path().join("a.db-wal")).map_or(0, |m| m.len());
        let event = |n: i64| {
            vec![NewAuditEvent {
                at: n,
                kind: "token.issued",
                client_id: Some(format!("client-{n}")),
                user_id: None,
                ip: None,
                detail: "{}".into(),
            }]
        };

        let before = wal();
        for n in 0..20 {
            store.append_audit(&event(n)).await.unwrap();
        }
        let alone = wal() - before;

        let before = wal();
        let events: Vec<_> = (20..40).map(event).collect();
        let all =
            futures_util::future::join_all(events.iter().map(|e| store.append_audit(e))).await;
        assert!(all.iter().all(Result::is_ok), "{all:?}");
        let together = wal() - before;
        assert!(
            together * 4 < alone,
            "{together} bytes of log for 20 appends queued together, {alone} one after another"
        );
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
            .fetch_one(&store.writer)
            .await
            .unwrap();
        assert_eq!(stored, 40);
    }

    async fn cache_size(connections: &Connections<sqlx::Sqlite>) -> i64 {
        sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(connections)
            .await
            .unwrap()
    }
}
