//! The social graph: `/list/{id}` (the Go server's), friend requests, `/friends/{id}`,
//! blocks, and friends' presence. The rules themselves are in `store::social`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::reply::{ApiError, ApiResult, ok};
use super::users::existing_user;
use super::{AppState, parse_id};
use crate::id::UserId;
use crate::store::{FriendRequest, RequestOutcome};

/// The longest friend request message, in characters.
pub const MAX_REQUEST_MESSAGE_CHARS: usize = 500;

#[derive(Serialize)]
struct Friend {
    user: UserId,
    name: String,
}

fn friends(list: Vec<(UserId, String)>) -> Vec<Friend> {
    list.into_iter()
        .map(|(user, name)| Friend { user, name })
        .collect()
}

/// Only your own list (`403` for another user's), unless the server runs `--auth open` and
/// the request carries no token.
pub async fn list(id: String, caller: Option<UserId>, state: Arc<AppState>) -> ApiResult {
    let id = parse_id(&id)?;
    if caller.is_some_and(|c| c != id) {
        return Err(ApiError::forbidden());
    }
    let list = state
        .store
        .friends(id)
        .await?
        .ok_or_else(ApiError::out_of_range)?;
    ok(&friends(list))
}

#[derive(Deserialize)]
pub struct Ask {
    user: String,
    #[serde(default)]
    message: Option<String>,
}

/// `POST /friends/requests`: pending, or accepted when they had asked us first.
pub async fn request(me: UserId, body: Result<Ask, ApiError>, state: Arc<AppState>) -> ApiResult {
    state.friend_request_limit.check(&me, "friend requests")?;
    let ask = body?;
    let message = ask.message.unwrap_or_default();
    if message.chars().count() > MAX_REQUEST_MESSAGE_CHARS {
        return Err(ApiError::bad_request(format!(
            "field `message` is over {MAX_REQUEST_MESSAGE_CHARS} characters"
        )));
    }
    let to = existing_user(&state, &ask.user).await?.id;
    if to == me {
        return Err(ApiError::bad_request(
            "You cannot send a friend request to yourself",
        ));
    }
    let status = match state.store.request_friend(me, to, message).await?? {
        RequestOutcome::Pending => "pending",
        RequestOutcome::Accepted => "accepted",
    };
    ok(&serde_json::json!({ "status": status }))
}

#[derive(Serialize)]
struct Request {
    user: UserId,
    name: String,
    message: String,
    at: i64,
}

fn requests_json(list: Vec<FriendRequest>) -> Vec<Request> {
    list.into_iter()
        .map(|r| Request {
            user: r.user,
            name: r.name,
            message: r.message,
            at: r.at,
        })
        .collect()
}

/// `GET /friends/requests`: pending requests both ways, newest first.
pub async fn requests(me: UserId, state: Arc<AppState>) -> ApiResult {
    let r = state.store.friend_requests(me).await?;
    ok(&serde_json::json!({
        "incoming": requests_json(r.incoming),
        "outgoing": requests_json(r.outgoing),
    }))
}

/// `POST /friends/requests/{id}/accept` and `/decline`.
pub async fn answer(me: UserId, from: String, accept: bool, state: Arc<AppState>) -> ApiResult {
    let from = parse_id(&from)?;
    state.store.answer_request(me, from, accept).await??;
    let status = if accept { "accepted" } else { "declined" };
    ok(&serde_json::json!({ "status": status }))
}

/// `DELETE /friends/{id}`: no longer friends, on both sides.
pub async fn unfriend(me: UserId, them: String, state: Arc<AppState>) -> ApiResult {
    let them = existing_user(&state, &them).await?.id;
    state.store.unfriend(me, them).await??;
    ok(&serde_json::json!({ "msg": "Removed" }))
}

/// `POST /blocks/{id}`.
pub async fn block(me: UserId, them: String, state: Arc<AppState>) -> ApiResult {
    let them = existing_user(&state, &them).await?.id;
    state.store.block(me, them).await??;
    ok(&serde_json::json!({ "msg": "Blocked" }))
}

/// `DELETE /blocks/{id}`.
pub async fn unblock(me: UserId, them: String, state: Arc<AppState>) -> ApiResult {
    let them = existing_user(&state, &them).await?.id;
    state.store.unblock(me, them).await??;
    ok(&serde_json::json!({ "msg": "Unblocked" }))
}

/// `GET /presence/{id}`: whether a friend (or the caller) is online, and when they were last
/// seen (now, if online); `403` for anyone else.
pub async fn presence(me: UserId, id: String, state: Arc<AppState>) -> ApiResult {
    let them = existing_user(&state, &id).await?.id;
    if them != me {
        let friends = state.store.friends(me).await?.unwrap_or_default();
        if !friends.iter().any(|(f, _)| *f == them) {
            return Err(ApiError::forbidden());
        }
    }
    let (online, last_seen) = state.presence.of(them).await?;
    ok(&serde_json::json!({ "online": online, "lastSeen": last_seen }))
}

/// `GET /blocks`.
pub async fn blocks(me: UserId, state: Arc<AppState>) -> ApiResult {
    ok(&friends(state.store.blocks(me).await?))
}
