//! The TCP relay, through `improto::Client` and raw sockets, against a real server.

mod common;

use common::{TestServer, WAIT, assert_next_is_marker, expect_closed, frame, recv_message, say};
use improto::{Message, Packet};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

fn message_json(from: &str, to: &str, text: &str) -> Vec<u8> {
    let mut m = Message::new(from, to, text);
    m.create_time = 1_700_000_000.0;
    Packet::from(m).to_json().unwrap()
}

async fn raw(srv: &TestServer) -> TcpStream {
    TcpStream::connect(srv.tcp()).await.unwrap()
}

#[tokio::test]
async fn online_message_is_relayed_unchanged_but_for_its_seq() {
    let srv = TestServer::start().await;
    let mut b = srv.client("2").await;
    let mut a = srv.client("1").await;
    let mut sent = Message::new("1", "2", "héllo <b>&</b> 你好 😀");
    sent.create_time = 1_700_000_000.25;
    a.send(sent.clone()).await.unwrap();
    let mut got = recv_message(&mut b).await;
    // 2's stream: the copy of the message `client` had 2 send, then this one.
    assert_eq!(got.seq, Some(2), "its position in 2's stream");
    got.seq = None;
    assert_eq!(got, sent);
}

#[tokio::test]
async fn regist_gets_no_reply() {
    let srv = TestServer::start().await;
    let mut a = srv.client("1").await;
    // The first frame a gets is a message sent after its Regist, not a reply to it.
    assert_next_is_marker(&srv, "2", &mut a, "1").await;
}

#[tokio::test]
async fn offline_messages_arrive_in_order_and_only_once() {
    let srv = TestServer::start().await;
    let mut a = srv.client("1").await;
    for i in 0..20 {
        say(&mut a, "1", "7", &format!("m{i}")).await;
    }
    // Ids need no account in open mode: "7" has none.
    let mut b = srv.client("7").await;
    for i in 0..20 {
        assert_eq!(recv_message(&mut b).await.message, format!("m{i}"));
    }
    drop(b);
    let mut b = srv.client("7").await;
    assert_next_is_marker(&srv, "1", &mut b, "7").await;
}

#[tokio::test]
async fn messages_from_one_sender_never_reorder() {
    let srv = TestServer::start().await;
    let mut b = srv.client("2").await;
    assert_next_is_marker(&srv, "1", &mut b, "2").await;
    let (mut tx, _rx) = srv.client("1").await.split();
    for i in 0..500 {
        tx.feed(Message::new("1", "2", format!("{i}")))
            .await
            .unwrap();
    }
    tx.flush().await.unwrap();
    for i in 0..500 {
        assert_eq!(recv_message(&mut b).await.message, i.to_string());
    }
}

#[tokio::test]
async fn every_connection_of_a_user_receives_its_messages() {
    let srv = TestServer::start().await;
    let mut phone = srv.client("2").await;
    let mut desktop = srv.client("2").await;
    let mut a = srv.client("1").await;
    say(&mut a, "1", "2", "to both").await;
    assert_eq!(recv_message(&mut phone).await.message, "to both");
    assert_eq!(recv_message(&mut desktop).await.message, "to both");
}

#[tokio::test]
async fn a_lingering_old_connection_closing_does_not_unroute_the_new_one() {
    let srv = TestServer::start().await;
    let mut old = srv.client("2").await;
    let mut new = srv.client("2").await;
    let mut a = srv.client("1").await;
    say(&mut a, "1", "2", "before").await;
    assert_eq!(recv_message(&mut old).await.message, "before");
    assert_eq!(recv_message(&mut new).await.message, "before");
    drop(old);
    // Whenever the server notices the old connection's close (before, during or after these
    // messages), the new connection must keep receiving.
    for i in 0..3 {
        say(&mut a, "1", "2", &format!("after {i}")).await;
        assert_eq!(recv_message(&mut new).await.message, format!("after {i}"));
    }
}

#[tokio::test]
async fn pipelined_frames_in_one_write() {
    let srv = TestServer::start().await;
    let mut b = srv.client("2").await;
    assert_next_is_marker(&srv, "1", &mut b, "2").await;
    let mut wire = frame(br#"{"type":"Regist","sender":"1"}"#);
    for i in 0..50 {
        wire.extend(frame(&message_json("1", "2", &format!("p{i}"))));
    }
    let mut s = raw(&srv).await;
    s.write_all(&wire).await.unwrap();
    for i in 0..50 {
        assert_eq!(recv_message(&mut b).await.message, format!("p{i}"));
    }
}

#[tokio::test]
async fn frames_split_across_many_writes() {
    let srv = TestServer::start().await;
    let mut b = srv.client("2").await;
    assert_next_is_marker(&srv, "1", &mut b, "2").await;
    let mut wire = frame(br#"{"type":"Regist","sender":"1"}"#);
    wire.extend(frame(&message_json("1", "2", "byte by byte")));
    let mut s = raw(&srv).await;
    s.set_nodelay(true).unwrap();
    for byte in wire {
        s.write_all(&[byte]).await.unwrap();
        s.flush().await.unwrap();
    }
    assert_eq!(recv_message(&mut b).await.message, "byte by byte");
}

#[tokio::test]
async fn messages_of_64_kib() {
    let srv = TestServer::start().await;
    let mut b = srv.client("2").await;
    let mut a = srv.client("1").await;
    let text = "z".repeat(64 * 1024);
    say(&mut a, "1", "2", &text).await;
    say(&mut a, "1", "2", "small").await;
    assert_eq!(recv_message(&mut b).await.message, text);
    assert_eq!(recv_message(&mut b).await.message, "small");
}

#[tokio::test]
async fn bad_packets_are_dropped_and_the_connection_stays_up() {
    let srv = TestServer::start().await;
    let mut b = srv.client("2").await;
    assert_next_is_marker(&srv, "3", &mut b, "2").await;
    let mut s = raw(&srv).await;
    s.write_all(&frame(br#"{"type":"Regist","sender":"1"}"#))
        .await
        .unwrap();
    let bad: [&[u8]; 6] = [
        b"{not json",
        b"\xff\xfe",
        br#"{"type":"Message","sender":"1","receiver":"2","createTime":1}"#,
        br#"{"type":"Message","message":5,"sender":"1","receiver":"2","createTime":1}"#,
        br#"{"type":"Teleport","sender":"1"}"#,
        b"[1,2]",
    ];
    for payload in bad {
        s.write_all(&frame(payload)).await.unwrap();
        // The same connection still relays.
        s.write_all(&frame(&message_json("1", "2", "still here")))
            .await
            .unwrap();
        assert_eq!(recv_message(&mut b).await.message, "still here");
    }
    // And a fresh client is served too.
    assert_next_is_marker(&srv, "4", &mut b, "2").await;
}

#[tokio::test]
async fn a_message_before_regist_is_dropped() {
    let srv = TestServer::start().await;
    let mut b = srv.client("2").await;
    let mut s = raw(&srv).await;
    s.write_all(&frame(&message_json("1", "2", "too early")))
        .await
        .unwrap();
    s.write_all(&frame(br#"{"type":"Regist","sender":"1"}"#))
        .await
        .unwrap();
    s.write_all(&frame(&message_json("1", "2", "in time")))
        .await
        .unwrap();
    assert_eq!(recv_message(&mut b).await.message, "in time");
}

#[tokio::test]
async fn a_message_with_another_users_sender_is_dropped() {
    let srv = TestServer::start().await;
    let mut b = srv.client("2").await;
    let mut mallory = srv.client("3").await;
    say(&mut mallory, "1", "2", "I am 1, honest").await;
    say(&mut mallory, "3", "2", "from 3").await;
    let m = recv_message(&mut b).await;
    assert_eq!((m.sender.as_str(), m.message.as_str()), ("3", "from 3"));
}

#[tokio::test]
async fn an_oversized_length_prefix_closes_the_connection() {
    let srv = TestServer::start_with(|c| c.relay.max_frame_bytes = 1000).await;
    let mut b = srv.client("2").await;
    let mut s = raw(&srv).await;
    s.write_all(&frame(br#"{"type":"Regist","sender":"1"}"#))
        .await
        .unwrap();
    // A prefix exactly at the limit is fine...
    let mut at_limit = message_json("1", "2", "");
    let pad = 1000 - at_limit.len();
    at_limit = message_json("1", "2", &"a".repeat(pad));
    assert_eq!(at_limit.len(), 1000);
    s.write_all(&frame(&at_limit)).await.unwrap();
    assert_eq!(recv_message(&mut b).await.message.len(), pad);
    // ...one more byte closes the connection, judged on the prefix alone.
    s.write_all(&1001u32.to_be_bytes()).await.unwrap();
    expect_closed(&mut s).await;
    assert_next_is_marker(&srv, "1", &mut b, "2").await;
}

#[tokio::test]
async fn a_huge_length_prefix_closes_the_connection() {
    let srv = TestServer::start().await;
    let mut b = srv.client("2").await;
    let mut s = raw(&srv).await;
    s.write_all(&[0xFF, 0xFF, 0xFF, 0xF0, b'{']).await.unwrap();
    expect_closed(&mut s).await;
    assert_next_is_marker(&srv, "1", &mut b, "2").await;
}

#[tokio::test]
async fn a_truncated_frame_at_close_is_discarded() {
    let srv = TestServer::start().await;
    let mut b = srv.client("2").await;
    let mut s = raw(&srv).await;
    s.write_all(&frame(br#"{"type":"Regist","sender":"1"}"#))
        .await
        .unwrap();
    let whole = frame(&message_json("1", "2", "cut short"));
    s.write_all(&whole[..whole.len() - 2]).await.unwrap();
    s.shutdown().await.unwrap();
    expect_closed(&mut s).await;
    assert_next_is_marker(&srv, "1", &mut b, "2").await;
}

#[tokio::test]
async fn a_reader_that_never_reads_is_disconnected_and_loses_nothing() {
    never_reading_reader_is_disconnected_and_loses_nothing(|c| c.relay.send_queue = 8).await;
}

#[tokio::test]
async fn a_reader_whose_queue_holds_too_many_bytes_is_disconnected_and_loses_nothing() {
    // 8 messages of 32 KiB fill the byte limit long before the 1024 frames of the default
    // queue; the flood below is 400 such messages.
    never_reading_reader_is_disconnected_and_loses_nothing(|c| {
        c.relay.send_queue = 1024;
        c.relay.send_queue_bytes = 256 * 1024;
    })
    .await;
}

#[tokio::test]
async fn a_message_over_the_queue_byte_limit_still_reaches_a_reader_that_keeps_up() {
    let srv = TestServer::start_with(|c| c.relay.send_queue_bytes = 16).await;
    let mut b = srv.client("2").await;
    let mut a = srv.client("1").await;
    for i in 0..3 {
        let text = format!("far longer than sixteen bytes, number {i}");
        say(&mut a, "1", "2", &text).await;
        assert_eq!(recv_message(&mut b).await.message, text);
    }
}

/// A v1 reader that registers and then never reads, under the limits set by `limits`: a
/// flood to it gets it disconnected, other users are served throughout, and when it
/// reconnects it gets every message exactly once, in order.
async fn never_reading_reader_is_disconnected_and_loses_nothing(
    limits: impl FnOnce(&mut imserver::Config),
) {
    let srv = TestServer::start_with(limits).await;
    // The slow reader registers and then never reads.
    let mut slow = raw(&srv).await;
    slow.write_all(&frame(br#"{"type":"Regist","sender":"2"}"#))
        .await
        .unwrap();
    let mut probe = srv.client("1").await;
    say(&mut probe, "1", "2", "first").await;
    // Another user keeps being served throughout.
    let mut other = srv.client("3").await;

    let text = "s".repeat(32 * 1024);
    let total = 400; // ~12 MiB: far more than socket buffers and the queue hold
    let (mut tx, _rx) = srv.client("1").await.split();
    for i in 0..total {
        tx.feed(Message::new("1", "2", format!("{i}:{text}")))
            .await
            .unwrap();
        if i % 50 == 0 {
            tx.flush().await.unwrap();
            let mut p = srv.client("4").await;
            say(&mut p, "4", "3", &format!("ping {i}")).await;
            assert_eq!(recv_message(&mut other).await.message, format!("ping {i}"));
        }
    }
    // Once user 3 gets this, sent after the flood on the same connection, every flood
    // message is stored and has been offered to the slow connection.
    tx.send(Message::new("1", "3", "flood done")).await.unwrap();
    assert_eq!(recv_message(&mut other).await.message, "flood done");
    expect_closed(&mut slow).await;

    // Reconnecting, user 2 gets every message exactly once, in order. The bytes the slow
    // connection's socket accepted before it was cut count as written (v1 has no acks),
    // so the replay starts where the server's writes stopped.
    drop(slow);
    // `connect`, not `client`: the replay fills the socket until we read, so a sync message
    // from this connection would not be read by the server before we drain it.
    let mut b = srv.connect("2").await;
    let mut expected = None;
    let mut received = 0;
    loop {
        let m = timeout(WAIT, recv_message(&mut b)).await.expect("in time");
        if m.message == "first" {
            expected = Some(0);
            continue;
        }
        let (n, rest) = m.message.split_once(':').expect("numbered");
        let n: usize = n.parse().unwrap();
        assert_eq!(rest.len(), text.len());
        match expected {
            Some(e) => assert_eq!(n, e, "out of order or duplicated"),
            None => assert!(n > 0, "replay starts after what was written"),
        }
        expected = Some(n + 1);
        received += 1;
        if n == total - 1 {
            break;
        }
    }
    assert!(received > 0);
    assert_next_is_marker(&srv, "1", &mut b, "2").await;
}

#[tokio::test]
async fn undelivered_messages_survive_a_restart() {
    let mut srv = TestServer::start().await;
    let mut a = srv.client("1").await;
    for i in 0..5 {
        say(&mut a, "1", "2", &format!("kept {i}")).await;
    }
    // The messages are durable once relayed; an online probe to another user, sent after
    // them on the same connection, proves they were all read and queued.
    let mut c = srv.client("3").await;
    say(&mut a, "1", "3", "probe").await;
    assert_eq!(recv_message(&mut c).await.message, "probe");
    drop((a, c));
    srv.restart().await;
    let mut b = srv.client("2").await;
    for i in 0..5 {
        assert_eq!(recv_message(&mut b).await.message, format!("kept {i}"));
    }
    assert_next_is_marker(&srv, "1", &mut b, "2").await;
}
