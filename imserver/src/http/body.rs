//! Request bodies: JSON (also without a Content-Type, or as `text/plain`, as the Go server
//! accepted) or `application/x-www-form-urlencoded`, capped at `--max-body-bytes`. A body
//! starting with `{` is read as JSON whatever its Content-Type says.
//!
//! The cap is enforced on the bytes actually received, so chunked bodies without a
//! Content-Length are capped too (warp's `content_length_limit` would refuse those with 411).

use bytes::{Buf, BufMut, BytesMut};
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use warp::Filter;
use warp::http::StatusCode;

use super::reply::ApiError;

/// Extracts the body as a `T`, or the error to answer with.
pub fn parsed<T: DeserializeOwned + Send>(
    limit: usize,
) -> impl Filter<Extract = (Result<T, ApiError>,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .then(
            move |ctype: Option<String>, declared: Option<u64>, body| async move {
                if declared.is_some_and(|n| n > limit as u64) {
                    return Err(too_large(limit));
                }
                let bytes = read_capped(body, limit).await?;
                decode(ctype.as_deref(), &bytes)
            },
        )
}

async fn read_capped<B: Buf>(
    body: impl Stream<Item = Result<B, warp::Error>>,
    limit: usize,
) -> Result<BytesMut, ApiError> {
    let mut body = std::pin::pin!(body);
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("could not read the body: {e}")))?;
        if buf.len() + chunk.remaining() > limit {
            return Err(too_large(limit));
        }
        buf.put(chunk);
    }
    Ok(buf)
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body over {limit} bytes"),
    )
}

fn decode<T: DeserializeOwned>(ctype: Option<&str>, bytes: &[u8]) -> Result<T, ApiError> {
    // A body that starts with `{` is JSON whatever its label: clients (and `curl -d`) send
    // JSON labelled as a form, and no form body starts with a brace.
    let looks_like_json = bytes.trim_ascii_start().first() == Some(&b'{');
    let is_form = !looks_like_json
        && ctype.is_some_and(|c| {
            c.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if is_form {
        let invalid = |e: serde_urlencoded::de::Error| {
            ApiError::bad_request(format!("invalid form body: {e}"))
        };
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(bytes).map_err(invalid)?;
        if pairs
            .iter()
            .any(|(k, v)| k.contains('\0') || v.contains('\0'))
        {
            return Err(nul());
        }
        serde_urlencoded::from_bytes(bytes).map_err(invalid)
    } else if bytes.iter().all(u8::is_ascii_whitespace) {
        Err(ApiError::bad_request("empty body: expected a JSON object"))
    } else {
        let invalid = |e: serde_json::Error| {
            ApiError::bad_request(format!(
                "invalid JSON body: {}",
                strip_position(&e.to_string())
            ))
        };
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(invalid)?;
        if has_nul(&value) {
            return Err(nul());
        }
        T::deserialize(value).map_err(invalid)
    }
}

/// Text with the NUL character is refused everywhere: no name or message needs it, and
/// PostgreSQL cannot store it in text.
fn nul() -> ApiError {
    ApiError::bad_request("text must not contain the NUL character (\\u0000)")
}

fn has_nul(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(fields) => fields.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// serde_json ends messages with " at line L column C", which helps nobody here.
fn strip_position(msg: &str) -> &str {
    msg.rfind(" at line ").map_or(msg, |i| &msg[..i])
}

/// Fails with "field `name` must not be empty" for the first empty one.
pub fn non_empty(fields: &[(&str, &str)]) -> Result<(), ApiError> {
    match fields.iter().find(|(_, v)| v.is_empty()) {
        Some((name, _)) => Err(ApiError::bad_request(format!(
            "field `{name}` must not be empty"
        ))),
        None => Ok(()),
    }
}
