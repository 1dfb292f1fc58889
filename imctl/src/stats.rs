//! `imctl admin stats`: a summary of the server's `/metrics` (Prometheus text format).

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Reads `/metrics` at `base` and sums what an operator looks at first.
pub async fn fetch(base: &str) -> anyhow::Result<Value> {
    let url = format!("{}/metrics", base.trim_end_matches('/'));
    let reply = reqwest::Client::builder()
        .timeout(crate::WAIT)
        .build()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach {url} (is the server run with --metrics-addr?)"))?;
    if !reply.status().is_success() {
        bail!("{url}: {}", reply.status());
    }
    Ok(summary(&reply.text().await?))
}

/// The samples of `text`, summed by series name and the labels kept in `by`.
fn summary(text: &str) -> Value {
    let mut total: BTreeMap<&str, f64> = BTreeMap::new();
    let mut errors: BTreeMap<String, f64> = BTreeMap::new();
    let mut connections: BTreeMap<String, f64> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        *total.entry(name).or_default() += value;
        let label = |key: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{key}=\"")))
                .map(|v| v.trim_end_matches(['"', '}']).to_owned())
        };
        match name {
            "imserver_errors_sent_total" => {
                *errors.entry(label("code").unwrap_or_default()).or_default() += value;
            }
            "imserver_connections" => {
                let key = format!(
                    "{} {}",
                    label("transport").unwrap_or_default(),
                    label("protocol").unwrap_or_default()
                );
                *connections.entry(key).or_default() += value;
            }
            _ => {}
        }
    }
    let get = |name: &str| total.get(name).copied().unwrap_or(0.0);
    json!({
        "usersOnline": get("imserver_users_online"),
        "connections": connections,
        "messagesReceived": get("imserver_messages_received_total"),
        "messagesStored": get("imserver_messages_stored_total"),
        "duplicates": get("imserver_messages_duplicate_total"),
        "entriesDelivered": get("imserver_entries_delivered_total"),
        "errorsSent": errors,
        "slowReadersEvicted": get("imserver_slow_readers_evicted_total"),
        "storeQueueDepth": get("imserver_store_queue_depth"),
        "residentBytes": get("process_resident_memory_bytes"),
        "openFds": get("process_open_fds"),
        "maxFds": get("process_max_fds"),
    })
}

/// A figure as a person reads it: counts without a fraction.
fn figure(v: &Value) -> String {
    let n = v.as_f64().unwrap_or(0.0);
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// The summary as text, a line per figure.
pub fn text(s: &Value) -> String {
    let map = |v: &Value| {
        v.as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, n)| format!("{k}: {}", figure(n)))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "none".into())
    };
    format!(
        "users online        {}\nconnections         {}\nmessages received   {}\nmessages stored     {} ({} duplicates not stored again)\nentries delivered   {}\nerrors sent         {}\nslow readers out    {}\nstore queue         {}\nmemory (RSS)        {:.1} MiB\nfile descriptors    {} of {}",
        figure(&s["usersOnline"]),
        map(&s["connections"]),
        figure(&s["messagesReceived"]),
        figure(&s["messagesStored"]),
        figure(&s["duplicates"]),
        figure(&s["entriesDelivered"]),
        map(&s["errorsSent"]),
        figure(&s["slowReadersEvicted"]),
        figure(&s["storeQueueDepth"]),
        s["residentBytes"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0),
        figure(&s["openFds"]),
        figure(&s["maxFds"]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_summed_by_name_and_label() {
        let text = "# HELP x\nimserver_users_online 2\nimserver_connections{transport=\"tcp\",protocol=\"v2\"} 3\n\
                    imserver_connections{transport=\"ws\",protocol=\"v2\"} 1\n\
                    imserver_errors_sent_total{code=\"rate_limited\"} 5\nimserver_messages_stored_total 10\n";
        let s = summary(text);
        assert_eq!(s["usersOnline"], 2.0);
        assert_eq!(s["connections"]["tcp v2"], 3.0);
        assert_eq!(s["connections"]["ws v2"], 1.0);
        assert_eq!(s["errorsSent"]["rate_limited"], 5.0);
        assert_eq!(s["messagesStored"], 10.0);
    }
}
