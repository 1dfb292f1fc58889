//! The `imserver` binary as an operator runs it, for the tests that kill it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use super::WAIT;

pub struct Proc {
    pub child: Child,
    pub http: SocketAddr,
    pub tcp: SocketAddr,
    /// Every line the server logged so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

/// Starts the binary on `(http, tcp)` (port 0 when `None`) and reads the real addresses
/// from its startup line.
pub fn spawn(
    data_dir: &std::path::Path,
    addrs: Option<(SocketAddr, SocketAddr)>,
    extra: &[&str],
) -> Proc {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (http, tcp) = addrs.unwrap_or((any, any));
    let mut child = Command::new(env!("CARGO_BIN_EXE_imserver"))
        .args([
            "--http-addr",
            &http.to_string(),
            "--tcp-addr",
            &tcp.to_string(),
            "--data-dir",
        ])
        .arg(data_dir)
        .args(super::database_for(data_dir).map(|url| format!("--store={url}")))
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("imserver starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("imserver listening") {
                let _ = tx.send(line.clone());
            }
            lines.lock().unwrap().push(line);
        }
    });
    let line = rx
        .recv_timeout(WAIT)
        .expect("the startup line names the bound addresses");
    let addr = |key: &str| -> SocketAddr {
        let start = line.find(key).unwrap_or_else(|| panic!("{key} in {line}")) + key.len();
        line[start..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (http, tcp) = (addr("http_addr="), addr("tcp_addr="));
    assert_ne!(http.port(), 0);
    assert_ne!(tcp.port(), 0);
    Proc {
        child,
        http,
        tcp,
        log,
    }
}

/// A test that fails half-way must not leave a server running.
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POSTs `body` as JSON to `url`; returns the reply's JSON.
pub async fn post(
    http: &reqwest::Client,
    url: String,
    body: serde_json::Value,
) -> serde_json::Value {
    let reply = http.post(url).json(&body).send().await.unwrap();
    reply.json().await.unwrap()
}

/// `POST /login`; returns the token.
pub async fn login(http: &reqwest::Client, addr: SocketAddr, user: &str, password: &str) -> String {
    let body = serde_json::json!({"user": user, "password": password});
    let reply = post(http, format!("http://{addr}/login"), body).await;
    reply["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {reply}"))
        .to_owned()
}

/// Waits until `acked` holds `n` acknowledgements.
pub async fn until_acked(acked: &Mutex<Vec<(String, u64)>>, n: usize) {
    tokio::time::timeout(WAIT, async {
        while acked.lock().unwrap().len() < n {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{n} acknowledgements arrive"));
}

/// User 1 (of `--demo`) streaming v2 messages with client ids `c-0`, `c-1`, … to user 2
/// until the server is gone, and the server's `Ack`s collected as they come.
pub struct AckedStream {
    /// A login token of user 2, the receiver.
    pub receiver_token: String,
    /// `(client id, seq)` of every `Ack`, in order.
    pub acked: Arc<Mutex<Vec<(String, u64)>>>,
    pub collector: tokio::task::JoinHandle<()>,
    /// Ends with the number of messages sent.
    pub streamer: tokio::task::JoinHandle<u64>,
}

/// Logs users 1 and 2 in and starts an [`AckedStream`] on `p`.
pub async fn acked_stream(p: &Proc) -> AckedStream {
    use improto::{Client, Message, Packet, Regist};
    let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let token = login(&http, p.http, "1", "123").await;
    let receiver_token = login(&http, p.http, "2", "123").await;
    let mut sender = tokio::time::timeout(WAIT, Client::connect(p.tcp))
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(WAIT, sender.handshake(Regist::v2("1", token)))
        .await
        .unwrap()
        .unwrap();
    let (mut tx, mut rx) = sender.split();
    let acked = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    let acks = acked.clone();
    let collector = tokio::spawn(async move {
        while let Ok(Some(packet)) = rx.recv().await {
            if let Packet::Ack(a) = packet {
                acks.lock()
                    .unwrap()
                    .push((a.id.expect("ids are echoed"), a.seq));
            }
        }
    });
    let streamer = tokio::spawn(async move {
        for i in 0u64.. {
            let m = Message::new("1", "2", format!("durable {i}")).with_id(format!("c-{i}"));
            if tx.send(m).await.is_err() {
                return i; // the server is gone
            }
        }
        unreachable!()
    });
    AckedStream {
        receiver_token,
        acked,
        collector,
        streamer,
    }
}

/// Every entry of `user`'s stream from the start, as (`seq`, the message's client id, or
/// the event's kind).
pub async fn stream_of(tcp: SocketAddr, user: &str, token: &str) -> Vec<(u64, String)> {
    let mut c = tokio::time::timeout(WAIT, improto::Client::connect(tcp))
        .await
        .unwrap()
        .unwrap();
    let regist = improto::Regist::v2(user, token).resume_after(0);
    let head = tokio::time::timeout(WAIT, c.handshake(regist))
        .await
        .unwrap()
        .unwrap()
        .seq;
    let mut entries = Vec::new();
    while (entries.len() as u64) < head {
        match tokio::time::timeout(WAIT, c.recv()).await.unwrap().unwrap() {
            Some(improto::Packet::Message(m)) => entries.push((m.seq.unwrap(), m.id.unwrap())),
            Some(improto::Packet::Event(e)) => entries.push((e.seq.unwrap(), e.kind.to_string())),
            other => panic!("{other:?}"),
        }
    }
    entries
}
