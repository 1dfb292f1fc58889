//! The web chat in a real browser: Debian's headless Chromium, driven by playwright-core
//! from npm, runs `tests/browser/chat.test.mjs` against two real servers (one with a tight
//! message rate limit). Screenshots of the main screens go to
//! `target/tmp/browser-screenshots/`.
//!
//! Needs `/usr/bin/chromium` (or `CHROMIUM`) and Node.js; `scripts/test` installs both
//! when missing, and playwright-core is installed here on first use (`npm ci`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::TestServer;
use imserver::config::AuthMode;

fn chromium() -> PathBuf {
    let path = PathBuf::from(std::env::var("CHROMIUM").unwrap_or("/usr/bin/chromium".into()));
    assert!(
        path.exists(),
        "the browser tests need Debian's chromium at {}: run scripts/test, which installs it, \
         or `apt-get install chromium` (or set CHROMIUM to a Chromium binary)",
        path.display()
    );
    path
}

/// playwright-core, at the version package-lock.json pins.
fn playwright(dir: &Path) {
    if dir.join("node_modules/playwright-core").exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .expect("npm runs (the browser tests need Node.js with npm)");
    assert!(status.success(), "npm ci failed in {}", dir.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_web_chat_works_in_a_real_browser() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = chromium();
    playwright(&dir);
    let config = |rate: u32| {
        move |c: &mut imserver::Config| {
            c.auth.auth = AuthMode::Token;
            c.relay.presence_delay = Duration::from_millis(100);
            c.relay.rate_limit = rate;
            c.relay.rate_burst = rate * 2;
        }
    };
    let plain = TestServer::start_with(config(0)).await;
    let limited = TestServer::start_with(config(1)).await;
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots");

    let mut node = Command::new("node");
    node.args(["--test", "--test-concurrency=1", "chat.test.mjs"])
        .current_dir(&dir)
        .env("IMSERVER_URL", plain.url(""))
        .env("IMSERVER_RATE_URL", limited.url(""))
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium);
    let run = tokio::task::spawn_blocking(move || node.output().expect("node runs"));
    let out = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("the browser tests finish in time")
        .expect("joined");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the browser tests failed:\n{report}");
    println!("{report}");
}
