//! The `concierge` command, run as a user would: zero-config serve, resources, clients, keys.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn concierge(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    concierge_env(dir, args, &[])
}

fn concierge_env(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_concierge"));
    cmd.current_dir(dir)
        .args(args)
        .env_remove("CONCIERGE_DATABASE_URL")
        .env_remove("CONCIERGE_KEY_ENCRYPTION_KEY")
        .env_remove("CONCIERGE_PREVIOUS_KEY_ENCRYPTION_KEYS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run concierge");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A directory with a database made as an operator makes one: `concierge migrate`.
fn initialised() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = concierge(dir.path(), &["migrate"]);
    assert!(ok && out.contains("created"), "{out}{err}");
    dir
}

#[test]
fn resources_from_the_command_line() {
    let dir = initialised();
    let d = dir.path();
    let (ok, out, err) = concierge(
        d,
        &[
            "resource",
            "add",
            "--uri",
            "https://mcp.example.com/mcp",
            "--name",
            "Notes",
            "--scope",
            "notes:read=Read your notes",
            "--scope",
            "notes:write=Change your notes",
            "--alias",
            "https://notes.example.net/mcp",
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("notes:write"), "{out}");
    assert!(
        out.contains("also named https://notes.example.net/mcp"),
        "{out}"
    );
    assert!(
        d.join("concierge-data/concierge.db").exists(),
        "zero-config SQLite in ./concierge-data"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("concierge-data"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o700,
            "the data directory is its owner's only"
        );
    }
    let (ok, out, _) = concierge(d, &["resource", "list"]);
    assert!(
        ok && out.contains("https://mcp.example.com/mcp  Notes")
            && out.contains("Read your notes")
            && out.contains("also named https://notes.example.net/mcp"),
        "{out}"
    );
    let (ok, _, err) = concierge(
        d,
        &[
            "resource",
            "add",
            "--uri",
            "https://mcp.example.com/mcp",
            "--name",
            "Again",
        ],
    );
    assert!(!ok && err.contains("already exists"), "{err}");
    // Tools, each with the scope it needs.
    let (ok, out, err) = concierge(
        d,
        &[
            "resource",
            "add",
            "--uri",
            "https://tools.example.com/mcp",
            "--name",
            "Tools",
            "--scope",
            "t:read=Read",
            "--scope",
            "t:write=Write",
            "--tool",
            "list_things=t:read=List your things",
            "--tool",
            "delete_thing=t:write",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("tool list_things  List your things"), "{out}");
    assert!(out.contains("tool delete_thing  delete_thing"), "{out}");
    for (tool, words) in [
        ("x=t:admin", "not one of the resource's scopes"),
        ("bad name=t:read", "not an MCP tool name"),
        ("x", "tool=scope"),
    ] {
        let (ok, _, err) = concierge(
            d,
            &[
                "resource",
                "add",
                "--uri",
                "https://t2.example/mcp",
                "--name",
                "T2",
                "--scope",
                "t:read",
                "--tool",
                tool,
            ],
        );
        assert!(!ok && err.contains(words), "{tool}: {err}");
    }
    // Another name of a registered resource cannot be registered again.
    let (ok, _, err) = concierge(
        d,
        &[
            "resource",
            "add",
            "--uri",
            "https://NOTES.example.net/mcp/",
            "--name",
            "Again",
        ],
    );
    assert!(!ok && err.contains("already names the resource"), "{err}");
    let (ok, _, err) = concierge(
        d,
        &[
            "resource",
            "add",
            "--uri",
            "https://x.example/#f",
            "--name",
            "X",
        ],
    );
    assert!(!ok && err.contains("fragment"), "{err}");
    let (ok, _, err) = concierge(
        d,
        &[
            "resource",
            "add",
            "--uri",
            "https://x.example",
            "--name",
            "X",
            "--scope",
            "openid=Sign in",
        ],
    );
    assert!(!ok && err.contains("OpenID"), "{err}");
    // RFC 9396 details types: declared as JSON, checked, listed; a schema keyword the
    // server would not enforce is refused, naming it.
    let share = r#"{"type":"notes_share","schema":{"type":"object","properties":{"note":{"type":"string"}},"required":["note"]},"sentence":"Share the note {note}"}"#;
    let (ok, out, err) = concierge(
        d,
        &[
            "resource",
            "add",
            "--uri",
            "https://share.example/mcp",
            "--name",
            "Share",
            "--details-type",
            share,
        ],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("accepts authorization details of type notes_share"),
        "{out}"
    );
    let loose = share.replace(
        r#"{"type":"string"}"#,
        r#"{"type":"string","format":"email"}"#,
    );
    let (ok, _, err) = concierge(
        d,
        &[
            "resource",
            "update",
            "https://share.example/mcp",
            "--details-type",
            &loose,
        ],
    );
    assert!(!ok && err.contains("\"format\""), "{err}");
    let (ok, _, err) = concierge(
        d,
        &[
            "resource",
            "update",
            "https://share.example/mcp",
            "--details-type",
            "not json",
        ],
    );
    assert!(!ok && err.contains("--details-type"), "{err}");
    let (ok, out, _) = concierge(d, &["resource", "list", "--output", "json"]);
    assert!(ok && out.contains("\"notes_share\""), "{out}");
    let (ok, out, _) = concierge(d, &["resource", "remove", "https://mcp.example.com/mcp"]);
    assert!(ok, "{out}");
    let (ok, _, err) = concierge(d, &["resource", "remove", "https://mcp.example.com/mcp"]);
    assert!(!ok && err.contains("no resource"), "{err}");
}

#[test]
fn clients_from_the_command_line() {
    let dir = initialised();
    let d = dir.path();
    let (ok, out, err) = concierge(
        d,
        &[
            "client",
            "add",
            "--name",
            "Batch job",
            "--id",
            "batch",
            "--grant-type",
            "client_credentials",
            "--auth-method",
            "client_secret_post",
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("added client batch"), "{out}");
    let secret_line = out
        .lines()
        .find(|l| l.starts_with("client_secret: "))
        .expect("secret printed once");
    assert_eq!(secret_line.trim_start_matches("client_secret: ").len(), 43);
    let (ok, out, _) = concierge(
        d,
        &[
            "client",
            "add",
            "--name",
            "Desktop",
            "--id",
            "desk",
            "--auth-method",
            "none",
            "--redirect-uri",
            "http://127.0.0.1/cb",
        ],
    );
    assert!(ok && !out.contains("client_secret"), "{out}");
    let (ok, _, err) = concierge(
        d,
        &[
            "client",
            "add",
            "--name",
            "Bad",
            "--redirect-uri",
            "http://evil.example/cb",
        ],
    );
    assert!(!ok && err.contains("redirect_uris[0]"), "{err}");
    let (ok, out, _) = concierge(d, &["client", "list"]);
    assert!(
        ok && out.contains("batch  static  Batch job") && out.contains("desk  static  Desktop"),
        "{out}"
    );
    assert!(
        !out.contains(secret_line.trim_start_matches("client_secret: ")),
        "list never shows secrets"
    );
    let (ok, out, _) = concierge(d, &["client", "show", "batch"]);
    assert!(
        ok && out.contains("\"client_credentials\"") && !out.contains("\"client_secret\""),
        "{out}"
    );
    // Changed in place (issue 15.2).
    let (ok, out, err) = concierge(d, &["client", "update", "batch", "--name", "Batch two"]);
    assert!(
        ok && out.contains("updated client batch") && out.contains("Batch two"),
        "{out}{err}"
    );
    let (ok, _, err) = concierge(
        d,
        &["client", "update", "batch", "--grant-type", "password"],
    );
    assert!(!ok && err.contains("grant_types"), "{err}");
    // A new secret with an overlap (issue 15.2).
    let (ok, out, err) = concierge(d, &["client", "rotate-secret", "batch"]);
    assert!(
        ok && out.contains("client_secret: ") && out.contains("works until"),
        "{out}{err}"
    );
    let (ok, out, err) = concierge(
        d,
        &["client", "rotate-secret", "batch", "--overlap-secs", "0"],
    );
    assert!(ok && out.contains("no longer works"), "{out}{err}");
    let (ok, _, _) = concierge(d, &["client", "remove", "batch"]);
    assert!(ok);
    let (ok, _, err) = concierge(d, &["client", "show", "batch"]);
    assert!(!ok && err.contains("no client"), "{err}");
}

fn concierge_with_stdin(
    dir: &std::path::Path,
    args: &[&str],
    stdin: &str,
) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_concierge"))
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run concierge");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn users_from_the_command_line() {
    let dir = initialised();
    let d = dir.path();
    let (ok, out, err) = concierge_with_stdin(
        d,
        &[
            "user",
            "add",
            "alice",
            "--email",
            "alice@example.com",
            "--name",
            "Alice",
            "--password-stdin",
        ],
        "correct horse battery\n",
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("added user alice"), "{out}");
    let (ok, _, err) = concierge_with_stdin(d, &["user", "add", "alice"], "another password\n");
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = concierge_with_stdin(d, &["user", "add", "bob"], "short\n");
    assert!(!ok && err.contains("at least 8"), "{err}");
    let (ok, out, _) = concierge(d, &["user", "list"]);
    assert!(
        ok && out.contains("alice") && out.contains("alice@example.com") && !out.contains("argon2"),
        "{out}"
    );
    let (ok, out, err) = concierge_with_stdin(
        d,
        &["user", "set-password", "alice"],
        "a new long password\n",
    );
    assert!(ok && out.contains("sessions ended"), "{out}{err}");
    let (ok, _, err) = concierge_with_stdin(
        d,
        &["user", "set-password", "nobody"],
        "a new long password\n",
    );
    assert!(!ok && err.contains("no user"), "{err}");

    // Issue 18.8 / 15.2: mark the address verified, link an IdP's user, list, unlink.
    let (ok, out, err) = concierge(d, &["user", "update", "alice", "--email-verified", "true"]);
    assert!(
        ok && out.contains("alice@example.com (verified)"),
        "{out}{err}"
    );
    let (ok, out, err) = concierge(d, &["user", "update", "alice", "--email", "a@new.example"]);
    assert!(
        ok && out.contains("a@new.example (unverified)"),
        "{out}{err}"
    );
    let (ok, _, err) = concierge(d, &["user", "update", "alice", "--email", "not-an-address"]);
    assert!(!ok && err.contains("email"), "{err}");
    let link = [
        "user",
        "link",
        "alice",
        "--issuer",
        "https://idp.example",
        "--subject",
        "u-1",
    ];
    let (ok, out, err) = concierge(d, &link);
    assert!(
        ok && out.contains("u-1 at https://idp.example is now alice"),
        "{out}{err}"
    );
    let (ok, out, _) = concierge(d, &["user", "identities", "alice"]);
    assert!(
        ok && out.contains("https://idp.example  u-1  linked by operator"),
        "{out}"
    );
    let mut unlink = link;
    unlink[1] = "unlink";
    let (ok, out, err) = concierge(d, &unlink);
    assert!(ok && out.contains("no longer linked"), "{out}{err}");
    let (ok, _, err) = concierge(d, &unlink);
    assert!(!ok && err.contains("no linked identity"), "{err}");
    let (ok, out, _) = concierge(d, &["user", "identities", "alice"]);
    assert!(ok && out.contains("no linked identities"), "{out}");
    let (ok, out, err) = concierge(d, &["user", "disable", "alice"]);
    assert!(ok && out.contains("disabled alice"), "{out}{err}");
    let (ok, out, _) = concierge(d, &["user", "list"]);
    assert!(ok && out.contains("(disabled)"), "{out}");
    let (ok, out, err) = concierge(d, &["user", "enable", "alice"]);
    assert!(ok && out.contains("enabled alice"), "{out}{err}");
    let (ok, out, _) = concierge(d, &["user", "list"]);
    assert!(ok && !out.contains("(disabled)"), "{out}");
    let (ok, _, _) = concierge(d, &["user", "remove", "alice"]);
    assert!(ok);
    let (ok, out, _) = concierge(d, &["user", "list"]);
    assert!(ok && out.contains("no users"), "{out}");
}

#[test]
fn keys_from_the_command_line() {
    let dir = initialised();
    let d = dir.path();
    let (ok, out, _) = concierge(d, &["keys", "list"]);
    assert!(ok && out.contains("no keys yet"), "{out}");
    // With no key yet, the first keys sign at once.
    let (ok, out, err) = concierge(d, &["keys", "rotate"]);
    assert!(ok, "{out}{err}");
    assert_eq!(out.matches(": signs now").count(), 2, "{out}");
    // Then a rotation is published first and signs later.
    let (ok, out, err) = concierge(d, &["keys", "rotate", "--alg", "ES256"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.starts_with("new ES256 key ") && out.contains("published now, signs from"),
        "{out}"
    );
    let pending = out
        .strip_prefix("new ES256 key ")
        .and_then(|l| l.split(':').next())
        .unwrap()
        .to_string();
    let (ok, _, err) = concierge(d, &["keys", "rotate", "--alg", "ES256"]);
    assert!(!ok && err.contains("already pending"), "{err}");
    let (ok, out, _) = concierge(d, &["keys", "list"]);
    assert!(ok, "{out}");
    let line = |kid: &str| {
        out.lines()
            .find(|l| l.starts_with(kid))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line(&pending).contains("ES256")
            && line(&pending).contains("pending: published, signs from"),
        "{out}"
    );
    let active = out
        .lines()
        .find(|l| l.contains("ES256") && l.contains("active since"))
        .and_then(|l| l.split_whitespace().next())
        .expect("an active ES256 key")
        .to_string();
    assert!(
        out.lines()
            .any(|l| l.contains("RS256") && l.contains("active since")),
        "{out}"
    );

    // Revoking the active key replaces it at once, and says it is an emergency path.
    let (ok, out, err) = concierge(d, &["keys", "revoke", &active]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!(
            "revoked ES256 key {active}: withdrawn from the JWKS"
        )),
        "{out}"
    );
    assert!(
        out.contains("it was the active ES256 key: the new key") && out.contains("emergency"),
        "{out}"
    );
    let (ok, out, _) = concierge(d, &["keys", "revoke", &pending]);
    assert!(ok && !out.contains("the new key"), "{out}");
    let (ok, _, err) = concierge(d, &["keys", "revoke", &active]);
    assert!(!ok && err.contains("already revoked"), "{err}");
    let (ok, _, err) = concierge(d, &["keys", "revoke", "nope"]);
    assert!(!ok && err.contains("no signing key nope"), "{err}");
    let (ok, out, _) = concierge(d, &["keys", "list"]);
    assert!(ok, "{out}");
    assert!(line_of(&out, &active).contains("revoked at"), "{out}");
    assert!(line_of(&out, &pending).contains("revoked at"), "{out}");
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("ES256") && l.contains("active since"))
            .count(),
        1,
        "{out}"
    );

    // An emergency rotation signs at once and says what that means.
    let (ok, out, err) = concierge(d, &["keys", "rotate", "--alg", "ES256", "--now"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("signs now") && out.contains("emergency rotation"),
        "{out}"
    );
    let (ok, _, err) = concierge(d, &["keys", "rotate", "--alg", "HS256"]);
    assert!(!ok && err.contains("ES256 or RS256"), "{err}");
}

fn line_of(out: &str, kid: &str) -> String {
    out.lines()
        .find(|l| l.starts_with(kid))
        .unwrap_or_default()
        .to_string()
}

/// A keys command that fails leaves no key-encryption-key file behind: one generated for a
/// database whose keys it cannot open would be wrong, and the next zero-config start would
/// pick it up.
#[test]
fn a_failed_keys_command_leaves_no_key_encryption_key_file() {
    let dir = initialised();
    let d = dir.path();
    let kek_file = d.join("concierge-data/key-encryption-key");
    let kek = concierge::util::b64(&[3u8; 32]);
    let with_kek = [("CONCIERGE_KEY_ENCRYPTION_KEY", kek.as_str())];
    let (ok, _, err) = concierge_env(d, &["keys", "rotate"], &with_kek);
    assert!(ok, "{err}");
    assert!(!kek_file.exists(), "a configured KEK is never written");
    let (_, listed, _) = concierge_env(d, &["keys", "list"], &with_kek);
    let kid = listed.split_whitespace().next().unwrap().to_string();
    // Forgetting the KEK: every keys command fails, and no KEK file appears.
    for args in [
        &["keys", "rotate"][..],
        &["keys", "rotate", "--now"],
        &["keys", "revoke", &kid],
        &["keys", "rekey"],
    ] {
        let (ok, _, err) = concierge(d, args);
        assert!(!ok, "{args:?} must fail without the KEK");
        assert!(
            err.contains("key-encryption key") || err.contains("neither"),
            "{err}"
        );
        assert!(!kek_file.exists(), "{args:?} left a key file behind");
    }
    // The right KEK still works.
    let (ok, _, err) = concierge_env(d, &["keys", "rotate", "--now"], &with_kek);
    assert!(ok, "{err}");
}

/// `concierge serve` with no configuration at all starts, answers, and stops on SIGTERM.
#[test]
fn serve_with_zero_configuration_and_stop_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_concierge"))
        .current_dir(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("Concierge listening on ")
        .expect(&first)
        .to_string();
    let issuer = lines.next().unwrap().unwrap();
    assert_eq!(issuer.trim(), "issuer:   http://localhost:8080");
    let metadata = lines.next().unwrap().unwrap();
    assert!(
        metadata.contains("http://localhost:8080/.well-known/oauth-authorization-server"),
        "{metadata}"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let body: serde_json::Value = rt.block_on(async {
        reqwest::get(format!("{addr}/.well-known/oauth-authorization-server"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(body["issuer"], "http://localhost:8080");
    assert!(
        dir.path()
            .join("concierge-data/key-encryption-key")
            .exists()
    );

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut waited = Duration::ZERO;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(waited < Duration::from_secs(10), "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
        waited += Duration::from_millis(50);
    };
    assert!(status.success(), "graceful exit: {status:?}");
}

/// The hidden `--secret-from-env` (benchmarks, development): the given secret, hashed.
#[tokio::test]
async fn client_secret_from_the_environment() {
    let dir = initialised();
    let d = dir.path();
    let secret = "bench-secret-0123456789abcdef0123456789abcdef";
    let run = |var: &str, value: &str, method: &str| {
        Command::new(env!("CARGO_BIN_EXE_concierge"))
            .current_dir(d)
            .args([
                "client",
                "add",
                "--name",
                "Bench",
                "--id",
                "bench",
                "--grant-type",
                "client_credentials",
                "--auth-method",
                method,
                "--secret-from-env",
                "BENCH_SECRET",
            ])
            .env_remove("CONCIERGE_DATABASE_URL")
            .env(var, value)
            .output()
            .expect("run concierge")
    };
    let out = run("BENCH_SECRET", "too-short", "client_secret_post");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("32 characters"));
    let out = run("OTHER", secret, "client_secret_post");
    assert!(!out.status.success(), "the variable must be set");
    let out = run("BENCH_SECRET", secret, "client_secret_post");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains(secret), "never printed: {stdout}");
    let url = format!(
        "sqlite://{}",
        d.join("concierge-data/concierge.db").display()
    );
    let store = concierge::store::connect(&url).await.unwrap();
    let c = store.get_client("bench", 0).await.unwrap().unwrap();
    assert!(concierge::util::verify_secret(
        secret,
        c.secret_hash.as_deref().unwrap()
    ));
}

/// Rotating the key-encryption key: the new one with the old one as "previous", `keys rekey`,
/// then the old one is no longer needed (deploy/README.md).
#[test]
fn key_encryption_key_rotation() {
    let dir = initialised();
    let d = dir.path();
    let old = concierge::util::b64(&[1u8; 32]);
    let new = concierge::util::b64(&[2u8; 32]);
    let previous = format!("[\"{old}\"]");
    let with_old = [("CONCIERGE_KEY_ENCRYPTION_KEY", old.as_str())];
    let with_new = [("CONCIERGE_KEY_ENCRYPTION_KEY", new.as_str())];
    let rotating = [
        ("CONCIERGE_KEY_ENCRYPTION_KEY", new.as_str()),
        ("CONCIERGE_PREVIOUS_KEY_ENCRYPTION_KEYS", previous.as_str()),
    ];
    let (ok, _, err) = concierge_env(d, &["keys", "rotate"], &with_old);
    assert!(ok, "{err}");
    let (_, listed, _) = concierge_env(d, &["keys", "list"], &with_old);
    let kids: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(!kids.is_empty());
    // A user's authenticator secret, sealed under the old key as the account page seals it.
    let url = format!(
        "sqlite://{}",
        d.join("concierge-data/concierge.db").display()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let user_id = rt.block_on(async {
        let store = concierge::store::connect(&url).await.unwrap();
        let user = concierge::manage::create_user(
            store.as_ref(),
            "tess",
            Default::default(),
            concierge::manage::hash_new_password("a long enough password").unwrap(),
        )
        .await
        .unwrap();
        let kid = concierge::oauth::authn::totp_kid(&user.id);
        let sealed = concierge::keys::Kek::from_base64(&old)
            .unwrap()
            .seal(&kid, b"totp secret")
            .unwrap();
        assert!(store.put_pending_totp(&user.id, &sealed, 1).await.unwrap());
        user.id
    });

    // An upstream provider's client secret, sealed under the old key by `idp add`.
    let with_old_and_secret = [
        ("CONCIERGE_KEY_ENCRYPTION_KEY", old.as_str()),
        ("CORP_SECRET", "upstream client secret"),
    ];
    let add = [
        "idp",
        "add",
        "--id",
        "corp",
        "--name",
        "Corp",
        "--issuer",
        "https://idp.corp.example",
        "--client-id",
        "concierge",
        "--client-secret-env",
        "CORP_SECRET",
    ];
    let (ok, out, err) = concierge_env(d, &add, &with_old_and_secret);
    assert!(
        ok && out.contains("/signin/upstream/corp/callback"),
        "{out}{err}"
    );
    assert!(!out.contains("upstream client secret") && !err.contains("upstream client secret"));
    let (ok, out, err) = concierge_env(d, &["--output", "json", "idp", "list"], &with_old);
    assert!(ok, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["id"], "corp");
    assert_eq!(
        listed[0]["client_secret"], true,
        "said to be set, never shown"
    );
    assert!(!out.contains("upstream client secret"));

    // The new key alone cannot open what the old one sealed, and says so.
    let (ok, _, err) = concierge_env(d, &["keys", "rekey"], &with_new);
    assert!(!ok && err.contains("neither"), "{err}");
    let (ok, out, err) = concierge_env(d, &["keys", "rekey"], &rotating);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!(
            "{} signing key(s), 1 authenticator secret(s) and 1 provider secret(s) re-encrypted",
            kids.len()
        )),
        "{out}"
    );
    let (ok, out, _) = concierge_env(d, &["keys", "rekey"], &rotating);
    assert!(
        ok && out.starts_with("0 signing key(s), 0 authenticator secret(s) and 0 provider"),
        "{out}"
    );
    // The authenticator secret now opens with the new key alone.
    rt.block_on(async {
        let store = concierge::store::connect(&url).await.unwrap();
        let f = store.get_totp(&user_id).await.unwrap().unwrap();
        let kid = concierge::oauth::authn::totp_kid(&user_id);
        let plain = concierge::keys::Kek::from_base64(&new)
            .unwrap()
            .open(&kid, &f.secret_sealed)
            .unwrap();
        assert_eq!(plain.as_slice(), b"totp secret");
        let u = store.get_upstream("corp").await.unwrap().unwrap();
        let plain = concierge::keys::Kek::from_base64(&new)
            .unwrap()
            .open(
                &concierge::oauth::authn::upstream::secret_kid("corp"),
                u.secret_sealed.as_deref().unwrap(),
            )
            .unwrap();
        assert_eq!(plain.as_slice(), b"upstream client secret");
    });

    // Now the new key alone works, and the old one no longer does.
    let (ok, _, err) = concierge_env(d, &["keys", "rotate", "--alg", "ES256"], &with_new);
    assert!(ok, "{err}");
    let (ok, _, err) = concierge_env(d, &["keys", "rotate", "--alg", "ES256"], &with_old);
    assert!(
        !ok,
        "the old key-encryption key must no longer open the keys: {err}"
    );
    let (_, listed, _) = concierge_env(d, &["keys", "list"], &with_new);
    for kid in kids {
        assert!(
            listed.contains(kid),
            "{kid} kept through the rekey: {listed}"
        );
    }
}

#[test]
fn admin_client_bootstrap() {
    let dir = initialised();
    let d = dir.path();
    let (ok, out, err) = concierge(d, &["admin-client", "create", "--name", "ops"]);
    assert!(ok, "{out}{err}");
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("added admin client "))
        .expect("client id printed");
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .expect("secret printed once");
    assert_eq!(secret.len(), 43);
    // The admin resource was created with the admin scope, and the client may ask for it.
    let (ok, out, _) = concierge(d, &["resource", "list"]);
    assert!(
        ok && out.contains("http://localhost:8080/admin/v1") && out.contains("admin"),
        "{out}"
    );
    let (ok, out, _) = concierge(d, &["client", "list"]);
    assert!(ok && out.contains(id) && out.contains("static"), "{out}");
    // A second admin client is fine (the resource exists already).
    let (ok, _, err) = concierge(d, &["admin-client", "create"]);
    assert!(ok, "{err}");
    // Listed and revoked (issue 15.2); a client that is not an admin client is not revoked
    // here.
    let (ok, out, _) = concierge(d, &["admin-client", "list"]);
    assert!(ok && out.contains(id) && out.contains("ops"), "{out}");
    assert_eq!(out.lines().count(), 2, "{out}");
    let (ok, out, err) = concierge(d, &["admin-client", "revoke", id]);
    assert!(ok && out.contains("revoked"), "{out}{err}");
    let (ok, out, _) = concierge(d, &["admin-client", "list"]);
    assert!(ok && !out.contains(id) && out.lines().count() == 1, "{out}");
    let (ok, _, err) = concierge(d, &["admin-client", "revoke", id]);
    assert!(!ok && err.contains("no client"), "{err}");
}

#[test]
fn id_jag_policies_from_the_command_line() {
    let dir = initialised();
    let d = dir.path();
    let (ok, out, _) = concierge(d, &["id-jag", "list"]);
    assert!(ok && out.contains("denied"), "{out}");
    let allow = |scope: &str| {
        concierge(
            d,
            &[
                "id-jag",
                "allow",
                "--client",
                "agent",
                "--audience",
                "https://as.example",
                "--resource",
                "https://mcp.example.com/mcp",
                "--target-client-id",
                "agent-there",
                "--scope",
                scope,
            ],
        )
    };
    let (ok, out, err) = allow("notes:read");
    assert!(ok && out.contains("agent-there"), "{out}{err}");
    let (ok, _, err) = allow("bad\"scope");
    assert!(!ok && err.contains("scope"), "{err}");
    let (ok, out, _) = concierge(d, &["id-jag", "list"]);
    assert!(
        ok && out.contains("agent  -> https://mcp.example.com/mcp at https://as.example")
            && out.contains("notes:read  (database)"),
        "{out}"
    );
    let deny = || {
        concierge(
            d,
            &[
                "id-jag",
                "deny",
                "--client",
                "agent",
                "--audience",
                "https://as.example",
                "--resource",
                "https://mcp.example.com/mcp",
            ],
        )
    };
    let (ok, out, err) = deny();
    assert!(ok && out.contains("removed"), "{out}{err}");
    let (ok, _, err) = deny();
    assert!(!ok && err.contains("no such"), "{err}");

    // Trusted IdPs (issue 18.8): added, listed, refused without keys, removed.
    let trust = ["id-jag", "trust", "--issuer", "https://idp.example"];
    let (ok, _, err) = concierge(d, &trust);
    assert!(!ok && err.contains("jwks"), "keys are required: {err}");
    let with_keys = [&trust[..], &["--jwks-uri", "https://idp.example/jwks"]].concat();
    let (ok, out, err) = concierge(d, &with_keys);
    assert!(ok && out.contains("redeemed here"), "{out}{err}");
    let (ok, out, _) = concierge(d, &["id-jag", "list"]);
    assert!(
        ok && out.contains(
            "trusted IdP https://idp.example  keys: https://idp.example/jwks  accounts: \
             provisioned  (database)"
        ),
        "{out}"
    );
    let strict = [&with_keys[..], &["--link-by-email", "--no-provision"]].concat();
    let (ok, _, err) = concierge(d, &strict);
    assert!(ok, "{err}");
    let (ok, out, _) = concierge(d, &["id-jag", "list"]);
    assert!(
        ok && out.contains("accounts: linked by email, else refused"),
        "{out}"
    );
    let distrust = ["id-jag", "distrust", "--issuer", "https://idp.example"];
    let (ok, out, err) = concierge(d, &distrust);
    assert!(ok && out.contains("no longer"), "{out}{err}");
    let (ok, _, err) = concierge(d, &distrust);
    assert!(!ok && err.contains("no trusted IdP"), "{err}");
}

/// Changes made with the CLI are in the audit log like the admin API's, without the global
/// options (a database URL may hold a password) and without the password read from stdin.
#[tokio::test]
async fn cli_changes_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = format!("sqlite://{}/audited.db", d.display());
    let (ok, _, err) = concierge_with_stdin(
        d,
        &["--init", "--database-url", &db, "user", "add", "carol"],
        "a password never to be logged\n",
    );
    assert!(ok, "{err}");
    let (ok, _, err) = concierge(
        d,
        &[
            &format!("--database-url={db}"),
            "resource",
            "add",
            "--uri",
            "https://mcp.example.com/mcp",
            "--name",
            "Notes",
        ],
    );
    assert!(ok, "{err}");
    let (ok, _, _) = concierge(d, &["--database-url", &db, "resource", "list"]);
    assert!(ok);
    let store = concierge::store::connect(&db).await.unwrap();
    let events = store
        .list_audit(&concierge::store::AuditQuery {
            kind: Some("admin.change".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let commands: Vec<&str> = events
        .iter()
        .map(|e| e.detail["command"].as_str().unwrap())
        .collect();
    assert_eq!(
        commands,
        [
            "resource add --uri https://mcp.example.com/mcp --name Notes",
            "user add carol"
        ],
        "listing changes nothing, so it is not recorded"
    );
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains("sqlite://") && !text.contains("never to be logged"));
}

/// The admin API's resource derives from the issuer: a server registers its own at start-up,
/// and an admin client made for another issuer is refused with the server's issuer named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_client_follows_the_servers_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let issuer = "http://127.0.0.1:8081";
    // The server starts (as `serve --issuer …` would) on this data directory.
    let config = concierge::Config {
        issuer: issuer.into(),
        data_dir: d.join("concierge-data"),
        ..concierge::Config::default()
    };
    let app = concierge::App::build(config).await.unwrap();
    drop(app);
    let (ok, out, _) = concierge(d, &["resource", "list"]);
    assert!(
        ok && out.contains("http://127.0.0.1:8081/admin/v1"),
        "{out}"
    );
    // The CLI with its default issuer would make an admin client the server refuses.
    let (ok, out, err) = concierge(d, &["admin-client", "create"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("--issuer http://127.0.0.1:8081"),
        "names the server's issuer: {err}"
    );
    let (ok, out, _) = concierge(d, &["resource", "list"]);
    assert!(
        ok && !out.contains("http://localhost:8080/admin/v1"),
        "no stray admin resource: {out}"
    );
    // With the server's issuer it works.
    let (ok, out, err) = concierge(d, &["--issuer", issuer, "admin-client", "create"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("resource=http://127.0.0.1:8081/admin/v1"),
        "{out}"
    );
}

/// Issue 15.1: operator commands never create a database (a mistyped path or another
/// working directory is an error, not a new empty database) and never change its schema;
/// `concierge migrate` does, and `--check` says where it stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_never_creates_or_upgrades_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ok, out, err) = concierge(d, &["user", "list"]);
    assert!(!ok && out.is_empty(), "{out}");
    assert!(err.contains("no database at"), "{err}");
    assert!(!d.join("concierge-data").exists(), "nothing created");
    let (ok, _, err) = concierge(d, &["migrate", "--check"]);
    assert!(!ok && err.contains("no database at"), "{err}");

    // The previous release's schema (all migrations but the last), as a server of that
    // release left it.
    let db = d.join("concierge-data/concierge.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let migrator = sqlx::migrate::Migrator::new(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/migrations/sqlite"
    )))
    .await
    .unwrap();
    let last = migrator.iter().map(|m| m.version).max().unwrap();
    let last_name = migrator
        .iter()
        .find(|m| m.version == last)
        .map(|m| format!("{last:04}_{}", m.description.replace(' ', "_")))
        .unwrap();
    migrator.run_to(last - 1, &pool).await.unwrap();
    pool.close().await;

    let (ok, _, err) = concierge(d, &["user", "list"]);
    assert!(!ok, "a newer CLI does not use an older schema");
    assert!(
        err.contains("older than this concierge") && err.contains(&last_name),
        "{err}"
    );
    let (ok, out, _) = concierge(d, &["migrate", "--check"]);
    assert!(
        !ok && out.contains("1 pending") && out.contains(&last_name),
        "{out}"
    );
    let (ok, out, err) = concierge(d, &["migrate"]);
    assert!(
        ok && out.contains(&format!("applied {last_name}")),
        "{out}{err}"
    );
    let (ok, out, _) = concierge(d, &["migrate", "--check"]);
    assert!(ok && out.contains("0 pending"), "{out}");
    // A database the CLI creates is its owner's only (issue 15.8).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let fresh = tempfile::tempdir().unwrap();
        let (ok, _, err) = concierge(fresh.path(), &["migrate"]);
        assert!(ok, "{err}");
        let db = fresh.path().join("concierge-data/concierge.db");
        let mode = std::fs::metadata(&db).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{db:?}");
    }
    let (ok, out, _) = concierge(d, &["migrate"]);
    assert!(ok && out.contains("up to date"), "{out}");

    // Every command says which database and issuer it used.
    let (ok, out, err) = concierge(d, &["--issuer", "https://auth.example", "user", "list"]);
    assert!(ok && out.contains("no users"), "{out}{err}");
    assert!(
        err.contains("database sqlite://") && err.contains("issuer https://auth.example"),
        "{err}"
    );
}

/// Issue 15.4: `concierge config check` validates without starting or opening anything, and
/// says what it would warn about.
#[test]
fn config_check_validates_without_starting() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("concierge.toml"), "listen = \"127.0.0.1:8092\"\n").unwrap();
    let (ok, out, err) = concierge(d, &["config", "check"]);
    assert!(
        ok && out.contains("the configuration is valid"),
        "{out}{err}"
    );
    assert!(
        out.contains("warning:") && out.contains("http://localhost:8092"),
        "{out}"
    );
    assert!(!d.join("concierge-data").exists(), "nothing created");
    std::fs::write(
        d.join("concierge.toml"),
        "[tokens]\naccess_token_ttl_secs = 0\n",
    )
    .unwrap();
    let (ok, _, err) = concierge(d, &["config", "check"]);
    assert!(
        !ok && err.contains("invalid") && err.contains("access_token_ttl_secs"),
        "{err}"
    );
    std::fs::write(d.join("concierge.toml"), "[tokens]\nno_such_setting = 1\n").unwrap();
    let (ok, _, err) = concierge(d, &["config", "check"]);
    assert!(!ok && err.contains("no_such_setting"), "{err}");
}

/// Issue 15.2: every listing also comes as JSON, in the admin API's shapes.
#[test]
fn listings_in_json() {
    let dir = initialised();
    let d = dir.path();
    let json = |args: &[&str]| -> serde_json::Value {
        let args = [&["--output", "json"], args].concat();
        let (ok, out, err) = concierge(d, &args);
        assert!(ok, "{args:?}: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    };
    assert_eq!(json(&["user", "list"]), serde_json::json!([]));
    let (ok, _, err) = concierge_with_stdin(
        d,
        &[
            "user",
            "add",
            "alice",
            "--email",
            "alice@example.com",
            "--email-verified",
        ],
        "correct horse battery\n",
    );
    assert!(ok, "{err}");
    let users = json(&["user", "list"]);
    assert_eq!(users[0]["username"], "alice");
    assert_eq!(users[0]["email_verified"], true);
    assert!(users[0].get("password_hash").is_none());
    assert_eq!(
        json(&["user", "identities", "alice"]),
        serde_json::json!([])
    );
    let (ok, _, err) = concierge(
        d,
        &[
            "resource",
            "add",
            "--uri",
            "https://mcp.example.com/mcp",
            "--name",
            "Notes",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(
        json(&["resource", "list"])[0]["uri"],
        "https://mcp.example.com/mcp"
    );
    // Edited (issue 15.2): new scopes replace the old ones.
    let (ok, out, err) = concierge(
        d,
        &[
            "resource",
            "update",
            "https://mcp.example.com/mcp",
            "--scope",
            "notes:read=Read your notes",
        ],
    );
    assert!(ok && out.contains("scopes notes:read"), "{out}{err}");
    assert_eq!(
        json(&["resource", "list"])[0]["scopes"][0]["name"],
        "notes:read"
    );
    let (ok, _, err) = concierge(d, &["admin-client", "create"]);
    assert!(ok, "{err}");
    let admins = json(&["admin-client", "list"]);
    assert_eq!(admins[0]["admin"], true);
    assert!(admins[0].get("client_secret").is_none());
    assert_eq!(json(&["client", "list"]).as_array().unwrap().len(), 1);
    assert_eq!(json(&["keys", "list"]), serde_json::json!([]));
    let id_jag = json(&["id-jag", "list"]);
    assert_eq!(id_jag["policies"], serde_json::json!([]));
}

/// Generated client ids and key ids are base64url: one in 64 starts with `-`, which an
/// argument parser takes for an option. Such an id is still an id.
#[test]
fn ids_that_start_with_a_hyphen_are_ids_not_options() {
    let dir = initialised();
    let d = dir.path();
    let (ok, out, err) = concierge(
        d,
        &[
            "client",
            "add",
            "--name",
            "Hyphen",
            "--id=-_job",
            "--grant-type",
            "client_credentials",
            "--auth-method",
            "client_secret_post",
        ],
    );
    assert!(ok, "{out}{err}");
    for args in [
        &["client", "show", "-_job"][..],
        &["client", "rotate-secret", "-_job"],
        &["client", "update", "-_job", "--name", "Hyphen two"],
        &["client", "remove", "-_job"],
    ] {
        let (ok, out, err) = concierge(d, args);
        assert!(ok, "{args:?}: {out}{err}");
    }
    let (ok, _, err) = concierge(d, &["admin-client", "revoke", "-_nobody"]);
    assert!(!ok && !err.contains("unexpected argument"), "{err}");
    let (ok, _, err) = concierge(d, &["keys", "revoke", "-_nokey"]);
    assert!(!ok && !err.contains("unexpected argument"), "{err}");
}
