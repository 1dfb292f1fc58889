//! A connection's send queue: what others hand a connection to write, bounded in frames
//! (`--send-queue`) and in payload bytes (`--send-queue-bytes`).
//!
//! Nothing ever waits on a full queue: a connection whose queue is full is told to close
//! instead (its stream entries are stored already, so it loses nothing and catches up when
//! it reconnects). Entries come in batches (those one store request appended to the user's
//! stream), shared by every connection of the user; the limits count their frames.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use flume::TrySendError;
use tokio_util::sync::CancellationToken;

use crate::delivery::{ConnId, Entries};
use crate::store::{Appended, Outcome, Replies, StoreError};

/// Something for a connection to write.
#[derive(Debug)]
pub enum Outbound {
    /// Committed entries of the user's stream, in `seq` order.
    Entries(Entries),
    /// What became of messages this connection sent, in the order it sent them: v2 answers
    /// each with an `Ack` (stored, its copy at `seq` of the sender's stream) or an `Error`.
    Replies(Vec<Outcome>),
    /// A frame that is not a stream entry (`Typing`, `Presence`), for v2 only.
    Live(Bytes),
    /// v2: the answer to a `Ping`, once the frames before it have taken effect.
    Pong,
    /// Read the stream from the store after what this connection was given: the bus
    /// between nodes may have lost entries of it.
    Resync,
    /// v2: messages this connection sent could not be stored now, by client id: each is
    /// refused as `unavailable`, to be sent again.
    Unstored(Vec<Option<String>>),
}

/// How much may wait in one queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// `--send-queue`: stream entries (and other packets).
    pub frames: usize,
    /// `--send-queue-bytes`: payload bytes of the stream entries.
    pub bytes: usize,
}

/// The sending end of a connection's queue, as the router and the store hold it.
pub struct Outbox {
    /// Unique per connection, so closing one connection removes only that one.
    pub id: ConnId,
    queue: flume::Sender<Outbound>,
    limits: QueueLimits,
    /// What waits in `queue`: added here, subtracted by the session as it takes it out.
    queued: Arc<Queued>,
    /// Cancelled to make the connection close itself (its queue overflowed).
    evict: CancellationToken,
}

#[derive(Default)]
struct Queued {
    frames: AtomicUsize,
    bytes: AtomicUsize,
}

/// The receiving end, the session's.
pub struct Inbox {
    pub queue: flume::Receiver<Outbound>,
    queued: Arc<Queued>,
}

/// A queue for connection `id`, which `evict` closes.
pub fn channel(id: ConnId, limits: QueueLimits, evict: CancellationToken) -> (Arc<Outbox>, Inbox) {
    // Every item is at least one frame.
    let (tx, rx) = flume::bounded(limits.frames);
    let queued = Arc::new(Queued::default());
    let outbox = Arc::new(Outbox {
        id,
        queue: tx,
        limits,
        queued: queued.clone(),
        evict,
    });
    (outbox, Inbox { queue: rx, queued })
}

impl Outbox {
    /// Queues stream entries (whose payloads are `bytes` long in all), unless that takes
    /// the queue past its limits (they always fit in an empty queue); then the connection is
    /// told to close. False when the connection is gone, or told to close.
    pub fn deliver(&self, entries: &Entries, bytes: usize) -> bool {
        let frames = entries.len();
        let queued_frames = self.queued.frames.fetch_add(frames, Ordering::Relaxed);
        let queued_bytes = self.queued.bytes.fetch_add(bytes, Ordering::Relaxed);
        let over = |queued: usize, adding: usize, max: usize| queued > 0 && queued + adding > max;
        if over(queued_frames, frames, self.limits.frames)
            || over(queued_bytes, bytes, self.limits.bytes)
        {
            self.overflowed();
            return false;
        }
        self.push(Outbound::Entries(entries.clone()))
    }

    /// Queues a live frame, unless the queue is full: it is not worth a disconnection.
    pub fn live(&self, payload: &Bytes) {
        let _ = self.queue.try_send(Outbound::Live(payload.clone()));
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
        if !self.evict.is_cancelled() {
            tracing::warn!(conn = self.id, "send queue full; disconnecting slow reader");
            crate::metrics::evicted();
        }
        self.evict();
    }
}

/// The store answers a connection's messages through its queue.
impl Replies for Outbox {
    fn replied(&self, outcomes: Vec<Outcome>) {
        // A full queue closes the connection: like any slow reader, the sender reconnects
        // later and, sending its messages again, gets these answers.
        self.push(Outbound::Replies(outcomes));
    }

    fn failed(&self, error: StoreError, unstored: Vec<Option<String>>) {
        // The database is away: each message is refused as `unavailable`, to be sent again.
        // When they are not known, or the server is closing, closing the connection tells
        // the sender instead (it sends them again when it reconnects).
        if unstored.is_empty() || matches!(error, StoreError::Closed) {
            tracing::error!(conn = self.id, %error, "messages could not be stored; closing their sender");
            self.evict();
            return;
        }
        tracing::warn!(conn = self.id, %error, messages = unstored.len(), "messages could not be stored; refused as unavailable");
        self.push(Outbound::Unstored(unstored));
    }
}

/// How a connection that is told nothing of its messages (v1) hears of them: a refusal is
/// logged, and a failure closes it, as for any connection.
pub struct Untold(pub Arc<Outbox>);

impl Replies for Untold {
    fn replied(&self, outcomes: Vec<Outcome>) {
        let refused = outcomes
            .iter()
            .filter(|o| o.appended == Appended::NotFriends)
            .count();
        if refused > 0 {
            tracing::info!(
                conn = self.0.id,
                refused,
                "messages to non-friends dropped (v1)"
            );
        }
    }

    fn failed(&self, error: StoreError, _unstored: Vec<Option<String>>) {
        // Version 1 cannot be told: closing the connection is all it understands.
        tracing::error!(conn = self.0.id, %error, "messages could not be stored; closing their sender");
        self.0.evict();
    }
}

impl Inbox {
    /// Counts an item taken out of the queue.
    pub fn taken(&self, item: &Outbound) {
        if let Outbound::Entries(entries) = item {
            let bytes = entries.iter().map(|e| e.payload.len()).sum();
            self.queued
                .frames
                .fetch_sub(entries.len(), Ordering::Relaxed);
            self.queued.bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
    }
}
