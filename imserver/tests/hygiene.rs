//! Connection hygiene on the HTTP port and across listeners: `--http-header-timeout`,
//! `--http-keepalive-timeout`, `--max-http-connections` and `--max-connections-per-ip`.
//! Clients come from several 127.0.0.x source addresses (all of 127/8 is this machine).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{TestServer, WAIT, expect_closed, recv_message, say};
use improto::{Client, Message, Regist};
use imserver::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

/// A TCP connection to `to` from the address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    let from: IpAddr = from.parse().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    timeout(WAIT, socket.connect(to))
        .await
        .expect("connects in time")
        .expect("connects")
}

/// A complete `GET` on `stream` (keep-alive): the status line of its answer.
async fn get(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // The head, then as much body as Content-Length says.
    timeout(WAIT, async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the answer");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .map_or(0, |n| n.trim().parse::<usize>().unwrap());
                if body.len() >= len {
                    return;
                }
            }
        }
    })
    .await
    .expect("an answer in time");
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap()
        .to_owned()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A v1 connection from `from` as `user` (`--auth open`).
async fn v1_from(from: &str, to: SocketAddr, user: &str) -> Client {
    let mut c = Client::new(connect_from(from, to).await);
    c.send(Regist::new(user)).await.unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_half_open_requests_stop_neither_the_relay_nor_a_fresh_client() {
    const ATTACKERS: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
    const PER_IP: usize = 500;
    const TRIES: usize = 700;
    let srv = TestServer::start_with(|c: &mut Config| {
        c.http.http_header_timeout = Duration::from_millis(1500);
        c.http.http_keepalive_timeout = Duration::from_secs(3600);
        c.relay.regist_deadline = Duration::from_secs(3600);
        c.http.max_http_connections = 2000;
        c.net.max_connections_per_ip = PER_IP;
    })
    .await;
    let http = srv.server.as_ref().unwrap().http_addr();
    // Warm up what the server opens once (the store's readers, say) before counting.
    let (status, _) = srv.get("/profile/1").await;
    assert_eq!(status, 200);
    let idle_fds = open_fds();

    // 2,100 connections that send half a request head and nothing more.
    let mut held = Vec::new();
    for from in ATTACKERS {
        for _ in 0..TRIES {
            let mut s = connect_from(from, http).await;
            s.write_all(b"GET /profile/1 HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            held.push(s);
        }
    }

    // Meanwhile, the relay works, and so does a fresh HTTP client from another address.
    let mut one = srv.client("1").await;
    let mut two = srv.client("2").await;
    say(&mut one, "1", "2", "still served").await;
    assert_eq!(recv_message(&mut two).await.message, "still served");
    let mut fresh = connect_from("127.0.0.9", http).await;
    assert_eq!(get(&mut fresh, "/profile/1").await, "HTTP/1.1 200 OK");
    drop(fresh);

    // Every one of them is closed by the header timeout (the others' limits are an hour).
    for s in held.iter_mut() {
        expect_closed(s).await;
    }
    drop(held);
    drop((one, two));

    // And the server's file descriptors come back to their idle level.
    let back = timeout(WAIT, async {
        while open_fds() > idle_fds + 8 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        back.is_ok(),
        "{} fds open, {idle_fds} when idle",
        open_fds()
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_and_so_are_silent_ones() {
    let srv = TestServer::start_with(|c: &mut Config| {
        c.http.http_header_timeout = Duration::from_secs(3600);
        c.http.http_keepalive_timeout = Duration::from_millis(300);
    })
    .await;
    let http = srv.server.as_ref().unwrap().http_addr();
    let mut s = connect_from("127.0.0.1", http).await;
    // Keep-alive: two requests on one connection, then it idles and is closed.
    assert_eq!(get(&mut s, "/profile/1").await, "HTTP/1.1 200 OK");
    assert_eq!(get(&mut s, "/profile/2").await, "HTTP/1.1 200 OK");
    expect_closed(&mut s).await;

    // A connection that never sends a byte has the header timeout.
    let srv = TestServer::start_with(|c: &mut Config| {
        c.http.http_header_timeout = Duration::from_millis(300);
        c.http.http_keepalive_timeout = Duration::from_secs(3600);
    })
    .await;
    let http = srv.server.as_ref().unwrap().http_addr();
    let mut silent = connect_from("127.0.0.1", http).await;
    expect_closed(&mut silent).await;
}

#[tokio::test]
async fn connections_over_max_http_connections_are_closed_at_once() {
    const MAX: usize = 20;
    let srv = TestServer::start_with(|c: &mut Config| {
        c.http.max_http_connections = MAX;
        c.http.http_header_timeout = Duration::from_secs(3600);
    })
    .await;
    let http = srv.server.as_ref().unwrap().http_addr();
    let mut admitted = Vec::new();
    for _ in 0..MAX {
        admitted.push(connect_from("127.0.0.1", http).await);
    }
    // The timeouts are an hour: a close now is the limit's.
    let mut extra = connect_from("127.0.0.1", http).await;
    expect_closed(&mut extra).await;
    // The ones let in are served, and one closing makes room.
    assert_eq!(get(&mut admitted[0], "/profile/1").await, "HTTP/1.1 200 OK");
    admitted.pop();
    let served = timeout(WAIT, async {
        loop {
            let mut s = connect_from("127.0.0.1", http).await;
            if s.write_all(b"GET /profile/1 HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .is_ok()
            {
                let mut buf = [0u8; 12];
                if s.read_exact(&mut buf).await.is_ok() {
                    return buf;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a place frees up");
    assert_eq!(&served, b"HTTP/1.1 200");
}

#[tokio::test]
async fn the_per_address_limit_counts_http_websocket_and_relay_connections_together() {
    let srv = TestServer::start_with(|c: &mut Config| {
        c.net.max_connections_per_ip = 3;
        c.relay.regist_deadline = Duration::from_secs(3600);
        c.http.http_header_timeout = Duration::from_secs(3600);
    })
    .await;
    let http = srv.server.as_ref().unwrap().http_addr();
    let from = "127.0.0.2";

    // One of each from 127.0.0.2: a WebSocket, a relay connection, a keep-alive HTTP one.
    let ws_tcp = connect_from(from, http).await;
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{http}/ws"), ws_tcp)
        .await
        .expect("upgraded");
    let relay = connect_from(from, srv.tcp()).await;
    let mut keep = connect_from(from, http).await;
    assert_eq!(get(&mut keep, "/profile/1").await, "HTTP/1.1 200 OK");

    // A fourth, on either port, is closed at once (every timeout is an hour).
    let mut fourth = connect_from(from, srv.tcp()).await;
    expect_closed(&mut fourth).await;
    let mut fourth = connect_from(from, http).await;
    expect_closed(&mut fourth).await;
    // Other addresses are not affected, `--auth open` (this server's) included.
    let mut two = srv.client("2").await;
    let mut other = v1_from("127.0.0.3", srv.tcp(), "1").await;
    say(&mut other, "1", "2", "from another address").await;
    assert_eq!(recv_message(&mut two).await.message, "from another address");

    // The WebSocket closing gives its place back: a relay connection from 127.0.0.2 is let
    // in again (its message arrives; a refused one's never does).
    ws.close(None).await.unwrap();
    while futures::StreamExt::next(&mut ws).await.is_some() {}
    drop(ws);
    let again = timeout(WAIT, async {
        for attempt in 0.. {
            let mut c = v1_from(from, srv.tcp(), "1").await;
            let text = format!("let in, attempt {attempt}");
            if c.send(Message::new("1", "2", &text)).await.is_err() {
                continue;
            }
            if let Ok(m) = timeout(Duration::from_millis(500), recv_message(&mut two)).await {
                assert_eq!(m.message, text);
                return c;
            }
        }
        unreachable!()
    })
    .await;
    assert!(again.is_ok(), "a place frees up when the WebSocket closes");
    drop((relay, keep));
}
