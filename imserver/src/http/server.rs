//! The HTTP listener: accepts connections, plain or TLS, and serves the routes on each with
//! hyper (HTTP/1.1, upgrades for `/ws`), within the connection limits.
//!
//! warp's own server bounds nothing: a connection that never finishes its request head
//! holds a file descriptor for ever, and every such connection dropped logs an `ERROR`.
//! Here:
//! - `--max-http-connections` bounds the connections open at once, and
//!   `--max-connections-per-ip` those of one client address (shared with the relay);
//! - a connection must finish each request head within `--http-header-timeout` of its
//!   first byte (or of connecting), and the TLS handshake within it too;
//! - an idle keep-alive connection is closed after `--http-keepalive-timeout`;
//! - what clients cause (resets, bad requests, timeouts) is logged at `debug` only.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;
use warp::http::Request;

use crate::config::HttpConfig;
use crate::metrics;
use crate::net::{self, IpSlot, Net, Stream};

/// The connection a request came on, in each request's extensions.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// Its place under `--max-connections-per-ip`: a WebSocket upgraded from it keeps a copy.
    pub ip: IpSlot,
}

/// The HTTP connection limits; see `HttpConfig`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    /// `None`: no keep-alive; each connection serves one request.
    pub keepalive_timeout: Option<Duration>,
    pub max_connections: usize,
}

impl Limits {
    pub fn new(c: &HttpConfig) -> Self {
        Limits {
            header_timeout: c.http_header_timeout,
            keepalive_timeout: (!c.http_keepalive_timeout.is_zero())
                .then_some(c.http_keepalive_timeout),
            max_connections: c.max_http_connections,
        }
    }
}

/// What a listener serves: warp's routes as a service (`warp::service`).
pub trait Routes:
    Service<Request<Incoming>, Response = warp::reply::Response, Error = Infallible, Future: Send>
    + Clone
    + Send
    + 'static
{
}

impl<S> Routes for S where
    S: Service<
            Request<Incoming>,
            Response = warp::reply::Response,
            Error = Infallible,
            Future: Send,
        > + Clone
        + Send
        + 'static
{
}

/// Serves `routes` on connections accepted from `listener` until `shutdown`.
pub async fn serve<S: Routes>(
    listener: TcpListener,
    routes: S,
    net: Net,
    limits: Limits,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually out of file descriptors: back off rather than spin.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Over a limit, the connection is closed at once: the client learns now, rather
        // than after a connect timeout.
        let Some(ip) = net.admit(peer, "http") else {
            continue;
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "--max-http-connections reached; closed");
            metrics::refused("http", "max_http_connections");
            continue;
        };
        let info = ConnInfo { peer, ip };
        let (tls, routes, shutdown) = (net.tls.clone(), routes.clone(), shutdown.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let stream: Stream = match tls {
                None => Either::Left(tcp),
                Some(tls) => {
                    let deadline = limits.header_timeout;
                    let tls = net::handshake(tls.http(), tcp, peer, "http", deadline, &shutdown);
                    match tls.await {
                        Some(stream) => Either::Right(stream),
                        None => return,
                    }
                }
            };
            connection(stream, info, routes, limits, shutdown).await;
        });
    }
}

/// Serves one connection until it closes, times out, or the server shuts down.
async fn connection<S: Routes>(
    stream: Stream,
    info: ConnInfo,
    routes: S,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let peer = info.peer;
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(info.clone());
            activity.request_started();
            let route = metrics::route(req.uri().path());
            let started = Instant::now();
            let answer = routes.clone().call(req);
            let activity = activity.clone();
            async move {
                let response = answer.await;
                activity.request_done();
                if let Ok(r) = &response {
                    metrics::http_request(route, r.status().as_u16(), started.elapsed());
                }
                response
            }
        })
    };
    let mut builder = http1::Builder::new();
    // Timeouts are ours (below): hyper's header timer would also need a timer of its own.
    builder
        .header_read_timeout(None)
        .keep_alive(limits.keepalive_timeout.is_some());
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let sleep = tokio::time::sleep_until(activity.deadline(&limits));
    tokio::pin!(sleep);
    let mut closing = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                    let kind = if e.is_timeout() { "timeout" } else { "protocol" };
                    metrics::client_error("http", kind);
                }
                return;
            }
            _ = shutdown.cancelled(), if !closing => {
                // Requests under way are answered; idle connections close now.
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = activity.changed.notified() => {
                // A head begun, or an answer given: the wait is another one now.
                sleep.as_mut().reset(activity.deadline(&limits));
            }
            () = &mut sleep => {
                let deadline = activity.deadline(&limits);
                if deadline <= Instant::now() {
                    tracing::debug!(%peer, "HTTP connection timed out (request head or keep-alive)");
                    return metrics::client_error("http", "timeout");
                }
                sleep.as_mut().reset(deadline);
            }
        }
    }
}

/// What a connection is doing, told by its reads and its requests, for its timeouts.
struct Activity {
    start: Instant,
    /// Requests being answered.
    in_flight: AtomicU32,
    /// Milliseconds from `start` to the first byte of the request head being read, plus one;
    /// 0 when no head is being read.
    head_since: AtomicU64,
    /// Milliseconds from `start` to the last answer.
    idle_since: AtomicU64,
    /// Whether a request has been answered: before one, the wait for the first head has the
    /// header timeout, after, the keep-alive one.
    answered: AtomicU32,
    /// Told when a head begins and when an answer is given (not on every read).
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            in_flight: AtomicU32::new(0),
            head_since: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            answered: AtomicU32::new(0),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn read_some(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == 0
        {
            self.head_since.store(self.now() + 1, Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
    }

    fn request_done(&self) {
        self.idle_since.store(self.now(), Ordering::Relaxed);
        self.answered.store(1, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// When the connection is to be closed if nothing changes by then.
    fn deadline(&self, limits: &Limits) -> Instant {
        let at = |ms: u64, after: Duration| self.start + Duration::from_millis(ms) + after;
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            // Being answered: look again later.
            return Instant::now() + limits.header_timeout;
        }
        match self.head_since.load(Ordering::Relaxed) {
            0 => {
                let idle = self.idle_since.load(Ordering::Relaxed);
                let wait = match (
                    self.answered.load(Ordering::Relaxed),
                    limits.keepalive_timeout,
                ) {
                    (0, _) | (_, None) => limits.header_timeout,
                    (_, Some(keepalive)) => keepalive,
                };
                at(idle, wait)
            }
            since => at(since - 1, limits.header_timeout),
        }
    }
}

/// A connection's byte stream, telling its [`Activity`] when bytes arrive.
struct Watched {
    inner: Stream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read_some();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
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
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
