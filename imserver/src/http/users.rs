//! Accounts: `/regist`, `/login`, `/logout`, `/profile/{id}`, `/username/{id}`.

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::reply::{ApiError, ApiResult, ok};
use super::{AppState, body, guard, parse_id};
use crate::auth;
use crate::id::UserId;
use crate::store::{Account, User};

/// A profile as the API shows it: never the password or its hash.
#[derive(Serialize)]
pub struct Profile<'a> {
    /// The id as a decimal string, as clients of the Go server expect.
    user: String,
    name: &'a str,
    sex: &'a str,
    /// Absent (not null) in another user's profile unless the two are friends.
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    signature: &'a str,
}

impl<'a> From<&'a User> for Profile<'a> {
    fn from(u: &'a User) -> Self {
        let a = &u.account;
        Profile {
            user: u.id.to_string(),
            name: &a.name,
            sex: &a.sex,
            email: Some(&a.email),
            signature: &a.signature,
        }
    }
}

/// The user `id` names, or `400 Out of range` for a malformed or unknown id.
pub(super) async fn existing_user(state: &AppState, id: &str) -> Result<User, ApiError> {
    let id = parse_id(id)?;
    state
        .store
        .user(id)
        .await?
        .ok_or_else(ApiError::out_of_range)
}

/// A profile; another user's email only for their friends (or for anybody in `--auth open`
/// mode when the request carries no token, as the Go server did).
pub async fn profile(id: String, caller: Option<UserId>, state: Arc<AppState>) -> ApiResult {
    let user = existing_user(&state, &id).await?;
    let mut profile = Profile::from(&user);
    if let Some(caller) = caller
        && caller != user.id
    {
        let friends = state.store.friends(caller).await?.unwrap_or_default();
        if !friends.iter().any(|(f, _)| *f == user.id) {
            profile.email = None;
        }
    }
    ok(&profile)
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

/// `/login`'s answer: the profile, plus a token for the relay and the other routes.
#[derive(Serialize)]
struct LoggedIn<'a> {
    #[serde(flatten)]
    profile: Profile<'a>,
    token: String,
    /// When the token expires, in Unix seconds.
    #[serde(rename = "expiresAt")]
    expires_at: i64,
}

/// Checks the password (attempts per user are limited, so it cannot be guessed at speed)
/// and issues a token.
pub async fn login(body: Result<Login, ApiError>, state: Arc<AppState>) -> ApiResult {
    let login = body?;
    if let Ok(id) = parse_id(&login.user) {
        state.login_limit.check(&id, "login attempts")?;
    }
    let user = existing_user(&state, &login.user).await?;
    if !state
        .hashers
        .verify(login.password, user.account.password_hash.clone())
        .await
    {
        tracing::info!(user = user.id.get(), "login failed: wrong password");
        return Err(ApiError::bad_request("Wrong userID or password"));
    }
    // Only once the password is right is a disabled account told apart from a wrong
    // password: the store refuses its token (a login racing the disable as well).
    let token = auth::issue_token(state.store.as_ref(), user.id, state.token_ttl)
        .await?
        .ok_or_else(|| {
            tracing::info!(
                user = user.id.get(),
                "login refused: the account is disabled"
            );
            ApiError::forbidden_because("Account disabled")
        })?;
    tracing::info!(user = user.id.get(), "login");
    ok(&LoggedIn {
        profile: Profile::from(&user),
        token: token.secret,
        expires_at: token.expires_at,
    })
}

/// Revokes the token the request carries (only that one); `401` without a valid one.
pub async fn logout(token: Option<String>, state: Arc<AppState>) -> ApiResult {
    let token = token
        .as_deref()
        .and_then(guard::bearer)
        .ok_or_else(ApiError::unauthorized)?;
    if !auth::revoke_token(state.store.as_ref(), token).await? {
        return Err(ApiError::unauthorized());
    }
    ok(&serde_json::json!({ "msg": "Logged out" }))
}

#[derive(Deserialize)]
pub struct Regist {
    password: String,
    name: String,
    sex: String,
    email: String,
    signature: String,
}

/// Creates an account; accounts per client IP address and minute are limited.
pub async fn regist(
    body: Result<Regist, ApiError>,
    ip: Option<IpAddr>,
    state: Arc<AppState>,
) -> ApiResult {
    if let Some(ip) = ip {
        state.regist_limit.check(&ip, "registrations")?;
    }
    let r = body?;
    body::non_empty(&[
        ("password", &r.password),
        ("name", &r.name),
        ("sex", &r.sex),
        ("email", &r.email),
        ("signature", &r.signature),
    ])?;
    let account = Account {
        password_hash: state.hashers.hash(r.password).await?,
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
    tracing::info!(user = id.get(), "registered a new account");
    ok(&Profile::from(&User { id, account }))
}
