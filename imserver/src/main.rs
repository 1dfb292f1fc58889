//! The `imserver` binary: parse the configuration, start, run until SIGINT or SIGTERM.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use imserver::{Config, Server};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// mimalloc rather than glibc's malloc. A relayed message is allocated on the thread that
/// read it and freed on others (the store's writer, the receiver's); with glibc, malloc, free
/// and free-list consolidation took over a third of the tokio threads' CPU time and a tenth
/// of the writer's. With mimalloc, v2 went from 3.2 to 2.7 µs per message and v1 from 2.1 to
/// 1.6 (README, "Performance"). Built with `no_thp`: transparent huge pages would round the
/// idle server's memory up in 2 MiB steps (18 MB instead of 9 at startup). The hashing
/// threads hand back their 19 MiB after each hash (`auth::release_hash_memory`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `imserver backup`: a consistent copy of a running server's database (SQLite's online
/// backup API).
#[derive(clap::Parser)]
#[command(name = "imserver backup")]
struct Backup {
    /// The server's `--data-dir`.
    #[arg(long)]
    data_dir: std::path::PathBuf,
    /// The backup file to write (replaced if it exists, only once the copy is whole).
    #[arg(long)]
    to: std::path::PathBuf,
}

/// `imserver restore`: a backup put back as a data dir's database. Stop the server first.
#[derive(clap::Parser)]
#[command(name = "imserver restore")]
struct Restore {
    /// The backup file.
    #[arg(long)]
    from: std::path::PathBuf,
    /// The data dir to restore into.
    #[arg(long)]
    data_dir: std::path::PathBuf,
    /// Overwrite the database the data dir has.
    #[arg(long)]
    replace: bool,
}

/// `imserver migrate`: a SQLite store copied, whole, into an empty PostgreSQL database, in
/// one transaction. Stop the server first.
#[derive(clap::Parser)]
#[command(name = "imserver migrate")]
struct Migrate {
    /// The SQLite store: `sqlite:DIR`, DIR being the server's `--data-dir`.
    #[arg(long, value_parser = sqlite_dir)]
    from: std::path::PathBuf,
    /// The PostgreSQL database (`postgres://user:password@host/db`); it must be empty.
    #[arg(long, env = "IMSERVER_STORE", hide_env_values = true)]
    to: String,
}

fn sqlite_dir(s: &str) -> Result<std::path::PathBuf, String> {
    s.strip_prefix("sqlite:")
        .map(Into::into)
        .ok_or_else(|| "sqlite:DIR, DIR being the server's --data-dir".into())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some("print-config") => {
            args.remove(1);
            let text = imserver::config::effective(args).unwrap_or_else(|e| e.exit());
            print!("{text}");
            return Ok(());
        }
        Some("backup") => {
            let b = Backup::parse_from(args.iter().skip(1));
            let bytes = tokio::task::spawn_blocking(move || {
                imserver::store::backup(&b.data_dir, &b.to).map(|n| (n, b.to))
            })
            .await?;
            let (bytes, to) = bytes.context("backup failed")?;
            println!("backed up {bytes} bytes to {}", to.display());
            return Ok(());
        }
        Some("restore") => {
            let r = Restore::parse_from(args.iter().skip(1));
            let bytes = tokio::task::spawn_blocking(move || {
                imserver::store::restore(&r.from, &r.data_dir, r.replace).map(|n| (n, r.data_dir))
            })
            .await?;
            let (bytes, dir) = bytes.context("restore failed")?;
            println!("restored {bytes} bytes into {}", dir.display());
            return Ok(());
        }
        Some("migrate") => {
            let m = Migrate::parse_from(args.iter().skip(1));
            let copied = imserver::store::migrate::sqlite_to_postgres(&m.from, &m.to)
                .await
                .context("migrate failed")?;
            println!(
                "copied {} users, {} groups and {} streams ({} entries) to {}",
                copied.users,
                copied.groups,
                copied.streams,
                copied.entries,
                imserver::config::redact_url(&m.to)
            );
            return Ok(());
        }
        _ => {}
    }
    let config: Config = imserver::config::load(args).unwrap_or_else(|e| e.exit());
    // The handlers are installed before the startup line is logged: a supervisor that
    // signals as soon as it sees that line must get a clean shutdown, not the default
    // action of a signal nobody listens for yet.
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let server = Server::start(config)
        .await
        .context("imserver failed to start")?;

    loop {
        tokio::select! {
            _ = int.recv() => break tracing::info!("SIGINT received; shutting down"),
            _ = term.recv() => break tracing::info!("SIGTERM received; shutting down"),
            _ = hup.recv() => match server.reload_tls().await {
                Ok(true) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                Ok(false) => tracing::info!("SIGHUP: no TLS to reload"),
                Err(e) => tracing::error!("TLS reload failed; the certificate in use stays: {e}"),
            },
        }
    }
    server.shutdown().await;
    Ok(())
}
