//! Read receipts, the same for every backend: a `Read` moves the reader's position in one
//! conversation forward and, unless `--read-receipts off`, tells the senders of the newly
//! read messages, each in their own terms: an `Event` of kind `read` whose `upTo` is the
//! `seq` of the newest of *their* messages now read, in *their* stream (every received
//! entry keeps that number, its origin). A user who blocks the reader is not told.

use improto::{Event, EventKind};

use crate::id::{Address, UserId};

/// What a `Read` may do.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadReceipts {
    /// `--read-receipts`.
    pub on: bool,
    /// `--read-receipt-scan`: the newly read messages looked through, newest first, for their
    /// senders; older ones get no receipt.
    pub scan: usize,
}

impl ReadReceipts {
    pub fn of(config: &crate::config::StoreConfig) -> Self {
        ReadReceipts {
            on: config.read_receipts == crate::config::Switch::On,
            scan: config.read_receipt_scan,
        }
    }
}

/// The payload of a read receipt: `reader` has read up to `up_to` (in its receiver's
/// stream) of the conversation `peer` is, as the reader has it (their group, or themself).
pub(crate) fn receipt(reader: UserId, peer: Address, up_to: u64) -> bytes::Bytes {
    let mut event = Event::new(EventKind::Read, reader.to_string(), "");
    event.name = None;
    event.up_to = Some(up_to);
    if let Address::Group(g) = peer {
        event.group = Some(g.to_string());
    }
    super::event_bytes(event)
}
