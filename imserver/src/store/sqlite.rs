//! The SQLite store: WAL mode, versioned migrations, one writer thread with group commit,
//! and a few reader threads, each with a read-only connection.
//!
//! No SQLite call ever runs on a tokio worker thread. Writes go over a bounded channel to the
//! writer thread, which takes everything waiting (up to `--max-batch`) into one transaction,
//! commits once, and only then answers each request, in order. Reads run on
//! `--store-readers` threads ([`Workers`]), each with a read-only connection of its own.
//!
//! Messages are stored in chunks (migration 0003): the frames one transaction appended to
//! one inbox, in one row. Per message, the writer assigns the next `seq` from its in-memory
//! copy of the inbox heads and appends the frame to that inbox's chunk; each inbox it
//! touched gets one `chunks` row and one `inboxes` update at the end of the batch. A v2
//! message with a client id also gets a `client_ids` row, the unique key that makes retries
//! idempotent. Reads that every HTTP request makes go through a cache (`cache.rs`).

use std::collections::HashMap;
use std::hash::Hash;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use rusqlite::types::Type;
use rusqlite::{CachedStatement, Connection, OpenFlags, OptionalExtension, params};
use rusqlite_migration::{M, Migrations};
use tokio::sync::{mpsc, oneshot};

use super::cache::{ReadCache, Table};
use super::{
    Account, Appended, BarrierHook, CommitHook, Inbox, NewMessage, Store, StoreError, StoreFuture,
    StoredMessage, TokenHash, TokenRecord, User, UserId,
};
use crate::config::{Config, Durability};
use crate::workers::Workers;

const DB_FILE: &str = "imserver.sqlite3";

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("migrations/0001_init.sql")),
        M::up(include_str!("migrations/0002_tokens.sql")),
        M::up(include_str!("migrations/0003_chunks.sql")),
    ])
}

/// A request to the writer thread.
enum Write {
    Append(NewMessage, CommitHook),
    CreateUser(
        Option<UserId>,
        Account,
        oneshot::Sender<Result<Option<UserId>, StoreError>>,
    ),
    Befriend(UserId, UserId, oneshot::Sender<Result<(), StoreError>>),
    /// Queue-only: nobody waits for an acknowledgement to commit.
    Ack(String, u64),
    Barrier(BarrierHook),
    CreateToken(
        TokenHash,
        UserId,
        i64,
        oneshot::Sender<Result<(), StoreError>>,
    ),
    RevokeToken(TokenHash, oneshot::Sender<Result<bool, StoreError>>),
    /// Stop after everything queued before it.
    Close(oneshot::Sender<()>),
}

/// The store's limits (see `Config` for what each is for).
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    /// `--max-batch`: writes in one transaction at most.
    pub max_batch: usize,
    /// `--store-queue`: writes that may wait for the writer thread.
    pub queue: usize,
    /// `--store-readers`: reader threads.
    pub readers: usize,
    /// `--cache-entries`: entries in each in-memory table (users, friend lists, tokens,
    /// inbox heads).
    pub cache_entries: usize,
}

impl StoreLimits {
    pub fn new(c: &Config) -> Self {
        StoreLimits {
            max_batch: c.max_batch,
            queue: c.store_queue,
            readers: c.store_readers,
            cache_entries: c.cache_entries,
        }
    }
}

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    writes: mpsc::Sender<Write>,
    /// `--store-readers` threads, each with a read-only connection.
    readers: Workers<Connection>,
    cache: Arc<ReadCache>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `dir`, migrates it, and starts the writer
    /// thread. Blocking: call it before serving, or from `spawn_blocking`.
    pub fn open(
        dir: &Path,
        durability: Durability,
        limits: StoreLimits,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(DB_FILE);
        let mut conn = Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        // In WAL mode, NORMAL syncs only at checkpoints: a commit survives a process crash
        // (it is in the OS's hands) but not power loss. FULL syncs the WAL on every commit.
        let sync = match durability {
            Durability::Process => "NORMAL",
            Durability::Power => "FULL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        migrations().to_latest(&mut conn)?;
        let read_connections = (0..limits.readers)
            .map(|_| {
                let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                Connection::open_with_flags(&path, flags)
            })
            .collect::<Result<Vec<_>, _>>()?;

        let (writes, rx) = mpsc::channel(limits.queue.max(1));
        let max_batch = limits.max_batch.max(1);
        let cache = Arc::new(ReadCache::new(limits.cache_entries));
        let w = Writer {
            conn,
            heads: HashMap::new(),
            max_heads: limits.cache_entries,
            cache: cache.clone(),
        };
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer(w, rx, max_batch))?;
        Ok(SqliteStore {
            writes,
            cache,
            readers: Workers::new("sqlite-reader", read_connections)?,
        })
    }

    /// Runs `f` on a read connection, off the async threads, once one is free.
    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreFuture<'static, T> {
        let readers = self.readers.clone();
        async move {
            let read = readers.run(move |conn| f(conn)).await;
            Ok(read.map_err(|_| StoreError::Closed)??)
        }
        .boxed()
    }

    /// Queues a write; waits only for queue space.
    fn enqueue(&self, w: Write) -> StoreFuture<'_, ()> {
        async move { self.writes.send(w).await.map_err(|_| StoreError::Closed) }.boxed()
    }

    /// Sends `make(reply)` to the writer and waits for its answer.
    fn write<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Write + Send + 'static,
    ) -> StoreFuture<'_, T> {
        async move {
            let (tx, rx) = oneshot::channel();
            self.enqueue(make(tx)).await?;
            rx.await.unwrap_or(Err(StoreError::Closed))
        }
        .boxed()
    }
}

impl Store for SqliteStore {
    fn create_user(&self, id: Option<UserId>, account: Account) -> StoreFuture<'_, Option<UserId>> {
        self.write(move |tx| Write::CreateUser(id, account, tx))
    }

    fn user(&self, id: UserId) -> StoreFuture<'_, Option<User>> {
        cached(&self.cache.users, id, |key| {
            self.read(move |c| {
                c.prepare_cached(
                    "SELECT id, name, sex, email, signature, password_hash FROM users WHERE id = ?1",
                )?
                .query_row([key], |r| {
                    Ok(User {
                        id: r.get(0)?,
                        account: Account {
                            name: r.get(1)?,
                            sex: r.get(2)?,
                            email: r.get(3)?,
                            signature: r.get(4)?,
                            password_hash: r.get(5)?,
                        },
                    })
                })
                .optional()
            })
        })
    }

    fn friends(&self, id: UserId) -> StoreFuture<'_, Option<Vec<(UserId, String)>>> {
        cached(&self.cache.friends, id, |key| {
            self.read(move |c| {
                let exists = c
                    .prepare_cached("SELECT 1 FROM users WHERE id = ?1")?
                    .exists([key])?;
                if !exists {
                    return Ok(None);
                }
                let mut stmt = c.prepare_cached(
                    "SELECT u.id, u.name FROM friendships f JOIN users u ON u.id = f.friend_id
                     WHERE f.user_id = ?1 ORDER BY u.id",
                )?;
                let rows = stmt.query_map([key], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(Some(rows.collect::<Result<_, _>>()?))
            })
        })
    }

    fn befriend(&self, a: UserId, b: UserId) -> StoreFuture<'_, ()> {
        self.write(move |tx| Write::Befriend(a, b, tx))
    }

    fn append(&self, msg: NewMessage, done: CommitHook) -> StoreFuture<'_, ()> {
        self.enqueue(Write::Append(msg, done))
    }

    fn inbox(&self, owner: &str) -> StoreFuture<'_, Inbox> {
        let owner = owner.to_owned();
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT head, acked FROM inboxes WHERE owner = ?1")?
                    .query_row([owner], |r| {
                        Ok(Inbox {
                            head: r.get(0)?,
                            acked: r.get(1)?,
                        })
                    })
                    .optional()?
                    .unwrap_or_default(),
            )
        })
    }

    fn read_inbox(
        &self,
        owner: &str,
        after: u64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<StoredMessage>> {
        let owner = owner.to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT first_seq, frames FROM chunks WHERE owner = ?1 AND last_seq > ?2
                 ORDER BY last_seq",
            )?;
            let mut rows = stmt.query(params![owner, after])?;
            let mut out = Vec::new();
            while out.len() < limit
                && let Some(row) = rows.next()?
            {
                let first: u64 = row.get(0)?;
                let frames = Bytes::from(row.get::<_, Vec<u8>>(1)?);
                let mut frames = Frames::new(first, frames);
                while out.len() < limit
                    && let Some(m) = frames.next()
                {
                    let m = m.map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(1, Type::Blob, e.into())
                    })?;
                    if m.seq > after {
                        out.push(m);
                    }
                }
            }
            Ok(out)
        })
    }

    fn ack(&self, owner: &str, seq: u64) -> StoreFuture<'_, ()> {
        self.enqueue(Write::Ack(owner.to_owned(), seq))
    }

    fn barrier(&self, done: BarrierHook) -> StoreFuture<'_, ()> {
        self.enqueue(Write::Barrier(done))
    }

    fn create_token(&self, hash: TokenHash, user: UserId, expires_at: i64) -> StoreFuture<'_, ()> {
        self.write(move |tx| Write::CreateToken(hash, user, expires_at, tx))
    }

    fn token(&self, hash: TokenHash) -> StoreFuture<'_, Option<TokenRecord>> {
        cached(&self.cache.tokens, hash, |key| {
            self.read(move |c| {
                c.prepare_cached("SELECT user_id, expires_at FROM tokens WHERE hash = ?1")?
                    .query_row([&key[..]], |r| {
                        Ok(TokenRecord {
                            user: r.get(0)?,
                            expires_at: r.get(1)?,
                        })
                    })
                    .optional()
            })
        })
    }

    fn revoke_token(&self, hash: TokenHash) -> StoreFuture<'_, bool> {
        self.write(move |tx| Write::RevokeToken(hash, tx))
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        async move {
            let (tx, rx) = oneshot::channel();
            if self.writes.send(Write::Close(tx)).await.is_ok() {
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

/// The writer thread's state between batches.
struct Writer {
    conn: Connection,
    /// Inbox heads (highest assigned `seq`), each read from the table once. Only this thread
    /// assigns `seq`s, so the copies stay exact, as long as they are forgotten whenever a
    /// transaction fails (the database rolled back, the copies did not). They save an
    /// `inboxes` write per message: each batch writes each inbox it touched once.
    heads: HashMap<String, u64>,
    /// `--cache-entries`: past this many heads, the writer forgets them all and reads them
    /// again as needed.
    max_heads: usize,
    /// Told of every change to what it caches, after the commit and before the answer.
    cache: Arc<ReadCache>,
}

/// The writer thread: group commit until `Close` or until every sender is gone.
fn writer(mut w: Writer, mut rx: mpsc::Receiver<Write>, max_batch: usize) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        let closing = w.commit(&mut batch);
        if closing {
            rx.close();
            break;
        }
    }
    // Dropping the connection checkpoints the WAL when it is the last one.
}

/// What one request produced inside the transaction, answered after commit.
enum Outcome {
    Appended(Appended),
    Created(Option<UserId>),
    Revoked(bool),
    Done,
}

/// What a batch changed in one inbox, written once at the end of the batch.
#[derive(Default)]
struct InboxChange {
    /// The seq of the first message appended, and the frames of all of them: the chunk.
    appended: Option<(u64, Vec<u8>)>,
    /// The new head, when messages were appended.
    head: Option<u64>,
    /// The highest acknowledgement.
    acked: Option<u64>,
}

impl Writer {
    /// Applies `batch` in one transaction and answers every request. Returns true on
    /// `Close`.
    fn commit(&mut self, batch: &mut Vec<Write>) -> bool {
        if self.heads.len() > self.max_heads {
            self.heads.clear();
        }
        let result = self.apply(batch);
        match &result {
            Ok(_) => self.forget_changes(batch),
            Err(_) => self.heads.clear(),
        }
        answer(batch, result)
    }

    /// Tells the read cache what a committed batch changed.
    fn forget_changes(&self, batch: &[Write]) {
        for w in batch {
            match w {
                Write::Befriend(a, b, _) => {
                    self.cache.friends.forget(a);
                    self.cache.friends.forget(b);
                }
                Write::RevokeToken(hash, _) => self.cache.tokens.forget(hash),
                // New users and tokens were not cached (misses never are); expired tokens
                // deleted by `CreateToken` are refused by their expiry wherever they are.
                _ => {}
            }
        }
    }

    fn apply(&mut self, batch: &[Write]) -> rusqlite::Result<Vec<Outcome>> {
        let tx = self.conn.transaction()?;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut inboxes: HashMap<&str, InboxChange> = HashMap::new();
        let mut statements = AppendStatements::new(&tx)?;
        for w in batch {
            outcomes.push(match w {
                Write::Append(m, _) => {
                    let appended = append(&mut statements, &mut self.heads, m)?;
                    if !appended.duplicate {
                        let inbox = inboxes.entry(&m.receiver).or_default();
                        let (_, frames) = inbox
                            .appended
                            .get_or_insert_with(|| (appended.seq, Vec::new()));
                        frames.extend_from_slice(&(m.payload.len() as u32).to_be_bytes());
                        frames.extend_from_slice(&m.payload);
                        inbox.head = Some(appended.seq);
                    }
                    Outcome::Appended(appended)
                }
                Write::CreateUser(id, a, _) => Outcome::Created(create_user(&tx, *id, a)?),
                Write::Befriend(a, b, _) => {
                    let mut stmt = tx.prepare_cached(
                        "INSERT OR IGNORE INTO friendships (user_id, friend_id) VALUES (?1, ?2)",
                    )?;
                    stmt.execute([a, b])?;
                    stmt.execute([b, a])?;
                    Outcome::Done
                }
                Write::Ack(owner, seq) => {
                    let acked = &mut inboxes.entry(owner).or_default().acked;
                    *acked = (*acked).max(Some(*seq));
                    Outcome::Done
                }
                Write::CreateToken(hash, user, expires_at, _) => {
                    // Expired tokens are useless; forget them while we are here.
                    tx.prepare_cached("DELETE FROM tokens WHERE expires_at <= unixepoch()")?
                        .execute([])?;
                    tx.prepare_cached(
                        "INSERT INTO tokens (hash, user_id, expires_at) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![&hash[..], user, expires_at])?;
                    Outcome::Done
                }
                Write::RevokeToken(hash, _) => Outcome::Revoked(
                    tx.prepare_cached("DELETE FROM tokens WHERE hash = ?1")?
                        .execute([&hash[..]])?
                        == 1,
                ),
                Write::Barrier(_) | Write::Close(_) => Outcome::Done,
            });
        }
        drop(statements);
        for (owner, change) in inboxes {
            if let (Some((first, frames)), Some(last)) = (change.appended, change.head) {
                tx.prepare_cached(
                    "INSERT INTO chunks (owner, first_seq, last_seq, frames)
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![owner, first, last, frames])?;
            }
            if let Some(head) = change.head {
                tx.prepare_cached(
                    "INSERT INTO inboxes (owner, head, acked) VALUES (?1, ?2, 0)
                     ON CONFLICT (owner) DO UPDATE SET head = excluded.head",
                )?
                .execute(params![owner, head])?;
            }
            if let Some(seq) = change.acked {
                // Never backwards, never past the head.
                tx.prepare_cached(
                    "UPDATE inboxes SET acked = max(acked, min(?2, head)) WHERE owner = ?1",
                )?
                .execute(params![owner, seq])?;
            }
        }
        tx.commit()?;
        Ok(outcomes)
    }
}

/// Answers every request of a batch with its outcome, or with the transaction's error.
/// Returns true on `Close`.
fn answer(batch: &mut Vec<Write>, result: rusqlite::Result<Vec<Outcome>>) -> bool {
    let mut closing = false;
    match result {
        Ok(outcomes) => {
            for (w, outcome) in batch.drain(..).zip(outcomes) {
                match (w, outcome) {
                    (Write::Append(_, done), Outcome::Appended(a)) => done(Ok(a)),
                    (Write::CreateUser(.., tx), Outcome::Created(id)) => {
                        let _ = tx.send(Ok(id));
                    }
                    (Write::Befriend(.., tx), _) => {
                        let _ = tx.send(Ok(()));
                    }
                    (Write::Ack(..), _) => {}
                    (Write::Barrier(done), _) => done(Ok(())),
                    (Write::CreateToken(.., tx), _) => {
                        let _ = tx.send(Ok(()));
                    }
                    (Write::RevokeToken(_, tx), Outcome::Revoked(found)) => {
                        let _ = tx.send(Ok(found));
                    }
                    (Write::Close(tx), _) => {
                        closing = true;
                        let _ = tx.send(());
                    }
                    _ => unreachable!("outcomes are built in batch order"),
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, requests = batch.len(), "store transaction failed");
            let fail = || StoreError::Transaction(e.to_string());
            for w in batch.drain(..) {
                match w {
                    Write::Append(_, done) => done(Err(fail())),
                    Write::CreateUser(.., tx) => {
                        let _ = tx.send(Err(fail()));
                    }
                    Write::Befriend(.., tx) => {
                        let _ = tx.send(Err(fail()));
                    }
                    Write::Ack(..) => {}
                    Write::Barrier(done) => done(Err(fail())),
                    Write::CreateToken(.., tx) => {
                        let _ = tx.send(Err(fail()));
                    }
                    Write::RevokeToken(_, tx) => {
                        let _ = tx.send(Err(fail()));
                    }
                    Write::Close(tx) => {
                        closing = true;
                        let _ = tx.send(());
                    }
                }
            }
        }
    }
    closing
}

/// The statements of [`append`], looked up once per batch rather than once per message (a
/// lookup hashes the statement's whole text).
struct AppendStatements<'t> {
    head: CachedStatement<'t>,
    insert_id: CachedStatement<'t>,
    find_id: CachedStatement<'t>,
}

impl<'t> AppendStatements<'t> {
    fn new(tx: &'t rusqlite::Transaction) -> rusqlite::Result<Self> {
        Ok(AppendStatements {
            head: tx.prepare_cached("SELECT head FROM inboxes WHERE owner = ?1")?,
            insert_id: tx.prepare_cached(
                "INSERT INTO client_ids (sender, client_id, seq) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
            )?,
            find_id: tx.prepare_cached(
                "SELECT seq FROM client_ids WHERE sender = ?1 AND client_id = ?2",
            )?,
        })
    }
}

/// Assigns `m` the next `seq` of its receiver's inbox (the caller adds it to the batch's
/// chunk), or finds the earlier copy of a retry (same sender, same client id).
fn append(
    statements: &mut AppendStatements,
    heads: &mut HashMap<String, u64>,
    m: &NewMessage,
) -> rusqlite::Result<Appended> {
    let head = match heads.get(&m.receiver) {
        Some(head) => *head,
        None => {
            let head = statements
                .head
                .query_row([&m.receiver], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            heads.insert(m.receiver.clone(), head);
            head
        }
    };
    let seq = head + 1;
    if let Some(id) = &m.client_id {
        let first = statements.insert_id.execute(params![m.sender, id, seq])? == 1;
        if !first {
            let seq = statements
                .find_id
                .query_row(params![m.sender, id], |r| r.get(0))?;
            return Ok(Appended {
                seq,
                duplicate: true,
            });
        }
    }
    if let Some(head) = heads.get_mut(&m.receiver) {
        *head = seq;
    }
    Ok(Appended {
        seq,
        duplicate: false,
    })
}

/// The messages of one chunk, in order.
struct Frames {
    seq: u64,
    rest: Bytes,
}

impl Frames {
    fn new(first_seq: u64, frames: Bytes) -> Self {
        Frames {
            seq: first_seq,
            rest: frames,
        }
    }
}

impl Iterator for Frames {
    type Item = Result<StoredMessage, &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some(head) = self.rest.first_chunk::<4>() else {
            self.rest.clear();
            return Some(Err("a chunk ends inside a length prefix"));
        };
        let len = u32::from_be_bytes(*head) as usize;
        if self.rest.len() < 4 + len {
            self.rest.clear();
            return Some(Err("a chunk ends inside a frame"));
        }
        let payload = self.rest.slice(4..4 + len);
        self.rest = self.rest.slice(4 + len..);
        let m = StoredMessage {
            seq: self.seq,
            payload,
        };
        self.seq += 1;
        Some(Ok(m))
    }
}

fn create_user(
    tx: &rusqlite::Transaction,
    id: Option<UserId>,
    u: &Account,
) -> rusqlite::Result<Option<UserId>> {
    let inserted = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO users (id, name, sex, email, signature, password_hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            id,
            u.name,
            u.sex,
            u.email,
            u.signature,
            u.password_hash
        ])?;
    Ok((inserted == 1).then(|| tx.last_insert_rowid()))
}
