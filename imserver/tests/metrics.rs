//! `GET /metrics` on `--metrics-addr` (checked by Prometheus's own `promtool`), the Grafana
//! dashboard under `deploy/`, and `/healthz` and `/readyz`.
//!
//! The `metrics` facade has one recorder per process, which every server of this test binary
//! shares: the tests compare counts before and after their own traffic, and only ever
//! expect them to grow.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::{TestServer, WAIT, expect_error, recv_message, send_for_ack};
use improto::{ErrorCode, Message, Packet};
use tokio::time::timeout;

async fn metrics_server() -> TestServer {
    TestServer::start_with(|c| {
        c.http.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
        c.auth.auth = imserver::config::AuthMode::Token;
    })
    .await
}

async fn scrape(srv: &TestServer) -> String {
    let addr = srv
        .server
        .as_ref()
        .unwrap()
        .metrics_addr()
        .expect("metrics on");
    let reply = srv
        .http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let ctype = reply.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    reply.text().await.unwrap()
}

/// Every sample: `name{labels}` → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of every sample of `name` whose labels contain each of `labels`.
fn total(samples: &HashMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            let bare = series.split('{').next().unwrap();
            bare == name && labels.iter().all(|l| series.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

/// The metric families a scrape declares (`# TYPE name kind`).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Traffic that moves every series: accounts and logins, v2 messages with a duplicate, an
/// error, acknowledgements, a replay, a WebSocket, and HTTP requests. Returns the
/// connections, still open (the gauges count them).
async fn traffic(srv: &TestServer) -> (Vec<improto::Client>, common::ws::Ws) {
    let (a, a_token) = srv.user("Ann").await;
    let (b, b_token) = srv.user("Bob").await;
    let (mut ann, _) = srv.v2(&a, &a_token, None).await;
    let (mut bob, _) = srv.v2(&b, &b_token, None).await;
    for i in 0..5 {
        send_for_ack(&mut ann, &a, &b, &format!("m{i}")).await;
    }
    // The same client id again: acknowledged, not stored again.
    ann.send(Message::new(&a, &b, "m-again").with_id("c-dup"))
        .await
        .unwrap();
    ann.send(Message::new(&a, &b, "m-again").with_id("c-dup"))
        .await
        .unwrap();
    for _ in 0..2 {
        match common::recv_packet(&mut ann).await {
            Packet::Ack(_) => {}
            other => panic!("expected an Ack, got {other:?}"),
        }
    }
    // A message claiming another sender: an error.
    ann.send(Message::new(&b, &a, "not me").with_id("c-bad"))
        .await
        .unwrap();
    expect_error(&mut ann, ErrorCode::SenderMismatch).await;
    let mut last = 0;
    for _ in 0..6 {
        last = recv_message(&mut bob).await.seq.unwrap();
    }
    bob.ack(last).await.unwrap();
    // A second device of Bob's replays his stream.
    let (mut again, _) = srv.v2(&b, &b_token, Some(0)).await;
    for _ in 0..6 {
        recv_message(&mut again).await;
    }
    let (ws, _) = srv.ws_v2(&a, &a_token, None).await;
    let (status, _) = srv.get_as(&format!("/profile/{b}"), &a_token).await;
    assert_eq!(status, 200);
    (vec![ann, bob, again], ws)
}

/// The series the issue names, each with the labels that must be there.
const NAMED: &[(&str, &[&str])] = &[
    (
        "imserver_connections",
        &["transport=\"tcp\"", "protocol=\"v2\""],
    ),
    ("imserver_connections", &["transport=\"ws\""]),
    ("imserver_users_online", &[]),
    ("imserver_messages_received_total", &[]),
    ("imserver_messages_stored_total", &[]),
    ("imserver_entries_delivered_total", &[]),
    ("imserver_acks_sent_total", &[]),
    ("imserver_client_acks_total", &[]),
    ("imserver_messages_duplicate_total", &[]),
    ("imserver_errors_sent_total", &["code=\"sender_mismatch\""]),
    ("imserver_store_batch_writes_count", &[]),
    ("imserver_store_commit_seconds_count", &[]),
    ("imserver_replay_entries_sum", &[]),
    (
        "imserver_http_requests_total",
        &["route=\"/profile/{id}\"", "status=\"200\""],
    ),
    (
        "imserver_http_request_duration_seconds_count",
        &["route=\"/login\""],
    ),
    ("imserver_password_hash_wait_seconds_count", &[]),
];

#[tokio::test]
async fn the_named_series_move_when_traffic_flows() {
    let srv = metrics_server().await;
    let before = samples(&scrape(&srv).await);
    let _open = traffic(&srv).await;
    // What the store and the sessions count after their answers may trail them a little.
    let moved = |after: &HashMap<String, f64>| {
        NAMED
            .iter()
            .filter(|(name, labels)| total(after, name, labels) <= total(&before, name, labels))
            .map(|(name, labels)| format!("{name}{labels:?}"))
            .collect::<Vec<_>>()
    };
    let mut still = Vec::new();
    let waited = timeout(WAIT, async {
        loop {
            let after = samples(&scrape(&srv).await);
            still = moved(&after);
            if still.is_empty() {
                return after;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let after = waited.unwrap_or_else(|_| panic!("these did not move: {still:?}"));
    // Process metrics, read at each scrape.
    assert!(total(&after, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(total(&after, "process_open_fds", &[]) > 3.0);
    assert!(total(&after, "imserver_store_queue_depth", &[]) >= 0.0);
}

#[tokio::test]
async fn promtool_finds_nothing_wrong_with_a_scrape_taken_under_traffic() {
    let srv = metrics_server().await;
    let _open = traffic(&srv).await;
    let text = scrape(&srv).await;
    let check = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut promtool = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool is installed (scripts/test installs Debian's prometheus)");
        promtool
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        promtool.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "promtool check metrics: {said}");
    assert!(said.trim().is_empty(), "promtool has remarks: {said}");
}

#[tokio::test]
async fn the_grafana_dashboard_queries_only_series_the_server_exports() {
    let srv = metrics_server().await;
    let _open = traffic(&srv).await;
    let exported = families(&scrape(&srv).await);
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../deploy/grafana-dashboard.json"))
            .expect("the dashboard is valid JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "a panel per concern: {exprs:?}");
    let mut named = BTreeSet::new();
    for expr in &exprs {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if word.starts_with("imserver_") || word.starts_with("process_") {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| word.strip_suffix(s))
                    .unwrap_or(word);
                named.insert(family.to_owned());
            }
        }
    }
    let unknown: Vec<_> = named.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries unknown series: {unknown:?}"
    );
    // And every family the server exports has a panel.
    let unshown: Vec<_> = exported
        .iter()
        .filter(|f| f.starts_with("imserver_") && !named.contains(*f))
        .collect();
    assert!(unshown.is_empty(), "no panel for {unshown:?}");
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}

#[tokio::test]
async fn metrics_are_on_their_own_port_only() {
    let srv = metrics_server().await;
    let (status, _) = srv.get("/metrics").await;
    assert_eq!(status, 404, "not on the public API port");
    let addr = srv.server.as_ref().unwrap().metrics_addr().unwrap();
    let reply = srv
        .http
        .get(format!("http://{addr}/profile/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        reply.status(),
        404,
        "and the metrics port serves nothing else"
    );
    let off = TestServer::start().await;
    assert!(
        off.server.as_ref().unwrap().metrics_addr().is_none(),
        "off by default"
    );
}

#[tokio::test]
async fn healthz_is_up_and_readyz_says_503_while_shutting_down() {
    let mut srv = TestServer::start_with(|c| {
        c.http.shutdown_delay = Duration::from_secs(3);
    })
    .await;
    let (status, body) = srv.get("/healthz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = srv.get("/readyz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));

    let url = srv.url("/readyz");
    let http = srv.http.clone();
    let server = srv.server.take().unwrap();
    let stopping = tokio::spawn(server.shutdown());
    let not_ready = timeout(WAIT, async {
        loop {
            if let Ok(reply) = http.get(&url).send().await
                && reply.status() == 503
            {
                return reply.json::<serde_json::Value>().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("503 during the shutdown delay");
    assert_eq!(not_ready["status"], "shutting down");
    timeout(WAIT, stopping).await.unwrap().unwrap();
}
