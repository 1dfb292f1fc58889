//! What the HTTP API and the relay read all the time (the caller's token, a user, a friend
//! list, a group's members), kept in memory in front of the database.
//!
//! Without it each request made two or three trips to a reader thread, which capped the
//! API near 20,000 requests per second on two cores; a hit costs a map lookup.
//!
//! Only the store's writer changes the database, and it tells the cache what it changed
//! (after the commit, before it answers the request), so entries are never stale. A read
//! that missed fills the cache only if nothing was forgotten while it was reading the
//! database, as its answer may predate that write. Misses are not cached: the keys come
//! from clients, and each table holds at most `--cache-entries` entries.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Mutex;

use std::sync::Arc;

use super::{Group, TokenHash, TokenRecord, User};
use crate::id::{GroupId, UserId};

pub(crate) struct ReadCache {
    pub users: Table<UserId, User>,
    pub friends: Table<UserId, Vec<(UserId, String)>>,
    pub tokens: Table<TokenHash, TokenRecord>,
    /// Groups with their members: every group message's typing frame and every group route
    /// reads one.
    pub groups: Table<GroupId, Arc<Group>>,
    /// Whom each user blocks: every typing frame is checked against it.
    pub blocked: Table<UserId, Arc<HashSet<UserId>>>,
}

impl ReadCache {
    /// Forgets what a commit (on this node or another) made stale.
    pub fn forget(&self, what: crate::delivery::Stale) {
        use crate::delivery::Stale;
        match what {
            Stale::Token(hash) => self.tokens.forget(&hash),
            Stale::Friends(user) => self.friends.forget(&user),
            Stale::Blocks(user) => self.blocked.forget(&user),
            Stale::Group(group) => self.groups.forget(&group),
            Stale::Everything => {
                self.users.forget_all();
                self.friends.forget_all();
                self.tokens.forget_all();
                self.groups.forget_all();
                self.blocked.forget_all();
            }
        }
    }

    /// Tables of at most `entries` entries each.
    pub fn new(entries: usize) -> Self {
        ReadCache {
            users: Table::new(entries),
            friends: Table::new(entries),
            tokens: Table::new(entries),
            groups: Table::new(entries),
            blocked: Table::new(entries),
        }
    }
}

pub(crate) struct Table<K, V> {
    inner: Mutex<Inner<K, V>>,
    /// Past this many entries, the table is emptied and fills again with what is used.
    max: usize,
}

struct Inner<K, V> {
    /// Bumped by every `forget`; see [`Table::put`].
    generation: u64,
    map: HashMap<K, V>,
}

impl<K: Hash + Eq, V: Clone> Table<K, V> {
    fn new(max: usize) -> Self {
        Table {
            inner: Mutex::new(Inner {
                generation: 0,
                map: HashMap::new(),
            }),
            max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V>> {
        // Every operation leaves the map consistent, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &K) -> Option<V> {
        self.lock().map.get(key).cloned()
    }

    /// Read before a database read whose answer may be `put`.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Caches what the database said, unless something was forgotten since `generation`.
    pub fn put(&self, generation: u64, key: K, value: V) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.map.len() >= self.max {
            inner.map.clear();
        }
        inner.map.insert(key, value);
    }

    /// The database may have changed anything.
    pub fn forget_all(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.map.clear();
    }

    /// The database changed `key`.
    pub fn forget(&self, key: &K) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_raced_a_write_does_not_fill_the_cache() {
        let t = Table::<u32, &str>::new(16);
        let before = t.generation();
        t.forget(&1); // the writer changed key 1 while a reader was at the database
        t.put(before, 1, "stale");
        assert_eq!(t.get(&1), None);

        let now = t.generation();
        t.put(now, 1, "fresh");
        assert_eq!(t.get(&1), Some("fresh"));
        t.forget(&1);
        assert_eq!(t.get(&1), None);
    }

    #[test]
    fn a_full_table_starts_over() {
        let t = Table::<u32, u32>::new(2);
        for key in 1..=3 {
            t.put(t.generation(), key, key * 10);
        }
        assert_eq!((t.get(&1), t.get(&2), t.get(&3)), (None, None, Some(30)));
    }
}
