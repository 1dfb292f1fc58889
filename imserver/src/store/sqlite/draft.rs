//! What one transaction appends, gathered in memory and written at its end: its payloads
//! (once each), one chunk per stream it touched (among the recent ones: see `fold`), one
//! conversation row per conversation in each chunk, and the acknowledgements, read marks
//! and last-seen times it took.
//!
//! Streams are numbered as the batch first touches them, so that appending a message looks
//! up its two streams once per request rather than hashing user ids per message.

use std::collections::HashMap;

use rusqlite::{CachedStatement, Transaction, params};

use super::chunk::{BatchDraft, ChunkDraft, Slot};
use crate::id::{Address, UserId};

/// A stream of this batch: an index into [`Draft`]'s streams.
pub(super) type StreamIx = usize;

/// A stream this batch appends to.
struct StreamDraft {
    owner: UserId,
    chunk: ChunkDraft,
    /// Per conversation of the new entries: the peer (a user or a group), the first and last
    /// `seq`, and how many came from others.
    conversations: Vec<(Address, u64, u64, u64)>,
}

#[derive(Default)]
pub(super) struct Draft {
    payloads: BatchDraft,
    streams: Vec<StreamDraft>,
    index: HashMap<UserId, StreamIx>,
    acks: HashMap<UserId, u64>,
    reads: HashMap<(UserId, Address), u64>,
    /// When users' last connections closed.
    seen: HashMap<UserId, i64>,
}

impl Draft {
    /// `owner`'s stream in this batch, its head read (from `heads`, else with `head`, a
    /// prepared `HEAD`) the first time.
    pub fn stream(
        &mut self,
        heads: &mut HashMap<UserId, u64>,
        head: &mut CachedStatement,
        owner: UserId,
    ) -> rusqlite::Result<StreamIx> {
        if let Some(&ix) = self.index.get(&owner) {
            return Ok(ix);
        }
        let at = load_head(heads, head, owner)?;
        let ix = self.streams.len();
        self.streams.push(StreamDraft {
            owner,
            chunk: ChunkDraft::new(at + 1),
            conversations: Vec::new(),
        });
        self.index.insert(owner, ix);
        Ok(ix)
    }

    /// Stores a payload of this batch (once, however many streams it goes to).
    pub fn payload(&mut self, payload: &[u8]) -> Slot {
        self.payloads.push(payload)
    }

    /// Appends the payload at `slot` to stream `ix` and returns its `seq`. `conversation`
    /// is the other user (or the group) and whether someone else sent it; `origin`, for a
    /// message from another user, the `seq` of that user's copy (else 0).
    pub fn push(
        &mut self,
        ix: StreamIx,
        slot: Slot,
        conversation: Option<(Address, bool)>,
        origin: u64,
    ) -> u64 {
        let stream = &mut self.streams[ix];
        stream.chunk.push(slot, origin);
        let seq = stream.chunk.last_seq;
        if let Some((peer, from_peer)) = conversation {
            let found = stream.conversations.iter_mut().rev().find(|c| c.0 == peer);
            let c = match found {
                Some(c) => c,
                None => {
                    stream.conversations.push((peer, seq, seq, 0));
                    stream.conversations.last_mut().expect("just pushed")
                }
            };
            c.2 = seq;
            c.3 += u64::from(from_peer);
        }
        seq
    }

    /// `owner` has processed its stream up to `seq`.
    pub fn ack(&mut self, owner: UserId, seq: u64) {
        let acked = self.acks.entry(owner).or_default();
        *acked = (*acked).max(seq);
    }

    /// `user`'s last connection closed at `at`.
    pub fn seen(&mut self, user: UserId, at: i64) {
        let seen = self.seen.entry(user).or_default();
        *seen = (*seen).max(at);
    }

    /// Where this batch moved `owner`'s read position with `peer` to, if it did.
    pub fn read_position(&self, owner: UserId, peer: Address) -> Option<u64> {
        self.reads.get(&(owner, peer)).copied()
    }

    /// `owner` has read the conversation with `peer` up to `seq`.
    pub fn read(&mut self, owner: UserId, peer: Address, seq: u64) {
        let read = self.reads.entry((owner, peer)).or_default();
        *read = (*read).max(seq);
    }

    /// Writes everything gathered (its chunks among the recent ones: see `fold`), and moves
    /// `heads` past what it appended. Returns how many chunk rows it wrote.
    pub fn finish(
        self,
        tx: &Transaction,
        heads: &mut HashMap<UserId, u64>,
    ) -> rusqlite::Result<usize> {
        let streams: Vec<_> = self
            .streams
            .into_iter()
            .filter(|s| s.chunk.last_seq >= s.chunk.first_seq)
            .collect();
        if !streams.is_empty() {
            tx.prepare_cached("INSERT INTO batches (frames, chunks) VALUES (?1, ?2)")?
                .execute(params![self.payloads.frames, streams.len()])?;
            let batch = tx.last_insert_rowid();
            let mut chunk = tx.prepare_cached(
                "INSERT INTO recent_stream_chunks (owner, last_seq, first_seq, batch, entries)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut conversation = tx.prepare_cached(
                "INSERT INTO recent_conversation_chunks
                 (owner, peer, first_seq, last_seq, received)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for s in &streams {
                let (o, c) = (s.owner.get(), &s.chunk);
                chunk.execute(params![o, c.last_seq, c.first_seq, batch, c.entries])?;
                for &(peer, first, last, received) in &s.conversations {
                    conversation.execute(params![o, peer.key(), first, last, received])?;
                }
            }
            for s in &streams {
                heads.insert(s.owner, s.chunk.last_seq);
            }
        }
        let chunks = streams.len();
        let mut head = tx.prepare_cached(super::chunk::HEAD)?;
        for (owner, seq) in self.acks {
            // Never backwards, never past the head.
            let seq = seq.min(load_head(heads, &mut head, owner)?);
            tx.prepare_cached(
                "INSERT INTO stream_acks (owner, acked) VALUES (?1, ?2)
                 ON CONFLICT (owner) DO UPDATE SET acked = max(acked, excluded.acked)",
            )?
            .execute(params![owner.get(), seq])?;
        }
        for ((owner, peer), seq) in self.reads {
            let seq = seq.min(load_head(heads, &mut head, owner)?);
            tx.prepare_cached(
                "INSERT INTO read_positions (owner, peer, seq) VALUES (?1, ?2, ?3)
                 ON CONFLICT (owner, peer) DO UPDATE SET seq = max(seq, excluded.seq)",
            )?
            .execute(params![owner.get(), peer.key(), seq])?;
        }
        for (user, at) in self.seen {
            tx.prepare_cached(
                "UPDATE users SET last_seen = max(coalesce(last_seen, 0), ?2) WHERE id = ?1",
            )?
            .execute(params![user.get(), at])?;
        }
        Ok(chunks)
    }
}

/// The head of `owner`'s stream, from `heads` or else from the table (with `stmt`, a
/// prepared `HEAD`).
pub(super) fn load_head(
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
