//! The store suite: one behaviour, both backends.

use concierge::oauth::client_metadata::{Origin, RawClientMetadata, validate};
use concierge::oauth::registration::new_client;
use concierge::oauth::resource::{Resource, ScopeDef};
use concierge::store::{ClientKind, StoreError};

use crate::both;
use crate::helpers::{Backend, TestApp};

fn metadata() -> concierge::store::ClientMetadata {
    let raw = RawClientMetadata::from_json(
        br#"{"redirect_uris":["https://a.example/cb"],"client_name":"A"}"#,
    )
    .unwrap();
    validate(
        raw,
        Origin::Operator,
        &concierge::oauth::grants::GrantRegistry::standard(),
    )
    .unwrap()
}

both!(resources, |app: TestApp| async move {
    let s = app.store();
    let r = Resource::new(
        "https://mcp.example.com/",
        "Notes",
        vec![ScopeDef::parse("notes:read=Read").unwrap()],
        10,
    )
    .unwrap();
    s.insert_resource(&r.to_record()).await.unwrap();
    assert!(matches!(
        s.insert_resource(&r.to_record()).await,
        Err(StoreError::Conflict(_))
    ));
    // Stored normalised: the trailing-slash form finds it.
    let got = s
        .get_resource("https://mcp.example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, r.to_record());
    // Besides the admin API, which every server registers for itself at start-up.
    let admin = concierge::oauth::admin_token::admin_resource_uri(&app.issuer);
    let listed: Vec<_> = s
        .list_resources()
        .await
        .unwrap()
        .into_iter()
        .filter(|x| x.uri != admin)
        .collect();
    assert_eq!(listed, vec![r.to_record()]);
    assert!(s.delete_resource(r.uri.as_str()).await.unwrap());
    assert!(!s.delete_resource(r.uri.as_str()).await.unwrap());
    assert!(s.get_resource(r.uri.as_str()).await.unwrap().is_none());
    app
});

both!(clients, |app: TestApp| async move {
    let s = app.store();
    // Real times: the server's sweeper deletes expired registrations as it goes.
    let t = concierge::util::now() + 10;
    let (mut c, _) = new_client(
        metadata(),
        ClientKind::Dynamic,
        None,
        Some("192.0.2.1".into()),
        t,
        100,
    );
    s.insert_client(&c).await.unwrap();
    assert!(matches!(
        s.insert_client(&c).await,
        Err(StoreError::Conflict(_))
    ));
    let got = s.get_client(&c.client_id, t + 50).await.unwrap().unwrap();
    assert_eq!(got.metadata, c.metadata);
    assert_eq!(got.secret_hash, c.secret_hash);
    assert_eq!(got.registered_from.as_deref(), Some("192.0.2.1"));
    // Expired while unused: invisible, then swept.
    assert!(s.get_client(&c.client_id, t + 100).await.unwrap().is_none());
    assert!(s.list_clients(t + 100).await.unwrap().is_empty());
    // A use ends the expiry.
    s.touch_client(&c.client_id, t + 50).await.unwrap();
    let used = s.get_client(&c.client_id, t + 4000).await.unwrap().unwrap();
    assert_eq!(used.last_used_at, Some(t + 50));
    assert_eq!(used.expires_at, None);
    c.metadata.client_name = Some("B".into());
    c.updated_at = t + 1000;
    assert!(s.update_client(&c).await.unwrap());
    assert_eq!(
        s.get_client(&c.client_id, t + 4000)
            .await
            .unwrap()
            .unwrap()
            .metadata
            .client_name
            .as_deref(),
        Some("B")
    );
    let (unused, _) = new_client(metadata(), ClientKind::Dynamic, None, None, t, 100);
    s.insert_client(&unused).await.unwrap();
    assert_eq!(s.delete_expired_clients(t + 4000).await.unwrap(), 1);
    assert_eq!(s.list_clients(t + 4000).await.unwrap().len(), 1);
    assert!(s.delete_client(&c.client_id).await.unwrap());
    assert!(!s.update_client(&c).await.unwrap());
    app
});

both!(
    rate_limit_windows_count_atomically,
    |app: TestApp| async move {
        let s = app.store();
        // Real times: the server's sweeper purges windows older than a day.
        let t = concierge::util::now();
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let s = s.clone();
            tasks.push(tokio::spawn(
                async move { s.hit("b", 60, t).await.unwrap() },
            ));
        }
        let mut counts = Vec::new();
        for t in tasks {
            counts.push(t.await.unwrap());
        }
        counts.sort();
        assert_eq!(
            counts,
            (1..=20).collect::<Vec<i64>>(),
            "every hit counted exactly once"
        );
        assert_eq!(s.hit("b", 60, t + 59).await.unwrap(), 21);
        assert_eq!(s.hit("b", 60, t + 60).await.unwrap(), 1, "a new window");
        assert_eq!(s.hit("other", 60, t + 60).await.unwrap(), 1);
        assert_eq!(s.purge_rate_limits(t + 60).await.unwrap(), 0);
        assert_eq!(s.purge_rate_limits(t + 61).await.unwrap(), 2);
        app
    }
);

/// A registration's count from address `addr` of metadata `fp`, at `at`: two distinct
/// registrations and three identical ones a minute.
fn registration_count(addr: &str, fp: &str, at: i64) -> concierge::store::RegistrationCount {
    concierge::store::RegistrationCount {
        seen: format!("seen:{addr}:{fp}"),
        again: format!("again:{addr}"),
        first: format!("first:{addr}"),
        window_secs: 60,
        now: at,
        max_again: 3,
        max_first: 2,
    }
}

/// A registration's audit event, as the endpoint makes it.
fn registered(client_id: &str, at: i64) -> concierge::store::NewAuditEvent {
    concierge::store::NewAuditEvent {
        at,
        kind: "client.registered",
        client_id: Some(client_id.to_owned()),
        user_id: None,
        ip: Some("192.0.2.7".into()),
        detail: r#"{"client_name":"agent"}"#.into(),
    }
}

/// The audit events of `client_id` (ten at most), newest first.
async fn events_of(
    s: &dyn concierge::store::Store,
    client_id: &str,
) -> Vec<concierge::store::AuditEvent> {
    s.list_audit(&concierge::store::AuditQuery {
        client_id: Some(client_id.to_owned()),
        limit: 10,
        ..Default::default()
    })
    .await
    .unwrap()
}

both!(
    a_registration_is_counted_and_stored_in_one_write,
    |app: TestApp| async move {
        let s = app.store();
        let t = concierge::util::now();
        // What the registration counted, and whether its client was stored.
        let register = |addr: &'static str, fp: &'static str, at: i64| {
            let s = s.clone();
            async move {
                let (c, _) = new_client(metadata(), ClientKind::Dynamic, None, None, at, 3600);
                let count = registration_count(addr, fp, at);
                let counted = s
                    .register_client(&c, &count, &registered(&c.client_id, at))
                    .await
                    .unwrap();
                let stored = s.get_client(&c.client_id, at).await.unwrap().is_some();
                assert_eq!(stored, count.admits(counted), "stored iff admitted");
                let events = events_of(&*s, &c.client_id).await;
                let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
                let expected: &[&str] = if stored { &["client.registered"] } else { &[] };
                assert_eq!(kinds, expected, "its event stored with it, and only then");
                if let Some(e) = events.first() {
                    assert_eq!((e.at, e.ip.as_deref()), (at, Some("192.0.2.7")));
                    assert_eq!(e.detail, serde_json::json!({ "client_name": "agent" }));
                }
                (counted.repeated, counted.hits, stored)
            }
        };
        // The first of a kind counts as distinct and is seen from then on: three repeats
        // are stored, the fourth is not.
        assert_eq!(register("ip", "a", t).await, (false, 1, true));
        for n in 1..=3 {
            assert_eq!(register("ip", "a", t + 1).await, (true, n, true));
        }
        assert_eq!(register("ip", "a", t + 1).await, (true, 4, false));
        // Distinct ones have their own limit, and a refused one is not seen: sent again, it
        // is still distinct, and still refused.
        assert_eq!(register("ip", "b", t + 2).await, (false, 2, true));
        assert_eq!(register("ip", "c", t + 2).await, (false, 3, false));
        assert_eq!(register("ip", "c", t + 2).await, (false, 4, false));
        assert_eq!(s.hits("seen:ip:c", 60, t + 2).await.unwrap(), 0);
        // Another address counts on its own; a new window starts afresh.
        assert_eq!(register("other", "c", t + 3).await, (false, 1, true));
        assert_eq!(register("ip", "c", t + 62).await, (false, 1, true));
        assert_eq!(register("ip", "c", t + 63).await, (true, 1, true));

        // Concurrent identical registrations (one batch of SQLite's group commit, or
        // several): each counted once, and as many stored as the limit admits.
        assert_eq!(register("many", "d", t).await, (false, 1, true));
        let tasks: Vec<_> = (0..20)
            .map(|_| tokio::spawn(register("many", "d", t + 1)))
            .collect();
        let mut counts = Vec::new();
        let mut stored = 0;
        for task in tasks {
            let (repeated, hits, was_stored) = task.await.unwrap();
            assert!(repeated);
            counts.push(hits);
            stored += usize::from(was_stored);
        }
        counts.sort();
        assert_eq!(counts, (1..=20).collect::<Vec<i64>>());
        assert_eq!(stored, 3);
        // Registrations of several kinds at once (one batch of SQLite's group commit, or
        // several): each window counts its own, whatever the batches. Six repeats of seen
        // metadata from one address, four distinct ones from another, one from each of
        // three more.
        assert_eq!(register("mixed-a", "a", t).await, (false, 1, true));
        let mut tasks = Vec::new();
        for _ in 0..6 {
            tasks.push(("a", tokio::spawn(register("mixed-a", "a", t + 1))));
        }
        for fp in ["b1", "b2", "b3", "b4"] {
            tasks.push(("b", tokio::spawn(register("mixed-b", fp, t + 1))));
        }
        for addr in ["mixed-c1", "mixed-c2", "mixed-c3"] {
            tasks.push(("c", tokio::spawn(register(addr, "c", t + 1))));
        }
        // Of each kind, what each counted (whether repeated, and its hits), and how many
        // were stored.
        let mut counts = std::collections::BTreeMap::<&str, Vec<(bool, i64)>>::new();
        let mut stored = std::collections::BTreeMap::<&str, usize>::new();
        for (kind, task) in tasks {
            let (repeated, hits, was_stored) = task.await.unwrap();
            counts.entry(kind).or_default().push((repeated, hits));
            *stored.entry(kind).or_default() += usize::from(was_stored);
        }
        for of_kind in counts.values_mut() {
            of_kind.sort();
        }
        assert_eq!(counts["a"], (1..=6).map(|n| (true, n)).collect::<Vec<_>>());
        assert_eq!(counts["b"], (1..=4).map(|n| (false, n)).collect::<Vec<_>>());
        assert_eq!(counts["c"], vec![(false, 1); 3]);
        assert_eq!((stored["a"], stored["b"], stored["c"]), (3, 2, 3));
        // The distinct ones stored are seen from then on; the refused ones are not.
        let mut seen = Vec::new();
        for fp in ["b1", "b2", "b3", "b4"] {
            let bucket = format!("seen:mixed-b:{fp}");
            seen.push(s.hits(&bucket, 60, t + 1).await.unwrap());
        }
        seen.sort();
        assert_eq!(seen, [0, 0, 1, 1]);
        // A taken client id is a conflict.
        let (c, _) = new_client(metadata(), ClientKind::Dynamic, None, None, t, 3600);
        s.insert_client(&c).await.unwrap();
        assert!(matches!(
            s.register_client(
                &c,
                &registration_count("x", "e", t),
                &registered(&c.client_id, t)
            )
            .await,
            Err(StoreError::Conflict(_))
        ));
        // Nothing of that refused write stands: not its count, not its event (a registration
        // alone is one transaction too, not a statement at a time).
        assert_eq!(s.hits("first:x", 60, t).await.unwrap(), 0);
        assert_eq!(s.hits("seen:x:e", 60, t).await.unwrap(), 0);
        let events = events_of(&*s, &c.client_id).await;
        assert!(events.is_empty(), "{events:?}");
        app
    }
);

both!(
    signin_backoffs_swap_once_and_clear_by_prefix,
    |app: TestApp| async move {
        use concierge::store::Backoff;
        let s = app.store();
        let t = concierge::util::now();
        let first = Backoff {
            failures: 1,
            last_at: t,
        };
        // Of concurrent swaps from one state, exactly one wins: from none, and from a record.
        for expected in [None, Some(first)] {
            let next = Backoff {
                failures: expected.map_or(1, |b: Backoff| b.failures + 1),
                last_at: t,
            };
            let mut tasks = Vec::new();
            for _ in 0..10 {
                let s = s.clone();
                tasks.push(tokio::spawn(async move {
                    s.swap_backoff("u_1", expected, next).await.unwrap()
                }));
            }
            let mut won = 0;
            for task in tasks {
                won += usize::from(task.await.unwrap());
            }
            assert_eq!(won, 1, "{expected:?}");
            assert_eq!(s.backoff("u_1").await.unwrap(), Some(next));
        }
        assert!(s.clear_backoff("u_1").await.unwrap());
        assert!(!s.clear_backoff("u_1").await.unwrap());
        assert_eq!(s.backoff("u_1").await.unwrap(), None);
        assert!(
            s.swap_backoff(
                "old",
                None,
                Backoff {
                    failures: 1,
                    last_at: t - 100
                }
            )
            .await
            .unwrap()
        );
        assert_eq!(s.purge_backoffs(t - 99).await.unwrap(), 1);
        // Prefix clearing is literal and case-sensitive (`_` is no wildcard, `A` is not `a`).
        for b in ["p:a_b:1", "p:a_b:2", "p:aXb:1", "p:A_b:1", "p:a_b"] {
            s.hit(b, 60, t).await.unwrap();
        }
        assert_eq!(s.clear_rate_limits_with_prefix("p:a_b:").await.unwrap(), 2);
        for (b, left) in [("p:a_b:1", 0), ("p:aXb:1", 1), ("p:A_b:1", 1), ("p:a_b", 1)] {
            assert_eq!(s.hits(b, 60, t).await.unwrap(), left, "{b}");
        }
        assert!(s.clear_rate_limit("p:a_b").await.unwrap());
        assert!(!s.clear_rate_limit("p:a_b").await.unwrap());
        app
    }
);

both!(single_use_keys, |app: TestApp| async move {
    let s = app.store();
    // Far-future times: the sweeper running alongside must not touch these rows.
    let t = concierge::util::now() + 1_000_000;
    assert!(s.use_once("a", t + 60, t).await.unwrap(), "first use");
    assert!(!s.use_once("a", t + 60, t).await.unwrap(), "replay refused");
    assert!(
        !s.use_once("a", t + 90, t + 59).await.unwrap(),
        "still live"
    );
    assert!(
        s.use_once("b", t + 60, t).await.unwrap(),
        "keys are independent"
    );
    // A use that expired but was not swept yet does not block a new one.
    assert!(s.use_once("a", t + 200, t + 60).await.unwrap());
    assert!(!s.use_once("a", t + 200, t + 100).await.unwrap());
    // Concurrent uses of one key: exactly one wins.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.use_once("race", t + 60, t).await.unwrap()
        }));
    }
    let mut wins = 0;
    for task in tasks {
        wins += usize::from(task.await.unwrap());
    }
    assert_eq!(wins, 1);
    assert_eq!(
        s.purge_used(t + 199).await.unwrap(),
        2,
        "b and race expired"
    );
    assert!(!s.use_once("a", t + 300, t + 150).await.unwrap(), "a kept");
    assert_eq!(s.purge_used(t + 200).await.unwrap(), 1);
    app
});

// A session is read with its user and the user's consents to one client in one statement:
// as stored, none once the session expired or ended, and never another user's or another
// client's consents.
both!(
    sessions_are_read_with_their_user_and_consents,
    builder |b: crate::helpers::TestAppBuilder| b
        .with_user("alice", "a password of some length")
        .with_user("bob", "another password of some length"),
    |app: TestApp| async move {
        use concierge::store::{Allowed, Consent};
        let s = app.store();
        let t = concierge::util::now();
        let session = |user: &str, sid: &str| concierge::store::Session {
            sid: sid.into(),
            user_id: app.users[user].clone(),
            auth_time: t - 1001,
            amr: vec!["pwd".into(), "otp".into()],
            acr: Some("urn:concierge:acr:mfa".into()),
            created_at: t - 1000,
            expires_at: t + 600,
        };
        let (alice, bob) = (session("alice", "sid-a"), session("bob", "sid-b"));
        s.insert_session(b"hash-a", &alice).await.unwrap();
        s.insert_session(b"hash-b", &bob).await.unwrap();
        let consent = |user: &str, client: &str, resource: &str, scopes: &str| Consent {
            user_id: app.users[user].clone(),
            client_id: client.into(),
            resource: resource.into(),
            scopes: scopes.into(),
            created_at: t,
            updated_at: t,
            last_used_at: None,
        };
        for c in [
            consent("alice", "agent", "https://a.example/", "read write"),
            consent("alice", "agent", "https://b.example/", "read"),
            consent("alice", "other", "https://a.example/", "admin"),
            consent("bob", "agent", "https://c.example/", "bob's"),
        ] {
            s.save_consent(&c).await.unwrap();
        }

        let got = s.get_signed_in(b"hash-a", t, Some("agent")).await.unwrap().unwrap();
        assert_eq!(got.session, alice);
        assert_eq!(got.user.id, app.users["alice"]);
        assert_eq!(got.user.username, "alice");
        // The user's own times, not the session's.
        assert_ne!(got.user.created_at, alice.created_at);
        let mut allowed = got.allowed;
        allowed.sort_by(|a, b| a.resource.cmp(&b.resource));
        let allowed_at = |resource: &str, scopes: &str| Allowed {
            resource: resource.into(),
            scopes: scopes.into(),
        };
        assert_eq!(
            allowed,
            [
                allowed_at("https://a.example/", "read write"),
                allowed_at("https://b.example/", "read")
            ]
        );
        // No client named, or one the user allowed nothing: no consents.
        let got = s.get_signed_in(b"hash-a", t, None).await.unwrap().unwrap();
        assert!(got.allowed.is_empty());
        let got = s.get_signed_in(b"hash-a", t, Some("unknown")).await.unwrap().unwrap();
        assert!(got.allowed.is_empty());
        let got = s.get_signed_in(b"hash-b", t, Some("agent")).await.unwrap().unwrap();
        assert_eq!(
            (got.session.sid.as_str(), got.user.username.as_str()),
            ("sid-b", "bob")
        );
        assert_eq!(got.allowed, [allowed_at("https://c.example/", "bob's")]);

        let expired = s.get_signed_in(b"hash-a", t + 600, Some("agent")).await;
        assert!(expired.unwrap().is_none(), "expired");
        assert!(s.get_signed_in(b"unknown", t, None).await.unwrap().is_none());
        s.delete_session(b"hash-a").await.unwrap();
        assert!(s.get_signed_in(b"hash-a", t, None).await.unwrap().is_none(), "ended");
        assert!(s.get_signed_in(b"hash-b", t, None).await.unwrap().is_some());
        app
    }
);

// Look-ups at once (one statement for a batch of each kind on PostgreSQL) each read their
// own: introspection's refresh tokens, the signed-in read of sessions and users by id, the
// same token, session or user several times among them, answer as each read alone did.
// Alone: a spent token, an expired one, one of a revoked family and an unknown one are not
// usable; an expired session is not live; each session carries its own user and that
// user's consents to the client its read names, and none where it names none; an unknown
// user is none.
both!(
    look_ups_at_once_each_read_their_own,
    builder | b: crate::helpers::TestAppBuilder | alice_and_agent(b)
        .with_user("bob", "another password of some length"),
    |app: TestApp| async move {
        use concierge::store::{Consent, Session, SignedIn};
        let store = app.store();
        let now = concierge::util::now();
        let (spent, live, other) = two_families(&app, now).await;
        let mut expired = refresh_token(&app, "fam-expired", now - 7200);
        expired.expires_at = now - 1;
        store.insert_refresh(&expired).await.unwrap();
        let revoked = refresh_token(&app, "fam-revoked", now);
        store.insert_refresh(&revoked).await.unwrap();
        store.revoke_family("fam-revoked", now).await.unwrap();
        let tokens = [&spent, &live, &other, &expired, &revoked];

        let session = |user: &str, sid: &str, expires_at: i64| Session {
            sid: sid.into(),
            user_id: app.users[user].clone(),
            auth_time: now - 100,
            amr: vec!["pwd".into()],
            acr: None,
            created_at: now - 100,
            expires_at,
        };
        let sessions = [
            (b"session-alice".to_vec(), session("alice", "sid-a", now + 600)),
            (b"session-bob".to_vec(), session("bob", "sid-b", now + 600)),
            (b"session-gone".to_vec(), session("alice", "sid-c", now - 1)),
        ];
        for (hash, s) in &sessions {
            store.insert_session(hash, s).await.unwrap();
        }
        for (user, client, resource) in [
            ("alice", "agent", "https://a.example/"),
            ("alice", "other", "https://b.example/"),
            ("bob", "agent", "https://c.example/"),
        ] {
            let consent = Consent {
                user_id: app.users[user].clone(),
                client_id: client.into(),
                resource: resource.into(),
                scopes: format!("{user} {client}"),
                created_at: now,
                updated_at: now,
                last_used_at: None,
            };
            store.save_consent(&consent).await.unwrap();
        }

        #[derive(Debug, Clone, PartialEq)]
        enum Read {
            Token(Option<concierge::store::RefreshToken>),
            Session(Option<SignedIn>),
            User(Option<concierge::store::User>),
        }
        type LookUp = Box<dyn Fn() -> futures_util::future::BoxFuture<'static, Read> + Send + Sync>;
        let mut look_ups: Vec<LookUp> = Vec::new();
        for t in tokens.iter().map(|t| t.token_hash.clone()).chain([vec![7u8; 32]]) {
            let store = store.clone();
            look_ups.push(Box::new(move || {
                let (store, hash) = (store.clone(), t.clone());
                Box::pin(async move { Read::Token(store.get_refresh(&hash, now).await.unwrap()) })
            }));
        }
        let hashes = sessions.iter().map(|(h, _)| h.clone()).chain([b"unknown".to_vec()]);
        for hash in hashes {
            for client in [Some("agent"), Some("other"), None] {
                let (store, hash) = (store.clone(), hash.clone());
                look_ups.push(Box::new(move || {
                    let (store, hash) = (store.clone(), hash.clone());
                    Box::pin(async move {
                        let read = store.get_signed_in(&hash, now, client).await.unwrap();
                        Read::Session(read)
                    })
                }));
            }
        }

        let ids = [app.users["alice"].clone(), app.users["bob"].clone(), "nobody".into()];
        for id in ids {
            let store = store.clone();
            look_ups.push(Box::new(move || {
                let (store, id) = (store.clone(), id.clone());
                Box::pin(async move { Read::User(store.get_user(&id).await.unwrap()) })
            }));
        }

        let mut alone = Vec::new();
        for look_up in &look_ups {
            alone.push(look_up().await);
        }
        let usable: Vec<bool> = alone[..6]
            .iter()
            .map(|read| matches!(read, Read::Token(Some(_))))
            .collect();
        assert_eq!(usable, [false, true, true, false, false, false]);
        assert_eq!(alone[1], Read::Token(Some(live.clone())));
        assert_eq!(alone[2], Read::Token(Some(other.clone())));
        let consents = |read: &Read| match read {
            Read::Session(Some(s)) => Some((
                s.user.username.clone(),
                s.allowed.iter().map(|a| a.scopes.clone()).collect::<Vec<_>>(),
            )),
            _ => None,
        };
        let seen: Vec<_> = alone[6..18].iter().map(consents).collect();
        let some = |user: &str, scopes: &[&str]| {
            Some((user.to_string(), scopes.iter().map(|s| s.to_string()).collect()))
        };
        assert_eq!(
            seen,
            [
                some("alice", &["alice agent"]),
                some("alice", &["alice other"]),
                some("alice", &[]),
                some("bob", &["bob agent"]),
                some("bob", &[]),
                some("bob", &[]),
                None,
                None,
                None,
                None,
                None,
                None,
            ]
        );
        let users: Vec<_> = alone[18..]
            .iter()
            .map(|read| match read {
                Read::User(user) => user.as_ref().map(|u| u.username.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(users, [Some("alice".into()), Some("bob".into()), None]);

        // Each three times, all at once.
        let tasks: Vec<_> = (0..3)
            .flat_map(|_| look_ups.iter().map(|look_up| tokio::spawn(look_up())))
            .collect();
        for (n, task) in tasks.into_iter().enumerate() {
            let read = task.await.unwrap();
            assert_eq!(read, alone[n % look_ups.len()], "look-up {}", n % look_ups.len());
        }
        app
    }
);

/// What [`refresh_token`] needs: alice, and a client to hold her tokens.
fn alice_and_agent(b: crate::helpers::TestAppBuilder) -> crate::helpers::TestAppBuilder {
    b.with_user("alice", "a password of some length")
        .with_machine_client("agent", None)
}

/// A refresh token of `family`, made at `at` (on a server of [`alice_and_agent`]).
fn refresh_token(app: &TestApp, family: &str, at: i64) -> concierge::store::RefreshToken {
    concierge::store::RefreshToken {
        token_hash: concierge::util::random_bytes::<32>().to_vec(),
        family_id: family.to_string(),
        client_id: app.machine_clients[0].client_id.clone(),
        user_id: app.users["alice"].clone(),
        resources: vec!["https://r.example".into()],
        scope: "s".into(),
        auth_time: at,
        amr: vec!["pwd".into()],
        acr: None,
        sid: None,
        created_at: at,
        expires_at: at + 3600,
        absolute_expires_at: at + 86_400,
        dpop_jkt: None,
    }
}

/// The family `fam` of a spent token and its live successor, and the family `fam-other` of
/// one live token, stored (returned in that order).
async fn two_families(
    app: &TestApp,
    now: i64,
) -> (
    concierge::store::RefreshToken,
    concierge::store::RefreshToken,
    concierge::store::RefreshToken,
) {
    use concierge::store::refresh_tokens::Rotation;
    let store = app.store();
    let (a, b) = (
        refresh_token(app, "fam", now),
        refresh_token(app, "fam", now),
    );
    store.insert_refresh(&a).await.unwrap();
    store
        .rotate_refresh(&a.token_hash, &b, now, &|_| Rotation::Rotate)
        .await
        .unwrap();
    let other = refresh_token(app, "fam-other", now);
    store.insert_refresh(&other).await.unwrap();
    (a, b, other)
}

/// The `token.revoked` events stored, the latest 100.
async fn revocation_events(
    store: &dyn concierge::store::Store,
) -> Vec<concierge::store::AuditEvent> {
    let query = concierge::store::AuditQuery {
        kind: Some("token.revoked".into()),
        limit: 100,
        ..Default::default()
    };
    store.list_audit(&query).await.unwrap()
}

/// Could `t` still be used (presented for a refresh, or introspected) at `now`?
async fn usable(
    store: &dyn concierge::store::Store,
    t: &concierge::store::RefreshToken,
    now: i64,
) -> bool {
    store
        .get_refresh(&t.token_hash, now)
        .await
        .unwrap()
        .is_some()
}

/// Revoking a family while its tokens are being rotated (a replay detected at the same time
/// as a retry within the grace window, and as the successor's own rotation) takes row locks
/// in different orders; on PostgreSQL that can deadlock, and the database then aborts one of
/// them. Every call must still succeed (the store retries), never surface as an error (a 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn family_revocation_racing_rotations_never_errs() {
    use concierge::store::refresh_tokens::Rotation;
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = alice_and_agent(TestApp::builder(backend)).start().await else {
            continue;
        };
        let store = app.store();
        let now = concierge::util::now();
        for i in 0..40 {
            let family = format!("family-{i}");
            // A chain of rotations: a → b → c, with c live; then a retry of b (replace c),
            // c's own rotation and the family's revocation all at once.
            let a = refresh_token(&app, &family, now);
            store.insert_refresh(&a).await.unwrap();
            let b = refresh_token(&app, &family, now);
            let rotate = |_: &concierge::store::refresh_tokens::Presented| Rotation::Rotate;
            let replace = |_: &concierge::store::refresh_tokens::Presented| Rotation::Replace;
            store
                .rotate_refresh(&a.token_hash, &b, now, &rotate)
                .await
                .unwrap();
            let c = refresh_token(&app, &family, now);
            store
                .rotate_refresh(&b.token_hash, &c, now, &rotate)
                .await
                .unwrap();
            let (d, e) = (
                refresh_token(&app, &family, now),
                refresh_token(&app, &family, now),
            );
            let (s1, s2, s3) = (store.clone(), store.clone(), store.clone());
            let (bh, ch) = (b.token_hash.clone(), c.token_hash.clone());
            let fam = family.clone();
            let retry =
                tokio::spawn(
                    async move { s1.rotate_refresh(&bh, &d, now, &replace).await.map(|_| ()) },
                );
            let next =
                tokio::spawn(
                    async move { s2.rotate_refresh(&ch, &e, now, &rotate).await.map(|_| ()) },
                );
            let revoke = tokio::spawn(async move { s3.revoke_family(&fam, now).await.map(|_| ()) });
            for (what, r) in [("retry", retry), ("rotation", next), ("revocation", revoke)] {
                if let Err(e) = r.await.unwrap() {
                    panic!("{backend:?} round {i}: the {what} failed: {e}");
                }
            }
        }
        app.finish().await;
    }
}

/// The successor `rotate_usable` stores for a token of `family`, idle until `until`.
fn next_refresh(until: i64) -> concierge::store::NextRefresh {
    concierge::store::NextRefresh {
        token_hash: concierge::util::random_bytes::<32>().to_vec(),
        idle_until: until,
        dpop_jkt: None,
    }
}

/// `client` rotating a token, with no DPoP proof, for its only resource.
fn by(client: &str) -> concierge::store::Rotating<'_> {
    concierge::store::Rotating {
        client_id: client,
        dpop_jkt: None,
        one_resource: true,
    }
}

// A usable token rotates in one write: of concurrent rotations exactly one does, storing its
// successor (the token's grant with its own hash, idle expiry and key) and recording it on
// the token, and returns the token; the others change nothing (their successors are not
// stored). A spent, expired or revoked-family token does not rotate.
both!(
    a_usable_token_rotates_once,
    builder | b: crate::helpers::TestAppBuilder | alice_and_agent(b),
    |app: TestApp| async move {
        let store = app.store();
        let now = concierge::util::now();
        let a = refresh_token(&app, "fam", now);
        store.insert_refresh(&a).await.unwrap();
        let successors: Vec<_> = (0..8).map(|_| next_refresh(now + 600)).collect();
        let tasks: Vec<_> = successors
            .iter()
            .cloned()
            .map(|next| {
                let (store, hash, client) =
                    (store.clone(), a.token_hash.clone(), a.client_id.clone());
                tokio::spawn(async move {
                    store
                        .rotate_usable(&hash, &by(&client), &next, now)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut won = Vec::new();
        for (i, task) in tasks.into_iter().enumerate() {
            if let Some(t) = task.await.unwrap() {
                assert_eq!(t, a, "the rotated token, as stored");
                won.push(i);
            }
        }
        assert_eq!(won.len(), 1, "exactly one rotation: {won:?}");
        let found = store.find_refresh(&a.token_hash, now).await.unwrap().unwrap();
        assert_eq!(found.used_at, Some(now));
        assert_eq!(
            found.successor,
            Some(concierge::store::refresh_tokens::Successor::Live)
        );
        for (i, next) in successors.iter().enumerate() {
            let stored = store.get_refresh(&next.token_hash, now).await.unwrap();
            let expected = (i == won[0]).then(|| next.of(&a, now));
            assert_eq!(stored, expected, "successor {i}");
        }
        // Expired, or of a revoked family: nothing changes.
        let later = refresh_token(&app, "other", now);
        store.insert_refresh(&later).await.unwrap();
        let next = next_refresh(now + 600);
        let who = by(&later.client_id);
        let rotate = |at| store.rotate_usable(&later.token_hash, &who, &next, at);
        assert_eq!(rotate(now + 3600).await.unwrap(), None);
        store.revoke_family("other", now).await.unwrap();
        assert_eq!(rotate(now).await.unwrap(), None);
        assert!(store.find_refresh(&next.token_hash, now).await.unwrap().is_none());
        app
    }
);

// Rotations of many tokens at once (which the group commit writes together, on PostgreSQL
// too: one statement for a batch) each rotate their own token only: every one rotated
// returns its token and stores exactly its own successor, the idle expiry of one capped by
// its family's absolute expiry; the refused ones (another client, a token bound to a key
// the request lacks, two resources) spend nothing.
both!(
    rotations_at_once_each_rotate_their_own_token,
    builder | b: crate::helpers::TestAppBuilder | alice_and_agent(b),
    |app: TestApp| async move {
        let store = app.store();
        let now = concierge::util::now();
        let tokens: Vec<_> = (0..32)
            .map(|i| {
                let t = refresh_token(&app, &format!("at-once-{i}"), now);
                match i % 4 {
                    1 => concierge::store::RefreshToken {
                        dpop_jkt: Some("key-1".into()),
                        ..t
                    },
                    2 => concierge::store::RefreshToken {
                        resources: vec!["https://r.example".into(), "https://s.example".into()],
                        ..t
                    },
                    _ => t,
                }
            })
            .collect();
        for t in &tokens {
            store.insert_refresh(t).await.unwrap();
        }
        // Refused: of each eight, the second and sixth (no key), the third and seventh (two
        // resources) and the eighth (another client). The fifth's successor idles past the
        // absolute expiry.
        let refused = |i: usize| matches!(i % 8, 1 | 2 | 5 | 6 | 7);
        let nexts: Vec<_> = (0..tokens.len())
            .map(|i| next_refresh(now + if i % 8 == 4 { 10 * 86_400 } else { 600 }))
            .collect();
        let rotations = tokens.iter().zip(&nexts).enumerate().map(|(i, (t, next))| {
            let (store, t, next) = (store.clone(), t.clone(), next.clone());
            tokio::spawn(async move {
                let client = if i % 8 == 7 { "someone-else" } else { t.client_id.as_str() };
                store
                    .rotate_usable(&t.token_hash, &by(client), &next, now)
                    .await
                    .unwrap()
            })
        });
        let rotated = futures_util::future::join_all(rotations).await;
        for (i, ((t, next), r)) in tokens.iter().zip(&nexts).zip(rotated).enumerate() {
            let r = r.unwrap();
            let successor = store.get_refresh(&next.token_hash, now).await.unwrap();
            if refused(i) {
                assert_eq!(r, None, "token {i} refused");
                assert!(usable(&*store, t, now).await, "token {i} spent nothing");
                assert_eq!(successor, None, "token {i} has no successor");
            } else {
                assert_eq!(r.as_ref(), Some(t), "token {i} rotated");
                assert!(!usable(&*store, t, now).await, "token {i} spent");
                assert_eq!(successor, Some(next.of(t, now)), "token {i}'s own successor");
            }
        }
        assert_eq!(nexts[4].of(&tokens[4], now).expires_at, tokens[4].absolute_expires_at);
        app
    }
);

// Codes stored at once, then redeemed at once (which the group commit writes together: on
// SQLite in one script, on PostgreSQL in one statement), each spend their own code only: every code
// spent is returned as stored and stores exactly its own refresh token, in its own family
// (none when the code carries RFC 9396 details or none was asked for); the refused ones
// (another client, another verifier's challenge, another redirect URI, a bound code without
// its key) spend nothing and store nothing.
both!(
    redemptions_at_once_each_spend_their_own_code,
    builder | b: crate::helpers::TestAppBuilder | alice_and_agent(b),
    |app: TestApp| async move {
        use concierge::store::{AuthCode, FirstRefresh, Redeemer, Spent};
        let store = app.store();
        let now = concierge::util::now();
        let client = app.machine_clients[0].client_id.clone();
        let codes: Vec<AuthCode> = (0..32)
            .map(|i| AuthCode {
                code_hash: concierge::util::random_bytes::<32>().to_vec(),
                family_id: format!("code-family-{i}"),
                client_id: client.clone(),
                user_id: app.users["alice"].clone(),
                redirect_uri: Some(format!("https://app.example/cb/{i}")),
                code_challenge: format!("challenge-{i}"),
                resources: vec![format!("https://r{i}.example")],
                scope: format!("s{i}"),
                nonce: None,
                auth_time: now - i,
                amr: vec!["pwd".into()],
                acr: None,
                sid: Some(format!("sid-{i}")),
                created_at: now,
                expires_at: now + 60,
                dpop_jkt: matches!(i % 8, 4 | 7).then(|| format!("key-{i}")),
                authorization_details: (i % 8 == 5).then(|| "[{\"type\":\"t\"}]".to_string()),
            })
            .collect();
        // Stored at once too (batched as well).
        let inserts = codes.iter().map(|c| {
            let (store, c) = (store.clone(), c.clone());
            tokio::spawn(async move { store.insert_code(&c).await.unwrap() })
        });
        for inserted in futures_util::future::join_all(inserts).await {
            inserted.unwrap();
        }
        let refreshes: Vec<FirstRefresh> = (0..codes.len())
            .map(|i| FirstRefresh {
                token_hash: concierge::util::random_bytes::<32>().to_vec(),
                expires_at: now + 600 + i as i64,
                absolute_expires_at: now + 86_400,
                dpop_jkt: (i % 8 == 7).then(|| format!("key-{i}")),
            })
            .collect();
        // Of each eight: refused, the second (another client), third (another challenge),
        // fourth (another redirect URI) and fifth (bound, no key); the seventh asks for no
        // refresh token; the sixth has details, the eighth is bound and has its key.
        let refused = |i: usize| matches!(i % 8, 1..=4);
        let redemptions = codes.iter().zip(&refreshes).enumerate().map(|(i, (c, t))| {
            let (store, c, t) = (store.clone(), c.clone(), t.clone());
            tokio::spawn(async move {
                let challenge = format!("challenge-{}", if i % 8 == 2 { i + 1 } else { i });
                let redirect = format!("https://app.example/cb/{}", if i % 8 == 3 { i + 1 } else { i });
                let by = Redeemer {
                    client_id: if i % 8 == 1 { "someone-else" } else { &c.client_id },
                    redirect_uri: Some(&redirect),
                    code_challenge: &challenge,
                    dpop_jkt: c.dpop_jkt.as_deref().filter(|_| i % 8 == 7),
                };
                let refresh = (i % 8 != 6).then_some(&t);
                store.redeem_code(&c.code_hash, &by, now, refresh).await.unwrap()
            })
        });
        let spent = futures_util::future::join_all(redemptions).await;
        for (i, ((c, t), r)) in codes.iter().zip(&refreshes).zip(spent).enumerate() {
            let r = r.unwrap();
            let stored = store.get_refresh(&t.token_hash, now).await.unwrap();
            let peeked = store.peek_code(&c.code_hash, now).await.unwrap();
            if refused(i) {
                assert_eq!(r, None, "code {i} refused");
                assert_eq!(peeked, Spent::Fresh(c.clone()), "code {i} spent nothing");
                assert_eq!(stored, None, "code {i} stored no refresh token");
                continue;
            }
            assert_eq!(r.as_ref(), Some(c), "code {i} spent");
            let replayed = Spent::Replayed {
                family_id: c.family_id.clone(),
            };
            assert_eq!(peeked, replayed, "code {i} is spent");
            if matches!(i % 8, 5 | 6) {
                assert_eq!(stored, None, "code {i} stored no refresh token");
                continue;
            }
            let stored = stored.unwrap_or_else(|| panic!("code {i}'s refresh token"));
            let expected = concierge::store::RefreshToken {
                token_hash: t.token_hash.clone(),
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
                expires_at: t.expires_at,
                absolute_expires_at: t.absolute_expires_at,
                dpop_jkt: t.dpop_jkt.clone(),
            };
            assert_eq!(stored, expected, "code {i}'s own refresh token");
        }
        app
    }
);

// A code that cannot be stored (its user does not exist: a foreign key) among codes stored
// at once fails alone: the batch the database refuses runs again write by write, so every
// other code is stored and only that request gets the error.
both!(
    a_code_that_cannot_be_stored_fails_alone_among_others,
    builder | b: crate::helpers::TestAppBuilder | alice_and_agent(b),
    |app: TestApp| async move {
        use concierge::store::{AuthCode, Spent};
        let store = app.store();
        let now = concierge::util::now();
        let codes: Vec<AuthCode> = (0..16)
            .map(|i| AuthCode {
                user_id: if i == 5 { "no-such-user".into() } else { app.users["alice"].clone() },
                ..plain_code(&app, &format!("alone-family-{i}"), now)
            })
            .collect();
        let inserts = codes.iter().map(|c| {
            let (store, c) = (store.clone(), c.clone());
            tokio::spawn(async move { store.insert_code(&c).await })
        });
        let stored = futures_util::future::join_all(inserts).await;
        for (i, (c, r)) in codes.iter().zip(stored).enumerate() {
            let peeked = store.peek_code(&c.code_hash, now).await.unwrap();
            if i == 5 {
                assert!(r.unwrap().is_err(), "code {i} of no user is refused");
                assert_eq!(peeked, Spent::Invalid, "code {i} not stored");
            } else {
                r.unwrap().unwrap_or_else(|e| panic!("code {i} stored: {e}"));
                assert_eq!(peeked, Spent::Fresh(c.clone()), "code {i} stored");
            }
        }
        app
    }
);

// Device requests redeemed at once (one statement for a batch on either store) each spend
// their own request only: every one spent returns its request and stores exactly its own
// refresh token, in the family its redemption names; another client's attempt and a
// request not yet approved spend nothing, and a spent request is not spent again.
both!(
    device_redemptions_at_once_each_spend_their_own,
    builder | b: crate::helpers::TestAppBuilder | alice_and_agent(b),
    |app: TestApp| async move {
        use concierge::store::{DeviceCode, FirstRefresh};
        let store = app.store();
        let now = concierge::util::now();
        let client = app.machine_clients[0].client_id.clone();
        let requests: Vec<DeviceCode> = (0..32)
            .map(|i| DeviceCode {
                device_code_hash: concierge::util::random_bytes::<32>().to_vec(),
                user_code: format!("USER-{i:04}"),
                client_id: client.clone(),
                resources: vec![format!("https://r{i}.example")],
                scope: format!("s{i}"),
                status: if i % 4 == 3 { "pending" } else { "approved" }.into(),
                user_id: Some(app.users["alice"].clone()),
                auth_time: Some(now - i),
                amr: vec!["pwd".into()],
                acr: None,
                sid: Some(format!("sid-{i}")),
                interval_secs: 5,
                last_polled_at: None,
                created_at: now,
                expires_at: now + 600,
            })
            .collect();
        for r in &requests {
            store.insert_device(r).await.unwrap();
        }
        let refreshes: Vec<FirstRefresh> = (0..requests.len())
            .map(|i| FirstRefresh {
                token_hash: concierge::util::random_bytes::<32>().to_vec(),
                expires_at: now + 600 + i as i64,
                absolute_expires_at: now + 86_400,
                dpop_jkt: None,
            })
            .collect();
        let redeem = |i: usize, by: String, refresh: Option<FirstRefresh>| {
            let (store, hash) = (store.clone(), requests[i].device_code_hash.clone());
            tokio::spawn(async move {
                let family = format!("device-family-{i}");
                let refresh = refresh.as_ref().map(|t| (family.as_str(), t));
                store.redeem_device(&hash, &by, now, refresh).await.unwrap()
            })
        };
        // Of each four: the first with its refresh token, the second by another client, the
        // third without a refresh token, the fourth not yet approved.
        let tasks = (0..requests.len()).map(|i| {
            let by = if i % 4 == 1 { "someone-else".into() } else { client.clone() };
            redeem(i, by, (i % 4 != 2).then(|| refreshes[i].clone()))
        });
        let spent = futures_util::future::join_all(tasks).await;
        for (i, r) in spent.into_iter().enumerate() {
            let r = r.unwrap();
            let stored = store.get_refresh(&refreshes[i].token_hash, now).await.unwrap();
            if matches!(i % 4, 1 | 3) {
                assert_eq!(r, None, "request {i} refused");
                assert_eq!(stored, None, "request {i} stored no refresh token");
                continue;
            }
            assert_eq!(r.as_ref(), Some(&requests[i]), "request {i} spent");
            if i % 4 == 2 {
                assert_eq!(stored, None, "request {i} stored no refresh token");
                continue;
            }
            let stored = stored.unwrap_or_else(|| panic!("request {i}'s refresh token"));
            assert_eq!(stored.family_id, format!("device-family-{i}"));
            assert_eq!(
                (stored.scope.as_str(), &stored.resources, stored.expires_at),
                (requests[i].scope.as_str(), &requests[i].resources, refreshes[i].expires_at),
                "request {i}'s own refresh token"
            );
        }
        // Spent once only; another client's attempt left its request to its own client.
        for i in 0..requests.len() {
            let again = redeem(i, client.clone(), None).await.unwrap();
            assert_eq!(again.is_some(), i % 4 == 1, "request {i} redeemed again");
        }
        app
    }
);

// `rotate_usable` rotates only what its caller may: the token's own client, with the key the
// token is bound to, and for a request naming no resource, a token granted at most one. A
// rotation the request's later checks refuse is undone: the token is usable again and the
// successor gone, unless a retry replaced that successor meanwhile (the token stays spent).
both!(
    a_rotation_is_the_clients_and_can_be_undone,
    builder | b: crate::helpers::TestAppBuilder | alice_and_agent(b),
    |app: TestApp| async move {
        let store = app.store();
        let now = concierge::util::now();
        let bound = concierge::store::RefreshToken {
            dpop_jkt: Some("key-1".into()),
            ..refresh_token(&app, "bound", now)
        };
        let two = concierge::store::RefreshToken {
            resources: vec!["https://r.example".into(), "https://s.example".into()],
            ..refresh_token(&app, "two", now)
        };
        for t in [&bound, &two] {
            store.insert_refresh(t).await.unwrap();
        }
        let client = bound.client_id.as_str();
        let next = next_refresh(now + 600);
        let refused = [
            (&bound, by("someone-else")),
            (&bound, by(client)),
            (
                &bound,
                concierge::store::Rotating {
                    dpop_jkt: Some("key-2"),
                    ..by(client)
                },
            ),
            (&two, by(client)),
        ];
        for (i, (t, who)) in refused.iter().enumerate() {
            let r = store.rotate_usable(&t.token_hash, who, &next, now).await;
            assert_eq!(r.unwrap(), None, "refusal {i}");
            assert!(usable(&*store, t, now).await, "refusal {i} spent nothing");
        }
        assert!(store.find_refresh(&next.token_hash, now).await.unwrap().is_none());

        // With the proof's key, or naming one of the two resources: rotated. Then undone.
        let with_key = concierge::store::Rotating {
            dpop_jkt: Some("key-1"),
            ..by(client)
        };
        let any = concierge::store::Rotating {
            one_resource: false,
            ..by(client)
        };
        for (t, who) in [(&bound, with_key), (&two, any)] {
            // Idle past the family's absolute expiry: the successor's is capped by it.
            let next = next_refresh(now + 10 * 86_400);
            let r = store.rotate_usable(&t.token_hash, &who, &next, now).await;
            assert_eq!(r.unwrap().as_ref(), Some(t));
            assert!(!usable(&*store, t, now).await);
            let successor = store.get_refresh(&next.token_hash, now).await.unwrap();
            assert_eq!(successor, Some(next.of(t, now)));
            assert_eq!(next.of(t, now).expires_at, t.absolute_expires_at);
            store.unrotate(&t.token_hash, &next.token_hash).await.unwrap();
            let found = store.find_refresh(&t.token_hash, now).await.unwrap().unwrap();
            assert_eq!((found.used_at, found.successor), (None, None));
            assert!(store.find_refresh(&next.token_hash, now).await.unwrap().is_none());
            // And it rotates again.
            let again = next_refresh(now + 600);
            let r = store.rotate_usable(&t.token_hash, &who, &again, now).await;
            assert!(r.unwrap().is_some());
        }

        // Replaced by a retry before the undo: the token stays spent, with the retry's
        // successor live, and the undone one gone.
        let t = refresh_token(&app, "retried", now);
        store.insert_refresh(&t).await.unwrap();
        let first = next_refresh(now + 600);
        let r = store.rotate_usable(&t.token_hash, &by(client), &first, now).await;
        assert!(r.unwrap().is_some());
        let retry = first.of(&t, now);
        let retry = concierge::store::RefreshToken {
            token_hash: concierge::util::random_bytes::<32>().to_vec(),
            ..retry
        };
        let replace = |_: &concierge::store::Presented| concierge::store::Rotation::Replace;
        let decided = store.rotate_refresh(&t.token_hash, &retry, now, &replace).await;
        assert_eq!(decided.unwrap(), concierge::store::Rotation::Replace);
        store.unrotate(&t.token_hash, &first.token_hash).await.unwrap();
        let found = store.find_refresh(&t.token_hash, now).await.unwrap().unwrap();
        assert_eq!(found.used_at, Some(now));
        assert_eq!(
            found.successor,
            Some(concierge::store::refresh_tokens::Successor::Live)
        );
        assert!(usable(&*store, &retry, now).await);
        assert!(store.find_refresh(&first.token_hash, now).await.unwrap().is_none());
        app
    }
);

// Revoking a family (RFC 7009 revocation, a replayed code or refresh token) revokes every
// token of it, spent ones included, says how many, and leaves the family remembered as
// revoked: a token of it inserted afterwards (a code's first redemption racing its replay)
// is born dead. Revoking it again revokes nothing more; another family is untouched.
both!(
    a_revoked_family_counts_its_tokens_and_stays_revoked,
    builder | b: crate::helpers::TestAppBuilder | alice_and_agent(b),
    |app: TestApp| async move {
        let store = app.store();
        let now = concierge::util::now();
        let (_, b, other) = two_families(&app, now).await;

        let n = store.revoke_family("fam", now).await.unwrap();
        assert_eq!(n, 2, "the spent token and its live successor");
        assert!(!usable(&*store, &b, now).await);
        let late = refresh_token(&app, "fam", now);
        store.insert_refresh(&late).await.unwrap();
        assert!(
            !usable(&*store, &late, now).await,
            "a token of the family inserted after its revocation must be dead"
        );
        assert_eq!(store.revoke_family("fam", now).await.unwrap(), 1, "the late one only");
        assert_eq!(store.revoke_family("fam", now).await.unwrap(), 0);
        assert!(usable(&*store, &other, now).await, "another family is untouched");
        app
    }
);

// A client revokes the family of its own token (RFC 7009 §2.1), in one statement on
// PostgreSQL, with its audit event in the same write, there committed without waiting for the
// disk inside a request and then settled, as the server does: the family goes, remembered so a token of it born later is dead, and the event names the
// family and its user. A token a rotation spent still names the grant, so it revokes the
// family too; another client's token, an unknown one, and one of a family already revoked
// revoke nothing and store no event.
both!(
    a_client_revokes_the_family_of_its_own_token,
    builder | b: crate::helpers::TestAppBuilder | alice_and_agent(b),
    |app: TestApp| async move {
        use concierge::store::commits::{Deferred, deferring};
        let store = app.store();
        let now = concierge::util::now();
        let me = app.machine_clients[0].client_id.clone();
        let event = |client: &str| concierge::store::NewAuditEvent {
            at: now,
            kind: "token.revoked",
            client_id: Some(client.to_owned()),
            user_id: None,
            ip: None,
            detail: r#"{"token_type":"refresh_token"}"#.into(),
        };
        let revocations = || revocation_events(&*store);
        let (a, b, other) = two_families(&app, now).await;
        for (hash, client) in [
            (&a.token_hash, "someone-else"),
            (&b.token_hash, "someone-else"),
            (&vec![7u8; 32], me.as_str()),
        ] {
            let revoked = store.revoke_family_of(hash, client, now, &event(client)).await;
            assert_eq!(revoked.unwrap(), None);
        }
        assert!(usable(&*store, &b, now).await, "nothing was revoked yet");
        assert_eq!(revocations().await, vec![], "nor any event stored");

        // `a` was rotated into `b`: revoking the spent one ends the grant, `b` with it.
        let (revoked, deferred) =
            deferring(store.revoke_family_of(&a.token_hash, &me, now, &event(&me))).await;
        let family = concierge::store::RevokedFamily {
            family_id: "fam".into(),
            user_id: app.users["alice"].clone(),
        };
        assert_eq!(revoked.unwrap(), Some(family.clone()));
        // Its commit waited for the disk (PostgreSQL) or need not (SQLite): nothing to
        // settle before the answer.
        assert_eq!(deferred, Deferred::None);
        assert!(!usable(&*store, &b, now).await);
        let stored = revocations().await;
        assert_eq!(stored.len(), 1, "{stored:?}");
        assert_eq!(
            (stored[0].client_id.as_deref(), stored[0].user_id.as_deref()),
            (Some(me.as_str()), Some(app.users["alice"].as_str()))
        );
        assert_eq!(
            stored[0].detail,
            serde_json::json!({ "token_type": "refresh_token", "family_id": "fam" })
        );
        let as_told = family.event(&event(&me));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&as_told.detail).unwrap(),
            stored[0].detail,
            "RevokedFamily::event says what was stored"
        );
        assert_eq!(as_told.user_id, stored[0].user_id);
        assert_eq!(
            store
                .revoke_family_of(&b.token_hash, &me, now, &event(&me))
                .await
                .unwrap(),
            None,
            "the family is revoked already"
        );
        assert_eq!(revocations().await.len(), 1);
        let late = refresh_token(&app, "fam", now);
        store.insert_refresh(&late).await.unwrap();
        assert!(!usable(&*store, &late, now).await, "born dead");
        assert!(usable(&*store, &other, now).await, "another family is untouched");
        app
    }
);

// Concurrent revocations of one family (of the same token, and of its two tokens) revoke it
// once: one of them says so, and one event is stored (decided on the writer on SQLite; on
// PostgreSQL under the token's lock, a deadlock between two tokens retried).
both!(
    concurrent_revocations_of_a_family_store_one_event,
    builder | b: crate::helpers::TestAppBuilder | alice_and_agent(b),
    |app: TestApp| async move {
        let store = app.store();
        let me = app.machine_clients[0].client_id.clone();
        for round in 0..5 {
            let now = concierge::util::now();
            let family = format!("fam-{round}");
            let (a, b) = (
                refresh_token(&app, &family, now),
                refresh_token(&app, &family, now),
            );
            store.insert_refresh(&a).await.unwrap();
            let rotate = |_: &concierge::store::Presented| concierge::store::Rotation::Rotate;
            store.rotate_refresh(&a.token_hash, &b, now, &rotate).await.unwrap();
            let event = concierge::store::NewAuditEvent {
                at: now,
                kind: "token.revoked",
                client_id: Some(me.clone()),
                user_id: None,
                ip: None,
                detail: format!(r#"{{"round":{round}}}"#),
            };
            let tasks: Vec<_> = [&a, &a, &b, &b]
                .into_iter()
                .map(|t| {
                    let (store, hash, me, event) =
                        (store.clone(), t.token_hash.clone(), me.clone(), event.clone());
                    tokio::spawn(async move {
                        store.revoke_family_of(&hash, &me, now, &event).await.unwrap()
                    })
                })
                .collect();
            let mut revoked = Vec::new();
            for task in tasks {
                revoked.extend(task.await.unwrap());
            }
            assert_eq!(revoked.len(), 1, "round {round}: {revoked:?}");
            store.settle().await.unwrap();
            let stored = revocation_events(&*store).await;
            let this_round = stored
                .iter()
                .filter(|e| e.detail["round"] == round)
                .count();
            assert_eq!(this_round, 1, "round {round}: {stored:?}");
            assert!(!usable(&*store, &b, now).await);
        }
        app
    }
);

// Revocations at once (one statement for a batch on PostgreSQL) each revoke their own
// token's family only, and store their own event. Of each four families: the first revoked
// by its client; the second's token presented by another client; the third presented
// through both its tokens at once (one of them says so, one event); the fourth revoked
// before. An unknown token revokes nothing.
both!(
    revocations_at_once_each_revoke_their_own_family,
    builder | b: crate::helpers::TestAppBuilder | alice_and_agent(b),
    |app: TestApp| async move {
        let store = app.store();
        let now = concierge::util::now();
        let me = app.machine_clients[0].client_id.clone();
        let alice = app.users["alice"].clone();
        let mut families = Vec::new();
        for i in 0..24 {
            let family = format!("at-once-{i}");
            let tokens: Vec<_> = (0..1 + usize::from(i % 4 == 2))
                .map(|_| refresh_token(&app, &family, now))
                .collect();
            for t in &tokens {
                store.insert_refresh(t).await.unwrap();
            }
            if i % 4 == 3 {
                store.revoke_family(&family, now).await.unwrap();
            }
            families.push(tokens);
        }
        let revoke = |i: usize, hash: Vec<u8>, by: String| {
            let store = store.clone();
            let event = concierge::store::NewAuditEvent {
                at: now,
                kind: "token.revoked",
                client_id: Some(by.clone()),
                user_id: None,
                ip: Some(format!("192.0.2.{i}")),
                detail: format!(r#"{{"token_type":"refresh_token","n":{i}}}"#),
            };
            tokio::spawn(async move { store.revoke_family_of(&hash, &by, now, &event).await })
        };
        let mut tasks = vec![(None, revoke(99, vec![7u8; 32], me.clone()))];
        for (i, tokens) in families.iter().enumerate() {
            let by = if i % 4 == 1 { "someone-else".to_string() } else { me.clone() };
            for t in tokens {
                tasks.push((Some(i), revoke(i, t.token_hash.clone(), by.clone())));
            }
        }
        let mut said = vec![0; families.len()];
        for (i, task) in tasks {
            let revoked = task.await.unwrap().unwrap();
            let Some(i) = i else {
                assert_eq!(revoked, None, "an unknown token");
                continue;
            };
            if let Some(family) = revoked {
                let expected = concierge::store::RevokedFamily {
                    family_id: format!("at-once-{i}"),
                    user_id: alice.clone(),
                };
                assert_eq!(family, expected, "family {i}");
                said[i] += 1;
            }
        }
        store.settle().await.unwrap();
        let stored = revocation_events(&*store).await;
        for (i, tokens) in families.iter().enumerate() {
            let revoked_now = matches!(i % 4, 0 | 2);
            assert_eq!(said[i], usize::from(revoked_now), "family {i}: {said:?}");
            let events: Vec<_> = stored.iter().filter(|e| e.detail["n"] == i).collect();
            if revoked_now {
                assert_eq!(events.len(), 1, "family {i}: {stored:?}");
                let e = events[0];
                assert_eq!(
                    (e.at, e.kind.as_str(), e.client_id.as_deref()),
                    (now, "token.revoked", Some(me.as_str()))
                );
                let ip = format!("192.0.2.{i}");
                assert_eq!(
                    (e.user_id.as_deref(), e.ip.as_deref()),
                    (Some(alice.as_str()), Some(ip.as_str()))
                );
                assert_eq!(
                    e.detail,
                    serde_json::json!({
                        "token_type": "refresh_token",
                        "n": i,
                        "family_id": format!("at-once-{i}"),
                    })
                );
            } else {
                assert_eq!(events.len(), 0, "family {i}: {stored:?}");
            }
            for t in tokens {
                assert_eq!(usable(&*store, t, now).await, i % 4 == 1, "family {i}");
            }
        }
        assert_eq!(stored.len(), 12, "{stored:?}");
        app
    }
);

/// Revoking a consent (or signing a user out everywhere) also remembers the grant's families
/// as revoked: a successor that a rotation running at that moment inserts after the
/// revocation's update (it could not see it) is born dead. Other clients' families are not
/// touched.
#[tokio::test]
async fn a_successor_committed_after_a_consent_revocation_is_dead() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = alice_and_agent(TestApp::builder(backend))
            .with_machine_client("other", None)
            .start()
            .await
        else {
            continue;
        };
        let store = app.store();
        let now = concierge::util::now();
        let a = refresh_token(&app, "fam-a", now);
        store.insert_refresh(&a).await.unwrap();
        let mut other = refresh_token(&app, "fam-other", now);
        other.client_id = app.machine_clients[1].client_id.clone();
        store.insert_refresh(&other).await.unwrap();
        let (user, client) = (a.user_id.clone(), a.client_id.clone());
        store
            .revoke_consent(&user, &client, "https://r.example", now)
            .await
            .unwrap();
        assert!(!usable(&*store, &a, now).await);
        // The successor of an in-flight rotation, committed after the revocation.
        let late = refresh_token(&app, "fam-a", now);
        store.insert_refresh(&late).await.unwrap();
        assert!(
            !usable(&*store, &late, now).await,
            "{backend:?}: the late successor must be dead"
        );
        assert!(
            usable(&*store, &other, now).await,
            "{backend:?}: another client's grant is untouched"
        );
        // Disabling the user does the same for every family of the user.
        let late_other = refresh_token(&app, "fam-other", now);
        let mut late_other = late_other;
        late_other.client_id = other.client_id.clone();
        store.set_disabled(&user, Some(now), now).await.unwrap();
        store.insert_refresh(&late_other).await.unwrap();
        assert!(!usable(&*store, &late_other, now).await, "{backend:?}");
        app.finish().await;
    }
}

both!(
    passkeys,
    builder | b: crate::helpers::TestAppBuilder | b.with_user("alice", "correct horse battery").with_user("bob", "correct horse battery"),
    |app: TestApp| async move {
        use concierge::store::{Ceremony, StoredPasskey};
        let s = app.store();
        let (alice, bob) = (app.users["alice"].clone(), app.users["bob"].clone());
        let t = concierge::util::now();

        // The user handle: the first one stored stays, and leads back to its user.
        let h = s.passkey_handle(&alice, "handle-a", t).await.unwrap();
        assert_eq!(h, "handle-a");
        assert_eq!(s.passkey_handle(&alice, "handle-b", t).await.unwrap(), "handle-a");
        assert_eq!(s.user_of_passkey_handle("handle-a").await.unwrap(), Some(alice.clone()));
        assert_eq!(s.user_of_passkey_handle("handle-b").await.unwrap(), None);
        assert_eq!(s.user_of_passkey_handle("nul\0").await.unwrap(), None);

        let pk = |id: &str, user: &str, cred: &str| StoredPasskey {
            id: id.into(),
            user_id: user.into(),
            credential_id: cred.into(),
            credential: "{}".into(),
            name: format!("key {id}"),
            created_at: t,
            last_used_at: None,
        };
        s.insert_passkey(&pk("p1", &alice, "c1")).await.unwrap();
        s.insert_passkey(&pk("p2", &alice, "c2")).await.unwrap();
        // A credential id belongs to one passkey, whoever registers it again.
        assert!(matches!(
            s.insert_passkey(&pk("p3", &bob, "c1")).await,
            Err(StoreError::Conflict(_))
        ));
        let listed = s.list_passkeys(&alice).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0], pk("p1", &alice, "c1"));
        assert!(s.list_passkeys(&bob).await.unwrap().is_empty());

        // A use: the time, and the credential only when it changed.
        assert!(s.passkey_used(&alice, "c1", Some("{\"n\":1}"), t + 5).await.unwrap());
        assert!(s.passkey_used(&alice, "c1", None, t + 6).await.unwrap());
        assert!(!s.passkey_used(&bob, "c1", None, t + 6).await.unwrap());
        let p1 = s.list_passkeys(&alice).await.unwrap().remove(0);
        assert_eq!((p1.credential.as_str(), p1.last_used_at), ("{\"n\":1}", Some(t + 6)));

        // Only the owner renames or removes.
        assert!(!s.rename_passkey(&bob, "p1", "mine").await.unwrap());
        assert!(s.rename_passkey(&alice, "p1", "Laptop").await.unwrap());
        assert_eq!(s.list_passkeys(&alice).await.unwrap()[0].name, "Laptop");
        assert!(!s.delete_passkey(&bob, "p1").await.unwrap());
        assert!(s.delete_passkey(&alice, "p1").await.unwrap());
        assert!(!s.delete_passkey(&alice, "p1").await.unwrap());
        assert_eq!(s.delete_passkeys(&alice).await.unwrap(), 1);
        assert!(s.list_passkeys(&alice).await.unwrap().is_empty());

        // A ceremony is taken once, and never after it expired.
        let c = Ceremony {
            kind: "register".into(),
            user_id: Some(alice.clone()),
            binding: "browser".into(),
            state: "{}".into(),
            expires_at: t + 300,
        };
        s.put_ceremony(b"one", &c).await.unwrap();
        s.put_ceremony(b"two", &Ceremony { user_id: None, ..c.clone() }).await.unwrap();
        s.put_ceremony(b"old", &Ceremony { expires_at: t - 1, ..c.clone() }).await.unwrap();
        let (a, b) = tokio::join!(s.take_ceremony(b"one", t), s.take_ceremony(b"one", t));
        let taken: Vec<_> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
        assert_eq!(taken, vec![c.clone()]);
        assert!(s.take_ceremony(b"old", t).await.unwrap().is_none());
        assert_eq!(s.purge_ceremonies(t + 301).await.unwrap(), 1);
        assert!(s.take_ceremony(b"two", t).await.unwrap().is_none());
        app
    }
);

both!(delegation_hops, |app: TestApp| async move {
    use concierge::store::{Delegation, HopPath};
    let s = app.store();
    let alice = crate::flow::seed(&app).await;
    // Times from an hour ahead: the server's own sweeper, running meanwhile on the clock,
    // must find nothing of this test's to purge.
    let t0 = concierge::util::now() + 3600;
    let t = |secs: i64| t0 + secs;
    let hop = |id: &str, parent: &str, expires_at: i64| Delegation {
        id: id.into(),
        user_id: alice.clone(),
        root_client_id: "agent".into(),
        root_resource: "https://cal.example".into(),
        parent_id: parent.into(),
        client_id: format!("client-{id}"),
        resource: format!("https://{id}.example"),
        created_at: t(10),
        last_used_at: t(10),
        expires_at,
        revoked_at: None,
        cut_by: None,
    };
    let (a, b, c) = (
        hop("a", "", t(1000)),
        hop("b", "a", t(1000)),
        hop("c", "b", t(1000)),
    );
    for h in [&a, &b, &c] {
        assert!(s.insert_delegation(h).await.unwrap());
    }
    // One row per path: the same path under another id is not inserted.
    let twin = Delegation {
        id: "a2".into(),
        ..a.clone()
    };
    assert!(!s.insert_delegation(&twin).await.unwrap());
    let path = HopPath {
        user_id: &alice,
        root_client_id: "agent",
        root_resource: "https://cal.example",
        parent_id: "a",
        client_id: "client-b",
        resource: "https://b.example",
    };
    assert_eq!(s.find_delegation(&path).await.unwrap(), Some(b.clone()));
    // A use moves last_used_at and only ever raises expires_at.
    s.touch_delegation("a", t(20), t(500)).await.unwrap();
    let got = s.get_delegation("a").await.unwrap().unwrap();
    assert_eq!((got.last_used_at, got.expires_at), (t(20), t(1000)));
    // Cutting b cuts c below it, not a above; only another user's id cuts nothing.
    assert_eq!(
        s.cut_delegation("someone-else", "b", t(30)).await.unwrap(),
        0
    );
    assert_eq!(s.cut_delegation(&alice, "b", t(30)).await.unwrap(), 2);
    assert_eq!(
        s.cut_delegation(&alice, "b", t(31)).await.unwrap(),
        0,
        "already cut"
    );
    let get = |id: &'static str| {
        let s = s.clone();
        async move { s.get_delegation(id).await.unwrap().unwrap() }
    };
    assert!(get("a").await.revoked_at.is_none());
    let (b, c) = (get("b").await, get("c").await);
    assert_eq!(
        (b.revoked_at, b.cut_by.as_deref()),
        (Some(t(30)), Some("user"))
    );
    assert_eq!(b.expires_at, i64::MAX, "the cut hop is kept: the cut holds");
    assert_eq!(c.expires_at, t(1000), "the hops below go with their tokens");
    // The sweeper removes what expired, never the cut hop.
    assert_eq!(s.purge_delegations(t(1001)).await.unwrap(), 2);
    assert!(s.get_delegation("b").await.unwrap().is_some());
    assert!(s.get_delegation("a").await.unwrap().is_none());
    app
});

both!(
    consent_use_is_kept_to_the_minute,
    |app: TestApp| async move {
        use concierge::store::Consent;
        let s = app.store();
        let alice = crate::flow::seed(&app).await;
        let resources = vec!["https://r.example".to_string()];
        s.save_consent(&Consent {
            user_id: alice.clone(),
            client_id: "agent".into(),
            resource: resources[0].clone(),
            scopes: "s".into(),
            created_at: 10,
            updated_at: 10,
            last_used_at: None,
        })
        .await
        .unwrap();
        let last_used = || async {
            s.get_consent(&alice, "agent", &resources[0])
                .await
                .unwrap()
                .unwrap()
                .last_used_at
        };
        s.touch_consent(&alice, "agent", &resources, 1000)
            .await
            .unwrap();
        assert_eq!(last_used().await, Some(1000), "a first use is written");
        s.touch_consent(&alice, "agent", &resources, 1059)
            .await
            .unwrap();
        assert_eq!(
            last_used().await,
            Some(1000),
            "a use within the minute is not"
        );
        s.touch_consent(&alice, "agent", &resources, 1060)
            .await
            .unwrap();
        assert_eq!(last_used().await, Some(1060), "a minute later it is");
        app
    }
);

/// A registration request, sent with [`status`].
fn registration(app: &TestApp) -> reqwest::RequestBuilder {
    app.http
        .post(app.url("/register"))
        .json(&serde_json::json!({
            "redirect_uris": ["http://127.0.0.1/cb"],
            "token_endpoint_auth_method": "none",
        }))
}

/// A request's status, or its error.
async fn status(request: reqwest::RequestBuilder) -> Result<u16, String> {
    request
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

/// Six registrations at once, so the server holds several connections; their statuses.
async fn register_six(app: &TestApp) -> Vec<Result<u16, String>> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..6 {
        set.spawn(status(registration(app)));
    }
    set.join_all().await
}

/// A PostgreSQL test server that has opened several connections (six registrations at once,
/// all answered), every one of which its database has then closed, as a restart or a
/// failover does. `None` when PostgreSQL is not there (the test skips).
async fn server_with_its_connections_closed() -> Option<TestApp> {
    let app = TestApp::builder(Backend::Postgres).start().await?;
    let first = register_six(&app).await;
    assert!(first.iter().all(|s| matches!(s, Ok(201))), "{first:?}");
    let url = app
        .config
        .database_url
        .clone()
        .expect("a PostgreSQL test app has a database URL");
    let admin = sqlx::PgPool::connect(&crate::helpers::pg_admin_url())
        .await
        .expect("admin connection");
    let database = url.rsplit('/').next().unwrap_or_default().to_string();
    let closed: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&database)
    .fetch_all(&admin)
    .await
    .expect("terminate the server's connections");
    admin.close().await;
    assert!(
        !closed.is_empty(),
        "the server held connections to {database}"
    );
    Some(app)
}

/// PostgreSQL closes the server's connections (a restart, a failover, an idle timeout in a
/// proxy between): a connection is not pinged before every use, only one idle for a while,
/// so after such a drop the next requests are answered on new connections rather than
/// failing on dead ones. SQLite has no such drop: its connections are to a local file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_closed_while_idle_are_replaced() {
    let Some(app) = server_with_its_connections_closed().await else {
        return;
    };

    // Idle past the check's threshold, as after a restart seen later.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let after = register_six(&app).await;
    assert!(
        after.iter().all(|s| matches!(s, Ok(201))),
        "every request after the drop is answered: {after:?}"
    );
    app.finish().await;
}

/// The same drop under steady use, with no idle time for the check: a request that meets a
/// dead connection may fail, but each dead connection fails once and is then replaced, so
/// no more requests fail than the server held connections (16).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_closed_while_in_use_fail_once_each() {
    let Some(app) = server_with_its_connections_closed().await else {
        return;
    };

    let mut failed = Vec::new();
    for _ in 0..40 {
        match status(registration(&app)).await {
            Ok(201) => {}
            other => failed.push(other),
        }
    }
    assert!(
        failed.len() <= 16,
        "a dead connection failed more than one request: {} of 40 failed: {failed:?}",
        failed.len()
    );
    app.finish().await;
}

both!(
    an_appended_batch_reads_back_as_written_in_order,
    |app: TestApp| async move {
        use concierge::store::{AuditQuery, NewAuditEvent};
        let s = app.store();
        // Far in the future, so the server's own events are not among them.
        let t = concierge::util::now() + 2_000_000;
        let kinds = ["token.issued", "signin.failed", "client.registered"];
        // Each column absent in some rows and present in others, text that JSON and SQL
        // quote, and more rows than one chunk of the append holds.
        let batch: Vec<NewAuditEvent> = (0..1500i64)
            .map(|n| NewAuditEvent {
                at: t + n % 7,
                kind: kinds[(n % 3) as usize],
                client_id: (n % 2 == 0).then(|| format!("client-{n}")),
                user_id: (n % 3 == 0).then(|| format!("user \"{n}\" é,")),
                ip: (n % 5 != 0).then(|| format!("2001:db8::{n:x}")),
                detail: format!(r#"{{"n":{n},"note":"it's \"quoted\", ünïcode"}}"#),
            })
            .collect();
        s.append_audit(&batch).await.unwrap();
        let mut read = s
            .list_audit(&AuditQuery {
                since: Some(t),
                limit: 10_000,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        // Listed newest first: the batch's order is the ids' order.
        read.reverse();
        assert_eq!(read.len(), batch.len());
        for (got, want) in read.iter().zip(&batch) {
            assert_eq!(got.at, want.at);
            assert_eq!(got.kind, want.kind);
            assert_eq!(got.client_id, want.client_id);
            assert_eq!(got.user_id, want.user_id);
            assert_eq!(got.ip, want.ip);
            assert_eq!(
                got.detail,
                serde_json::from_str::<serde_json::Value>(&want.detail).unwrap()
            );
        }
        assert!(read.windows(2).all(|w| w[0].id < w[1].id));
        app
    }
);

both!(
    audit_retention_deletes_what_is_due,
    |app: TestApp| async move {
        use concierge::store::{AuditQuery, NewAuditEvent};
        let s = app.store();
        let all = AuditQuery {
            limit: 10_000,
            ..AuditQuery::default()
        };
        // The server's own events (start-up), at about now.
        let earlier = s.list_audit(&all).await.unwrap();
        let oldest = earlier.iter().map(|e| e.at).min();
        // Far in the future, so no other event is as late.
        let t = concierge::util::now() + 1_000_000;
        let event = |at: i64| NewAuditEvent {
            at,
            kind: "token.issued",
            client_id: None,
            user_id: None,
            ip: None,
            detail: "{}".into(),
        };
        s.append_audit(&[event(t), event(t + 10)]).await.unwrap();
        // Nothing is older than the oldest event: the pass deletes nothing.
        assert_eq!(s.purge_audit(oldest.unwrap_or(t)).await.unwrap(), 0);
        // Everything before t + 5 goes: the server's events and the first of ours.
        let purged = s.purge_audit(t + 5).await.unwrap();
        assert!(purged > earlier.len() as u64, "{purged} deleted");
        assert_eq!(s.purge_audit(t + 5).await.unwrap(), 0);
        let left: Vec<i64> = s
            .list_audit(&all)
            .await
            .unwrap()
            .iter()
            .map(|e| e.at)
            .collect();
        assert!(left.contains(&(t + 10)), "{left:?}");
        assert!(!left.contains(&t), "{left:?}");
        app
    }
);

/// On PostgreSQL a code's insert has a lane of the group commit to itself
/// (`Kind::TAKES_NO_LOCK`): it is stored while both lanes of the other grouped writes wait
/// on a lock (here two device redemptions, each its own batch, behind a table lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_is_stored_while_the_other_writes_wait_on_a_lock_on_postgres() {
    use std::time::Duration;
    let Some(app) = alice_and_agent(TestApp::builder(Backend::Postgres))
        .start()
        .await
    else {
        return;
    };
    let store = app.store();
    let now = concierge::util::now();
    let db = sqlx::PgPool::connect(app.config.database_url.as_deref().unwrap())
        .await
        .unwrap();
    let mut lock = db.begin().await.unwrap();
    sqlx::query("LOCK TABLE device_codes IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let mut waiting = Vec::new();
    for i in 0..2u8 {
        let store = store.clone();
        waiting.push(tokio::spawn(async move {
            store.redeem_device(&[i; 32], "nobody", now, None).await
        }));
        // The next one queued once this one's batch has taken its lane.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let code = plain_code(&app, "lane-family", now);
    let stored = tokio::time::timeout(Duration::from_secs(5), store.insert_code(&code)).await;
    lock.rollback().await.unwrap();
    for w in waiting {
        assert_eq!(w.await.unwrap().unwrap(), None, "no such device code");
    }
    stored
        .expect("the code waited behind writes waiting on a lock")
        .unwrap();
    app.finish().await;
}

/// A live code of alice's for the first machine client (`alice_and_agent`) in the family
/// `family`, with nothing optional set.
fn plain_code(app: &TestApp, family: &str, now: i64) -> concierge::store::AuthCode {
    concierge::store::AuthCode {
        code_hash: concierge::util::random_bytes::<32>().to_vec(),
        family_id: family.into(),
        client_id: app.machine_clients[0].client_id.clone(),
        user_id: app.users["alice"].clone(),
        redirect_uri: None,
        code_challenge: format!("challenge-{family}"),
        resources: vec![],
        scope: "s".into(),
        nonce: None,
        auth_time: now,
        amr: vec!["pwd".into()],
        acr: None,
        sid: None,
        created_at: now,
        expires_at: now + 60,
        dpop_jkt: None,
        authorization_details: None,
    }
}
