//! Who is calling, and how often: bearer tokens and the per-IP and per-user rate limits.

use std::hash::Hash;
use std::num::NonZeroU32;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};

use super::AppState;
use super::reply::ApiError;
use crate::auth;
use crate::config::AuthMode;
use crate::store::UserId;

/// Keys a limiter may track before it forgets the ones that are back to a full allowance, so
/// that a caller cycling through addresses or user ids cannot grow it without bound.
const MAX_TRACKED_KEYS: usize = 10_000;

/// A per-key limit of so many events per minute (all of them may come at once).
pub struct PerMinute<K: Hash + Eq + Clone>(Option<DefaultKeyedRateLimiter<K>>);

impl<K: Hash + Eq + Clone> PerMinute<K> {
    /// `per_minute` events per key and minute; 0: no limit.
    pub fn new(per_minute: u32) -> Self {
        PerMinute(
            NonZeroU32::new(per_minute)
                .map(|n| DefaultKeyedRateLimiter::keyed(Quota::per_minute(n))),
        )
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

/// The user a request speaks for, from its `Authorization: Bearer <token>` header.
///
/// Without the header: `401` in `--auth token` mode, nobody (`None`) in `--auth open` mode.
/// A header with an unknown, expired or revoked token is `401` in both modes.
pub async fn caller(
    state: &AppState,
    authorization: Option<&str>,
) -> Result<Option<UserId>, ApiError> {
    let Some(header) = authorization else {
        return match state.auth {
            AuthMode::Open => Ok(None),
            AuthMode::Token => Err(ApiError::unauthorized()),
        };
    };
    let token = bearer(header).ok_or_else(ApiError::unauthorized)?;
    auth::check_token(state.store.as_ref(), token)
        .await?
        .map(Some)
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
    fn per_minute_refuses_past_the_allowance_and_zero_means_no_limit() {
        let limit = PerMinute::new(2);
        assert!(limit.check(&"a", "tries").is_ok());
        assert!(limit.check(&"a", "tries").is_ok());
        let e = limit.check(&"a", "tries").unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        // Two a minute: the next one in about 30 s.
        assert!(matches!(e.retry_after, Some(1..=30)), "{:?}", e.retry_after);
        assert!(limit.check(&"b", "tries").is_ok(), "keys are independent");
        let none = PerMinute::new(0);
        assert!((0..100).all(|_| none.check(&"a", "tries").is_ok()));
    }
}
