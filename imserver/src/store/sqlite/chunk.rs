//! The chunk: the entries one transaction appended to one stream, in one row.
//!
//! A busy server commits a few hundred messages to a few dozen streams at a time; as rows
//! of their own they were two B-tree inserts each and most of the server's CPU time per
//! message, as chunks they are written nearly as they are read. The entries of a chunk are
//! consecutive in `seq`, each framed as on the wire: a 4-byte big-endian length, then the
//! payload (without `seq`).

use bytes::Bytes;
use improto::{Envelope, PacketKind};

use crate::id::UserId;
use crate::store::StoredEntry;

/// The head of `?1`'s stream: the highest `last_seq` of its chunks (`NULL` when it has none).
pub(super) const HEAD: &str = "SELECT max(last_seq) FROM stream_chunks WHERE owner = ?1";

/// The other user of the conversation a stored entry of `owner`'s stream belongs to, and
/// whether that user sent it; `None` for an event. A message to oneself is the
/// conversation with oneself.
pub(super) fn conversation_of(payload: &[u8], owner: UserId) -> Option<(UserId, bool)> {
    let env = Envelope::peek(payload).ok()?;
    if env.kind() != PacketKind::Message {
        return None;
    }
    let sender = UserId::parse(env.sender()?).ok()?;
    let receiver = UserId::parse(env.receiver()?).ok()?;
    if sender == owner {
        Some((receiver, false))
    } else if receiver == owner {
        Some((sender, true))
    } else {
        None
    }
}

/// A chunk being built by a transaction.
#[derive(Debug)]
pub(super) struct Draft {
    pub first_seq: u64,
    pub last_seq: u64,
    pub frames: Vec<u8>,
}

impl Draft {
    pub fn new(first_seq: u64) -> Self {
        Draft {
            first_seq,
            last_seq: first_seq - 1,
            frames: Vec::new(),
        }
    }

    /// Appends the entry with the next `seq`.
    pub fn push(&mut self, payload: &[u8]) {
        // Payloads are bounded by the frame limit, far below 4 GiB.
        self.frames
            .extend_from_slice(&(payload.len() as u32).to_be_bytes());
        self.frames.extend_from_slice(payload);
        self.last_seq += 1;
    }
}

/// The entries of a stored chunk, in order.
pub(super) struct Frames {
    seq: u64,
    rest: Bytes,
}

impl Frames {
    pub fn new(first_seq: u64, frames: Bytes) -> Self {
        Frames {
            seq: first_seq,
            rest: frames,
        }
    }
}

impl Iterator for Frames {
    type Item = Result<StoredEntry, &'static str>;

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
        let entry = StoredEntry {
            seq: self.seq,
            payload,
        };
        self.seq += 1;
        Some(Ok(entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draft_reads_back_as_its_entries() {
        let mut d = Draft::new(7);
        d.push(b"{}");
        d.push(br#"{"a":1}"#);
        assert_eq!((d.first_seq, d.last_seq), (7, 8));
        let back: Vec<_> = Frames::new(7, d.frames.into())
            .map(|e| e.map(|e| (e.seq, e.payload)))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            back,
            [
                (7, Bytes::from_static(b"{}")),
                (8, Bytes::from_static(br#"{"a":1}"#))
            ]
        );
    }

    #[test]
    fn a_cut_chunk_is_an_error_not_a_panic() {
        let mut it = Frames::new(1, Bytes::from_static(b"\0\0\0\x09{}"));
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
    }
}
