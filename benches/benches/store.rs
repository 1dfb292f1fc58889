//! The store alone, without sockets: what appending a message costs imserver's SQLite
//! writer (one transaction per batch, as in the server; each message to its receiver's
//! stream and a copy to its sender's). Compare with `imbench relay`'s server CPU per message
//! to see how much of it is storage.
//!
//! `cargo bench -p imbench --bench store`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use imserver::delivery::{Delivery, Entry};
use imserver::store::{Append, CommitHook, SqliteStore, Streams};
use imserver::{Config, UserId};

/// Nobody is online.
struct Nobody;

impl Delivery for Nobody {
    fn deliver(&self, _: UserId, _: &Entry) {}
}

/// Messages per measured round, spread over this many receivers (as `imbench relay`'s 50
/// pairs).
const ROUND: usize = 10_000;
const RECEIVERS: usize = 50;

fn append(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The server's defaults.
    let mut config = Config::default().store;
    config.data_dir = dir.path().into();
    let store = Arc::new(SqliteStore::open(&config, Arc::new(Nobody)).unwrap());
    let user = |n: usize| UserId::new(n as i64).unwrap();
    let payload = imbench::payload(&imbench::message_of_payload_len(100));
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(ROUND as u64));
    group.sample_size(10);
    for (name, with_id) in [("append_v1", false), ("append_v2_with_id", true)] {
        let next_id = AtomicUsize::new(0);
        group.bench_function(name, |b| {
            // The messages and their hooks are made outside the measurement, so that the
            // writer, not this loop, is the bottleneck, and batches are as full as in a
            // busy server.
            let setup = || {
                let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
                let mut done_tx = Some(done_tx);
                let requests: Vec<_> = (0..ROUND)
                    .map(|i| {
                        let id = next_id.fetch_add(1, Ordering::Relaxed);
                        let msg = Append {
                            receiver: user(1000 + i % RECEIVERS),
                            sender: user(2000 + i % RECEIVERS),
                            client_id: with_id.then(|| format!("c-{id}")),
                            payload: payload.clone(),
                            origin: None,
                            friends_only: false,
                        };
                        let last = (i == ROUND - 1).then(|| done_tx.take()).flatten();
                        let hook: CommitHook = Box::new(move |r| {
                            r.expect("stored");
                            if let Some(tx) = last {
                                let _ = tx.send(());
                            }
                        });
                        (msg, hook)
                    })
                    .collect();
                (requests, done_rx)
            };
            b.iter_batched(
                setup,
                |(requests, done)| {
                    runtime.block_on(async {
                        for (msg, hook) in requests {
                            store.append(msg, hook).await.unwrap();
                        }
                        done.await.unwrap();
                    })
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
