//! TLS on every listener (`--tls-cert`, `--tls-key`): the relay, HTTP and WebSocket, with a
//! certificate made at test time; plaintext clients get nothing; bad files are clear errors;
//! `SIGHUP` reloads the certificate without dropping connections.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::process::spawn;
use common::{TestServer, WAIT, recv_message};
use futures::{SinkExt, StreamExt};
use improto::rustls::RootCertStore;
use improto::{Client, Message, Packet, Regist};
use imserver::config::AuthMode;
use imserver::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ClientConfig};

/// A self-signed certificate for `localhost` and its key, written as PEM into `dir`.
struct Cert {
    cert: PathBuf,
    key: PathBuf,
    roots: RootCertStore,
}

fn make_cert(dir: &Path, name: &str) -> Cert {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(made.cert.der().clone()).unwrap();
    Cert { cert, key, roots }
}

async fn start_tls(cert: &Cert) -> TestServer {
    let (c, k) = (cert.cert.clone(), cert.key.clone());
    TestServer::start_with(move |config| {
        config.auth.auth = AuthMode::Token;
        config.net.tls_cert = Some(c);
        config.net.tls_key = Some(k);
    })
    .await
}

fn connector(roots: &RootCertStore) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn tls_to(
    addr: SocketAddr,
    roots: &RootCertStore,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    timeout(WAIT, connector(roots).connect(name, tcp))
        .await
        .expect("the handshake ends in time")
}

/// One HTTP/1.1 request over TLS: the status and the JSON body.
async fn https(
    addr: SocketAddr,
    roots: &RootCertStore,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut tls = tls_to(addr, roots).await.expect("TLS to the HTTP port");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    timeout(WAIT, tls.read_to_end(&mut response))
        .await
        .expect("the answer in time")
        .expect("the answer");
    let response = String::from_utf8(response).unwrap();
    let status = response[9..12].parse().unwrap();
    let json = response.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(json).unwrap_or_default())
}

/// A new account over HTTPS, logged in: its id and token.
async fn user(srv: &TestServer, roots: &RootCertStore, name: &str) -> (String, String) {
    let http = srv.server.as_ref().unwrap().http_addr();
    let account = serde_json::json!({"password": "pw", "name": name, "sex": "-",
        "email": "-", "signature": "-"});
    let (status, body) = https(http, roots, "POST", "/regist", Some(account), None).await;
    assert_eq!(status, 200, "{body}");
    let id = body["user"].as_str().unwrap().to_owned();
    let login = serde_json::json!({"user": id, "password": "pw"});
    let (status, body) = https(http, roots, "POST", "/login", Some(login), None).await;
    assert_eq!(status, 200, "{body}");
    (id, body["token"].as_str().unwrap().to_owned())
}

async fn tls_client(tcp: SocketAddr, roots: &RootCertStore) -> Client {
    timeout(WAIT, Client::connect_tls(tcp, "localhost", roots.clone()))
        .await
        .expect("in time")
        .expect("a TLS connection")
}

#[tokio::test]
async fn the_relay_http_and_websocket_work_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert(dir.path(), "server");
    let srv = start_tls(&cert).await;
    let (a, a_token) = user(&srv, &cert.roots, "Ann").await;
    let (b, b_token) = user(&srv, &cert.roots, "Bob").await;

    // The relay over TLS, through improto's own client.
    let mut ann = tls_client(srv.tcp(), &cert.roots).await;
    ann.handshake(Regist::v2(&a, &a_token)).await.unwrap();
    let mut bob = tls_client(srv.tcp(), &cert.roots).await;
    bob.handshake(Regist::v2(&b, &b_token)).await.unwrap();
    ann.send(Message::new(&a, &b, "over TLS").with_id("t1"))
        .await
        .unwrap();
    let got = recv_message(&mut bob).await;
    assert_eq!(
        (got.sender.as_str(), got.message.as_str()),
        (a.as_str(), "over TLS")
    );

    // And over `wss://`: a third device of Bob's sees what Ann sends next.
    let http = srv.server.as_ref().unwrap().http_addr();
    let tls = tls_to(http, &cert.roots).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/ws", tls)
        .await
        .expect("a WebSocket over TLS");
    let regist = Packet::from(Regist::v2(&b, &b_token)).to_json().unwrap();
    let text = String::from_utf8(regist.to_vec()).unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text(text))
        .await
        .unwrap();
    ann.send(Message::new(&a, &b, "and over wss").with_id("t2"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while !seen.iter().any(|t: &String| t.contains("and over wss")) {
        let next = timeout(WAIT, ws.next()).await.expect("in time");
        seen.push(
            next.expect("open")
                .expect("a message")
                .into_text()
                .unwrap()
                .to_string(),
        );
    }
    assert!(seen[0].contains("Registered"), "{seen:?}");
}

/// Reads what a server sends to a client that speaks no TLS, until it closes.
async fn plaintext_gets(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let read = timeout(WAIT, tcp.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the server closes the connection");
    got
}

#[tokio::test]
async fn a_plaintext_client_gets_nothing_from_a_tls_port() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert(dir.path(), "server");
    let srv = start_tls(&cert).await;
    let (id, token) = user(&srv, &cert.roots, "Ann").await;

    let regist = Packet::from(Regist::v2(&id, &token)).to_json().unwrap();
    let got = plaintext_gets(srv.tcp(), &common::frame(&regist)).await;
    // At most a TLS alert (content type 21): never a frame, never JSON.
    assert!(got.is_empty() || got[0] == 21, "{got:?}");
    assert!(!got.contains(&b'{'), "{got:?}");

    let http = srv.server.as_ref().unwrap().http_addr();
    let got = plaintext_gets(http, b"GET /profile/1 HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(got.is_empty() || got[0] == 21, "{got:?}");
    assert!(!got.windows(4).any(|w| w == b"HTTP"), "{got:?}");
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert(dir.path(), "server");
    let other = make_cert(dir.path(), "other");
    let srv = start_tls(&cert).await;
    let refused = Client::connect_tls(srv.tcp(), "localhost", other.roots.clone()).await;
    assert!(refused.is_err(), "an unknown issuer");
    let wrong_name = Client::connect_tls(srv.tcp(), "chat.example.com", cert.roots.clone()).await;
    assert!(wrong_name.is_err(), "a name the certificate is not for");
}

async fn start_error(cert: PathBuf, key: PathBuf) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::local(dir.path());
    config.net.tls_cert = Some(cert);
    config.net.tls_key = Some(key);
    match Server::start(config).await {
        Ok(_) => panic!("started with bad TLS files"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn a_missing_unreadable_or_mismatched_certificate_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = make_cert(dir.path(), "good");
    let other = make_cert(dir.path(), "other");
    let missing = dir.path().join("missing.crt");

    let e = start_error(missing.clone(), good.key.clone()).await;
    assert!(
        e.contains("TLS certificate") && e.contains("missing.crt"),
        "{e}"
    );

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let e = start_error(garbage.clone(), good.key.clone()).await;
    assert!(
        e.contains("garbage.pem") && e.contains("no CERTIFICATE"),
        "{e}"
    );
    let e = start_error(good.cert.clone(), garbage).await;
    assert!(e.contains("TLS key") && e.contains("garbage.pem"), "{e}");

    let e = start_error(good.cert.clone(), other.key.clone()).await;
    assert!(e.contains("does not go with"), "{e}");
}

/// Sends `SIGHUP` to the server and waits until it logs `what`.
fn hangup_until(proc: &common::process::Proc, what: &str) {
    let seen = || {
        let log = proc.log.lock().unwrap();
        log.iter().filter(|l| l.contains(what)).count()
    };
    let before = seen();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &proc.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + WAIT;
    while seen() == before {
        assert!(std::time::Instant::now() < deadline, "no {what:?} logged");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_keeps_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let first = make_cert(dir.path(), "server");
    let data = dir.path().join("data");
    let cert = first.cert.to_str().unwrap();
    let key = first.key.to_str().unwrap();
    let extra = ["--auth", "open", "--tls-cert", cert, "--tls-key", key];
    let proc = spawn(&data, None, &extra);

    // Two v1 devices, connected with the first certificate.
    let mut one = tls_client(proc.tcp, &first.roots).await;
    one.send(Regist::new("1")).await.unwrap();
    let mut two = tls_client(proc.tcp, &first.roots).await;
    two.send(Regist::new("2")).await.unwrap();

    // A new certificate in the same files, and SIGHUP.
    let second = make_cert(dir.path(), "next");
    std::fs::copy(&second.cert, &first.cert).unwrap();
    std::fs::copy(&second.key, &first.key).unwrap();
    hangup_until(&proc, "TLS certificate reloaded");
    tls_client(proc.tcp, &second.roots).await;
    assert!(
        Client::connect_tls(proc.tcp, "localhost", first.roots.clone())
            .await
            .is_err(),
        "new connections get the new certificate"
    );
    // The open connections were not dropped.
    one.send(Message::new("1", "2", "still here"))
        .await
        .unwrap();
    assert_eq!(recv_message(&mut two).await.message, "still here");

    // A broken file: a clear error, and the certificate in use stays.
    std::fs::write(&first.key, "-----BEGIN PRIVATE KEY-----\nnope\n").unwrap();
    hangup_until(&proc, "TLS reload failed");
    tls_client(proc.tcp, &second.roots).await;
    let log = proc.log.lock().unwrap().join("\n");
    assert!(
        log.contains("server.key"),
        "the error names the file: {log}"
    );
}

#[test]
fn token_auth_without_tls_on_a_public_address_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let public: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let warned = |addrs| {
        let proc = spawn(dir.path(), Some(addrs), &[]);
        // The warning comes before the startup line.
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let log = proc.log.lock().unwrap().join("\n");
            if log.contains("imserver listening") {
                return log.contains("clear text");
            }
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert!(warned((public, loopback)));
    assert!(!warned((loopback, loopback)));
}

/// `openssl s_client`, an independent TLS implementation, against `addr`: its summary.
fn s_client(addr: SocketAddr, ca: &Path) -> String {
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-brief",
            "-verify_return_error",
            "-servername",
            "localhost",
        ])
        .arg("-connect")
        .arg(addr.to_string())
        .arg("-CAfile")
        .arg(ca)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed (scripts/test installs it)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "openssl s_client failed: {text}");
    text
}

#[tokio::test]
async fn openssl_s_client_completes_a_tls_1_3_handshake_on_both_ports() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert(dir.path(), "server");
    let srv = start_tls(&cert).await;
    let http = srv.server.as_ref().unwrap().http_addr();
    for addr in [srv.tcp(), http] {
        let ca = cert.cert.clone();
        let summary = tokio::task::spawn_blocking(move || s_client(addr, &ca))
            .await
            .unwrap();
        assert!(summary.contains("Protocol version: TLSv1.3"), "{summary}");
        assert!(summary.contains("Verification: OK"), "{summary}");
    }
}
