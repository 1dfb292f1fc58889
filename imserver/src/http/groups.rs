//! Groups: `/groups` (make one, list mine), `/groups/{gid}` (see, rename) and
//! `/groups/{gid}/members` (add, remove, leave). The rules themselves are in `store::groups`;
//! every change is an event in the affected members' streams.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::AppState;
use super::reply::{ApiError, ApiResult, ok};
use super::users::existing_user;
use crate::id::{GroupId, UserId};
use crate::store::groups;
use crate::store::{Group, GroupError};

/// A group as the API shows it to a member.
#[derive(Serialize)]
struct View {
    group: GroupId,
    name: String,
    owner: UserId,
    members: Vec<Member>,
}

#[derive(Serialize)]
struct Member {
    user: UserId,
    name: String,
}

async fn view(state: &AppState, g: &Group) -> Result<View, ApiError> {
    let mut members = Vec::with_capacity(g.members.len());
    for &user in &g.members {
        let name = state.store.user(user).await?.map(|u| u.account.name);
        members.push(Member {
            user,
            name: name.unwrap_or_default(),
        });
    }
    Ok(View {
        group: g.id,
        name: g.name.clone(),
        owner: g.owner,
        members,
    })
}

/// A group id from a path: `400 Out of range` unless it is one (`g12`).
fn parse_group(s: &str) -> Result<GroupId, ApiError> {
    GroupId::parse(s).map_err(|_| ApiError::out_of_range())
}

/// Group `id` as `me`, a member, sees it: `404` when there is none, `403` for others.
async fn visible(state: &AppState, me: UserId, id: &str) -> Result<Arc<Group>, ApiError> {
    let g = state
        .store
        .group(parse_group(id)?)
        .await?
        .ok_or(GroupError::NoSuchGroup)?;
    groups::visible_to(&g, me)?;
    Ok(g)
}

/// The group as it stands after a change, for the answer.
async fn after(state: &AppState, me: UserId, id: GroupId) -> ApiResult {
    let g = visible(state, me, &id.to_string()).await?;
    ok(&view(state, &g).await?)
}

#[derive(Deserialize)]
pub struct NewGroup {
    name: String,
    #[serde(default)]
    members: Vec<String>,
}

/// `POST /groups`: the caller owns the new group and is a member of it.
pub async fn create(
    me: UserId,
    body: Result<NewGroup, ApiError>,
    state: Arc<AppState>,
) -> ApiResult {
    let body = body?;
    let name = groups::name(&body.name)?;
    let mut members = Vec::with_capacity(body.members.len());
    for m in &body.members {
        let id = UserId::parse(m).map_err(|e| ApiError::bad_request(e.to_string()))?;
        members.push(id);
    }
    let id = state
        .store
        .create_group(me, name, members, state.max_group_members)
        .await??;
    after(&state, me, id).await
}

/// `GET /groups`: the caller's groups, oldest first.
pub async fn mine(me: UserId, state: Arc<AppState>) -> ApiResult {
    let mut out = Vec::new();
    for id in state.store.groups_of(me).await? {
        // A group can go between the two reads (its last member left).
        if let Some(g) = state.store.group(id).await?
            && g.has(me)
        {
            out.push(view(&state, &g).await?);
        }
    }
    ok(&out)
}

/// `GET /groups/{gid}`: to members only.
pub async fn show(me: UserId, id: String, state: Arc<AppState>) -> ApiResult {
    let g = visible(&state, me, &id).await?;
    ok(&view(&state, &g).await?)
}

#[derive(Deserialize)]
pub struct NewMember {
    user: String,
}

/// `POST /groups/{gid}/members`: the owner adds someone.
pub async fn add(
    me: UserId,
    id: String,
    body: Result<NewMember, ApiError>,
    state: Arc<AppState>,
) -> ApiResult {
    let g = parse_group(&id)?;
    let user = existing_user(&state, &body?.user).await?.id;
    let max = state.max_group_members;
    state.store.add_member(me, g, user, max).await??;
    after(&state, me, g).await
}

/// `DELETE /groups/{gid}/members/{uid}`: the owner removes someone, or anyone leaves.
pub async fn remove(me: UserId, id: String, user: String, state: Arc<AppState>) -> ApiResult {
    let g = parse_group(&id)?;
    let user = super::parse_id(&user)?;
    state.store.remove_member(me, g, user).await??;
    let msg = if user == me { "Left" } else { "Removed" };
    ok(&serde_json::json!({ "msg": msg }))
}

#[derive(Deserialize)]
pub struct Rename {
    name: String,
}

/// `PATCH /groups/{gid}`: the owner renames it.
pub async fn rename(
    me: UserId,
    id: String,
    body: Result<Rename, ApiError>,
    state: Arc<AppState>,
) -> ApiResult {
    let g = parse_group(&id)?;
    let name = groups::name(&body?.name)?;
    state.store.rename_group(me, g, name).await??;
    after(&state, me, g).await
}
