//! Frames that arrive together: a session hands the messages among them to the store as
//! one request. What it must keep: every frame takes effect in the order it was sent, a v2
//! sender is never ahead by more than its limit of unanswered messages, and the store's own
//! limits (queue places, batch sizes) never lose or reorder anything.

mod common;

use common::{TestServer, WAIT, expect_eof, expect_error, frame, recv_message, recv_packet};
use improto::{Client, ErrorCode, Message, Packet};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A v2 `Regist` of user 1 resuming at its head, then `frames`, in one write: the server
/// reads them as one burst (or a few, as its reads fall).
async fn burst_as_1(srv: &TestServer, frames: &[Vec<u8>]) -> Client {
    let t1 = srv.login("1", "123").await;
    let regist = format!(
        r#"{{"type":"Regist","sender":"1","token":"{t1}","version":2,"lastSeq":{}}}"#,
        u64::MAX
    );
    let mut bytes = frame(regist.as_bytes());
    for f in frames {
        bytes.extend_from_slice(f);
    }
    let mut s = TcpStream::connect(srv.tcp()).await.unwrap();
    s.write_all(&bytes).await.unwrap();
    let mut c = Client::new(s);
    assert!(matches!(recv_packet(&mut c).await, Packet::Registered(_)));
    c
}

/// User 2's stream is `m0` … `m<n-1>`, in order: replayed from the start.
async fn assert_stream_of_2_is(srv: &TestServer, n: u64) {
    let t2 = srv.login("2", "123").await;
    let (mut b, head) = srv.v2("2", &t2, Some(0)).await;
    assert_eq!(head, n);
    for i in 0..n {
        assert_eq!(recv_message(&mut b).await.message, format!("m{i}"));
    }
}

fn message(to: &str, id: &str) -> Vec<u8> {
    let m = Message::new("1", to, id).with_id(id);
    frame(&Packet::from(m).to_json().unwrap())
}

#[tokio::test]
async fn a_burst_of_messages_pings_reads_and_bad_frames_takes_effect_in_order() {
    let srv = TestServer::start().await;
    let t2 = srv.login("2", "123").await;
    let (mut b, _) = srv.v2("2", &t2, None).await;
    let frames = vec![
        message("2", "a1"),
        message("2", "a2"),
        frame(br#"{"type":"Ping"}"#),
        // No receiver: refused, and nothing else is.
        frame(br#"{"type":"Message","sender":"1","message":"m","createTime":1,"id":"a3"}"#),
        message("2", "a4"),
        frame(br#"{"type":"Read","peer":"2","seq":1}"#),
        message("2", "a5"),
        frame(br#"{"type":"Ping"}"#),
    ];
    let mut c = burst_as_1(&srv, &frames).await;

    let (mut acks, mut pongs, mut refused) = (Vec::new(), Vec::new(), Vec::new());
    while pongs.len() < 2 {
        match recv_packet(&mut c).await {
            Packet::Ack(a) => acks.push((a.id.unwrap(), a.seq)),
            Packet::Pong => pongs.push(acks.len()),
            Packet::Error(e) => refused.push((e.code, e.id)),
            other => panic!("unexpected {other:?}"),
        }
    }
    let ids: Vec<_> = acks.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        ["a1", "a2", "a4", "a5"],
        "each stored message acknowledged, in order"
    );
    let seqs: Vec<_> = acks.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4], "gapless in the sender's stream");
    assert_eq!(
        pongs[0], 2,
        "the first Pong follows the messages sent before it"
    );
    assert_eq!(pongs[1], 4);
    assert_eq!(refused, [(ErrorCode::BadPacket, Some("a3".to_owned()))]);
    for id in ["a1", "a2", "a4", "a5"] {
        assert_eq!(recv_message(&mut b).await.message, id);
    }
}

#[tokio::test]
async fn a_sender_at_its_limit_of_unanswered_messages_waits_and_loses_nothing() {
    // A queue of 4 frames: at most 2 unanswered messages, while 300 come one write at a
    // time (so, mostly, one request each) to a store that fsyncs every commit. Without the
    // limit, the answers to the requests that one slow commit held would come together and
    // overflow the sender's own queue. (The receiver is offline: a reader with a queue of 4
    // could not keep up either.)
    let srv = TestServer::start_with(|c| {
        c.relay.send_queue = 4;
        c.store.durability = imserver::config::Durability::Power;
    })
    .await;
    let (mut tx, mut rx) = burst_as_1(&srv, &[]).await.split();
    let sender = tokio::spawn(async move {
        for i in 0..300 {
            tx.send(Message::new("1", "2", format!("m{i}")).with_id(format!("m{i}")))
                .await
                .unwrap();
            tokio::task::yield_now().await;
        }
        tx
    });
    for i in 0..300u64 {
        match timeout(WAIT, rx.recv()).await.expect("in time") {
            Ok(Some(Packet::Ack(a))) => assert_eq!((a.id, a.seq), (Some(format!("m{i}")), i + 1)),
            other => panic!("expected the Ack of m{i}, got {other:?}"),
        }
    }
    sender.await.unwrap();
    assert_stream_of_2_is(&srv, 300).await;
}

#[tokio::test]
async fn messages_before_a_stream_error_in_the_same_burst_are_stored() {
    let srv = TestServer::start_with(|c| c.relay.max_frame_bytes = 1000).await;
    let t2 = srv.login("2", "123").await;
    let (mut b, _) = srv.v2("2", &t2, None).await;
    let frames = vec![
        message("2", "before-1"),
        message("2", "before-2"),
        // A length prefix over the limit: the connection ends here.
        5000u32.to_be_bytes().to_vec(),
    ];
    let mut c = burst_as_1(&srv, &frames).await;
    let mut acked = Vec::new();
    loop {
        match recv_packet(&mut c).await {
            Packet::Ack(a) => acked.push(a.id.unwrap()),
            Packet::Error(e) => {
                assert_eq!(e.code, ErrorCode::TooLarge);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    expect_eof(&mut c).await;
    // Stored whether or not the Acks made it out before the close.
    assert!(acked.len() <= 2, "{acked:?}");
    assert_eq!(recv_message(&mut b).await.message, "before-1");
    assert_eq!(recv_message(&mut b).await.message, "before-2");
}

#[tokio::test]
async fn the_smallest_store_limits_still_store_and_deliver_everything_in_order() {
    // One place in the store's queue (a request of many messages takes all of it), one
    // write per transaction, and a byte limit every message passes on its own.
    let mut srv = TestServer::start_with(|c| {
        c.store.store_queue = 1;
        c.store.max_batch = 1;
        c.store.max_batch_bytes = 1;
    })
    .await;
    let t2 = srv.login("2", "123").await;
    let (mut b, _) = srv.v2("2", &t2, None).await;
    let frames: Vec<_> = (0..200).map(|i| message("2", &format!("m{i}"))).collect();
    let mut c = burst_as_1(&srv, &frames).await;
    for i in 0..200u64 {
        match recv_packet(&mut c).await {
            Packet::Ack(a) => assert_eq!(a.seq, i + 1),
            other => panic!("expected an Ack, got {other:?}"),
        }
        assert_eq!(recv_message(&mut b).await.seq, Some(i + 1));
    }
    drop((b, c));
    srv.restart().await;
    assert_stream_of_2_is(&srv, 200).await;
}

#[tokio::test]
async fn retries_from_two_devices_are_recognised_after_a_restart() {
    let mut srv = TestServer::start().await;
    let t1 = srv.login("1", "123").await;
    // Device "a" sorts below device "b", so its ids keep landing below b's: the runs of
    // ids of one user interleave.
    let ids = |device: &'static str| (0..30).map(move |i| format!("{device}-{i:04}"));
    let (mut a, _) = srv.v2("1", &t1, Some(u64::MAX)).await;
    let (mut b, _) = srv.v2("1", &t1, Some(u64::MAX)).await;
    let mut first = std::collections::HashMap::new();
    for (ia, ib) in ids("a").zip(ids("b")) {
        for (device, id) in [(&mut a, ia), (&mut b, ib)] {
            device
                .send(Message::new("1", "2", &id).with_id(&id))
                .await
                .unwrap();
            let seq = loop {
                match recv_packet(device).await {
                    Packet::Ack(ack) => break ack.seq,
                    // The other device's copies.
                    Packet::Message(_) => continue,
                    other => panic!("unexpected {other:?}"),
                }
            };
            first.insert(id, seq);
        }
    }
    drop((a, b));
    srv.restart().await;
    let t1 = srv.login("1", "123").await;
    let (mut again, head) = srv.v2("1", &t1, Some(u64::MAX)).await;
    assert_eq!(head, 60);
    for id in ids("b").chain(ids("a")) {
        again
            .send(Message::new("1", "2", &id).with_id(&id))
            .await
            .unwrap();
        match recv_packet(&mut again).await {
            Packet::Ack(ack) => assert_eq!(ack.seq, first[&id], "{id}"),
            other => panic!("unexpected {other:?}"),
        }
    }
    // Nothing was stored twice: user 2 has the 60 messages, and a new one is the 61st.
    let t2 = srv.login("2", "123").await;
    let (_, head) = srv.v2("2", &t2, Some(u64::MAX)).await;
    assert_eq!(head, 60);
    expect_error_free(&mut again).await;
}

/// The connection is still open and quiet.
async fn expect_error_free(c: &mut Client) {
    let before = common::sync(c).await;
    assert!(before.is_empty(), "{before:?}");
}

#[tokio::test]
async fn a_burst_before_the_regist_is_answered_frame_by_frame() {
    let srv = TestServer::start().await;
    // Messages before a Regist are refused each with its id; the Regist in the same burst
    // then takes effect.
    let t1 = srv.login("1", "123").await;
    let regist = format!(r#"{{"type":"Regist","sender":"1","token":"{t1}","version":2}}"#);
    let mut bytes = Vec::new();
    bytes.extend(message("2", "early-1"));
    bytes.extend(message("2", "early-2"));
    bytes.extend(frame(regist.as_bytes()));
    bytes.extend(message("2", "on-time"));
    let mut s = TcpStream::connect(srv.tcp()).await.unwrap();
    s.write_all(&bytes).await.unwrap();
    let mut c = Client::new(s);
    for id in ["early-1", "early-2"] {
        let e = expect_error(&mut c, ErrorCode::NotRegistered).await;
        assert_eq!(e.id.as_deref(), Some(id));
    }
    assert!(matches!(recv_packet(&mut c).await, Packet::Registered(_)));
    match recv_packet(&mut c).await {
        Packet::Ack(a) => assert_eq!(a.id.as_deref(), Some("on-time")),
        other => panic!("unexpected {other:?}"),
    }
}
