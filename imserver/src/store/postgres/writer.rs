//! The writer task: the only one on this node that changes the database.
//!
//! It takes everything waiting (up to `--max-batch` messages), like SQLite's writer, and
//! runs it in order: each run of consecutive appends in **one transaction** (group commit),
//! and every other write in a transaction of its own (they are rare, and each locks
//! what it needs first: see `lock`). After each commit it answers those requests and hands
//! their stream entries to the `Delivery`, before the next transaction starts: entries
//! leave in commit order.
//!
//! When PostgreSQL is away, a transaction fails as a whole: its requests are answered with
//! the error (nothing of them is stored), and the next batch tries again with a fresh
//! connection from the pool.

use std::time::Instant;

use deadpool_postgres::{Pool, Transaction};
use tokio::sync::mpsc;

use super::{append, changes};
use crate::config::StoreConfig;
use crate::store::queue::{BatchLimits, Queued, Reply, Request, Settle, Swept, Then};
use crate::store::receipts::ReadReceipts;
use crate::store::{Appends, StoreError};

pub(super) struct Writer {
    pool: Pool,
    /// `--read-receipts` and `--read-receipt-scan`.
    receipts: ReadReceipts,
    /// What is told after each transaction (the acknowledgement book among it).
    settle: Settle,
}

impl Writer {
    pub fn new(pool: Pool, config: &StoreConfig, settle: Settle) -> Self {
        Writer {
            pool,
            receipts: ReadReceipts::of(config),
            settle,
        }
    }

    /// Group commit until `Close` or until every sender is gone.
    pub async fn run(self, mut rx: mpsc::UnboundedReceiver<Queued>, limits: BatchLimits) {
        let mut batch = Vec::new();
        while let Some(first) = rx.recv().await {
            self.settle.metrics.queue.set(rx.len() as f64);
            let writes = limits.fill(first, &mut rx, &mut batch);
            let started = Instant::now();
            let closing = self.commit(std::mem::take(&mut batch)).await;
            self.settle.metrics.batch.record(writes as f64);
            let commit = &self.settle.metrics.commit;
            commit.record(started.elapsed().as_secs_f64());
            if closing {
                rx.close();
                return;
            }
        }
        // Every sender is gone without a `Close`: the positions still in memory go now.
        self.commit(vec![Request::FlushAcks]).await;
    }

    /// Runs `batch` in order (see the module docs). Returns true on `Close`.
    async fn commit(&self, batch: Vec<Request>) -> bool {
        let mut closing = false;
        let mut appends = Vec::new();
        let mut batch = batch.into_iter().peekable();
        while let Some(request) = batch.next() {
            match request {
                Request::Append(a) => {
                    appends.push(a);
                    if !matches!(batch.peek(), Some(Request::Append(_))) {
                        self.appends(std::mem::take(&mut appends)).await;
                    }
                }
                // Everything before it has committed (or failed) and been answered.
                Request::Barrier(hook) => hook(Ok(())),
                Request::Close(tx) => {
                    self.one(Request::FlushAcks).await;
                    closing |= self.settle.settle(vec![Then::Close(tx)], Ok(()));
                }
                other => self.one(other).await,
            }
        }
        closing
    }

    /// Appends `batch` in one transaction, and answers it.
    async fn appends(&self, batch: Vec<Appends>) {
        let mut then = Vec::with_capacity(batch.len());
        let mut client = match self.pool.get().await {
            Ok(client) => client,
            Err(e) => {
                let unapplied = batch
                    .into_iter()
                    .map(|a| Then::unapplied(Request::Append(a)));
                return self.settle(unapplied.collect(), Err(e.into()));
            }
        };
        let result = match client.transaction().await {
            Ok(tx) => match append::append(&tx, batch, &mut then).await {
                Ok(()) => tx.commit().await.map_err(StoreError::from),
                Err(e) => Err(e),
            },
            Err(e) => {
                then.extend(
                    batch
                        .into_iter()
                        .map(|a| Then::unapplied(Request::Append(a))),
                );
                Err(e.into())
            }
        };
        self.settle(then, result);
    }

    /// Runs one request in a transaction of its own, and answers it.
    async fn one(&self, request: Request) {
        let mut then = Vec::new();
        let mut client = match self.pool.get().await {
            Ok(client) => client,
            Err(e) => return self.settle(vec![Then::unapplied(request)], Err(e.into())),
        };
        let result = match client.transaction().await {
            Ok(tx) => match self.apply(&tx, request, &mut then).await {
                Ok(()) => tx.commit().await.map_err(StoreError::from),
                Err(e) => Err(e),
            },
            Err(e) => {
                then.push(Then::unapplied(request));
                Err(e.into())
            }
        };
        self.settle(then, result);
    }

    fn settle(&self, then: Vec<Then>, result: Result<(), StoreError>) {
        if let Err(e) = &result {
            tracing::error!(error = %e, "store transaction failed");
        }
        self.settle.settle(then, result.map_err(|e| e.to_string()));
    }
}

impl Writer {
    /// Applies one request other than appends, barriers and `Close` in `tx`, leaving its
    /// answer in `then`. An error fails the transaction, and with it this request alone.
    async fn apply(
        &self,
        tx: &Transaction<'_>,
        request: Request,
        then: &mut Vec<Then>,
    ) -> Result<(), StoreError> {
        let receipts = self.receipts;
        match request {
            Request::FlushAcks => {
                let acks = self.settle.acks.unwritten();
                if !acks.is_empty() {
                    changes::acks(tx, &acks).await?;
                    then.push(Then::AcksWritten(acks));
                }
                Ok(())
            }
            Request::Seen(user, at) => changes::seen(tx, user, at).await,
            Request::Read(owner, peer, seq) => {
                changes::read(tx, owner, peer, seq, receipts, then).await
            }
            // Retention is SQLite's only (see `postgres::open`).
            Request::Sweep(reply) => answered(then, reply, Ok(Swept::default())),
            Request::CreateUser(id, account, reply) => {
                let r = changes::create_user(tx, id, &account).await;
                answered(then, reply, r)
            }
            Request::CreateToken(hash, user, expires_at, reply) => {
                let r = changes::create_token(tx, hash, user, expires_at).await;
                answered(then, reply, r)
            }
            Request::RevokeToken(hash, reply) => {
                let r = changes::revoke_token(tx, hash, then).await;
                answered(then, reply, r)
            }
            Request::SetDisabled(user, disabled, reply) => {
                let r = changes::set_disabled(tx, user, disabled, then).await;
                answered(then, reply, r)
            }
            Request::Befriend(a, b, reply) => {
                let r = changes::befriend(tx, a, b, then).await;
                answered(then, reply, r)
            }
            Request::Ask(from, to, message, at, reply) => {
                let rules = crate::store::social::request;
                let r = changes::social(tx, from, to, rules, Some((&message, at)), then).await;
                answered(then, reply, r)
            }
            Request::Social(op, a, b, reply) => {
                let r = changes::social(tx, a, b, op.rules(), None, then).await;
                answered(then, reply, r)
            }
            Request::CreateGroup(owner, name, members, max, reply) => {
                let r = changes::create_group(tx, owner, name, members, max, then).await;
                answered(then, reply, r)
            }
            Request::Group(actor, group, op, max, reply) => {
                let r = changes::change_group(tx, actor, group, op, max, then).await;
                answered(then, reply, r)
            }
            // `commit` runs these itself; were one to come here, it is answered as unapplied.
            request @ (Request::Append(_) | Request::Barrier(_) | Request::Close(_)) => {
                then.push(Then::unapplied(request));
                Ok(())
            }
        }
    }
}

/// Answers `reply` with `result`; an error is passed on, failing the transaction.
fn answered<T: Send + 'static>(
    then: &mut Vec<Then>,
    reply: Reply<T>,
    result: Result<T, StoreError>,
) -> Result<(), StoreError> {
    let failed = result.as_ref().err().map(ToString::to_string);
    then.push(Then::answer(reply, result));
    match failed {
        Some(e) => Err(StoreError::Transaction(e)),
        None => Ok(()),
    }
}
