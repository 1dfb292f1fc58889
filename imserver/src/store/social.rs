//! The rules of the social graph, once for every backend.
//!
//! Each operation is a pure function from how two users stand ([`Pair`], read inside the
//! backend's transaction) to a [`Plan`]: the rows to change, the events to append to either
//! user's stream, and the answer. A backend reads the pair, applies the plan and commits,
//! all in one transaction, so a change and its events are stored together or not at all.
//!
//! What the rules promise, beyond the obvious:
//! - a request to someone who asked you first is an acceptance;
//! - a blocked user is never told: their requests to the blocker look pending and reach
//!   nobody, and blocking or unblocking puts nothing in their stream;
//! - declining is silent.

use bytes::Bytes;
use improto::{Event, EventKind};

use crate::id::UserId;

/// How user `a` (the one acting) and user `b` stand, from `a`'s side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pair {
    /// `a` and `b` are the same user.
    pub same: bool,
    pub friends: bool,
    /// `a` has asked `b` (pending).
    pub asked: bool,
    /// `b` has asked `a` (pending).
    pub asked_by: bool,
    /// `a` blocks `b`.
    pub blocks: bool,
    /// `b` blocks `a`.
    pub blocked_by: bool,
}

/// A row change a plan asks for, between `a` and `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Friends, both ways.
    Befriend,
    /// No longer friends, both ways.
    Unfriend,
    /// A pending request from `a` to `b` (with the operation's message and time).
    Ask,
    /// No pending request either way.
    DropRequests,
    /// No pending request from `b` to `a`.
    DropIncoming,
    /// `a` blocks `b`.
    Block,
    /// `a` no longer blocks `b`.
    Unblock,
}

/// Whose stream an event goes to; its `user` is the other one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// What an operation does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<T> {
    pub changes: Vec<Change>,
    /// Events to append, in this order. A `friend_request` carries the request's message.
    pub events: Vec<(Side, EventKind)>,
    pub answer: Result<T, SocialError>,
}

impl<T> Plan<T> {
    fn answer(answer: Result<T, SocialError>) -> Self {
        Plan {
            changes: Vec::new(),
            events: Vec::new(),
            answer,
        }
    }
}

/// An operation that does not apply, with the reason a client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SocialError {
    #[error("You cannot do that with yourself")]
    Yourself,
    #[error("No such request")]
    NoSuchRequest,
    #[error("Not friends")]
    NotFriends,
    #[error("Not blocked")]
    NotBlocked,
    #[error("You block this user; unblock them first")]
    YouBlockThem,
}

/// Where a friend request stands once made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// Waiting for the other user.
    Pending,
    /// The two are friends (they had asked first, or already were).
    Accepted,
}

/// `a` asks `b` to be friends.
pub fn request(p: Pair) -> Plan<RequestOutcome> {
    if p.same {
        return Plan::answer(Err(SocialError::Yourself));
    }
    if p.blocks {
        return Plan::answer(Err(SocialError::YouBlockThem));
    }
    if p.friends {
        return Plan::answer(Ok(RequestOutcome::Accepted));
    }
    if p.blocked_by || p.asked {
        // A blocked user is not told; a repeated request changes nothing.
        return Plan::answer(Ok(RequestOutcome::Pending));
    }
    if p.asked_by {
        return befriend(Ok(RequestOutcome::Accepted));
    }
    Plan {
        changes: vec![Change::Ask],
        events: vec![(Side::B, EventKind::FriendRequest)],
        answer: Ok(RequestOutcome::Pending),
    }
}

/// `a` accepts (`accept`) or declines the pending request from `b`.
pub fn answer(p: Pair, accept: bool) -> Plan<()> {
    if !p.asked_by {
        return Plan::answer(Err(SocialError::NoSuchRequest));
    }
    if accept {
        befriend(Ok(()))
    } else {
        Plan {
            changes: vec![Change::DropIncoming],
            events: Vec::new(),
            answer: Ok(()),
        }
    }
}

/// `a` ends the friendship with `b`; `b` is told.
pub fn unfriend(p: Pair) -> Plan<()> {
    if !p.friends {
        return Plan::answer(Err(SocialError::NotFriends));
    }
    Plan {
        changes: vec![Change::Unfriend],
        events: vec![(Side::B, EventKind::FriendRemoved)],
        answer: Ok(()),
    }
}

/// `a` blocks `b`: the friendship and any pending requests end, and `b` is not told.
pub fn block(p: Pair) -> Plan<()> {
    if p.same {
        return Plan::answer(Err(SocialError::Yourself));
    }
    let mut changes = vec![Change::Block, Change::DropRequests];
    if p.friends {
        changes.push(Change::Unfriend);
    }
    Plan {
        changes,
        events: Vec::new(),
        answer: Ok(()),
    }
}

/// `a` unblocks `b`, who is not told.
pub fn unblock(p: Pair) -> Plan<()> {
    if !p.blocks {
        return Plan::answer(Err(SocialError::NotBlocked));
    }
    Plan {
        changes: vec![Change::Unblock],
        events: Vec::new(),
        answer: Ok(()),
    }
}

fn befriend<T>(answer: Result<T, SocialError>) -> Plan<T> {
    Plan {
        changes: vec![Change::Befriend, Change::DropRequests],
        events: vec![
            (Side::A, EventKind::FriendAccepted),
            (Side::B, EventKind::FriendAccepted),
        ],
        answer,
    }
}

/// The payload of an event about `user` (named `name`), as stored in a stream.
pub fn event_payload(kind: EventKind, user: UserId, name: &str, message: Option<&str>) -> Bytes {
    let mut event = Event::new(kind, user.to_string(), name);
    event.message = message.map(str::to_owned);
    super::event_bytes(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(f: impl FnOnce(&mut Pair)) -> Pair {
        let mut p = Pair::default();
        f(&mut p);
        p
    }

    #[test]
    fn a_mutual_request_is_an_acceptance_told_to_both() {
        let plan = request(pair(|p| p.asked_by = true));
        assert_eq!(plan.answer, Ok(RequestOutcome::Accepted));
        assert_eq!(plan.changes, [Change::Befriend, Change::DropRequests]);
        assert_eq!(plan.events.len(), 2);
    }

    #[test]
    fn a_blocked_user_is_never_told() {
        let plan = request(pair(|p| p.blocked_by = true));
        assert_eq!(plan.answer, Ok(RequestOutcome::Pending));
        assert!(plan.changes.is_empty() && plan.events.is_empty());
        let plan = block(pair(|p| p.friends = true));
        assert!(plan.events.is_empty());
        assert!(plan.changes.contains(&Change::Unfriend));
        assert!(unblock(pair(|p| p.blocks = true)).events.is_empty());
    }

    #[test]
    fn declining_is_silent_and_needs_a_request() {
        let plan = answer(pair(|p| p.asked_by = true), false);
        assert_eq!(plan.changes, [Change::DropIncoming]);
        assert!(plan.events.is_empty());
        assert_eq!(
            answer(Pair::default(), true).answer,
            Err(SocialError::NoSuchRequest)
        );
    }

    #[test]
    fn requests_to_friends_yourself_or_whom_you_block_change_nothing() {
        let friends = request(pair(|p| p.friends = true));
        assert_eq!(friends.answer, Ok(RequestOutcome::Accepted));
        assert!(friends.changes.is_empty());
        assert_eq!(
            request(pair(|p| p.same = true)).answer,
            Err(SocialError::Yourself)
        );
        assert_eq!(
            request(pair(|p| p.blocks = true)).answer,
            Err(SocialError::YouBlockThem)
        );
        let again = request(pair(|p| p.asked = true));
        assert!(again.changes.is_empty() && again.events.is_empty());
    }

    #[test]
    fn events_are_event_packets_without_a_seq() {
        let seven = UserId::new(7).unwrap();
        let payload = event_payload(EventKind::FriendRequest, seven, "Neo", Some("hi"));
        assert_eq!(
            &payload[..],
            br#"{"type":"Event","kind":"friend_request","user":"7","name":"Neo","message":"hi"}"#
        );
    }
}
