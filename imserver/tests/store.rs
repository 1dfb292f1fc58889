//! The store through its public traits: requests that share a group-committed transaction
//! fail only themselves.

use std::sync::{Arc, Mutex};

mod common;

use bytes::Bytes;
use imserver::UserId;
use imserver::config::Config;
use imserver::delivery::{Delivery, Entries};
use imserver::store::{Appended, Appends, NewMessage, Outcome, Replies, StoreError};

/// Remembers every entry handed to it.
#[derive(Default)]
struct Recorder(Mutex<Vec<(UserId, u64)>>);

impl Delivery for Recorder {
    fn deliver(&self, to: UserId, entries: Entries) {
        let mut seen = self.0.lock().unwrap();
        seen.extend(entries.iter().map(|e| (to, e.seq)));
    }

    fn live(&self, _: UserId, _: Bytes) {}
}

/// Remembers every answer: the outcomes, or `None` for a failure.
#[derive(Default)]
struct Answers(Mutex<Vec<Option<Outcome>>>);

impl Replies for Answers {
    fn replied(&self, outcomes: Vec<Outcome>) {
        self.0
            .lock()
            .unwrap()
            .extend(outcomes.into_iter().map(Some));
    }

    fn failed(&self, _: StoreError, _: Vec<Option<String>>) {
        self.0.lock().unwrap().push(None);
    }
}

fn id(n: i64) -> UserId {
    UserId::new(n).unwrap()
}

fn message(from: i64, to: i64, answers: &Arc<Answers>) -> Appends {
    let payload = format!(
        r#"{{"type":"Message","sender":"{from}","receiver":"{to}","message":"m","createTime":1}}"#
    );
    Appends {
        sender: id(from),
        origin: None,
        friends_only: false,
        messages: vec![NewMessage {
            receiver: id(to).into(),
            client_id: None,
            payload: Bytes::from(payload),
        }],
        replies: answers.clone(),
    }
}

#[tokio::test]
async fn a_failing_request_fails_alone_in_its_batch() {
    // It holds SQLite's writer thread in a barrier; PostgreSQL's runs each such request in a
    // transaction of its own.
    if common::sqlite_only("holding the writer thread") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default().store;
    config.data_dir = dir.path().into();
    let delivered = Arc::new(Recorder::default());
    let store = imserver::store::open(&config, delivered.clone())
        .await
        .unwrap();

    // Hold the writer inside a barrier hook, so that everything queued meanwhile is one
    // batch, one transaction.
    let (release, held) = std::sync::mpsc::channel::<()>();
    store
        .barrier(Box::new(move |_| held.recv().unwrap()))
        .await
        .unwrap();
    let answers = Arc::new(Answers::default());
    store.append(message(10, 11, &answers)).await.unwrap();
    // Friends with users that do not exist (foreign keys refuse it), and a token of one
    // (not stored: no such account).
    let mut befriend = store.befriend(id(10), id(11));
    assert!(
        futures::poll!(&mut befriend).is_pending(),
        "queued, not answered"
    );
    let mut token = store.create_token([7; 32], id(12), i64::MAX);
    assert!(futures::poll!(&mut token).is_pending());
    store.append(message(11, 10, &answers)).await.unwrap();
    release.send(()).unwrap();

    assert!(befriend.await.is_err(), "the bad request fails");
    assert!(
        !token.await.unwrap(),
        "no token for an account that does not exist"
    );
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
        Some(Outcome {
            client_id: None,
            group: None,
            appended: Appended::Stored {
                seq,
                duplicate: false,
            },
        })
    };
    assert_eq!(*answers.0.lock().unwrap(), [stored(1), stored(2)]);
    let mut seen = delivered.0.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, [(id(10), 1), (id(10), 2), (id(11), 1), (id(11), 2)]);
    assert_eq!(store.read_stream(id(10), 0, 10).await.unwrap().len(), 2);
    assert!(store.token([7; 32]).await.unwrap().is_none());
    store.close().await;
}
