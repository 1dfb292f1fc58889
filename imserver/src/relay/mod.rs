//! The TCP relay: accepts connections, binds them to users, stores every message and
//! delivers it live or on reconnect, for version 1 (Go-server) and version 2 clients alike.
//!
//! - `listener`: the accept loop and the server-wide connection limit.
//! - `session`: one connection, from its first frame to its close.
//! - `reader`: frames in from a connection, with a read buffer sized by its traffic.
//! - `router`: user id → live connections, and delivery into their send queues.

mod listener;
mod reader;
mod router;
mod session;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::Quota;
pub use listener::serve;
pub use router::Router;

use crate::Config;
use crate::config::AuthMode;
use crate::store::Store;

/// What every session shares.
pub struct Relay {
    pub store: Arc<dyn Store>,
    pub router: Arc<Router>,
    pub auth: AuthMode,
    pub limits: Limits,
}

/// The relay's limits (see `Config` for what each is for).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub send_queue: usize,
    pub replay_batch: usize,
    /// `--rate-limit` and `--rate-burst`; `None` when off.
    pub rate: Option<Quota>,
    pub max_connections: usize,
    pub refusal_backlog: usize,
    pub max_connections_per_user: usize,
    pub regist_deadline: Duration,
    /// `None` when off.
    pub idle_timeout: Option<Duration>,
}

impl Limits {
    pub fn new(c: &Config) -> Self {
        let rate = NonZeroU32::new(c.rate_limit).map(|per_second| {
            let burst = NonZeroU32::new(c.rate_burst).unwrap_or(per_second);
            Quota::per_second(per_second).allow_burst(burst)
        });
        Limits {
            max_frame_bytes: c.max_frame_bytes,
            send_queue: c.send_queue.max(1),
            replay_batch: c.replay_batch.max(1),
            rate,
            max_connections: c.max_connections,
            refusal_backlog: c.refusal_backlog,
            max_connections_per_user: c.max_connections_per_user.max(1),
            regist_deadline: Duration::from_secs(c.regist_deadline),
            idle_timeout: (c.idle_timeout > 0).then(|| Duration::from_secs(c.idle_timeout)),
        }
    }
}
