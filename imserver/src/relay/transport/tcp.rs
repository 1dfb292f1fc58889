//! The TCP transport: length-prefixed frames in, with a read buffer sized by the traffic,
//! and frames out, gathered into one write.
//!
//! `FramedRead` keeps one buffer of fixed initial size per connection: large, and every idle
//! connection pays for it; small, and a busy one makes a system call for every few frames
//! (with 512 bytes, a third of the relay's CPU time went to `recv`). This reader holds no
//! buffer at all while a connection is idle (it waits for readability first, then
//! allocates), and doubles the size of its next read each time a read fills the space it was
//! given, up to [`MAX_READ`], halving it again as reads come back small.

use bytes::{BufMut, Bytes, BytesMut};
use improto::{FrameCodec, Packet, ProtoError};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::Decoder;

use super::{Close, Transport, stamp};

/// The first read of a connection, and the smallest: enough for a `Regist` or a message.
const MIN_READ: usize = 512;

/// The largest single read: about 600 frames of 100 bytes in one system call.
const MAX_READ: usize = 64 * 1024;

/// A written-out buffer larger than this is freed rather than kept, so one burst does not
/// pin memory to an idle connection.
const KEEP_OUT: usize = 128 * 1024;

/// One TCP connection.
pub struct TcpTransport {
    frames: FrameReader,
    writer: OwnedWriteHalf,
    /// Frames gathered for the next write.
    out: BytesMut,
}

impl TcpTransport {
    /// Frames over `max_frame_bytes` (judged on the prefix) end the connection.
    pub fn new(stream: TcpStream, max_frame_bytes: usize) -> Self {
        // Chat frames are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        let (read, writer) = stream.into_split();
        let codec = FrameCodec::with_max_frame_length(max_frame_bytes);
        TcpTransport {
            frames: FrameReader::new(read, codec),
            writer,
            out: BytesMut::new(),
        }
    }
}

impl Transport for TcpTransport {
    const CARRIES_V1: bool = true;

    async fn recv(&mut self) -> Option<Result<Bytes, ProtoError>> {
        self.frames.next().await
    }

    fn try_recv(&mut self) -> Option<Result<Bytes, ProtoError>> {
        self.frames.buffered()
    }

    fn push_entry(&mut self, payload: &[u8], seq: u64) {
        stamp(&mut self.out, payload, seq);
    }

    fn push_packet(&mut self, packet: &Packet) {
        let start = self.out.len();
        self.out.put_u32(0);
        // Into the buffer, without a copy of its own. Only a non-finite `createTime` fails to
        // encode, and server packets carry no time.
        packet
            .write_json((&mut self.out).writer())
            .expect("server packets always encode");
        // Server packets are small; a u32 prefix always fits.
        let len = (self.out.len() - start - 4) as u32;
        self.out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    fn push_payload(&mut self, payload: &[u8]) {
        // Payloads are bounded by the frame limit, far below 4 GiB.
        self.out.put_u32(payload.len() as u32);
        self.out.put_slice(payload);
    }

    fn buffered(&self) -> usize {
        self.out.len()
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        // Most writes fit in the socket's buffer at once, with nothing to wait for.
        let written = match self.writer.try_write(&self.out) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        if written < self.out.len() {
            self.writer.write_all(&self.out[written..]).await?;
        }
        self.discard();
        Ok(())
    }

    fn discard(&mut self) {
        self.out.clear();
        if self.out.capacity() > KEEP_OUT {
            self.out = BytesMut::new();
        }
    }

    /// A TCP connection has no way to say why; the `Error` before it said it all.
    async fn close(&mut self, _why: Close) {}
}

struct FrameReader {
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
    fn new(read: OwnedReadHalf, codec: FrameCodec) -> Self {
        FrameReader {
            read,
            codec,
            buf: BytesMut::new(),
            next_read: MIN_READ,
            eof: false,
        }
    }

    /// The next frame already in the buffer, or what the end of the stream makes of what
    /// is left; `None` when a read is needed (or the peer closed between frames).
    fn buffered(&mut self) -> Option<Result<Bytes, ProtoError>> {
        if self.eof {
            self.codec.decode_eof(&mut self.buf).transpose()
        } else {
            self.codec.decode(&mut self.buf).transpose()
        }
    }

    /// The next frame's payload; `None` when the peer closed cleanly between frames.
    ///
    /// Cancel-safe: its only await point is readability, and bytes are moved into the
    /// buffer by a synchronous read, so a caller selecting on it loses nothing.
    async fn next(&mut self) -> Option<Result<Bytes, ProtoError>> {
        loop {
            if let Some(frame) = self.buffered() {
                return Some(frame);
            }
            if self.eof {
                return None;
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
