//! Who is online: user id → that user's live connections.
//!
//! Sharded by user id, so a delivery locks one shard for a moment and never a global table.
//! A delivery never waits: it `try_send`s into each connection's bounded queue, and a
//! connection whose queue is full (`--send-queue` frames, or `--send-queue-bytes` of
//! payloads) is told to close (its messages are in the store already, so it loses nothing
//! and catches up when it reconnects).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flume::TrySendError;
use tokio_util::sync::CancellationToken;

const SHARDS: usize = 64;

/// Something for a connection to write.
#[derive(Debug)]
pub enum Outbound {
    /// A stored message: its `seq` in the receiver's inbox and its payload as sent.
    Deliver { seq: u64, payload: Bytes },
    /// v2: a message this connection sent is stored (`id` is its client id, if it had one).
    Ack { id: Option<String>, seq: u64 },
    /// v2: the answer to a `Ping`, once the frames before it have taken effect.
    Pong,
}

/// A live connection, as the router sees it.
#[derive(Clone)]
pub struct ConnHandle {
    /// Unique per connection, so closing one connection removes only that one.
    pub id: u64,
    pub queue: flume::Sender<Outbound>,
    /// Payload bytes of the `Deliver`s in `queue`: added here, subtracted by the session as
    /// it takes them out.
    pub queued_bytes: Arc<AtomicUsize>,
    /// Cancelled to make the connection close itself (its queue overflowed).
    pub evict: CancellationToken,
}

/// One slice of the table: the users whose id hashes here.
type Shard = Mutex<HashMap<String, Vec<ConnHandle>>>;

pub struct Router {
    hasher: std::collections::hash_map::RandomState,
    shards: Box<[Shard]>,
    /// `--send-queue-bytes`.
    max_queued_bytes: usize,
}

impl Router {
    pub fn new(max_queued_bytes: usize) -> Self {
        Router {
            hasher: Default::default(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            max_queued_bytes,
        }
    }

    fn shard(&self, user: &str) -> std::sync::MutexGuard<'_, HashMap<String, Vec<ConnHandle>>> {
        let i = self.hasher.hash_one(user) as usize % SHARDS;
        // A panic while holding a shard lock cannot leave the map inconsistent (every
        // operation is a single insert or retain), so a poisoned lock is still usable.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a connection of `user`, unless the user already has `max` of them; false then.
    pub fn subscribe(&self, user: &str, conn: ConnHandle, max: usize) -> bool {
        let mut shard = self.shard(user);
        let conns = shard.entry(user.to_owned()).or_default();
        if conns.len() >= max {
            return false;
        }
        conns.push(conn);
        true
    }

    /// Removes connection `id` of `user` (and nothing else: the user's other connections,
    /// say a newer one that reconnected, stay).
    pub fn unsubscribe(&self, user: &str, id: u64) {
        let mut shard = self.shard(user);
        if let Some(conns) = shard.get_mut(user) {
            conns.retain(|c| c.id != id);
            if conns.is_empty() {
                shard.remove(user);
            }
        }
    }

    /// Queues a stored message on every connection of `user`; returns how many took it.
    pub fn deliver(&self, user: &str, seq: u64, payload: &Bytes) -> usize {
        let mut shard = self.shard(user);
        let Some(conns) = shard.get_mut(user) else {
            return 0;
        };
        let mut delivered = 0;
        let len = payload.len();
        conns.retain(|c| {
            let queued = c.queued_bytes.fetch_add(len, Ordering::Relaxed);
            let item = Outbound::Deliver {
                seq,
                payload: payload.clone(),
            };
            let sent = if queued > 0 && queued + len > self.max_queued_bytes {
                Err(TrySendError::Full(item))
            } else {
                c.queue.try_send(item)
            };
            match sent {
                Ok(()) => {
                    delivered += 1;
                    true
                }
                Err(TrySendError::Full(_)) => {
                    tracing::warn!(
                        user,
                        conn = c.id,
                        "send queue full; disconnecting slow reader"
                    );
                    c.evict.cancel();
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
        if conns.is_empty() {
            shard.remove(user);
        }
        delivered
    }
}
