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

mod append;
mod backup;
mod chunk;
mod draft;
pub(crate) mod export;
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

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::FutureExt;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;
use writer::Writer;

use super::acks::AckBook;
use super::cache::ReadCache;
use super::front::{Front, Reads};
use super::queue::{BatchLimits, Queue, Request, Settle, Swept};
use super::{
    Conversation, FriendRequests, Group, HistoryPage, Position, StoreError, StoreFuture,
    StoredEntry, TokenHash, TokenRecord, User,
};
use crate::config::{Durability, StoreConfig};
use crate::delivery::Delivery;
use crate::id::{Address, GroupId, UserId};
use crate::metrics::StoreMetrics;
use crate::workers::Workers;

const DB_FILE: &str = "imserver.sqlite3";

/// Asks the writer for a retention step every `--retention-every`, and again after
/// `--retention-pause` while the sweep has more to do; logs each pass that deleted entries.
fn sweep_every(config: &StoreConfig, queue: &Queue) -> std::io::Result<()> {
    let (every, pause) = (config.retention_every, config.retention_pause);
    let deleted = crate::metrics::retention_deleted();
    let pass = std::sync::atomic::AtomicU64::new(0);
    let request = || {
        let (tx, rx) = oneshot::channel();
        Some((Request::Sweep(tx), Some(rx)))
    };
    let wait = move |answer: Option<Result<Swept, StoreError>>| match answer {
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
    queue.ask_every("sqlite-retention", every, request, wait)
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

/// The SQLite store: its [`Front`] over the writer thread and the reader threads.
pub(crate) type SqliteStore = Front<SqliteReads>;

/// Opens (creating if needed) the database in `config.data_dir`, migrates it, and starts the
/// writer thread, which hands every committed stream entry to `delivery`. Blocking: call it
/// before serving, or from `spawn_blocking`.
pub(crate) fn open(
    config: &StoreConfig,
    delivery: Arc<dyn Delivery>,
) -> Result<SqliteStore, StoreError> {
    std::fs::create_dir_all(&config.data_dir)?;
    let path = config.data_dir.join(DB_FILE);
    let mut conn = Connection::open(&path)?;
    let retention = retention::Policy::of(config);
    incremental_vacuum(&conn, retention.is_on())?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // In WAL mode, NORMAL syncs only at checkpoints: a commit survives a process crash (it
    // is in the OS's hands) but not power loss. FULL syncs the WAL on every commit.
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

    let (queue, rx) = Queue::new(config.store_queue);
    let cache = Arc::new(ReadCache::new(config.cache_entries));
    let acks = Arc::new(AckBook::default());
    let settle = Settle {
        cache: cache.clone(),
        acks: acks.clone(),
        delivery,
        metrics: StoreMetrics::new(),
    };
    let writer = Writer::new(conn, config, settle)?;
    let limits = BatchLimits {
        writes: config.max_batch,
        bytes: config.max_batch_bytes,
    };
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || writer.run(rx, limits))?;
    queue.flush_acks_every(config.ack_flush, &acks)?;
    if retention.is_on() {
        sweep_every(config, &queue)?;
    }
    Ok(Front {
        queue,
        reads: SqliteReads(Workers::new("sqlite-reader", read_connections)?),
        cache,
        acks,
    })
}

/// `--store-readers` threads, each with a read-only connection.
pub(crate) struct SqliteReads(Workers<Connection>);

impl SqliteReads {
    /// Runs `f` on a read connection, off the async threads, once one is free, in one read
    /// transaction: every statement of it sees the same snapshot (a fold, see `fold`, moves
    /// rows from one table to another).
    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreFuture<'static, T> {
        let readers = self.0.clone();
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
}

impl Reads for SqliteReads {
    fn user(&self, id: UserId) -> StoreFuture<'static, Option<User>> {
        self.read(move |c| reads::user(c, id))
    }

    fn last_seen(&self, user: UserId) -> StoreFuture<'static, Option<i64>> {
        self.read(move |c| reads::last_seen(c, user))
    }

    fn friends(&self, id: UserId) -> StoreFuture<'static, Option<Vec<(UserId, String)>>> {
        self.read(move |c| reads::friends(c, id))
    }

    fn friend_requests(&self, me: UserId) -> StoreFuture<'static, FriendRequests> {
        self.read(move |c| reads::friend_requests(c, me))
    }

    fn blocks(&self, me: UserId) -> StoreFuture<'static, Vec<(UserId, String)>> {
        self.read(move |c| reads::blocks(c, me))
    }

    fn blocked_by(&self, user: UserId) -> StoreFuture<'static, HashSet<UserId>> {
        self.read(move |c| reads::blocked_by(c, user))
    }

    fn token(&self, hash: TokenHash) -> StoreFuture<'static, Option<TokenRecord>> {
        self.read(move |c| reads::token(c, hash))
    }

    fn group(&self, id: GroupId) -> StoreFuture<'static, Option<Group>> {
        self.read(move |c| groups::load(c, id))
    }

    fn groups_of(&self, user: UserId) -> StoreFuture<'static, Vec<GroupId>> {
        self.read(move |c| groups::groups_of(c, user))
    }

    fn position(&self, owner: UserId) -> StoreFuture<'static, Position> {
        self.read(move |c| reads::position(c, owner))
    }

    fn read_stream(
        &self,
        owner: UserId,
        after: u64,
        limit: usize,
    ) -> StoreFuture<'static, Vec<StoredEntry>> {
        self.read(move |c| reads::read_stream(c, owner, after, limit))
    }

    fn history(
        &self,
        owner: UserId,
        peer: Address,
        before: Option<u64>,
        limit: usize,
    ) -> StoreFuture<'static, HistoryPage> {
        self.read(move |c| reads::history(c, owner, peer, before, limit))
    }

    fn conversations(
        &self,
        owner: UserId,
        limit: usize,
    ) -> StoreFuture<'static, Vec<Conversation>> {
        self.read(move |c| reads::conversations(c, owner, limit))
    }

    fn ping(&self) -> StoreFuture<'static, ()> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())))
    }
}
