//! `GET /healthz` and `GET /readyz`, for supervisors and load balancers.
//!
//! - `/healthz`: the process answers HTTP (liveness). Always `200` while it serves.
//! - `/readyz`: `200` while the server takes new clients: its store answers a read and a
//!   write-queue round trip within [`STORE_CHECK`], and it is not shutting down. `503` with
//!   the reason otherwise (during `--shutdown-delay` in particular).

use std::time::Duration;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;

use super::AppState;
use super::reply::json;

/// How long the store has to answer a readiness check.
const STORE_CHECK: Duration = Duration::from_secs(2);

pub fn healthz() -> Response {
    json(StatusCode::OK, &json!({ "status": "ok" }))
}

pub async fn readyz(s: &AppState) -> Response {
    let unavailable = |why: &str| json(StatusCode::SERVICE_UNAVAILABLE, &json!({ "status": why }));
    if s.draining.is_cancelled() {
        return unavailable("shutting down");
    }
    match tokio::time::timeout(STORE_CHECK, s.store.ready()).await {
        Ok(Ok(())) => json(StatusCode::OK, &json!({ "status": "ready" })),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check: the store failed");
            unavailable("store unavailable")
        }
        Err(_) => unavailable("store not answering"),
    }
}
