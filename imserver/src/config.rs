//! Every flag and limit of the server, each with its default and the reason for it.
//! Each flag can also be set through the environment variable named in `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// imserver: an instant-messaging server (HTTP API + TCP relay) on an embedded SQLite store.
#[derive(Parser, Debug, Clone)]
#[command(name = "imserver", version, about)]
pub struct Config {
    /// Address of the HTTP API (register, login, profile, friends). Port 0 picks a free port.
    #[arg(long, env = "IMSERVER_HTTP_ADDR", default_value = "0.0.0.0:6666")]
    pub http_addr: SocketAddr,

    /// Address of the TCP relay (length-prefixed JSON frames). Port 0 picks a free port.
    #[arg(long, env = "IMSERVER_TCP_ADDR", default_value = "0.0.0.0:8888")]
    pub tcp_addr: SocketAddr,

    /// Directory of the SQLite database; created on first start.
    #[arg(long, env = "IMSERVER_DATA_DIR", default_value = "./imserver-data")]
    pub data_dir: PathBuf,

    /// Who may speak for a user. `token`: a login token on every relay connection and HTTP
    /// request but `/regist` and `/login`. `open`: trust the id a version 1 client sends and
    /// require nothing over HTTP, as the Go server did (only safe on a trusted network).
    #[arg(long, env = "IMSERVER_AUTH", value_enum, default_value_t = AuthMode::Token)]
    pub auth: AuthMode,

    /// How long a login token stays valid, in seconds (default 30 days).
    #[arg(long, env = "IMSERVER_TOKEN_TTL", default_value_t = 30 * 24 * 3600)]
    pub token_ttl: u64,

    /// Accounts one client IP address may create per minute (`POST /regist`); 0: no limit.
    #[arg(long, env = "IMSERVER_REGIST_LIMIT", default_value_t = 10)]
    pub regist_limit: u32,

    /// Login attempts per user per minute (`POST /login`), so passwords cannot be guessed at
    /// speed; 0: no limit.
    #[arg(long, env = "IMSERVER_LOGIN_LIMIT", default_value_t = 10)]
    pub login_limit: u32,

    /// Passwords hashed or checked at once (each argon2id hash takes 19 MiB and tens of
    /// milliseconds of one core); further registrations and logins wait their turn.
    #[arg(long, env = "IMSERVER_PASSWORD_HASHERS", default_value_t = 2,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub password_hashers: usize,

    /// Create, if missing, user "1" (Wu) and user "2" (WuYW), password "123", friends of each
    /// other: what the Go server always started with.
    #[arg(long, env = "IMSERVER_DEMO")]
    pub demo: bool,

    /// Largest frame payload, in bytes, the relay accepts. A length prefix over it closes the
    /// connection before any payload is read.
    #[arg(long, env = "IMSERVER_MAX_FRAME_BYTES", default_value_t = 1024 * 1024)]
    pub max_frame_bytes: usize,

    /// Messages per second one relay connection may send (a token bucket; see
    /// `--rate-burst`); 0: no limit. Over it, a version 2 client gets `rate_limited` and sends
    /// again later; a version 1 connection is slowed down (its frames are read later), so
    /// nothing is lost.
    #[arg(long, env = "IMSERVER_RATE_LIMIT", default_value_t = 100)]
    pub rate_limit: u32,

    /// Messages a relay connection may send at once before `--rate-limit` applies.
    #[arg(long, env = "IMSERVER_RATE_BURST", default_value_t = 500)]
    pub rate_burst: u32,

    /// Relay connections open at once, in all. Over it, a connection is refused with
    /// `too_many_connections` at its `Regist`. Each takes a file descriptor; keep it below the
    /// process's open-file limit.
    #[arg(long, env = "IMSERVER_MAX_CONNECTIONS", default_value_t = 16 * 1024)]
    pub max_connections: usize,

    /// Connections over `--max-connections` that may stay open until their `Regist`, to be
    /// told `too_many_connections` (a v1 client, which cannot be told, is closed). Past these,
    /// a connection over the limit is closed as soon as it is accepted.
    #[arg(long, env = "IMSERVER_REFUSAL_BACKLOG", default_value_t = 64)]
    pub refusal_backlog: usize,

    /// Relay connections one user may have open at once (phone, desktop, ...).
    #[arg(long, env = "IMSERVER_MAX_CONNECTIONS_PER_USER", default_value_t = 16)]
    pub max_connections_per_user: usize,

    /// Seconds a new relay connection has to send `Regist` before it is closed.
    #[arg(long, env = "IMSERVER_REGIST_DEADLINE", default_value_t = 10)]
    pub regist_deadline: u64,

    /// Seconds a relay connection may stay silent (no frame at all; `Ping` counts) before it
    /// is closed; 0: never.
    #[arg(long, env = "IMSERVER_IDLE_TIMEOUT", default_value_t = 300)]
    pub idle_timeout: u64,

    /// Largest HTTP request body, in bytes; larger ones get 413.
    #[arg(long, env = "IMSERVER_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// Frames that may wait in one connection's send queue. A reader that falls this far
    /// behind is disconnected; its messages stay in the store and are sent when it
    /// reconnects. Bounds the memory a slow reader can hold.
    #[arg(long, env = "IMSERVER_SEND_QUEUE", default_value_t = 1024)]
    pub send_queue: usize,

    /// Payload bytes that may wait in one connection's send queue, whatever the frame count:
    /// past it, the reader is disconnected as for a full queue. `--send-queue` frames of up
    /// to `--max-frame-bytes` each would be a gigabyte. A frame always fits in an empty
    /// queue, so a limit below `--max-frame-bytes` never cuts off a reader that keeps up.
    #[arg(long, env = "IMSERVER_SEND_QUEUE_BYTES", default_value_t = 8 << 20)]
    pub send_queue_bytes: usize,

    /// Messages written to the store in one transaction at most (group commit). Larger
    /// batches amortise the commit better under load; a lone message never waits for a batch.
    #[arg(long, env = "IMSERVER_MAX_BATCH", default_value_t = 1024)]
    pub max_batch: usize,

    /// Store requests that may wait for the writer thread before senders are slowed down.
    #[arg(long, env = "IMSERVER_STORE_QUEUE", default_value_t = 16 * 1024)]
    pub store_queue: usize,

    /// Threads that read the database (inboxes on reconnect, accounts and tokens the cache
    /// does not hold yet), each with a read-only SQLite connection of its own: reads that may
    /// run at once. More wait their turn.
    #[arg(long, env = "IMSERVER_STORE_READERS", default_value_t = 4,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub store_readers: usize,

    /// Entries each in-memory cache holds at most: users, friend lists and tokens (what
    /// every HTTP request reads), and the writer's inbox heads. Past it, a cache is emptied
    /// and fills again with what is used.
    #[arg(long, env = "IMSERVER_CACHE_ENTRIES", default_value_t = 65_536)]
    pub cache_entries: usize,

    /// What an acknowledged write survives. `process`: a crash or `kill -9` of the server
    /// (the OS still holds the data). `power`: also power loss or a kernel crash (an fsync
    /// per transaction, slower).
    #[arg(long, env = "IMSERVER_DURABILITY", value_enum, default_value_t = Durability::Process)]
    pub durability: Durability,

    /// Stored messages replayed per store read when a user reconnects.
    #[arg(long, env = "IMSERVER_REPLAY_BATCH", default_value_t = 512)]
    pub replay_batch: usize,
}

/// How relay connections are authenticated.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Trust the user id a version 1 client sends in `Regist`, and ask HTTP callers for
    /// nothing (the Go server's model). Version 2 clients still need a token.
    Open,
    /// Require a login token: in every `Regist`, and as `Authorization: Bearer` over HTTP.
    Token,
}

/// What an acknowledged write survives; see `--durability`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Survives a crash of the server process.
    Process,
    /// Survives power loss too.
    Power,
}

impl Config {
    /// A configuration for tests and embedding: both ports 0 on 127.0.0.1, everything else
    /// at its default, data in `data_dir`.
    pub fn local(data_dir: impl Into<PathBuf>) -> Self {
        let mut config = Config::parse_from(["imserver"]);
        config.http_addr = "127.0.0.1:0".parse().expect("valid address");
        config.tcp_addr = "127.0.0.1:0".parse().expect("valid address");
        config.data_dir = data_dir.into();
        config
    }
}
