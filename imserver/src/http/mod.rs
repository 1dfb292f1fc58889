//! The HTTP API (warp).
//!
//! - `routes` here: the filter tree and the answers for unknown routes.
//! - `users`: `/regist`, `/login`, `/logout`, `/profile/{id}`, `/username/{id}`.
//! - `friends`: `/list/{id}`.
//! - `guard`: bearer tokens, and the rate limits of `/regist` and `/login`.
//! - `body`: request bodies (JSON or form), capped.
//! - `reply`: JSON replies and the error type.

mod body;
mod friends;
mod guard;
mod reply;
mod users;

use std::convert::Infallible;
use std::sync::Arc;

use warp::Filter;
use warp::http::StatusCode;
use warp::reply::Response;

use std::net::{IpAddr, SocketAddr};

use guard::PerMinute;

use crate::Config;
use crate::auth::PasswordHashers;
use crate::config::AuthMode;
use crate::store::{Store, UserId};

/// What the handlers share.
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// `--auth`: whether requests must carry a bearer token.
    pub auth: AuthMode,
    /// `--token-ttl`, in seconds.
    pub token_ttl: u64,
    /// `--max-body-bytes`.
    pub max_body_bytes: usize,
    /// `--regist-limit`, per client IP address.
    regist_limit: PerMinute<IpAddr>,
    /// `--login-limit`, per user.
    login_limit: PerMinute<UserId>,
    /// `--password-hashers` threads, for `/regist` and `/login`.
    pub hashers: PasswordHashers,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, hashers: PasswordHashers, config: &Config) -> Self {
        AppState {
            hashers,
            store,
            auth: config.auth,
            token_ttl: config.token_ttl,
            max_body_bytes: config.max_body_bytes,
            regist_limit: PerMinute::new(config.regist_limit),
            login_limit: PerMinute::new(config.login_limit),
        }
    }
}

/// A user id from a path or body: a positive decimal number that fits an `i64`.
/// `0`, `-1`, `abc` and 20-digit numbers are not ids.
pub fn parse_id(s: &str) -> Option<UserId> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<UserId>().ok().filter(|&id| id > 0)
}

/// The whole API.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let limit = state.max_body_bytes;
    let state = warp::any().map(move || state.clone());

    // The bearer token, checked by each handler (see `guard::caller`).
    let token = || warp::header::optional::<String>("authorization");

    let profile = warp::path!("profile" / String)
        .and(warp::get())
        .and(token())
        .and(state.clone())
        .then(|id, t, s| async move { reply::finish(users::profile(id, t, s).await) });
    let username = warp::path!("username" / String)
        .and(warp::get())
        .and(token())
        .and(state.clone())
        .then(|id, t, s| async move { reply::finish(users::username(id, t, s).await) });
    let list = warp::path!("list" / String)
        .and(warp::get())
        .and(token())
        .and(state.clone())
        .then(|id, t, s| async move { reply::finish(friends::list(id, t, s).await) });
    let login = warp::path!("login")
        .and(warp::post())
        .and(body::parsed(limit))
        .and(state.clone())
        .then(|b, s| async move { reply::finish(users::login(b, s).await) });
    let logout = warp::path!("logout")
        .and(warp::post())
        .and(token())
        .and(state.clone())
        .then(|t, s| async move { reply::finish(users::logout(t, s).await) });
    let regist = warp::path!("regist")
        .and(warp::post())
        .and(body::parsed(limit))
        .and(warp::addr::remote())
        .and(state)
        .then(|b, addr: Option<SocketAddr>, s| async move {
            reply::finish(users::regist(b, addr.map(|a| a.ip()), s).await)
        });

    profile
        .or(username)
        .unify()
        .or(list)
        .unify()
        .or(login)
        .unify()
        .or(logout)
        .unify()
        .or(regist)
        .unify()
        .recover(|r| async move { Ok::<_, Infallible>(rejected(r)) })
        .unify()
}

/// Answers for requests no route took: still JSON, never a 500.
fn rejected(r: warp::Rejection) -> Response {
    let (status, msg) = if r.is_not_found() {
        (StatusCode::NOT_FOUND, "Not found")
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        (StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
    } else {
        (StatusCode::BAD_REQUEST, "Bad request")
    };
    reply::json(status, &serde_json::json!({ "msg": msg }))
}

#[cfg(test)]
mod tests {
    use super::parse_id;

    #[test]
    fn ids_are_positive_decimal_numbers_that_fit_an_i64() {
        assert_eq!(parse_id("1"), Some(1));
        assert_eq!(parse_id("007"), Some(7));
        assert_eq!(parse_id("9223372036854775807"), Some(i64::MAX));
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            "abc",
            "1a",
            " 1",
            "99999999999999999999",
            "9223372036854775808",
        ] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }
}
