//! The SQLite store: WAL mode, versioned migrations, one writer thread with group commit,
//! and a few reader threads, each with a read-only connection.
//!
//! No SQLite call ever runs on a tokio worker thread. Writes go over a queue of
//! `--store-queue` places to the writer thread (`writer.rs`); reads run on `--store-readers`
//! threads ([`Workers`]), each with a read-only connection of its own (`reads.rs`). Reads
//! that every HTTP request makes go through a cache (`../cache.rs`), which the writer keeps
//! exact.
//!
//! - `schema`: the migrations;
//! - `chunk`: how streams are stored (every payload once; a row per stream per transaction);
//! - `ids`: client message ids, for de-duplication;
//! - `draft`: what one transaction appends, gathered until its end;
//! - `fold`: a transaction's chunk rows written in order, moved to the streams' tables in bulk;
//! - `acks`: acknowledgement positions, in memory and written now and then;
//! - `writer`: the writer thread, its batches and requests;
//! - `append`: messages (one to one, and fanned out to a group's members);
//! - `social`, `groups`: the social graph's and groups' changes, with their events;
//! - `receipts`: read positions and read receipts;
//! - `retention`: deleting old entries in the background (`--retention`);
//! - `reads`: the queries.

mod acks;
mod append;
mod backup;
mod chunk;
mod draft;
mod fold;
mod groups;
mod ids;
mod reads;
mod receipts;
mod retention;
mod schema;
mod social;
mod writer;

pub use backup::{backup, restore};

use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use acks::AckBook;
use futures::FutureExt;
use futures::future::BoxFuture;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Semaphore, mpsc, oneshot};
use writer::{BatchLimits, Queued, Reply, Request, SocialOp, Writer};

use self::groups::GroupOp;

use super::cache::{ReadCache, Table};
use super::{
    Account, Accounts, Appends, BarrierHook, Conversation, FriendRequests, Group, GroupError,
    Groups, HistoryPage, Position, RequestOutcome, Social, SocialError, Store, StoreError,
    StoreFuture, StoredEntry, Streams, TokenHash, TokenRecord, Tokens, User,
};
use crate::config::{Durability, StoreConfig};
use crate::delivery::Delivery;
use crate::id::{Address, GroupId, UserId};
use crate::workers::Workers;

const DB_FILE: &str = "imserver.sqlite3";

/// Starts a thread that asks the writer for `request()` whenever it is `Some`, and then
/// waits for what `wait` makes of the answer; the first wait is `first`. A full queue is a
/// busy writer: it is asked again after `first`. The thread ends with the writer.
fn ask_writer_every<T: Send + 'static>(
    name: &str,
    first: Duration,
    writes: &mpsc::UnboundedSender<Queued>,
    places: &Arc<Semaphore>,
    request: impl Fn() -> Option<(Request, Option<oneshot::Receiver<T>>)> + Send + 'static,
    wait: impl Fn(Option<T>) -> Duration + Send + 'static,
) -> std::io::Result<()> {
    let (writes, places) = (writes.downgrade(), places.clone());
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut pause = first;
            loop {
                std::thread::sleep(pause);
                pause = first;
                let Some(writes) = writes.upgrade() else {
                    return;
                };
                let Some((request, answer)) = request() else {
                    continue;
                };
                let Ok(place) = places.clone().try_acquire_owned() else {
                    continue;
                };
                if writes.send((request, place)).is_err() {
                    return;
                }
                drop(writes);
                if let Some(answer) = answer {
                    pause = wait(answer.blocking_recv().ok());
                }
            }
        })?;
    Ok(())
}

/// Asks the writer, every `interval`, to write the acknowledgement positions that moved.
fn flush_acks_every(
    interval: Duration,
    acks: &Arc<AckBook>,
    writes: &mpsc::UnboundedSender<Queued>,
    places: &Arc<Semaphore>,
) -> std::io::Result<()> {
    let interval = interval.max(Duration::from_millis(10));
    let acks = acks.clone();
    let request =
        move || (!acks.is_empty()).then_some((Request::FlushAcks, None::<oneshot::Receiver<()>>));
    ask_writer_every(
        "sqlite-acks",
        interval,
        writes,
        places,
        request,
        move |_| interval,
    )
}

/// Asks the writer for a retention step every `--retention-every`, and again after
/// `--retention-pause` while the sweep has more to do; logs each pass that deleted entries.
fn sweep_every(
    config: &StoreConfig,
    writes: &mpsc::UnboundedSender<Queued>,
    places: &Arc<Semaphore>,
) -> std::io::Result<()> {
    let (every, pause) = (config.retention_every, config.retention_pause);
    let deleted = crate::metrics::retention_deleted();
    let pass = std::sync::atomic::AtomicU64::new(0);
    let request = || {
        let (tx, rx) = oneshot::channel();
        Some((Request::Sweep(tx), Some(rx)))
    };
    let wait = move |answer: Option<Result<retention::Swept, StoreError>>| match answer {
        Some(Ok(swept)) => {
            deleted.increment(swept.entries);
            let total = pass.fetch_add(swept.entries, Ordering::Relaxed) + swept.entries;
            if swept.more {
                return pause;
            }
            pass.store(0, Ordering::Relaxed);
            if total > 0 {
                tracing::info!(entries = total, "retention sweep done");
            }
            every
        }
        // Logged by the writer.
        Some(Err(_)) | None => every,
    };
    ask_writer_every("sqlite-retention", every, writes, places, request, wait)
}

/// Lets retention give freed pages back to the file system (see `retention`): a new
/// database is made with `auto_vacuum = INCREMENTAL`; an older one is rebuilt so once
/// (`VACUUM`, which needs as much free disk as the database takes) when retention is on.
fn incremental_vacuum(conn: &Connection, retention: bool) -> rusqlite::Result<()> {
    const INCREMENTAL: i64 = 2;
    let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
    if mode == INCREMENTAL {
        return Ok(());
    }
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
    if tables == 0 {
        // Takes effect with the first table.
        return conn.pragma_update(None, "auto_vacuum", "INCREMENTAL");
    }
    if retention {
        tracing::info!(
            "rebuilding the database once so that retention can return free space (VACUUM)"
        );
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")?;
    }
    Ok(())
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

impl From<rusqlite_migration::Error> for StoreError {
    fn from(e: rusqlite_migration::Error) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    writes: mpsc::UnboundedSender<Queued>,
    /// `--store-queue` places: a request takes one per message it carries (at least one)
    /// until the writer takes it, so the queue is bounded in messages.
    places: Arc<Semaphore>,
    /// `--store-queue`.
    queue: usize,
    /// `--store-readers` threads, each with a read-only connection.
    readers: Workers<Connection>,
    cache: Arc<ReadCache>,
    /// Where an `Ack` goes: written by the writer every `--ack-flush`.
    acks: Arc<AckBook>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `config.data_dir`, migrates it, and starts
    /// the writer thread, which hands every committed stream entry to `delivery`. Blocking:
    /// call it before serving, or from `spawn_blocking`.
    pub fn open(config: &StoreConfig, delivery: Arc<dyn Delivery>) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let path = config.data_dir.join(DB_FILE);
        let mut conn = Connection::open(&path)?;
        let retention = retention::Policy::of(config);
        incremental_vacuum(&conn, retention.is_on())?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        // In WAL mode, NORMAL syncs only at checkpoints: a commit survives a process crash
        // (it is in the OS's hands) but not power loss. FULL syncs the WAL on every commit.
        let sync = match config.durability {
            Durability::Process => "NORMAL",
            Durability::Power => "FULL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        schema::migrations().to_latest(&mut conn)?;
        let read_connections = (0..config.store_readers)
            .map(|_| {
                let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                Connection::open_with_flags(&path, flags)
            })
            .collect::<Result<Vec<_>, _>>()?;

        let (writes, rx) = mpsc::unbounded_channel();
        let cache = Arc::new(ReadCache::new(config.cache_entries));
        let acks = Arc::new(AckBook::default());
        let writer = Writer::new(conn, config, cache.clone(), acks.clone(), delivery)?;
        let limits = BatchLimits {
            writes: config.max_batch,
            bytes: config.max_batch_bytes,
        };
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer.run(rx, limits))?;
        let places = Arc::new(Semaphore::new(config.store_queue));
        flush_acks_every(config.ack_flush, &acks, &writes, &places)?;
        if retention.is_on() {
            sweep_every(config, &writes, &places)?;
        }
        Ok(SqliteStore {
            writes,
            places,
            queue: config.store_queue,
            cache,
            readers: Workers::new("sqlite-reader", read_connections)?,
            acks,
        })
    }

    /// Runs `f` on a read connection, off the async threads, once one is free, in one read
    /// transaction: every statement of it sees the same snapshot (a fold, see `fold`, moves
    /// rows from one table to another).
    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreFuture<'static, T> {
        let readers = self.readers.clone();
        async move {
            let read = readers
                .run(move |conn| {
                    let snapshot = conn.unchecked_transaction()?;
                    let value = f(&snapshot)?;
                    snapshot.commit()?;
                    Ok::<_, rusqlite::Error>(value)
                })
                .await;
            Ok(read.map_err(|_| StoreError::Closed)??)
        }
        .boxed()
    }

    /// Queues a write that takes `weight` places; waits only for them.
    fn enqueue(&self, request: Request, weight: usize) -> StoreFuture<'_, ()> {
        // A request larger than the whole queue waits for all of it.
        let weight = u32::try_from(weight.min(self.queue)).unwrap_or(u32::MAX);
        async move {
            let places = match self.places.clone().try_acquire_many_owned(weight) {
                Ok(places) => places,
                Err(_) => self
                    .places
                    .clone()
                    .acquire_many_owned(weight)
                    .await
                    .map_err(|_| StoreError::Closed)?,
            };
            self.writes
                .send((request, places))
                .map_err(|_| StoreError::Closed)
        }
        .boxed()
    }

    /// Sends `make(reply)` to the writer and waits for its answer.
    fn write<T: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<T>) -> Request + Send + 'static,
    ) -> StoreFuture<'_, T> {
        async move {
            let (tx, rx) = oneshot::channel();
            self.enqueue(make(tx), 1).await?;
            rx.await.unwrap_or(Err(StoreError::Closed))
        }
        .boxed()
    }

    fn social(
        &self,
        op: SocialOp,
        a: UserId,
        b: UserId,
    ) -> StoreFuture<'_, Result<(), SocialError>> {
        self.write(move |tx| Request::Social(op, a, b, tx))
    }
}

impl Accounts for SqliteStore {
    fn create_user(&self, id: Option<UserId>, account: Account) -> StoreFuture<'_, Option<UserId>> {
        self.write(move |tx| Request::CreateUser(id, account, tx))
    }

    fn user(&self, id: UserId) -> StoreFuture<'_, Option<User>> {
        cached(&self.cache.users, id, |id| {
            self.read(move |c| reads::user(c, id))
        })
    }

    fn seen(&self, user: UserId, at: i64) -> StoreFuture<'_, ()> {
        self.enqueue(Request::Seen(user, at), 1)
    }

    fn last_seen(&self, user: UserId) -> StoreFuture<'_, Option<i64>> {
        self.read(move |c| reads::last_seen(c, user))
    }

    fn set_disabled(&self, user: UserId, disabled: bool) -> StoreFuture<'_, bool> {
        self.write(move |tx| Request::SetDisabled(user, disabled, tx))
    }
}

impl Tokens for SqliteStore {
    fn create_token(
        &self,
        hash: TokenHash,
        user: UserId,
        expires_at: i64,
    ) -> StoreFuture<'_, bool> {
        self.write(move |tx| Request::CreateToken(hash, user, expires_at, tx))
    }

    fn token(&self, hash: TokenHash) -> StoreFuture<'_, Option<TokenRecord>> {
        cached(&self.cache.tokens, hash, |hash| {
            self.read(move |c| reads::token(c, hash))
        })
    }

    fn revoke_token(&self, hash: TokenHash) -> StoreFuture<'_, bool> {
        self.write(move |tx| Request::RevokeToken(hash, tx))
    }
}

impl Social for SqliteStore {
    fn friends(&self, id: UserId) -> StoreFuture<'_, Option<Vec<(UserId, String)>>> {
        cached(&self.cache.friends, id, |id| {
            self.read(move |c| reads::friends(c, id))
        })
    }

    fn befriend(&self, a: UserId, b: UserId) -> StoreFuture<'_, ()> {
        self.write(move |tx| Request::Befriend(a, b, tx))
    }

    fn request_friend(
        &self,
        from: UserId,
        to: UserId,
        message: String,
    ) -> StoreFuture<'_, Result<RequestOutcome, SocialError>> {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.write(move |tx| Request::Ask(from, to, message, at, tx))
    }

    fn answer_request(
        &self,
        me: UserId,
        from: UserId,
        accept: bool,
    ) -> StoreFuture<'_, Result<(), SocialError>> {
        let op = if accept {
            SocialOp::Accept
        } else {
            SocialOp::Decline
        };
        self.social(op, me, from)
    }

    fn unfriend(&self, me: UserId, them: UserId) -> StoreFuture<'_, Result<(), SocialError>> {
        self.social(SocialOp::Unfriend, me, them)
    }

    fn block(&self, me: UserId, them: UserId) -> StoreFuture<'_, Result<(), SocialError>> {
        self.social(SocialOp::Block, me, them)
    }

    fn unblock(&self, me: UserId, them: UserId) -> StoreFuture<'_, Result<(), SocialError>> {
        self.social(SocialOp::Unblock, me, them)
    }

    fn friend_requests(&self, me: UserId) -> StoreFuture<'_, FriendRequests> {
        self.read(move |c| reads::friend_requests(c, me))
    }

    fn blocks(&self, me: UserId) -> StoreFuture<'_, Vec<(UserId, String)>> {
        self.read(move |c| reads::blocks(c, me))
    }

    fn blocks_user(&self, blocker: UserId, blocked: UserId) -> StoreFuture<'_, bool> {
        let whom = cached(&self.cache.blocked, blocker, |id| {
            self.read(move |c| Ok(Some(Arc::new(reads::blocked_by(c, id)?))))
        });
        async move { Ok(whom.await?.is_some_and(|set| set.contains(&blocked))) }.boxed()
    }
}

impl Groups for SqliteStore {
    fn create_group(
        &self,
        owner: UserId,
        name: String,
        members: Vec<UserId>,
        max: usize,
    ) -> StoreFuture<'_, Result<GroupId, GroupError>> {
        self.write(move |tx| Request::CreateGroup(owner, name, members, max, tx))
    }

    fn group(&self, id: GroupId) -> StoreFuture<'_, Option<Arc<Group>>> {
        cached(&self.cache.groups, id, |id| {
            self.read(move |c| Ok(groups::load(c, id)?.map(Arc::new)))
        })
    }

    fn groups_of(&self, user: UserId) -> StoreFuture<'_, Vec<GroupId>> {
        self.read(move |c| groups::groups_of(c, user))
    }

    fn add_member(
        &self,
        actor: UserId,
        group: GroupId,
        user: UserId,
        max: usize,
    ) -> StoreFuture<'_, Result<(), GroupError>> {
        self.write(move |tx| Request::Group(actor, group, GroupOp::Add(user), max, tx))
    }

    fn remove_member(
        &self,
        actor: UserId,
        group: GroupId,
        user: UserId,
    ) -> StoreFuture<'_, Result<(), GroupError>> {
        self.write(move |tx| Request::Group(actor, group, GroupOp::Remove(user), 0, tx))
    }

    fn rename_group(
        &self,
        actor: UserId,
        group: GroupId,
        name: String,
    ) -> StoreFuture<'_, Result<(), GroupError>> {
        self.write(move |tx| Request::Group(actor, group, GroupOp::Rename(name), 0, tx))
    }
}

impl Streams for SqliteStore {
    fn append(&self, appends: Appends) -> StoreFuture<'_, ()> {
        let weight = appends.weight();
        self.enqueue(Request::Append(appends), weight)
    }

    fn position(&self, owner: UserId) -> StoreFuture<'_, Position> {
        let acks = self.acks.clone();
        self.read(move |c| {
            // The book first: a position written after this is in the table.
            let unwritten = acks.get(owner);
            let mut p = reads::position(c, owner)?;
            // Never past the head (a client may acknowledge more than it got).
            p.acked = p.acked.max(unwritten.unwrap_or(0)).min(p.head);
            Ok(p)
        })
    }

    fn read_stream(
        &self,
        owner: UserId,
        after: u64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<StoredEntry>> {
        self.read(move |c| reads::read_stream(c, owner, after, limit))
    }

    fn ack(&self, owner: UserId, seq: u64) -> StoreFuture<'_, ()> {
        self.acks.record(owner, seq);
        futures::future::ready(Ok(())).boxed()
    }

    fn mark_read(&self, owner: UserId, peer: Address, seq: u64) -> StoreFuture<'_, ()> {
        self.enqueue(Request::Read(owner, peer, seq), 1)
    }

    fn barrier(&self, done: BarrierHook) -> StoreFuture<'_, ()> {
        self.enqueue(Request::Barrier(done), 1)
    }

    fn history(
        &self,
        owner: UserId,
        peer: Address,
        before: Option<u64>,
        limit: usize,
    ) -> StoreFuture<'_, HistoryPage> {
        self.read(move |c| reads::history(c, owner, peer, before, limit))
    }

    fn conversations(&self, owner: UserId, limit: usize) -> StoreFuture<'_, Vec<Conversation>> {
        self.read(move |c| reads::conversations(c, owner, limit))
    }
}

impl Store for SqliteStore {
    fn ready(&self) -> StoreFuture<'_, ()> {
        async move {
            self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())))
                .await?;
            let (tx, rx) = oneshot::channel();
            let hook: BarrierHook = Box::new(move |done| {
                let _ = tx.send(done);
            });
            self.barrier(hook).await?;
            rx.await.map_err(|_| StoreError::Closed)?
        }
        .boxed()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        async move {
            let (tx, rx) = oneshot::channel();
            if self.enqueue(Request::Close(tx), 1).await.is_ok() {
                let _ = rx.await;
            }
        }
        .boxed()
    }
}

/// Answers from `table` when it has `key`; otherwise reads the database with `read(key)` and
/// caches what it found.
fn cached<'a, K, V>(
    table: &'a Table<K, V>,
    key: K,
    read: impl FnOnce(K) -> StoreFuture<'a, Option<V>>,
) -> StoreFuture<'a, Option<V>>
where
    K: Hash + Eq + Clone + Send + 'a,
    V: Clone + Send + 'a,
{
    if let Some(hit) = table.get(&key) {
        return futures::future::ready(Ok(Some(hit))).boxed();
    }
    let generation = table.generation();
    let found = read(key.clone());
    async move {
        let found = found.await?;
        if let Some(value) = &found {
            table.put(generation, key, value.clone());
        }
        Ok(found)
    }
    .boxed()
}
