//! Who is online on this node: user id → that user's live connections, and the
//! [`Delivery`] that queues committed stream entries on them.
//!
//! Sharded by user id, so a delivery locks one shard for a moment and never a global table.
//! A delivery never waits: it offers the entry to each connection's bounded queue (see
//! `outbox`), and a connection whose queue is full is told to close.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};

use super::outbox::Outbox;
use crate::delivery::{ConnId, Delivery, Entry, EntryKind};
use crate::id::UserId;

const SHARDS: usize = 64;

/// One slice of the table: the users whose id hashes here.
type Shard = Mutex<HashMap<UserId, Vec<Arc<Outbox>>>>;

pub struct LocalRouter {
    hasher: std::collections::hash_map::RandomState,
    shards: Box<[Shard]>,
    /// `--send-queue-bytes`.
    max_queued_bytes: usize,
}

impl LocalRouter {
    pub fn new(max_queued_bytes: usize) -> Self {
        LocalRouter {
            hasher: Default::default(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            max_queued_bytes,
        }
    }

    fn shard(&self, user: UserId) -> MutexGuard<'_, HashMap<UserId, Vec<Arc<Outbox>>>> {
        let i = self.hasher.hash_one(user) as usize % SHARDS;
        // A panic while holding a shard lock cannot leave the map inconsistent (every
        // operation is a single insert or retain), so a poisoned lock is still usable.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a connection of `user`, unless the user already has `max` of them; false then.
    pub fn subscribe(&self, user: UserId, conn: Arc<Outbox>, max: usize) -> bool {
        let mut shard = self.shard(user);
        let conns = shard.entry(user).or_default();
        if conns.len() >= max {
            return false;
        }
        conns.push(conn);
        true
    }

    /// Removes connection `id` of `user` (and nothing else: the user's other connections,
    /// say a newer one that reconnected, stay).
    pub fn unsubscribe(&self, user: UserId, id: ConnId) {
        let mut shard = self.shard(user);
        if let Some(conns) = shard.get_mut(&user) {
            conns.retain(|c| c.id != id);
            if conns.is_empty() {
                shard.remove(&user);
            }
        }
    }
}

impl Delivery for LocalRouter {
    /// Every connection of `to` but the one a [`EntryKind::Sent`] copy came from, which has
    /// its `Ack` instead.
    fn deliver(&self, to: UserId, entry: &Entry) {
        let mut shard = self.shard(to);
        let Some(conns) = shard.get_mut(&to) else {
            return;
        };
        conns.retain(|c| {
            if entry.kind == EntryKind::Sent && entry.origin == Some(c.id) {
                return true;
            }
            c.deliver(entry.seq, &entry.payload, entry.kind, self.max_queued_bytes)
        });
        if conns.is_empty() {
            shard.remove(&to);
        }
    }
}
