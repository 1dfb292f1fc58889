//! Who is calling, and how often: the bearer token as warp filters (so that no route can
//! forget the check), and per-key rate limits.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use warp::Filter;

use super::AppState;
use super::reply::ApiError;
use crate::auth;
use crate::config::AuthMode;
use crate::id::UserId;

/// Keys a limiter may track before it forgets the ones that are back to a full allowance, so
/// that a caller cycling through addresses or user ids cannot grow it without bound.
const MAX_TRACKED_KEYS: usize = 10_000;

/// A per-key limit of so many events per period (all of them may come at once).
pub struct Limit<K: Hash + Eq + Clone>(Option<DefaultKeyedRateLimiter<K>>);

impl<K: Hash + Eq + Clone> Limit<K> {
    /// `n` events per key and minute; 0: no limit.
    pub fn per_minute(n: u32) -> Self {
        Limit(NonZeroU32::new(n).map(|n| DefaultKeyedRateLimiter::keyed(Quota::per_minute(n))))
    }

    /// `n` events per key and hour; 0: no limit.
    pub fn per_hour(n: u32) -> Self {
        Limit(NonZeroU32::new(n).map(|n| DefaultKeyedRateLimiter::keyed(Quota::per_hour(n))))
    }

    /// Counts one event for `key`; `429` when the key is over its limit.
    pub fn check(&self, key: &K, what: &str) -> Result<(), ApiError> {
        let Some(limiter) = &self.0 else {
            return Ok(());
        };
        if limiter.len() > MAX_TRACKED_KEYS {
            limiter.retain_recent();
        }
        limiter.check_key(key).map_err(|not_until| {
            // Rounded up: a client that waits this long finds room.
            let wait = not_until.wait_time_from(limiter.clock().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            ApiError::too_many(format!("Too many {what}; retry in {secs} s"), secs)
        })
    }
}

/// The user a request speaks for, from its `Authorization: Bearer <token>` header; `None`
/// for a request without the header on a server in `--auth open` mode (the Go server's
/// routes answer those as it did). Without the header in `--auth token` mode, or with an
/// unknown, expired or revoked token in either mode: `401`.
pub fn caller(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Option<UserId>,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("authorization").and_then(move |header: Option<String>| {
        let state = state.clone();
        async move {
            match header {
                None if state.auth == AuthMode::Open => Ok(None),
                None => Err(warp::reject::custom(ApiError::unauthorized())),
                Some(header) => token_owner(&state, &header)
                    .await
                    .map(Some)
                    .map_err(warp::reject::custom),
            }
        }
    })
}

/// The user a request speaks for, in both `--auth` modes: the routes that only make sense
/// for someone (friend requests, history) always need a valid bearer token.
pub fn user(
    state: Arc<AppState>,
) -> impl Filter<Extract = (UserId,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("authorization").and_then(move |header: Option<String>| {
        let state = state.clone();
        async move {
            let header = header.ok_or_else(|| warp::reject::custom(ApiError::unauthorized()))?;
            token_owner(&state, &header)
                .await
                .map_err(warp::reject::custom)
        }
    })
}

/// The owner of the token in an `Authorization` header's value.
async fn token_owner(state: &AppState, header: &str) -> Result<UserId, ApiError> {
    let token = bearer(header).ok_or_else(ApiError::unauthorized)?;
    auth::check_token(state.store.as_ref(), token)
        .await?
        .ok_or_else(ApiError::unauthorized)
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive).
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use warp::http::StatusCode;

    use super::*;

    #[test]
    fn bearer_takes_the_token_of_a_bearer_header_only() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }

    #[test]
    fn a_limit_refuses_past_the_allowance_and_zero_means_no_limit() {
        let limit = Limit::per_minute(2);
        assert!(limit.check(&"a", "tries").is_ok());
        assert!(limit.check(&"a", "tries").is_ok());
        let e = limit.check(&"a", "tries").unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        // Two a minute: the next one in about 30 s.
        assert!(matches!(e.retry_after, Some(1..=30)), "{:?}", e.retry_after);
        assert!(limit.check(&"b", "tries").is_ok(), "keys are independent");
        let none = Limit::per_minute(0);
        assert!((0..100).all(|_| none.check(&"a", "tries").is_ok()));
        let hourly = Limit::per_hour(1);
        assert!(hourly.check(&"a", "tries").is_ok());
        let e = hourly.check(&"a", "tries").unwrap_err();
        assert!(
            matches!(e.retry_after, Some(1801..=3600)),
            "{:?}",
            e.retry_after
        );
    }
}
