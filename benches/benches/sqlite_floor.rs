//! The floor under imserver's storage cost: bare rusqlite, the same schema and settings as
//! the server's messages table (WAL, `synchronous=NORMAL`), one prepared statement, one
//! transaction per 1,000 messages over 50 inboxes, no channels, no hooks, no inbox
//! bookkeeping. Nothing the server does per message can cost less than this.
//!
//! `cargo bench -p imbench --bench sqlite_floor`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rusqlite::{Connection, params};

const BATCH: usize = 1000;
const INBOXES: u64 = 50;

/// The server's schema: rows clustered by inbox.
const CLUSTERED: &str = "CREATE TABLE messages (
        owner TEXT NOT NULL, seq INTEGER NOT NULL, sender TEXT NOT NULL,
        client_id TEXT, payload BLOB NOT NULL, PRIMARY KEY (owner, seq)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX messages_client_id ON messages (sender, client_id)
        WHERE client_id IS NOT NULL;";

/// The alternative: rows in arrival order, inboxes through an index.
const ARRIVAL_ORDER: &str = "CREATE TABLE messages (
        owner TEXT NOT NULL, seq INTEGER NOT NULL, sender TEXT NOT NULL,
        client_id TEXT, payload BLOB NOT NULL
    );
    CREATE UNIQUE INDEX messages_inbox ON messages (owner, seq);
    CREATE UNIQUE INDEX messages_client_id ON messages (sender, client_id)
        WHERE client_id IS NOT NULL;";

fn schema(conn: &Connection, sql: &str) {
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.execute_batch(sql).unwrap();
}

fn insert(c: &mut Criterion) {
    let payload = imbench::payload(&imbench::message_of_payload_len(100));
    let owners: Vec<String> = (0..INBOXES).map(|i| (100_000 + i).to_string()).collect();
    let senders: Vec<String> = (0..INBOXES).map(|i| (200_000 + i).to_string()).collect();
    let mut group = c.benchmark_group("sqlite_floor");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, sql, with_id) in [
        ("insert_v1", CLUSTERED, false),
        ("insert_v2_with_id", CLUSTERED, true),
        ("insert_v1_arrival_order", ARRIVAL_ORDER, false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("floor.sqlite3")).unwrap();
        schema(&conn, sql);
        let mut seq = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                let tx = conn.transaction().unwrap();
                {
                    let mut stmt = tx
                        .prepare(
                            "INSERT INTO messages (owner, seq, sender, client_id, payload)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                        )
                        .unwrap();
                    for i in 0..BATCH {
                        seq += 1;
                        let who = (i as u64 % INBOXES) as usize;
                        let id = with_id.then(|| format!("c-{seq}"));
                        stmt.execute(params![owners[who], seq, senders[who], id, &payload[..]])
                            .unwrap();
                    }
                }
                tx.commit().unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, insert);
criterion_main!(benches);
