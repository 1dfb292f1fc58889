//! `Client` against a scripted peer on 127.0.0.1:0 that speaks raw bytes.

use std::time::Duration;

use improto::{Client, Message, Packet, ProtoError, Regist};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Generous bound on every wait, so a broken test fails instead of hanging.
const WAIT: Duration = Duration::from_secs(10);

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

async fn pair() -> (Client, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, accepted) = tokio::join!(Client::connect(addr), listener.accept());
    (client.unwrap(), accepted.unwrap().0)
}

async fn read_frame(peer: &mut TcpStream) -> Vec<u8> {
    let len = timeout(WAIT, peer.read_u32()).await.unwrap().unwrap();
    let mut buf = vec![0; len as usize];
    timeout(WAIT, peer.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    buf
}

#[tokio::test]
async fn send_writes_length_prefixed_json() {
    let (mut client, mut peer) = pair().await;
    client.send(Regist::new("1")).await.unwrap();
    assert_eq!(
        read_frame(&mut peer).await,
        br#"{"type":"Regist","sender":"1"}"#
    );

    let mut m = Message::new("1", "2", "hi");
    m.create_time = 3.5;
    client.send(m).await.unwrap();
    assert_eq!(
        read_frame(&mut peer).await,
        br#"{"type":"Message","message":"hi","sender":"1","receiver":"2","createTime":3.5}"#
    );
}

#[tokio::test]
async fn recv_survives_a_bad_packet_and_returns_none_on_clean_close() {
    let (mut client, mut peer) = pair().await;
    let mut wire = frame(b"{not json");
    wire.extend(frame(br#"{"type":"Nope"}"#));
    wire.extend(frame(
        br#"{"type":"Message","message":"m","sender":"2","receiver":"1","createTime":1}"#,
    ));
    peer.write_all(&wire).await.unwrap();
    drop(peer);

    let err = timeout(WAIT, client.recv()).await.unwrap().unwrap_err();
    assert!(matches!(err, ProtoError::InvalidJson(_)) && !err.is_fatal());
    let err = timeout(WAIT, client.recv()).await.unwrap().unwrap_err();
    assert!(matches!(err, ProtoError::UnknownType(ref t) if t == "Nope"));
    match timeout(WAIT, client.recv()).await.unwrap().unwrap() {
        Some(Packet::Message(m)) => assert_eq!(m.message, "m"),
        other => panic!("expected the message, got {other:?}"),
    }
    assert!(
        timeout(WAIT, client.recv())
            .await
            .unwrap()
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn truncated_frame_at_close_is_an_error_not_a_packet() {
    let (mut client, mut peer) = pair().await;
    let whole = frame(br#"{"type":"Regist","sender":"1"}"#);
    peer.write_all(&whole[..whole.len() - 3]).await.unwrap();
    drop(peer);
    let err = timeout(WAIT, client.recv()).await.unwrap().unwrap_err();
    assert!(
        matches!(err, ProtoError::Truncated { .. }) && err.is_fatal(),
        "{err:?}"
    );
}

#[tokio::test]
async fn oversized_frame_from_the_peer_is_fatal() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stream, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let mut client = Client::with_max_frame_length(stream.unwrap(), 16);
    let mut peer = accepted.unwrap().0;
    peer.write_all(&17u32.to_be_bytes()).await.unwrap();
    let err = timeout(WAIT, client.recv()).await.unwrap().unwrap_err();
    assert!(
        matches!(err, ProtoError::FrameTooLarge { len: 17, max: 16 }),
        "{err:?}"
    );
}

#[tokio::test]
async fn split_halves_read_and_write_concurrently() {
    let (client, peer) = pair().await;
    let (mut tx, mut rx) = client.split();
    // The peer echoes every frame back.
    let echo = tokio::spawn(async move {
        let (mut r, mut w) = peer.into_split();
        tokio::io::copy(&mut r, &mut w).await.unwrap();
    });
    let writer = tokio::spawn(async move {
        for i in 0..100 {
            tx.feed(Message::new("1", "1", format!("n{i}")))
                .await
                .unwrap();
        }
        tx.flush().await.unwrap();
        tx.close().await.unwrap();
    });
    for i in 0..100 {
        match timeout(WAIT, rx.recv()).await.unwrap().unwrap() {
            Some(Packet::Message(m)) => assert_eq!(m.message, format!("n{i}")),
            other => panic!("expected message {i}, got {other:?}"),
        }
    }
    assert!(timeout(WAIT, rx.recv()).await.unwrap().unwrap().is_none());
    writer.await.unwrap();
    echo.await.unwrap();
}

#[tokio::test]
async fn connect_to_a_closed_port_is_an_io_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = Client::connect(addr).await.unwrap_err();
    assert!(matches!(err, ProtoError::Io(_)), "{err:?}");
}

#[tokio::test]
async fn handshake_sends_a_v2_regist_and_returns_registered() {
    let (mut client, mut peer) = pair().await;
    let server = tokio::spawn(async move {
        let regist = read_frame(&mut peer).await;
        peer.write_all(&frame(br#"{"type":"Registered","sender":"7","seq":41}"#))
            .await
            .unwrap();
        let ack = read_frame(&mut peer).await;
        let ping = read_frame(&mut peer).await;
        (regist, ack, ping)
    });
    let live = timeout(
        WAIT,
        client.handshake(Regist::v2("7", "tok").resume_after(40)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((live.sender.as_str(), live.seq), ("7", 41));
    client.ack(41).await.unwrap();
    let (mut tx, _rx) = client.split();
    tx.ping().await.unwrap();
    let (regist, ack, ping) = server.await.unwrap();
    assert_eq!(
        regist,
        br#"{"type":"Regist","sender":"7","token":"tok","version":2,"lastSeq":40}"#
    );
    assert_eq!(ack, br#"{"type":"Ack","seq":41}"#);
    assert_eq!(ping, br#"{"type":"Ping"}"#);
}

#[tokio::test]
async fn handshake_refused_by_an_error_packet() {
    let (mut client, mut peer) = pair().await;
    tokio::spawn(async move {
        read_frame(&mut peer).await;
        peer.write_all(&frame(
            br#"{"type":"Error","code":"unauthorized","message":"bad token"}"#,
        ))
        .await
        .unwrap();
    });
    let err = timeout(WAIT, client.handshake(Regist::v2("7", "forged")))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&err, ProtoError::Refused { code: improto::ErrorCode::Unauthorized, message } if message == "bad token"),
        "{err:?}"
    );
    assert!(err.is_fatal(), "the server closes after unauthorized");
}

#[tokio::test]
async fn handshake_with_a_v1_server_is_unexpected_or_eof() {
    // A v1 server sends no Registered: either a message comes first, or nothing at all.
    let (mut client, mut peer) = pair().await;
    tokio::spawn(async move {
        read_frame(&mut peer).await;
        peer.write_all(&frame(
            br#"{"type":"Message","message":"m","sender":"1","receiver":"7","createTime":1}"#,
        ))
        .await
        .unwrap();
    });
    let err = timeout(WAIT, client.handshake(Regist::v2("7", "t")))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, ProtoError::Unexpected(_)), "{err:?}");

    let (mut client, mut peer) = pair().await;
    tokio::spawn(async move {
        read_frame(&mut peer).await;
        drop(peer);
    });
    let err = timeout(WAIT, client.handshake(Regist::v2("7", "t")))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, ProtoError::Io(_)), "{err:?}");
}

#[tokio::test]
async fn default_client_accepts_a_full_size_message_with_a_seq_stamp() {
    let (mut client, mut peer) = pair().await;
    let text = "x".repeat(improto::DEFAULT_MAX_FRAME_LENGTH - 100);
    let mut m = Message::new("1", "2", text);
    m.create_time = 1.0;
    let json = Packet::from(m).to_json().unwrap();
    let mut pad = json.clone();
    // Pad the message (inside the text) to exactly the limit, then stamp the largest seq.
    let missing = improto::DEFAULT_MAX_FRAME_LENGTH - json.len();
    let at = pad.iter().position(|&b| b == b'x').unwrap();
    pad.splice(at..at, std::iter::repeat_n(b'x', missing));
    assert_eq!(pad.len(), improto::DEFAULT_MAX_FRAME_LENGTH);
    let mut out = bytes::BytesMut::new();
    assert!(improto::write_stamped(&mut out, &pad, u64::MAX));
    peer.write_all(&out).await.unwrap();
    match timeout(WAIT, client.recv()).await.unwrap().unwrap() {
        Some(Packet::Message(m)) => assert_eq!(m.seq, Some(u64::MAX)),
        other => panic!("{other:?}"),
    }
}
