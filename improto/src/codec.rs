//! Framing: a 4-byte big-endian payload length, then that many bytes of JSON.
//!
//! [`FrameCodec`] moves raw payloads (`Bytes`) and is what relays and [`Client`](crate::Client)
//! read with; [`PacketCodec`] adds JSON (de)serialization on top for apps that want typed
//! packets from a `Framed` stream.

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use crate::{Packet, ProtoError};

/// The default largest payload accepted or sent: 1 MiB.
///
/// ```
/// assert_eq!(improto::PacketCodec::new().max_frame_length(), improto::DEFAULT_MAX_FRAME_LENGTH);
/// ```
pub const DEFAULT_MAX_FRAME_LENGTH: usize = 1024 * 1024;

/// Bytes in the length prefix.
const HEAD: usize = 4;

/// Frames raw payloads: decodes to [`Bytes`] (one payload, prefix removed), encodes [`Bytes`].
///
/// Built on [`LengthDelimitedCodec`], whose defaults (4-byte big-endian length counting the
/// payload only) are exactly this protocol. One thing is added in front of it:
/// `LengthDelimitedCodec` reserves buffer space for the whole declared length as soon as it
/// reads a prefix, so a peer could make every idle connection hold up to the maximum frame
/// size without sending it. This codec hands bytes to it only once a whole frame has arrived
/// (or the prefix is over the limit), so memory grows only with bytes actually received.
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use improto::FrameCodec;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = FrameCodec::new();
/// let mut buf = BytesMut::new();
/// codec.encode(Bytes::from_static(b"{}"), &mut buf)?;
/// assert_eq!(&buf[..], b"\0\0\0\x02{}");
/// assert_eq!(codec.decode(&mut buf)?, Some(Bytes::from_static(b"{}")));
/// # Ok::<(), improto::ProtoError>(())
/// ```
#[derive(Debug)]
pub struct FrameCodec {
    inner: LengthDelimitedCodec,
}

impl FrameCodec {
    /// A codec with the default limit, [`DEFAULT_MAX_FRAME_LENGTH`].
    pub fn new() -> Self {
        Self::with_max_frame_length(DEFAULT_MAX_FRAME_LENGTH)
    }

    /// A codec accepting payloads of at most `max` bytes; a prefix of exactly `max` is fine,
    /// `max + 1` is [`ProtoError::FrameTooLarge`].
    pub fn with_max_frame_length(max: usize) -> Self {
        let inner = LengthDelimitedCodec::builder()
            .length_field_type::<u32>()
            .big_endian()
            .max_frame_length(max)
            .new_codec();
        FrameCodec { inner }
    }

    /// The limit in force, in payload bytes.
    pub fn max_frame_length(&self) -> usize {
        self.inner.max_frame_length()
    }

    fn too_large(&self, len: usize) -> ProtoError {
        ProtoError::FrameTooLarge {
            len,
            max: self.max_frame_length(),
        }
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = ProtoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, ProtoError> {
        let Some(head) = src.first_chunk::<HEAD>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*head) as usize;
        if len > self.max_frame_length() {
            return Err(self.too_large(len));
        }
        if src.len() < HEAD + len {
            // Wait for the rest without reserving room for it (see the type's docs).
            return Ok(None);
        }
        Ok(self.inner.decode(src)?.map(BytesMut::freeze))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, ProtoError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(ProtoError::Truncated {
                buffered: src.len(),
            }),
        }
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = ProtoError;

    fn encode(&mut self, payload: Bytes, dst: &mut BytesMut) -> Result<(), ProtoError> {
        if payload.len() > self.max_frame_length() {
            return Err(self.too_large(payload.len()));
        }
        Ok(self.inner.encode(payload, dst)?)
    }
}

/// Frames typed [`Packet`]s: [`FrameCodec`] plus JSON.
///
/// A packet error (bad JSON, missing field, unknown type) is returned after its frame has been
/// consumed, so calling `decode` again continues with the next frame. Note that a
/// `tokio_util::codec::FramedRead` ends its stream after any decoder error; to read on past a
/// bad packet, frame with [`FrameCodec`] and parse with [`Packet::from_json`], as
/// [`Client`](crate::Client) does.
///
/// ```
/// use bytes::BytesMut;
/// use improto::{Packet, PacketCodec, Regist};
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = PacketCodec::new();
/// let mut buf = BytesMut::new();
/// codec.encode(Regist::new("1").into(), &mut buf)?;
/// assert_eq!(&buf[..4], &[0, 0, 0, 30]);
/// assert_eq!(codec.decode(&mut buf)?, Some(Packet::Regist(Regist::new("1"))));
/// # Ok::<(), improto::ProtoError>(())
/// ```
#[derive(Debug, Default)]
pub struct PacketCodec {
    frames: FrameCodec,
}

impl PacketCodec {
    /// A codec with the default limit, [`DEFAULT_MAX_FRAME_LENGTH`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A codec accepting and sending payloads of at most `max` bytes.
    pub fn with_max_frame_length(max: usize) -> Self {
        PacketCodec {
            frames: FrameCodec::with_max_frame_length(max),
        }
    }

    /// The limit in force, in payload bytes.
    pub fn max_frame_length(&self) -> usize {
        self.frames.max_frame_length()
    }
}

impl Decoder for PacketCodec {
    type Item = Packet;
    type Error = ProtoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, ProtoError> {
        self.frames
            .decode(src)?
            .map(|frame| Packet::from_json(&frame))
            .transpose()
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, ProtoError> {
        self.frames
            .decode_eof(src)?
            .map(|frame| Packet::from_json(&frame))
            .transpose()
    }
}

impl Encoder<Packet> for PacketCodec {
    type Error = ProtoError;

    /// Serializes straight into `dst` behind a placeholder prefix, then fills the prefix in:
    /// one copy of the payload instead of two.
    fn encode(&mut self, packet: Packet, dst: &mut BytesMut) -> Result<(), ProtoError> {
        let start = dst.len();
        dst.put_u32(0);
        let written = packet.write_json((&mut *dst).writer());
        let len = dst.len() - start - HEAD;
        let result = written.and_then(|()| match u32::try_from(len) {
            Ok(n) if len <= self.max_frame_length() => Ok(n),
            _ => Err(self.frames.too_large(len)),
        });
        match result {
            Ok(n) => {
                dst[start..start + HEAD].copy_from_slice(&n.to_be_bytes());
                Ok(())
            }
            Err(e) => {
                dst.truncate(start);
                Err(e)
            }
        }
    }
}
