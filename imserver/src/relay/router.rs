//! Who is online on this node: user id → that user's live connections, and the
//! [`Delivery`] that queues committed stream entries on them.
//!
//! Sharded by user id, so a delivery locks one shard for a moment and never a global table.
//! A delivery never waits: it offers the entries to each connection's bounded queue (see
//! `outbox`), and a connection whose queue is full is told to close.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::outbox::{Outbound, Outbox};
use crate::delivery::{ConnId, Delivery, Entries, EntryKind};
use crate::id::UserId;

const SHARDS: usize = 64;

/// One slice of the table: the users whose id hashes here.
type Shard = Mutex<HashMap<UserId, Vec<Arc<Outbox>>>>;

pub struct LocalRouter {
    hasher: std::collections::hash_map::RandomState,
    shards: Box<[Shard]>,
    /// Users with a connection here, for the metrics.
    users: AtomicUsize,
}

impl Default for LocalRouter {
    fn default() -> Self {
        LocalRouter {
            hasher: Default::default(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            users: AtomicUsize::new(0),
        }
    }
}

impl LocalRouter {
    fn shard(&self, user: UserId) -> MutexGuard<'_, HashMap<UserId, Vec<Arc<Outbox>>>> {
        let i = self.hasher.hash_one(user) as usize % SHARDS;
        // A panic while holding a shard lock cannot leave the map inconsistent (every
        // operation is a single insert or retain), so a poisoned lock is still usable.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a connection of `user`, unless the user already has `max` of them: how many
    /// the user has now, or `None` when refused.
    pub fn subscribe(&self, user: UserId, conn: Arc<Outbox>, max: usize) -> Option<usize> {
        let mut shard = self.shard(user);
        let conns = shard.entry(user).or_default();
        if conns.len() >= max {
            return None;
        }
        conns.push(conn);
        if conns.len() == 1 {
            self.users.fetch_add(1, Ordering::Relaxed);
        }
        Some(conns.len())
    }

    /// Removes connection `id` of `user` (and nothing else: the user's other connections,
    /// say a newer one that reconnected, stay). Returns how many the user has left.
    pub fn unsubscribe(&self, user: UserId, id: ConnId) -> usize {
        let mut shard = self.shard(user);
        let Some(conns) = shard.get_mut(&user) else {
            return 0;
        };
        conns.retain(|c| c.id != id);
        let left = conns.len();
        if left == 0 {
            shard.remove(&user);
            self.users.fetch_sub(1, Ordering::Relaxed);
        }
        left
    }

    /// Users with a connection on this node.
    pub fn users_online(&self) -> usize {
        self.users.load(Ordering::Relaxed)
    }

    /// Tells every connection of `user` here to read its stream from the store (the bus
    /// lost something for it).
    pub fn resync(&self, user: UserId) {
        if let Some(conns) = self.shard(user).get(&user) {
            for c in conns {
                c.push(Outbound::Resync);
            }
        }
    }

    /// Tells every connection here to read its stream from the store.
    pub fn resync_all(&self) {
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for c in shard.values().flatten() {
                c.push(Outbound::Resync);
            }
        }
    }

    /// Closes every connection of `user` on this node (an operator disabled the account);
    /// returns how many.
    pub fn disconnect(&self, user: UserId) -> usize {
        let shard = self.shard(user);
        let conns = shard.get(&user).map_or(&[][..], Vec::as_slice);
        for conn in conns {
            conn.evict();
        }
        conns.len()
    }

    /// Whether `user` has a connection on this node.
    pub fn online(&self, user: UserId) -> bool {
        self.shard(user).contains_key(&user)
    }
}

impl Delivery for LocalRouter {
    /// Every connection of `to` but the one that [`EntryKind::Sent`] copies came from, which
    /// has its `Ack`s instead.
    fn deliver(&self, to: UserId, entries: Entries) {
        let mut shard = self.shard(to);
        let Some(conns) = shard.get_mut(&to) else {
            return;
        };
        let bytes = entries.iter().map(|e| e.payload.len()).sum();
        conns.retain(|c| {
            let theirs =
                |e: &crate::delivery::Entry| e.kind == EntryKind::Sent && e.origin == Some(c.id);
            if entries.iter().all(theirs) {
                return true;
            }
            c.deliver(&entries, bytes)
        });
        if conns.is_empty() {
            shard.remove(&to);
        }
    }

    fn live(&self, to: UserId, payload: Bytes) {
        if let Some(conns) = self.shard(to).get(&to) {
            for c in conns {
                c.live(&payload);
            }
        }
    }

    fn disconnect(&self, user: UserId) -> usize {
        LocalRouter::disconnect(self, user)
    }
}
