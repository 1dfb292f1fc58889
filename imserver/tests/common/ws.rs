//! A WebSocket client of `/ws` (tokio-tungstenite): packets as text messages.

use futures::{SinkExt, StreamExt};
use improto::{Packet, Regist};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{TestServer, WAIT};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Ws {
    pub socket: Socket,
}

/// What the server sent last, when a connection is expected to close.
#[derive(Debug)]
pub enum Closed {
    /// A close frame with this code.
    Code(u16),
    /// The connection ended without one.
    Abruptly,
}

impl TestServer {
    /// The `/ws` URL.
    pub fn ws_url(&self) -> String {
        format!(
            "ws://{}/ws",
            self.server.as_ref().expect("running").http_addr()
        )
    }

    /// A WebSocket on `/ws`, sending `Origin: origin` if given; the HTTP error otherwise.
    pub async fn ws_from(&self, origin: Option<&str>) -> Result<Ws, WsError> {
        let mut request = self.ws_url().into_client_request().expect("a request");
        if let Some(origin) = origin {
            let origin = HeaderValue::from_str(origin).expect("an origin");
            request.headers_mut().insert("origin", origin);
        }
        let (socket, _) = timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("in time")?;
        Ok(Ws { socket })
    }

    /// A WebSocket on `/ws`, not registered.
    pub async fn ws(&self) -> Ws {
        self.ws_from(None).await.expect("upgraded")
    }

    /// A WebSocket registered as `user` (v2, with its token), resuming after `last_seq` if
    /// given; and the head `Registered` told.
    pub async fn ws_v2(&self, user: &str, token: &str, last_seq: Option<u64>) -> (Ws, u64) {
        let mut ws = self.ws().await;
        let mut regist = Regist::v2(user, token);
        regist.last_seq = last_seq;
        ws.send(regist).await;
        match ws.recv().await {
            Packet::Registered(r) => {
                assert_eq!(r.sender, user);
                (ws, r.seq)
            }
            other => panic!("expected Registered, got {other:?}"),
        }
    }
}

impl Ws {
    pub async fn send(&mut self, packet: impl Into<Packet>) {
        let json = packet.into().to_json().expect("encodes");
        let text = String::from_utf8(json).expect("JSON is UTF-8");
        self.send_raw(Message::text(text)).await;
    }

    pub async fn send_raw(&mut self, message: Message) {
        timeout(WAIT, self.socket.send(message))
            .await
            .expect("in time")
            .expect("sent");
    }

    /// The next packet (control frames passed over).
    pub async fn recv(&mut self) -> Packet {
        loop {
            let next = timeout(WAIT, self.socket.next())
                .await
                .expect("a packet in time");
            match next {
                Some(Ok(Message::Text(text))) => {
                    return Packet::from_json(text.as_bytes()).expect("a packet");
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a packet, got {other:?}"),
            }
        }
    }

    /// Every packet until the connection closes, and how it closed.
    pub async fn until_closed(&mut self) -> (Vec<Packet>, Closed) {
        let mut packets = Vec::new();
        loop {
            let next = timeout(WAIT, self.socket.next())
                .await
                .expect("closed in time");
            match next {
                Some(Ok(Message::Text(text))) => {
                    packets.push(Packet::from_json(text.as_bytes()).expect("a packet"));
                }
                Some(Ok(Message::Close(Some(CloseFrame { code, .. })))) => {
                    return (packets, Closed::Code(code.into()));
                }
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => {
                    return (packets, Closed::Abruptly);
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Sends `Ping` and returns every packet received before the `Pong`.
    pub async fn sync(&mut self) -> Vec<Packet> {
        self.send(Packet::Ping).await;
        let mut before = Vec::new();
        loop {
            match self.recv().await {
                Packet::Pong => return before,
                p => before.push(p),
            }
        }
    }
}
