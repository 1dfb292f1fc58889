//! An async client: connect (over TCP, or TLS with the `tls` feature), send packets, receive
//! packets.

use std::fmt;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::{Ack, FrameCodec, Packet, PacketCodec, ProtoError, Regist, Registered};

/// A connection to an imserver relay.
///
/// ```no_run
/// use improto::{Client, Message, Packet, Regist};
///
/// # async fn demo() -> Result<(), improto::ProtoError> {
/// let mut client = Client::connect("127.0.0.1:8888").await?;
/// client.send(Regist::new("1")).await?;
/// client.send(Message::new("1", "2", "hello")).await?;
/// while let Some(packet) = client.recv().await? {
///     if let Packet::Message(m) = packet {
///         println!("{}: {}", m.sender, m.message);
///     }
/// }
/// # Ok(()) }
/// ```
///
/// To read and write at the same time (say, print incoming messages while reading the
/// keyboard), [`split`](Client::split) it and move each half to its own task.
///
/// Over TLS, see `Client::connect_tls` (the `tls` feature).
#[derive(Debug)]
pub struct Client {
    sender: ClientSender,
    receiver: ClientReceiver,
}

/// The sending half of a [`Client`].
///
/// ```no_run
/// use improto::{Client, Message, Regist};
///
/// # async fn demo() -> Result<(), improto::ProtoError> {
/// let (mut tx, mut rx) = Client::connect("127.0.0.1:8888").await?.split();
/// tokio::spawn(async move {
///     while let Ok(Some(packet)) = rx.recv().await {
///         println!("{packet:?}");
///     }
/// });
/// tx.send(Regist::new("1")).await?;
/// for text in ["one", "two", "three"] {
///     tx.feed(Message::new("1", "2", text)).await?; // queued
/// }
/// tx.flush().await?; // written together
/// # Ok(()) }
/// ```
pub struct ClientSender {
    frames: FramedWrite<Box<dyn AsyncWrite + Send + Unpin>, PacketCodec>,
}

/// The receiving half of a [`Client`].
///
/// ```no_run
/// use improto::{Client, Packet};
///
/// # async fn demo() -> Result<(), improto::ProtoError> {
/// let (_tx, mut rx) = Client::connect("127.0.0.1:8888").await?.split();
/// loop {
///     match rx.recv().await {
///         Ok(Some(Packet::Message(m))) => println!("{}: {}", m.sender, m.message),
///         Ok(Some(_)) => {}
///         Ok(None) => break,                          // server closed
///         Err(e) if e.is_fatal() => return Err(e),    // connection unusable
///         Err(e) => eprintln!("skipped a bad packet: {e}"),
///     }
/// }
/// # Ok(()) }
/// ```
pub struct ClientReceiver {
    /// Raw frames, parsed one by one in [`recv`](ClientReceiver::recv): a `FramedRead` over a
    /// packet decoder would end the stream at the first bad packet.
    frames: FramedRead<Box<dyn AsyncRead + Send + Unpin>, FrameCodec>,
}

impl fmt::Debug for ClientSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSender").finish_non_exhaustive()
    }
}

impl fmt::Debug for ClientReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientReceiver").finish_non_exhaustive()
    }
}

impl Client {
    /// Connects over TCP, with the default frame limit.
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Self, ProtoError> {
        Ok(Self::new(TcpStream::connect(addr).await?))
    }

    /// Wraps an already connected stream, with the default frame limit.
    ///
    /// Incoming frames may be [`SEQ_STAMP_MAX`](crate::SEQ_STAMP_MAX) bytes longer, as a
    /// server adds `seq` to the messages it delivers: a message the server accepted at its
    /// default limit always reaches a client at its default limit.
    pub fn new(stream: TcpStream) -> Self {
        let max = crate::DEFAULT_MAX_FRAME_LENGTH;
        Self::with_limits(stream, max, max + crate::SEQ_STAMP_MAX)
    }

    /// Wraps an already connected stream; frames over `max` payload bytes are refused both
    /// ways.
    pub fn with_max_frame_length(stream: TcpStream, max: usize) -> Self {
        Self::with_limits(stream, max, max)
    }

    fn with_limits(stream: TcpStream, max_send: usize, max_recv: usize) -> Self {
        // Nagle's algorithm would hold small chat frames back waiting for an ACK.
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        Self::from_halves(Box::new(read), Box::new(write), max_send, max_recv)
    }

    /// Speaks the protocol over any byte stream (TLS, a Unix socket, a test pipe), with the
    /// default frame limit.
    pub fn from_stream(stream: impl AsyncRead + AsyncWrite + Send + 'static) -> Self {
        let (read, write) = tokio::io::split(stream);
        let max = crate::DEFAULT_MAX_FRAME_LENGTH;
        Self::from_halves(
            Box::new(read),
            Box::new(write),
            max,
            max + crate::SEQ_STAMP_MAX,
        )
    }

    fn from_halves(
        read: Box<dyn AsyncRead + Send + Unpin>,
        write: Box<dyn AsyncWrite + Send + Unpin>,
        max_send: usize,
        max_recv: usize,
    ) -> Self {
        Client {
            sender: ClientSender {
                frames: FramedWrite::new(write, PacketCodec::with_max_frame_length(max_send)),
            },
            receiver: ClientReceiver {
                frames: FramedRead::new(read, FrameCodec::with_max_frame_length(max_recv)),
            },
        }
    }

    /// Connects over TLS (TLS 1.2 or 1.3, through rustls), checking the server's certificate
    /// for `server_name` against `roots`: say the public web's roots (the `webpki-roots`
    /// crate) or the operator's own CA.
    ///
    /// ```no_run
    /// use improto::{Client, Regist};
    /// use improto::rustls::RootCertStore;
    /// use improto::rustls::pki_types::{CertificateDer, pem::PemObject};
    ///
    /// # async fn demo(token: String) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut roots = RootCertStore::empty();
    /// roots.add(CertificateDer::from_pem_file("ca.pem")?)?;
    /// let mut client = Client::connect_tls("chat.example.com:8888", "chat.example.com", roots).await?;
    /// client.handshake(Regist::v2("7", token)).await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tls")]
    pub async fn connect_tls(
        addr: impl ToSocketAddrs,
        server_name: &str,
        roots: tokio_rustls::rustls::RootCertStore,
    ) -> Result<Self, ProtoError> {
        use std::sync::Arc;
        use tokio_rustls::rustls;

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        Ok(Self::from_stream(tls))
    }

    /// Sends one packet and flushes it. See [`ClientSender::send`].
    pub async fn send(&mut self, packet: impl Into<Packet>) -> Result<(), ProtoError> {
        self.sender.send(packet).await
    }

    /// Receives the next packet. See [`ClientReceiver::recv`].
    pub async fn recv(&mut self) -> Result<Option<Packet>, ProtoError> {
        self.receiver.recv().await
    }

    /// The v2 handshake: sends `regist` (see [`Regist::v2`]) and waits for the server's
    /// [`Registered`], which comes before any replayed message.
    ///
    /// An `Error` from the server becomes [`ProtoError::Refused`] (`unauthorized`, say); any
    /// other packet first is [`ProtoError::Unexpected`] (a server that speaks only version 1).
    ///
    /// To resume where a device left off, give the highest `seq` it has processed: the server
    /// replays everything after it, then live traffic, with no gap and no duplicate.
    ///
    /// ```no_run
    /// use improto::{Client, Packet, Regist};
    ///
    /// # async fn demo(token: String, mut last_seq: u64) -> Result<(), improto::ProtoError> {
    /// let mut client = Client::connect("127.0.0.1:8888").await?;
    /// let live = client.handshake(Regist::v2("7", token).resume_after(last_seq)).await?;
    /// println!("inbox head: {}", live.seq);
    /// while let Some(packet) = client.recv().await? {
    ///     if let Packet::Message(m) = packet {
    ///         println!("{}: {}", m.sender, m.message); // process it ...
    ///         last_seq = m.seq.unwrap_or(last_seq);    // ... remember it (on disk) ...
    ///         client.ack(last_seq).await?;             // ... and tell the server.
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn handshake(&mut self, regist: Regist) -> Result<Registered, ProtoError> {
        self.send(regist).await?;
        match self.recv().await? {
            Some(Packet::Registered(r)) => Ok(r),
            Some(Packet::Error(e)) => Err(ProtoError::Refused {
                code: e.code,
                message: e.message,
            }),
            Some(other) => Err(ProtoError::Unexpected(format!(
                "{other:?} where Registered was expected"
            ))),
            None => Err(ProtoError::Io(std::io::ErrorKind::UnexpectedEof.into())),
        }
    }

    /// Acknowledges everything up to `seq` (v2). See [`ClientSender::ack`].
    pub async fn ack(&mut self, seq: u64) -> Result<(), ProtoError> {
        self.sender.ack(seq).await
    }

    /// Marks the conversation with `peer` read up to `seq` (v2). See [`ClientSender::read`].
    pub async fn read(&mut self, peer: &str, seq: u64) -> Result<(), ProtoError> {
        self.sender.read(peer, seq).await
    }

    /// Sends `text` from `sender` to group `group` (v2). See [`ClientSender::send_to_group`].
    pub async fn send_to_group(
        &mut self,
        sender: &str,
        group: &str,
        text: &str,
        id: &str,
    ) -> Result<(), ProtoError> {
        self.sender.send_to_group(sender, group, text, id).await
    }

    /// Says that the user is typing to `receiver` (v2). See [`ClientSender::typing`].
    pub async fn typing(&mut self, receiver: &str) -> Result<(), ProtoError> {
        self.sender.typing(receiver).await
    }

    /// Splits the client into halves that can be used from different tasks.
    pub fn split(self) -> (ClientSender, ClientReceiver) {
        (self.sender, self.receiver)
    }
}

impl ClientSender {
    /// Sends one packet and flushes it to the socket.
    pub async fn send(&mut self, packet: impl Into<Packet>) -> Result<(), ProtoError> {
        self.frames.send(packet.into()).await
    }

    /// Queues one packet without flushing; several `feed`s then one [`flush`](Self::flush)
    /// send many packets in few system calls.
    pub async fn feed(&mut self, packet: impl Into<Packet>) -> Result<(), ProtoError> {
        self.frames.feed(packet.into()).await
    }

    /// Writes out everything fed so far.
    pub async fn flush(&mut self) -> Result<(), ProtoError> {
        self.frames.flush().await
    }

    /// Acknowledges (v2) that this device has processed every message of its inbox up to
    /// `seq`: a later `Regist` without `lastSeq`, on any of the user's devices, replays only
    /// what comes after it.
    pub async fn ack(&mut self, seq: u64) -> Result<(), ProtoError> {
        self.send(Ack::new(seq)).await
    }

    /// Marks the conversation with `peer` as read up to `seq` of this user's stream (v2), for
    /// all of the user's devices: the server's unread count for it (`GET /conversations`)
    /// then counts only `peer`'s messages after `seq`. Positions only move forward.
    ///
    /// ```no_run
    /// use improto::{Client, Packet, Regist};
    ///
    /// # async fn demo(token: String) -> Result<(), improto::ProtoError> {
    /// let (mut tx, mut rx) = Client::connect("127.0.0.1:8888").await?.split();
    /// tx.send(Regist::v2("7", token)).await?;
    /// while let Some(packet) = rx.recv().await? {
    ///     if let Packet::Message(m) = packet {
    ///         // Shown on screen: tell the server (and so the user's other devices).
    ///         let seq = m.seq.unwrap_or_default();
    ///         let peer = if m.sender == "7" { &m.receiver } else { &m.sender };
    ///         tx.read(peer, seq).await?;
    ///         tx.ack(seq).await?;
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn read(&mut self, peer: &str, seq: u64) -> Result<(), ProtoError> {
        self.send(crate::Read::new(peer, seq)).await
    }

    /// Sends `text` from `sender` to group `group` (`"g12"`), with client id `id` (v2). The
    /// server stores it in every member's stream and answers with an [`Ack`] that names the
    /// group; a sender who is not a member gets `Error` `not_member`.
    ///
    /// ```no_run
    /// use improto::{Client, Packet, Regist};
    ///
    /// # async fn demo(token: String) -> Result<(), improto::ProtoError> {
    /// let mut client = Client::connect("127.0.0.1:8888").await?;
    /// client.handshake(Regist::v2("7", token)).await?;
    /// client.send_to_group("7", "g12", "hello, everyone", "c-1").await?;
    /// if let Some(Packet::Ack(ack)) = client.recv().await? {
    ///     assert_eq!(ack.group.as_deref(), Some("g12"));
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn send_to_group(
        &mut self,
        sender: &str,
        group: &str,
        text: &str,
        id: &str,
    ) -> Result<(), ProtoError> {
        self.send(crate::Message::new(sender, group, text).with_id(id))
            .await
    }

    /// Says that the user is typing to `receiver`, a user or a group (v2). The server passes
    /// it on to the receiver's connections (every member's, for a group) as a
    /// [`Typing`](crate::Typing) with `sender` set; nothing is stored, and a connection that
    /// sends these too often has the extra ones dropped. Send it again every few seconds
    /// while the user types.
    ///
    /// ```no_run
    /// use improto::{Client, Packet, Regist};
    ///
    /// # async fn demo(token: String) -> Result<(), improto::ProtoError> {
    /// let mut client = Client::connect("127.0.0.1:8888").await?;
    /// client.handshake(Regist::v2("7", token)).await?;
    /// client.typing("9").await?;
    /// while let Some(packet) = client.recv().await? {
    ///     match packet {
    ///         Packet::Typing(t) => println!("{:?} is typing", t.sender),
    ///         Packet::Presence(p) => println!("{} is {}", p.user, if p.online { "online" } else { "away" }),
    ///         _ => {}
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn typing(&mut self, receiver: &str) -> Result<(), ProtoError> {
        self.send(crate::Typing::to(receiver)).await
    }

    /// Sends `Ping` (v2). The server answers `Pong` once every frame sent before it has taken
    /// effect, and the traffic keeps an idle connection open.
    pub async fn ping(&mut self) -> Result<(), ProtoError> {
        self.send(Packet::Ping).await
    }

    /// Flushes, then shuts down the sending direction (the server sees end of stream).
    pub async fn close(&mut self) -> Result<(), ProtoError> {
        self.frames.close().await
    }
}

impl ClientReceiver {
    /// Receives the next packet: `Ok(None)` when the server closed the connection cleanly.
    ///
    /// A bad packet is an `Err` for which [`ProtoError::is_fatal`] is false; the frame has been
    /// consumed and `recv` can be called again. After a fatal error (I/O, an oversized or
    /// truncated frame) the connection is unusable.
    pub async fn recv(&mut self) -> Result<Option<Packet>, ProtoError> {
        match self.frames.next().await {
            None => Ok(None),
            Some(frame) => Packet::from_json(&frame?).map(Some),
        }
    }
}
