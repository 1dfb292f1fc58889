//! The `imserver` binary as an operator runs it: startup line, bind errors, signals,
//! `kill -9` and restart on the same data dir.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{AckedStream, acked_stream, login, post, spawn, stream_of, until_acked};
use common::{WAIT, recv_message, say};
use improto::{Client, Message, Packet, Regist};
use tokio::time::timeout;

/// Runs the binary to its exit with a fresh data dir; returns whether it succeeded and its
/// stderr.
fn run_to_exit(args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_imserver"))
        .args(args)
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let status = wait_exit(&mut child);
    (status.success(), reader.join().unwrap())
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "imserver did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn client(tcp: SocketAddr, user: &str) -> Client {
    let mut c = timeout(WAIT, Client::connect(tcp)).await.unwrap().unwrap();
    c.send(Regist::new(user)).await.unwrap();
    c
}

#[tokio::test]
async fn sigterm_and_sigint_stop_the_server_with_exit_code_0() {
    for signal in ["-TERM", "-INT"] {
        let dir = tempfile::tempdir().unwrap();
        let mut p = spawn(dir.path(), None, &["--auth", "open"]);
        let mut c = client(p.tcp, "1").await;
        let status = Command::new("kill")
            .args([signal, &p.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        assert!(wait_exit(&mut p.child).success(), "{signal}");
        // Connections were closed, not abandoned.
        assert!(matches!(
            timeout(WAIT, c.recv()).await.unwrap(),
            Ok(None) | Err(_)
        ));
    }
}

#[tokio::test]
async fn a_bind_failure_is_a_clear_error_and_a_nonzero_exit() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let (ok, stderr) = run_to_exit(&["--http-addr", &port, "--tcp-addr", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(stderr.contains("cannot bind the HTTP address"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn everything_survives_kill_9_and_the_ports_can_be_reused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn(dir.path(), None, &["--demo", "--auth", "open"]);
    let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();

    // A new account, and stored messages for an offline user.
    let account = serde_json::json!(
        {"password":"pw","name":"K","sex":"f","email":"k@x","signature":"s"}
    );
    let created = post(&http, format!("http://{}/regist", p.http), account).await;
    let id = created["user"].as_str().unwrap().to_string();
    let mut a = client(p.tcp, "1").await;
    for i in 0..10 {
        say(&mut a, "1", "2", &format!("survivor {i}")).await;
    }
    // Everything before this probe on the same connection has been stored once user 3
    // gets it.
    let mut c = client(p.tcp, "3").await;
    say(&mut a, "1", "3", "probe").await;
    assert_eq!(recv_message(&mut c).await.message, "probe");

    p.child.kill().unwrap(); // SIGKILL
    p.child.wait().unwrap();

    // What was said and the password stay out of the logs (info level).
    let log = p.log.lock().unwrap().join("\n");
    assert!(log.contains("registered"), "the log is captured: {log}");
    for secret in ["survivor", "probe", "\"pw\"", "password"] {
        assert!(!log.contains(secret), "{secret} appears in the log:\n{log}");
    }

    // Same data dir, same ports, right away.
    let p2 = spawn(dir.path(), Some((p.http, p.tcp)), &["--auth", "open"]);
    assert_eq!((p2.http, p2.tcp), (p.http, p.tcp));
    // A fresh HTTP client: the old one's pooled connections died with the old process.
    let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();

    let login = http
        .post(format!("http://{}/login", p2.http))
        .json(&serde_json::json!({"user": id, "password": "pw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let friends: serde_json::Value = http
        .get(format!("http://{}/list/1", p2.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(friends, serde_json::json!([{"user": "2", "name": "WuYW"}]));

    let mut b = client(p2.tcp, "2").await;
    for i in 0..10 {
        assert_eq!(recv_message(&mut b).await.message, format!("survivor {i}"));
    }
}

#[tokio::test]
async fn acknowledged_messages_survive_kill_9_exactly_once_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn(dir.path(), None, &["--demo", "--rate-limit", "0"]);

    // A stream of messages with client ids; a second task collects the server's Acks.
    let AckedStream {
        receiver_token,
        acked,
        collector,
        streamer,
    } = acked_stream(&p).await;

    // Kill the server in the middle of the stream, once a good number is acknowledged.
    until_acked(&acked, 300).await;
    p.child.kill().unwrap(); // SIGKILL, mid-stream
    p.child.wait().unwrap();
    let sent = timeout(WAIT, streamer).await.unwrap().unwrap();
    timeout(WAIT, collector).await.unwrap().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        sent as usize > acked.len(),
        "killed while messages were in flight"
    );

    // Restart on the same data dir and ports; the receiver drains its inbox from the start.
    let p2 = spawn(dir.path(), Some((p.http, p.tcp)), &[]);
    let stream = stream_of(p2.tcp, "2", &receiver_token).await;
    let seqs: Vec<u64> = stream.iter().map(|(seq, _)| *seq).collect();
    let expected_seqs: Vec<u64> = (1..=stream.len() as u64).collect();
    assert_eq!(seqs, expected_seqs, "seqs start at 1 without gaps");
    let got: Vec<String> = stream.into_iter().map(|(_, id)| id).collect();
    // Everything acknowledged is there, once, at the seq its Ack named, and the stored
    // messages are exactly a prefix of the stream, in order.
    for (id, seq) in &acked {
        assert_eq!(&got[*seq as usize - 1], id, "acknowledged {id} at {seq}");
    }
    let expected: Vec<String> = (0..got.len()).map(|i| format!("c-{i}")).collect();
    assert_eq!(got, expected);
    assert!(got.len() >= acked.len());
}

/// How many threads process `pid` has.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("a Linux /proc")
        .count()
}

#[tokio::test]
async fn a_burst_of_reconnects_starts_no_threads() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(
        dir.path(),
        None,
        &["--auth", "open", "--store-readers", "2"],
    );
    let before = threads(p.child.id());
    // Each `Regist` reads its user's inbox from the store; a message to oneself comes back
    // only once that is done.
    let tcp = p.tcp;
    let conns = futures::future::join_all((0..300).map(|i| async move {
        let user = (1000 + i).to_string();
        let mut c = client(tcp, &user).await;
        say(&mut c, &user, &user, "back to me").await;
        assert_eq!(recv_message(&mut c).await.sender, user);
        c
    }))
    .await;
    let after = threads(p.child.id());
    assert!(
        after <= before,
        "{before} threads before 300 connections registered at once, {after} after"
    );
    drop(conns);
}

/// The process's resident memory, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("a Linux /proc");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/<pid>/status");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[tokio::test]
async fn password_hashing_gives_its_memory_back() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(
        dir.path(),
        None,
        &["--regist-limit", "0", "--login-limit", "0"],
    );
    let before = rss(p.child.id());
    // Each registration and each login hashes with 19 MiB of memory, two at a time (the
    // default --password-hashers); an allocator that kept it would hold 38 MiB or more.
    let http = reqwest::Client::new();
    let addr = p.http;
    futures::future::join_all((0..10).map(|_| {
        let http = http.clone();
        async move {
            let account = serde_json::json!({"password": "pw", "name": "Neo", "sex": "m",
                "email": "neo@example.com", "signature": "hi"});
            let created = post(&http, format!("http://{addr}/regist"), account).await;
            let user = created["user"]
                .as_str()
                .unwrap_or_else(|| panic!("no user id in {created}"));
            login(&http, addr, user, "pw").await;
        }
    }))
    .await;
    let after = rss(p.child.id());
    let grown = after.saturating_sub(before);
    assert!(
        grown < 16 << 20,
        "RSS grew by {} KiB over 10 registrations and 10 logins ({before} -> {after} bytes)",
        grown >> 10
    );
}

/// The kinds of the events in `user`'s stream, from the start.
async fn events(tcp: SocketAddr, user: &str, token: &str) -> Vec<String> {
    let mut c = timeout(WAIT, Client::connect(tcp)).await.unwrap().unwrap();
    let regist = Regist::v2(user, token).resume_after(0);
    timeout(WAIT, c.handshake(regist)).await.unwrap().unwrap();
    c.send(Packet::Ping).await.unwrap();
    let mut kinds = Vec::new();
    loop {
        match timeout(WAIT, c.recv()).await.unwrap().unwrap() {
            Some(Packet::Event(e)) => kinds.push(e.kind.to_string()),
            Some(Packet::Pong) => return kinds,
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_friend_acceptance_killed_mid_way_is_on_both_sides_or_neither() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ["--regist-limit", "0", "--login-limit", "0"];
    let mut p = spawn(dir.path(), None, &limits);
    let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let mut users = Vec::new();
    for i in 0..40 {
        let account = serde_json::json!({"password": "pw", "name": format!("u{i}"), "sex": "-",
            "email": "-", "signature": "-"});
        let created = post(&http, format!("http://{}/regist", p.http), account).await;
        let id = created["user"].as_str().unwrap().to_owned();
        let token = login(&http, p.http, &id, "pw").await;
        users.push((id, token));
    }
    let pairs: Vec<_> = users
        .chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect();
    for (a, b) in &pairs {
        let r = http
            .post(format!("http://{}/friends/requests", p.http))
            .bearer_auth(&a.1)
            .json(&serde_json::json!({"user": b.0}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // The answers go one after another; the server dies in the middle of them.
    let accepted = Arc::new(Mutex::new(0));
    let (answers, count) = (pairs.clone(), accepted.clone());
    let (client, addr) = (http.clone(), p.http);
    let acceptor = tokio::spawn(async move {
        for (a, b) in answers {
            let url = format!("http://{addr}/friends/requests/{}/accept", a.0);
            match client.post(url).bearer_auth(&b.1).send().await {
                Ok(r) if r.status() == 200 => *count.lock().unwrap() += 1,
                _ => return,
            }
        }
    });
    timeout(WAIT, async {
        while *accepted.lock().unwrap() < pairs.len() / 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("answers are accepted");
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    let _ = timeout(WAIT, acceptor).await;
    let confirmed = *accepted.lock().unwrap();

    let p2 = spawn(dir.path(), None, &limits);
    let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let list = |who: &(String, String)| {
        let req = http
            .get(format!("http://{}/list/{}", p2.http, who.0))
            .bearer_auth(&who.1);
        async move {
            req.send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let mut friends = 0;
    for (a, b) in &pairs {
        let (a_list, b_list) = (list(a).await, list(b).await);
        let a_has_b = a_list
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["user"] == b.0.as_str());
        let b_has_a = b_list
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["user"] == a.0.as_str());
        assert_eq!(
            a_has_b, b_has_a,
            "a friendship on one side only: {a_list} {b_list}"
        );
        // The events went with the change, in the same transaction.
        let (a_events, b_events) = (
            events(p2.tcp, &a.0, &a.1).await,
            events(p2.tcp, &b.0, &b.1).await,
        );
        if a_has_b {
            friends += 1;
            assert_eq!(a_events, ["friend_accepted"]);
            assert_eq!(b_events, ["friend_request", "friend_accepted"]);
        } else {
            assert!(a_events.is_empty(), "{a_events:?}");
            assert_eq!(b_events, ["friend_request"]);
        }
    }
    assert!(
        friends >= confirmed,
        "every confirmed acceptance survived the kill"
    );
}

#[tokio::test]
async fn a_group_message_retried_after_kill_9_is_in_every_members_stream_once() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--demo", "--rate-limit", "0", "--regist-limit", "0"];
    let mut p = spawn(dir.path(), None, &flags);
    let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let account = serde_json::json!({"password": "pw", "name": "Neo", "sex": "-",
        "email": "-", "signature": "-"});
    let neo = post(&http, format!("http://{}/regist", p.http), account).await;
    let neo = neo["user"].as_str().unwrap().to_owned();
    let tokens = [
        ("1".to_owned(), login(&http, p.http, "1", "123").await),
        ("2".to_owned(), login(&http, p.http, "2", "123").await),
        (neo.clone(), login(&http, p.http, &neo, "pw").await),
    ];
    let made: serde_json::Value = http
        .post(format!("http://{}/groups", p.http))
        .bearer_auth(&tokens[0].1)
        .json(&serde_json::json!({"name": "crash", "members": ["2", neo]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let group = made["group"].as_str().unwrap().to_owned();

    // User 1 streams messages to the group, at most 200 unacknowledged; the server is killed
    // in the middle.
    let send_all = |tcp: SocketAddr, count: Option<u64>| {
        let (token, group) = (tokens[0].1.clone(), group.clone());
        async move {
            let mut c = timeout(WAIT, Client::connect(tcp)).await.unwrap().unwrap();
            timeout(WAIT, c.handshake(Regist::v2("1", token)))
                .await
                .unwrap()
                .unwrap();
            let (mut tx, mut rx) = c.split();
            let acked = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
            let acks = acked.clone();
            let in_group = group.clone();
            let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let gone = closed.clone();
            let collector = tokio::spawn(async move {
                while let Ok(Some(packet)) = rx.recv().await {
                    match packet {
                        Packet::Ack(a) => {
                            assert_eq!(a.group.as_deref(), Some(in_group.as_str()));
                            let id = a.id.expect("ids are echoed");
                            acks.lock().unwrap().push((id, a.seq));
                        }
                        // Its stream replayed: the group_added, copies stored before.
                        Packet::Event(_) | Packet::Message(_) => {}
                        other => panic!("{other:?}"),
                    }
                }
                gone.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            let window = acked.clone();
            let streamer = tokio::spawn(async move {
                for i in 0u64.. {
                    if count == Some(i) {
                        // Open until the acks are in: a client's close ends its connection.
                        return (i, Some(tx));
                    }
                    while i >= window.lock().unwrap().len() as u64 + 200 {
                        if closed.load(std::sync::atomic::Ordering::SeqCst) {
                            return (i, None); // the server is gone
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    let m = Message::new("1", group.as_str(), format!("in the group {i}"))
                        .with_id(format!("c-{i}"));
                    if tx.send(m).await.is_err() {
                        return (i, None); // the server is gone
                    }
                }
                unreachable!()
            });
            (acked, collector, streamer)
        }
    };
    let (acked, collector, streamer) = send_all(p.tcp, None).await;
    until_acked(&acked, 300).await;
    p.child.kill().unwrap(); // SIGKILL, mid-stream
    p.child.wait().unwrap();
    let (sent, _) = timeout(WAIT, streamer).await.unwrap().unwrap();
    timeout(WAIT, collector).await.unwrap().unwrap();
    let before: Vec<(String, u64)> = acked.lock().unwrap().clone();
    assert!(
        sent as usize > before.len(),
        "killed with messages in flight"
    );

    // After the restart, the sender sends every message again, with the same ids (a client
    // that kept what it sent would send only the unacknowledged ones; this is the harder
    // case): each is acknowledged, those acknowledged before at the same seq.
    let p2 = spawn(dir.path(), Some((p.http, p.tcp)), &flags);
    let (acked, collector, streamer) = send_all(p2.tcp, Some(sent)).await;
    let (resent, _tx) = timeout(WAIT, streamer).await.unwrap().unwrap();
    assert_eq!(resent, sent);
    until_acked(&acked, sent as usize).await;
    collector.abort();
    let after: std::collections::HashMap<String, u64> =
        acked.lock().unwrap().iter().cloned().collect();
    for (id, seq) in &before {
        assert_eq!(after[id], *seq, "{id} acknowledged again at the same seq");
    }

    // Every member's stream holds its group_added, then every message once, in order, at
    // gapless seqs; the sender's acks name its own copies.
    let ids: Vec<String> = (0..sent).map(|i| format!("c-{i}")).collect();
    for (user, token) in &tokens {
        let stream = stream_of(p2.tcp, user, token).await;
        let seqs: Vec<u64> = stream.iter().map(|e| e.0).collect();
        assert_eq!(seqs, (1..=sent + 1).collect::<Vec<_>>(), "{user}: gapless");
        assert_eq!(stream[0].1, "group_added", "{user}");
        let got: Vec<&String> = stream[1..].iter().map(|e| &e.1).collect();
        assert_eq!(
            got,
            ids.iter().collect::<Vec<_>>(),
            "{user}: each message once"
        );
        if user == "1" {
            for (id, seq) in &after {
                assert_eq!(&stream[*seq as usize - 1].1, id, "the Ack names the copy");
            }
        }
    }
}
