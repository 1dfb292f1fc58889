//! What every listener shares, below the protocols: TLS (`tls`), the per-address connection
//! limit (`--max-connections-per-ip`, here), and the byte stream a connection is, plain or
//! TLS ([`Stream`]).

mod tls;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use crate::metrics;

pub use tls::{Tls, TlsError};

/// What the listeners share: TLS, when on, and the per-address limit.
#[derive(Debug, Clone)]
pub struct Net {
    /// `--tls-cert` and `--tls-key`; `None`: plain TCP.
    pub tls: Option<Tls>,
    /// `--max-connections-per-ip`.
    pub per_ip: Arc<PerIp>,
}

impl Net {
    /// A place for a connection from `peer` on `listener` (`http`, `relay`) under
    /// `--max-connections-per-ip`; `None` (logged at debug, counted) when its address has
    /// its limit, and the connection is to be closed at once.
    pub fn admit(&self, peer: SocketAddr, listener: &'static str) -> Option<IpSlot> {
        let slot = self.per_ip.admit(peer.ip());
        if slot.is_none() {
            tracing::debug!(%peer, listener, "too many connections from this address; closed");
            metrics::refused(listener, "max_connections_per_ip");
        }
        slot
    }
}

/// A TCP connection as accepted: plain, or TLS over TCP. Both are `AsyncRead + AsyncWrite`.
pub type Stream = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// The TLS handshake of a connection accepted on `listener` (`http`, `relay`), within
/// `deadline`; `None` when it fails or times out (the client's doing: logged at debug and
/// counted) or when the server shuts down meanwhile.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    listener: &'static str,
    deadline: Duration,
    shutdown: &CancellationToken,
) -> Option<Box<TlsStream<TcpStream>>> {
    let accept = acceptor.accept(tcp);
    let done = tokio::select! {
        _ = shutdown.cancelled() => return None,
        done = tokio::time::timeout(deadline, accept) => done,
    };
    match done {
        Ok(Ok(stream)) => Some(Box::new(stream)),
        Ok(Err(e)) => {
            tracing::debug!(%peer, listener, error = %e, "TLS handshake failed");
            metrics::client_error(listener, "tls_handshake");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, listener, "TLS handshake timed out");
            metrics::client_error(listener, "tls_timeout");
            None
        }
    }
}

/// `--max-connections-per-ip`: the connections open from each client address, over every
/// listener (HTTP, WebSocket and the relay) together.
#[derive(Debug)]
pub struct PerIp {
    /// `None`: no limit.
    max: Option<u32>,
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// One connection's place in its address's count, given back when the last clone is
/// dropped. An HTTP connection upgraded to a WebSocket hands a clone to the WebSocket, which
/// keeps the place for its life.
#[derive(Debug, Clone)]
pub struct IpSlot {
    _held: Arc<Held>,
}

#[derive(Debug)]
struct Held {
    limiter: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// `max` 0: no limit.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(PerIp {
            max: (max > 0).then(|| u32::try_from(max).unwrap_or(u32::MAX)),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more connection from `ip`; `None` when that address has its limit.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        // IPv4 clients of a dual-stack listener arrive as `::ffff:a.b.c.d`: one address.
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if self.max.is_some_and(|max| *n >= max) {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            _held: Arc::new(Held {
                limiter: self.clone(),
                ip,
            }),
        })
    }

    /// Connections open from `ip` now.
    #[cfg(test)]
    fn open(&self, ip: IpAddr) -> u32 {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut open = self.limiter.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_has_its_own_count_and_a_closed_connection_frees_its_place() {
        let per_ip = PerIp::new(2);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        let one = per_ip.admit(a).unwrap();
        let _two = per_ip.admit(a).unwrap();
        assert!(per_ip.admit(a).is_none(), "a third from the same address");
        let _other = per_ip.admit(b).expect("another address is not affected");
        let upgraded = one.clone();
        drop(one);
        assert!(per_ip.admit(a).is_none(), "a clone keeps the place");
        drop(upgraded);
        assert!(per_ip.admit(a).is_some());
        // IPv4 through an IPv6 socket counts as the IPv4 address.
        let mapped: IpAddr = "::ffff:127.0.0.3".parse().unwrap();
        let _mapped = per_ip.admit(mapped).expect("a second from 127.0.0.3");
        assert!(per_ip.admit(b).is_none(), "a third from 127.0.0.3");
    }

    #[test]
    fn zero_means_no_limit_and_nothing_is_kept_for_closed_addresses() {
        let per_ip = PerIp::new(0);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let slots: Vec<_> = (0..1000).map(|_| per_ip.admit(ip).unwrap()).collect();
        assert_eq!(per_ip.open(ip), 1000);
        drop(slots);
        assert!(per_ip.open.lock().unwrap().is_empty());
    }
}
