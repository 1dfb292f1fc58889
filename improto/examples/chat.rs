//! A terminal chat client, on `improto::Reconnecting`.
//!
//! ```text
//! cargo run -p improto --example chat -- --user 1 --password 123 --to 2
//! cargo run -p improto --example chat -- --user 2 --password 123 --to 1   # another terminal
//! ```
//!
//! It logs in over the server's HTTP API and speaks protocol version 2. What it has shown is
//! remembered in `imchat-<user>.json` (the last `seq` and the messages not yet stored), so a
//! restart shows only what is new, and a message typed while the server is away is sent
//! when it is back. Messages you send from another device show up here too.
//!
//! Every line you type is sent to `--to`. Commands:
//!
//! - `/to ID`: talk to ID from now on;
//! - `/friend ID [message]`: ask ID to be your friend;
//! - `/accept ID`, `/decline ID`: answer ID's friend request;
//! - `/history [N]`: the last N (default 20) messages with the one you talk to.
//!
//! Ctrl-D quits.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use improto::{EventKind, FileState, Item, ReconnectOptions, Reconnecting};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Parser)]
struct Args {
    /// The server's TCP relay address.
    #[arg(long, default_value = "127.0.0.1:8888")]
    addr: String,
    /// The server's HTTP address, for logging in, friends and history.
    #[arg(long, default_value = "127.0.0.1:6666")]
    http: String,
    /// Your user id.
    #[arg(long)]
    user: String,
    /// Your password.
    #[arg(long)]
    password: String,
    /// Who your lines go to (change it later with `/to ID`).
    #[arg(long)]
    to: String,
    /// Where to remember what was shown (default: `imchat-<user>.json`).
    #[arg(long)]
    state: Option<PathBuf>,
}

/// The HTTP API, as the logged-in user.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// `POST /login`.
    async fn login(addr: &str, user: &str, password: &str) -> anyhow::Result<Api> {
        let http = reqwest::Client::new();
        let base = format!("http://{addr}");
        let reply: Value = http
            .post(format!("{base}/login"))
            .json(&json!({ "user": user, "password": password }))
            .send()
            .await
            .with_context(|| format!("logging in at {addr}"))?
            .json()
            .await?;
        match reply["token"].as_str() {
            Some(token) => Ok(Api {
                token: token.to_owned(),
                http,
                base,
            }),
            None => bail!("login refused: {}", reply["msg"]),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        match req.send().await {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(e) => json!({ "msg": e.to_string() }),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let api = Api::login(&args.http, &args.user, &args.password).await?;
    let state = args
        .state
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("imchat-{}.json", args.user)));
    let options = ReconnectOptions::new(&args.addr, &args.user, &api.token);
    let mut client = Reconnecting::start(options, FileState::new(&state))
        .await
        .with_context(|| format!("reading {}", state.display()))?;
    let sender = client.sender();
    eprintln!(
        "logged in as {}; talking to {} (state in {})",
        args.user,
        args.to,
        state.display()
    );

    let mut to = args.to;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                let line = line.trim();
                let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
                match command {
                    "" => {}
                    "/to" => {
                        to = rest.trim().to_owned();
                        eprintln!("now talking to {to}");
                    }
                    "/friend" => {
                        let (id, message) = rest.split_once(' ').unwrap_or((rest, ""));
                        let body = json!({ "user": id, "message": message });
                        let reply = api.call(reqwest::Method::POST, "/friends/requests", Some(body)).await;
                        eprintln!("(friend request to {id}: {})", reply["status"].as_str().unwrap_or_else(|| reply["msg"].as_str().unwrap_or("?")));
                    }
                    "/accept" | "/decline" => {
                        let verb = &command[1..];
                        let path = format!("/friends/requests/{}/{verb}", rest.trim());
                        let reply = api.call(reqwest::Method::POST, &path, None).await;
                        eprintln!("({verb}: {})", reply["status"].as_str().unwrap_or_else(|| reply["msg"].as_str().unwrap_or("?")));
                    }
                    "/history" => {
                        let n: usize = rest.trim().parse().unwrap_or(20);
                        let path = format!("/history/{to}?limit={}", n.clamp(1, 200));
                        let page = api.call(reqwest::Method::GET, &path, None).await;
                        match page["messages"].as_array() {
                            Some(messages) => {
                                if page["more"] == json!(true) {
                                    eprintln!("(older messages exist)");
                                }
                                for m in messages {
                                    println!("  #{} [{}] {}", m["seq"], m["sender"].as_str().unwrap_or("?"), m["message"].as_str().unwrap_or(""));
                                }
                            }
                            None => eprintln!("(history: {})", page["msg"]),
                        }
                    }
                    _ if command.starts_with('/') => eprintln!("(unknown command {command})"),
                    _ => sender.send(to.clone(), line).await?,
                }
            }
            item = client.next() => {
                let Some(item) = item else { break };
                show(&args.user, item);
            }
        }
    }
    client.close().await;
    Ok(())
}

/// Prints one item; everything printed counts as shown (processed) once the next is asked
/// for.
fn show(me: &str, item: Item) {
    match item {
        Item::Message(m) if m.sender == me => {
            println!(
                "[you → {}] {} (#{}, from another device)",
                m.receiver,
                m.message,
                m.seq.unwrap_or(0)
            )
        }
        Item::Message(m) => println!("[{}] {} (#{})", m.sender, m.message, m.seq.unwrap_or(0)),
        Item::Sent { message, seq, .. } => {
            eprintln!("(✓ to {}: stored as #{seq})", message.receiver)
        }
        Item::Event(e) => {
            let who = format!(
                "{} ({})",
                e.user.as_deref().unwrap_or("?"),
                e.name.as_deref().unwrap_or("?")
            );
            match e.kind {
                EventKind::FriendRequest => {
                    let note = e.message.map(|m| format!(": \"{m}\"")).unwrap_or_default();
                    println!(
                        "* {who} asks to be your friend{note} (/accept {0} or /decline {0})",
                        e.user.as_deref().unwrap_or("?")
                    )
                }
                EventKind::FriendAccepted => println!("* you and {who} are friends now"),
                EventKind::FriendRemoved => println!("* {who} is no longer your friend"),
                other => println!("* {other} {who}"),
            }
        }
        Item::Refused {
            message,
            code,
            reason,
        } => {
            eprintln!("(not sent to {}: {code} {reason})", message.receiver)
        }
        Item::Connected { head, oldest } => {
            eprintln!("(connected; your stream is at #{head})");
            if let Some(oldest) = oldest {
                eprintln!("(messages before #{oldest} were deleted before this device got them)");
            }
        }
        Item::Disconnected { reason } => eprintln!("(connection lost: {reason}; reconnecting)"),
        Item::Unauthorized => eprintln!("(the server refused your login; log in again)"),
        other => eprintln!("({other:?})"),
    }
}
