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
use collab::{Capabilities, FileId, GrantSource, RoomInput};
use kernel_bridge::Account;
use rusqlite::{params, OptionalExtension};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::error::{ApiError, ApiResult, JsonBody};
use crate::api::sharing::{CapsSpec, Principal};
use crate::fs::space::FIRST_PERSON_UID;
use crate::storage::{now_secs, Store};
use crate::AppState;

/// Whom a grant names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grantee {
    User,
    Group,
}

impl Grantee {
    fn parse(kind: &str) -> ApiResult<Grantee> {
        match kind {
            "user" => Ok(Grantee::User),
            "group" => Ok(Grantee::Group),
            other => Err(ApiError::bad_request(format!(
                "a grant names a \"user\" or a \"group\", not {other:?}"
            ))),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Grantee::User => "user",
            Grantee::Group => "group",
        }
    }
}

impl Store {
    /// Gives (or changes) a grant; whether it is new.
    pub fn set_grant(
        &self,
        file: FileId,
        kind: Grantee,
        name: &str,
        caps: Capabilities,
        by: &str,
    ) -> rusqlite::Result<bool> {
        let db = self.db();
        let changed = db.execute(
            "UPDATE grants SET caps = ?1, granted_by = ?2 WHERE file_id = ?3 AND kind = ?4 AND name = ?5",
            params![caps.bits(), by, file.to_string(), kind.as_str(), name],
        )?;
        if changed == 1 {
            return Ok(false);
        }
        db.execute(
            "INSERT INTO grants (file_id, kind, name, caps, granted_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                file.to_string(),
                kind.as_str(),
                name,
                caps.bits(),
                by,
                now_secs()
            ],
        )?;
        Ok(true)
    }

    pub fn grant(
        &self,
        file: FileId,
        kind: Grantee,
        name: &str,
    ) -> rusqlite::Result<Option<Capabilities>> {
        self.db()
            .query_row(
                "SELECT caps FROM grants WHERE file_id = ?1 AND kind = ?2 AND name = ?3",
                params![file.to_string(), kind.as_str(), name],
                |row| row.get::<_, u8>(0),
            )
            .optional()
            .map(|caps| caps.map(Capabilities::from_bits))
    }

    pub fn remove_grant(&self, file: FileId, kind: Grantee, name: &str) -> rusqlite::Result<bool> {
        let removed = self.db().execute(
            "DELETE FROM grants WHERE file_id = ?1 AND kind = ?2 AND name = ?3",
            params![file.to_string(), kind.as_str(), name],
        )?;
        Ok(removed == 1)
    }

    pub fn grants_of(&self, file: FileId) -> rusqlite::Result<Vec<Value>> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT kind, name, caps, granted_by, created_at FROM grants WHERE file_id = ?1
             ORDER BY kind DESC, name",
        )?;
        let rows = stmt.query_map([file.to_string()], |row| {
            let caps = Capabilities::from_bits(row.get::<_, u8>(2)?);
            Ok(json!({
                "kind": row.get::<_, String>(0)?,
                "name": row.get::<_, String>(1)?,
                "capabilities": caps.names(),
                "granted_by": row.get::<_, String>(3)?,
                "created_at": row.get::<_, i64>(4)?,
            }))
        })?;
        rows.collect()
    }

    /// What a person is granted on a notebook, by name and through their groups.
    pub fn granted_caps(
        &self,
        file: FileId,
        username: &str,
        groups: &[String],
    ) -> rusqlite::Result<Capabilities> {
        let db = self.db();
        let mut stmt =
            db.prepare_cached("SELECT kind, name, caps FROM grants WHERE file_id = ?1")?;
        let rows = stmt.query_map([file.to_string()], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, u8>(2)?,
            ))
        })?;
        let mut caps = Capabilities::NONE;
        for row in rows {
            let (kind, name, bits) = row?;
            if grant_applies(&kind, &name, username, groups) {
                caps = caps.union(Capabilities::from_bits(bits));
            }
        }
        Ok(caps)
    }

    pub fn add_project(&self, name: &str) -> rusqlite::Result<bool> {
        let added = self.db().execute(
            "INSERT OR IGNORE INTO projects (name, created_at) VALUES (?1, ?2)",
            params![name, now_secs()],
        )?;
        Ok(added == 1)
    }

    pub fn remove_project(&self, name: &str) -> rusqlite::Result<Vec<String>> {
        let members = self.members(name)?;
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute("DELETE FROM project_members WHERE project = ?1", [name])?;
        let removed = tx.execute("DELETE FROM projects WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(if removed == 1 { members } else { Vec::new() })
    }

    pub fn is_project(&self, name: &str) -> rusqlite::Result<bool> {
        self.db()
            .query_row("SELECT 1 FROM projects WHERE name = ?1", [name], |_| Ok(()))
            .optional()
            .map(|found| found.is_some())
    }

    pub fn projects(&self) -> rusqlite::Result<Vec<String>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT name FROM projects ORDER BY name")?;
        let rows = stmt.query_map([], |row| row.get(0))?;
        rows.collect()
    }

    pub fn members(&self, project: &str) -> rusqlite::Result<Vec<String>> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT username FROM project_members WHERE project = ?1 ORDER BY username")?;
        let rows = stmt.query_map([project], |row| row.get(0))?;
        rows.collect()
    }

    pub fn is_member(&self, project: &str, username: &str) -> rusqlite::Result<bool> {
        self.db()
            .query_row(
                "SELECT 1 FROM project_members WHERE project = ?1 AND username = ?2",
                [project, username],
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
    }

    pub fn set_member(
        &self,
        project: &str,
        username: &str,
        member: bool,
    ) -> rusqlite::Result<bool> {
        let changed = if member {
            self.db().execute(
                "INSERT OR IGNORE INTO project_members (project, username, added_at) VALUES (?1, ?2, ?3)",
                params![project, username, now_secs()],
            )?
        } else {
            self.db().execute(
                "DELETE FROM project_members WHERE project = ?1 AND username = ?2",
                [project, username],
            )?
        };
        Ok(changed == 1)
    }
}

/// Whether a grant row (`kind`, `name`) names this person, directly or through a group.
fn grant_applies(kind: &str, name: &str, username: &str, groups: &[String]) -> bool {
    match kind {
        "user" => name == username,
        "group" => groups.iter().any(|g| g == name),
        _ => false,
    }
}

/// The names of an account's groups (for group grants).
pub fn group_names(account: &Account) -> Vec<String> {
    account
        .groups
        .iter()
        .filter_map(|gid| nix::unistd::Group::from_gid((*gid).into()).ok().flatten())
        .map(|g| g.name)
        .collect()
}

/// A person's local account, if `name` is one (not root, not a system account).
fn person_account(name: &str) -> ApiResult<Account> {
    match Account::lookup(name) {
        Ok(account) if account.uid >= FIRST_PERSON_UID => Ok(account),
        _ => Err(ApiError::not_found(format!(
            "no person's account named {name:?}"
        ))),
    }
}

/// What a logged-in person may do with a notebook (at this moment).
pub fn person_caps(state: &AppState, username: &str, file: FileId) -> Capabilities {
    let Ok(Some(path)) = state.store.path_for_id(state.root.path(), file) else {
        return Capabilities::NONE;
    };
    if let Some(owner) = state
        .space_of(&path)
        .ok()
        .and_then(|s| s.owner_name().map(String::from))
    {
        // Their own notebook, or their project's: everything.
        if owner == username || state.store.is_member(&owner, username).unwrap_or(false) {
            return Capabilities::ALL;
        }
    }
    let groups = Account::lookup(username)
        .map(|a| group_names(&a))
        .unwrap_or_default();
    state
        .store
        .granted_caps(file, username, &groups)
        .unwrap_or(Capabilities::NONE)
        .effective()
}

/// Works out afresh the rights of the people connected to rooms (of `file`, or all files; or
/// only `username`'s) and tells the rooms: lowered rights refuse the next write, and a person who
/// may no longer watch is disconnected.
pub async fn recheck(state: &AppState, file: Option<FileId>, username: Option<&str>) {
    for (f, user) in state.rooms.people() {
        if file.is_some_and(|x| x != f) || username.is_some_and(|u| u != user) {
            continue;
        }
        let caps = person_caps(state, &user, f);
        let caps = caps.contains(Capabilities::WATCH).then_some(caps);
        for room in state.rooms.of_file(f) {
            let source = GrantSource::Person(user.clone());
            let _ = room.send(RoomInput::Permissions { source, caps }).await;
        }
    }
}

/// The requester's capabilities on a notebook; refuses those without `manage`.
pub fn manager_caps(
    state: &AppState,
    principal: &Principal,
    file: FileId,
) -> ApiResult<Capabilities> {
    let caps = principal.current_caps_for(state, file);
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
    let file = crate::api::sharing::file_of(&state, &file_id)?;
    manager_caps(&state, &principal, file)?;
    let grants = state
        .store
        .grants_of(file)
        .map_err(|e| ApiError::internal("cannot list the people", e))?;
    Ok(Json(Value::Array(grants)))
}

/// Invites a person or group, or changes their capabilities.
pub async fn set_person(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    UrlPath((file_id, kind, name)): UrlPath<(String, String, String)>,
    JsonBody(body): JsonBody<CapsSpec>,
) -> ApiResult<Response> {
    let file = crate::api::sharing::file_of(&state, &file_id)?;
    let kind = Grantee::parse(&kind)?;
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
    let by = principal.username(&state);
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
    let file = crate::api::sharing::file_of(&state, &file_id)?;
    let kind = Grantee::parse(&kind)?;
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
        &principal.username(&state),
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

fn db_error(e: rusqlite::Error) -> ApiError {
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
        &principal.username(&state),
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
    state
        .store
        .audit(&principal.username(&state), "project_removed", &name, "");
    for member in members {
        recheck(&state, None, Some(&member)).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

pub async fn add_member(
    state: State<AppState>,
    principal: Extension<Principal>,
    names: UrlPath<(String, String)>,
) -> ApiResult<StatusCode> {
    set_membership(state, principal, names, true).await
}

pub async fn remove_member(
    state: State<AppState>,
    principal: Extension<Principal>,
    names: UrlPath<(String, String)>,
) -> ApiResult<StatusCode> {
    set_membership(state, principal, names, false).await
}

/// Adds a person to a project or removes them; their open sockets learn of it at once.
async fn set_membership(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    UrlPath((name, username)): UrlPath<(String, String)>,
    member: bool,
) -> ApiResult<StatusCode> {
    admin_only(&principal)?;
    existing_project(&state, &name)?;
    if member {
        person_account(&username)?;
        if username == name {
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
    state
        .store
        .audit(&principal.username(&state), action, &name, &username);
    recheck(&state, None, Some(&username)).await;
    Ok(StatusCode::NO_CONTENT)
}

impl Store {
    /// The notebooks granted to a person, by name or through their groups.
    pub fn granted_files(
        &self,
        username: &str,
        groups: &[String],
    ) -> rusqlite::Result<Vec<FileId>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT DISTINCT file_id, kind, name FROM grants")?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?;
        let mut files = Vec::new();
        for row in rows {
            let (file, kind, name) = row?;
            let applies = grant_applies(&kind, &name, username, groups);
            if let (true, Some(file)) = (applies, FileId::parse(&file)) {
                if !files.contains(&file) {
                    files.push(file);
                }
            }
        }
        Ok(files)
    }
}

/// A notebook as the app lists it: its id, name, path in its owner's space, its owner, and what
/// the requester may do with it.
pub fn notebook_info(state: &AppState, principal: &Principal, file: FileId) -> Option<Value> {
    let caps = principal.current_caps_for(state, file);
    if !caps.contains(Capabilities::VIEW) {
        return None;
    }
    let store_path = state.store.path_for_id(state.root.path(), file).ok()??;
    let space = state.space_of(&store_path).ok()?;
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
    let groups = Account::lookup(&user.username)
        .map(|a| group_names(&a))
        .unwrap_or_default();
    let files = state
        .store
        .granted_files(&user.username, &groups)
        .map_err(|e| ApiError::internal("cannot list what is shared with you", e))?;
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
