//! Appending messages in PostgreSQL: every request of a batch in one transaction, each
//! message to its receiver's stream (every other member's, for a group) and a copy to its
//! sender's, with the rules of the SQLite writer (`../sqlite/append.rs`): a retry is
//! answered as the first time, whatever the policy or the group says now; a receiver who
//! blocks the sender gets nothing; a message to oneself is stored once.
//!
//! A batch costs a fixed number of statements whatever its size: the groups' members, the
//! lock on every stream it touches (see `lock`), then the client ids, blocks and
//! friendships it needs, pipelined, and the three writes of [`Draft::write`].

use std::collections::{HashMap, HashSet};

use deadpool_postgres::Transaction;

use super::lock::Draft;
use super::{group_id, rows, seq, user_id};
use crate::delivery::{Entry, EntryKind};
use crate::id::{Address, GroupId, UserId};
use crate::store::queue::{Answer, Request, Then};
use crate::store::{Appended, Appends, StoreError};

/// Appends every request of `batch` in `tx`; their answers go to `then`, whatever happens
/// (on an error, the transaction fails and every request of it is answered so).
pub(super) async fn append(
    tx: &Transaction<'_>,
    batch: Vec<Appends>,
    then: &mut Vec<Then>,
) -> Result<(), StoreError> {
    let unapplied = |batch: Vec<Appends>| {
        batch
            .into_iter()
            .map(|a| Then::unapplied(Request::Append(a)))
    };
    let Known {
        mut draft,
        members,
        mut stored,
        blocked,
        friends,
    } = match known(tx, &batch).await {
        Ok(known) => known,
        Err(e) => {
            then.extend(unapplied(batch));
            return Err(e);
        }
    };
    let mut batch = batch.into_iter();
    for a in batch.by_ref() {
        let mut answer = Answer::new(a.replies.clone());
        let appended = messages(
            &mut draft,
            &members,
            &mut stored,
            &blocked,
            &friends,
            a,
            &mut answer,
        );
        then.push(Then::Appended(answer));
        if let Err(e) = appended {
            then.extend(unapplied(batch.collect()));
            return Err(e);
        }
    }
    draft.write(tx).await
}

/// What a batch's messages need to know, read under the locks of every stream it appends
/// to: the groups' members, which client ids were stored before, who blocks whom, who is
/// friends with whom (as `(sender, receiver)` pairs).
struct Known {
    draft: Draft,
    members: HashMap<GroupId, Vec<UserId>>,
    stored: HashMap<(i64, Vec<u8>), u64>,
    blocked: HashSet<(i64, i64)>,
    friends: HashSet<(i64, i64)>,
}

/// Locks the streams `batch` appends to and reads what it needs to know.
async fn known(tx: &Transaction<'_>, batch: &[Appends]) -> Result<Known, StoreError> {
    let mut draft = Draft::default();
    let groups: Vec<i64> = batch
        .iter()
        .flat_map(|a| &a.messages)
        .filter_map(|m| match m.receiver {
            Address::Group(g) => Some(g.get()),
            Address::User(_) => None,
        })
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut members = members(tx, &groups).await?;
    let streams = |members: &HashMap<GroupId, Vec<UserId>>| -> Vec<UserId> {
        let mut owners = Vec::new();
        for a in batch {
            owners.push(a.sender);
            for m in &a.messages {
                match m.receiver {
                    Address::User(u) => owners.push(u),
                    Address::Group(g) => owners.extend(members.get(&g).into_iter().flatten()),
                }
            }
        }
        owners
    };
    draft.lock(tx, streams(&members)).await?;
    if !groups.is_empty() {
        // Members who joined while this waited for its locks (rare: their streams are
        // locked second, out of order).
        members = self::members(tx, &groups).await?;
        draft.lock(tx, streams(&members)).await?;
    }

    // What the messages need to know, under the locks: which ids were stored before, who
    // blocks whom, who is friends with whom.
    let mut keys: (Vec<i64>, Vec<&[u8]>) = Default::default();
    let mut pairs: (Vec<i64>, Vec<i64>) = Default::default();
    for a in batch {
        for m in &a.messages {
            if let Some(id) = &m.client_id {
                keys.0.push(a.sender.get());
                keys.1.push(id.as_bytes());
            }
            if let Address::User(to) = m.receiver
                && to != a.sender
            {
                pairs.0.push(a.sender.get());
                pairs.1.push(to.get());
            }
        }
    }
    let stored = async {
        if keys.0.is_empty() {
            return Ok(Vec::new());
        }
        rows(
            tx,
            "SELECT m.sender, m.client_id, m.seq FROM message_ids m
             JOIN unnest($1::bigint[], $2::bytea[]) AS k (sender, id)
               ON m.sender = k.sender AND m.client_id = k.id",
            &[&keys.0, &keys.1],
        )
        .await
    };
    let blocked = async {
        if pairs.0.is_empty() {
            return Ok(Vec::new());
        }
        rows(
            tx,
            "SELECT b.blocked, b.blocker FROM blocks b
             JOIN unnest($1::bigint[], $2::bigint[]) AS p (sender, receiver)
               ON b.blocker = p.receiver AND b.blocked = p.sender",
            &[&pairs.0, &pairs.1],
        )
        .await
    };
    let friends_only = batch.iter().any(|a| a.friends_only);
    let friends = async {
        if !friends_only || pairs.0.is_empty() {
            return Ok(Vec::new());
        }
        rows(
            tx,
            "SELECT f.user_id, f.friend_id FROM friendships f
             JOIN unnest($1::bigint[], $2::bigint[]) AS p (sender, receiver)
               ON f.user_id = p.sender AND f.friend_id = p.receiver",
            &[&pairs.0, &pairs.1],
        )
        .await
    };
    let (stored, blocked, friends) = futures::try_join!(stored, blocked, friends)?;
    let stored: HashMap<(i64, Vec<u8>), u64> = stored
        .into_iter()
        .map(|r| ((r.get(0), r.get(1)), seq(r.get(2))))
        .collect();
    let pair = |r: tokio_postgres::Row| (r.get::<_, i64>(0), r.get::<_, i64>(1));
    // (sender, receiver) pairs.
    let blocked: HashSet<(i64, i64)> = blocked.into_iter().map(pair).collect();
    let friends: HashSet<(i64, i64)> = friends.into_iter().map(pair).collect();

    Ok(Known {
        draft,
        members,
        stored,
        blocked,
        friends,
    })
}

/// Appends the messages of `a` (each to its receivers' streams and a copy to its
/// sender's) into `draft`, and what became of them into `answer`.
fn messages(
    draft: &mut Draft,
    members: &HashMap<GroupId, Vec<UserId>>,
    stored: &mut HashMap<(i64, Vec<u8>), u64>,
    blocked: &HashSet<(i64, i64)>,
    friends: &HashSet<(i64, i64)>,
    a: Appends,
    answer: &mut Answer,
) -> Result<(), StoreError> {
    let sender = a.sender;
    let own_slot = answer.slot(sender);
    for m in a.messages {
        let group = match m.receiver {
            Address::Group(g) => Some(g),
            Address::User(_) => None,
        };
        if let Some(id) = &m.client_id
            && let Some(&seq) = stored.get(&(sender.get(), id.as_bytes().to_vec()))
        {
            let duplicate = Appended::Stored {
                seq,
                duplicate: true,
            };
            answer.outcome(m.client_id, group, duplicate);
            continue;
        }
        // The streams besides the sender's that it goes to.
        let owners: Vec<UserId> = match m.receiver {
            Address::User(to) if to == sender => Vec::new(),
            Address::User(to) => {
                if a.friends_only && !friends.contains(&(sender.get(), to.get())) {
                    answer.outcome(m.client_id, group, Appended::NotFriends);
                    continue;
                }
                if blocked.contains(&(sender.get(), to.get())) {
                    Vec::new()
                } else {
                    vec![to]
                }
            }
            Address::Group(g) => match members.get(&g) {
                Some(members) if members.contains(&sender) => {
                    members.iter().copied().filter(|&u| u != sender).collect()
                }
                _ => {
                    answer.outcome(m.client_id, group, Appended::NotMember);
                    continue;
                }
            },
        };
        let own = draft.push(sender, m.payload.clone(), Some((m.receiver, false)), 0)?;
        if let Some(id) = &m.client_id {
            stored.insert((sender.get(), id.as_bytes().to_vec()), own);
            draft.client_id(sender, id.as_bytes().to_vec(), own);
        }
        let (kind, conversation) = match m.receiver {
            Address::Group(_) => (EntryKind::Group, m.receiver),
            Address::User(_) => (EntryKind::Received, Address::User(sender)),
        };
        for owner in owners {
            let received = draft.push(owner, m.payload.clone(), Some((conversation, true)), own)?;
            let slot = answer.slot(owner);
            answer.entries[slot].1.push(Entry {
                seq: received,
                payload: m.payload.clone(),
                kind,
                origin: None,
            });
        }
        answer.entries[own_slot].1.push(Entry {
            seq: own,
            payload: m.payload,
            // A message to oneself is received, too (a v1 client is shown it).
            kind: if m.receiver == Address::User(sender) {
                EntryKind::Received
            } else {
                EntryKind::Sent
            },
            origin: a.origin,
        });
        let stored = Appended::Stored {
            seq: own,
            duplicate: false,
        };
        answer.outcome(m.client_id, group, stored);
    }
    Ok(())
}

/// The members of `groups`, each group's in the order they joined.
async fn members(
    tx: &Transaction<'_>,
    groups: &[i64],
) -> Result<HashMap<GroupId, Vec<UserId>>, StoreError> {
    let mut members: HashMap<GroupId, Vec<UserId>> = HashMap::new();
    if groups.is_empty() {
        return Ok(members);
    }
    let found = rows(
        tx,
        "SELECT group_id, user_id FROM group_members WHERE group_id = ANY($1)
         ORDER BY group_id, since",
        &[&groups],
    )
    .await?;
    for r in found {
        members
            .entry(group_id(r.get(0))?)
            .or_default()
            .push(user_id(r.get(1))?);
    }
    Ok(members)
}
