//! The web chat's files, embedded in the binary: content types, caching, and a
//! Content-Security-Policy that allows nothing but this server. (What the page does is
//! tested in a real browser: `browser.rs`.)

mod common;

use common::{TestServer, WAIT};
use tokio::time::timeout;

async fn get(srv: &TestServer, path: &str, etag: Option<&str>) -> reqwest::Response {
    let mut req = srv.http.get(srv.url(path));
    if let Some(etag) = etag {
        req = req.header("if-none-match", etag);
    }
    timeout(WAIT, req.send())
        .await
        .expect("in time")
        .expect("HTTP works")
}

#[tokio::test]
async fn the_page_and_its_files_are_served_with_their_types() {
    let srv = TestServer::start().await;
    for (path, mime) in [
        ("/", "text/html; charset=utf-8"),
        ("/web/app.js", "text/javascript; charset=utf-8"),
        ("/web/stream.js", "text/javascript; charset=utf-8"),
        ("/web/api.js", "text/javascript; charset=utf-8"),
        ("/web/style.css", "text/css; charset=utf-8"),
        ("/web/icon.svg", "image/svg+xml"),
    ] {
        let r = get(&srv, path, None).await;
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        assert_eq!(h["content-type"], mime, "{path}");
        assert_eq!(h["cache-control"], "no-cache", "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("connect-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert!(!r.bytes().await.unwrap().is_empty(), "{path}");
    }
}

#[tokio::test]
async fn the_page_loads_nothing_from_elsewhere() {
    let srv = TestServer::start().await;
    for path in [
        "/",
        "/web/app.js",
        "/web/stream.js",
        "/web/api.js",
        "/web/style.css",
    ] {
        let body = get(&srv, path, None).await.text().await.unwrap();
        for outside in ["http://", "https://", "//fonts", "cdn"] {
            assert!(!body.contains(outside), "{path} names {outside}");
        }
    }
}

#[tokio::test]
async fn an_unchanged_file_is_not_sent_again() {
    let srv = TestServer::start().await;
    let first = get(&srv, "/web/app.js", None).await;
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let again = get(&srv, "/web/app.js", Some(&etag)).await;
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.unwrap().is_empty());
    let other = get(&srv, "/web/app.js", Some("\"something else\"")).await;
    assert_eq!(other.status(), 200);
}

#[tokio::test]
async fn an_unknown_file_is_a_json_404() {
    let srv = TestServer::start().await;
    for path in ["/web/nope.js", "/web/../Cargo.toml", "/web/"] {
        let (status, body) = srv.get(path).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
}
