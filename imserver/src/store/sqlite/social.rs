//! The social graph in the database: the writer's side of `store::social` (how two users
//! stand, applying a plan's changes, appending its events).

use improto::EventKind;
use rusqlite::{Transaction, params};

use super::chunk::HEAD;
use super::draft::StreamIx;
use super::writer::{ARE_FRIENDS, State, savepoint};
use crate::id::UserId;
use crate::store::queue::Then;
use crate::store::social::{self, Change, Pair, Plan, Side, SocialError};

impl State<'_> {
    /// Runs the social operation `rules` of `a` on `b` in a savepoint: reads how they stand,
    /// applies the plan's changes and appends its events. `ask` is a request's message and
    /// time.
    pub(super) fn social<T>(
        &mut self,
        tx: &Transaction,
        a: UserId,
        b: UserId,
        rules: fn(Pair) -> Plan<T>,
        ask: Option<(&str, i64)>,
        then: &mut Vec<Then>,
    ) -> rusqlite::Result<Result<T, SocialError>> {
        let mut names = (String::new(), String::new());
        let (heads, draft) = (&mut *self.heads, &mut self.draft);
        let mut streams: Vec<(UserId, StreamIx)> = Vec::with_capacity(2);
        let plan = savepoint(tx, || {
            let plan = rules(read_pair(tx, a, b)?);
            if plan.answer.is_ok() {
                for &change in &plan.changes {
                    apply_change(tx, a, b, change, ask)?;
                }
            }
            if !plan.events.is_empty() {
                names = (name(tx, a)?, name(tx, b)?);
                // The streams the events go to, so that nothing fails once this is released.
                let mut head = tx.prepare_cached(HEAD)?;
                for owner in [a, b] {
                    streams.push((owner, draft.stream(heads, &mut head, owner)?));
                }
            }
            Ok(plan)
        })?;
        if plan.answer.is_err() {
            return Ok(plan.answer);
        }
        // The rows are written; now what lives in memory.
        for change in &plan.changes {
            match change {
                Change::Befriend | Change::Unfriend => {
                    then.extend([Then::ForgetFriends(a), Then::ForgetFriends(b)]);
                }
                Change::Block => {
                    self.blocks.insert((a, b));
                    then.push(Then::ForgetBlocks(a));
                }
                Change::Unblock => {
                    self.blocks.remove(&(a, b));
                    then.push(Then::ForgetBlocks(a));
                }
                Change::Ask | Change::DropRequests | Change::DropIncoming => {}
            }
        }
        for (side, kind) in plan.events {
            let (owner, user, name) = match side {
                Side::A => (a, b, &names.1),
                Side::B => (b, a, &names.0),
            };
            let message = match (&kind, ask) {
                (EventKind::FriendRequest, Some((message, _))) if !message.is_empty() => {
                    Some(message)
                }
                _ => None,
            };
            let payload = social::event_payload(kind, user, name, message);
            let stream = streams
                .iter()
                .find(|(o, _)| *o == owner)
                .map(|(_, ix)| *ix)
                .expect("every event's stream was looked up in the savepoint");
            self.append_event(owner, stream, payload, then);
        }
        Ok(plan.answer)
    }
}

/// How `a` and `b` stand, read inside the transaction.
fn read_pair(tx: &Transaction, a: UserId, b: UserId) -> rusqlite::Result<Pair> {
    let (a, b) = (a.get(), b.get());
    let mut friends = tx.prepare_cached(ARE_FRIENDS)?;
    let mut asked =
        tx.prepare_cached("SELECT 1 FROM friend_requests WHERE from_id = ?1 AND to_id = ?2")?;
    let mut blocks =
        tx.prepare_cached("SELECT 1 FROM blocks WHERE blocker = ?1 AND blocked = ?2")?;
    Ok(Pair {
        same: a == b,
        friends: friends.exists([a, b])?,
        asked: asked.exists([a, b])?,
        asked_by: asked.exists([b, a])?,
        blocks: blocks.exists([a, b])?,
        blocked_by: blocks.exists([b, a])?,
    })
}

/// Writes one change between `a` and `b`. `ask` is a request's message and time.
pub(super) fn apply_change(
    tx: &Transaction,
    a: UserId,
    b: UserId,
    change: Change,
    ask: Option<(&str, i64)>,
) -> rusqlite::Result<()> {
    let (a, b) = (a.get(), b.get());
    let both = |sql: &str| -> rusqlite::Result<()> {
        let mut stmt = tx.prepare_cached(sql)?;
        stmt.execute([a, b])?;
        stmt.execute([b, a])?;
        Ok(())
    };
    match change {
        Change::Befriend => {
            both("INSERT OR IGNORE INTO friendships (user_id, friend_id) VALUES (?1, ?2)")?
        }
        Change::Unfriend => both("DELETE FROM friendships WHERE user_id = ?1 AND friend_id = ?2")?,
        Change::Ask => {
            let (message, at) = ask.unwrap_or(("", 0));
            tx.prepare_cached(
                "INSERT OR REPLACE INTO friend_requests (from_id, to_id, message, at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![a, b, message, at])?;
        }
        Change::DropRequests => {
            both("DELETE FROM friend_requests WHERE from_id = ?1 AND to_id = ?2")?
        }
        Change::DropIncoming => {
            tx.prepare_cached("DELETE FROM friend_requests WHERE from_id = ?1 AND to_id = ?2")?
                .execute([b, a])?;
        }
        Change::Block => {
            tx.prepare_cached("INSERT OR IGNORE INTO blocks (blocker, blocked) VALUES (?1, ?2)")?
                .execute([a, b])?;
        }
        Change::Unblock => {
            tx.prepare_cached("DELETE FROM blocks WHERE blocker = ?1 AND blocked = ?2")?
                .execute([a, b])?;
        }
    }
    Ok(())
}

fn name(tx: &Transaction, user: UserId) -> rusqlite::Result<String> {
    tx.prepare_cached("SELECT name FROM users WHERE id = ?1")?
        .query_row([user.get()], |r| r.get(0))
}
