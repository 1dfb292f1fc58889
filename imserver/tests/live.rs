//! What is live and never stored: typing (to a user or a group, under the relay policy, blocks,
//! membership and a per-connection limit) and friends' presence (coalesced, with two devices,
//! and `GET /presence`).

mod common;

use std::time::Duration;

use common::{TestServer, device, expect_error, recv_message, recv_packet, say, sync, three_users};
use improto::{Client, ErrorCode, Packet, Presence, Typing};
use serde_json::json;

type Account = (String, String);

/// Three users (see `three_users`), with friends told of presence after `delay`.
async fn users_with_presence(delay: Duration) -> (TestServer, [Account; 3]) {
    let srv = TestServer::start_with(|c| {
        c.auth.auth = imserver::config::AuthMode::Token;
        c.relay.presence_delay = delay;
    })
    .await;
    let a = srv.user("Ann").await;
    let b = srv.user("Bob").await;
    let c = srv.user("Cid").await;
    (srv, [a, b, c])
}

async fn befriend(srv: &TestServer, x: &Account, y: &Account) {
    let (status, _) = srv
        .post_as("/friends/requests", &x.1, json!({"user": y.0}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = srv
        .post_as(
            &format!("/friends/requests/{}/accept", x.0),
            &y.1,
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
}

/// The live frames (typing, presence) among what comes before a `Pong`.
async fn live(c: &mut Client) -> Vec<Packet> {
    sync(c)
        .await
        .into_iter()
        .filter(|p| matches!(p, Packet::Typing(_) | Packet::Presence(_)))
        .collect()
}

/// The next packet that is not an event, which must be a presence frame.
async fn next_presence(c: &mut Client) -> Presence {
    loop {
        match recv_packet(c).await {
            Packet::Presence(p) => return p,
            Packet::Event(_) => continue,
            other => panic!("expected Presence, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn typing_reaches_the_receivers_v2_connections_live_and_is_never_stored() {
    let (srv, [a, b, _]) = three_users().await;
    let mut b_dev = device(&srv, &b).await;
    let mut b_v1 = srv.raw().await;
    b_v1.send(improto::Regist::new(b.0.as_str()).with_token(b.1.as_str()))
        .await
        .unwrap();
    let mut a_dev = device(&srv, &a).await;
    a_dev.typing(&b.0).await.unwrap();
    sync(&mut a_dev).await;
    assert_eq!(
        live(&mut b_dev).await,
        [Packet::from(Typing::from(a.0.as_str(), b.0.as_str()))]
    );
    // The v1 connection gets nothing but messages; the stream holds nothing of it.
    say(&mut a_dev, &a.0, &b.0, "after typing").await;
    assert_eq!(recv_message(&mut b_v1).await.message, "after typing");
    let (_, head) = srv.v2(&b.0, &b.1, Some(u64::MAX)).await;
    assert_eq!(head, 1, "only the message is stored");
}

#[tokio::test]
async fn typing_to_a_group_reaches_the_other_members_and_only_members_may() {
    let (srv, [a, b, c]) = three_users().await;
    let (_, g) = srv
        .post_as("/groups", &a.1, json!({"name": "T", "members": [b.0]}))
        .await;
    let g = g["group"].as_str().unwrap().to_owned();
    let mut a_dev = device(&srv, &a).await;
    let mut a_other = device(&srv, &a).await;
    let mut b_dev = device(&srv, &b).await;
    a_dev.typing(&g).await.unwrap();
    sync(&mut a_dev).await;
    assert_eq!(
        live(&mut b_dev).await,
        [Packet::from(Typing::from(a.0.as_str(), g.as_str()))]
    );
    assert_eq!(
        live(&mut a_other).await,
        [],
        "not to the typist's own devices"
    );
    let (mut c_dev, _) = srv.v2(&c.0, &c.1, None).await;
    c_dev.typing(&g).await.unwrap();
    expect_error(&mut c_dev, ErrorCode::NotMember).await;
}

#[tokio::test]
async fn typing_follows_the_relay_policy() {
    let srv = TestServer::start_with(|c| {
        c.auth.auth = imserver::config::AuthMode::Token;
        c.relay.relay_policy = imserver::config::RelayPolicy::Friends;
    })
    .await;
    let a = srv.user("Ann").await;
    let b = srv.user("Bob").await;
    let mut a_dev = device(&srv, &a).await;
    let mut b_dev = device(&srv, &b).await;
    a_dev.typing(&b.0).await.unwrap();
    expect_error(&mut a_dev, ErrorCode::NotFriends).await;
    befriend(&srv, &a, &b).await;
    a_dev.typing(&b.0).await.unwrap();
    sync(&mut a_dev).await;
    assert_eq!(live(&mut b_dev).await.len(), 1);
}

#[tokio::test]
async fn typing_to_someone_who_blocks_you_goes_nowhere_and_says_nothing() {
    let (srv, [a, b, _]) = three_users().await;
    let (status, _) = srv
        .post_as(&format!("/blocks/{}", a.0), &b.1, json!({}))
        .await;
    assert_eq!(status, 200);
    let mut b_dev = device(&srv, &b).await;
    let mut a_dev = device(&srv, &a).await;
    a_dev.typing(&b.0).await.unwrap();
    assert_eq!(sync(&mut a_dev).await, [], "no error for the blocked");
    assert_eq!(live(&mut b_dev).await, []);
}

#[tokio::test]
async fn typing_past_the_limit_is_dropped_silently() {
    let srv = TestServer::start_with(|c| {
        c.auth.auth = imserver::config::AuthMode::Token;
        c.relay.typing_limit = std::num::NonZeroU32::new(1).unwrap();
    })
    .await;
    let a = srv.user("Ann").await;
    let b = srv.user("Bob").await;
    let mut b_dev = device(&srv, &b).await;
    let (mut a_tx, mut a_rx) = device(&srv, &a).await.split();
    for _ in 0..20 {
        a_tx.feed(Typing::to(b.0.as_str())).await.unwrap();
    }
    a_tx.flush().await.unwrap();
    a_tx.ping().await.unwrap();
    match tokio::time::timeout(common::WAIT, a_rx.recv()).await {
        Ok(Ok(Some(Packet::Pong))) => {}
        other => panic!("the typist is told nothing, got {other:?}"),
    }
    let got = live(&mut b_dev).await.len();
    assert!(
        (1..20).contains(&got),
        "{got} of 20 typing frames passed a limit of 1 a second"
    );
}

#[tokio::test]
async fn friends_are_told_when_a_user_comes_online_and_when_their_last_device_goes() {
    let (srv, [a, b, c]) = users_with_presence(Duration::from_millis(100)).await;
    befriend(&srv, &a, &b).await;
    let mut b_dev = device(&srv, &b).await;
    let phone = device(&srv, &a).await;
    assert_eq!(
        next_presence(&mut b_dev).await,
        Presence::new(a.0.as_str(), true)
    );
    let laptop = device(&srv, &a).await;
    drop(phone);
    // Still online on the laptop: the next news is the laptop going, and not before it.
    let (status, view) = srv.get_as(&format!("/presence/{}", a.0), &b.1).await;
    assert_eq!((status, &view["online"]), (200, &json!(true)));
    drop(laptop);
    assert_eq!(
        next_presence(&mut b_dev).await,
        Presence::new(a.0.as_str(), false)
    );
    let (_, view) = srv.get_as(&format!("/presence/{}", a.0), &b.1).await;
    assert_eq!(view["online"], json!(false));
    let seen = view["lastSeen"].as_i64().expect("a time");
    assert!(seen > 1_700_000_000, "{view}");
    // Only friends (and oneself) may ask.
    assert_eq!(srv.get_as(&format!("/presence/{}", a.0), &c.1).await.0, 403);
    assert_eq!(srv.get_as(&format!("/presence/{}", c.0), &c.1).await.0, 200);
    assert_eq!(srv.get_as("/presence/999", &c.1).await.0, 400);
}

#[tokio::test]
async fn a_user_who_flaps_tells_nobody() {
    let delay = Duration::from_secs(1);
    let (srv, [a, b, c]) = users_with_presence(delay).await;
    befriend(&srv, &a, &b).await;
    befriend(&srv, &c, &b).await;
    let mut b_dev = device(&srv, &b).await;
    // a comes and goes at once, a few times.
    for _ in 0..3 {
        drop(device(&srv, &a).await);
    }
    // Once a's changes have been looked at, c comes online: the first presence news b gets
    // is c's.
    tokio::time::sleep(delay * 2).await;
    let _c_dev = device(&srv, &c).await;
    assert_eq!(
        next_presence(&mut b_dev).await,
        Presence::new(c.0.as_str(), true)
    );
    let (_, view) = srv.get_as(&format!("/presence/{}", a.0), &b.1).await;
    assert_eq!(view["online"], json!(false));
}
