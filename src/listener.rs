//! The HTTP listener: accepts connections and serves the router on them, cutting off clients
//! that would hold the server's resources without using them.
//!
//! - At most `http.max_connections` connections at once; one more is closed on arrival.
//! - A request's headers must arrive within `http.header_read_timeout_secs`, counted from
//!   the connection's start or from the first byte of the request, so a client trickling
//!   headers byte by byte is disconnected. (HTTP/1.1 only: an HTTP/2 connection's frames
//!   are not a request's head.) Timed here rather than by hyper's header timer alone: that
//!   one also runs while a kept-alive connection waits for its next request, which would
//!   close idle connections after this bound instead of `http.idle_timeout_secs`.
//! - A request's body must arrive within `http.body_timeout_secs` (see `crate::router`).
//! - A connection with no request in flight and no bytes moving for
//!   `http.idle_timeout_secs` is closed (kept-alive HTTP/1.1 and idle HTTP/2 alike).
//! - On shutdown: no new connections, in-flight requests finish (up to
//!   `http.shutdown_grace_secs`), idle connections close.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use crate::config::HttpConfig;

/// Serve `router` on `listener` until `shutdown` resolves, then let in-flight requests
/// finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let max = limits.max_connections.max(1) as usize;
    let permits = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    let timeouts = Timeouts {
        idle: Duration::from_secs(u64::from(limits.idle_timeout_secs.max(1))),
        head: Duration::from_secs(u64::from(limits.header_read_timeout_secs.max(1))),
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's header timer is off: it would run from the end of one response to the end of
    // the next head, idle wait included. `Activity::expired` times heads and idleness.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(
                limit = max,
                "connection limit reached; a new connection is closed"
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (builder, router, stop) = (builder.clone(), router.clone(), stop_rx.clone());
        tokio::spawn(async move {
            connection(&builder, stream, peer, router, timeouts, stop).await;
            drop(permit);
        });
    }
    // Stop accepting; tell every connection to finish what it is doing, then wait for them.
    drop(listener);
    let _ = stop_tx.send(true);
    let grace = Duration::from_secs(u64::from(limits.shutdown_grace_secs));
    if tokio::time::timeout(grace, permits.acquire_many(max as u32))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period");
    }
    Ok(())
}

/// How long a connection may wait.
#[derive(Clone, Copy)]
struct Timeouts {
    /// With no request in flight and no byte moving.
    idle: Duration,
    /// For a request's head, once it is awaited (HTTP/1.1).
    head: Duration,
}

/// Serve one connection until it ends, goes idle, is too slow with a request's head, or the
/// server stops.
async fn connection(
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
        preface: ([0; 4], 0),
    });
    let in_flight = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        let busy = InFlight::start(in_flight.clone());
        async move {
            let res = router.oneshot(req).await;
            drop(busy);
            res
        }
    });
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            expired = activity.expired(timeouts, closing) => match expired {
                Expired::Idle => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                // A head that is late has no request to finish: drop the connection.
                Expired::Head => {
                    tracing::debug!("a request's head did not arrive in time; connection closed");
                    return;
                }
            },
        }
    }
}

/// No head awaited: `Activity::head_since` between requests, and on HTTP/2.
const NO_HEAD: i64 = -1;

/// When bytes last moved on a connection, how many requests it is serving, and since when
/// a request's head has been awaited.
struct Activity {
    started: Instant,
    /// Milliseconds after `started`.
    last: AtomicI64,
    requests: AtomicUsize,
    /// Milliseconds after `started` at which the head now awaited began: the connection's
    /// start for its first request, else the first byte read after a response. `NO_HEAD`
    /// while none is awaited.
    head_since: AtomicI64,
    /// An HTTP/2 connection: its frames are no request's head.
    h2: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last: AtomicI64::new(0),
            requests: AtomicUsize::new(0),
            head_since: AtomicI64::new(0),
            h2: AtomicBool::new(false),
        }
    }

    fn elapsed_ms(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    fn touch(&self) {
        self.last.store(self.elapsed_ms(), Ordering::Relaxed);
    }

    /// Bytes arrived: with no request in flight they begin the next request's head.
    fn read(&self) {
        let now = self.elapsed_ms();
        self.last.store(now, Ordering::Relaxed);
        if self.requests.load(Ordering::Relaxed) == 0 && !self.h2.load(Ordering::Relaxed) {
            let _ = self.head_since.compare_exchange(
                NO_HEAD,
                now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// The connection speaks HTTP/2 (its preface arrived): no head timer.
    fn http2(&self) {
        self.h2.store(true, Ordering::Relaxed);
        self.head_since.store(NO_HEAD, Ordering::Relaxed);
    }

    /// Resolves once the connection has been idle for `t.idle` (no request in flight, no
    /// byte moving; not looked for while `closing`), or a request's head has been awaited
    /// for `t.head`. One timer per connection: it sleeps until the nearer deadline, and at
    /// most `t.head` (a head may begin meanwhile), so a late head is seen within twice that.
    async fn expired(&self, t: Timeouts, closing: bool) -> Expired {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let (idle, head) = (ms(t.idle), ms(t.head));
        loop {
            let now = self.elapsed_ms();
            let mut wait = head;
            if self.requests.load(Ordering::Relaxed) == 0 {
                let since = self.head_since.load(Ordering::Relaxed);
                if since != NO_HEAD {
                    let due = since.saturating_add(head);
                    if now >= due {
                        return Expired::Head;
                    }
                    wait = wait.min(due - now);
                }
                if !closing {
                    let due = self.last.load(Ordering::Relaxed).saturating_add(idle);
                    if now >= due {
                        return Expired::Idle;
                    }
                    wait = wait.min(due - now);
                }
            }
            tokio::time::sleep(Duration::from_millis(wait.max(50) as u64)).await;
        }
    }
}

/// What a connection waited too long for.
enum Expired {
    /// Its next request, doing nothing else.
    Idle,
    /// The rest of a request's head.
    Head,
}

/// One request in flight on a connection, counted until it is answered or dropped (an
/// HTTP/2 stream reset drops the request's future: the count must not leak, or the
/// connection would never count as idle).
struct InFlight(Arc<Activity>);

impl InFlight {
    /// A request's head has arrived: it is no longer awaited.
    fn start(activity: Arc<Activity>) -> Self {
        activity.requests.fetch_add(1, Ordering::Relaxed);
        activity.head_since.store(NO_HEAD, Ordering::Relaxed);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A stream that notes when bytes move, and whether it opens with HTTP/2's preface.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
    /// The first bytes read and their count, until there are enough to tell HTTP/2's
    /// preface.
    preface: ([u8; 4], usize),
}

/// How an HTTP/2 connection begins (RFC 9113 §3.4); no HTTP/1.1 method starts so.
const H2_PREFACE_START: &[u8; 4] = b"PRI ";

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let this = &mut *self;
            let (start, seen) = &mut this.preface;
            if *seen < H2_PREFACE_START.len() {
                let new = &buf.filled()[before..];
                let take = new.len().min(H2_PREFACE_START.len() - *seen);
                start[*seen..*seen + take].copy_from_slice(&new[..take]);
                *seen += take;
                if start[..] == *H2_PREFACE_START {
                    this.activity.http2();
                }
            }
            this.activity.read();
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
