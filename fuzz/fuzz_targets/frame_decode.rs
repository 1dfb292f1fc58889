//! Raw bytes, delivered in fuzzer-chosen chunks, through `PacketCodec` and `FrameCodec`.
//! Beyond "never panics": chunking must not change the result, and the envelope peek must
//! agree with the full decode on every frame.
#![no_main]

use bytes::BytesMut;
use improto::{Envelope, FrameCodec, Packet, PacketCodec};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

const MAX: usize = 4096;

/// Decodes `wire` fed in chunks of `chunk` bytes; stops at the first fatal error.
fn run<D: Decoder<Error = improto::ProtoError>>(
    mut codec: D,
    wire: &[u8],
    chunk: usize,
) -> Vec<Result<D::Item, String>> {
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    let mut chunks = wire.chunks(chunk.max(1));
    loop {
        let next = chunks.next();
        if let Some(c) = next {
            buf.extend_from_slice(c);
        }
        loop {
            let r = if next.is_some() {
                codec.decode(&mut buf)
            } else {
                codec.decode_eof(&mut buf)
            };
            match r {
                Ok(Some(item)) => out.push(Ok(item)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    if e.is_fatal() {
                        return out;
                    }
                }
            }
        }
        if next.is_none() {
            return out;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, wire)) = data.split_first() else {
        return;
    };

    let whole = run(PacketCodec::with_max_frame_length(MAX), wire, wire.len());
    let chunked = run(
        PacketCodec::with_max_frame_length(MAX),
        wire,
        chunk as usize,
    );
    assert_eq!(whole, chunked, "chunking changed the decoded packets");

    assert!(
        improto::fast_path_agrees(wire),
        "the fast path accepted what serde reads otherwise"
    );
    for frame in run(FrameCodec::with_max_frame_length(MAX), wire, chunk as usize)
        .into_iter()
        .flatten()
    {
        assert!(
            improto::fast_path_agrees(&frame),
            "the fast path accepted what serde reads otherwise"
        );
        let full = Packet::from_json(&frame);
        let peek = Envelope::peek(&frame);
        assert_eq!(full.is_ok(), peek.is_ok(), "peek and full decode disagree");
        if let (Err(a), Err(b)) = (&full, &peek) {
            assert_eq!(a.to_string(), b.to_string());
        }
    }
});
