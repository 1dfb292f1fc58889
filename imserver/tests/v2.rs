//! Protocol v2 on the relay: `Registered`, sequence numbers, acknowledgements, resume,
//! de-duplication, errors, and the connection limits.

mod common;

use common::{TestServer, WAIT, expect_eof, expect_error, frame, recv_message, recv_packet, sync};
use improto::{Ack, ErrorCode, Message, Packet, Regist};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use tokio::time::timeout;

/// A server in token mode, and tokens for users 1 and 2.
async fn secure() -> (TestServer, String, String) {
    with_tokens(|c| c.auth.auth = imserver::config::AuthMode::Token).await
}

/// A server configured by `adjust` (see `TestServer::start_with`), and tokens for users 1
/// and 2.
async fn with_tokens(adjust: impl FnOnce(&mut imserver::Config)) -> (TestServer, String, String) {
    let srv = TestServer::start_with(adjust).await;
    let t1 = srv.login("1", "123").await;
    let t2 = srv.login("2", "123").await;
    (srv, t1, t2)
}

/// A raw socket that has sent a v2 `Regist` as user 1, resuming past anything stored; for
/// frames `Client` would not send.
async fn raw_v2(srv: &TestServer, t1: &str) -> TcpStream {
    let mut s = TcpStream::connect(srv.tcp()).await.unwrap();
    let regist = format!(
        r#"{{"type":"Regist","sender":"1","token":"{t1}","version":2,"lastSeq":{}}}"#,
        u64::MAX
    );
    s.write_all(&frame(regist.as_bytes())).await.unwrap();
    s
}

/// Sends `texts` from 1 to 2 (v2, with ids `<text>`) on a new device of 1 (resuming at its
/// head, so nothing is replayed to it), and waits for every `Ack`; returns their seqs, the
/// positions of the copies in 1's own stream.
async fn send_acked(srv: &TestServer, t1: &str, texts: &[&str]) -> Vec<u64> {
    let (mut a, _) = srv.v2("1", t1, Some(u64::MAX)).await;
    for t in texts {
        a.send(Message::new("1", "2", *t).with_id(*t))
            .await
            .unwrap();
    }
    let mut seqs = Vec::new();
    for t in texts {
        match recv_packet(&mut a).await {
            Packet::Ack(ack) => {
                assert_eq!(ack.id.as_deref(), Some(*t));
                seqs.push(ack.seq);
            }
            other => panic!("expected an Ack, got {other:?}"),
        }
    }
    seqs
}

#[tokio::test]
async fn registered_comes_first_with_the_inbox_head() {
    let (srv, t1, t2) = secure().await;
    let (_, head) = srv.v2("2", &t2, None).await;
    assert_eq!(head, 0, "an empty inbox");
    send_acked(&srv, &t1, &["a", "b", "c"]).await;
    let mut c = srv.raw().await;
    c.send(Regist::v2("2", &t2)).await.unwrap();
    match recv_packet(&mut c).await {
        Packet::Registered(r) => assert_eq!((r.sender.as_str(), r.seq), ("2", 3)),
        other => panic!("Registered must come first, got {other:?}"),
    }
    for (i, text) in ["a", "b", "c"].iter().enumerate() {
        let m = recv_message(&mut c).await;
        assert_eq!((m.message.as_str(), m.seq), (*text, Some(i as u64 + 1)));
    }
}

#[tokio::test]
async fn messages_are_acknowledged_and_delivered_with_gapless_seqs() {
    let (srv, t1, t2) = secure().await;
    let (mut b, _) = srv.v2("2", &t2, None).await;
    assert_eq!(send_acked(&srv, &t1, &["x", "y"]).await, vec![1, 2]);
    for (seq, text) in [(1, "x"), (2, "y")] {
        let m = recv_message(&mut b).await;
        assert_eq!(
            (m.seq, m.message.as_str(), m.id.as_deref()),
            (Some(seq), text, Some(text))
        );
    }
    // Without a client id the Ack still comes, with the seq and no id.
    let (mut a, _) = srv.v2("1", &t1, Some(2)).await;
    a.send(Message::new("1", "2", "no id")).await.unwrap();
    assert_eq!(recv_packet(&mut a).await, Ack::stored(None, 3).into());
    assert_eq!(recv_message(&mut b).await.seq, Some(3));
}

#[tokio::test]
async fn a_retried_client_id_is_acknowledged_again_and_delivered_once() {
    let (srv, t1, t2) = secure().await;
    let (mut b, _) = srv.v2("2", &t2, None).await;
    let first = send_acked(&srv, &t1, &["c-1"]).await;
    // The retry comes on a new connection, as after a lost Ack.
    let again = send_acked(&srv, &t1, &["c-1"]).await;
    assert_eq!(first, again);
    assert_eq!(recv_message(&mut b).await.id.as_deref(), Some("c-1"));
    send_acked(&srv, &t1, &["marker"]).await;
    assert_eq!(
        recv_message(&mut b).await.message,
        "marker",
        "no second copy"
    );
}

#[tokio::test]
async fn resume_from_every_position_replays_exactly_what_follows_then_live() {
    let (srv, t1, t2) = secure().await;
    send_acked(&srv, &t1, &["m1", "m2", "m3", "m4", "m5"]).await;
    for last in 0..=5u64 {
        let (mut c, head) = srv.v2("2", &t2, Some(last)).await;
        assert_eq!(head, 5);
        let got: Vec<Option<u64>> = sync(&mut c)
            .await
            .into_iter()
            .map(|p| match p {
                Packet::Message(m) => m.seq,
                other => panic!("{other:?}"),
            })
            .collect();
        let want: Vec<Option<u64>> = (last + 1..=5).map(Some).collect();
        assert_eq!(got, want, "lastSeq {last}");
    }
    // Live traffic follows the replay with no gap: the next message is 6.
    let (mut c, _) = srv.v2("2", &t2, Some(5)).await;
    send_acked(&srv, &t1, &["m6"]).await;
    assert_eq!(recv_message(&mut c).await.seq, Some(6));
}

#[tokio::test]
async fn last_seq_ahead_of_the_server_replays_nothing_and_skips_nothing_live() {
    let (srv, t1, t2) = secure().await;
    send_acked(&srv, &t1, &["m1", "m2"]).await;
    let (mut c, head) = srv.v2("2", &t2, Some(1000)).await;
    assert_eq!(head, 2, "Registered tells the real head");
    assert!(sync(&mut c).await.is_empty());
    send_acked(&srv, &t1, &["m3"]).await;
    assert_eq!(recv_message(&mut c).await.seq, Some(3));
}

#[tokio::test]
async fn without_last_seq_the_unacknowledged_are_replayed() {
    let (srv, t1, t2) = secure().await;
    send_acked(&srv, &t1, &["m1", "m2", "m3", "m4"]).await;
    // A device that never acknowledges gets everything again on every connection.
    for _ in 0..2 {
        let (mut c, _) = srv.v2("2", &t2, None).await;
        assert_eq!(sync(&mut c).await.len(), 4);
    }
    // Ack is cumulative and shared by the user's devices; Pong proves it has taken effect.
    let (mut phone, _) = srv.v2("2", &t2, None).await;
    assert_eq!(sync(&mut phone).await.len(), 4);
    phone.ack(3).await.unwrap();
    assert!(sync(&mut phone).await.is_empty());
    let (mut desktop, _) = srv.v2("2", &t2, None).await;
    match &sync(&mut desktop).await[..] {
        [Packet::Message(m)] => assert_eq!(m.seq, Some(4)),
        other => panic!("{other:?}"),
    }
    // lastSeq wins over the stored position.
    let (mut again, _) = srv.v2("2", &t2, Some(1)).await;
    assert_eq!(sync(&mut again).await.len(), 3);
}

/// A server that writes acknowledgement positions only when it stops (`--ack-flush` of an
/// hour): in between, they are in memory.
async fn acks_in_memory() -> (TestServer, String, String) {
    with_tokens(|c| {
        c.auth.auth = imserver::config::AuthMode::Token;
        c.store.ack_flush = Duration::from_secs(3600);
    })
    .await
}

#[tokio::test]
async fn acknowledged_positions_survive_a_restart() {
    let (mut srv, t1, t2) = acks_in_memory().await;
    send_acked(&srv, &t1, &["m1", "m2", "m3"]).await;
    let (mut phone, _) = srv.v2("2", &t2, None).await;
    assert_eq!(sync(&mut phone).await.len(), 3);
    phone.ack(2).await.unwrap();
    sync(&mut phone).await;
    drop(phone);
    srv.restart().await;
    let t2 = srv.login("2", "123").await;
    let (mut desktop, _) = srv.v2("2", &t2, None).await;
    match &sync(&mut desktop).await[..] {
        [Packet::Message(m)] => assert_eq!(m.seq, Some(3)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_acknowledgement_past_the_head_hides_nothing_sent_later() {
    let (mut srv, t1, t2) = acks_in_memory().await;
    send_acked(&srv, &t1, &["m1"]).await;
    let (mut phone, _) = srv.v2("2", &t2, None).await;
    phone.ack(1000).await.unwrap();
    assert_eq!(sync(&mut phone).await.len(), 1);
    drop(phone);
    send_acked(&srv, &t1, &["m2"]).await;
    // In memory, then written: either way the position stops at the head it had.
    for restart in [false, true] {
        if restart {
            srv.restart().await;
        }
        let t2 = srv.login("2", "123").await;
        let (mut desktop, _) = srv.v2("2", &t2, None).await;
        match &sync(&mut desktop).await[..] {
            [Packet::Message(m)] => assert_eq!(m.message, "m2"),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn v1_and_v2_connections_of_one_user_interleave() {
    let srv = TestServer::start().await; // open: v1 without a token, v2 with one
    let t2 = srv.login("2", "123").await;
    let t1 = srv.login("1", "123").await;
    let mut old = srv.client("2").await;
    let (mut new, _) = srv.v2("2", &t2, None).await;
    send_acked(&srv, &t1, &["both"]).await;
    // The v1 connection gets the message (with the extra seq/id fields) and nothing else.
    // Its seq is 2 in 2's stream: 1 is the copy of the message `client` had 2 send.
    let m = recv_message(&mut old).await;
    assert_eq!((m.message.as_str(), m.seq), ("both", Some(2)));
    // The v2 device also has the copy of what the v1 device sent, before.
    let copy = recv_message(&mut new).await;
    assert_eq!((copy.sender.as_str(), copy.message.as_str()), ("2", "sync"));
    assert_eq!(recv_message(&mut new).await.message, "both");
    // A v1 connection's Ping, bad packets and errors get no reply.
    old.send(Packet::Ping).await.unwrap();
    old.send(Message::new("1", "2", "spoofed")).await.unwrap();
    old.send(Ack::new(1)).await.unwrap();
    send_acked(&srv, &t1, &["next"]).await;
    assert_eq!(recv_message(&mut old).await.message, "next");
    // Written to v1 counts as acknowledged: a new v2 device has nothing to replay.
    assert!(
        sync(&mut new)
            .await
            .iter()
            .all(|p| matches!(p, Packet::Message(m) if m.message == "next"))
    );
    let (mut fresh, _) = srv.v2("2", &t2, None).await;
    assert!(sync(&mut fresh).await.is_empty());
}

#[tokio::test]
async fn a_spoofed_sender_is_refused_and_not_relayed() {
    let (srv, t1, t2) = secure().await;
    let (mut b, _) = srv.v2("2", &t2, None).await;
    let (mut mallory, _) = srv.v2("1", &t1, None).await;
    mallory
        .send(Message::new("2", "2", "I am 2").with_id("evil"))
        .await
        .unwrap();
    let e = expect_error(&mut mallory, ErrorCode::SenderMismatch).await;
    assert_eq!(e.id.as_deref(), Some("evil"));
    assert!(
        sync(&mut mallory).await.is_empty(),
        "the connection stays open"
    );
    send_acked(&srv, &t1, &["honest"]).await;
    assert_eq!(recv_message(&mut b).await.message, "honest");
}

#[tokio::test]
async fn bad_packets_get_an_error_and_the_connection_stays() {
    let (srv, t1, _) = secure().await;
    let mut s = raw_v2(&srv, &t1).await;
    let long_id = "x".repeat(65);
    let cases: Vec<(Vec<u8>, ErrorCode, Option<&str>)> = vec![
        (b"{not json".to_vec(), ErrorCode::BadJson, None),
        (b"\xff\xfe".to_vec(), ErrorCode::BadJson, None),
        (
            br#"{"type":"Message","sender":"1","message":"m","createTime":1,"id":"c-9"}"#.to_vec(),
            ErrorCode::BadPacket,
            Some("c-9"),
        ),
        (
            format!(r#"{{"type":"Message","sender":"1","receiver":"2","message":"m","createTime":1,"id":"{long_id}"}}"#).into_bytes(),
            ErrorCode::BadPacket,
            None,
        ),
        (br#"{"type":"Ack","seq":"x"}"#.to_vec(), ErrorCode::BadPacket, None),
        (br#"{"type":"Teleport"}"#.to_vec(), ErrorCode::UnknownType, None),
        (br#"{"type":"Pong"}"#.to_vec(), ErrorCode::BadPacket, None),
    ];
    for (payload, _, _) in &cases {
        s.write_all(&frame(payload)).await.unwrap();
    }
    let mut c = improto::Client::new(s);
    assert!(matches!(recv_packet(&mut c).await, Packet::Registered(_)));
    for (payload, code, id) in cases {
        let e = expect_error(&mut c, code).await;
        assert_eq!(e.id.as_deref(), id, "{}", String::from_utf8_lossy(&payload));
        assert!(!e.message.is_empty());
    }
    assert!(sync(&mut c).await.is_empty(), "still open");
}

#[tokio::test]
async fn bad_packet_errors_name_the_field() {
    let (srv, t1, _) = secure().await;
    // Built by hand: the Client would not send a Message without a receiver.
    let mut s = raw_v2(&srv, &t1).await;
    s.write_all(&frame(
        br#"{"type":"Message","sender":"1","message":"m","createTime":1}"#,
    ))
    .await
    .unwrap();
    let mut c = improto::Client::new(s);
    assert!(matches!(recv_packet(&mut c).await, Packet::Registered(_)));
    let e = expect_error(&mut c, ErrorCode::BadPacket).await;
    assert!(e.message.contains("receiver"), "{}", e.message);
}

#[tokio::test]
async fn before_regist_a_message_is_not_registered_and_regist_may_follow() {
    let (srv, t1, t2) = secure().await;
    let (mut b, _) = srv.v2("2", &t2, None).await;
    let mut c = srv.raw().await;
    c.send(Message::new("1", "2", "too early").with_id("e-1"))
        .await
        .unwrap();
    let e = expect_error(&mut c, ErrorCode::NotRegistered).await;
    assert_eq!(e.id.as_deref(), Some("e-1"));
    c.send(Ack::new(1)).await.unwrap();
    expect_error(&mut c, ErrorCode::NotRegistered).await;
    c.handshake(Regist::v2("1", &t1)).await.unwrap();
    c.send(Message::new("1", "2", "in time")).await.unwrap();
    assert_eq!(recv_message(&mut b).await.message, "in time");
}

#[tokio::test]
async fn the_frame_limit_is_judged_on_the_prefix_exactly() {
    let srv = TestServer::start_with(|c| c.relay.max_frame_bytes = 200).await;
    let t1 = srv.login("1", "123").await;
    let (mut c, _) = srv.v2("1", &t1, Some(0)).await;
    // A frame of exactly the limit is accepted (here: a Message padded to 200 bytes).
    let mut m = Message::new("1", "9", "");
    m.create_time = 1.0;
    let base = Packet::from(m.clone()).to_json().unwrap().len();
    m.message = "p".repeat(200 - base);
    assert_eq!(Packet::from(m.clone()).to_json().unwrap().len(), 200);
    c.send(m).await.unwrap();
    assert!(matches!(recv_packet(&mut c).await, Packet::Ack(_)));
    // One more byte: too_large, judged on the prefix alone (no payload is sent), then close.
    drop(c);
    let mut s = raw_v2(&srv, &t1).await;
    s.write_all(&201u32.to_be_bytes()).await.unwrap();
    let mut c = improto::Client::new(s);
    assert!(matches!(recv_packet(&mut c).await, Packet::Registered(_)));
    expect_error(&mut c, ErrorCode::TooLarge).await;
    expect_eof(&mut c).await;
}

#[tokio::test]
async fn a_flood_past_the_rate_limit_is_refused_and_nothing_is_lost() {
    let (srv, t1, t2) = with_tokens(|c| {
        c.relay.rate_limit = 1;
        c.relay.rate_burst = 5;
    })
    .await;
    let (mut a, _) = srv.v2("1", &t1, None).await;
    for i in 0..30 {
        a.send(Message::new("1", "2", format!("f{i}")).with_id(format!("f{i}")))
            .await
            .unwrap();
    }
    let (mut acked, mut limited) = (Vec::new(), Vec::new());
    for _ in 0..30 {
        match recv_packet(&mut a).await {
            Packet::Ack(ack) => acked.push(ack.id.unwrap()),
            Packet::Error(e) if e.code == ErrorCode::RateLimited => limited.push(e.id.unwrap()),
            other => panic!("{other:?}"),
        }
    }
    assert!(!limited.is_empty(), "30 at once is past a burst of 5");
    assert!(acked.len() >= 5);
    // Exactly the acknowledged messages reach the receiver.
    let (mut b, head) = srv.v2("2", &t2, Some(0)).await;
    assert_eq!(head as usize, acked.len());
    for id in acked {
        assert_eq!(recv_message(&mut b).await.id.unwrap(), id);
    }
}

#[tokio::test]
async fn connections_per_user_and_in_all_are_limited() {
    let srv = TestServer::start_with(|c| c.relay.max_connections_per_user = 2).await;
    let t1 = srv.login("1", "123").await;
    let _one = srv.v2("1", &t1, None).await;
    let _two = srv.v2("1", &t1, None).await;
    let mut three = srv.raw().await;
    three.send(Regist::v2("1", &t1)).await.unwrap();
    expect_error(&mut three, ErrorCode::TooManyConnections).await;
    expect_eof(&mut three).await;

    let srv = TestServer::start_with(|c| c.relay.max_connections = 2).await;
    let t1 = srv.login("1", "123").await;
    let _one = srv.v2("1", &t1, None).await;
    let _two = srv.v2("1", &t1, None).await;
    let mut three = srv.raw().await;
    three.send(Regist::v2("1", &t1)).await.unwrap();
    expect_error(&mut three, ErrorCode::TooManyConnections).await;
    expect_eof(&mut three).await;
    // A v1 connection over the limit is closed without a frame.
    let mut v1 = srv.raw().await;
    v1.send(Regist::new("1")).await.unwrap();
    expect_eof(&mut v1).await;
}

#[tokio::test]
async fn past_the_refusal_backlog_a_connection_is_closed_without_an_answer() {
    let srv = TestServer::start_with(|c| {
        c.relay.max_connections = 1;
        c.relay.refusal_backlog = 1;
    })
    .await;
    let t1 = srv.login("1", "123").await;
    let _open = srv.v2("1", &t1, None).await;
    // Over the limit, it waits for its `Regist` in the backlog's one place...
    let mut waiting = srv.raw().await;
    // ...so this one, past the backlog, is closed without being told why.
    let mut late = srv.raw().await;
    late.send(Regist::v2("1", &t1)).await.unwrap();
    expect_eof(&mut late).await;
    waiting.send(Regist::v2("1", &t1)).await.unwrap();
    expect_error(&mut waiting, ErrorCode::TooManyConnections).await;
    expect_eof(&mut waiting).await;
}

#[tokio::test]
async fn a_connection_that_never_sends_regist_is_closed() {
    let srv =
        TestServer::start_with(|c| c.relay.regist_deadline = std::time::Duration::from_millis(500))
            .await;
    let mut silent = TcpStream::connect(srv.tcp()).await.unwrap();
    common::expect_closed(&mut silent).await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_ping_keeps_one_alive() {
    // A `Regist` deadline far beyond the wait: the idle timeout must apply from `Regist` on.
    let (srv, t1, _) = with_tokens(|c| {
        c.relay.idle_timeout = std::time::Duration::from_secs(3);
        c.relay.regist_deadline = std::time::Duration::from_secs(3600);
    })
    .await;
    let (mut idle, _) = srv.v2("1", &t1, None).await;
    let (mut busy, _) = srv.v2("1", &t1, None).await;
    // `busy` pings every 100 ms, well inside the timeout, for longer than the timeout.
    let pinger = tokio::spawn(async move {
        for _ in 0..45 {
            assert!(sync(&mut busy).await.is_empty());
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        busy
    });
    expect_eof(&mut idle).await;
    let mut busy = timeout(WAIT, pinger).await.unwrap().unwrap();
    assert!(sync(&mut busy).await.is_empty(), "still open");
}

#[tokio::test]
async fn a_slow_v2_reader_is_disconnected_and_resumes_from_its_last_seq() {
    let (srv, t1, t2) = with_tokens(|c| c.relay.send_queue = 8).await;
    // The reader registers, then never reads: its socket and queue fill up.
    let (mut slow, _) = srv.v2("2", &t2, None).await;
    let text = "z".repeat(4000);
    let (a, _) = srv.v2("1", &t1, None).await;
    let (mut tx, mut rx) = a.split();
    // 8 MB: more than the socket buffers hold.
    let total = 2000u64;
    let writer = tokio::spawn(async move {
        for i in 0..total {
            let m = Message::new("1", "2", text.clone()).with_id(i.to_string());
            tx.feed(m).await.unwrap();
        }
        tx.flush().await.unwrap();
        tx
    });
    for _ in 0..total {
        let ack = timeout(WAIT, rx.recv()).await.unwrap().unwrap();
        assert!(matches!(ack, Some(Packet::Ack(_))), "{ack:?}");
    }
    timeout(WAIT, writer).await.unwrap().unwrap();
    // The slow reader was cut off: what reached its socket ends before the last message.
    let mut read = 0;
    while let Ok(Some(_)) = timeout(WAIT, slow.recv()).await.expect("closed in time") {
        read += 1;
    }
    assert!(read < total, "the slow reader was disconnected");
    let (mut again, head) = srv.v2("2", &t2, Some(0)).await;
    assert_eq!(head, total);
    for seq in 1..=total {
        let m = recv_message(&mut again).await;
        assert_eq!((m.seq, m.id), (Some(seq), Some((seq - 1).to_string())));
    }
}

#[tokio::test]
async fn a_v1_sender_over_the_rate_limit_is_slowed_down_not_dropped() {
    // Two messages a second once the burst of one is spent (the probe in `client` spends
    // it): six messages take about three seconds to be read, where without the limit they
    // are all read at once.
    let srv = TestServer::start_with(|c| {
        c.relay.rate_limit = 2;
        c.relay.rate_burst = 1;
    })
    .await;
    let t2 = srv.login("2", "123").await;
    let (mut b, before) = srv.v2("2", &t2, Some(u64::MAX)).await;
    let (mut a, _rx) = srv.client("1").await.split();
    for i in 0..6 {
        a.feed(Message::new("1", "2", format!("v1-{i}")))
            .await
            .unwrap();
    }
    a.flush().await.unwrap();
    assert_eq!(recv_message(&mut b).await.message, "v1-0");
    // Slowed down: when the first has arrived, the others are not all stored yet.
    let (_, head) = srv.v2("2", &t2, Some(u64::MAX)).await;
    assert!(
        head - before < 6,
        "all six stored at once: the sender was not slowed down"
    );
    // Not dropped: every one arrives, in order.
    for i in 1..6 {
        assert_eq!(recv_message(&mut b).await.message, format!("v1-{i}"));
    }
}
