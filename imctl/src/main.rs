//! imctl: imserver from the command line, through its public interfaces only: the HTTP API
//! and the relay (`improto`).
//!
//! ```sh
//! imctl register --name Ann            # the password is read from stdin
//! imctl login --user 3                 # keeps the token in ~/.config/imctl/session.json (0600)
//! imctl send --to 4 "hello"            # waits for the server's Ack
//! imctl tail                           # follows the stream, resuming where it left off
//! imctl friends | groups | history 4
//! imctl admin stats --metrics http://127.0.0.1:9100
//! imctl admin user disable 4           # with IMCTL_ADMIN_TOKEN (the server's --admin-token)
//! ```
//!
//! Human-readable output by default; `--json` prints one JSON value per line, for scripts.
//! The session (user, token) and the stream position live in `--state-dir`.

mod http;
mod session;
mod stats;
mod tls;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use improto::{Item, Message, Packet, ReconnectOptions, Reconnecting, Regist};
use serde_json::{Value, json};

use session::Session;

#[derive(Parser, Debug)]
#[command(name = "imctl", version, about = "A command-line client of imserver")]
struct Cli {
    /// The server's HTTP API.
    #[arg(
        long,
        env = "IMCTL_SERVER",
        default_value = "http://127.0.0.1:6666",
        global = true
    )]
    server: String,
    /// The server's relay (`host:port`).
    #[arg(
        long,
        env = "IMCTL_RELAY",
        default_value = "127.0.0.1:8888",
        global = true
    )]
    relay: String,
    /// With an `https://` `--server`, the CA certificates (PEM) the server's certificate must
    /// chain to, for the HTTP API and the relay alike; the system's roots when not given.
    #[arg(long, env = "IMCTL_TLS_CA", global = true)]
    tls_ca: Option<PathBuf>,
    /// Where the session (login token, mode 0600) and the stream position are kept.
    #[arg(long, env = "IMCTL_STATE_DIR", global = true)]
    state_dir: Option<PathBuf>,
    /// One JSON value per line instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Creates an account (the password is the first line of stdin) and prints its id.
    Register {
        #[arg(long)]
        name: String,
        /// The profile's fields, which the server requires (`-` when you would rather not
        /// say).
        #[arg(long, default_value = "-")]
        email: String,
        #[arg(long, default_value = "-")]
        sex: String,
        #[arg(long, default_value = "-")]
        signature: String,
    },
    /// Logs in (the password is the first line of stdin) and keeps the token.
    Login {
        #[arg(long)]
        user: String,
    },
    /// Logs out: the token is revoked and forgotten.
    Logout,
    /// Sends a message to a user (`4`) or a group (`g2`) and waits until it is stored.
    Send {
        #[arg(long)]
        to: String,
        text: String,
    },
    /// Follows the stream: messages, your own from other devices, and events. Resumes after
    /// what it showed last time, and acknowledges what it shows.
    Tail {
        /// Stop after this many entries (default: follow until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Your friends.
    Friends,
    /// Your groups.
    Groups,
    /// For operators.
    #[command(subcommand)]
    Admin(Admin),
    /// The conversation with a user or a group, newest page.
    History {
        peer: String,
        /// Entries before this `seq` (an earlier page).
        #[arg(long)]
        before: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
enum Admin {
    /// The server's vital signs, from its `/metrics` (`--metrics-addr`).
    Stats {
        /// The metrics address, `http://host:port`.
        #[arg(long, env = "IMCTL_METRICS", default_value = "http://127.0.0.1:9100")]
        metrics: String,
    },
    /// Accounts.
    #[command(subcommand)]
    User(AdminUser),
}

#[derive(Subcommand, Debug)]
enum AdminUser {
    /// No more logins for this user: its tokens are revoked and its connections closed.
    Disable {
        id: String,
        #[command(flatten)]
        token: AdminToken,
    },
    /// Lets a disabled user log in again.
    Enable {
        id: String,
        #[command(flatten)]
        token: AdminToken,
    },
}

#[derive(clap::Args, Debug)]
struct AdminToken {
    /// The server's `--admin-token` (better from the environment than on a command line
    /// others can read).
    #[arg(long, env = "IMCTL_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("imctl: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let dir = state_dir(cli.state_dir.as_deref())?;
    // TLS to both, or to neither: the server has one certificate for all of its listeners.
    let roots = (cli.server.starts_with("https://"))
        .then(|| tls::roots(cli.tls_ca.as_deref()))
        .transpose()?;
    let http_tls = roots.clone().map(tls::http_config).transpose()?;
    let api = http::Api::new(&cli.server, http_tls)?;
    let relay = Relay {
        tls: roots
            .map(|roots| tls::relay_target(&cli.relay, roots))
            .transpose()?,
        addr: cli.relay.clone(),
    };
    let out = Out { json: cli.json };
    match cli.command {
        Command::Register {
            name,
            email,
            sex,
            signature,
        } => {
            let password = password()?;
            let body = json!({"name": name, "password": password, "email": email,
                              "sex": sex, "signature": signature});
            let user = api.post("/regist", &body, None).await?;
            out.show(&user, || {
                format!(
                    "registered: your id is {}",
                    user["user"].as_str().unwrap_or("?")
                )
            });
        }
        Command::Login { user } => {
            let password = password()?;
            let body = json!({"user": user, "password": password});
            let reply = api.post("/login", &body, None).await?;
            let token = reply["token"].as_str().context("no token in the answer")?;
            Session::save(&dir, &user, token)?;
            let expires = reply["expiresAt"].clone();
            out.show(&json!({"user": user, "expiresAt": expires}), || {
                format!(
                    "logged in as {user}; the token is kept in {}",
                    Session::path(&dir).display()
                )
            });
        }
        Command::Logout => {
            let s = Session::load(&dir)?;
            api.post("/logout", &json!({}), Some(&s.token)).await?;
            Session::forget(&dir)?;
            out.show(&json!({"user": s.user, "loggedOut": true}), || {
                "logged out".into()
            });
        }
        Command::Send { to, text } => {
            let s = Session::load(&dir)?;
            let seq = send(&relay, &s, &to, &text).await?;
            out.show(&json!({"to": to, "seq": seq}), || {
                format!("stored at seq {seq}")
            });
        }
        Command::Tail { count } => {
            let s = Session::load(&dir)?;
            tail(&relay, &s, &dir, count, &out).await?;
        }
        Command::Friends => {
            let s = Session::load(&dir)?;
            let list = api.get(&format!("/list/{}", s.user), &s.token).await?;
            out.list(&list, |f| {
                format!(
                    "{}  {}",
                    f["user"].as_str().unwrap_or("?"),
                    f["name"].as_str().unwrap_or("")
                )
            });
        }
        Command::Groups => {
            let s = Session::load(&dir)?;
            let list = api.get("/groups", &s.token).await?;
            out.list(&list, |g| {
                let members = g["members"].as_array().map_or(0, Vec::len);
                format!(
                    "{}  {}  ({members} members)",
                    g["group"].as_str().unwrap_or("?"),
                    g["name"].as_str().unwrap_or("")
                )
            });
        }
        Command::Admin(Admin::Stats { metrics }) => {
            let stats = stats::fetch(&metrics).await?;
            out.show(&stats, || stats::text(&stats));
        }
        Command::Admin(Admin::User(op)) => {
            let (id, token, verb) = match &op {
                AdminUser::Disable { id, token } => (id, token, "disable"),
                AdminUser::Enable { id, token } => (id, token, "enable"),
            };
            let path = format!("/admin/users/{id}/{verb}");
            let done = api.admin(&path, &token.admin_token).await?;
            out.show(&done, || match verb {
                "disable" => format!(
                    "user {id} disabled: tokens revoked, {} connection(s) closed",
                    done["connectionsClosed"]
                ),
                _ => format!("user {id} enabled: it may log in again"),
            });
        }
        Command::History { peer, before } => {
            let s = Session::load(&dir)?;
            let path = match before {
                Some(b) => format!("/history/{peer}?before={b}"),
                None => format!("/history/{peer}"),
            };
            let page = api.get(&path, &s.token).await?;
            out.list(&page["messages"], line);
            if page["more"] == true && !out.json {
                println!(
                    "(earlier messages: --before {})",
                    page["messages"][0]["seq"]
                );
            }
        }
    }
    Ok(())
}

/// The relay: where, and over TLS or not.
struct Relay {
    addr: String,
    tls: Option<improto::TlsTarget>,
}

impl Relay {
    async fn connect(&self) -> anyhow::Result<improto::Client> {
        let addr = self.addr.as_str();
        let connecting = async {
            match &self.tls {
                Some(t) => {
                    improto::Client::connect_tls(addr, &t.server_name, t.roots.clone()).await
                }
                None => improto::Client::connect(addr).await,
            }
        };
        tokio::time::timeout(WAIT, connecting)
            .await
            .context("connecting to the relay timed out")?
            .with_context(|| format!("cannot connect to the relay at {addr}"))
    }

    /// `Reconnecting`'s options for the session's user.
    fn options(&self, s: &Session) -> ReconnectOptions {
        let options = ReconnectOptions::new(&self.addr, &s.user, &s.token);
        match &self.tls {
            Some(t) => options.with_tls(&t.server_name, t.roots.clone()),
            None => options,
        }
    }
}

/// Sends one message over a fresh v2 connection and returns its `seq` in the sender's stream.
async fn send(relay: &Relay, s: &Session, to: &str, text: &str) -> anyhow::Result<u64> {
    let mut client = relay.connect().await?;
    client
        .handshake(Regist::v2(&s.user, &s.token))
        .await
        .context("the relay refused the login")?;
    let id = format!("imctl-{}", std::process::id());
    client
        .send(Message::new(&s.user, to, text).with_id(&id))
        .await?;
    loop {
        let packet = tokio::time::timeout(WAIT, client.recv())
            .await
            .context("no answer from the relay")??;
        match packet {
            Some(Packet::Ack(ack)) if ack.id.as_deref() == Some(id.as_str()) => return Ok(ack.seq),
            Some(Packet::Error(e)) if e.id.as_deref() == Some(id.as_str()) => {
                bail!("refused: {} ({})", e.message, e.code)
            }
            Some(_) => continue,
            None => bail!("the relay closed the connection"),
        }
    }
}

/// Follows the stream with `Reconnecting`: resumes from the saved position, acknowledges
/// what it prints, reconnects by itself.
async fn tail(
    relay: &Relay,
    s: &Session,
    dir: &std::path::Path,
    count: Option<u64>,
    out: &Out,
) -> anyhow::Result<()> {
    let state = improto::FileState::new(dir.join(format!("stream-{}.json", s.user)));
    let options = relay.options(s);
    let mut stream = Reconnecting::start(options, state).await?;
    let mut shown = 0;
    while count.is_none_or(|n| shown < n) {
        let item = tokio::select! {
            item = stream.next() => item,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(item) = item else { break };
        match item {
            Item::Message(m) => {
                let v = serde_json::to_value(Packet::Message(m.clone()))?;
                out.show(&v, || line(&v));
                shown += 1;
            }
            Item::Event(e) => {
                let v = serde_json::to_value(Packet::Event(e))?;
                out.show(&v, || {
                    format!("#{}  event {}", v["seq"], v["kind"].as_str().unwrap_or("?"))
                });
                shown += 1;
            }
            Item::Unauthorized => bail!("the server refused the token: log in again"),
            Item::Disconnected { reason } => {
                eprintln!("imctl: connection lost ({reason}); reconnecting")
            }
            Item::Connected {
                oldest: Some(oldest),
                ..
            } => eprintln!(
                "imctl: the server no longer keeps entries before #{oldest} (its retention deleted them before this device got them)"
            ),
            _ => {}
        }
    }
    // Saves the position and acknowledges what was shown.
    stream.close().await;
    Ok(())
}

/// A message as one line: `#seq  sender → receiver: text`.
fn line(m: &Value) -> String {
    format!(
        "#{}  {} → {}: {}",
        m["seq"],
        m["sender"].as_str().unwrap_or("?"),
        m["receiver"].as_str().unwrap_or("?"),
        m["message"].as_str().unwrap_or("")
    )
}

/// How long one answer from the server may take.
const WAIT: Duration = Duration::from_secs(30);

/// Text or JSON lines.
struct Out {
    json: bool,
}

impl Out {
    fn show(&self, value: &Value, text: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", text());
        }
    }

    fn list(&self, items: &Value, text: impl Fn(&Value) -> String) {
        for item in items.as_array().into_iter().flatten() {
            self.show(item, || text(item));
        }
    }
}

/// The first line of stdin.
fn password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        bail!("no password: give it as the first line of stdin (echo … | imctl …)");
    }
    Ok(password)
}

fn state_dir(given: Option<&std::path::Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = given {
        return Ok(dir.to_owned());
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .context("no --state-dir, and neither XDG_CONFIG_HOME nor HOME is set")?;
    Ok(base.join("imctl"))
}
