//! Multi-user sharing: grants to people and groups, and collaboration (project) accounts.
//!
//! A person or a group is granted capabilities on one notebook
//! (`PUT/DELETE /api/sharing/{fileId}/people/{user|group}/{name}`, listed by `GET …/people`) by
//! anyone holding `manage` on it, never beyond what the granter holds. A project is a local
//! account registered by the administrator (the token holder) with a member list
//! (`/api/projects…`): members hold every capability on the notebooks in the project's home, and
//! those notebooks' kernels run as the project. Every change reaches open connections at once: a
//! person's rights in each room they are in are worked out afresh, and a socket whose holder may
//! no longer watch is closed.

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use collab::{Capabilities, FileId, UserName};
use kernel_bridge::Account;
use serde::Deserialize;
use serde_json::{json, Value};

use super::sharing::{file_of, CapsSpec};
use crate::access::accounts::{group_names, person_account};
use crate::access::policy::grant_applies;
use crate::access::principal::Principal;
use crate::http::error::{ApiError, ApiResult, JsonBody};
use crate::rooms::rights::recheck;
use crate::storage::{Grant, Grantee};
use crate::AppState;

/// The grantee a URL names.
fn grantee(kind: &str) -> ApiResult<Grantee> {
    Grantee::parse(kind).ok_or_else(|| {
        ApiError::bad_request(format!(
            "a grant names a \"user\" or a \"group\", not {kind:?}"
        ))
    })
}

/// A grant as the API lists it.
fn grant_json(grant: &Grant) -> Value {
    json!({
        "kind": grant.grantee.as_str(),
        "name": grant.name,
        "capabilities": grant.caps.names(),
        "granted_by": grant.granted_by,
        "created_at": grant.created_at,
    })
}

/// The requester's capabilities on a notebook; refuses those without `manage`.
pub fn manager_caps(
    state: &AppState,
    principal: &Principal,
    file: FileId,
) -> ApiResult<Capabilities> {
    let caps = principal.current_caps_for(&state.access, file);
    if !caps.contains(Capabilities::MANAGE) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "you may not manage who can use this notebook",
        ));
    }
    Ok(caps)
}

/// A grant may give only what the granter holds.
pub fn check_within(granter: Capabilities, caps: Capabilities) -> ApiResult<()> {
    let asked = caps.effective();
    if !granter.contains(asked) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "you cannot give more than you hold ({} of {})",
                granter.names().join(", "),
                asked.names().join(", ")
            ),
        ));
    }
    Ok(())
}

pub async fn list_people(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    UrlPath(file_id): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    let file = file_of(&state, &file_id)?;
    manager_caps(&state, &principal, file)?;
    let grants = state
        .store
        .grants_on(file)
        .map_err(|e| ApiError::internal("cannot list the people", e))?;
    Ok(Json(Value::Array(grants.iter().map(grant_json).collect())))
}

/// Invites a person or group, or changes their capabilities.
pub async fn set_person(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    UrlPath((file_id, kind, name)): UrlPath<(String, String, String)>,
    JsonBody(body): JsonBody<CapsSpec>,
) -> ApiResult<Response> {
    let file = file_of(&state, &file_id)?;
    let kind = grantee(&kind)?;
    let granter = manager_caps(&state, &principal, file)?;
    let caps = body.resolve()?;
    check_within(granter, caps)?;
    match kind {
        Grantee::User => {
            person_account(&name)?;
        }
        Grantee::Group => {
            if !matches!(nix::unistd::Group::from_name(&name), Ok(Some(_))) {
                return Err(ApiError::not_found(format!(
                    "no local group named {name:?}"
                )));
            }
        }
    }
    if let Some(previous) = grant_of(&state, file, kind, &name)? {
        check_within(granter, previous)?;
    }
    let by = principal.username(&state.access);
    let created = state
        .store
        .set_grant(file, kind, &name, caps, &by)
        .map_err(|e| ApiError::internal("cannot store the grant", e))?;
    let action = if created { "invited" } else { "grant_changed" };
    state.store.audit(
        &by,
        action,
        &file.to_string(),
        &format!("{} {name} now {}", kind.as_str(), caps.names().join(",")),
    );
    recheck(&state, Some(file), None).await;
    let body = json!({"kind": kind.as_str(), "name": name, "capabilities": caps.names()});
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(body)).into_response())
}

fn grant_of(
    state: &AppState,
    file: FileId,
    kind: Grantee,
    name: &str,
) -> ApiResult<Option<Capabilities>> {
    state
        .store
        .grant(file, kind, name)
        .map_err(|e| ApiError::internal("cannot read the grant", e))
}

pub async fn revoke_person(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    UrlPath((file_id, kind, name)): UrlPath<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let file = file_of(&state, &file_id)?;
    let kind = grantee(&kind)?;
    let granter = manager_caps(&state, &principal, file)?;
    let Some(previous) = grant_of(&state, file, kind, &name)? else {
        return Err(ApiError::not_found(format!(
            "{} {name} has no grant on this notebook",
            kind.as_str()
        )));
    };
    check_within(granter, previous)?;
    state
        .store
        .remove_grant(file, kind, &name)
        .map_err(|e| ApiError::internal("cannot remove the grant", e))?;
    state.store.audit(
        &principal.username(&state.access),
        "revoked",
        &file.to_string(),
        &format!("{} {name}", kind.as_str()),
    );
    recheck(&state, Some(file), None).await;
    Ok(StatusCode::NO_CONTENT)
}

fn admin_only(principal: &Principal) -> ApiResult<()> {
    match principal {
        Principal::Owner => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "only the server's administrator manages projects",
        )),
    }
}

fn db_error(e: crate::storage::Error) -> ApiError {
    ApiError::internal("cannot read or change the projects", e)
}

fn project_model(state: &AppState, name: &str) -> ApiResult<Value> {
    let members = state.store.members(name).map_err(db_error)?;
    Ok(json!({"name": name, "members": members}))
}

/// The projects: all for the administrator, a person's own for them.
pub async fn list_projects(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<Json<Value>> {
    let mut all = Vec::new();
    for name in state.store.projects().map_err(db_error)? {
        let visible = match &principal {
            Principal::Owner => true,
            Principal::User(user) => state
                .store
                .is_member(&name, &user.username)
                .map_err(db_error)?,
            Principal::Guest(_) => false,
        };
        if visible {
            all.push(project_model(&state, &name)?);
        }
    }
    Ok(Json(Value::Array(all)))
}

#[derive(Deserialize)]
pub struct NewProject {
    name: String,
}

/// Registers a local account as a collaboration account.
pub async fn create_project(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonBody(body): JsonBody<NewProject>,
) -> ApiResult<Response> {
    admin_only(&principal)?;
    let account = person_account(&body.name)?;
    if !account.home.is_dir() {
        return Err(ApiError::bad_request(format!(
            "the account {} has no home directory to keep notebooks in",
            body.name
        )));
    }
    let created = state.store.add_project(&body.name).map_err(db_error)?;
    state.store.audit(
        &principal.username(&state.access),
        "project_created",
        &body.name,
        "",
    );
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(project_model(&state, &body.name)?)).into_response())
}

fn existing_project(state: &AppState, name: &str) -> ApiResult<()> {
    if state.store.is_project(name).map_err(db_error)? {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no project named {name:?}")))
    }
}

pub async fn delete_project(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<StatusCode> {
    admin_only(&principal)?;
    existing_project(&state, &name)?;
    let members = state.store.remove_project(&name).map_err(db_error)?;
    state.store.audit(
        &principal.username(&state.access),
        "project_removed",
        &name,
        "",
    );
    for member in members {
        recheck(&state, None, Some(&member)).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

pub async fn add_member(
    state: State<AppState>,
    principal: Extension<Principal>,
    names: UrlPath<(String, UserName)>,
) -> ApiResult<StatusCode> {
    set_membership(state, principal, names, true).await
}

pub async fn remove_member(
    state: State<AppState>,
    principal: Extension<Principal>,
    names: UrlPath<(String, UserName)>,
) -> ApiResult<StatusCode> {
    set_membership(state, principal, names, false).await
}

/// Adds a person to a project or removes them; their open sockets learn of it at once.
async fn set_membership(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    UrlPath((name, username)): UrlPath<(String, UserName)>,
    member: bool,
) -> ApiResult<StatusCode> {
    admin_only(&principal)?;
    existing_project(&state, &name)?;
    if member {
        person_account(username.as_str())?;
        if username.as_str() == name {
            return Err(ApiError::bad_request("a project is not a member of itself"));
        }
    }
    let changed = state
        .store
        .set_member(&name, &username, member)
        .map_err(db_error)?;
    if !member && !changed {
        return Err(ApiError::not_found(format!(
            "{username} is not a member of {name}"
        )));
    }
    let action = if member {
        "member_added"
    } else {
        "member_removed"
    };
    state.store.audit(
        &principal.username(&state.access),
        action,
        &name,
        username.as_str(),
    );
    recheck(&state, None, Some(&username)).await;
    Ok(StatusCode::NO_CONTENT)
}

/// A notebook as the app lists it: its id, name, path in its owner's space, its owner, and what
/// the requester may do with it.
pub fn notebook_info(state: &AppState, principal: &Principal, file: FileId) -> Option<Value> {
    let caps = principal.current_caps_for(&state.access, file);
    if !caps.contains(Capabilities::VIEW) {
        return None;
    }
    let store_path = state
        .store
        .path_for_id(state.spaces.store_root(), file)
        .ok()??;
    let space = state.spaces.space_of(&store_path).ok()?;
    let path = space.api_path(&store_path).unwrap_or(store_path);
    Some(json!({
        "file_id": file.to_string(),
        "name": path.rsplit('/').next().unwrap_or_default(),
        "path": path,
        "owner": space.owner_name(),
        "capabilities": caps.names(),
    }))
}

/// `GET /api/shared`: the notebooks others share with the requester by grant.
pub async fn shared_with_me(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<Json<Value>> {
    let Principal::User(user) = &principal else {
        return Ok(Json(Value::Array(Vec::new())));
    };
    let groups = Account::lookup(user.username.as_str())
        .map(|a| group_names(&a))
        .unwrap_or_default();
    let grants = state
        .store
        .all_grants()
        .map_err(|e| ApiError::internal("cannot list what is shared with you", e))?;
    let mut files: Vec<FileId> = Vec::new();
    for grant in grants {
        if grant_applies(&grant, &user.username, &groups) && !files.contains(&grant.file) {
            files.push(grant.file);
        }
    }
    let listed = files
        .into_iter()
        .filter_map(|file| notebook_info(&state, &principal, file))
        .collect();
    Ok(Json(Value::Array(listed)))
}

/// `GET /api/notebooks/{fileId}`: one notebook's name, place and the requester's rights.
pub async fn notebook(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    UrlPath(file_id): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    FileId::parse(&file_id)
        .and_then(|file| notebook_info(&state, &principal, file))
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no notebook with this id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(names: &[&str]) -> Capabilities {
        Capabilities::parse(names).unwrap()
    }

    #[test]
    fn a_grant_gives_only_what_the_granter_holds() {
        let role = |name| Capabilities::role(name).unwrap();
        let table = [
            // (the granter holds, the grant gives, allowed)
            (Capabilities::ALL, role("runner"), true),
            (Capabilities::ALL, Capabilities::ALL, true),
            (
                role("editor").union(caps(&["manage"])),
                role("viewer"),
                true,
            ),
            (
                role("editor").union(caps(&["manage"])),
                role("editor"),
                true,
            ),
            (
                role("editor").union(caps(&["manage"])),
                role("runner"),
                false,
            ),
            // What a grant implies counts: `edit` alone gives `watch` and `view` too.
            (caps(&["edit", "manage"]), caps(&["edit"]), false),
            (
                caps(&["view", "watch", "edit", "manage"]),
                caps(&["edit"]),
                true,
            ),
        ];
        for (granter, given, allowed) in table {
            let verdict = check_within(granter, given);
            assert_eq!(verdict.is_ok(), allowed, "{granter:?} giving {given:?}");
            if let Err(refusal) = verdict {
                assert_eq!(refusal.status, StatusCode::FORBIDDEN);
                assert!(refusal
                    .message
                    .starts_with("you cannot give more than you hold"));
            }
        }
    }
}
