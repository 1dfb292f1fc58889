//! Reading a whole SQLite store out, for `imserver migrate` (see `store::migrate`): every
//! table as rows, and every stream as its entries with their conversation and origin.

use std::path::Path;

use bytes::Bytes;
use rusqlite::{Connection, OpenFlags};

use super::chunk::{CHUNK_TABLES, conversation_of, entries};
use super::reads::{Payloads, corrupt};
use super::{DB_FILE, ids, schema};
use crate::id::UserId;
use crate::store::StoreError;

/// Every row but the streams' entries (see [`Export::entries`]).
#[derive(Debug, Default)]
pub(crate) struct Tables {
    pub users: Vec<UserRow>,
    /// `(hash, user, expires_at)`.
    pub tokens: Vec<(Vec<u8>, i64, i64)>,
    pub friendships: Vec<(i64, i64)>,
    /// `(from, to, message, at)`.
    pub friend_requests: Vec<(i64, i64, String, i64)>,
    pub blocks: Vec<(i64, i64)>,
    /// `(id, name, owner)`, and the highest group id ever given.
    pub groups: Vec<(i64, String, i64)>,
    pub last_group: i64,
    /// `(group, user, since)`.
    pub group_members: Vec<(i64, i64, i64)>,
    /// `(owner, acked)`.
    pub acks: Vec<(i64, i64)>,
    /// `(owner, peer, seq)`.
    pub read_positions: Vec<(i64, i64, i64)>,
    /// `(sender, client id, seq)`.
    pub ids: Vec<(i64, Vec<u8>, u64)>,
    /// Every user with a stream.
    pub owners: Vec<i64>,
}

/// A user as exported.
#[derive(Debug)]
pub(crate) struct UserRow {
    pub id: i64,
    pub name: String,
    pub sex: String,
    pub email: String,
    pub signature: String,
    pub password_hash: String,
    pub last_seen: Option<i64>,
    pub disabled: bool,
}

/// A stream entry as exported.
pub(crate) struct Entry {
    pub seq: u64,
    pub payload: Bytes,
    /// The conversation (its key, see `Address::key`) and whether someone else sent it.
    pub conversation: Option<(i64, bool)>,
    pub origin: u64,
}

/// A SQLite store opened for export (migrated to the latest schema first).
pub(crate) struct Export {
    conn: Connection,
}

impl Export {
    /// Opens the store in `data_dir`. Blocking; the server must be stopped.
    pub fn open(data_dir: &Path) -> Result<Export, StoreError> {
        let path = data_dir.join(DB_FILE);
        if !path.is_file() {
            return Err(StoreError::Backend(
                format!("no SQLite store in {}", data_dir.display()).into(),
            ));
        }
        let mut conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        schema::migrations().to_latest(&mut conn)?;
        Ok(Export { conn })
    }

    pub fn tables(&self) -> Result<Tables, StoreError> {
        let c = &self.conn;
        fn rows<T>(
            c: &Connection,
            sql: &str,
            f: impl FnMut(&rusqlite::Row) -> rusqlite::Result<T>,
        ) -> rusqlite::Result<Vec<T>> {
            let mut stmt = c.prepare(sql)?;
            let rows = stmt.query_map([], f)?;
            rows.collect()
        }
        let pair = |r: &rusqlite::Row| Ok((r.get(0)?, r.get(1)?));
        let last_group: Option<i64> = c
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'groups'",
                [],
                |r| r.get(0),
            )
            .ok();
        Ok(Tables {
            users: rows(
                c,
                "SELECT id, name, sex, email, signature, password_hash, last_seen, disabled
                 FROM users ORDER BY id",
                |r| {
                    Ok(UserRow {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        sex: r.get(2)?,
                        email: r.get(3)?,
                        signature: r.get(4)?,
                        password_hash: r.get(5)?,
                        last_seen: r.get(6)?,
                        disabled: r.get(7)?,
                    })
                },
            )?,
            tokens: rows(c, "SELECT hash, user_id, expires_at FROM tokens", |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?,
            friendships: rows(c, "SELECT user_id, friend_id FROM friendships", pair)?,
            friend_requests: rows(
                c,
                "SELECT from_id, to_id, message, at FROM friend_requests",
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?,
            blocks: rows(c, "SELECT blocker, blocked FROM blocks", pair)?,
            groups: rows(c, "SELECT id, name, owner FROM groups ORDER BY id", |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?,
            last_group: last_group.unwrap_or(0),
            group_members: rows(
                c,
                "SELECT group_id, user_id, since FROM group_members",
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?,
            acks: rows(c, "SELECT owner, acked FROM stream_acks", pair)?,
            read_positions: rows(c, "SELECT owner, peer, seq FROM read_positions", |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?,
            ids: ids::all(c)?,
            owners: rows(
                c,
                "SELECT owner FROM stream_chunks UNION SELECT owner FROM recent_stream_chunks
                 ORDER BY owner",
                |r| r.get(0),
            )?,
        })
    }

    /// Every entry of `owner`'s stream, in order.
    pub fn entries(&self, owner: i64) -> Result<Vec<Entry>, StoreError> {
        let user =
            UserId::new(owner).ok_or_else(|| StoreError::Corrupt(format!("owner {owner}")))?;
        let mut payloads = Payloads::new(&self.conn);
        let mut out = Vec::new();
        for table in CHUNK_TABLES {
            let mut stmt = self.conn.prepare(&format!(
                "SELECT first_seq, batch, entries FROM {table} WHERE owner = ?1 ORDER BY last_seq"
            ))?;
            let mut rows = stmt.query([owner])?;
            while let Some(row) = rows.next()? {
                let (first, batch): (u64, i64) = (row.get(0)?, row.get(1)?);
                let data: Vec<u8> = row.get(2)?;
                for e in entries(first, &data) {
                    let e = e.map_err(corrupt)?;
                    let payload = payloads.read(batch, e.slot)?;
                    let conversation =
                        conversation_of(&payload, user).map(|(peer, from)| (peer.key(), from));
                    out.push(Entry {
                        seq: e.seq,
                        payload,
                        conversation,
                        origin: e.origin,
                    });
                }
            }
        }
        Ok(out)
    }
}
