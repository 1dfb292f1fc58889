//! The server under test, seen from outside through `/proc/<pid>`: its CPU time (user and
//! system, every thread, exited ones included) and its resident memory.

use std::time::Duration;

use anyhow::{Context, bail};

/// A process to measure. Every reading is optional: without a PID the harness still reports
/// rates and latencies.
pub struct Server {
    pid: Option<u32>,
    /// Clock ticks per second, the unit of `utime` and `stime` in `/proc/<pid>/stat`.
    ticks_per_sec: u64,
}

/// One reading of the server.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub cpu: Duration,
    pub rss_bytes: u64,
}

impl Server {
    pub fn new(pid: Option<u32>) -> anyhow::Result<Server> {
        let ticks_per_sec = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100);
        let server = Server { pid, ticks_per_sec };
        server.sample()?; // fail early on a wrong PID
        Ok(server)
    }

    /// Whether there is a process to read.
    pub fn measured(&self) -> bool {
        self.pid.is_some()
    }

    /// The server's CPU time and RSS now; zeros without a PID.
    pub fn sample(&self) -> anyhow::Result<Sample> {
        let Some(pid) = self.pid else {
            return Ok(Sample::default());
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat (is the server running?)"))?;
        // The command name may hold spaces and parentheses: count fields after the last ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // Fields 14 and 15 of proc(5), utime and stime, are the 12th and 13th after it.
        let (Some(utime), Some(stime)) = (fields.get(11), fields.get(12)) else {
            bail!("unexpected /proc/{pid}/stat: {stat}");
        };
        let ticks: u64 = utime.parse::<u64>()? + stime.parse::<u64>()?;
        let cpu = Duration::from_nanos(ticks * 1_000_000_000 / self.ticks_per_sec);

        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmRSS in /proc/<pid>/status")?;
        Ok(Sample {
            cpu,
            rss_bytes: rss_kib * 1024,
        })
    }
}

impl Sample {
    /// Server CPU time per item (message, connection) between two samples, in microseconds.
    pub fn cpu_us_per(&self, later: &Sample, items: u64) -> f64 {
        let spent = later.cpu.saturating_sub(self.cpu);
        spent.as_secs_f64() * 1e6 / items.max(1) as f64
    }
}
