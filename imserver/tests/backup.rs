//! `imserver backup` during a message stream, then `imserver restore`: everything
//! acknowledged before the backup began is in the restored server, once, in order.

mod common;

use std::path::Path;
use std::process::Command;

use common::WAIT;
use common::process::{AckedStream, acked_stream, spawn, stream_of, until_acked};
use tokio::time::timeout;

/// Runs `imserver <args>` to its end: whether it succeeded, and what it printed.
async fn imserver(args: Vec<String>) -> (bool, String) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_imserver"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_backup_taken_under_load_restores_everything_acknowledged_before_it() {
    if common::sqlite_only("backup and restore") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let p = spawn(&data, None, &["--demo", "--rate-limit", "0"]);

    let AckedStream {
        receiver_token,
        acked,
        collector,
        streamer,
    } = acked_stream(&p).await;

    // The backup, while messages keep coming.
    until_acked(&acked, 500).await;
    let before = acked.lock().unwrap().len();
    let file = dir.path().join("backup.sqlite3");
    let (ok, said) = imserver(vec![
        "backup".into(),
        "--data-dir".into(),
        s(&data),
        "--to".into(),
        s(&file),
    ])
    .await;
    assert!(ok, "backup failed: {said}");
    assert!(said.contains("backed up"), "{said}");
    let during = acked.lock().unwrap().len();
    until_acked(&acked, during + 200).await;
    assert!(
        !collector.is_finished() && !streamer.is_finished(),
        "the stream went on"
    );
    drop(p); // killed
    let _ = timeout(WAIT, streamer).await;
    let _ = timeout(WAIT, collector).await;
    let acked_before: Vec<(String, u64)> = acked.lock().unwrap()[..before].to_vec();

    // Restored into a new data dir; not over a database without --replace.
    let restored = dir.path().join("restored");
    let restore = |replace: bool| {
        let mut args = vec![
            "restore".into(),
            "--from".into(),
            s(&file),
            "--data-dir".into(),
            s(&restored),
        ];
        if replace {
            args.push("--replace".into());
        }
        imserver(args)
    };
    let (ok, said) = restore(false).await;
    assert!(ok, "restore failed: {said}");
    let (ok, said) = restore(false).await;
    assert!(!ok && said.contains("--replace"), "{said}");
    let (ok, said) = restore(true).await;
    assert!(ok, "{said}");

    // The receiver's stream, from the start: a gapless prefix of what was sent that holds
    // everything acknowledged before the backup began.
    let p2 = spawn(&restored, None, &[]);
    let got: Vec<String> = stream_of(p2.tcp, "2", &receiver_token)
        .await
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    let expected: Vec<String> = (0..got.len()).map(|i| format!("c-{i}")).collect();
    assert_eq!(got, expected, "in order, once each");
    for (id, _) in &acked_before {
        assert!(
            got.contains(id),
            "{id} was acknowledged before the backup and is missing"
        );
    }
    assert!(got.len() >= acked_before.len());
}

#[tokio::test]
async fn backup_and_restore_refuse_what_is_not_a_database() {
    if common::sqlite_only("backup and restore") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ok, said) = imserver(vec![
        "backup".into(),
        "--data-dir".into(),
        s(&dir.path().join("nothing")),
        "--to".into(),
        s(&dir.path().join("b")),
    ])
    .await;
    assert!(!ok && said.contains("no database"), "{said}");
    let junk = dir.path().join("junk");
    std::fs::write(&junk, "not sqlite at all, not even close to it, no").unwrap();
    let (ok, said) = imserver(vec![
        "restore".into(),
        "--from".into(),
        s(&junk),
        "--data-dir".into(),
        s(&dir.path().join("d")),
    ])
    .await;
    assert!(!ok, "{said}");
    assert!(!dir.path().join("d").join("imserver.sqlite3").exists());
}
