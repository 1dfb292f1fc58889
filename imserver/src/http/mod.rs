//! The HTTP API (warp).
//!
//! - `routes` here: the filter tree and the answers for unknown routes.
//! - `users`: `/regist`, `/login`, `/logout`, `/profile/{id}`, `/username/{id}`.
//! - `friends`: `/list/{id}`, friend requests, `/friends/{id}`, blocks.
//! - `groups`: `/groups` and what is below it.
//! - `history`: `/history/{peer}` and `/conversations`.
//! - `ws`: `/ws`, the relay over WebSocket (the upgrade; the rest is the relay's).
//! - `admin`: `/admin/…`, the operators' API behind `--admin-token`.
//! - `health`: `/healthz` and `/readyz`.
//! - `openapi.json`: the OpenAPI 3.1 document of every route here, served at
//!   `/openapi.json` (`tests/openapi.rs` holds the two to each other).
//! - `scrape`: `/metrics`, on `--metrics-addr`.
//! - `server`: the listener: TLS, connection limits and timeouts, request metrics.
//! - `web`: the web chat's files, embedded, at `/` and `/web/{file}`.
//! - `guard`: the bearer token as filters, and per-key rate limits.
//! - `body`: request bodies (JSON or form), capped.
//! - `reply`: JSON replies and the error type.

mod admin;
mod body;
mod friends;
mod groups;
mod guard;
mod health;
mod history;
mod reply;
mod scrape;
mod server;
mod users;
mod web;
mod ws;

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use guard::{Limit, caller, user};
pub use scrape::routes as metrics_routes;
pub use server::{ConnInfo, Limits, serve};
use tokio_util::sync::CancellationToken;
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::Config;
use crate::auth::PasswordHashers;
use crate::config::AuthMode;
use crate::id::UserId;
use crate::relay::{Presence, Relay};
use crate::store::Store;

/// What the handlers share.
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// `--auth`: whether requests must carry a bearer token.
    pub auth: AuthMode,
    /// `--token-ttl`.
    pub token_ttl: std::time::Duration,
    /// `--max-body-bytes`.
    pub max_body_bytes: usize,
    /// `--regist-limit`, per client IP address.
    regist_limit: Limit<IpAddr>,
    /// `--login-limit`, per user.
    login_limit: Limit<UserId>,
    /// `--friend-request-limit`, per user.
    friend_request_limit: Limit<UserId>,
    /// `--max-group-members`.
    pub max_group_members: usize,
    /// `--password-hashers` threads, for `/regist` and `/login`.
    pub hashers: PasswordHashers,
    /// Who is online, for `/presence/{id}`.
    pub presence: Arc<Presence>,
    /// The relay, for connections upgraded on `/ws`.
    pub relay: Arc<Relay>,
    /// `--allowed-origins`, for `/ws`.
    origins: ws::Origins,
    /// Cancelled when the server begins to shut down: `/readyz` answers `503`.
    draining: CancellationToken,
    /// `--admin-token`'s hash.
    admin: admin::AdminToken,
}

impl AppState {
    pub fn new(
        relay: Arc<Relay>,
        hashers: PasswordHashers,
        config: &Config,
        draining: CancellationToken,
    ) -> Self {
        AppState {
            draining,
            admin: admin::AdminToken::new(config.auth.admin_token.as_ref().map(|t| t.0.as_str())),
            hashers,
            presence: relay.presence.clone(),
            store: relay.store.clone(),
            origins: ws::Origins::new(&config.http.allowed_origins),
            relay,
            auth: config.auth.auth,
            token_ttl: config.auth.token_ttl,
            max_body_bytes: config.http.max_body_bytes,
            regist_limit: Limit::per_minute(config.auth.regist_limit),
            login_limit: Limit::per_minute(config.auth.login_limit),
            friend_request_limit: Limit::per_hour(config.social.friend_request_limit),
            max_group_members: config.social.max_group_members,
        }
    }
}

/// A user id in a path or a body: `400 Out of range` unless it is one, canonically written
/// (`007` is not an id).
pub fn parse_id(s: &str) -> Result<UserId, reply::ApiError> {
    UserId::parse(s).map_err(|_| reply::ApiError::out_of_range())
}

/// The whole API.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let limit = state.max_body_bytes;
    let with = |s: &Arc<AppState>| {
        let s = s.clone();
        warp::any().map(move || s.clone())
    };
    let s = &state;

    // The Go server's routes: the caller is optional in `--auth open` mode.
    let profile = warp::path!("profile" / String)
        .and(warp::get())
        .and(caller(s.clone()))
        .and(with(s))
        .then(|id, c, s| async move { reply::finish(users::profile(id, c, s).await) });
    let username = warp::path!("username" / String)
        .and(warp::get())
        .and(caller(s.clone()))
        .and(with(s))
        .then(|id, _, s| async move { reply::finish(users::username(id, s).await) });
    let list = warp::path!("list" / String)
        .and(warp::get())
        .and(caller(s.clone()))
        .and(with(s))
        .then(|id, c, s| async move { reply::finish(friends::list(id, c, s).await) });
    let login = warp::path!("login")
        .and(warp::post())
        .and(body::parsed(limit))
        .and(with(s))
        .then(|b, s| async move { reply::finish(users::login(b, s).await) });
    let logout = warp::path!("logout")
        .and(warp::post())
        .and(warp::header::optional::<String>("authorization"))
        .and(with(s))
        .then(|t, s| async move { reply::finish(users::logout(t, s).await) });
    let regist = warp::path!("regist")
        .and(warp::post())
        .and(body::parsed(limit))
        .and(conn())
        .and(with(s))
        .then(|b, conn: Option<ConnInfo>, s| async move {
            reply::finish(users::regist(b, conn.map(|c| c.peer.ip()), s).await)
        });
    let seed = profile
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
        // Boxed: warp's types nest with every `or`, and the compiler's time grows fast
        // with their depth.
        .boxed();

    // The messenger's routes: always for a known user.
    let ask = warp::path!("friends" / "requests")
        .and(warp::post())
        .and(user(s.clone()))
        .and(body::parsed(limit))
        .and(with(s))
        .then(|me, b, s| async move { reply::finish(friends::request(me, b, s).await) });
    let requests = warp::path!("friends" / "requests")
        .and(warp::get())
        .and(user(s.clone()))
        .and(with(s))
        .then(|me, s| async move { reply::finish(friends::requests(me, s).await) });
    let accept = warp::path!("friends" / "requests" / String / "accept")
        .and(warp::post())
        .and(user(s.clone()))
        .and(with(s))
        .then(|from, me, s| async move { reply::finish(friends::answer(me, from, true, s).await) });
    let decline = warp::path!("friends" / "requests" / String / "decline")
        .and(warp::post())
        .and(user(s.clone()))
        .and(with(s))
        .then(
            |from, me, s| async move { reply::finish(friends::answer(me, from, false, s).await) },
        );
    let unfriend = warp::path!("friends" / String)
        .and(warp::delete())
        .and(user(s.clone()))
        .and(with(s))
        .then(|them, me, s| async move { reply::finish(friends::unfriend(me, them, s).await) });
    let block = warp::path!("blocks" / String)
        .and(warp::post())
        .and(user(s.clone()))
        .and(with(s))
        .then(|them, me, s| async move { reply::finish(friends::block(me, them, s).await) });
    let unblock = warp::path!("blocks" / String)
        .and(warp::delete())
        .and(user(s.clone()))
        .and(with(s))
        .then(|them, me, s| async move { reply::finish(friends::unblock(me, them, s).await) });
    let blocks = warp::path!("blocks")
        .and(warp::get())
        .and(user(s.clone()))
        .and(with(s))
        .then(|me, s| async move { reply::finish(friends::blocks(me, s).await) });
    let history = warp::path!("history" / String)
        .and(warp::get())
        .and(user(s.clone()))
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(with(s))
        .then(|peer, me, q, s| async move { reply::finish(history::page(me, peer, q, s).await) });
    let presence = warp::path!("presence" / String)
        .and(warp::get())
        .and(user(s.clone()))
        .and(with(s))
        .then(|id, me, s| async move { reply::finish(friends::presence(me, id, s).await) });
    let conversations = warp::path!("conversations")
        .and(warp::get())
        .and(user(s.clone()))
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(with(s))
        .then(|me, q, s| async move { reply::finish(history::conversations(me, q, s).await) });
    let new_group = warp::path!("groups")
        .and(warp::post())
        .and(user(s.clone()))
        .and(body::parsed(limit))
        .and(with(s))
        .then(|me, b, s| async move { reply::finish(groups::create(me, b, s).await) });
    let my_groups = warp::path!("groups")
        .and(warp::get())
        .and(user(s.clone()))
        .and(with(s))
        .then(|me, s| async move { reply::finish(groups::mine(me, s).await) });
    let group = warp::path!("groups" / String)
        .and(warp::get())
        .and(user(s.clone()))
        .and(with(s))
        .then(|g, me, s| async move { reply::finish(groups::show(me, g, s).await) });
    let rename_group = warp::path!("groups" / String)
        .and(warp::patch())
        .and(user(s.clone()))
        .and(body::parsed(limit))
        .and(with(s))
        .then(|g, me, b, s| async move { reply::finish(groups::rename(me, g, b, s).await) });
    let add_member = warp::path!("groups" / String / "members")
        .and(warp::post())
        .and(user(s.clone()))
        .and(body::parsed(limit))
        .and(with(s))
        .then(|g, me, b, s| async move { reply::finish(groups::add(me, g, b, s).await) });
    let remove_member = warp::path!("groups" / String / "members" / String)
        .and(warp::delete())
        .and(user(s.clone()))
        .and(with(s))
        .then(|g, u, me, s| async move { reply::finish(groups::remove(me, g, u, s).await) });
    let websocket = warp::path!("ws")
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<hyper::upgrade::OnUpgrade>())
        .and(conn())
        .and(with(s))
        .map(|h, up, conn, s| reply::finish(ws::upgrade(h, up, conn, s)));
    let group_routes = new_group
        .or(my_groups)
        .unify()
        .or(group)
        .unify()
        .or(rename_group)
        .unify()
        .or(add_member)
        .unify()
        .or(remove_member)
        .unify();
    let messenger = ask
        .or(requests)
        .unify()
        .or(accept)
        .unify()
        .or(decline)
        .unify()
        .or(unfriend)
        .unify()
        .or(block)
        .unify()
        .or(unblock)
        .unify()
        .or(blocks)
        .unify()
        .or(history)
        .unify()
        .or(conversations)
        .unify()
        .or(presence)
        .unify()
        .or(group_routes)
        .unify()
        .or(websocket)
        .unify()
        .boxed();

    let disable = warp::path!("admin" / "users" / String / "disable")
        .and(warp::post())
        .and(admin::operator(s.clone()))
        .and(with(s))
        .then(|id, s| async move { reply::finish(admin::set_disabled(id, true, s).await) });
    let enable = warp::path!("admin" / "users" / String / "enable")
        .and(warp::post())
        .and(admin::operator(s.clone()))
        .and(with(s))
        .then(|id, s| async move { reply::finish(admin::set_disabled(id, false, s).await) });
    let healthz = warp::path!("healthz").and(warp::get()).map(health::healthz);
    let openapi = warp::path!("openapi.json").and(warp::get()).map(|| {
        warp::Reply::into_response(warp::reply::with_header(
            OPENAPI,
            "content-type",
            "application/json",
        ))
    });
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with(s))
        .then(|s: Arc<AppState>| async move { health::readyz(&s).await });
    let page = warp::path::end()
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .map(|h: warp::http::HeaderMap| reply::finish(web::file(web::PAGE, &h)));
    let web_files = warp::path("web")
        .and(warp::path::tail())
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .map(|t: warp::path::Tail, h: warp::http::HeaderMap| {
            reply::finish(web::file(t.as_str(), &h))
        });
    seed.or(messenger)
        .unify()
        .or(healthz)
        .unify()
        .or(openapi)
        .unify()
        .or(readyz)
        .unify()
        .or(disable)
        .unify()
        .or(enable)
        .unify()
        .or(page)
        .unify()
        .or(web_files)
        .unify()
        .recover(|r| async move { Ok::<_, Infallible>(rejected(r)) })
        .unify()
}

/// The connection a request came on (`None` only for requests that did not come through
/// [`serve`], as in warp's test harness).
fn conn() -> impl Filter<Extract = (Option<ConnInfo>,), Error = Infallible> + Clone {
    warp::ext::optional::<ConnInfo>()
}

/// The OpenAPI document of these routes.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Answers for requests no route took: still JSON, never a 500.
fn rejected(r: warp::Rejection) -> Response {
    if let Some(e) = r.find::<reply::ApiError>() {
        return e.response();
    }
    let (status, msg) = if r.is_not_found() {
        (StatusCode::NOT_FOUND, "Not found")
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        (StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
    } else {
        (StatusCode::BAD_REQUEST, "Bad request")
    };
    reply::json(status, &serde_json::json!({ "msg": msg }))
}
