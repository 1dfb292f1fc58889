//! Queries on a read-only connection (each runs on one of the `--store-readers` threads).

use std::collections::BTreeSet;

use bytes::Bytes;
use rusqlite::blob::Blob;
use rusqlite::types::Type;
use rusqlite::{Connection, MAIN_DB, OptionalExtension, params};

use super::chunk::{
    CHUNK_AT, CHUNK_TABLES, CONVERSATION_TABLES, HEAD, Slot, conversation_of, entries,
};
use super::writer::id;
use crate::id::{Address, UserId};
use crate::store::{
    Account, Conversation, FriendRequest, FriendRequests, HistoryPage, Position, StoredEntry,
    TokenHash, TokenRecord, User,
};

pub(super) fn user(c: &Connection, user: UserId) -> rusqlite::Result<Option<User>> {
    c.prepare_cached(
        "SELECT id, name, sex, email, signature, password_hash FROM users WHERE id = ?1",
    )?
    .query_row([user.get()], |r| {
        Ok(User {
            id: id(r.get(0)?)?,
            account: Account {
                name: r.get(1)?,
                sex: r.get(2)?,
                email: r.get(3)?,
                signature: r.get(4)?,
                password_hash: r.get(5)?,
            },
        })
    })
    .optional()
}

pub(super) fn last_seen(c: &Connection, user: UserId) -> rusqlite::Result<Option<i64>> {
    let seen: Option<Option<i64>> = c
        .prepare_cached("SELECT last_seen FROM users WHERE id = ?1")?
        .query_row([user.get()], |r| r.get(0))
        .optional()?;
    Ok(seen.flatten())
}

pub(super) fn friends(
    c: &Connection,
    user: UserId,
) -> rusqlite::Result<Option<Vec<(UserId, String)>>> {
    let exists = c
        .prepare_cached("SELECT 1 FROM users WHERE id = ?1")?
        .exists([user.get()])?;
    if !exists {
        return Ok(None);
    }
    users(
        c,
        "SELECT u.id, u.name FROM friendships f JOIN users u ON u.id = f.friend_id
         WHERE f.user_id = ?1 ORDER BY u.id",
        user,
    )
    .map(Some)
}

pub(super) fn blocks(c: &Connection, user: UserId) -> rusqlite::Result<Vec<(UserId, String)>> {
    users(
        c,
        "SELECT u.id, u.name FROM blocks b JOIN users u ON u.id = b.blocked
         WHERE b.blocker = ?1 ORDER BY u.id",
        user,
    )
}

/// The users `user` blocks.
pub(super) fn blocked_by(
    c: &Connection,
    user: UserId,
) -> rusqlite::Result<std::collections::HashSet<UserId>> {
    let mut stmt = c.prepare_cached("SELECT blocked FROM blocks WHERE blocker = ?1")?;
    let rows = stmt.query_map([user.get()], |r| id(r.get(0)?))?;
    rows.collect()
}

/// `(id, name)` rows of `sql`, which takes `user` as `?1`.
fn users(c: &Connection, sql: &str, user: UserId) -> rusqlite::Result<Vec<(UserId, String)>> {
    let mut stmt = c.prepare_cached(sql)?;
    let rows = stmt.query_map([user.get()], |r| Ok((id(r.get(0)?)?, r.get(1)?)))?;
    rows.collect()
}

pub(super) fn friend_requests(c: &Connection, me: UserId) -> rusqlite::Result<FriendRequests> {
    let requests = |sql: &str| -> rusqlite::Result<Vec<FriendRequest>> {
        let mut stmt = c.prepare_cached(sql)?;
        let rows = stmt.query_map([me.get()], |r| {
            Ok(FriendRequest {
                user: id(r.get(0)?)?,
                name: r.get(1)?,
                message: r.get(2)?,
                at: r.get(3)?,
            })
        })?;
        rows.collect()
    };
    Ok(FriendRequests {
        incoming: requests(
            "SELECT r.from_id, u.name, r.message, r.at FROM friend_requests r
             JOIN users u ON u.id = r.from_id WHERE r.to_id = ?1 ORDER BY r.at DESC, r.from_id",
        )?,
        outgoing: requests(
            "SELECT r.to_id, u.name, r.message, r.at FROM friend_requests r
             JOIN users u ON u.id = r.to_id WHERE r.from_id = ?1 ORDER BY r.at DESC, r.to_id",
        )?,
    })
}

pub(super) fn token(c: &Connection, hash: TokenHash) -> rusqlite::Result<Option<TokenRecord>> {
    c.prepare_cached("SELECT user_id, expires_at FROM tokens WHERE hash = ?1")?
        .query_row([&hash[..]], |r| {
            Ok(TokenRecord {
                user: id(r.get(0)?)?,
                expires_at: r.get(1)?,
            })
        })
        .optional()
}

pub(super) fn position(c: &Connection, owner: UserId) -> rusqlite::Result<Position> {
    let head: Option<u64> = c
        .prepare_cached(HEAD)?
        .query_row([owner.get()], |r| r.get(0))?;
    let acked: Option<u64> = c
        .prepare_cached("SELECT acked FROM stream_acks WHERE owner = ?1")?
        .query_row([owner.get()], |r| r.get(0))
        .optional()?;
    let oldest: Option<u64> = c
        .prepare_cached(OLDEST)?
        .query_row([owner.get()], |r| r.get(0))?;
    let head = head.unwrap_or(0);
    Ok(Position {
        head,
        oldest: oldest.unwrap_or(head + 1),
        acked: acked.unwrap_or(0),
    })
}

/// The first `seq` of `?1`'s oldest chunk (the recent table's are all newer).
const OLDEST: &str = "SELECT coalesce(
     (SELECT first_seq FROM stream_chunks WHERE owner = ?1 ORDER BY last_seq LIMIT 1),
     (SELECT first_seq FROM recent_stream_chunks WHERE owner = ?1 ORDER BY last_seq LIMIT 1))";

pub(super) fn read_stream(
    c: &Connection,
    owner: UserId,
    after: u64,
    limit: usize,
) -> rusqlite::Result<Vec<StoredEntry>> {
    let mut payloads = Payloads::new(c);
    let mut out = Vec::new();
    for table in CHUNK_TABLES {
        let mut stmt = c.prepare_cached(&format!(
            "SELECT first_seq, batch, entries FROM {table} WHERE owner = ?1 AND last_seq > ?2
             ORDER BY last_seq"
        ))?;
        let mut rows = stmt.query(params![owner.get(), bound(after)])?;
        while out.len() < limit
            && let Some(row) = rows.next()?
        {
            let (first, batch) = (row.get(0)?, row.get(1)?);
            for entry in entries(first, row.get_ref(2)?.as_blob()?) {
                let e = entry.map_err(corrupt)?;
                if e.seq > after {
                    let payload = payloads.read(batch, e.slot)?;
                    out.push(StoredEntry {
                        seq: e.seq,
                        payload,
                    });
                    if out.len() == limit {
                        break;
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Reads payloads out of `batches` rows through one blob handle, moved from row to row.
pub(super) struct Payloads<'c> {
    conn: &'c Connection,
    open: Option<(i64, Blob<'c>)>,
}

impl<'c> Payloads<'c> {
    pub fn new(conn: &'c Connection) -> Self {
        Payloads { conn, open: None }
    }

    /// The payload at `slot` of batch `batch`.
    pub fn read(&mut self, batch: i64, slot: Slot) -> rusqlite::Result<Bytes> {
        let blob = match &mut self.open {
            Some((at, blob)) if *at == batch => blob,
            Some((at, blob)) => {
                blob.reopen(batch)?;
                *at = batch;
                blob
            }
            None => {
                let blob = self
                    .conn
                    .blob_open(MAIN_DB, c"batches", c"frames", batch, true)?;
                &mut self.open.insert((batch, blob)).1
            }
        };
        let (Ok(offset), Ok(len)) = (usize::try_from(slot.offset), usize::try_from(slot.len))
        else {
            return Err(corrupt("a payload's position is out of range"));
        };
        let mut payload = vec![0; len];
        blob.read_at_exact(&mut payload, offset)?;
        Ok(Bytes::from(payload))
    }
}

/// The entries of `owner`'s stream from `from` to `to` (which one chunk holds) that `keep`
/// keeps, in order.
fn chunk_entries(
    payloads: &mut Payloads,
    owner: UserId,
    from: u64,
    to: u64,
    keep: impl Fn(&StoredEntry) -> bool,
) -> rusqlite::Result<Vec<StoredEntry>> {
    let mut stmt = payloads.conn.prepare_cached(CHUNK_AT)?;
    let (first, batch, data): (u64, i64, Vec<u8>) = stmt
        .query_row(params![owner.get(), bound(to)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    let mut out = Vec::new();
    for entry in entries(first, &data) {
        let e = entry.map_err(corrupt)?;
        if e.seq < from {
            continue;
        }
        if e.seq > to {
            break;
        }
        let entry = StoredEntry {
            seq: e.seq,
            payload: payloads.read(batch, e.slot)?,
        };
        if keep(&entry) {
            out.push(entry);
        }
    }
    Ok(out)
}

pub(super) fn corrupt(e: &'static str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(2, Type::Blob, e.into())
}

/// The peer of a conversation, as stored (see [`Address::key`]).
fn peer(key: i64) -> rusqlite::Result<Address> {
    Address::from_key(key).ok_or(rusqlite::Error::IntegralValueOutOfRange(0, key))
}

/// A `seq` bound for SQLite, whose integers are `i64`.
pub(super) fn bound(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

pub(super) fn history(
    c: &Connection,
    owner: UserId,
    peer: Address,
    before: Option<u64>,
    limit: usize,
) -> rusqlite::Result<HistoryPage> {
    let before = before.unwrap_or(u64::MAX);
    let mut payloads = Payloads::new(c);
    // Newest first until one more than the page, which tells whether there are more: the
    // recent rows, then the folded ones.
    let mut newest_first = Vec::with_capacity(limit + 1);
    'tables: for table in CONVERSATION_TABLES.into_iter().rev() {
        let mut stmt = c.prepare_cached(&format!(
            "SELECT first_seq, last_seq FROM {table}
             WHERE owner = ?1 AND peer = ?2 AND first_seq < ?3 ORDER BY first_seq DESC"
        ))?;
        let mut rows = stmt.query(params![owner.get(), peer.key(), bound(before)])?;
        while let Some(row) = rows.next()? {
            let in_chunk = chunk_entries(&mut payloads, owner, row.get(0)?, row.get(1)?, |e| {
                e.seq < before && conversation_of(&e.payload, owner).is_some_and(|(p, _)| p == peer)
            })?;
            for entry in in_chunk.into_iter().rev() {
                newest_first.push(entry);
                if newest_first.len() > limit {
                    break 'tables;
                }
            }
        }
    }
    let more = newest_first.len() > limit;
    newest_first.truncate(limit);
    newest_first.reverse();
    Ok(HistoryPage {
        messages: newest_first,
        more,
    })
}

pub(super) fn conversations(
    c: &Connection,
    owner: UserId,
    limit: usize,
) -> rusqlite::Result<Vec<Conversation>> {
    // Each peer once, by skipping from one to the next in the primary key (SQLite has no
    // loose index scan of its own), in both tables.
    let mut peers = BTreeSet::new();
    for table in CONVERSATION_TABLES {
        let mut stmt = c.prepare_cached(&format!(
            "WITH RECURSIVE peers(peer) AS (
                 SELECT min(peer) FROM {table} WHERE owner = ?1
                 UNION ALL
                 SELECT (SELECT min(peer) FROM {table} WHERE owner = ?1 AND peer > p.peer)
                 FROM peers p WHERE p.peer IS NOT NULL
             )
             SELECT peer FROM peers WHERE peer IS NOT NULL"
        ))?;
        for key in stmt.query_map([owner.get()], |r| r.get::<_, i64>(0))? {
            peers.insert(key?);
        }
    }
    let mut latest: Vec<(Address, u64)> = Vec::with_capacity(peers.len());
    for key in peers {
        let last = newest(
            c,
            "SELECT last_seq FROM {table} WHERE owner = ?1 AND peer = ?2
             ORDER BY first_seq DESC LIMIT 1",
            params![owner.get(), key],
        )?
        .ok_or(rusqlite::Error::QueryReturnedNoRows)?;
        latest.push((peer(key)?, last));
    }
    latest.sort_unstable_by_key(|&(_, last)| std::cmp::Reverse(last));
    latest.truncate(limit);
    let mut payloads = Payloads::new(c);
    let mut out = Vec::with_capacity(latest.len());
    for (peer, last_seq) in latest {
        let last = chunk_entries(&mut payloads, owner, last_seq, last_seq, |_| true)?
            .pop()
            .ok_or(rusqlite::Error::QueryReturnedNoRows)?;
        let unread = unread(&mut payloads, owner, peer)?;
        out.push(Conversation { peer, last, unread });
    }
    Ok(out)
}

/// The value `sql` (a query of one row from the conversation rows in `{table}`, newest
/// first) finds among the recent rows, else among the folded ones: in a conversation every
/// recent row is newer than every folded one (see `fold`).
fn newest<T: rusqlite::types::FromSql>(
    c: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<Option<T>> {
    for table in CONVERSATION_TABLES.into_iter().rev() {
        let found = c
            .prepare_cached(&sql.replace("{table}", table))?
            .query_row(params, |r| r.get(0))
            .optional()?;
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// Messages from others in `owner`'s conversation with `peer` (a user or a group) after
/// `owner`'s read position in it.
fn unread(payloads: &mut Payloads, owner: UserId, peer: Address) -> rusqlite::Result<u64> {
    let c = payloads.conn;
    let read: u64 = c
        .prepare_cached("SELECT seq FROM read_positions WHERE owner = ?1 AND peer = ?2")?
        .query_row(params![owner.get(), peer.key()], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    let (o, p, r) = (owner.get(), peer.key(), bound(read));
    // Whole chunks after the position, counted from their rows...
    let mut unread: u64 = 0;
    for table in CONVERSATION_TABLES {
        unread += c
            .prepare_cached(&format!(
                "SELECT coalesce(sum(received), 0) FROM {table}
                 WHERE owner = ?1 AND peer = ?2 AND first_seq > ?3"
            ))?
            .query_row(params![o, p, r], |row| row.get::<_, u64>(0))?;
    }
    // ...and the one the position falls inside, entry by entry.
    let straddling: Option<u64> = newest(
        c,
        "SELECT last_seq FROM {table} WHERE owner = ?1 AND peer = ?2 AND first_seq <= ?3
         ORDER BY first_seq DESC LIMIT 1",
        params![o, p, r],
    )?;
    if let Some(last) = straddling
        && last > read
    {
        let from_peer = chunk_entries(payloads, owner, read + 1, last, |e| {
            conversation_of(&e.payload, owner) == Some((peer, true))
        })?;
        unread += from_peer.len() as u64;
    }
    Ok(unread)
}
