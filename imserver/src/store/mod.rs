//! Durable storage behind traits split by concern, so that another database (PostgreSQL,
//! say) is an addition rather than an edit of the HTTP or relay code:
//!
//! - [`Accounts`]: users and their profiles;
//! - [`Tokens`]: login tokens, stored as hashes;
//! - [`Social`]: friendships, friend requests and blocks;
//! - [`Groups`]: groups and their members;
//! - [`Streams`]: every user's stream (messages received, messages sent from any device,
//!   group messages, and events), with its positions, read marks, history and conversations.
//!
//! [`Store`] is all five plus `close`. Errors are [`StoreError`], which names no backend's
//! types.
//!
//! The contract that keeps every stream gapless and in order on the live path: a stream
//! entry exists once its transaction has committed, and only then is it handed to the
//! store's [`Delivery`](crate::delivery::Delivery), in commit order, from one thread. A
//! change that appends events (a friend request accepted, say) commits them in the same
//! transaction as the change itself: both or neither.
//!
//! - `social`: the rules of the social graph, one function per operation, the same for every
//!   backend;
//! - `groups`: the rules of groups, likewise;
//! - `front`: the [`Store`] every backend is, over its writer and its queries;
//! - `queue`: the writer's queue of requests, and what it does after each commit;
//! - `acks`: acknowledgement positions, kept in memory and written now and then;
//! - `receipts`: what a read receipt says;
//! - `cache`: what every HTTP request reads, in memory;
//! - `sqlite/`: the embedded SQLite backend (the default);
//! - `postgres/`: the PostgreSQL backend, which several nodes share;
//! - `migrate`: `imserver migrate`, a SQLite store copied into PostgreSQL.

mod acks;
mod cache;
mod front;
pub mod groups;
pub mod migrate;
mod postgres;
mod queue;
mod receipts;
pub mod social;
mod sqlite;

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::config::{Backend, Secret, StoreConfig};
use crate::delivery::{ConnId, Delivery};
use crate::id::{Address, GroupId, UserId};

/// An event as it is stored in a stream: its frame's payload.
pub(crate) fn event_bytes(event: improto::Event) -> Bytes {
    // Events carry no time, and nothing else fails to encode.
    improto::Packet::from(event)
        .to_json()
        .expect("events always encode")
        .into()
}
pub use groups::{Group, GroupError};
pub use social::{RequestOutcome, SocialError};
pub use sqlite::{backup, restore};

/// Opens the store `config` names (creating and migrating it as needed), whose writer hands
/// every committed stream entry to `delivery`.
pub async fn open(
    config: &StoreConfig,
    delivery: Arc<dyn Delivery>,
) -> Result<Arc<dyn Store>, StoreError> {
    match &config.store {
        Backend::Sqlite => {
            let c = config.clone();
            let store = tokio::task::spawn_blocking(move || sqlite::open(&c, delivery))
                .await
                .map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
            Ok(Arc::new(store))
        }
        Backend::Postgres(Secret(url)) => {
            if config.retention.0.is_some() || config.retention_unacked.0.is_some() {
                return Err(StoreError::Backend(
                    "--retention and --retention-unacked work with --store sqlite only (for \
                     now): PostgreSQL keeps every entry"
                        .into(),
                ));
            }
            Ok(Arc::new(postgres::open(url, config, delivery).await?))
        }
    }
}

/// Storage failures. None of them is the client's fault; HTTP answers them with 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a statement, or could not be opened or migrated.
    #[error("database error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("storage i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Stored data the server cannot read back (it never writes such data).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// Every request of a group-committed transaction gets this when the transaction as a
    /// whole fails (a request that fails on its own fails alone).
    #[error("transaction failed: {0}")]
    Transaction(String),
    #[error("the store has shut down")]
    Closed,
}

/// A user as stored.
#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    pub account: Account,
}

/// What a user registered with.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub sex: String,
    pub email: String,
    pub signature: String,
    /// An argon2id PHC string; never the password.
    pub password_hash: String,
}

/// The hash of a login token: what the store keeps instead of the token.
pub type TokenHash = [u8; 32];

/// A login token as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRecord {
    pub user: UserId,
    /// Unix seconds; the token is refused from then on.
    pub expires_at: i64,
}

/// Messages one connection sent, in the order it sent them, to append in one request: each
/// to its receiver's stream (every member's, for a group), and a copy to its sender's own.
pub struct Appends {
    pub sender: UserId,
    /// The connection they came from, which is told by its replies rather than by the
    /// copies.
    pub origin: Option<ConnId>,
    /// `--relay-policy friends`: refuse a message unless sender and receiver are friends.
    pub friends_only: bool,
    pub messages: Vec<NewMessage>,
    /// Told what became of them.
    pub replies: Arc<dyn Replies>,
}

/// One message of an [`Appends`].
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub receiver: Address,
    /// The client's message id, for de-duplication of retries (protocol v2).
    pub client_id: Option<String>,
    /// The frame payload exactly as the sender sent it.
    pub payload: Bytes,
}

impl Appends {
    /// How many places the request takes in the store's queue.
    pub fn weight(&self) -> usize {
        self.messages.len().max(1)
    }
}

/// What became of one message of an [`Appends`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub client_id: Option<String>,
    /// The group it went to, if it was a group message.
    pub group: Option<GroupId>,
    pub appended: Appended,
}

/// The sender of an [`Appends`], told what became of its messages. Called on the store's
/// thread: quick, and never blocking.
pub trait Replies: Send + Sync + 'static {
    /// Once the messages are durable (or refused), before any entry they appended is
    /// delivered: each one's outcome, in order.
    fn replied(&self, outcomes: Vec<Outcome>);

    /// Messages could not be stored: `unstored` holds their client ids, in order (empty
    /// when they are not known); those before them were answered by
    /// [`replied`](Self::replied). Nothing of them is stored.
    fn failed(&self, error: StoreError, unstored: Vec<Option<String>>);
}

/// The outcome of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored (or stored before): `seq` is the copy's position in the *sender's* stream.
    Stored {
        seq: u64,
        /// True when `(sender, client_id)` was stored before: nothing new was written and
        /// `seq` is the earlier copy's.
        duplicate: bool,
    },
    /// Refused under `--relay-policy friends`; nothing was stored.
    NotFriends,
    /// To a group the sender is not a member of; nothing was stored.
    NotMember,
}

/// A stored stream entry: a message or an event, as its payload without `seq`.
#[derive(Debug, Clone)]
pub struct StoredEntry {
    pub seq: u64,
    pub payload: Bytes,
}

/// Where a stream stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    /// The highest `seq` assigned (0 for an empty stream).
    pub head: u64,
    /// The lowest `seq` still stored: retention deleted everything before it (1 when it
    /// deleted nothing; `head + 1` for an empty stream).
    pub oldest: u64,
    /// Everything up to here has been delivered and processed (on some device).
    pub acked: u64,
}

/// One page of a conversation, oldest first.
#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    pub messages: Vec<StoredEntry>,
    /// Older messages of the conversation exist than the page holds.
    pub more: bool,
}

/// A conversation as the list of conversations shows it.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// The other user, or the group.
    pub peer: Address,
    /// The newest message of the conversation.
    pub last: StoredEntry,
    /// Messages from others after the owner's read position in the conversation.
    pub unread: u64,
}

/// A pending friend request, from the side of one of its two users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FriendRequest {
    /// The other user.
    pub user: UserId,
    pub name: String,
    pub message: String,
    /// When it was made, in Unix seconds.
    pub at: i64,
}

/// A user's pending friend requests, both ways, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FriendRequests {
    pub incoming: Vec<FriendRequest>,
    pub outgoing: Vec<FriendRequest>,
}

/// What every store operation returns.
pub type StoreFuture<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// Called once every write queued before it has committed (or failed); see
/// [`Streams::barrier`].
pub type BarrierHook = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Users and their profiles.
pub trait Accounts {
    /// Creates a user and returns its id: `id` when given (the demo users), else the next
    /// after the highest. `Ok(None)` when the given `id` is taken.
    fn create_user(&self, id: Option<UserId>, account: Account) -> StoreFuture<'_, Option<UserId>>;

    /// A user by id.
    fn user(&self, id: UserId) -> StoreFuture<'_, Option<User>>;

    /// `user`'s last connection closed at `at` (Unix seconds). Returns once queued.
    fn seen(&self, user: UserId, at: i64) -> StoreFuture<'_, ()>;

    /// When `user`'s last connection closed, if ever (Unix seconds).
    fn last_seen(&self, user: UserId) -> StoreFuture<'_, Option<i64>>;

    /// Disables (`true`) or enables an account; disabling revokes all of its tokens.
    /// False when there is no such user.
    fn set_disabled(&self, user: UserId, disabled: bool) -> StoreFuture<'_, bool>;
}

/// Login tokens, by hash.
pub trait Tokens {
    /// Stores a login token's hash for `user`, and forgets expired tokens. False (nothing
    /// stored) when the account is disabled or gone.
    fn create_token(&self, hash: TokenHash, user: UserId, expires_at: i64)
    -> StoreFuture<'_, bool>;

    /// The token with this hash, expired or not.
    fn token(&self, hash: TokenHash) -> StoreFuture<'_, Option<TokenRecord>>;

    /// Deletes the token with this hash; false when there was none.
    fn revoke_token(&self, hash: TokenHash) -> StoreFuture<'_, bool>;
}

/// Friendships, friend requests and blocks. The rules are in [`social`]; every change that
/// tells a user something appends the event to their stream in the same transaction.
pub trait Social {
    /// A user's friends as `(id, name)`, in id order; `None` when the user does not exist.
    fn friends(&self, id: UserId) -> StoreFuture<'_, Option<Vec<(UserId, String)>>>;

    /// Makes `a` and `b` friends of each other without any event (the demo users).
    fn befriend(&self, a: UserId, b: UserId) -> StoreFuture<'_, ()>;

    /// `from` asks `to` to be friends, with an optional `message`; see
    /// [`social::request`].
    fn request_friend(
        &self,
        from: UserId,
        to: UserId,
        message: String,
    ) -> StoreFuture<'_, Result<RequestOutcome, SocialError>>;

    /// `me` accepts (or declines) the pending request from `from`.
    fn answer_request(
        &self,
        me: UserId,
        from: UserId,
        accept: bool,
    ) -> StoreFuture<'_, Result<(), SocialError>>;

    /// Ends the friendship of `me` and `them`, on both sides.
    fn unfriend(&self, me: UserId, them: UserId) -> StoreFuture<'_, Result<(), SocialError>>;

    /// `me` blocks `them`: ends their friendship and any pending requests between them.
    fn block(&self, me: UserId, them: UserId) -> StoreFuture<'_, Result<(), SocialError>>;

    /// `me` no longer blocks `them`.
    fn unblock(&self, me: UserId, them: UserId) -> StoreFuture<'_, Result<(), SocialError>>;

    /// The pending requests to and from `me`.
    fn friend_requests(&self, me: UserId) -> StoreFuture<'_, FriendRequests>;

    /// The users `me` blocks, as `(id, name)`, in id order.
    fn blocks(&self, me: UserId) -> StoreFuture<'_, Vec<(UserId, String)>>;

    /// Whether `blocker` blocks `blocked` (from the store's cache when it can).
    fn blocks_user(&self, blocker: UserId, blocked: UserId) -> StoreFuture<'_, bool>;
}

/// Groups and their members. The rules are in [`groups`]; every change appends its events to
/// the members' streams in the same transaction. `max` is `--max-group-members`.
pub trait Groups {
    /// `owner` makes a group named `name` (checked by [`groups::name`]) with `members` and
    /// the owner; unknown users refuse it.
    fn create_group(
        &self,
        owner: UserId,
        name: String,
        members: Vec<UserId>,
        max: usize,
    ) -> StoreFuture<'_, Result<GroupId, GroupError>>;

    /// A group as it stands.
    fn group(&self, id: GroupId) -> StoreFuture<'_, Option<Arc<Group>>>;

    /// The groups `user` is a member of, in the order they joined them.
    fn groups_of(&self, user: UserId) -> StoreFuture<'_, Vec<GroupId>>;

    /// `actor` adds `user` to `group`; see [`groups::add`].
    fn add_member(
        &self,
        actor: UserId,
        group: GroupId,
        user: UserId,
        max: usize,
    ) -> StoreFuture<'_, Result<(), GroupError>>;

    /// `actor` removes `user` from `group` (themselves: leaving); see [`groups::remove`].
    fn remove_member(
        &self,
        actor: UserId,
        group: GroupId,
        user: UserId,
    ) -> StoreFuture<'_, Result<(), GroupError>>;

    /// `actor` renames `group`; see [`groups::rename`].
    fn rename_group(
        &self,
        actor: UserId,
        group: GroupId,
        name: String,
    ) -> StoreFuture<'_, Result<(), GroupError>>;
}

/// Every user's stream.
pub trait Streams {
    /// Appends each message to its receiver's stream and a copy to its sender's, each with
    /// the next `seq` of that stream, in one transaction. A receiver who blocks the sender
    /// gets nothing; the sender's copy is stored all the same.
    ///
    /// Returns once the request is queued (waiting only for queue space, which is how
    /// senders are slowed under overload). After the commit the request's `replies` are
    /// told first (the sender's `Ack`s), then its entries go to the store's `Delivery`.
    /// Requests are answered in the order they were queued.
    fn append(&self, appends: Appends) -> StoreFuture<'_, ()>;

    /// Where `owner`'s stream stands.
    fn position(&self, owner: UserId) -> StoreFuture<'_, Position>;

    /// Up to `limit` entries of `owner`'s stream with `seq > after`, in order.
    fn read_stream(
        &self,
        owner: UserId,
        after: u64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<StoredEntry>>;

    /// Records that `owner` has processed everything up to `seq` (never moves backwards, never
    /// past the head). Returns once queued, like [`append`](Streams::append): writes are
    /// applied in the order they were queued.
    fn ack(&self, owner: UserId, seq: u64) -> StoreFuture<'_, ()>;

    /// Records that `owner` has read the conversation with `peer` up to `seq` of their own
    /// stream (never backwards, never past the head). Returns once queued.
    fn mark_read(&self, owner: UserId, peer: Address, seq: u64) -> StoreFuture<'_, ()>;

    /// Calls `done` once every write queued before this call has committed, from the same
    /// thread and in the same order as the [`Replies`] of appends. Returns once queued. The relay answers
    /// `Ping` through it: a `Pong` proves the connection's earlier frames have taken effect.
    fn barrier(&self, done: BarrierHook) -> StoreFuture<'_, ()>;

    /// The newest `limit` messages between `owner` and `peer` (or in group `peer`) with
    /// `seq < before` (all when `None`), from `owner`'s stream, oldest first.
    fn history(
        &self,
        owner: UserId,
        peer: Address,
        before: Option<u64>,
        limit: usize,
    ) -> StoreFuture<'_, HistoryPage>;

    /// `owner`'s `limit` most recent conversations, most recent first.
    fn conversations(&self, owner: UserId, limit: usize) -> StoreFuture<'_, Vec<Conversation>>;
}

/// The server's storage.
pub trait Store: Accounts + Tokens + Social + Groups + Streams + Send + Sync + 'static {
    /// Answers once a read and a round trip through the write queue succeed: the store
    /// can serve (`/readyz`).
    fn ready(&self) -> StoreFuture<'_, ()>;

    /// Finishes queued writes and stops; later calls fail with [`StoreError::Closed`].
    fn close(&self) -> BoxFuture<'_, ()>;

    /// Another node's commit made `what` stale: the cache forgets it.
    fn forget(&self, what: crate::delivery::Stale);

    /// `user` opened relay connection `conn` on this node: false when they have `max`
    /// already, counted on every node that shares the store (`--max-connections-per-user`).
    /// A store that serves one node answers true: the relay counts its own connections.
    fn claim_connection(&self, user: UserId, conn: ConnId, max: usize) -> StoreFuture<'_, bool>;

    /// Connection `conn` of `user`, claimed before, has closed.
    fn release_connection(&self, user: UserId, conn: ConnId) -> StoreFuture<'_, ()>;
}
