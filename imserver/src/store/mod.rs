//! Durable storage behind a trait, so that another database (PostgreSQL, say) can be added
//! without touching the HTTP or relay code.
//!
//! The relay's contract with the store is in [`Store::append`]: a message is relayed only
//! after its transaction commits, and commit hooks run in commit order, which is what keeps
//! each receiver's `seq` order on the live path.

mod cache;
mod sqlite;

use bytes::Bytes;
use futures::future::BoxFuture;

pub use sqlite::{SqliteStore, StoreLimits};

/// A user's numeric id. On the wire it is a decimal string.
pub type UserId = i64;

/// Storage failures. None of them is the client's fault; HTTP answers them with 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("storage i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Every request of a group-committed transaction gets this when the transaction fails.
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

/// A message to append to `receiver`'s inbox.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The inbox owner: a user id as it appears on the wire (in `--auth open` mode a relay
    /// user need not have an account).
    pub receiver: String,
    pub sender: String,
    /// The client's message id, for de-duplication of retries (protocol v2).
    pub client_id: Option<String>,
    /// The frame payload exactly as the sender sent it.
    pub payload: Bytes,
}

/// The outcome of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The message's position in the receiver's inbox.
    pub seq: u64,
    /// True when `(sender, client_id)` was stored before: nothing new was written and `seq`
    /// is the earlier copy's.
    pub duplicate: bool,
}

/// A stored message, for replay.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub seq: u64,
    pub payload: Bytes,
}

/// Where an inbox stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inbox {
    /// The highest `seq` assigned (0 for an empty inbox).
    pub head: u64,
    /// Everything up to here has been delivered and processed.
    pub acked: u64,
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

/// What every store operation returns.
pub type StoreFuture<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// Called once an append has committed (or failed); see [`Store::append`].
pub type CommitHook = Box<dyn FnOnce(Result<Appended, StoreError>) + Send>;

/// Called once every write queued before it has committed (or failed); see [`Store::barrier`].
pub type BarrierHook = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// The server's storage.
pub trait Store: Send + Sync + 'static {
    /// Creates a user and returns its id: `id` when given (the demo users), else the next
    /// after the highest. `Ok(None)` when the given `id` is taken.
    fn create_user(&self, id: Option<UserId>, account: Account) -> StoreFuture<'_, Option<UserId>>;

    /// A user by id.
    fn user(&self, id: UserId) -> StoreFuture<'_, Option<User>>;

    /// A user's friends as `(id, name)`, in id order; `None` when the user does not exist.
    fn friends(&self, id: UserId) -> StoreFuture<'_, Option<Vec<(UserId, String)>>>;

    /// Makes `a` and `b` friends of each other (idempotent).
    fn befriend(&self, a: UserId, b: UserId) -> StoreFuture<'_, ()>;

    /// Appends a message to its receiver's inbox, assigning the next `seq` in the same
    /// transaction.
    ///
    /// Returns once the request is queued (waiting only for queue space, which is how
    /// senders are slowed under overload). `done` is called after the transaction has
    /// committed, or with the error if it failed. Hooks are called in the order the appends
    /// were queued, so each receiver sees its `seq`s in increasing order. Hooks run on the
    /// store's thread: they must be quick and must not block.
    fn append(&self, msg: NewMessage, done: CommitHook) -> StoreFuture<'_, ()>;

    /// Where `owner`'s inbox stands.
    fn inbox(&self, owner: &str) -> StoreFuture<'_, Inbox>;

    /// Up to `limit` messages of `owner`'s inbox with `seq > after`, in order.
    fn read_inbox(
        &self,
        owner: &str,
        after: u64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<StoredMessage>>;

    /// Records that `owner` has processed everything up to `seq` (never moves backwards, never
    /// past the inbox's head). Returns once queued, like [`append`](Store::append): writes are
    /// applied in the order they were queued, so a later read through the same store sees it
    /// once a later write has committed.
    fn ack(&self, owner: &str, seq: u64) -> StoreFuture<'_, ()>;

    /// Calls `done` once every write queued before this call has committed, from the same
    /// thread and in the same order as commit hooks. Returns once queued. The relay answers
    /// `Ping` through it: a `Pong` proves the connection's earlier frames have taken effect.
    fn barrier(&self, done: BarrierHook) -> StoreFuture<'_, ()>;

    /// Stores a login token's hash for `user`, and forgets expired tokens.
    fn create_token(&self, hash: TokenHash, user: UserId, expires_at: i64) -> StoreFuture<'_, ()>;

    /// The token with this hash, expired or not.
    fn token(&self, hash: TokenHash) -> StoreFuture<'_, Option<TokenRecord>>;

    /// Deletes the token with this hash; false when there was none.
    fn revoke_token(&self, hash: TokenHash) -> StoreFuture<'_, bool>;

    /// Finishes queued writes and stops; later calls fail with [`StoreError::Closed`].
    fn close(&self) -> BoxFuture<'_, ()>;
}
