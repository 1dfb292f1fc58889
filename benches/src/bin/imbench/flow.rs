//! The two ends of a message stream, shared by the `relay`, `group` and `offline` modes: a sender
//! that keeps at most a window of messages in flight, and the counters at the other end
//! (deliveries at a receiver, `Ack`s at a v2 sender).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use improto::{Ack, Envelope, PacketKind};
use tokio::sync::Semaphore;

use crate::peer::{MessageFrames, Proto, parse_text, push_packet, since};
use crate::wire::{Reader, Writer};

/// At most this many messages go out in one write.
const SEND_BATCH: usize = 64;

/// A v2 receiver acknowledges at least this often (and whenever it has read all it got).
const ACK_EVERY: u64 = 64;

/// Sends messages `0..count` of a pair, each taking a permit of `window` (given back by
/// whatever end counts them), several per write when permits allow.
pub async fn send(
    mut write: Writer,
    frames: MessageFrames,
    count: u64,
    window: Arc<Semaphore>,
    epoch: Instant,
) -> anyhow::Result<Writer> {
    let mut buf = BytesMut::with_capacity(SEND_BATCH * 128);
    let mut k = 0;
    while k < count {
        window.acquire().await?.forget();
        let more = (window.available_permits() as u64)
            .min(count - k - 1)
            .min(SEND_BATCH as u64 - 1);
        let mut n = 1;
        if more > 0
            && let Ok(permits) = window.try_acquire_many(more as u32)
        {
            permits.forget();
            n += more;
        }
        let now = since(epoch);
        for _ in 0..n {
            frames.push(&mut buf, k, now);
            k += 1;
        }
        write.write_all(&buf).await.context("sending")?;
        buf.clear();
    }
    // The caller keeps the write half: dropping it would half-close the connection.
    Ok(write)
}

/// The permits of a window of `w` messages (0: unlimited).
pub fn window(w: usize) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(if w == 0 {
        Semaphore::MAX_PERMITS
    } else {
        w
    }))
}

/// What one receiving connection saw.
pub struct Received {
    /// Distinct messages of the pair received.
    pub delivered: u64,
    /// Messages that did not come right after the one before them.
    pub out_of_order: u64,
    /// Messages received a second time.
    pub duplicates: u64,
    /// `Error` frames, and streams that ended before all messages arrived.
    pub errors: u64,
    /// Send-to-receive time of every message, in nanoseconds.
    pub latency: Histogram<u64>,
    /// When the last message arrived.
    pub done_at: Instant,
}

/// What a run's receivers and `Ack` counters counted, summed for its report.
pub struct Totals {
    pub delivered: u64,
    pub out_of_order: u64,
    pub duplicates: u64,
    /// The receivers' (a sender's are the mode's to add).
    pub errors: u64,
    pub acks: u64,
    /// From the start to the last message or `Ack`.
    pub secs: f64,
    /// Every message's send-to-receive time, in nanoseconds.
    pub latency: Histogram<u64>,
}

impl Totals {
    /// Sums what `got` and `acked` counted since `epoch`.
    pub fn of(got: &[Received], acked: &[Acked], epoch: Instant) -> anyhow::Result<Self> {
        let end = got
            .iter()
            .map(|r| r.done_at)
            .chain(acked.iter().map(|a| a.done_at))
            .max()
            .unwrap_or(epoch);
        let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3)?;
        for r in got {
            latency.add(&r.latency)?;
        }
        let sum = |f: fn(&Received) -> u64| got.iter().map(f).sum::<u64>();
        Ok(Totals {
            delivered: sum(|r| r.delivered),
            out_of_order: sum(|r| r.out_of_order),
            duplicates: sum(|r| r.duplicates),
            errors: sum(|r| r.errors),
            acks: acked.iter().map(|a| a.acks).sum(),
            secs: end.duration_since(epoch).as_secs_f64(),
            latency,
        })
    }
}

/// Reads messages `0..expect` of a pair until all arrived, the stream ends, or nothing came
/// for `idle`. A v2 receiver acknowledges what it read, as a real client would.
pub async fn receive(
    mut frames: Reader,
    mut write: Writer,
    expect: u64,
    proto: Proto,
    window: Option<Arc<Semaphore>>,
    epoch: Instant,
    idle: Duration,
) -> anyhow::Result<Received> {
    let mut seen = vec![false; expect as usize];
    let mut r = Received {
        delivered: 0,
        out_of_order: 0,
        duplicates: 0,
        errors: 0,
        latency: Histogram::new_with_bounds(1, 600_000_000_000, 3)?,
        done_at: Instant::now(),
    };
    let mut next = 0;
    let (mut max_seq, mut unacked) = (0, 0);
    let mut buf = BytesMut::new();
    while r.delivered < expect {
        let Some(payload) = next_within(&mut frames, idle).await? else {
            r.errors += 1;
            break;
        };
        let env = Envelope::peek(&payload)?;
        match env.kind() {
            PacketKind::Message => {}
            PacketKind::Error => {
                eprintln!("receiver: {}", String::from_utf8_lossy(&payload));
                r.errors += 1;
                continue;
            }
            _ => continue,
        }
        let (k, sent_ns) = parse_text(&payload).context("a message imbench did not send")?;
        r.latency
            .saturating_record(since(epoch).saturating_sub(sent_ns).max(1));
        r.done_at = Instant::now();
        if k != next {
            r.out_of_order += 1;
        }
        next = k + 1;
        match seen.get_mut(k as usize) {
            Some(s) if !*s => {
                *s = true;
                r.delivered += 1;
                if let Some(w) = &window {
                    w.add_permits(1);
                }
            }
            _ => r.duplicates += 1,
        }
        if proto == Proto::V2 {
            max_seq = env.seq().unwrap_or(max_seq);
            unacked += 1;
            if unacked >= ACK_EVERY || r.delivered == expect || frames.drained() {
                push_packet(&mut buf, &Ack::new(max_seq).into());
                write.write_all(&buf).await?;
                buf.clear();
                unacked = 0;
            }
        }
    }
    Ok(r)
}

/// What a v2 sender was told.
pub struct Acked {
    pub acks: u64,
    pub errors: u64,
    pub done_at: Instant,
}

/// Counts the `Ack`s of a v2 sender's messages until `expect` arrived, the stream ended, or
/// nothing came for `idle`; each gives a permit back to `window` when there is one.
pub async fn count_acks(
    mut frames: Reader,
    expect: u64,
    window: Option<Arc<Semaphore>>,
    idle: Duration,
) -> anyhow::Result<Acked> {
    let mut a = Acked {
        acks: 0,
        errors: 0,
        done_at: Instant::now(),
    };
    while a.acks < expect {
        let Some(payload) = next_within(&mut frames, idle).await? else {
            a.errors += 1;
            break;
        };
        match Envelope::peek(&payload)?.kind() {
            PacketKind::Ack => {
                a.acks += 1;
                a.done_at = Instant::now();
                if let Some(w) = &window {
                    w.add_permits(1);
                }
            }
            PacketKind::Error => {
                eprintln!("sender: {}", String::from_utf8_lossy(&payload));
                a.errors += 1;
            }
            _ => {}
        }
    }
    Ok(a)
}

/// The next frame, or `None` when the stream ended or nothing came for `idle`.
async fn next_within(frames: &mut Reader, idle: Duration) -> anyhow::Result<Option<Bytes>> {
    match tokio::time::timeout(idle, frames.next()).await {
        Ok(Some(frame)) => Ok(Some(frame.context("receiving")?)),
        Ok(None) | Err(_) => Ok(None),
    }
}
