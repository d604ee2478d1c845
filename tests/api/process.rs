//! Real `concierge serve` processes, for what one process cannot show: replicas sharing one
//! PostgreSQL, and the OpenTelemetry export (the tracing subscriber is process-wide).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use concierge::store::Store;

use crate::helpers::Server;

/// A port that was free a moment ago (the server binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Base64url of 32 random bytes: a key-encryption key replicas can share.
pub fn shared_kek() -> String {
    concierge::util::b64(&concierge::util::random_bytes::<32>())
}

/// One `concierge serve` process. Killed when dropped; [`Replica::stop`] stops it gracefully.
pub struct Replica {
    pub origin: String,
    pub issuer: String,
    http: reqwest::Client,
    store: Arc<dyn Store>,
    child: Child,
    /// Its stderr, for the failure messages of the tests.
    pub log: PathBuf,
}

impl Replica {
    /// Start a server on a free port in `dir`, its issuer `issuer(port)`, with `env` added
    /// (`CONCIERGE_*` settings, `OTEL_*`). `database_url` is also opened here so tests can seed
    /// and inspect what the replica sees.
    ///
    /// A port found free can be taken by another test before the server binds it; that start
    /// is retried on another port.
    pub async fn start(
        dir: &Path,
        issuer: impl Fn(u16) -> String,
        database_url: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let bin = Path::new(env!("CARGO_BIN_EXE_concierge"));
            match Self::try_start(bin, dir, port, &issuer(port), database_url, env).await {
                Ok(replica) => return replica,
                Err(log) if log.contains("Address already in use") => last = log,
                Err(log) => panic!("the server did not start; log: {log}"),
            }
        }
        panic!("no free port after 5 tries; last log: {last}")
    }

    /// Start `bin serve` (this build's, or another release's) on `port`: `Err` with its log
    /// when it does not come up. The database is opened here without migrating, so a test
    /// never changes the schema behind the server it started.
    pub async fn try_start(
        bin: &Path,
        dir: &Path,
        port: u16,
        issuer: &str,
        database_url: &str,
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let log = dir.join(format!("replica-{port}.log"));
        let mut cmd = Command::new(bin);
        cmd.current_dir(dir)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("CONCIERGE_ISSUER", issuer)
            .env("CONCIERGE_DATABASE_URL", database_url)
            .env("CONCIERGE_DATA_DIR", dir)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start concierge serve");
        let stdout = child.stdout.take().unwrap();
        // Read the first line, then keep draining stdout so the server never writes to a
        // closed pipe.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(Result::ok).unwrap_or_default());
            for _ in lines {}
        });
        // Listening: the banner on stdout, or (with `log_format = "json"`) as a log line.
        let mut rx = rx;
        let started = tokio::time::Instant::now();
        let failed = |child: &mut Child, why: String| {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "{why}; {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ))
        };
        loop {
            match rx.try_recv() {
                Ok(first) if first.starts_with("Concierge listening on") => break,
                Ok(first) if !first.is_empty() => {
                    return failed(&mut child, format!("first line {first:?}"));
                }
                _ => {}
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("\"Concierge listening\"") {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return failed(&mut child, format!("exited with {status}"));
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the server should start within a minute; log: {text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (store, _) = concierge::store::open(database_url, concierge::store::Open::Existing)
            .await
            .unwrap();
        Ok(Self {
            origin: format!("http://127.0.0.1:{port}"),
            issuer: issuer.to_string(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            store,
            child,
            log,
        })
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit status {status:?}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the server did not stop within 10 s of SIGTERM");
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Server for Replica {
    fn origin(&self) -> &str {
        &self.origin
    }
    /// Endpoints at this replica (the issuer may name another: replicas share one issuer).
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }
    fn http(&self) -> &reqwest::Client {
        &self.http
    }
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }
}
