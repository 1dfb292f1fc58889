//! Acknowledgement positions, kept in memory and written to the database now and then.
//!
//! Every v2 client acknowledges what it has processed, and a client that keeps up
//! acknowledges every entry: in a busy group, each message brings one `Ack` from every
//! member online. Writing each one would cost a row update per delivered copy, about as
//! much as storing the copy. So an `Ack` only moves the position in an [`AckBook`] (no
//! trip to the writer thread), reads take the book into account, and the writer stores
//! what changed every `--ack-flush` and when the store closes.
//!
//! A crash forgets at most the last `--ack-flush` of acknowledgements: the entries they
//! covered are replayed again to a device that connects without `lastSeq` (which a client
//! recognises by their `seq`), and nothing is lost.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::id::UserId;

/// The acknowledgement positions not written yet.
#[derive(Debug, Default)]
pub(crate) struct AckBook {
    pending: Mutex<HashMap<UserId, u64>>,
}

impl AckBook {
    /// `owner` has processed its stream up to `seq` (never backwards).
    pub fn record(&self, owner: UserId, seq: u64) {
        let mut pending = self.lock();
        let acked = pending.entry(owner).or_default();
        *acked = (*acked).max(seq);
    }

    /// `owner`'s position, if it moved since it was last written. Read it *before* the
    /// table: a position written in between is then in the table.
    pub fn get(&self, owner: UserId) -> Option<u64> {
        self.lock().get(&owner).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// What to write now.
    pub fn unwritten(&self) -> Vec<(UserId, u64)> {
        self.lock().iter().map(|(&u, &s)| (u, s)).collect()
    }

    /// `written` is committed: forgets the positions that have not moved since.
    pub fn written(&self, written: &[(UserId, u64)]) {
        let mut pending = self.lock();
        for (owner, seq) in written {
            if pending.get(owner) == Some(seq) {
                pending.remove(owner);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<UserId, u64>> {
        // The map is consistent after every statement: a panic elsewhere cannot break it.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}
