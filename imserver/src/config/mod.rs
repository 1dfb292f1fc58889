//! Every flag and limit of the server, each with its default and the reason for it, grouped
//! by the room that uses it. Each flag can also be set through the environment variable
//! named in `--help`.
//!
//! The defaults live in one place, the `default_value` of each flag. [`Config::default`]
//! reads them from there without looking at the environment, so a test's configuration
//! never depends on the shell that runs it; only [`Config::parse`] (the binary) reads
//! `IMSERVER_*` variables.
//!
//! Durations take a unit (`500ms`, `10s`, `5m`, `30days`); a bare number is seconds.
//!
//! Every value is checked here, by the parser of its flag, whether it comes from the command
//! line, the environment or `--config FILE` (`file.rs`): a count of 0 is refused unless the
//! flag's help says what 0 means.

mod file;

pub use file::{ConfigError, effective, load};

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, ValueEnum};

/// imserver: an instant-messaging server (HTTP API + TCP relay) on an embedded SQLite store.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "imserver",
    version,
    about,
    after_help = "Commands (as the first argument):\n  \
    print-config  print the effective configuration as TOML, every flag with its help\n  \
    backup        copy a running server's database: backup --data-dir DIR --to FILE\n  \
    restore       put a backup back: restore --from FILE --data-dir DIR [--replace]\n  \
    migrate       copy a SQLite store into PostgreSQL: migrate --from sqlite:DIR --to postgres://…"
)]
pub struct Config {
    /// A TOML file of flags (`max-connections = 20000`, keys as the flags are named); the
    /// command line and the environment win over it. See `imserver print-config`.
    #[arg(long, env = "IMSERVER_CONFIG")]
    pub config: Option<PathBuf>,

    /// Create, if missing, user "1" (Wu) and user "2" (WuYW), password "123", friends of each
    /// other: what the Go server always started with.
    #[arg(long, env = "IMSERVER_DEMO")]
    pub demo: bool,

    #[command(flatten)]
    pub net: NetConfig,

    #[command(flatten)]
    pub http: HttpConfig,

    #[command(flatten)]
    pub relay: RelayConfig,

    #[command(flatten)]
    pub auth: AuthConfig,

    #[command(flatten)]
    pub social: SocialConfig,

    #[command(flatten)]
    pub store: StoreConfig,

    #[command(flatten)]
    pub bus: BusConfig,
}

/// The message bus between nodes that share a PostgreSQL store.
#[derive(Args, Debug, Clone)]
pub struct BusConfig {
    /// A NATS server (`nats://host:4222`) that carries live delivery between the nodes of
    /// one PostgreSQL store: each committed entry, typing and presence go to the nodes
    /// where their user is online, and every node forgets what another changed (tokens,
    /// friends, blocks, groups). Unset: this node is alone.
    #[arg(long, env = "IMSERVER_BUS")]
    pub bus: Option<String>,

    /// The first part of every subject this cluster uses on the bus (`PREFIX.user.ID`,
    /// `PREFIX.cache`): clusters that share a NATS server need different ones.
    #[arg(long, env = "IMSERVER_BUS_PREFIX", default_value = "im", value_parser = subject_token)]
    pub bus_prefix: String,

    /// Bus messages (entries for one user, live frames, cache notices) waiting to be
    /// published. Past it a user's entries are not sent, and the other nodes are told to
    /// read that user's stream from the store instead: nothing is lost.
    #[arg(long, env = "IMSERVER_BUS_QUEUE", default_value_t = 65_536, value_parser = at_least_one)]
    pub bus_queue: usize,

    /// For tests: leave out every Nth bus message of entries, as a lossy bus would (0:
    /// none). What is left out is repaired from the store.
    #[arg(
        long,
        env = "IMSERVER_BUS_DROP_EVERY",
        default_value_t = 0,
        hide = true
    )]
    pub bus_drop_every: u64,
}

/// A NATS subject token: letters, digits, `-` and `_`.
fn subject_token(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(s.to_owned())
    } else {
        Err("letters, digits, `-` and `_` only".into())
    }
}

/// What every listener shares: TLS and the limit per client address.
#[derive(Args, Debug, Clone)]
pub struct NetConfig {
    /// TLS certificate chain (PEM, the server's certificate first). With `--tls-key`, every
    /// listener speaks TLS 1.2 or 1.3: the relay, HTTP and WebSocket (`wss://`). Both files
    /// are read again on `SIGHUP`; new connections get what was read, open ones keep theirs.
    #[arg(long, env = "IMSERVER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1) of `--tls-cert`.
    #[arg(long, env = "IMSERVER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Connections one client address may have open at once, over HTTP, WebSocket and the
    /// relay together; more are closed as soon as they are accepted. 0: no limit. Clients
    /// behind one NAT share an address.
    #[arg(long, env = "IMSERVER_MAX_CONNECTIONS_PER_IP", default_value_t = 1024)]
    pub max_connections_per_ip: usize,
}

/// The HTTP API.
#[derive(Args, Debug, Clone)]
pub struct HttpConfig {
    /// Address of the HTTP API (register, login, profile, friends, history). Port 0 picks a
    /// free port.
    #[arg(
        id = "http-addr",
        long = "http-addr",
        env = "IMSERVER_HTTP_ADDR",
        default_value = "0.0.0.0:6666"
    )]
    pub addr: SocketAddr,

    /// Largest HTTP request body, in bytes; larger ones get 413.
    #[arg(long, env = "IMSERVER_MAX_BODY_BYTES", default_value_t = 64 * 1024,
          value_parser = at_least_one)]
    pub max_body_bytes: usize,
    /// Web origins whose pages may open a WebSocket on `/ws`, comma-separated
    /// (`https://chat.example.com`), or `*` for any. Pages served by this server itself are
    /// always allowed; an upgrade that names any other origin gets `403`, so that another
    /// site cannot act for a logged-in user. Clients that are not browsers send no origin
    /// and are not affected.
    #[arg(long, env = "IMSERVER_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// How long a client has to send a whole request head, from its first byte (or from
    /// connecting, for the first request), and to finish a TLS handshake. A connection that
    /// takes longer is closed.
    #[arg(long, env = "IMSERVER_HTTP_HEADER_TIMEOUT", default_value = "10s",
          value_parser = positive_duration)]
    pub http_header_timeout: Duration,

    /// How long an HTTP connection may stay open, idle, waiting for its next request. 0: no
    /// keep-alive (one request per connection).
    #[arg(long, env = "IMSERVER_HTTP_KEEPALIVE_TIMEOUT", default_value = "60s",
          value_parser = duration)]
    pub http_keepalive_timeout: Duration,

    /// HTTP connections open at once (WebSocket connections count here only until they are
    /// upgraded; then under `--max-connections`). More are closed as soon as they are
    /// accepted. Each takes a file descriptor: with `--max-connections`, keep it below the
    /// process's open-file limit.
    #[arg(long, env = "IMSERVER_MAX_HTTP_CONNECTIONS", default_value_t = 2048,
          value_parser = at_least_one)]
    pub max_http_connections: usize,

    /// Address of `GET /metrics` (Prometheus text format), on a port of its own so that it is
    /// not public with the API. Unset: no metrics.
    #[arg(long, env = "IMSERVER_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// How long a stopping server keeps serving with `GET /readyz` answering `503`, so that
    /// a load balancer polling it stops sending clients before the listeners close. 0: stop
    /// at once.
    #[arg(long, env = "IMSERVER_SHUTDOWN_DELAY", default_value = "0s", value_parser = duration)]
    pub shutdown_delay: Duration,
}

/// The relay: connections, their limits, and what may be relayed.
#[derive(Args, Debug, Clone)]
pub struct RelayConfig {
    /// Address of the TCP relay (length-prefixed JSON frames). Port 0 picks a free port.
    #[arg(
        id = "tcp-addr",
        long = "tcp-addr",
        env = "IMSERVER_TCP_ADDR",
        default_value = "0.0.0.0:8888"
    )]
    pub addr: SocketAddr,

    /// Largest frame payload, in bytes, the relay accepts. A length prefix over it closes the
    /// connection before any payload is read.
    #[arg(long, env = "IMSERVER_MAX_FRAME_BYTES", default_value_t = 1024 * 1024,
          value_parser = at_least_one)]
    pub max_frame_bytes: usize,

    /// Messages per second one relay connection may send (a token bucket; see
    /// `--rate-burst`); 0: no limit. Over it, a version 2 client gets `rate_limited` and sends
    /// again later; a version 1 connection is slowed down (its frames are read later), so
    /// nothing is lost.
    #[arg(long, env = "IMSERVER_RATE_LIMIT", default_value_t = 100)]
    pub rate_limit: u32,

    /// Messages a relay connection may send at once before `--rate-limit` applies.
    #[arg(long, env = "IMSERVER_RATE_BURST", default_value_t = 500,
          value_parser = at_least_one_u32)]
    pub rate_burst: u32,

    /// Relay connections open at once, in all (TCP and WebSocket together). Over it, a
    /// connection is refused with `too_many_connections` at its `Regist`. Each takes a file
    /// descriptor; keep it below the process's open-file limit.
    #[arg(long, env = "IMSERVER_MAX_CONNECTIONS", default_value_t = 16 * 1024,
          value_parser = at_least_one)]
    pub max_connections: usize,

    /// Connections over `--max-connections` that may stay open until their `Regist`, to be
    /// told `too_many_connections` (a v1 client, which cannot be told, is closed). Past these,
    /// a connection over the limit is closed as soon as it is accepted. 0: none wait; every
    /// connection over the limit is closed at once.
    #[arg(long, env = "IMSERVER_REFUSAL_BACKLOG", default_value_t = 64)]
    pub refusal_backlog: usize,

    /// Relay connections one user may have open at once (phone, desktop, ...).
    #[arg(long, env = "IMSERVER_MAX_CONNECTIONS_PER_USER", default_value_t = 16,
          value_parser = at_least_one)]
    pub max_connections_per_user: usize,

    /// How long a new relay connection has to send `Regist` before it is closed.
    #[arg(long, env = "IMSERVER_REGIST_DEADLINE", default_value = "10s",
          value_parser = positive_duration)]
    pub regist_deadline: Duration,

    /// How long a relay connection may stay silent (no frame at all; `Ping` counts) before
    /// it is closed; 0: never.
    #[arg(long, env = "IMSERVER_IDLE_TIMEOUT", default_value = "300s", value_parser = duration)]
    pub idle_timeout: Duration,
    /// How often the server pings a WebSocket connection (browsers cannot send WebSocket
    /// pings of their own); a peer that has sent nothing, not even a pong, for two of these
    /// is closed. 0: never.
    #[arg(long, env = "IMSERVER_WS_PING_INTERVAL", default_value = "30s", value_parser = duration)]
    pub ws_ping_interval: Duration,

    /// Frames that may wait in one connection's send queue. A reader that falls this far
    /// behind is disconnected; its messages stay in the store and are sent when it
    /// reconnects. Bounds the memory a slow reader can hold.
    #[arg(long, env = "IMSERVER_SEND_QUEUE", default_value_t = 1024, value_parser = at_least_one)]
    pub send_queue: usize,

    /// Payload bytes that may wait in one connection's send queue, whatever the frame count:
    /// past it, the reader is disconnected as for a full queue. `--send-queue` frames of up
    /// to `--max-frame-bytes` each would be a gigabyte. A frame always fits in an empty
    /// queue, so a limit below `--max-frame-bytes` never cuts off a reader that keeps up.
    #[arg(long, env = "IMSERVER_SEND_QUEUE_BYTES", default_value_t = 8 << 20,
          value_parser = at_least_one)]
    pub send_queue_bytes: usize,

    /// Stored stream entries replayed per store read when a user reconnects.
    #[arg(long, env = "IMSERVER_REPLAY_BATCH", default_value_t = 512, value_parser = at_least_one)]
    pub replay_batch: usize,

    /// `Typing` frames one connection may send per second (and at once); more are dropped
    /// without a word.
    #[arg(long, env = "IMSERVER_TYPING_LIMIT", default_value_t = NonZeroU32::new(2).expect("2"))]
    pub typing_limit: NonZeroU32,

    /// How long a user's connections coming or going waits before their friends are told
    /// (`Presence`): a user back (or gone) again within it tells nobody anything. 0: at once.
    #[arg(long, env = "IMSERVER_PRESENCE_DELAY", default_value = "2s", value_parser = duration)]
    pub presence_delay: Duration,

    /// Who may send a message to whom. `any`: anyone to anyone, as the Go server did.
    /// `friends`: only between friends; a message to anyone else is refused (`not_friends`
    /// on v2, dropped and logged on v1) and not stored.
    #[arg(long, env = "IMSERVER_RELAY_POLICY", value_enum, default_value_t = RelayPolicy::Any)]
    pub relay_policy: RelayPolicy,
}

/// Accounts, passwords and login tokens.
#[derive(Args, Debug, Clone)]
pub struct AuthConfig {
    /// Who may speak for a user. `token`: a login token on every relay connection and HTTP
    /// request but `/regist` and `/login`. `open`: trust the id a version 1 client sends and
    /// require nothing over HTTP, as the Go server did (only safe on a trusted network).
    #[arg(long, env = "IMSERVER_AUTH", value_enum, default_value_t = AuthMode::Token)]
    pub auth: AuthMode,

    /// How long a login token stays valid.
    #[arg(long, env = "IMSERVER_TOKEN_TTL", default_value = "30days",
          value_parser = positive_duration)]
    pub token_ttl: Duration,

    /// Accounts one client IP address may create per minute (`POST /regist`); 0: no limit.
    #[arg(long, env = "IMSERVER_REGIST_LIMIT", default_value_t = 10)]
    pub regist_limit: u32,

    /// Login attempts per user per minute (`POST /login`), so passwords cannot be guessed at
    /// speed; 0: no limit.
    #[arg(long, env = "IMSERVER_LOGIN_LIMIT", default_value_t = 10)]
    pub login_limit: u32,

    /// Passwords hashed or checked at once (each argon2id hash takes 19 MiB and tens of
    /// milliseconds of one core); further registrations and logins wait their turn.
    #[arg(long, env = "IMSERVER_PASSWORD_HASHERS", default_value_t = 2, value_parser = at_least_one)]
    pub password_hashers: usize,

    /// The operators' token for the admin API (`/admin/…`, as `Authorization: Bearer`; what
    /// `imctl admin` sends): at least 32 characters, better from the environment than on a
    /// command line others can read. Unset: the admin API answers 403 to everyone.
    #[arg(long, env = "IMSERVER_ADMIN_TOKEN", hide_env_values = true, value_parser = secret)]
    pub admin_token: Option<Secret>,
}

/// Where the store is; see `--store`.
#[derive(Clone, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    /// A PostgreSQL connection URL, which may hold a password.
    Postgres(Secret),
}

impl Backend {
    /// As it may be shown: a URL without its password.
    pub fn redacted(&self) -> String {
        match self {
            Backend::Sqlite => "sqlite".into(),
            Backend::Postgres(Secret(url)) => redact_url(url),
        }
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// `url` with the password of its `user:password@` part replaced by `…`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.into();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or("");
            format!("{scheme}://{name}:…@{host}{path}")
        }
        _ => url.into(),
    }
}

fn backend(s: &str) -> Result<Backend, String> {
    if s == "sqlite" {
        return Ok(Backend::Sqlite);
    }
    if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        s.parse::<tokio_postgres::Config>()
            .map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
        return Ok(Backend::Postgres(Secret(s.to_owned())));
    }
    Err("`sqlite`, or a PostgreSQL URL such as postgres://user@localhost/imserver".into())
}

fn at_least_two(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 2 => Ok(n),
        _ => Err("must be at least 2 (one for the writer, one for reads)".into()),
    }
}

/// A secret from the configuration: never printed, in logs or by `print-config`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// A secret long enough not to be guessed.
fn secret(s: &str) -> Result<Secret, String> {
    if s.chars().count() < 32 {
        return Err("must be at least 32 characters (say, `openssl rand -hex 32`)".into());
    }
    Ok(Secret(s.to_owned()))
}

/// Friends, requests, blocks and groups.
#[derive(Args, Debug, Clone)]
pub struct SocialConfig {
    /// Friend requests one user may send per hour (`POST /friends/requests`); 0: no limit.
    #[arg(long, env = "IMSERVER_FRIEND_REQUEST_LIMIT", default_value_t = 30)]
    pub friend_request_limit: u32,

    /// Members of one group at most, its owner included. Every group message is stored in
    /// each member's stream.
    #[arg(long, env = "IMSERVER_MAX_GROUP_MEMBERS", default_value_t = 1000, value_parser = at_least_one)]
    pub max_group_members: usize,
}

/// The database.
#[derive(Args, Debug, Clone)]
pub struct StoreConfig {
    /// Where the data lives: `sqlite`, an embedded database in `--data-dir` (the default:
    /// nothing to install), or a PostgreSQL URL (`postgres://user:password@host:5432/db`),
    /// which several imserver nodes may share (see deploy/cluster.md).
    #[arg(long, env = "IMSERVER_STORE", default_value = "sqlite", value_parser = backend,
          hide_env_values = true)]
    pub store: Backend,

    /// PostgreSQL connections this node keeps at most: one for the writer, the rest for
    /// reads (streams on reconnect, history, what the cache does not hold yet).
    #[arg(long, env = "IMSERVER_STORE_CONNECTIONS", default_value_t = 8, value_parser = at_least_two)]
    pub store_connections: usize,

    /// Directory of the SQLite database; created on first start.
    #[arg(long, env = "IMSERVER_DATA_DIR", default_value = "./imserver-data")]
    pub data_dir: PathBuf,

    /// What an acknowledged write survives. `process`: a crash or `kill -9` of the server
    /// (the OS still holds the data). `power`: also power loss or a kernel crash (an fsync
    /// per transaction, slower).
    #[arg(long, env = "IMSERVER_DURABILITY", value_enum, default_value_t = Durability::Process)]
    pub durability: Durability,

    /// Writes in one store transaction at most (group commit). Larger batches amortise the
    /// commit better under load; a lone write never waits for a batch.
    #[arg(long, env = "IMSERVER_MAX_BATCH", default_value_t = 1024, value_parser = at_least_one)]
    pub max_batch: usize,

    /// Message payload bytes in one store transaction at most: a transaction keeps all of
    /// its messages in one row (SQLite's largest is 1 GB), and a batch of large frames
    /// commits sooner.
    #[arg(long, env = "IMSERVER_MAX_BATCH_BYTES", default_value_t = 16 << 20,
          value_parser = batch_bytes)]
    pub max_batch_bytes: usize,

    /// Messages (and other writes) that may wait for the writer thread before senders are
    /// slowed down.
    #[arg(long, env = "IMSERVER_STORE_QUEUE", default_value_t = 16 * 1024, value_parser = at_least_one)]
    pub store_queue: usize,

    /// Threads that read the database (streams on reconnect, history, accounts and tokens
    /// the cache does not hold yet), each with a read-only SQLite connection of its own:
    /// reads that may run at once. More wait their turn.
    #[arg(long, env = "IMSERVER_STORE_READERS", default_value_t = 4, value_parser = at_least_one)]
    pub store_readers: usize,

    /// Whether a `Read` tells the senders of the messages read (an event of kind `read` in
    /// their streams). `off`: read positions are kept, and nobody is told.
    #[arg(long, env = "IMSERVER_READ_RECEIPTS", value_enum, default_value_t = Switch::On)]
    pub read_receipts: Switch,

    /// Newly read messages one `Read` looks through, newest first, to find whom to tell;
    /// the senders of older ones get no receipt for it (a client that reads as it goes
    /// never reaches it).
    #[arg(long, env = "IMSERVER_READ_RECEIPT_SCAN", default_value_t = 1000, value_parser = at_least_one)]
    pub read_receipt_scan: usize,

    /// Chunk rows (one per stream per transaction) written in the order they come, before
    /// the writer moves them, sorted, into the streams' tables. More make a transaction that
    /// appends to many streams (a group message) cheaper, and reads look through more.
    #[arg(long, env = "IMSERVER_FOLD_ROWS", default_value_t = 16_384, value_parser = at_least_one)]
    pub fold_rows: usize,

    /// How often acknowledgement positions are written to the database (they are kept in
    /// memory in between, and always written at shutdown). A crash forgets at most this
    /// much of them: those entries are replayed again to a device that connects without
    /// `lastSeq`, never lost.
    #[arg(long, env = "IMSERVER_ACK_FLUSH", default_value = "1s", value_parser = positive_duration)]
    pub ack_flush: Duration,

    /// How long acknowledged stream entries (messages, copies of sent ones, events) are
    /// kept: older ones are deleted in the background, once every device of the user has
    /// acknowledged them (`30days`, `12h`), or `forever`. History and replay then start at
    /// the oldest entry kept; a device that resumes from before it is told (`oldestSeq`).
    #[arg(long, env = "IMSERVER_RETENTION", default_value = "forever", value_parser = keep)]
    pub retention: Keep,

    /// How long any stream entry is kept, acknowledged or not (`90days`), or `forever`: a
    /// device that stays away longer loses what it did not get.
    #[arg(long, env = "IMSERVER_RETENTION_UNACKED", default_value = "forever", value_parser = keep)]
    pub retention_unacked: Keep,

    /// How often a retention sweep starts over (each looks at every stream).
    #[arg(long, env = "IMSERVER_RETENTION_EVERY", default_value = "1s", value_parser = positive_duration)]
    pub retention_every: Duration,

    /// The writer's time one step of a retention sweep takes, about: a step is part of one
    /// store transaction, which messages committed with it wait for.
    #[arg(long, env = "IMSERVER_RETENTION_STEP", default_value = "200us", value_parser = positive_duration)]
    pub retention_step: Duration,

    /// The wait between two steps of a sweep that has more to delete: with
    /// `--retention-step`, the share of the writer's time the sweep takes at most.
    #[arg(long, env = "IMSERVER_RETENTION_PAUSE", default_value = "20ms", value_parser = positive_duration)]
    pub retention_pause: Duration,

    /// Entries each in-memory cache holds at most: users, friend lists and tokens (what
    /// every HTTP request reads), and the writer's stream heads. Past it, a cache is emptied
    /// and fills again with what is used.
    #[arg(long, env = "IMSERVER_CACHE_ENTRIES", default_value_t = 65_536, value_parser = at_least_one)]
    pub cache_entries: usize,
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

/// Who may message whom; see `--relay-policy`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayPolicy {
    /// Anyone may message anyone.
    Any,
    /// Only friends may message each other.
    Friends,
}

/// A feature on or off.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    On,
    Off,
}

/// What an acknowledged write survives; see `--durability`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Survives a crash of the server process.
    Process,
    /// Survives power loss too.
    Power,
}

impl Default for Config {
    /// Every flag at its default, whatever the environment says.
    fn default() -> Self {
        let command = Config::command().mut_args(|arg| arg.env(None));
        let matches = command
            .try_get_matches_from(["imserver"])
            .expect("the defaults parse");
        Config::from_arg_matches(&matches).expect("the defaults parse")
    }
}

impl Config {
    /// A configuration for tests and embedding: both ports 0 on 127.0.0.1, everything else
    /// at its default (never from the environment), data in `data_dir`.
    pub fn local(data_dir: impl Into<PathBuf>) -> Self {
        let mut config = Config::default();
        let local: SocketAddr = "127.0.0.1:0".parse().expect("valid address");
        config.http.addr = local;
        config.relay.addr = local;
        config.store.data_dir = data_dir.into();
        config
    }
}

/// A duration with a unit (`500ms`, `10s`, `5m`, `2h`, `30days`), or a bare number of
/// seconds, as these flags took before they had units.
fn duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 10s, 5m, 30days)"))
}

/// How long something is kept: `forever` (`None`), or a duration of more than 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Keep(pub Option<Duration>);

fn keep(s: &str) -> Result<Keep, String> {
    if s == "forever" {
        return Ok(Keep(None));
    }
    positive_duration(s)
        .map(|d| Keep(Some(d)))
        .map_err(|e| format!("{e}, or forever"))
}

/// A duration that must not be 0.
fn positive_duration(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d.is_zero() => Err("must be more than 0".into()),
        d => Ok(d),
    }
}

/// `--max-batch-bytes`: at least 1, and far enough below SQLite's 1 GB row limit that a
/// batch may pass it by one connection's burst of frames.
fn batch_bytes(s: &str) -> Result<usize, String> {
    const MAX: usize = 256 << 20;
    match at_least_one(s)? {
        n if n > MAX => Err(format!("must be at most {MAX} (256 MiB)")),
        n => Ok(n),
    }
}

/// A `u32` count that must be at least 1.
fn at_least_one_u32(s: &str) -> Result<u32, String> {
    u32::try_from(at_least_one(s)?).map_err(|_| format!("must be at most {}", u32::MAX))
}

/// A count that must be at least 1.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_url_is_shown_without_its_password() {
        let url = "postgres://im:s3cret@db.example:5432/im";
        assert_eq!(redact_url(url), "postgres://im:…@db.example:5432/im");
        assert_eq!(redact_url("postgres://im@db/im"), "postgres://im@db/im");
        let parsed = backend(url).unwrap();
        assert!(!format!("{parsed:?}").contains("s3cret"));
        assert!(backend("mysql://x").is_err());
        assert!(backend("postgres://db/im?sslmode=nonsense").is_err());
    }

    #[test]
    fn durations_take_units_or_bare_seconds() {
        assert_eq!(duration("300"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("30days"), Ok(Duration::from_secs(30 * 86_400)));
        assert!(duration("soon").is_err());
        assert!(duration("-1").is_err());
    }

    #[test]
    fn counts_that_must_be_positive_refuse_zero() {
        let zero = Config::try_parse_from(["imserver", "--store-readers", "0"]);
        assert!(zero.unwrap_err().to_string().contains("at least 1"));
    }

    #[test]
    fn a_batch_byte_limit_stays_far_below_sqlites_row_limit() {
        let parse = |v: &str| Config::try_parse_from(["imserver", "--max-batch-bytes", v]);
        assert_eq!(parse("1").unwrap().store.max_batch_bytes, 1);
        assert!(parse("0").unwrap_err().to_string().contains("at least 1"));
        let too_big = parse("1000000000").unwrap_err().to_string();
        assert!(too_big.contains("at most"), "{too_big}");
    }

    #[test]
    fn the_defaults_are_the_flags_defaults() {
        let c = Config::default();
        assert_eq!(c.relay.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.auth.token_ttl, Duration::from_secs(30 * 86_400));
        assert_eq!(c.relay.rate_limit, 100);
        assert_eq!(c.auth.auth, AuthMode::Token);
        assert_eq!(c.relay.relay_policy, RelayPolicy::Any);
        assert_eq!(c.store.data_dir, PathBuf::from("./imserver-data"));
    }
}
