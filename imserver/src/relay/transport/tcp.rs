//! The TCP transport: length-prefixed frames in, with a read buffer sized by the traffic,
//! and frames out, gathered into one write; over plain TCP or TLS ([`ByteStream`]).
//!
//! `FramedRead` keeps one buffer of fixed initial size per connection: large, and every idle
//! connection pays for it; small, and a busy one makes a system call for every few frames
//! (with 512 bytes, a third of the relay's CPU time went to `recv`). This reader holds no
//! buffer at all while a connection is idle (it waits for readability first, then
//! allocates), and doubles the size of its next read each time a read fills the space it was
//! given, up to [`MAX_READ`], halving it again as reads come back small. (Over TLS, rustls
//! keeps buffers of its own anyway, and the reader keeps its buffer between reads.)

use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use improto::{FrameCodec, Packet, ProtoError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::codec::Decoder;

use super::{Close, Transport, stamp};

/// The first read of a connection, and the smallest: enough for a `Regist` or a message.
const MIN_READ: usize = 512;

/// The largest single read: about 600 frames of 100 bytes in one system call.
const MAX_READ: usize = 64 * 1024;

/// A written-out buffer larger than this is freed rather than kept, so one burst does not
/// pin memory to an idle connection.
const KEEP_OUT: usize = 128 * 1024;

/// A byte stream the relay's frames can cross: plain TCP or TLS over it.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Reads what has arrived into `buf` (with room for at least `want` more bytes made when
    /// it must wait for nothing else); `Ok(0)` at the end of the stream.
    ///
    /// Cancel-safe: bytes read are in `buf` by the time it returns, and none are read at an
    /// await point that could be dropped.
    fn read_some(
        &mut self,
        buf: &mut BytesMut,
        want: usize,
    ) -> impl Future<Output = io::Result<usize>> + Send;
}

impl ByteStream for TcpStream {
    /// Waits for readability before it allocates: an idle connection holds no buffer.
    async fn read_some(&mut self, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
        loop {
            self.readable().await?;
            buf.reserve(want);
            match self.try_read_buf(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                read => return read,
            }
        }
    }
}

impl ByteStream for Box<TlsStream<TcpStream>> {
    async fn read_some(&mut self, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
        buf.reserve(want);
        self.read_buf(buf).await
    }
}

/// One connection.
pub struct TcpTransport<S> {
    frames: FrameReader,
    stream: S,
    /// Frames gathered for the next write.
    out: BytesMut,
}

impl<S: ByteStream> TcpTransport<S> {
    /// Frames over `max_frame_bytes` (judged on the prefix) end the connection.
    pub fn new(stream: S, max_frame_bytes: usize) -> Self {
        let codec = FrameCodec::with_max_frame_length(max_frame_bytes);
        TcpTransport {
            frames: FrameReader::new(codec),
            stream,
            out: BytesMut::new(),
        }
    }
}

impl<S: ByteStream> Transport for TcpTransport<S> {
    const CARRIES_V1: bool = true;
    const NAME: &'static str = "tcp";

    async fn recv(&mut self) -> Option<Result<Bytes, ProtoError>> {
        self.frames.next(&mut self.stream).await
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

    async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        // Most writes fit in the socket's buffer at once, with nothing to wait for.
        self.stream.write_all(&self.out).await?;
        // TLS holds records until flushed; for plain TCP this does nothing.
        self.stream.flush().await?;
        self.discard();
        Ok(())
    }

    fn discard(&mut self) {
        self.out.clear();
        if self.out.capacity() > KEEP_OUT {
            self.out = BytesMut::new();
        }
    }

    /// A TCP connection has no way to say why; the `Error` before it said it all. TLS says
    /// goodbye (`close_notify`), so that the peer can tell the end from a cut.
    async fn close(&mut self, _why: Close) {
        let _ = self.stream.shutdown().await;
    }
}

struct FrameReader {
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
    fn new(codec: FrameCodec) -> Self {
        FrameReader {
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
    /// Cancel-safe, as [`ByteStream::read_some`] is: a caller selecting on it loses nothing.
    async fn next(&mut self, stream: &mut impl ByteStream) -> Option<Result<Bytes, ProtoError>> {
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
            let want = self.next_read;
            match stream.read_some(&mut self.buf, want).await {
                Ok(0) => self.eof = true,
                Ok(n) if n >= want => self.next_read = (want * 2).min(MAX_READ),
                Ok(n) if n < want / 4 => self.next_read = (want / 2).max(MIN_READ),
                Ok(_) => {}
                Err(e) => return Some(Err(e.into())),
            }
        }
    }
}
