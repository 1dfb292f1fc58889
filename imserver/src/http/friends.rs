//! Friend lists: `/list/{id}`.

use std::sync::Arc;

use serde::Serialize;

use super::reply::{ApiError, ApiResult, ok};
use super::{AppState, guard, parse_id};

#[derive(Serialize)]
struct Friend {
    user: String,
    name: String,
}

/// Only your own list (`403` for another user's), unless the server runs `--auth open` and
/// the request carries no token.
pub async fn list(id: String, token: Option<String>, state: Arc<AppState>) -> ApiResult {
    let caller = guard::caller(&state, token.as_deref()).await?;
    let id = parse_id(&id).ok_or_else(ApiError::out_of_range)?;
    if caller.is_some_and(|c| c != id) {
        return Err(ApiError::forbidden());
    }
    let friends = state
        .store
        .friends(id)
        .await?
        .ok_or_else(ApiError::out_of_range)?;
    let friends: Vec<Friend> = friends
        .into_iter()
        .map(|(id, name)| Friend {
            user: id.to_string(),
            name,
        })
        .collect();
    ok(&friends)
}
