//! `--auth token`: login tokens over HTTP and on the relay, logout, expiry, forged tokens,
//! per-user visibility, and the registration and login rate limits.

mod common;

use common::{TestServer, WAIT, expect_eof, expect_error, recv_message, sync};
use improto::{ErrorCode, Message, Regist};
use serde_json::json;
use tokio::time::timeout;

/// GET `path` with `Authorization: Bearer <token>`.
async fn get_as(srv: &TestServer, path: &str, token: &str) -> (u16, serde_json::Value) {
    let r = timeout(WAIT, srv.http.get(srv.url(path)).bearer_auth(token).send())
        .await
        .unwrap()
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn logout(srv: &TestServer, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = srv.http.post(srv.url("/logout"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = timeout(WAIT, req.send()).await.unwrap().unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn login_returns_a_random_token_with_an_expiry() {
    let srv = TestServer::start_secure().await;
    let (status, body) = srv
        .post_json("/login", json!({"user": "1", "password": "123"}))
        .await;
    assert_eq!(status, 200);
    let token = body["token"].as_str().unwrap();
    assert_eq!(token.len(), 64, "256 bits as hex");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expires = body["expiresAt"].as_i64().unwrap();
    let thirty_days = 30 * 24 * 3600;
    assert!((now + thirty_days - 60..=now + thirty_days + 60).contains(&expires));
    assert_eq!(body["user"], "1");
    assert!(body.get("password").is_none());
    assert_ne!(
        srv.login("1", "123").await,
        token,
        "every login gets its own token"
    );
}

#[tokio::test]
async fn every_route_but_regist_and_login_needs_a_bearer_token() {
    let srv = TestServer::start_secure().await;
    for path in ["/profile/1", "/list/1", "/username/1", "/profile/abc"] {
        assert_eq!(
            srv.get(path).await,
            (401, json!({"msg": "Unauthorized"})),
            "{path}"
        );
        assert_eq!(get_as(&srv, path, "forged").await.0, 401, "{path}");
    }
    let token = srv.login("1", "123").await;
    assert_eq!(get_as(&srv, "/profile/1", &token).await.0, 200);
    assert_eq!(get_as(&srv, "/username/2", &token).await.0, 200);
    let (status, _) = srv
        .post_json(
            "/regist",
            json!({"password":"p","name":"n","sex":"s","email":"e","signature":"g"}),
        )
        .await;
    assert_eq!(status, 200, "registration needs no token");
}

#[tokio::test]
async fn friend_lists_are_private_and_emails_are_for_friends() {
    let srv = TestServer::start_secure().await;
    let (_, new) = srv
        .post_json(
            "/regist",
            json!({"password":"p","name":"Z","sex":"m","email":"z@x","signature":"s"}),
        )
        .await;
    let z = new["user"].as_str().unwrap().to_owned();
    let t1 = srv.login("1", "123").await;
    let tz = srv.login(&z, "p").await;

    assert_eq!(get_as(&srv, "/list/1", &t1).await.0, 200);
    assert_eq!(
        get_as(&srv, "/list/2", &t1).await,
        (403, json!({"msg": "Forbidden"}))
    );
    assert_eq!(get_as(&srv, "/list/abc", &t1).await.0, 400);

    // Own profile and a friend's: with email. A stranger's: without the key at all.
    let (_, own) = get_as(&srv, &format!("/profile/{z}"), &tz).await;
    assert_eq!(own["email"], "z@x");
    let (_, friend) = get_as(&srv, "/profile/2", &t1).await;
    assert!(friend.get("email").is_some(), "{friend}");
    let (status, stranger) = get_as(&srv, "/profile/1", &tz).await;
    assert_eq!(status, 200);
    assert_eq!(stranger["name"], "Wu");
    assert!(stranger.get("email").is_none(), "{stranger}");
}

#[tokio::test]
async fn logout_revokes_only_its_own_token_on_http_and_the_relay() {
    let srv = TestServer::start_secure().await;
    let phone = srv.login("1", "123").await;
    let desktop = srv.login("1", "123").await;
    assert_eq!(logout(&srv, None).await.0, 401);
    assert_eq!(logout(&srv, Some("forged")).await.0, 401);
    assert_eq!(logout(&srv, Some(&phone)).await.0, 200);
    assert_eq!(logout(&srv, Some(&phone)).await.0, 401, "already revoked");

    assert_eq!(get_as(&srv, "/profile/1", &phone).await.0, 401);
    assert_eq!(get_as(&srv, "/profile/1", &desktop).await.0, 200);
    let mut c = srv.raw().await;
    let err = timeout(WAIT, c.handshake(Regist::v2("1", &phone)))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            improto::ProtoError::Refused {
                code: ErrorCode::Unauthorized,
                ..
            }
        ),
        "{err:?}"
    );
    expect_eof(&mut c).await;
    srv.v2("1", &desktop, None).await;
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    // A lifetime of 0 s: expired as soon as issued.
    let srv = TestServer::start_with(|c| {
        c.auth.auth = imserver::config::AuthMode::Token;
        c.auth.token_ttl = std::time::Duration::ZERO;
    })
    .await;
    let token = srv.login("1", "123").await;
    assert_eq!(get_as(&srv, "/profile/1", &token).await.0, 401);
    let mut c = srv.raw().await;
    c.send(Regist::v2("1", &token)).await.unwrap();
    expect_error(&mut c, ErrorCode::Unauthorized).await;
    expect_eof(&mut c).await;
    assert_eq!(logout(&srv, Some(&token)).await.0, 401);
}

#[tokio::test]
async fn relay_regist_needs_a_token_of_its_own_sender() {
    let srv = TestServer::start_secure().await;
    let t1 = srv.login("1", "123").await;

    // v2: forged, missing, or another user's token: `unauthorized`, then close.
    for regist in [Regist::v2("1", "0".repeat(64)), Regist::v2("2", &t1), {
        let mut r = Regist::v2("1", "x");
        r.token = None;
        r
    }] {
        let mut c = srv.raw().await;
        c.send(regist.clone()).await.unwrap();
        let e = expect_error(&mut c, ErrorCode::Unauthorized).await;
        assert!(!e.message.is_empty());
        expect_eof(&mut c).await;
    }

    // v1 without a token, or with a forged one: closed without a frame.
    for regist in [Regist::new("1"), Regist::new("1").with_token("forged")] {
        let mut c = srv.raw().await;
        c.send(regist).await.unwrap();
        expect_eof(&mut c).await;
    }

    // v1 with its token works (and gets only messages).
    let mut v1 = srv.raw().await;
    v1.send(Regist::new("1").with_token(&t1)).await.unwrap();
    let t2 = srv.login("2", "123").await;
    let (mut two, _) = srv.v2("2", &t2, None).await;
    two.send(Message::new("2", "1", "hi v1")).await.unwrap();
    assert_eq!(recv_message(&mut v1).await.message, "hi v1");
}

#[tokio::test]
async fn tokens_are_stored_hashed_and_survive_a_restart() {
    let mut srv = TestServer::start_secure().await;
    let token = srv.login("1", "123").await;
    srv.restart().await;
    assert_eq!(get_as(&srv, "/profile/1", &token).await.0, 200);
    srv.v2("1", &token, None).await;
    srv.stop().await;
    // Neither the database nor its write-ahead log holds the token itself.
    for entry in std::fs::read_dir(srv.dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let hit = bytes.windows(token.len()).any(|w| w == token.as_bytes());
        assert!(!hit, "the token is stored in clear");
    }
}

#[tokio::test]
async fn registrations_are_limited_per_ip_address() {
    let srv = TestServer::start_with(|c| c.auth.regist_limit = 3).await;
    let body = json!({"password":"p","name":"n","sex":"s","email":"e","signature":"g"});
    for _ in 0..3 {
        assert_eq!(srv.post_json("/regist", body.clone()).await.0, 200);
    }
    let reply = srv.http.post(srv.url("/regist")).json(&body).send();
    let reply = timeout(WAIT, reply).await.unwrap().unwrap();
    assert_eq!(reply.status(), 429);
    // Three a minute: room for the next one within 20 s, and the client is told when.
    let retry_after: u64 = reply.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=20).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    let reply: serde_json::Value = reply.json().await.unwrap();
    let msg = reply["msg"].as_str().unwrap();
    assert!(
        msg.contains(&format!("retry in {retry_after} s")),
        "{reply}"
    );
}

#[tokio::test]
async fn login_attempts_are_limited_per_user() {
    let srv = TestServer::start_with(|c| c.auth.login_limit = 3).await;
    for _ in 0..3 {
        let (status, _) = srv
            .post_json("/login", json!({"user": "1", "password": "guess"}))
            .await;
        assert_eq!(status, 400);
    }
    // Even the right password waits now: guessing cannot go faster than the limit.
    let (status, _) = srv
        .post_json("/login", json!({"user": "1", "password": "123"}))
        .await;
    assert_eq!(status, 429);
    // Other users are not affected.
    srv.login("2", "123").await;
}

#[tokio::test]
async fn open_mode_trusts_v1_but_v2_still_needs_a_token() {
    let srv = TestServer::start().await;
    assert_eq!(srv.get("/list/1").await.0, 200, "no token needed over HTTP");
    let mut c = srv.raw().await;
    let mut r = Regist::v2("1", "x");
    r.token = None;
    c.send(r).await.unwrap();
    expect_error(&mut c, ErrorCode::Unauthorized).await;
    expect_eof(&mut c).await;
    let token = srv.login("1", "123").await;
    let (mut v2, _) = srv.v2("1", &token, None).await;
    assert!(sync(&mut v2).await.is_empty());
}
