//! A borrowed, allocation-light look at a frame: its type, sender and receiver.
//!
//! A relay needs to know where a frame goes, not what it says. [`Envelope::peek`] validates the
//! frame exactly as [`Packet::from_json`](crate::Packet::from_json) would (same parser, same
//! rules), but borrows the ids from the frame and never copies the message text, so the relay
//! can forward the original bytes untouched.

use std::borrow::Cow;

use crate::ProtoError;
use crate::wire::{self, SkipStr, Valid};

/// Which packet a frame holds.
///
/// ```
/// use improto::{Envelope, PacketKind};
///
/// let env = Envelope::peek(br#"{"type":"Regist","sender":"1"}"#)?;
/// assert_eq!(env.kind(), PacketKind::Regist);
/// # Ok::<(), improto::ProtoError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PacketKind {
    /// `{"type":"Regist",…}`
    Regist,
    /// `{"type":"Message",…}`
    Message,
}

/// The routing facts of one valid frame, borrowed from it.
///
/// ```
/// use improto::{Envelope, PacketKind};
///
/// let frame = br#"{"type":"Message","message":"a long text...","sender":"1","receiver":"2","createTime":1}"#;
/// let env = Envelope::peek(frame)?;
/// assert_eq!(env.kind(), PacketKind::Message);
/// assert_eq!((env.sender(), env.receiver()), ("1", Some("2")));
/// # Ok::<(), improto::ProtoError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<'a> {
    kind: PacketKind,
    sender: Cow<'a, str>,
    receiver: Option<Cow<'a, str>>,
}

impl<'a> Envelope<'a> {
    /// Validates `frame` (a payload, without its length prefix) and returns its envelope.
    ///
    /// Succeeds exactly when [`Packet::from_json`](crate::Packet::from_json) would, with the
    /// same errors. Ids are borrowed unless they contain JSON escapes.
    pub fn peek(frame: &'a [u8]) -> Result<Self, ProtoError> {
        Ok(match wire::parse::<SkipStr>(frame)? {
            Valid::Regist { sender } => Envelope {
                kind: PacketKind::Regist,
                sender,
                receiver: None,
            },
            Valid::Message {
                sender, receiver, ..
            } => Envelope {
                kind: PacketKind::Message,
                sender,
                receiver: Some(receiver),
            },
        })
    }

    /// The packet's type.
    pub fn kind(&self) -> PacketKind {
        self.kind
    }

    /// The `sender` user id (every packet type so far has one).
    pub fn sender(&self) -> &str {
        &self.sender
    }

    /// The `receiver` user id, for packets addressed to a user.
    pub fn receiver(&self) -> Option<&str> {
        self.receiver.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_without_escapes_are_borrowed_from_the_frame() {
        let frame =
            br#"{"type":"Message","message":"hi","sender":"1","receiver":"2","createTime":1}"#;
        let env = Envelope::peek(frame).unwrap();
        assert!(matches!(env.sender, Cow::Borrowed(_)));
        assert!(matches!(env.receiver, Some(Cow::Borrowed(_))));
    }
}
