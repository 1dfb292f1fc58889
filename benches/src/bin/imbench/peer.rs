//! One benchmark client connection over the real protocol, the accounts it speaks for, and
//! the messages it sends: each carries its number in the pair's sequence and the time it
//! was written, so the receiving end can count gaps and measure latency.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use anyhow::{Context, bail};
use bytes::{BufMut, BytesMut};
use futures::{StreamExt, TryStreamExt};
use improto::{Envelope, Packet, PacketKind, Regist};

use crate::wire::{Endpoint, Reader, Writer};

/// Protocol version 1 (the Go server's) or 2 (acknowledged, sequenced).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    #[value(name = "1")]
    V1,
    #[value(name = "2")]
    V2,
}

/// A user the benchmark speaks for.
#[derive(Clone, Debug)]
pub struct Account {
    pub id: String,
    /// A login token; `None` against a server in `--auth open` mode (v1 only).
    pub token: Option<String>,
}

/// `n` users: with `http`, new accounts registered and logged in over the HTTP API (the
/// server must run with `--regist-limit 0`); without it, ids `base`, `base+1`, … and no
/// tokens (a server in `--auth open` mode trusts them).
pub async fn accounts(
    http: Option<SocketAddr>,
    n: usize,
    base: u64,
) -> anyhow::Result<Vec<Account>> {
    let Some(http) = http else {
        return Ok((0..n as u64)
            .map(|i| Account {
                id: (base + i).to_string(),
                token: None,
            })
            .collect());
    };
    let client = reqwest::Client::new();
    futures::stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            async move {
                let account = serde_json::json!({
                    "password": "bench", "name": format!("bench{i}"), "sex": "-",
                    "email": "bench@localhost", "signature": "-"
                });
                let created = post(&client, http, "regist", &account).await?;
                let id = created["user"]
                    .as_str()
                    .context("/regist answered without a user id")?
                    .to_owned();
                let token = login(&client, http, &id, "bench").await?;
                Ok(Account {
                    id,
                    token: Some(token),
                })
            }
        })
        // Password hashing is the server's slow part; a few at a time keeps both cores busy.
        .buffered(4)
        .try_collect()
        .await
}

/// Logs `user` in and returns its token.
pub async fn login(
    client: &reqwest::Client,
    http: SocketAddr,
    user: &str,
    password: &str,
) -> anyhow::Result<String> {
    let body = serde_json::json!({"user": user, "password": password});
    let reply = post(client, http, "login", &body).await?;
    Ok(reply["token"]
        .as_str()
        .context("/login answered without a token (is the server in --auth token mode?)")?
        .to_owned())
}

async fn post(
    client: &reqwest::Client,
    http: SocketAddr,
    route: &str,
    body: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let reply = client
        .post(format!("http://{http}/{route}"))
        .json(body)
        .send()
        .await
        .with_context(|| format!("POST /{route}"))?;
    let status = reply.status();
    let body: serde_json::Value = reply.json().await?;
    if !status.is_success() {
        bail!("POST /{route}: {status} {body}");
    }
    Ok(body)
}

/// A connection to `endpoint` (from `source`, an address of 127.0.0.0/8, when given) that
/// has sent `Regist` for `account`; a v2 connection has also been answered `Registered`.
pub async fn open(
    endpoint: &Endpoint,
    source: Option<Ipv4Addr>,
    account: &Account,
    proto: Proto,
    read_buffer: usize,
) -> anyhow::Result<(Reader, Writer)> {
    let (mut frames, mut write) = endpoint.connect(source, read_buffer).await?;
    let mut regist = match (&account.token, proto) {
        (Some(token), Proto::V2) => Regist::v2(&account.id, token),
        (None, Proto::V2) => bail!("protocol 2 needs tokens: pass --http"),
        (_, Proto::V1) => Regist::new(&account.id),
    };
    if proto == Proto::V1 {
        regist.token = account.token.clone();
    }
    let mut buf = BytesMut::new();
    push_packet(&mut buf, &regist.into());
    write.write_all(&buf).await?;
    if proto == Proto::V2 {
        let first = frames.next().await.context("closed before Registered")??;
        let env = Envelope::peek(&first)?;
        if env.kind() != PacketKind::Registered {
            bail!(
                "expected Registered, got {}",
                String::from_utf8_lossy(&first)
            );
        }
    }
    Ok((frames, write))
}

/// Appends `packet` as a frame.
pub fn push_packet(out: &mut BytesMut, packet: &Packet) {
    let json = packet.to_json().expect("benchmark packets encode");
    out.put_u32(json.len() as u32);
    out.put_slice(&json);
}

/// Builds one pair's `Message` frames, each exactly `size` bytes of JSON (unless its
/// numbers alone need more).
pub struct MessageFrames {
    /// Everything before the per-message fields, ending in a comma.
    head: Vec<u8>,
    size: usize,
    /// v2 messages carry a client id, so retries could be recognised (and the server does
    /// the de-duplication work it would do in production).
    with_id: bool,
}

const TEXT_KEY: &[u8] = br#""message":""#;

impl MessageFrames {
    pub fn new(sender: &str, receiver: &str, size: usize, proto: Proto) -> MessageFrames {
        MessageFrames {
            head: format!(
                r#"{{"type":"Message","sender":"{sender}","receiver":"{receiver}","createTime":1700000000,"#
            )
            .into_bytes(),
            size,
            with_id: proto == Proto::V2,
        }
    }

    /// Appends message number `k` of the pair, written at `sent_ns` after the epoch.
    pub fn push(&self, out: &mut BytesMut, k: u64, sent_ns: u64) {
        let mut num = itoa::Buffer::new();
        let mut json = Vec::with_capacity(self.size + 16);
        json.extend_from_slice(&self.head);
        if self.with_id {
            json.extend_from_slice(br#""id":""#);
            json.extend_from_slice(num.format(k).as_bytes());
            json.extend_from_slice(br#"","#);
        }
        json.extend_from_slice(TEXT_KEY);
        json.extend_from_slice(num.format(k).as_bytes());
        json.push(b' ');
        json.extend_from_slice(num.format(sent_ns).as_bytes());
        json.push(b' ');
        let pad = self.size.saturating_sub(json.len() + 2);
        json.resize(json.len() + pad, b'x');
        json.extend_from_slice(br#""}"#);
        out.put_u32(json.len() as u32);
        out.put_slice(&json);
    }
}

/// The pair sequence number and send time of a `Message` payload built by
/// [`MessageFrames`].
pub fn parse_text(payload: &[u8]) -> Option<(u64, u64)> {
    let start = memchr::memmem::find(payload, TEXT_KEY)? + TEXT_KEY.len();
    let mut words = payload[start..].split(|b| *b == b' ');
    let number = |w: &[u8]| std::str::from_utf8(w).ok()?.parse().ok();
    Some((number(words.next()?)?, number(words.next()?)?))
}

/// Nanoseconds since `epoch`.
pub fn since(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_size_asked_for_and_parse_back() {
        for proto in [Proto::V1, Proto::V2] {
            // 200 bytes leave room for every field; 10 bytes cannot, and the frame grows
            // to what its fields need rather than being cut.
            for (size, exact) in [(200, true), (10, false)] {
                let frames = MessageFrames::new("1001", "1002", size, proto);
                let mut out = BytesMut::new();
                frames.push(&mut out, 42, 123_456_789);
                let payload = &out[4..];
                assert_eq!(
                    u32::from_be_bytes(out[..4].try_into().unwrap()) as usize,
                    payload.len()
                );
                if exact {
                    assert_eq!(payload.len(), size, "{proto:?}");
                } else {
                    assert!(payload.len() > size, "{proto:?}");
                }
                let Ok(Packet::Message(m)) = Packet::from_json(payload) else {
                    panic!("not a valid Message: {}", String::from_utf8_lossy(payload));
                };
                assert_eq!((m.sender.as_str(), m.receiver.as_str()), ("1001", "1002"));
                assert_eq!(m.id.is_some(), proto == Proto::V2);
                assert_eq!(parse_text(payload), Some((42, 123_456_789)));
            }
        }
    }
}
