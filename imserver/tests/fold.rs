//! Streams read the same whether their rows are recent, folded into the streams' tables, or
//! some of each (`--fold-rows`): replay, history, conversations and unread counts, read
//! receipts, and the head after a restart.

mod common;

use common::{TestServer, WAIT, device, send_for_ack, sync};
use improto::{EventKind, Packet};
use serde_json::Value;
use tokio::time::timeout;

type Account = (String, String);

/// The texts of `user`'s stream from the start, with their seqs.
async fn stream(srv: &TestServer, (user, token): &Account) -> Vec<(u64, String)> {
    let (mut c, head) = srv.v2(user, token, Some(0)).await;
    let mut out = Vec::new();
    while (out.len() as u64) < head {
        match timeout(WAIT, c.recv()).await.unwrap().unwrap() {
            Some(Packet::Message(m)) => out.push((m.seq.unwrap(), m.message)),
            other => panic!("{other:?}"),
        }
    }
    out
}

fn texts(page: &Value) -> Vec<&str> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect()
}

async fn scenario(fold_rows: usize) {
    let mut srv = TestServer::start_with(|c| {
        c.auth.auth = imserver::config::AuthMode::Token;
        c.store.fold_rows = fold_rows;
    })
    .await;
    let a = srv.user("Ann").await;
    let b = srv.user("Bob").await;
    // Each message its own transaction: with a few rows to a fold, the streams end up
    // partly folded and partly recent.
    let mut a_dev = device(&srv, &a).await;
    let mut acked = Vec::new();
    for i in 0..12 {
        acked.push(send_for_ack(&mut a_dev, &a.0, &b.0, &format!("m{i}")).await);
    }
    let expected: Vec<(u64, String)> = (0..12).map(|i| (i + 1, format!("m{i}"))).collect();
    assert_eq!(acked, (1..=12).collect::<Vec<_>>(), "fold_rows {fold_rows}");
    assert_eq!(
        stream(&srv, &a).await,
        expected,
        "fold_rows {fold_rows}: a's copies"
    );
    assert_eq!(
        stream(&srv, &b).await,
        expected,
        "fold_rows {fold_rows}: b's stream"
    );

    // History, page by page, newest first.
    let path = format!("/history/{}?limit=5", a.0);
    let (status, page) = srv.get_as(&path, &b.1).await;
    assert_eq!(status, 200);
    assert_eq!(
        texts(&page),
        ["m7", "m8", "m9", "m10", "m11"],
        "fold_rows {fold_rows}"
    );
    assert_eq!(page["more"], true);
    let (_, page) = srv.get_as(&format!("{path}&before=8"), &b.1).await;
    assert_eq!(
        texts(&page),
        ["m2", "m3", "m4", "m5", "m6"],
        "fold_rows {fold_rows}"
    );
    let (_, page) = srv.get_as(&format!("{path}&before=3"), &b.1).await;
    assert_eq!(texts(&page), ["m0", "m1"], "fold_rows {fold_rows}");
    assert_eq!(page["more"], false);

    // The conversation, its unread count, and a read receipt in a's terms.
    let (_, list) = srv.get_as("/conversations", &b.1).await;
    assert_eq!(list[0]["peer"], a.0.as_str());
    assert_eq!(list[0]["last"]["message"], "m11");
    assert_eq!(list[0]["unread"], 12, "fold_rows {fold_rows}");
    let mut b_dev = device(&srv, &b).await;
    b_dev.read(&a.0, 6).await.unwrap();
    sync(&mut b_dev).await;
    let (_, list) = srv.get_as("/conversations", &b.1).await;
    assert_eq!(list[0]["unread"], 6, "fold_rows {fold_rows}");
    let receipts: Vec<u64> = sync(&mut a_dev)
        .await
        .into_iter()
        .filter_map(|p| match p {
            Packet::Event(e) if e.kind == EventKind::Read => e.up_to,
            _ => None,
        })
        .collect();
    assert_eq!(receipts, [6], "fold_rows {fold_rows}");

    // After a restart the heads are read from the tables again: the next message is 13.
    drop((a_dev, b_dev));
    srv.restart().await;
    let token = srv.login(&a.0, "pw").await;
    let a = (a.0, token);
    let mut a_dev = device(&srv, &a).await;
    assert_eq!(
        send_for_ack(&mut a_dev, &a.0, &b.0, "after").await,
        14,
        "after the receipt"
    );
    let b_stream = stream(&srv, &(b.0.clone(), srv.login(&b.0, "pw").await)).await;
    assert_eq!(b_stream.last().unwrap(), &(13, "after".to_owned()));
}

#[tokio::test]
async fn streams_read_the_same_folded_recent_or_both() {
    // Every transaction folded; a fold every few; never.
    for fold_rows in [1, 3, 7, 1_000_000] {
        scenario(fold_rows).await;
    }
}
