//! Any packet the fuzzer can build encodes, decodes back to itself, and peeks consistently.
#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use improto::{Envelope, Message, Packet, PacketCodec, Regist};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

#[derive(Arbitrary, Debug)]
enum Input {
    Regist {
        sender: String,
    },
    Message {
        sender: String,
        receiver: String,
        text: String,
        time: f64,
    },
}

fuzz_target!(|input: Input| {
    let packet: Packet = match input {
        Input::Regist { sender } => Regist::new(sender).into(),
        Input::Message {
            sender,
            receiver,
            text,
            time,
        } => {
            let mut m = Message::new(sender, receiver, text);
            m.create_time = time;
            m.into()
        }
    };
    let mut codec = PacketCodec::new();
    let mut buf = BytesMut::new();
    match codec.encode(packet.clone(), &mut buf) {
        Ok(()) => {}
        Err(e) => {
            // Only a non-finite time may be refused, and it must leave nothing behind.
            assert!(
                matches!(&packet, Packet::Message(m) if !m.create_time.is_finite()),
                "{e}"
            );
            assert!(buf.is_empty());
            return;
        }
    }
    let env = Envelope::peek(&buf[4..]).expect("an encoded packet must peek");
    match &packet {
        Packet::Regist(r) => assert_eq!(env.sender(), r.sender),
        Packet::Message(m) => {
            assert_eq!(env.sender(), m.sender);
            assert_eq!(env.receiver(), Some(m.receiver.as_str()));
        }
        _ => unreachable!(),
    }
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(packet));
    assert!(buf.is_empty());
});
