//! How a session's frames cross the wire. The session works on payloads only ("frames in,
//! payloads out"); a [`Transport`] reads them from its connection and frames what the
//! session writes, so one session serves every kind of connection.
//!
//! - `tcp`: 4-byte big-endian length prefixes over a TCP stream (the protocol of PROTOCOL.md).
//! - `ws`: one WebSocket text message per packet, over any byte stream (`/ws`, upgraded by the
//!   HTTP server).

mod tcp;
mod ws;

use std::future::Future;

use bytes::Bytes;
use improto::{Packet, ProtoError};
pub use tcp::TcpTransport;
pub use ws::WsTransport;

/// One connection's frame I/O.
pub trait Transport: Send + 'static {
    /// Whether protocol version 1 (the Go server's) may be spoken over it. Only TCP: v1
    /// clients never had another transport.
    const CARRIES_V1: bool;

    /// Its name in metrics (`tcp`, `ws`).
    const NAME: &'static str;

    /// The next frame's payload; `None` when the peer closed cleanly between frames.
    /// An error that is not [fatal](ProtoError::is_fatal) concerns one frame, which is
    /// refused, and the connection goes on; any other error ends it.
    /// Cancel-safe: the session selects on it with its send queue and timer.
    fn recv(&mut self) -> impl Future<Output = Option<Result<Bytes, ProtoError>>> + Send;

    /// The next frame's payload if it has arrived already, without waiting; `None` says
    /// only that [`recv`](Self::recv) would wait (or tell of the end). A session takes the
    /// frames that came in together as one burst.
    fn try_recv(&mut self) -> Option<Result<Bytes, ProtoError>>;

    /// Gathers a stream entry for the next [`flush`](Self::flush), with `seq` added as its
    /// first field.
    fn push_entry(&mut self, payload: &[u8], seq: u64);

    /// Gathers a packet the server made (`Registered`, `Ack`, `Error`, `Pong`).
    fn push_packet(&mut self, packet: &Packet);

    /// Gathers a payload as it is (a live frame: `Typing`, `Presence`).
    fn push_payload(&mut self, payload: &[u8]);

    /// Bytes gathered and not yet written.
    fn buffered(&self) -> usize;

    /// Writes out everything gathered.
    fn flush(&mut self) -> impl Future<Output = std::io::Result<()>> + Send;

    /// Drops whatever is gathered: the connection is closing.
    fn discard(&mut self);

    /// Tells the peer why the server is closing the connection, where the transport has a
    /// way to (WebSocket close codes); after it, nothing more is written.
    fn close(&mut self, why: Close) -> impl Future<Output = ()> + Send;
}

/// Why the server closes a connection, for transports that can say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// Done (the idle timeout, say).
    Normal,
    /// The server is shutting down.
    GoingAway,
    /// The connection broke a rule: no valid token, no `Regist` in time.
    Policy,
    /// A frame over `--max-frame-bytes`.
    TooBig,
    /// Bytes that are not the transport's framing.
    Protocol,
    /// Refused for now (the connection limit, a send queue that overflowed): come back later.
    TryAgainLater,
    /// The server failed (the store).
    Internal,
}

/// Appends `payload` as a TCP frame with `seq` spliced in (see [`improto::write_stamped`]),
/// making it spliceable first if it was stored before the relay normalised payloads.
pub(crate) fn stamp(out: &mut bytes::BytesMut, payload: &[u8], seq: u64) {
    if !improto::write_stamped(out, payload, seq) {
        improto::write_stamped(out, &spliceable(payload), seq);
    }
}

/// A stored payload as one that a `seq` can be spliced into: the opening brace first and no
/// `seq` of its own (see [`improto::write_stamped`]). Only frames stored before the relay
/// normalised what it accepts (leading whitespace, a client-sent `seq`) need this.
pub(crate) fn spliceable(payload: &[u8]) -> Bytes {
    match Packet::from_json(payload) {
        Ok(Packet::Message(mut m)) => {
            m.seq = None;
            Packet::Message(m)
                .to_json()
                .map_or_else(|_| Bytes::copy_from_slice(payload), Bytes::from)
        }
        _ => Bytes::copy_from_slice(payload),
    }
}
