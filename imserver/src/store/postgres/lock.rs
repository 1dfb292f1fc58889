//! What one transaction appends, gathered in memory and written at its end in three
//! statements, and the locks on the streams it appends to.
//!
//! **Lock order.** A transaction locks every stream it will append to before it reads
//! anything it decides on, in one statement that takes the rows in owner order (and makes
//! the rows of streams that have none yet). Every writer of every node does the same, so
//! two transactions never hold one stream each while waiting for the other's. Whatever a
//! transaction then learns about a stream (its head, a sender's client ids, a user's read
//! position) cannot change under it until it commits.

use std::collections::HashMap;

use bytes::Bytes;
use deadpool_postgres::Transaction;

use super::{bound, exec, rows, seq};
use crate::id::{Address, UserId};
use crate::store::StoreError;

/// Locks the streams of `owners` (and makes those that do not exist yet) in owner order,
/// and returns each one's head.
const LOCK: &str = "INSERT INTO streams (owner, head)
     SELECT owner, 0 FROM unnest($1::bigint[]) AS owner ORDER BY owner
     ON CONFLICT (owner) DO UPDATE SET head = streams.head
     RETURNING owner, head";

/// What one transaction appends.
#[derive(Default)]
pub(super) struct Draft {
    /// The streams this transaction holds, each with its head as it appends.
    heads: HashMap<UserId, u64>,
    /// The streams it appended to.
    moved: Vec<UserId>,
    rows: Rows,
    /// Client ids to record: `(sender, id, seq)`.
    ids: Vec<(i64, Vec<u8>, i64)>,
}

/// The `entries` rows, by column.
#[derive(Default)]
struct Rows {
    owner: Vec<i64>,
    seq: Vec<i64>,
    payload: Vec<Bytes>,
    peer: Vec<Option<i64>>,
    received: Vec<bool>,
    origin: Vec<i64>,
}

impl Draft {
    /// Locks the streams of `owners` that this transaction does not hold yet (see the module
    /// docs: call it once with everything, before anything else that decides).
    pub async fn lock(
        &mut self,
        tx: &Transaction<'_>,
        owners: impl IntoIterator<Item = UserId>,
    ) -> Result<(), StoreError> {
        let mut new: Vec<i64> = owners
            .into_iter()
            .filter(|o| !self.heads.contains_key(o))
            .map(UserId::get)
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        new.sort_unstable();
        new.dedup();
        for row in rows(tx, LOCK, &[&new]).await? {
            self.heads
                .insert(super::user_id(row.get(0))?, seq(row.get(1)));
        }
        Ok(())
    }

    /// Appends `payload` to `owner`'s stream (which this transaction holds) and returns its
    /// `seq`. `conversation` is the other user (or the group) and whether someone else sent
    /// it; `origin`, for a message from another user, the `seq` of that user's copy (else 0).
    pub fn push(
        &mut self,
        owner: UserId,
        payload: Bytes,
        conversation: Option<(Address, bool)>,
        origin: u64,
    ) -> Result<u64, StoreError> {
        let head = self.heads.get_mut(&owner).ok_or_else(|| {
            StoreError::Transaction(format!("stream {owner} appended to without its lock"))
        })?;
        *head += 1;
        let seq = *head;
        if self.moved.last() != Some(&owner) && !self.moved.contains(&owner) {
            self.moved.push(owner);
        }
        let r = &mut self.rows;
        r.owner.push(owner.get());
        r.seq.push(bound(seq));
        r.payload.push(payload);
        r.peer.push(conversation.map(|(peer, _)| peer.key()));
        r.received
            .push(conversation.is_some_and(|(_, from_peer)| from_peer));
        r.origin.push(bound(origin));
        Ok(seq)
    }

    /// Records `sender`'s client id `id` for the message at `seq` of their stream.
    pub fn client_id(&mut self, sender: UserId, id: Vec<u8>, seq: u64) {
        self.ids.push((sender.get(), id, bound(seq)));
    }

    /// Writes the entries, the heads and the client ids, pipelined.
    pub async fn write(self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        let r = &self.rows;
        let payloads: Vec<&[u8]> = r.payload.iter().map(|p| &p[..]).collect();
        let (owners, heads): (Vec<i64>, Vec<i64>) = self
            .moved
            .iter()
            .map(|o| (o.get(), bound(self.heads[o])))
            .unzip();
        let senders: Vec<i64> = self.ids.iter().map(|(s, _, _)| *s).collect();
        let ids: Vec<&[u8]> = self.ids.iter().map(|(_, id, _)| &id[..]).collect();
        let seqs: Vec<i64> = self.ids.iter().map(|(_, _, q)| *q).collect();
        let entries = async {
            if r.owner.is_empty() {
                return Ok(0);
            }
            exec(
                tx,
                "INSERT INTO entries (owner, seq, payload, peer, received, origin)
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bigint[],
                                      $5::boolean[], $6::bigint[])",
                &[&r.owner, &r.seq, &payloads, &r.peer, &r.received, &r.origin],
            )
            .await
        };
        let heads = async {
            if owners.is_empty() {
                return Ok(0);
            }
            exec(
                tx,
                "UPDATE streams SET head = v.head
                 FROM unnest($1::bigint[], $2::bigint[]) AS v (owner, head)
                 WHERE streams.owner = v.owner",
                &[&owners, &heads],
            )
            .await
        };
        let ids = async {
            if senders.is_empty() {
                return Ok(0);
            }
            exec(
                tx,
                "INSERT INTO message_ids (sender, client_id, seq)
                 SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bigint[])",
                &[&senders, &ids, &seqs],
            )
            .await
        };
        futures::try_join!(entries, heads, ids)?;
        Ok(())
    }
}
