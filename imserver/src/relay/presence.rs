//! Presence: a user's friends are told (`{"type":"Presence","user":"7","online":true}`, live
//! only) when the user's first connection registers and when their last one closes.
//!
//! Changes are coalesced: a change waits `--presence-delay` before it is looked at again,
//! and friends are told only if the user's state then differs from what they were last
//! told. A phone that drops and reconnects within the delay, or a user who flaps, tells
//! nobody anything. The time a user was last seen is kept in the store.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use improto::{Packet, Presence as PresencePacket};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::LocalRouter;
use crate::delivery::Delivery;
use crate::id::UserId;
use crate::store::Store;

pub struct Presence {
    /// Whether a user is online here.
    router: Arc<LocalRouter>,
    /// Where friends are told (on every node, with `--bus`).
    delivery: Arc<dyn Delivery>,
    store: Arc<dyn Store>,
    /// `--presence-delay`.
    delay: Duration,
    /// Users whose connections came or went, and when to look at them again.
    pending: Mutex<HashMap<UserId, Instant>>,
    /// The users whose friends were last told they are online.
    announced: Mutex<HashSet<UserId>>,
}

impl Presence {
    pub fn new(
        router: Arc<LocalRouter>,
        delivery: Arc<dyn Delivery>,
        store: Arc<dyn Store>,
        delay: Duration,
    ) -> Self {
        Presence {
            router,
            delivery,
            store,
            delay,
            pending: Mutex::default(),
            announced: Mutex::default(),
        }
    }

    /// `user`'s first connection registered, or their last one closed.
    pub fn changed(&self, user: UserId) {
        let due = Instant::now() + self.delay;
        lock(&self.pending).entry(user).or_insert(due);
    }

    /// `user`'s last connection closed: when they were last seen, for `GET /presence`.
    pub async fn left(&self, user: UserId) {
        self.changed(user);
        if let Err(e) = self.store.seen(user, unix_now()).await {
            tracing::warn!(error = %e, "cannot record when a user was last seen");
        }
    }

    /// Whether `user` is online, and when they were last seen (now, if online).
    pub async fn of(&self, user: UserId) -> Result<(bool, Option<i64>), crate::store::StoreError> {
        if self.router.online(user) {
            return Ok((true, Some(unix_now())));
        }
        Ok((false, self.store.last_seen(user).await?))
    }

    /// Tells friends what changed, every quarter of the delay, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let tick = (self.delay / 4).max(Duration::from_millis(10));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(tick) => {}
            }
            let now = Instant::now();
            let due: Vec<UserId> = {
                let mut pending = lock(&self.pending);
                let due: Vec<_> = pending
                    .iter()
                    .filter(|&(_, at)| *at <= now)
                    .map(|(&u, _)| u)
                    .collect();
                for u in &due {
                    pending.remove(u);
                }
                due
            };
            for user in due {
                self.settle(user).await;
            }
        }
    }

    /// Tells `user`'s friends their state, if it is not what they were last told.
    async fn settle(&self, user: UserId) {
        let online = self.router.online(user);
        let told = {
            let mut announced = lock(&self.announced);
            if online {
                !announced.insert(user)
            } else {
                !announced.remove(&user)
            }
        };
        if told {
            return;
        }
        let friends = match self.store.friends(user).await {
            Ok(friends) => friends.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell friends of a presence change");
                return;
            }
        };
        let packet = Packet::from(PresencePacket::new(user.to_string(), online));
        let payload: bytes::Bytes = packet
            .to_json()
            .expect("presence frames always encode")
            .into();
        for (friend, _) in friends {
            self.delivery.live(friend, payload.clone());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every operation leaves the maps consistent, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
