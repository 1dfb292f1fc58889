//! Groups over HTTP and the relay: making, seeing, changing and leaving them, the events each
//! change puts in the members' streams, and group messages in every member's stream.

mod common;

use common::{TestServer, device, expect_error, recv_message, recv_packet, sync, three_users};
use improto::{Client, ErrorCode, Event, EventKind, Message, Packet};
use serde_json::{Value, json};

type Account = (String, String);

/// A group of `owner` named `name` with `members`: its id.
async fn make(srv: &TestServer, owner: &Account, name: &str, members: &[&Account]) -> String {
    let ids: Vec<&str> = members.iter().map(|m| m.0.as_str()).collect();
    let (status, body) = srv
        .post_as("/groups", &owner.1, json!({"name": name, "members": ids}))
        .await;
    assert_eq!(status, 200, "{body}");
    body["group"].as_str().expect("an id").to_owned()
}

/// The next packet, which must be an event of `kind` about `group`.
async fn expect_event(c: &mut Client, kind: EventKind, group: &str) -> Event {
    match recv_packet(c).await {
        Packet::Event(e) if e.kind == kind && e.group.as_deref() == Some(group) => {
            assert!(e.seq.is_some(), "events carry their seq");
            e
        }
        other => panic!("expected {kind} of {group}, got {other:?}"),
    }
}

/// Sends `text` with id `id` from `from` to `to` on `c` and returns the `Ack` (passing over
/// the stream entries that come before it).
async fn send_acked(c: &mut Client, from: &str, to: &str, text: &str, id: &str) -> improto::Ack {
    c.send(Message::new(from, to, text).with_id(id))
        .await
        .unwrap();
    loop {
        match recv_packet(c).await {
            Packet::Ack(a) => return a,
            Packet::Event(_) | Packet::Message(_) => continue,
            other => panic!("expected an Ack, got {other:?}"),
        }
    }
}

/// `PATCH /groups/{g}` with `name`, as `who`.
async fn rename(srv: &TestServer, who: &Account, g: &str, name: &str) -> (u16, Value) {
    let body = Some(json!({ "name": name }));
    srv.call(
        reqwest::Method::PATCH,
        &format!("/groups/{g}"),
        &who.1,
        body,
    )
    .await
}

fn members(view: &Value) -> Vec<(String, String)> {
    view["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let field = |k: &str| m[k].as_str().unwrap().to_owned();
            (field("user"), field("name"))
        })
        .collect()
}

#[tokio::test]
async fn a_group_is_made_shown_to_its_members_only_and_told_to_each() {
    let (srv, [a, b, c]) = three_users().await;
    let mut b_dev = device(&srv, &b).await;
    let mut a_dev = device(&srv, &a).await;
    let (status, view) = srv
        .post_as(
            "/groups",
            &a.1,
            json!({"name": "  Trip ", "members": [b.0, b.0]}),
        )
        .await;
    assert_eq!(status, 200, "{view}");
    let g = view["group"].as_str().unwrap().to_owned();
    assert!(g.starts_with('g'), "{g}");
    assert_eq!(
        (&view["name"], &view["owner"]),
        (&json!("Trip"), &json!(a.0))
    );
    assert_eq!(
        members(&view),
        [(a.0.clone(), "Ann".into()), (b.0.clone(), "Bob".into())]
    );
    // Every member is told, the owner too (for their other devices).
    for dev in [&mut a_dev, &mut b_dev] {
        let e = expect_event(dev, EventKind::GroupAdded, &g).await;
        assert_eq!(
            (e.user.as_deref(), e.name.as_deref()),
            (Some(a.0.as_str()), Some("Trip"))
        );
    }
    assert_eq!(
        srv.get_as(&format!("/groups/{g}"), &b.1).await,
        (200, view.clone())
    );
    assert_eq!(srv.get_as("/groups", &b.1).await, (200, json!([view])));
    assert_eq!(srv.get_as(&format!("/groups/{g}"), &c.1).await.0, 403);
    assert_eq!(srv.get_as("/groups", &c.1).await, (200, json!([])));
    assert_eq!(srv.get_as("/groups/g999", &a.1).await.0, 404);
    for bad in ["12", "g012", "gx"] {
        assert_eq!(
            srv.get_as(&format!("/groups/{bad}"), &a.1).await.0,
            400,
            "{bad}"
        );
    }
}

#[tokio::test]
async fn making_a_group_refuses_unknown_users_bad_names_and_too_many() {
    let srv = TestServer::start_with(|c| {
        c.auth.auth = imserver::config::AuthMode::Token;
        c.social.max_group_members = 3;
    })
    .await;
    let a = srv.user("Ann").await;
    let b = srv.user("Bob").await;
    let c = srv.user("Cid").await;
    let d = srv.user("Dan").await;
    let post = |body: Value| srv.post_as("/groups", &a.1, body);
    let (status, body) = post(json!({"name": "T", "members": ["999", "998"]})).await;
    assert_eq!(status, 400);
    assert!(body["msg"].as_str().unwrap().contains("999, 998"), "{body}");
    assert_eq!(post(json!({"name": "T", "members": ["007"]})).await.0, 400);
    assert_eq!(post(json!({"name": "  ", "members": []})).await.0, 400);
    assert_eq!(post(json!({"name": "x".repeat(101)})).await.0, 400);
    assert_eq!(post(json!({"members": [b.0]})).await.0, 400, "no name");
    let (status, body) = post(json!({"name": "T", "members": [b.0, c.0, d.0]})).await;
    assert_eq!(status, 400, "4 members, the owner included");
    assert!(body["msg"].as_str().unwrap().contains('3'), "{body}");
    // Nothing was made by the refusals.
    assert_eq!(srv.get_as("/groups", &a.1).await, (200, json!([])));
    let g = make(&srv, &a, "T", &[&b, &c]).await;
    let (status, _) = srv
        .post_as(&format!("/groups/{g}/members"), &a.1, json!({"user": d.0}))
        .await;
    assert_eq!(status, 400, "adding past the limit");
}

#[tokio::test]
async fn group_messages_reach_every_member_in_their_own_stream() {
    let (srv, [a, b, c]) = three_users().await;
    let g = make(&srv, &a, "Trip", &[&b, &c]).await;
    // b is online (v2), c is offline; a sends from one device and has a second one.
    let mut b_dev = device(&srv, &b).await;
    let mut a_dev = device(&srv, &a).await;
    let mut a_other = device(&srv, &a).await;
    // b's stream holds its group_added already: the message is its second entry.
    let ack = send_acked(&mut a_dev, &a.0, &g, "hello all", "t-1").await;
    assert_eq!(
        (ack.id.as_deref(), ack.group.as_deref()),
        (Some("t-1"), Some(g.as_str()))
    );
    let m = recv_message(&mut b_dev).await;
    assert_eq!(
        (
            m.sender.as_str(),
            m.receiver.as_str(),
            m.message.as_str(),
            m.seq
        ),
        (a.0.as_str(), g.as_str(), "hello all", Some(2))
    );
    let copy = recv_message(&mut a_other).await;
    assert_eq!((copy.seq, copy.id.as_deref()), (Some(ack.seq), Some("t-1")));
    // c gets it when they connect, after its group_added.
    let (mut c_dev, head) = srv.v2(&c.0, &c.1, Some(0)).await;
    assert_eq!(head, 2);
    expect_event(&mut c_dev, EventKind::GroupAdded, &g).await;
    assert_eq!(recv_message(&mut c_dev).await.message, "hello all");
    // A retry is acknowledged again, and stored nowhere twice.
    let again = send_acked(&mut a_dev, &a.0, &g, "hello all", "t-1").await;
    assert_eq!(
        (again.seq, again.group.as_deref()),
        (ack.seq, Some(g.as_str()))
    );
    let marker = send_acked(&mut a_dev, &a.0, &g, "marker", "t-2").await;
    assert_eq!(recv_message(&mut b_dev).await.message, "marker");
    assert_eq!(recv_message(&mut c_dev).await.message, "marker");
    assert_eq!(marker.seq, ack.seq + 1);
}

#[tokio::test]
async fn v1_connections_never_get_group_messages_and_cannot_send_them() {
    let (srv, [a, b, _]) = three_users().await;
    let g = make(&srv, &a, "Trip", &[&b]).await;
    let mut b_v1 = srv.raw().await;
    b_v1.send(improto::Regist::new(b.0.as_str()).with_token(b.1.as_str()))
        .await
        .unwrap();
    let mut a_dev = device(&srv, &a).await;
    send_acked(&mut a_dev, &a.0, &g, "to the group", "v-1").await;
    a_dev
        .send(Message::new(a.0.as_str(), b.0.as_str(), "to Bob"))
        .await
        .unwrap();
    // The first thing b's v1 connection gets is the 1:1 message: nothing of the group, no
    // events.
    assert_eq!(recv_message(&mut b_v1).await.message, "to Bob");
    // A v1 message to a group is dropped (v1 is told nothing).
    b_v1.send(Message::new(b.0.as_str(), g.as_str(), "from v1"))
        .await
        .unwrap();
    b_v1.send(Message::new(b.0.as_str(), a.0.as_str(), "after"))
        .await
        .unwrap();
    let next = loop {
        match recv_packet(&mut a_dev).await {
            Packet::Message(m) => break m,
            _ => continue,
        }
    };
    assert_eq!(next.message, "after");
}

#[tokio::test]
async fn a_non_member_is_refused_and_nothing_is_stored() {
    let (srv, [a, b, c]) = three_users().await;
    let g = make(&srv, &a, "Trip", &[&b]).await;
    let (mut c_dev, _) = srv.v2(&c.0, &c.1, None).await;
    c_dev
        .send(Message::new(c.0.as_str(), g.as_str(), "let me in").with_id("x-1"))
        .await
        .unwrap();
    let e = expect_error(&mut c_dev, ErrorCode::NotMember).await;
    assert_eq!(e.id.as_deref(), Some("x-1"));
    // And to a group that does not exist.
    c_dev
        .send(Message::new(c.0.as_str(), "g999", "anyone?").with_id("x-2"))
        .await
        .unwrap();
    expect_error(&mut c_dev, ErrorCode::NotMember).await;
    let (_, head) = srv.v2(&b.0, &b.1, Some(u64::MAX)).await;
    assert_eq!(head, 1, "b has only its group_added");
    assert!(sync(&mut c_dev).await.is_empty());
}

#[tokio::test]
async fn adding_removing_and_renaming_are_events_for_everyone_affected() {
    let (srv, [a, b, c]) = three_users().await;
    let g = make(&srv, &a, "Trip", &[&b]).await;
    let mut a_dev = device(&srv, &a).await;
    let mut b_dev = device(&srv, &b).await;
    let mut c_dev = device(&srv, &c).await;
    let url = format!("/groups/{g}/members");
    let (status, view) = srv.post_as(&url, &a.1, json!({"user": c.0})).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(members(&view).len(), 3);
    let e = expect_event(&mut c_dev, EventKind::GroupAdded, &g).await;
    assert_eq!(e.user.as_deref(), Some(a.0.as_str()));
    for dev in [&mut a_dev, &mut b_dev] {
        let e = expect_event(dev, EventKind::MemberJoined, &g).await;
        assert_eq!(e.user.as_deref(), Some(c.0.as_str()));
    }
    // Only the owner adds, removes others, renames.
    let d = srv.user("Dan").await;
    assert_eq!(srv.post_as(&url, &b.1, json!({"user": d.0})).await.0, 403);
    assert_eq!(srv.delete_as(&format!("{url}/{}", c.0), &b.1).await.0, 403);
    assert_eq!(rename(&srv, &b, &g, "Mine").await.0, 403);
    assert_eq!(srv.post_as(&url, &d.1, json!({"user": d.0})).await.0, 403);
    assert_eq!(srv.post_as(&url, &a.1, json!({"user": "999"})).await.0, 400);

    let (status, view) = rename(&srv, &a, &g, "Road trip").await;
    assert_eq!((status, &view["name"]), (200, &json!("Road trip")));
    for dev in [&mut a_dev, &mut b_dev, &mut c_dev] {
        let e = expect_event(dev, EventKind::GroupRenamed, &g).await;
        assert_eq!(
            (e.user.as_deref(), e.name.as_deref()),
            (Some(a.0.as_str()), Some("Road trip"))
        );
    }
    // The owner removes c: c is told who did it, the others who left.
    assert_eq!(
        srv.delete_as(&format!("{url}/{}", c.0), &a.1).await,
        (200, json!({"msg": "Removed"}))
    );
    let e = expect_event(&mut c_dev, EventKind::GroupRemoved, &g).await;
    assert_eq!(e.user.as_deref(), Some(a.0.as_str()));
    for dev in [&mut a_dev, &mut b_dev] {
        let e = expect_event(dev, EventKind::MemberLeft, &g).await;
        assert_eq!(
            (e.user.as_deref(), e.owner.as_deref()),
            (Some(c.0.as_str()), None)
        );
    }
    assert_eq!(srv.get_as(&format!("/groups/{g}"), &c.1).await.0, 403);
    assert_eq!(
        srv.delete_as(&format!("{url}/{}", c.0), &a.1).await.0,
        404,
        "not a member"
    );
}

#[tokio::test]
async fn the_owner_leaving_hands_over_and_the_last_one_out_deletes_the_group() {
    let (srv, [a, b, c]) = three_users().await;
    let g = make(&srv, &a, "Trip", &[&b, &c]).await;
    let mut b_dev = device(&srv, &b).await;
    let mut a_dev = device(&srv, &a).await;
    let url = |u: &str| format!("/groups/{g}/members/{u}");
    assert_eq!(
        srv.delete_as(&url(&a.0), &a.1).await,
        (200, json!({"msg": "Left"}))
    );
    let e = expect_event(&mut a_dev, EventKind::GroupRemoved, &g).await;
    assert_eq!(
        e.user.as_deref(),
        Some(a.0.as_str()),
        "leaving: the member themself"
    );
    let e = expect_event(&mut b_dev, EventKind::MemberLeft, &g).await;
    assert_eq!(
        (e.user.as_deref(), e.owner.as_deref()),
        (Some(a.0.as_str()), Some(b.0.as_str()))
    );
    let (_, view) = srv.get_as(&format!("/groups/{g}"), &b.1).await;
    assert_eq!(
        view["owner"],
        json!(b.0),
        "the longest-standing member owns it now"
    );
    // A member who left gets nothing more of the group, and may not send to it.
    send_acked(&mut b_dev, &b.0, &g, "still here", "s-1").await;
    a_dev
        .send(Message::new(a.0.as_str(), g.as_str(), "back?").with_id("s-2"))
        .await
        .unwrap();
    let e = expect_error(&mut a_dev, ErrorCode::NotMember).await;
    assert_eq!(e.id.as_deref(), Some("s-2"));
    assert!(
        sync(&mut a_dev).await.is_empty(),
        "no group message after leaving"
    );

    for who in [&b, &c] {
        assert_eq!(srv.delete_as(&url(&who.0), &who.1).await.0, 200);
    }
    assert_eq!(
        srv.get_as(&format!("/groups/{g}"), &b.1).await.0,
        404,
        "gone"
    );
    // Its id is never given again.
    let next = make(&srv, &a, "Another", &[]).await;
    assert_ne!(next, g);
}

#[tokio::test]
async fn a_three_member_group_with_one_member_offline_and_one_on_v1() {
    let (srv, [a, b, c]) = three_users().await;
    let g = make(&srv, &a, "Trip", &[&b, &c]).await;
    // b is on v1 only, c is offline; a sends three messages.
    let mut b_v1 = srv.raw().await;
    b_v1.send(improto::Regist::new(b.0.as_str()).with_token(b.1.as_str()))
        .await
        .unwrap();
    let mut a_dev = device(&srv, &a).await;
    for i in 0..3 {
        send_acked(&mut a_dev, &a.0, &g, &format!("m{i}"), &format!("id-{i}")).await;
    }
    a_dev
        .send(Message::new(a.0.as_str(), b.0.as_str(), "direct"))
        .await
        .unwrap();
    assert_eq!(
        recv_message(&mut b_v1).await.message,
        "direct",
        "v1 sees none of the group"
    );
    // b's v2 device and c get all three, in order, after their group_added.
    for who in [&b, &c] {
        let (mut dev, _) = srv.v2(&who.0, &who.1, Some(0)).await;
        expect_event(&mut dev, EventKind::GroupAdded, &g).await;
        for i in 0..3 {
            let m = recv_message(&mut dev).await;
            assert_eq!(
                (m.message, m.receiver.as_str()),
                (format!("m{i}"), g.as_str())
            );
        }
    }
}

#[tokio::test]
async fn a_groups_history_and_conversation_are_in_each_members_own_terms() {
    let (srv, [a, b, c]) = three_users().await;
    let g = make(&srv, &a, "Trip", &[&b, &c]).await;
    let mut a_dev = device(&srv, &a).await;
    let mut b_dev = device(&srv, &b).await;
    for i in 0..5 {
        send_acked(&mut a_dev, &a.0, &g, &format!("a{i}"), &format!("a-{i}")).await;
    }
    send_acked(&mut b_dev, &b.0, &g, "b0", "b-0").await;
    // b's history of the group: its own copy and a's messages, with b's seqs.
    let (status, page) = srv.get_as(&format!("/history/{g}?limit=4"), &b.1).await;
    assert_eq!(status, 200, "{page}");
    let texts: Vec<_> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].clone())
        .collect();
    assert_eq!(texts, [json!("a2"), json!("a3"), json!("a4"), json!("b0")]);
    assert_eq!(page["more"], json!(true));
    let seqs: Vec<_> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [4, 5, 6, 7], "b's stream: group_added, then a0 at 2");
    // Its conversations: the group, with what b has not read (a's five).
    let (_, list) = srv.get_as("/conversations", &b.1).await;
    assert_eq!(
        (
            &list[0]["peer"],
            &list[0]["name"],
            &list[0]["unread"],
            &list[0]["lastSeq"]
        ),
        (&json!(g), &json!("Trip"), &json!(5), &json!(7))
    );
    b_dev.read(&g, 4).await.unwrap();
    sync(&mut b_dev).await;
    let (_, list) = srv.get_as("/conversations", &b.1).await;
    assert_eq!(list[0]["unread"], json!(2), "a3 and a4");
    // c's view of the same messages is in c's seqs; a stranger's history of it is empty.
    let (_, page) = srv.get_as(&format!("/history/{g}"), &c.1).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 6);
    let d = srv.user("Dan").await;
    assert_eq!(
        srv.get_as(&format!("/history/{g}"), &d.1).await,
        (200, json!({"messages": [], "more": false}))
    );
    assert_eq!(srv.get_as("/history/g0", &d.1).await.0, 400);
}

#[tokio::test]
async fn membership_changing_while_messages_are_in_flight_cuts_cleanly() {
    let (srv, [a, b, c]) = three_users().await;
    let g = make(&srv, &a, "Trip", &[&b, &c]).await;
    let (mut a_tx, mut a_rx) = device(&srv, &a).await.split();
    const N: usize = 300;
    let sender = {
        let (a_id, g) = (a.0.clone(), g.clone());
        tokio::spawn(async move {
            for i in 0..N {
                let m = Message::new(a_id.as_str(), g.as_str(), format!("m{i}"))
                    .with_id(format!("f-{i}"));
                a_tx.feed(m).await.unwrap();
                if i % 10 == 0 {
                    a_tx.flush().await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
            a_tx.flush().await.unwrap();
            a_tx
        })
    };
    // c leaves while the messages flow.
    let (status, _) = srv
        .delete_as(&format!("/groups/{g}/members/{}", c.0), &c.1)
        .await;
    assert_eq!(status, 200);
    let _a_tx = sender.await.unwrap();
    let mut acked = 0;
    while acked < N {
        let packet = tokio::time::timeout(common::WAIT, a_rx.recv()).await;
        if let Ok(Ok(Some(Packet::Ack(_)))) = packet {
            acked += 1;
        } else if !matches!(packet, Ok(Ok(Some(_)))) {
            panic!("the sender's connection ended: {packet:?}");
        }
    }
    // c's stream: a prefix of the messages, then its group_removed, then nothing of the group.
    let (mut c_dev, _) = srv.v2(&c.0, &c.1, Some(0)).await;
    expect_event(&mut c_dev, EventKind::GroupAdded, &g).await;
    let mut got = 0;
    loop {
        match recv_packet(&mut c_dev).await {
            Packet::Message(m) => {
                assert_eq!(m.message, format!("m{got}"), "in order, without gaps");
                got += 1;
            }
            Packet::Event(e) if e.kind == EventKind::GroupRemoved => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        sync(&mut c_dev).await.is_empty(),
        "nothing after leaving ({got} before)"
    );
    // b has every message, and c's leaving among them.
    let (mut b_dev, _) = srv.v2(&b.0, &b.1, Some(0)).await;
    expect_event(&mut b_dev, EventKind::GroupAdded, &g).await;
    let mut messages = 0;
    while messages < N {
        match recv_packet(&mut b_dev).await {
            Packet::Message(m) => {
                assert_eq!(m.message, format!("m{messages}"));
                messages += 1;
            }
            Packet::Event(e) => assert_eq!(e.kind, EventKind::MemberLeft),
            other => panic!("unexpected {other:?}"),
        }
    }
}
