//! Typed packets: the JSON objects carried inside frames, tagged by `"type"`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

use crate::ProtoError;
use crate::wire::{self, Valid};

/// One protocol packet.
///
/// On the wire a packet is a JSON object whose `"type"` field names the variant; the
/// variant's struct supplies the other fields. Unknown fields are ignored when decoding.
///
/// ```
/// use improto::{Message, Packet};
///
/// let json = br#"{"type":"Message","sender":"1","receiver":"2","message":"hi","createTime":1700000000}"#;
/// let packet = Packet::from_json(json)?;
/// assert!(matches!(&packet, Packet::Message(m) if m.message == "hi"));
///
/// // And back again: integral times are written as integers, as the Go server did.
/// let back = packet.to_json()?;
/// assert_eq!(Packet::from_json(&back)?, packet);
/// # Ok::<(), improto::ProtoError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum Packet {
    /// Sent once by a client right after it connects, to say who it is.
    Regist(Regist),
    /// A chat message from one user to another.
    Message(Message),
}

/// `{"type":"Regist","sender":"<user id>"}`: binds a connection to a user.
///
/// ```
/// use improto::{Packet, Regist};
///
/// let packet: Packet = Regist::new("7").into();
/// assert_eq!(packet.to_json()?, br#"{"type":"Regist","sender":"7"}"#);
/// # Ok::<(), improto::ProtoError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Regist {
    /// The user id (a decimal string) this connection speaks for.
    pub sender: String,
}

impl Regist {
    /// A `Regist` for user `sender`.
    pub fn new(sender: impl Into<String>) -> Self {
        Regist {
            sender: sender.into(),
        }
    }
}

/// `{"type":"Message","message":…,"sender":…,"receiver":…,"createTime":…}`: a chat message.
///
/// ```
/// use improto::Message;
///
/// let m = Message::new("1", "2", "hello");
/// assert_eq!((m.sender.as_str(), m.receiver.as_str(), m.message.as_str()), ("1", "2", "hello"));
/// assert!(m.create_time > 1.7e9); // stamped with the current time
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Message {
    /// The text. Any UTF-8; `<`, `>` and `&` need no escaping (the Go server escaped them,
    /// and both forms decode the same).
    pub message: String,
    /// The author's user id.
    pub sender: String,
    /// The recipient's user id.
    pub receiver: String,
    /// Seconds since the Unix epoch, possibly fractional. Written as a JSON integer when it
    /// has no fraction, because clients of the Go server may read it into an integer.
    #[serde(rename = "createTime", serialize_with = "time_as_json_number")]
    pub create_time: f64,
}

impl Message {
    /// A message from `sender` to `receiver`, stamped with the current time.
    pub fn new(
        sender: impl Into<String>,
        receiver: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        let create_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Message {
            message: text.into(),
            sender: sender.into(),
            receiver: receiver.into(),
            create_time,
        }
    }
}

impl From<Regist> for Packet {
    fn from(r: Regist) -> Self {
        Packet::Regist(r)
    }
}

impl From<Message> for Packet {
    fn from(m: Message) -> Self {
        Packet::Message(m)
    }
}

impl Packet {
    /// Parses one frame's payload.
    ///
    /// Errors name what is wrong: [`ProtoError::InvalidUtf8`], [`ProtoError::InvalidJson`],
    /// [`ProtoError::MissingField`] and [`ProtoError::InvalidField`] (with the field's wire
    /// name), or [`ProtoError::UnknownType`] (with the type's name).
    ///
    /// ```
    /// use improto::{Packet, ProtoError};
    ///
    /// let err = Packet::from_json(br#"{"type":"Message","sender":"1"}"#).unwrap_err();
    /// assert!(matches!(err, ProtoError::MissingField { field: "receiver" }));
    /// ```
    pub fn from_json(payload: &[u8]) -> Result<Packet, ProtoError> {
        Ok(match wire::parse::<String>(payload)? {
            Valid::Regist { sender } => Packet::Regist(Regist {
                sender: sender.into_owned(),
            }),
            Valid::Message {
                sender,
                receiver,
                message,
                create_time,
            } => Packet::Message(Message {
                message,
                sender: sender.into_owned(),
                receiver: receiver.into_owned(),
                create_time,
            }),
        })
    }

    /// Serializes the packet to its JSON payload (without the length prefix).
    ///
    /// Fails only for a value JSON cannot carry: a non-finite `createTime`.
    ///
    /// ```
    /// use improto::{Packet, Regist};
    ///
    /// assert_eq!(Packet::from(Regist::new("1")).to_json()?, br#"{"type":"Regist","sender":"1"}"#);
    /// # Ok::<(), improto::ProtoError>(())
    /// ```
    pub fn to_json(&self) -> Result<Vec<u8>, ProtoError> {
        let mut out = Vec::with_capacity(128);
        self.write_json(&mut out)?;
        Ok(out)
    }

    /// Serializes the packet into `out`; the codec uses this to write straight into its
    /// buffer. On error `out` may hold a partial payload, which the caller discards.
    pub(crate) fn write_json(&self, out: impl std::io::Write) -> Result<(), ProtoError> {
        serde_json::to_writer(out, self).map_err(|e| {
            if e.is_io() {
                ProtoError::Io(e.into())
            } else {
                ProtoError::InvalidField {
                    field: "createTime".into(),
                    reason: e.to_string(),
                }
            }
        })
    }
}

/// Integral times as JSON integers (`1700000000`), others as floats (`1700000000.25`).
fn time_as_json_number<S: Serializer>(t: &f64, s: S) -> Result<S::Ok, S::Error> {
    // Integers up to 2^53 are exact in an f64, so the integer form loses nothing.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if !t.is_finite() {
        return Err(serde::ser::Error::custom(
            "createTime must be a finite number",
        ));
    }
    if t.fract() == 0.0 && t.abs() <= EXACT {
        s.serialize_i64(*t as i64)
    } else {
        s.serialize_f64(*t)
    }
}
