//! imctl against a real server on 127.0.0.1:0: the binary, run as a user runs it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use imserver::{Config, Server};
use serde_json::{Value, json};

/// Generous bound on every wait; never a speed assertion.
const WAIT: Duration = Duration::from_secs(30);

/// The server's `--admin-token`.
const ADMIN: &str = "an admin token of more than thirty-two characters";

struct Env {
    server: Server,
    dir: tempfile::TempDir,
    /// How imctl reaches the server: `--server`, `--relay`, and more (`--tls-ca`).
    flags: Vec<String>,
}

impl Env {
    async fn start() -> Env {
        Env::start_with(|_, _| {}).await
    }

    /// A server over TLS, with a certificate for `localhost` made now, which imctl is told to
    /// trust with `--tls-ca`.
    async fn start_tls() -> Env {
        let mut env = Env::start_with(|config, dir| {
            let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
            let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
            std::fs::write(&cert, made.cert.pem()).unwrap();
            std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
            config.net.tls_cert = Some(cert);
            config.net.tls_key = Some(key);
        })
        .await;
        let (http, tcp) = (env.server.http_addr().port(), env.server.tcp_addr().port());
        let ca = env.dir.path().join("cert.pem");
        env.flags = vec![
            "--server".into(),
            format!("https://localhost:{http}"),
            "--relay".into(),
            format!("localhost:{tcp}"),
            "--tls-ca".into(),
            ca.display().to_string(),
        ];
        env
    }

    async fn start_with(adjust: impl FnOnce(&mut Config, &Path)) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::local(dir.path().join("data"));
        config.auth.regist_limit = 0;
        config.auth.login_limit = 0;
        config.http.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
        config.auth.admin_token = Some(imserver::config::Secret(ADMIN.to_owned()));
        adjust(&mut config, dir.path());
        let server = Server::start(config).await.expect("the server starts");
        let flags = vec![
            "--server".into(),
            format!("http://{}", server.http_addr()),
            "--relay".into(),
            server.tcp_addr().to_string(),
        ];
        Env { server, dir, flags }
    }

    /// Runs `imctl args` as the device whose state is in `who`, with `stdin`: whether it
    /// succeeded, its stdout and its stderr.
    async fn imctl(&self, who: &str, args: &[&str], stdin: &str) -> (bool, String, String) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_imctl"));
        command
            .args(&self.flags)
            .arg("--state-dir")
            .arg(self.dir.path().join(who))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let stdin = stdin.to_owned();
        let out = tokio::time::timeout(
            WAIT,
            tokio::task::spawn_blocking(move || {
                let mut child = command.spawn().unwrap();
                use std::io::Write;
                let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
                child.wait_with_output().unwrap()
            }),
        )
        .await
        .expect("imctl ends in time")
        .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `imctl --json args`, which must succeed: its lines as JSON.
    async fn json(&self, who: &str, args: &[&str], stdin: &str) -> Vec<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (ok, out, err) = self.imctl(who, &all, stdin).await;
        assert!(ok, "imctl {args:?} failed: {err}");
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Registers and logs in `name` as device `name`: the new id.
    async fn account(&self, name: &str) -> String {
        let reg = self
            .json(name, &["register", "--name", name], "secret pw\n")
            .await;
        let id = reg[0]["user"].as_str().unwrap().to_owned();
        self.json(name, &["login", "--user", &id], "secret pw\n")
            .await;
        id
    }

    async fn http(&self, who: &str, method: &str, path: &str, body: Value) -> Value {
        let session =
            std::fs::read_to_string(self.dir.path().join(who).join("session.json")).unwrap();
        let token = serde_json::from_str::<Value>(&session).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let url = format!("http://{}{path}", self.server.http_addr());
        let http = reqwest::Client::new();
        let request = match method {
            "POST" => http.post(url).json(&body),
            _ => http.get(url),
        };
        let reply = request.bearer_auth(token).send().await.unwrap();
        assert!(
            reply.status().is_success(),
            "{method} {path}: {}",
            reply.status()
        );
        reply.json().await.unwrap()
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_send_tail_history_friends_and_groups() {
    let env = Env::start().await;
    let ann = env.account("ann").await;
    let bob = env.account("bob").await;
    assert_eq!(
        mode(&env.dir.path().join("ann").join("session.json")),
        0o600,
        "the token file is private"
    );

    // Ann sends; Bob follows his stream and sees it once, then only what is new.
    let sent = env
        .json("ann", &["send", "--to", &bob, "hello Bob"], "")
        .await;
    assert!(sent[0]["seq"].as_u64().unwrap() > 0);
    let got = env.json("bob", &["tail", "--count", "1"], "").await;
    assert_eq!(
        (got[0]["sender"].as_str(), got[0]["message"].as_str()),
        (Some(ann.as_str()), Some("hello Bob"))
    );
    env.json("ann", &["send", "--to", &bob, "second"], "").await;
    let got = env.json("bob", &["tail", "--count", "1"], "").await;
    assert_eq!(got[0]["message"], "second", "resumed after what was shown");

    // History, newest page, oldest first.
    let page = env.json("bob", &["history", &ann], "").await;
    let texts: Vec<&str> = page
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["hello Bob", "second"]);
    // Text output by default.
    let (ok, text, _) = env.imctl("bob", &["history", &ann], "").await;
    assert!(
        ok && text.contains(&format!("{ann} → {bob}: hello Bob")),
        "{text}"
    );

    // Friends and groups (made through the HTTP API), then a group message.
    env.http("ann", "POST", "/friends/requests", json!({"user": bob}))
        .await;
    env.http(
        "bob",
        "POST",
        &format!("/friends/requests/{ann}/accept"),
        json!({}),
    )
    .await;
    let friends = env.json("ann", &["friends"], "").await;
    assert_eq!(friends[0]["user"].as_str(), Some(bob.as_str()));
    let group = env
        .http(
            "ann",
            "POST",
            "/groups",
            json!({"name": "Team", "members": [bob]}),
        )
        .await;
    let g = group["group"].as_str().unwrap();
    let groups = env.json("bob", &["groups"], "").await;
    assert_eq!(groups[0]["group"].as_str(), Some(g));
    env.json("ann", &["send", "--to", g, "to the team"], "")
        .await;
    // The events of the request, the acceptance and the group, then the message.
    let got = env.json("bob", &["tail", "--count", "4"], "").await;
    let kinds: Vec<&str> = got
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("message"))
        .collect();
    assert_eq!(
        kinds,
        [
            "friend_request",
            "friend_accepted",
            "group_added",
            "message"
        ]
    );
    assert_eq!(got[3]["message"], "to the team");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_clear_and_exit_non_zero() {
    let env = Env::start().await;
    let (ok, _, err) = env.imctl("nobody", &["send", "--to", "1", "hi"], "").await;
    assert!(!ok && err.contains("not logged in"), "{err}");
    let id = env.account("ann").await;
    let (ok, _, err) = env
        .imctl("other", &["login", "--user", &id], "wrong\n")
        .await;
    assert!(!ok && err.contains("Wrong userID or password"), "{err}");
    let (ok, _, err) = env.imctl("other", &["login", "--user", &id], "").await;
    assert!(!ok && err.contains("no password"), "{err}");
    let (ok, _, err) = env.imctl("ann", &["send", "--to", "g999", "hi"], "").await;
    assert!(!ok && err.contains("refused"), "{err}");
    // Logged out: the token no longer works, and the session is gone.
    env.json("ann", &["logout"], "").await;
    let (ok, _, err) = env.imctl("ann", &["friends"], "").await;
    assert!(!ok && err.contains("not logged in"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_stats_sums_up_the_servers_metrics() {
    let env = Env::start().await;
    let ann = env.account("ann").await;
    let bob = env.account("bob").await;
    let metrics = format!("http://{}", env.server.metrics_addr().unwrap());
    let stored = |s: &[Value]| s[0]["messagesStored"].as_f64().unwrap();
    let before = env
        .json("ann", &["admin", "stats", "--metrics", &metrics], "")
        .await;
    env.json("ann", &["send", "--to", &bob, "one"], "").await;
    env.json("ann", &["send", "--to", &ann, "to myself"], "")
        .await;
    let stats = env
        .json("ann", &["admin", "stats", "--metrics", &metrics], "")
        .await;
    // (Other tests of this binary may store messages too: it only ever grows.)
    assert!(
        stored(&stats) >= stored(&before) + 2.0,
        "{before:?} then {stats:?}"
    );
    assert!(
        stats[0]["residentBytes"].as_f64().unwrap() > 0.0,
        "{stats:?}"
    );
    let (ok, text, _) = env
        .imctl("ann", &["admin", "stats", "--metrics", &metrics], "")
        .await;
    assert!(ok && text.contains("messages stored"), "{text}");
    // No metrics there: a clear error.
    let api = format!("http://{}", env.server.http_addr());
    let (ok, _, err) = env
        .imctl("ann", &["admin", "stats", "--metrics", &api], "")
        .await;
    assert!(!ok && err.contains("404"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_user_disable_locks_the_account_out_and_enable_lets_it_back() {
    let env = Env::start().await;
    let ann = env.account("ann").await;
    let disable = [
        "admin",
        "user",
        "disable",
        ann.as_str(),
        "--admin-token",
        ADMIN,
    ];
    let wrong = [
        "admin",
        "user",
        "disable",
        ann.as_str(),
        "--admin-token",
        "nope",
    ];
    let (ok, _, err) = env.imctl("op", &wrong, "").await;
    assert!(!ok);
    assert!(
        err.contains("401") && err.contains("--admin-token"),
        "{err}"
    );

    let (ok, out, err) = env.imctl("op", &disable, "").await;
    assert!(ok, "{err}");
    assert!(out.contains(&format!("user {ann} disabled")), "{out}");
    // Ann's saved token is revoked, and she cannot log in again.
    let (ok, _, err) = env.imctl("ann", &["friends"], "").await;
    assert!(!ok && err.contains("401"), "{err}");
    let (ok, _, err) = env
        .imctl("ann", &["login", "--user", &ann], "secret pw\n")
        .await;
    assert!(!ok && err.contains("Account disabled"), "{err}");

    let enable = [
        "--json",
        "admin",
        "user",
        "enable",
        ann.as_str(),
        "--admin-token",
        ADMIN,
    ];
    let (ok, out, err) = env.imctl("op", &enable, "").await;
    assert!(ok, "{err}");
    let done: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(done["disabled"], false);
    let (ok, _, err) = env
        .imctl("ann", &["login", "--user", &ann], "secret pw\n")
        .await;
    assert!(ok, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_api_and_the_relay_both_work_and_an_untrusted_server_is_refused() {
    let env = Env::start_tls().await;
    let ann = env.account("ann").await;
    let bob = env.account("bob").await;
    let sent = env
        .json("ann", &["send", "--to", &bob, "over TLS"], "")
        .await;
    assert!(sent[0]["seq"].as_u64().is_some(), "{sent:?}");
    let got = env.json("bob", &["tail", "--count", "1"], "").await;
    assert_eq!(got[0]["message"], "over TLS");
    assert_eq!(got[0]["sender"], ann.as_str());

    // Without --tls-ca, the test's certificate chains to no system root: refused.
    let mut untrusting = Env::start_tls().await;
    untrusting.flags.truncate(4);
    let (ok, _, err) = untrusting
        .imctl("x", &["register", "--name", "x"], "pw\n")
        .await;
    assert!(!ok, "a server nobody vouches for was trusted");
    assert!(err.contains("imctl:"), "{err}");
}
