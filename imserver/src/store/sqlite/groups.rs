//! Groups in the database: the writer's side of `store::groups` (a group as it stands,
//! making one, applying a plan with its events) and the queries both sides share.
//!
//! The writer keeps the groups it has looked up in memory (it is the only one that changes
//! them, so its copies stay exact, as long as they are forgotten when a transaction fails):
//! a group message finds its members without a query.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::writer::{State, id, savepoint};
use crate::id::{GroupId, UserId};
use crate::store::groups::{self, Group, GroupError, GroupEvent, Plan};
use crate::store::queue::GroupOp;
use crate::store::queue::Then;

impl State<'_> {
    /// Group `id` as it stands, from the writer's copy or the table.
    pub(super) fn group(
        &mut self,
        tx: &Connection,
        id: GroupId,
    ) -> rusqlite::Result<Option<Arc<Group>>> {
        if let Some(group) = self.groups.get(&id) {
            return Ok(Some(group.clone()));
        }
        let Some(group) = load(tx, id)? else {
            return Ok(None);
        };
        let group = Arc::new(group);
        self.groups.insert(id, group.clone());
        Ok(Some(group))
    }

    /// Makes a group of `owner` named `name` with `members`, each of whom gets
    /// `group_added`.
    pub(super) fn create_group(
        &mut self,
        tx: &Transaction,
        owner: UserId,
        name: String,
        members: Vec<UserId>,
        max: usize,
        then: &mut Vec<Then>,
    ) -> rusqlite::Result<Result<GroupId, GroupError>> {
        let (members, events) = match groups::create(owner, &members, max) {
            Ok(plan) => plan,
            Err(e) => return Ok(Err(e)),
        };
        let mut exists = tx.prepare_cached("SELECT 1 FROM users WHERE id = ?1")?;
        let mut unknown = Vec::new();
        for &m in &members {
            if !exists.exists([m.get()])? {
                unknown.push(m);
            }
        }
        if !unknown.is_empty() {
            return Ok(Err(GroupError::UnknownUsers(unknown)));
        }
        let (heads, draft) = (&mut *self.heads, &mut self.draft);
        let mut streams = Vec::with_capacity(events.len());
        let group = savepoint(tx, || {
            tx.prepare_cached("INSERT INTO groups (name, owner) VALUES (?1, ?2)")?
                .execute(params![name, owner.get()])?;
            let group = Group {
                id: group_id(tx.last_insert_rowid())?,
                name,
                owner,
                members,
            };
            write(tx, None, Some(&group))?;
            event_streams(tx, heads, draft, &events, &mut streams)?;
            Ok(group)
        })?;
        let id = group.id;
        self.told(&group, events, &streams, then);
        self.groups.insert(id, Arc::new(group));
        then.push(Then::ForgetGroup(id));
        Ok(Ok(id))
    }

    /// Applies `op` of `actor` to group `id`, with its events.
    pub(super) fn change_group(
        &mut self,
        tx: &Transaction,
        actor: UserId,
        id: GroupId,
        op: GroupOp,
        max: usize,
        then: &mut Vec<Then>,
    ) -> rusqlite::Result<Result<(), GroupError>> {
        let Some(before) = self.group(tx, id)? else {
            return Ok(Err(GroupError::NoSuchGroup));
        };
        let plan: Plan<()> = match op {
            GroupOp::Add(user) => {
                let known = tx
                    .prepare_cached("SELECT 1 FROM users WHERE id = ?1")?
                    .exists([user.get()])?;
                if !known {
                    return Ok(Err(GroupError::UnknownUsers(vec![user])));
                }
                groups::add(&before, actor, user, max)
            }
            GroupOp::Remove(user) => groups::remove(&before, actor, user),
            GroupOp::Rename(name) => groups::rename(&before, actor, name),
        };
        if plan.answer.is_err() || plan.events.is_empty() {
            return Ok(plan.answer);
        }
        let (heads, draft) = (&mut *self.heads, &mut self.draft);
        let mut streams = Vec::with_capacity(plan.events.len());
        savepoint(tx, || {
            write(tx, Some(&before), plan.group.as_ref())?;
            event_streams(tx, heads, draft, &plan.events, &mut streams)
        })?;
        // Events name the group as it is after the change (its new name), or as it was
        // before it went.
        let named = plan.group.as_ref().unwrap_or(&before);
        self.told(named, plan.events, &streams, then);
        match plan.group {
            Some(after) => self.groups.insert(id, Arc::new(after)),
            None => self.groups.remove(&id),
        };
        then.push(Then::ForgetGroup(id));
        Ok(plan.answer)
    }

    /// Appends each event to its member's stream (looked up by [`event_streams`]).
    fn told(
        &mut self,
        group: &Group,
        events: Vec<GroupEvent>,
        streams: &[usize],
        then: &mut Vec<Then>,
    ) {
        for (event, &stream) in events.iter().zip(streams) {
            let payload = groups::event_payload(group, event);
            self.append_event(event.to, stream, payload, then);
        }
    }
}

/// The streams `events` go to, looked up before anything is changed in memory.
fn event_streams(
    tx: &Transaction,
    heads: &mut std::collections::HashMap<UserId, u64>,
    draft: &mut super::draft::Draft,
    events: &[GroupEvent],
    streams: &mut Vec<usize>,
) -> rusqlite::Result<()> {
    let mut head = tx.prepare_cached(super::chunk::HEAD)?;
    for e in events {
        streams.push(draft.stream(heads, &mut head, e.to)?);
    }
    Ok(())
}

/// Makes the rows of `before` (none: a new group) into those of `after` (none: deleted).
fn write(tx: &Transaction, before: Option<&Group>, after: Option<&Group>) -> rusqlite::Result<()> {
    let Some(after) = after else {
        if let Some(before) = before {
            let gid = before.id.get();
            tx.prepare_cached("DELETE FROM group_members WHERE group_id = ?1")?
                .execute([gid])?;
            tx.prepare_cached("DELETE FROM groups WHERE id = ?1")?
                .execute([gid])?;
        }
        return Ok(());
    };
    let gid = after.id.get();
    let old: &[UserId] = before.map_or(&[], |b| &b.members);
    if before.is_some_and(|b| b.name != after.name || b.owner != after.owner) {
        tx.prepare_cached("UPDATE groups SET name = ?2, owner = ?3 WHERE id = ?1")?
            .execute(params![gid, after.name, after.owner.get()])?;
    }
    let mut remove =
        tx.prepare_cached("DELETE FROM group_members WHERE group_id = ?1 AND user_id = ?2")?;
    for m in old.iter().filter(|m| !after.has(**m)) {
        remove.execute([gid, m.get()])?;
    }
    // Joined after everyone before them.
    let mut add = tx.prepare_cached(
        "INSERT INTO group_members (group_id, user_id, since)
         SELECT ?1, ?2, coalesce(max(since), 0) + 1 FROM group_members WHERE group_id = ?1",
    )?;
    for m in after.members.iter().filter(|m| !old.contains(m)) {
        add.execute([gid, m.get()])?;
    }
    Ok(())
}

/// Group `gid`, with its members in the order they joined.
pub(super) fn load(c: &Connection, gid: GroupId) -> rusqlite::Result<Option<Group>> {
    let row = c
        .prepare_cached("SELECT name, owner FROM groups WHERE id = ?1")?
        .query_row([gid.get()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .optional()?;
    let Some((name, owner)) = row else {
        return Ok(None);
    };
    let mut stmt =
        c.prepare_cached("SELECT user_id FROM group_members WHERE group_id = ?1 ORDER BY since")?;
    let members = stmt
        .query_map([gid.get()], |r| id(r.get(0)?))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(Group {
        id: gid,
        name,
        owner: id(owner)?,
        members,
    }))
}

/// The groups `user` is a member of, oldest first.
pub(super) fn groups_of(c: &Connection, user: UserId) -> rusqlite::Result<Vec<GroupId>> {
    let mut stmt = c.prepare_cached(
        "SELECT group_id FROM group_members WHERE user_id = ?1 ORDER BY group_id",
    )?;
    let rows = stmt.query_map([user.get()], |r| group_id(r.get(0)?))?;
    rows.collect()
}

/// A group's id read from the database.
fn group_id(n: i64) -> rusqlite::Result<GroupId> {
    GroupId::new(n).ok_or(rusqlite::Error::IntegralValueOutOfRange(0, n))
}
