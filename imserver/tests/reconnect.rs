//! `improto::Reconnecting` against the real binary, killed with `-9` and restarted under
//! it: the app sees every entry of its stream once, in order, and every message it sent is
//! stored once.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::WAIT;
use common::process::{Proc, login, spawn};
use improto::{FileState, Item, MemoryState, ReconnectOptions, Reconnecting};
use tokio::time::timeout;

/// A client of `user` on the server `p`, retrying quickly.
async fn start(
    p: &Proc,
    user: &str,
    token: &str,
    state: impl improto::ClientState,
) -> Reconnecting {
    let mut options = ReconnectOptions::new(p.tcp.to_string(), user, token);
    options.min_backoff = Duration::from_millis(20);
    options.max_backoff = Duration::from_millis(200);
    let mut c = Reconnecting::start(options, state).await.unwrap();
    assert!(matches!(next(&mut c).await, Item::Connected { .. }));
    c
}

async fn next(c: &mut Reconnecting) -> Item {
    timeout(WAIT, c.next())
        .await
        .expect("an item in time")
        .expect("running")
}

/// The next stream entry, passing over connection news.
async fn next_entry(c: &mut Reconnecting) -> Item {
    loop {
        match next(c).await {
            Item::Connected { .. } | Item::Disconnected { .. } => continue,
            item => return item,
        }
    }
}

fn kill(p: &mut Proc) {
    p.child.kill().unwrap();
    p.child.wait().unwrap();
}

#[tokio::test]
async fn every_message_reaches_the_app_once_in_order_across_kills() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--demo", "--rate-limit", "0"];
    let mut p = spawn(dir.path(), None, &args);
    let http = reqwest::Client::new();
    let (t1, t2) = (
        login(&http, p.http, "1", "123").await,
        login(&http, p.http, "2", "123").await,
    );
    let files = tempfile::tempdir().unwrap();
    let mut sender = start(&p, "1", &t1, FileState::new(files.path().join("1.json"))).await;
    let mut receiver = start(&p, "2", &t2, FileState::new(files.path().join("2.json"))).await;

    // The sender's app sends at its own pace, whatever the connection does.
    let total = 300;
    let out = sender.sender();
    let pacer = tokio::spawn(async move {
        for i in 0..total {
            out.send("2", format!("m{i:03}")).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    // Its Acks, each message once.
    let acks = tokio::spawn(async move {
        let mut stored = Vec::new();
        while stored.len() < total {
            match next_entry(&mut sender).await {
                Item::Sent { message, seq, .. } => stored.push((message.message, seq)),
                other => panic!("{other:?}"),
            }
        }
        (sender, stored)
    });

    let mut got = Vec::new();
    let mut last_seq = 0;
    let mut restarts = 0;
    while got.len() < total {
        match next_entry(&mut receiver).await {
            Item::Message(m) => {
                let seq = m.seq.unwrap();
                assert_eq!(seq, last_seq + 1, "entries come in order, without gaps");
                last_seq = seq;
                got.push(m.message);
            }
            other => panic!("{other:?}"),
        }
        // Twice, mid-stream: kill -9, and start again on the same data and ports.
        if got.len() == 100 || got.len() == 200 {
            kill(&mut p);
            p = spawn(dir.path(), Some((p.http, p.tcp)), &args);
            restarts += 1;
        }
    }
    let expected: Vec<String> = (0..total).map(|i| format!("m{i:03}")).collect();
    assert_eq!(got, expected, "every message once, in order");
    timeout(WAIT, pacer).await.unwrap().unwrap();
    let (sender, stored) = timeout(WAIT, acks).await.unwrap().unwrap();
    let texts: HashSet<_> = stored.iter().map(|(t, _)| t.clone()).collect();
    assert_eq!(texts.len(), total, "each message acknowledged once");
    assert!(stored.windows(2).all(|w| w[0].1 < w[1].1));
    assert_eq!(restarts, 2);
    sender.close().await;
    receiver.close().await;
}

#[tokio::test]
async fn an_app_restart_resumes_after_what_it_processed() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(dir.path(), None, &["--demo"]);
    let http = reqwest::Client::new();
    let (t1, t2) = (
        login(&http, p.http, "1", "123").await,
        login(&http, p.http, "2", "123").await,
    );
    let sender = start(&p, "1", &t1, MemoryState::default()).await;
    let files = tempfile::tempdir().unwrap();
    let state = files.path().join("2.json");

    let mut receiver = start(&p, "2", &t2, FileState::new(&state)).await;
    for i in 0..5 {
        sender.sender().send("2", format!("a{i}")).await.unwrap();
    }
    for i in 0..5 {
        match next_entry(&mut receiver).await {
            Item::Message(m) => assert_eq!(m.message, format!("a{i}")),
            other => panic!("{other:?}"),
        }
    }
    // The app quits having processed all five (close counts the last one handed out).
    receiver.close().await;

    for i in 0..3 {
        sender.sender().send("2", format!("b{i}")).await.unwrap();
    }
    let mut receiver = start(&p, "2", &t2, FileState::new(&state)).await;
    match next_entry(&mut receiver).await {
        Item::Message(m) => assert_eq!(m.message, "b0", "nothing processed comes again"),
        other => panic!("{other:?}"),
    }
    // This time the app dies before it is done with b0: b0 comes again next time.
    drop(receiver);
    let mut receiver = start(&p, "2", &t2, FileState::new(&state)).await;
    for i in 0..3 {
        match next_entry(&mut receiver).await {
            Item::Message(m) => assert_eq!(m.message, format!("b{i}")),
            other => panic!("{other:?}"),
        }
    }
    receiver.close().await;
    sender.close().await;
}

#[tokio::test]
async fn a_message_sent_while_the_server_is_down_is_stored_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn(dir.path(), None, &["--demo"]);
    let http = reqwest::Client::new();
    let (t1, t2) = (
        login(&http, p.http, "1", "123").await,
        login(&http, p.http, "2", "123").await,
    );
    let files = tempfile::tempdir().unwrap();
    let state = files.path().join("1.json");
    let sender = start(&p, "1", &t1, FileState::new(&state)).await;
    kill(&mut p);
    // Offline: the message waits in the outbox, on disk, and the app quits.
    sender.sender().send("2", "written offline").await.unwrap();
    sender.close().await;

    let p = spawn(dir.path(), Some((p.http, p.tcp)), &["--demo"]);
    let mut sender = start(&p, "1", &t1, FileState::new(&state)).await;
    match next_entry(&mut sender).await {
        Item::Sent { message, .. } => assert_eq!(message.message, "written offline"),
        other => panic!("{other:?}"),
    }
    let mut receiver = start(&p, "2", &t2, MemoryState::default()).await;
    match next_entry(&mut receiver).await {
        Item::Message(m) => assert_eq!(m.message, "written offline"),
        other => panic!("{other:?}"),
    }
    sender.close().await;
    receiver.close().await;
}
