//! The web chat: the files under `imserver/web/` (plain ES modules, no build step), embedded
//! in the binary and served at `/` and `/web/{file}`.
//!
//! Every file is served with its content type, an `ETag` (its SHA-256) and
//! `Cache-Control: no-cache`, so a browser keeps it and asks only whether it changed (a new
//! binary answers with the new file at once), and with a `Content-Security-Policy` that lets
//! a page load and connect to nothing but this server.

use rust_embed::Embed;
use warp::http::header::{self, HeaderValue};
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;

use super::reply::ApiError;
use crate::auth::hex;

#[derive(Embed)]
#[folder = "web/"]
struct Files;

/// Same origin only, for everything; no inline script or style, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The page itself, at `/`.
pub const PAGE: &str = "index.html";

/// The file at `path`, or `304` when the browser's copy is current.
pub fn file(path: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    let file = Files::get(path).ok_or_else(|| ApiError::not_found("Not found"))?;
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
    let current = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag));
    let mut response = if current {
        let mut r = Response::default();
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        Response::new(file.data.into_owned().into())
    };
    let h = response.headers_mut();
    let mime = file.metadata.mimetype();
    let mime = if mime.starts_with("text/") {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    };
    if let Ok(mime) = HeaderValue::from_str(&mime) {
        h.insert(header::CONTENT_TYPE, mime);
    }
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, etag);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(response)
}
