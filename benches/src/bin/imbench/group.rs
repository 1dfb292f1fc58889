//! `imbench group`: G groups of M members, all online (protocol 2), each group with one
//! sender that keeps W messages unacknowledged; every other member counts what arrives.
//! What it measures is the cost of a delivered copy: one message becomes M - 1 of them,
//! each stored in its member's stream and written to its member's connection.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};

use crate::flow::{self, Acked, Received, Totals};
use crate::peer::{self, MessageFrames, Proto};
use crate::report::Report;
use crate::server::Server;
use crate::wire::Endpoint;

#[derive(clap::Args, Debug)]
pub struct Opts {
    /// Groups, each with its own sender.
    #[arg(long, default_value_t = 10)]
    groups: usize,
    /// Members of each group, its sender included.
    #[arg(long, default_value_t = 100)]
    members: usize,
    /// Messages in all, shared evenly by the groups.
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// Bytes of JSON per message.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Messages a group's sender may have sent but not yet seen acknowledged.
    #[arg(long, default_value_t = 100)]
    window: usize,
}

pub async fn run(
    ep: &Endpoint,
    server: &Server,
    idle: Duration,
    o: Opts,
) -> anyhow::Result<Report> {
    let Some(http) = ep.http else {
        bail!("group needs --http: groups are made over the HTTP API, and protocol 2 needs tokens");
    };
    if o.members < 2 {
        bail!("a group needs at least 2 members: its sender and someone to receive");
    }
    let per_group = o.messages / o.groups as u64;
    let accounts = peer::accounts(Some(http), o.groups * o.members, 0).await?;
    let client = reqwest::Client::new();
    let mut groups = Vec::with_capacity(o.groups);
    for members in accounts.chunks(o.members) {
        let (owner, others) = members.split_first().expect("members >= 2");
        let token = owner.token.as_deref().context("accounts have tokens")?;
        let ids: Vec<&str> = others.iter().map(|m| m.id.as_str()).collect();
        let made: serde_json::Value = client
            .post(format!("http://{http}/groups"))
            .bearer_auth(token)
            .json(&serde_json::json!({"name": "bench", "members": ids}))
            .send()
            .await?
            .error_for_status()
            .context("POST /groups (is --max-group-members at least --members?)")?
            .json()
            .await?;
        let id = made["group"].as_str().context("no group id")?.to_owned();
        groups.push((id, owner.clone(), others.to_vec()));
    }
    // Every member online, the receivers reading from the start of their streams (their
    // group_added comes first, and is passed over).
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for (id, owner, others) in &groups {
        let conns = futures::stream::iter(others.iter())
            .map(|m| peer::open(ep, None, m, Proto::V2, 64 * 1024))
            .buffered(16)
            .try_collect::<Vec<_>>()
            .await?;
        receivers.push(conns);
        let (frames, write) = peer::open(ep, None, owner, Proto::V2, 64 * 1024).await?;
        let messages = MessageFrames::new(&owner.id, id, o.size, Proto::V2);
        senders.push((messages, frames, write));
    }

    let before = server.sample()?;
    let epoch = Instant::now();
    let mut tasks = Vec::new();
    for ((messages, frames, write), conns) in senders.into_iter().zip(receivers) {
        let window = flow::window(o.window);
        let sender = tokio::spawn(flow::send(
            write,
            messages,
            per_group,
            window.clone(),
            epoch,
        ));
        let acks = tokio::spawn(flow::count_acks(frames, per_group, Some(window), idle));
        let counts: Vec<_> = conns
            .into_iter()
            .map(|(frames, write)| {
                tokio::spawn(flow::receive(
                    frames,
                    write,
                    per_group,
                    Proto::V2,
                    None,
                    epoch,
                    idle,
                ))
            })
            .collect();
        tasks.push((sender, acks, counts));
    }
    let mut got: Vec<Received> = Vec::new();
    let mut acked: Vec<Acked> = Vec::new();
    let mut send_errors = 0;
    for (sender, acks, counts) in tasks {
        for c in counts {
            got.push(c.await.context("receiver task")??);
        }
        acked.push(acks.await.context("ack task")??);
        if !sender.is_finished() {
            sender.abort();
        }
        if !matches!(sender.await, Ok(Ok(_))) {
            send_errors += 1;
        }
    }
    let after = server.sample()?;
    let t = Totals::of(&got, &acked, epoch)?;
    let copies = t.delivered;
    let expected = per_group * o.groups as u64 * (o.members as u64 - 1);
    let mut report = Report::new("group");
    report
        .param("groups", o.groups)
        .param("members", o.members)
        .param("messages", per_group * o.groups as u64)
        .param("size", o.size)
        .param("window", o.window)
        .int("copies", copies)
        .int("missing", expected - copies.min(expected))
        .int("out_of_order", t.out_of_order)
        .int("duplicates", t.duplicates)
        .int("errors", t.errors + send_errors)
        .int("acks", t.acks)
        .float("copies_per_s", copies as f64 / t.secs)
        .latency(&t.latency);
    if server.measured() {
        report.float("cpu_us_per_copy", before.cpu_us_per(&after, copies));
        report.float("rss_mib", after.rss_bytes as f64 / (1 << 20) as f64);
    }
    Ok(report)
}
