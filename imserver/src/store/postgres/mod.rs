//! The PostgreSQL store (`--store postgres://…`), which several imserver nodes share.
//!
//! It is the same [`Front`] as SQLite's, over a writer task and a connection pool
//! (`tokio-postgres` with `deadpool-postgres`: queries are pipelined on one connection, and
//! nothing needs a database at build time). Nothing it does blocks a tokio thread.
//!
//! What keeps every stream gapless, whichever node appends to it: a stream's head is a row
//! of `streams`, and a transaction that appends locks the rows of all the streams it
//! appends to, in one statement, in owner order, before anything else (see `lock`). Two
//! nodes that append to the same stream take turns; no two transactions wait for each other
//! in a circle. A retry of a message that lands on another node is found in `message_ids`
//! under the sender's lock.
//!
//! - `schema`: the versioned migrations, run under an advisory lock;
//! - `writer`: the writer task: one transaction per batch of appends (group commit), one per
//!   other change;
//! - `lock`: locking streams and gathering what a transaction appends;
//! - `append`: messages; `changes`: the social graph, groups, read positions, accounts;
//! - `reads`: the queries;
//! - `import`: `imserver migrate`'s side here;
//! - `nodes`: relay connections counted on every node (`--max-connections-per-user`).

mod append;
mod changes;
mod import;
mod lock;
mod nodes;
mod reads;
mod schema;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::StoreError;
use super::acks::AckBook;
use super::cache::ReadCache;
use super::front::Front;
use super::queue::{BatchLimits, Queue, Settle};
use crate::config::StoreConfig;
use crate::delivery::Delivery;
use crate::metrics::StoreMetrics;

pub(crate) use import::Import;
pub(crate) use reads::PgReads;

/// The PostgreSQL store.
pub(crate) type PgStore = Front<PgReads>;

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // Its own text is "db error" for every error PostgreSQL reports: say which.
        match e.as_db_error() {
            Some(db) => StoreError::Backend(
                format!("PostgreSQL {}: {}", db.code().code(), db.message()).into(),
            ),
            None => StoreError::Backend(Box::new(e)),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

/// How long a request waits for a connection (all of them busy, or PostgreSQL away) before
/// it fails.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// Connects to `url`, migrates the database (under an advisory lock, so that nodes that
/// start together migrate once), and starts the writer task, which hands every committed
/// stream entry to `delivery`.
pub(crate) async fn open(
    url: &str,
    config: &StoreConfig,
    delivery: Arc<dyn Delivery>,
) -> Result<PgStore, StoreError> {
    let pg: tokio_postgres::Config = url.parse().map_err(|e| StoreError::Backend(Box::new(e)))?;
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            // A connection is checked (a round trip) before it is handed out: one that a
            // restarted PostgreSQL closed is replaced rather than failing a request.
            recycling_method: RecyclingMethod::Verified,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(config.store_connections)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_WAIT))
        .create_timeout(Some(CONNECT_WAIT))
        .recycle_timeout(Some(CONNECT_WAIT))
        .build()
        .map_err(|e| StoreError::Backend(Box::new(e)))?;
    schema::migrate(&pool).await?;
    let node = nodes::Node::join(&pool).await?;

    let (queue, rx) = Queue::new(config.store_queue);
    let cache = Arc::new(ReadCache::new(config.cache_entries));
    let acks = Arc::new(AckBook::default());
    let settle = Settle {
        cache: cache.clone(),
        acks: acks.clone(),
        delivery,
        metrics: StoreMetrics::new(),
    };
    let limits = BatchLimits {
        writes: config.max_batch,
        bytes: config.max_batch_bytes,
    };
    let writer = writer::Writer::new(pool.clone(), config, settle);
    tokio::spawn(writer.run(rx, limits));
    queue.flush_acks_every(config.ack_flush, &acks)?;
    Ok(Front {
        queue,
        reads: PgReads::new(pool, node),
        cache,
        acks,
    })
}

/// The rows of `sql` (prepared once per connection).
async fn rows<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, StoreError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query(&statement, params).await?)
}

/// The row of `sql`, if there is one.
async fn row<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, StoreError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&statement, params).await?)
}

/// Runs `sql`; returns the rows it changed.
async fn exec<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.execute(&statement, params).await?)
}

/// A user id read from the database.
fn user_id(n: i64) -> Result<crate::id::UserId, StoreError> {
    crate::id::UserId::new(n).ok_or_else(|| StoreError::Corrupt(format!("user id {n}")))
}

/// A group id read from the database.
fn group_id(n: i64) -> Result<crate::id::GroupId, StoreError> {
    crate::id::GroupId::new(n).ok_or_else(|| StoreError::Corrupt(format!("group id {n}")))
}

/// A `seq` read from the database.
fn seq(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A `seq` as PostgreSQL's `bigint`.
fn bound(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}
