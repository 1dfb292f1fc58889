//! The admin API (`--admin-token`): disabling an account revokes its tokens, refuses its
//! logins and closes its connections; enabling it lets it back; nobody else can do either.

mod common;

use common::{TestServer, WAIT, expect_eof};
use improto::{ErrorCode, ProtoError, Regist};
use imserver::config::{AuthMode, Secret};
use serde_json::json;
use tokio::time::timeout;

const ADMIN: &str = "0123456789abcdef0123456789abcdef-admin";

async fn server(admin: Option<&str>) -> TestServer {
    TestServer::start_with(|c| {
        c.auth.auth = AuthMode::Token;
        c.auth.admin_token = admin.map(|t| Secret(t.to_owned()));
    })
    .await
}

/// `POST path` with `Authorization: Bearer token` (if any): the status and the body.
async fn post(srv: &TestServer, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut request = srv.http.post(srv.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let reply = request.send().await.unwrap();
    (reply.status().as_u16(), reply.json().await.unwrap())
}

async fn login(srv: &TestServer, user: &str, password: &str) -> (u16, serde_json::Value) {
    srv.post_json("/login", json!({"user": user, "password": password}))
        .await
}

#[tokio::test]
async fn disabling_revokes_tokens_refuses_logins_and_closes_connections() {
    let srv = server(Some(ADMIN)).await;
    let (ann, token) = srv.user("Ann").await;
    let (bob, bob_token) = srv.user("Bob").await;
    let (mut tcp, _) = srv.v2(&ann, &token, None).await;
    let (mut ws, _) = srv.ws_v2(&ann, &token, None).await;

    let path = format!("/admin/users/{ann}/disable");
    let (status, body) = post(&srv, &path, Some(ADMIN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"user": ann, "disabled": true, "connectionsClosed": 2})
    );
    // Both live connections are closed.
    expect_eof(&mut tcp).await;
    let (packets, _) = ws.until_closed().await;
    assert!(packets.is_empty(), "{packets:?}");
    // The token is refused everywhere: over HTTP and on the relay.
    let (status, _) = srv.get_as("/blocks", &token).await;
    assert_eq!(status, 401);
    let mut c = srv.raw().await;
    let refused = timeout(WAIT, c.handshake(Regist::v2(&ann, &token)))
        .await
        .unwrap();
    assert!(
        matches!(
            refused,
            Err(ProtoError::Refused {
                code: ErrorCode::Unauthorized,
                ..
            })
        ),
        "{refused:?}"
    );
    // The right password no longer logs in; a wrong one is answered as before.
    let (status, body) = login(&srv, &ann, "pw").await;
    assert_eq!((status, body), (403, json!({"msg": "Account disabled"})));
    let (status, _) = login(&srv, &ann, "wrong").await;
    assert_eq!(status, 400);
    // Others are untouched.
    let (status, _) = srv.get_as("/blocks", &bob_token).await;
    assert_eq!(status, 200);
    assert_eq!(login(&srv, &bob, "pw").await.0, 200);

    // Enabled again, the account logs in (its old tokens stay revoked).
    let (status, body) = post(&srv, &format!("/admin/users/{ann}/enable"), Some(ADMIN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["disabled"], false);
    let (status, body) = login(&srv, &ann, "pw").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(srv.get_as("/blocks", &token).await.0, 401);
}

#[tokio::test]
async fn a_disabled_account_stays_disabled_after_a_restart() {
    let mut srv = server(Some(ADMIN)).await;
    let (ann, _) = srv.user("Ann").await;
    let path = format!("/admin/users/{ann}/disable");
    assert_eq!(post(&srv, &path, Some(ADMIN)).await.0, 200);
    srv.restart().await;
    assert_eq!(login(&srv, &ann, "pw").await.0, 403);
}

#[tokio::test]
async fn only_the_admin_token_may_and_unknown_users_are_404() {
    let srv = server(Some(ADMIN)).await;
    let (ann, token) = srv.user("Ann").await;
    let path = format!("/admin/users/{ann}/disable");
    for bad in [None, Some("wrong"), Some(token.as_str())] {
        let (status, body) = post(&srv, &path, bad).await;
        assert_eq!(
            (status, body),
            (401, json!({"msg": "Unauthorized"})),
            "{bad:?}"
        );
    }
    assert_eq!(login(&srv, &ann, "pw").await.0, 200, "nothing changed");
    let (status, body) = post(&srv, "/admin/users/999/disable", Some(ADMIN)).await;
    assert_eq!((status, body), (404, json!({"msg": "No such user"})));
    let (status, body) = post(&srv, "/admin/users/007/disable", Some(ADMIN)).await;
    assert_eq!((status, body), (400, json!({"msg": "Out of range"})));

    // Without --admin-token, the admin API is off for everyone.
    let off = server(None).await;
    let (status, body) = post(&off, "/admin/users/1/disable", Some(ADMIN)).await;
    assert_eq!(status, 403);
    assert!(
        body["msg"].as_str().unwrap().contains("--admin-token"),
        "{body}"
    );
}
