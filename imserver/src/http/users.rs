//! Accounts: `/regist`, `/login`, `/profile/{id}`, `/username/{id}`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::reply::{ApiError, ApiResult, ok};
use super::{AppState, body, parse_id};
use crate::auth;
use crate::store::{Account, User};

/// A profile as the API shows it: never the password or its hash.
#[derive(Serialize)]
pub struct Profile<'a> {
    /// The id as a decimal string, as clients of the Go server expect.
    user: String,
    name: &'a str,
    sex: &'a str,
    email: &'a str,
    signature: &'a str,
}

impl<'a> From<&'a User> for Profile<'a> {
    fn from(u: &'a User) -> Self {
        let a = &u.account;
        Profile {
            user: u.id.to_string(),
            name: &a.name,
            sex: &a.sex,
            email: &a.email,
            signature: &a.signature,
        }
    }
}

/// The user `id` names, or `400 Out of range` for a malformed or unknown id.
async fn existing_user(state: &AppState, id: &str) -> Result<User, ApiError> {
    let id = parse_id(id).ok_or_else(ApiError::out_of_range)?;
    state
        .store
        .user(id)
        .await?
        .ok_or_else(ApiError::out_of_range)
}

pub async fn profile(id: String, state: Arc<AppState>) -> ApiResult {
    let user = existing_user(&state, &id).await?;
    ok(&Profile::from(&user))
}

pub async fn username(id: String, state: Arc<AppState>) -> ApiResult {
    let user = existing_user(&state, &id).await?;
    ok(&serde_json::json!({ "name": user.account.name }))
}

#[derive(Deserialize)]
pub struct Login {
    user: String,
    password: String,
}

pub async fn login(body: Result<Login, ApiError>, state: Arc<AppState>) -> ApiResult {
    let login = body?;
    let user = existing_user(&state, &login.user).await?;
    if !auth::verify_password(login.password, user.account.password_hash.clone()).await {
        return Err(ApiError::bad_request("Wrong userID or password"));
    }
    tracing::info!(user = user.id, "login");
    ok(&Profile::from(&user))
}

#[derive(Deserialize)]
pub struct Regist {
    password: String,
    name: String,
    sex: String,
    email: String,
    signature: String,
}

pub async fn regist(body: Result<Regist, ApiError>, state: Arc<AppState>) -> ApiResult {
    let r = body?;
    body::non_empty(&[
        ("password", &r.password),
        ("name", &r.name),
        ("sex", &r.sex),
        ("email", &r.email),
        ("signature", &r.signature),
    ])?;
    let account = Account {
        password_hash: auth::hash_password(r.password).await?,
        name: r.name,
        sex: r.sex,
        email: r.email,
        signature: r.signature,
    };
    let id = state
        .store
        .create_user(None, account.clone())
        .await?
        .expect("a user without a chosen id is always created");
    tracing::info!(user = id, "registered a new account");
    ok(&Profile::from(&User { id, account }))
}
