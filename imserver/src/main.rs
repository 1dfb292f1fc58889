//! The `imserver` binary: parse the configuration, start, run until SIGINT or SIGTERM.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use imserver::{Config, Server};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    let config = Config::parse();
    return_large_blocks_to_the_os();
    // The handlers are installed before the startup line is logged: a supervisor that
    // signals as soon as it sees that line must get a clean shutdown, not the default
    // action of a signal nobody listens for yet.
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let server = Server::start(config)
        .await
        .context("imserver failed to start")?;

    tokio::select! {
        _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
    }
    server.shutdown().await;
    Ok(())
}

/// glibc raises its mmap threshold to the size of the largest block freed so far (up to
/// 32 MiB), after which blocks that size come from the heap and stay resident when freed.
/// Each argon2id hash allocates 19 MiB: without this, every hashing thread's heap kept that
/// much for good. A fixed threshold keeps large blocks mmapped, so freeing one returns it.
fn return_large_blocks_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters, under the allocator's own lock (the
    // runtime's threads may already be allocating); it touches no Rust-visible memory.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
