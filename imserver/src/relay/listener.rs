//! The TCP accept loop, and the server-wide connection limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::transport::TcpTransport;
use super::{Relay, session};

/// Accepts connections until `shutdown`, serving each in its own task on `tasks`.
pub async fn serve(
    listener: TcpListener,
    relay: Arc<Relay>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let ids = AtomicU64::new(1);
    let open = Arc::new(Semaphore::new(relay.limits.max_connections));
    // `--refusal-backlog`: the connections over the limit that wait for their `Regist` to be
    // told `too_many_connections` (a v1 client cannot be told, so the answer waits for the
    // version).
    let refusals = Arc::new(Semaphore::new(relay.limits.refusal_backlog));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // A permit from `open` is a connection slot; one from `refusals` is a place in
                // the line of connections that are only waiting to be refused.
                let permit = match open.clone().try_acquire_owned() {
                    Ok(_permit) => session::Slot::Open { _permit },
                    Err(_) => match refusals.clone().try_acquire_owned() {
                        Ok(_permit) => session::Slot::Refused { _permit },
                        Err(_) => {
                            tracing::warn!(%peer, "connection limit reached; closed at once");
                            continue;
                        }
                    },
                };
                let id = ids.fetch_add(1, Ordering::Relaxed);
                let transport = TcpTransport::new(stream, relay.limits.max_frame_bytes);
                let fut =
                    session::run(relay.clone(), transport, peer, id, permit, shutdown.clone());
                tasks.spawn(fut);
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
