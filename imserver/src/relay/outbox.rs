//! A connection's send queue: what others hand a connection to write, bounded in frames
//! (`--send-queue`) and in payload bytes (`--send-queue-bytes`).
//!
//! Nothing ever waits on a full queue: a connection whose queue is full is told to close
//! instead (its stream entries are stored already, so it loses nothing and catches up when
//! it reconnects).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use flume::TrySendError;
use improto::ErrorCode;
use tokio_util::sync::CancellationToken;

use crate::delivery::{ConnId, EntryKind};

/// Something for a connection to write.
#[derive(Debug)]
pub enum Outbound {
    /// A committed stream entry: its `seq` in the user's stream and its payload.
    Deliver {
        seq: u64,
        payload: Bytes,
        kind: EntryKind,
    },
    /// v2: a message this connection sent is stored, its copy at `seq` of the sender's
    /// stream (`id` is its client id, if it had one).
    Ack { id: Option<String>, seq: u64 },
    /// v2: a message this connection sent was refused by the store.
    Refused { code: ErrorCode, id: Option<String> },
    /// v2: the answer to a `Ping`, once the frames before it have taken effect.
    Pong,
}

/// The sending end of a connection's queue, as the router and the store's hooks hold it,
/// shared behind an `Arc`: a hook per message takes one, and a clone of the eviction token
/// inside would take that token's lock twice per message.
pub struct Outbox {
    /// Unique per connection, so closing one connection removes only that one.
    pub id: ConnId,
    queue: flume::Sender<Outbound>,
    /// Payload bytes of the `Deliver`s in `queue`: added here, subtracted by the session as
    /// it takes them out.
    queued_bytes: Arc<AtomicUsize>,
    /// Cancelled to make the connection close itself (its queue overflowed).
    evict: CancellationToken,
}

/// The receiving end, the session's.
pub struct Inbox {
    pub queue: flume::Receiver<Outbound>,
    queued_bytes: Arc<AtomicUsize>,
}

/// A queue of at most `frames` items for connection `id`, which `evict` closes.
pub fn channel(id: ConnId, frames: usize, evict: CancellationToken) -> (Arc<Outbox>, Inbox) {
    let (tx, rx) = flume::bounded(frames);
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let outbox = Arc::new(Outbox {
        id,
        queue: tx,
        queued_bytes: queued_bytes.clone(),
        evict,
    });
    (
        outbox,
        Inbox {
            queue: rx,
            queued_bytes,
        },
    )
}

impl Outbox {
    /// Queues a stream entry, unless the queue is past `max_bytes` of payloads (a frame
    /// always fits in an empty queue) or full of frames; then the connection is told to
    /// close. False when the connection is gone, or told to close.
    pub fn deliver(&self, seq: u64, payload: &Bytes, kind: EntryKind, max_bytes: usize) -> bool {
        let len = payload.len();
        let queued = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        let item = Outbound::Deliver {
            seq,
            payload: payload.clone(),
            kind,
        };
        if queued > 0 && queued + len > max_bytes {
            self.overflowed();
            return false;
        }
        self.push(item)
    }

    /// Queues a reply; a full queue closes the connection. False when the connection is
    /// gone, or told to close.
    pub fn push(&self, item: Outbound) -> bool {
        match self.queue.try_send(item) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.overflowed();
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Closes the connection from outside: its queue overflowed, or the store failed.
    pub fn evict(&self) {
        self.evict.cancel();
    }

    fn overflowed(&self) {
        tracing::warn!(conn = self.id, "send queue full; disconnecting slow reader");
        self.evict();
    }
}

impl Inbox {
    /// Counts a `Deliver` taken out of the queue.
    pub fn taken(&self, payload: &Bytes) {
        self.queued_bytes
            .fetch_sub(payload.len(), Ordering::Relaxed);
    }
}
