//! # improto
//!
//! The wire protocol of imserver, for servers and client apps alike: length-prefixed JSON
//! frames, typed packets, a borrowed envelope peek for relays, and an async tokio client.
//!
//! ## The wire format
//!
//! A TCP stream of frames, the same in both directions. A frame is a 4-byte big-endian
//! unsigned length `N`, then `N` bytes of UTF-8 JSON: one object tagged by `"type"`.
//!
//! ```text
//! 00 00 00 1e  {"type":"Regist","sender":"1"}
//! ```
//!
//! Unknown fields are ignored, so later protocol versions can add fields.
//!
//! ## Example
//!
//! ```
//! use bytes::BytesMut;
//! use improto::{Message, Packet, PacketCodec};
//! use tokio_util::codec::{Decoder, Encoder};
//!
//! let mut codec = PacketCodec::new();
//! let mut wire = BytesMut::new();
//! codec.encode(Message::new("1", "2", "你好 <3").into(), &mut wire)?;
//! match codec.decode(&mut wire)? {
//!     Some(Packet::Message(m)) => assert_eq!(m.message, "你好 <3"),
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok::<(), improto::ProtoError>(())
//! ```
//!
//! For a networked client see [`Client`].
//!
//! ## Layout
//!
//! - `packet`: [`Packet`] and its variants: [`Regist`] and [`Message`] (v1 and v2), and the
//!   v2 additions [`Ack`], [`Registered`], [`Event`] (with [`EventKind`]), [`Read`] and
//!   [`ErrorPacket`] (with [`ErrorCode`]); JSON in and out.
//! - `codec`: [`FrameCodec`] (raw payloads as `Bytes`, built on tokio-util's
//!   `LengthDelimitedCodec`) and [`PacketCodec`] (frames plus JSON).
//! - `envelope`: [`Envelope::peek`], the type, sender and receiver of a frame, borrowed, for
//!   relays that forward the original bytes, and [`write_stamped`], which adds the `seq` to
//!   such a frame without re-encoding it.
//! - `wire` (private): the one parser and validator behind both `Packet::from_json` and
//!   `Envelope::peek`; `scan` (private) is its fast path for ordinary frames, with serde
//!   as the judge of everything else.
//! - `client`: [`Client`] and its halves [`ClientSender`] and [`ClientReceiver`], over TCP
//!   or (feature `tls`) TLS.
//! - `reconnect`: [`Reconnecting`], a client that stays connected and keeps the user's
//!   stream for the app (resume, resend, acknowledge, each entry once), with its state in a
//!   [`ClientState`] such as [`FileState`].
//! - `error`: [`ProtoError`].

#![warn(missing_docs)]

mod client;
mod codec;
mod envelope;
mod error;
mod packet;
mod reconnect;
mod scan;
mod wire;

pub use client::{Client, ClientReceiver, ClientSender};
pub use codec::{DEFAULT_MAX_FRAME_LENGTH, FrameCodec, PacketCodec};
pub use envelope::{Envelope, PacketKind, SEQ_STAMP_MAX, write_stamped};
pub use error::ProtoError;
pub use packet::{
    Ack, ErrorCode, ErrorPacket, Event, EventKind, Message, Packet, Presence, Read, Regist,
    Registered, Typing,
};
#[cfg(feature = "tls")]
pub use reconnect::TlsTarget;
pub use reconnect::{
    ClientState, FileState, Item, MemoryState, MessageSender, ReconnectOptions, Reconnecting,
    Saved, Stopped,
};
#[cfg(fuzzing)]
#[doc(hidden)]
pub use wire::fast_path_agrees;
pub use wire::{MAX_CLIENT_ID_CHARS, VERSIONS};

/// rustls, as [`Client::connect_tls`] uses it: for its `RootCertStore` and certificate types.
#[cfg(feature = "tls")]
pub use tokio_rustls::rustls;
