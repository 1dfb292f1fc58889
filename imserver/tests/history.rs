//! History and conversations over HTTP, both read from the caller's own stream, and the
//! `Read` packet that sets a conversation's read position.

mod common;

use common::{TestServer, device, expect_error, recv_packet, sync, three_users};
use improto::{Client, ErrorCode, Message, Packet};
use serde_json::{Value, json};

/// Sends `text` from `c`'s user to `to` and waits for the `Ack`; returns the seq.
async fn say(c: &mut Client, from: &str, to: &str, text: &str) -> u64 {
    c.send(Message::new(from, to, text).with_id(text))
        .await
        .unwrap();
    loop {
        match recv_packet(c).await {
            Packet::Ack(a) if a.id.as_deref() == Some(text) => return a.seq,
            Packet::Message(_) | Packet::Event(_) => {}
            other => panic!("{other:?}"),
        }
    }
}

async fn history(srv: &TestServer, who: &(String, String), query: &str) -> (u16, Value) {
    srv.get_as(&format!("/history/{query}"), &who.1).await
}

fn texts(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap().to_owned())
        .collect()
}

fn seqs(page: &Value) -> Vec<u64> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn history_pages_back_through_both_directions_without_overlap_or_gap() {
    let (srv, [a, b, c]) = three_users().await;
    let (mut ad, mut bd, mut cd) = (
        device(&srv, &a).await,
        device(&srv, &b).await,
        device(&srv, &c).await,
    );
    let mut all = Vec::new();
    for i in 0..25 {
        let text = format!("m{i:02}");
        if i % 2 == 0 {
            say(&mut ad, &a.0, &b.0, &text).await;
        } else {
            say(&mut bd, &b.0, &a.0, &text).await;
        }
        all.push(text);
        // Another conversation of a's in between, which a's history with b leaves out.
        say(&mut cd, &c.0, &a.0, &format!("c{i}")).await;
    }
    let (status, newest) = history(&srv, &a, &format!("{}?limit=10", b.0)).await;
    assert_eq!(status, 200, "{newest}");
    assert_eq!(texts(&newest), all[15..]);
    assert_eq!(newest["more"], json!(true));
    let first = &newest["messages"][0];
    assert_eq!(first["sender"], json!(b.0));
    assert_eq!(first["receiver"], json!(a.0));
    assert_eq!(first["id"], json!("m15"));
    assert!(first["createTime"].as_f64().unwrap() > 1.7e9);
    let s = seqs(&newest);
    assert!(s.windows(2).all(|w| w[0] < w[1]), "ascending: {s:?}");

    let older = history(&srv, &a, &format!("{}?limit=10&before={}", b.0, s[0]))
        .await
        .1;
    assert_eq!(texts(&older), all[5..15]);
    assert_eq!(older["more"], json!(true));
    let oldest = history(
        &srv,
        &a,
        &format!("{}?limit=10&before={}", b.0, seqs(&older)[0]),
    )
    .await
    .1;
    assert_eq!(texts(&oldest), all[..5]);
    assert_eq!(oldest["more"], json!(false));

    // b's view of the same conversation is in b's own positions, and c sees none of it.
    let bs = history(&srv, &b, &format!("{}?limit=200", a.0)).await.1;
    assert_eq!(texts(&bs), all);
    assert_ne!(
        seqs(&bs),
        seqs(&history(&srv, &a, &format!("{}?limit=200", b.0)).await.1)
    );
    let cs = history(&srv, &c, &a.0).await.1;
    assert!(texts(&cs).iter().all(|t| t.starts_with('c')));
    assert_eq!(cs["messages"].as_array().unwrap().len(), 25);
}

#[tokio::test]
async fn more_is_true_exactly_when_older_messages_exist() {
    let (srv, [a, b, _]) = three_users().await;
    let mut ad = device(&srv, &a).await;
    for i in 0..5 {
        say(&mut ad, &a.0, &b.0, &format!("x{i}")).await;
    }
    let exact = history(&srv, &a, &format!("{}?limit=5", b.0)).await.1;
    assert_eq!((texts(&exact).len(), &exact["more"]), (5, &json!(false)));
    let short = history(&srv, &a, &format!("{}?limit=4", b.0)).await.1;
    assert_eq!((texts(&short).len(), &short["more"]), (4, &json!(true)));
    let empty = history(&srv, &a, &format!("{}?before=1", b.0)).await.1;
    assert_eq!(empty, json!({"messages": [], "more": false}));
    let (_, none) = history(&srv, &b, &srv.user("Dee").await.0).await;
    assert_eq!(none, json!({"messages": [], "more": false}));
}

#[tokio::test]
async fn a_page_stays_correct_while_messages_arrive() {
    let (srv, [a, b, _]) = three_users().await;
    let (mut ad, mut bd) = (device(&srv, &a).await, device(&srv, &b).await);
    for i in 0..10 {
        say(&mut ad, &a.0, &b.0, &format!("old{i}")).await;
    }
    let first = history(&srv, &b, &format!("{}?limit=4", a.0)).await.1;
    assert_eq!(texts(&first), ["old6", "old7", "old8", "old9"]);
    // New messages both ways, then the next page back from where the first began.
    for i in 0..5 {
        say(&mut ad, &a.0, &b.0, &format!("new{i}")).await;
        say(&mut bd, &b.0, &a.0, &format!("reply{i}")).await;
    }
    let path = format!("{}?limit=4&before={}", a.0, seqs(&first)[0]);
    let next = history(&srv, &b, &path).await.1;
    assert_eq!(texts(&next), ["old2", "old3", "old4", "old5"]);
    assert_eq!(next["more"], json!(true));
    // And the newest page shows the new ones.
    let newest = history(&srv, &b, &format!("{}?limit=3", a.0)).await.1;
    assert_eq!(texts(&newest), ["reply3", "new4", "reply4"]);
}

#[tokio::test]
async fn history_holds_every_device_s_messages_but_no_events() {
    let srv = TestServer::start().await; // open mode: v1 devices too
    let t1 = srv.login("1", "123").await;
    let t2 = srv.login("2", "123").await;
    let mut two = device(&srv, &("2".into(), t2.clone())).await;
    let mut v1 = srv.connect("1").await;
    common::say(&mut v1, "1", "2", "from v1").await;
    assert_eq!(common::recv_message(&mut two).await.message, "from v1");
    let mut v2 = device(&srv, &("1".into(), t1.clone())).await;
    say(&mut v2, "1", "2", "from v2").await;
    say(&mut two, "2", "1", "from 2").await;
    // A friend request (an event in 1's stream) is no message.
    let other = srv.user("Other").await;
    srv.post_as("/friends/requests", &other.1, json!({"user": "1"}))
        .await;
    let page = history(&srv, &("1".into(), t1), "2").await.1;
    assert_eq!(texts(&page), ["from v1", "from v2", "from 2"]);
}

#[tokio::test]
async fn history_refuses_bad_parameters_and_strangers() {
    let (srv, [a, b, _]) = three_users().await;
    for q in ["limit=0", "limit=201", "limit=ten", "before=-3", "before=x"] {
        let (status, body) = history(&srv, &a, &format!("{}?{q}", b.0)).await;
        assert_eq!(status, 400, "{q}: {body}");
    }
    let out_of_range = json!({"msg": "Out of range"});
    for peer in ["999", "0", "abc", &format!("0{}", b.0)] {
        assert_eq!(
            history(&srv, &a, peer).await,
            (400, out_of_range.clone()),
            "{peer}"
        );
    }
    assert_eq!(srv.get(&format!("/history/{}", b.0)).await.0, 401);
    assert_eq!(srv.get("/conversations").await.0, 401);
    assert_eq!(srv.get_as("/conversations?limit=0", &a.1).await.0, 400);
}

#[tokio::test]
async fn conversations_list_the_latest_with_unread_counts_that_read_clears() {
    let (srv, [a, b, c]) = three_users().await;
    let (mut ad, mut bd, mut cd) = (
        device(&srv, &a).await,
        device(&srv, &b).await,
        device(&srv, &c).await,
    );
    say(&mut bd, &b.0, &a.0, "b1").await;
    say(&mut bd, &b.0, &a.0, "b2").await;
    say(&mut ad, &a.0, &b.0, "a1").await;
    say(&mut bd, &b.0, &a.0, "b3").await;
    say(&mut cd, &c.0, &a.0, "c1").await;
    let (status, list) = srv.get_as("/conversations", &a.1).await;
    assert_eq!(status, 200, "{list}");
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    // Most recent first: c's, then b's.
    assert_eq!(
        (&list[0]["peer"], &list[0]["name"], &list[0]["unread"]),
        (&json!(c.0), &json!("Cid"), &json!(1))
    );
    assert_eq!(list[0]["last"]["message"], json!("c1"));
    assert_eq!(list[0]["lastSeq"], list[0]["last"]["seq"]);
    let bob = &list[1];
    assert_eq!(
        (&bob["peer"], &bob["last"]["message"], &bob["unread"]),
        (&json!(b.0), &json!("b3"), &json!(3))
    );
    let b2 = history(&srv, &a, &format!("{}?limit=200", b.0)).await.1["messages"][1]["seq"]
        .as_u64()
        .unwrap();

    // Read up to b2: only b3 (from b, after it) is unread; a's own a1 never counts.
    ad.read(&b.0, b2).await.unwrap();
    sync(&mut ad).await;
    let unread = |list: &Value, peer: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|c| c["peer"] == json!(peer))
            .unwrap()["unread"]
            .clone()
    };
    let now = srv.get_as("/conversations", &a.1).await.1;
    assert_eq!(unread(&now, &b.0), json!(1));
    // Positions only move forward, and are the user's, for all devices.
    ad.read(&b.0, 1).await.unwrap();
    sync(&mut ad).await;
    assert_eq!(
        unread(&srv.get_as("/conversations", &a.1).await.1, &b.0),
        json!(1)
    );
    let mut other_device = device(&srv, &a).await;
    other_device.read(&b.0, u64::MAX).await.unwrap();
    sync(&mut other_device).await;
    let cleared = srv.get_as("/conversations", &a.1).await.1;
    assert_eq!(
        (unread(&cleared, &b.0), unread(&cleared, &c.0)),
        (json!(0), json!(1))
    );
    // A new message from b is unread again.
    say(&mut bd, &b.0, &a.0, "b4").await;
    assert_eq!(
        unread(&srv.get_as("/conversations", &a.1).await.1, &b.0),
        json!(1)
    );
    // `limit` keeps the most recent.
    let one = srv.get_as("/conversations?limit=1", &a.1).await.1;
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(one[0]["peer"], json!(b.0));
}

#[tokio::test]
async fn a_read_of_a_malformed_peer_is_a_bad_packet() {
    let (srv, [a, _, _]) = three_users().await;
    let mut ad = device(&srv, &a).await;
    ad.read("007", 1).await.unwrap();
    let e = expect_error(&mut ad, ErrorCode::BadPacket).await;
    assert!(e.message.contains("peer"), "{}", e.message);
    assert!(sync(&mut ad).await.is_empty(), "the connection stays open");
}
