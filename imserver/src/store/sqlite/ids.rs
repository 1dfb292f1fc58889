//! De-duplication of client message ids, stored in runs.
//!
//! A retried message (the same sender, the same client id) is stored once and acknowledged
//! with its first copy's `seq`, across restarts and crashes, so every stored id is in the
//! database, in a unique key. A row per id cost one B-tree insert per message, about a
//! third of what a v2 message cost the server; here the ids that a sender's device sends
//! one after the other share a row, a *run*: `(sender, first, last, entries)`, where
//! `entries` holds every id of the run with the `seq` of its copy in the sender's stream.
//!
//! Ids are ordered as [`Key`]s, shorter ones first (so that a counter, `"9"` then `"10"`,
//! grows, as does a fixed-width one). **A sender's runs never overlap**, so the one run that
//! can hold an id is the one with the greatest `first` at or below it: one index seek. Runs
//! are only ever made in a gap between two runs (bounded by the next one's `first`) or
//! above them all, and grow only inside their gap.
//!
//! The writer keeps each sender's highest stored id: an id above it is new without any
//! query, which is every id of a device whose ids grow (every client built on improto, and
//! imbench). A run made in a batch grows in memory while the batch lasts and is written
//! once, at its end. Anything else (ids that arrive out of order, or a second device whose
//! ids sort below the first's) costs an index seek or two, and a row per batch.

use std::collections::HashMap;

use integer_encoding::VarInt;
use rusqlite::{Connection, OptionalExtension, params};

use crate::id::UserId;

/// A run holds at most about this many ids (a row of a few kilobytes), so that a long
/// burst from one device does not make one huge row.
const RUN_CAP: usize = 256;

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

    /// As stored in `first_id` and `last_id`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn id(&self) -> &[u8] {
        &self.0[4..]
    }
}

/// What the store knows of an id.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Seen {
    /// Stored before, its copy at this `seq` of the sender's stream.
    Stored(u64),
    /// New; [`Ids::record`] takes it with this place.
    New(Place),
}

/// Where a new id goes, among the runs of its sender in memory.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Place {
    /// Inside the interval of run `i` (an id that arrived out of order).
    Inside(usize),
    /// Just above run `i`, within its gap.
    Extend(usize),
    /// A new run in a gap below this bound (none: above every run).
    Gap(Option<Key>),
}

/// A run in memory: one written (or rewritten) by this batch, or one read to look inside.
#[derive(Debug)]
struct Run {
    /// Sorted by id, never empty.
    entries: Vec<(Key, u64)>,
    /// The `first` of the next run up (none: it is the top run): the run may grow up to
    /// below it.
    bound: Option<Key>,
    /// Changed by this batch: written at its end.
    dirty: bool,
}

impl Run {
    fn first(&self) -> &Key {
        &self.entries[0].0
    }

    fn last(&self) -> &Key {
        &self.entries[self.entries.len() - 1].0
    }

    fn holds(&self, key: &Key) -> bool {
        self.first() <= key && key <= self.last()
    }

    fn may_grow_to(&self, key: &Key) -> bool {
        self.last() < key && self.bound.as_ref().is_none_or(|b| key < b)
    }
}

/// The writer's view of the stored ids.
pub(super) struct Ids {
    /// Each sender's highest stored id (`None`: the sender has none), read once; this
    /// batch's ids included.
    top: HashMap<UserId, Option<Key>>,
    /// `--cache-entries`: past this many senders, `top` is forgotten and read again.
    max_top: usize,
    /// This batch's runs per sender, sorted by `first` and disjoint.
    runs: HashMap<UserId, Vec<Run>>,
}

impl Ids {
    pub fn new(max_top: usize) -> Self {
        Ids {
            top: HashMap::new(),
            max_top,
            runs: HashMap::new(),
        }
    }

    /// Whether `sender` stored `key` before (this batch included).
    pub fn check(
        &mut self,
        conn: &Connection,
        sender: UserId,
        key: &Key,
    ) -> rusqlite::Result<Seen> {
        let runs = self.runs.entry(sender).or_default();
        for (i, run) in runs.iter().enumerate() {
            if run.holds(key) {
                return Ok(match run.entries.binary_search_by(|(k, _)| k.cmp(key)) {
                    Ok(at) => Seen::Stored(run.entries[at].1),
                    Err(_) => Seen::New(Place::Inside(i)),
                });
            }
            if run.may_grow_to(key) {
                return Ok(Seen::New(Place::Extend(i)));
            }
        }
        let top = match self.top.get(&sender) {
            Some(top) => top,
            None => {
                let top = conn
                    .prepare_cached(
                        "SELECT last_id FROM message_id_runs WHERE sender = ?1
                         ORDER BY first_id DESC LIMIT 1",
                    )?
                    .query_row([sender.get()], |r| r.get(0))
                    .optional()?
                    .map(Key);
                self.top.entry(sender).or_insert(top)
            }
        };
        if top.as_ref().is_none_or(|top| key > top) {
            // Above every stored id, and so (`top` counts this batch's) above every run.
            return Ok(Seen::New(Place::Gap(None)));
        }
        // Below the top and outside this batch's runs: ask the table.
        let stored = conn
            .prepare_cached(
                "SELECT first_id, last_id, entries FROM message_id_runs
                 WHERE sender = ?1 AND first_id <= ?2 ORDER BY first_id DESC LIMIT 1",
            )?
            .query_row(params![sender.get(), key.as_bytes()], |r| {
                Ok((Key(r.get(0)?), Key(r.get(1)?), r.get::<_, Vec<u8>>(2)?))
            })
            .optional()?;
        if let Some((_, last, data)) = stored
            && *key <= last
        {
            // Inside a stored run: keep it in memory, where a new id inside it goes.
            let entries = decode(&data).ok_or_else(|| corrupt(sender))?;
            let found = entries.iter().find(|(k, _)| k == key).map(|(_, seq)| *seq);
            // It never grows: its gap is unknown here.
            let run = Run {
                entries,
                bound: Some(last),
                dirty: false,
            };
            let i = runs.partition_point(|r| r.first() < run.first());
            runs.insert(i, run);
            return Ok(match found {
                Some(seq) => Seen::Stored(seq),
                None => Seen::New(Place::Inside(i)),
            });
        }
        // In a gap: bounded by the next run up, stored or made by this batch.
        let next: Option<Vec<u8>> = conn
            .prepare_cached(
                "SELECT min(first_id) FROM message_id_runs WHERE sender = ?1 AND first_id > ?2",
            )?
            .query_row(params![sender.get(), key.as_bytes()], |r| r.get(0))?;
        let ours = runs.iter().map(Run::first).find(|first| *first > key);
        let bound = match (next.map(Key), ours) {
            (Some(a), Some(b)) => Some(a.min(b.clone())),
            (a, b) => a.or_else(|| b.cloned()),
        };
        Ok(Seen::New(Place::Gap(bound)))
    }

    /// Records a new `key` of `sender` whose copy is at `seq`, where [`check`](Self::check)
    /// placed it (nothing of `sender`'s may have changed in between).
    pub fn record(&mut self, sender: UserId, key: Key, seq: u64, place: Place) {
        let top = self.top.entry(sender).or_default();
        if top.as_ref().is_none_or(|top| key > *top) {
            *top = Some(key.clone());
        }
        let runs = self.runs.entry(sender).or_default();
        let new_run = |runs: &mut Vec<Run>, key: Key, bound| {
            let i = runs.partition_point(|r| *r.first() < key);
            let run = Run {
                entries: vec![(key, seq)],
                bound,
                dirty: true,
            };
            runs.insert(i, run);
        };
        match place {
            Place::Inside(i) => {
                let run = &mut runs[i];
                let at = run.entries.partition_point(|(k, _)| *k < key);
                run.entries.insert(at, (key, seq));
                run.dirty = true;
            }
            Place::Extend(i) if runs[i].entries.len() < RUN_CAP => {
                runs[i].entries.push((key, seq));
                runs[i].dirty = true;
            }
            Place::Extend(i) => {
                // Full: a new run starts here, in the rest of the old one's gap.
                let bound = runs[i].bound.replace(key.clone());
                new_run(runs, key, bound);
            }
            Place::Gap(bound) => new_run(runs, key, bound),
        }
    }

    /// Writes the runs this batch made or changed, and forgets them.
    pub fn finish(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let mut insert = conn.prepare_cached(
            "INSERT OR REPLACE INTO message_id_runs (sender, first_id, last_id, entries)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (sender, runs) in self.runs.drain() {
            for run in runs.iter().filter(|r| r.dirty) {
                let entries = encode(&run.entries);
                insert.execute(params![
                    sender.get(),
                    run.first().as_bytes(),
                    run.last().as_bytes(),
                    entries
                ])?;
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
        self.runs.clear();
        self.top.clear();
    }
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

    fn table() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE message_id_runs (
                 sender INTEGER NOT NULL, first_id BLOB NOT NULL, last_id BLOB NOT NULL,
                 entries BLOB NOT NULL, PRIMARY KEY (sender, first_id)) WITHOUT ROWID;",
        )
        .unwrap();
        conn
    }

    fn user(n: i64) -> UserId {
        UserId::new(n).unwrap()
    }

    #[test]
    fn keys_order_shorter_ids_first() {
        assert!(Key::new("9") < Key::new("10"));
        assert!(Key::new("10") < Key::new("11"));
        assert!(Key::new("zz") < Key::new("aaa"));
    }

    #[test]
    fn growing_ids_share_one_row_per_batch() {
        let conn = table();
        let mut ids = Ids::new(100);
        for (n, id) in ["1", "2", "3", "10"].into_iter().enumerate() {
            let Seen::New(place) = ids.check(&conn, user(7), &Key::new(id)).unwrap() else {
                panic!("{id} is new");
            };
            ids.record(user(7), Key::new(id), n as u64 + 1, place);
        }
        ids.finish(&conn).unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM message_id_runs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
        assert_eq!(
            ids.check(&conn, user(7), &Key::new("3")).unwrap(),
            Seen::Stored(3)
        );
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
        // Few senders and a small alphabet, so that ids repeat and fall between runs.
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
            let conn = table();
            let mut ids = Ids::new(2);
            let mut model: HashMap<(i64, String), u64> = HashMap::new();
            // The model of the database: what committed; `model` also holds this batch.
            let mut committed = model.clone();
            let mut seq = 0;
            for op in ops {
                match op {
                    Op::Send(sender, id) => {
                        let key = Key::new(&id);
                        let seen = ids.check(&conn, user(sender), &key).unwrap();
                        match (seen, model.get(&(sender, id.clone()))) {
                            (Seen::Stored(got), Some(want)) => prop_assert_eq!(got, *want),
                            (Seen::New(place), None) => {
                                seq += 1;
                                ids.record(user(sender), key, seq, place);
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
            // The stored runs of each sender are disjoint.
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
