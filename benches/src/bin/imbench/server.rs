//! The server under test, seen from outside through `/proc/<pid>`: its CPU time (user and
//! system, every thread, exited ones included) and its resident memory.

use std::time::Duration;

use anyhow::{Context, bail};

/// The processes to measure: the server's (`--pid`, one per node) and others by name
/// (`--cpu-of`). Every reading is optional: without them the harness still reports rates
/// and latencies.
pub struct Server {
    pids: Vec<u32>,
    names: Vec<String>,
    /// Clock ticks per second, the unit of `utime` and `stime` in `/proc/<pid>/stat`.
    ticks_per_sec: u64,
}

/// One reading.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// The CPU time of the `--pid` processes and of the named ones, summed.
    pub cpu: Duration,
    /// The `--pid` processes' resident memory, summed.
    pub rss_bytes: u64,
    /// Per part: `imserver` (the `--pid` processes), then each name.
    pub parts: Vec<(String, Duration)>,
}

impl Server {
    pub fn new(pids: Vec<u32>, names: Vec<String>) -> anyhow::Result<Server> {
        let ticks_per_sec = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100);
        let server = Server {
            pids,
            names,
            ticks_per_sec,
        };
        server.sample()?; // fail early on a wrong PID
        Ok(server)
    }

    /// Whether there is a process to read.
    pub fn measured(&self) -> bool {
        !self.pids.is_empty()
    }

    /// The CPU time and RSS now; zeros without a PID.
    pub fn sample(&self) -> anyhow::Result<Sample> {
        let mut sample = Sample::default();
        let mut own = Duration::ZERO;
        for &pid in &self.pids {
            let (cpu, rss) = self.read(pid)?;
            own += cpu;
            sample.rss_bytes += rss;
        }
        sample.cpu = own;
        if !self.names.is_empty() {
            sample.parts.push(("imserver".into(), own));
        }
        for name in &self.names {
            let mut cpu = Duration::ZERO;
            for pid in named(name) {
                // A process may end between the listing and the reading.
                if let Ok((c, _)) = self.read(pid) {
                    cpu += c;
                }
            }
            sample.cpu += cpu;
            sample.parts.push((name.clone(), cpu));
        }
        Ok(sample)
    }

    /// One process's CPU time (user and system, every thread, and its children that ended)
    /// and RSS.
    fn read(&self, pid: u32) -> anyhow::Result<(Duration, u64)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat (is the process running?)"))?;
        // The command name may hold spaces and parentheses: count fields after the last ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // Fields 14 to 17 of proc(5), utime, stime, cutime and cstime, are the 12th to 15th
        // after it.
        let mut ticks = 0;
        for i in 11..15 {
            let Some(field) = fields.get(i) else {
                bail!("unexpected /proc/{pid}/stat: {stat}");
            };
            ticks += field.parse::<u64>()?;
        }
        let cpu = Duration::from_nanos(ticks * 1_000_000_000 / self.ticks_per_sec);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmRSS in /proc/<pid>/status")?;
        Ok((cpu, rss_kib * 1024))
    }
}

/// The processes named `name` now.
fn named(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
        })
        .collect()
}

impl Sample {
    /// CPU time per item (message, connection) between two samples, in microseconds.
    pub fn cpu_us_per(&self, later: &Sample, items: u64) -> f64 {
        per(later.cpu.saturating_sub(self.cpu), items)
    }

    /// [`cpu_us_per`](Self::cpu_us_per) for each part.
    pub fn parts_us_per(&self, later: &Sample, items: u64) -> Vec<(String, f64)> {
        self.parts
            .iter()
            .zip(&later.parts)
            .map(|((name, a), (_, b))| (name.clone(), per(b.saturating_sub(*a), items)))
            .collect()
    }
}

fn per(spent: Duration, items: u64) -> f64 {
    spent.as_secs_f64() * 1e6 / items.max(1) as f64
}
