//! Typed packets: the JSON objects carried inside frames, tagged by `"type"`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

use crate::ProtoError;
use crate::wire::{self, Valid};

/// `as_str`, `from_wire`, `Serialize` and `Display` for an enum of names on the wire whose
/// `Other(String)` keeps the names this library does not know (from a newer server).
macro_rules! wire_names {
    ($ty:ident { $($variant:ident => $name:literal,)+ }) => {
        impl $ty {
            /// The name as written on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $($ty::$variant => $name,)+
                    $ty::Other(name) => name,
                }
            }

            /// The value a name on the wire stands for.
            pub fn from_wire(name: &str) -> $ty {
                match name {
                    $($name => $ty::$variant,)+
                    other => $ty::Other(other.to_owned()),
                }
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// One protocol packet.
///
/// On the wire a packet is a JSON object whose `"type"` field names the variant; the
/// variant's struct supplies the other fields. Unknown fields are ignored when decoding.
///
/// Version 1 (the Go server's protocol) has only [`Regist`] and [`Message`]. A client opts in
/// to version 2 per connection with [`Regist::v2`]; it then also gets [`Registered`], [`Ack`],
/// [`Event`], [`Typing`], [`Presence`], [`Packet::Pong`] and [`ErrorPacket`] from the server,
/// and may send [`Ack`], [`Read`], [`Typing`] and [`Packet::Ping`]. See `PROTOCOL.md` for the
/// whole exchange.
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
    /// v2, both ways: a client acknowledges what it has processed; the server confirms that a
    /// message is stored.
    Ack(Ack),
    /// v2, client to server: `{"type":"Ping"}`. Answered with [`Packet::Pong`] once every
    /// earlier frame of the connection has taken effect; also keeps the connection alive.
    Ping,
    /// v2, server to client: the answer to [`Packet::Ping`].
    Pong,
    /// v2, server to client: the first frame after a successful `Regist`.
    Registered(Registered),
    /// v2, server to client: something the client sent was refused.
    Error(ErrorPacket),
    /// v2, server to client: a social event in the user's stream (a friend request, say),
    /// stored, sequenced and replayed like a message.
    Event(Event),
    /// v2, client to server: the user has read a conversation up to a position of their
    /// stream (for every one of their devices).
    Read(Read),
    /// v2, both ways: someone is typing; live only, never stored.
    Typing(Typing),
    /// v2, server to client: a friend came online or went offline; live only.
    Presence(Presence),
}

/// `{"type":"Regist","sender":"<user id>"}`: binds a connection to a user.
///
/// A version 1 `Regist` carries only the sender (and a `token`, when the server requires
/// one). A version 2 `Regist` also names the version and, when resuming, the highest `seq`
/// this device has processed.
///
/// ```
/// use improto::{Packet, Regist};
///
/// let v1: Packet = Regist::new("7").into();
/// assert_eq!(v1.to_json()?, br#"{"type":"Regist","sender":"7"}"#);
///
/// let v2: Packet = Regist::v2("7", "secret").resume_after(41).into();
/// assert_eq!(
///     v2.to_json()?,
///     br#"{"type":"Regist","sender":"7","token":"secret","version":2,"lastSeq":41}"#
/// );
/// # Ok::<(), improto::ProtoError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Regist {
    /// The user id (a decimal string) this connection speaks for.
    pub sender: String,
    /// The login token proving the connection may speak for `sender` (from `POST /login`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The protocol version: 1 (the default, written as no field at all) or 2.
    #[serde(skip_serializing_if = "is_v1")]
    pub version: u8,
    /// v2: the highest `seq` this device has already processed. The server replays every
    /// stored message after it. Without it, the server replays what the user has not
    /// acknowledged.
    #[serde(rename = "lastSeq", skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
}

fn is_v1(version: &u8) -> bool {
    *version == 1
}

impl Regist {
    /// A version 1 `Regist` for user `sender`, as the Go server's clients send it.
    pub fn new(sender: impl Into<String>) -> Self {
        Regist {
            sender: sender.into(),
            token: None,
            version: 1,
            last_seq: None,
        }
    }

    /// A version 2 `Regist` for user `sender`, authenticated by `token`.
    pub fn v2(sender: impl Into<String>, token: impl Into<String>) -> Self {
        Regist {
            token: Some(token.into()),
            version: 2,
            ..Regist::new(sender)
        }
    }

    /// Adds a token (a version 1 client on a server that requires one).
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Resumes after `last_seq`: the server replays every message with a higher `seq`.
    pub fn resume_after(mut self, last_seq: u64) -> Self {
        self.last_seq = Some(last_seq);
        self
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
///
/// // v2: a client id makes a retry safe (the server stores and delivers it once).
/// let m = m.with_id("c-123");
/// assert_eq!(m.id.as_deref(), Some("c-123"));
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
    /// v2: the sender's id for this message (at most [`MAX_CLIENT_ID_CHARS`](crate::MAX_CLIENT_ID_CHARS) characters),
    /// unique per sender. A message sent again with the same id is stored once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Set by the server on delivery (v2): the message's position in the stream of the user
    /// it is delivered to. Per user, starting at 1, without gaps. A user's stream holds the
    /// messages they received and the ones they sent (from any device), so the same message
    /// has one `seq` for its receiver and another for its sender.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
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
            id: None,
            seq: None,
        }
    }

    /// Sets the client message id used to de-duplicate retries.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
}

/// `{"type":"Ack","seq":57}` (client to server) or `{"type":"Ack","id":"c-123","seq":57}`
/// (server to client).
///
/// From a client it is cumulative: the device has processed everything in its stream up to
/// `seq`. From the server it confirms that the message with client id `id` is stored; `seq`
/// is the position of its copy in the *sender's own* stream (never the receiver's: a user
/// only ever sees positions in their own stream), and `group` names the group a group
/// message went to.
///
/// ```
/// use improto::{Ack, Packet};
///
/// assert_eq!(Packet::from(Ack::new(57)).to_json()?, br#"{"type":"Ack","seq":57}"#);
/// # Ok::<(), improto::ProtoError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Ack {
    /// The client id of the acknowledged message (server to client, when it had one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A position in the stream of the user the connection is registered as.
    pub seq: u64,
    /// The group the acknowledged message went to (server to client).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl Ack {
    /// A client's acknowledgement of everything up to `seq`.
    pub fn new(seq: u64) -> Self {
        Ack {
            id: None,
            seq,
            group: None,
        }
    }

    /// The server's confirmation that message `id` (if it had one) is stored, its copy at
    /// `seq` of the sender's own stream.
    pub fn stored(id: Option<String>, seq: u64) -> Self {
        Ack {
            id,
            seq,
            group: None,
        }
    }

    /// Names the group the acknowledged message went to.
    pub fn in_group(mut self, group: Option<String>) -> Self {
        self.group = group;
        self
    }
}

/// `{"type":"Registered","sender":"7","seq":41}`: the connection is live; `seq` is the
/// head of the user's stream (0 when it is empty). With `"oldestSeq":30`, the resume asked
/// for entries the server no longer keeps (its retention deleted them): replay starts at 30,
/// and everything between the client's position and 29 is gone for good.
///
/// ```
/// use improto::{Packet, Registered};
///
/// let frame = Packet::from(Registered::new("7", 41)).to_json()?;
/// assert_eq!(frame, br#"{"type":"Registered","sender":"7","seq":41}"#);
/// # Ok::<(), improto::ProtoError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Registered {
    /// The user the connection is now bound to.
    pub sender: String,
    /// The highest `seq` in that user's stream.
    pub seq: u64,
    /// Set only when the replay cannot start where the client asked: the oldest `seq` the
    /// server still keeps, where the replay starts instead.
    #[serde(rename = "oldestSeq", skip_serializing_if = "Option::is_none")]
    pub oldest_seq: Option<u64>,
}

impl Registered {
    /// `sender` is live, with `seq` the head of its stream.
    pub fn new(sender: impl Into<String>, seq: u64) -> Self {
        Registered {
            sender: sender.into(),
            seq,
            oldest_seq: None,
        }
    }

    /// The replay starts at `oldest`, past entries the server deleted: see
    /// [`Registered::oldest_seq`].
    ///
    /// ```
    /// use improto::{Packet, Registered};
    ///
    /// let frame = Packet::from(Registered::new("7", 41).starting_at(Some(30))).to_json()?;
    /// assert_eq!(frame, br#"{"type":"Registered","sender":"7","seq":41,"oldestSeq":30}"#);
    /// # Ok::<(), improto::ProtoError>(())
    /// ```
    pub fn starting_at(mut self, oldest: Option<u64>) -> Self {
        self.oldest_seq = oldest;
        self
    }
}

/// `{"type":"Error","code":"sender_mismatch","message":"…","id":"c-123"}`: the server
/// refused something. Codes marked "then close" end the connection.
///
/// ```
/// use improto::{ErrorCode, ErrorPacket, Packet};
///
/// let e = ErrorPacket::new(ErrorCode::RateLimited, "slow down").with_id(Some("c-9".into()));
/// assert_eq!(
///     Packet::from(e).to_json()?,
///     br#"{"type":"Error","code":"rate_limited","message":"slow down","id":"c-9"}"#
/// );
/// # Ok::<(), improto::ProtoError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ErrorPacket {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong, for humans.
    pub message: String,
    /// The client id of the packet at fault, when it had a valid one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl ErrorPacket {
    /// An error without a client id.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorPacket {
            code,
            message: message.into(),
            id: None,
        }
    }

    /// Sets the client id of the packet at fault.
    pub fn with_id(mut self, id: Option<String>) -> Self {
        self.id = id;
        self
    }
}

/// The `code` of an [`ErrorPacket`].
///
/// ```
/// use improto::ErrorCode;
///
/// assert_eq!(ErrorCode::SenderMismatch.as_str(), "sender_mismatch");
/// assert_eq!(ErrorCode::from_wire("too_large"), ErrorCode::TooLarge);
/// assert!(ErrorCode::TooLarge.closes());
/// // Codes from a newer server are kept, not refused.
/// assert_eq!(ErrorCode::from_wire("new_thing"), ErrorCode::Other("new_thing".into()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame is not a JSON object (or not UTF-8).
    BadJson,
    /// A field is missing, of the wrong type or out of range; the message names it.
    BadPacket,
    /// The `type` names no packet the server knows.
    UnknownType,
    /// A `Message` (or `Ack`) before `Regist`.
    NotRegistered,
    /// The `Regist` had no valid token for its sender. Then close.
    Unauthorized,
    /// A `Message` whose `sender` is not the user the connection registered as.
    SenderMismatch,
    /// A length prefix over the server's limit. Then close.
    TooLarge,
    /// Over the connection's message rate; send it again later (same `id`).
    RateLimited,
    /// The server's or this user's connection limit is reached. Then close.
    TooManyConnections,
    /// A `Message` to a user who is not a friend, on a server that relays only between
    /// friends (`--relay-policy friends`). Not stored.
    NotFriends,
    /// A `Message` (or `Typing`) to a group the sender is not a member of. Not stored.
    NotMember,
    /// The server could not store the `Message` now (its database is away): nothing was
    /// stored. Send it again later, same `id`.
    Unavailable,
    /// A code this library does not know (from a newer server).
    Other(String),
}

wire_names!(ErrorCode {
    BadJson => "bad_json",
    BadPacket => "bad_packet",
    UnknownType => "unknown_type",
    NotRegistered => "not_registered",
    Unauthorized => "unauthorized",
    SenderMismatch => "sender_mismatch",
    TooLarge => "too_large",
    RateLimited => "rate_limited",
    TooManyConnections => "too_many_connections",
    NotFriends => "not_friends",
    NotMember => "not_member",
    Unavailable => "unavailable",
});

impl ErrorCode {
    /// True for the codes after which the server closes the connection.
    pub fn closes(&self) -> bool {
        matches!(
            self,
            ErrorCode::Unauthorized | ErrorCode::TooLarge | ErrorCode::TooManyConnections
        )
    }

    /// The code for a packet the reader could not accept, or `None` for errors that are not
    /// about a packet (I/O, a truncated stream).
    pub fn for_error(e: &ProtoError) -> Option<ErrorCode> {
        Some(match e {
            ProtoError::InvalidUtf8 | ProtoError::InvalidJson(_) => ErrorCode::BadJson,
            ProtoError::MissingField { .. } | ProtoError::InvalidField { .. } => {
                ErrorCode::BadPacket
            }
            ProtoError::UnknownType(_) => ErrorCode::UnknownType,
            ProtoError::FrameTooLarge { .. } => ErrorCode::TooLarge,
            _ => return None,
        })
    }
}

/// `{"type":"Event","kind":"friend_request","user":"9","name":"Neo","message":"hi"}`: an
/// event in the user's stream (friends, groups, read receipts). The server stores it like a
/// message, so it carries a `seq` on delivery and is replayed, acknowledged and never lost.
///
/// ```
/// use improto::{Event, EventKind, Packet};
///
/// let json = br#"{"seq":12,"type":"Event","kind":"friend_accepted","user":"9","name":"Neo"}"#;
/// let Packet::Event(e) = Packet::from_json(json)? else { panic!() };
/// assert_eq!((e.kind, e.user.as_deref(), e.seq), (EventKind::FriendAccepted, Some("9"), Some(12)));
///
/// let made = Event::new(EventKind::FriendRequest, "9", "Neo").with_message("hi!");
/// assert_eq!(
///     Packet::from(made).to_json()?,
///     br#"{"type":"Event","kind":"friend_request","user":"9","name":"Neo","message":"hi!"}"#
/// );
/// # Ok::<(), improto::ProtoError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The other user the event is about (who asked, who accepted, who added you to a
    /// group, who read your messages, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// That user's name, so a client can show the event without a lookup; for
    /// `group_added` and `group_renamed`, the group's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free text that came with it (a friend request's message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Set by the server on delivery: the event's position in the user's stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The group the event is about (`"g12"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// A read receipt's reach: `user` has read every message you sent them (in `group`,
    /// if set) up to this `seq` of *your* stream.
    #[serde(rename = "upTo", skip_serializing_if = "Option::is_none")]
    pub up_to: Option<u64>,
    /// `member_left` of a group's owner: the new owner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl Event {
    /// An event of `kind` about `user`, whose name is `name`.
    pub fn new(kind: EventKind, user: impl Into<String>, name: impl Into<String>) -> Self {
        Event {
            kind,
            user: Some(user.into()),
            name: Some(name.into()),
            message: None,
            seq: None,
            group: None,
            up_to: None,
            owner: None,
        }
    }

    /// An event of `kind` about group `group`, done by `user` (or to them).
    ///
    /// ```
    /// use improto::{Event, EventKind, Packet};
    ///
    /// let e = Event::group(EventKind::MemberJoined, "g12", "9");
    /// assert_eq!(
    ///     Packet::from(e).to_json()?,
    ///     br#"{"type":"Event","kind":"member_joined","user":"9","group":"g12"}"#
    /// );
    /// # Ok::<(), improto::ProtoError>(())
    /// ```
    pub fn group(kind: EventKind, group: impl Into<String>, user: impl Into<String>) -> Self {
        Event {
            kind,
            user: Some(user.into()),
            name: None,
            message: None,
            seq: None,
            group: Some(group.into()),
            up_to: None,
            owner: None,
        }
    }

    /// Adds the text that came with the event.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Adds a name (a user's, or a group's: see [`Event::name`]).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// The `kind` of an [`Event`].
///
/// ```
/// use improto::EventKind;
///
/// assert_eq!(EventKind::FriendRequest.as_str(), "friend_request");
/// assert_eq!(EventKind::from_wire("friend_removed"), EventKind::FriendRemoved);
/// // Kinds from a newer server are kept, not refused.
/// assert_eq!(EventKind::from_wire("new_thing"), EventKind::Other("new_thing".into()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// `user` asks to be your friend (with their `message`, if any).
    FriendRequest,
    /// You and `user` are friends now: they accepted your request or you accepted theirs.
    FriendAccepted,
    /// `user` ended your friendship.
    FriendRemoved,
    /// `user` added you to `group` (or made it with you in it); `name` is the group's.
    GroupAdded,
    /// `user` removed you from `group` (you, when you left).
    GroupRemoved,
    /// `user` joined a `group` you are in.
    MemberJoined,
    /// `user` left a `group` you are in (or was removed); `owner`, when they owned it.
    MemberLeft,
    /// `user` renamed `group` to `name`.
    GroupRenamed,
    /// A read receipt: `user` has read your messages up to `upTo` of your stream (in
    /// `group`, if set).
    Read,
    /// A kind this library does not know (from a newer server).
    Other(String),
}

wire_names!(EventKind {
    FriendRequest => "friend_request",
    FriendAccepted => "friend_accepted",
    FriendRemoved => "friend_removed",
    GroupAdded => "group_added",
    GroupRemoved => "group_removed",
    MemberJoined => "member_joined",
    MemberLeft => "member_left",
    GroupRenamed => "group_renamed",
    Read => "read",
});

/// `{"type":"Read","peer":"9","seq":57}`: the user has read the conversation with `peer` (a
/// user, or a group: `"g12"`) up to position `seq` of their own stream. The server keeps
/// one read position per conversation for all of the user's devices; it only moves forward,
/// and tells the senders of the newly read messages (an `Event` of kind `read`).
///
/// ```
/// use improto::{Packet, Read};
///
/// assert_eq!(Packet::from(Read::new("9", 57)).to_json()?, br#"{"type":"Read","peer":"9","seq":57}"#);
/// # Ok::<(), improto::ProtoError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Read {
    /// The other side of the conversation: a user, or a group.
    pub peer: String,
    /// A position in the reader's own stream: everything from `peer` up to it is read.
    pub seq: u64,
}

impl Read {
    /// The conversation with `peer` is read up to `seq`.
    pub fn new(peer: impl Into<String>, seq: u64) -> Self {
        Read {
            peer: peer.into(),
            seq,
        }
    }
}

/// `{"type":"Typing","receiver":"9"}`: the user is typing to `receiver` (a user, or a group:
/// `"g12"`). The server passes it on live, with `sender` set, to the receiver's connections
/// (or every member's); it is never stored and has no `seq`.
///
/// ```
/// use improto::{Packet, Typing};
///
/// assert_eq!(Packet::from(Typing::to("g12")).to_json()?, br#"{"type":"Typing","receiver":"g12"}"#);
/// # Ok::<(), improto::ProtoError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Typing {
    /// Who is typing (set by the server).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// To whom: a user, or a group.
    pub receiver: String,
}

impl Typing {
    /// The user is typing to `receiver`.
    pub fn to(receiver: impl Into<String>) -> Self {
        Typing {
            sender: None,
            receiver: receiver.into(),
        }
    }

    /// `sender` is typing to `receiver` (what the server sends).
    pub fn from(sender: impl Into<String>, receiver: impl Into<String>) -> Self {
        Typing {
            sender: Some(sender.into()),
            receiver: receiver.into(),
        }
    }
}

/// `{"type":"Presence","user":"7","online":true}`: a friend's first connection registered
/// (`online`), or their last one closed. Live only: never stored, no `seq`.
///
/// ```
/// use improto::{Packet, Presence};
///
/// let json = br#"{"type":"Presence","user":"7","online":false}"#;
/// assert_eq!(Packet::from_json(json)?, Presence::new("7", false).into());
/// # Ok::<(), improto::ProtoError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Presence {
    /// The friend.
    pub user: String,
    /// Whether they have a connection now.
    pub online: bool,
}

impl Presence {
    /// `user` is `online` (or not).
    pub fn new(user: impl Into<String>, online: bool) -> Self {
        Presence {
            user: user.into(),
            online,
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

impl From<Ack> for Packet {
    fn from(a: Ack) -> Self {
        Packet::Ack(a)
    }
}

impl From<Registered> for Packet {
    fn from(r: Registered) -> Self {
        Packet::Registered(r)
    }
}

impl From<ErrorPacket> for Packet {
    fn from(e: ErrorPacket) -> Self {
        Packet::Error(e)
    }
}

impl From<Event> for Packet {
    fn from(e: Event) -> Self {
        Packet::Event(e)
    }
}

impl From<Read> for Packet {
    fn from(r: Read) -> Self {
        Packet::Read(r)
    }
}

impl From<Typing> for Packet {
    fn from(t: Typing) -> Self {
        Packet::Typing(t)
    }
}

impl From<Presence> for Packet {
    fn from(p: Presence) -> Self {
        Packet::Presence(p)
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
        let own = |s: std::borrow::Cow<'_, str>| s.into_owned();
        Ok(match wire::parse::<String>(payload)? {
            Valid::Regist {
                sender,
                token,
                version,
                last_seq,
            } => Packet::Regist(Regist {
                sender: own(sender),
                token: token.map(own),
                version,
                last_seq,
            }),
            Valid::Message {
                sender,
                receiver,
                message,
                create_time,
                id,
                seq,
            } => Packet::Message(Message {
                message,
                sender: own(sender),
                receiver: own(receiver),
                create_time,
                id: id.map(own),
                seq,
            }),
            Valid::Ack { id, seq, group } => Packet::Ack(Ack {
                id: id.map(own),
                seq,
                group: group.map(own),
            }),
            Valid::Ping => Packet::Ping,
            Valid::Pong => Packet::Pong,
            Valid::Registered {
                sender,
                seq,
                oldest_seq,
            } => Packet::Registered(Registered {
                sender: own(sender),
                seq,
                oldest_seq,
            }),
            Valid::Error { code, message, id } => Packet::Error(ErrorPacket {
                code: ErrorCode::from_wire(&code),
                message,
                id: id.map(own),
            }),
            Valid::Event {
                kind,
                user,
                name,
                message,
                seq,
                group,
                up_to,
                owner,
            } => Packet::Event(Event {
                kind: EventKind::from_wire(&kind),
                user: user.map(own),
                name: name.map(own),
                message,
                seq,
                group: group.map(own),
                up_to,
                owner: owner.map(own),
            }),
            Valid::Read { peer, seq } => Packet::Read(Read {
                peer: own(peer),
                seq,
            }),
            Valid::Typing { sender, receiver } => Packet::Typing(Typing {
                sender: sender.map(own),
                receiver: own(receiver),
            }),
            Valid::Presence { user, online } => Packet::Presence(Presence {
                user: own(user),
                online,
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

    /// Serializes the packet into `out` (a frame buffer, say, without a copy of its own). On
    /// error `out` may hold a partial payload, which the caller discards.
    ///
    /// ```
    /// use improto::Packet;
    ///
    /// let mut out = Vec::new();
    /// Packet::Pong.write_json(&mut out)?;
    /// assert_eq!(out, br#"{"type":"Pong"}"#);
    /// # Ok::<(), improto::ProtoError>(())
    /// ```
    pub fn write_json(&self, out: impl std::io::Write) -> Result<(), ProtoError> {
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
