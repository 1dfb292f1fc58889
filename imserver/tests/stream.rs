//! The per-user stream: every message is in its receiver's stream and, as a copy, in its
//! sender's; a user's devices all sync from it, each with its own `lastSeq`; `Ack` names the
//! copy's position in the sender's own stream. And one canonical form per user id.

mod common;

use std::time::Duration;

use common::{
    TestServer, WAIT, assert_next_is_marker, expect_error, recv_message, recv_packet, say, sync,
};
use improto::{Ack, Client, ErrorCode, Message, Packet, Regist};
use tokio::time::timeout;

/// A server in token mode, and tokens for users 1 and 2.
async fn secure() -> (TestServer, String, String) {
    let srv = TestServer::start_secure().await;
    let t1 = srv.login("1", "123").await;
    let t2 = srv.login("2", "123").await;
    (srv, t1, t2)
}

/// A device of `user` that has seen everything stored so far: it resumes at the head.
async fn device(srv: &TestServer, user: &str, token: &str) -> (Client, u64) {
    srv.v2(user, token, Some(u64::MAX)).await
}

/// Sends `text` (client id `id`) from 1 to 2 on `c` and returns the seq its `Ack` names.
async fn send(c: &mut Client, id: &str, text: &str) -> u64 {
    c.send(Message::new("1", "2", text).with_id(id))
        .await
        .unwrap();
    match recv_packet(c).await {
        Packet::Ack(a) if a.id.as_deref() == Some(id) => a.seq,
        other => panic!("expected the Ack of {id}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_message_is_copied_to_its_senders_stream_at_the_seq_its_ack_names() {
    let (srv, t1, t2) = secure().await;
    let (mut b, b_head) = device(&srv, "2", &t2).await;
    let (mut a, a_head) = device(&srv, "1", &t1).await;
    let seq = send(&mut a, "c-1", "hi").await;
    assert_eq!(seq, a_head + 1, "the next position of the sender's stream");
    // The receiver has it at its own next position: a user only sees their own positions.
    let got = recv_message(&mut b).await;
    assert_eq!((got.message.as_str(), got.seq), ("hi", Some(b_head + 1)));
    // The sending device did not get its own copy live; Pong proves nothing is on its way.
    assert!(sync(&mut a).await.is_empty());
    // Another device of the sender, resuming from before, has the copy, id and all.
    let (mut laptop, head) = srv.v2("1", &t1, Some(a_head)).await;
    assert_eq!(head, seq, "Registered tells the head of the whole stream");
    let copy = recv_message(&mut laptop).await;
    assert_eq!(
        (
            copy.sender.as_str(),
            copy.receiver.as_str(),
            copy.message.as_str()
        ),
        ("1", "2", "hi")
    );
    assert_eq!((copy.id.as_deref(), copy.seq), (Some("c-1"), Some(seq)));
}

#[tokio::test]
async fn two_devices_of_one_sender_each_see_the_others_sends() {
    let (srv, t1, _) = secure().await;
    let (mut phone, _) = device(&srv, "1", &t1).await;
    let (mut desktop, _) = device(&srv, "1", &t1).await;
    let from_phone = send(&mut phone, "p-1", "from the phone").await;
    let m = recv_message(&mut desktop).await;
    assert_eq!(
        (m.message.as_str(), m.seq),
        ("from the phone", Some(from_phone))
    );
    let from_desktop = send(&mut desktop, "d-1", "from the desktop").await;
    assert_eq!(from_desktop, from_phone + 1);
    let m = recv_message(&mut phone).await;
    assert_eq!(
        (m.message.as_str(), m.seq),
        ("from the desktop", Some(from_desktop))
    );
    // Neither got its own copy.
    assert!(sync(&mut phone).await.is_empty());
    assert!(sync(&mut desktop).await.is_empty());
}

#[tokio::test]
async fn the_sending_device_sees_its_stream_without_gaps() {
    let (srv, t1, t2) = secure().await;
    let (phone, start) = device(&srv, "1", &t1).await;
    let (mut desktop, _) = device(&srv, "1", &t1).await;
    let (mut other, _) = device(&srv, "2", &t2).await;
    let (mut tx, mut rx) = phone.split();
    // The phone's own messages, the desktop's and user 2's, all at once.
    let phone_sends = tokio::spawn(async move {
        for i in 0..200 {
            let m = Message::new("1", "2", "p").with_id(format!("p-{i}"));
            tx.feed(m).await.unwrap();
        }
        tx.flush().await.unwrap();
        tx
    });
    for i in 0..100 {
        let m = Message::new("1", "2", "d").with_id(format!("d-{i}"));
        desktop.send(m).await.unwrap();
        other
            .send(Message::new("2", "1", "o").with_id(format!("o-{i}")))
            .await
            .unwrap();
    }
    let mut tx = timeout(WAIT, phone_sends).await.unwrap().unwrap();
    // Everything the others sent is stored once the desktop's and 2's Pongs are back.
    sync(&mut desktop).await;
    sync(&mut other).await;
    tx.ping().await.unwrap();
    // The phone counts each Ack as the entry it stands for: every seq after `start`, once,
    // in order.
    let mut expected = start + 1;
    loop {
        let packet = timeout(WAIT, rx.recv()).await.unwrap().unwrap().unwrap();
        let seq = match packet {
            Packet::Ack(a) => a.seq,
            Packet::Message(m) => m.seq.unwrap(),
            Packet::Pong => break,
            other => panic!("{other:?}"),
        };
        assert_eq!(seq, expected, "a gap or a reordering");
        expected += 1;
    }
    assert_eq!(expected - start - 1, 200 + 100 + 100);
}

#[tokio::test]
async fn v1_devices_never_get_copies_and_v2_devices_get_the_v1_ones() {
    let srv = TestServer::start().await; // open: v1 without a token
    let t1 = srv.login("1", "123").await;
    let mut old = srv.client("1").await;
    let (mut new, _) = device(&srv, "1", &t1).await;
    // The v1 device's message reaches the v2 device as a copy...
    say(&mut old, "1", "2", "sent on v1").await;
    let copy = recv_message(&mut new).await;
    assert_eq!(
        (copy.sender.as_str(), copy.message.as_str()),
        ("1", "sent on v1")
    );
    // ...and the v2 device's message never reaches the v1 device: the next thing it gets is
    // a message to it.
    send(&mut new, "n-1", "sent on v2").await;
    assert_next_is_marker(&srv, "2", &mut old, "1").await;
}

#[tokio::test]
async fn a_v1_device_written_past_a_copy_counts_it_as_delivered() {
    let srv = TestServer::start().await;
    let t1 = srv.login("1", "123").await;
    let _reader = srv.client("1").await;
    let mut writer = srv.client("1").await;
    // The copy goes to the reader (the writer sent it), which is not written it but passes
    // it: the user's acknowledged position moves past it. A v2 device without `lastSeq`,
    // which replays from that position, then has nothing to replay.
    say(&mut writer, "1", "2", "passed over").await;
    timeout(WAIT, async {
        loop {
            let (mut fresh, _) = srv.v2("1", &t1, None).await;
            let replayed = sync(&mut fresh).await;
            if replayed.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the acknowledged position passes the copy");
}

#[tokio::test]
async fn a_retry_after_a_restart_gets_the_same_ack_and_is_stored_once() {
    let (mut srv, t1, t2) = secure().await;
    let (mut a, a_head) = device(&srv, "1", &t1).await;
    let first = send(&mut a, "r-1", "once").await;
    drop(a);
    srv.restart().await;
    let t1 = srv.login("1", "123").await;
    let (mut a, _) = device(&srv, "1", &t1).await;
    assert_eq!(send(&mut a, "r-1", "once").await, first);
    send(&mut a, "r-2", "marker").await;
    // Once in each stream.
    let (mut sender, _) = srv.v2("1", &t1, Some(a_head)).await;
    let ids: Vec<_> = sync(&mut sender)
        .await
        .into_iter()
        .map(|p| match p {
            Packet::Message(m) => m.id.unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, ["r-1", "r-2"]);
    let (mut receiver, _) = srv.v2("2", &t2, Some(0)).await;
    let texts: Vec<_> = sync(&mut receiver)
        .await
        .into_iter()
        .map(|p| match p {
            Packet::Message(m) => m.message,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(texts, ["once", "marker"]);
}

#[tokio::test]
async fn an_acknowledgement_covers_copies_and_messages_alike() {
    let (srv, t1, t2) = secure().await;
    let (mut b, _) = device(&srv, "2", &t2).await;
    let (mut a, _) = device(&srv, "1", &t1).await;
    send(&mut a, "a-1", "to 2").await;
    recv_message(&mut b).await;
    b.send(Message::new("2", "1", "to 1")).await.unwrap();
    let acked = match recv_packet(&mut b).await {
        Packet::Ack(ack) => ack.seq,
        other => panic!("{other:?}"),
    };
    // 2 has processed its whole stream (the message and its own copy): a device without
    // `lastSeq` has nothing to replay.
    b.send(Ack::new(acked)).await.unwrap();
    sync(&mut b).await;
    let (mut fresh, head) = srv.v2("2", &t2, None).await;
    assert_eq!(head, acked);
    assert!(sync(&mut fresh).await.is_empty());
}

#[tokio::test]
async fn ids_have_one_canonical_form_on_every_edge() {
    let (srv, t1, t2) = secure().await;
    // A v2 `Regist` as "007"-style ids is refused, and the connection may register properly.
    let t7 = {
        let (id, token) = srv.user("Seven").await;
        assert_eq!(id, "3");
        token
    };
    let mut c = srv.raw().await;
    c.send(Regist::v2("003", &t7)).await.unwrap();
    let e = expect_error(&mut c, ErrorCode::BadPacket).await;
    assert!(e.message.contains("003"), "{}", e.message);
    c.handshake(Regist::v2("3", &t7)).await.unwrap();
    // A receiver written as "002" is not user 2: refused, and nothing reaches 2.
    let (mut b, _) = device(&srv, "2", &t2).await;
    let (mut a, _) = device(&srv, "1", &t1).await;
    a.send(Message::new("1", "002", "wrong").with_id("w"))
        .await
        .unwrap();
    let e = expect_error(&mut a, ErrorCode::BadPacket).await;
    assert_eq!(e.id.as_deref(), Some("w"));
    assert!(e.message.contains("receiver"), "{}", e.message);
    send(&mut a, "ok", "right").await;
    assert_eq!(recv_message(&mut b).await.message, "right");
    // Over HTTP, too.
    let (status, body) = srv.get_as("/profile/002", &t1).await;
    assert_eq!(
        (status, body),
        (400, serde_json::json!({"msg": "Out of range"}))
    );
}

#[tokio::test]
async fn in_open_mode_a_non_canonical_id_is_no_inbox_of_its_own() {
    let srv = TestServer::start().await;
    // A v1 client registering as "007" is refused (it cannot be told): its messages go
    // nowhere, and messages to "007" reach neither "007" nor 7.
    let mut odd = srv.connect("007").await;
    say(&mut odd, "007", "2", "from nobody").await;
    let mut seven = srv.client("7").await;
    let mut one = srv.client("1").await;
    say(&mut one, "1", "007", "to nobody").await;
    assert_next_is_marker(&srv, "1", &mut seven, "7").await;
    let mut two = srv.client("2").await;
    assert_next_is_marker(&srv, "1", &mut two, "2").await;
}
