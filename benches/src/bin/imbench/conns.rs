//! `imbench conns`: N registered idle connections, held for T seconds, then probe messages
//! to a random sample of them. Measures what an idle connection costs the server.
//!
//! Over TCP each connection is a different user with no token (protocol 1), so the server
//! must run with `--auth open` (logging in tens of thousands of users would measure
//! password hashing). Over WebSocket (protocol 2, tokens) `--per-user` connections share
//! each account, and the server needs `--max-connections-per-user` at least that.
//! One client address has about 28,000 ephemeral ports; connections are spread over
//! several source addresses of 127.0.0.0/8 so that N is limited by file descriptors only.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::BytesMut;
use futures::StreamExt;
use improto::{Envelope, Message, PacketKind};

use crate::peer::{self, Account, Proto};
use crate::report::Report;
use crate::server::Server;
use crate::wire::{Endpoint, Transport};

#[derive(clap::Args, Debug)]
pub struct Opts {
    /// Connections to open and register.
    #[arg(long, default_value_t = 19_000)]
    conns: usize,
    /// Seconds to hold them idle before probing.
    #[arg(long, default_value_t = 10)]
    hold: u64,
    /// Connections that get a probe message.
    #[arg(long, default_value_t = 1000)]
    probes: usize,
    /// Source addresses 127.0.0.1 … 127.0.0.N, used round-robin.
    #[arg(long, default_value_t = 16)]
    sources: u8,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 256)]
    parallel: usize,
    /// Over WebSocket: connections per account.
    #[arg(long, default_value_t = 100)]
    per_user: usize,
}

/// Counters shared by the tasks that hold the connections.
#[derive(Default)]
struct Held {
    /// Probe messages received.
    probes: AtomicU64,
    /// Connections the server closed.
    dropped: AtomicU64,
}

const BASE_ID: u64 = 1_000_000;

pub async fn run(
    ep: &Endpoint,
    server: &Server,
    idle: Duration,
    o: Opts,
) -> anyhow::Result<Report> {
    // Who each connection is, and who probes them.
    let (accounts, proto, per_user) = match ep.transport {
        Transport::Tcp => {
            let ids = (0..=o.conns as u64).map(|i| Account {
                id: (BASE_ID + i).to_string(),
                token: None,
            });
            (ids.collect::<Vec<_>>(), Proto::V1, 1)
        }
        Transport::Ws => {
            let per_user = o.per_user.max(1);
            let users = o.conns.div_ceil(per_user);
            let accounts = peer::accounts(ep.http, users + 1, 0)
                .await
                .context("accounts (the server needs --regist-limit 0)")?;
            (accounts, Proto::V2, per_user)
        }
    };
    let (prober, accounts) = accounts.split_last().context("no accounts")?;
    let idle_server = server.sample()?;
    let held = Arc::new(Held::default());
    let start = Instant::now();
    let sources = o.sources.max(1);
    let opened: Vec<anyhow::Result<()>> = futures::stream::iter(0..o.conns)
        .map(|i| {
            let held = held.clone();
            let account = accounts[i / per_user].clone();
            async move {
                let ip = Ipv4Addr::new(127, 0, 0, 1 + (i % sources as usize) as u8);
                let (mut frames, write) = peer::open(ep, Some(ip), &account, proto, 64).await?;
                tokio::spawn(async move {
                    // Keep the write half: dropping it would half-close the connection.
                    let _write = write;
                    while let Some(Ok(frame)) = frames.next().await {
                        if let Ok(env) = Envelope::peek(&frame)
                            && env.kind() == PacketKind::Message
                        {
                            held.probes.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    held.dropped.fetch_add(1, Ordering::Relaxed);
                });
                Ok(())
            }
        })
        .buffer_unordered(o.parallel.max(1))
        .collect()
        .await;
    let connect_secs = start.elapsed().as_secs_f64();
    let failures = opened.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = opened.iter().find(|r| r.is_err()) {
        eprintln!("conns: first failure: {e:#}");
    }
    let ok = (o.conns - failures) as u64;
    // Let the last Regists take effect before reading the server's memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let registered = server.sample()?;
    tokio::time::sleep(Duration::from_secs(o.hold)).await;
    let after_hold = server.sample()?;
    let dropped = held.dropped.load(Ordering::Relaxed);

    // Probes to a random sample of the users: each reaches every connection of its user.
    let users = accounts.len();
    let sample = rand::seq::index::sample(&mut rand::rng(), users, o.probes.min(users));
    let (_frames, mut write) = peer::open(ep, None, prober, proto, 64).await?;
    let mut buf = BytesMut::new();
    for i in sample.iter() {
        let to = &accounts[i].id;
        peer::push_packet(&mut buf, &Message::new(&prober.id, to, "probe").into());
    }
    write.write_all(&buf).await?;
    let probes = sample
        .iter()
        .map(|i| (o.conns - i * per_user).min(per_user) as u64)
        .sum::<u64>();
    let deadline = Instant::now() + idle;
    while held.probes.load(Ordering::Relaxed) < probes && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let per_conn = registered.rss_bytes.saturating_sub(idle_server.rss_bytes) / ok.max(1);
    let mut report = Report::new("conns");
    report
        .param("conns", o.conns)
        .param("hold_s", o.hold)
        .int("connected", ok)
        .int("failures", failures as u64)
        .float("connects_per_s", ok as f64 / connect_secs)
        .int("dropped", dropped)
        .int("probes_sent", probes)
        .int("probes_delivered", held.probes.load(Ordering::Relaxed));
    if server.measured() {
        report
            .float(
                "rss_idle_mib",
                idle_server.rss_bytes as f64 / (1 << 20) as f64,
            )
            .float("rss_mib", registered.rss_bytes as f64 / (1 << 20) as f64)
            .float(
                "rss_after_hold_mib",
                after_hold.rss_bytes as f64 / (1 << 20) as f64,
            )
            .int("rss_bytes_per_conn", per_conn)
            .float(
                "cpu_us_per_connect",
                idle_server.cpu_us_per(&registered, ok),
            );
    }
    Ok(report)
}
