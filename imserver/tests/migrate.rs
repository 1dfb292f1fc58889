//! `imserver migrate --from sqlite:DIR --to postgres://…`: a SQLite store with something
//! of everything is copied into PostgreSQL, and a server on the copy answers exactly as the
//! one on SQLite did. Runs on PostgreSQL (`IMSERVER_TEST_POSTGRES`).

mod common;

use std::process::Command;

use common::process::stream_of;
use common::{WAIT, send_for_ack};
use improto::{Client, Packet, Regist};
use imserver::config::{AuthMode, Backend, Secret};
use imserver::{Config, Server};
use serde_json::{Value, json};
use tokio::time::timeout;

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::local(dir);
    c.demo = true;
    c.auth.auth = AuthMode::Token;
    c.auth.regist_limit = 0;
    c.auth.login_limit = 0;
    c.relay.rate_limit = 0;
    c
}

async fn call(srv: &Server, method: &str, path: &str, token: &str, body: Value) -> (u16, Value) {
    let url = format!("http://{}{path}", srv.http_addr());
    let http = reqwest::Client::new();
    let req = match method {
        "GET" => http.get(url),
        _ => http.post(url).json(&body),
    };
    let r = timeout(WAIT, req.bearer_auth(token).send())
        .await
        .unwrap()
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or_default())
}

async fn user(srv: &Server, name: &str) -> (String, String) {
    let account = json!({"password": "pw", "name": name, "sex": "-",
        "email": format!("{name}@example.com"), "signature": "-"});
    let (status, body) = call(srv, "POST", "/regist", "", account).await;
    assert_eq!(status, 200, "{body}");
    let id = body["user"].as_str().unwrap().to_owned();
    let (_, body) = call(
        srv,
        "POST",
        "/login",
        "",
        json!({"user": id, "password": "pw"}),
    )
    .await;
    (id, body["token"].as_str().unwrap().to_owned())
}

async fn v2(srv: &Server, user: &str, token: &str) -> Client {
    let mut c = timeout(WAIT, Client::connect(srv.tcp_addr()))
        .await
        .unwrap()
        .unwrap();
    timeout(WAIT, c.handshake(Regist::v2(user, token)))
        .await
        .unwrap()
        .unwrap();
    c
}

/// What a client sees of the store: everyone's streams and the HTTP views of it.
async fn views(srv: &Server, users: &[(String, String)], group: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for (id, token) in users {
        let stream = stream_of(srv.tcp_addr(), id, token).await;
        out.push(json!(stream));
        for path in [
            format!("/list/{id}"),
            "/conversations".into(),
            "/groups".into(),
            "/friends/requests".into(),
            "/blocks".into(),
            format!("/groups/{group}"),
        ] {
            let (status, body) = call(srv, "GET", &path, token, Value::Null).await;
            out.push(json!({"path": path, "status": status, "body": body}));
        }
        for (peer, _) in users {
            let (_, body) = call(srv, "GET", &format!("/history/{peer}"), token, Value::Null).await;
            out.push(body);
        }
        let (_, body) = call(srv, "GET", &format!("/history/{group}"), token, Value::Null).await;
        out.push(body);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_store_copied_into_postgresql_serves_the_same() {
    if common::postgres().is_none() {
        eprintln!("skipped: needs IMSERVER_TEST_POSTGRES");
        return;
    }
    // A SQLite store with a bit of everything.
    let from = tempfile::tempdir().unwrap();
    let sqlite = Server::start(config(from.path())).await.unwrap();
    let ann = user(&sqlite, "Ann").await;
    let bob = user(&sqlite, "Bob").await;
    let cy = user(&sqlite, "Cy").await;
    let ask = |to: &str| json!({"user": to, "message": "hello"});
    assert_eq!(
        call(&sqlite, "POST", "/friends/requests", &ann.1, ask(&bob.0))
            .await
            .0,
        200
    );
    let accept = format!("/friends/requests/{}/accept", ann.0);
    assert_eq!(
        call(&sqlite, "POST", &accept, &bob.1, Value::Null).await.0,
        200
    );
    assert_eq!(
        call(&sqlite, "POST", "/friends/requests", &cy.1, ask(&ann.0))
            .await
            .0,
        200
    );
    assert_eq!(
        call(
            &sqlite,
            "POST",
            &format!("/blocks/{}", cy.0),
            &bob.1,
            Value::Null
        )
        .await
        .0,
        200
    );
    let (_, g) = call(
        &sqlite,
        "POST",
        "/groups",
        &ann.1,
        json!({"name": "Trio", "members": [bob.0, cy.0]}),
    )
    .await;
    let group = g["group"].as_str().unwrap().to_owned();
    let mut a = v2(&sqlite, &ann.0, &ann.1).await;
    for i in 0..5 {
        send_for_ack(&mut a, &ann.0, &bob.0, &format!("a-{i}")).await;
    }
    send_for_ack(&mut a, &ann.0, &group, "to the group").await;
    let retried = send_for_ack(&mut a, &ann.0, &bob.0, "a-9").await;
    let mut b = v2(&sqlite, &bob.0, &bob.1).await;
    send_for_ack(&mut b, &bob.0, &ann.0, "b-0").await;
    b.read(&ann.0, 3).await.unwrap();
    b.send(Packet::Ping).await.unwrap();
    while !matches!(common::recv_packet(&mut b).await, Packet::Pong) {}
    drop((a, b));
    let users = [ann.clone(), bob.clone(), cy.clone()];
    let before = views(&sqlite, &users, &group).await;
    sqlite.shutdown().await;

    // The copy.
    let to = tempfile::tempdir().unwrap();
    let url = common::database_for(to.path()).unwrap();
    let migrate = |url: &str| {
        Command::new(env!("CARGO_BIN_EXE_imserver"))
            .args(["migrate", "--from"])
            .arg(format!("sqlite:{}", from.path().display()))
            .args(["--to", url])
            .output()
            .unwrap()
    };
    let out = migrate(&url);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("copied 5 users, 1 groups"), "{said}");
    // Never into a database that holds data.
    let again = migrate(&url);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds data"));

    // A server on the copy: the same views, the same tokens, the same passwords.
    let mut c = config(to.path());
    c.store.store = Backend::Postgres(Secret(url.clone()));
    let pg = Server::start(c).await.unwrap();
    let after = views(&pg, &users, &group).await;
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b, a);
    }
    let (status, _) = call(
        &pg,
        "POST",
        "/login",
        "",
        json!({"user": ann.0, "password": "pw"}),
    )
    .await;
    assert_eq!(status, 200);
    // A retry of a message sent before is recognised; a new one follows the head.
    let mut a = v2(&pg, &ann.0, &ann.1).await;
    assert_eq!(send_for_ack(&mut a, &ann.0, &bob.0, "a-9").await, retried);
    let head = stream_of(pg.tcp_addr(), &ann.0, &ann.1).await.len() as u64;
    assert_eq!(send_for_ack(&mut a, &ann.0, &bob.0, "a-10").await, head + 1);
    // A new user and a new group get ids after the copied ones.
    let (dee, _) = user(&pg, "Dee").await;
    assert_eq!(
        dee.parse::<i64>().unwrap(),
        cy.0.parse::<i64>().unwrap() + 1
    );
    pg.shutdown().await;
    common::drop_database(&url);
}
