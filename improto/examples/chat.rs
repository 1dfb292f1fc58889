//! A terminal chat client.
//!
//! ```text
//! cargo run -p improto --example chat -- --user 1 --password 123 --to 2
//! cargo run -p improto --example chat -- --user 2 --password 123 --to 1   # another terminal
//! ```
//!
//! With `--password` it logs in over the server's HTTP API and speaks protocol version 2 (the
//! server confirms each message once it is stored). Without it, it
//! speaks version 1 as the Go server's clients did, which needs a server run with
//! `--auth open`.
//!
//! Every line you type is sent to `--to`; `/to ID` changes the recipient, Ctrl-D quits.
//! Incoming messages are printed as they arrive.

use anyhow::{Context, bail};
use clap::Parser;
use improto::{Client, ClientReceiver, Message, Packet, Regist};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Parser)]
struct Args {
    /// The server's TCP relay address.
    #[arg(long, default_value = "127.0.0.1:8888")]
    addr: String,
    /// The server's HTTP address, for logging in.
    #[arg(long, default_value = "127.0.0.1:6666")]
    http: String,
    /// Your user id.
    #[arg(long)]
    user: String,
    /// Your password: log in and speak protocol version 2.
    #[arg(long)]
    password: Option<String>,
    /// Who your lines go to (change it later with `/to ID`).
    #[arg(long)]
    to: String,
}

/// `POST /login`; the token it returns.
async fn login(http: &str, user: &str, password: &str) -> anyhow::Result<String> {
    let reply: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{http}/login"))
        .json(&serde_json::json!({ "user": user, "password": password }))
        .send()
        .await
        .with_context(|| format!("logging in at {http}"))?
        .json()
        .await?;
    match reply["token"].as_str() {
        Some(token) => Ok(token.to_owned()),
        None => bail!("login refused: {}", reply["msg"]),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut client = Client::connect(&args.addr)
        .await
        .with_context(|| format!("connecting to {}", args.addr))?;
    let v2 = match &args.password {
        Some(password) => {
            let token = login(&args.http, &args.user, password).await?;
            let live = client.handshake(Regist::v2(&args.user, token)).await?;
            eprintln!("{} messages in your inbox so far", live.seq);
            true
        }
        None => {
            client.send(Regist::new(&args.user)).await?;
            false
        }
    };
    let (mut tx, rx) = client.split();
    eprintln!(
        "connected to {} as {}; talking to {}",
        args.addr, args.user, args.to
    );
    let printer = tokio::spawn(print_incoming(rx));

    let mut to = args.to;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut sent = 0u64;
    while let Some(line) = lines.next_line().await? {
        if let Some(id) = line.strip_prefix("/to ") {
            to = id.trim().to_string();
            eprintln!("now talking to {to}");
        } else if !line.is_empty() {
            let mut m = Message::new(args.user.clone(), to.clone(), line);
            if v2 {
                sent += 1;
                let id = format!("{}-{sent}", m.create_time);
                m = m.with_id(id);
            }
            tx.send(m).await?;
        }
    }
    tx.close().await?;
    printer.abort();
    Ok(())
}

/// Prints messages, and on v2 the server's Acks and Errors.
async fn print_incoming(mut rx: ClientReceiver) {
    loop {
        match rx.recv().await {
            Ok(Some(Packet::Message(m))) => match m.seq {
                Some(seq) => println!("[{}] {} (#{seq})", m.sender, m.message),
                None => println!("[{}] {}", m.sender, m.message),
            },
            Ok(Some(Packet::Ack(a))) => eprintln!("(stored as #{} of the receiver's inbox)", a.seq),
            Ok(Some(Packet::Error(e))) => eprintln!("(server: {} {})", e.code, e.message),
            Ok(Some(other)) => eprintln!("(ignored {other:?})"),
            Ok(None) => return eprintln!("server closed the connection"),
            Err(e) if e.is_fatal() => return eprintln!("connection lost: {e}"),
            Err(e) => eprintln!("(bad packet from server: {e})"),
        }
    }
}
