//! Read receipts: a `Read` tells the senders of the newly read messages, each in the terms of
//! their own stream, in 1:1 conversations and in groups; `--read-receipts off` tells nobody.

mod common;

use common::{TestServer, device, recv_packet, send_for_ack, sync, three_users};
use improto::{Client, EventKind, Packet};
use serde_json::json;

type Account = (String, String);

/// The seqs `who`'s stream gave the messages with these texts, read from the start.
async fn seqs_of(srv: &TestServer, who: &Account, texts: &[&str]) -> Vec<u64> {
    let (mut c, head) = srv.v2(&who.0, &who.1, Some(0)).await;
    let mut found = vec![0; texts.len()];
    for _ in 0..head {
        match recv_packet(&mut c).await {
            Packet::Message(m) => {
                if let Some(i) = texts.iter().position(|t| *t == m.message) {
                    found[i] = m.seq.unwrap();
                }
            }
            Packet::Event(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    found
}

/// The receipts (events of kind `read`) that come before a `Pong`.
async fn receipts(c: &mut Client) -> Vec<(String, Option<String>, u64)> {
    sync(c)
        .await
        .into_iter()
        .filter_map(|p| match p {
            Packet::Event(e) if e.kind == EventKind::Read => {
                Some((e.user.unwrap(), e.group, e.up_to.unwrap()))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_receipt_names_the_senders_own_seq_when_the_streams_interleave() {
    let (srv, [a, b, c]) = three_users().await;
    let mut a_dev = device(&srv, &a).await;
    let mut c_dev = device(&srv, &c).await;
    // a's stream and b's interleave differently: a also talks with c.
    let m1 = send_for_ack(&mut a_dev, &a.0, &b.0, "m1").await;
    send_for_ack(&mut c_dev, &c.0, &a.0, "from c").await;
    send_for_ack(&mut a_dev, &a.0, &c.0, "to c").await;
    let m2 = send_for_ack(&mut a_dev, &a.0, &b.0, "m2").await;
    let m3 = send_for_ack(&mut a_dev, &a.0, &b.0, "m3").await;
    assert_eq!((m1, m2, m3), (1, 4, 5), "seqs in a's own stream");
    let b_seqs = seqs_of(&srv, &b, &["m1", "m2", "m3"]).await;
    assert_eq!(b_seqs, [1, 2, 3]);

    let mut b_dev = device(&srv, &b).await;
    b_dev.read(&a.0, b_seqs[1]).await.unwrap();
    sync(&mut b_dev).await;
    assert_eq!(receipts(&mut a_dev).await, [(b.0.clone(), None, m2)]);
    // Reading again, or less, tells nothing more; reading on tells the rest.
    b_dev.read(&a.0, b_seqs[1]).await.unwrap();
    b_dev.read(&a.0, b_seqs[0]).await.unwrap();
    sync(&mut b_dev).await;
    assert_eq!(receipts(&mut a_dev).await, []);
    b_dev.read(&a.0, b_seqs[2]).await.unwrap();
    sync(&mut b_dev).await;
    assert_eq!(receipts(&mut a_dev).await, [(b.0.clone(), None, m3)]);
    // A receipt is an entry of a's stream: stored and replayed.
    let (mut again, _) = srv.v2(&a.0, &a.1, Some(m3)).await;
    assert_eq!(receipts(&mut again).await.len(), 2);
}

#[tokio::test]
async fn reading_only_ones_own_messages_tells_nobody() {
    let (srv, [a, b, _]) = three_users().await;
    let mut a_dev = device(&srv, &a).await;
    let mut b_dev = device(&srv, &b).await;
    let mine = send_for_ack(&mut b_dev, &b.0, &a.0, "from b").await;
    b_dev.read(&a.0, mine).await.unwrap();
    sync(&mut b_dev).await;
    let before = sync(&mut a_dev).await;
    assert!(
        before.iter().all(|p| matches!(p, Packet::Message(_))),
        "{before:?}"
    );
}

#[tokio::test]
async fn in_a_group_each_sender_of_newly_read_messages_is_told_in_their_own_terms() {
    let (srv, [a, b, c]) = three_users().await;
    let (status, g) = srv
        .post_as(
            "/groups",
            &a.1,
            json!({"name": "Trip", "members": [b.0, c.0]}),
        )
        .await;
    assert_eq!(status, 200, "{g}");
    let g = g["group"].as_str().unwrap().to_owned();
    let mut a_dev = device(&srv, &a).await;
    let mut c_dev = device(&srv, &c).await;
    let a1 = send_for_ack(&mut a_dev, &a.0, &g, "a1").await;
    let c1 = send_for_ack(&mut c_dev, &c.0, &g, "c1").await;
    let a2 = send_for_ack(&mut a_dev, &a.0, &g, "a2").await;
    let c2 = send_for_ack(&mut c_dev, &c.0, &g, "c2").await;
    let b_seqs = seqs_of(&srv, &b, &["a1", "c1", "a2", "c2"]).await;
    let mut b_dev = device(&srv, &b).await;
    // b reads up to a2: a is told a2 (its own seq), c is told c1.
    b_dev.read(&g, b_seqs[2]).await.unwrap();
    sync(&mut b_dev).await;
    assert_eq!(
        receipts(&mut a_dev).await,
        [(b.0.clone(), Some(g.clone()), a2)]
    );
    assert_eq!(
        receipts(&mut c_dev).await,
        [(b.0.clone(), Some(g.clone()), c1)]
    );
    // Reading on to c2 tells only c.
    b_dev.read(&g, b_seqs[3]).await.unwrap();
    sync(&mut b_dev).await;
    assert_eq!(
        receipts(&mut c_dev).await,
        [(b.0.clone(), Some(g.clone()), c2)]
    );
    assert_eq!(receipts(&mut a_dev).await, []);
    let _ = a1;
}

#[tokio::test]
async fn with_read_receipts_off_positions_move_and_nobody_is_told() {
    let srv = TestServer::start_with(|c| {
        c.auth.auth = imserver::config::AuthMode::Token;
        c.store.read_receipts = imserver::config::Switch::Off;
    })
    .await;
    let a = srv.user("Ann").await;
    let b = srv.user("Bob").await;
    let mut a_dev = device(&srv, &a).await;
    send_for_ack(&mut a_dev, &a.0, &b.0, "m1").await;
    let mut b_dev = device(&srv, &b).await;
    let (_, list) = srv.get_as("/conversations", &b.1).await;
    assert_eq!(list[0]["unread"], json!(1));
    b_dev.read(&a.0, 1).await.unwrap();
    sync(&mut b_dev).await;
    let (_, list) = srv.get_as("/conversations", &b.1).await;
    assert_eq!(list[0]["unread"], json!(0));
    assert_eq!(receipts(&mut a_dev).await, []);
}

#[tokio::test]
async fn a_sender_who_blocks_the_reader_is_not_told() {
    let (srv, [a, b, c]) = three_users().await;
    let (status, g) = srv
        .post_as(
            "/groups",
            &a.1,
            json!({"name": "Club", "members": [b.0, c.0]}),
        )
        .await;
    assert_eq!(status, 200, "{g}");
    let g = g["group"].as_str().unwrap().to_owned();
    let mut a_dev = device(&srv, &a).await;
    let mut c_dev = device(&srv, &c).await;
    send_for_ack(&mut a_dev, &a.0, &g, "a1").await;
    let c1 = send_for_ack(&mut c_dev, &c.0, &g, "c1").await;
    let (status, _) = srv
        .post_as(&format!("/blocks/{}", b.0), &a.1, json!({}))
        .await;
    assert_eq!(status, 200);
    let b_seqs = seqs_of(&srv, &b, &["a1", "c1"]).await;
    let mut b_dev = device(&srv, &b).await;
    b_dev.read(&g, b_seqs[1]).await.unwrap();
    sync(&mut b_dev).await;
    assert_eq!(
        receipts(&mut c_dev).await,
        [(b.0.clone(), Some(g.clone()), c1)]
    );
    assert_eq!(receipts(&mut a_dev).await, []);
}
