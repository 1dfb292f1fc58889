//! A real server on 127.0.0.1:0 with a temporary data dir, and helpers to talk to it through
//! its public interfaces only: HTTP and `improto::Client`.
#![allow(dead_code)] // each test binary uses its own subset

pub mod process;
pub mod proxy;
pub mod ws;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use improto::{Client, Message, Packet, Regist};
use imserver::config::{AuthMode, Backend, Secret};
use imserver::{Config, Server};
use tokio::time::timeout;

/// `IMSERVER_TEST_POSTGRES`, a PostgreSQL URL (`postgres://postgres@127.0.0.1/test`): when
/// set, every server these suites start uses a database of its own on that PostgreSQL
/// (`--store`) instead of SQLite. `scripts/test` runs the suites both ways.
pub fn postgres() -> Option<String> {
    std::env::var("IMSERVER_TEST_POSTGRES")
        .ok()
        .filter(|url| !url.is_empty())
}

/// `IMSERVER_TEST_NATS`, a NATS URL (`nats://127.0.0.1:4222`) for the tests of several
/// nodes.
pub fn nats() -> Option<String> {
    std::env::var("IMSERVER_TEST_NATS")
        .ok()
        .filter(|url| !url.is_empty())
}

/// True (and says so) unless the suites run on PostgreSQL with a NATS server: for the
/// tests of several nodes sharing one store.
pub fn cluster_only(what: &str) -> bool {
    let alone = postgres().is_none() || nats().is_none();
    if alone {
        eprintln!("skipped: {what} needs IMSERVER_TEST_POSTGRES and IMSERVER_TEST_NATS");
    }
    alone
}

/// `config` with the bus (`IMSERVER_TEST_NATS`), on subjects of its own database's name so
/// that tests running at once never hear each other.
pub fn on_test_bus(config: &mut Config) {
    if let (Some(url), Backend::Postgres(Secret(db))) = (nats(), &config.store.store) {
        config.bus.bus = Some(url);
        config.bus.bus_prefix = db.rsplit_once('/').expect("a database").1.to_owned();
    }
}

/// True (and says so) when the suites run on PostgreSQL: for the tests of what only the
/// SQLite store does (its file, backups, retention).
pub fn sqlite_only(what: &str) -> bool {
    let on_postgres = postgres().is_some();
    if on_postgres {
        eprintln!("skipped on PostgreSQL: {what} is SQLite's only");
    }
    on_postgres
}

/// The database of the server whose data dir is `dir`, made when missing (the same for a
/// restart on the same dir): its URL, when the suites run on PostgreSQL.
pub fn database_for(dir: &std::path::Path) -> Option<String> {
    use std::hash::{Hash, Hasher};
    let base = postgres()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    let name = format!("imtest_{:016x}", h.finish());
    let (prefix, _) = base.rsplit_once('/').expect("a URL with a database");
    admin(&base, format!("CREATE DATABASE {name}"));
    Some(format!("{prefix}/{name}"))
}

/// Drops the database `url` names (see [`database_for`]), closing its connections.
pub fn drop_database(url: &str) {
    let base = postgres().expect("on PostgreSQL");
    let name = url.rsplit_once('/').expect("a URL with a database").1;
    admin(
        &base,
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
}

/// Runs `sql` on `url` from a thread of its own (callers may be on a runtime or not); an
/// existing database is no error.
fn admin(url: &str, sql: String) {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("IMSERVER_TEST_POSTGRES answers");
            tokio::spawn(conn);
            match client.batch_execute(&sql).await {
                Ok(()) => {}
                Err(e)
                    if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
                Err(e) => panic!("{sql}: {e}"),
            }
        });
    })
    .join()
    .unwrap();
}

/// `config` on PostgreSQL when the suites run there (see [`postgres`]), in a database of
/// `config`'s data dir.
pub fn on_test_store(config: &mut Config) {
    if let Some(url) = database_for(&config.store.data_dir) {
        config.store.store = Backend::Postgres(Secret(url));
    }
}

/// Generous bound on every wait, so a broken test fails instead of hanging. Never a speed
/// assertion.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct TestServer {
    pub server: Option<Server>,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    /// What `restart` starts again with.
    config: Config,
}

impl TestServer {
    /// The Go server's model (`--auth open`) with the demo users.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// `--auth token` (the default) with the demo users.
    pub async fn start_secure() -> Self {
        Self::start_with(|c| c.auth.auth = AuthMode::Token).await
    }

    /// The demo users, `--auth open`, the per-IP, per-user and per-connection rate limits
    /// off (the tests of those limits turn them on), friends never told of presence (a live
    /// frame at a time of its own; the tests of presence shorten the delay), then `adjust`
    /// applied.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::local(dir.path());
        config.demo = true;
        config.auth.auth = AuthMode::Open;
        config.auth.regist_limit = 0;
        config.auth.login_limit = 0;
        config.relay.rate_limit = 0;
        config.relay.presence_delay = Duration::from_secs(24 * 3600);
        on_test_store(&mut config);
        adjust(&mut config);
        let server = Server::start(config.clone()).await.expect("server starts");
        TestServer {
            server: Some(server),
            http: reqwest::Client::new(),
            dir,
            config,
        }
    }

    /// The database, when on PostgreSQL.
    pub fn database(&self) -> Option<&str> {
        match &self.config.store.store {
            Backend::Postgres(Secret(url)) => Some(url),
            Backend::Sqlite => None,
        }
    }

    fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.server().http_addr(), path)
    }

    pub fn tcp(&self) -> SocketAddr {
        self.server().tcp_addr()
    }

    /// GET `path`; returns the status and the JSON body.
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = timeout(WAIT, self.http.get(self.url(path)).send())
            .await
            .expect("in time")
            .expect("HTTP works");
        split(r).await
    }

    /// POST `body` (JSON) to `path`.
    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = timeout(WAIT, self.http.post(self.url(path)).json(&body).send())
            .await
            .expect("in time")
            .expect("HTTP works");
        split(r).await
    }

    /// POST a raw body with an optional Content-Type.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, serde_json::Value) {
        let mut req = self.http.post(self.url(path)).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let r = timeout(WAIT, req.send())
            .await
            .expect("in time")
            .expect("HTTP works");
        split(r).await
    }

    /// A client that has sent `Regist` as `user` (the server may not have processed it yet).
    pub async fn connect(&self, user: &str) -> Client {
        let mut c = timeout(WAIT, Client::connect(self.tcp()))
            .await
            .expect("in time")
            .expect("connects");
        c.send(Regist::new(user)).await.expect("sends Regist");
        c
    }

    /// A client whose `Regist` as `user` the server has processed.
    ///
    /// v1 has no reply to `Regist`, so this proves it: the client sends a message to a fresh
    /// probe user, which the server accepts only after the `Regist` before it, and the probe
    /// receives it (live or from the store).
    pub async fn client(&self, user: &str) -> Client {
        // Ids without accounts, far from the demo users' and the tests' own.
        static PROBES: AtomicU64 = AtomicU64::new(900_000);
        let probe = PROBES.fetch_add(1, Ordering::Relaxed).to_string();
        let mut c = self.connect(user).await;
        say(&mut c, user, &probe, "sync").await;
        let mut p = self.connect(&probe).await;
        let m = recv_message(&mut p).await;
        assert_eq!((m.sender.as_str(), m.message.as_str()), (user, "sync"));
        c
    }

    /// `POST /login` as `user` (password `pw`); returns the token.
    pub async fn login(&self, user: &str, pw: &str) -> String {
        let (status, body) = self
            .post_json("/login", serde_json::json!({"user": user, "password": pw}))
            .await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().expect("a token").to_owned()
    }

    /// A request with `Authorization: Bearer <token>`; returns the status and the JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = timeout(WAIT, req.send())
            .await
            .expect("in time")
            .expect("HTTP works");
        split(r).await
    }

    /// GET `path` as the owner of `token`.
    pub async fn get_as(&self, path: &str, token: &str) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::GET, path, token, None).await
    }

    /// POST `body` to `path` as the owner of `token`.
    pub async fn post_as(
        &self,
        path: &str,
        token: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    /// DELETE `path` as the owner of `token`.
    pub async fn delete_as(&self, path: &str, token: &str) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::DELETE, path, token, None).await
    }

    /// Another login of the account `id` made by [`user`](Self::user): its id and a new
    /// token.
    pub async fn user_login(&self, id: &str) -> (String, String) {
        (id.to_owned(), self.login(id, "pw").await)
    }

    /// A new account named `name` (password `pw`), logged in: its id and token.
    pub async fn user(&self, name: &str) -> (String, String) {
        let account = serde_json::json!({"password": "pw", "name": name, "sex": "-",
            "email": format!("{name}@example.com"), "signature": "-"});
        let (status, body) = self.post_json("/regist", account).await;
        assert_eq!(status, 200, "{body}");
        let id = body["user"].as_str().expect("an id").to_owned();
        let token = self.login(&id, "pw").await;
        (id, token)
    }

    /// A raw connection, not registered.
    pub async fn raw(&self) -> Client {
        timeout(WAIT, Client::connect(self.tcp()))
            .await
            .expect("in time")
            .expect("connects")
    }

    /// A v2 connection of `user` (after the handshake), resuming after `last_seq` if given.
    pub async fn v2(&self, user: &str, token: &str, last_seq: Option<u64>) -> (Client, u64) {
        v2_at(self.tcp(), user, token, last_seq).await
    }

    /// Another node on the same store (PostgreSQL), with new ports: stopped by the caller.
    pub async fn another_node(&self) -> Server {
        self.another_node_with(|_| {}).await
    }

    /// [`another_node`](Self::another_node), its configuration changed by `adjust`.
    pub async fn another_node_with(&self, adjust: impl FnOnce(&mut Config)) -> Server {
        let mut config = self.config.clone();
        adjust(&mut config);
        Server::start(config).await.expect("another node starts")
    }

    /// Stops the server gracefully (the data dir stays).
    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            timeout(WAIT, s.shutdown())
                .await
                .expect("shuts down in time");
        }
    }

    /// Stops and starts again on the same data dir and configuration (new ports).
    pub async fn restart(&mut self) {
        self.stop().await;
        let config = self.config.clone();
        self.server = Some(Server::start(config).await.expect("server restarts"));
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(url) = self.database() {
            drop_database(url);
        }
    }
}

/// A v2 connection of `user` to the relay at `addr` (of any node), after the handshake,
/// resuming after `last_seq` if given; with the head of the user's stream.
pub async fn v2_at(
    addr: SocketAddr,
    user: &str,
    token: &str,
    last_seq: Option<u64>,
) -> (Client, u64) {
    let mut c = timeout(WAIT, Client::connect(addr))
        .await
        .expect("in time")
        .expect("connects");
    let mut regist = Regist::v2(user, token);
    regist.last_seq = last_seq;
    let live = timeout(WAIT, c.handshake(regist))
        .await
        .expect("in time")
        .expect("registered");
    assert_eq!(live.sender, user);
    (c, live.seq)
}

/// A server in token mode with three fresh users, a (3), b (4) and c (5): their ids and
/// tokens.
pub async fn three_users() -> (TestServer, [(String, String); 3]) {
    let srv = TestServer::start_secure().await;
    let a = srv.user("Ann").await;
    let b = srv.user("Bob").await;
    let c = srv.user("Cid").await;
    (srv, [a, b, c])
}

/// A v2 device of `user` (with its token) that has seen everything stored so far: it
/// resumes at the head.
pub async fn device(srv: &TestServer, (user, token): &(String, String)) -> Client {
    srv.v2(user, token, Some(u64::MAX)).await.0
}

async fn split(r: reqwest::Response) -> (u16, serde_json::Value) {
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {text:?}"));
    (status, json)
}

/// Sends `text` (client id `text`) from `c`, registered as `from`, to `to`, and returns its
/// `Ack`'s seq, passing over the entries that come before it.
pub async fn send_for_ack(c: &mut Client, from: &str, to: &str, text: &str) -> u64 {
    c.send(Message::new(from, to, text).with_id(text))
        .await
        .expect("sent");
    loop {
        match recv_packet(c).await {
            Packet::Ack(a) => return a.seq,
            Packet::Event(_) | Packet::Message(_) => continue,
            other => panic!("expected an Ack, got {other:?}"),
        }
    }
}

/// The next packet, which must be a `Message`.
pub async fn recv_message(c: &mut Client) -> Message {
    match timeout(WAIT, c.recv()).await.expect("a message in time") {
        Ok(Some(Packet::Message(m))) => m,
        other => panic!("expected a Message, got {other:?}"),
    }
}

/// Sends `text` from `from` to `to` over `c`.
pub async fn say(c: &mut Client, from: &str, to: &str, text: &str) {
    c.send(Message::new(from, to, text)).await.expect("sends");
}

/// Proves that nothing else is queued for `receiver`: a marker sent now through a fresh
/// connection of `sender` must be the very next message `receiver` gets.
pub async fn assert_next_is_marker(
    srv: &TestServer,
    sender: &str,
    receiver: &mut Client,
    receiver_id: &str,
) {
    let mut s = srv.client(sender).await;
    say(&mut s, sender, receiver_id, "--marker--").await;
    let m = recv_message(receiver).await;
    assert_eq!(
        m.message, "--marker--",
        "an unexpected message arrived before the marker"
    );
}

/// Waits until the peer closes `stream` (a read returns 0 or an error); panics after WAIT.
pub async fn expect_closed(stream: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let closed = timeout(WAIT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server did not close the connection");
}

/// `payload` with its length prefix.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// The next packet, whatever it is.
pub async fn recv_packet(c: &mut Client) -> Packet {
    match timeout(WAIT, c.recv()).await.expect("a packet in time") {
        Ok(Some(p)) => p,
        other => panic!("expected a packet, got {other:?}"),
    }
}

/// The next packet, which must be an `Error` with `code`; returns it.
pub async fn expect_error(c: &mut Client, code: improto::ErrorCode) -> improto::ErrorPacket {
    match recv_packet(c).await {
        Packet::Error(e) if e.code == code => e,
        other => panic!("expected Error {code}, got {other:?}"),
    }
}

/// Sends `Ping` and returns every packet received before the `Pong`: once it returns, every
/// frame sent before the `Ping` has taken effect.
pub async fn sync(c: &mut Client) -> Vec<Packet> {
    c.send(Packet::Ping).await.expect("sends Ping");
    let mut before = Vec::new();
    loop {
        match recv_packet(c).await {
            Packet::Pong => return before,
            p => before.push(p),
        }
    }
}

/// After a `sync`, the connection is closed by the server (end of stream or an I/O error).
pub async fn expect_eof(c: &mut Client) {
    match timeout(WAIT, c.recv()).await.expect("closed in time") {
        Ok(None) | Err(_) => {}
        Ok(Some(p)) => panic!("expected the connection to close, got {p:?}"),
    }
}
