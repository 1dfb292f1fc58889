//! The operators' API, behind `--admin-token`: `POST /admin/users/{id}/disable` and
//! `/enable` (what `imctl admin user disable` calls).
//!
//! Disabling an account marks it in the store, revokes every token it has (so every HTTP
//! request and `Regist` with one is refused from then on, on every route), refuses its
//! logins, and closes its live relay and WebSocket connections. Its streams, friends and
//! groups stay, for when it is enabled again.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use warp::Filter;

use super::reply::{ApiError, ApiResult, ok};
use super::{AppState, guard, parse_id};
use crate::auth;
use crate::store::TokenHash;

/// `--admin-token`, as its hash (like login tokens, the secret itself is not kept).
pub struct AdminToken(Option<TokenHash>);

impl AdminToken {
    pub fn new(secret: Option<&str>) -> Self {
        AdminToken(secret.map(auth::hash_token))
    }

    /// Whether an `Authorization` header carries the admin token, compared in constant time.
    fn admits(&self, header: Option<&str>) -> Result<(), ApiError> {
        let Some(expected) = &self.0 else {
            return Err(ApiError::forbidden_because(
                "The admin API is off: start the server with --admin-token",
            ));
        };
        let given = header
            .and_then(guard::bearer)
            .map(auth::hash_token)
            .ok_or_else(ApiError::unauthorized)?;
        if bool::from(given.ct_eq(expected)) {
            Ok(())
        } else {
            tracing::warn!("an admin request with a wrong token");
            Err(ApiError::unauthorized())
        }
    }
}

/// Passes requests that carry the admin token; others get `401` (`403` when the admin API is
/// off).
pub fn operator(
    state: Arc<AppState>,
) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and_then(move |header: Option<String>| {
            let state = state.clone();
            async move {
                state
                    .admin
                    .admits(header.as_deref())
                    .map_err(warp::reject::custom)
            }
        })
        .untuple_one()
}

/// Disables (`disabled`) or enables the account `id`.
pub async fn set_disabled(id: String, disabled: bool, state: Arc<AppState>) -> ApiResult {
    let user = parse_id(&id)?;
    if !state.store.set_disabled(user, disabled).await? {
        return Err(ApiError::not_found("No such user"));
    }
    // The tokens are gone: the connections they opened go too.
    let closed = if disabled {
        state.relay.delivery.disconnect(user)
    } else {
        0
    };
    tracing::info!(
        user = user.get(),
        disabled,
        connections_closed = closed,
        "account changed by an operator"
    );
    ok(&serde_json::json!({
        "user": user.to_string(),
        "disabled": disabled,
        "connectionsClosed": closed,
    }))
}
