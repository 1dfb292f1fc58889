//! `--max-connections-per-user` across nodes: each node has a row in `nodes` that it
//! refreshes every [`BEAT`], and a row in `connections` for each relay connection it holds.
//! A connection is claimed in a transaction that holds an advisory lock on its user, so two
//! nodes that register the same user at once take turns. A node that stops refreshing (it was
//! killed) is deleted by the others after [`DEAD`], its connections with it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use deadpool_postgres::Pool;

use super::{exec, row};
use crate::delivery::ConnId;
use crate::id::UserId;
use crate::store::StoreError;

/// PostgreSQL's clock in Unix milliseconds: one clock for every node.
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// How often a node refreshes its row.
const BEAT: Duration = Duration::from_secs(2);

/// How long a node's row outlives its last refresh, in milliseconds.
const DEAD: i64 = 15_000;

pub(crate) struct Node {
    pool: Pool,
    id: i64,
    /// The heartbeat task holds a `Weak` of it, and stops with the store.
    alive: Arc<()>,
}

impl Node {
    /// Adds this node's row and starts refreshing it.
    pub async fn join(pool: &Pool) -> Result<Node, StoreError> {
        let client = pool.get().await?;
        let id: i64 = row(
            &client,
            &format!("INSERT INTO nodes (seen) VALUES ({NOW_MS}) RETURNING id"),
            &[],
        )
        .await?
        .map(|r| r.get(0))
        .ok_or_else(|| StoreError::Corrupt("no node id".into()))?;
        let node = Node {
            pool: pool.clone(),
            id,
            alive: Arc::new(()),
        };
        tokio::spawn(beat(pool.clone(), id, Arc::downgrade(&node.alive)));
        Ok(node)
    }

    /// Counts connection `conn` of `user` in, unless the user has `max` on every node.
    pub async fn claim(&self, user: UserId, conn: ConnId, max: usize) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        exec(&tx, "SELECT pg_advisory_xact_lock($1)", &[&user.get()]).await?;
        let open: i64 = row(
            &tx,
            &format!(
                "SELECT count(*) FROM connections c JOIN nodes n ON n.id = c.node
                 WHERE c.user_id = $1 AND n.seen > {NOW_MS} - $2"
            ),
            &[&user.get(), &DEAD],
        )
        .await?
        .map_or(0, |r| r.get(0));
        if usize::try_from(open).unwrap_or(usize::MAX) >= max {
            return Ok(false);
        }
        exec(
            &tx,
            "INSERT INTO connections (node, conn, user_id) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&self.id, &(conn as i64), &user.get()],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Counts connection `conn` out.
    pub async fn release(&self, conn: ConnId) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        exec(
            &client,
            "DELETE FROM connections WHERE node = $1 AND conn = $2",
            &[&self.id, &(conn as i64)],
        )
        .await?;
        Ok(())
    }
}

/// Refreshes node `id`'s row (putting it back if others took it for dead), and deletes the
/// nodes that stopped refreshing theirs; ends, deleting its own row, once the store is gone.
async fn beat(pool: Pool, id: i64, alive: Weak<()>) {
    loop {
        tokio::time::sleep(BEAT).await;
        let Ok(client) = pool.get().await else {
            continue; // PostgreSQL is away: the next beat tries again
        };
        if alive.upgrade().is_none() {
            let _ = exec(&client, "DELETE FROM nodes WHERE id = $1", &[&id]).await;
            return;
        }
        let refreshed = exec(
            &client,
            &format!(
                "INSERT INTO nodes (id, seen) OVERRIDING SYSTEM VALUE VALUES ($1, {NOW_MS})
                 ON CONFLICT (id) DO UPDATE SET seen = excluded.seen"
            ),
            &[&id],
        )
        .await;
        let swept = exec(
            &client,
            &format!("DELETE FROM nodes WHERE seen < {NOW_MS} - $1"),
            &[&DEAD],
        )
        .await;
        if let Err(e) = refreshed.and(swept) {
            tracing::warn!(error = %e, "cannot refresh this node's row");
        }
    }
}
