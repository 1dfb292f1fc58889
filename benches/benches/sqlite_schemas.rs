//! Storage schemas compared on bare rusqlite with the server's settings (WAL,
//! `synchronous=NORMAL`): one prepared statement, one transaction per 1,000 messages to 50
//! inboxes, and nothing else: no channels, no hooks, no inbox bookkeeping.
//!
//! - `row_per_message`: the schema before migration 0003, one row per message clustered by
//!   inbox (kept for comparison: it was most of the server's CPU time per message);
//! - `chunk_per_inbox`: the schema of migrations 0003 and 0004, one row per inbox per
//!   transaction holding its payloads (0005 keeps the rows and moves the payloads into one
//!   row per transaction, stored once: two statements, which this harness does not time);
//! - `client_id_rows`: what protocol v2's de-duplication added until migration 0005, one row
//!   per message in `client_ids`;
//! - `client_id_runs`: what it adds since, one row per sender per transaction holding that
//!   sender's ids and seqs (see `imserver/src/store/sqlite/ids.rs`).
//!
//! Criterion reports wall-clock time on one thread, waits for the disk at checkpoints
//! included. Compare the variants with each other; the server's CPU time per message is
//! `imbench`'s to measure (its writer thread spends less per v2 message than the last two
//! variants add up to here).
//!
//! `cargo bench -p imbench --bench sqlite_schemas`

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use rusqlite::{Connection, Statement, params};

const BATCH: u64 = 1000;
const INBOXES: u64 = 50;

const ROW_PER_MESSAGE: &str = "CREATE TABLE messages (
        owner TEXT NOT NULL, seq INTEGER NOT NULL, sender TEXT NOT NULL,
        client_id TEXT, payload BLOB NOT NULL, PRIMARY KEY (owner, seq)
    ) WITHOUT ROWID;";

const CHUNKS: &str = "CREATE TABLE chunks (
        owner TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
        frames BLOB NOT NULL
    );
    CREATE UNIQUE INDEX chunks_inbox ON chunks (owner, last_seq);";

const CLIENT_IDS: &str = "CREATE TABLE client_ids (
        sender TEXT NOT NULL, client_id TEXT NOT NULL, seq INTEGER NOT NULL,
        PRIMARY KEY (sender, client_id)
    ) WITHOUT ROWID;";

const CLIENT_ID_RUNS: &str = "CREATE TABLE message_id_runs (
        sender INTEGER NOT NULL, first_id BLOB NOT NULL, last_id BLOB NOT NULL,
        entries BLOB NOT NULL, PRIMARY KEY (sender, first_id)
    ) WITHOUT ROWID;";

fn open(dir: &tempfile::TempDir, schema: &str) -> Connection {
    let conn = Connection::open(dir.path().join("schemas.sqlite3")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.execute_batch(schema).unwrap();
    conn
}

/// Benchmarks one transaction of `BATCH` messages, written by `fill` with the prepared
/// `insert`, on a fresh database with `schema`.
fn bench_batches(
    group: &mut BenchmarkGroup<WallTime>,
    name: &str,
    schema: &str,
    insert: &str,
    mut fill: impl FnMut(&mut Statement),
) {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open(&dir, schema);
    group.bench_function(name, |b| {
        b.iter(|| {
            let tx = conn.transaction().unwrap();
            let mut stmt = tx.prepare(insert).unwrap();
            fill(&mut stmt);
            drop(stmt);
            tx.commit().unwrap();
        })
    });
}

fn insert(c: &mut Criterion) {
    let payload = imbench::payload(&imbench::message_of_payload_len(100));
    let users: Vec<String> = (0..INBOXES).map(|i| (100_000 + i).to_string()).collect();
    let mut group = c.benchmark_group("sqlite_schemas");
    group.throughput(Throughput::Elements(BATCH));

    let mut seq = 0u64;
    bench_batches(
        &mut group,
        "row_per_message",
        ROW_PER_MESSAGE,
        "INSERT INTO messages (owner, seq, sender, payload) VALUES (?1, ?2, ?3, ?4)",
        |stmt| {
            for i in 0..BATCH {
                seq += 1;
                let who = &users[(i % INBOXES) as usize];
                stmt.execute(params![who, seq, who, &payload[..]]).unwrap();
            }
        },
    );

    let mut seq = 0u64;
    bench_batches(
        &mut group,
        "chunk_per_inbox",
        CHUNKS,
        "INSERT INTO chunks (owner, first_seq, last_seq, frames) VALUES (?1, ?2, ?3, ?4)",
        |stmt| {
            let per_inbox = BATCH / INBOXES;
            for who in &users {
                let mut frames = Vec::new();
                for _ in 0..per_inbox {
                    frames.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                    frames.extend_from_slice(&payload);
                }
                stmt.execute(params![who, seq + 1, seq + per_inbox, frames])
                    .unwrap();
                seq += per_inbox;
            }
        },
    );

    let mut seq = 0u64;
    bench_batches(
        &mut group,
        "client_id_rows",
        CLIENT_IDS,
        "INSERT INTO client_ids (sender, client_id, seq) VALUES (?1, ?2, ?3)",
        |stmt| {
            for i in 0..BATCH {
                seq += 1;
                let who = &users[(i % INBOXES) as usize];
                stmt.execute(params![who, seq.to_string(), seq]).unwrap();
            }
        },
    );

    let mut seq = 0u64;
    bench_batches(
        &mut group,
        "client_id_runs",
        CLIENT_ID_RUNS,
        "INSERT INTO message_id_runs (sender, first_id, last_id, entries) VALUES (?1, ?2, ?3, ?4)",
        |stmt| {
            let per_sender = BATCH / INBOXES;
            // An id as the server keys it: its length, then its bytes.
            let key = |n: u64| {
                let id = n.to_string();
                let mut k = (id.len() as u32).to_be_bytes().to_vec();
                k.extend_from_slice(id.as_bytes());
                k
            };
            for sender in 0..INBOXES {
                let (first, last) = (seq + 1, seq + per_sender);
                let mut entries = Vec::new();
                for n in first..=last {
                    let id = n.to_string();
                    entries.push(id.len() as u8);
                    entries.extend_from_slice(id.as_bytes());
                    entries.extend_from_slice(&n.to_be_bytes()[5..]);
                }
                stmt.execute(params![sender, key(first), key(last), entries])
                    .unwrap();
                seq = last;
            }
        },
    );
    group.finish();
}

criterion_group!(benches, insert);
criterion_main!(benches);
