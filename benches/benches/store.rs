//! The store alone, without sockets: what appending a message costs imserver's SQLite
//! writer (one transaction per batch, as in the server; each message to its receiver's
//! stream and a copy to its sender's; requests of a burst of messages each, as a
//! connection sends them). Compare with `imbench relay`'s server CPU per message
//! to see how much of it is storage.
//!
//! `cargo bench -p imbench --bench store`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use imserver::delivery::{Delivery, Entries};
use imserver::store::{Appends, NewMessage, Outcome, Replies, StoreError};
use imserver::{Config, UserId};
use tokio::sync::Notify;

/// Nobody is online.
struct Nobody;

impl Delivery for Nobody {
    fn deliver(&self, _: UserId, _: Entries) {}

    fn live(&self, _: UserId, _: bytes::Bytes) {}
}

/// Counts answered messages and wakes the round up when all of them are.
#[derive(Default)]
struct Done {
    answered: AtomicUsize,
    all: Notify,
}

impl Replies for Done {
    fn replied(&self, outcomes: Vec<Outcome>) {
        if self.answered.fetch_add(outcomes.len(), Ordering::Relaxed) + outcomes.len() == ROUND {
            self.all.notify_one();
        }
    }

    fn failed(&self, e: StoreError, _: Vec<Option<String>>) {
        panic!("not stored: {e}");
    }
}

/// Messages per measured round, spread over this many senders and receivers (as
/// `imbench relay`'s 50 pairs), in requests of this many messages (a burst of one
/// connection's frames).
const ROUND: usize = 10_000;
const PAIRS: usize = 50;
const BURST: usize = 25;

/// The client ids of a variant.
#[derive(Clone, Copy)]
enum Ids {
    None,
    Growing,
    Random,
}

impl Ids {
    /// The id of message number `n`.
    fn make(self, n: usize) -> Option<String> {
        match self {
            Ids::None => None,
            Ids::Growing => Some(n.to_string()),
            // A fixed permutation of the counter (splitmix64): unique, in no order.
            Ids::Random => {
                let mut z = (n as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                Some(format!("{:016x}", z ^ (z >> 31)))
            }
        }
    }
}

fn append(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The server's defaults.
    let mut config = Config::default().store;
    config.data_dir = dir.path().into();
    let store = runtime
        .block_on(imserver::store::open(&config, Arc::new(Nobody)))
        .unwrap();
    let user = |n: usize| UserId::new(n as i64).unwrap();
    let payload = imbench::payload(&imbench::message_of_payload_len(100));
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(ROUND as u64));
    group.sample_size(10);
    // v1 (no ids), v2 with ids that grow (a counter, as improto's clients make them), and
    // v2 with random ids (16 hex digits), which cannot share rows.
    for (name, ids) in [
        ("append_v1", Ids::None),
        ("append_v2_with_id", Ids::Growing),
        ("append_v2_random_ids", Ids::Random),
    ] {
        let next_id = AtomicUsize::new(0);
        group.bench_function(name, |b| {
            // The requests are made outside the measurement, so that the writer, not this
            // loop, is the bottleneck, and batches are as full as in a busy server.
            let setup = || {
                let done = Arc::new(Done::default());
                let requests: Vec<_> = (0..ROUND / BURST)
                    .map(|i| {
                        let pair = i % PAIRS;
                        let messages = (0..BURST)
                            .map(|_| NewMessage {
                                receiver: user(1000 + pair).into(),
                                client_id: ids.make(next_id.fetch_add(1, Ordering::Relaxed)),
                                payload: payload.clone(),
                            })
                            .collect();
                        Appends {
                            sender: user(2000 + pair),
                            origin: None,
                            friends_only: false,
                            messages,
                            replies: done.clone(),
                        }
                    })
                    .collect();
                (requests, done)
            };
            b.iter_batched(
                setup,
                |(requests, done): (Vec<Appends>, Arc<Done>)| {
                    runtime.block_on(async {
                        let all = done.all.notified();
                        for request in requests {
                            store.append(request).await.unwrap();
                        }
                        all.await;
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
