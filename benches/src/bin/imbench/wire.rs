//! How a benchmark connection reaches the relay: TCP (length-prefixed frames) or WebSocket
//! (`/ws` on the HTTP port, a text message per packet). The modes build frames with length
//! prefixes either way; over WebSocket each frame's payload goes as one message.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use anyhow::{Context, bail};
use bytes::{Buf, Bytes};
use futures::stream::{SplitSink, SplitStream};
use futures::{FutureExt, SinkExt, StreamExt};
use improto::FrameCodec;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::codec::FramedRead;

/// Which transport the benchmark's connections use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Tcp,
    /// WebSocket on the HTTP port's `/ws` (version 2 only; needs `--http`).
    Ws,
}

/// Where the relay is.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint {
    pub transport: Transport,
    pub tcp: SocketAddr,
    pub http: Option<SocketAddr>,
}

type Ws = WebSocketStream<TcpStream>;

/// The receiving half of a connection, frame by frame.
pub enum Reader {
    Tcp(FramedRead<OwnedReadHalf, FrameCodec>),
    Ws {
        stream: SplitStream<Ws>,
        /// A message taken to see whether one was ready (`drained`), or the end.
        peeked: Option<Option<anyhow::Result<Bytes>>>,
    },
}

/// The sending half.
pub enum Writer {
    Tcp(OwnedWriteHalf),
    Ws(SplitSink<Ws, Message>),
}

impl Endpoint {
    /// A new connection, from `source` (an address of 127.0.0.0/8) when given; the
    /// receiving half reads up to `read_buffer` bytes at a time (TCP).
    pub async fn connect(
        &self,
        source: Option<Ipv4Addr>,
        read_buffer: usize,
    ) -> anyhow::Result<(Reader, Writer)> {
        let addr = match self.transport {
            Transport::Tcp => self.tcp,
            Transport::Ws => self.http.context("--transport ws needs --http")?,
        };
        let socket = TcpSocket::new_v4()?;
        if let Some(ip) = source {
            socket.bind(SocketAddrV4::new(ip, 0).into())?;
        }
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(match self.transport {
            Transport::Tcp => {
                let (read, write) = stream.into_split();
                let frames = FramedRead::with_capacity(read, FrameCodec::new(), read_buffer);
                (Reader::Tcp(frames), Writer::Tcp(write))
            }
            Transport::Ws => {
                let config = WebSocketConfig::default().read_buffer_size(read_buffer.max(1024));
                let url = format!("ws://{addr}/ws");
                let (ws, _) =
                    tokio_tungstenite::client_async_with_config(url, stream, Some(config))
                        .await
                        .context("WebSocket upgrade")?;
                let (sink, stream) = ws.split();
                let reader = Reader::Ws {
                    stream,
                    peeked: None,
                };
                (reader, Writer::Ws(sink))
            }
        })
    }
}

impl Reader {
    /// The next frame's payload; `None` when the connection ended.
    pub async fn next(&mut self) -> Option<anyhow::Result<Bytes>> {
        match self {
            Reader::Tcp(frames) => frames.next().await.map(|f| f.map_err(Into::into)),
            Reader::Ws { stream, peeked } => match peeked.take() {
                Some(frame) => frame,
                None => next_text(stream).await,
            },
        }
    }

    /// Whether nothing more has arrived yet (a receiver acknowledges then).
    pub fn drained(&mut self) -> bool {
        match self {
            Reader::Tcp(frames) => frames.read_buffer().is_empty(),
            Reader::Ws { stream, peeked } => {
                if peeked.is_none() {
                    *peeked = next_text(stream).now_or_never();
                }
                peeked.is_none()
            }
        }
    }
}

/// The next text message's bytes, passing over control frames.
async fn next_text(stream: &mut SplitStream<Ws>) -> Option<anyhow::Result<Bytes>> {
    loop {
        match stream.next().await? {
            Ok(Message::Text(text)) => return Some(Ok(text.into())),
            Ok(Message::Close(_)) => return None,
            Ok(Message::Binary(_)) => return Some(Err(anyhow::anyhow!("a binary message"))),
            Ok(_) => {}
            Err(e) => return Some(Err(e.into())),
        }
    }
}

impl Writer {
    /// Sends `frames` (length-prefixed, as the modes build them).
    pub async fn write_all(&mut self, frames: &[u8]) -> anyhow::Result<()> {
        match self {
            Writer::Tcp(write) => Ok(write.write_all(frames).await?),
            Writer::Ws(sink) => {
                let mut rest = frames;
                while rest.remaining() >= 4 {
                    let len = rest.get_u32() as usize;
                    if rest.len() < len {
                        bail!("a frame cut short");
                    }
                    let text = Utf8Bytes::try_from(Bytes::copy_from_slice(&rest[..len]))?;
                    sink.feed(Message::Text(text)).await?;
                    rest = &rest[len..];
                }
                Ok(sink.flush().await?)
            }
        }
    }
}
