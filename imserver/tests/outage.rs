//! PostgreSQL and NATS going away during traffic, and coming back, as a node sees it: each
//! service is reached through a proxy the test cuts and restores (see `common::proxy`).
//! Run on PostgreSQL (`IMSERVER_TEST_POSTGRES`; the NATS test also `IMSERVER_TEST_NATS`).

mod common;

use common::proxy::{Proxy, through, upstream};
use common::{TestServer, WAIT, cluster_only, recv_packet, send_for_ack, sync, v2_at};
use improto::{Client, ErrorCode, Message, Packet};
use imserver::config::{AuthMode, Backend, Secret};
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgresql_is_away_messages_are_refused_as_unavailable_and_go_through_after() {
    if common::postgres().is_none() {
        eprintln!("skipped: needs IMSERVER_TEST_POSTGRES");
        return;
    }
    let mut proxy = None;
    let srv = TestServer::start_with(|c| {
        c.auth.auth = AuthMode::Token;
        let Backend::Postgres(Secret(url)) = &c.store.store else {
            unreachable!("on PostgreSQL")
        };
        let p = futures::executor::block_on(Proxy::start(upstream(url)));
        c.store.store = Backend::Postgres(Secret(through(url, p.addr)));
        proxy = Some(p);
    })
    .await;
    let proxy = proxy.unwrap();
    let (ann, ta) = srv.user("Ann").await;
    let (bob, tb) = srv.user("Bob").await;
    let mut a = v2_at(srv.tcp(), &ann, &ta, None).await.0;
    assert_eq!(send_for_ack(&mut a, &ann, &bob, "before").await, 1);

    proxy.cut();
    a.send(Message::new(&ann, &bob, "during").with_id("during"))
        .await
        .unwrap();
    match recv_packet(&mut a).await {
        Packet::Error(e) => {
            assert_eq!(
                (e.code, e.id.as_deref()),
                (ErrorCode::Unavailable, Some("during"))
            );
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    // The connection stays open, and the store says it is not ready.
    let (status, _) = srv.get("/readyz").await;
    assert_eq!(status, 503);

    proxy.restore();
    // The node recovers by itself: the same message, sent again, is stored once.
    let seq = timeout(WAIT, async {
        loop {
            a.send(Message::new(&ann, &bob, "during").with_id("during"))
                .await
                .unwrap();
            match recv_packet(&mut a).await {
                Packet::Ack(ack) => return ack.seq,
                Packet::Error(e) if e.code == ErrorCode::Unavailable => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                other => panic!("expected an Ack, got {other:?}"),
            }
        }
    })
    .await
    .expect("stored once PostgreSQL is back");
    assert_eq!(seq, 2);
    // Nothing half-written: the receiver's stream is the two messages, once each, in order.
    let mut b = v2_at(srv.tcp(), &bob, &tb, Some(0)).await.0;
    let got: Vec<(String, Option<u64>)> = sync(&mut b)
        .await
        .into_iter()
        .map(|p| match p {
            Packet::Message(m) => (m.message, m.seq),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        [("before".into(), Some(1)), ("during".into(), Some(2))]
    );
}

/// The next message on `c` as `(text, seq)`, passing over other packets.
async fn next(c: &mut Client) -> (String, Option<u64>) {
    loop {
        if let Packet::Message(m) = recv_packet(c).await {
            return (m.message, m.seq);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_nats_is_away_messages_are_stored_and_reach_the_other_node_when_it_is_back() {
    if cluster_only("NATS going away") {
        return;
    }
    // Node B reaches NATS through the proxy; node A directly, so that what A publishes
    // while B is away is lost for B (NATS keeps nothing for a subscriber that is gone).
    let nats = common::nats().unwrap();
    let proxy = Proxy::start(upstream(&nats)).await;
    let a = TestServer::start_with(|c| {
        c.auth.auth = AuthMode::Token;
        common::on_test_bus(c);
    })
    .await;
    let b = a
        .another_node_with(|c| c.bus.bus = Some(through(&nats, proxy.addr)))
        .await;
    let (ann, ta) = a.user("Ann").await;
    let (bob, tb) = a.user("Bob").await;
    let mut ann1 = v2_at(a.tcp(), &ann, &ta, None).await.0;
    let mut bob1 = v2_at(b.tcp_addr(), &bob, &tb, None).await.0;
    assert_eq!(send_for_ack(&mut ann1, &ann, &bob, "m1").await, 1);
    assert_eq!(next(&mut bob1).await, ("m1".to_owned(), Some(1)));

    // Node B has a token of Ann's in its cache; Ann logs out on node A while B is away
    // (B cannot hear of it then).
    let (_, spare) = a.user_login(&ann).await;
    let friends_on_b = |token: String| {
        let url = format!("http://{}/friends/requests", b.http_addr());
        async move {
            let r = reqwest::Client::new().get(url).bearer_auth(token).send();
            timeout(WAIT, r).await.unwrap().unwrap().status().as_u16()
        }
    };
    assert_eq!(friends_on_b(spare.clone()).await, 200);

    proxy.cut();
    assert_eq!(
        a.post_as("/logout", &spare, serde_json::json!({})).await.0,
        200
    );
    // Stored and acknowledged all the same (node A does not know B is away).
    for i in 2..=5 {
        assert_eq!(
            send_for_ack(&mut ann1, &ann, &bob, &format!("m{i}")).await,
            i
        );
    }
    proxy.restore();
    // Once the nodes are back on NATS, Bob gets what he missed, in order, and live again.
    for i in 2..=5 {
        assert_eq!(next(&mut bob1).await, (format!("m{i}"), Some(i)));
    }
    let live = timeout(WAIT, async {
        let mut i = 6;
        loop {
            assert_eq!(
                send_for_ack(&mut ann1, &ann, &bob, &format!("m{i}")).await,
                i
            );
            let got = next(&mut bob1).await;
            assert_eq!(got, (format!("m{i}"), Some(i)));
            i += 1;
            if i > 7 {
                return;
            }
        }
    });
    live.await.expect("live again");
    // Back on NATS, node B forgot what it had cached: the token revoked meanwhile is refused.
    timeout(WAIT, async {
        while friends_on_b(spare.clone()).await != 401 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("node B refuses the token revoked while it was away");
    b.shutdown().await;
}
