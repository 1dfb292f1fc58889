//! `GET /ws`: the relay over WebSocket. The upgrade is checked here (the handshake's
//! headers, the page's origin, a connection slot), and the upgraded connection goes to the
//! same session code as a TCP connection, through the WebSocket transport.
//!
//! The handshake is made here rather than by warp's `ws()` filter, which gives no say over
//! tungstenite's read buffer: 128 KiB per connection, filled with zeros on every read.

use std::sync::Arc;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use warp::http::{HeaderMap, HeaderValue, StatusCode, header};
use warp::reply::Response;

use super::reply::ApiError;
use super::{AppState, ConnInfo};
use crate::relay::WsTransport;

/// Which web pages may open a WebSocket: `--allowed-origins`.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    /// Any page at all (`*`).
    any: bool,
    /// These origins (`scheme://host[:port]`, lowercase), besides the server's own.
    listed: Vec<String>,
}

impl Origins {
    pub fn new(allowed: &[String]) -> Self {
        Origins {
            any: allowed.iter().any(|o| o.trim() == "*"),
            listed: allowed
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|o| !o.is_empty() && o != "*")
                .collect(),
        }
    }

    /// Whether a request with these headers may upgrade. A browser always names the page's
    /// origin; a client that names none is not a browser, and no page can act through it.
    fn allow(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        if self.any {
            return true;
        }
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        // The page came from this server: its origin's host and port are the request's.
        let own = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|host| {
                let authority = origin.split_once("://").map_or("", |(_, a)| a);
                authority.eq_ignore_ascii_case(host)
            });
        own || self.listed.contains(&origin)
    }
}

/// Answers an upgrade request on `/ws`: `101` and the relay, or why not.
pub fn upgrade(
    headers: HeaderMap,
    on_upgrade: Option<OnUpgrade>,
    conn: Option<ConnInfo>,
    s: Arc<AppState>,
) -> Result<Response, ApiError> {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "/ws speaks WebSocket: send an upgrade request",
        ));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13")) {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "only WebSocket version 13 is spoken",
        ));
    }
    let (Some(key), Some(on_upgrade), Some(ConnInfo { peer, ip })) =
        (headers.get(header::SEC_WEBSOCKET_KEY), on_upgrade, conn)
    else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade needs Sec-WebSocket-Key",
        ));
    };
    if !s.origins.allow(&headers) {
        tracing::info!(%peer, "WebSocket upgrade from another site's page refused");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "pages from this origin may not connect (see --allowed-origins)",
        ));
    }
    let relay = s.relay.clone();
    let Some(admitted) = relay.gate.admit(ip) else {
        tracing::warn!(%peer, "connection limit reached; WebSocket upgrade refused");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is at its connection limit",
        ));
    };
    let accept = derive_accept_key(key.as_bytes());
    let (max_frame_bytes, ping) = (relay.limits.max_frame_bytes, relay.limits.ws_ping);
    s.relay.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let io = TokioIo::new(upgraded);
                let transport = WsTransport::new(io, max_frame_bytes, ping).await;
                relay.serve(admitted, transport, peer).await;
            }
            Err(e) => tracing::debug!(%peer, error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut response = Response::default();
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    // The accept key is base64: always a valid header value.
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    Ok(response)
}
