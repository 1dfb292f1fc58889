//! The seam between the store and live connections: after a transaction commits, the store
//! hands every stream entry it appended to a [`Delivery`], in commit order; and what is never
//! stored (typing, presence) takes the same way, as a live frame.
//!
//! Today that is the relay's `LocalRouter`, which queues each entry on the user's
//! connections on this node. A message bus (NATS) is another implementation of the same
//! trait: the store does not know who is online, or where.

use std::sync::Arc;

use bytes::Bytes;
use improto::{Envelope, PacketKind};

use crate::id::{Address, UserId};

/// A relay connection's id, unique in this process.
pub type ConnId = u64;

/// What an entry of a user's stream is, from that user's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A message to this user (from someone else, or from themselves).
    Received,
    /// A copy of a message this user sent to someone else or to a group (from any of their
    /// devices).
    Sent,
    /// A message to a group this user is in, from another member.
    Group,
    /// A social event (a friend request, say).
    Event,
}

impl EntryKind {
    /// The kind of a stored entry of `owner`'s stream, read off its payload. Only an
    /// unparseable payload (which the store never writes) is taken for an event.
    pub fn of(payload: &[u8], owner: UserId) -> EntryKind {
        let Ok(env) = Envelope::peek(payload) else {
            return EntryKind::Event;
        };
        if env.kind() != PacketKind::Message {
            return EntryKind::Event;
        }
        let from_owner = env.sender().is_some_and(|s| UserId::parse(s) == Ok(owner));
        match env.receiver().map(Address::parse) {
            Some(Ok(Address::User(to))) if to == owner => EntryKind::Received,
            Some(Ok(Address::Group(_))) if !from_owner => EntryKind::Group,
            _ => EntryKind::Sent,
        }
    }
}

/// One committed entry of a user's stream, on its way to that user's live connections.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its position in the user's stream.
    pub seq: u64,
    /// The frame payload without `seq` (a relay splices it in when writing).
    pub payload: Bytes,
    pub kind: EntryKind,
    /// The connection the message came from, for a [`EntryKind::Sent`] copy: that connection
    /// is told by its `Ack` (or, on v1, never), not by the copy, and passes it over.
    pub origin: Option<ConnId>,
}

/// Entries of one user's stream, in `seq` order, shared by every connection they go to.
pub type Entries = Arc<[Entry]>;

/// A cached read that a commit made stale (see `store::cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    Token(crate::store::TokenHash),
    Friends(UserId),
    Blocks(UserId),
    Group(crate::id::GroupId),
    /// Everything: notices may have been missed (the bus was away).
    Everything,
}

/// Where committed stream entries go.
pub trait Delivery: Send + Sync + 'static {
    /// Queues `entries` for the live connections of `to`. Called on the store's thread,
    /// after the commit, in commit order, so each user's entries arrive in `seq` order: it
    /// must not block.
    fn deliver(&self, to: UserId, entries: Entries);

    /// Queues a frame that is never stored and has no `seq` (`Typing`, `Presence`) for the
    /// version 2 connections of `to`. Best effort: a connection whose queue is full does
    /// without it.
    fn live(&self, to: UserId, payload: Bytes);

    /// A commit on this node made `what` stale: other nodes forget it too (this node's cache
    /// is told by the store). Must not block.
    fn stale(&self, _what: Stale) {}

    /// `user` has a connection on this node: from now on, what other nodes append to their
    /// stream reaches it here. Awaited on every `Regist`, before the replay.
    fn watch(&self, _user: UserId) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(futures::future::ready(()))
    }

    /// `user` may have no connection left on this node.
    fn unwatch(&self, _user: UserId) {}

    /// Closes every connection of `user`, on every node; returns how many were on this one
    /// (none, for a delivery that holds no connections).
    fn disconnect(&self, _user: UserId) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_classified_from_its_owners_side() {
        let seven = UserId::new(7).unwrap();
        let to_seven =
            br#"{"type":"Message","sender":"9","receiver":"7","message":"m","createTime":1}"#;
        let from_seven =
            br#"{"type":"Message","sender":"7","receiver":"9","message":"m","createTime":1}"#;
        let to_self =
            br#"{"type":"Message","sender":"7","receiver":"7","message":"m","createTime":1}"#;
        let event = br#"{"type":"Event","kind":"friend_request","user":"9"}"#;
        let in_group =
            br#"{"type":"Message","sender":"9","receiver":"g3","message":"m","createTime":1}"#;
        let to_group =
            br#"{"type":"Message","sender":"7","receiver":"g3","message":"m","createTime":1}"#;
        assert_eq!(EntryKind::of(to_seven, seven), EntryKind::Received);
        assert_eq!(EntryKind::of(from_seven, seven), EntryKind::Sent);
        assert_eq!(EntryKind::of(to_self, seven), EntryKind::Received);
        assert_eq!(EntryKind::of(event, seven), EntryKind::Event);
        assert_eq!(EntryKind::of(in_group, seven), EntryKind::Group);
        assert_eq!(EntryKind::of(to_group, seven), EntryKind::Sent);
    }
}
