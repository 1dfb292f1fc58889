//! The HTTP contract: `GET /openapi.json` documents every route the server serves, and the
//! server serves every route it documents, with the statuses it documents. (CI also runs
//! schemathesis against a live server: `scripts/schemathesis`.)

mod common;

use std::collections::BTreeSet;

use common::TestServer;
use imserver::config::{AuthMode, Secret};
use serde_json::Value;

const ADMIN: &str = "an admin token of more than thirty-two characters";
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// `(method, path)` with every parameter written `*`: the shape both sides are compared in.
type Route = (String, String);

fn shape(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "*" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every operation of the document.
fn documented(doc: &Value) -> BTreeSet<Route> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            assert!(METHODS.contains(&method.as_str()), "{method} {path}");
            out.insert((method.clone(), shape(path)));
        }
    }
    out
}

/// Every route `src/http/mod.rs` builds: each `warp::path!(…)` with the method filter that
/// follows it, and the two routes made otherwise (the page at `/`, and the files under
/// `/web/`). A route added there without a document entry fails the test below.
fn served() -> BTreeSet<Route> {
    let source = include_str!("../src/http/mod.rs");
    let mut out = BTreeSet::new();
    for (at, _) in source.match_indices("warp::path!(") {
        let rest = &source[at + "warp::path!(".len()..];
        let args = &rest[..rest.find(')').unwrap()];
        let path: Vec<String> = args
            .split('/')
            .map(|s| {
                let s = s.trim();
                match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                    Some(literal) => literal.to_owned(),
                    None => "*".to_owned(),
                }
            })
            .collect();
        let method = METHODS
            .iter()
            .filter_map(|m| rest.find(&format!("warp::{m}()")).map(|i| (i, *m)))
            .min()
            .expect("a method filter follows every path")
            .1;
        out.insert((method.to_owned(), format!("/{}", path.join("/"))));
    }
    assert!(source.contains("warp::path::end()\n        .and(warp::get())"));
    out.insert(("get".into(), "/".into()));
    assert!(source.contains("warp::path(\"web\")\n        .and(warp::path::tail())"));
    out.insert(("get".into(), "/web/*".into()));
    out
}

/// Whether a concrete `path` fits `template` (a document path).
fn fits(template: &str, path: &str) -> bool {
    let (t, p): (Vec<_>, Vec<_>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| t.starts_with('{') || t == p)
}

/// A path of the document with its parameters filled in.
fn concrete(path: &str) -> String {
    path.replace("{id}", "3")
        .replace("{group}", "g1")
        .replace("{peer}", "3")
        .replace("{file}", "app.js")
}

#[tokio::test]
async fn every_served_route_is_documented_and_every_documented_route_is_served() {
    let srv = TestServer::start_with(|c| {
        c.auth.auth = AuthMode::Token;
        c.auth.admin_token = Some(Secret(ADMIN.into()));
    })
    .await;
    let (status, doc) = srv.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");

    let served = served();
    let documented = documented(&doc);
    assert_eq!(
        served.difference(&documented).collect::<Vec<_>>(),
        Vec::<&Route>::new(),
        "served but not documented"
    );
    assert_eq!(
        documented.difference(&served).collect::<Vec<_>>(),
        Vec::<&Route>::new(),
        "documented but not served"
    );

    // Through the live server: each documented operation is answered by its route (not the
    // router's 404 or 405), with a status it documents; each other method on a documented
    // path is the router's 404 or 405.
    let (_, token) = srv.user("Ann").await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let url = srv.url(&concrete(path));
        for method in METHODS {
            // Another documented route may take this path with this method (`DELETE
            // /friends/requests` is `DELETE /friends/{id}` with a bad id).
            let other = doc["paths"].as_object().unwrap().iter().any(|(t, item)| {
                t != path && item.get(method).is_some() && fits(t, &concrete(path))
            });
            if item.get(method).is_none() && other {
                continue;
            }
            // Every route but /logout (which would revoke it) with the caller's token.
            let bearer = match path.as_str() {
                "/logout" => "not a token",
                p if p.starts_with("/admin/") => ADMIN,
                _ => &token,
            };
            let request = srv
                .http
                .request(method.to_uppercase().parse().unwrap(), &url)
                .bearer_auth(bearer)
                .json(&serde_json::json!({}));
            let reply = request.send().await.unwrap();
            let status = reply.status().as_u16();
            let body = reply.bytes().await.unwrap();
            let routed_away = matches!(status, 404 | 405)
                && serde_json::from_slice::<Value>(&body).is_ok_and(|b| {
                    b == serde_json::json!({"msg": "Not found"})
                        || b == serde_json::json!({"msg": "Method not allowed"})
                });
            match item.get(method) {
                Some(op) => {
                    assert!(!routed_away, "{method} {path}: no route took it ({status})");
                    let statuses = op["responses"].as_object().unwrap();
                    assert!(
                        statuses.contains_key(&status.to_string()),
                        "{method} {path} answered {status}, which it does not document: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
                None => assert!(
                    routed_away,
                    "{method} {path} is served ({status}) but not documented"
                ),
            }
        }
    }
}

#[tokio::test]
async fn the_document_is_complete_openapi_3_1() {
    let doc: Value = serde_json::from_str(imserver::http::OPENAPI).unwrap();
    let text = imserver::http::OPENAPI;
    // Every reference resolves.
    for (at, _) in text.match_indices("\"$ref\": \"#/components/schemas/") {
        let rest = &text[at + "\"$ref\": \"#/components/schemas/".len()..];
        let name = &rest[..rest.find('"').unwrap()];
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "no schema {name}"
        );
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let what = format!("{method} {path}");
            assert!(op["operationId"].is_string(), "{what}: no operationId");
            assert!(op["summary"].is_string(), "{what}: no summary");
            let responses = op["responses"].as_object().unwrap();
            for (status, response) in responses {
                // Every JSON answer has a schema; every error is `{"msg": …}`.
                if let Some(json) = response["content"].get("application/json") {
                    assert!(json["schema"].is_object(), "{what} {status}: no schema");
                }
                if status.starts_with('4') && path != "/ws" {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/Error",
                        "{what} {status}"
                    );
                }
            }
            // Every path parameter is described.
            for name in path.split('/').filter_map(|s| s.strip_prefix('{')) {
                let name = name.trim_end_matches('}');
                let params = op["parameters"].as_array();
                assert!(
                    params.is_some_and(|p| p.iter().any(|p| p["name"] == name)),
                    "{what}: parameter {name} is not described"
                );
            }
            if op.get("requestBody").is_some() {
                assert!(
                    responses.contains_key("413") && responses.contains_key("400"),
                    "{what}: a body can be too large or malformed"
                );
            }
        }
    }
}
