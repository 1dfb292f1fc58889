//! Benchmarks for improto and imserver.
//!
//! ## Layout
//!
//! - `benches/codec.rs`: criterion micro-benchmarks of the protocol layer (encode, full
//!   decode, envelope peek), run with `cargo bench -p imbench --bench codec`.
//! - `benches/store.rs`: imserver's store alone (the writer thread, group commit, chunks).
//! - `benches/sqlite_schemas.rs`: bare SQLite with the server's settings, one variant per
//!   schema, to compare schemas with each other.
//! - `src/bin/imbench/`: the end-to-end load generator (`relay`, `conns`, `offline` modes),
//!   over the real protocol against any server address; `src/bin/refrelay.rs`: the minimal
//!   reference relay every result is compared with.
//! - `run.sh`: builds, runs every scenario several times on fresh servers, prints medians.
//! - this library: fixtures shared by the benchmarks.
//!
//! The results, and how to reproduce them, are in the README's "Performance" section.

use bytes::{BufMut, Bytes, BytesMut};
use improto::{Message, Packet};

/// A `Message` whose JSON payload is exactly `payload_len` bytes (at least 80), with a
/// Go-style integer `createTime`.
pub fn message_of_payload_len(payload_len: usize) -> Packet {
    let mut m = Message::new("1001", "1002", "");
    m.create_time = 1_700_000_000.0;
    let empty = Packet::from(m.clone())
        .to_json()
        .expect("finite time")
        .len();
    assert!(payload_len >= empty, "payload_len must be at least {empty}");
    m.message = "x".repeat(payload_len - empty);
    m.into()
}

/// The payload of `packet` (JSON, no length prefix).
pub fn payload(packet: &Packet) -> Bytes {
    packet.to_json().expect("finite time").into()
}

/// The whole frame of `packet`: length prefix, then payload.
pub fn frame(packet: &Packet) -> BytesMut {
    let payload = payload(packet);
    let mut buf = BytesMut::with_capacity(4 + payload.len());
    buf.put_u32(payload.len() as u32);
    buf.put_slice(&payload);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_have_the_requested_sizes() {
        for len in [100, 4096] {
            let p = message_of_payload_len(len);
            assert_eq!(payload(&p).len(), len);
            assert_eq!(frame(&p).len(), len + 4);
        }
    }
}
