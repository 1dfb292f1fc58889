//! The relay: accepts connections, binds them to users, stores every message and delivers
//! every stream entry live or on reconnect, for version 1 (Go-server) and version 2 clients
//! alike, over any transport.
//!
//! - `listener`: the TCP accept loop and the server-wide connection limit.
//! - `transport/`: frame I/O behind a trait (`tcp.rs` today).
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
pub use listener::serve;
pub use presence::Presence;
pub use router::LocalRouter;

use crate::config::{AuthMode, RelayConfig, RelayPolicy};
use crate::store::Store;

/// What every session shares.
pub struct Relay {
    pub store: Arc<dyn Store>,
    pub router: Arc<LocalRouter>,
    pub presence: Arc<Presence>,
    pub auth: AuthMode,
    /// `--relay-policy friends`.
    pub friends_only: bool,
    pub limits: Limits,
}

impl Relay {
    pub fn new(
        store: Arc<dyn Store>,
        router: Arc<LocalRouter>,
        presence: Arc<Presence>,
        auth: AuthMode,
        c: &RelayConfig,
    ) -> Self {
        Relay {
            store,
            router,
            presence,
            auth,
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
    pub max_connections: usize,
    pub refusal_backlog: usize,
    pub max_connections_per_user: usize,
    pub regist_deadline: Duration,
    /// `None` when off.
    pub idle_timeout: Option<Duration>,
    /// `--typing-limit`, per connection.
    pub typing: Quota,
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
            max_connections: c.max_connections,
            refusal_backlog: c.refusal_backlog,
            max_connections_per_user: c.max_connections_per_user,
            regist_deadline: c.regist_deadline,
            idle_timeout: (!c.idle_timeout.is_zero()).then_some(c.idle_timeout),
            typing: Quota::per_second(c.typing_limit).allow_burst(c.typing_limit),
        }
    }
}
