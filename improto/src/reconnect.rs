//! [`Reconnecting`]: a client that keeps the user's stream for the app.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{
    Ack, Client, ClientReceiver, ClientSender, ErrorCode, Event, Message, Packet, Presence,
    ProtoError, Regist, Registered, Typing,
};

/// What a [`Reconnecting`] client remembers between runs of the app.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    /// This device's tag, the first part of every message id it makes.
    pub device: String,
    /// The counter of the next message id.
    pub next_id: u64,
    /// The highest `seq` of the user's stream the app has processed.
    pub last_seq: u64,
    /// Messages sent but not acknowledged yet, in the order they were sent.
    #[serde(with = "packets")]
    pub outbox: Vec<Message>,
}

/// Messages (de)serialized as the packets they are on the wire.
mod packets {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::{Message, Packet};

    pub fn serialize<S: Serializer>(messages: &[Message], s: S) -> Result<S::Ok, S::Error> {
        let packets: Vec<Packet> = messages.iter().cloned().map(Packet::Message).collect();
        packets.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Message>, D::Error> {
        let values = Vec::<serde_json::Value>::deserialize(d)?;
        values
            .into_iter()
            .map(|v| match Packet::from_json(v.to_string().as_bytes()) {
                Ok(Packet::Message(m)) => Ok(m),
                Ok(_) => Err(D::Error::custom("not a Message")),
                Err(e) => Err(D::Error::custom(e)),
            })
            .collect()
    }
}

/// Where a [`Reconnecting`] client keeps its [`Saved`] state. [`FileState`] keeps it in a
/// file; an app with a database of its own implements this on it.
pub trait ClientState: Send + 'static {
    /// The state saved last, or the default for a new device.
    fn load(&mut self) -> impl Future<Output = io::Result<Saved>> + Send;
    /// Replaces the saved state; done when it would survive the app's crash.
    fn save(&mut self, state: &Saved) -> impl Future<Output = io::Result<()>> + Send;
}

/// A [`ClientState`] in a JSON file, replaced atomically (written aside, synced, renamed).
#[derive(Debug, Clone)]
pub struct FileState {
    path: PathBuf,
}

impl FileState {
    /// State kept in `path` (created on the first save).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileState { path: path.into() }
    }
}

impl ClientState for FileState {
    async fn load(&mut self) -> io::Result<Saved> {
        match tokio::fs::read(&self.path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(io::Error::other),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Saved::default()),
            Err(e) => Err(e),
        }
    }

    async fn save(&mut self, state: &Saved) -> io::Result<()> {
        let json = serde_json::to_vec(state).map_err(io::Error::other)?;
        let mut aside = self.path.clone().into_os_string();
        aside.push(".tmp");
        let file = tokio::fs::File::create(&aside).await?;
        let mut file = tokio::io::BufWriter::new(file);
        tokio::io::AsyncWriteExt::write_all(&mut file, &json).await?;
        tokio::io::AsyncWriteExt::flush(&mut file).await?;
        file.get_ref().sync_data().await?;
        tokio::fs::rename(&aside, &self.path).await
    }
}

/// A [`ClientState`] in memory only: everything is forgotten with the client.
#[derive(Debug, Clone, Default)]
pub struct MemoryState(pub Saved);

impl ClientState for MemoryState {
    async fn load(&mut self) -> io::Result<Saved> {
        Ok(self.0.clone())
    }

    async fn save(&mut self, state: &Saved) -> io::Result<()> {
        self.0 = state.clone();
        Ok(())
    }
}

/// How to reach the server, and how patiently.
#[derive(Debug, Clone)]
pub struct ReconnectOptions {
    /// The relay's address, `host:port`.
    pub addr: String,
    /// The user this device speaks for.
    pub user: String,
    /// A login token of that user.
    pub token: String,
    /// The first wait after a lost or failed connection; it doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// TLS to the relay (`--tls-cert` on the server): see [`ReconnectOptions::with_tls`].
    #[cfg(feature = "tls")]
    pub tls: Option<TlsTarget>,
}

/// Whom a TLS connection must reach: the name the server's certificate must carry, and the
/// roots it must chain to.
#[cfg(feature = "tls")]
#[derive(Debug, Clone)]
pub struct TlsTarget {
    /// The server's name, as in its certificate (`chat.example.com`).
    pub server_name: String,
    /// The trusted roots.
    pub roots: crate::rustls::RootCertStore,
}

impl ReconnectOptions {
    /// `user` at `addr` with `token`; waits of 200 ms to 30 s between attempts.
    pub fn new(addr: impl Into<String>, user: impl Into<String>, token: impl Into<String>) -> Self {
        ReconnectOptions {
            addr: addr.into(),
            user: user.into(),
            token: token.into(),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Connects over TLS (see [`Client::connect_tls`]), to a server whose certificate names
    /// `server_name` and chains to `roots`.
    #[cfg(feature = "tls")]
    pub fn with_tls(
        mut self,
        server_name: impl Into<String>,
        roots: crate::rustls::RootCertStore,
    ) -> Self {
        self.tls = Some(TlsTarget {
            server_name: server_name.into(),
            roots,
        });
        self
    }
}

/// What a [`Reconnecting`] client hands the app.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Item {
    /// An entry of the user's stream: a message to the user, or one the user sent from
    /// another device (its `sender` is the user). Its `seq` is set.
    Message(Message),
    /// A message this device sent is stored: the entry at `seq` of the stream.
    Sent {
        /// Its client id.
        id: String,
        /// Its position in the user's stream.
        seq: u64,
        /// The message as it was sent.
        message: Message,
    },
    /// An event of the user's stream (a friend request, a group change, a read receipt).
    /// Its `seq` is set.
    Event(Event),
    /// Someone is typing to the user (or to one of their groups). Live only: not an entry of
    /// the stream, and gone after a reconnect.
    Typing(Typing),
    /// A friend came online or went offline. Live only.
    Presence(Presence),
    /// A message this device sent was refused and will not be sent again.
    Refused {
        /// The message.
        message: Message,
        /// Why.
        code: ErrorCode,
        /// The server's explanation.
        reason: String,
    },
    /// Connected (again): the head of the user's stream, as the server has it.
    Connected {
        /// The server's `Registered.seq`.
        head: u64,
        /// The server's `Registered.oldestSeq`: set when entries after the device's last
        /// one were deleted by the server's retention before this device got them. The
        /// stream goes on at this `seq`; what lies between is gone.
        oldest: Option<u64>,
    },
    /// The connection was lost; the client is reconnecting.
    Disconnected {
        /// What happened.
        reason: String,
    },
    /// The server refused the token (expired or revoked, say): log in again and start a
    /// new client. Nothing more comes after this.
    Unauthorized,
}

impl Item {
    /// The position in the user's stream of an entry.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Item::Message(m) => m.seq,
            Item::Event(e) => e.seq,
            Item::Sent { seq, .. } => Some(*seq),
            _ => None,
        }
    }
}

/// The client's task is gone (the client was closed, or its state could not be saved).
#[derive(Debug, thiserror::Error)]
#[error("the reconnecting client has stopped")]
pub struct Stopped;

impl From<Stopped> for io::Error {
    fn from(e: Stopped) -> Self {
        io::Error::other(e)
    }
}

/// Where the app stands, as the task sees it: never blocks the app to tell.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// Everything up to this `seq` is processed.
    processed: u64,
    /// The app has closed the client.
    closing: bool,
}

/// A client that does, for the app, everything `PROTOCOL.md` asks of one: it stays
/// connected, resumes where the device left off, resends what the server has not
/// acknowledged, acknowledges what the app has processed, and hands the app each entry of
/// the user's stream exactly once, in order.
///
/// ```no_run
/// use improto::{FileState, Item, Reconnecting, ReconnectOptions};
///
/// # async fn chat(token: String) -> std::io::Result<()> {
/// let state = FileState::new("user-7.json");
/// let mut client = Reconnecting::start(ReconnectOptions::new("127.0.0.1:8888", "7", token), state).await?;
/// client.sender().send("9", "hello").await?;
/// while let Some(item) = client.next().await {
///     match item {
///         Item::Message(m) => println!("{}: {}", m.sender, m.message),
///         Item::Sent { message, seq, .. } => println!("(stored as #{seq}) {}", message.message),
///         Item::Event(e) => println!("{} {:?}", e.kind, e.user),
///         other => println!("{other:?}"),
///     }
///     // Everything handed out before this call counts as processed (and is remembered).
/// }
/// # Ok(()) }
/// ```
///
/// What it keeps in its [`ClientState`] (a file with [`FileState`]): the highest `seq` the
/// app has processed, the messages sent but not yet acknowledged, and this device's message
/// id counter. A message id is the time (in milliseconds), this device's random tag and a
/// counter, each of a fixed width: ids never repeat, and they grow in the order they were
/// made, across all of the user's devices as far as their clocks agree (which keeps the
/// server's de-duplication cheap).
///
/// Call [`next`](Self::next) regularly: a client whose items are not taken stops reading
/// from the server, which then disconnects it as a slow reader (nothing is lost; it catches
/// up when it reconnects).
pub struct Reconnecting {
    messages: mpsc::Sender<Outgoing>,
    items: mpsc::Receiver<Item>,
    progress: tokio::sync::watch::Sender<Progress>,
    /// The `seq` of the last entry handed out, processed once the app asks for the next.
    handed: Option<u64>,
    task: JoinHandle<()>,
}

/// Sends messages through a [`Reconnecting`] client; clone it for other tasks.
#[derive(Clone)]
pub struct MessageSender {
    messages: mpsc::Sender<Outgoing>,
}

/// A message from the app, and who to tell once it is saved.
type Outgoing = (Message, tokio::sync::oneshot::Sender<()>);

/// How many items may wait for the app before the client stops reading the connection.
const ITEM_QUEUE: usize = 256;

/// Acknowledge the server at least this often while entries are being processed.
const ACK_EVERY: u64 = 64;

impl Reconnecting {
    /// Loads `state` and starts connecting.
    pub async fn start<S: ClientState>(
        options: ReconnectOptions,
        mut state: S,
    ) -> io::Result<Self> {
        let mut saved = state.load().await?;
        if saved.device.is_empty() {
            saved.device = format!("{:08x}", random_u32());
            state.save(&saved).await?;
        }
        let (messages, messages_rx) = mpsc::channel(64);
        let (items_tx, items) = mpsc::channel(ITEM_QUEUE);
        let progress = Progress {
            processed: saved.last_seq,
            closing: false,
        };
        let (progress_tx, progress_rx) = tokio::sync::watch::channel(progress);
        let task = Task {
            delivered: saved.last_seq,
            acked: saved.last_seq,
            options,
            saved,
            state,
            items: items_tx,
            progress: progress_rx,
            retry_later: VecDeque::new(),
        };
        let task = tokio::spawn(task.run(messages_rx));
        Ok(Reconnecting {
            messages,
            items,
            progress: progress_tx,
            handed: None,
            task,
        })
    }

    /// A handle that sends messages, for this task or another.
    pub fn sender(&self) -> MessageSender {
        MessageSender {
            messages: self.messages.clone(),
        }
    }

    /// The next item, waiting for it. The entry handed out before (if any) now counts as
    /// processed: it is remembered in the state and acknowledged to the server, and never
    /// handed out again. `None` once the client has stopped.
    pub async fn next(&mut self) -> Option<Item> {
        self.processed();
        let item = self.items.recv().await?;
        self.handed = item.seq();
        Some(item)
    }

    fn processed(&mut self) {
        if let Some(seq) = self.handed.take() {
            self.progress
                .send_modify(|p| p.processed = p.processed.max(seq));
        }
    }

    /// Marks what was handed out as processed, saves the state, acknowledges the server
    /// and stops.
    pub async fn close(mut self) {
        self.processed();
        self.progress.send_modify(|p| p.closing = true);
        // Items still on their way are not processed: they come again next time.
        self.items.close();
        let _ = self.task.await;
    }
}

impl MessageSender {
    /// Sends `text` to `to`: saved in the outbox first, then sent whenever the client is
    /// connected, again after every reconnect until the server acknowledges it (an
    /// [`Item::Sent`], or [`Item::Refused`]). Returns once it is saved: from then on it is
    /// not lost, whatever happens to the app or the connection.
    pub async fn send(
        &self,
        to: impl Into<String>,
        text: impl Into<String>,
    ) -> Result<(), Stopped> {
        let (saved, done) = tokio::sync::oneshot::channel();
        let message = Message::new("", to, text);
        self.messages
            .send((message, saved))
            .await
            .map_err(|_| Stopped)?;
        done.await.map_err(|_| Stopped)
    }
}

/// The background task: the connection, the state, and the rules.
struct Task<S> {
    options: ReconnectOptions,
    saved: Saved,
    state: S,
    items: mpsc::Sender<Item>,
    progress: tokio::sync::watch::Receiver<Progress>,
    /// The highest `seq` handed to the app (processed or not): what the client resumes
    /// after, so nothing is handed out twice.
    delivered: u64,
    /// The highest `seq` acknowledged to the server.
    acked: u64,
    /// Ids refused with `rate_limited`, to send again after a while.
    retry_later: VecDeque<String>,
}

/// Why a connection ended.
enum End {
    /// The app closed the client.
    Closed,
    /// The token is no good; stop for good.
    Unauthorized,
    /// Lost; reconnect.
    Lost(String),
}

impl<S: ClientState> Task<S> {
    async fn run(mut self, mut messages: mpsc::Receiver<Outgoing>) {
        let mut backoff = self.options.min_backoff;
        loop {
            let end = match self.connect().await {
                Ok((tx, rx, live)) => {
                    backoff = self.options.min_backoff;
                    self.tell(Item::Connected {
                        head: live.seq,
                        oldest: live.oldest_seq,
                    });
                    self.serve(tx, rx, &mut messages).await
                }
                Err(ProtoError::Refused {
                    code: ErrorCode::Unauthorized,
                    ..
                }) => End::Unauthorized,
                Err(e) => End::Lost(e.to_string()),
            };
            match end {
                End::Closed => return,
                End::Unauthorized => {
                    let _ = self.items.send(Item::Unauthorized).await;
                    return;
                }
                End::Lost(reason) => {
                    if self
                        .items
                        .send(Item::Disconnected { reason })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            // Wait before the next attempt, still taking the app's messages and progress.
            let wait = tokio::time::sleep(jitter(backoff));
            tokio::pin!(wait);
            loop {
                let step = tokio::select! {
                    () = &mut wait => break,
                    message = messages.recv() => match message {
                        None => Err(End::Closed),
                        Some(m) => self.queue(m, None).await,
                    },
                    changed = self.progress.changed() => match changed {
                        Ok(()) => self.progressed(None, &mut messages).await,
                        Err(_) => Err(End::Closed),
                    },
                };
                if step.is_err() {
                    return;
                }
            }
            backoff = (backoff * 2).min(self.options.max_backoff);
        }
    }

    async fn connect(&mut self) -> Result<(ClientSender, ClientReceiver, Registered), ProtoError> {
        let addr = &self.options.addr;
        #[cfg(feature = "tls")]
        let mut client = match &self.options.tls {
            Some(tls) => Client::connect_tls(addr, &tls.server_name, tls.roots.clone()).await?,
            None => Client::connect(addr).await?,
        };
        #[cfg(not(feature = "tls"))]
        let mut client = Client::connect(addr).await?;
        let regist =
            Regist::v2(&self.options.user, &self.options.token).resume_after(self.delivered);
        let live = client.handshake(regist).await?;
        let (mut tx, rx) = client.split();
        // Everything not acknowledged yet, again, with its id: the server stores each once.
        for m in &self.saved.outbox {
            tx.feed(m.clone()).await?;
        }
        tx.flush().await?;
        self.retry_later.clear();
        Ok((tx, rx, live))
    }

    /// One connection, until it ends.
    async fn serve(
        &mut self,
        mut tx: ClientSender,
        mut rx: ClientReceiver,
        messages: &mut mpsc::Receiver<Outgoing>,
    ) -> End {
        let mut retry = tokio::time::interval(Duration::from_secs(1));
        loop {
            let step = tokio::select! {
                // Only with room for what a packet hands out: the app's messages and progress
                // are taken even while it is not taking items.
                packet = rx.recv(), if self.items.capacity() > 0 => match packet {
                    Ok(Some(packet)) => self.packet(packet).await,
                    Ok(None) => Err(End::Lost("closed by the server".into())),
                    Err(e) if e.is_fatal() => Err(End::Lost(e.to_string())),
                    Err(_) => Ok(()), // one bad packet; the stream goes on
                },
                message = messages.recv() => match message {
                    None => Err(End::Closed),
                    Some(m) => self.queue(m, Some(&mut tx)).await,
                },
                changed = self.progress.changed() => match changed {
                    Ok(()) => self.progressed(Some(&mut tx), messages).await,
                    Err(_) => Err(End::Closed),
                },
                _ = retry.tick(), if !self.retry_later.is_empty() => self.resend_later(&mut tx).await,
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Sends again what was refused as over the rate limit, or as not storable now.
    async fn resend_later(&mut self, tx: &mut ClientSender) -> Result<(), End> {
        while let Some(id) = self.retry_later.pop_front() {
            if let Some(m) = self
                .saved
                .outbox
                .iter()
                .find(|m| m.id.as_deref() == Some(&id))
            {
                tx.feed(m.clone()).await.map_err(lost)?;
            }
        }
        tx.flush().await.map_err(lost)
    }

    /// A message from the app: an id, into the outbox (saved, and the app told), and out if
    /// connected.
    async fn queue(
        &mut self,
        (mut m, saved): Outgoing,
        tx: Option<&mut ClientSender>,
    ) -> Result<(), End> {
        m.sender = self.options.user.clone();
        // Time first, so that the ids of all of a user's devices grow together.
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let id = format!(
            "{millis:012x}-{}-{:016x}",
            self.saved.device, self.saved.next_id
        );
        self.saved.next_id += 1;
        m.id = Some(id);
        self.saved.outbox.push(m.clone());
        self.save().await?;
        let _ = saved.send(());
        if let Some(tx) = tx {
            tx.send(m).await.map_err(lost)?;
        }
        Ok(())
    }

    /// The app has processed more, or is closing: remember it, and tell the server now and
    /// then (always when the app has caught up, or closes). Messages the app sent before it
    /// closed are saved (and sent, when connected) first.
    async fn progressed(
        &mut self,
        mut tx: Option<&mut ClientSender>,
        messages: &mut mpsc::Receiver<Outgoing>,
    ) -> Result<(), End> {
        let Progress { processed, closing } = *self.progress.borrow_and_update();
        if closing {
            while let Ok(m) = messages.try_recv() {
                self.queue(m, tx.as_deref_mut()).await?;
            }
        }
        if processed > self.saved.last_seq {
            self.saved.last_seq = processed;
            self.save().await?;
        }
        let caught_up = self.items.capacity() == self.items.max_capacity();
        if let Some(tx) = tx
            && self.saved.last_seq > self.acked
            && (caught_up || closing || self.saved.last_seq - self.acked >= ACK_EVERY)
        {
            tx.send(Ack::new(self.saved.last_seq)).await.map_err(lost)?;
            self.acked = self.saved.last_seq;
        }
        if closing {
            return Err(End::Closed);
        }
        Ok(())
    }

    async fn packet(&mut self, packet: Packet) -> Result<(), End> {
        match packet {
            Packet::Message(m) => {
                let Some(seq) = self.next_entry(m.seq)? else {
                    return Ok(());
                };
                // Our own message, seen in the replay before (or instead of) its Ack.
                if m.sender == self.options.user
                    && let Some(sent) = self.take_from_outbox(m.id.as_deref()).await?
                {
                    let id = sent.id.clone().unwrap_or_default();
                    return self
                        .hand(Item::Sent {
                            id,
                            seq,
                            message: sent,
                        })
                        .await;
                }
                self.hand(Item::Message(m)).await
            }
            Packet::Event(e) => {
                if self.next_entry(e.seq)?.is_none() {
                    return Ok(());
                }
                self.hand(Item::Event(e)).await
            }
            Packet::Ack(a) => {
                if a.seq <= self.delivered {
                    return Ok(()); // seen already, in the replay
                }
                let Some(message) = self.take_from_outbox(a.id.as_deref()).await? else {
                    // An entry of ours we have no copy of (the outbox was lost): its copy is
                    // in the stream, which a reconnect replays from here.
                    return Err(End::Lost(format!(
                        "no copy of the message stored at {}",
                        a.seq
                    )));
                };
                let Some(seq) = self.next_entry(Some(a.seq))? else {
                    return Ok(());
                };
                let id = message.id.clone().unwrap_or_default();
                self.hand(Item::Sent { id, seq, message }).await
            }
            Packet::Typing(t) => self.hand(Item::Typing(t)).await,
            Packet::Presence(p) => self.hand(Item::Presence(p)).await,
            Packet::Error(e) => match (&e.code, e.id) {
                (ErrorCode::RateLimited | ErrorCode::Unavailable, Some(id)) => {
                    self.retry_later.push_back(id);
                    Ok(())
                }
                (code, Some(id)) if !code.closes() => {
                    if let Some(message) = self.take_from_outbox(Some(&id)).await? {
                        let refused = Item::Refused {
                            message,
                            code: e.code,
                            reason: e.message,
                        };
                        self.hand(refused).await?;
                    }
                    Ok(())
                }
                (ErrorCode::Unauthorized, _) => Err(End::Unauthorized),
                _ if e.code.closes() => Err(End::Lost(format!("{}: {}", e.code, e.message))),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// The `seq` of an incoming entry if it is the next one; `None` if it was handed out
    /// already. A gap (which the server never leaves) reconnects, to be filled by replay.
    fn next_entry(&mut self, seq: Option<u64>) -> Result<Option<u64>, End> {
        let Some(seq) = seq else {
            return Err(End::Lost("an entry without a seq".into()));
        };
        if seq <= self.delivered {
            return Ok(None);
        }
        if seq != self.delivered + 1 {
            return Err(End::Lost(format!(
                "entry {seq} after {}: reconnecting to fill the gap",
                self.delivered
            )));
        }
        self.delivered = seq;
        Ok(Some(seq))
    }

    async fn take_from_outbox(&mut self, id: Option<&str>) -> Result<Option<Message>, End> {
        let Some(id) = id else { return Ok(None) };
        let Some(i) = self
            .saved
            .outbox
            .iter()
            .position(|m| m.id.as_deref() == Some(id))
        else {
            return Ok(None);
        };
        let m = self.saved.outbox.remove(i);
        self.save().await?;
        Ok(Some(m))
    }

    async fn hand(&mut self, item: Item) -> Result<(), End> {
        self.items.send(item).await.map_err(|_| End::Closed)
    }

    /// News about the connection, dropped when the app has not taken what came before.
    fn tell(&self, item: Item) {
        let _ = self.items.try_send(item);
    }

    async fn save(&mut self) -> Result<(), End> {
        // Without its state the client cannot keep its promises: stop rather than guess.
        self.state.save(&self.saved).await.map_err(|_| End::Closed)
    }
}

fn lost(e: ProtoError) -> End {
    End::Lost(e.to_string())
}

/// `wait`, give or take a fifth, so that many clients cut off at once do not all come back
/// at the same moment.
fn jitter(wait: Duration) -> Duration {
    let spread = wait.as_millis() as u64 / 5;
    let offset = if spread == 0 {
        0
    } else {
        u64::from(random_u32()) % (2 * spread)
    };
    Duration::from_millis(wait.as_millis() as u64 - spread + offset)
}

/// A few random bits, from the clock and the address space: enough for a device tag and for
/// jitter, not for secrets.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(nanos);
    h.finish() as u32
}
