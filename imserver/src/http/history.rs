//! A user's view of their own stream: `/history/{peer}` (one conversation, paged by `seq`)
//! and `/conversations` (the latest message of each, with unread counts).

use std::sync::Arc;

use improto::{Message, Packet};
use serde::Serialize;

use super::AppState;
use super::reply::{ApiError, ApiResult, ok};
use super::users::existing_user;
use crate::id::{Address, UserId};
use crate::store::{StoreError, StoredEntry};

/// Messages per page unless `limit` says otherwise, and the most it may say.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;

/// The query parameters of `query` (a raw query string): `before` and `limit`.
fn params(query: &str) -> Result<(Option<u64>, usize), ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    let (mut before, mut limit) = (None, DEFAULT_LIMIT);
    for (key, value) in pairs {
        match key.as_str() {
            "before" => {
                let seq = value.parse::<u64>().map_err(|_| {
                    ApiError::bad_request("`before` must be a sequence number (0 or more)")
                })?;
                before = Some(seq);
            }
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("`limit` must be from 1 to {MAX_LIMIT}"))
                    })?;
            }
            _ => {}
        }
    }
    Ok((before, limit))
}

/// A stored message as the API shows it: the sender's fields, and its `seq` in the
/// caller's stream.
fn message(entry: StoredEntry) -> Result<Message, StoreError> {
    match Packet::from_json(&entry.payload) {
        Ok(Packet::Message(mut m)) => {
            m.seq = Some(entry.seq);
            Ok(m)
        }
        _ => Err(StoreError::Corrupt(format!(
            "stream entry {} is not a message",
            entry.seq
        ))),
    }
}

/// `GET /history/{peer}?before=SEQ&limit=N`: the newest `N` messages between the caller
/// and `peer` (or in group `peer`) with `seq < SEQ`, oldest first, and whether older ones
/// exist. A group's history is the caller's copies of its messages, kept after leaving it.
pub async fn page(me: UserId, peer: String, query: String, state: Arc<AppState>) -> ApiResult {
    let peer = match Address::parse(&peer) {
        Ok(Address::Group(g)) => Address::Group(g),
        _ => Address::User(existing_user(&state, &peer).await?.id),
    };
    let (before, limit) = params(&query)?;
    let page = state.store.history(me, peer, before, limit).await?;
    let messages = page
        .messages
        .into_iter()
        .map(message)
        .collect::<Result<Vec<_>, _>>()?;
    ok(&serde_json::json!({ "messages": messages, "more": page.more }))
}

#[derive(Serialize)]
struct Conversation {
    /// The other user, or the group.
    peer: Address,
    /// The user's or the group's; `null` for an id without an account (a v1 user in
    /// `--auth open` mode) or a group that is gone.
    name: Option<String>,
    #[serde(rename = "lastSeq")]
    last_seq: u64,
    last: Message,
    unread: u64,
}

/// `GET /conversations?limit=N`: the caller's `N` most recent conversations, most recent
/// first.
pub async fn conversations(me: UserId, query: String, state: Arc<AppState>) -> ApiResult {
    let (_, limit) = params(&query)?;
    let list = state.store.conversations(me, limit).await?;
    let mut out = Vec::with_capacity(list.len());
    for c in list {
        let name = match c.peer {
            Address::User(u) => state.store.user(u).await?.map(|u| u.account.name),
            Address::Group(g) => state.store.group(g).await?.map(|g| g.name.clone()),
        };
        out.push(Conversation {
            peer: c.peer,
            name,
            last_seq: c.last.seq,
            last: message(c.last)?,
            unread: c.unread,
        });
    }
    ok(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_checked() {
        assert_eq!(params("").unwrap(), (None, DEFAULT_LIMIT));
        assert_eq!(params("before=42&limit=7").unwrap(), (Some(42), 7));
        assert_eq!(params("other=1").unwrap(), (None, DEFAULT_LIMIT));
        for bad in ["limit=0", "limit=201", "limit=x", "before=-1", "before=abc"] {
            assert!(params(bad).is_err(), "{bad}");
        }
    }
}
