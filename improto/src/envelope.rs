//! A borrowed, allocation-light look at a frame: its type, sender and receiver.
//!
//! A relay needs to know where a frame goes, not what it says. [`Envelope::peek`] validates the
//! frame exactly as [`Packet::from_json`](crate::Packet::from_json) would (same parser, same
//! rules), but borrows the ids from the frame and never copies the message text, so the relay
//! can forward the original bytes untouched.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};

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
    /// `{"type":"Ack",…}`
    Ack,
    /// `{"type":"Ping"}`
    Ping,
    /// `{"type":"Pong"}`
    Pong,
    /// `{"type":"Registered",…}`
    Registered,
    /// `{"type":"Error",…}`
    Error,
    /// `{"type":"Event",…}`
    Event,
    /// `{"type":"Read",…}`
    Read,
    /// `{"type":"Typing",…}`
    Typing,
    /// `{"type":"Presence",…}`
    Presence,
}

/// The routing facts of one valid frame, borrowed from it.
///
/// ```
/// use improto::{Envelope, PacketKind};
///
/// let frame = br#"{"type":"Message","message":"a long text...","sender":"1","receiver":"2","createTime":1,"id":"c-1"}"#;
/// let env = Envelope::peek(frame)?;
/// assert_eq!(env.kind(), PacketKind::Message);
/// assert_eq!((env.sender(), env.receiver()), (Some("1"), Some("2")));
/// assert_eq!((env.client_id(), env.seq()), (Some("c-1"), None));
/// # Ok::<(), improto::ProtoError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<'a> {
    kind: PacketKind,
    sender: Option<Cow<'a, str>>,
    receiver: Option<Cow<'a, str>>,
    id: Option<Cow<'a, str>>,
    seq: Option<u64>,
    peer: Option<Cow<'a, str>>,
}

impl<'a> Envelope<'a> {
    /// Validates `frame` (a payload, without its length prefix) and returns its envelope.
    ///
    /// Succeeds exactly when [`Packet::from_json`](crate::Packet::from_json) would, with the
    /// same errors. Ids are borrowed unless they contain JSON escapes.
    pub fn peek(frame: &'a [u8]) -> Result<Self, ProtoError> {
        let env = |kind, sender, receiver, id, seq| Envelope {
            kind,
            sender,
            receiver,
            id,
            seq,
            peer: None,
        };
        Ok(match wire::parse::<SkipStr>(frame)? {
            Valid::Regist { sender, .. } => env(PacketKind::Regist, Some(sender), None, None, None),
            Valid::Message {
                sender,
                receiver,
                id,
                seq,
                ..
            } => env(PacketKind::Message, Some(sender), Some(receiver), id, seq),
            Valid::Ack { id, seq, .. } => env(PacketKind::Ack, None, None, id, Some(seq)),
            Valid::Ping => env(PacketKind::Ping, None, None, None, None),
            Valid::Pong => env(PacketKind::Pong, None, None, None, None),
            Valid::Registered { sender, seq, .. } => {
                env(PacketKind::Registered, Some(sender), None, None, Some(seq))
            }
            Valid::Error { id, .. } => env(PacketKind::Error, None, None, id, None),
            Valid::Event { seq, .. } => env(PacketKind::Event, None, None, None, seq),
            Valid::Read { peer, seq } => Envelope {
                peer: Some(peer),
                ..env(PacketKind::Read, None, None, None, Some(seq))
            },
            Valid::Typing { sender, receiver } => {
                env(PacketKind::Typing, sender, Some(receiver), None, None)
            }
            Valid::Presence { .. } => env(PacketKind::Presence, None, None, None, None),
        })
    }

    /// The client id of a frame that [`peek`](Self::peek) refused, when that id is itself
    /// valid: what a server echoes in the `Error` it answers the frame with.
    ///
    /// ```
    /// use improto::Envelope;
    ///
    /// let bad = br#"{"type":"Message","sender":"1","id":"c-7"}"#; // no receiver
    /// assert!(Envelope::peek(bad).is_err());
    /// assert_eq!(Envelope::client_id_of_invalid(bad).as_deref(), Some("c-7"));
    /// ```
    pub fn client_id_of_invalid(frame: &[u8]) -> Option<String> {
        wire::lenient_client_id(frame)
    }

    /// The packet's type.
    pub fn kind(&self) -> PacketKind {
        self.kind
    }

    /// The `sender` user id (`Regist`, `Message`, `Registered`, and `Typing` from the server).
    pub fn sender(&self) -> Option<&str> {
        self.sender.as_deref()
    }

    /// The `receiver`: a user id, or a group's (`Message`, `Typing`).
    pub fn receiver(&self) -> Option<&str> {
        self.receiver.as_deref()
    }

    /// The other side of the conversation a `Read` is about: a user, or a group.
    pub fn peer(&self) -> Option<&str> {
        self.peer.as_deref()
    }

    /// The client message id (`Message`, `Ack`, `Error`), when present.
    pub fn client_id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The `seq` (`Ack`, `Registered`, `Read`, and a delivered `Message` or `Event`), when
    /// present.
    pub fn seq(&self) -> Option<u64> {
        self.seq
    }
}

/// The most bytes [`write_stamped`] adds to a payload: `"seq":18446744073709551615,`.
pub const SEQ_STAMP_MAX: usize = r#""seq":18446744073709551615,"#.len();

/// Appends to `out` one frame (length prefix and payload): `payload` with `"seq":<seq>`
/// added as its first field. This is how a relay tells the receiver a message's position
/// without parsing or re-encoding it.
///
/// `payload` must be a JSON object that starts with `{` and has no `seq` field (a relay
/// normalises what it accepts so that this holds). Returns false, writing nothing, when it
/// does not start with `{`.
///
/// ```
/// use bytes::BytesMut;
///
/// let mut out = BytesMut::new();
/// assert!(improto::write_stamped(&mut out, br#"{"type":"Message"}"#, 7));
/// assert_eq!(&out[4..], br#"{"seq":7,"type":"Message"}"#);
/// assert_eq!(&out[..4], &26u32.to_be_bytes());
/// ```
pub fn write_stamped(out: &mut BytesMut, payload: &[u8], seq: u64) -> bool {
    let Some((b'{', rest)) = payload.split_first() else {
        return false;
    };
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(seq);
    let len = payload.len() + br#""seq":,"#.len() + digits.len();
    out.reserve(4 + len);
    // Payloads are bounded by a frame limit far below 4 GiB.
    out.put_u32(len as u32);
    out.put_slice(br#"{"seq":"#);
    out.put_slice(digits.as_bytes());
    out.put_u8(b',');
    out.put_slice(rest);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_without_escapes_are_borrowed_from_the_frame() {
        let frame =
            br#"{"type":"Message","message":"hi","sender":"1","receiver":"2","createTime":1}"#;
        let env = Envelope::peek(frame).unwrap();
        assert!(matches!(env.sender, Some(Cow::Borrowed(_))));
        assert!(matches!(env.receiver, Some(Cow::Borrowed(_))));
    }
}
