//! `GET /metrics` on `--metrics-addr`: every series in Prometheus text format (see
//! `crate::metrics`). Served by the same listener code as the API, on a port of its own.

use std::convert::Infallible;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use warp::Filter;
use warp::http::{StatusCode, header};
use warp::reply::Response;

use crate::relay::LocalRouter;

/// The routes of the metrics port: `/metrics`, and JSON 404s for anything else.
pub fn routes(
    handle: PrometheusHandle,
    router: Arc<LocalRouter>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    warp::path!("metrics")
        .and(warp::get())
        .then(move || {
            let (handle, router) = (handle.clone(), router.clone());
            async move {
                // It reads /proc: off the runtime's threads.
                let text = tokio::task::spawn_blocking(move || {
                    crate::metrics::render(&handle, router.users_online())
                })
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                let mut response = Response::new(text.into());
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
        })
        .recover(|_| async {
            let body = serde_json::json!({ "msg": "Not found: this port serves GET /metrics" });
            Ok::<_, Infallible>(super::reply::json(StatusCode::NOT_FOUND, &body))
        })
        .unify()
}
