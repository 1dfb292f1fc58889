//! The one error type of the protocol layer.

use std::io;

/// Everything that can go wrong while framing, parsing or sending packets.
///
/// Errors fall into two families, told apart by [`ProtoError::is_fatal`]:
///
/// * **Packet errors** ([`InvalidUtf8`](Self::InvalidUtf8), [`InvalidJson`](Self::InvalidJson),
///   [`MissingField`](Self::MissingField), [`InvalidField`](Self::InvalidField),
///   [`UnknownType`](Self::UnknownType)) concern one complete frame, which has already been
///   consumed from the stream. The reader can carry on with the next frame, so a server can
///   reject one bad packet and keep the connection.
/// * **Stream errors** ([`FrameTooLarge`](Self::FrameTooLarge), [`Truncated`](Self::Truncated),
///   [`Io`](Self::Io)) leave the byte stream at an unknown position; the connection must close.
/// * **Exchange errors** ([`Refused`](Self::Refused), [`Unexpected`](Self::Unexpected)) come from
///   the client's v2 helpers: the server said no, or said something else. `Refused` is fatal
///   exactly when the server closes after that error code.
///
/// ```
/// use improto::{Packet, ProtoError};
///
/// match Packet::from_json(br#"{"type":"Regist","sender":7}"#) {
///     Err(ProtoError::InvalidField { field, .. }) => assert_eq!(field, "sender"),
///     other => panic!("{other:?}"),
/// }
/// let err = Packet::from_json(br#"{"type":"Teleport"}"#).unwrap_err();
/// assert_eq!(err.to_string(), "unknown packet type `Teleport`");
/// assert!(!err.is_fatal()); // one bad packet; the stream goes on
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The length prefix announced more payload bytes than the configured maximum.
    /// Judged on the prefix alone, before any payload is read or buffered.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The length the prefix declared (or the encoded size, when sending).
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The stream ended in the middle of a frame. The partial frame is discarded, never parsed.
    #[error("stream ended inside a frame ({buffered} bytes of it received)")]
    Truncated {
        /// How many bytes of the unfinished frame had arrived.
        buffered: usize,
    },
    /// The frame's payload is not valid UTF-8.
    #[error("frame is not valid UTF-8")]
    InvalidUtf8,
    /// The frame's payload is not a JSON object.
    #[error("frame is not a valid JSON object: {0}")]
    InvalidJson(String),
    /// A field the packet type requires is absent (or `null`).
    #[error("packet is missing the required field `{field}`")]
    MissingField {
        /// The field's name on the wire, e.g. `"receiver"`.
        field: &'static str,
    },
    /// A field is present but has the wrong JSON type or an unacceptable value.
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField {
        /// The field's name on the wire, e.g. `"createTime"`.
        field: String,
        /// What is wrong with it, for humans.
        reason: String,
    },
    /// The `type` tag names no packet this library knows.
    #[error("unknown packet type `{0}`")]
    UnknownType(String),
    /// The server answered with an `Error` packet where a reply was expected (during the v2
    /// handshake, say).
    #[error("refused by the server ({code}): {message}")]
    Refused {
        /// The error's code.
        code: crate::ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The peer sent a valid packet that makes no sense at this point (a `Message` where the
    /// v2 handshake expects `Registered`, say: a server that speaks only version 1).
    #[error("unexpected packet: {0}")]
    Unexpected(String),
    /// The underlying socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

impl ProtoError {
    /// True when the byte stream can no longer be trusted and the connection must close;
    /// false when only one (already consumed) frame was bad and reading may go on.
    pub fn is_fatal(&self) -> bool {
        match self {
            Self::FrameTooLarge { .. } | Self::Truncated { .. } | Self::Io(_) => true,
            Self::Refused { code, .. } => code.closes(),
            _ => false,
        }
    }
}
