//! The accept loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Relay, session};

/// Accepts connections until `shutdown`, serving each in its own task on `tasks`.
pub async fn serve(
    listener: TcpListener,
    relay: Arc<Relay>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let ids = AtomicU64::new(1);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Chat frames are small and latency matters more than packet count.
                let _ = stream.set_nodelay(true);
                let id = ids.fetch_add(1, Ordering::Relaxed);
                tasks.spawn(session::run(
                    relay.clone(),
                    stream,
                    peer,
                    id,
                    shutdown.clone(),
                ));
            }
            Err(e) => {
                // Usually out of file descriptors. Back off instead of spinning; connections
                // that close meanwhile free descriptors up.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
