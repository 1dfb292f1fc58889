//! Retention (`--retention`, `--retention-unacked`): old entries go in the background, the
//! stream goes on gapless from the oldest kept entry, a device that resumes from before it
//! is told (`Registered.oldestSeq`), and the database stops growing under a steady load.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{TestServer, WAIT, recv_message, recv_packet, send_for_ack};
use improto::{Ack, Client, Message, Packet, Regist, Registered};
use imserver::config::{AuthMode, Keep};
use tokio::time::{Instant, sleep, timeout};

/// A token-mode server whose sweep runs often, with `retention` applied, and two users.
async fn server(
    retention: impl FnOnce(&mut imserver::Config),
) -> (TestServer, (String, String), (String, String)) {
    let srv = TestServer::start_with(|c| {
        c.auth.auth = AuthMode::Token;
        c.store.retention_every = Duration::from_millis(50);
        c.store.retention_pause = Duration::from_millis(5);
        c.store.ack_flush = Duration::from_millis(50);
        // Every transaction's chunks go straight to the streams' tables, where the sweep
        // looks.
        c.store.fold_rows = 1;
        retention(c);
    })
    .await;
    let a = srv.user("Ann").await;
    let b = srv.user("Bob").await;
    (srv, a, b)
}

/// Registers `user` resuming after `last_seq`; returns the `Registered` and the client.
async fn regist(
    srv: &TestServer,
    user: &(String, String),
    last_seq: Option<u64>,
) -> (Registered, Client) {
    let mut c = srv.raw().await;
    let mut r = Regist::v2(&user.0, &user.1);
    r.last_seq = last_seq;
    let live = timeout(WAIT, c.handshake(r))
        .await
        .expect("in time")
        .expect("registered");
    (live, c)
}

/// Waits (bounded) until a resume of `user` from 0 is told that the stream now starts at
/// `oldest` or later; returns that `Registered` and its client, which replays from there.
async fn resume_once_deleted_through(
    srv: &TestServer,
    user: &(String, String),
    oldest: u64,
) -> (Registered, Client) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (live, c) = regist(srv, user, Some(0)).await;
        if live.oldest_seq.is_some_and(|o| o >= oldest) {
            return (live, c);
        }
        assert!(
            Instant::now() < deadline,
            "retention did not delete through {}: {live:?}",
            oldest - 1
        );
        drop(c);
        sleep(Duration::from_millis(50)).await;
    }
}

/// Every replayed message up to `head`, with its seq.
async fn replay(c: &mut Client, head: u64) -> Vec<(u64, String)> {
    let mut got = Vec::new();
    while got.last().is_none_or(|(seq, _)| *seq < head) {
        let m = recv_message(c).await;
        got.push((m.seq.expect("a stored message has a seq"), m.message));
    }
    got
}

#[tokio::test]
async fn acknowledged_entries_go_and_a_resume_from_before_them_is_told_where_the_stream_goes_on() {
    if common::sqlite_only("retention") {
        return;
    }
    let (srv, a, b) = server(|c| c.store.retention = Keep(Some(Duration::from_millis(300)))).await;
    let (_, mut ad) = regist(&srv, &a, Some(u64::MAX)).await;
    let (_, mut bd) = regist(&srv, &b, Some(u64::MAX)).await;
    let mut seqs = Vec::new();
    for i in 1..=6 {
        send_for_ack(&mut ad, &a.0, &b.0, &format!("m{i}")).await;
        let m = recv_message(&mut bd).await;
        assert_eq!(m.message, format!("m{i}"));
        seqs.push(m.seq.unwrap());
    }
    // Bob's devices have processed m1..m3; Ann acknowledges nothing of her stream.
    bd.send(Ack::new(seqs[2])).await.unwrap();

    let (live, mut c) = resume_once_deleted_through(&srv, &b, seqs[3]).await;
    assert_eq!(
        live.oldest_seq,
        Some(seqs[3]),
        "m4..m6 are not acknowledged: they stay"
    );
    assert_eq!(live.seq, seqs[5]);
    let kept: Vec<_> = ["m4", "m5", "m6"].iter().map(|s| s.to_string()).collect();
    assert_eq!(
        replay(&mut c, seqs[5]).await,
        seqs[3..]
            .iter()
            .copied()
            .zip(kept.clone())
            .collect::<Vec<_>>(),
        "the replay starts at the oldest kept entry and goes on without a gap"
    );
    // A device that had everything deleted is not told of anything missing.
    let (live, _) = regist(&srv, &b, Some(seqs[2])).await;
    assert_eq!(live.oldest_seq, None);
    // Without lastSeq, a device resumes from the acknowledged position: nothing missing.
    let (live, _) = regist(&srv, &b, None).await;
    assert_eq!(live.oldest_seq, None);

    // History starts at the oldest kept entry too: Bob's copy lost m1..m3, Ann's (never
    // acknowledged) has everything.
    let (status, page) = srv.get_as(&format!("/history/{}", a.0), &b.1).await;
    assert_eq!(status, 200, "{page}");
    let texts: Vec<_> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, kept);
    let (_, page) = srv.get_as(&format!("/history/{}", b.0), &a.1).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 6, "{page}");
    let (live, _) = regist(&srv, &a, Some(0)).await;
    assert_eq!(live.oldest_seq, None);

    // The stream goes on from its head after the deletion.
    send_for_ack(&mut ad, &a.0, &b.0, "m7").await;
    let m = recv_message(&mut bd).await;
    assert_eq!((m.seq, m.message.as_str()), (Some(seqs[5] + 1), "m7"));
}

#[tokio::test]
async fn unacknowledged_entries_go_only_with_retention_unacked_and_the_newest_entry_stays() {
    if common::sqlite_only("retention") {
        return;
    }
    let (srv, a, b) =
        server(|c| c.store.retention_unacked = Keep(Some(Duration::from_millis(300)))).await;
    let (_, mut ad) = regist(&srv, &a, Some(u64::MAX)).await;
    let mut seqs = Vec::new();
    for i in 1..=3 {
        send_for_ack(&mut ad, &a.0, &b.0, &format!("m{i}")).await;
    }
    // Bob never connected: his stream holds m1..m3 at 1..3.
    let (live, mut c) = resume_once_deleted_through(&srv, &b, 3).await;
    // The newest entry of a stream always stays (it is where the stream goes on).
    assert_eq!((live.seq, live.oldest_seq), (3, Some(3)));
    assert_eq!(replay(&mut c, 3).await, [(3, "m3".to_owned())]);
    seqs.push(live.seq);
    // A device without lastSeq resumes from the acknowledged position (0): told as well.
    let (live, _) = regist(&srv, &b, None).await;
    assert_eq!(live.oldest_seq, Some(3));
    // Ann's stream (her sent copies) went the same way.
    let (live, _) = regist(&srv, &a, Some(0)).await;
    assert_eq!(live.oldest_seq, Some(3));
}

#[tokio::test]
async fn with_both_retentions_unacknowledged_entries_still_go_after_the_longer_one() {
    if common::sqlite_only("retention") {
        return;
    }
    let (srv, a, b) = server(|c| {
        c.store.retention = Keep(Some(Duration::from_millis(100)));
        c.store.retention_unacked = Keep(Some(Duration::from_millis(600)));
    })
    .await;
    let (_, mut ad) = regist(&srv, &a, Some(u64::MAX)).await;
    for i in 1..=3 {
        send_for_ack(&mut ad, &a.0, &b.0, &format!("m{i}")).await;
    }
    // Bob acknowledges nothing: only --retention-unacked deletes his m1 and m2, while
    // traffic elsewhere (Ann to Cid, acknowledged) keeps the shorter retention busy.
    let cid = srv.user("Cid").await;
    let deadline = Instant::now() + WAIT;
    let mut i = 0;
    let (live, mut c) = loop {
        i += 1;
        let seq = send_for_ack(&mut ad, &a.0, &cid.0, &format!("busy {i}")).await;
        ad.send(Ack::new(seq)).await.unwrap();
        let (live, c) = regist(&srv, &b, Some(0)).await;
        // Both gone (a step may take one and leave the other for the next).
        if live.oldest_seq.is_some_and(|o| o >= 3) {
            break (live, c);
        }
        assert!(
            Instant::now() < deadline,
            "m1 and m2 outlived --retention-unacked"
        );
        sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((live.seq, live.oldest_seq), (3, Some(3)));
    assert_eq!(replay(&mut c, 3).await, [(3, "m3".to_owned())]);
}

/// The database's size in bytes as SQLite sees it (the WAL's pages included).
fn database_bytes(dir: &Path) -> u64 {
    let db = rusqlite::Connection::open_with_flags(
        dir.join("imserver.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let pages: u64 = db.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    let size: u64 = db.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    pages * size
}

#[tokio::test]
async fn the_database_stops_growing_under_a_steady_load_with_retention_on() {
    if common::sqlite_only("retention") {
        return;
    }
    const ROUNDS: usize = 10;
    const PER_ROUND: usize = 100;
    let (srv, a, b) = server(|c| c.store.retention = Keep(Some(Duration::from_millis(200)))).await;
    let (_, mut ad) = regist(&srv, &a, Some(u64::MAX)).await;
    let (_, mut bd) = regist(&srv, &b, Some(u64::MAX)).await;
    let text = "x".repeat(2000);
    let mut sizes = Vec::new();
    let mut sent_bytes = Vec::new();
    // The first seq of each round, in Bob's stream and in Ann's (her sent copies).
    let mut first_of_round = Vec::new();
    let mut a_first_of_round = Vec::new();
    for round in 0..ROUNDS {
        let mut b_seq = 0;
        for i in 0..PER_ROUND {
            let id = format!("r{round}-{i}");
            ad.send(Message::new(&a.0, &b.0, &text).with_id(&id))
                .await
                .unwrap();
            let a_seq = match recv_packet(&mut ad).await {
                Packet::Ack(ack) => ack.seq,
                other => panic!("expected an Ack, got {other:?}"),
            };
            // Both devices process everything: Ann her sent copies, Bob what he got.
            ad.send(Ack::new(a_seq)).await.unwrap();
            b_seq = recv_message(&mut bd).await.seq.unwrap();
            if i == 0 {
                first_of_round.push(b_seq);
                a_first_of_round.push(a_seq);
            }
        }
        bd.send(Ack::new(b_seq)).await.unwrap();
        sent_bytes.push(PER_ROUND * text.len());
        // The load is steady: each round starts once the round before the last has gone,
        // from both streams.
        if round >= 2 {
            resume_once_deleted_through(&srv, &b, first_of_round[round - 1]).await;
            resume_once_deleted_through(&srv, &a, a_first_of_round[round - 1]).await;
        }
        sizes.push(database_bytes(srv.dir.path()));
    }
    let (settled, last) = (sizes[3], sizes[ROUNDS - 1]);
    let sent_since: usize = sent_bytes[4..].iter().sum();
    eprintln!("database bytes by round: {sizes:?}; {sent_since} bytes of text sent after round 4");
    // Without retention the file would grow by at least what was sent since.
    assert!(
        last.saturating_sub(settled) < sent_since as u64 / 4,
        "the database grew from {settled} to {last} bytes while {sent_since} bytes were sent: {sizes:?}"
    );
}

#[tokio::test]
async fn an_older_database_is_rebuilt_once_so_that_retention_can_return_free_space() {
    if common::sqlite_only("retention") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    {
        // A database made before incremental vacuum (auto_vacuum = NONE).
        let db = rusqlite::Connection::open(dir.path().join("imserver.sqlite3")).unwrap();
        db.execute_batch("PRAGMA auto_vacuum = NONE; CREATE TABLE made_before (x);")
            .unwrap();
    }
    let mode = |dir: &Path| -> i64 {
        let db = rusqlite::Connection::open(dir.join("imserver.sqlite3")).unwrap();
        db.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(mode(dir.path()), 0);
    let mut config = imserver::Config::local(dir.path());
    let server = imserver::Server::start(config.clone()).await.unwrap();
    server.shutdown().await;
    assert_eq!(mode(dir.path()), 0, "without retention, nothing is rebuilt");
    config.store.retention = Keep(Some(Duration::from_secs(30 * 24 * 3600)));
    let server = imserver::Server::start(config).await.unwrap();
    server.shutdown().await;
    assert_eq!(mode(dir.path()), 2, "incremental");
}

#[tokio::test]
async fn space_freed_by_a_large_deletion_goes_back_to_the_file_system() {
    if common::sqlite_only("retention") {
        return;
    }
    let (srv, a, b) = server(|c| {
        c.store.retention_unacked = Keep(Some(Duration::from_millis(300)));
    })
    .await;
    let (_, mut ad) = regist(&srv, &a, Some(u64::MAX)).await;
    let text = "y".repeat(4000);
    for i in 0..500 {
        ad.send(Message::new(&a.0, &b.0, &text).with_id(format!("big-{i}")))
            .await
            .unwrap();
    }
    let mut last = 0;
    while last < 500 {
        match recv_packet(&mut ad).await {
            Packet::Ack(ack) => last = ack.seq,
            other => panic!("expected an Ack, got {other:?}"),
        }
    }
    let full = database_bytes(srv.dir.path());
    assert!(full > 2_000_000, "{full}");
    // Down to the stream's newest chunk, which stays; the file follows.
    resume_once_deleted_through(&srv, &b, 2).await;
    let deadline = Instant::now() + WAIT;
    let mut now = database_bytes(srv.dir.path());
    while now > full / 4 {
        assert!(
            Instant::now() < deadline,
            "the file kept {now} of its {full} bytes after its entries were deleted"
        );
        sleep(Duration::from_millis(50)).await;
        now = database_bytes(srv.dir.path());
    }
}
