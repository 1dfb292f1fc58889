//! Admission, shared by every transport: the server-wide connection limit, the line of
//! connections over it that wait to be refused, and connection ids; and the TCP accept loop,
//! plain or TLS. (WebSocket connections arrive through the HTTP server's `/ws`: see
//! `http/ws.rs`.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::transport::{TcpTransport, Transport};
use super::{Relay, session};
use crate::delivery::ConnId;
use crate::metrics;
use crate::net::{self, IpSlot, Net};

/// The connection slots of every transport together.
pub struct Gate {
    /// `--max-connections`: a permit is a connection slot.
    open: Arc<Semaphore>,
    /// `--refusal-backlog`: the connections over the limit that wait for their `Regist` to be
    /// told `too_many_connections` (a v1 client cannot be told, so the answer waits for the
    /// version).
    refusals: Arc<Semaphore>,
    ids: AtomicU64,
}

/// A connection let in: its id and its place (within the limit, or waiting to be refused).
pub struct Admitted {
    pub(super) id: ConnId,
    pub(super) slot: session::Slot,
    /// Its place under `--max-connections-per-ip`, held for its life.
    pub(super) ip: IpSlot,
}

impl Gate {
    pub fn new(max_connections: usize, refusal_backlog: usize) -> Self {
        Gate {
            open: Arc::new(Semaphore::new(max_connections)),
            refusals: Arc::new(Semaphore::new(refusal_backlog)),
            ids: AtomicU64::new(1),
        }
    }

    /// A place for a new connection, which already has its place among its address's
    /// connections; `None` when even the line of refusals is full, and the connection is to
    /// be closed at once.
    pub fn admit(&self, ip: IpSlot) -> Option<Admitted> {
        let slot = match self.open.clone().try_acquire_owned() {
            Ok(_permit) => session::Slot::Open { _permit },
            Err(_) => match self.refusals.clone().try_acquire_owned() {
                Ok(_permit) => session::Slot::Refused { _permit },
                Err(_) => return None,
            },
        };
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        Some(Admitted { id, slot, ip })
    }
}

impl Relay {
    /// Serves one admitted connection until it closes or the server shuts down. A plain
    /// function returning the session itself: a wrapper future would keep copies of its
    /// arguments in every idle connection's task.
    pub fn serve<T: Transport>(
        self: Arc<Self>,
        admitted: Admitted,
        transport: T,
        peer: SocketAddr,
    ) -> impl Future<Output = ()> + Send + 'static {
        session::run(self, transport, peer, admitted)
    }

    /// Runs `connection` (a [`serve`](Self::serve), after whatever makes its transport) in
    /// a task of its own, which shutdown waits for.
    pub fn spawn(&self, connection: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(connection);
    }
}

/// Accepts TCP connections, plain or TLS, until the server shuts down.
pub async fn serve(listener: TcpListener, relay: Arc<Relay>, net: Net) {
    loop {
        let accepted = tokio::select! {
            _ = relay.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(ip) = net.admit(peer, "relay") else {
                    continue;
                };
                let Some(admitted) = relay.gate.admit(ip) else {
                    tracing::warn!(%peer, "connection limit reached; closed at once");
                    metrics::refused("relay", "max_connections");
                    continue;
                };
                // Chat frames are small and latency matters more than packet count.
                let _ = stream.set_nodelay(true);
                let max = relay.limits.max_frame_bytes;
                let Some(tls) = &net.tls else {
                    let transport = TcpTransport::new(stream, max);
                    relay.spawn(relay.clone().serve(admitted, transport, peer));
                    continue;
                };
                // The handshake has the `Regist` deadline, and the relay's shutdown ends it.
                let (acceptor, relay2) = (tls.relay().clone(), relay.clone());
                relay.spawn(async move {
                    let deadline = relay2.limits.regist_deadline;
                    let shutdown = &relay2.shutdown;
                    let tls = net::handshake(&acceptor, stream, peer, "relay", deadline, shutdown);
                    if let Some(stream) = tls.await {
                        let transport = TcpTransport::new(stream, max);
                        relay2.serve(admitted, transport, peer).await;
                    }
                });
            }
            Err(e) => {
                // Usually out of file descriptors. Back off instead of spinning; connections
                // that close meanwhile free descriptors up.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
