//! The versioned migrations (`migrations/`), each applied once in a transaction of its own
//! and recorded in `schema_migrations`. Nodes that start at the same time take turns under
//! a session advisory lock: the first migrates, the others find it done.

use deadpool_postgres::Pool;

use crate::store::StoreError;

/// The migrations, in order; a migration's version is its place here, from 1.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_connections.sql"),
];

/// The advisory lock every node takes to migrate (an arbitrary number: "imserver").
const LOCK: i64 = 0x696d_7365_7276_6572;

pub(super) async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK])
        .await?;
    let migrated = apply(&mut client).await;
    // Released whatever happened (it would be with the session, too).
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK])
        .await;
    migrated?;
    unlocked?;
    Ok(())
}

async fn apply(client: &mut deadpool_postgres::Client) -> Result<(), StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    INTEGER PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .await?;
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?;
    let current: i32 = row.get(0);
    let known = MIGRATIONS.len() as i32;
    if current > known {
        return Err(StoreError::Backend(
            format!(
                "the database's schema is at version {current}, newer than this imserver \
                 knows ({known}): run a newer imserver"
            )
            .into(),
        ));
    }
    for (version, sql) in (1..).zip(MIGRATIONS).skip(current as usize) {
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version, "PostgreSQL schema migrated");
    }
    Ok(())
}
