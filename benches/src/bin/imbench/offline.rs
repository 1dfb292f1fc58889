//! `imbench offline`: M messages to users who are not connected, sent by v2 senders that
//! count the server's `Ack`s (an `Ack` means stored); then the receivers connect and drain
//! their inboxes. Measures the store's write and replay rates.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::flow;
use crate::peer::{self, MessageFrames, Proto};
use crate::report::Report;
use crate::server::Server;
use crate::wire::Endpoint;

#[derive(clap::Args, Debug)]
pub struct Opts {
    /// Offline receivers, each with a sender of its own.
    #[arg(long, default_value_t = 50)]
    users: usize,
    /// Messages in all, shared evenly by the receivers.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Bytes of JSON per message.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Messages a sender may have sent but not yet seen acknowledged.
    #[arg(long, default_value_t = 256)]
    window: usize,
}

pub async fn run(
    ep: &Endpoint,
    server: &Server,
    idle: Duration,
    o: Opts,
) -> anyhow::Result<Report> {
    if ep.http.is_none() {
        bail!("offline mode acknowledges with protocol 2, which needs tokens: pass --http");
    }
    let per_user = o.messages / o.users as u64;
    let total = per_user * o.users as u64;
    let accounts = peer::accounts(ep.http, 2 * o.users, 0).await?;
    let (senders, receivers): (Vec<_>, Vec<_>) = accounts
        .chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .unzip();

    // Store: every sender sends its share to its (offline) receiver.
    let mut conns = Vec::new();
    for (from, to) in senders.iter().zip(&receivers) {
        let (frames, write) = peer::open(ep, None, from, Proto::V2, 4096).await?;
        conns.push((
            MessageFrames::new(&from.id, &to.id, o.size, Proto::V2),
            frames,
            write,
        ));
    }
    let before = server.sample()?;
    let epoch = Instant::now();
    let mut tasks = Vec::new();
    for (messages, frames, write) in conns {
        let window = flow::window(o.window);
        let sender = tokio::spawn(flow::send(write, messages, per_user, window.clone(), epoch));
        let acks = tokio::spawn(flow::count_acks(frames, per_user, Some(window), idle));
        tasks.push((sender, acks));
    }
    let (mut stored, mut errors, mut stored_at) = (0, 0, epoch);
    let mut writes = Vec::new();
    for (sender, acks) in tasks {
        let a = acks.await.context("ack task")??;
        stored += a.acks;
        errors += a.errors;
        stored_at = stored_at.max(a.done_at);
        if !sender.is_finished() {
            sender.abort();
        }
        if let Ok(Ok(write)) = sender.await {
            writes.push(write); // hold the senders' connections open until the end
        }
    }
    let stored_sample = server.sample()?;
    let store_secs = stored_at.duration_since(epoch).as_secs_f64();

    // Drain: the receivers connect and replay their inboxes.
    let drain_start = Instant::now();
    let mut tasks = Vec::new();
    for to in receivers {
        let ep = *ep;
        tasks.push(tokio::spawn(async move {
            let (frames, write) = peer::open(&ep, None, &to, Proto::V2, 64 * 1024).await?;
            flow::receive(frames, write, per_user, Proto::V2, None, epoch, idle).await
        }));
    }
    let (mut drained, mut drained_at) = (0, drain_start);
    for task in tasks {
        let r = task.await.context("receiver task")??;
        drained += r.delivered;
        errors += r.errors;
        drained_at = drained_at.max(r.done_at);
    }
    let after = server.sample()?;
    let drain_secs = drained_at.duration_since(drain_start).as_secs_f64();

    let mut report = Report::new("offline");
    report
        .param("users", o.users)
        .param("messages", total)
        .param("size", o.size)
        .int("stored", stored)
        .int("drained", drained)
        .int("missing", total - drained.min(total))
        .int("errors", errors)
        .float("store_per_s", stored as f64 / store_secs)
        .float("drain_per_s", drained as f64 / drain_secs);
    if server.measured() {
        report
            .float(
                "cpu_us_per_store",
                before.cpu_us_per(&stored_sample, stored),
            )
            .float(
                "cpu_us_per_drain",
                stored_sample.cpu_us_per(&after, drained),
            )
            .float("rss_mib", after.rss_bytes as f64 / (1 << 20) as f64);
    }
    Ok(report)
}
