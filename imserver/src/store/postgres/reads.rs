//! The queries, each on a connection from the pool (the writer's transactions never make
//! them wait: PostgreSQL readers see the last commit).

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use deadpool_postgres::{Object, Pool};
use futures::FutureExt;

use super::changes::load_group;
use super::nodes::Node;
use super::{bound, group_id, row, rows, seq, user_id};
use crate::delivery::ConnId;
use crate::id::{Address, GroupId, UserId};
use crate::store::front::Reads;
use crate::store::{
    Account, Conversation, FriendRequest, FriendRequests, Group, HistoryPage, Position, StoreError,
    StoreFuture, StoredEntry, TokenHash, TokenRecord, User,
};

pub(crate) struct PgReads {
    pool: Pool,
    /// This node, which counts its relay connections.
    node: Arc<Node>,
}

impl PgReads {
    pub fn new(pool: Pool, node: Node) -> Self {
        PgReads {
            pool,
            node: Arc::new(node),
        }
    }

    /// A connection, waiting at most for the pool's wait timeout.
    fn client(&self) -> impl Future<Output = Result<Object, StoreError>> + Send + 'static {
        let pool = self.pool.clone();
        async move { Ok(pool.get().await?) }
    }
}

/// `(id, name)` rows.
fn named(found: Vec<tokio_postgres::Row>) -> Result<Vec<(UserId, String)>, StoreError> {
    found
        .into_iter()
        .map(|r| Ok((user_id(r.get(0))?, r.get(1))))
        .collect()
}

fn entry(r: &tokio_postgres::Row) -> StoredEntry {
    StoredEntry {
        seq: seq(r.get(0)),
        payload: Bytes::from(r.get::<_, Vec<u8>>(1)),
    }
}

impl Reads for PgReads {
    fn user(&self, id: UserId) -> StoreFuture<'static, Option<User>> {
        let client = self.client();
        async move {
            let c = client.await?;
            let Some(r) = row(
                &c,
                "SELECT name, sex, email, signature, password_hash FROM users WHERE id = $1",
                &[&id.get()],
            )
            .await?
            else {
                return Ok(None);
            };
            Ok(Some(User {
                id,
                account: Account {
                    name: r.get(0),
                    sex: r.get(1),
                    email: r.get(2),
                    signature: r.get(3),
                    password_hash: r.get(4),
                },
            }))
        }
        .boxed()
    }

    fn last_seen(&self, user: UserId) -> StoreFuture<'static, Option<i64>> {
        let client = self.client();
        async move {
            let c = client.await?;
            let r = row(
                &c,
                "SELECT last_seen FROM users WHERE id = $1",
                &[&user.get()],
            )
            .await?;
            Ok(r.and_then(|r| r.get(0)))
        }
        .boxed()
    }

    fn friends(&self, id: UserId) -> StoreFuture<'static, Option<Vec<(UserId, String)>>> {
        let client = self.client();
        async move {
            let c = client.await?;
            if row(&c, "SELECT 1 FROM users WHERE id = $1", &[&id.get()])
                .await?
                .is_none()
            {
                return Ok(None);
            }
            let found = rows(
                &c,
                "SELECT u.id, u.name FROM friendships f JOIN users u ON u.id = f.friend_id
                 WHERE f.user_id = $1 ORDER BY u.id",
                &[&id.get()],
            )
            .await?;
            named(found).map(Some)
        }
        .boxed()
    }

    fn friend_requests(&self, me: UserId) -> StoreFuture<'static, FriendRequests> {
        let client = self.client();
        async move {
            let c = client.await?;
            let requests = |found: Vec<tokio_postgres::Row>| -> Result<Vec<_>, StoreError> {
                found
                    .into_iter()
                    .map(|r| {
                        Ok(FriendRequest {
                            user: user_id(r.get(0))?,
                            name: r.get(1),
                            message: r.get(2),
                            at: r.get(3),
                        })
                    })
                    .collect()
            };
            let me = me.get();
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&me];
            let incoming = rows(
                &c,
                "SELECT r.from_id, u.name, r.message, r.at FROM friend_requests r
                 JOIN users u ON u.id = r.from_id WHERE r.to_id = $1
                 ORDER BY r.at DESC, r.from_id",
                &params,
            );
            let outgoing = rows(
                &c,
                "SELECT r.to_id, u.name, r.message, r.at FROM friend_requests r
                 JOIN users u ON u.id = r.to_id WHERE r.from_id = $1
                 ORDER BY r.at DESC, r.to_id",
                &params,
            );
            let (incoming, outgoing) = futures::try_join!(incoming, outgoing)?;
            Ok(FriendRequests {
                incoming: requests(incoming)?,
                outgoing: requests(outgoing)?,
            })
        }
        .boxed()
    }

    fn blocks(&self, me: UserId) -> StoreFuture<'static, Vec<(UserId, String)>> {
        let client = self.client();
        async move {
            let c = client.await?;
            let found = rows(
                &c,
                "SELECT u.id, u.name FROM blocks b JOIN users u ON u.id = b.blocked
                 WHERE b.blocker = $1 ORDER BY u.id",
                &[&me.get()],
            )
            .await?;
            named(found)
        }
        .boxed()
    }

    fn blocked_by(&self, user: UserId) -> StoreFuture<'static, HashSet<UserId>> {
        let client = self.client();
        async move {
            let c = client.await?;
            let found = rows(
                &c,
                "SELECT blocked FROM blocks WHERE blocker = $1",
                &[&user.get()],
            )
            .await?;
            found.into_iter().map(|r| user_id(r.get(0))).collect()
        }
        .boxed()
    }

    fn token(&self, hash: TokenHash) -> StoreFuture<'static, Option<TokenRecord>> {
        let client = self.client();
        async move {
            let c = client.await?;
            let r = row(
                &c,
                "SELECT user_id, expires_at FROM tokens WHERE hash = $1",
                &[&hash.as_slice()],
            )
            .await?;
            r.map(|r| {
                Ok(TokenRecord {
                    user: user_id(r.get(0))?,
                    expires_at: r.get(1),
                })
            })
            .transpose()
        }
        .boxed()
    }

    fn group(&self, id: GroupId) -> StoreFuture<'static, Option<Group>> {
        let client = self.client();
        async move { load_group(&client.await?, id, false).await }.boxed()
    }

    fn groups_of(&self, user: UserId) -> StoreFuture<'static, Vec<GroupId>> {
        let client = self.client();
        async move {
            let c = client.await?;
            let found = rows(
                &c,
                "SELECT group_id FROM group_members WHERE user_id = $1 ORDER BY group_id",
                &[&user.get()],
            )
            .await?;
            found.into_iter().map(|r| group_id(r.get(0))).collect()
        }
        .boxed()
    }

    fn position(&self, owner: UserId) -> StoreFuture<'static, Position> {
        let client = self.client();
        async move {
            let c = client.await?;
            let r = row(
                &c,
                "SELECT (SELECT head FROM streams WHERE owner = $1),
                        (SELECT min(seq) FROM entries WHERE owner = $1),
                        (SELECT acked FROM stream_acks WHERE owner = $1)",
                &[&owner.get()],
            )
            .await?
            .ok_or_else(|| StoreError::Corrupt("no position".into()))?;
            let head = r.get::<_, Option<i64>>(0).map_or(0, seq);
            Ok(Position {
                head,
                oldest: r.get::<_, Option<i64>>(1).map_or(head + 1, seq),
                acked: r.get::<_, Option<i64>>(2).map_or(0, seq),
            })
        }
        .boxed()
    }

    fn read_stream(
        &self,
        owner: UserId,
        after: u64,
        limit: usize,
    ) -> StoreFuture<'static, Vec<StoredEntry>> {
        let client = self.client();
        async move {
            let c = client.await?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let found = rows(
                &c,
                "SELECT seq, payload FROM entries WHERE owner = $1 AND seq > $2
                 ORDER BY seq LIMIT $3",
                &[&owner.get(), &bound(after), &limit],
            )
            .await?;
            Ok(found.iter().map(entry).collect())
        }
        .boxed()
    }

    fn history(
        &self,
        owner: UserId,
        peer: Address,
        before: Option<u64>,
        limit: usize,
    ) -> StoreFuture<'static, HistoryPage> {
        let client = self.client();
        async move {
            let c = client.await?;
            // One more than the page tells whether there are more.
            let take = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
            let found = rows(
                &c,
                "SELECT seq, payload FROM entries
                 WHERE owner = $1 AND peer = $2 AND seq < $3 ORDER BY seq DESC LIMIT $4",
                &[
                    &owner.get(),
                    &peer.key(),
                    &bound(before.unwrap_or(u64::MAX)),
                    &take,
                ],
            )
            .await?;
            let more = found.len() > limit;
            let mut messages: Vec<StoredEntry> = found.iter().take(limit).map(entry).collect();
            messages.reverse();
            Ok(HistoryPage { messages, more })
        }
        .boxed()
    }

    fn conversations(
        &self,
        owner: UserId,
        limit: usize,
    ) -> StoreFuture<'static, Vec<Conversation>> {
        let client = self.client();
        async move {
            let c = client.await?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            // Each peer once, by skipping from one to the next in the conversation index (a
            // loose index scan), its newest message, and what came from others after the
            // owner's read position.
            let found = rows(
                &c,
                "WITH RECURSIVE peers (peer) AS (
                     (SELECT peer FROM entries WHERE owner = $1 AND peer IS NOT NULL
                      ORDER BY peer LIMIT 1)
                     UNION ALL
                     SELECT (SELECT e.peer FROM entries e
                             WHERE e.owner = $1 AND e.peer IS NOT NULL AND e.peer > p.peer
                             ORDER BY e.peer LIMIT 1)
                     FROM peers p WHERE p.peer IS NOT NULL
                 ), newest AS (
                     SELECT p.peer, l.seq, l.payload FROM peers p
                     CROSS JOIN LATERAL (
                         SELECT seq, payload FROM entries e
                         WHERE e.owner = $1 AND e.peer = p.peer ORDER BY seq DESC LIMIT 1) l
                     WHERE p.peer IS NOT NULL
                     ORDER BY l.seq DESC LIMIT $2
                 )
                 SELECT n.seq, n.payload, n.peer,
                        (SELECT count(*) FROM entries u
                         WHERE u.owner = $1 AND u.peer = n.peer AND u.received
                           AND u.seq > coalesce((SELECT r.seq FROM read_positions r
                                                 WHERE r.owner = $1 AND r.peer = n.peer), 0))
                 FROM newest n ORDER BY n.seq DESC",
                &[&owner.get(), &limit],
            )
            .await?;
            found
                .iter()
                .map(|r| {
                    let key: i64 = r.get(2);
                    Ok(Conversation {
                        peer: Address::from_key(key)
                            .ok_or_else(|| StoreError::Corrupt(format!("peer {key}")))?,
                        last: entry(r),
                        unread: seq(r.get(3)),
                    })
                })
                .collect()
        }
        .boxed()
    }

    fn claim_connection(
        &self,
        user: UserId,
        conn: ConnId,
        max: usize,
    ) -> StoreFuture<'static, bool> {
        let node = self.node.clone();
        async move { node.claim(user, conn, max).await }.boxed()
    }

    fn release_connection(&self, _user: UserId, conn: ConnId) -> StoreFuture<'static, ()> {
        let node = self.node.clone();
        async move { node.release(conn).await }.boxed()
    }

    fn ping(&self) -> StoreFuture<'static, ()> {
        let client = self.client();
        async move {
            let c = client.await?;
            c.simple_query("SELECT 1").await?;
            Ok(())
        }
        .boxed()
    }
}
