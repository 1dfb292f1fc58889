//! The write queue every backend's writer takes its work from, and what a writer does once
//! a transaction has committed (or failed): the same for SQLite and PostgreSQL.
//!
//! A write is a [`Request`] that carries its own reply. It waits in a queue of
//! `--store-queue` places (a request takes one per message it carries), so senders are slowed
//! down, never buffered without bound. The writer takes what is waiting into one
//! transaction, and leaves in a list of [`Then`]s what to do after the commit, in request
//! order: answer, tell the cache what changed, hand the new stream entries to the
//! `Delivery`. [`Settle`] does that.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::acks::AckBook;
use super::cache::ReadCache;
use super::{
    Account, Appended, Appends, BarrierHook, GroupError, GroupId, Outcome, Replies, RequestOutcome,
    SocialError, StoreError, TokenHash,
};
use crate::delivery::{Delivery, Entry, Stale};
use crate::id::{Address, UserId};
use crate::metrics::StoreMetrics;

/// Where a request's answer goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A request to the writer, with its places in the queue (given back as the writer takes
/// it).
pub(crate) type Queued = (Request, OwnedSemaphorePermit);

/// The summary of one step of a retention sweep.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Swept {
    /// Stream entries deleted.
    pub entries: u64,
    /// There is more to delete now: ask again soon.
    pub more: bool,
}

/// A request to the writer.
pub(crate) enum Request {
    Append(Appends),
    /// Write the acknowledgement positions that moved (see `acks`); queue-only.
    FlushAcks,
    /// `(owner, peer, seq)`; queue-only.
    Read(UserId, Address, u64),
    /// `(user, at)`: the user's last connection closed; queue-only.
    Seen(UserId, i64),
    /// One step of the retention sweep.
    Sweep(Reply<Swept>),
    Barrier(BarrierHook),
    CreateUser(Option<UserId>, Account, Reply<Option<UserId>>),
    CreateToken(TokenHash, UserId, i64, Reply<bool>),
    /// `(user, disabled)`.
    SetDisabled(UserId, bool, Reply<bool>),
    RevokeToken(TokenHash, Reply<bool>),
    /// Friends without events (the demo users).
    Befriend(UserId, UserId, Reply<()>),
    /// `(from, to, message, at)`.
    Ask(
        UserId,
        UserId,
        String,
        i64,
        Reply<Result<RequestOutcome, SocialError>>,
    ),
    /// An operation of `a` on `b`.
    Social(SocialOp, UserId, UserId, Reply<Result<(), SocialError>>),
    /// `(owner, name, members, max)`.
    CreateGroup(
        UserId,
        String,
        Vec<UserId>,
        usize,
        Reply<Result<GroupId, GroupError>>,
    ),
    /// `(actor, group, op, max)`.
    Group(
        UserId,
        GroupId,
        GroupOp,
        usize,
        Reply<Result<(), GroupError>>,
    ),
    /// Stop after everything queued before it.
    Close(oneshot::Sender<()>),
}

impl Request {
    /// Messages it carries, or 1: what it counts for in a batch (`--max-batch`).
    pub fn writes(&self) -> usize {
        match self {
            Request::Append(a) => a.messages.len(),
            _ => 1,
        }
    }

    /// Message payload bytes it carries (`--max-batch-bytes`).
    pub fn bytes(&self) -> usize {
        match self {
            Request::Append(a) => a.messages.iter().map(|m| m.payload.len()).sum(),
            _ => 0,
        }
    }
}

/// The social operations answered with `()`; see [`super::social`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum SocialOp {
    Accept,
    Decline,
    Unfriend,
    Block,
    Unblock,
}

impl SocialOp {
    /// Its rules.
    pub fn rules(self) -> fn(super::social::Pair) -> super::social::Plan<()> {
        use super::social;
        match self {
            SocialOp::Accept => |p| social::answer(p, true),
            SocialOp::Decline => |p| social::answer(p, false),
            SocialOp::Unfriend => social::unfriend,
            SocialOp::Block => social::block,
            SocialOp::Unblock => social::unblock,
        }
    }
}

/// A change to a group (see [`super::groups`]).
#[derive(Debug)]
pub(crate) enum GroupOp {
    Add(UserId),
    Remove(UserId),
    Rename(String),
}

/// What to do once the batch has committed (or failed), in request order.
pub(crate) enum Then {
    /// Hand a stream entry to the `Delivery`.
    Deliver(UserId, Entry),
    Appended(Answer),
    Barrier(BarrierHook),
    /// Answer a request: with its value when the batch committed, else with the error.
    Reply(Box<dyn FnOnce(Result<(), StoreError>) + Send>),
    /// The read cache's copy of this user's friend list is stale.
    ForgetFriends(UserId),
    ForgetToken(TokenHash),
    ForgetGroup(GroupId),
    /// The read cache's copy of whom this user blocks is stale.
    ForgetBlocks(UserId),
    /// These acknowledgement positions are written.
    AcksWritten(Vec<(UserId, u64)>),
    Close(oneshot::Sender<()>),
}

impl Then {
    /// The answer to `reply` with `value`, once the batch is known to have committed.
    pub fn reply<T: Send + 'static>(reply: Reply<T>, value: T) -> Then {
        Then::Reply(Box::new(move |committed| {
            let _ = reply.send(committed.map(|()| value));
        }))
    }

    /// A request that failed on its own: its error, whatever the batch does.
    pub fn failed<T: Send + 'static>(reply: Reply<T>, e: StoreError) -> Then {
        Then::Reply(Box::new(move |_| {
            let _ = reply.send(Err(e));
        }))
    }

    /// Answers `reply` with `result`, a request's own outcome.
    pub fn answer<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> Then {
        match result {
            Ok(value) => Then::reply(reply, value),
            Err(e) => Then::failed(reply, e),
        }
    }

    /// A request the transaction never got to (it failed first): answered with the batch's
    /// error.
    pub fn unapplied(request: Request) -> Then {
        fn never<T: Send + 'static>(reply: Reply<T>) -> Then {
            Then::Reply(Box::new(move |result| {
                let _ = reply.send(Err(result.err().unwrap_or(StoreError::Closed)));
            }))
        }
        match request {
            Request::Append(a) => {
                let mut answer = Answer::new(a.replies);
                answer.unstored = a.messages.into_iter().map(|m| m.client_id).collect();
                Then::Appended(answer)
            }
            Request::FlushAcks | Request::Read(..) | Request::Seen(..) => {
                Then::Reply(Box::new(|_| {}))
            }
            Request::Barrier(hook) => Then::Barrier(hook),
            Request::CreateUser(.., reply) => never(reply),
            Request::CreateToken(.., reply) => never(reply),
            Request::RevokeToken(_, reply) => never(reply),
            Request::SetDisabled(.., reply) => never(reply),
            Request::Sweep(reply) => never(reply),
            Request::Befriend(.., reply) => never(reply),
            Request::Ask(.., reply) => never(reply),
            Request::Social(.., reply) => never(reply),
            Request::CreateGroup(.., reply) => never(reply),
            Request::Group(.., reply) => never(reply),
            Request::Close(tx) => Then::Close(tx),
        }
    }
}

/// What a request of appends is answered with after the commit.
pub(crate) struct Answer {
    replies: Arc<dyn Replies>,
    pub outcomes: Vec<Outcome>,
    /// Why the messages after those in `outcomes` were not stored.
    pub failed: Option<StoreError>,
    /// The client ids of messages not stored beyond those in `outcomes`, when known.
    pub unstored: Vec<Option<String>>,
    /// Per user, the entries appended to their stream, in order.
    pub entries: Vec<(UserId, Vec<Entry>)>,
}

impl Answer {
    pub fn new(replies: Arc<dyn Replies>) -> Self {
        Answer {
            replies,
            outcomes: Vec::new(),
            failed: None,
            unstored: Vec::new(),
            entries: Vec::new(),
        }
    }

    /// Where `to`'s entries are kept for the delivery after the commit.
    pub fn slot(&mut self, to: UserId) -> usize {
        match self.entries.iter().position(|(user, _)| *user == to) {
            Some(slot) => slot,
            None => {
                self.entries.push((to, Vec::new()));
                self.entries.len() - 1
            }
        }
    }

    /// Records what became of one message.
    pub fn outcome(
        &mut self,
        client_id: Option<String>,
        group: Option<GroupId>,
        appended: Appended,
    ) {
        self.outcomes.push(Outcome {
            client_id,
            group,
            appended,
        });
    }

    /// After the commit (`Ok`), or the transaction's failure.
    fn send(
        self,
        delivery: &dyn Delivery,
        metrics: &StoreMetrics,
        committed: Result<(), StoreError>,
    ) {
        if let Err(e) = committed {
            // Nothing of the transaction is stored: what it would have answered included.
            let mut unstored: Vec<_> = self.outcomes.into_iter().map(|o| o.client_id).collect();
            unstored.extend(self.unstored);
            self.replies.failed(e, unstored);
            return;
        }
        metrics.appended(&self.outcomes);
        if !self.outcomes.is_empty() {
            self.replies.replied(self.outcomes);
        }
        if let Some(e) = self.failed {
            self.replies.failed(e, self.unstored);
        }
        for (to, entries) in self.entries {
            if !entries.is_empty() {
                delivery.deliver(to, entries.into());
            }
        }
    }
}

/// What a writer tells after each transaction.
pub(crate) struct Settle {
    pub cache: Arc<ReadCache>,
    pub acks: Arc<AckBook>,
    pub delivery: Arc<dyn Delivery>,
    pub metrics: StoreMetrics,
}

impl Settle {
    /// `what` changed: forgotten here and, through the `Delivery`, on other nodes.
    fn stale(&self, what: Stale) {
        self.cache.forget(what);
        self.delivery.stale(what);
    }

    /// Does every `then`, in order, now that the transaction committed (`Ok`) or failed
    /// (with the reason). Returns true on `Close`.
    pub fn settle(&self, then: Vec<Then>, result: Result<(), String>) -> bool {
        let mut closing = false;
        let fail = |e: &String| StoreError::Transaction(e.clone());
        for t in then {
            match (t, &result) {
                (Then::Deliver(to, entry), Ok(())) => self.delivery.deliver(to, [entry].into()),
                (Then::Deliver(..), Err(_)) => {}
                (Then::Appended(answer), r) => {
                    let committed = r.as_ref().map(|_| ()).map_err(fail);
                    answer.send(self.delivery.as_ref(), &self.metrics, committed);
                }
                (Then::Barrier(hook), r) => hook(r.as_ref().map(|_| ()).map_err(fail)),
                (Then::Reply(answer), r) => answer(r.as_ref().map(|_| ()).map_err(fail)),
                (Then::ForgetFriends(user), Ok(())) => self.stale(Stale::Friends(user)),
                (Then::ForgetToken(hash), Ok(())) => self.stale(Stale::Token(hash)),
                (Then::ForgetGroup(group), Ok(())) => self.stale(Stale::Group(group)),
                (Then::ForgetBlocks(user), Ok(())) => self.stale(Stale::Blocks(user)),
                (Then::AcksWritten(acks), Ok(())) => self.acks.written(&acks),
                (
                    Then::ForgetFriends(_)
                    | Then::ForgetToken(_)
                    | Then::ForgetGroup(_)
                    | Then::ForgetBlocks(_)
                    | Then::AcksWritten(_),
                    Err(_),
                ) => {}
                (Then::Close(tx), _) => {
                    closing = true;
                    let _ = tx.send(());
                }
            }
        }
        closing
    }
}

/// How much one transaction takes at most.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    /// `--max-batch`: messages (and other writes).
    pub writes: usize,
    /// `--max-batch-bytes`: message payload bytes.
    pub bytes: usize,
}

impl BatchLimits {
    /// Takes `first` and whatever else is waiting into `batch`, up to the limits (past them
    /// by at most one request). Returns the writes taken.
    pub fn fill(
        &self,
        first: Queued,
        rx: &mut mpsc::UnboundedReceiver<Queued>,
        batch: &mut Vec<Request>,
    ) -> usize {
        let (mut writes, mut bytes) = (0, 0);
        let mut next = Some(first);
        while let Some((request, places)) = next {
            // Its places in the queue are free once it is out of it.
            drop(places);
            writes += request.writes().max(1);
            bytes += request.bytes();
            batch.push(request);
            next = if writes < self.writes && bytes < self.bytes {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        writes
    }
}

/// The sending side of a writer's queue.
pub(crate) struct Queue {
    writes: mpsc::UnboundedSender<Queued>,
    /// `--store-queue` places: a request takes one per message it carries (at least one)
    /// until the writer takes it, so the queue is bounded in messages.
    places: Arc<Semaphore>,
    /// `--store-queue`.
    size: usize,
}

impl Queue {
    /// A queue of `size` places, and its receiving end for the writer.
    pub fn new(size: usize) -> (Self, mpsc::UnboundedReceiver<Queued>) {
        let (writes, rx) = mpsc::unbounded_channel();
        let places = Arc::new(Semaphore::new(size));
        (
            Queue {
                writes,
                places,
                size,
            },
            rx,
        )
    }

    /// Queues a write that takes `weight` places; waits only for them.
    pub async fn enqueue(&self, request: Request, weight: usize) -> Result<(), StoreError> {
        // A request larger than the whole queue waits for all of it.
        let weight = u32::try_from(weight.min(self.size)).unwrap_or(u32::MAX);
        let places = match self.places.clone().try_acquire_many_owned(weight) {
            Ok(places) => places,
            Err(_) => self
                .places
                .clone()
                .acquire_many_owned(weight)
                .await
                .map_err(|_| StoreError::Closed)?,
        };
        self.writes
            .send((request, places))
            .map_err(|_| StoreError::Closed)
    }

    /// Sends `make(reply)` to the writer and waits for its answer.
    pub async fn write<T: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<T>) -> Request,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(make(tx), 1).await?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Starts a thread that asks the writer for `request()` whenever it is `Some`, and then
    /// waits for what `wait` makes of the answer; the first wait is `first`. A full queue is
    /// a busy writer: it is asked again after `first`. The thread ends with the writer.
    pub fn ask_every<T: Send + 'static>(
        &self,
        name: &str,
        first: Duration,
        request: impl Fn() -> Option<(Request, Option<oneshot::Receiver<T>>)> + Send + 'static,
        wait: impl Fn(Option<T>) -> Duration + Send + 'static,
    ) -> std::io::Result<()> {
        let (writes, places) = (self.writes.downgrade(), self.places.clone());
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut pause = first;
                loop {
                    std::thread::sleep(pause);
                    pause = first;
                    let Some(writes) = writes.upgrade() else {
                        return;
                    };
                    let Some((request, answer)) = request() else {
                        continue;
                    };
                    let Ok(place) = places.clone().try_acquire_owned() else {
                        continue;
                    };
                    if writes.send((request, place)).is_err() {
                        return;
                    }
                    drop(writes);
                    if let Some(answer) = answer {
                        pause = wait(answer.blocking_recv().ok());
                    }
                }
            })?;
        Ok(())
    }

    /// Asks the writer, every `interval`, to write the acknowledgement positions that moved.
    pub fn flush_acks_every(&self, interval: Duration, acks: &Arc<AckBook>) -> std::io::Result<()> {
        let interval = interval.max(Duration::from_millis(10));
        let acks = acks.clone();
        let request = move || {
            (!acks.is_empty()).then_some((Request::FlushAcks, None::<oneshot::Receiver<()>>))
        };
        self.ask_every("store-acks", interval, request, move |_| interval)
    }
}
