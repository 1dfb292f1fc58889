//! `refrelay`: the minimal tokio relay every imserver result is compared with, measured in
//! the same run by the same `imbench`.
//!
//! It does the least a relay can: a reader task per connection reads frames with improto's
//! codec and peeks at the envelope only; `Regist` puts the connection in one table, and a
//! `Message` is handed, as the bytes it arrived as, to its receiver's writer task, which
//! writes whatever is queued in one go. No storage, no acknowledgements, no limits, and a
//! message for an offline user (or a full queue) is dropped. Protocol version 1 only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use clap::Parser;
use futures::StreamExt;
use improto::{Envelope, FrameCodec, PacketKind};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

#[derive(Parser)]
#[command(about = "A minimal relay without storage, the reference for imbench")]
struct Cli {
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Frames a connection's queue holds.
    #[arg(long, default_value_t = 1024)]
    queue: usize,
}

type Table = Arc<Mutex<HashMap<String, mpsc::Sender<Bytes>>>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let listener = TcpListener::bind(cli.addr).await?;
    println!("refrelay listening tcp_addr={}", listener.local_addr()?);
    let table = Table::default();
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(serve(stream, table.clone(), cli.queue));
    }
}

async fn serve(stream: TcpStream, table: Table, queue: usize) {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(queue);
    tokio::spawn(async move {
        let mut out = BytesMut::new();
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            while let Some(frame) = next {
                out.put_u32(frame.len() as u32);
                out.put_slice(&frame);
                next = if out.len() < 64 * 1024 {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            if write.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    });
    let mut frames = FramedRead::new(read, FrameCodec::new());
    let mut user = None;
    while let Some(Ok(frame)) = frames.next().await {
        let Ok(env) = Envelope::peek(&frame) else {
            continue;
        };
        match env.kind() {
            PacketKind::Regist => {
                let id = env.sender().unwrap_or_default().to_owned();
                table.lock().unwrap().insert(id.clone(), tx.clone());
                user = Some(id);
            }
            PacketKind::Message => {
                let to = env.receiver().unwrap_or_default();
                let queue = table.lock().unwrap().get(to).cloned();
                if let Some(queue) = queue {
                    let _ = queue.try_send(frame);
                }
            }
            _ => {}
        }
    }
    if let Some(id) = user {
        table.lock().unwrap().remove(&id);
    }
}
