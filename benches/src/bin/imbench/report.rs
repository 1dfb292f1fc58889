//! A run's results: printed for people, then as one `RESULT key=value …` line that
//! `benches/run.sh` collects to take medians.

use std::fmt::Display;

use hdrhistogram::Histogram;

use crate::server::{Sample, Server};

pub struct Report {
    mode: &'static str,
    fields: Vec<(String, String)>,
}

impl Report {
    pub fn new(mode: &'static str) -> Report {
        Report {
            mode,
            fields: Vec::new(),
        }
    }

    /// A setting of the run.
    pub fn param(&mut self, key: impl Into<String>, value: impl Display) -> &mut Report {
        self.fields.push((key.into(), value.to_string()));
        self
    }

    pub fn int(&mut self, key: &'static str, value: u64) -> &mut Report {
        self.param(key, value)
    }

    pub fn float(&mut self, key: impl Into<String>, value: f64) -> &mut Report {
        self.param(key, format!("{value:.3}"))
    }

    /// Percentiles of a histogram of nanoseconds, in microseconds.
    pub fn latency(&mut self, h: &Histogram<u64>) -> &mut Report {
        for (key, q) in [
            ("p50_us", 0.5),
            ("p90_us", 0.9),
            ("p99_us", 0.99),
            ("p999_us", 0.999),
        ] {
            self.float(key, h.value_at_quantile(q) as f64 / 1e3);
        }
        self.float("max_us", h.max() as f64 / 1e3)
    }

    /// The server's CPU time per item between two samples, and its memory at the second.
    pub fn server(&mut self, server: &Server, before: &Sample, after: &Sample, items: u64) {
        if server.measured() {
            self.float("cpu_us_per_msg", before.cpu_us_per(after, items));
            for (part, us) in before.parts_us_per(after, items) {
                self.float(format!("cpu_us_per_msg_{}", part.replace('-', "_")), us);
            }
            self.float("rss_mib", after.rss_bytes as f64 / (1 << 20) as f64);
        }
    }

    pub fn print(&self) {
        println!("{}:", self.mode);
        for (key, value) in &self.fields {
            println!("  {key:>16}  {value}");
        }
        let line: Vec<String> = self
            .fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("RESULT mode={} {}", self.mode, line.join(" "));
    }
}
