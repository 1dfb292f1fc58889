//! The PostgreSQL side of `imserver migrate` (see `store::migrate`): one transaction into a
//! database that holds nothing yet.

use deadpool_postgres::{Manager, Pool};
use tokio_postgres::NoTls;

use super::{exec, row, schema};
use crate::store::StoreError;
use crate::store::sqlite::export::{Entry, Tables, UserRow};

/// Rows per insert statement.
const CHUNK: usize = 1000;

pub(crate) struct Import {
    client: deadpool_postgres::Object,
}

impl Import {
    /// Connects, migrates the schema, checks that the database is empty, and begins the
    /// transaction.
    pub async fn begin(url: &str) -> Result<Import, StoreError> {
        let pg: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Backend(Box::new(e)))?;
        let pool = Pool::builder(Manager::new(pg, NoTls))
            .max_size(1)
            .build()
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        schema::migrate(&pool).await?;
        let client = pool.get().await?;
        let held = row(
            &client,
            "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM streams)",
            &[],
        )
        .await?
        .map_or(0, |r| r.get::<_, i64>(0));
        if held > 0 {
            return Err(StoreError::Backend(
                "the PostgreSQL database already holds data: migrate into an empty one".into(),
            ));
        }
        client.batch_execute("BEGIN").await?;
        Ok(Import { client })
    }

    /// Every table but the streams' entries.
    pub async fn tables(&mut self, t: &Tables) -> Result<(), StoreError> {
        let c = &self.client;
        for users in t.users.chunks(CHUNK) {
            let text = |f: fn(&UserRow) -> &str| -> Vec<&str> { users.iter().map(f).collect() };
            let ids: Vec<i64> = users.iter().map(|u| u.id).collect();
            let seen: Vec<Option<i64>> = users.iter().map(|u| u.last_seen).collect();
            let disabled: Vec<bool> = users.iter().map(|u| u.disabled).collect();
            exec(
                c,
                "INSERT INTO users (id, name, sex, email, signature, password_hash, last_seen, disabled)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                                      $6::text[], $7::bigint[], $8::boolean[])",
                &[
                    &ids,
                    &text(|u| &u.name),
                    &text(|u| &u.sex),
                    &text(|u| &u.email),
                    &text(|u| &u.signature),
                    &text(|u| &u.password_hash),
                    &seen,
                    &disabled,
                ],
            )
            .await?;
        }
        if !t.users.is_empty() {
            exec(
                c,
                "SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT max(id) FROM users))",
                &[],
            )
            .await?;
        }
        for tokens in t.tokens.chunks(CHUNK) {
            let hashes: Vec<&[u8]> = tokens.iter().map(|t| &t.0[..]).collect();
            let users: Vec<i64> = tokens.iter().map(|t| t.1).collect();
            let expiry: Vec<i64> = tokens.iter().map(|t| t.2).collect();
            exec(
                c,
                "INSERT INTO tokens (hash, user_id, expires_at)
                 SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bigint[])",
                &[&hashes, &users, &expiry],
            )
            .await?;
        }
        pairs(c, "friendships (user_id, friend_id)", &t.friendships).await?;
        pairs(c, "blocks (blocker, blocked)", &t.blocks).await?;
        for requests in t.friend_requests.chunks(CHUNK) {
            let from: Vec<i64> = requests.iter().map(|r| r.0).collect();
            let to: Vec<i64> = requests.iter().map(|r| r.1).collect();
            let message: Vec<&str> = requests.iter().map(|r| r.2.as_str()).collect();
            let at: Vec<i64> = requests.iter().map(|r| r.3).collect();
            exec(
                c,
                "INSERT INTO friend_requests (from_id, to_id, message, at)
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[])",
                &[&from, &to, &message, &at],
            )
            .await?;
        }
        for groups in t.groups.chunks(CHUNK) {
            let ids: Vec<i64> = groups.iter().map(|g| g.0).collect();
            let names: Vec<&str> = groups.iter().map(|g| g.1.as_str()).collect();
            let owners: Vec<i64> = groups.iter().map(|g| g.2).collect();
            exec(
                c,
                "INSERT INTO groups (id, name, owner) OVERRIDING SYSTEM VALUE
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[])",
                &[&ids, &names, &owners],
            )
            .await?;
        }
        // A deleted group's id is never given again.
        let last_group = t
            .groups
            .iter()
            .map(|g| g.0)
            .max()
            .unwrap_or(0)
            .max(t.last_group);
        if last_group > 0 {
            exec(
                c,
                "SELECT setval(pg_get_serial_sequence('groups', 'id'), $1)",
                &[&last_group],
            )
            .await?;
        }
        for members in t.group_members.chunks(CHUNK) {
            let groups: Vec<i64> = members.iter().map(|m| m.0).collect();
            let users: Vec<i64> = members.iter().map(|m| m.1).collect();
            let since: Vec<i64> = members.iter().map(|m| m.2).collect();
            exec(
                c,
                "INSERT INTO group_members (group_id, user_id, since)
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[])",
                &[&groups, &users, &since],
            )
            .await?;
        }
        pairs(c, "stream_acks (owner, acked)", &t.acks).await?;
        for reads in t.read_positions.chunks(CHUNK) {
            let owners: Vec<i64> = reads.iter().map(|r| r.0).collect();
            let peers: Vec<i64> = reads.iter().map(|r| r.1).collect();
            let seqs: Vec<i64> = reads.iter().map(|r| r.2).collect();
            exec(
                c,
                "INSERT INTO read_positions (owner, peer, seq)
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[])",
                &[&owners, &peers, &seqs],
            )
            .await?;
        }
        for ids in t.ids.chunks(CHUNK) {
            let senders: Vec<i64> = ids.iter().map(|i| i.0).collect();
            let keys: Vec<&[u8]> = ids.iter().map(|i| &i.1[..]).collect();
            let seqs: Vec<i64> = ids.iter().map(|i| super::bound(i.2)).collect();
            exec(
                c,
                "INSERT INTO message_ids (sender, client_id, seq)
                 SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bigint[])",
                &[&senders, &keys, &seqs],
            )
            .await?;
        }
        Ok(())
    }

    /// `owner`'s stream: its entries and its head.
    pub async fn stream(&mut self, owner: i64, entries: &[Entry]) -> Result<(), StoreError> {
        let c = &self.client;
        for part in entries.chunks(CHUNK) {
            let owners = vec![owner; part.len()];
            let seqs: Vec<i64> = part.iter().map(|e| super::bound(e.seq)).collect();
            let payloads: Vec<&[u8]> = part.iter().map(|e| &e.payload[..]).collect();
            let peers: Vec<Option<i64>> =
                part.iter().map(|e| e.conversation.map(|c| c.0)).collect();
            let received: Vec<bool> = part
                .iter()
                .map(|e| e.conversation.is_some_and(|c| c.1))
                .collect();
            let origins: Vec<i64> = part.iter().map(|e| super::bound(e.origin)).collect();
            exec(
                c,
                "INSERT INTO entries (owner, seq, payload, peer, received, origin)
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bigint[],
                                      $5::boolean[], $6::bigint[])",
                &[&owners, &seqs, &payloads, &peers, &received, &origins],
            )
            .await?;
        }
        let head = entries.last().map_or(0, |e| super::bound(e.seq));
        exec(
            c,
            "INSERT INTO streams (owner, head) VALUES ($1, $2)",
            &[&owner, &head],
        )
        .await?;
        Ok(())
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        self.client.batch_execute("COMMIT").await?;
        Ok(())
    }
}

/// Inserts `(a, b)` rows into `table (a, b)`.
async fn pairs(
    c: &deadpool_postgres::Object,
    table: &str,
    rows: &[(i64, i64)],
) -> Result<(), StoreError> {
    for part in rows.chunks(CHUNK) {
        let a: Vec<i64> = part.iter().map(|r| r.0).collect();
        let b: Vec<i64> = part.iter().map(|r| r.1).collect();
        exec(
            c,
            &format!("INSERT INTO {table} SELECT * FROM unnest($1::bigint[], $2::bigint[])"),
            &[&a, &b],
        )
        .await?;
    }
    Ok(())
}
