//! The writer thread: the only connection that changes the database.
//!
//! It takes everything waiting (up to `--max-batch` requests) into one transaction, commits
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
//! one chunk per stream it touched, one `conversation_chunks` row per conversation in it,
//! and one run of client ids per device that sent (see `ids`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use improto::EventKind;
use rusqlite::{CachedStatement, Connection, Transaction, params};
use tokio::sync::{mpsc, oneshot};

use super::chunk::{BatchDraft, ChunkDraft, HEAD, Slot};
use super::ids::{Ids, Key, Seen};
use crate::delivery::{Delivery, Entry, EntryKind};
use crate::id::UserId;
use crate::store::cache::ReadCache;
use crate::store::social::{self, Change, Pair, Plan, RequestOutcome, Side, SocialError};
use crate::store::{Account, Append, Appended, BarrierHook, CommitHook, StoreError, TokenHash};

/// Where a request's answer goes.
pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A request to the writer thread.
pub(super) enum Request {
    Append(Append, CommitHook),
    /// Queue-only: nobody waits for an acknowledgement to commit.
    Ack(UserId, u64),
    /// `(owner, peer, seq)`; queue-only.
    Read(UserId, UserId, u64),
    Barrier(BarrierHook),
    CreateUser(Option<UserId>, Account, Reply<Option<UserId>>),
    CreateToken(TokenHash, UserId, i64, Reply<()>),
    RevokeToken(TokenHash, Reply<bool>),
    /// Friends without events (the demo users).
    Befriend(UserId, UserId, Reply<()>),
    /// `(from, to, message, at)`.
    Ask(
        UserId,
        UserId,
        String,
        i64,
        Reply<Result<RequestOutcome, SocialError>>,
    ),
    /// An operation of `a` on `b`.
    Social(SocialOp, UserId, UserId, Reply<Result<(), SocialError>>),
    /// Stop after everything queued before it.
    Close(oneshot::Sender<()>),
}

/// The social operations answered with `()`; see [`social`].
#[derive(Debug, Clone, Copy)]
pub(super) enum SocialOp {
    Accept,
    Decline,
    Unfriend,
    Block,
    Unblock,
}

/// What to do once the batch has committed (or failed), in request order.
enum Then {
    /// Hand a stream entry to the `Delivery`.
    Deliver(UserId, Entry),
    Append(CommitHook, Result<Appended, StoreError>),
    Barrier(BarrierHook),
    /// Answer a request: with its value when the batch committed, else with the error.
    Reply(Box<dyn FnOnce(Result<(), StoreError>) + Send>),
    /// The read cache's copy of this user's friend list is stale.
    ForgetFriends(UserId),
    ForgetToken(TokenHash),
    Close(oneshot::Sender<()>),
}

impl Then {
    /// The answer to `reply` with `value`, once the batch is known to have committed.
    fn reply<T: Send + 'static>(reply: Reply<T>, value: T) -> Then {
        Then::Reply(Box::new(move |committed| {
            let _ = reply.send(committed.map(|()| value));
        }))
    }

    /// A request that failed on its own: its error, whatever the batch does.
    fn failed<T: Send + 'static>(reply: Reply<T>, e: StoreError) -> Then {
        Then::Reply(Box::new(move |_| {
            let _ = reply.send(Err(e));
        }))
    }

    /// A request the transaction never got to (it failed first): answered with the batch's
    /// error.
    fn unapplied(request: Request) -> Then {
        fn never<T: Send + 'static>(reply: Reply<T>) -> Then {
            Then::Reply(Box::new(move |result| {
                let _ = reply.send(Err(result.err().unwrap_or(StoreError::Closed)));
            }))
        }
        match request {
            Request::Append(_, hook) => Then::Append(hook, Err(StoreError::Closed)),
            Request::Ack(..) | Request::Read(..) => Then::Reply(Box::new(|_| {})),
            Request::Barrier(hook) => Then::Barrier(hook),
            Request::CreateUser(.., reply) => never(reply),
            Request::CreateToken(.., reply) => never(reply),
            Request::RevokeToken(_, reply) => never(reply),
            Request::Befriend(.., reply) => never(reply),
            Request::Ask(.., reply) => never(reply),
            Request::Social(.., reply) => never(reply),
            Request::Close(tx) => Then::Close(tx),
        }
    }
}

/// The entries an append made (the receiver's, the sender's copy), for the `Delivery`.
type Copies = [Option<(UserId, Entry)>; 2];

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
    /// Told of every change to what it caches, after the commit and before the answer.
    cache: Arc<ReadCache>,
    delivery: Arc<dyn Delivery>,
}

/// What a batch appended, written at its end.
#[derive(Default)]
struct Drafts {
    /// Every payload, once.
    batch: BatchDraft,
    chunks: HashMap<UserId, ChunkDraft>,
    /// `(owner, peer)` → (first seq, last seq, received from peer).
    conversations: HashMap<(UserId, UserId), (u64, u64, u64)>,
    acks: HashMap<UserId, u64>,
    reads: HashMap<(UserId, UserId), u64>,
}

impl Writer {
    pub fn new(
        conn: Connection,
        max_heads: usize,
        cache: Arc<ReadCache>,
        delivery: Arc<dyn Delivery>,
    ) -> rusqlite::Result<Self> {
        let mut w = Writer {
            conn,
            heads: HashMap::new(),
            max_heads,
            blocks: HashSet::new(),
            ids: Ids::new(max_heads),
            cache,
            delivery,
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

    /// Group commit until `Close` or until every sender is gone.
    pub fn run(mut self, mut rx: mpsc::Receiver<Request>, max_batch: usize) {
        let mut batch = Vec::with_capacity(max_batch);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            if self.commit(&mut batch) {
                rx.close();
                break;
            }
        }
        // Dropping the connection checkpoints the WAL when it is the last one.
    }

    /// Applies `batch` in one transaction and answers every request. Returns true on
    /// `Close`.
    fn commit(&mut self, batch: &mut Vec<Request>) -> bool {
        if self.heads.len() > self.max_heads {
            self.heads.clear();
        }
        let mut then = Vec::with_capacity(batch.len() * 3);
        let result = self.apply(batch.drain(..), &mut then);
        if let Err(e) = &result {
            tracing::error!(error = %e, requests = then.len(), "store transaction failed");
            // The database rolled back; the in-memory copies did not.
            self.heads.clear();
            self.ids.forget();
            if let Err(e) = self.load_blocks() {
                tracing::error!(error = %e, "cannot reload the block list");
            }
        }
        let mut closing = false;
        let fail = |e: &rusqlite::Error| StoreError::Transaction(e.to_string());
        for t in then {
            match (t, &result) {
                (Then::Deliver(to, entry), Ok(())) => self.delivery.deliver(to, &entry),
                (Then::Deliver(..), Err(_)) => {}
                (Then::Append(hook, outcome), Ok(())) => hook(outcome),
                (Then::Append(hook, _), Err(e)) => hook(Err(fail(e))),
                (Then::Barrier(hook), r) => hook(r.as_ref().map(|_| ()).map_err(fail)),
                (Then::Reply(answer), r) => answer(r.as_ref().map(|_| ()).map_err(fail)),
                (Then::ForgetFriends(user), Ok(())) => self.cache.friends.forget(&user),
                (Then::ForgetToken(hash), Ok(())) => self.cache.tokens.forget(&hash),
                (Then::ForgetFriends(_) | Then::ForgetToken(_), Err(_)) => {}
                (Then::Close(tx), _) => {
                    closing = true;
                    let _ = tx.send(());
                }
            }
        }
        closing
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
        let mut drafts = Drafts::default();
        let mut state = State {
            heads: &mut self.heads,
            blocks: &mut self.blocks,
            ids: &mut self.ids,
            drafts: &mut drafts,
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
            state.finish(&tx)
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
struct Statements<'t> {
    head: CachedStatement<'t>,
    are_friends: CachedStatement<'t>,
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
struct State<'w> {
    heads: &'w mut HashMap<UserId, u64>,
    blocks: &'w mut HashSet<(UserId, UserId)>,
    ids: &'w mut Ids,
    drafts: &'w mut Drafts,
}

impl State<'_> {
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
            Request::Append(a, hook) => match self.append(tx, st, &a) {
                Ok((outcome, copies)) => {
                    // Its answer first (the sender's Ack), then its entries.
                    then.push(Then::Append(hook, Ok(outcome)));
                    let copies = copies.into_iter().flatten();
                    then.extend(copies.map(|(to, entry)| Then::Deliver(to, entry)));
                }
                Err(e) => {
                    then.push(Then::Append(hook, Err(failed(&e))));
                    return Err(e);
                }
            },
            Request::Ack(owner, seq) => {
                let acked = self.drafts.acks.entry(owner).or_default();
                *acked = (*acked).max(seq);
            }
            Request::Read(owner, peer, seq) => {
                let read = self.drafts.reads.entry((owner, peer)).or_default();
                *read = (*read).max(seq);
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
                    tx.prepare_cached(
                        "INSERT INTO tokens (hash, user_id, expires_at) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![&hash[..], user.get(), expires_at])?;
                    Ok(())
                });
                match created {
                    Ok(()) => then.push(Then::reply(reply, ())),
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
            Request::Social(op, a, b, reply) => {
                let rules: fn(Pair) -> Plan<()> = match op {
                    SocialOp::Accept => |p| social::answer(p, true),
                    SocialOp::Decline => |p| social::answer(p, false),
                    SocialOp::Unfriend => social::unfriend,
                    SocialOp::Block => social::block,
                    SocialOp::Unblock => social::unblock,
                };
                match self.social(tx, a, b, rules, None, then) {
                    Ok(answer) => then.push(Then::reply(reply, answer)),
                    Err(e) => {
                        then.push(Then::failed(reply, failed(&e)));
                        return Err(e);
                    }
                }
            }
            Request::Close(tx) => then.push(Then::Close(tx)),
        }
        Ok(())
    }

    /// A message to its receiver's stream and a copy to its sender's. Returns the outcome
    /// and the entries to deliver after the commit.
    fn append(
        &mut self,
        tx: &Transaction,
        st: &mut Statements,
        a: &Append,
    ) -> rusqlite::Result<(Appended, Copies)> {
        let to_self = a.sender == a.receiver;
        let blocked = self.blocks.contains(&(a.receiver, a.sender));
        // Everything that can fail comes first; nothing is changed until all of it passed.
        let next = load_head(self.heads, &mut st.head, a.sender)? + 1;
        let receiver_head = if to_self || blocked {
            None
        } else {
            Some(load_head(self.heads, &mut st.head, a.receiver)?)
        };
        // A retry is acknowledged as it was the first time, whatever the relay policy says
        // now (the two may have stopped being friends since).
        let id = match &a.client_id {
            Some(id) => {
                let key = Key::new(id);
                match self.ids.check(tx, a.sender, &key)? {
                    Seen::Stored(seq) => {
                        let duplicate = Appended::Stored {
                            seq,
                            duplicate: true,
                        };
                        return Ok((duplicate, [None, None]));
                    }
                    Seen::New(place) => Some((key, place)),
                }
            }
            None => None,
        };
        if a.friends_only && a.sender != a.receiver {
            let friends = st
                .are_friends
                .exists(params![a.sender.get(), a.receiver.get()])?;
            if !friends {
                return Ok((Appended::NotFriends, [None, None]));
            }
        }
        // From here on nothing fails, and the seqs become real.
        if let Some((key, place)) = id {
            self.ids.record(a.sender, key, next, place);
        }
        let slot = self.drafts.batch.push(&a.payload);
        let received = receiver_head.map(|head| {
            let seq = self.push(a.receiver, head, slot, Some((a.sender, true)));
            let entry = Entry {
                seq,
                payload: a.payload.clone(),
                kind: EntryKind::Received,
                origin: None,
            };
            (a.receiver, entry)
        });
        let seq = self.push(a.sender, next - 1, slot, Some((a.receiver, false)));
        debug_assert_eq!(seq, next);
        let copy = Entry {
            seq,
            payload: a.payload.clone(),
            // A message to oneself is received, too (a v1 client is shown it).
            kind: if to_self {
                EntryKind::Received
            } else {
                EntryKind::Sent
            },
            origin: a.origin,
        };
        let stored = Appended::Stored {
            seq,
            duplicate: false,
        };
        Ok((stored, [received, Some((a.sender, copy))]))
    }

    /// Runs the social operation `rules` of `a` on `b` in a savepoint: reads how they stand,
    /// applies the plan's changes and appends its events. `ask` is a request's message and
    /// time.
    fn social<T>(
        &mut self,
        tx: &Transaction,
        a: UserId,
        b: UserId,
        rules: fn(Pair) -> Plan<T>,
        ask: Option<(&str, i64)>,
        then: &mut Vec<Then>,
    ) -> rusqlite::Result<Result<T, SocialError>> {
        let mut names = (String::new(), String::new());
        let heads = &mut *self.heads;
        let plan = savepoint(tx, || {
            let plan = rules(read_pair(tx, a, b)?);
            if plan.answer.is_ok() {
                for &change in &plan.changes {
                    apply_change(tx, a, b, change, ask)?;
                }
            }
            if !plan.events.is_empty() {
                names = (name(tx, a)?, name(tx, b)?);
                // The streams the events go to, so that nothing fails once this is released.
                let mut head = tx.prepare_cached(HEAD)?;
                for owner in [a, b] {
                    load_head(heads, &mut head, owner)?;
                }
            }
            Ok(plan)
        })?;
        if plan.answer.is_err() {
            return Ok(plan.answer);
        }
        // The rows are written; now what lives in memory.
        for change in &plan.changes {
            match change {
                Change::Befriend | Change::Unfriend => {
                    then.extend([Then::ForgetFriends(a), Then::ForgetFriends(b)]);
                }
                Change::Block => {
                    self.blocks.insert((a, b));
                }
                Change::Unblock => {
                    self.blocks.remove(&(a, b));
                }
                Change::Ask | Change::DropRequests | Change::DropIncoming => {}
            }
        }
        for (side, kind) in plan.events {
            let (owner, user, name) = match side {
                Side::A => (a, b, &names.1),
                Side::B => (b, a, &names.0),
            };
            let message = match (&kind, ask) {
                (EventKind::FriendRequest, Some((message, _))) if !message.is_empty() => {
                    Some(message)
                }
                _ => None,
            };
            let payload = social::event_payload(kind, user, name, message);
            let slot = self.drafts.batch.push(&payload);
            let seq = self.push(owner, self.heads[&owner], slot, None);
            then.push(Then::Deliver(
                owner,
                Entry {
                    seq,
                    payload,
                    kind: EntryKind::Event,
                    origin: None,
                },
            ));
        }
        Ok(plan.answer)
    }

    /// Appends the payload at `slot` of this batch to `owner`'s stream after `head` (which
    /// must be its head) and returns its `seq`. `conversation` is the other user and
    /// whether they sent it.
    fn push(
        &mut self,
        owner: UserId,
        head: u64,
        slot: Slot,
        conversation: Option<(UserId, bool)>,
    ) -> u64 {
        let seq = head + 1;
        self.heads.insert(owner, seq);
        self.drafts
            .chunks
            .entry(owner)
            .or_insert_with(|| ChunkDraft::new(seq))
            .push(slot);
        if let Some((peer, from_peer)) = conversation {
            let c = self
                .drafts
                .conversations
                .entry((owner, peer))
                .or_insert((seq, seq, 0));
            c.1 = seq;
            c.2 += u64::from(from_peer);
        }
        seq
    }

    /// Writes what the batch gathered: its payloads, one chunk per stream, one row per
    /// conversation per chunk, the runs of client ids, the acknowledgements and read
    /// positions.
    fn finish(&mut self, tx: &Transaction) -> rusqlite::Result<()> {
        if !self.drafts.batch.is_empty() {
            let frames = std::mem::take(&mut self.drafts.batch.frames);
            tx.prepare_cached("INSERT INTO batches (frames, chunks) VALUES (?1, ?2)")?
                .execute(params![frames, self.drafts.chunks.len()])?;
            let batch = tx.last_insert_rowid();
            let mut insert = tx.prepare_cached(
                "INSERT INTO stream_chunks (owner, last_seq, first_seq, batch, entries)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (owner, d) in self.drafts.chunks.drain() {
                insert.execute(params![
                    owner.get(),
                    d.last_seq,
                    d.first_seq,
                    batch,
                    d.entries
                ])?;
            }
        }
        let mut insert = tx.prepare_cached(
            "INSERT INTO conversation_chunks (owner, peer, first_seq, last_seq, received)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for ((owner, peer), (first, last, received)) in self.drafts.conversations.drain() {
            insert.execute(params![owner.get(), peer.get(), first, last, received])?;
        }
        self.ids.finish(tx)?;
        let mut head = tx.prepare_cached(HEAD)?;
        for (owner, seq) in self.drafts.acks.drain() {
            // Never backwards, never past the head.
            let seq = seq.min(load_head(self.heads, &mut head, owner)?);
            tx.prepare_cached(
                "INSERT INTO stream_acks (owner, acked) VALUES (?1, ?2)
                 ON CONFLICT (owner) DO UPDATE SET acked = max(acked, excluded.acked)",
            )?
            .execute(params![owner.get(), seq])?;
        }
        for ((owner, peer), seq) in self.drafts.reads.drain() {
            let seq = seq.min(load_head(self.heads, &mut head, owner)?);
            tx.prepare_cached(
                "INSERT INTO read_positions (owner, peer, seq) VALUES (?1, ?2, ?3)
                 ON CONFLICT (owner, peer) DO UPDATE SET seq = max(seq, excluded.seq)",
            )?
            .execute(params![owner.get(), peer.get(), seq])?;
        }
        Ok(())
    }
}

/// Whether `?1` counts `?2` among their friends.
const ARE_FRIENDS: &str = "SELECT 1 FROM friendships WHERE user_id = ?1 AND friend_id = ?2";

/// The head of `owner`'s stream, from `heads` or else from the table (with `stmt`, a
/// prepared [`HEAD`]).
fn load_head(
    heads: &mut HashMap<UserId, u64>,
    stmt: &mut CachedStatement,
    owner: UserId,
) -> rusqlite::Result<u64> {
    if let Some(head) = heads.get(&owner) {
        return Ok(*head);
    }
    let head: Option<u64> = stmt.query_row([owner.get()], |r| r.get(0))?;
    let head = head.unwrap_or(0);
    heads.insert(owner, head);
    Ok(head)
}

/// Runs `f` inside a savepoint: all of its statements or none.
fn savepoint<T>(tx: &Transaction, f: impl FnOnce() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
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

/// How `a` and `b` stand, read inside the transaction.
fn read_pair(tx: &Transaction, a: UserId, b: UserId) -> rusqlite::Result<Pair> {
    let (a, b) = (a.get(), b.get());
    let mut friends = tx.prepare_cached(ARE_FRIENDS)?;
    let mut asked =
        tx.prepare_cached("SELECT 1 FROM friend_requests WHERE from_id = ?1 AND to_id = ?2")?;
    let mut blocks =
        tx.prepare_cached("SELECT 1 FROM blocks WHERE blocker = ?1 AND blocked = ?2")?;
    Ok(Pair {
        same: a == b,
        friends: friends.exists([a, b])?,
        asked: asked.exists([a, b])?,
        asked_by: asked.exists([b, a])?,
        blocks: blocks.exists([a, b])?,
        blocked_by: blocks.exists([b, a])?,
    })
}

/// Writes one change between `a` and `b`. `ask` is a request's message and time.
fn apply_change(
    tx: &Transaction,
    a: UserId,
    b: UserId,
    change: Change,
    ask: Option<(&str, i64)>,
) -> rusqlite::Result<()> {
    let (a, b) = (a.get(), b.get());
    let both = |sql: &str| -> rusqlite::Result<()> {
        let mut stmt = tx.prepare_cached(sql)?;
        stmt.execute([a, b])?;
        stmt.execute([b, a])?;
        Ok(())
    };
    match change {
        Change::Befriend => {
            both("INSERT OR IGNORE INTO friendships (user_id, friend_id) VALUES (?1, ?2)")?
        }
        Change::Unfriend => both("DELETE FROM friendships WHERE user_id = ?1 AND friend_id = ?2")?,
        Change::Ask => {
            let (message, at) = ask.unwrap_or(("", 0));
            tx.prepare_cached(
                "INSERT OR REPLACE INTO friend_requests (from_id, to_id, message, at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![a, b, message, at])?;
        }
        Change::DropRequests => {
            both("DELETE FROM friend_requests WHERE from_id = ?1 AND to_id = ?2")?
        }
        Change::DropIncoming => {
            tx.prepare_cached("DELETE FROM friend_requests WHERE from_id = ?1 AND to_id = ?2")?
                .execute([b, a])?;
        }
        Change::Block => {
            tx.prepare_cached("INSERT OR IGNORE INTO blocks (blocker, blocked) VALUES (?1, ?2)")?
                .execute([a, b])?;
        }
        Change::Unblock => {
            tx.prepare_cached("DELETE FROM blocks WHERE blocker = ?1 AND blocked = ?2")?
                .execute([a, b])?;
        }
    }
    Ok(())
}

fn name(tx: &Transaction, user: UserId) -> rusqlite::Result<String> {
    tx.prepare_cached("SELECT name FROM users WHERE id = ?1")?
        .query_row([user.get()], |r| r.get(0))
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
