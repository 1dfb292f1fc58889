//! One relay connection: `Regist`, `Message`, replay of stored messages, and writing.
//!
//! A single task per connection selects between the socket (frames in) and the connection's
//! bounded send queue (frames out), so a connection's frames take effect in the order it sent
//! them. Every socket write also watches the evict and shutdown signals: a peer that stops
//! reading cannot pin its task.
//!
//! Delivery without gaps or duplicates rests on one number, `last_sent`, the highest `seq`
//! written to this connection. `Regist` subscribes to the router *first* and then replays the
//! store from the acknowledged position; any live frame whose `seq` was already replayed is
//! skipped. A message is either queued live after the subscription or committed before the
//! replay reads, so none falls between the two.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use improto::{Envelope, FrameCodec, PacketKind, ProtoError};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Relay;
use super::router::{ConnHandle, Outbound};
use crate::store::{NewMessage, StoreError};

/// Initial read buffer. Small, because most connections are idle most of the time; it grows
/// as larger frames arrive.
const READ_BUFFER: usize = 512;

/// Stop gathering queued frames into one write past this many bytes.
const COALESCE_BYTES: usize = 64 * 1024;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("closed by peer")]
    PeerClosed,
    #[error("server shutting down")]
    Shutdown,
    #[error("send queue full (slow reader)")]
    Evicted,
    #[error("protocol error: {0}")]
    Protocol(ProtoError),
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("store unavailable: {0}")]
    Store(#[from] StoreError),
}

struct Session {
    relay: Arc<Relay>,
    id: u64,
    /// The user this connection speaks for, once it has sent `Regist`.
    user: Option<String>,
    /// The highest `seq` written to this connection (see the module docs).
    last_sent: u64,
    /// Our end of the send queue, handed to the router on `Regist`.
    queue: mpsc::Sender<Outbound>,
    /// Cancelled by the router when the send queue overflows.
    evict: CancellationToken,
    shutdown: CancellationToken,
    writer: OwnedWriteHalf,
    /// Frames gathered for the next write.
    out: BytesMut,
}

/// Serves one accepted connection until it closes.
pub(super) async fn run(
    relay: Arc<Relay>,
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    shutdown: CancellationToken,
) {
    let (read, writer) = stream.into_split();
    let codec = FrameCodec::with_max_frame_length(relay.limits.max_frame_bytes);
    let mut frames = FramedRead::with_capacity(read, codec, READ_BUFFER);
    let (queue, mut rx) = mpsc::channel(relay.limits.send_queue.max(1));
    let mut s = Session {
        relay,
        id,
        user: None,
        last_sent: 0,
        queue,
        evict: CancellationToken::new(),
        shutdown,
        writer,
        out: BytesMut::new(),
    };
    info!(conn = id, %peer, "connected");

    let stop = loop {
        let step = tokio::select! {
            biased;
            _ = s.shutdown.cancelled() => Err(Stop::Shutdown),
            _ = s.evict.cancelled() => Err(Stop::Evicted),
            Some(item) = rx.recv() => s.send_queued(item, &mut rx).await,
            frame = frames.next() => match frame {
                None => Err(Stop::PeerClosed),
                // The frame codec fails only on stream errors: oversized or truncated.
                Some(Err(e)) => Err(Stop::Protocol(e)),
                Some(Ok(payload)) => s.handle(payload).await,
            },
        };
        if let Err(stop) = step {
            break stop;
        }
    };

    if let Some(user) = &s.user {
        s.relay.router.unsubscribe(user, id);
    }
    match &stop {
        Stop::PeerClosed | Stop::Shutdown => {
            info!(conn = id, user = s.user, "disconnected: {stop}")
        }
        _ => warn!(conn = id, user = s.user, "disconnected: {stop}"),
    }
}

impl Session {
    async fn handle(&mut self, payload: Bytes) -> Result<(), Stop> {
        let env = match Envelope::peek(&payload) {
            Ok(env) => env,
            Err(e) => {
                info!(conn = self.id, "dropped a bad packet: {}", describe(&e));
                return Ok(());
            }
        };
        match env.kind() {
            PacketKind::Regist => {
                self.regist(env.sender().unwrap_or_default().to_owned())
                    .await
            }
            PacketKind::Message => {
                let receiver = env.receiver().unwrap_or_default().to_owned();
                let sender = env.sender().unwrap_or_default().to_owned();
                self.message(sender, receiver, payload).await
            }
            other => {
                info!(
                    conn = self.id,
                    ?other,
                    "dropped a packet this server does not handle"
                );
                Ok(())
            }
        }
    }

    async fn regist(&mut self, user: String) -> Result<(), Stop> {
        if let Some(current) = &self.user {
            if *current != user {
                warn!(
                    conn = self.id,
                    user = current,
                    claimed = user,
                    "second Regist with another id ignored"
                );
            }
            return Ok(());
        }
        // Subscribe before reading the store: see the module docs.
        self.relay.router.subscribe(
            &user,
            ConnHandle {
                id: self.id,
                queue: self.queue.clone(),
                evict: self.evict.clone(),
            },
        );
        info!(conn = self.id, user, "registered");
        self.user = Some(user);
        self.replay().await
    }

    /// Writes every stored message after the acknowledged position, in order.
    async fn replay(&mut self) -> Result<(), Stop> {
        let user = self.user.clone().expect("registered");
        let store = self.relay.store.clone();
        self.last_sent = store.inbox(&user).await?.acked;
        let limit = self.relay.limits.replay_batch.max(1);
        loop {
            let batch = store.read_inbox(&user, self.last_sent, limit).await?;
            let done = batch.len() < limit;
            let mut last = self.last_sent;
            for m in batch {
                push_frame(&mut self.out, &m.payload);
                last = m.seq;
            }
            self.flush(last).await?;
            if done {
                return Ok(());
            }
        }
    }

    async fn message(
        &mut self,
        sender: String,
        receiver: String,
        payload: Bytes,
    ) -> Result<(), Stop> {
        let Some(user) = &self.user else {
            info!(conn = self.id, "dropped a Message sent before Regist");
            return Ok(());
        };
        if sender != *user {
            warn!(
                conn = self.id,
                user,
                claimed = sender,
                "dropped a Message with another user's id as sender"
            );
            return Ok(());
        }
        let router = self.relay.router.clone();
        let evict = self.evict.clone();
        let to = receiver.clone();
        let frame = payload.clone();
        let hook = Box::new(move |stored: Result<_, StoreError>| match stored {
            Ok(crate::store::Appended {
                seq,
                duplicate: false,
            }) => {
                router.deliver(&to, seq, &frame);
            }
            Ok(_) => {}
            Err(e) => {
                // The sender cannot be told over v1; closing its connection is the signal
                // that something is wrong, and it keeps unstored messages from piling up.
                tracing::error!(error = %e, "a message could not be stored; closing its sender");
                evict.cancel();
            }
        });
        let msg = NewMessage {
            receiver,
            sender,
            client_id: None,
            payload,
        };
        Ok(self.relay.store.append(msg, hook).await?)
    }

    /// Writes `first` and whatever else is queued (up to [`COALESCE_BYTES`]) in one go.
    async fn send_queued(
        &mut self,
        first: Outbound,
        rx: &mut mpsc::Receiver<Outbound>,
    ) -> Result<(), Stop> {
        let mut last = self.last_sent;
        let mut item = Some(first);
        while let Some(Outbound::Deliver { seq, payload }) = item {
            if seq > last {
                push_frame(&mut self.out, &payload);
                last = seq;
            }
            item = if self.out.len() < COALESCE_BYTES {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        self.flush(last).await
    }

    /// Writes out the gathered frames; `last` is the highest `seq` among them. A v1 client
    /// has no acknowledgements, so a written message counts as acknowledged.
    async fn flush(&mut self, last: u64) -> Result<(), Stop> {
        if !self.out.is_empty() {
            let write = self.writer.write_all(&self.out);
            tokio::select! {
                result = write => result?,
                _ = self.evict.cancelled() => return Err(Stop::Evicted),
                _ = self.shutdown.cancelled() => return Err(Stop::Shutdown),
            }
            self.out.clear();
            // Do not let one burst pin a large buffer to an idle connection.
            if self.out.capacity() > COALESCE_BYTES * 2 {
                self.out = BytesMut::new();
            }
        }
        if last > self.last_sent {
            self.last_sent = last;
            let user = self
                .user
                .as_deref()
                .expect("only registered sessions receive");
            self.relay.store.ack(user, last).await?;
        }
        Ok(())
    }
}

fn push_frame(out: &mut BytesMut, payload: &[u8]) {
    // Payloads were accepted under the frame limit, so they fit a u32 prefix.
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
}

/// A packet error for the log, without the offending value (which might be message text).
fn describe(e: &ProtoError) -> String {
    match e {
        ProtoError::InvalidField { field, .. } => format!("field `{field}` is invalid"),
        other => other.to_string(),
    }
}
