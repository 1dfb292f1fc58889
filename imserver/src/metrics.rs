//! Metrics, through the `metrics` facade, exported in Prometheus text format on
//! `--metrics-addr` (`GET /metrics`; off by default, and on a port of its own so that it is
//! not public by default).
//!
//! Every series is named and described here, so that this file is the list of what the
//! server reports (`deploy/grafana-dashboard.json` queries only these). Rooms record through
//! the handles in [`RelayMetrics`] and [`StoreMetrics`], made once when they start, or
//! through the functions below for rare events and HTTP requests. Without `--metrics-addr` no recorder is
//! installed, and every handle is a no-op.
//!
//! Counts on the hot path are added per burst, per commit and per write, never per message,
//! so that metrics cost the relay nothing measurable (README, "Performance").
//!
//! Gauges that are cheaper to read than to keep (users online, process memory and file
//! descriptors) are read at each scrape.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const CONNECTIONS: &str = "imserver_connections";
pub const USERS_ONLINE: &str = "imserver_users_online";
pub const RECEIVED: &str = "imserver_messages_received_total";
pub const STORED: &str = "imserver_messages_stored_total";
pub const DUPLICATES: &str = "imserver_messages_duplicate_total";
pub const DELIVERED: &str = "imserver_entries_delivered_total";
pub const ACKS_SENT: &str = "imserver_acks_sent_total";
pub const CLIENT_ACKS: &str = "imserver_client_acks_total";
pub const ERRORS_SENT: &str = "imserver_errors_sent_total";
pub const EVICTED: &str = "imserver_slow_readers_evicted_total";
pub const RETENTION_DELETED: &str = "imserver_retention_deleted_entries_total";
pub const REPLAYED: &str = "imserver_replay_entries";
pub const REPAIRED: &str = "imserver_entries_repaired_total";
pub const BATCH_SIZE: &str = "imserver_store_batch_writes";
pub const COMMIT_SECONDS: &str = "imserver_store_commit_seconds";
pub const STORE_QUEUE: &str = "imserver_store_queue_depth";
pub const HTTP_REQUESTS: &str = "imserver_http_requests_total";
pub const HTTP_SECONDS: &str = "imserver_http_request_duration_seconds";
pub const HASH_WAIT: &str = "imserver_password_hash_wait_seconds";
pub const REFUSED: &str = "imserver_connections_refused_total";
pub const CLIENT_ERRORS: &str = "imserver_connection_errors_total";
pub const RSS: &str = "process_resident_memory_bytes";
pub const OPEN_FDS: &str = "process_open_fds";
pub const MAX_FDS: &str = "process_max_fds";

/// The process's one recorder: the `metrics` facade has one global recorder, so a second
/// server in the same process (tests) shares it.
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder, once per process; rooms started after it record.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0,
            ];
            let counts = [
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0, 16384.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), &counts))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(REPLAYED.into()), &counts))
                .expect("the buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if let Err(e) = metrics::set_global_recorder(recorder) {
                tracing::warn!("another metrics recorder is installed; /metrics stays empty: {e}");
            }
            describe();
            // Rare events' series exist from the start at 0, so that `rate()` and
            // dashboards see them before the first one.
            counter!(EVICTED).absolute(0);
            counter!(RETENTION_DELETED).absolute(0);
            counter!(REPAIRED).absolute(0);
            for (listener, limit) in REFUSALS {
                counter!(REFUSED, "listener" => *listener, "limit" => *limit).absolute(0);
            }
            for (listener, kind) in CLIENT_ERROR_KINDS {
                counter!(CLIENT_ERRORS, "listener" => *listener, "kind" => *kind).absolute(0);
            }
            handle
        })
        .clone()
}

fn describe() {
    describe_gauge!(
        CONNECTIONS,
        "Registered relay connections, by transport (tcp, ws) and protocol version (v1, v2)"
    );
    describe_gauge!(
        USERS_ONLINE,
        "Users with at least one registered connection"
    );
    describe_counter!(RECEIVED, "Messages received from clients, before the store");
    describe_counter!(
        STORED,
        "Messages stored (each once, whatever its receivers)"
    );
    describe_counter!(
        DUPLICATES,
        "Messages sent again with a client id already stored: acknowledged, not stored again"
    );
    describe_counter!(
        DELIVERED,
        "Stream entries written to connections, live or replayed"
    );
    describe_counter!(ACKS_SENT, "Acks sent to v2 senders for stored messages");
    describe_counter!(
        CLIENT_ACKS,
        "Ack packets received from devices (stream positions)"
    );
    describe_counter!(ERRORS_SENT, "Error packets sent to clients, by code");
    describe_counter!(
        EVICTED,
        "Connections closed because their send queue overflowed (slow readers)"
    );
    describe_counter!(
        RETENTION_DELETED,
        "Stream entries deleted by retention (--retention, --retention-unacked)"
    );
    describe_counter!(
        REPAIRED,
        "Stream positions read from the store because live delivery skipped them (the bus \
         between nodes lost or reordered entries)"
    );
    describe_histogram!(REPLAYED, "Stream entries replayed per Regist");
    describe_histogram!(BATCH_SIZE, "Writes per store transaction (group commit)");
    describe_histogram!(COMMIT_SECONDS, Unit::Seconds, "Store transaction time");
    describe_gauge!(
        STORE_QUEUE,
        "Writes waiting for the store at a batch's start"
    );
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by route and status");
    describe_histogram!(HTTP_SECONDS, Unit::Seconds, "HTTP request time, by route");
    describe_histogram!(
        HASH_WAIT,
        Unit::Seconds,
        "Time a registration or login waited for a password hashing thread"
    );
    describe_counter!(
        REFUSED,
        "Connections closed at accept, by listener and the limit they met"
    );
    describe_counter!(
        CLIENT_ERRORS,
        "Connections that ended in an error the client caused, by listener and kind"
    );
    describe_gauge!(RSS, Unit::Bytes, "Resident memory of the process");
    describe_gauge!(OPEN_FDS, "Open file descriptors of the process");
    describe_gauge!(MAX_FDS, "The process's limit on open file descriptors");
}

/// Renders every series, reading the gauges that are read at scrape time first.
/// `users_online` is the relay's count. Blocking (it reads `/proc`).
pub fn render(handle: &PrometheusHandle, users_online: usize) -> String {
    gauge!(USERS_ONLINE).set(users_online as f64);
    if let Some(rss) = resident_bytes() {
        gauge!(RSS).set(rss as f64);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge!(OPEN_FDS).set(fds.count() as f64);
    }
    if let Some(max) = max_fds() {
        gauge!(MAX_FDS).set(max as f64);
    }
    handle.run_upkeep();
    handle.render()
}

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The relay's handles, made when it starts.
#[derive(Clone)]
pub struct RelayMetrics {
    pub received: Counter,
    pub delivered: Counter,
    pub acks_sent: Counter,
    pub client_acks: Counter,
    pub replayed: Histogram,
    pub repaired: Counter,
}

impl RelayMetrics {
    pub fn new() -> Self {
        RelayMetrics {
            received: counter!(RECEIVED),
            delivered: counter!(DELIVERED),
            acks_sent: counter!(ACKS_SENT),
            client_acks: counter!(CLIENT_ACKS),
            replayed: histogram!(REPLAYED),
            repaired: counter!(REPAIRED),
        }
    }
}

impl Default for RelayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A relay connection registered (`+1`) or gone (`-1`).
pub fn connection(transport: &'static str, protocol: &'static str, delta: f64) {
    gauge!(CONNECTIONS, "transport" => transport, "protocol" => protocol).increment(delta);
}

/// A slow reader disconnected: its send queue overflowed.
pub fn evicted() {
    counter!(EVICTED).increment(1);
}

/// The count of stream entries retention deleted (see `store::sqlite::retention`).
pub fn retention_deleted() -> Counter {
    counter!(RETENTION_DELETED)
}

/// An `Error` packet sent to a client.
pub fn error_sent(code: &improto::ErrorCode) {
    counter!(ERRORS_SENT, "code" => code.to_string()).increment(1);
}

/// Every `(listener, limit)` of [`refused`].
const REFUSALS: &[(&str, &str)] = &[
    ("http", "max_connections_per_ip"),
    ("http", "max_http_connections"),
    ("relay", "max_connections_per_ip"),
    ("relay", "max_connections"),
];

/// Every `(listener, kind)` of [`client_error`].
const CLIENT_ERROR_KINDS: &[(&str, &str)] = &[
    ("http", "timeout"),
    ("http", "protocol"),
    ("http", "tls_handshake"),
    ("http", "tls_timeout"),
    ("relay", "tls_handshake"),
    ("relay", "tls_timeout"),
];

/// A connection closed at accept: `listener` is `http` or `relay`, `limit` the flag it met.
pub fn refused(listener: &'static str, limit: &'static str) {
    debug_assert!(REFUSALS.contains(&(listener, limit)));
    counter!(REFUSED, "listener" => listener, "limit" => limit).increment(1);
}

/// A connection that ended in an error its client caused (a reset, a timeout, a failed
/// handshake): logged at `debug` only, and counted here.
pub fn client_error(listener: &'static str, kind: &'static str) {
    debug_assert!(CLIENT_ERROR_KINDS.contains(&(listener, kind)));
    counter!(CLIENT_ERRORS, "listener" => listener, "kind" => kind).increment(1);
}

/// The store's handles, made when its writer starts.
pub struct StoreMetrics {
    pub stored: Counter,
    pub duplicates: Counter,
    pub batch: Histogram,
    pub commit: Histogram,
    pub queue: Gauge,
}

impl StoreMetrics {
    pub fn new() -> Self {
        StoreMetrics {
            stored: counter!(STORED),
            duplicates: counter!(DUPLICATES),
            batch: histogram!(BATCH_SIZE),
            commit: histogram!(COMMIT_SECONDS),
            queue: gauge!(STORE_QUEUE),
        }
    }
}

impl StoreMetrics {
    /// Counts what a committed request's messages became.
    pub fn appended(&self, outcomes: &[crate::store::Outcome]) {
        let (mut stored, mut duplicates) = (0, 0);
        for o in outcomes {
            match o.appended {
                crate::store::Appended::Stored {
                    duplicate: false, ..
                } => stored += 1,
                crate::store::Appended::Stored {
                    duplicate: true, ..
                } => duplicates += 1,
                _ => {}
            }
        }
        if stored > 0 {
            self.stored.increment(stored);
        }
        if duplicates > 0 {
            self.duplicates.increment(duplicates);
        }
    }
}

impl Default for StoreMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// How long a password waited for a hashing thread.
pub fn hash_wait(waited: Duration) {
    histogram!(HASH_WAIT).record(waited.as_secs_f64());
}

/// An HTTP request answered.
pub fn http_request(route: &'static str, status: u16, took: Duration) {
    counter!(HTTP_REQUESTS, "route" => route, "status" => status.to_string()).increment(1);
    histogram!(HTTP_SECONDS, "route" => route).record(took.as_secs_f64());
}

/// The route a path belongs to, for labels: ids become placeholders, and unknown paths are
/// one label, so that a scanner cannot make series without end.
pub fn route(path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        [""] => "/",
        ["web", ..] => "/web/{file}",
        ["regist"] => "/regist",
        ["login"] => "/login",
        ["logout"] => "/logout",
        ["profile", _] => "/profile/{id}",
        ["username", _] => "/username/{id}",
        ["list", _] => "/list/{id}",
        ["friends", "requests"] => "/friends/requests",
        ["friends", "requests", _, "accept"] => "/friends/requests/{id}/accept",
        ["friends", "requests", _, "decline"] => "/friends/requests/{id}/decline",
        ["friends", _] => "/friends/{id}",
        ["blocks"] => "/blocks",
        ["blocks", _] => "/blocks/{id}",
        ["history", _] => "/history/{peer}",
        ["conversations"] => "/conversations",
        ["presence", _] => "/presence/{id}",
        ["groups"] => "/groups",
        ["groups", _] => "/groups/{group}",
        ["groups", _, "members"] => "/groups/{group}/members",
        ["groups", _, "members", _] => "/groups/{group}/members/{id}",
        ["ws"] => "/ws",
        ["healthz"] => "/healthz",
        ["readyz"] => "/readyz",
        ["metrics"] => "/metrics",
        ["openapi.json"] => "/openapi.json",
        ["admin", "users", _, "disable"] => "/admin/users/{id}/disable",
        ["admin", "users", _, "enable"] => "/admin/users/{id}/enable",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_their_template_and_unknown_paths_share_one_label() {
        assert_eq!(route("/profile/42"), "/profile/{id}");
        assert_eq!(route("/groups/g3/members"), "/groups/{group}/members");
        assert_eq!(route("/"), "/");
        assert_eq!(route("/web/app.js"), "/web/{file}");
        assert_eq!(route("/wp-admin/setup.php"), "other");
        assert_eq!(route("/profile/1/2/3"), "other");
    }
}
