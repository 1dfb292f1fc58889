//! `imbench relay`: P sender→receiver pairs, each sending its share of M messages through
//! the server with at most W in flight; counts what arrived and how late.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::flow::{self, Acked, Received, Totals};
use crate::peer::{self, MessageFrames, Proto};
use crate::report::Report;
use crate::server::Server;
use crate::wire::{Endpoint, Transport};

#[derive(clap::Args, Debug)]
pub struct Opts {
    /// Sender→receiver pairs (two connections each).
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// Messages in all, shared evenly by the pairs.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Bytes of JSON per message.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Messages a pair may have sent but not yet received (0: unlimited).
    #[arg(long, default_value_t = 100)]
    window: usize,
    /// Protocol version of every connection.
    #[arg(long, value_enum, default_value = "1")]
    proto: Proto,
}

pub async fn run(
    nodes: &[Endpoint],
    server: &Server,
    idle: Duration,
    o: Opts,
) -> anyhow::Result<Report> {
    let ep = &nodes[0];
    let per_pair = o.messages / o.pairs as u64;
    let accounts = peer::accounts(ep.http, 2 * o.pairs, 100_000).await?;
    let mut pairs = Vec::with_capacity(o.pairs);
    for (i, pair) in accounts.chunks(2).enumerate() {
        let (from, to) = (&pair[0], &pair[1]);
        // With several nodes, each pair's sender and receiver are on different ones.
        let (s_node, r_node) = (&nodes[i % nodes.len()], &nodes[(i + 1) % nodes.len()]);
        let (s_frames, s_write) = peer::open(s_node, None, from, o.proto, 4096).await?;
        let (r_frames, r_write) = peer::open(r_node, None, to, o.proto, 64 * 1024).await?;
        let frames = MessageFrames::new(&from.id, &to.id, o.size, o.proto);
        pairs.push((frames, s_frames, s_write, r_frames, r_write));
    }
    if o.proto == Proto::V1 {
        // v1 has no Registered: give the last Regists a moment to take effect, or a
        // relay without storage would drop the first messages.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let before = server.sample()?;
    let epoch = Instant::now();
    let mut tasks = Vec::new();
    for (frames, s_frames, s_write, r_frames, r_write) in pairs {
        let window = flow::window(o.window);
        let sender = tokio::spawn(flow::send(s_write, frames, per_pair, window.clone(), epoch));
        let acks = tokio::spawn(async move {
            match o.proto {
                Proto::V2 => flow::count_acks(s_frames, per_pair, None, idle)
                    .await
                    .map(Some),
                Proto::V1 => Ok(None),
            }
        });
        let receiver = tokio::spawn(flow::receive(
            r_frames,
            r_write,
            per_pair,
            o.proto,
            Some(window),
            epoch,
            idle,
        ));
        tasks.push((sender, acks, receiver));
    }
    let mut got: Vec<Received> = Vec::new();
    let mut acked: Vec<Acked> = Vec::new();
    let mut send_errors = 0;
    for (sender, acks, receiver) in tasks {
        got.push(receiver.await.context("receiver task")??);
        if let Some(a) = acks.await.context("ack task")?? {
            acked.push(a);
        }
        // A sender still blocked on its window means messages went missing.
        if !sender.is_finished() {
            sender.abort();
        }
        match sender.await {
            Ok(Ok(_write)) => {}
            Ok(Err(e)) => {
                eprintln!("sender: {e:#}");
                send_errors += 1;
            }
            Err(_) => send_errors += 1,
        }
    }
    let after = server.sample()?;
    let t = Totals::of(&got, &acked, epoch)?;
    let delivered = t.delivered;
    let mut report = Report::new("relay");
    report
        .param("pairs", o.pairs)
        .param("messages", per_pair * o.pairs as u64)
        .param("size", o.size)
        .param("window", o.window)
        .param("proto", o.proto as u8 + 1)
        .param("nodes", nodes.len())
        .param(
            "transport",
            match ep.transport {
                Transport::Tcp => "tcp",
                Transport::Ws => "ws",
            },
        )
        .int("delivered", delivered)
        .int("missing", per_pair * o.pairs as u64 - delivered)
        .int("out_of_order", t.out_of_order)
        .int("duplicates", t.duplicates)
        .int("errors", t.errors + send_errors)
        .float("msgs_per_s", delivered as f64 / t.secs)
        .latency(&t.latency);
    if o.proto == Proto::V2 {
        report.int("acks", t.acks);
    }
    report.server(server, &before, &after, delivered);
    Ok(report)
}
