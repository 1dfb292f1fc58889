//! The relay: accepts connections, binds them to users, stores every message and delivers
//! every stream entry live or on reconnect, for version 1 (Go-server) and version 2 clients
//! alike, over any transport.
//!
//! - `listener`: admission (the connection slots every transport shares) and the TCP accept
//!   loop.
//! - `transport/`: frame I/O behind a trait: `tcp.rs`, `ws.rs` (WebSocket, upgraded by the
//!   HTTP server's `/ws`).
//! - `session/`: one connection, from its first frame to its close (`dialect.rs`: what the
//!   protocol version decides).
//! - `outbox`: a connection's bounded send queue.
//! - `router`: user id → live connections; the [`Delivery`](crate::delivery::Delivery) of
//!   committed stream entries on this node.
//! - `presence`: telling friends who came online or went offline, coalesced.

mod listener;
mod outbox;
mod presence;
mod router;
mod session;
mod transport;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::Quota;
pub use listener::{Admitted, Gate, serve};
pub use presence::Presence;
pub use router::LocalRouter;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
pub use transport::WsTransport;

use crate::config::{AuthMode, Config, RelayConfig, RelayPolicy};
use crate::delivery::Delivery;
use crate::metrics::RelayMetrics;
use crate::store::Store;

/// What every session shares.
pub struct Relay {
    pub store: Arc<dyn Store>,
    /// This node's connections.
    pub router: Arc<LocalRouter>,
    /// What reaches every node's connections: the router itself, or the bus (`--bus`).
    pub delivery: Arc<dyn Delivery>,
    pub presence: Arc<Presence>,
    pub auth: AuthMode,
    /// `--relay-policy friends`.
    pub friends_only: bool,
    pub limits: Limits,
    /// Connection slots, shared by TCP and WebSocket.
    pub gate: Gate,
    pub metrics: RelayMetrics,
    /// Every connection's task, so that shutdown can wait for them.
    tasks: TaskTracker,
    /// The server's shutdown: every connection watches it.
    shutdown: CancellationToken,
}

impl Relay {
    pub fn new(
        store: Arc<dyn Store>,
        router: Arc<LocalRouter>,
        delivery: Arc<dyn Delivery>,
        presence: Arc<Presence>,
        config: &Config,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let c = &config.relay;
        Relay {
            gate: Gate::new(c.max_connections, c.refusal_backlog),
            metrics: RelayMetrics::new(),
            tasks,
            shutdown,
            store,
            router,
            delivery,
            presence,
            auth: config.auth.auth,
            friends_only: c.relay_policy == RelayPolicy::Friends,
            limits: Limits::new(c),
        }
    }
}

/// The relay's limits (see `RelayConfig` for what each is for).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub send_queue: usize,
    pub send_queue_bytes: usize,
    pub replay_batch: usize,
    /// `--rate-limit` and `--rate-burst`; `None` when off.
    pub rate: Option<Quota>,
    pub max_connections_per_user: usize,
    pub regist_deadline: Duration,
    /// `None` when off.
    pub idle_timeout: Option<Duration>,
    /// `--typing-limit`, per connection.
    pub typing: Quota,
    /// `--ws-ping-interval`; `None` when off.
    pub ws_ping: Option<Duration>,
}

impl Limits {
    pub fn new(c: &RelayConfig) -> Self {
        let rate = NonZeroU32::new(c.rate_limit).map(|per_second| {
            let burst = NonZeroU32::new(c.rate_burst).unwrap_or(per_second);
            Quota::per_second(per_second).allow_burst(burst)
        });
        Limits {
            max_frame_bytes: c.max_frame_bytes,
            send_queue: c.send_queue,
            send_queue_bytes: c.send_queue_bytes,
            replay_batch: c.replay_batch,
            rate,
            max_connections_per_user: c.max_connections_per_user,
            regist_deadline: c.regist_deadline,
            idle_timeout: (!c.idle_timeout.is_zero()).then_some(c.idle_timeout),
            typing: Quota::per_second(c.typing_limit).allow_burst(c.typing_limit),
            ws_ping: (!c.ws_ping_interval.is_zero()).then_some(c.ws_ping_interval),
        }
    }
}
