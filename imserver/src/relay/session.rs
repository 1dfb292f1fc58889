//! One relay connection: `Regist`, `Message`, `Ack`, `Ping`, replay of stored messages, the
//! connection's limits, and writing. One code path serves protocol versions 1 and 2; they
//! differ only in what the session writes back (see [`Session::reject`] and `flush`).
//!
//! A single task per connection selects between the socket (frames in), the connection's
//! bounded send queue (frames out) and its timer (the `Regist` deadline, then the idle
//! timeout), so a connection's frames take effect in the order it sent them. That select,
//! every socket write and every wait on a limit (the rate limit, the in-flight window) also
//! watch the connection's `evict` token, a child of the server's shutdown token: a peer that
//! stops reading cannot pin its task.
//!
//! Delivery without gaps or duplicates rests on one number, `last_sent`, the highest `seq`
//! written to this connection. `Regist` subscribes to the router *first* and then replays the
//! store from the client's `lastSeq` (or the user's acknowledged position); any live frame
//! whose `seq` was already replayed is skipped. A message is either queued live after the
//! subscription or committed before the replay reads, so none falls between the two.
//!
//! Replies that must follow earlier effects go through the store's writer thread: a
//! message's `Ack` is queued by its commit hook, and a `Pong` by a barrier hook, which runs
//! only after every write queued before it (this connection's appends and acks) committed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use governor::DefaultDirectRateLimiter;
use governor::clock::Clock;
use improto::{
    Ack, Envelope, ErrorCode, ErrorPacket, FrameCodec, Packet, PacketKind, ProtoError, Regist,
    Registered,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Relay;
use super::reader::FrameReader;
use super::router::{ConnHandle, Outbound};
use crate::auth;
use crate::config::AuthMode;
use crate::store::{Appended, NewMessage, StoreError};

/// Stop gathering queued frames into one write past this many bytes.
const COALESCE_BYTES: usize = 64 * 1024;

/// How long the last `Error` before a close may take to write.
const FAREWELL_WRITE: Duration = Duration::from_secs(1);

/// A connection's place under `--max-connections`.
/// The permit is held for the connection's life and frees its place when dropped.
pub(super) enum Slot {
    /// Within the limit.
    Open { _permit: OwnedSemaphorePermit },
    /// Over it: refused with `too_many_connections` at its `Regist`. The permit is a place
    /// among the few connections allowed to wait for that.
    Refused { _permit: OwnedSemaphorePermit },
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("closed by peer")]
    PeerClosed,
    #[error("server shutting down")]
    Shutdown,
    #[error("send queue full (slow reader) or a store failure")]
    Evicted,
    #[error("no Regist within the deadline")]
    RegistDeadline,
    #[error("idle for longer than the idle timeout")]
    Idle,
    #[error("stream error: {0}")]
    Protocol(ProtoError),
    #[error("refused ({code}): {reason}")]
    Refused { code: ErrorCode, reason: String },
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("store unavailable: {0}")]
    Store(#[from] StoreError),
}

impl Stop {
    fn refused(code: ErrorCode, reason: impl Into<String>) -> Stop {
        Stop::Refused {
            code,
            reason: reason.into(),
        }
    }

    /// The `Error` a v2 client is told before the close, if any.
    fn farewell(&self) -> Option<ErrorPacket> {
        match self {
            Stop::Protocol(e) => {
                ErrorCode::for_error(e).map(|code| ErrorPacket::new(code, e.to_string()))
            }
            Stop::Refused { code, reason } => Some(ErrorPacket::new(code.clone(), reason)),
            _ => None,
        }
    }
}

/// What woke a session up.
enum Event {
    Stop(Stop),
    /// Something to write.
    Queued(Outbound),
    /// A frame from the peer, or how its stream ended.
    Frame(Option<Result<Bytes, ProtoError>>),
    /// The `Regist` deadline or the idle timeout is due.
    Timer,
}

struct Session {
    relay: Arc<Relay>,
    id: u64,
    /// The user this connection speaks for, once it has sent `Regist`.
    user: Option<String>,
    /// The protocol version, known from `Regist` on. Until then the connection is answered
    /// as a version 2 one (a version 1 client sends `Regist` first, so never sees it).
    version: Option<u8>,
    /// The highest `seq` written to this connection (see the module docs).
    last_sent: u64,
    /// Our end of the send queue, handed to the router on `Regist`.
    queue: flume::Sender<Outbound>,
    /// Payload bytes waiting in the queue (see `ConnHandle`).
    queued_bytes: Arc<AtomicUsize>,
    /// Cancelled by the router when the send queue overflows, by a commit hook when the
    /// store failed, or with its parent, the server's shutdown token: one token to wait on
    /// (a wait on a shared token would take that token's lock on every frame).
    evict: CancellationToken,
    /// The server's shutdown token, to tell a shutdown from an eviction.
    shutdown: CancellationToken,
    writer: OwnedWriteHalf,
    /// Frames gathered for the next write.
    out: BytesMut,
    /// Over `--max-connections`: refused at `Regist`.
    over_capacity: bool,
    /// `--rate-limit`, for this connection; `None` when off.
    limiter: Option<DefaultDirectRateLimiter>,
    /// When the last frame arrived, for the idle timeout.
    last_frame: Instant,
    /// v2: one permit per message sent but not yet acknowledged, returned by its commit hook.
    /// Half the send queue, so that the `Ack`s of a fast sender's own messages can never fill
    /// its queue while the store is slow: past it, the sender waits (and TCP slows it down).
    in_flight: Arc<Semaphore>,
}

/// Serves one accepted connection until it closes.
pub(super) async fn run(
    relay: Arc<Relay>,
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    slot: Slot,
    shutdown: CancellationToken,
) {
    let (read, writer) = stream.into_split();
    let codec = FrameCodec::with_max_frame_length(relay.limits.max_frame_bytes);
    let mut frames = FrameReader::new(read, codec);
    let s_queue = relay.limits.send_queue;
    let (queue, rx) = flume::bounded(s_queue);
    let now = Instant::now();
    let mut s = Session {
        limiter: relay.limits.rate.map(DefaultDirectRateLimiter::direct),
        over_capacity: matches!(slot, Slot::Refused { .. }),
        relay,
        id,
        user: None,
        version: None,
        last_sent: 0,
        queue,
        queued_bytes: Arc::default(),
        evict: shutdown.child_token(),
        shutdown,
        writer,
        out: BytesMut::new(),
        last_frame: now,
        in_flight: Arc::new(Semaphore::new((s_queue / 2).max(1))),
    };
    info!(conn = id, %peer, "connected");
    let timer = tokio::time::sleep_until(now + s.relay.limits.regist_deadline);
    tokio::pin!(timer);
    // Made once: a fresh wait per event would register and unregister itself every time.
    let evicted = s.evict.clone().cancelled_owned();
    tokio::pin!(evicted);

    let stop = loop {
        // The select only says what happened; the work happens after it, so that the futures
        // it waits on and the work's own futures never take room in the task together (an
        // idle connection's task is mostly this loop's state).
        let event = tokio::select! {
            biased;
            () = &mut evicted => Event::Stop(closed(&s.shutdown)),
            Ok(item) = rx.recv_async() => Event::Queued(item),
            frame = frames.next() => Event::Frame(frame),
            () = &mut timer => Event::Timer,
        };
        let step = match event {
            Event::Stop(stop) => Err(stop),
            Event::Queued(item) => s.send_queued(item, &rx).await,
            Event::Frame(None) => Err(Stop::PeerClosed),
            // The frame codec fails only on stream errors: oversized or truncated.
            Event::Frame(Some(Err(e))) => Err(Stop::Protocol(e)),
            Event::Frame(Some(Ok(payload))) => {
                s.last_frame = Instant::now();
                let was_registered = s.user.is_some();
                // Boxed: a task is as large as the largest future it awaits inline, and
                // handling a frame (a `Regist`, a message with its rate limit and store
                // queue) needs about 900 bytes that an idle connection would otherwise hold.
                let handled = Box::pin(s.handle(payload)).await;
                if !was_registered && s.user.is_some() {
                    // From the `Regist` deadline to the idle timeout.
                    if let Ok(at) = s.next_deadline() {
                        timer.as_mut().reset(at);
                    }
                }
                handled
            }
            Event::Timer => s.next_deadline().map(|at| timer.as_mut().reset(at)),
        };
        if let Err(stop) = step {
            break stop;
        }
    };

    if let Some(user) = &s.user {
        s.relay.router.unsubscribe(user, id);
    }
    if s.version != Some(1)
        && let Some(error) = stop.farewell()
    {
        s.out.clear();
        push_packet(&mut s.out, &error.into());
        let _ = tokio::time::timeout(FAREWELL_WRITE, s.writer.write_all(&s.out)).await;
    }
    match &stop {
        Stop::PeerClosed | Stop::Shutdown => {
            info!(conn = id, user = s.user, "disconnected: {stop}")
        }
        _ => warn!(conn = id, user = s.user, "disconnected: {stop}"),
    }
}

impl Session {
    /// When the timer should fire next, or why the connection must close now. Before
    /// `Regist` the timer is the `Regist` deadline; after it, the idle timeout.
    fn next_deadline(&self) -> Result<Instant, Stop> {
        if self.user.is_none() {
            return Err(Stop::RegistDeadline);
        }
        match self.relay.limits.idle_timeout {
            // Far enough to never matter, near enough for any clock.
            None => Ok(Instant::now() + Duration::from_secs(365 * 24 * 3600)),
            Some(idle) => {
                let due = self.last_frame + idle;
                if due <= Instant::now() {
                    Err(Stop::Idle)
                } else {
                    Ok(due)
                }
            }
        }
    }

    async fn handle(&mut self, payload: Bytes) -> Result<(), Stop> {
        let env = match Envelope::peek(&payload) {
            Ok(env) => env,
            Err(e) => {
                info!(conn = self.id, "bad packet: {}", describe(&e));
                let code = ErrorCode::for_error(&e).unwrap_or(ErrorCode::BadPacket);
                let id = Envelope::client_id_of_invalid(&payload);
                return self.reject(code, e.to_string(), id).await;
            }
        };
        match env.kind() {
            PacketKind::Message => {
                let sender = env.sender().unwrap_or_default().to_owned();
                let receiver = env.receiver().unwrap_or_default().to_owned();
                let id = env.client_id().map(str::to_owned);
                // A relayed frame gets its `seq` spliced in after the opening brace, which
                // needs the brace first and no `seq` of the sender's (see `canonical`).
                let spliceable = payload.first() == Some(&b'{') && env.seq().is_none();
                let payload = if spliceable {
                    payload
                } else {
                    canonical(&payload)
                };
                self.message(sender, receiver, id, payload).await
            }
            PacketKind::Regist => match Packet::from_json(&payload) {
                Ok(Packet::Regist(r)) => self.regist(r).await,
                // The peek and the full decode agree on every frame (a fuzzed property);
                // were they ever not to, refuse the packet rather than panic.
                _ => {
                    let reason = "malformed Regist".to_owned();
                    self.reject(ErrorCode::BadPacket, reason, None).await
                }
            },
            PacketKind::Ack => self.ack(env.seq().unwrap_or_default()).await,
            PacketKind::Ping => self.ping().await,
            other => {
                let reason = format!("{other:?} is sent by the server, not to it");
                self.reject(ErrorCode::BadPacket, reason, None).await
            }
        }
    }

    /// Refuses one packet and carries on: an `Error` for v2 (and before `Regist`); for v1,
    /// which must never receive anything but `Message`, the log line is all.
    async fn reject(
        &mut self,
        code: ErrorCode,
        message: String,
        id: Option<String>,
    ) -> Result<(), Stop> {
        info!(conn = self.id, user = self.user, %code, "packet refused");
        if self.version == Some(1) {
            return Ok(());
        }
        push_packet(
            &mut self.out,
            &ErrorPacket::new(code, message).with_id(id).into(),
        );
        self.flush(self.last_sent).await
    }

    async fn regist(&mut self, r: Regist) -> Result<(), Stop> {
        if let Some(current) = &self.user {
            if *current == r.sender {
                return Ok(()); // a repeated Regist changes nothing
            }
            let reason = format!("this connection is already registered as {current}");
            return self.reject(ErrorCode::BadPacket, reason, None).await;
        }
        // From here on the version decides what the connection is told, refusals included.
        self.version = Some(r.version);
        if self.over_capacity {
            return Err(Stop::refused(
                ErrorCode::TooManyConnections,
                "the server is at its connection limit",
            ));
        }
        if self.relay.auth == AuthMode::Token || r.version >= 2 {
            let owner = match &r.token {
                Some(token) => auth::check_token(self.relay.store.as_ref(), token).await?,
                None => None,
            };
            if owner.is_none_or(|owner| owner.to_string() != r.sender) {
                return Err(Stop::refused(
                    ErrorCode::Unauthorized,
                    "Regist needs a valid login token of its sender",
                ));
            }
        }
        // Subscribe before reading the store: see the module docs.
        let handle = ConnHandle {
            id: self.id,
            queue: self.queue.clone(),
            queued_bytes: self.queued_bytes.clone(),
            evict: self.evict.clone(),
        };
        let max = self.relay.limits.max_connections_per_user;
        if !self.relay.router.subscribe(&r.sender, handle, max) {
            return Err(Stop::refused(
                ErrorCode::TooManyConnections,
                format!("this user already has {max} connections"),
            ));
        }
        info!(
            conn = self.id,
            user = r.sender,
            version = r.version,
            "registered"
        );
        let inbox = self.relay.store.inbox(&r.sender).await?;
        if r.version >= 2 {
            push_packet(
                &mut self.out,
                &Registered::new(&r.sender, inbox.head).into(),
            );
        }
        // The device's own position wins; beyond the head, there is nothing to replay.
        self.last_sent = r.last_seq.map_or(inbox.acked, |seq| seq.min(inbox.head));
        self.user = Some(r.sender);
        self.replay().await
    }

    /// Writes every stored message after `last_sent`, in order.
    async fn replay(&mut self) -> Result<(), Stop> {
        let user = self.user.clone().expect("registered");
        let store = self.relay.store.clone();
        let limit = self.relay.limits.replay_batch;
        loop {
            let batch = store.read_inbox(&user, self.last_sent, limit).await?;
            let done = batch.len() < limit;
            let mut last = self.last_sent;
            for m in batch {
                push_message(&mut self.out, &m.payload, m.seq);
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
        id: Option<String>,
        payload: Bytes,
    ) -> Result<(), Stop> {
        let Some(user) = &self.user else {
            let reason = "send Regist first".to_owned();
            return self.reject(ErrorCode::NotRegistered, reason, id).await;
        };
        if sender != *user {
            warn!(
                conn = self.id,
                user,
                claimed = sender,
                "a Message with another user's id as sender"
            );
            let reason = format!("this connection is registered as {user}");
            return self.reject(ErrorCode::SenderMismatch, reason, id).await;
        }
        if !self.within_rate().await? {
            let reason = "over the message rate limit; send it again later".to_owned();
            return self.reject(ErrorCode::RateLimited, reason, id).await;
        }
        // Only a v2 sender is told that its message is stored.
        let acks = if self.version == Some(2) {
            let permit = match self.in_flight.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    let permit = self.in_flight.clone().acquire_owned();
                    unless_closing(&self.evict, &self.shutdown, permit)
                        .await?
                        .expect("the semaphore is never closed")
                }
            };
            Some((self.queue.clone(), permit, id.clone()))
        } else {
            None
        };
        let router = self.relay.router.clone();
        let evict = self.evict.clone();
        let to = receiver.clone();
        let frame = payload.clone();
        let hook = Box::new(move |stored: Result<Appended, StoreError>| match stored {
            Ok(Appended { seq, duplicate }) => {
                // A retry of a stored message is acknowledged again, but not relayed again.
                if !duplicate {
                    router.deliver(&to, seq, &frame);
                }
                if let Some((acks, permit, id)) = acks {
                    drop(permit);
                    if acks.try_send(Outbound::Ack { id, seq }).is_err() {
                        // Its queue is full of deliveries: like any slow reader, the sender
                        // reconnects later and, sending the message again, gets this Ack.
                        evict.cancel();
                    }
                }
            }
            Err(e) => {
                // Unstored, so unacknowledged: closing the connection tells the sender (a v1
                // one cannot be told otherwise), and keeps unstored messages from piling up.
                tracing::error!(error = %e, "a message could not be stored; closing its sender");
                evict.cancel();
            }
        });
        let msg = NewMessage {
            receiver,
            sender,
            client_id: id,
            payload,
        };
        Ok(self.relay.store.append(msg, hook).await?)
    }

    /// Whether a message may go now under `--rate-limit`. A v2 client is told to retry; a v1
    /// client cannot be, so its connection waits (reading nothing meanwhile, which slows the
    /// sender through TCP) and nothing is lost.
    async fn within_rate(&self) -> Result<bool, Stop> {
        let Some(limiter) = &self.limiter else {
            return Ok(true);
        };
        loop {
            match limiter.check() {
                Ok(()) => return Ok(true),
                Err(_) if self.version != Some(1) => return Ok(false),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(limiter.clock().now());
                    let sleep = tokio::time::sleep(wait);
                    unless_closing(&self.evict, &self.shutdown, sleep).await?;
                }
            }
        }
    }

    /// `Ack` from the client: everything up to `seq` is processed (on any of its devices).
    async fn ack(&mut self, seq: u64) -> Result<(), Stop> {
        let Some(user) = &self.user else {
            let reason = "send Regist first".to_owned();
            return self.reject(ErrorCode::NotRegistered, reason, None).await;
        };
        Ok(self.relay.store.ack(user, seq).await?)
    }

    /// `Pong` once every earlier frame has taken effect. A v1 client gets nothing (the frame
    /// still keeps its connection alive).
    async fn ping(&mut self) -> Result<(), Stop> {
        if self.version == Some(1) {
            return Ok(());
        }
        let queue = self.queue.clone();
        let evict = self.evict.clone();
        let hook = Box::new(move |done: Result<(), StoreError>| {
            if done.is_err() || queue.try_send(Outbound::Pong).is_err() {
                evict.cancel();
            }
        });
        Ok(self.relay.store.barrier(hook).await?)
    }

    /// Writes `first` and whatever else is queued (up to [`COALESCE_BYTES`]) in one go.
    async fn send_queued(
        &mut self,
        first: Outbound,
        rx: &flume::Receiver<Outbound>,
    ) -> Result<(), Stop> {
        let mut last = self.last_sent;
        let mut item = Some(first);
        while let Some(next) = item {
            match next {
                Outbound::Deliver { seq, payload } => {
                    self.queued_bytes
                        .fetch_sub(payload.len(), Ordering::Relaxed);
                    if seq > last {
                        push_message(&mut self.out, &payload, seq);
                        last = seq;
                    }
                }
                Outbound::Ack { id, seq } => {
                    push_packet(&mut self.out, &Ack::stored(id, seq).into());
                }
                Outbound::Pong => push_packet(&mut self.out, &Packet::Pong),
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
    /// has no acknowledgements, so for it a written message counts as acknowledged.
    async fn flush(&mut self, last: u64) -> Result<(), Stop> {
        if !self.out.is_empty() {
            // Most writes fit in the socket's buffer at once, with nothing to wait for.
            let written = match self.writer.try_write(&self.out) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e.into()),
            };
            if written < self.out.len() {
                let write = self.writer.write_all(&self.out[written..]);
                unless_closing(&self.evict, &self.shutdown, write).await??;
            }
            self.out.clear();
            // Do not let one burst pin a large buffer to an idle connection.
            if self.out.capacity() > COALESCE_BYTES * 2 {
                self.out = BytesMut::new();
            }
        }
        if last > self.last_sent {
            self.last_sent = last;
            if self.version == Some(1) {
                let user = self
                    .user
                    .as_deref()
                    .expect("only registered sessions receive");
                self.relay.store.ack(user, last).await?;
            }
        }
        Ok(())
    }
}

/// Runs `f` unless the connection is told to close first.
async fn unless_closing<F: Future>(
    evict: &CancellationToken,
    shutdown: &CancellationToken,
    f: F,
) -> Result<F::Output, Stop> {
    tokio::select! {
        biased;
        () = evict.cancelled() => Err(closed(shutdown)),
        out = f => Ok(out),
    }
}

/// Why `evict` was cancelled: by the server's shutdown (its parent) or for this connection.
fn closed(shutdown: &CancellationToken) -> Stop {
    if shutdown.is_cancelled() {
        Stop::Shutdown
    } else {
        Stop::Evicted
    }
}

/// A stored message as a frame with its `seq`.
fn push_message(out: &mut BytesMut, payload: &[u8], seq: u64) {
    if !improto::write_stamped(out, payload, seq) {
        // Only frames stored before payloads were made spliceable get here.
        improto::write_stamped(out, &canonical(payload), seq);
    }
}

/// A server-made packet as a frame.
fn push_packet(out: &mut BytesMut, packet: &Packet) {
    // Only a non-finite `createTime` fails to encode, and server packets carry no time.
    let json = packet.to_json().expect("server packets always encode");
    // Server packets are small; a u32 prefix always fits.
    out.put_u32(json.len() as u32);
    out.put_slice(&json);
}

/// A valid `Message` frame re-encoded so that a `seq` can be spliced in: the opening brace
/// first and no `seq` of its own. Only unusual frames (leading whitespace, a client-sent
/// `seq`) take this path.
fn canonical(payload: &[u8]) -> Bytes {
    match Packet::from_json(payload) {
        Ok(Packet::Message(mut m)) => {
            m.seq = None;
            Packet::Message(m)
                .to_json()
                .map_or_else(|_| Bytes::copy_from_slice(payload), Bytes::from)
        }
        _ => Bytes::copy_from_slice(payload),
    }
}

/// A packet error for the log, without the offending value (which might be message text).
fn describe(e: &ProtoError) -> String {
    match e {
        ProtoError::InvalidField { field, .. } => format!("field `{field}` is invalid"),
        other => other.to_string(),
    }
}
