//! Frames in from one connection, with a read buffer sized by the traffic.
//!
//! `FramedRead` keeps one buffer of fixed initial size per connection: large, and every idle
//! connection pays for it; small, and a busy one makes a system call for every few frames
//! (with 512 bytes, a third of the relay's CPU time went to `recv`). This reader holds no
//! buffer at all while a connection is idle (it waits for readability first, then
//! allocates), and doubles the size of its next read each time a read fills the space it was
//! given, up to [`MAX_READ`], halving it again as reads come back small.

use bytes::{Bytes, BytesMut};
use improto::{FrameCodec, ProtoError};
use tokio::net::tcp::OwnedReadHalf;
use tokio_util::codec::Decoder;

/// The first read of a connection, and the smallest: enough for a `Regist` or a message.
const MIN_READ: usize = 512;

/// The largest single read: about 600 frames of 100 bytes in one system call.
const MAX_READ: usize = 64 * 1024;

pub(super) struct FrameReader {
    read: OwnedReadHalf,
    codec: FrameCodec,
    /// Bytes read and not yet framed. Empty (unallocated) between bursts. Frames are split
    /// off it without copying, so a frame still queued somewhere keeps its read's allocation
    /// alive; a read never exceeds [`MAX_READ`] plus one frame.
    buf: BytesMut,
    /// How much the next read asks for.
    next_read: usize,
    eof: bool,
}

impl FrameReader {
    pub(super) fn new(read: OwnedReadHalf, codec: FrameCodec) -> Self {
        FrameReader {
            read,
            codec,
            buf: BytesMut::new(),
            next_read: MIN_READ,
            eof: false,
        }
    }

    /// The next frame's payload; `None` when the peer closed cleanly between frames.
    ///
    /// Cancel-safe: its only await point is readability, and bytes are moved into the
    /// buffer by a synchronous read, so a caller selecting on it loses nothing.
    pub(super) async fn next(&mut self) -> Option<Result<Bytes, ProtoError>> {
        loop {
            if self.eof {
                return self.codec.decode_eof(&mut self.buf).transpose();
            }
            match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => return Some(Ok(frame)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            if self.buf.is_empty() {
                // Whatever was allocated belongs to frames handed out (or nothing): an idle
                // connection holds no buffer.
                self.buf = BytesMut::new();
            }
            if let Err(e) = self.read.readable().await {
                return Some(Err(e.into()));
            }
            self.buf.reserve(self.next_read);
            let room = self.buf.capacity() - self.buf.len();
            match self.read.try_read_buf(&mut self.buf) {
                Ok(0) => self.eof = true,
                Ok(n) if n == room => self.next_read = (self.next_read * 2).min(MAX_READ),
                Ok(n) if n < room / 4 => self.next_read = (self.next_read / 2).max(MIN_READ),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Some(Err(e.into())),
            }
        }
    }
}
