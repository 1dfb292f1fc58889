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
