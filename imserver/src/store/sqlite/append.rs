//! Appending messages: each to its receiver's stream (every other member's, for a group)
//! and a copy to its sender's, its payload stored once, and the answer to the connection
//! that sent it.
//!
//! A request is one connection's burst of messages. Its receivers are looked up once per
//! request (a group's members, whether the receiver blocks the sender, the relay policy),
//! and each stream it touches once per batch (see `draft`): per message there is only the
//! message's own work.

use rusqlite::{Transaction, params};

use super::draft::StreamIx;
use super::ids::{Key, Seen};
use super::writer::{State, Statements};
use crate::delivery::{Entry, EntryKind};
use crate::id::{Address, GroupId, UserId};
use crate::store::queue::Answer;
use crate::store::{Appended, Appends, Outcome};

/// Where one sender's messages to one receiver go, as a request looked them up.
struct Receiver {
    to: Address,
    /// Why its messages are refused (`--relay-policy friends`, not a member), if they are.
    refused: Option<Appended>,
    /// The streams a message goes to besides the sender's, each with its owner and its place
    /// among the answer's deliveries: the receiver's (none for a message to oneself, stored
    /// once, or to someone who blocks the sender), or every other member's.
    streams: Vec<(UserId, StreamIx, usize)>,
}

impl State<'_> {
    /// Each message to its receiver's stream and a copy to its sender's, into `answer`. On
    /// an error, the messages before it are appended and those from it on are not.
    pub(super) fn append(
        &mut self,
        tx: &Transaction,
        st: &mut Statements,
        a: Appends,
        answer: &mut Answer,
    ) -> rusqlite::Result<()> {
        let sender = a.sender;
        let own = self.draft.stream(self.heads, &mut st.head, sender)?;
        let own_slot = answer.slot(sender);
        // The receiver of the message before, as most requests have one.
        let mut to: Option<Receiver> = None;
        answer.outcomes.reserve(a.messages.len());
        for m in a.messages {
            let group = match m.receiver {
                Address::Group(g) => Some(g),
                Address::User(_) => None,
            };
            // Everything that can fail comes first; nothing is changed until all of it
            // passed. A retry is acknowledged as it was the first time, whatever the relay
            // policy or the group says now.
            let id = match &m.client_id {
                Some(id) => {
                    let key = Key::new(id);
                    match self.ids.check(tx, sender, &key)? {
                        Seen::Stored(seq) => {
                            let duplicate = Appended::Stored {
                                seq,
                                duplicate: true,
                            };
                            answer.outcomes.push(outcome(m.client_id, group, duplicate));
                            continue;
                        }
                        new => Some((key, new)),
                    }
                }
                None => None,
            };
            if to.as_ref().is_none_or(|r| r.to != m.receiver) {
                to = Some(self.receiver(tx, st, sender, m.receiver, a.friends_only, answer)?);
            }
            let r = to.as_ref().expect("looked up just above");
            if let Some(refused) = r.refused {
                answer.outcomes.push(outcome(m.client_id, group, refused));
                continue;
            }
            // From here on nothing fails, and the seqs become real.
            let slot = self.draft.payload(&m.payload);
            let seq = self.draft.push(own, slot, Some((m.receiver, false)), 0);
            if let Some((key, new)) = id {
                self.ids.record(sender, key, seq, new);
            }
            let kind = match m.receiver {
                Address::Group(_) => EntryKind::Group,
                Address::User(_) => EntryKind::Received,
            };
            let conversation = match m.receiver {
                Address::Group(_) => m.receiver,
                Address::User(_) => Address::User(sender),
            };
            for &(_, stream, delivery) in &r.streams {
                let received = self
                    .draft
                    .push(stream, slot, Some((conversation, true)), seq);
                answer.entries[delivery].1.push(Entry {
                    seq: received,
                    payload: m.payload.clone(),
                    kind,
                    origin: None,
                });
            }
            let copy = Entry {
                seq,
                payload: m.payload,
                // A message to oneself is received, too (a v1 client is shown it).
                kind: if m.receiver == Address::User(sender) {
                    EntryKind::Received
                } else {
                    EntryKind::Sent
                },
                origin: a.origin,
            };
            answer.entries[own_slot].1.push(copy);
            let stored = Appended::Stored {
                seq,
                duplicate: false,
            };
            answer.outcomes.push(outcome(m.client_id, group, stored));
        }
        Ok(())
    }

    /// How `sender`'s messages to `to` are stored.
    fn receiver(
        &mut self,
        tx: &Transaction,
        st: &mut Statements,
        sender: UserId,
        to: Address,
        friends_only: bool,
        answer: &mut Answer,
    ) -> rusqlite::Result<Receiver> {
        let owners: Vec<UserId> = match to {
            Address::User(user) => {
                let allowed = !friends_only
                    || user == sender
                    || st.are_friends.exists(params![sender.get(), user.get()])?;
                if !allowed {
                    return Ok(refused(to, Appended::NotFriends));
                }
                // A receiver who blocks the sender gets nothing (the sender's copy is stored
                // all the same); a message to oneself is stored once.
                if user == sender || self.blocks.contains(&(user, sender)) {
                    Vec::new()
                } else {
                    vec![user]
                }
            }
            Address::Group(g) => match self.group(tx, g)? {
                Some(group) if group.has(sender) => {
                    let others = group.members.iter().filter(|&&m| m != sender);
                    others.copied().collect()
                }
                _ => return Ok(refused(to, Appended::NotMember)),
            },
        };
        let mut streams = Vec::with_capacity(owners.len());
        for owner in owners {
            let stream = self.draft.stream(self.heads, &mut st.head, owner)?;
            streams.push((owner, stream, answer.slot(owner)));
        }
        Ok(Receiver {
            to,
            refused: None,
            streams,
        })
    }
}

fn outcome(client_id: Option<String>, group: Option<GroupId>, appended: Appended) -> Outcome {
    Outcome {
        client_id,
        group,
        appended,
    }
}

fn refused(to: Address, why: Appended) -> Receiver {
    Receiver {
        to,
        refused: Some(why),
        streams: Vec::new(),
    }
}
