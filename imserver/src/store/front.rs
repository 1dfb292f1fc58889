//! The store as the server sees it, the same for every backend: writes go over the
//! [`Queue`] to the backend's writer, reads go to its [`Reads`], through the cache where
//! every HTTP request reads, and acknowledgements wait in the [`AckBook`].
//!
//! A backend is a writer that takes [`Request`]s from the queue, and a [`Reads`].

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::oneshot;

use super::acks::AckBook;
use super::cache::{ReadCache, Table};
use super::queue::{GroupOp, Queue, Request, SocialOp};
use super::{
    Account, Accounts, Appends, BarrierHook, Conversation, FriendRequests, Group, GroupError,
    Groups, HistoryPage, Position, RequestOutcome, Social, SocialError, Store, StoreError,
    StoreFuture, StoredEntry, Streams, TokenHash, TokenRecord, Tokens, User,
};
use crate::delivery::ConnId;
use crate::id::{Address, GroupId, UserId};

/// A backend's queries. Each runs off the async threads or without blocking them, and may
/// run at the same time as others and as the writer.
pub(crate) trait Reads: Send + Sync + 'static {
    fn user(&self, id: UserId) -> StoreFuture<'static, Option<User>>;
    fn last_seen(&self, user: UserId) -> StoreFuture<'static, Option<i64>>;
    /// `None` when the user does not exist.
    fn friends(&self, id: UserId) -> StoreFuture<'static, Option<Vec<(UserId, String)>>>;
    fn friend_requests(&self, me: UserId) -> StoreFuture<'static, FriendRequests>;
    fn blocks(&self, me: UserId) -> StoreFuture<'static, Vec<(UserId, String)>>;
    /// The users `user` blocks.
    fn blocked_by(&self, user: UserId) -> StoreFuture<'static, HashSet<UserId>>;
    fn token(&self, hash: TokenHash) -> StoreFuture<'static, Option<TokenRecord>>;
    fn group(&self, id: GroupId) -> StoreFuture<'static, Option<Group>>;
    fn groups_of(&self, user: UserId) -> StoreFuture<'static, Vec<GroupId>>;
    /// The position as stored (acknowledgements not yet written are the front's).
    fn position(&self, owner: UserId) -> StoreFuture<'static, Position>;
    fn read_stream(
        &self,
        owner: UserId,
        after: u64,
        limit: usize,
    ) -> StoreFuture<'static, Vec<StoredEntry>>;
    fn history(
        &self,
        owner: UserId,
        peer: Address,
        before: Option<u64>,
        limit: usize,
    ) -> StoreFuture<'static, HistoryPage>;
    fn conversations(&self, owner: UserId, limit: usize)
    -> StoreFuture<'static, Vec<Conversation>>;
    /// A trivial query: the database answers.
    fn ping(&self) -> StoreFuture<'static, ()>;

    /// See [`Store::claim_connection`]: true unless the backend counts connections of
    /// every node.
    fn claim_connection(
        &self,
        _user: UserId,
        _conn: ConnId,
        _max: usize,
    ) -> StoreFuture<'static, bool> {
        futures::future::ready(Ok(true)).boxed()
    }

    fn release_connection(&self, _user: UserId, _conn: ConnId) -> StoreFuture<'static, ()> {
        futures::future::ready(Ok(())).boxed()
    }
}

/// A [`Store`] over a backend's writer (behind `queue`) and its `reads`.
pub(crate) struct Front<R> {
    pub queue: Queue,
    pub reads: R,
    pub cache: Arc<ReadCache>,
    /// Where an `Ack` goes: written by the writer every `--ack-flush`.
    pub acks: Arc<AckBook>,
}

impl<R: Reads> Front<R> {
    fn enqueue(&self, request: Request, weight: usize) -> StoreFuture<'_, ()> {
        self.queue.enqueue(request, weight).boxed()
    }

    fn write<T: Send + 'static>(
        &self,
        make: impl FnOnce(super::queue::Reply<T>) -> Request + Send + 'static,
    ) -> StoreFuture<'_, T> {
        self.queue.write(make).boxed()
    }

    fn social(
        &self,
        op: SocialOp,
        a: UserId,
        b: UserId,
    ) -> StoreFuture<'_, Result<(), SocialError>> {
        self.write(move |tx| Request::Social(op, a, b, tx))
    }
}

impl<R: Reads> Accounts for Front<R> {
    fn create_user(&self, id: Option<UserId>, account: Account) -> StoreFuture<'_, Option<UserId>> {
        self.write(move |tx| Request::CreateUser(id, account, tx))
    }

    fn user(&self, id: UserId) -> StoreFuture<'_, Option<User>> {
        cached(&self.cache.users, id, |id| self.reads.user(id))
    }

    fn seen(&self, user: UserId, at: i64) -> StoreFuture<'_, ()> {
        self.enqueue(Request::Seen(user, at), 1)
    }

    fn last_seen(&self, user: UserId) -> StoreFuture<'_, Option<i64>> {
        self.reads.last_seen(user)
    }

    fn set_disabled(&self, user: UserId, disabled: bool) -> StoreFuture<'_, bool> {
        self.write(move |tx| Request::SetDisabled(user, disabled, tx))
    }
}

impl<R: Reads> Tokens for Front<R> {
    fn create_token(
        &self,
        hash: TokenHash,
        user: UserId,
        expires_at: i64,
    ) -> StoreFuture<'_, bool> {
        self.write(move |tx| Request::CreateToken(hash, user, expires_at, tx))
    }

    fn token(&self, hash: TokenHash) -> StoreFuture<'_, Option<TokenRecord>> {
        cached(&self.cache.tokens, hash, |hash| self.reads.token(hash))
    }

    fn revoke_token(&self, hash: TokenHash) -> StoreFuture<'_, bool> {
        self.write(move |tx| Request::RevokeToken(hash, tx))
    }
}

impl<R: Reads> Social for Front<R> {
    fn friends(&self, id: UserId) -> StoreFuture<'_, Option<Vec<(UserId, String)>>> {
        cached(&self.cache.friends, id, |id| self.reads.friends(id))
    }

    fn befriend(&self, a: UserId, b: UserId) -> StoreFuture<'_, ()> {
        self.write(move |tx| Request::Befriend(a, b, tx))
    }

    fn request_friend(
        &self,
        from: UserId,
        to: UserId,
        message: String,
    ) -> StoreFuture<'_, Result<RequestOutcome, SocialError>> {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.write(move |tx| Request::Ask(from, to, message, at, tx))
    }

    fn answer_request(
        &self,
        me: UserId,
        from: UserId,
        accept: bool,
    ) -> StoreFuture<'_, Result<(), SocialError>> {
        let op = if accept {
            SocialOp::Accept
        } else {
            SocialOp::Decline
        };
        self.social(op, me, from)
    }

    fn unfriend(&self, me: UserId, them: UserId) -> StoreFuture<'_, Result<(), SocialError>> {
        self.social(SocialOp::Unfriend, me, them)
    }

    fn block(&self, me: UserId, them: UserId) -> StoreFuture<'_, Result<(), SocialError>> {
        self.social(SocialOp::Block, me, them)
    }

    fn unblock(&self, me: UserId, them: UserId) -> StoreFuture<'_, Result<(), SocialError>> {
        self.social(SocialOp::Unblock, me, them)
    }

    fn friend_requests(&self, me: UserId) -> StoreFuture<'_, FriendRequests> {
        self.reads.friend_requests(me)
    }

    fn blocks(&self, me: UserId) -> StoreFuture<'_, Vec<(UserId, String)>> {
        self.reads.blocks(me)
    }

    fn blocks_user(&self, blocker: UserId, blocked: UserId) -> StoreFuture<'_, bool> {
        let whom = cached(&self.cache.blocked, blocker, |id| {
            let read = self.reads.blocked_by(id);
            async move { Ok(Some(Arc::new(read.await?))) }.boxed()
        });
        async move { Ok(whom.await?.is_some_and(|set| set.contains(&blocked))) }.boxed()
    }
}

impl<R: Reads> Groups for Front<R> {
    fn create_group(
        &self,
        owner: UserId,
        name: String,
        members: Vec<UserId>,
        max: usize,
    ) -> StoreFuture<'_, Result<GroupId, GroupError>> {
        self.write(move |tx| Request::CreateGroup(owner, name, members, max, tx))
    }

    fn group(&self, id: GroupId) -> StoreFuture<'_, Option<Arc<Group>>> {
        cached(&self.cache.groups, id, |id| {
            let read = self.reads.group(id);
            async move { Ok(read.await?.map(Arc::new)) }.boxed()
        })
    }

    fn groups_of(&self, user: UserId) -> StoreFuture<'_, Vec<GroupId>> {
        self.reads.groups_of(user)
    }

    fn add_member(
        &self,
        actor: UserId,
        group: GroupId,
        user: UserId,
        max: usize,
    ) -> StoreFuture<'_, Result<(), GroupError>> {
        self.write(move |tx| Request::Group(actor, group, GroupOp::Add(user), max, tx))
    }

    fn remove_member(
        &self,
        actor: UserId,
        group: GroupId,
        user: UserId,
    ) -> StoreFuture<'_, Result<(), GroupError>> {
        self.write(move |tx| Request::Group(actor, group, GroupOp::Remove(user), 0, tx))
    }

    fn rename_group(
        &self,
        actor: UserId,
        group: GroupId,
        name: String,
    ) -> StoreFuture<'_, Result<(), GroupError>> {
        self.write(move |tx| Request::Group(actor, group, GroupOp::Rename(name), 0, tx))
    }
}

impl<R: Reads> Streams for Front<R> {
    fn append(&self, appends: Appends) -> StoreFuture<'_, ()> {
        let weight = appends.weight();
        self.enqueue(Request::Append(appends), weight)
    }

    fn position(&self, owner: UserId) -> StoreFuture<'_, Position> {
        // The book first: a position written after this is in the table.
        let unwritten = self.acks.get(owner);
        let stored = self.reads.position(owner);
        async move {
            let mut p = stored.await?;
            // Never past the head (a client may acknowledge more than it got).
            p.acked = p.acked.max(unwritten.unwrap_or(0)).min(p.head);
            Ok(p)
        }
        .boxed()
    }

    fn read_stream(
        &self,
        owner: UserId,
        after: u64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<StoredEntry>> {
        self.reads.read_stream(owner, after, limit)
    }

    fn ack(&self, owner: UserId, seq: u64) -> StoreFuture<'_, ()> {
        self.acks.record(owner, seq);
        futures::future::ready(Ok(())).boxed()
    }

    fn mark_read(&self, owner: UserId, peer: Address, seq: u64) -> StoreFuture<'_, ()> {
        self.enqueue(Request::Read(owner, peer, seq), 1)
    }

    fn barrier(&self, done: BarrierHook) -> StoreFuture<'_, ()> {
        self.enqueue(Request::Barrier(done), 1)
    }

    fn history(
        &self,
        owner: UserId,
        peer: Address,
        before: Option<u64>,
        limit: usize,
    ) -> StoreFuture<'_, HistoryPage> {
        self.reads.history(owner, peer, before, limit)
    }

    fn conversations(&self, owner: UserId, limit: usize) -> StoreFuture<'_, Vec<Conversation>> {
        self.reads.conversations(owner, limit)
    }
}

impl<R: Reads> Store for Front<R> {
    fn ready(&self) -> StoreFuture<'_, ()> {
        async move {
            self.reads.ping().await?;
            let (tx, rx) = oneshot::channel();
            let hook: BarrierHook = Box::new(move |done| {
                let _ = tx.send(done);
            });
            self.barrier(hook).await?;
            rx.await.map_err(|_| StoreError::Closed)?
        }
        .boxed()
    }

    fn forget(&self, what: crate::delivery::Stale) {
        self.cache.forget(what);
    }

    fn claim_connection(&self, user: UserId, conn: ConnId, max: usize) -> StoreFuture<'_, bool> {
        self.reads.claim_connection(user, conn, max)
    }

    fn release_connection(&self, user: UserId, conn: ConnId) -> StoreFuture<'_, ()> {
        self.reads.release_connection(user, conn)
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        async move {
            let (tx, rx) = oneshot::channel();
            if self.queue.enqueue(Request::Close(tx), 1).await.is_ok() {
                let _ = rx.await;
            }
        }
        .boxed()
    }
}

/// Answers from `table` when it has `key`; otherwise reads the database with `read(key)` and
/// caches what it found.
fn cached<'a, K, V>(
    table: &'a Table<K, V>,
    key: K,
    read: impl FnOnce(K) -> StoreFuture<'a, Option<V>>,
) -> StoreFuture<'a, Option<V>>
where
    K: Hash + Eq + Clone + Send + 'a,
    V: Clone + Send + 'a,
{
    if let Some(hit) = table.get(&key) {
        return futures::future::ready(Ok(Some(hit))).boxed();
    }
    let generation = table.generation();
    let found = read(key.clone());
    async move {
        let found = found.await?;
        if let Some(value) = &found {
            table.put(generation, key, value.clone());
        }
        Ok(found)
    }
    .boxed()
}
