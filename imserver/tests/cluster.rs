//! Several nodes on one PostgreSQL store (run by `scripts/test` when
//! `IMSERVER_TEST_POSTGRES` is set; skipped on SQLite).

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;

use common::{TestServer, WAIT, postgres_only, send_for_ack, sync};
use improto::{Client, Packet, Regist};
use tokio::time::timeout;

/// A v2 connection of `user` to the relay at `addr`, resuming after `last_seq`.
async fn v2_at(addr: SocketAddr, user: &str, token: &str, last_seq: Option<u64>) -> Client {
    let mut c = timeout(WAIT, Client::connect(addr))
        .await
        .expect("in time")
        .expect("connects");
    let mut regist = Regist::v2(user, token);
    regist.last_seq = last_seq;
    timeout(WAIT, c.handshake(regist))
        .await
        .expect("in time")
        .expect("registered");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_appending_to_one_stream_keep_it_gapless_and_recognise_each_others_retries() {
    if postgres_only("two nodes on one store") {
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
        let mut c = v2_at(addr, &from, &token, None).await;
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
        let mut c = v2_at(addr, &r, &tr, Some(0)).await;
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
    let mut again = v2_at(b.tcp_addr(), &s1, &t1, None).await;
    assert_eq!(
        send_for_ack(&mut again, &s1, &r, &format!("{s1}-7")).await,
        8
    );
    let mut c = v2_at(a.tcp(), &r, &tr, Some(2 * EACH as u64)).await;
    assert!(sync(&mut c).await.is_empty(), "no second copy");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_start_together_on_a_new_database_migrate_it_once() {
    if postgres_only("two nodes on one store") {
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
