//! The relay over WebSocket (`GET /ws`), through a real WebSocket client: the v2 protocol
//! as over TCP (with TCP and WebSocket users together), bad input, the origin check,
//! keepalive pings, and the limits TCP and WebSocket share.

mod common;

use std::time::Duration;

use common::ws::{Closed, Ws};
use common::{TestServer, WAIT, device, recv_packet, send_for_ack, three_users};
use improto::{Ack, ErrorCode, EventKind, Message, Packet, Read, Regist, Typing};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::http::StatusCode;

type Account = (String, String);

/// Sends `text` (client id `text`) over `ws` as `from` to `to`; returns its `Ack`'s seq,
/// passing over what comes before it.
async fn ws_send_for_ack(ws: &mut Ws, from: &str, to: &str, text: &str) -> u64 {
    ws.send(Message::new(from, to, text).with_id(text)).await;
    loop {
        match ws.recv().await {
            Packet::Ack(a) => {
                assert_eq!(a.id.as_deref(), Some(text));
                return a.seq;
            }
            Packet::Message(_) | Packet::Event(_) => continue,
            other => panic!("expected an Ack, got {other:?}"),
        }
    }
}

/// The next packet over `ws`, which must be a message; its text and seq.
async fn ws_message(ws: &mut Ws) -> (String, u64) {
    match ws.recv().await {
        Packet::Message(m) => (m.message, m.seq.expect("a seq")),
        other => panic!("expected a Message, got {other:?}"),
    }
}

/// Befriends `x` and `y` over HTTP.
async fn befriend(srv: &TestServer, x: &Account, y: &Account) {
    let (status, _) = srv
        .post_as("/friends/requests", &x.1, json!({"user": y.0}))
        .await;
    assert_eq!(status, 200);
    let path = format!("/friends/requests/{}/accept", x.0);
    let (status, _) = srv.post_as(&path, &y.1, json!({})).await;
    assert_eq!(status, 200);
}

/// A server in token mode, `adjust`ed, with two fresh users, Ann and Bob.
async fn two_users(adjust: impl FnOnce(&mut imserver::Config)) -> (TestServer, Account, Account) {
    let srv = TestServer::start_with(|c| {
        c.auth.auth = imserver::config::AuthMode::Token;
        adjust(c);
    })
    .await;
    let a = srv.user("Ann").await;
    let b = srv.user("Bob").await;
    (srv, a, b)
}

/// `packets` is one `Error` with `code`, and nothing else.
fn assert_only_error(packets: &[Packet], code: ErrorCode) {
    assert!(
        matches!(packets, [Packet::Error(e)] if e.code == code),
        "{packets:?}"
    );
}

#[tokio::test]
async fn a_websocket_user_and_a_tcp_user_chat_both_ways() {
    let (srv, [a, b, _]) = three_users().await;
    let (mut ws, head) = srv.ws_v2(&a.0, &a.1, None).await;
    assert_eq!(head, 0);
    let mut tcp = device(&srv, &b).await;

    let own = ws_send_for_ack(&mut ws, &a.0, &b.0, "hello from the browser").await;
    assert_eq!(own, 1, "the sender's copy is the first entry of its stream");
    match recv_packet(&mut tcp).await {
        Packet::Message(m) => {
            assert_eq!(
                (m.message.as_str(), m.seq),
                ("hello from the browser", Some(1))
            );
        }
        other => panic!("expected the message, got {other:?}"),
    }

    send_for_ack(&mut tcp, &b.0, &a.0, "hello from the terminal").await;
    let (text, seq) = ws_message(&mut ws).await;
    assert_eq!((text.as_str(), seq), ("hello from the terminal", 2));
    ws.send(Ack::new(seq)).await;
    assert!(ws.sync().await.is_empty(), "nothing else arrives");

    // Acknowledged over WebSocket: a connection without lastSeq starts after it.
    drop(ws);
    let (mut again, head) = srv.ws_v2(&a.0, &a.1, None).await;
    assert_eq!(head, 2);
    assert!(
        again.sync().await.is_empty(),
        "the acknowledged entries are not replayed"
    );
}

#[tokio::test]
async fn resume_from_last_seq_has_no_gap_and_no_duplicate() {
    let (srv, [a, b, _]) = three_users().await;
    let mut tcp = device(&srv, &b).await;
    let (mut ws, _) = srv.ws_v2(&a.0, &a.1, None).await;
    for i in 1..=3 {
        send_for_ack(&mut tcp, &b.0, &a.0, &format!("m{i}")).await;
    }
    let mut seen = Vec::new();
    for _ in 1..=3 {
        seen.push(ws_message(&mut ws).await);
    }
    // The page goes away having shown 1..=3 without acknowledging; more arrive meanwhile.
    drop(ws);
    for i in 4..=6 {
        send_for_ack(&mut tcp, &b.0, &a.0, &format!("m{i}")).await;
    }
    let (mut ws, head) = srv.ws_v2(&a.0, &a.1, Some(3)).await;
    assert_eq!(head, 6);
    for _ in 4..=6 {
        seen.push(ws_message(&mut ws).await);
    }
    assert!(ws.sync().await.is_empty());
    let expected: Vec<(String, u64)> = (1..=6).map(|i| (format!("m{i}"), i)).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_message_sent_again_with_its_id_is_stored_once() {
    let (srv, [a, b, _]) = three_users().await;
    let (mut ws, _) = srv.ws_v2(&a.0, &a.1, None).await;
    let first = ws_send_for_ack(&mut ws, &a.0, &b.0, "once").await;
    drop(ws);
    let (mut ws, _) = srv.ws_v2(&a.0, &a.1, Some(first)).await;
    let again = ws_send_for_ack(&mut ws, &a.0, &b.0, "once").await;
    assert_eq!(first, again, "the retry is acknowledged at the same seq");
    let mut tcp = srv.v2(&b.0, &b.1, Some(0)).await.0;
    let before = common::sync(&mut tcp).await;
    assert_eq!(before.len(), 1, "the receiver has it once: {before:?}");
}

#[tokio::test]
async fn one_user_on_tcp_and_websocket_at_once_receives_on_both() {
    let (srv, [a, b, _]) = three_users().await;
    let (mut ws, _) = srv.ws_v2(&a.0, &a.1, None).await;
    let mut tcp = device(&srv, &a).await;
    let mut other = device(&srv, &b).await;

    send_for_ack(&mut other, &b.0, &a.0, "to both").await;
    assert_eq!(ws_message(&mut ws).await, ("to both".into(), 1));
    match recv_packet(&mut tcp).await {
        Packet::Message(m) => assert_eq!((m.message.as_str(), m.seq), ("to both", Some(1))),
        other => panic!("expected the message, got {other:?}"),
    }

    // Sent from the TCP device: the WebSocket device gets its copy, and the other way round.
    send_for_ack(&mut tcp, &a.0, &b.0, "from tcp").await;
    assert_eq!(ws_message(&mut ws).await, ("from tcp".into(), 2));
    ws_send_for_ack(&mut ws, &a.0, &b.0, "from the browser").await;
    match recv_packet(&mut tcp).await {
        Packet::Message(m) => {
            assert_eq!((m.message.as_str(), m.seq), ("from the browser", Some(3)));
        }
        other => panic!("expected the copy, got {other:?}"),
    }
}

#[tokio::test]
async fn events_groups_receipts_and_typing_reach_websocket_users() {
    let (srv, [a, b, c]) = three_users().await;
    let (mut wa, _) = srv.ws_v2(&a.0, &a.1, None).await;
    let (mut wb, _) = srv.ws_v2(&b.0, &b.1, None).await;

    // A friend request is an event in the stream.
    let (status, _) = srv
        .post_as("/friends/requests", &a.1, json!({"user": b.0}))
        .await;
    assert_eq!(status, 200);
    match wb.recv().await {
        Packet::Event(e) => assert_eq!(
            (e.kind, e.user),
            (EventKind::FriendRequest, Some(a.0.clone()))
        ),
        other => panic!("expected the request, got {other:?}"),
    }
    let path = format!("/friends/requests/{}/accept", a.0);
    assert_eq!(srv.post_as(&path, &b.1, json!({})).await.0, 200);
    match wa.recv().await {
        Packet::Event(e) => assert_eq!(e.kind, EventKind::FriendAccepted),
        other => panic!("expected the acceptance, got {other:?}"),
    }
    let (status, body) = srv
        .post_as(
            "/groups",
            &a.1,
            json!({"name": "Trio", "members": [b.0, c.0]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let g = body["group"].as_str().expect("a group").to_owned();
    // b is told it accepted (on every device), then that it was added.
    match wb.recv().await {
        Packet::Event(e) => assert_eq!(e.kind, EventKind::FriendAccepted),
        other => panic!("expected friend_accepted, got {other:?}"),
    }
    match wb.recv().await {
        Packet::Event(e) => assert_eq!(
            (e.kind, e.group.as_deref()),
            (EventKind::GroupAdded, Some(g.as_str()))
        ),
        other => panic!("expected group_added, got {other:?}"),
    }

    // Typing, live.
    wa.send(Typing::to(b.0.as_str())).await;
    assert_eq!(
        wb.recv().await,
        Packet::from(Typing::from(a.0.as_str(), b.0.as_str()))
    );

    // A group message, acknowledged with its group; a member on TCP gets it too.
    let mut tc = device(&srv, &c).await;
    wa.send(Message::new(a.0.as_str(), g.as_str(), "hi all").with_id("g1"))
        .await;
    let own = loop {
        match wa.recv().await {
            Packet::Ack(ack) => {
                assert_eq!(ack.group.as_deref(), Some(g.as_str()));
                break ack.seq;
            }
            // The owner's own group_added, first.
            Packet::Event(e) if e.kind == EventKind::GroupAdded => continue,
            other => panic!("expected the Ack, got {other:?}"),
        }
    };
    let (text, seq) = ws_message(&mut wb).await;
    assert_eq!(text, "hi all");
    match recv_packet(&mut tc).await {
        Packet::Message(m) => assert_eq!(m.message, "hi all"),
        other => panic!("expected the group message, got {other:?}"),
    }

    // b reads the group up to the message: a is told, in its own terms.
    wb.send(Read::new(g.as_str(), seq)).await;
    match wa.recv().await {
        Packet::Event(e) => {
            assert_eq!(
                (e.kind, e.up_to, e.user),
                (EventKind::Read, Some(own), Some(b.0.clone()))
            );
        }
        other => panic!("expected a read receipt, got {other:?}"),
    }
}

#[tokio::test]
async fn presence_is_told_over_websocket() {
    let (srv, a, b) = two_users(|c| c.relay.presence_delay = Duration::from_millis(50)).await;
    befriend(&srv, &a, &b).await;
    let (mut wa, _) = srv.ws_v2(&a.0, &a.1, Some(u64::MAX)).await;
    let (wb, _) = srv.ws_v2(&b.0, &b.1, Some(u64::MAX)).await;
    assert_eq!(
        wa.recv().await,
        Packet::from(improto::Presence::new(b.0.as_str(), true))
    );
    drop(wb);
    assert_eq!(
        wa.recv().await,
        Packet::from(improto::Presence::new(b.0.as_str(), false))
    );
}

#[tokio::test]
async fn version_1_is_refused_on_websocket_and_the_connection_stays() {
    let (srv, [a, _, _]) = three_users().await;
    let mut ws = srv.ws().await;
    ws.send(Regist::new(a.0.as_str()).with_token(a.1.as_str()))
        .await;
    match ws.recv().await {
        Packet::Error(e) => {
            assert_eq!(e.code, ErrorCode::BadPacket);
            assert!(e.message.contains("version"), "{}", e.message);
        }
        other => panic!("expected bad_packet, got {other:?}"),
    }
    ws.send(Regist::v2(a.0.as_str(), a.1.as_str())).await;
    assert!(matches!(ws.recv().await, Packet::Registered(_)));
}

#[tokio::test]
async fn a_binary_message_is_bad_json_and_the_connection_stays() {
    let (srv, [a, b, _]) = three_users().await;
    let (mut ws, _) = srv.ws_v2(&a.0, &a.1, None).await;
    let json = Packet::from(Message::new(a.0.as_str(), b.0.as_str(), "x"))
        .to_json()
        .unwrap();
    ws.send_raw(WsMessage::binary(json)).await;
    match ws.recv().await {
        Packet::Error(e) => assert_eq!(e.code, ErrorCode::BadJson),
        other => panic!("expected bad_json, got {other:?}"),
    }
    ws_send_for_ack(&mut ws, &a.0, &b.0, "still here").await;
}

#[tokio::test]
async fn bad_json_in_a_text_message_is_refused_alone() {
    let (srv, [a, b, _]) = three_users().await;
    let (mut ws, _) = srv.ws_v2(&a.0, &a.1, None).await;
    ws.send_raw(WsMessage::text("{not json")).await;
    match ws.recv().await {
        Packet::Error(e) => assert_eq!(e.code, ErrorCode::BadJson),
        other => panic!("expected bad_json, got {other:?}"),
    }
    ws_send_for_ack(&mut ws, &a.0, &b.0, "still here").await;
}

#[tokio::test]
async fn a_message_over_the_frame_limit_closes_with_1009() {
    let srv = TestServer::start_with(|c| c.relay.max_frame_bytes = 1024).await;
    let mut ws = srv.ws().await;
    ws.send_raw(WsMessage::text("x".repeat(2048))).await;
    let (packets, closed) = ws.until_closed().await;
    assert!(matches!(closed, Closed::Code(1009)), "{closed:?}");
    assert_only_error(&packets, ErrorCode::TooLarge);
}

#[tokio::test]
async fn an_unauthorised_regist_gets_an_error_then_close_1008() {
    let (srv, [a, b, _]) = three_users().await;
    let mut ws = srv.ws().await;
    // b's token does not speak for a.
    ws.send(Regist::v2(a.0.as_str(), b.1.as_str())).await;
    let (packets, closed) = ws.until_closed().await;
    assert_only_error(&packets, ErrorCode::Unauthorized);
    assert!(matches!(closed, Closed::Code(1008)), "{closed:?}");
}

#[tokio::test]
async fn websocket_protocol_errors_close_cleanly_and_the_server_goes_on() {
    let (srv, [a, b, _]) = three_users().await;
    // An unmasked frame from a client breaks RFC 6455.
    let mut ws = srv.ws().await;
    let raw = match ws.socket.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(s) => s,
        _ => unreachable!("plain"),
    };
    raw.write_all(&[0x81, 0x02, b'{', b'}']).await.unwrap();
    let mut rest = Vec::new();
    // Until the server ends the connection (cleanly, or with a reset after its close).
    let _ = timeout(WAIT, raw.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    // A close frame with code 1002 came first (0x88, length, code).
    assert!(
        rest.windows(4).any(|w| w == [0x88, 0x02, 0x03, 0xea]),
        "expected a close frame with 1002, got {rest:?}"
    );
    let (mut fine, _) = srv.ws_v2(&a.0, &a.1, None).await;
    ws_send_for_ack(&mut fine, &a.0, &b.0, "fine").await;
}

#[tokio::test]
async fn a_plain_get_of_ws_is_told_to_upgrade() {
    let srv = TestServer::start().await;
    let (status, body) = srv.get("/ws").await;
    assert_eq!(status, 426, "{body}");
}

#[tokio::test]
async fn the_server_pings_and_closes_a_peer_that_does_not_answer() {
    let srv =
        TestServer::start_with(|c| c.relay.ws_ping_interval = Duration::from_millis(100)).await;
    let token = srv.login("1", "123").await;
    let (mut alive, _) = srv.ws_v2("1", &token, None).await;
    let mut silent = srv.ws().await;
    // The silent one never reads, so never answers: only its raw bytes are read.
    let raw = match silent.socket.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(s) => s,
        _ => unreachable!("plain"),
    };
    let mut bytes = Vec::new();
    let silent_ends = async {
        let _ = timeout(WAIT, raw.read_to_end(&mut bytes))
            .await
            .expect("closed in time");
    };
    // The other one reads, so tungstenite answers each ping, for longer than the silent one
    // lasts.
    let alive_answers = async {
        let mut pings = 0;
        while pings < 6 {
            match timeout(WAIT, futures::StreamExt::next(&mut alive.socket))
                .await
                .expect("in time")
            {
                Some(Ok(WsMessage::Ping(_))) => pings += 1,
                other => panic!("expected pings, got {other:?}"),
            }
        }
    };
    tokio::join!(silent_ends, alive_answers);
    assert!(
        bytes.starts_with(&[0x89, 0x00]),
        "pings came first: {bytes:?}"
    );
    assert!(
        alive.sync().await.is_empty(),
        "the peer that answers is still served"
    );
}

#[tokio::test]
async fn pages_from_other_origins_are_refused() {
    let srv = TestServer::start_with(|c| {
        c.http.allowed_origins = vec!["https://chat.example.com".into()];
    })
    .await;
    let own = format!("http://{}", srv.server.as_ref().unwrap().http_addr());
    assert!(
        srv.ws_from(Some(&own)).await.is_ok(),
        "the server's own pages"
    );
    assert!(
        srv.ws_from(Some("https://chat.example.com")).await.is_ok(),
        "a listed origin"
    );
    assert!(srv.ws_from(None).await.is_ok(), "not a browser");
    for other in ["https://evil.example.net", "null", "http://127.0.0.1:1"] {
        match srv.ws_from(Some(other)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), StatusCode::FORBIDDEN, "{other}");
            }
            Err(e) => panic!("{other}: expected 403, got {e}"),
            Ok(_) => panic!("{other}: expected 403, got an upgrade"),
        }
    }
    let any = TestServer::start_with(|c| c.http.allowed_origins = vec!["*".into()]).await;
    assert!(any.ws_from(Some("https://evil.example.net")).await.is_ok());
}

#[tokio::test]
async fn tcp_and_websocket_share_the_connection_limit() {
    let (srv, a, b) = two_users(|c| c.relay.max_connections = 1).await;
    let _tcp = device(&srv, &a).await;
    let mut ws = srv.ws().await;
    ws.send(Regist::v2(b.0.as_str(), b.1.as_str())).await;
    let (packets, closed) = ws.until_closed().await;
    assert_only_error(&packets, ErrorCode::TooManyConnections);
    assert!(matches!(closed, Closed::Code(1013)), "{closed:?}");

    // With no room even to be told, the upgrade itself is refused.
    let full = TestServer::start_with(|c| {
        c.relay.max_connections = 1;
        c.relay.refusal_backlog = 0;
    })
    .await;
    let _first = full.ws().await;
    match full.ws_from(None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        Err(e) => panic!("expected 503, got {e}"),
        Ok(_) => panic!("expected 503, got an upgrade"),
    }
}

#[tokio::test]
async fn tcp_and_websocket_share_the_per_user_limit() {
    let (srv, a, _) = two_users(|c| c.relay.max_connections_per_user = 1).await;
    let _tcp = device(&srv, &a).await;
    let mut ws = srv.ws().await;
    ws.send(Regist::v2(a.0.as_str(), a.1.as_str())).await;
    let (packets, _) = ws.until_closed().await;
    assert_only_error(&packets, ErrorCode::TooManyConnections);
}

#[tokio::test]
async fn the_rate_limit_applies_on_websocket() {
    let (srv, a, b) = two_users(|c| {
        c.relay.rate_limit = 1;
        c.relay.rate_burst = 1;
    })
    .await;
    let (mut ws, _) = srv.ws_v2(&a.0, &a.1, None).await;
    ws.send(Message::new(a.0.as_str(), b.0.as_str(), "1").with_id("1"))
        .await;
    ws.send(Message::new(a.0.as_str(), b.0.as_str(), "2").with_id("2"))
        .await;
    let mut got = vec![ws.recv().await, ws.recv().await];
    got.sort_by_key(|p| matches!(p, Packet::Error(_)));
    assert!(
        matches!(&got[0], Packet::Ack(a) if a.id.as_deref() == Some("1")),
        "{got:?}"
    );
    assert!(
        matches!(&got[1], Packet::Error(e) if e.code == ErrorCode::RateLimited && e.id.as_deref() == Some("2")),
        "{got:?}"
    );
}

#[tokio::test]
async fn the_idle_timeout_applies_on_websocket() {
    let srv = TestServer::start_with(|c| c.relay.idle_timeout = Duration::from_millis(300)).await;
    let (a, token) = ("1", srv.login("1", "123").await);
    let (mut ws, _) = srv.ws_v2(a, &token, None).await;
    // WebSocket pings and pongs are not frames of the protocol: a page that sends nothing
    // is closed all the same.
    let (_, closed) = ws.until_closed().await;
    assert!(matches!(closed, Closed::Code(1000)), "{closed:?}");
}

#[tokio::test]
async fn a_reader_that_falls_behind_is_closed_and_loses_nothing() {
    let (srv, a, b) = two_users(|c| c.relay.send_queue = 4).await;
    let (mut slow, _) = srv.ws_v2(&b.0, &b.1, None).await;
    let mut tcp = device(&srv, &a).await;
    let text = "y".repeat(16 * 1024);
    let mut last = 0;
    // Enough to fill the socket buffers and then the send queue of a reader that reads
    // nothing.
    for i in 0..400 {
        tcp.send(Message::new(a.0.as_str(), b.0.as_str(), text.as_str()).with_id(i.to_string()))
            .await
            .unwrap();
    }
    while last < 400 {
        match recv_packet(&mut tcp).await {
            Packet::Ack(_) => last += 1,
            other => panic!("expected Acks, got {other:?}"),
        }
    }
    let (packets, closed) = slow.until_closed().await;
    assert!(
        matches!(closed, Closed::Code(1013) | Closed::Abruptly),
        "{closed:?}"
    );
    // Everything is still there for the next connection, in order.
    let resume = packets
        .iter()
        .filter_map(|p| match p {
            Packet::Message(m) => m.seq,
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let (mut again, head) = srv.ws_v2(&b.0, &b.1, Some(resume)).await;
    assert_eq!(head, 400);
    for seq in resume + 1..=400 {
        match again.recv().await {
            Packet::Message(m) => assert_eq!(m.seq, Some(seq)),
            other => panic!("expected message {seq}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn shutdown_closes_websockets_with_1001() {
    let mut srv = TestServer::start().await;
    let token = srv.login("1", "123").await;
    let (mut ws, _) = srv.ws_v2("1", &token, None).await;
    srv.stop().await;
    let (_, closed) = ws.until_closed().await;
    assert!(matches!(closed, Closed::Code(1001)), "{closed:?}");
}

#[tokio::test]
async fn ping_packets_are_answered_in_order() {
    let (srv, [a, b, _]) = three_users().await;
    let (mut ws, _) = srv.ws_v2(&a.0, &a.1, None).await;
    ws.send(Message::new(a.0.as_str(), b.0.as_str(), "first").with_id("f"))
        .await;
    let before = ws.sync().await;
    assert!(
        matches!(before.as_slice(), [Packet::Ack(a)] if a.id.as_deref() == Some("f")),
        "the Ack of an earlier message comes before the Pong: {before:?}"
    );
}
