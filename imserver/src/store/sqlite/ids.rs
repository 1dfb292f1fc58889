//! De-duplication of client message ids.
//!
//! A retried message (the same sender, the same client id) is stored once and acknowledged
//! with its first copy's `seq`, across restarts and crashes, so every stored id is in the
//! database under a unique key. A row per id cost one B-tree insert per message, about a
//! third of what a v2 message cost the server. Most ids grow, though (a counter, a time):
//! the ids a sender sends above every id it sent before share a row, a *run*, written once
//! per transaction: `message_id_runs (sender, first_id, last_id, entries)`, where `entries`
//! holds each id of the run with the `seq` of its copy in the sender's stream. Any other id
//! (out of order, from a second device whose ids sort lower, random) gets a row of its own
//! in `message_id_singles`, as every id did before.
//!
//! Ids are ordered as [`Key`]s, shorter ones first (so that a counter, `"9"` then `"10"`,
//! grows, as does a fixed-width one). A run only ever holds ids that were above every id of
//! its sender when they came, so **a sender's runs never overlap**, and the one run that can
//! hold an id is the one with the greatest `first` at or below it: one index seek. The
//! writer keeps each sender's highest id in memory: an id above it is new without any query.

use std::collections::HashMap;

use integer_encoding::VarInt;
use rusqlite::{Connection, OptionalExtension, params};

use crate::id::UserId;

/// A run's `entries` stay under this many bytes, so that a row fits in its B-tree page (a
/// larger one spills into overflow pages, which every seek past it then reads).
const RUN_BYTES: usize = 800;

/// A client id in run order: its length (4 bytes, big-endian), then its bytes. Bytewise,
/// as SQLite compares blobs, that orders shorter ids first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Key(Vec<u8>);

impl Key {
    pub fn new(id: &str) -> Key {
        let mut key = Vec::with_capacity(4 + id.len());
        // Ids are bounded by the frame limit, far below 4 GiB.
        key.extend_from_slice(&(id.len() as u32).to_be_bytes());
        key.extend_from_slice(id.as_bytes());
        Key(key)
    }

    /// As stored.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn id(&self) -> &[u8] {
        &self.0[4..]
    }
}

/// What the store knows of an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// Stored before, its copy at this `seq` of the sender's stream.
    Stored(u64),
    /// New above every id of its sender: it goes to a run.
    Top,
    /// New, but not above every id of its sender: it gets a row of its own.
    Single,
}

/// What a sender stores in this batch.
#[derive(Debug, Default)]
struct Batch {
    /// The runs this batch makes, in order (each above the one before); ids sorted.
    runs: Vec<Vec<(Key, u64)>>,
    /// The bytes `runs`' last run's entries take.
    run_bytes: usize,
    singles: HashMap<Key, u64>,
}

/// The writer's view of the stored ids.
pub(super) struct Ids {
    /// Each sender's highest stored id (`None`: the sender has none), read once; this
    /// batch's ids included.
    top: HashMap<UserId, Option<Key>>,
    /// `--cache-entries`: past this many senders, `top` is forgotten and read again.
    max_top: usize,
    batch: HashMap<UserId, Batch>,
}

impl Ids {
    pub fn new(max_top: usize) -> Self {
        Ids {
            top: HashMap::new(),
            max_top,
            batch: HashMap::new(),
        }
    }

    /// Whether `sender` stored `key` before (this batch included).
    pub fn check(
        &mut self,
        conn: &Connection,
        sender: UserId,
        key: &Key,
    ) -> rusqlite::Result<Seen> {
        let top = match self.top.get(&sender) {
            Some(top) => top,
            None => {
                let top = load_top(conn, sender)?;
                self.top.entry(sender).or_insert(top)
            }
        };
        if top.as_ref().is_none_or(|top| key > top) {
            return Ok(Seen::Top);
        }
        if let Some(batch) = self.batch.get(&sender) {
            // Each run is sorted, as it grew at the top.
            let in_run = batch.runs.iter().find_map(|run| {
                let at = run.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
                Some(run[at].1)
            });
            if let Some(seq) = in_run.or(batch.singles.get(key).copied()) {
                return Ok(Seen::Stored(seq));
            }
        }
        let single: Option<u64> = conn
            .prepare_cached("SELECT seq FROM message_id_singles WHERE sender = ?1 AND id = ?2")?
            .query_row(params![sender.get(), key.as_bytes()], |r| r.get(0))
            .optional()?;
        if let Some(seq) = single {
            return Ok(Seen::Stored(seq));
        }
        let run = conn
            .prepare_cached(
                "SELECT last_id, entries FROM message_id_runs
                 WHERE sender = ?1 AND first_id <= ?2 ORDER BY first_id DESC LIMIT 1",
            )?
            .query_row(params![sender.get(), key.as_bytes()], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .optional()?;
        if let Some((last, entries)) = run
            && key.as_bytes() <= &last[..]
        {
            let entries = decode(&entries).ok_or_else(|| corrupt(sender))?;
            if let Some((_, seq)) = entries.iter().find(|(k, _)| k == key) {
                return Ok(Seen::Stored(*seq));
            }
        }
        Ok(Seen::Single)
    }

    /// Records a new `key` of `sender` whose copy is at `seq`, as [`check`](Self::check)
    /// found it (`Top` or `Single`; nothing of `sender`'s may have changed in between).
    pub fn record(&mut self, sender: UserId, key: Key, seq: u64, seen: Seen) {
        let batch = self.batch.entry(sender).or_default();
        if seen != Seen::Top {
            batch.singles.insert(key, seq);
            return;
        }
        let bytes = entry_bytes(&key);
        if batch.runs.is_empty() || batch.run_bytes + bytes > RUN_BYTES {
            batch.runs.push(Vec::new());
            batch.run_bytes = 0;
        }
        batch.run_bytes += bytes;
        self.top.insert(sender, Some(key.clone()));
        batch
            .runs
            .last_mut()
            .expect("a run was just made")
            .push((key, seq));
    }

    /// Writes what this batch recorded, and forgets it.
    pub fn finish(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let mut run = conn.prepare_cached(
            "INSERT INTO message_id_runs (sender, first_id, last_id, entries)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut single = conn.prepare_cached(
            "INSERT INTO message_id_singles (sender, id, seq) VALUES (?1, ?2, ?3)",
        )?;
        for (sender, batch) in self.batch.drain() {
            for entries in batch.runs.iter().filter(|r| !r.is_empty()) {
                let (first, last) = (&entries[0].0, &entries[entries.len() - 1].0);
                let s = sender.get();
                run.execute(params![
                    s,
                    first.as_bytes(),
                    last.as_bytes(),
                    encode(entries)
                ])?;
            }
            for (key, seq) in batch.singles {
                single.execute(params![sender.get(), key.as_bytes(), seq])?;
            }
        }
        if self.top.len() > self.max_top {
            self.top.clear();
        }
        Ok(())
    }

    /// The transaction failed: forget what this batch did, and what it knew (the database
    /// rolled back; memory did not).
    pub fn forget(&mut self) {
        self.batch.clear();
        self.top.clear();
    }
}

/// Forgets `sender`'s ids whose copies are at or below `seq` of its stream (retention
/// deleted those entries): every such single, and every such run but the newest, which
/// keeps the sender's highest id where [`load_top`] finds it. Returns the rows deleted.
pub(super) fn forget_through(
    conn: &Connection,
    sender: UserId,
    seq: u64,
) -> rusqlite::Result<usize> {
    let mut deleted = conn
        .prepare_cached("DELETE FROM message_id_singles WHERE sender = ?1 AND seq <= ?2")?
        .execute(params![sender.get(), seq])?;
    // A sender's runs follow one another in id order, and so in seq order.
    let mut runs = conn.prepare_cached(
        "SELECT first_id, entries FROM message_id_runs WHERE sender = ?1 ORDER BY first_id",
    )?;
    let mut rows = runs.query([sender.get()])?;
    let mut old = Vec::new();
    let mut newest = None;
    while let Some(row) = rows.next()? {
        let first: Vec<u8> = row.get(0)?;
        let entries = decode(row.get_ref(1)?.as_blob()?).ok_or_else(|| corrupt(sender))?;
        let last_seq = entries.iter().map(|(_, s)| *s).max().unwrap_or(0);
        if let Some(previous) = newest.replace(first) {
            old.push(previous);
        }
        if last_seq > seq {
            break;
        }
    }
    drop(rows);
    // `newest` is the last run read: kept, whether it is the newest or above `seq`.
    let mut delete =
        conn.prepare_cached("DELETE FROM message_id_runs WHERE sender = ?1 AND first_id = ?2")?;
    for first in old {
        deleted += delete.execute(params![sender.get(), first])?;
    }
    Ok(deleted)
}

/// `sender`'s highest stored id, among its runs and its single ids.
fn load_top(conn: &Connection, sender: UserId) -> rusqlite::Result<Option<Key>> {
    let highest = |sql: &str| -> rusqlite::Result<Option<Vec<u8>>> {
        conn.prepare_cached(sql)?
            .query_row([sender.get()], |r| r.get(0))
            .optional()
    };
    let run = highest(
        "SELECT last_id FROM message_id_runs WHERE sender = ?1 ORDER BY first_id DESC LIMIT 1",
    )?;
    let single =
        highest("SELECT id FROM message_id_singles WHERE sender = ?1 ORDER BY id DESC LIMIT 1")?;
    Ok(run.max(single).map(Key))
}

/// What an entry of a run takes as stored: see [`encode`].
fn entry_bytes(key: &Key) -> usize {
    let id = key.id().len();
    (id as u64).required_space() + id + 4
}

/// A run's entries as stored: per id, its length and bytes, then its `seq` (varints).
pub(super) fn encode(entries: &[(Key, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * 16);
    let mut buf = [0; 10];
    for (key, seq) in entries {
        let id = key.id();
        let n = (id.len() as u64).encode_var(&mut buf);
        out.extend_from_slice(&buf[..n]);
        out.extend_from_slice(id);
        let n = seq.encode_var(&mut buf);
        out.extend_from_slice(&buf[..n]);
    }
    out
}

fn decode(mut data: &[u8]) -> Option<Vec<(Key, u64)>> {
    let mut entries = Vec::new();
    while !data.is_empty() {
        let (len, used) = u64::decode_var(data)?;
        data = &data[used..];
        let id = std::str::from_utf8(data.get(..usize::try_from(len).ok()?)?).ok()?;
        data = &data[id.len()..];
        let (seq, used) = u64::decode_var(data)?;
        data = &data[used..];
        entries.push((Key::new(id), seq));
    }
    Some(entries)
}

/// Every stored client id, as `(sender, id, seq)`: for `imserver migrate`.
pub(super) fn all(conn: &Connection) -> rusqlite::Result<Vec<(i64, Vec<u8>, u64)>> {
    let mut out = Vec::new();
    let mut singles = conn.prepare("SELECT sender, id, seq FROM message_id_singles")?;
    let rows = singles.query_map([], |r| {
        let key: Vec<u8> = r.get(1)?;
        Ok((
            r.get(0)?,
            key.get(4..).unwrap_or_default().to_vec(),
            r.get(2)?,
        ))
    })?;
    for row in rows {
        out.push(row?);
    }
    let mut runs = conn.prepare("SELECT sender, entries FROM message_id_runs")?;
    let mut rows = runs.query([])?;
    while let Some(row) = rows.next()? {
        let sender: i64 = row.get(0)?;
        let entries: Vec<u8> = row.get(1)?;
        let owner = id_of(sender)?;
        let decoded = decode(&entries).ok_or_else(|| corrupt(owner))?;
        for (key, seq) in decoded {
            out.push((sender, key.id().to_vec(), seq));
        }
    }
    Ok(out)
}

fn id_of(n: i64) -> rusqlite::Result<UserId> {
    UserId::new(n).ok_or(rusqlite::Error::IntegralValueOutOfRange(0, n))
}

fn corrupt(sender: UserId) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        2,
        rusqlite::types::Type::Blob,
        format!("message id run of sender {sender} cannot be read").into(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;
    use rusqlite::Connection;

    use super::*;

    fn tables() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE message_id_runs (
                 sender INTEGER NOT NULL, first_id BLOB NOT NULL, last_id BLOB NOT NULL,
                 entries BLOB NOT NULL, PRIMARY KEY (sender, first_id)) WITHOUT ROWID;
             CREATE TABLE message_id_singles (
                 sender INTEGER NOT NULL, id BLOB NOT NULL, seq INTEGER NOT NULL,
                 PRIMARY KEY (sender, id)) WITHOUT ROWID;",
        )
        .unwrap();
        conn
    }

    fn user(n: i64) -> UserId {
        UserId::new(n).unwrap()
    }

    fn count(conn: &Connection, table: &str) -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    /// Checks and records each of `ids` of user 7 as one batch.
    fn send(conn: &Connection, ids: &mut Ids, batch: &[&str], first_seq: u64) {
        for (n, id) in batch.iter().enumerate() {
            let seen = ids.check(conn, user(7), &Key::new(id)).unwrap();
            assert_ne!(
                std::mem::discriminant(&seen),
                std::mem::discriminant(&Seen::Stored(0))
            );
            ids.record(user(7), Key::new(id), first_seq + n as u64, seen);
        }
        ids.finish(conn).unwrap();
    }

    #[test]
    fn keys_order_shorter_ids_first() {
        assert!(Key::new("9") < Key::new("10"));
        assert!(Key::new("10") < Key::new("11"));
        assert!(Key::new("zz") < Key::new("aaa"));
    }

    #[test]
    fn growing_ids_share_a_row_per_batch_and_others_get_their_own() {
        let conn = tables();
        let mut ids = Ids::new(100);
        send(&conn, &mut ids, &["1", "2", "3", "10"], 1);
        assert_eq!(
            (
                count(&conn, "message_id_runs"),
                count(&conn, "message_id_singles")
            ),
            (1, 0)
        );
        // Below the top: rows of their own.
        send(&conn, &mut ids, &["0", "5"], 5);
        assert_eq!(
            (
                count(&conn, "message_id_runs"),
                count(&conn, "message_id_singles")
            ),
            (1, 2)
        );
        for (id, seq) in [("3", 3), ("10", 4), ("5", 6)] {
            assert_eq!(
                ids.check(&conn, user(7), &Key::new(id)).unwrap(),
                Seen::Stored(seq)
            );
        }
        // A run's row stays small: a long burst of long ids makes several.
        let long: Vec<String> = (0..100).map(|n| format!("device-{n:020}")).collect();
        let long: Vec<&str> = long.iter().map(String::as_str).collect();
        send(&conn, &mut ids, &long, 10);
        assert!(count(&conn, "message_id_runs") > 3);
        let biggest: i64 = conn
            .query_row(
                "SELECT max(length(entries)) FROM message_id_runs",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(biggest as usize <= RUN_BYTES, "{biggest}");
    }

    /// One operation of the property test: an id checked (and recorded if new), the end of
    /// a batch, or a restart (a writer that knows nothing yet).
    #[derive(Debug, Clone)]
    enum Op {
        Send(i64, String),
        Commit,
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few senders and a small alphabet, so that ids repeat, grow, and fall below.
        let id = prop_oneof![
            "[a-c]{1,3}",
            (0u32..40).prop_map(|n| n.to_string()),
            (0u32..40).prop_map(|n| format!("d-{n:04}")),
        ];
        prop_oneof![
            8 => (1i64..4, id).prop_map(|(s, id)| Op::Send(s, id)),
            2 => Just(Op::Commit),
            1 => Just(Op::Restart),
        ]
    }

    proptest! {
        /// Whatever the order of ids, batches and restarts, an id is new exactly once, and a
        /// repeat finds the seq it was first recorded with.
        #[test]
        fn every_id_is_new_once_and_found_after(ops in prop::collection::vec(op(), 1..300)) {
            let conn = tables();
            let mut ids = Ids::new(2);
            let mut model: HashMap<(i64, String), u64> = HashMap::new();
            // What committed; `model` also holds this batch.
            let mut committed = model.clone();
            let mut seq = 0;
            for op in ops {
                match op {
                    Op::Send(sender, id) => {
                        let key = Key::new(&id);
                        let seen = ids.check(&conn, user(sender), &key).unwrap();
                        match (seen, model.get(&(sender, id.clone()))) {
                            (Seen::Stored(got), Some(want)) => prop_assert_eq!(got, *want),
                            (Seen::Top | Seen::Single, None) => {
                                seq += 1;
                                ids.record(user(sender), key, seq, seen);
                                model.insert((sender, id), seq);
                            }
                            (seen, want) => prop_assert!(false, "{id}: {seen:?}, want {want:?}"),
                        }
                    }
                    Op::Commit => {
                        ids.finish(&conn).unwrap();
                        committed = model.clone();
                    }
                    Op::Restart => {
                        // Uncommitted work is lost, as a rolled-back transaction's.
                        ids = Ids::new(2);
                        model = committed.clone();
                    }
                }
            }
            ids.finish(&conn).unwrap();
            // The runs of each sender are disjoint.
            let mut stmt = conn
                .prepare("SELECT sender, first_id, last_id FROM message_id_runs ORDER BY sender, first_id")
                .unwrap();
            let rows: Vec<(i64, Vec<u8>, Vec<u8>)> = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            for pair in rows.windows(2) {
                if pair[0].0 == pair[1].0 {
                    prop_assert!(pair[0].2 < pair[1].1, "runs overlap: {pair:?}");
                }
            }
        }
    }
}
