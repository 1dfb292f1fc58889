//! The WebSocket transport: each text message is one v2 packet (JSON, no length prefix),
//! over any byte stream (an HTTP connection upgraded on `/ws`; later TLS). The framing is
//! tungstenite's; what is ours is the mapping to the session's frames, the keepalive pings,
//! and the close codes.
//!
//! A binary message is refused with `bad_json` and the connection goes on; a message over
//! `--max-frame-bytes` ends it with close code 1009. Pings sent by the client are answered
//! by tungstenite. The server pings every `--ws-ping-interval` (a browser cannot send pings
//! of its own) and closes a peer that has sent nothing, not even a pong, for two of them.

use std::io;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{FutureExt, SinkExt, StreamExt};
use improto::{Packet, ProtoError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Interval, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::{Close, Transport, stamp};

/// tungstenite reads at most this much per system call, into a buffer of this size that it
/// allocates (and fills with zeros) at the first read and keeps for the connection's life.
/// Its default, 128 KiB, would be most of an idle connection's memory. Measured with 10,000
/// idle connections: 4 KiB cost 9,476 bytes of server memory per connection, 1 KiB 6,404;
/// the relay's CPU per message was the same within the noise.
const READ_BUFFER: usize = 1024;

/// Messages are gathered into tungstenite's write buffer and written out at each flush; it
/// writes early only past this.
const WRITE_BUFFER: usize = 64 * 1024;

/// A scratch buffer larger than this is freed rather than kept, so one burst does not pin
/// memory to an idle connection.
const KEEP_OUT: usize = 128 * 1024;

/// Pings the peer may leave unanswered (sending nothing at all) before it is taken for gone.
const MISSED_PINGS: u8 = 2;

/// One WebSocket connection.
pub struct WsTransport<S> {
    ws: WebSocketStream<S>,
    /// Messages gathered for the next flush.
    out: Vec<Message>,
    /// Their bytes.
    out_bytes: usize,
    /// Where outgoing messages are put together, each then split off without a copy.
    scratch: BytesMut,
    /// `--ws-ping-interval`; `None` when off.
    ping: Option<Interval>,
    /// Pings sent since the peer last sent anything.
    unanswered: u8,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> WsTransport<S> {
    /// Speaks WebSocket, as the server, over `stream` (whose handshake is done): messages
    /// over `max_frame_bytes` end the connection, and the peer is pinged every `ping`.
    pub async fn new(stream: S, max_frame_bytes: usize, ping: Option<Duration>) -> Self {
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER)
            .max_write_buffer_size(usize::MAX)
            .max_message_size(Some(max_frame_bytes))
            .max_frame_size(Some(max_frame_bytes));
        let ws = WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await;
        let ping = ping.map(|every| {
            let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
            ping
        });
        WsTransport {
            ws,
            out: Vec::new(),
            out_bytes: 0,
            scratch: BytesMut::new(),
            ping,
            unanswered: 0,
        }
    }

    /// What the session makes of a message read; `None` for those it never sees (control
    /// frames, which tungstenite answers).
    fn take(
        &mut self,
        next: Option<Result<Message, WsError>>,
    ) -> Option<Option<Result<Bytes, ProtoError>>> {
        let message = match next {
            None => return Some(None),
            Some(Err(e)) => return Some(stream_error(e).map(Err)),
            Some(Ok(message)) => message,
        };
        self.unanswered = 0;
        match message {
            Message::Text(text) => Some(Some(Ok(text.into()))),
            Message::Binary(_) => Some(Some(Err(ProtoError::InvalidJson(
                "a binary WebSocket message: send each packet as a text message".into(),
            )))),
            // tungstenite has queued the answer; the session's close sends it.
            Message::Close(_) => Some(None),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => None,
        }
    }

    /// A ping, unless the peer has left too many unanswered already.
    async fn keepalive(&mut self) -> Result<(), ProtoError> {
        if self.unanswered >= MISSED_PINGS {
            return Err(ProtoError::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                "no answer to WebSocket pings",
            )));
        }
        self.unanswered += 1;
        // Should this be cancelled while it writes, the ping stays in tungstenite's buffer
        // and goes with the next flush.
        self.ws
            .send(Message::Ping(Bytes::new()))
            .await
            .map_err(io_error)?;
        Ok(())
    }

    /// Adds what `scratch` holds past `skip` bytes as one text message.
    fn gather(&mut self, skip: usize) {
        let mut bytes = self.scratch.split();
        bytes.advance(skip);
        let bytes = bytes.freeze();
        self.out_bytes += bytes.len();
        // Stored payloads are valid UTF-8 (the relay refuses any other), and so is every
        // packet the server makes; were one ever not, it goes out with its bad bytes replaced.
        let text = Utf8Bytes::try_from(bytes.clone())
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned().into());
        self.out.push(Message::Text(text));
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for WsTransport<S> {
    const CARRIES_V1: bool = false;
    const NAME: &'static str = "ws";

    async fn recv(&mut self) -> Option<Result<Bytes, ProtoError>> {
        loop {
            let next = match &mut self.ping {
                None => self.ws.next().await,
                Some(ping) => tokio::select! {
                    biased;
                    next = self.ws.next() => next,
                    _ = ping.tick() => {
                        if let Err(e) = self.keepalive().await {
                            return Some(Err(e));
                        }
                        continue;
                    }
                },
            };
            if let Some(frame) = self.take(next) {
                return frame;
            }
        }
    }

    fn try_recv(&mut self) -> Option<Result<Bytes, ProtoError>> {
        loop {
            let next = self.ws.next().now_or_never()?;
            if let Some(frame) = self.take(next) {
                return frame;
            }
        }
    }

    fn push_entry(&mut self, payload: &[u8], seq: u64) {
        // `stamp` writes a TCP frame; its 4-byte length prefix is skipped.
        stamp(&mut self.scratch, payload, seq);
        self.gather(4);
    }

    fn push_packet(&mut self, packet: &Packet) {
        // Only a non-finite `createTime` fails to encode, and server packets carry no time.
        packet
            .write_json((&mut self.scratch).writer())
            .expect("server packets always encode");
        self.gather(0);
    }

    fn push_payload(&mut self, payload: &[u8]) {
        self.scratch.put_slice(payload);
        self.gather(0);
    }

    fn buffered(&self) -> usize {
        self.out_bytes
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        for message in self.out.drain(..) {
            self.ws.feed(message).await.map_err(io_error)?;
        }
        self.ws.flush().await.map_err(io_error)?;
        self.discard();
        Ok(())
    }

    fn discard(&mut self) {
        self.out.clear();
        self.out_bytes = 0;
        if self.scratch.capacity() > KEEP_OUT {
            self.scratch = BytesMut::new();
        }
    }

    async fn close(&mut self, why: Close) {
        let code = match why {
            Close::Normal => CloseCode::Normal,
            Close::GoingAway => CloseCode::Away,
            Close::Policy => CloseCode::Policy,
            Close::TooBig => CloseCode::Size,
            Close::Protocol => CloseCode::Protocol,
            Close::TryAgainLater => CloseCode::Again,
            Close::Internal => CloseCode::Error,
        };
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(""),
        };
        if self.ws.close(Some(frame)).await.is_err() {
            return;
        }
        // Then end our side and read whatever the peer still sends (its close, the rest of
        // a message too large) until it closes too: a socket closed with bytes unread is
        // reset, and the peer could lose our close with it. What is read is not
        // WebSocket any more after a bad frame, so it is read raw.
        let raw = self.ws.get_mut();
        let _ = raw.shutdown().await;
        let mut unread = vec![0; READ_BUFFER];
        while matches!(raw.read(&mut unread).await, Ok(n) if n > 0) {}
    }
}

/// A read error as the session sees it; `None` for a connection that simply ended.
fn stream_error(e: WsError) -> Option<ProtoError> {
    Some(match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => return None,
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            ProtoError::FrameTooLarge {
                len: size,
                max: max_size,
            }
        }
        WsError::Io(e) => ProtoError::Io(e),
        // Not WebSocket (an unmasked frame, a bad opcode, text that is not UTF-8): the
        // connection is closed with 1002.
        other => ProtoError::Io(io::Error::new(io::ErrorKind::InvalidData, other)),
    })
}

fn io_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        other => io::Error::other(other),
    }
}
