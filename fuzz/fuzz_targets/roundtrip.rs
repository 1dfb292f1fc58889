//! Any packet the fuzzer can build encodes, decodes back to itself, and peeks consistently;
//! a stamped message decodes with its seq.
#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use improto::{
    Ack, Envelope, ErrorCode, ErrorPacket, Event, EventKind, MAX_CLIENT_ID_CHARS, Message, Packet,
    PacketCodec, Presence, ProtoError, Read, Regist, Registered, Typing,
};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

#[derive(Arbitrary, Debug)]
enum Input {
    Regist {
        sender: String,
        token: Option<String>,
        v2: bool,
        last_seq: Option<u64>,
    },
    Message {
        sender: String,
        receiver: String,
        text: String,
        time: f64,
        id: Option<String>,
        seq: Option<u64>,
    },
    Ack {
        id: Option<String>,
        seq: u64,
        group: Option<String>,
    },
    Ping,
    Pong,
    Registered {
        sender: String,
        seq: u64,
    },
    Error {
        code: String,
        text: String,
        id: Option<String>,
    },
    Event {
        kind: String,
        user: Option<String>,
        name: Option<String>,
        text: Option<String>,
        seq: Option<u64>,
        group: Option<String>,
        up_to: Option<u64>,
        owner: Option<String>,
    },
    Read {
        peer: String,
        seq: u64,
    },
    Typing {
        sender: Option<String>,
        receiver: String,
    },
    Presence {
        user: String,
        online: bool,
    },
}

fn build(input: Input) -> Packet {
    match input {
        Input::Regist {
            sender,
            token,
            v2,
            last_seq,
        } => {
            let mut r = Regist::new(sender);
            r.token = token;
            r.version = if v2 { 2 } else { 1 };
            r.last_seq = last_seq;
            r.into()
        }
        Input::Message {
            sender,
            receiver,
            text,
            time,
            id,
            seq,
        } => {
            let mut m = Message::new(sender, receiver, text);
            m.create_time = time;
            m.id = id;
            m.seq = seq;
            m.into()
        }
        Input::Ack { id, seq, group } => Ack::stored(id, seq).in_group(group).into(),
        Input::Ping => Packet::Ping,
        Input::Pong => Packet::Pong,
        Input::Registered { sender, seq } => Registered::new(sender, seq).into(),
        Input::Error { code, text, id } => ErrorPacket::new(ErrorCode::from_wire(&code), text)
            .with_id(id)
            .into(),
        Input::Event {
            kind,
            user,
            name,
            text,
            seq,
            group,
            up_to,
            owner,
        } => {
            let mut e = Event::new(EventKind::from_wire(&kind), "", "");
            (e.user, e.name, e.message, e.seq) = (user, name, text, seq);
            (e.group, e.up_to, e.owner) = (group, up_to, owner);
            e.into()
        }
        Input::Read { peer, seq } => Read::new(peer, seq).into(),
        Input::Typing { sender, receiver } => {
            let mut t = Typing::to(receiver);
            t.sender = sender;
            t.into()
        }
        Input::Presence { user, online } => Presence::new(user, online).into(),
    }
}

fn client_id(p: &Packet) -> Option<&str> {
    match p {
        Packet::Message(m) => m.id.as_deref(),
        Packet::Ack(a) => a.id.as_deref(),
        Packet::Error(e) => e.id.as_deref(),
        _ => None,
    }
}

fuzz_target!(|input: Input| {
    let packet = build(input);
    let mut codec = PacketCodec::new();
    let mut buf = BytesMut::new();
    if let Err(e) = codec.encode(packet.clone(), &mut buf) {
        // Only a non-finite time may be refused, and it must leave nothing behind.
        assert!(
            matches!(&packet, Packet::Message(m) if !m.create_time.is_finite()),
            "{e}"
        );
        assert!(buf.is_empty());
        return;
    }
    if client_id(&packet).is_some_and(|id| id.chars().count() > MAX_CLIENT_ID_CHARS) {
        // Encodable, but not a valid packet: the id is too long, and both readers say so.
        for err in [
            Envelope::peek(&buf[4..]).unwrap_err(),
            codec.decode(&mut buf).unwrap_err(),
        ] {
            assert!(matches!(err, ProtoError::InvalidField { ref field, .. } if field == "id"));
        }
        return;
    }
    let env = Envelope::peek(&buf[4..]).expect("an encoded packet must peek");
    assert_eq!(env.client_id(), client_id(&packet));
    match &packet {
        Packet::Regist(r) => assert_eq!(env.sender(), Some(r.sender.as_str())),
        Packet::Message(m) => {
            assert_eq!(env.sender(), Some(m.sender.as_str()));
            assert_eq!(env.receiver(), Some(m.receiver.as_str()));
            assert_eq!(env.seq(), m.seq);
        }
        Packet::Ack(a) => assert_eq!(env.seq(), Some(a.seq)),
        Packet::Event(e) => assert_eq!(env.seq(), e.seq),
        Packet::Read(r) => assert_eq!(
            (env.peer(), env.seq()),
            (Some(r.peer.as_str()), Some(r.seq))
        ),
        Packet::Typing(t) => assert_eq!(
            (env.sender(), env.receiver()),
            (t.sender.as_deref(), Some(t.receiver.as_str()))
        ),
        Packet::Registered(r) => assert_eq!(
            (env.sender(), env.seq()),
            (Some(r.sender.as_str()), Some(r.seq))
        ),
        _ => {}
    }
    if let Packet::Message(m) = &packet
        && m.seq.is_none()
    {
        let mut stamped = BytesMut::new();
        assert!(improto::write_stamped(&mut stamped, &buf[4..], 42));
        let mut expected = m.clone();
        expected.seq = Some(42);
        assert_eq!(codec.decode(&mut stamped).unwrap(), Some(expected.into()));
    }
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(packet));
    assert!(buf.is_empty());
});
