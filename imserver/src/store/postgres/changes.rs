//! Every write but messages, each in a transaction of its own (see `writer`): accounts and
//! tokens, the social graph and groups with their events (the rules are
//! `store::social` and `store::groups`), read positions with their receipts, and
//! acknowledgements. Changes that append events lock their streams first (see `lock`).

use std::collections::HashSet;

use deadpool_postgres::Transaction;
use improto::{Envelope, EventKind};

use super::lock::Draft;
use super::{bound, exec, row, rows, seq, user_id};
use crate::delivery::{Entry, EntryKind};
use crate::id::{Address, GroupId, UserId};
use crate::store::groups::{self, Group, GroupError, GroupEvent, Plan as GroupPlan};
use crate::store::queue::{GroupOp, Then};
use crate::store::receipts::{ReadReceipts, receipt};
use crate::store::social::{self, Change, Pair, Plan, Side, SocialError};
use crate::store::{Account, StoreError, TokenHash};

/// Appends event `payload` to `owner`'s stream (held by `draft`), to be delivered once the
/// transaction commits.
fn event(
    draft: &mut Draft,
    owner: UserId,
    payload: bytes::Bytes,
    then: &mut Vec<Then>,
) -> Result<(), StoreError> {
    let seq = draft.push(owner, payload.clone(), None, 0)?;
    let entry = Entry {
        seq,
        payload,
        kind: EntryKind::Event,
        origin: None,
    };
    then.push(Then::Deliver(owner, entry));
    Ok(())
}

pub(super) async fn create_user(
    tx: &Transaction<'_>,
    id: Option<UserId>,
    u: &Account,
) -> Result<Option<UserId>, StoreError> {
    const INSERT: &str = "INSERT INTO users (id, name, sex, email, signature, password_hash)
         VALUES (coalesce($1, nextval(pg_get_serial_sequence('users', 'id'))), $2, $3, $4, $5, $6)
         ON CONFLICT (id) DO NOTHING RETURNING id";
    let none: Option<i64> = None;
    let given = id.map(UserId::get);
    let params = |id| -> [&(dyn tokio_postgres::types::ToSql + Sync); 6] {
        [
            id,
            &u.name,
            &u.sex,
            &u.email,
            &u.signature,
            &u.password_hash,
        ]
    };
    let Some(id) = id else {
        // The identity may lag behind ids given explicitly (by another node, say): an id
        // taken moves it on.
        for _ in 0..8 {
            if let Some(r) = row(tx, INSERT, &params(&none)).await? {
                return user_id(r.get(0)).map(Some);
            }
        }
        return Err(StoreError::Transaction(
            "no free user id: the users id sequence is far behind the table".into(),
        ));
    };
    let inserted = row(tx, INSERT, &params(&given)).await?;
    if inserted.is_none() {
        return Ok(None);
    }
    // New ids follow the highest.
    exec(
        tx,
        "SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT max(id) FROM users))",
        &[],
    )
    .await?;
    Ok(Some(id))
}

/// Stores a token unless the account is disabled or gone; forgets expired tokens.
pub(super) async fn create_token(
    tx: &Transaction<'_>,
    hash: TokenHash,
    user: UserId,
    expires_at: i64,
) -> Result<bool, StoreError> {
    exec(
        tx,
        "DELETE FROM tokens WHERE expires_at <= extract(epoch FROM now())::bigint",
        &[],
    )
    .await?;
    // Shared-locked: a disable on another node waits for this token, then revokes it, or
    // this waits for the disable and stores nothing.
    let enabled = row(
        tx,
        "SELECT 1 FROM users WHERE id = $1 AND NOT disabled FOR SHARE",
        &[&user.get()],
    )
    .await?;
    if enabled.is_none() {
        return Ok(false);
    }
    exec(
        tx,
        "INSERT INTO tokens (hash, user_id, expires_at) VALUES ($1, $2, $3)",
        &[&hash.as_slice(), &user.get(), &expires_at],
    )
    .await?;
    Ok(true)
}

pub(super) async fn revoke_token(
    tx: &Transaction<'_>,
    hash: TokenHash,
    then: &mut Vec<Then>,
) -> Result<bool, StoreError> {
    let n = exec(
        tx,
        "DELETE FROM tokens WHERE hash = $1",
        &[&hash.as_slice()],
    )
    .await?;
    then.push(Then::ForgetToken(hash));
    Ok(n == 1)
}

pub(super) async fn set_disabled(
    tx: &Transaction<'_>,
    user: UserId,
    disabled: bool,
    then: &mut Vec<Then>,
) -> Result<bool, StoreError> {
    let found = exec(
        tx,
        "UPDATE users SET disabled = $2 WHERE id = $1",
        &[&user.get(), &disabled],
    )
    .await?;
    if disabled {
        let revoked = rows(
            tx,
            "DELETE FROM tokens WHERE user_id = $1 RETURNING hash",
            &[&user.get()],
        )
        .await?;
        for r in revoked {
            let hash: Vec<u8> = r.get(0);
            if let Ok(hash) = TokenHash::try_from(hash) {
                then.push(Then::ForgetToken(hash));
            }
        }
    }
    Ok(found == 1)
}

/// `user`'s last connection closed at `at`.
pub(super) async fn seen(tx: &Transaction<'_>, user: UserId, at: i64) -> Result<(), StoreError> {
    exec(
        tx,
        "UPDATE users SET last_seen = greatest(coalesce(last_seen, 0), $2) WHERE id = $1",
        &[&user.get(), &at],
    )
    .await?;
    Ok(())
}

/// Writes acknowledgement positions (never backwards), in owner order.
pub(super) async fn acks(tx: &Transaction<'_>, acks: &[(UserId, u64)]) -> Result<(), StoreError> {
    let owners: Vec<i64> = acks.iter().map(|(o, _)| o.get()).collect();
    let seqs: Vec<i64> = acks.iter().map(|&(_, s)| bound(s)).collect();
    exec(
        tx,
        "INSERT INTO stream_acks (owner, acked)
         SELECT * FROM unnest($1::bigint[], $2::bigint[]) ORDER BY 1
         ON CONFLICT (owner) DO UPDATE SET acked = greatest(stream_acks.acked, excluded.acked)",
        &[&owners, &seqs],
    )
    .await?;
    Ok(())
}

/// Writes one change between `a` and `b`. `ask` is a request's message and time.
async fn apply_change(
    tx: &Transaction<'_>,
    a: UserId,
    b: UserId,
    change: Change,
    ask: Option<(&str, i64)>,
) -> Result<(), StoreError> {
    let (a, b) = (a.get(), b.get());
    let sql = match change {
        Change::Befriend => {
            "INSERT INTO friendships (user_id, friend_id) VALUES ($1, $2), ($2, $1)
             ON CONFLICT DO NOTHING"
        }
        Change::Unfriend => {
            "DELETE FROM friendships
             WHERE (user_id = $1 AND friend_id = $2) OR (user_id = $2 AND friend_id = $1)"
        }
        Change::Ask => {
            let (message, at) = ask.unwrap_or(("", 0));
            exec(
                tx,
                "INSERT INTO friend_requests (from_id, to_id, message, at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (from_id, to_id)
                 DO UPDATE SET message = excluded.message, at = excluded.at",
                &[&a, &b, &message, &at],
            )
            .await?;
            return Ok(());
        }
        Change::DropRequests => {
            "DELETE FROM friend_requests
             WHERE (from_id = $1 AND to_id = $2) OR (from_id = $2 AND to_id = $1)"
        }
        Change::DropIncoming => "DELETE FROM friend_requests WHERE from_id = $2 AND to_id = $1",
        Change::Block => {
            "INSERT INTO blocks (blocker, blocked) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        }
        Change::Unblock => "DELETE FROM blocks WHERE blocker = $1 AND blocked = $2",
    };
    exec(tx, sql, &[&a, &b]).await?;
    Ok(())
}

/// Friends without events (the demo users).
pub(super) async fn befriend(
    tx: &Transaction<'_>,
    a: UserId,
    b: UserId,
    then: &mut Vec<Then>,
) -> Result<(), StoreError> {
    apply_change(tx, a, b, Change::Befriend, None).await?;
    then.extend([Then::ForgetFriends(a), Then::ForgetFriends(b)]);
    Ok(())
}

/// Runs the social operation `rules` of `a` on `b`: locks both streams (which every change
/// between the two takes first, so that they take turns), reads how they stand, applies
/// the plan's changes and appends its events.
pub(super) async fn social<T>(
    tx: &Transaction<'_>,
    a: UserId,
    b: UserId,
    rules: fn(Pair) -> Plan<T>,
    ask: Option<(&str, i64)>,
    then: &mut Vec<Then>,
) -> Result<Result<T, SocialError>, StoreError> {
    let mut draft = Draft::default();
    draft.lock(tx, [a, b]).await?;
    let r = row(
        tx,
        "SELECT EXISTS (SELECT 1 FROM friendships WHERE user_id = $1 AND friend_id = $2),
                EXISTS (SELECT 1 FROM friend_requests WHERE from_id = $1 AND to_id = $2),
                EXISTS (SELECT 1 FROM friend_requests WHERE from_id = $2 AND to_id = $1),
                EXISTS (SELECT 1 FROM blocks WHERE blocker = $1 AND blocked = $2),
                EXISTS (SELECT 1 FROM blocks WHERE blocker = $2 AND blocked = $1)",
        &[&a.get(), &b.get()],
    )
    .await?
    .ok_or_else(|| StoreError::Transaction("no answer".into()))?;
    let plan = rules(Pair {
        same: a == b,
        friends: r.get(0),
        asked: r.get(1),
        asked_by: r.get(2),
        blocks: r.get(3),
        blocked_by: r.get(4),
    });
    if plan.answer.is_err() {
        return Ok(plan.answer);
    }
    for &change in &plan.changes {
        apply_change(tx, a, b, change, ask).await?;
        match change {
            Change::Befriend | Change::Unfriend => {
                then.extend([Then::ForgetFriends(a), Then::ForgetFriends(b)]);
            }
            Change::Block | Change::Unblock => then.push(Then::ForgetBlocks(a)),
            Change::Ask | Change::DropRequests | Change::DropIncoming => {}
        }
    }
    if !plan.events.is_empty() {
        let (name_a, name_b) = (name(tx, a).await?, name(tx, b).await?);
        for (side, kind) in plan.events {
            let (owner, user, name) = match side {
                Side::A => (a, b, &name_b),
                Side::B => (b, a, &name_a),
            };
            let message = match (&kind, ask) {
                (EventKind::FriendRequest, Some((message, _))) if !message.is_empty() => {
                    Some(message)
                }
                _ => None,
            };
            let payload = social::event_payload(kind, user, name, message);
            event(&mut draft, owner, payload, then)?;
        }
    }
    draft.write(tx).await?;
    Ok(plan.answer)
}

async fn name(tx: &Transaction<'_>, user: UserId) -> Result<String, StoreError> {
    let r = row(tx, "SELECT name FROM users WHERE id = $1", &[&user.get()]).await?;
    Ok(r.map(|r| r.get(0)).unwrap_or_default())
}

/// Group `gid` as it stands, with its members in the order they joined; `lock`: row-locked
/// until the transaction ends (every change of a group takes it first).
pub(super) async fn load_group<C: deadpool_postgres::GenericClient>(
    c: &C,
    gid: GroupId,
    lock: bool,
) -> Result<Option<Group>, StoreError> {
    let sql = if lock {
        "SELECT name, owner FROM groups WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT name, owner FROM groups WHERE id = $1"
    };
    let Some(r) = row(c, sql, &[&gid.get()]).await? else {
        return Ok(None);
    };
    let members = rows(
        c,
        "SELECT user_id FROM group_members WHERE group_id = $1 ORDER BY since",
        &[&gid.get()],
    )
    .await?
    .into_iter()
    .map(|r| user_id(r.get(0)))
    .collect::<Result<_, _>>()?;
    Ok(Some(Group {
        id: gid,
        name: r.get(0),
        owner: user_id(r.get(1))?,
        members,
    }))
}

/// Makes a group of `owner` named `name` with `members`, each of whom gets `group_added`.
pub(super) async fn create_group(
    tx: &Transaction<'_>,
    owner: UserId,
    name: String,
    members: Vec<UserId>,
    max: usize,
    then: &mut Vec<Then>,
) -> Result<Result<GroupId, GroupError>, StoreError> {
    let (members, events) = match groups::create(owner, &members, max) {
        Ok(plan) => plan,
        Err(e) => return Ok(Err(e)),
    };
    let ids: Vec<i64> = members.iter().map(|m| m.get()).collect();
    let known: HashSet<i64> = rows(tx, "SELECT id FROM users WHERE id = ANY($1)", &[&ids])
        .await?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    let unknown: Vec<UserId> = members
        .iter()
        .copied()
        .filter(|m| !known.contains(&m.get()))
        .collect();
    if !unknown.is_empty() {
        return Ok(Err(GroupError::UnknownUsers(unknown)));
    }
    let mut draft = Draft::default();
    draft.lock(tx, events.iter().map(|e| e.to)).await?;
    let r = row(
        tx,
        "INSERT INTO groups (name, owner) VALUES ($1, $2) RETURNING id",
        &[&name, &owner.get()],
    )
    .await?
    .ok_or_else(|| StoreError::Transaction("no group id".into()))?;
    let group = Group {
        id: super::group_id(r.get(0))?,
        name,
        owner,
        members,
    };
    write_group(tx, None, Some(&group)).await?;
    told(&mut draft, &group, events, then)?;
    draft.write(tx).await?;
    then.push(Then::ForgetGroup(group.id));
    Ok(Ok(group.id))
}

/// Applies `op` of `actor` to group `id`, with its events.
pub(super) async fn change_group(
    tx: &Transaction<'_>,
    actor: UserId,
    id: GroupId,
    op: GroupOp,
    max: usize,
    then: &mut Vec<Then>,
) -> Result<Result<(), GroupError>, StoreError> {
    let Some(before) = load_group(tx, id, true).await? else {
        return Ok(Err(GroupError::NoSuchGroup));
    };
    let plan: GroupPlan<()> = match op {
        GroupOp::Add(user) => {
            let known = row(tx, "SELECT 1 FROM users WHERE id = $1", &[&user.get()]).await?;
            if known.is_none() {
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
    let mut draft = Draft::default();
    draft.lock(tx, plan.events.iter().map(|e| e.to)).await?;
    write_group(tx, Some(&before), plan.group.as_ref()).await?;
    // Events name the group as it is after the change (its new name), or as it was before
    // it went.
    let named = plan.group.as_ref().unwrap_or(&before);
    told(&mut draft, named, plan.events, then)?;
    draft.write(tx).await?;
    then.push(Then::ForgetGroup(id));
    Ok(plan.answer)
}

/// Appends each event to its member's stream.
fn told(
    draft: &mut Draft,
    group: &Group,
    events: Vec<GroupEvent>,
    then: &mut Vec<Then>,
) -> Result<(), StoreError> {
    for e in &events {
        event(draft, e.to, groups::event_payload(group, e), then)?;
    }
    Ok(())
}

/// Makes the rows of `before` (none: a new group) into those of `after` (none: deleted).
async fn write_group(
    tx: &Transaction<'_>,
    before: Option<&Group>,
    after: Option<&Group>,
) -> Result<(), StoreError> {
    let Some(after) = after else {
        if let Some(before) = before {
            let gid = before.id.get();
            exec(tx, "DELETE FROM group_members WHERE group_id = $1", &[&gid]).await?;
            exec(tx, "DELETE FROM groups WHERE id = $1", &[&gid]).await?;
        }
        return Ok(());
    };
    let gid = after.id.get();
    let old: &[UserId] = before.map_or(&[], |b| &b.members);
    if before.is_some_and(|b| b.name != after.name || b.owner != after.owner) {
        exec(
            tx,
            "UPDATE groups SET name = $2, owner = $3 WHERE id = $1",
            &[&gid, &after.name, &after.owner.get()],
        )
        .await?;
    }
    let gone: Vec<i64> = old
        .iter()
        .filter(|m| !after.has(**m))
        .map(|m| m.get())
        .collect();
    if !gone.is_empty() {
        exec(
            tx,
            "DELETE FROM group_members WHERE group_id = $1 AND user_id = ANY($2)",
            &[&gid, &gone],
        )
        .await?;
    }
    // Joined after everyone before them, in the order given.
    let joined: Vec<i64> = after
        .members
        .iter()
        .filter(|m| !old.contains(m))
        .map(|m| m.get())
        .collect();
    if !joined.is_empty() {
        exec(
            tx,
            "INSERT INTO group_members (group_id, user_id, since)
             SELECT $1, u.id, coalesce((SELECT max(since) FROM group_members WHERE group_id = $1), 0)
                              + u.n
             FROM unnest($2::bigint[]) WITH ORDINALITY AS u (id, n)",
            &[&gid, &joined],
        )
        .await?;
    }
    Ok(())
}

/// `owner` has read the conversation with `peer` up to `seq` of their stream: moves the read
/// position forward and tells the senders of what was newly read (see `store::receipts`).
///
/// Whom to tell is found before anything is locked (a `Read` only names committed
/// entries), so that the reader's stream and the senders' are locked in one statement, in
/// order, like every other lock (see `lock`).
pub(super) async fn read(
    tx: &Transaction<'_>,
    owner: UserId,
    peer: Address,
    seq: u64,
    receipts: ReadReceipts,
    then: &mut Vec<Then>,
) -> Result<(), StoreError> {
    let (o, p) = (owner.get(), peer.key());
    let (head, before) = read_position(tx, o, p).await?;
    // Never past what has committed.
    let upto = seq.min(head);
    if upto <= before {
        return Ok(());
    }
    let newest = if receipts.on {
        senders_read(tx, owner, peer, before, upto, receipts.scan).await?
    } else {
        Vec::new()
    };
    let senders: Vec<i64> = newest.iter().map(|(s, _)| s.get()).collect();
    // A user who blocks the reader is not told of their reading.
    let blockers: HashSet<i64> = rows(
        tx,
        "SELECT blocker FROM blocks WHERE blocked = $1 AND blocker = ANY($2)",
        &[&o, &senders],
    )
    .await?
    .into_iter()
    .map(|r| r.get(0))
    .collect();
    let told: Vec<(UserId, u64)> = newest
        .into_iter()
        .filter(|(s, _)| !blockers.contains(&s.get()))
        .collect();
    let mut draft = Draft::default();
    draft
        .lock(tx, std::iter::once(owner).chain(told.iter().map(|t| t.0)))
        .await?;
    // Under the lock, the position may have moved (another device's `Read`, on another node).
    let (_, before) = read_position(tx, o, p).await?;
    if upto <= before {
        return Ok(());
    }
    exec(
        tx,
        "INSERT INTO read_positions (owner, peer, seq) VALUES ($1, $2, $3)
         ON CONFLICT (owner, peer) DO UPDATE SET seq = greatest(read_positions.seq, excluded.seq)",
        &[&o, &p, &bound(upto)],
    )
    .await?;
    for (sender, up_to) in told {
        event(&mut draft, sender, receipt(owner, peer, up_to), then)?;
    }
    draft.write(tx).await
}

/// The head of `owner`'s stream, and where they had read the conversation with `peer`.
async fn read_position(
    tx: &Transaction<'_>,
    owner: i64,
    peer: i64,
) -> Result<(u64, u64), StoreError> {
    let r = row(
        tx,
        "SELECT (SELECT head FROM streams WHERE owner = $1),
                (SELECT seq FROM read_positions WHERE owner = $1 AND peer = $2)",
        &[&owner, &peer],
    )
    .await?;
    Ok(r.map_or((0, 0), |r| {
        let head: Option<i64> = r.get(0);
        let read: Option<i64> = r.get(1);
        (head.map_or(0, seq), read.map_or(0, seq))
    }))
}

/// The senders of `owner`'s messages from others in the conversation with `peer` after
/// `before` and up to `upto`, each with the origin of the newest one (their own `seq` of
/// it), looking through at most `scan` of them, newest first. A 1:1 conversation has one
/// sender at most.
async fn senders_read(
    tx: &Transaction<'_>,
    owner: UserId,
    peer: Address,
    before: u64,
    upto: u64,
    scan: usize,
) -> Result<Vec<(UserId, u64)>, StoreError> {
    let limit = i64::try_from(scan).unwrap_or(i64::MAX);
    let found = rows(
        tx,
        "SELECT origin, payload FROM entries
         WHERE owner = $1 AND peer = $2 AND received AND origin <> 0 AND seq > $3 AND seq <= $4
         ORDER BY seq DESC LIMIT $5",
        &[
            &owner.get(),
            &peer.key(),
            &bound(before),
            &bound(upto),
            &limit,
        ],
    )
    .await?;
    let mut newest = Vec::new();
    let mut seen = HashSet::new();
    for r in found {
        let payload: &[u8] = r.get(1);
        let sender = Envelope::peek(payload)
            .ok()
            .and_then(|env| UserId::parse(env.sender()?).ok());
        if let Some(sender) = sender
            && seen.insert(sender)
        {
            newest.push((sender, seq(r.get(0))));
            if matches!(peer, Address::User(_)) {
                break;
            }
        }
    }
    Ok(newest)
}
