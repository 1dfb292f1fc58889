//! What a connection's protocol version decides, in one place.

use crate::config::AuthMode;
use crate::delivery::EntryKind;
use crate::id::UserId;

/// The protocol a connection speaks: known from its `Regist` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// No `Regist` yet: answered as version 2 (a version 1 client sends `Regist` first, so
    /// never sees an answer).
    Unknown,
    /// The Go server's protocol: only `Message` frames ever go to the client.
    V1,
    /// Acknowledged, sequenced, with explicit errors.
    V2,
}

impl Dialect {
    /// The dialect of a `Regist`'s `version` (the parser accepts only known versions).
    pub fn of(version: u8) -> Dialect {
        if version >= 2 {
            Dialect::V2
        } else {
            Dialect::V1
        }
    }

    /// Its label in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::V1 => "v1",
            _ => "v2",
        }
    }

    /// Whether the server may write anything but messages to it: `Registered`, `Ack`,
    /// `Error`, `Event`, `Pong`.
    pub fn answers(self) -> bool {
        self != Dialect::V1
    }

    /// Whether it is written stream entries of this kind. A v1 client knows only messages
    /// addressed to its user: no copies of its own messages, no group messages, no events.
    pub fn receives(self, kind: EntryKind) -> bool {
        self != Dialect::V1 || kind == EntryKind::Received
    }

    /// [`receives`](Self::receives) for a stored entry of `owner`'s stream, whose kind is
    /// read off its payload only when it matters (v1).
    pub fn receives_stored(self, payload: &[u8], owner: UserId) -> bool {
        self != Dialect::V1 || self.receives(EntryKind::of(payload, owner))
    }

    /// Whether a message it sends is confirmed with an `Ack` once stored.
    pub fn acks_sender(self) -> bool {
        self == Dialect::V2
    }

    /// Whether writing a stream entry to it counts as acknowledging it (a v1 client cannot
    /// acknowledge, so what it is written, or written past, counts as processed).
    pub fn write_counts_as_ack(self) -> bool {
        self == Dialect::V1
    }

    /// Over the rate limit: whether the connection waits (v1, which cannot be told to send
    /// again) rather than being refused with `rate_limited`.
    pub fn waits_when_rate_limited(self) -> bool {
        self == Dialect::V1
    }

    /// Whether its `Regist` needs a login token: always on v2, and on v1 unless the server
    /// runs `--auth open`.
    pub fn needs_token(self, auth: AuthMode) -> bool {
        self == Dialect::V2 || auth == AuthMode::Token
    }
}
