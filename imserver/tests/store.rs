//! The store through its public traits: requests that share a group-committed transaction
//! fail only themselves.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use imserver::UserId;
use imserver::config::Config;
use imserver::delivery::{Delivery, Entry};
use imserver::store::{Append, Appended, Social, SqliteStore, Store, Streams, Tokens};

/// Remembers every entry handed to it.
#[derive(Default)]
struct Recorder(Mutex<Vec<(UserId, u64)>>);

impl Delivery for Recorder {
    fn deliver(&self, to: UserId, entry: &Entry) {
        self.0.lock().unwrap().push((to, entry.seq));
    }
}

fn id(n: i64) -> UserId {
    UserId::new(n).unwrap()
}

fn message(from: i64, to: i64) -> Append {
    let payload = format!(
        r#"{{"type":"Message","sender":"{from}","receiver":"{to}","message":"m","createTime":1}}"#
    );
    Append {
        sender: id(from),
        receiver: id(to),
        client_id: None,
        payload: Bytes::from(payload),
        origin: None,
        friends_only: false,
    }
}

#[tokio::test]
async fn a_failing_request_fails_alone_in_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default().store;
    config.data_dir = dir.path().into();
    let delivered = Arc::new(Recorder::default());
    let store = SqliteStore::open(&config, delivered.clone()).unwrap();

    // Hold the writer inside a barrier hook, so that everything queued meanwhile is one
    // batch, one transaction.
    let (release, held) = std::sync::mpsc::channel::<()>();
    store
        .barrier(Box::new(move |_| held.recv().unwrap()))
        .await
        .unwrap();
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let hook = |outcomes: &Arc<Mutex<Vec<_>>>| {
        let outcomes = outcomes.clone();
        Box::new(move |r: Result<Appended, _>| outcomes.lock().unwrap().push(r.ok()))
    };
    store
        .append(message(10, 11), hook(&outcomes))
        .await
        .unwrap();
    // Friends with users that do not exist, and a token of one: foreign keys refuse both.
    let mut befriend = store.befriend(id(10), id(11));
    assert!(
        futures::poll!(&mut befriend).is_pending(),
        "queued, not answered"
    );
    let mut token = store.create_token([7; 32], id(12), i64::MAX);
    assert!(futures::poll!(&mut token).is_pending());
    store
        .append(message(11, 10), hook(&outcomes))
        .await
        .unwrap();
    release.send(()).unwrap();

    assert!(befriend.await.is_err(), "the bad request fails");
    assert!(token.await.is_err());
    // The messages around them were stored, each in both streams, and delivered.
    let (tx, rx) = tokio::sync::oneshot::channel();
    store
        .barrier(Box::new(move |r| {
            let _ = tx.send(r.is_ok());
        }))
        .await
        .unwrap();
    assert!(rx.await.unwrap());
    let stored = |seq| {
        Some(Appended::Stored {
            seq,
            duplicate: false,
        })
    };
    assert_eq!(*outcomes.lock().unwrap(), [stored(1), stored(2)]);
    let mut seen = delivered.0.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, [(id(10), 1), (id(10), 2), (id(11), 1), (id(11), 2)]);
    assert_eq!(store.read_stream(id(10), 0, 10).await.unwrap().len(), 2);
    assert!(store.token([7; 32]).await.unwrap().is_none());
    store.close().await;
}
