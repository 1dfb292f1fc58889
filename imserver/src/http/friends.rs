//! Friend lists: `/list/{id}`.

use std::sync::Arc;

use serde::Serialize;

use super::reply::{ApiError, ApiResult, ok};
use super::{AppState, parse_id};

#[derive(Serialize)]
struct Friend {
    user: String,
    name: String,
}

pub async fn list(id: String, state: Arc<AppState>) -> ApiResult {
    let id = parse_id(&id).ok_or_else(ApiError::out_of_range)?;
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
