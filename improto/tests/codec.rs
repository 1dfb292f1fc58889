//! The decoding and encoding rules of the wire format, one test each, through the public
//! codec and parser API.

use bytes::{BufMut, Bytes, BytesMut};
use improto::{
    Ack, DEFAULT_MAX_FRAME_LENGTH, Envelope, ErrorCode, ErrorPacket, FrameCodec, Message, Packet,
    PacketCodec, PacketKind, ProtoError, Regist, Registered,
};
use tokio_util::codec::{Decoder, Encoder, FramedRead};

/// `payload` with its 4-byte big-endian length prefix.
fn frame(payload: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b
}

fn message(sender: &str, receiver: &str, text: &str, t: f64) -> Packet {
    let mut m = Message::new(sender, receiver, text);
    m.create_time = t;
    m.into()
}

const GOOD: &[u8] =
    br#"{"type":"Message","message":"ok","sender":"1","receiver":"2","createTime":1}"#;

/// Decodes `bad` then `GOOD` from one buffer: the first must fail with a packet error
/// (not fatal), the second must still decode.
fn bad_then_good(bad: &[u8]) -> ProtoError {
    let mut codec = PacketCodec::new();
    let mut buf = frame(bad);
    buf.extend_from_slice(&frame(GOOD));
    let err = codec
        .decode(&mut buf)
        .expect_err("bad frame must be an error");
    assert!(!err.is_fatal(), "{err:?} should not be fatal");
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(message("1", "2", "ok", 1.0)),
        "the frame after a bad one must decode"
    );
    assert!(buf.is_empty());
    err
}

#[test]
fn golden_message_frame_from_go_server() {
    // As Go's encoding/json writes it: `<`, `>`, `&` escaped, Chinese and emoji raw,
    // integer createTime, fields in Go struct order.
    let payload = "{\"type\":\"Message\",\"message\":\"\\u003cb\\u003e \\u0026 你好 😀\",\"sender\":\"1\",\"receiver\":\"2\",\"createTime\":1700000000}";
    let mut wire = vec![0x00, 0x00, 0x00, 0x73];
    wire.extend_from_slice(payload.as_bytes());
    assert_eq!(payload.len(), 0x73);

    let mut buf = BytesMut::from(&wire[..]);
    let packet = PacketCodec::new().decode(&mut buf).unwrap().unwrap();
    assert_eq!(packet, message("1", "2", "<b> & 你好 😀", 1_700_000_000.0));
    assert!(buf.is_empty());
}

#[test]
fn golden_regist_frame_from_go_server() {
    let wire: &[u8] = b"\x00\x00\x00\x1e{\"type\":\"Regist\",\"sender\":\"1\"}";
    let mut buf = BytesMut::from(wire);
    let packet = PacketCodec::new().decode(&mut buf).unwrap().unwrap();
    assert_eq!(packet, Packet::Regist(Regist::new("1")));
}

#[test]
fn golden_encoding_of_regist_and_message() {
    let mut codec = PacketCodec::new();
    let mut buf = BytesMut::new();
    codec.encode(Regist::new("1").into(), &mut buf).unwrap();
    assert_eq!(
        &buf[..],
        b"\x00\x00\x00\x1e{\"type\":\"Regist\",\"sender\":\"1\"}"
    );

    buf.clear();
    codec
        .encode(message("1", "2", "hi", 1_700_000_000.0), &mut buf)
        .unwrap();
    let payload =
        br#"{"type":"Message","message":"hi","sender":"1","receiver":"2","createTime":1700000000}"#;
    assert_eq!(&buf[..4], (payload.len() as u32).to_be_bytes());
    assert_eq!(&buf[4..], payload);
}

#[test]
fn fractional_create_time_round_trips_and_integral_is_written_as_integer() {
    let frac = message("1", "2", "x", 1_700_000_000.25).to_json().unwrap();
    assert!(String::from_utf8_lossy(&frac).contains("\"createTime\":1700000000.25"));
    assert_eq!(
        Packet::from_json(&frac).unwrap(),
        message("1", "2", "x", 1_700_000_000.25)
    );
    let int = message("1", "2", "x", 5.0).to_json().unwrap();
    assert!(String::from_utf8_lossy(&int).contains("\"createTime\":5}"));
}

#[test]
fn fields_in_any_order_and_unknown_fields_are_accepted() {
    let payload = br#"{"createTime":2.5,"extra":{"nested":[1,{"a":null}]},"receiver":"9","priority":4,"message":"m","sender":"8","type":"Message"}"#;
    assert_eq!(
        Packet::from_json(payload).unwrap(),
        message("8", "9", "m", 2.5)
    );
}

#[test]
fn prefix_equal_to_the_limit_is_accepted() {
    let payload = format!(
        r#"{{"type":"Regist","sender":"1","pad":"{}"}}"#,
        "x".repeat(100)
    );
    let max = payload.len();
    let mut codec = PacketCodec::with_max_frame_length(max);
    let mut buf = frame(payload.as_bytes());
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(Regist::new("1").into())
    );
}

#[test]
fn prefix_one_over_the_limit_is_an_error_before_any_payload_arrives() {
    let mut codec = FrameCodec::with_max_frame_length(100);
    let mut buf = BytesMut::from(&101u32.to_be_bytes()[..]); // the prefix alone
    match codec.decode(&mut buf) {
        Err(ProtoError::FrameTooLarge { len: 101, max: 100 }) => {}
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
}

#[test]
fn huge_prefix_is_rejected_without_allocating() {
    let mut codec = PacketCodec::new();
    let mut buf = BytesMut::from(&[0xFF, 0xFF, 0xFF, 0xF0, b'{'][..]);
    let cap = buf.capacity();
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(
        matches!(err, ProtoError::FrameTooLarge { len: 0xFFFF_FFF0, max } if max == DEFAULT_MAX_FRAME_LENGTH),
        "{err:?}"
    );
    assert!(err.is_fatal());
    assert_eq!(buf.capacity(), cap);
}

#[test]
fn no_memory_is_reserved_for_a_declared_length_before_the_bytes_arrive() {
    // A legal 1 MiB prefix followed by a few bytes: the decoder must wait without growing
    // the buffer towards 1 MiB.
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::with_capacity(64);
    buf.put_u32(DEFAULT_MAX_FRAME_LENGTH as u32);
    buf.put_slice(b"{\"type\":");
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(buf.capacity() < 4096, "capacity grew to {}", buf.capacity());
}

#[test]
fn invalid_json_is_an_error_and_the_next_frame_decodes() {
    let err = bad_then_good(br#"{"type":"Message","#);
    assert!(matches!(err, ProtoError::InvalidJson(_)), "{err:?}");
}

#[test]
fn invalid_utf8_is_an_error_and_the_next_frame_decodes() {
    let err = bad_then_good(b"{\"type\":\"Regist\",\"sender\":\"\xff\xfe\"}");
    assert!(matches!(err, ProtoError::InvalidUtf8), "{err:?}");
}

#[test]
fn a_json_value_that_is_not_an_object_is_invalid_json() {
    for payload in [
        &b"[1,2,3]"[..],
        br#"["Regist","1"]"#,
        b"\"Regist\"",
        b"  17",
    ] {
        let err = bad_then_good(payload);
        assert!(matches!(err, ProtoError::InvalidJson(_)), "{err:?}");
    }
}

#[test]
fn missing_field_is_named_and_the_next_frame_decodes() {
    for (payload, field) in [
        (&br#"{"sender":"1"}"#[..], "type"),
        (br#"{"type":"Regist"}"#, "sender"),
        (
            br#"{"type":"Message","sender":"1","receiver":"2","createTime":1}"#,
            "message",
        ),
        (
            br#"{"type":"Message","message":"m","receiver":"2","createTime":1}"#,
            "sender",
        ),
        (
            br#"{"type":"Message","message":"m","sender":"1","createTime":1}"#,
            "receiver",
        ),
        (
            br#"{"type":"Message","message":"m","sender":"1","receiver":"2"}"#,
            "createTime",
        ),
        (
            br#"{"type":"Message","message":null,"sender":"1","receiver":"2","createTime":1}"#,
            "message",
        ),
        (br#"{"type":"Ack","id":"c-1"}"#, "seq"),
        (br#"{"type":"Registered","sender":"1"}"#, "seq"),
        (br#"{"type":"Registered","seq":1}"#, "sender"),
        (br#"{"type":"Error","message":"m"}"#, "code"),
        (br#"{"type":"Error","code":"bad_json"}"#, "message"),
    ] {
        match bad_then_good(payload) {
            ProtoError::MissingField { field: f } => assert_eq!(f, field),
            other => panic!("expected MissingField({field}), got {other:?}"),
        }
    }
}

#[test]
fn wrongly_typed_field_is_named_and_the_next_frame_decodes() {
    for (payload, field) in [
        (&br#"{"type":"Regist","sender":1}"#[..], "sender"),
        (br#"{"type":7}"#, "type"),
        (
            br#"{"type":"Message","message":"m","sender":"1","receiver":"2","createTime":"now"}"#,
            "createTime",
        ),
        (
            br#"{"type":"Message","message":["m"],"sender":"1","receiver":"2","createTime":1}"#,
            "message",
        ),
        (br#"{"type":"Ack","seq":-1}"#, "seq"),
        (br#"{"type":"Ack","seq":1.5}"#, "seq"),
        (br#"{"type":"Ack","seq":18446744073709551616}"#, "seq"),
        (
            br#"{"type":"Regist","sender":"1","lastSeq":"41"}"#,
            "lastSeq",
        ),
        (br#"{"type":"Regist","sender":"1","version":3}"#, "version"),
        (br#"{"type":"Regist","sender":"1","version":0}"#, "version"),
        (br#"{"type":"Regist","sender":"1","token":5}"#, "token"),
        (br#"{"type":"Ack","seq":1,"id":7}"#, "id"),
    ] {
        match bad_then_good(payload) {
            ProtoError::InvalidField { field: f, reason } => {
                assert_eq!(f, field, "reason: {reason}");
                assert!(!reason.is_empty());
            }
            other => panic!("expected InvalidField({field}), got {other:?}"),
        }
    }
}

#[test]
fn unknown_type_carries_its_name_and_the_next_frame_decodes() {
    match bad_then_good(br#"{"type":"Teleport","sender":"1"}"#) {
        ProtoError::UnknownType(name) => assert_eq!(name, "Teleport"),
        other => panic!("expected UnknownType, got {other:?}"),
    }
}

#[test]
fn truncated_frame_at_end_of_stream_is_an_error_not_a_packet() {
    let mut codec = PacketCodec::new();
    let whole = frame(GOOD);
    let mut buf = BytesMut::from(&whole[..whole.len() - 1]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    let err = codec.decode_eof(&mut buf).unwrap_err();
    assert!(matches!(err, ProtoError::Truncated { .. }), "{err:?}");
    assert!(err.is_fatal());

    // A partial length prefix is truncated too.
    let mut buf = BytesMut::from(&[0u8, 0][..]);
    assert!(matches!(
        codec.decode_eof(&mut buf),
        Err(ProtoError::Truncated { buffered: 2 })
    ));
}

#[tokio::test]
async fn truncated_frame_through_framed_read_yields_the_whole_frames_then_an_error() {
    let mut wire = frame(GOOD);
    wire.extend_from_slice(&frame(GOOD)[..10]);
    let mut frames = FramedRead::new(&wire[..], PacketCodec::new());
    use futures::StreamExt;
    assert!(matches!(frames.next().await, Some(Ok(Packet::Message(_)))));
    assert!(matches!(
        frames.next().await,
        Some(Err(ProtoError::Truncated { buffered: 10 }))
    ));
}

#[test]
fn one_byte_at_a_time_gives_the_same_packets_as_all_at_once() {
    let packets = vec![
        Packet::from(Regist::new("1")),
        message("1", "2", "你好 😀 <&>", 1.5),
        message("2", "1", &"x".repeat(5000), 2.0),
    ];
    let mut wire = BytesMut::new();
    let mut codec = PacketCodec::new();
    for p in &packets {
        codec.encode(p.clone(), &mut wire).unwrap();
    }

    let mut got = Vec::new();
    let mut buf = BytesMut::new();
    for byte in wire.iter() {
        buf.put_u8(*byte);
        while let Some(p) = codec.decode(&mut buf).unwrap() {
            got.push(p);
        }
    }
    assert_eq!(got, packets);
}

#[test]
fn encoding_past_the_limit_fails_and_leaves_the_buffer_as_it_was() {
    let mut codec = PacketCodec::with_max_frame_length(64);
    let mut buf = BytesMut::from(&b"keep"[..]);
    let err = codec
        .encode(message("1", "2", &"y".repeat(100), 1.0), &mut buf)
        .unwrap_err();
    assert!(
        matches!(err, ProtoError::FrameTooLarge { max: 64, .. }),
        "{err:?}"
    );
    assert_eq!(&buf[..], b"keep");

    let mut raw = FrameCodec::with_max_frame_length(3);
    assert!(matches!(
        raw.encode(Bytes::from_static(b"1234"), &mut buf),
        Err(ProtoError::FrameTooLarge { len: 4, max: 3 })
    ));
}

#[test]
fn non_finite_create_time_cannot_be_encoded() {
    let mut codec = PacketCodec::new();
    let mut buf = BytesMut::new();
    let err = codec
        .encode(message("1", "2", "x", f64::NAN), &mut buf)
        .unwrap_err();
    assert!(matches!(err, ProtoError::InvalidField { ref field, .. } if field == "createTime"));
    assert!(buf.is_empty());
}

#[test]
fn raw_frames_pass_through_unchanged() {
    let mut codec = FrameCodec::new();
    let mut buf = frame(GOOD);
    buf.extend_from_slice(&frame(b"not json at all"));
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), GOOD);
    assert_eq!(
        codec.decode(&mut buf).unwrap().unwrap(),
        &b"not json at all"[..]
    );

    let mut out = BytesMut::new();
    codec.encode(Bytes::from_static(GOOD), &mut out).unwrap();
    assert_eq!(out, frame(GOOD));
}

#[test]
fn envelope_peek_reads_type_sender_receiver() {
    let env = Envelope::peek(GOOD).unwrap();
    assert_eq!(env.kind(), PacketKind::Message);
    assert_eq!(env.sender(), Some("1"));
    assert_eq!(env.receiver(), Some("2"));

    let env = Envelope::peek(br#"{"type":"Regist","sender":"\u0037"}"#).unwrap();
    assert_eq!(env.kind(), PacketKind::Regist);
    assert_eq!(env.sender(), Some("7"), "escaped ids are unescaped");
    assert_eq!(env.receiver(), None);
}

#[test]
fn envelope_peek_rejects_what_the_full_decode_rejects() {
    for bad in [
        &br#"{"type":"Message","sender":"1","receiver":"2","createTime":1}"#[..],
        br#"{"type":"Message","message":5,"sender":"1","receiver":"2","createTime":1}"#,
        br#"{"type":"Nope"}"#,
        b"\xff",
        b"",
    ] {
        let peek = Envelope::peek(bad).unwrap_err().to_string();
        let full = Packet::from_json(bad).unwrap_err().to_string();
        assert_eq!(peek, full);
    }
}

#[test]
fn client_ids_are_at_most_64_characters() {
    let frame = |id: &str| {
        format!(
            r#"{{"type":"Message","message":"m","sender":"1","receiver":"2","createTime":1,"id":"{id}"}}"#
        )
    };
    // 64 characters, some of them multi-byte: accepted.
    let ok = "é".repeat(64);
    match Packet::from_json(frame(&ok).as_bytes()).unwrap() {
        Packet::Message(m) => assert_eq!(m.id.as_deref(), Some(ok.as_str())),
        other => panic!("{other:?}"),
    }
    let long = "x".repeat(65);
    match Packet::from_json(frame(&long).as_bytes()).unwrap_err() {
        ProtoError::InvalidField { field, .. } => assert_eq!(field, "id"),
        other => panic!("{other:?}"),
    }
    // An invalid id is not echoed; a valid one in an otherwise bad packet is.
    assert_eq!(
        Envelope::client_id_of_invalid(frame(&long).as_bytes()),
        None
    );
    let bad = br#"{"type":"Message","sender":1,"id":"c-1"}"#;
    assert!(Packet::from_json(bad).is_err());
    assert_eq!(Envelope::client_id_of_invalid(bad).as_deref(), Some("c-1"));
}

#[test]
fn golden_v2_frames() {
    let cases: Vec<(Packet, &[u8])> = vec![
        (
            Regist::v2("7", "tok").resume_after(41).into(),
            br#"{"type":"Regist","sender":"7","token":"tok","version":2,"lastSeq":41}"#,
        ),
        (
            Regist::new("7").with_token("tok").into(),
            br#"{"type":"Regist","sender":"7","token":"tok"}"#,
        ),
        (Ack::new(57).into(), br#"{"type":"Ack","seq":57}"#),
        (
            Ack::stored(Some("c-123".into()), 57).into(),
            br#"{"type":"Ack","id":"c-123","seq":57}"#,
        ),
        (Packet::Ping, br#"{"type":"Ping"}"#),
        (Packet::Pong, br#"{"type":"Pong"}"#),
        (
            Registered::new("7", 0).into(),
            br#"{"type":"Registered","sender":"7","seq":0}"#,
        ),
        (
            ErrorPacket::new(ErrorCode::SenderMismatch, "no").with_id(Some("c-1".into())).into(),
            br#"{"type":"Error","code":"sender_mismatch","message":"no","id":"c-1"}"#,
        ),
        (
            {
                let mut m = Message::new("1", "2", "hi").with_id("c-123");
                m.create_time = 1700000000.5;
                m.seq = Some(9);
                m.into()
            },
            br#"{"type":"Message","message":"hi","sender":"1","receiver":"2","createTime":1700000000.5,"id":"c-123","seq":9}"#,
        ),
    ];
    for (packet, wire) in cases {
        assert_eq!(packet.to_json().unwrap(), wire, "{packet:?}");
        assert_eq!(Packet::from_json(wire).unwrap(), packet);
    }
    // A version 1 Regist may say so explicitly.
    let explicit = Packet::from_json(br#"{"type":"Regist","sender":"7","version":1}"#).unwrap();
    assert_eq!(explicit, Regist::new("7").into());
}

#[test]
fn unknown_error_codes_are_kept() {
    let p = Packet::from_json(br#"{"type":"Error","code":"quota","message":"m"}"#).unwrap();
    match p {
        Packet::Error(e) => assert_eq!(e.code, ErrorCode::Other("quota".into())),
        other => panic!("{other:?}"),
    }
}

#[test]
fn stamped_frames_carry_the_seq_and_decode() {
    let mut out = BytesMut::new();
    assert!(improto::write_stamped(&mut out, GOOD, u64::MAX));
    assert_eq!(out.len() - 4, GOOD.len() + improto::SEQ_STAMP_MAX);
    match PacketCodec::new().decode(&mut out).unwrap() {
        Some(Packet::Message(m)) => assert_eq!(m.seq, Some(u64::MAX)),
        other => panic!("{other:?}"),
    }
    assert!(out.is_empty());
    assert!(
        !improto::write_stamped(&mut out, b" {}", 1),
        "must start with a brace"
    );
    assert!(out.is_empty());
}
