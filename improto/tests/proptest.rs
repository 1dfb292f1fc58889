//! Properties of the codec over generated packets, splits and garbage.

use bytes::BytesMut;
use improto::{
    Ack, Envelope, ErrorCode, ErrorPacket, Event, EventKind, FrameCodec, Message, Packet,
    PacketCodec, Presence, ProtoError, Read, Regist, Registered, Typing,
};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

fn any_packet() -> impl Strategy<Value = Packet> {
    // Ids are usually decimal, but the codec must carry any string.
    let id = prop_oneof!["[0-9]{1,12}", any::<String>()];
    let time = prop_oneof![
        (0u32..u32::MAX).prop_map(f64::from),
        any::<f64>().prop_filter("JSON numbers are finite", |t| t.is_finite()),
    ];
    let client_id = proptest::option::of("[ -~]{0,64}");
    let group = "g[1-9][0-9]{0,6}";
    let kind = prop_oneof![
        Just(EventKind::GroupAdded),
        Just(EventKind::Read),
        "[a-z_]{1,12}".prop_map(|k| EventKind::from_wire(&k)),
    ];
    let code = prop_oneof![
        Just(ErrorCode::BadJson),
        Just(ErrorCode::NotMember),
        Just(ErrorCode::TooManyConnections),
        "[a-z_]{1,12}".prop_map(|c| ErrorCode::from_wire(&c)),
    ];
    prop_oneof![
        id.clone().prop_map(|s| Packet::from(Regist::new(s))),
        (
            id.clone(),
            any::<String>(),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(s, token, last)| {
                let r = Regist::v2(s, token);
                Packet::from(match last {
                    Some(n) => r.resume_after(n),
                    None => r,
                })
            }),
        (
            id.clone(),
            id.clone(),
            any::<String>(),
            time,
            client_id.clone(),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(s, r, text, t, cid, seq)| {
                let mut m = Message::new(s, r, text);
                m.create_time = t;
                m.id = cid;
                m.seq = seq;
                Packet::from(m)
            }),
        (client_id.clone(), any::<u64>(), proptest::option::of(group))
            .prop_map(|(cid, seq, g)| Packet::from(Ack::stored(cid, seq).in_group(g))),
        Just(Packet::Ping),
        Just(Packet::Pong),
        (id.clone(), any::<u64>()).prop_map(|(s, seq)| Packet::from(Registered::new(s, seq))),
        (code, any::<String>(), client_id)
            .prop_map(|(c, text, cid)| Packet::from(ErrorPacket::new(c, text).with_id(cid))),
        (
            kind,
            proptest::option::of(id.clone()),
            proptest::option::of(any::<String>()),
            proptest::option::of(group),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(id.clone()),
        )
            .prop_map(|(kind, user, name, g, up_to, seq, owner)| {
                let mut e = Event::group(kind, "", "");
                (e.user, e.name, e.group, e.up_to, e.seq, e.owner) =
                    (user, name, g, up_to, seq, owner);
                Packet::from(e)
            }),
        (prop_oneof![id.clone(), group], any::<u64>())
            .prop_map(|(peer, seq)| Packet::from(Read::new(peer, seq))),
        (
            proptest::option::of(id.clone()),
            prop_oneof![id.clone(), group]
        )
            .prop_map(|(s, r)| {
                let mut t = Typing::to(r);
                t.sender = s;
                Packet::from(t)
            }),
        (id, any::<bool>()).prop_map(|(u, online)| Packet::from(Presence::new(u, online))),
    ]
}

/// Feeds `wire` to `codec` in chunks of the given sizes (cycled), collecting every result.
/// Stops at the first fatal error, as a connection would.
fn decode_in_chunks<D: Decoder<Error = ProtoError>>(
    codec: &mut D,
    wire: &[u8],
    sizes: &[usize],
) -> Vec<Result<D::Item, String>> {
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    let mut rest = wire;
    let mut sizes = sizes.iter().cycle();
    loop {
        let eof = rest.is_empty();
        let step = loop {
            match if eof {
                codec.decode_eof(&mut buf)
            } else {
                codec.decode(&mut buf)
            } {
                Ok(Some(item)) => out.push(Ok(item)),
                Ok(None) => break true,
                Err(e) => {
                    let fatal = e.is_fatal();
                    out.push(Err(e.to_string()));
                    if fatal {
                        break false;
                    }
                }
            }
        };
        if eof || !step {
            return out;
        }
        let n = (*sizes.next().unwrap()).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
}

proptest! {
    #[test]
    fn every_packet_round_trips(packet in any_packet()) {
        let mut codec = PacketCodec::new();
        let mut buf = BytesMut::new();
        codec.encode(packet.clone(), &mut buf).unwrap();
        prop_assert_eq!(codec.decode(&mut buf).unwrap(), Some(packet.clone()));
        prop_assert!(buf.is_empty());
        // The standalone JSON helpers agree with the codec.
        prop_assert_eq!(Packet::from_json(&packet.to_json().unwrap()).unwrap(), packet);
    }

    #[test]
    fn any_split_of_a_frame_sequence_decodes_identically(
        packets in proptest::collection::vec(any_packet(), 0..8),
        sizes in proptest::collection::vec(1usize..64, 1..16),
    ) {
        let mut wire = BytesMut::new();
        for p in &packets {
            PacketCodec::new().encode(p.clone(), &mut wire).unwrap();
        }
        let got = decode_in_chunks(&mut PacketCodec::new(), &wire, &sizes);
        let want: Vec<Result<Packet, String>> = packets.into_iter().map(Ok).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        wire in proptest::collection::vec(any::<u8>(), 0..512),
        sizes in proptest::collection::vec(1usize..32, 1..8),
    ) {
        let _ = decode_in_chunks(&mut PacketCodec::with_max_frame_length(256), &wire, &sizes);
        let _ = decode_in_chunks(&mut FrameCodec::with_max_frame_length(256), &wire, &sizes);
        let _ = Packet::from_json(&wire);
        let _ = Envelope::peek(&wire);
    }

    #[test]
    fn envelope_peek_agrees_with_the_full_decode(packet in any_packet(), junk in any::<u8>()) {
        let json = packet.to_json().unwrap();
        let env = Envelope::peek(&json).unwrap();
        let facts = (env.sender(), env.receiver(), env.client_id(), env.seq());
        match &packet {
            Packet::Regist(r) => prop_assert_eq!(facts, (Some(r.sender.as_str()), None, None, None)),
            Packet::Message(m) => prop_assert_eq!(
                facts,
                (Some(m.sender.as_str()), Some(m.receiver.as_str()), m.id.as_deref(), m.seq)
            ),
            Packet::Ack(a) => prop_assert_eq!(facts, (None, None, a.id.as_deref(), Some(a.seq))),
            Packet::Registered(r) => {
                prop_assert_eq!(facts, (Some(r.sender.as_str()), None, None, Some(r.seq)))
            }
            Packet::Error(e) => prop_assert_eq!(facts, (None, None, e.id.as_deref(), None)),
            Packet::Ping | Packet::Pong | Packet::Presence(_) => {
                prop_assert_eq!(facts, (None, None, None, None))
            }
            Packet::Event(e) => prop_assert_eq!(facts, (None, None, None, e.seq)),
            Packet::Read(r) => {
                prop_assert_eq!(facts, (None, None, None, Some(r.seq)));
                prop_assert_eq!(env.peer(), Some(r.peer.as_str()));
            }
            Packet::Typing(t) => prop_assert_eq!(
                facts,
                (t.sender.as_deref(), Some(t.receiver.as_str()), None, None)
            ),
            _ => unreachable!(),
        }
        // Damage one byte: both must still agree on success or failure.
        let mut damaged = json.clone();
        let i = junk as usize % damaged.len();
        damaged[i] = junk;
        prop_assert_eq!(Envelope::peek(&damaged).is_ok(), Packet::from_json(&damaged).is_ok());
    }
}
