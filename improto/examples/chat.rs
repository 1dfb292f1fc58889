//! A terminal chat client.
//!
//! ```text
//! cargo run -p improto --example chat -- --user 1 --to 2
//! cargo run -p improto --example chat -- --user 2 --to 1      # in another terminal
//! ```
//!
//! Every line you type is sent to `--to`; `/to ID` changes the recipient, Ctrl-D quits.
//! Incoming messages are printed as they arrive.

use anyhow::Context;
use clap::Parser;
use improto::{Client, Message, Packet, Regist};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Parser)]
struct Args {
    /// The server's TCP relay address.
    #[arg(long, default_value = "127.0.0.1:8888")]
    addr: String,
    /// Your user id.
    #[arg(long)]
    user: String,
    /// Who your lines go to (change it later with `/to ID`).
    #[arg(long)]
    to: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::connect(&args.addr)
        .await
        .with_context(|| format!("connecting to {}", args.addr))?;
    let (mut tx, mut rx) = client.split();
    tx.send(Regist::new(args.user.clone())).await?;
    eprintln!(
        "connected to {} as {}; talking to {}",
        args.addr, args.user, args.to
    );

    let printer = tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(Some(Packet::Message(m))) => println!("[{}] {}", m.sender, m.message),
                Ok(Some(other)) => eprintln!("(ignored {other:?})"),
                Ok(None) => return eprintln!("server closed the connection"),
                Err(e) if e.is_fatal() => return eprintln!("connection lost: {e}"),
                Err(e) => eprintln!("(bad packet from server: {e})"),
            }
        }
    });

    let mut to = args.to;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(id) = line.strip_prefix("/to ") {
            to = id.trim().to_string();
            eprintln!("now talking to {to}");
        } else if !line.is_empty() {
            tx.send(Message::new(args.user.clone(), to.clone(), line))
                .await?;
        }
    }
    tx.close().await?;
    printer.abort();
    Ok(())
}
