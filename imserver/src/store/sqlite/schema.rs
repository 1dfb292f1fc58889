//! The database's versioned migrations (`migrations/`), run at startup in one transaction
//! each. Migrations 0004 and 0005 have a Rust half: 0004 reads the old inboxes' frames to
//! index their conversations, 0005 turns every chunk into a batch and its entries, and every
//! client id into a run.

use std::collections::HashMap;

use bytes::Bytes;
use rusqlite::{Transaction, params};
use rusqlite_migration::{HookError, HookResult, M, Migrations};

use super::chunk::{ChunkDraft, Frames, conversation_of};
use super::ids::Key;
use crate::id::UserId;

pub(super) fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("migrations/0001_init.sql")),
        M::up(include_str!("migrations/0002_tokens.sql")),
        M::up(include_str!("migrations/0003_chunks.sql")),
        M::up_with_hook(include_str!("migrations/0004_streams.sql"), streams),
        M::up_with_hook(
            include_str!("migrations/0005_payloads_once.sql"),
            payloads_once,
        ),
        M::up(include_str!("migrations/0006_groups.sql")),
        M::up(include_str!("migrations/0007_recent_chunks.sql")),
        M::up(include_str!("migrations/0008_retention.sql")),
        M::up(include_str!("migrations/0009_disabled.sql")),
    ])
}

/// Moves the inboxes of migration 0003 (text owners) into the streams of 0004 (integer
/// owners), indexes their conversations, and drops the old tables. Inboxes whose owner is
/// not a canonical user id go to `legacy_chunks`, unchanged.
fn streams(tx: &Transaction) -> HookResult {
    let mut chunks = tx.prepare(
        "SELECT owner, first_seq, last_seq, frames FROM chunks ORDER BY owner, last_seq",
    )?;
    let mut rows = chunks.query([])?;
    while let Some(row) = rows.next()? {
        let owner: String = row.get(0)?;
        let (first, last): (u64, u64) = (row.get(1)?, row.get(2)?);
        let frames: Vec<u8> = row.get(3)?;
        let Ok(owner) = UserId::parse(&owner) else {
            tx.execute(
                "INSERT INTO legacy_chunks (owner, first_seq, last_seq, frames) VALUES (?1, ?2, ?3, ?4)",
                params![owner, first, last, frames],
            )?;
            continue;
        };
        tx.execute(
            "INSERT INTO stream_chunks (owner, first_seq, last_seq, frames) VALUES (?1, ?2, ?3, ?4)",
            params![owner.get(), first, last, &frames],
        )?;
        let chunk = tx.last_insert_rowid();
        // Per peer: (first seq, last seq, received from the peer).
        let mut peers: HashMap<i64, (u64, u64, u64)> = HashMap::new();
        for entry in Frames::new(first, Bytes::from(frames)) {
            let (entry, _) = entry.map_err(|e| HookError::Hook(format!("inbox {owner}: {e}")))?;
            if let Some((peer, from_peer)) = conversation_of(&entry.payload, owner) {
                let c = peers.entry(peer.key()).or_insert((entry.seq, entry.seq, 0));
                c.1 = entry.seq;
                c.2 += u64::from(from_peer);
            }
        }
        for (peer, (first, last, received)) in peers {
            tx.execute(
                "INSERT INTO conversation_chunks (owner, peer, first_seq, last_seq, received, chunk)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![owner.get(), peer, first, last, received, chunk],
            )?;
        }
    }
    drop(rows);
    drop(chunks);
    copy_canonical(
        tx,
        "SELECT owner, acked FROM inboxes",
        "INSERT INTO stream_acks (owner, acked) VALUES (?1, ?2)",
    )?;
    let mut ids = tx.prepare("SELECT sender, client_id, seq FROM client_ids")?;
    let mut rows = ids.query([])?;
    while let Some(row) = rows.next()? {
        let sender: String = row.get(0)?;
        if let Ok(sender) = UserId::parse(&sender) {
            let (id, seq): (String, i64) = (row.get(1)?, row.get(2)?);
            tx.execute(
                "INSERT INTO message_ids (sender, client_id, seq) VALUES (?1, ?2, ?3)",
                params![sender.get(), id, seq],
            )?;
        }
    }
    drop(rows);
    drop(ids);
    tx.execute_batch("DROP TABLE chunks; DROP TABLE inboxes; DROP TABLE client_ids;")?;
    Ok(())
}

/// Each chunk of 0004 (its stream's payloads, framed) becomes a batch of its own and a chunk
/// of positions in it; each client id of 0004 keeps a row of its own.
fn payloads_once(tx: &Transaction) -> HookResult {
    tx.execute_batch(
        "INSERT INTO batches (id, frames, chunks) SELECT id, frames, 1 FROM stream_chunks",
    )?;
    let mut chunks =
        tx.prepare("SELECT id, owner, first_seq, last_seq, frames FROM stream_chunks")?;
    let mut rows = chunks.query([])?;
    while let Some(row) = rows.next()? {
        let (batch, owner, first, last): (i64, i64, u64, u64) =
            (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
        let mut chunk = ChunkDraft::new(first);
        for entry in Frames::new(first, Bytes::from(row.get::<_, Vec<u8>>(4)?)) {
            let (_, slot) = entry.map_err(|e| HookError::Hook(format!("stream {owner}: {e}")))?;
            // Where the senders' copies are was not kept before.
            chunk.push(slot, 0);
        }
        if chunk.last_seq != last {
            return Err(HookError::Hook(format!(
                "stream {owner}: a chunk says it ends at {last}, its frames at {}",
                chunk.last_seq
            )));
        }
        tx.execute(
            "INSERT INTO new_stream_chunks (owner, last_seq, first_seq, batch, entries)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![owner, last, first, batch, chunk.entries],
        )?;
    }
    drop(rows);
    drop(chunks);
    let mut old = tx.prepare("SELECT sender, client_id, seq FROM message_ids")?;
    let mut rows = old.query([])?;
    while let Some(row) = rows.next()? {
        let (sender, id, seq): (i64, String, u64) = (row.get(0)?, row.get(1)?, row.get(2)?);
        tx.execute(
            "INSERT INTO message_id_singles (sender, id, seq) VALUES (?1, ?2, ?3)",
            params![sender, Key::new(&id).as_bytes(), seq],
        )?;
    }
    drop(rows);
    drop(old);
    tx.execute_batch(
        "DROP TABLE stream_chunks;
         ALTER TABLE new_stream_chunks RENAME TO stream_chunks;
         ALTER TABLE conversation_chunks DROP COLUMN chunk;
         DROP TABLE message_ids;",
    )?;
    Ok(())
}

/// Copies `(owner, value)` rows whose owner is a canonical user id.
fn copy_canonical(tx: &Transaction, select: &str, insert: &str) -> rusqlite::Result<()> {
    let mut from = tx.prepare(select)?;
    let mut rows = from.query([])?;
    while let Some(row) = rows.next()? {
        let owner: String = row.get(0)?;
        if let Ok(owner) = UserId::parse(&owner) {
            let value: i64 = row.get(1)?;
            tx.execute(insert, params![owner.get(), value])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    /// A database at migration 0003 with an inbox of "7" (a message from 9, one to self), an
    /// inbox of "007", acknowledgements and a client id, migrated to the latest.
    #[test]
    fn old_inboxes_become_streams_with_their_conversations() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrations().to_version(&mut conn, 3).unwrap();
        let from_9 =
            br#"{"type":"Message","sender":"9","receiver":"7","message":"a","createTime":1}"#;
        let to_self =
            br#"{"type":"Message","sender":"7","receiver":"7","message":"b","createTime":1}"#;
        let mut frames = Vec::new();
        for f in [&from_9[..], &to_self[..]] {
            frames.extend_from_slice(&(f.len() as u32).to_be_bytes());
            frames.extend_from_slice(f);
        }
        conn.execute_batch(
            "INSERT INTO inboxes VALUES ('7', 2, 1), ('007', 1, 0);
             INSERT INTO client_ids VALUES ('9', 'c-1', 1), ('x', 'c-2', 1);",
        )
        .unwrap();
        for owner in ["7", "007"] {
            conn.execute(
                "INSERT INTO chunks (owner, first_seq, last_seq, frames) VALUES (?1, 1, 2, ?2)",
                params![owner, frames],
            )
            .unwrap();
        }
        migrations().to_latest(&mut conn).unwrap();

        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
        assert_eq!(
            count("SELECT count(*) FROM stream_chunks WHERE owner = 7"),
            1
        );
        assert_eq!(
            count("SELECT count(*) FROM legacy_chunks WHERE owner = '007'"),
            1
        );
        assert_eq!(count("SELECT acked FROM stream_acks WHERE owner = 7"), 1);
        assert_eq!(count("SELECT count(*) FROM stream_acks"), 1);
        assert_eq!(count("SELECT count(*) FROM message_id_singles"), 1);
        // A retry of the old client id is still recognised, with its old seq.
        let nine = UserId::new(9).unwrap();
        let seen = super::super::ids::Ids::new(10).check(&conn, nine, &Key::new("c-1"));
        assert_eq!(seen.unwrap(), super::super::ids::Seen::Stored(1));
        // Each old chunk is a batch of its own, and its entries point at its frames.
        let (first, batch, entries): (u64, i64, Vec<u8>) = conn
            .query_row(
                "SELECT first_seq, batch, entries FROM stream_chunks WHERE owner = 7",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        let frames: Vec<u8> = conn
            .query_row("SELECT frames FROM batches WHERE id = ?1", [batch], |r| {
                r.get(0)
            })
            .unwrap();
        let payloads: Vec<(u64, &[u8])> = super::super::chunk::entries(first, &entries)
            .map(|e| {
                let e = e.unwrap();
                let (start, end) = (
                    e.slot.offset as usize,
                    (e.slot.offset + e.slot.len) as usize,
                );
                (e.seq, &frames[start..end])
            })
            .collect();
        assert_eq!(payloads, [(1, &from_9[..]), (2, &to_self[..])]);
        assert_eq!(
            count("SELECT received FROM conversation_chunks WHERE owner = 7 AND peer = 9"),
            1
        );
        assert_eq!(
            count("SELECT received FROM conversation_chunks WHERE owner = 7 AND peer = 7"),
            0
        );
    }
}
