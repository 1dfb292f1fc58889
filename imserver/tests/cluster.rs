//! Several nodes on one PostgreSQL store (run by `scripts/test` when
//! `IMSERVER_TEST_POSTGRES` is set; skipped on SQLite).

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;

use common::{TestServer, WAIT, cluster_only, send_for_ack, sync, v2_at};
use improto::{Client, Packet, Regist};
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_appending_to_one_stream_keep_it_gapless_and_recognise_each_others_retries() {
    if cluster_only("two nodes on one store") {
        return;
    }
    let a = TestServer::start_secure().await;
    let b = a.another_node().await;
    let (r, tr) = a.user("Rae").await;
    let (s1, t1) = a.user("Sam").await;
    let (s2, t2) = a.user("Sol").await;

    // Two senders, one on each node, to one receiver, at the same time.
    const EACH: usize = 150;
    let send = |addr: SocketAddr, from: String, token: String, to: String| async move {
        let mut c = v2_at(addr, &from, &token, None).await.0;
        let mut seqs = Vec::new();
        for i in 0..EACH {
            seqs.push(send_for_ack(&mut c, &from, &to, &format!("{from}-{i}")).await);
        }
        seqs
    };
    let (seqs1, seqs2) = tokio::join!(
        tokio::spawn(send(a.tcp(), s1.clone(), t1.clone(), r.clone())),
        tokio::spawn(send(b.tcp_addr(), s2.clone(), t2.clone(), r.clone())),
    );
    // Each sender's own stream: 1, 2, 3, ...
    let want: Vec<u64> = (1..=EACH as u64).collect();
    assert_eq!(seqs1.unwrap(), want);
    assert_eq!(seqs2.unwrap(), want);

    // The receiver's stream, read from either node: every message once, seqs 1..=300.
    for addr in [a.tcp(), b.tcp_addr()] {
        let mut c = v2_at(addr, &r, &tr, Some(0)).await.0;
        let mut seqs = Vec::new();
        let mut texts = HashSet::new();
        while seqs.len() < 2 * EACH {
            for p in sync(&mut c).await {
                let Packet::Message(m) = p else {
                    panic!("{p:?}")
                };
                seqs.push(m.seq.expect("a seq"));
                assert!(texts.insert(m.message), "each message once");
            }
        }
        assert_eq!(seqs, (1..=2 * EACH as u64).collect::<Vec<_>>(), "gapless");
    }

    // A retry that lands on the other node is recognised: the same seq, nothing new.
    let mut again = v2_at(b.tcp_addr(), &s1, &t1, None).await.0;
    assert_eq!(
        send_for_ack(&mut again, &s1, &r, &format!("{s1}-7")).await,
        8
    );
    let mut c = v2_at(a.tcp(), &r, &tr, Some(2 * EACH as u64)).await.0;
    assert!(sync(&mut c).await.is_empty(), "no second copy");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_start_together_on_a_new_database_migrate_it_once() {
    if cluster_only("two nodes on one store") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = imserver::Config::local(dir.path());
    common::on_test_store(&mut config);
    let (one, two, three) = tokio::join!(
        imserver::Server::start(config.clone()),
        imserver::Server::start(config.clone()),
        imserver::Server::start(config.clone()),
    );
    let servers = [one, two, three].map(|s| s.expect("every node starts"));
    let http = reqwest::Client::new();
    for s in &servers {
        let url = format!("http://{}/readyz", s.http_addr());
        let status = timeout(WAIT, http.get(url).send())
            .await
            .unwrap()
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    for s in servers {
        s.shutdown().await;
    }
    if let imserver::config::Backend::Postgres(imserver::config::Secret(url)) = &config.store.store
    {
        common::drop_database(url);
    }
}

/// Two nodes on one store and the bus; `drop_every` is `--bus-drop-every` on both.
async fn two_nodes(drop_every: u64) -> (TestServer, imserver::Server) {
    let a = TestServer::start_with(|c| {
        c.auth.auth = imserver::config::AuthMode::Token;
        common::on_test_bus(c);
        c.bus.bus_drop_every = drop_every;
    })
    .await;
    let b = a.another_node().await;
    (a, b)
}

/// The next `Message` on `c`, passing over events and live frames.
async fn next_message(c: &mut Client) -> improto::Message {
    loop {
        match common::recv_packet(c).await {
            Packet::Message(m) => return m,
            Packet::Event(_) | Packet::Ack(_) | Packet::Typing(_) | Packet::Presence(_) => continue,
            other => panic!("expected a Message, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_serve_one_messenger_chat_groups_friends_typing_and_history() {
    use common::process::spawn;
    if cluster_only("three nodes") {
        return;
    }
    // Three imserver processes on one database and one bus.
    let dir = tempfile::tempdir().unwrap();
    let db = common::database_for(dir.path()).unwrap();
    let prefix = db.rsplit_once('/').unwrap().1.to_owned();
    let nats = common::nats().unwrap();
    let args = [
        "--auth",
        "token",
        "--regist-limit",
        "0",
        "--login-limit",
        "0",
        "--bus",
        &nats,
        "--bus-prefix",
        &prefix,
    ];
    let nodes: Vec<_> = (0..3).map(|_| spawn(dir.path(), None, &args)).collect();
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);
    let account = |name: &str| {
        serde_json::json!({"password": "pw", "name": name, "sex": "-",
        "email": format!("{name}@example.com"), "signature": "-"})
    };
    let mut users = Vec::new();
    for (name, node) in [("Ann", n1), ("Bob", n2), ("Cy", n3)] {
        let (status, body) = post_at(node.http, "/regist", "", account(name)).await;
        assert_eq!(status, 200, "{body}");
        let id = body["user"].as_str().unwrap().to_owned();
        let login = serde_json::json!({"user": id, "password": "pw"});
        let (_, body) = post_at(node.http, "/login", "", login).await;
        users.push((id, body["token"].as_str().unwrap().to_owned()));
    }
    let [(ann, ta), (bob, tb), (cy, tc)] = <[_; 3]>::try_from(users).unwrap();
    // Ann has a device on node 1 and one on node 2; Bob is on node 2, Cy on node 3.
    let mut ann1 = v2_at(n1.tcp, &ann, &ta, None).await.0;
    let mut ann2 = v2_at(n2.tcp, &ann, &ta, None).await.0;
    let mut bob2 = v2_at(n2.tcp, &bob, &tb, None).await.0;
    let mut cy3 = v2_at(n3.tcp, &cy, &tc, None).await.0;

    // 1:1 from node 1 to node 2; Ann's other device gets the copy.
    assert_eq!(send_for_ack(&mut ann1, &ann, &bob, "hi bob").await, 1);
    assert_eq!(next_message(&mut bob2).await.message, "hi bob");
    let copy = next_message(&mut ann2).await;
    assert_eq!((copy.message.as_str(), copy.seq), ("hi bob", Some(1)));
    // And back, from node 2 to both of Ann's devices.
    assert_eq!(send_for_ack(&mut bob2, &bob, &ann, "hi ann").await, 2);
    for c in [&mut ann1, &mut ann2] {
        let m = next_message(c).await;
        assert_eq!((m.message.as_str(), m.seq), ("hi ann", Some(2)));
    }

    // A friend request from node 3, accepted on node 2, and the friend lists of every node
    // (node 3 has Ann's cached: another node's change makes it forget it).
    let (_, before) = get_at(n3.http, &format!("/list/{ann}"), &ta).await;
    assert_eq!(before.as_array().map(Vec::len), Some(0), "{before}");
    let ask = serde_json::json!({"user": ann, "message": "hello"});
    assert_eq!(post_at(n3.http, "/friends/requests", &tc, ask).await.0, 200);
    for c in [&mut ann1, &mut ann2] {
        match common::recv_packet(c).await {
            Packet::Event(e) => assert_eq!(e.user.as_deref(), Some(cy.as_str())),
            other => panic!("expected the friend request, got {other:?}"),
        }
    }
    let accept = format!("/friends/requests/{cy}/accept");
    assert_eq!(
        post_at(n2.http, &accept, &ta, serde_json::json!({}))
            .await
            .0,
        200
    );
    match common::recv_packet(&mut cy3).await {
        Packet::Event(e) => assert_eq!(e.user.as_deref(), Some(ann.as_str())),
        other => panic!("expected the acceptance, got {other:?}"),
    }
    for node in [n1, n2, n3] {
        timeout(WAIT, async {
            loop {
                let (_, list) = get_at(node.http, &format!("/list/{ann}"), &ta).await;
                let friends = list.as_array().map_or(&[][..], Vec::as_slice);
                if friends.iter().any(|f| f["name"] == "Cy") {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("every node's friend list has the new friend");
    }

    // A group made on node 1; Bob types and writes to it from node 2.
    let members = serde_json::json!({"name": "Trio", "members": [bob, cy]});
    let (status, body) = post_at(n1.http, "/groups", &ta, members).await;
    assert_eq!(status, 200, "{body}");
    let group = body["group"].as_str().unwrap().to_owned();
    bob2.typing(&ann).await.unwrap();
    loop {
        match common::recv_packet(&mut ann1).await {
            Packet::Typing(t) => {
                assert_eq!(t.sender.as_deref(), Some(bob.as_str()));
                break;
            }
            // The acceptance and the group, told to Ann too.
            Packet::Event(_) => continue,
            other => panic!("expected Bob typing, got {other:?}"),
        }
    }
    assert!(send_for_ack(&mut bob2, &bob, &group, "to all").await > 0);
    for c in [&mut ann1, &mut ann2, &mut cy3] {
        let m = next_message(c).await;
        assert_eq!(
            (m.message.as_str(), m.receiver.as_str()),
            ("to all", group.as_str())
        );
    }

    // History is the same from every node.
    let mut pages = Vec::new();
    for node in [n1, n2, n3] {
        for peer in [&bob, &group] {
            pages.push(get_at(node.http, &format!("/history/{peer}"), &ta).await);
        }
    }
    assert!(pages.chunks(2).all(|p| p == &pages[..2]), "{pages:?}");
    assert_eq!(pages[0].1["messages"].as_array().map(Vec::len), Some(2));
    drop(nodes);
    common::drop_database(&db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_the_bus_loses_are_read_from_the_store_in_order() {
    if cluster_only("a lossy bus") {
        return;
    }
    // Every third bus message of entries is left out, on both nodes.
    let (a, b) = two_nodes(3).await;
    let (ann, ta) = a.user("Ann").await;
    let (bob, tb) = a.user("Bob").await;
    let mut ann1 = v2_at(a.tcp(), &ann, &ta, None).await.0;
    let mut bob1 = v2_at(b.tcp_addr(), &bob, &tb, None).await.0;
    const N: u64 = 40;
    for i in 1..=N {
        assert_eq!(
            send_for_ack(&mut ann1, &ann, &bob, &format!("m{i}")).await,
            i
        );
    }
    for i in 1..=N {
        let m = next_message(&mut bob1).await;
        assert_eq!(
            (m.message, m.seq),
            (format!("m{i}"), Some(i)),
            "in order, none missing, none twice"
        );
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_on_one_node_is_refused_on_the_other() {
    if cluster_only("cache notices between nodes") {
        return;
    }
    let (a, b) = two_nodes(0).await;
    let (_, token) = a.user("Ann").await;
    // Node B has the token in its cache.
    assert_eq!(
        get_at(b.http_addr(), "/friends/requests", &token).await.0,
        200
    );
    assert_eq!(
        a.post_as("/logout", &token, serde_json::json!({})).await.0,
        200
    );
    let started = std::time::Instant::now();
    timeout(WAIT, async {
        while get_at(b.http_addr(), "/friends/requests", &token).await.0 != 401 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("node B refuses the revoked token");
    eprintln!("refused on the other node after {:?}", started.elapsed());
    b.shutdown().await;
}

/// GET `path` on the node whose HTTP address is `node`, as the owner of `token`.
async fn get_at(node: SocketAddr, path: &str, token: &str) -> (u16, serde_json::Value) {
    call_at(node, reqwest::Method::GET, path, token, None).await
}

/// POST `body` to `path` on the node whose HTTP address is `node`, as the owner of `token`.
async fn post_at(
    node: SocketAddr,
    path: &str,
    token: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    call_at(node, reqwest::Method::POST, path, token, Some(body)).await
}

async fn call_at(
    node: SocketAddr,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let url = format!("http://{node}{path}");
    let mut req = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let r = timeout(WAIT, req.send()).await.unwrap().unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_stream_loses_nothing_acknowledged_and_its_clients_go_on_elsewhere() {
    use common::process::{acked_stream, login, spawn, stream_of, until_acked};
    if cluster_only("three nodes") {
        return;
    }
    // Three imserver processes on one database and one bus.
    let dir = tempfile::tempdir().unwrap();
    let db = common::database_for(dir.path()).unwrap();
    let prefix = db.rsplit_once('/').unwrap().1.to_owned();
    let nats = common::nats().unwrap();
    let args = [
        "--demo",
        "--auth",
        "token",
        "--rate-limit",
        "0",
        "--bus",
        &nats,
        "--bus-prefix",
        &prefix,
    ];
    let mut nodes: Vec<_> = (0..3).map(|_| spawn(dir.path(), None, &args)).collect();
    let http = reqwest::Client::new();

    // User 2 listens on node 3 throughout.
    let t2 = login(&http, nodes[2].http, "2", "123").await;
    let mut listener = v2_at(nodes[2].tcp, "2", &t2, None).await.0;
    // User 1 streams acknowledged messages to 2 through node 1, which dies mid-stream.
    let stream = acked_stream(&nodes[0]).await;
    until_acked(&stream.acked, 50).await;
    nodes[0].child.kill().unwrap(); // SIGKILL
    nodes[0].child.wait().unwrap();
    let sent = stream.streamer.await.unwrap();
    stream.collector.await.unwrap();
    let acked = stream.acked.lock().unwrap().clone();
    assert!(acked.len() >= 50);
    eprintln!("node 1 killed: {} acknowledged of {sent} sent", acked.len());

    // The sender goes on through node 2, resuming from the last seq it was acknowledged,
    // and sends again everything it was not told about (stored once, whichever node).
    let t1 = login(&http, nodes[1].http, "1", "123").await;
    let last = acked.last().unwrap().1;
    let mut sender = v2_at(nodes[1].tcp, "1", &t1, Some(last)).await.0;
    for i in acked.len() as u64..sent + 5 {
        let text = format!("durable {i}");
        let m = improto::Message::new("1", "2", text).with_id(format!("c-{i}"));
        sender.send(m).await.unwrap();
    }
    let mut seqs = Vec::new();
    while seqs.len() < (sent + 5) as usize - acked.len() {
        match common::recv_packet(&mut sender).await {
            Packet::Ack(a) => seqs.push(a.seq),
            Packet::Error(e) => panic!("{e:?}"),
            _ => {}
        }
    }

    // The receiver's stream, from node 2: every acknowledged message is there, nothing is
    // twice, and the seqs have no gap.
    let entries = stream_of(nodes[1].tcp, "2", &t2).await;
    let seqs: Vec<u64> = entries.iter().map(|e| e.0).collect();
    assert_eq!(
        seqs,
        (1..=entries.len() as u64).collect::<Vec<_>>(),
        "gapless"
    );
    let ids: Vec<&str> = entries.iter().map(|e| e.1.as_str()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "nothing twice");
    for (id, _) in &acked {
        assert!(unique.contains(id.as_str()), "{id} was acknowledged");
    }
    for i in 0..sent + 5 {
        assert!(
            unique.contains(format!("c-{i}").as_str()),
            "c-{i} sent again"
        );
    }

    // The listener on node 3 got all of it live, in order, without a gap, across the death
    // of the node the messages first came through.
    let mut got = Vec::new();
    while got.len() < entries.len() {
        if let Packet::Message(m) = common::recv_packet(&mut listener).await {
            got.push(m.seq.unwrap());
        }
    }
    assert_eq!(got, seqs);
    for node in &mut nodes[1..] {
        let _ = node.child.kill();
    }
    common::drop_database(&db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_of_a_user_counts_their_connections_on_every_node() {
    if cluster_only("connections counted on every node") {
        return;
    }
    let a = TestServer::start_with(|c| {
        c.auth.auth = imserver::config::AuthMode::Token;
        c.relay.max_connections_per_user = 2;
        common::on_test_bus(c);
    })
    .await;
    let b = a.another_node().await;
    let (ann, token) = a.user("Ann").await;
    let one = v2_at(a.tcp(), &ann, &token, None).await.0;
    let _two = v2_at(b.tcp_addr(), &ann, &token, None).await.0;
    // A third, on either node, is one too many.
    for addr in [a.tcp(), b.tcp_addr()] {
        let mut three = timeout(WAIT, Client::connect(addr)).await.unwrap().unwrap();
        three.send(Regist::v2(&ann, &token)).await.unwrap();
        common::expect_error(&mut three, improto::ErrorCode::TooManyConnections).await;
        common::expect_eof(&mut three).await;
    }
    // Once one closes, there is room again, on the other node.
    drop(one);
    timeout(WAIT, async {
        loop {
            let mut c = Client::connect(b.tcp_addr()).await.unwrap();
            if c.handshake(Regist::v2(&ann, &token)).await.is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("room again after a connection closed");
    b.shutdown().await;
}
