//! The one JSON parser behind both [`Packet::from_json`](crate::Packet::from_json) and
//! [`Envelope::peek`](crate::Envelope::peek).
//!
//! A frame is deserialized in a single pass into [`Fields`], a flat struct holding every field
//! any packet type can carry, each optional. Which fields a type requires is then checked in
//! one place ([`Fields::validate`]), so the full decode and the allocation-free peek can never
//! disagree about what a valid packet is. They differ only in how the message text is held:
//! the full decode takes it as a `String`, the peek checks that it is a string and drops it.
//!
//! Unknown fields are skipped without allocating, as later protocol versions add fields.
//!
//! Two speeds, one judge: a hand-written scanner ([`crate::scan`]) reads ordinary frames about
//! twice as fast as serde's derived code and answers only when it is sure; anything else goes
//! to serde_json, which decides validity and words the errors. On failure the frame is parsed
//! once more, with path tracking, only to name the field at fault; the happy path pays nothing
//! for good error messages.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};

use crate::ProtoError;

/// Every field a packet may carry. Absent and `null` both read as `None`.
#[derive(serde::Deserialize)]
#[cfg_attr(any(test, fuzzing), derive(Debug, PartialEq))]
#[serde(bound(deserialize = "'de: 'a, M: Deserialize<'de>"))]
pub(crate) struct Fields<'a, M> {
    #[serde(rename = "type", borrow, default)]
    pub(crate) ty: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub(crate) sender: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub(crate) receiver: Option<Str<'a>>,
    /// A `Message`'s text, or an `Error`'s description.
    #[serde(default = "none")]
    pub(crate) message: Option<M>,
    #[serde(rename = "createTime", default)]
    pub(crate) create_time: Option<f64>,
    #[serde(borrow, default)]
    pub(crate) token: Option<Str<'a>>,
    #[serde(default)]
    pub(crate) version: Option<u64>,
    #[serde(rename = "lastSeq", default)]
    pub(crate) last_seq: Option<u64>,
    /// The oldest `seq` still stored, when a resume asked for older (`Registered`).
    #[serde(rename = "oldestSeq", default)]
    pub(crate) oldest_seq: Option<u64>,
    /// The client's message id (`Message`, and echoed in `Ack` and `Error`).
    #[serde(borrow, default)]
    pub(crate) id: Option<Str<'a>>,
    #[serde(default)]
    pub(crate) seq: Option<u64>,
    #[serde(borrow, default)]
    pub(crate) code: Option<Str<'a>>,
    /// An `Event`'s kind.
    #[serde(borrow, default)]
    pub(crate) kind: Option<Str<'a>>,
    /// The user an `Event` is about.
    #[serde(borrow, default)]
    pub(crate) user: Option<Str<'a>>,
    /// That user's name (`Event`).
    #[serde(borrow, default)]
    pub(crate) name: Option<Str<'a>>,
    /// The other side of a conversation, a user or a group (`Read`).
    #[serde(borrow, default)]
    pub(crate) peer: Option<Str<'a>>,
    /// The group a packet is about (`Ack`, `Event`).
    #[serde(borrow, default)]
    pub(crate) group: Option<Str<'a>>,
    /// How far a read receipt reaches, in its receiver's stream (`Event`).
    #[serde(rename = "upTo", default)]
    pub(crate) up_to: Option<u64>,
    /// A group's owner (`Event`).
    #[serde(borrow, default)]
    pub(crate) owner: Option<Str<'a>>,
    /// Whether a user is online (`Presence`).
    #[serde(default)]
    pub(crate) online: Option<bool>,
}

fn none<M>() -> Option<M> {
    None
}

impl<M> Default for Fields<'_, M> {
    fn default() -> Self {
        Fields {
            ty: None,
            sender: None,
            receiver: None,
            message: None,
            create_time: None,
            token: None,
            version: None,
            last_seq: None,
            oldest_seq: None,
            id: None,
            seq: None,
            code: None,
            kind: None,
            user: None,
            name: None,
            peer: None,
            group: None,
            up_to: None,
            owner: None,
            online: None,
        }
    }
}

/// A string field's representation: built from an unescaped slice of the frame by the
/// scanner, or by serde when escapes need decoding.
pub(crate) trait Text<'a>: Deserialize<'a> {
    fn plain(s: &'a str) -> Self;
}

impl<'a> Text<'a> for String {
    fn plain(s: &'a str) -> Self {
        s.to_owned()
    }
}

impl<'a> Text<'a> for Str<'a> {
    fn plain(s: &'a str) -> Self {
        Str(Cow::Borrowed(s))
    }
}

impl<'a> Text<'a> for SkipStr {
    fn plain(_: &'a str) -> Self {
        SkipStr
    }
}

/// A packet whose type is known and whose required fields are all present and valid.
pub(crate) enum Valid<'a, M> {
    Regist {
        sender: Cow<'a, str>,
        token: Option<Cow<'a, str>>,
        version: u8,
        last_seq: Option<u64>,
    },
    Message {
        sender: Cow<'a, str>,
        receiver: Cow<'a, str>,
        message: M,
        create_time: f64,
        id: Option<Cow<'a, str>>,
        seq: Option<u64>,
    },
    Ack {
        id: Option<Cow<'a, str>>,
        seq: u64,
        group: Option<Cow<'a, str>>,
    },
    Ping,
    Pong,
    Registered {
        sender: Cow<'a, str>,
        seq: u64,
        oldest_seq: Option<u64>,
    },
    Error {
        code: Cow<'a, str>,
        message: M,
        id: Option<Cow<'a, str>>,
    },
    Event {
        kind: Cow<'a, str>,
        user: Option<Cow<'a, str>>,
        name: Option<Cow<'a, str>>,
        message: Option<M>,
        seq: Option<u64>,
        group: Option<Cow<'a, str>>,
        up_to: Option<u64>,
        owner: Option<Cow<'a, str>>,
    },
    Read {
        peer: Cow<'a, str>,
        seq: u64,
    },
    Typing {
        sender: Option<Cow<'a, str>>,
        receiver: Cow<'a, str>,
    },
    Presence {
        user: Cow<'a, str>,
        online: bool,
    },
}

/// The protocol versions this library speaks; `Regist` without `version` means 1.
pub const VERSIONS: [u8; 2] = [1, 2];

/// The longest client message id, in characters.
pub const MAX_CLIENT_ID_CHARS: usize = 64;

/// For the fuzz targets: true unless the fast path accepts `frame` with fields other than
/// serde's (which would be a bug in `scan`).
#[cfg(fuzzing)]
pub fn fast_path_agrees(frame: &[u8]) -> bool {
    match crate::scan::scan::<String>(frame) {
        None => true,
        Some(fast) => serde_json::from_slice::<Fields<'_, String>>(frame).ok() == Some(fast),
    }
}

/// Parses `frame` and checks the fields its `type` requires.
pub(crate) fn parse<'a, M: Text<'a>>(frame: &'a [u8]) -> Result<Valid<'a, M>, ProtoError> {
    if let Some(fields) = crate::scan::scan(frame) {
        return fields.validate();
    }
    // serde's derived structs also accept JSON arrays (fields by position); a packet is an
    // object, so refuse anything else before serde sees it.
    if frame.trim_ascii_start().first() != Some(&b'{') {
        return Err(not_an_object(frame));
    }
    match serde_json::from_slice::<Fields<'a, M>>(frame) {
        Ok(fields) => fields.validate(),
        Err(err) => Err(diagnose::<M>(frame, err)),
    }
}

impl<'a, M> Fields<'a, M> {
    fn validate(self) -> Result<Valid<'a, M>, ProtoError> {
        let kind = required(self.ty, "type")?;
        let text = |m: Option<M>| m.ok_or(ProtoError::MissingField { field: "message" });
        let seq = |s: Option<u64>| s.ok_or(ProtoError::MissingField { field: "seq" });
        match &*kind {
            "Regist" => Ok(Valid::Regist {
                sender: required(self.sender, "sender")?,
                token: self.token.map(|t| t.0),
                version: version(self.version)?,
                last_seq: self.last_seq,
            }),
            "Message" => Ok(Valid::Message {
                sender: required(self.sender, "sender")?,
                receiver: required(self.receiver, "receiver")?,
                message: text(self.message)?,
                create_time: self.create_time.ok_or(ProtoError::MissingField {
                    field: "createTime",
                })?,
                id: client_id(self.id)?,
                seq: self.seq,
            }),
            "Ack" => Ok(Valid::Ack {
                id: client_id(self.id)?,
                seq: seq(self.seq)?,
                group: self.group.map(|s| s.0),
            }),
            "Ping" => Ok(Valid::Ping),
            "Pong" => Ok(Valid::Pong),
            "Registered" => Ok(Valid::Registered {
                sender: required(self.sender, "sender")?,
                seq: seq(self.seq)?,
                oldest_seq: self.oldest_seq,
            }),
            "Error" => Ok(Valid::Error {
                code: required(self.code, "code")?,
                message: text(self.message)?,
                id: client_id(self.id)?,
            }),
            "Event" => Ok(Valid::Event {
                kind: required(self.kind, "kind")?,
                user: self.user.map(|s| s.0),
                name: self.name.map(|s| s.0),
                message: self.message,
                seq: self.seq,
                group: self.group.map(|s| s.0),
                up_to: self.up_to,
                owner: self.owner.map(|s| s.0),
            }),
            "Read" => Ok(Valid::Read {
                peer: required(self.peer, "peer")?,
                seq: seq(self.seq)?,
            }),
            "Typing" => Ok(Valid::Typing {
                sender: self.sender.map(|s| s.0),
                receiver: required(self.receiver, "receiver")?,
            }),
            "Presence" => Ok(Valid::Presence {
                user: required(self.user, "user")?,
                online: self
                    .online
                    .ok_or(ProtoError::MissingField { field: "online" })?,
            }),
            _ => Err(ProtoError::UnknownType(kind.into_owned())),
        }
    }
}

fn required<'a>(value: Option<Str<'a>>, field: &'static str) -> Result<Cow<'a, str>, ProtoError> {
    value.map(|s| s.0).ok_or(ProtoError::MissingField { field })
}

fn version(v: Option<u64>) -> Result<u8, ProtoError> {
    match v {
        None => Ok(1),
        Some(v) => VERSIONS
            .into_iter()
            .find(|&known| u64::from(known) == v)
            .ok_or_else(|| ProtoError::InvalidField {
                field: "version".into(),
                reason: format!("unsupported protocol version {v} (known: 1, 2)"),
            }),
    }
}

fn client_id(id: Option<Str<'_>>) -> Result<Option<Cow<'_, str>>, ProtoError> {
    match id {
        Some(Str(id)) if id.chars().count() > MAX_CLIENT_ID_CHARS => {
            Err(ProtoError::InvalidField {
                field: "id".into(),
                reason: format!("longer than {MAX_CLIENT_ID_CHARS} characters"),
            })
        }
        id => Ok(id.map(|s| s.0)),
    }
}

/// The `id` of a packet that may be invalid otherwise, when that id itself is a valid client
/// id: what a server echoes in the `Error` about that packet. Cold path only.
pub(crate) fn lenient_client_id(frame: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct IdOnly<'a> {
        #[serde(borrow, default)]
        id: Option<Str<'a>>,
    }
    let only: IdOnly<'_> = serde_json::from_slice(frame).ok()?;
    client_id(only.id).ok()?.map(Cow::into_owned)
}

/// Turns a failed parse into the most precise error we can name.
#[cold]
fn diagnose<'a, M: Deserialize<'a>>(frame: &'a [u8], err: serde_json::Error) -> ProtoError {
    if std::str::from_utf8(frame).is_err() {
        return ProtoError::InvalidUtf8;
    }
    if !err.is_data() {
        return ProtoError::InvalidJson(err.to_string());
    }
    // A data error: valid JSON of the wrong shape. Parse again, tracking the path, to name
    // the field at fault.
    let mut de = serde_json::Deserializer::from_slice(frame);
    match serde_path_to_error::deserialize::<_, Fields<'a, M>>(&mut de) {
        Err(err) if err.path().iter().next().is_some() => ProtoError::InvalidField {
            field: err.path().to_string(),
            reason: strip_position(&err.inner().to_string()),
        },
        // No field path: a duplicated key, say.
        _ => ProtoError::InvalidJson(err.to_string()),
    }
}

#[cold]
fn not_an_object(frame: &[u8]) -> ProtoError {
    if std::str::from_utf8(frame).is_err() {
        return ProtoError::InvalidUtf8;
    }
    match serde_json::from_slice::<serde::de::IgnoredAny>(frame) {
        Err(err) => ProtoError::InvalidJson(err.to_string()),
        Ok(_) => ProtoError::InvalidJson("a packet must be a JSON object".into()),
    }
}

/// serde_json appends " at line L column C" to its messages; for a one-line frame whose field
/// we already name, that is noise.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// A string that borrows from the frame when it can (no escapes) and owns otherwise.
///
/// `Option<Cow<str>>` always deserializes to `Cow::Owned`, so the envelope peek would allocate
/// for every id; this wrapper keeps the borrow through the `Option`.
#[cfg_attr(any(test, fuzzing), derive(Debug, PartialEq))]
pub(crate) struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// Checks that a field is a string without keeping (or allocating) it: the envelope peek uses
/// it for the message text.
pub(crate) struct SkipStr;

impl<'de> Deserialize<'de> for SkipStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SkipStr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<SkipStr, E> {
                Ok(SkipStr)
            }
        }
        d.deserialize_str(V)
    }
}
