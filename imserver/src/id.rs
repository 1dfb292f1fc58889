//! User and group ids, and the [`Address`] a message goes to (one or the other): parsed once
//! at each edge (an HTTP path or body, a `Regist`, a `Message`'s `receiver`, a `Read`'s
//! `peer`), and from then on a number with one canonical text form.
//!
//! On the wire a user id is a decimal string and a group id is `g` and a decimal string.
//! Only the canonical form is an id: `"7"` and `"g12"`, never `"007"`, `"+7"` or `"g012"`.
//! Before this type, HTTP read `"007"` as user 7 while the relay compared strings, so `"7"`
//! and `"007"` could be two inboxes of one account.

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;

/// A user's id: a positive number that fits an `i64` (SQLite's and PostgreSQL's integer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(NonZeroU64);

/// Why a string is not a user id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a user id (a decimal number from 1 to {max} without leading zeros)", max = i64::MAX)]
pub struct BadId(pub String);

impl UserId {
    /// The id `n`, if it is one (1 ..= `i64::MAX`).
    pub fn new(n: i64) -> Option<UserId> {
        u64::try_from(n).ok().and_then(NonZeroU64::new).map(UserId)
    }

    /// Parses the canonical decimal form: digits only, no leading zero, at most `i64::MAX`.
    ///
    /// The same rule makes the number of a group id (after its `g`).
    ///
    /// ```
    /// use imserver::UserId;
    ///
    /// assert_eq!(UserId::parse("7").unwrap().get(), 7);
    /// for bad in ["007", "0", "-1", "+1", " 1", "1a", "", "9223372036854775808"] {
    ///     assert!(UserId::parse(bad).is_err(), "{bad:?}");
    /// }
    /// ```
    pub fn parse(s: &str) -> Result<UserId, BadId> {
        canonical_number(s)
            .and_then(UserId::new)
            .ok_or_else(|| BadId(s.to_owned()))
    }

    /// The id as a number.
    pub fn get(self) -> i64 {
        // At most i64::MAX by construction.
        self.0.get() as i64
    }
}

/// `s` as a positive `i64` in canonical decimal form, if it is one.
fn canonical_number(s: &str) -> Option<i64> {
    let canonical = !s.is_empty()
        && !s.starts_with('0')
        && s.len() <= 19
        && s.bytes().all(|b| b.is_ascii_digit());
    canonical.then(|| s.parse::<i64>().ok()).flatten()
}

/// A group's id: `g` and a positive number that fits an `i64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(NonZeroU64);

/// Why a string is not a group id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a group id (g and a decimal number from 1 to {max} without leading zeros)", max = i64::MAX)]
pub struct BadGroupId(pub String);

impl GroupId {
    /// The group numbered `n`, if it is one (1 ..= `i64::MAX`).
    pub fn new(n: i64) -> Option<GroupId> {
        u64::try_from(n).ok().and_then(NonZeroU64::new).map(GroupId)
    }

    /// Parses the canonical form: `g`, then a number as [`UserId::parse`] takes it.
    ///
    /// ```
    /// use imserver::id::GroupId;
    ///
    /// assert_eq!(GroupId::parse("g12").unwrap().get(), 12);
    /// assert_eq!(GroupId::parse("g12").unwrap().to_string(), "g12");
    /// for bad in ["12", "g", "g012", "G12", "g-1", "g0"] {
    ///     assert!(GroupId::parse(bad).is_err(), "{bad:?}");
    /// }
    /// ```
    pub fn parse(s: &str) -> Result<GroupId, BadGroupId> {
        s.strip_prefix('g')
            .and_then(canonical_number)
            .and_then(GroupId::new)
            .ok_or_else(|| BadGroupId(s.to_owned()))
    }

    /// The group's number.
    pub fn get(self) -> i64 {
        // At most i64::MAX by construction.
        self.0.get() as i64
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "g{}", self.0)
    }
}

/// Written as the string the wire uses (`"g12"`).
impl serde::Serialize for GroupId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Whom a message goes to, or whom a conversation is with: a user or a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Address {
    User(UserId),
    Group(GroupId),
}

/// Why a string is neither a user id nor a group id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is neither a user id (a decimal number without leading zeros) nor a group id (g and such a number)"
)]
pub struct BadAddress(pub String);

impl Address {
    /// A group id if it starts with `g`, else a user id; canonical forms only.
    ///
    /// ```
    /// use imserver::id::{Address, GroupId};
    /// use imserver::UserId;
    ///
    /// assert_eq!(Address::parse("7"), Ok(Address::User(UserId::new(7).unwrap())));
    /// assert_eq!(Address::parse("g7"), Ok(Address::Group(GroupId::new(7).unwrap())));
    /// assert!(Address::parse("007").is_err() && Address::parse("g07").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Address, BadAddress> {
        let bad = || BadAddress(s.to_owned());
        if s.starts_with('g') {
            GroupId::parse(s).map(Address::Group).map_err(|_| bad())
        } else {
            UserId::parse(s).map(Address::User).map_err(|_| bad())
        }
    }

    /// How the store keys a conversation with this address: a user's id, or a group's
    /// number negated (the two never meet).
    pub fn key(self) -> i64 {
        match self {
            Address::User(u) => u.get(),
            Address::Group(g) => -g.get(),
        }
    }

    /// The address a store key stands for; see [`key`](Self::key).
    pub fn from_key(key: i64) -> Option<Address> {
        if key < 0 {
            key.checked_neg().and_then(GroupId::new).map(Address::Group)
        } else {
            UserId::new(key).map(Address::User)
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::User(u) => u.fmt(f),
            Address::Group(g) => g.fmt(f),
        }
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl From<UserId> for Address {
    fn from(u: UserId) -> Self {
        Address::User(u)
    }
}

impl From<GroupId> for Address {
    fn from(g: GroupId) -> Self {
        Address::Group(g)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for UserId {
    type Err = BadId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UserId::parse(s)
    }
}

/// Written as the decimal string the wire uses.
impl serde::Serialize for UserId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canonical_form_round_trips_and_nothing_else_parses() {
        for n in [1, 7, 10, 1000, i64::MAX] {
            let id = UserId::new(n).unwrap();
            assert_eq!(UserId::parse(&id.to_string()), Ok(id));
        }
        assert_eq!(UserId::new(0), None);
        assert_eq!(UserId::new(-5), None);
        for bad in ["00", "01", "٣", "1 ", "1e3", "99999999999999999999"] {
            assert!(UserId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn addresses_round_trip_through_text_and_store_keys() {
        for text in [
            "1",
            "7",
            "g1",
            "g12",
            "9223372036854775807",
            "g9223372036854775807",
        ] {
            let a = Address::parse(text).unwrap();
            assert_eq!(a.to_string(), text);
            assert_eq!(Address::from_key(a.key()), Some(a));
        }
        assert_eq!(Address::from_key(0), None);
        assert_eq!(Address::from_key(i64::MIN), None);
        for bad in ["", "g", "gg1", "g 1", "1g", "-1", "g-1"] {
            assert!(Address::parse(bad).is_err(), "{bad:?}");
        }
    }
}
