//! # imserver
//!
//! An instant-messaging server: a warp HTTP API (accounts, profiles, friends, requests,
//! blocks, history), a tokio relay speaking [`improto`] packets over TCP and over WebSocket
//! (`/ws`), and a web chat built into the binary, on an embedded SQLite store. It replaces an
//! older Go server, keeping its wire protocol and HTTP API.
//!
//! Every user has one stream: the messages they received, copies of the messages they sent
//! (from any of their devices) and social events, each at the next `seq` of that stream. A
//! device keeps one cursor (`lastSeq`) and syncs everything with it.
//!
//! [`Server::start`] runs everything in the current tokio runtime and returns a handle with
//! the bound addresses; `main.rs` is a thin wrapper around it, and the integration tests use
//! it directly.
//!
//! ## Layout
//!
//! - `config/`: every flag and limit ([`Config`]), one group per room, validated by the
//!   flags' parsers; `file.rs` reads `--config FILE` and prints `print-config`.
//! - `id`: [`UserId`], parsed once at each edge, with one canonical form.
//! - `net/`: what every listener shares: TLS (`tls.rs`, reloaded on `SIGHUP`) and
//!   `--max-connections-per-ip`.
//! - `http/`: the HTTP API (routes in `mod`, `users`, `friends`, `history`, `guard` for
//!   bearer tokens and rate limits, `body`, `reply`), `/healthz` and `/readyz` (`health`),
//!   the WebSocket upgrade (`ws`), the web chat's files (`web`, from `imserver/web/`),
//!   `/metrics` (`scrape`), the operators' API (`admin`), the OpenAPI document of all of
//!   it (`openapi.json`), and the listener with its limits and timeouts (`server`).
//! - `metrics`: every series the server reports, and how it is recorded.
//! - `relay/`: the relay (`listener` for admission and TCP, `transport/` for TCP and
//!   WebSocket framing, `session/` for one connection of either protocol version, `outbox`,
//!   `router`).
//! - `delivery`: the seam between the store and live connections ([`delivery::Delivery`]).
//! - `bus`: the NATS bus between nodes (`--bus`), a `Delivery` over the local router.
//! - `store/`: the storage traits by concern, the social rules, the store every backend is
//!   (`front`, over a writer's `queue`), the SQLite backend (with its backup, and retention
//!   in `sqlite/retention.rs`), the PostgreSQL backend (`postgres/`), and `migrate`.
//! - `auth`: password hashing and login tokens.
//! - `workers`: fixed sets of threads for blocking work (SQLite reads, password hashing).
//!
//! ## The way one message travels
//!
//! A session reads a frame, peeks at its envelope and checks the sender; the messages among
//! the frames that arrived together go to the store as one request. The store's writer
//! thread commits everything queued in one transaction, storing each payload once and giving
//! each message the next `seq` of its receiver's stream and its copy the next `seq` of its
//! sender's. After the commit, in commit order, it tells each request's sender what became
//! of its messages (the v2 `Ack`s) and hands the entries to the `Delivery`, a batch per
//! user: the router queues them on every live connection of that user (the sending
//! connection excepted; its `Ack`s say it all). Each connection writes an entry with its
//! `seq` spliced in. Offline devices get it from the store when they `Regist`, from their
//! `lastSeq` or the acknowledged position.

pub mod auth;
pub mod bus;
pub mod config;
pub mod delivery;
pub mod http;
pub mod id;
pub mod metrics;
pub mod net;
pub mod relay;
pub mod store;
pub mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use auth::PasswordHashers;
pub use config::Config;
pub use id::UserId;
use net::{Net, PerIp, Tls, TlsError};
use store::{Account, Store, StoreError};

/// How long shutdown waits for connections to finish before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind the {what} address {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot start the password hashing threads: {0}")]
    Hashers(std::io::Error),
    #[error("cannot create the demo users: {0}")]
    Demo(String),
    #[error("the bus: {0}")]
    Bus(String),
}

/// A running server.
pub struct Server {
    http_addr: SocketAddr,
    tcp_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    store: Arc<dyn Store>,
    /// `None` without TLS.
    tls: Option<Tls>,
    /// `--metrics-addr`, bound.
    metrics_addr: Option<SocketAddr>,
    /// Cancelled first at shutdown: `/readyz` says `503` through `--shutdown-delay`.
    draining: CancellationToken,
    shutdown_delay: Duration,
}

impl Server {
    /// Opens the store, binds both listeners and starts serving.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let tls = match (&config.net.tls_cert, &config.net.tls_key) {
            (Some(cert), Some(key)) => Some(Tls::load(cert, key)?),
            _ => None,
        };
        let http_listener = bind("HTTP", config.http.addr).await?;
        let tcp_listener = bind("TCP", config.relay.addr).await?;
        let http_addr = local_addr("HTTP", &http_listener, config.http.addr)?;
        let tcp_addr = local_addr("TCP", &tcp_listener, config.relay.addr)?;
        let metrics = match config.http.metrics_addr {
            Some(addr) => {
                let listener = bind("metrics", addr).await?;
                let bound = local_addr("metrics", &listener, addr)?;
                // Before anything that records is made: handles made earlier record nothing.
                Some((listener, bound, metrics::install()))
            }
            None => None,
        };

        let router = Arc::new(relay::LocalRouter::default());
        let (delivery, bus): (Arc<dyn delivery::Delivery>, _) = match &config.bus.bus {
            None => (router.clone(), None),
            Some(url) => {
                if config.store.store == config::Backend::Sqlite {
                    return Err(StartError::Bus(
                        "--bus joins the nodes of one PostgreSQL store (--store postgres://…); \
                         a SQLite store has one node"
                            .into(),
                    ));
                }
                let bus = bus::NatsBus::connect(url, &config.bus, router.clone())
                    .await
                    .map_err(|e| StartError::Bus(format!("cannot connect to {url}: {e}")))?;
                (bus.clone(), Some(bus))
            }
        };
        let store = store::open(&config.store, delivery.clone()).await?;
        if let Some(bus) = bus {
            bus.set_store(store.clone());
        }
        let hashers =
            PasswordHashers::new(config.auth.password_hashers).map_err(StartError::Hashers)?;
        if config.demo {
            create_demo_users(store.as_ref(), &hashers).await?;
        }

        let shutdown = CancellationToken::new();
        let draining = CancellationToken::new();
        let tasks = TaskTracker::new();

        let presence = Arc::new(relay::Presence::new(
            router.clone(),
            delivery.clone(),
            store.clone(),
            config.relay.presence_delay,
        ));
        tasks.spawn(presence.clone().run(shutdown.clone()));
        let relay = Arc::new(relay::Relay::new(
            store.clone(),
            router.clone(),
            delivery,
            presence,
            &config,
            tasks.clone(),
            shutdown.clone(),
        ));
        let state = Arc::new(http::AppState::new(
            relay.clone(),
            hashers,
            &config,
            draining.clone(),
        ));
        let net = Net {
            tls: tls.clone(),
            per_ip: PerIp::new(config.net.max_connections_per_ip),
        };
        tasks.spawn(http::serve(
            http_listener,
            warp::service(http::routes(state)),
            net.clone(),
            http::Limits::new(&config.http),
            shutdown.clone(),
            tasks.clone(),
        ));
        tasks.spawn(relay::serve(tcp_listener, relay, net));
        let metrics_addr = metrics.map(|(listener, bound, handle)| {
            let internal = Net {
                tls: None,
                per_ip: PerIp::new(0),
            };
            tasks.spawn(http::serve(
                listener,
                warp::service(http::metrics_routes(handle, router)),
                internal,
                http::Limits::new(&config.http),
                shutdown.clone(),
                tasks.clone(),
            ));
            bound
        });

        let exposed = !(http_addr.ip().is_loopback() && tcp_addr.ip().is_loopback());
        if tls.is_none() && config.auth.auth == config::AuthMode::Token && exposed {
            tracing::warn!(
                "no TLS (--tls-cert, --tls-key) on an address other machines can reach: \
                 passwords, login tokens and messages cross the network in clear text, \
                 where anyone on the path can read them and take over accounts"
            );
        }
        let data_dir = config.store.data_dir.display();
        let scheme = if tls.is_some() { "TLS" } else { "plain" };
        let metrics = metrics_addr.map_or("off".into(), |a| a.to_string());
        tracing::info!(%http_addr, %tcp_addr, %metrics, %data_dir, transport = scheme,
            "imserver listening");
        Ok(Server {
            http_addr,
            tcp_addr,
            shutdown,
            tasks,
            store,
            tls,
            metrics_addr,
            draining,
            shutdown_delay: config.http.shutdown_delay,
        })
    }

    /// The bound HTTP address (the real port when the configured one was 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound `--metrics-addr`, if metrics are on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The bound TCP relay address.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// Reads the TLS certificate and key again (what `SIGHUP` does): new connections get
    /// them, open ones keep theirs. `Ok(false)` without TLS. On an error, the certificate
    /// in use stays.
    pub async fn reload_tls(&self) -> Result<bool, TlsError> {
        let Some(tls) = self.tls.clone() else {
            return Ok(false);
        };
        // File reads: off the runtime's threads.
        tokio::task::spawn_blocking(move || tls.reload())
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        Ok(true)
    }

    /// Answers `/readyz` with `503` for `--shutdown-delay`, then stops accepting, closes
    /// every connection, and flushes the store.
    pub async fn shutdown(self) {
        self.draining.cancel();
        if !self.shutdown_delay.is_zero() {
            tracing::info!(delay = ?self.shutdown_delay, "not ready; still serving until the delay ends");
            tokio::time::sleep(self.shutdown_delay).await;
        }
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close in time");
        }
        self.store.close().await;
        tracing::info!("imserver stopped");
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

fn local_addr(
    what: &'static str,
    l: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, StartError> {
    l.local_addr()
        .map_err(|source| StartError::Bind { what, addr, source })
}

/// User "1" (Wu) and user "2" (WuYW), password "123", friends: the Go server's fixtures.
async fn create_demo_users(store: &dyn Store, hashers: &PasswordHashers) -> Result<(), StartError> {
    let (wu, wuyw) = (UserId::new(1).expect("1"), UserId::new(2).expect("2"));
    for (id, name) in [(wu, "Wu"), (wuyw, "WuYW")] {
        if store.user(id).await?.is_some() {
            continue;
        }
        let password_hash = hashers
            .hash("123".into())
            .await
            .map_err(|e| StartError::Demo(e.to_string()))?;
        let account = Account {
            name: name.into(),
            sex: "".into(),
            email: "".into(),
            signature: "".into(),
            password_hash,
        };
        store.create_user(Some(id), account).await?;
    }
    store.befriend(wu, wuyw).await?;
    Ok(())
}
