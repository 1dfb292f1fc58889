//! One relay connection: `Regist`, `Message`, `Ack`, `Read`, `Ping`, replay of the stored
//! stream, the connection's limits, and writing. One code path serves every protocol version
//! (what differs is in [`Dialect`]) and every transport (frames in, payloads out; see
//! [`Transport`]).
//!
//! A single task per connection selects between the transport (frames in), the connection's
//! bounded send queue (entries out) and its timer (the `Regist` deadline, then the idle
//! timeout), so a connection's frames take effect in the order it sent them. That select,
//! every write and every wait on a limit (the rate limit, the in-flight window) also watch
//! the connection's `evict` token, a child of the server's shutdown token: a peer that stops
//! reading cannot pin its task.
//!
//! Delivery without gaps or duplicates rests on one number, `last_sent`, the highest `seq`
//! of the user's stream this connection has been given (written, skipped as not for its
//! dialect, or acknowledged as its own message). `Regist` subscribes to the router *first*
//! and then replays the store from the client's `lastSeq` (or the user's acknowledged
//! position); any live entry whose `seq` was already replayed is skipped. An entry is either
//! queued live after the subscription or committed before the replay reads, so none falls
//! between the two.
//!
//! Replies that must follow earlier effects go through the store's writer thread: a
//! message's `Ack` is queued when its request is answered, before the store hands any later
//! entry of the sender's stream to the router, and a `Pong` by a barrier hook, which runs
//! only after every write queued before it (this connection's appends and acks) committed.
//!
//! The frames that arrive together are handled as one burst: the messages among them go to
//! the store as one request (in order, answered together), so the cost of a trip to the
//! store is paid per burst rather than per message.

mod dialect;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use governor::DefaultDirectRateLimiter;
use governor::clock::Clock;
use improto::{
    Ack, Envelope, ErrorCode, ErrorPacket, Packet, PacketKind, ProtoError, Regist, Registered,
    Typing,
};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub(super) use dialect::Dialect;

use super::Relay;
use super::listener::Admitted;
use super::outbox::{self, Inbox, Outbound, Outbox, QueueLimits, Untold};
use super::transport::{Close, Transport, spliceable};
use crate::auth;
use crate::delivery::ConnId;
use crate::id::{Address, UserId};
use crate::metrics;
use crate::store::{Appended, Appends, NewMessage, Outcome, Replies, StoreError};

/// Stop gathering queued frames into one write past this many bytes.
const COALESCE_BYTES: usize = 64 * 1024;

/// How long the last `Error` before a close may take to write (and, again, the close).
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

    /// The `Error` a client is told before the close, if any.
    fn farewell(&self) -> Option<ErrorPacket> {
        match self {
            Stop::Protocol(e) => {
                ErrorCode::for_error(e).map(|code| ErrorPacket::new(code, e.to_string()))
            }
            Stop::Refused { code, reason } => Some(ErrorPacket::new(code.clone(), reason)),
            _ => None,
        }
    }

    /// How a transport that can say why it closes (WebSocket) says it; `None` where the
    /// connection is broken and nothing can be said.
    fn close(&self) -> Option<Close> {
        Some(match self {
            Stop::PeerClosed | Stop::Idle => Close::Normal,
            Stop::Shutdown => Close::GoingAway,
            Stop::Evicted => Close::TryAgainLater,
            Stop::RegistDeadline => Close::Policy,
            Stop::Refused {
                code: ErrorCode::TooManyConnections,
                ..
            } => Close::TryAgainLater,
            Stop::Refused { .. } => Close::Policy,
            Stop::Protocol(ProtoError::FrameTooLarge { .. }) => Close::TooBig,
            Stop::Protocol(ProtoError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                Close::Protocol
            }
            Stop::Protocol(ProtoError::Truncated { .. }) => Close::Protocol,
            Stop::Protocol(_) | Stop::Io(_) => return None,
            Stop::Store(_) => Close::Internal,
        })
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

struct Session<T> {
    relay: Arc<Relay>,
    id: ConnId,
    /// The user this connection speaks for, once it has sent `Regist`.
    user: Option<UserId>,
    dialect: Dialect,
    /// The highest `seq` of the user's stream given to this connection (see the module docs).
    last_sent: u64,
    /// Our send queue's sending end, handed to the router on `Regist`.
    outbox: Arc<Outbox>,
    /// Told what became of our messages, from `Regist` on: our send queue (v2), or
    /// [`Untold`] (v1).
    replies: Option<Arc<dyn Replies>>,
    /// Cancelled by the router when the send queue overflows, by the store when it could
    /// not store our messages, or with its parent, the server's shutdown token: one token to
    /// wait on (a wait on a shared token would take that token's lock on every frame).
    evict: CancellationToken,
    /// The server's shutdown token, to tell a shutdown from an eviction.
    shutdown: CancellationToken,
    transport: T,
    /// Over `--max-connections`: refused at `Regist`.
    over_capacity: bool,
    /// `--rate-limit`, for this connection; `None` when off.
    limiter: Option<DefaultDirectRateLimiter>,
    /// When the last frame arrived, for the idle timeout.
    last_frame: Instant,
    /// This burst's messages, not yet handed to the store.
    pending: Vec<NewMessage>,
    /// Messages received in this burst (stored or refused), counted once per burst.
    received: u64,
    /// v2: messages handed to the store (or pending) and not yet answered.
    unacked: usize,
    /// `--typing-limit`, made at the connection's first `Typing`.
    typing: Option<Box<DefaultDirectRateLimiter>>,
    /// Half the send queue, so that the `Ack`s of a fast sender's own messages can never fill
    /// its queue while the store is slow: at it, no more frames are read until answers come
    /// (and TCP slows the sender down).
    max_unacked: usize,
}

/// Serves one accepted connection until it closes.
pub(super) async fn run<T: Transport>(
    relay: Arc<Relay>,
    transport: T,
    peer: SocketAddr,
    Admitted { id, slot, ip: _ip }: Admitted,
) {
    let limits = QueueLimits {
        frames: relay.limits.send_queue,
        bytes: relay.limits.send_queue_bytes,
    };
    let shutdown = relay.shutdown.clone();
    let evict = shutdown.child_token();
    let (outbox, inbox) = outbox::channel(id, limits, evict.clone());
    let now = Instant::now();
    let mut s = Session {
        limiter: relay.limits.rate.map(DefaultDirectRateLimiter::direct),
        over_capacity: matches!(slot, Slot::Refused { .. }),
        relay,
        id,
        user: None,
        dialect: Dialect::Unknown,
        last_sent: 0,
        outbox,
        evict,
        shutdown,
        transport,
        last_frame: now,
        replies: None,
        typing: None,
        pending: Vec::new(),
        received: 0,
        unacked: 0,
        max_unacked: (limits.frames / 2).max(1),
    };
    info!(conn = id, %peer, "connected");
    let timer = tokio::time::sleep_until(now + s.relay.limits.regist_deadline);
    tokio::pin!(timer);
    // Made once: a fresh wait per event would register and unregister itself every time
    // (the queue's too: a wait on it that the socket wins is torn down and made again).
    let evicted = s.evict.clone().cancelled_owned();
    tokio::pin!(evicted);
    let mut queued = inbox.queue.stream();

    let stop = loop {
        // The select only says what happened; the work happens after it, so that the futures
        // it waits on and the work's own futures never take room in the task together (an
        // idle connection's task is mostly this loop's state).
        let event = tokio::select! {
            biased;
            () = &mut evicted => Event::Stop(closed(&s.shutdown)),
            Some(item) = queued.next() => Event::Queued(item),
            frame = s.transport.recv(), if s.unacked < s.max_unacked => Event::Frame(frame),
            () = &mut timer => Event::Timer,
        };
        let step = match event {
            Event::Stop(stop) => Err(stop),
            Event::Queued(item) => s.send_queued(item, &inbox).await,
            Event::Frame(None) => Err(Stop::PeerClosed),
            Event::Frame(Some(frame)) => {
                s.last_frame = Instant::now();
                let was_registered = s.user.is_some();
                // Boxed: a task is as large as the largest future it awaits inline, and
                // handling frames (a `Regist`, messages with their rate limit and store
                // queue) needs about 900 bytes that an idle connection would otherwise hold.
                let handled = Box::pin(s.burst(frame)).await;
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

    if let Some(user) = s.user {
        metrics::connection(T::NAME, s.dialect.name(), -1.0);
        if let Err(e) = s.relay.store.release_connection(user, id).await {
            warn!(conn = id, error = %e, "cannot count a closed connection out");
        }
        if s.relay.router.unsubscribe(user, id) == 0 {
            s.relay.delivery.unwatch(user);
            s.relay.presence.left(user).await;
        }
    }
    if s.dialect.answers()
        && let Some(error) = stop.farewell()
    {
        s.transport.discard();
        s.push_error(error);
        let _ = tokio::time::timeout(FAREWELL_WRITE, s.transport.flush()).await;
    }
    if let Some(why) = stop.close() {
        let _ = tokio::time::timeout(FAREWELL_WRITE, s.transport.close(why)).await;
    }
    let user = s.user.map(|u| u.get());
    match &stop {
        Stop::PeerClosed | Stop::Shutdown => info!(conn = id, user, "disconnected: {stop}"),
        _ => warn!(conn = id, user, "disconnected: {stop}"),
    }
}

impl<T: Transport> Session<T> {
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

    /// Handles `first` and every frame that arrived with it, then hands the messages among
    /// them to the store in one request. A v2 sender at its limit of unanswered messages
    /// stops the burst early; its other frames wait in the transport.
    async fn burst(&mut self, first: Result<Bytes, ProtoError>) -> Result<(), Stop> {
        let mut frame = first;
        let ended = loop {
            let handled = match frame {
                Ok(payload) => self.handle(payload).await,
                Err(e) if e.is_fatal() => Err(Stop::Protocol(e)),
                // A frame the transport could not take as a packet (a WebSocket binary
                // message): refused alone.
                Err(e) => {
                    let code = ErrorCode::for_error(&e).unwrap_or(ErrorCode::BadPacket);
                    self.reject(code, e.to_string(), None).await
                }
            };
            if let Err(stop) = handled {
                break Err(stop);
            }
            if self.unacked >= self.max_unacked {
                break Ok(());
            }
            match self.transport.try_recv() {
                Some(next) => frame = next,
                None => break Ok(()),
            }
        };
        if self.received > 0 {
            self.relay
                .metrics
                .received
                .increment(std::mem::take(&mut self.received));
        }
        // Messages before a stream error were sent before it: they are stored all the same.
        let sent = self.send_pending().await;
        ended.and(sent)
    }

    /// Hands this burst's messages to the store.
    async fn send_pending(&mut self) -> Result<(), Stop> {
        let (Some(user), Some(replies)) = (self.user, &self.replies) else {
            return Ok(());
        };
        if self.pending.is_empty() {
            return Ok(());
        }
        let appends = Appends {
            sender: user,
            origin: Some(self.id),
            friends_only: self.relay.friends_only,
            messages: std::mem::take(&mut self.pending),
            replies: replies.clone(),
        };
        Ok(self.relay.store.append(appends).await?)
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
        if env.kind() != PacketKind::Message {
            // Whatever else a burst holds takes effect after the messages before it.
            self.send_pending().await?;
        }
        match env.kind() {
            PacketKind::Message => {
                let id = env.client_id().map(str::to_owned);
                let ids = (
                    parse_id("sender", env.sender()),
                    parse_address("receiver", env.receiver()),
                );
                // A relayed frame gets its `seq` spliced in after the opening brace, which
                // needs the brace first and no `seq` of the sender's (see `spliceable`).
                let ready = payload.first() == Some(&b'{') && env.seq().is_none();
                drop(env);
                let payload = if ready { payload } else { spliceable(&payload) };
                self.message(ids, id, payload).await
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
            PacketKind::Read => {
                let peer = parse_address("peer", env.peer());
                self.read(peer, env.seq().unwrap_or_default()).await
            }
            PacketKind::Ping => self.ping().await,
            PacketKind::Typing => {
                let receiver = parse_address("receiver", env.receiver());
                self.typing(receiver).await
            }
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
        let user = self.user.map(|u| u.get());
        info!(conn = self.id, user, %code, "packet refused");
        if !self.dialect.answers() {
            return Ok(());
        }
        self.push_error(ErrorPacket::new(code, message).with_id(id));
        self.flush(self.last_sent).await
    }

    /// The registered user, or the refusal of a packet that needs one.
    async fn registered(&mut self) -> Result<Option<UserId>, Stop> {
        if self.user.is_none() {
            let reason = "send Regist first".to_owned();
            self.reject(ErrorCode::NotRegistered, reason, None).await?;
        }
        Ok(self.user)
    }

    async fn regist(&mut self, r: Regist) -> Result<(), Stop> {
        let user = UserId::parse(&r.sender);
        if let Some(current) = self.user {
            if user == Ok(current) {
                return Ok(()); // a repeated Regist changes nothing
            }
            let reason = format!("this connection is already registered as {current}");
            return self.reject(ErrorCode::BadPacket, reason, None).await;
        }
        if !T::CARRIES_V1 && Dialect::of(r.version) == Dialect::V1 {
            let reason =
                "protocol version 1 is spoken over TCP only: send \"version\":2".to_owned();
            return self.reject(ErrorCode::BadPacket, reason, None).await;
        }
        // From here on the version decides what the connection is told, refusals included.
        self.dialect = Dialect::of(r.version);
        let user = match user {
            Ok(user) => user,
            Err(e) => {
                let reason = format!("field `sender`: {e}");
                return self.reject(ErrorCode::BadPacket, reason, None).await;
            }
        };
        if self.over_capacity {
            return Err(Stop::refused(
                ErrorCode::TooManyConnections,
                "the server is at its connection limit",
            ));
        }
        if self.dialect.needs_token(self.relay.auth) {
            let owner = match &r.token {
                Some(token) => auth::check_token(self.relay.store.as_ref(), token).await?,
                None => None,
            };
            if owner != Some(user) {
                return Err(Stop::refused(
                    ErrorCode::Unauthorized,
                    "Regist needs a valid login token of its sender",
                ));
            }
        }
        // Subscribe before reading the store: see the module docs.
        let max = self.relay.limits.max_connections_per_user;
        let too_many = || {
            Stop::refused(
                ErrorCode::TooManyConnections,
                format!("this user already has {max} connections"),
            )
        };
        let Some(here) = self.relay.router.subscribe(user, self.outbox.clone(), max) else {
            return Err(too_many());
        };
        // On a store several nodes share, the limit counts every node's connections.
        let claimed = match self.relay.store.claim_connection(user, self.id, max).await {
            Ok(claimed) => claimed,
            Err(e) => {
                // Better a user over the limit than every user locked out.
                warn!(conn = self.id, error = %e, "cannot count the user's connections on every node");
                true
            }
        };
        if !claimed {
            self.relay.router.unsubscribe(user, self.id);
            return Err(too_many());
        }
        if here == 1 {
            self.relay.presence.changed(user);
        }
        // Registered from here on: the end of the session unsubscribes it.
        self.user = Some(user);
        // Other nodes' entries reach this node from here on, too.
        self.relay.delivery.watch(user).await;
        metrics::connection(T::NAME, self.dialect.name(), 1.0);
        info!(
            conn = self.id,
            user = user.get(),
            version = r.version,
            "registered"
        );
        let position = self.relay.store.position(user).await?;
        // The device's own position wins; beyond the head, there is nothing to replay.
        self.last_sent = r
            .last_seq
            .map_or(position.acked, |seq| seq.min(position.head));
        if self.dialect.answers() {
            // Retention deleted entries this device has not had: it is told where the
            // stream goes on, rather than left to find a gap.
            let gone = self.last_sent + 1 < position.oldest;
            let registered = Registered::new(user.to_string(), position.head)
                .starting_at(gone.then_some(position.oldest));
            self.transport.push_packet(&registered.into());
        }
        self.replies = Some(if self.dialect.acks_sender() {
            self.outbox.clone()
        } else {
            Arc::new(Untold(self.outbox.clone()))
        });
        let replayed = self.replay(user, u64::MAX).await?;
        self.relay.metrics.replayed.record(replayed as f64);
        Ok(())
    }

    /// Writes every stored entry of `user`'s stream after `last_sent` up to `upto`, in order
    /// (those for this dialect; the others are passed over). Returns how many it wrote.
    async fn replay(&mut self, user: UserId, upto: u64) -> Result<u64, Stop> {
        let store = self.relay.store.clone();
        let limit = self.relay.limits.replay_batch;
        let mut replayed = 0;
        loop {
            let batch = store.read_stream(user, self.last_sent, limit).await?;
            let mut done = batch.len() < limit;
            let mut last = self.last_sent;
            for entry in batch {
                if entry.seq > upto {
                    done = true;
                    break;
                }
                if self.dialect.receives_stored(&entry.payload, user) {
                    self.transport.push_entry(&entry.payload, entry.seq);
                    replayed += 1;
                }
                last = entry.seq;
            }
            self.flush(last).await?;
            if done {
                self.relay.metrics.delivered.increment(replayed);
                return Ok(replayed);
            }
        }
    }

    async fn message(
        &mut self,
        (sender, receiver): (Result<UserId, String>, Result<Address, String>),
        id: Option<String>,
        payload: Bytes,
    ) -> Result<(), Stop> {
        self.received += 1;
        let Some(user) = self.user else {
            let reason = "send Regist first".to_owned();
            return self.reject(ErrorCode::NotRegistered, reason, id).await;
        };
        let sender = match sender {
            Ok(sender) => sender,
            Err(reason) => return self.reject(ErrorCode::BadPacket, reason, id).await,
        };
        if sender != user {
            let claimed = sender.get();
            warn!(
                conn = self.id,
                user = user.get(),
                claimed,
                "a Message with another user's id as sender"
            );
            let reason = format!("this connection is registered as {user}");
            return self.reject(ErrorCode::SenderMismatch, reason, id).await;
        }
        let receiver = match receiver {
            Ok(Address::Group(_)) if !self.dialect.acks_sender() => {
                let reason = "group messages need protocol version 2".to_owned();
                return self.reject(ErrorCode::BadPacket, reason, id).await;
            }
            Ok(receiver) => receiver,
            Err(reason) => return self.reject(ErrorCode::BadPacket, reason, id).await,
        };
        if !self.within_rate().await? {
            let reason = "over the message rate limit; send it again later".to_owned();
            return self.reject(ErrorCode::RateLimited, reason, id).await;
        }
        // Only a v2 sender is told that its message is stored, or why not.
        if self.dialect.acks_sender() {
            self.unacked += 1;
        }
        self.pending.push(NewMessage {
            receiver,
            client_id: id,
            payload,
        });
        Ok(())
    }

    /// Whether a message may go now under `--rate-limit`. A v2 client is told to retry; a v1
    /// client cannot be, so its connection waits (reading nothing meanwhile, which slows the
    /// sender through TCP; what it sent before goes to the store first) and nothing is lost.
    async fn within_rate(&mut self) -> Result<bool, Stop> {
        loop {
            let Some(limiter) = &self.limiter else {
                return Ok(true);
            };
            match limiter.check() {
                Ok(()) => return Ok(true),
                Err(_) if !self.dialect.waits_when_rate_limited() => return Ok(false),
                Err(_) if !self.pending.is_empty() => self.send_pending().await?,
                Err(not_until) => {
                    let wait = not_until.wait_time_from(limiter.clock().now());
                    let sleep = tokio::time::sleep(wait);
                    unless_closing(&self.evict, &self.shutdown, sleep).await?;
                }
            }
        }
    }

    /// `Ack` from the client: everything up to `seq` is processed (on any of its devices).
    /// A device cannot have processed more than it was shown (or told of, in an `Ack`), so
    /// a larger `seq` counts as that much: it must not pass over entries still to come.
    async fn ack(&mut self, seq: u64) -> Result<(), Stop> {
        let Some(user) = self.registered().await? else {
            return Ok(());
        };
        self.relay.metrics.client_acks.increment(1);
        Ok(self.relay.store.ack(user, seq.min(self.last_sent)).await?)
    }

    /// `Read` from the client: the conversation with `peer` is read up to `seq`.
    async fn read(&mut self, peer: Result<Address, String>, seq: u64) -> Result<(), Stop> {
        let Some(user) = self.registered().await? else {
            return Ok(());
        };
        match peer {
            Ok(peer) => Ok(self.relay.store.mark_read(user, peer, seq).await?),
            Err(reason) => self.reject(ErrorCode::BadPacket, reason, None).await,
        }
    }

    /// `Typing` from the client: passed on, live, to the receiver's connections (every other
    /// member's, for a group), as far as the relay policy, blocks and membership allow. Past
    /// `--typing-limit`, or where a block stands, it is dropped without a word.
    async fn typing(&mut self, receiver: Result<Address, String>) -> Result<(), Stop> {
        let Some(user) = self.registered().await? else {
            return Ok(());
        };
        let receiver = match receiver {
            Ok(receiver) => receiver,
            Err(reason) => return self.reject(ErrorCode::BadPacket, reason, None).await,
        };
        let limits = &self.relay.limits;
        let limiter = self
            .typing
            .get_or_insert_with(|| Box::new(DefaultDirectRateLimiter::direct(limits.typing)));
        if limiter.check().is_err() {
            return Ok(());
        }
        let store = self.relay.store.clone();
        let to: Vec<UserId> = match receiver {
            Address::User(to) if to == user => return Ok(()),
            Address::User(to) => {
                if self.relay.friends_only {
                    let friends = store.friends(user).await?.unwrap_or_default();
                    if !friends.iter().any(|(f, _)| *f == to) {
                        let reason = "this server relays between friends only".to_owned();
                        return self.reject(ErrorCode::NotFriends, reason, None).await;
                    }
                }
                if store.blocks_user(to, user).await? {
                    return Ok(());
                }
                vec![to]
            }
            Address::Group(g) => match store.group(g).await? {
                Some(group) if group.has(user) => group
                    .members
                    .iter()
                    .copied()
                    .filter(|&m| m != user)
                    .collect(),
                _ => {
                    let reason = "you are not a member of this group".to_owned();
                    return self.reject(ErrorCode::NotMember, reason, None).await;
                }
            },
        };
        let frame = Packet::from(Typing::from(user.to_string(), receiver.to_string()));
        let payload: Bytes = frame.to_json().expect("typing frames encode").into();
        for member in to {
            self.relay.delivery.live(member, payload.clone());
        }
        Ok(())
    }

    /// `Pong` once every earlier frame has taken effect. A v1 client gets nothing (the frame
    /// still keeps its connection alive).
    async fn ping(&mut self) -> Result<(), Stop> {
        if !self.dialect.answers() {
            return Ok(());
        }
        let outbox = self.outbox.clone();
        let hook = Box::new(move |done: Result<(), StoreError>| {
            if done.is_err() || !outbox.push(Outbound::Pong) {
                outbox.evict();
            }
        });
        Ok(self.relay.store.barrier(hook).await?)
    }

    /// Writes `first` and whatever else is queued (up to [`COALESCE_BYTES`]) in one go.
    async fn send_queued(&mut self, first: Outbound, inbox: &Inbox) -> Result<(), Stop> {
        let mut last = self.last_sent;
        let mut delivered = 0;
        let mut item = Some(first);
        while let Some(next) = item {
            inbox.taken(&next);
            match next {
                Outbound::Entries(entries) => {
                    for e in entries.iter() {
                        if e.seq > last + 1 {
                            // Entries before this one never came: the bus between nodes
                            // lost them, or they are on their way from another node (or, on
                            // version 1, they are this connection's own messages, whose
                            // copies it is not given). Read them from the store first.
                            self.flush(last).await?;
                            self.repair(e.seq - 1).await?;
                            last = self.last_sent;
                        }
                        if e.seq > last {
                            if self.dialect.receives(e.kind) {
                                self.transport.push_entry(&e.payload, e.seq);
                                delivered += 1;
                            }
                            last = e.seq;
                        }
                    }
                }
                Outbound::Replies(outcomes) => last = self.answer(outcomes).max(last),
                Outbound::Live(payload) => {
                    if self.dialect.answers() {
                        self.transport.push_payload(&payload);
                    }
                }
                Outbound::Pong => self.transport.push_packet(&Packet::Pong),
                Outbound::Unstored(ids) => {
                    for id in ids {
                        self.unacked = self.unacked.saturating_sub(1);
                        let reason = "the message could not be stored now; send it again later";
                        let error = ErrorPacket::new(ErrorCode::Unavailable, reason);
                        self.push_error(error.with_id(id));
                    }
                }
                Outbound::Resync => {
                    self.flush(last).await?;
                    self.repair(u64::MAX).await?;
                    last = self.last_sent;
                }
            }
            item = if self.transport.buffered() < COALESCE_BYTES {
                inbox.queue.try_recv().ok()
            } else {
                None
            };
        }
        if delivered > 0 {
            self.relay.metrics.delivered.increment(delivered);
        }
        self.flush(last).await
    }

    /// Writes the stored entries after `last_sent` up to `upto` (all there are, for
    /// `u64::MAX`): what this connection should have been given and was not.
    async fn repair(&mut self, upto: u64) -> Result<(), Stop> {
        let Some(user) = self.user else {
            return Ok(());
        };
        let written = self.replay(user, upto).await?;
        self.relay.metrics.repaired.increment(written);
        Ok(())
    }

    /// Answers what became of this connection's messages (v2 only: see [`Untold`]), and
    /// returns the highest `seq` among their copies: the sending device has those entries
    /// of its stream, as it sent them.
    fn answer(&mut self, outcomes: Vec<Outcome>) -> u64 {
        let mut last = 0;
        let mut acks = 0;
        for Outcome {
            client_id,
            group,
            appended,
        } in outcomes
        {
            self.unacked = self.unacked.saturating_sub(1);
            let (code, message) = match appended {
                Appended::Stored { seq, .. } => {
                    last = last.max(seq);
                    let group = group.map(|g| g.to_string());
                    let ack = Ack::stored(client_id, seq).in_group(group);
                    self.transport.push_packet(&ack.into());
                    acks += 1;
                    continue;
                }
                Appended::NotFriends => (
                    ErrorCode::NotFriends,
                    "this server relays messages between friends only",
                ),
                Appended::NotMember => (ErrorCode::NotMember, "you are not a member of this group"),
            };
            self.push_error(ErrorPacket::new(code, message).with_id(client_id));
        }
        if acks > 0 {
            self.relay.metrics.acks_sent.increment(acks);
        }
        last
    }

    /// Gathers an `Error` for the next write, and counts it.
    fn push_error(&mut self, error: ErrorPacket) {
        metrics::error_sent(&error.code);
        self.transport.push_packet(&error.into());
    }

    /// Writes out the gathered frames; `last` is the highest `seq` among them. For a v1
    /// client a written entry counts as acknowledged.
    async fn flush(&mut self, last: u64) -> Result<(), Stop> {
        if self.transport.buffered() > 0 {
            let write = self.transport.flush();
            unless_closing(&self.evict, &self.shutdown, write).await??;
        }
        if last > self.last_sent {
            self.last_sent = last;
            if self.dialect.write_counts_as_ack()
                && let Some(user) = self.user
            {
                self.relay.store.ack(user, last).await?;
            }
        }
        Ok(())
    }
}

/// A user id from a packet's field, or the reason it is not one (for a `bad_packet`).
fn parse_id(field: &str, value: Option<&str>) -> Result<UserId, String> {
    UserId::parse(value.unwrap_or_default()).map_err(|e| format!("field `{field}`: {e}"))
}

/// A user or group id from a packet's field, or the reason it is neither.
fn parse_address(field: &str, value: Option<&str>) -> Result<Address, String> {
    Address::parse(value.unwrap_or_default()).map_err(|e| format!("field `{field}`: {e}"))
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

/// A packet error for the log, without the offending value (which might be message text).
fn describe(e: &ProtoError) -> String {
    match e {
        ProtoError::InvalidField { field, .. } => format!("field `{field}` is invalid"),
        other => other.to_string(),
    }
}
