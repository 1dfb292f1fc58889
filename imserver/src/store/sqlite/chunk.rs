//! How streams are stored: every payload once, and every stream as positions in the
//! payloads.
//!
//! A transaction writes one `batches` row, its payloads one after the other, each framed as
//! on the wire (a 4-byte big-endian length, then the payload, without `seq`), and one
//! `stream_chunks` row per stream it appended to: that stream's new entries, consecutive in
//! `seq`, each as the position and length of its payload in the batch. A message is stored
//! once however many streams hold it (its receiver's, and the copy in its sender's), and a
//! chunk row is a few bytes per entry, so the rows a busy server writes per stream per
//! commit are small (a few dozen streams at a time, a few hundred messages).
//!
//! A chunk's entries are varints: per entry, the distance of its payload from the previous
//! entry's (from the start of the batch for the first), its length, and its *origin*: for a
//! message received from another user, the `seq` of that user's own copy of it (what a
//! read receipt tells them), else 0.

use bytes::Bytes;
use improto::{Envelope, PacketKind};
use integer_encoding::VarInt;

use crate::id::{Address, UserId};
use crate::store::StoredEntry;

/// The head of `?1`'s stream: the highest `last_seq` of its chunks (`NULL` when it has
/// none), folded or not (see `fold`).
pub(super) const HEAD: &str = "SELECT max(m) FROM (
     SELECT max(last_seq) AS m FROM stream_chunks WHERE owner = ?1
     UNION ALL SELECT max(last_seq) FROM recent_stream_chunks WHERE owner = ?1)";

/// The chunk of `?1`'s stream that holds entry `?2`: the first at or after it in either
/// table, each looked up through its own index.
pub(super) const CHUNK_AT: &str = "SELECT first_seq, batch, entries FROM (
     SELECT * FROM (SELECT last_seq, first_seq, batch, entries FROM stream_chunks
                    WHERE owner = ?1 AND last_seq >= ?2 ORDER BY last_seq LIMIT 1)
     UNION ALL
     SELECT * FROM (SELECT last_seq, first_seq, batch, entries FROM recent_stream_chunks
                    WHERE owner = ?1 AND last_seq >= ?2 ORDER BY last_seq LIMIT 1))
     ORDER BY last_seq LIMIT 1";

/// The tables a stream's rows are in, in `seq` order: folded first, then recent (see
/// `fold`). Queries that walk a stream or a conversation in order run once on each.
pub(super) const CHUNK_TABLES: [&str; 2] = ["stream_chunks", "recent_stream_chunks"];
pub(super) const CONVERSATION_TABLES: [&str; 2] =
    ["conversation_chunks", "recent_conversation_chunks"];

/// The conversation a stored entry of `owner`'s stream belongs to (the other user, or the
/// group), and whether someone else sent it; `None` for an event. A message to oneself is
/// the conversation with oneself.
pub(super) fn conversation_of(payload: &[u8], owner: UserId) -> Option<(Address, bool)> {
    let env = Envelope::peek(payload).ok()?;
    if env.kind() != PacketKind::Message {
        return None;
    }
    let sender = UserId::parse(env.sender()?).ok()?;
    let receiver = Address::parse(env.receiver()?).ok()?;
    match receiver {
        Address::Group(_) => Some((receiver, sender != owner)),
        Address::User(_) if sender == owner => Some((receiver, false)),
        Address::User(r) if r == owner => Some((Address::User(sender), true)),
        Address::User(_) => None,
    }
}

/// Where a payload is in its batch's `frames`: after its length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slot {
    pub offset: u64,
    pub len: u64,
}

/// The payloads of a transaction, being gathered.
#[derive(Debug, Default)]
pub(super) struct BatchDraft {
    pub frames: Vec<u8>,
}

impl BatchDraft {
    /// Appends `payload` (once, however many streams it goes to).
    pub fn push(&mut self, payload: &[u8]) -> Slot {
        // Payloads are bounded by the frame limit, far below 4 GiB.
        self.frames
            .extend_from_slice(&(payload.len() as u32).to_be_bytes());
        let offset = self.frames.len() as u64;
        self.frames.extend_from_slice(payload);
        Slot {
            offset,
            len: payload.len() as u64,
        }
    }
}

/// A stream's entries in one transaction, being gathered.
#[derive(Debug)]
pub(super) struct ChunkDraft {
    pub first_seq: u64,
    pub last_seq: u64,
    pub entries: Vec<u8>,
    /// Where the previous entry's payload starts (entries only move forward in a batch).
    previous: u64,
}

impl ChunkDraft {
    pub fn new(first_seq: u64) -> Self {
        ChunkDraft {
            first_seq,
            last_seq: first_seq - 1,
            entries: Vec::new(),
            previous: 0,
        }
    }

    /// Adds the entry with the next `seq`: the payload at `slot`, with its origin (see the
    /// module docs).
    pub fn push(&mut self, slot: Slot, origin: u64) {
        debug_assert!(
            slot.offset >= self.previous,
            "entries move forward in a batch"
        );
        put_var(&mut self.entries, slot.offset - self.previous);
        put_var(&mut self.entries, slot.len);
        put_var(&mut self.entries, origin);
        self.previous = slot.offset;
        self.last_seq += 1;
    }
}

fn put_var(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0; 10];
    let len = n.encode_var(&mut buf);
    out.extend_from_slice(&buf[..len]);
}

/// A stored entry of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ChunkEntry {
    pub seq: u64,
    pub slot: Slot,
    /// See the module docs.
    pub origin: u64,
}

/// The entries of a stored chunk, in order.
pub(super) fn entries(first_seq: u64, data: &[u8]) -> Entries<'_> {
    Entries {
        seq: first_seq,
        offset: 0,
        rest: data,
    }
}

pub(super) struct Entries<'a> {
    seq: u64,
    offset: u64,
    rest: &'a [u8],
}

impl Iterator for Entries<'_> {
    type Item = Result<ChunkEntry, &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let mut var = || {
            let (n, used) = u64::decode_var(self.rest)?;
            self.rest = &self.rest[used..];
            Some(n)
        };
        let (Some(delta), Some(len), Some(origin)) = (var(), var(), var()) else {
            self.rest = &[];
            return Some(Err("a chunk's entries are cut short"));
        };
        self.offset += delta;
        let entry = ChunkEntry {
            seq: self.seq,
            slot: Slot {
                offset: self.offset,
                len,
            },
            origin,
        };
        self.seq += 1;
        Some(Ok(entry))
    }
}

/// The frames of a `batches` row (and of the chunks of migrations 0003 and 0004, which held
/// a stream's payloads in the same framing), in order, numbered from `first_seq`.
pub(super) struct Frames {
    seq: u64,
    offset: u64,
    rest: Bytes,
}

impl Frames {
    pub fn new(first_seq: u64, frames: Bytes) -> Self {
        Frames {
            seq: first_seq,
            offset: 0,
            rest: frames,
        }
    }
}

impl Iterator for Frames {
    /// The entry and where its payload is.
    type Item = Result<(StoredEntry, Slot), &'static str>;

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
        let slot = Slot {
            offset: self.offset + 4,
            len: len as u64,
        };
        self.offset += 4 + len as u64;
        let entry = StoredEntry {
            seq: self.seq,
            payload,
        };
        self.seq += 1;
        Some(Ok((entry, slot)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_reads_back_as_its_entries_and_slots() {
        let mut batch = BatchDraft::default();
        let mut chunk = ChunkDraft::new(7);
        let other = batch.push(b"{\"not\":\"ours\"}");
        let a = batch.push(b"{}");
        let b = batch.push(&[b'x'; 300]);
        chunk.push(a, 0);
        chunk.push(b, 41);
        assert_eq!((chunk.first_seq, chunk.last_seq), (7, 8));
        let back: Vec<_> = entries(7, &chunk.entries)
            .map(|e| e.map(|e| (e.seq, e.slot, e.origin)))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back, [(7, a, 0), (8, b, 41)]);
        let payload = |s: Slot| &batch.frames[s.offset as usize..(s.offset + s.len) as usize];
        assert_eq!(payload(a), b"{}");
        assert_eq!(payload(b), &[b'x'; 300][..]);
        // The batch is framed as on the wire.
        let framed: Vec<_> = Frames::new(1, Bytes::from(batch.frames.clone()))
            .map(|f| f.unwrap().1)
            .collect();
        assert_eq!(framed, [other, a, b]);
    }

    #[test]
    fn cut_data_is_an_error_not_a_panic() {
        let mut it = Frames::new(1, Bytes::from_static(b"\0\0\0\x09{}"));
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
        let mut it = entries(1, &[0x80]);
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
    }
}
