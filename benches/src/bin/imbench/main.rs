//! `imbench`: an end-to-end load generator for imserver (and anything else that speaks its
//! protocol, such as the `refrelay` reference relay next to it).
//!
//! It talks to the server over the real protocol from outside, as clients do, and with
//! `--pid` reads the server's CPU time and memory from `/proc`, so the figure that counts
//! on a machine shared with the load generator, server CPU per message, is measured
//! directly. Every run ends with one `RESULT key=value …` line for scripts.
//!
//! ## Layout
//!
//! - `wire`: TCP or WebSocket (`--transport`);
//! - `peer`: registering, accounts and tokens, the benchmark's messages;
//! - `flow`: the windowed sender and the counting receiver, shared by the modes;
//! - `relay`, `group`, `conns`, `offline`: the modes;
//! - `server`: `/proc/<pid>` readings; `report`: the output.

mod conns;
mod flow;
mod group;
mod offline;
mod peer;
mod relay;
mod report;
mod server;
mod wire;

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    about = "Load generator for imserver: relay throughput and latency, idle connections, offline storage"
)]
struct Cli {
    /// The relay's TCP address; several (comma-separated) for several nodes of one store:
    /// `relay` puts each pair's sender and receiver on different nodes, the other modes use
    /// the first.
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:8888",
        value_delimiter = ','
    )]
    tcp: Vec<SocketAddr>,
    /// The HTTP API's address (one per `--tcp`, in the same order). With it, users are
    /// registered and logged in, and connections carry tokens (the server needs
    /// `--regist-limit 0`); without it, the server must run with `--auth open`.
    #[arg(long, global = true, value_delimiter = ',')]
    http: Vec<SocketAddr>,
    /// How the connections reach the relay: `tcp` (`--tcp`), or `ws`: WebSocket on the HTTP
    /// port's `/ws` (`--http`; version 2 only).
    #[arg(long, global = true, value_enum, default_value = "tcp")]
    transport: wire::Transport,
    /// The server's PID, to report its CPU time per message and its memory; several
    /// (comma-separated) for several nodes: their CPU time is summed.
    #[arg(long, global = true, value_delimiter = ',')]
    pid: Vec<u32>,
    /// Processes whose CPU time is summed in too, by name (`postgres`, `nats-server`): every
    /// process of that name at each reading, each reported on its own as well.
    #[arg(long, global = true, value_delimiter = ',')]
    cpu_of: Vec<String>,
    /// Give up on a stream after this many seconds without a frame.
    #[arg(long, global = true, default_value_t = 10)]
    idle: u64,
    /// Threads of the load generator.
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// P sender→receiver pairs: throughput, latency, missing and out-of-order messages.
    Relay(relay::Opts),
    /// G groups of M online members, one sender each: the cost of a delivered copy.
    Group(group::Opts),
    /// N idle registered connections: connect rate, memory per connection, probes.
    Conns(conns::Opts),
    /// Messages to offline users, then their drain: store and replay rates.
    Offline(offline::Opts),
    /// Logs a user in and prints its token (for HTTP benchmarks with wrk).
    Token {
        #[arg(long)]
        user: String,
        #[arg(long)]
        password: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let server = server::Server::new(cli.pid, cli.cpu_of)?;
        let idle = Duration::from_secs(cli.idle);
        if !cli.http.is_empty() && cli.http.len() != cli.tcp.len() {
            anyhow::bail!("give as many --http addresses as --tcp ones, in the same order");
        }
        let nodes: Vec<wire::Endpoint> = cli
            .tcp
            .iter()
            .enumerate()
            .map(|(i, &tcp)| wire::Endpoint {
                transport: cli.transport,
                tcp,
                http: cli.http.get(i).copied(),
            })
            .collect();
        let ep = nodes[0];
        let report = match cli.mode {
            Mode::Relay(o) => relay::run(&nodes, &server, idle, o).await?,
            Mode::Group(o) => group::run(&ep, &server, idle, o).await?,
            Mode::Conns(o) => conns::run(&ep, &server, idle, o).await?,
            Mode::Offline(o) => offline::run(&ep, &server, idle, o).await?,
            Mode::Token { user, password } => {
                let http = ep
                    .http
                    .ok_or_else(|| anyhow::anyhow!("token needs --http"))?;
                let token = peer::login(&reqwest::Client::new(), http, &user, &password).await?;
                println!("{token}");
                return Ok(());
            }
        };
        report.print();
        Ok(())
    })
}
