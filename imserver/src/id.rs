//! User ids: parsed once at each edge (an HTTP path or body, a `Regist`, a `Message`'s
//! `receiver`), and from then on a number with one canonical text form.
//!
//! On the wire an id is a decimal string. Only the canonical form is an id: `"7"`, never
//! `"007"` or `"+7"`. Before this type, HTTP read `"007"` as user 7 while the relay compared
//! strings, so `"7"` and `"007"` could be two inboxes of one account.

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
    /// ```
    /// use imserver::UserId;
    ///
    /// assert_eq!(UserId::parse("7").unwrap().get(), 7);
    /// for bad in ["007", "0", "-1", "+1", " 1", "1a", "", "9223372036854775808"] {
    ///     assert!(UserId::parse(bad).is_err(), "{bad:?}");
    /// }
    /// ```
    pub fn parse(s: &str) -> Result<UserId, BadId> {
        let canonical = !s.is_empty()
            && !s.starts_with('0')
            && s.len() <= 19
            && s.bytes().all(|b| b.is_ascii_digit());
        canonical
            .then(|| s.parse::<i64>().ok())
            .flatten()
            .and_then(UserId::new)
            .ok_or_else(|| BadId(s.to_owned()))
    }

    /// The id as a number.
    pub fn get(self) -> i64 {
        // At most i64::MAX by construction.
        self.0.get() as i64
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
}
