//! Micro-benchmarks of the protocol layer: encode, full typed decode, and the envelope peek a
//! relay uses, for 100-byte and 4 KiB payloads.

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use imbench::{frame, message_of_payload_len, payload};
use improto::{Envelope, PacketCodec};
use std::hint::black_box;
use tokio_util::codec::{Decoder, Encoder};

fn codec(c: &mut Criterion) {
    for (name, len) in [("100B", 100), ("4KiB", 4096)] {
        let packet = message_of_payload_len(len);
        let payload = payload(&packet);
        let frame = frame(&packet);

        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(len as u64));

        let mut codec = PacketCodec::new();
        let mut out = BytesMut::with_capacity(2 * len);
        group.bench_function("encode", |b| {
            b.iter_batched(
                || packet.clone(),
                |p| {
                    out.clear();
                    codec.encode(p, &mut out).unwrap();
                    black_box(&out);
                },
                BatchSize::SmallInput,
            )
        });

        group.bench_function("decode", |b| {
            b.iter_batched_ref(
                || frame.clone(),
                |buf| black_box(codec.decode(buf).unwrap().unwrap()),
                BatchSize::SmallInput,
            )
        });

        group.bench_function("peek", |b| {
            b.iter(|| {
                let env = Envelope::peek(black_box(&payload)).unwrap();
                black_box((env.kind(), env.receiver().map(str::len)));
            })
        });
        group.finish();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
