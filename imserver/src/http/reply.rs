//! JSON replies and the API's error type. Every response body is JSON.

use serde::Serialize;
use warp::http::StatusCode;
use warp::http::header::{HeaderValue, RETRY_AFTER};
use warp::reply::Response;

use crate::store::StoreError;

/// An error answered as `{"msg": …}` with a status code. It is also a warp rejection, so
/// that a filter (the bearer check, say) can answer with it.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub msg: String,
    /// Seconds after which a refused request may succeed, sent as `Retry-After` (a `429`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        ApiError {
            status,
            msg: msg.into(),
            retry_after: None,
        }
    }

    /// `429`: over a rate limit, with room again in `secs` seconds.
    pub fn too_many(msg: impl Into<String>, secs: u64) -> Self {
        ApiError {
            retry_after: Some(secs),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, msg)
        }
    }

    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg)
    }

    /// No valid bearer token.
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized")
    }

    /// A valid token, but not for this.
    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden")
    }

    /// `403` with a reason.
    pub fn forbidden_because(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, msg)
    }

    /// The Go server's answer for an unknown or malformed user id.
    pub fn out_of_range() -> Self {
        Self::bad_request("Out of range")
    }

    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, msg)
    }
}

impl warp::reject::Reject for ApiError {}

impl From<crate::store::SocialError> for ApiError {
    fn from(e: crate::store::SocialError) -> Self {
        use crate::store::SocialError::*;
        match e {
            NoSuchRequest | NotFriends | NotBlocked => Self::not_found(e.to_string()),
            Yourself | YouBlockThem => Self::bad_request(e.to_string()),
        }
    }
}

impl From<crate::store::GroupError> for ApiError {
    fn from(e: crate::store::GroupError) -> Self {
        use crate::store::GroupError::*;
        match e {
            NoSuchGroup | NoSuchMember => Self::not_found(e.to_string()),
            NotMember => Self::forbidden(),
            NotOwner => Self::new(StatusCode::FORBIDDEN, e.to_string()),
            TooMany(_) | BadName | UnknownUsers(_) => Self::bad_request(e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure while serving HTTP");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error")
    }
}

impl From<crate::auth::HashError> for ApiError {
    fn from(e: crate::auth::HashError) -> Self {
        tracing::error!(error = %e, "password hashing failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error")
    }
}

pub type ApiResult = Result<Response, ApiError>;

/// `200` with `body` as JSON.
pub fn ok<T: Serialize>(body: &T) -> ApiResult {
    Ok(json(StatusCode::OK, body))
}

pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

/// Turns a handler's result into the response.
pub fn finish(result: ApiResult) -> Response {
    result.unwrap_or_else(|e| e.response())
}

impl ApiError {
    /// The error as the response it is answered with.
    pub fn response(&self) -> Response {
        let mut reply = json(self.status, &serde_json::json!({ "msg": self.msg }));
        if let Some(secs) = self.retry_after {
            reply
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        reply
    }
}

use warp::Reply as _;
