//! The HTTP API, through a real HTTP client against a real server.

mod common;

use std::collections::BTreeSet;

use common::TestServer;
use serde_json::json;

const BAD_IDS: [&str; 6] = ["abc", "0", "-1", "99999999999999999999", "12345", "1.5"];

fn out_of_range() -> serde_json::Value {
    json!({"msg": "Out of range"})
}

fn new_user() -> serde_json::Value {
    json!({"password": "pw", "name": "Neo", "sex": "m", "email": "neo@example.com", "signature": "hi"})
}

#[tokio::test]
async fn profile_shows_the_user_with_a_string_id_and_no_password() {
    let srv = TestServer::start().await;
    let (status, body) = srv.get("/profile/1").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"user": "1", "name": "Wu", "sex": "", "email": "", "signature": ""})
    );
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_out_of_range_on_every_route() {
    let srv = TestServer::start().await;
    for route in ["profile", "list", "username"] {
        for id in BAD_IDS {
            let (status, body) = srv.get(&format!("/{route}/{id}")).await;
            assert_eq!((status, &body), (400, &out_of_range()), "/{route}/{id}");
        }
    }
    for id in BAD_IDS {
        let (status, body) = srv
            .post_json("/login", json!({"user": id, "password": "123"}))
            .await;
        assert_eq!((status, &body), (400, &out_of_range()), "login as {id}");
    }
}

#[tokio::test]
async fn username_and_friend_list() {
    let srv = TestServer::start().await;
    assert_eq!(srv.get("/username/2").await, (200, json!({"name": "WuYW"})));
    assert_eq!(
        srv.get("/list/1").await,
        (200, json!([{"user": "2", "name": "WuYW"}]))
    );
    assert_eq!(
        srv.get("/list/2").await,
        (200, json!([{"user": "1", "name": "Wu"}]))
    );
    let (_, created) = srv.post_json("/regist", new_user()).await;
    let id = created["user"].as_str().unwrap();
    assert_eq!(srv.get(&format!("/list/{id}")).await, (200, json!([])));
}

#[tokio::test]
async fn login_with_json_and_with_form() {
    let srv = TestServer::start().await;
    let profile = json!({"user": "1", "name": "Wu", "sex": "", "email": "", "signature": ""});
    let (status, body) = srv
        .post_json("/login", json!({"user": "1", "password": "123"}))
        .await;
    assert_eq!((status, &body["user"]), (200, &profile["user"]));
    assert_eq!(body["name"], "Wu");

    let (status, body) = srv
        .post_raw(
            "/login",
            Some("application/x-www-form-urlencoded"),
            "user=1&password=123",
        )
        .await;
    assert_eq!((status, &body["name"]), (200, &json!("Wu")));
}

#[tokio::test]
async fn wrong_password_is_refused() {
    let srv = TestServer::start().await;
    let (status, body) = srv
        .post_json("/login", json!({"user": "1", "password": "1234"}))
        .await;
    assert_eq!(
        (status, body),
        (400, json!({"msg": "Wrong userID or password"}))
    );
}

#[tokio::test]
async fn regist_with_every_body_encoding_then_login() {
    let srv = TestServer::start().await;
    let json_body = new_user().to_string();
    let form_body = "password=pw&name=Neo&sex=m&email=neo%40example.com&signature=hi";
    let cases: [(Option<&str>, String); 5] = [
        (Some("application/json"), json_body.clone()),
        (None, json_body.clone()),
        (Some("text/plain"), json_body.clone()),
        (Some("application/x-www-form-urlencoded"), json_body.clone()),
        (Some("application/x-www-form-urlencoded"), form_body.into()),
    ];
    for (ctype, body) in cases {
        let (status, created) = srv.post_raw("/regist", ctype, body).await;
        assert_eq!(status, 200, "{ctype:?}: {created}");
        let id = created["user"]
            .as_str()
            .expect("id is a string")
            .to_string();
        assert_eq!(created["email"], "neo@example.com");
        assert!(created.get("password").is_none());

        let (status, _) = srv
            .post_json("/login", json!({"user": id, "password": "pw"}))
            .await;
        assert_eq!(status, 200);
        let (status, profile) = srv.get(&format!("/profile/{id}")).await;
        assert_eq!(status, 200);
        assert_eq!(profile["name"], "Neo");
        assert!(profile.get("password").is_none());
    }
}

#[tokio::test]
async fn bad_bodies_get_400_naming_the_problem() {
    let srv = TestServer::start().await;
    for missing in ["password", "name", "sex", "email", "signature"] {
        let mut body = new_user();
        body.as_object_mut().unwrap().remove(missing);
        let (status, reply) = srv.post_json("/regist", body.clone()).await;
        assert_eq!(status, 400);
        assert!(
            reply["msg"].as_str().unwrap().contains(missing),
            "{missing}: {reply}"
        );

        body[missing] = json!("");
        let (status, reply) = srv.post_json("/regist", body).await;
        assert_eq!(status, 400);
        assert!(
            reply["msg"].as_str().unwrap().contains(missing),
            "{missing} empty: {reply}"
        );
    }
    let (status, reply) = srv
        .post_json(
            "/regist",
            json!({"password": 5, "name": "x", "sex": "m", "email": "e", "signature": "s"}),
        )
        .await;
    assert_eq!(status, 400, "{reply}");
    for raw in ["{not json", "", "[1,2]"] {
        let (status, reply) = srv.post_raw("/login", Some("application/json"), raw).await;
        assert_eq!(status, 400, "{raw:?}: {reply}");
        assert!(reply["msg"].is_string());
    }
    let (status, reply) = srv
        .post_raw(
            "/login",
            Some("application/x-www-form-urlencoded"),
            "user=1",
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        reply["msg"].as_str().unwrap().contains("password"),
        "{reply}"
    );
}

#[tokio::test]
async fn oversized_bodies_get_413_with_and_without_content_length() {
    let srv = TestServer::start().await;
    let big = format!(r#"{{"user":"1","password":"{}"}}"#, "x".repeat(64 * 1024));
    let (status, reply) = srv
        .post_raw("/login", Some("application/json"), big.clone())
        .await;
    assert_eq!(status, 413, "{reply}");

    // A chunked body has no Content-Length; the cap still applies.
    let chunks: Vec<Result<String, std::io::Error>> = big
        .as_bytes()
        .chunks(4096)
        .map(|c| Ok(String::from_utf8(c.to_vec()).unwrap()))
        .collect();
    let stream = futures::stream::iter(chunks);
    let (status, _) = srv
        .post_raw(
            "/login",
            Some("application/json"),
            reqwest::Body::wrap_stream(stream),
        )
        .await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let srv = TestServer::start().await;
    let (status, body) = srv.get("/nowhere").await;
    assert_eq!(status, 404);
    assert!(body["msg"].is_string());
    let (status, body) = srv.get("/login").await;
    assert_eq!(status, 405);
    assert!(body["msg"].is_string());
    let (status, _) = srv.get("/profile/1/extra").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn concurrent_registrations_get_distinct_sequential_ids() {
    let srv = TestServer::start().await;
    let attempts = 16;
    let results =
        futures::future::join_all((0..attempts).map(|_| srv.post_json("/regist", new_user())))
            .await;
    let ids: BTreeSet<i64> = results
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 200);
            body["user"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    // The demo users are 1 and 2; the new ones follow without gaps or repeats.
    assert_eq!(ids, (3..3 + attempts).collect());
}

#[tokio::test]
async fn text_with_the_nul_character_is_refused_in_json_and_in_forms() {
    let srv = TestServer::start().await;
    let mut body = new_user();
    body["name"] = json!("a\u{0}b");
    let (status, reply) = srv.post_json("/regist", body).await;
    assert_eq!(status, 400);
    assert!(reply["msg"].as_str().unwrap().contains("NUL"), "{reply}");
    let form = "password=pw&name=a%00b&sex=-&email=x&signature=-";
    let (status, reply) = srv
        .post_raw("/regist", Some("application/x-www-form-urlencoded"), form)
        .await;
    assert_eq!(status, 400);
    assert!(reply["msg"].as_str().unwrap().contains("NUL"), "{reply}");
    // Without it, the same account is made.
    assert_eq!(srv.post_json("/regist", new_user()).await.0, 200);
}

#[tokio::test]
async fn passwords_are_stored_only_as_argon2id_hashes() {
    let srv = TestServer::start().await;
    let secret = "correct horse battery staple";
    let mut body = new_user();
    body["password"] = json!(secret);
    let (status, _) = srv.post_json("/regist", body).await;
    assert_eq!(status, 200);

    // Read the database the way an attacker with the disk (or the database) would.
    let hashes: Vec<String> = match srv.database() {
        Some(url) => {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let rows = client
                .query("SELECT password_hash FROM users", &[])
                .await
                .unwrap();
            rows.iter().map(|r| r.get(0)).collect()
        }
        None => {
            let db = rusqlite::Connection::open(srv.dir.path().join("imserver.sqlite3")).unwrap();
            let mut stmt = db.prepare("SELECT password_hash FROM users").unwrap();
            let rows = stmt.query_map([], |r| r.get(0)).unwrap();
            rows.collect::<Result<_, _>>().unwrap()
        }
    };
    assert_eq!(hashes.len(), 3);
    for h in &hashes {
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains(secret) && !h.contains("123"));
    }
    let files: Vec<u8> = std::fs::read_dir(srv.dir.path())
        .unwrap()
        .flat_map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        !files.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the plaintext password is on disk"
    );
}

#[tokio::test]
async fn accounts_and_friendships_survive_a_restart() {
    let mut srv = TestServer::start().await;
    let (_, created) = srv.post_json("/regist", new_user()).await;
    let id = created["user"].as_str().unwrap().to_string();
    srv.restart().await;
    let (status, body) = srv
        .post_json("/login", json!({"user": id, "password": "pw"}))
        .await;
    assert_eq!((status, &body["name"]), (200, &json!("Neo")));
    assert_eq!(
        srv.get("/list/1").await,
        (200, json!([{"user": "2", "name": "WuYW"}]))
    );
}
