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
            .busy_timeout(Duration::from_secs(5))
            .pragma("temp_store", TEMP_STORE);
        // The writer first: it creates the file, sets WAL (which persists in the file) and
        // migrates before any reader opens it.
        let writing = options.clone().statement_cache_capacity(WRITER_STATEMENTS);
        let mut writer = writing.connect().await?;
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
        let writer = Connections::writer(writing, writer);
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

/// Where SQLite keeps what it writes aside for the length of a statement: in memory, not in a
/// file. A statement that writes several rows inside a transaction (each of a group commit's
/// statements, which write a batch's rows, inside the batch's transaction) keeps the pages it
/// changes in a statement journal, so that a failing statement can be undone alone. With the
/// default (`FILE`), past 64 KiB that journal went to a new file in `/var/tmp`, created and
/// unlinked again about every batch under code redemption: a quarter of the writer's
/// `pwrite`s, and an `open`, `unlink` and `close` each time (`bench/README.md`, "Codes without
/// a rowid"). In memory it holds a batch's changed pages for the length of one statement.
/// Sorts and temporary indexes of the readers' queries are kept in memory too.
const TEMP_STORE: &str = "memory";

/// How many prepared statements the writer keeps: twice sqlx's default of 100. A write in a
/// group commit's batch may go out in four texts: as it is, after the batch's `BEGIN`, before
/// its `COMMIT`, or both (`connections::group_commit::Batch`), and each text is prepared and
/// kept on its own.
const WRITER_STATEMENTS: usize = 200;

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

    /// Every connection keeps its statement journals and temporary tables in memory.
    #[tokio::test]
    async fn temporary_storage_is_in_memory_on_every_connection() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let (store, _) = SqliteStore::open(&url, Open::Migrate).await.unwrap();
        for connections in [&store.pool, &store.writer] {
            let at: i64 = sqlx::query_scalar("PRAGMA temp_store")
                .fetch_one(connections)
                .await
                .unwrap();
            assert_eq!(at, 2, "2 is MEMORY");
        }
    }

    /// Migration 35 builds the codes' table again without a rowid, keeping its rows (every
    /// column), its index and what the store reads of them; refresh tokens keep theirs.
    #[tokio::test]
    async fn codes_keep_their_rows_without_a_rowid() {
        use crate::store::{CodeStore, Redeemer, Spent};
        use sqlx::Connection;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
        let mut before = sqlx::SqliteConnection::connect(&url).await.unwrap();
        MIGRATOR.run_to(34, &mut before).await.unwrap();
        for row in [
            "INSERT INTO users (id, username, password_hash, created_at, updated_at) \
             VALUES ('u', 'alice', 'x', 0, 0)",
            "INSERT INTO auth_codes (code_hash, family_id, client_id, user_id, redirect_uri, \
             code_challenge, resources, scope, nonce, auth_time, sid, created_at, expires_at, \
             used_at, dpop_jkt, amr, acr, authorization_details) VALUES (x'0101', 'fam-1', 'c', \
             'u', 'https://app.example/cb', 'ch', '[\"https://r.example/\"]', 'a b', 'n', 5, \
             'sid', 6, 9000, NULL, 'jkt', 'pwd otp', 'urn:acr', '[{\"type\":\"t\"}]')",
        ] {
            sqlx::query(row).execute(&mut before).await.unwrap();
        }
        before.close().await.unwrap();

        let (store, _) = SqliteStore::open(&url, Open::Migrate).await.unwrap();
        let kinds: Vec<(String, bool)> = sqlx::query_as(
            "SELECT name, sql LIKE '%WITHOUT ROWID' FROM sqlite_master \
             WHERE name IN ('auth_codes', 'refresh_tokens') ORDER BY name",
        )
        .fetch_all(&store.writer)
        .await
        .unwrap();
        assert_eq!(
            kinds,
            [
                ("auth_codes".into(), true),
                ("refresh_tokens".into(), false)
            ]
        );
        // The primary key is the table's B-tree: no index of its own (`sqlite_autoindex_`).
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'auth_codes'",
        )
        .fetch_all(&store.writer)
        .await
        .unwrap();
        assert_eq!(indexes, ["auth_codes_by_expiry"]);

        let Spent::Fresh(code) = store.peek_code(&[1, 1], 100).await.unwrap() else {
            panic!("the code is no longer fresh");
        };
        assert_eq!(code.family_id, "fam-1");
        assert_eq!(code.redirect_uri.as_deref(), Some("https://app.example/cb"));
        assert_eq!(code.resources, ["https://r.example/"]);
        assert_eq!(code.nonce.as_deref(), Some("n"));
        assert_eq!(code.amr, ["pwd", "otp"]);
        assert_eq!(code.acr.as_deref(), Some("urn:acr"));
        assert_eq!(code.sid.as_deref(), Some("sid"));
        assert_eq!(code.dpop_jkt.as_deref(), Some("jkt"));
        assert_eq!(
            code.authorization_details.as_deref(),
            Some(r#"[{"type":"t"}]"#)
        );
        assert_eq!((code.auth_time, code.expires_at), (5, 9000));
        // And it is spent as before, once.
        let by = Redeemer {
            client_id: "c",
            redirect_uri: Some("https://app.example/cb"),
            code_challenge: "ch",
            dpop_jkt: Some("jkt"),
        };
        let spent = store.redeem_code(&[1, 1], &by, 200, None).await.unwrap();
        assert_eq!(spent.map(|c| c.family_id).as_deref(), Some("fam-1"));
        assert!(
            store
                .redeem_code(&[1, 1], &by, 201, None)
                .await
                .unwrap()
                .is_none()
        );
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

    /// A store in a file of `dir` (its readers see the writer's rows), holding the user `u`.
    async fn with_user_u(dir: &tempfile::TempDir) -> SqliteStore {
        let url = format!("sqlite://{}", dir.path().join("k.db").display());
        let (store, _) = SqliteStore::open(&url, Open::Migrate).await.unwrap();
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, created_at, updated_at) \
             VALUES ('u', 'alice', 'x', 0, 0)",
        )
        .execute(&store.writer)
        .await
        .unwrap();
        store
    }

    /// A batch's codes and refresh tokens are written by one statement of each kind
    /// (`codes::insert_many` and `redeem_many`, `refresh_tokens::insert_many` and
    /// `rotate_many`): each reads back as written, and each is spent, rotated or refused as
    /// it would be alone; a code spent stores its refresh token, and no other does.
    #[tokio::test]
    async fn writes_of_one_kind_queued_together_are_each_as_alone() {
        use crate::store::{
            AuthCode, CodeStore, FirstRefresh, NextRefresh, Redeemer, RefreshToken,
            RefreshTokenStore, Rotating, Spent,
        };
        use futures_util::future::join_all;
        let dir = tempfile::tempdir().unwrap();
        let store = with_user_u(&dir).await;
        let now = 1_000_000;

        // Codes with each optional column null in some and set in others, and text that
        // JSON escapes.
        let codes: Vec<AuthCode> = (0..8u8)
            .map(|n| AuthCode {
                code_hash: vec![n; 32],
                family_id: format!("fam-{n}"),
                client_id: "c".into(),
                user_id: "u".into(),
                redirect_uri: n.is_multiple_of(2).then(|| "https://app.example/cb".into()),
                code_challenge: format!("challenge-{n}"),
                resources: vec!["https://r.example/\"q\",é".into()],
                scope: "a b".into(),
                nonce: n.is_multiple_of(3).then(|| "nonce \\ é".into()),
                auth_time: now - 5,
                amr: vec!["pwd".into(), "otp".into()],
                acr: (n == 1).then(|| "urn:acr".into()),
                sid: Some(format!("sid-{n}")),
                created_at: now,
                expires_at: now + 60,
                dpop_jkt: (n == 4).then(|| "jkt".into()),
                authorization_details: (n == 5).then(|| r#"[{"type":"x"}]"#.into()),
            })
            .collect();
        let stored = join_all(codes.iter().map(|c| store.insert_code(c))).await;
        assert!(stored.iter().all(Result::is_ok), "{stored:?}");
        for c in &codes {
            let found = store.peek_code(&c.code_hash, now).await.unwrap();
            assert_eq!(found, Spent::Fresh(c.clone()));
        }

        fn by(c: &AuthCode) -> Redeemer<'_> {
            Redeemer {
                client_id: "c",
                redirect_uri: Some("https://app.example/cb"),
                code_challenge: &c.code_challenge,
                dpop_jkt: None,
            }
        }
        let wrong_client = Redeemer {
            client_id: "other",
            ..by(&codes[1])
        };
        let wrong_redirect = Redeemer {
            redirect_uri: Some("https://evil.example/cb"),
            ..by(&codes[2])
        };
        let no_redirect = Redeemer {
            redirect_uri: None,
            ..by(&codes[3])
        };
        let wrong_key = Redeemer {
            dpop_jkt: Some("other"),
            ..by(&codes[4])
        };
        let unknown = vec![9u8; 32];
        let spends: Vec<(&[u8], Redeemer, i64)> = vec![
            (codes[0].code_hash.as_slice(), by(&codes[0]), now),
            (codes[1].code_hash.as_slice(), wrong_client, now),
            (codes[2].code_hash.as_slice(), wrong_redirect, now),
            (codes[3].code_hash.as_slice(), no_redirect, now),
            (codes[4].code_hash.as_slice(), wrong_key, now),
            (codes[5].code_hash.as_slice(), by(&codes[5]), now),
            (codes[5].code_hash.as_slice(), by(&codes[5]), now),
            (codes[6].code_hash.as_slice(), by(&codes[6]), now + 60),
            (unknown.as_slice(), by(&codes[0]), now),
            (codes[7].code_hash.as_slice(), by(&codes[7]), now),
            (codes[7].code_hash.as_slice(), by(&codes[7]), now),
        ];
        // Each redemption with a refresh token of its own; the first bound to a key.
        let refreshes: Vec<FirstRefresh> = (0..spends.len() as u8)
            .map(|i| FirstRefresh {
                token_hash: vec![200 + i; 32],
                expires_at: now + 100 + i64::from(i),
                absolute_expires_at: now + 1_000,
                dpop_jkt: (i == 0).then(|| "refresh-jkt".into()),
            })
            .collect();
        let spent = join_all(
            spends
                .iter()
                .zip(&refreshes)
                .map(|((hash, by, at), r)| store.redeem_code(hash, by, *at, Some(r))),
        )
        .await;
        let spent: Vec<Option<AuthCode>> = spent.into_iter().map(Result::unwrap).collect();
        for (i, expected) in [Some(0), None, None, Some(3), None].into_iter().enumerate() {
            assert_eq!(
                spent[i],
                expected.map(|n| codes[n].clone()),
                "redemption {i}"
            );
        }
        let fives: Vec<_> = spent[5..7].iter().flatten().collect();
        assert_eq!(fives, [&codes[5]], "one of the two redemptions of one code");
        assert_eq!(spent[7..9], [None, None]);
        let sevens: Vec<_> = spent[9..].iter().flatten().collect();
        assert_eq!(
            sevens,
            [&codes[7]],
            "one of the two redemptions of one code"
        );
        // The refresh tokens stored: one for each code spent that carries no RFC 9396
        // details (code 5 carries some), with the code's grant.
        for (i, r) in refreshes.iter().enumerate() {
            let found = store.get_refresh(&r.token_hash, now).await.unwrap();
            let code = spent[i]
                .as_ref()
                .filter(|c| c.authorization_details.is_none());
            let expected = code.map(|c| RefreshToken {
                token_hash: r.token_hash.clone(),
                family_id: c.family_id.clone(),
                client_id: c.client_id.clone(),
                user_id: c.user_id.clone(),
                resources: c.resources.clone(),
                scope: c.scope.clone(),
                auth_time: c.auth_time,
                amr: c.amr.clone(),
                acr: c.acr.clone(),
                sid: c.sid.clone(),
                created_at: now,
                expires_at: r.expires_at,
                absolute_expires_at: r.absolute_expires_at,
                dpop_jkt: r.dpop_jkt.clone(),
            });
            assert_eq!(found, expected, "redemption {i}'s refresh token");
        }
        for n in [0, 3, 5, 7] {
            assert!(matches!(
                store.peek_code(&codes[n].code_hash, now).await.unwrap(),
                Spent::Replayed { .. }
            ));
        }
        for n in [1, 2, 4, 6] {
            let found = store.peek_code(&codes[n].code_hash, now).await.unwrap();
            assert_eq!(found, Spent::Fresh(codes[n].clone()), "code {n}");
        }

        // Refresh tokens, stored and then rotated together.
        let token = |n: u8, family: &str| RefreshToken {
            token_hash: vec![n; 32],
            family_id: family.into(),
            client_id: "c".into(),
            user_id: "u".into(),
            resources: vec!["https://r.example/\"q\"".into()],
            scope: "a".into(),
            auth_time: now - 5,
            amr: vec!["pwd".into()],
            acr: n.is_multiple_of(2).then(|| "urn:acr".into()),
            sid: n.is_multiple_of(3).then(|| format!("sid-{n}")),
            created_at: now,
            expires_at: now + 60,
            absolute_expires_at: now + 600,
            dpop_jkt: (n == 1).then(|| "jkt".into()),
        };
        let tokens: Vec<_> = (0..5).map(|n| token(n, &format!("rfam-{n}"))).collect();
        let stored = join_all(tokens.iter().map(|t| store.insert_refresh(t))).await;
        assert!(stored.iter().all(Result::is_ok), "{stored:?}");
        for t in &tokens {
            assert_eq!(
                store
                    .get_refresh(&t.token_hash, now)
                    .await
                    .unwrap()
                    .as_ref(),
                Some(t)
            );
        }
        store.revoke_family("rfam-3", now).await.unwrap();
        let successors: Vec<_> = (100..107)
            .map(|n| NextRefresh {
                token_hash: vec![n; 32],
                // The last idle past its family's absolute expiry.
                idle_until: if n == 106 {
                    now + 6000
                } else {
                    now + 60 + i64::from(n)
                },
                dpop_jkt: (n == 101).then(|| "jkt".into()),
            })
            .collect();
        let by = |client, jkt, one_resource| Rotating {
            client_id: client,
            dpop_jkt: jkt,
            one_resource,
        };
        // (token, successor, time, who): token 1 is bound to the key "jkt".
        let rotations = [
            (0, 0, now, by("c", None, true)),
            (1, 1, now, by("c", Some("jkt"), true)),
            (1, 2, now, by("c", Some("jkt"), false)),
            (2, 3, now + 60, by("c", None, true)),
            (3, 4, now, by("c", None, true)),
            (9, 5, now, by("c", None, true)),
            (4, 6, now, by("c", None, false)),
        ];
        // Refused as another client's, or without the token's key: nothing changes.
        for who in [
            by("d", None, true),
            by("c", None, true),
            by("c", Some("k"), true),
        ] {
            let r = store
                .rotate_usable(&[1; 32], &who, &successors[1], now)
                .await;
            assert_eq!(r.unwrap(), None, "{who:?}");
        }
        let presented: Vec<_> = rotations.iter().map(|&(t, ..)| [t; 32]).collect();
        let rotated = join_all(
            rotations
                .iter()
                .zip(&presented)
                .map(|((_, s, at, who), hash)| {
                    store.rotate_usable(hash, who, &successors[*s], *at)
                }),
        )
        .await;
        let rotated: Vec<Option<RefreshToken>> = rotated.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            rotated[0].as_ref(),
            Some(&tokens[0]),
            "a usable token rotates"
        );
        assert!(
            rotated[1].is_some() != rotated[2].is_some(),
            "one of two rotations of one token: {rotated:?}"
        );
        assert_eq!(
            rotated[3..6],
            [None, None, None],
            "expired, revoked, unknown"
        );
        assert_eq!(rotated[6].as_ref(), Some(&tokens[4]));
        for (i, s) in successors.iter().enumerate() {
            let found = store.get_refresh(&s.token_hash, now).await.unwrap();
            let (t, ..) = rotations[i];
            let expected = rotated[i]
                .is_some()
                .then(|| s.of(&tokens[usize::from(t)], now));
            assert_eq!(found, expected, "successor {i}");
        }
        assert_eq!(
            successors[6].of(&tokens[4], now).expires_at,
            tokens[4].absolute_expires_at
        );
        for (n, used) in [(0, true), (1, true), (2, false), (4, true)] {
            let found = store.find_refresh(&[n; 32], now).await.unwrap().unwrap();
            assert_eq!(found.used_at.is_some(), used, "token {n}");
        }

        // Families revoked together: each counts its own tokens; one revoked twice counts
        // them once.
        let families = ["rfam-0", "rfam-1", "rfam-1", "rfam-4", "none"];
        let revoked = join_all(families.iter().map(|f| store.revoke_family(f, now))).await;
        let revoked: Vec<u64> = revoked.into_iter().map(Result::unwrap).collect();
        assert_eq!(revoked, [2, 2, 0, 2, 0], "each token and its successor");
        let hashes = successors.iter().map(|s| &s.token_hash);
        for hash in hashes.chain([&tokens[4].token_hash]) {
            assert!(store.get_refresh(hash, now).await.unwrap().is_none());
        }
    }

    /// A batch's device codes are spent by one statement (`devices::redeem_many`): each only
    /// if it is approved, its client's, unexpired, unspent and not polled again too soon, as
    /// alone; of two spends of one code, one. A spend stores its refresh token, if it has
    /// one, with the request's grant.
    #[tokio::test]
    async fn device_codes_spent_together_are_each_as_alone() {
        use crate::store::{
            DeviceCode, DeviceStore, FirstRefresh, RefreshToken, RefreshTokenStore,
        };
        use futures_util::future::join_all;
        let dir = tempfile::tempdir().unwrap();
        let store = with_user_u(&dir).await;
        let now = 1_000_000;
        let device = |n: u8, status: &str| DeviceCode {
            device_code_hash: vec![n; 32],
            user_code: format!("CODE-{n}"),
            client_id: "c".into(),
            resources: vec!["https://r.example/\"q\",é".into()],
            scope: "a b".into(),
            status: status.into(),
            user_id: (status == "approved").then(|| "u".into()),
            auth_time: (status == "approved").then_some(now - 5),
            amr: vec!["pwd".into()],
            acr: (n == 1).then(|| "urn:acr".into()),
            sid: Some(format!("sid-{n}")),
            interval_secs: 5,
            last_polled_at: None,
            created_at: now - 10,
            expires_at: now + 60,
        };
        let devices = [
            device(0, "approved"),
            device(1, "approved"),
            device(2, "pending"),
            device(3, "denied"),
            DeviceCode {
                expires_at: now,
                ..device(4, "approved")
            },
            DeviceCode {
                last_polled_at: Some(now - 4),
                ..device(5, "approved")
            },
            DeviceCode {
                last_polled_at: Some(now - 5),
                ..device(6, "approved")
            },
            device(7, "approved"),
        ];
        for d in &devices {
            store.insert_device(d).await.unwrap();
        }
        let unknown = [9u8; 32];
        let spends: [(&[u8], &str); 9] = [
            (&devices[0].device_code_hash, "c"),
            (&devices[1].device_code_hash, "c"),
            (&devices[1].device_code_hash, "c"),
            (&devices[2].device_code_hash, "c"),
            (&devices[3].device_code_hash, "c"),
            (&devices[4].device_code_hash, "c"),
            (&devices[5].device_code_hash, "c"),
            (&devices[6].device_code_hash, "c"),
            (&devices[7].device_code_hash, "other"),
        ];
        // Each spend with a family and a refresh token of its own, but the first: none.
        let families: Vec<String> = (0..10).map(|i| format!("dfam-{i}")).collect();
        let refreshes: Vec<FirstRefresh> = (0..10u8)
            .map(|i| FirstRefresh {
                token_hash: vec![150 + i; 32],
                expires_at: now + 100 + i64::from(i),
                absolute_expires_at: now + 1_000,
                dpop_jkt: (i == 1).then(|| "refresh-jkt".into()),
            })
            .collect();
        let spent = join_all(
            spends
                .iter()
                .chain([(unknown.as_slice(), "c")].iter())
                .enumerate()
                .map(|(i, (hash, client))| {
                    let refresh = (i > 0).then(|| (families[i].as_str(), &refreshes[i]));
                    store.redeem_device(hash, client, now, refresh)
                }),
        )
        .await;
        let spent: Vec<Option<DeviceCode>> = spent.into_iter().map(Result::unwrap).collect();
        assert_eq!(spent[0].as_ref(), Some(&devices[0]));
        let ones: Vec<_> = spent[1..3].iter().flatten().collect();
        assert_eq!(ones, [&devices[1]], "one of the two spends of one code");
        assert_eq!(spent[3..6], [None, None, None], "pending, denied, expired");
        assert_eq!(spent[6], None, "polled 4 s ago, within its 5 s interval");
        assert_eq!(spent[7].as_ref(), Some(&devices[6]), "polled 5 s ago");
        assert_eq!(spent[8..], [None, None], "another client's, unknown");
        for (n, d) in devices.iter().enumerate() {
            let left = store.device_by_code(&d.device_code_hash).await.unwrap();
            let was_spent = [0, 1, 6].contains(&n);
            assert_eq!(left.as_ref(), (!was_spent).then_some(d), "device code {n}");
        }
        // The refresh tokens stored: one for each request spent with one, with its grant.
        for (i, r) in refreshes.iter().enumerate().skip(1) {
            let found = store.get_refresh(&r.token_hash, now).await.unwrap();
            let expected = spent[i].as_ref().map(|d| RefreshToken {
                token_hash: r.token_hash.clone(),
                family_id: families[i].clone(),
                client_id: d.client_id.clone(),
                user_id: d.user_id.clone().unwrap(),
                resources: d.resources.clone(),
                scope: d.scope.clone(),
                auth_time: d.auth_time.unwrap(),
                amr: d.amr.clone(),
                acr: d.acr.clone(),
                sid: d.sid.clone(),
                created_at: now,
                expires_at: r.expires_at,
                absolute_expires_at: r.absolute_expires_at,
                dpop_jkt: r.dpop_jkt.clone(),
            });
            assert_eq!(found, expected, "spend {i}'s refresh token");
        }
        // The first spend, without one, stored none.
        assert!(spent[0].is_some());
        assert_eq!(store.revoke_family(&families[0], now).await.unwrap(), 0);
    }

    /// A batch's clients and rate-limit hits are written by one statement of each kind
    /// (`clients::insert_many`, `rate_limits::hit_many`): each client reads back as
    /// written, a duplicate gets its own conflict, and hits on one bucket count one after
    /// another, each getting its own count.
    #[tokio::test]
    async fn clients_and_hits_queued_together_are_each_as_alone() {
        use crate::store::{ClientKind, ClientRecord, ClientStore, RateLimitStore, StoreError};
        use futures_util::future::join_all;
        let (store, _) = SqliteStore::open("sqlite::memory:", Open::Migrate)
            .await
            .unwrap();
        let now = 1_000_000;
        let metadata: crate::store::ClientMetadata = serde_json::from_value(serde_json::json!({
            "redirect_uris": ["https://a.example/cb?x=\"q\"&é"],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "application_type": "web",
            "client_name": "A \\ b",
        }))
        .unwrap();
        let client = |n: u8| ClientRecord {
            client_id: format!("client-{n}"),
            kind: if n.is_multiple_of(2) {
                ClientKind::Dynamic
            } else {
                ClientKind::Static
            },
            secret_hash: (n % 2 == 1).then(|| vec![n; 32]),
            previous_secret: (n == 3).then(|| crate::store::PreviousSecret {
                hash: vec![0xfe; 32],
                expires_at: now + 9,
            }),
            metadata: crate::store::ClientMetadata {
                client_name: Some(format!("client {n}")),
                ..metadata.clone()
            },
            registration_token_hash: n.is_multiple_of(3).then(|| vec![0, n, 0xff]),
            registered_from: (n != 2).then(|| "127.0.0.1".into()),
            created_at: now,
            updated_at: now + 1,
            last_used_at: (n == 4).then_some(now + 2),
            expires_at: n.is_multiple_of(2).then_some(now + 3600),
        };
        let clients: Vec<_> = [0, 1, 2, 3, 4, 1].into_iter().map(client).collect();
        let stored = join_all(clients.iter().map(|c| store.insert_client(c))).await;
        assert!(stored[..5].iter().all(Result::is_ok), "{stored:?}");
        assert!(matches!(&stored[5], Err(StoreError::Conflict(what)) if what == "client_id"));
        for c in &clients[..5] {
            let found = store.get_client(&c.client_id, now).await.unwrap().unwrap();
            assert_eq!(format!("{found:?}"), format!("{c:?}"));
            assert_eq!(found.secret_hash, c.secret_hash);
            assert_eq!(found.previous_secret, c.previous_secret);
            assert_eq!(found.registration_token_hash, c.registration_token_hash);
            assert_eq!(found.metadata, c.metadata);
        }

        // Ten hits on one bucket, two on another, one at another time: every count once.
        let hits: Vec<(&str, i64)> = [("b", now); 10]
            .into_iter()
            .chain([("c", now), ("c", now), ("b", now + 1)])
            .collect();
        let counted = join_all(hits.iter().map(|&(bucket, at)| store.hit(bucket, 60, at))).await;
        let mut counted: Vec<i64> = counted.into_iter().map(Result::unwrap).collect();
        let b_now = &mut counted[..10];
        b_now.sort_unstable();
        assert_eq!(b_now, (1..=10).collect::<Vec<_>>());
        assert_eq!(counted[10..], [1, 2, 11]);
        // A new window starts over, also for hits counted together.
        let later = join_all((0..3).map(|_| store.hit("b", 60, now + 61))).await;
        let mut later: Vec<i64> = later.into_iter().map(Result::unwrap).collect();
        later.sort_unstable();
        assert_eq!(later, [1, 2, 3]);
        assert_eq!(store.hits("b", 60, now + 61).await.unwrap(), 3);
    }
}
