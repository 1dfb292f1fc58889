//! The message bus between the nodes of one PostgreSQL store (`--bus nats://…`): a
//! [`Delivery`] that hands committed entries to this node's connections (the
//! [`LocalRouter`]) and publishes them on NATS for the nodes where their user is online.
//!
//! Subjects (`PREFIX` is `--bus-prefix`):
//! - `PREFIX.user.ID`: what user `ID`'s connections must see: entries of their stream, live
//!   frames (typing, presence), "read your stream from the store" and "close". A node
//!   subscribes while the user has a connection on it ([`Delivery::watch`]), and
//!   unsubscribes after the last one leaves.
//! - `PREFIX.cache`: a commit made a cached read stale (a token revoked, a friendship,
//!   a block, a group); every node forgets it.
//!
//! **NATS core is at-most-once; nothing here relies on it.** Every entry is in the store
//! before it is published, and a connection that sees a `seq` beyond the next one it
//! expects reads what is missing from the store before it writes more (see
//! `relay::session`). What could be lost without a later entry to reveal it is covered by
//! telling the connections to read their streams: every connection of this node when the
//! NATS connection comes back or NATS reports it dropped messages for this node (a slow
//! consumer), and the watchers of a user whose entries did not fit in the publish queue
//! (`--bus-queue`).
//!
//! This node's own messages do not come back to it (`no_echo`): it delivered them itself.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use crate::config::BusConfig;
use crate::delivery::{Delivery, Entries, Entry, EntryKind, Stale};
use crate::id::{GroupId, UserId};
use crate::relay::LocalRouter;
use crate::store::Store;

/// How long a `Regist` waits for NATS to confirm a new subscription before it replays
/// anyway; once NATS does confirm it, the user's connections read their stream again (what
/// was published before the subscription took effect reached nobody).
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);

/// How long a node waits for NATS when it starts.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

pub struct NatsBus {
    client: async_nats::Client,
    prefix: String,
    local: Arc<LocalRouter>,
    /// The store whose cache other nodes' notices go to (set once it is open).
    store: Arc<OnceLock<Arc<dyn Store>>>,
    /// To the publisher task: `--bus-queue` messages at most, each with the user whose
    /// watchers must read the store if it is lost.
    outgoing: mpsc::Sender<Outgoing>,
    /// Users whose entries did not fit in the queue: their watchers are told to read the
    /// store once there is room.
    behind: Arc<Mutex<HashSet<UserId>>>,
    /// Each watched user's subscription, forwarding to the local connections.
    watched: Mutex<HashMap<UserId, tokio::task::JoinHandle<()>>>,
    /// `--bus-drop-every` (tests), and the count it goes by.
    drop_every: u64,
    entries_sent: AtomicU64,
}

impl NatsBus {
    /// Connects (retrying in the background while NATS is away) and starts the publisher
    /// and the cache listener.
    pub async fn connect(
        url: &str,
        config: &BusConfig,
        local: Arc<LocalRouter>,
    ) -> Result<Arc<NatsBus>, async_nats::ConnectError> {
        let on_event = local.clone();
        let store: Arc<OnceLock<Arc<dyn Store>>> = Arc::default();
        let cache_of = store.clone();
        let connected = Arc::new(tokio::sync::Notify::new());
        let on_connect = connected.clone();
        let client = async_nats::ConnectOptions::new()
            .no_echo()
            .retry_on_initial_connect()
            .name("imserver")
            .event_callback(move |event| {
                let local = on_event.clone();
                let connected = on_connect.clone();
                let store = cache_of.clone();
                async move {
                    if matches!(event, async_nats::Event::Connected) {
                        connected.notify_one();
                    }
                    match event {
                        // Back after a disconnection, or NATS dropped messages for us:
                        // whatever was lost meanwhile is read from the store.
                        // Cache notices may have been lost too: the cache starts over.
                        async_nats::Event::Connected | async_nats::Event::SlowConsumer(_) => {
                            tracing::info!(%event, "bus: every connection reads its stream");
                            local.resync_all();
                            if let Some(store) = store.get() {
                                store.forget(Stale::Everything);
                            }
                        }
                        async_nats::Event::Disconnected => tracing::warn!("bus disconnected"),
                        other => tracing::info!(event = %other, "bus"),
                    }
                }
            })
            .connect(url)
            .await?;
        // A node starts once it is on the bus, or after a while without it: it then takes
        // no live entries from other nodes until it connects, and catches up when it does.
        if tokio::time::timeout(CONNECT_WAIT, connected.notified())
            .await
            .is_err()
        {
            tracing::warn!(%url, "bus: NATS does not answer yet; starting without it");
        }
        let (outgoing, rx) = mpsc::channel(config.bus_queue);
        let bus = Arc::new(NatsBus {
            client,
            prefix: config.bus_prefix.clone(),
            local,
            store,
            outgoing,
            behind: Arc::default(),
            watched: Mutex::default(),
            drop_every: config.bus_drop_every,
            entries_sent: AtomicU64::new(0),
        });
        tokio::spawn(publish(
            bus.client.clone(),
            rx,
            bus.behind.clone(),
            bus.prefix.clone(),
        ));
        let cache = bus.client.subscribe(format!("{}.cache", bus.prefix)).await;
        match cache {
            Ok(sub) => {
                tokio::spawn(forget(sub, Arc::downgrade(&bus)));
            }
            Err(e) => tracing::error!(error = %e, "bus: cannot listen for cache notices"),
        }
        Ok(bus)
    }

    /// The store whose cache other nodes' notices go to.
    pub fn set_store(&self, store: Arc<dyn Store>) {
        let _ = self.store.set(store);
    }

    fn send(&self, subject: String, payload: Bytes, user: Option<UserId>) -> bool {
        self.outgoing
            .try_send(Outgoing {
                subject,
                payload,
                user,
            })
            .is_ok()
    }

    fn user_subject(&self, user: UserId) -> String {
        user_subject(&self.prefix, user)
    }

    fn lock_watched(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<UserId, tokio::task::JoinHandle<()>>> {
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn user_subject(prefix: &str, user: UserId) -> String {
    format!("{prefix}.user.{user}")
}

impl Delivery for NatsBus {
    fn deliver(&self, to: UserId, entries: Entries) {
        self.local.deliver(to, entries.clone());
        let n = self.entries_sent.fetch_add(1, Ordering::Relaxed) + 1;
        if self.drop_every > 0 && n.is_multiple_of(self.drop_every) {
            return;
        }
        if !self.send(
            self.user_subject(to),
            Message::Entries(entries).encode(),
            Some(to),
        ) {
            lock(&self.behind).insert(to);
        }
    }

    fn live(&self, to: UserId, payload: Bytes) {
        self.local.live(to, payload.clone());
        // Best effort, like the frame itself.
        self.send(self.user_subject(to), Message::Live(payload).encode(), None);
    }

    fn stale(&self, what: Stale) {
        if !self.send(format!("{}.cache", self.prefix), encode_stale(what), None) {
            tracing::warn!(
                ?what,
                "bus queue full: another node may serve a stale cache entry"
            );
        }
    }

    fn watch(&self, user: UserId) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.lock_watched().contains_key(&user) {
                return;
            }
            let sub = match self.client.subscribe(self.user_subject(user)).await {
                Ok(sub) => sub,
                Err(e) => {
                    tracing::error!(error = %e, user = user.get(), "bus: cannot subscribe");
                    return;
                }
            };
            // NATS has the subscription before the replay reads the store.
            let flush = self.client.flush();
            let confirmed = matches!(
                tokio::time::timeout(SUBSCRIBE_WAIT, flush).await,
                Ok(Ok(()))
            );
            if !confirmed {
                tracing::warn!(user = user.get(), "bus: subscription not confirmed in time");
                let (client, local) = (self.client.clone(), self.local.clone());
                tokio::spawn(async move {
                    while local.online(user) {
                        if client.flush().await.is_ok() {
                            local.resync(user);
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                });
            }
            let mut watched = self.lock_watched();
            if watched.contains_key(&user) {
                return; // another connection of the user got there first; `sub` goes
            }
            let task = tokio::spawn(forward(sub, user, self.local.clone()));
            watched.insert(user, task);
        })
    }

    fn unwatch(&self, user: UserId) {
        let mut watched = self.lock_watched();
        if !self.local.online(user)
            && let Some(task) = watched.remove(&user)
        {
            // Dropping the subscription unsubscribes.
            task.abort();
        }
    }

    fn disconnect(&self, user: UserId) -> usize {
        if !self.send(self.user_subject(user), Message::Close.encode(), None) {
            tracing::warn!(
                user = user.get(),
                "bus queue full: other nodes not told to close"
            );
        }
        self.local.disconnect(user)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every use is one insert or take: a poisoned lock is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Publishes what is queued, in order; then tells the watchers of users whose entries did
/// not fit to read the store.
async fn publish(
    client: async_nats::Client,
    mut rx: mpsc::Receiver<Outgoing>,
    behind: Arc<Mutex<HashSet<UserId>>>,
    prefix: String,
) {
    while let Some(out) = rx.recv().await {
        if let Err(e) = client.publish(out.subject, out.payload).await {
            tracing::warn!(error = %e, "bus: publish failed");
            if let Some(user) = out.user {
                lock(&behind).insert(user);
            }
        }
        let late: Vec<UserId> = lock(&behind).drain().collect();
        for user in late {
            let _ = client
                .publish(user_subject(&prefix, user), Message::Resync.encode())
                .await;
        }
    }
}

/// Hands what arrives for `user` to their connections here.
async fn forward(mut sub: async_nats::Subscriber, user: UserId, local: Arc<LocalRouter>) {
    while let Some(m) = sub.next().await {
        match Message::decode(m.payload) {
            Some(Message::Entries(entries)) => local.deliver(user, entries),
            Some(Message::Live(payload)) => local.live(user, payload),
            Some(Message::Resync) => local.resync(user),
            Some(Message::Close) => {
                local.disconnect(user);
            }
            None => tracing::warn!(user = user.get(), "bus: a message this node cannot read"),
        }
    }
}

/// Forgets what other nodes' notices name.
async fn forget(mut sub: async_nats::Subscriber, bus: std::sync::Weak<NatsBus>) {
    while let Some(m) = sub.next().await {
        let Some(bus) = bus.upgrade() else {
            return;
        };
        match (decode_stale(m.payload), bus.store.get()) {
            (Some(what), Some(store)) => store.forget(what),
            (None, _) => tracing::warn!("bus: a cache notice this node cannot read"),
            (Some(_), None) => {}
        }
    }
}

/// A message for the publisher.
struct Outgoing {
    subject: String,
    payload: Bytes,
    /// Whose entries it carries, if it does.
    user: Option<UserId>,
}

/// What goes on a user's subject.
enum Message {
    Entries(Entries),
    Live(Bytes),
    /// Read the stream from the store: something for it was not sent.
    Resync,
    /// Close every connection (the account was disabled).
    Close,
}

const ENTRIES: u8 = b'E';
const LIVE: u8 = b'L';
const RESYNC: u8 = b'S';
const CLOSE: u8 = b'C';

impl Message {
    /// `E`, then per entry: its `seq` (8 bytes), its kind (1), its payload's length (4)
    /// and the payload. `L` and a live frame. `S`. `C`.
    fn encode(self) -> Bytes {
        match self {
            Message::Entries(entries) => {
                let len: usize = entries.iter().map(|e| 13 + e.payload.len()).sum();
                let mut b = BytesMut::with_capacity(1 + len);
                b.put_u8(ENTRIES);
                for e in entries.iter() {
                    b.put_u64(e.seq);
                    b.put_u8(kind_code(e.kind));
                    b.put_u32(e.payload.len() as u32);
                    b.put_slice(&e.payload);
                }
                b.freeze()
            }
            Message::Live(payload) => {
                let mut b = BytesMut::with_capacity(1 + payload.len());
                b.put_u8(LIVE);
                b.put_slice(&payload);
                b.freeze()
            }
            Message::Resync => Bytes::from_static(&[RESYNC]),
            Message::Close => Bytes::from_static(&[CLOSE]),
        }
    }

    fn decode(mut b: Bytes) -> Option<Message> {
        if b.is_empty() {
            return None;
        }
        match b.get_u8() {
            ENTRIES => {
                let mut entries = Vec::new();
                while !b.is_empty() {
                    if b.remaining() < 13 {
                        return None;
                    }
                    let seq = b.get_u64();
                    let kind = kind_of(b.get_u8())?;
                    let len = b.get_u32() as usize;
                    if b.remaining() < len {
                        return None;
                    }
                    let payload = b.split_to(len);
                    // Another node's connection ids mean nothing here.
                    entries.push(Entry {
                        seq,
                        payload,
                        kind,
                        origin: None,
                    });
                }
                Some(Message::Entries(entries.into()))
            }
            LIVE => Some(Message::Live(b)),
            RESYNC => Some(Message::Resync),
            CLOSE => Some(Message::Close),
            _ => None,
        }
    }
}

fn kind_code(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::Received => 0,
        EntryKind::Sent => 1,
        EntryKind::Group => 2,
        EntryKind::Event => 3,
    }
}

fn kind_of(code: u8) -> Option<EntryKind> {
    Some(match code {
        0 => EntryKind::Received,
        1 => EntryKind::Sent,
        2 => EntryKind::Group,
        3 => EntryKind::Event,
        _ => return None,
    })
}

/// `T` and a token hash (32 bytes); `F`, `B` or `G` and an id (8 bytes).
fn encode_stale(what: Stale) -> Bytes {
    let mut b = BytesMut::with_capacity(33);
    match what {
        Stale::Everything => b.put_u8(b'E'),
        Stale::Token(hash) => {
            b.put_u8(b'T');
            b.put_slice(&hash);
        }
        Stale::Friends(user) => {
            b.put_u8(b'F');
            b.put_i64(user.get());
        }
        Stale::Blocks(user) => {
            b.put_u8(b'B');
            b.put_i64(user.get());
        }
        Stale::Group(group) => {
            b.put_u8(b'G');
            b.put_i64(group.get());
        }
    }
    b.freeze()
}

fn decode_stale(mut b: Bytes) -> Option<Stale> {
    if b.is_empty() {
        return None;
    }
    let tag = b.get_u8();
    if tag == b'T' {
        return <[u8; 32]>::try_from(&b[..]).ok().map(Stale::Token);
    }
    if tag == b'E' {
        return b.is_empty().then_some(Stale::Everything);
    }
    if b.len() != 8 {
        return None;
    }
    let id = b.get_i64();
    match tag {
        b'F' => UserId::new(id).map(Stale::Friends),
        b'B' => UserId::new(id).map(Stale::Blocks),
        b'G' => GroupId::new(id).map(Stale::Group),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_notices_read_back_as_written() {
        let entries: Entries = vec![
            Entry {
                seq: 7,
                payload: Bytes::from_static(b"{\"a\":1}"),
                kind: EntryKind::Sent,
                origin: Some(3),
            },
            Entry {
                seq: 8,
                payload: Bytes::new(),
                kind: EntryKind::Event,
                origin: None,
            },
        ]
        .into();
        let Some(Message::Entries(back)) = Message::decode(Message::Entries(entries).encode())
        else {
            panic!("entries")
        };
        let back: Vec<_> = back
            .iter()
            .map(|e| (e.seq, e.kind, e.payload.clone(), e.origin))
            .collect();
        assert_eq!(
            back,
            [
                (7, EntryKind::Sent, Bytes::from_static(b"{\"a\":1}"), None),
                (8, EntryKind::Event, Bytes::new(), None)
            ]
        );
        for what in [
            Stale::Token([9; 32]),
            Stale::Friends(UserId::new(4).unwrap()),
            Stale::Blocks(UserId::new(5).unwrap()),
            Stale::Group(GroupId::new(6).unwrap()),
            Stale::Everything,
        ] {
            assert_eq!(decode_stale(encode_stale(what)), Some(what));
        }
        // Cut or unknown input is refused, never a panic.
        assert!(Message::decode(Bytes::from_static(b"E\0\0")).is_none());
        assert!(Message::decode(Bytes::from_static(b"?")).is_none());
        assert!(decode_stale(Bytes::from_static(b"F\0")).is_none());
    }
}
