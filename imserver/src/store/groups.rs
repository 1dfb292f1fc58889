//! The rules of groups, once for every backend.
//!
//! Each operation is a pure function from the group as it stands (read inside the backend's
//! transaction) to a [`Plan`]: the group as it will be, the events to append to members'
//! streams, and the answer. A backend applies the plan and commits, all in one transaction,
//! so a change and its events are stored together or not at all.
//!
//! What the rules promise:
//! - only members see a group, only its owner adds, removes others or renames, and anyone
//!   may leave;
//! - when the owner leaves, the longest-standing member becomes the owner; an empty group is
//!   deleted (and its id is never used again);
//! - everyone affected is told, the actor too (so that their other devices follow):
//!   `group_added` and `group_removed` to the member added or removed (`user`: who did it),
//!   `member_joined` and `member_left` to the other members (`user`: who joined or left),
//!   `group_renamed` to every member.

use bytes::Bytes;
use improto::{Event, EventKind};

use crate::id::{GroupId, UserId};

/// A group as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: GroupId,
    pub name: String,
    pub owner: UserId,
    /// In the order they joined, the owner among them.
    pub members: Vec<UserId>,
}

impl Group {
    pub fn has(&self, user: UserId) -> bool {
        self.members.contains(&user)
    }
}

/// What a group operation may refuse, with the reason a client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("No such group")]
    NoSuchGroup,
    /// Not a member: the group is none of their business.
    #[error("Forbidden")]
    NotMember,
    #[error("Only the group's owner may do that")]
    NotOwner,
    #[error("Not a member of the group")]
    NoSuchMember,
    #[error("A group has at most {0} members")]
    TooMany(usize),
    #[error("A group's name is 1 to {MAX_NAME_CHARS} characters")]
    BadName,
    #[error("No such users: {}", list(.0))]
    UnknownUsers(Vec<UserId>),
}

fn list(users: &[UserId]) -> String {
    let ids: Vec<_> = users.iter().map(UserId::to_string).collect();
    ids.join(", ")
}

/// The longest group name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// An event to append: to `to`'s stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEvent {
    pub to: UserId,
    pub kind: EventKind,
    /// The user it is about (see the module docs).
    pub user: UserId,
    /// `member_left` of the owner: who owns the group now.
    pub owner: Option<UserId>,
}

/// What an operation does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<T> {
    /// The group afterwards: `None` when it is deleted (or was never made).
    pub group: Option<Group>,
    pub events: Vec<GroupEvent>,
    pub answer: Result<T, GroupError>,
}

impl<T> Plan<T> {
    fn refuse(group: &Group, e: GroupError) -> Self {
        Plan {
            group: Some(group.clone()),
            events: Vec::new(),
            answer: Err(e),
        }
    }
}

/// Checks a name (trimmed: surrounding spaces are not part of it).
pub fn name(name: &str) -> Result<String, GroupError> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(GroupError::BadName);
    }
    Ok(name.to_owned())
}

/// A new group's members and events: `owner` makes a group with `others` (the owner is a
/// member, the first); every member gets `group_added`. The backend gives it its id.
pub fn create(
    owner: UserId,
    others: &[UserId],
    max: usize,
) -> Result<(Vec<UserId>, Vec<GroupEvent>), GroupError> {
    let mut members = vec![owner];
    for &m in others {
        if !members.contains(&m) {
            members.push(m);
        }
    }
    if members.len() > max {
        return Err(GroupError::TooMany(max));
    }
    let events = members
        .iter()
        .map(|&to| event(to, EventKind::GroupAdded, owner))
        .collect();
    Ok((members, events))
}

/// `actor` adds `user` (owner only); adding a member again changes nothing.
pub fn add(group: &Group, actor: UserId, user: UserId, max: usize) -> Plan<()> {
    if let Err(e) = owner_only(group, actor) {
        return Plan::refuse(group, e);
    }
    if group.has(user) {
        return Plan {
            group: Some(group.clone()),
            events: Vec::new(),
            answer: Ok(()),
        };
    }
    if group.members.len() >= max {
        return Plan::refuse(group, GroupError::TooMany(max));
    }
    let mut events = vec![event(user, EventKind::GroupAdded, actor)];
    events.extend(
        group
            .members
            .iter()
            .map(|&to| event(to, EventKind::MemberJoined, user)),
    );
    let mut after = group.clone();
    after.members.push(user);
    Plan {
        group: Some(after),
        events,
        answer: Ok(()),
    }
}

/// `actor` removes `user`: the owner anyone, anyone themselves (leaving). The owner leaving
/// hands the group to the longest-standing member; the last member leaving deletes it.
pub fn remove(group: &Group, actor: UserId, user: UserId) -> Plan<()> {
    if !group.has(actor) {
        return Plan::refuse(group, GroupError::NotMember);
    }
    if actor != user && actor != group.owner {
        return Plan::refuse(group, GroupError::NotOwner);
    }
    if !group.has(user) {
        return Plan::refuse(group, GroupError::NoSuchMember);
    }
    let mut after = group.clone();
    after.members.retain(|&m| m != user);
    let new_owner = (user == group.owner)
        .then(|| after.members.first().copied())
        .flatten();
    if let Some(owner) = new_owner {
        after.owner = owner;
    }
    let mut events = vec![event(user, EventKind::GroupRemoved, actor)];
    events.extend(after.members.iter().map(|&to| GroupEvent {
        owner: new_owner,
        ..event(to, EventKind::MemberLeft, user)
    }));
    Plan {
        group: (!after.members.is_empty()).then_some(after),
        events,
        answer: Ok(()),
    }
}

/// `actor` renames the group (owner only): every member gets `group_renamed`.
pub fn rename(group: &Group, actor: UserId, name: String) -> Plan<()> {
    if let Err(e) = owner_only(group, actor) {
        return Plan::refuse(group, e);
    }
    let events = group
        .members
        .iter()
        .map(|&to| event(to, EventKind::GroupRenamed, actor))
        .collect();
    let mut after = group.clone();
    after.name = name;
    Plan {
        group: Some(after),
        events,
        answer: Ok(()),
    }
}

/// A member sees the group; anyone else is told it is none of their business.
pub fn visible_to(group: &Group, user: UserId) -> Result<(), GroupError> {
    if group.has(user) {
        Ok(())
    } else {
        Err(GroupError::NotMember)
    }
}

fn owner_only(group: &Group, actor: UserId) -> Result<(), GroupError> {
    visible_to(group, actor)?;
    if actor != group.owner {
        return Err(GroupError::NotOwner);
    }
    Ok(())
}

fn event(to: UserId, kind: EventKind, user: UserId) -> GroupEvent {
    GroupEvent {
        to,
        kind,
        user,
        owner: None,
    }
}

/// The payload of a group event as stored in a stream. `group_added` and `group_renamed`
/// carry the group's name.
pub fn event_payload(group: &Group, e: &GroupEvent) -> Bytes {
    let mut event = Event::group(e.kind.clone(), group.id.to_string(), e.user.to_string());
    if matches!(e.kind, EventKind::GroupAdded | EventKind::GroupRenamed) {
        event.name = Some(group.name.clone());
    }
    event.owner = e.owner.map(|o| o.to_string());
    super::event_bytes(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(n: i64) -> UserId {
        UserId::new(n).unwrap()
    }

    fn group(members: &[i64]) -> Group {
        Group {
            id: GroupId::new(12).unwrap(),
            name: "Trip".into(),
            owner: u(members[0]),
            members: members.iter().map(|&n| u(n)).collect(),
        }
    }

    fn told(plan: &Plan<()>, kind: EventKind) -> Vec<(i64, i64)> {
        let mut v: Vec<_> = plan
            .events
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| (e.to.get(), e.user.get()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn creating_tells_every_member_including_the_owner() {
        let (members, events) = create(u(7), &[u(9), u(7), u(9)], 10).unwrap();
        assert_eq!(members, [u(7), u(9)]);
        let plan = Plan {
            group: None,
            events,
            answer: Ok(()),
        };
        assert_eq!(told(&plan, EventKind::GroupAdded), [(7, 7), (9, 7)]);
        assert_eq!(create(u(7), &[u(8), u(9)], 2), Err(GroupError::TooMany(2)));
    }

    #[test]
    fn adding_tells_the_added_and_every_member_before() {
        let g = group(&[7, 9]);
        let plan = add(&g, u(7), u(11), 10);
        assert_eq!(told(&plan, EventKind::GroupAdded), [(11, 7)]);
        assert_eq!(told(&plan, EventKind::MemberJoined), [(7, 11), (9, 11)]);
        assert_eq!(add(&g, u(9), u(11), 10).answer, Err(GroupError::NotOwner));
        assert_eq!(add(&g, u(5), u(11), 10).answer, Err(GroupError::NotMember));
        assert_eq!(add(&g, u(7), u(11), 2).answer, Err(GroupError::TooMany(2)));
        let again = add(&g, u(7), u(9), 10);
        assert!(again.answer.is_ok() && again.events.is_empty());
    }

    #[test]
    fn the_owner_leaving_hands_over_and_the_last_one_deletes() {
        let g = group(&[7, 9, 11]);
        let plan = remove(&g, u(7), u(7));
        let after = plan.group.clone().unwrap();
        assert_eq!((after.owner, after.members), (u(9), vec![u(9), u(11)]));
        assert_eq!(told(&plan, EventKind::GroupRemoved), [(7, 7)]);
        assert_eq!(told(&plan, EventKind::MemberLeft), [(9, 7), (11, 7)]);
        assert!(
            plan.events
                .iter()
                .filter(|e| e.kind == EventKind::MemberLeft)
                .all(|e| e.owner == Some(u(9)))
        );
        let last = remove(&group(&[7]), u(7), u(7));
        assert!(last.group.is_none() && last.answer.is_ok());
    }

    #[test]
    fn only_the_owner_removes_others() {
        let g = group(&[7, 9, 11]);
        assert_eq!(remove(&g, u(9), u(11)).answer, Err(GroupError::NotOwner));
        let plan = remove(&g, u(7), u(11));
        assert_eq!(told(&plan, EventKind::GroupRemoved), [(11, 7)]);
        assert!(plan.events.iter().all(|e| e.owner.is_none()));
        assert_eq!(remove(&g, u(7), u(5)).answer, Err(GroupError::NoSuchMember));
        assert_eq!(remove(&g, u(9), u(9)).group.unwrap().owner, u(7));
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(name("  Trip  "), Ok("Trip".into()));
        assert_eq!(name("   "), Err(GroupError::BadName));
        assert_eq!(
            name(&"é".repeat(MAX_NAME_CHARS)).unwrap().chars().count(),
            MAX_NAME_CHARS
        );
        assert_eq!(
            name(&"é".repeat(MAX_NAME_CHARS + 1)),
            Err(GroupError::BadName)
        );
        let plan = rename(&group(&[7, 9]), u(7), "Road trip".into());
        assert_eq!(told(&plan, EventKind::GroupRenamed), [(7, 7), (9, 7)]);
    }

    #[test]
    fn events_are_event_packets_with_the_group() {
        let g = group(&[7, 9]);
        let added = GroupEvent {
            to: u(9),
            kind: EventKind::GroupAdded,
            user: u(7),
            owner: None,
        };
        assert_eq!(
            &event_payload(&g, &added)[..],
            br#"{"type":"Event","kind":"group_added","user":"7","name":"Trip","group":"g12"}"#
        );
    }
}
