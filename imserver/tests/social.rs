//! Friends, friend requests and blocking over HTTP, the events they put in the users'
//! streams, and `--relay-policy friends`.

mod common;

use common::{
    TestServer, WAIT, assert_next_is_marker, device, expect_error, recv_message, recv_packet, say,
    sync, three_users,
};
use improto::{Client, ErrorCode, EventKind, Message, Packet};
use serde_json::json;
use tokio::time::timeout;

/// The next packet, which must be an event of `kind` about `user`; returns its seq.
async fn expect_event(c: &mut Client, kind: EventKind, user: &str) -> improto::Event {
    match recv_packet(c).await {
        Packet::Event(e) if e.kind == kind && e.user.as_deref() == Some(user) => {
            assert!(e.seq.is_some(), "events carry their seq");
            e
        }
        other => panic!("expected {kind} about {user}, got {other:?}"),
    }
}

async fn ask(
    srv: &TestServer,
    from: &(String, String),
    to: &str,
    message: &str,
) -> (u16, serde_json::Value) {
    srv.post_as(
        "/friends/requests",
        &from.1,
        json!({"user": to, "message": message}),
    )
    .await
}

async fn friends_of(srv: &TestServer, who: &(String, String)) -> serde_json::Value {
    let (status, list) = srv.get_as(&format!("/list/{}", who.0), &who.1).await;
    assert_eq!(status, 200, "{list}");
    list
}

#[tokio::test]
async fn a_request_is_an_event_for_the_asked_and_acceptance_tells_both() {
    let (srv, [a, b, _]) = three_users().await;
    let mut a_dev = device(&srv, &a).await;
    let mut b_dev = device(&srv, &b).await;
    assert_eq!(
        ask(&srv, &a, &b.0, "hi, it's Ann").await,
        (200, json!({"status": "pending"}))
    );
    let e = expect_event(&mut b_dev, EventKind::FriendRequest, &a.0).await;
    assert_eq!(
        (e.name.as_deref(), e.message.as_deref()),
        (Some("Ann"), Some("hi, it's Ann"))
    );
    // Both sides see the request, with its time.
    let (_, b_view) = srv.get_as("/friends/requests", &b.1).await;
    assert_eq!(b_view["outgoing"], json!([]));
    let incoming = &b_view["incoming"][0];
    assert_eq!(
        (&incoming["user"], &incoming["name"], &incoming["message"]),
        (&json!(a.0), &json!("Ann"), &json!("hi, it's Ann"))
    );
    assert!(incoming["at"].as_i64().unwrap() > 1_700_000_000);
    let (_, a_view) = srv.get_as("/friends/requests", &a.1).await;
    assert_eq!(a_view["outgoing"][0]["user"], json!(b.0));
    assert_eq!(a_view["incoming"], json!([]));

    let (status, _) = srv
        .post_as(
            &format!("/friends/requests/{}/accept", a.0),
            &b.1,
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    expect_event(&mut a_dev, EventKind::FriendAccepted, &b.0).await;
    expect_event(&mut b_dev, EventKind::FriendAccepted, &a.0).await;
    assert_eq!(
        friends_of(&srv, &a).await,
        json!([{"user": b.0, "name": "Bob"}])
    );
    assert_eq!(
        friends_of(&srv, &b).await,
        json!([{"user": a.0, "name": "Ann"}])
    );
    let (_, after) = srv.get_as("/friends/requests", &b.1).await;
    assert_eq!(after, json!({"incoming": [], "outgoing": []}));
    // Asking a friend again changes nothing.
    assert_eq!(
        ask(&srv, &b, &a.0, "").await,
        (200, json!({"status": "accepted"}))
    );
    assert!(sync(&mut a_dev).await.is_empty());
}

#[tokio::test]
async fn a_mutual_request_is_an_acceptance() {
    let (srv, [a, b, _]) = three_users().await;
    assert_eq!(
        ask(&srv, &a, &b.0, "").await.1,
        json!({"status": "pending"})
    );
    let mut a_dev = device(&srv, &a).await;
    assert_eq!(
        ask(&srv, &b, &a.0, "").await.1,
        json!({"status": "accepted"})
    );
    expect_event(&mut a_dev, EventKind::FriendAccepted, &b.0).await;
    assert_eq!(
        friends_of(&srv, &b).await,
        json!([{"user": a.0, "name": "Ann"}])
    );
}

#[tokio::test]
async fn bad_requests_are_refused_with_clear_errors() {
    let (srv, [a, b, _]) = three_users().await;
    let out_of_range = json!({"msg": "Out of range"});
    assert_eq!(ask(&srv, &a, &a.0, "").await.0, 400, "yourself");
    assert_eq!(ask(&srv, &a, "999", "").await, (400, out_of_range.clone()));
    assert_eq!(
        ask(&srv, &a, &format!("0{}", b.0), "").await,
        (400, out_of_range)
    );
    let long = "é".repeat(501);
    let (status, body) = ask(&srv, &a, &b.0, &long).await;
    assert_eq!(status, 400);
    assert!(body["msg"].as_str().unwrap().contains("500"), "{body}");
    assert_eq!(
        ask(&srv, &a, &b.0, &"é".repeat(500)).await.0,
        200,
        "500 characters are fine"
    );
    for bad in [
        json!([1]),
        json!({"user": 4}),
        json!({"message": "no user"}),
        json!("4"),
    ] {
        let (status, body) = srv.post_as("/friends/requests", &a.1, bad.clone()).await;
        assert_eq!(status, 400, "{bad} -> {body}");
    }
    // Without a valid token, in any mode.
    let (status, _) = srv
        .post_as("/friends/requests", "bogus", json!({"user": b.0}))
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn friend_requests_are_limited_per_user_per_hour() {
    let srv = TestServer::start_with(|c| {
        c.auth.auth = imserver::config::AuthMode::Token;
        c.social.friend_request_limit = 2;
    })
    .await;
    let a = srv.user("Ann").await;
    let b = srv.user("Bob").await;
    let c = srv.user("Cid").await;
    let d = srv.user("Dee").await;
    assert_eq!(ask(&srv, &a, &b.0, "").await.0, 200);
    assert_eq!(ask(&srv, &a, &c.0, "").await.0, 200);
    let r = srv
        .http
        .post(srv.url("/friends/requests"))
        .bearer_auth(&a.1)
        .json(&json!({"user": d.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    // Another user's allowance is their own.
    assert_eq!(ask(&srv, &b, &d.0, "").await.0, 200);
}

#[tokio::test]
async fn declining_is_silent_and_answers_need_a_request() {
    let (srv, [a, b, _]) = three_users().await;
    let no_request = json!({"msg": "No such request"});
    for verb in ["accept", "decline"] {
        let path = format!("/friends/requests/{}/{verb}", a.0);
        assert_eq!(
            srv.post_as(&path, &b.1, json!({})).await,
            (404, no_request.clone())
        );
    }
    ask(&srv, &a, &b.0, "").await;
    let mut a_dev = device(&srv, &a).await;
    let path = format!("/friends/requests/{}/decline", a.0);
    assert_eq!(srv.post_as(&path, &b.1, json!({})).await.0, 200);
    assert!(sync(&mut a_dev).await.is_empty(), "the asker is not told");
    let (_, view) = srv.get_as("/friends/requests", &a.1).await;
    assert_eq!(view, json!({"incoming": [], "outgoing": []}));
    assert_eq!(friends_of(&srv, &a).await, json!([]));
    // Declined is gone: a second answer finds nothing.
    assert_eq!(srv.post_as(&path, &b.1, json!({})).await.0, 404);
}

#[tokio::test]
async fn unfriending_ends_it_on_both_sides_and_tells_the_other() {
    let (srv, [a, b, _]) = three_users().await;
    ask(&srv, &a, &b.0, "").await;
    ask(&srv, &b, &a.0, "").await;
    let mut a_dev = device(&srv, &a).await;
    let mut b_dev = device(&srv, &b).await;
    assert_eq!(
        srv.delete_as(&format!("/friends/{}", b.0), &a.1).await.0,
        200
    );
    expect_event(&mut b_dev, EventKind::FriendRemoved, &a.0).await;
    assert!(
        sync(&mut a_dev).await.is_empty(),
        "only the other side is told"
    );
    assert_eq!(friends_of(&srv, &a).await, json!([]));
    assert_eq!(friends_of(&srv, &b).await, json!([]));
    assert_eq!(
        srv.delete_as(&format!("/friends/{}", b.0), &a.1).await,
        (404, json!({"msg": "Not friends"}))
    );
}

#[tokio::test]
async fn events_are_stored_replayed_and_acknowledged_like_messages() {
    let (srv, [a, b, _]) = three_users().await;
    // b is offline when asked.
    ask(&srv, &a, &b.0, "while you were away").await;
    let (mut b_dev, head) = srv.v2(&b.0, &b.1, None).await;
    assert_eq!(head, 1);
    let e = expect_event(&mut b_dev, EventKind::FriendRequest, &a.0).await;
    assert_eq!(
        (e.seq, e.message.as_deref()),
        (Some(1), Some("while you were away"))
    );
    b_dev.ack(1).await.unwrap();
    sync(&mut b_dev).await;
    let (mut again, _) = srv.v2(&b.0, &b.1, None).await;
    assert!(sync(&mut again).await.is_empty(), "acknowledged");
    // A v1 connection never sees events, and is not stopped by them.
    let srv = TestServer::start().await; // open mode, demo users
    let t2 = srv.login("2", "123").await;
    let (status, _) = srv
        .post_as("/friends/requests", &t2, json!({"user": "1"}))
        .await;
    assert_eq!(status, 200, "already friends");
    let mut v1 = srv.client("1").await;
    assert_next_is_marker(&srv, "2", &mut v1, "1").await;
}

#[tokio::test]
async fn a_blocked_user_reaches_nobody_and_is_never_told() {
    let (srv, [a, b, _]) = three_users().await;
    // Friends, with a pending request the other way round... then b blocks a.
    ask(&srv, &a, &b.0, "").await;
    ask(&srv, &b, &a.0, "").await;
    let (mut a_dev, a_head) = srv.v2(&a.0, &a.1, Some(u64::MAX)).await;
    let (mut b_dev, b_head) = srv.v2(&b.0, &b.1, Some(u64::MAX)).await;
    assert_eq!(
        srv.post_as(&format!("/blocks/{}", a.0), &b.1, json!({}))
            .await
            .0,
        200
    );
    assert_eq!(
        srv.get_as("/blocks", &b.1).await,
        (200, json!([{"user": a.0, "name": "Ann"}]))
    );
    assert_eq!(
        friends_of(&srv, &a).await,
        json!([]),
        "blocking ends the friendship"
    );
    assert_eq!(friends_of(&srv, &b).await, json!([]));
    // a's messages are acknowledged (and copied to a's stream) but never reach b.
    a_dev
        .send(Message::new(&a.0, &b.0, "hello?").with_id("h"))
        .await
        .unwrap();
    match recv_packet(&mut a_dev).await {
        Packet::Ack(ack) => assert_eq!((ack.id.as_deref(), ack.seq), (Some("h"), a_head + 1)),
        other => panic!("{other:?}"),
    }
    // a's requests look pending and reach nobody.
    assert_eq!(
        ask(&srv, &a, &b.0, "please").await,
        (200, json!({"status": "pending"}))
    );
    assert_eq!(
        srv.get_as("/friends/requests", &b.1).await.1,
        json!({"incoming": [], "outgoing": []})
    );
    // Nothing reached b's stream, and nothing about it reached a's.
    assert!(sync(&mut b_dev).await.is_empty());
    assert!(sync(&mut a_dev).await.is_empty());
    assert_eq!(srv.v2(&b.0, &b.1, Some(u64::MAX)).await.1, b_head);
    // Unblocked (silently), messages flow again.
    assert_eq!(
        srv.delete_as(&format!("/blocks/{}", a.0), &b.1).await.0,
        200
    );
    assert_eq!(
        srv.delete_as(&format!("/blocks/{}", a.0), &b.1).await,
        (404, json!({"msg": "Not blocked"}))
    );
    assert_eq!(srv.get_as("/blocks", &b.1).await.1, json!([]));
    a_dev.send(Message::new(&a.0, &b.0, "again")).await.unwrap();
    assert_eq!(recv_message(&mut b_dev).await.message, "again");
    assert!(matches!(recv_packet(&mut a_dev).await, Packet::Ack(_)));
    assert!(
        sync(&mut a_dev).await.is_empty(),
        "no event about the unblock either"
    );
    // Blocking oneself or an unknown user is refused.
    assert_eq!(
        srv.post_as(&format!("/blocks/{}", b.0), &b.1, json!({}))
            .await
            .0,
        400
    );
    assert_eq!(srv.post_as("/blocks/999", &b.1, json!({})).await.0, 400);
}

#[tokio::test]
async fn blocking_while_messages_are_in_flight_cuts_the_stream_cleanly() {
    let (srv, [a, b, _]) = three_users().await;
    let (a_dev, a_head) = srv.v2(&a.0, &a.1, Some(u64::MAX)).await;
    let (mut b_dev, _) = srv.v2(&b.0, &b.1, Some(u64::MAX)).await;
    let (mut tx, mut rx) = a_dev.split();
    // The sender goes on until 50 of its messages were sent after the block was made.
    let blocked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (a_id, b_id, done) = (a.0.clone(), b.0.clone(), blocked.clone());
    let sender = tokio::spawn(async move {
        let (mut i, mut after) = (0, 0);
        while after < 50 {
            if done.load(std::sync::atomic::Ordering::SeqCst) {
                after += 1;
            }
            let m = Message::new(&a_id, &b_id, format!("m{i}")).with_id(format!("m{i}"));
            tx.send(m).await.unwrap();
            i += 1;
        }
        (tx, i)
    });
    // Block once b has seen a few.
    for i in 0..10 {
        assert_eq!(recv_message(&mut b_dev).await.message, format!("m{i}"));
    }
    assert_eq!(
        srv.post_as(&format!("/blocks/{}", a.0), &b.1, json!({}))
            .await
            .0,
        200
    );
    blocked.store(true, std::sync::atomic::Ordering::SeqCst);
    let (_tx, total) = timeout(WAIT, sender).await.unwrap().unwrap();
    // Every message is acknowledged, at consecutive positions of a's stream.
    for i in 0..total {
        match timeout(WAIT, rx.recv()).await.unwrap().unwrap() {
            Some(Packet::Ack(ack)) => {
                assert_eq!(
                    (ack.id, ack.seq),
                    (Some(format!("m{i}")), a_head + 1 + i as u64)
                );
            }
            other => panic!("{other:?}"),
        }
    }
    // b got a prefix, in order, and nothing after it: live and in its stream alike.
    let mut live = 10;
    for p in sync(&mut b_dev).await {
        match p {
            Packet::Message(m) => {
                assert_eq!(m.message, format!("m{live}"));
                live += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(live < total, "the block cut the stream");
    let (mut replay, head) = srv.v2(&b.0, &b.1, Some(0)).await;
    let stored: Vec<String> = sync(&mut replay)
        .await
        .into_iter()
        .filter_map(|p| match p {
            Packet::Message(m) => Some(m.message),
            _ => None,
        })
        .collect();
    let expected: Vec<String> = (0..live).map(|i| format!("m{i}")).collect();
    assert_eq!(stored, expected);
    assert!(head as usize >= live);
}

#[tokio::test]
async fn the_friends_only_policy_refuses_messages_to_non_friends() {
    let srv = TestServer::start_with(|c| {
        c.relay.relay_policy = imserver::config::RelayPolicy::Friends;
    })
    .await; // open mode with the demo users 1 and 2, who are friends
    let t1 = srv.login("1", "123").await;
    let (mut one, _) = srv.v2("1", &t1, Some(u64::MAX)).await;
    let (stranger, _) = srv.user("Stranger").await;
    one.send(Message::new("1", &stranger, "hi").with_id("s-1"))
        .await
        .unwrap();
    let e = expect_error(&mut one, ErrorCode::NotFriends).await;
    assert_eq!(e.id.as_deref(), Some("s-1"));
    // Not stored: neither in the stranger's stream nor as a copy in 1's.
    let (_, head) = srv.v2("1", &t1, Some(u64::MAX)).await;
    one.send(Message::new("1", "2", "friend").with_id("f-1"))
        .await
        .unwrap();
    match recv_packet(&mut one).await {
        Packet::Ack(a) => assert_eq!(a.seq, head + 1, "the refused message took no seq"),
        other => panic!("{other:?}"),
    }
    // A v1 sender's message to a non-friend is dropped; the one after it, to a friend, is
    // relayed, so the first has been handled by then.
    let t2 = srv.login("2", "123").await;
    let (mut two, _) = srv.v2("2", &t2, Some(u64::MAX)).await;
    let mut v1 = srv.connect("1").await;
    say(&mut v1, "1", &stranger, "dropped").await;
    say(&mut v1, "1", "2", "kept").await;
    assert_eq!(recv_message(&mut two).await.message, "kept");
    let token = srv.login(&stranger, "pw").await;
    let (_, stranger_head) = srv.v2(&stranger, &token, None).await;
    assert_eq!(stranger_head, 0, "nothing was stored for the stranger");
}
