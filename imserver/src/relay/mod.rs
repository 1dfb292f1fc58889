//! The TCP relay: accepts connections, binds them to users, stores every message and
//! delivers it live or on reconnect.
//!
//! - `listener`: the accept loop.
//! - `session`: one connection, from its first frame to its close.
//! - `router`: user id → live connections, and delivery into their send queues.

mod listener;
mod router;
mod session;

use std::sync::Arc;

pub use listener::serve;
pub use router::Router;

use crate::store::Store;

/// What every session shares.
pub struct Relay {
    pub store: Arc<dyn Store>,
    pub router: Arc<Router>,
    pub limits: Limits,
}

/// The relay's per-connection limits (see `Config` for what each is for).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub send_queue: usize,
    pub replay_batch: usize,
}
