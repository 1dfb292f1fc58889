//! The writer thread: the only connection that changes the database.
//!
//! It takes everything waiting (up to `--max-batch` messages) into one transaction, commits
//! once, and only then answers each request, in the order they were queued, and hands the
//! stream entries the batch appended to the store's `Delivery` (group commit).
//!
//! **One failing request fails only itself.** A request that writes one statement relies on
//! SQLite's statement-level rollback; one that writes several runs inside a savepoint. Either
//! way a failure undoes that request's rows and the transaction goes on with the rest. Only
//! an error that ends the transaction itself (a full disk, say) fails the whole batch.
//! In-memory effects (sequence numbers, chunk drafts, the block list) are applied only once a
//! request's rows are written, so a failed request leaves none behind.
//!
//! **Sequence numbers** come from an in-memory copy of each stream's head, read once from
//! the table; only this thread assigns them, so the copies stay exact, as long as they are
//! forgotten whenever a transaction fails (the database rolled back, the copies did not).
//! Each batch writes one `batches` row with every payload it appended, once (see `chunk`),
//! one chunk per stream it touched and one conversation row per conversation in it, among
//! the recent ones that it folds into the streams' tables every `--fold-rows` (see `draft`
//! and `fold`), and the client ids it stored (see `ids`).
//!
//! A request of appends (the messages one connection sent in one go) is answered with one
//! call to its `Replies` and one delivery per user it appended to: the per-message work is
//! the message's own, with no lookup by user id and nothing allocated per message but its
//! entries.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rusqlite::{CachedStatement, Connection, Transaction, params};
use tokio::sync::mpsc;

use super::chunk::HEAD;
use super::draft::{Draft, StreamIx};
use super::fold::{fold, waiting};
use super::ids::Ids;
use super::retention::{Policy, Sweeper};
use super::social::apply_change;
use crate::config::StoreConfig;
use crate::delivery::{Entry, EntryKind};
use crate::id::{GroupId, UserId};
use crate::store::acks::AckBook;
use crate::store::queue::{Answer, BatchLimits, Queued, Reply, Request, Settle, Swept, Then};
use crate::store::receipts::ReadReceipts;
use crate::store::social::{self, Change};
use crate::store::{Account, Group, StoreError, TokenHash};

/// The writer thread's state between batches.
pub(super) struct Writer {
    conn: Connection,
    /// Stream heads (highest assigned `seq`), each read from the table once.
    heads: HashMap<UserId, u64>,
    /// `--cache-entries`: past this many heads, the writer forgets them all and reads them
    /// again as needed.
    max_heads: usize,
    /// Every `(blocker, blocked)` pair, read at startup: a message is checked against it
    /// without a query. Only this thread changes blocks, so it stays exact (reloaded after a
    /// failed transaction).
    blocks: HashSet<(UserId, UserId)>,
    /// The stored client ids, for de-duplication.
    ids: Ids,
    /// The groups looked up so far, exact (only this thread changes them); forgotten with
    /// the heads.
    groups: HashMap<GroupId, Arc<Group>>,
    /// Chunk rows waiting to be folded (see `fold`), read at startup and after a failed
    /// transaction; past `fold_rows` (`--fold-rows`), the writer folds them.
    recent: usize,
    fold_rows: usize,
    /// `--read-receipts` and `--read-receipt-scan`.
    receipts: ReadReceipts,
    /// The retention sweep's place, with `--retention` or `--retention-unacked`.
    sweeper: Option<Sweeper>,
    /// What is told after each transaction (the acknowledgement book among it).
    settle: Settle,
}

impl Writer {
    pub fn new(conn: Connection, config: &StoreConfig, settle: Settle) -> rusqlite::Result<Self> {
        let recent = waiting(&conn)?;
        let max_heads = config.cache_entries;
        let retention = Policy::of(config);
        let mut w = Writer {
            conn,
            heads: HashMap::new(),
            max_heads,
            blocks: HashSet::new(),
            ids: Ids::new(max_heads),
            groups: HashMap::new(),
            recent,
            fold_rows: config.fold_rows,
            receipts: ReadReceipts::of(config),
            sweeper: retention.is_on().then(|| Sweeper::new(retention)),
            settle,
        };
        w.load_blocks()?;
        Ok(w)
    }

    fn load_blocks(&mut self) -> rusqlite::Result<()> {
        let mut stmt = self.conn.prepare("SELECT blocker, blocked FROM blocks")?;
        let pairs = stmt.query_map([], |r| Ok((id(r.get(0)?)?, id(r.get(1)?)?)))?;
        self.blocks = pairs.collect::<Result<_, _>>()?;
        Ok(())
    }

    /// Group commit until `Close` or until every sender is gone. A batch is everything
    /// queued, up to `limits` (past them by at most one request).
    pub fn run(mut self, mut rx: mpsc::UnboundedReceiver<Queued>, limits: BatchLimits) {
        let mut batch = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            self.settle.metrics.queue.set(rx.len() as f64);
            let writes = limits.fill(first, &mut rx, &mut batch);
            let started = Instant::now();
            let closing = self.commit(&mut batch);
            self.settle.metrics.batch.record(writes as f64);
            let commit = &self.settle.metrics.commit;
            commit.record(started.elapsed().as_secs_f64());
            if closing {
                rx.close();
                return;
            }
        }
        // Every sender is gone without a `Close`: the positions still in memory go now.
        self.commit(&mut vec![Request::FlushAcks]);
        // Dropping the connection checkpoints the WAL when it is the last one.
    }

    /// Applies `batch` in one transaction and answers every request. Returns true on
    /// `Close`.
    fn commit(&mut self, batch: &mut Vec<Request>) -> bool {
        if self.heads.len() > self.max_heads {
            self.heads.clear();
        }
        if self.groups.len() > self.max_heads {
            self.groups.clear();
        }
        let mut then = Vec::with_capacity(batch.len() * 3);
        let result = self.apply(batch.drain(..), &mut then);
        if let Err(e) = &result {
            tracing::error!(error = %e, requests = then.len(), "store transaction failed");
            // The database rolled back; the in-memory copies did not.
            self.heads.clear();
            self.ids.forget();
            self.groups.clear();
            if let Some(sweeper) = &mut self.sweeper {
                sweeper.forget();
            }
            if let Err(e) = self.load_blocks() {
                tracing::error!(error = %e, "cannot reload the block list");
            }
            match waiting(&self.conn) {
                Ok(n) => self.recent = n,
                Err(e) => tracing::error!(error = %e, "cannot count the rows to fold"),
            }
        }
        self.settle.settle(then, result.map_err(|e| e.to_string()))
    }

    /// Applies every request, leaving in `then` what to do after the commit. On an error
    /// that ends the transaction, the requests it did not get to are left there too.
    fn apply(
        &mut self,
        mut batch: impl Iterator<Item = Request>,
        then: &mut Vec<Then>,
    ) -> rusqlite::Result<()> {
        let tx = match self.conn.transaction() {
            Ok(tx) => tx,
            Err(e) => {
                then.extend(batch.map(Then::unapplied));
                return Err(e);
            }
        };
        let mut state = State {
            heads: &mut self.heads,
            blocks: &mut self.blocks,
            ids: &mut self.ids,
            groups: &mut self.groups,
            recent: &mut self.recent,
            fold_rows: self.fold_rows,
            receipts: self.receipts,
            acks: &self.settle.acks,
            sweeper: self.sweeper.as_mut(),
            draft: Draft::default(),
        };
        let result = (|| {
            let mut st = Statements::new(&tx)?;
            for request in batch.by_ref() {
                // An error that SQLite answered by rolling the whole transaction back (a
                // full disk, say) ends the batch; otherwise only that request failed, and its
                // `Then` says so.
                if let Err(e) = state.apply(&tx, &mut st, request, then)
                    && tx.is_autocommit()
                {
                    return Err(e);
                }
            }
            drop(st);
            state.ids.finish(&tx)?;
            let chunks = state.draft.finish(&tx, state.heads)?;
            *state.recent += chunks;
            if *state.recent >= state.fold_rows {
                fold(&tx)?;
                *state.recent = 0;
            }
            Ok(())
        })();
        match result {
            Ok(()) => tx.commit(),
            Err(e) => {
                then.extend(batch.map(Then::unapplied));
                Err(e)
            }
        }
    }
}

/// The statements every append may run, looked up once per batch rather than once per
/// message (a lookup hashes the statement's whole text).
pub(super) struct Statements<'t> {
    pub head: CachedStatement<'t>,
    pub are_friends: CachedStatement<'t>,
}

impl<'t> Statements<'t> {
    fn new(tx: &'t Transaction) -> rusqlite::Result<Self> {
        Ok(Statements {
            head: tx.prepare_cached(HEAD)?,
            are_friends: tx.prepare_cached(ARE_FRIENDS)?,
        })
    }
}

/// The writer's state as one batch sees it.
pub(super) struct State<'w> {
    pub heads: &'w mut HashMap<UserId, u64>,
    pub blocks: &'w mut HashSet<(UserId, UserId)>,
    pub ids: &'w mut Ids,
    pub groups: &'w mut HashMap<GroupId, Arc<Group>>,
    /// The writer's count of chunk rows waiting to be folded, and `--fold-rows`.
    pub recent: &'w mut usize,
    pub fold_rows: usize,
    pub receipts: ReadReceipts,
    pub acks: &'w AckBook,
    pub sweeper: Option<&'w mut Sweeper>,
    pub draft: Draft,
}

impl State<'_> {
    /// Appends event `payload` to `owner`'s stream (`stream` in this batch), to be
    /// delivered once the batch commits.
    pub(super) fn append_event(
        &mut self,
        owner: UserId,
        stream: StreamIx,
        payload: Bytes,
        then: &mut Vec<Then>,
    ) {
        let slot = self.draft.payload(&payload);
        let seq = self.draft.push(stream, slot, None, 0);
        let entry = Entry {
            seq,
            payload,
            kind: EntryKind::Event,
            origin: None,
        };
        then.push(Then::Deliver(owner, entry));
    }

    /// Writes the acknowledgement positions that moved; they are forgotten from the book
    /// once committed.
    fn flush_acks(&mut self, then: &mut Vec<Then>) {
        let acks = self.acks.unwritten();
        for &(owner, seq) in &acks {
            self.draft.ack(owner, seq);
        }
        if !acks.is_empty() {
            then.push(Then::AcksWritten(acks));
        }
    }

    /// Applies one request. An `Err` means its rows were not written (and `then` holds its
    /// failure); the caller tells whether the transaction survived it.
    fn apply(
        &mut self,
        tx: &Transaction,
        st: &mut Statements,
        request: Request,
        then: &mut Vec<Then>,
    ) -> rusqlite::Result<()> {
        let failed = |e: &rusqlite::Error| StoreError::Backend(e.to_string().into());
        match request {
            Request::Append(a) => {
                let mut answer = Answer::new(a.replies.clone());
                let appended = self.append(tx, st, a, &mut answer);
                if let Err(e) = &appended {
                    answer.failed = Some(failed(e));
                }
                then.push(Then::Appended(answer));
                appended?;
            }
            Request::FlushAcks => self.flush_acks(then),
            Request::Seen(user, at) => self.draft.seen(user, at),
            Request::Sweep(reply) => {
                let Some(sweeper) = self.sweeper.as_deref_mut() else {
                    then.push(Then::reply(reply, Swept::default()));
                    return Ok(());
                };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                match savepoint(tx, || sweeper.step(tx, now)) {
                    Ok(swept) => then.push(Then::reply(reply, swept)),
                    Err(e) => {
                        tracing::error!(error = %e, "a retention sweep step failed");
                        sweeper.forget();
                        then.push(Then::failed(reply, failed(&e)));
                        return Err(e);
                    }
                }
            }
            Request::Read(owner, peer, seq) => {
                let receipts = self.receipts;
                if let Err(e) = self.read(tx, owner, peer, seq, receipts, then) {
                    tracing::error!(error = %e, "a read position could not be recorded");
                    return Err(e);
                }
            }
            Request::Barrier(hook) => then.push(Then::Barrier(hook)),
            Request::CreateUser(id, account, reply) => match create_user(tx, id, &account) {
                Ok(created) => then.push(Then::reply(reply, created)),
                Err(e) => {
                    then.push(Then::failed(reply, failed(&e)));
                    return Err(e);
                }
            },
            Request::CreateToken(hash, user, expires_at, reply) => {
                let created = savepoint(tx, || {
                    // Expired tokens are useless; forget them while we are here.
                    tx.prepare_cached("DELETE FROM tokens WHERE expires_at <= unixepoch()")?
                        .execute([])?;
                    // Never for a disabled account: this is where a login learns it is
                    // (even one whose password check raced the disable).
                    let stored = tx
                        .prepare_cached(
                            "INSERT INTO tokens (hash, user_id, expires_at)
                             SELECT ?1, id, ?3 FROM users WHERE id = ?2 AND NOT disabled",
                        )?
                        .execute(params![&hash[..], user.get(), expires_at])?;
                    Ok(stored == 1)
                });
                match created {
                    Ok(stored) => then.push(Then::reply(reply, stored)),
                    Err(e) => {
                        then.push(Then::failed(reply, failed(&e)));
                        return Err(e);
                    }
                }
            }
            Request::RevokeToken(hash, reply) => {
                let revoked = tx
                    .prepare_cached("DELETE FROM tokens WHERE hash = ?1")
                    .and_then(|mut s| s.execute([&hash[..]]));
                match revoked {
                    Ok(n) => {
                        then.push(Then::ForgetToken(hash));
                        then.push(Then::reply(reply, n == 1));
                    }
                    Err(e) => {
                        then.push(Then::failed(reply, failed(&e)));
                        return Err(e);
                    }
                }
            }
            Request::SetDisabled(user, disabled, reply) => {
                let changed = savepoint(tx, || {
                    let found = tx
                        .prepare_cached("UPDATE users SET disabled = ?2 WHERE id = ?1")?
                        .execute(params![user.get(), disabled])?;
                    let revoked: Vec<TokenHash> = if disabled {
                        let mut stmt = tx.prepare_cached(
                            "DELETE FROM tokens WHERE user_id = ?1 RETURNING hash",
                        )?;
                        let rows = stmt.query_map([user.get()], |r| r.get(0))?;
                        rows.collect::<Result<_, _>>()?
                    } else {
                        Vec::new()
                    };
                    Ok((found == 1, revoked))
                });
                match changed {
                    Ok((found, revoked)) => {
                        then.extend(revoked.into_iter().map(Then::ForgetToken));
                        then.push(Then::reply(reply, found));
                    }
                    Err(e) => {
                        then.push(Then::failed(reply, failed(&e)));
                        return Err(e);
                    }
                }
            }
            Request::Befriend(a, b, reply) => {
                match savepoint(tx, || apply_change(tx, a, b, Change::Befriend, None)) {
                    Ok(()) => {
                        then.extend([Then::ForgetFriends(a), Then::ForgetFriends(b)]);
                        then.push(Then::reply(reply, ()));
                    }
                    Err(e) => {
                        then.push(Then::failed(reply, failed(&e)));
                        return Err(e);
                    }
                }
            }
            Request::Ask(from, to, message, at, reply) => {
                let ask = Some((message.as_str(), at));
                match self.social(tx, from, to, social::request, ask, then) {
                    Ok(answer) => then.push(Then::reply(reply, answer)),
                    Err(e) => {
                        then.push(Then::failed(reply, failed(&e)));
                        return Err(e);
                    }
                }
            }
            Request::CreateGroup(owner, name, members, max, reply) => {
                let made = self.create_group(tx, owner, name, members, max, then);
                return answered(then, reply, made);
            }
            Request::Group(actor, group, op, max, reply) => {
                let changed = self.change_group(tx, actor, group, op, max, then);
                return answered(then, reply, changed);
            }
            Request::Social(op, a, b, reply) => {
                match self.social(tx, a, b, op.rules(), None, then) {
                    Ok(answer) => then.push(Then::reply(reply, answer)),
                    Err(e) => {
                        then.push(Then::failed(reply, failed(&e)));
                        return Err(e);
                    }
                }
            }
            Request::Close(tx) => {
                self.flush_acks(then);
                then.push(Then::Close(tx));
            }
        }
        Ok(())
    }
}

/// Whether `?1` counts `?2` among their friends.
pub(super) const ARE_FRIENDS: &str =
    "SELECT 1 FROM friendships WHERE user_id = ?1 AND friend_id = ?2";

/// Answers `reply` with `result`, a request's own outcome; an error is passed on (see
/// [`State::apply`]).
fn answered<T: Send + 'static>(
    then: &mut Vec<Then>,
    reply: Reply<T>,
    result: rusqlite::Result<T>,
) -> rusqlite::Result<()> {
    match result {
        Ok(answer) => {
            then.push(Then::reply(reply, answer));
            Ok(())
        }
        Err(e) => {
            let failed = StoreError::Backend(e.to_string().into());
            then.push(Then::failed(reply, failed));
            Err(e)
        }
    }
}

/// Runs `f` inside a savepoint: all of its statements or none.
pub(super) fn savepoint<T>(
    tx: &Transaction,
    f: impl FnOnce() -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    tx.execute_batch("SAVEPOINT request")?;
    match f() {
        Ok(value) => {
            tx.execute_batch("RELEASE request")?;
            Ok(value)
        }
        Err(e) => {
            if !tx.is_autocommit() {
                tx.execute_batch("ROLLBACK TO request; RELEASE request")?;
            }
            Err(e)
        }
    }
}

fn create_user(
    tx: &Transaction,
    id: Option<UserId>,
    u: &Account,
) -> rusqlite::Result<Option<UserId>> {
    let inserted = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO users (id, name, sex, email, signature, password_hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            id.map(UserId::get),
            u.name,
            u.sex,
            u.email,
            u.signature,
            u.password_hash
        ])?;
    if inserted == 0 {
        return Ok(None);
    }
    id_or_corrupt(tx.last_insert_rowid()).map(Some)
}

/// A user id read from the database.
pub(super) fn id(n: i64) -> rusqlite::Result<UserId> {
    id_or_corrupt(n)
}

fn id_or_corrupt(n: i64) -> rusqlite::Result<UserId> {
    UserId::new(n).ok_or(rusqlite::Error::IntegralValueOutOfRange(0, n))
}
