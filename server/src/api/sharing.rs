//! Live-share links: a notebook shared with whoever holds the link, with exactly the
//! capabilities it carries.
//!
//! The owner creates a link (`POST /api/sharing/{fileId}/links`) and sees its token once; only
//! its SHA-256 is stored. Opening it (`/share/{token}`, then `POST /api/share/{token}` with a
//! display name) makes a guest session bound to that link: a cookie, stored hashed, that admits
//! its holder to that notebook only. Changing a link's capabilities reaches live connections at
//! their next message; revoking it closes the sockets opened through it at once and ends its
//! guest sessions. Links can expire and have a use limit.

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Json};
use collab::{Capabilities, FileId, GrantSource, Identity, RoomInput};
use rand::RngCore;
use rusqlite::{params, OptionalExtension};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::error::{ApiError, ApiResult, JsonBody};
use crate::api::people::{check_within, manager_caps};
use crate::storage::{now_secs, Store};
use crate::AppState;

pub const GUEST_COOKIE: &str = "quire-guest";

/// Someone admitted through a live-share link.
#[derive(Clone, Debug)]
pub struct Guest {
    pub link_id: String,
    pub file: FileId,
    pub caps: Capabilities,
    pub identity: Identity,
}

/// Who is making a request.
#[derive(Clone, Debug)]
pub enum Principal {
    /// The token holder: every notebook, every capability.
    Owner,
    Guest(Guest),
    /// A person logged in with their account (multi-user mode).
    User(crate::access::login::User),
}

impl Principal {
    /// What this principal may do with a notebook now: a guest's link and a person's grants
    /// are read afresh, so a connection opened before a grant changed acts on it as it is now.
    pub fn current_caps_for(&self, state: &AppState, file: FileId) -> Capabilities {
        match self {
            Principal::Owner => Capabilities::ALL,
            Principal::Guest(g) => link_caps_for(state, g, file),
            Principal::User(u) => {
                let own = crate::api::people::person_caps(state, &u.username, file);
                match &u.link {
                    Some(link) if !own.contains(Capabilities::WATCH) => {
                        own.union(link_caps_for(state, link, file))
                    }
                    _ => own,
                }
            }
        }
    }

    /// Who this is, as the audit log names them.
    pub fn username(&self, state: &AppState) -> String {
        self.identity(state).username
    }

    /// Who this is, as others see them.
    pub fn identity(&self, state: &AppState) -> Identity {
        match self {
            Principal::Owner => state.identity.clone(),
            Principal::Guest(g) => g.identity.clone(),
            Principal::User(u) => u.identity.clone(),
        }
    }

    /// This principal as a member of a notebook's room, holding `caps`. A person who may watch
    /// only through a link they opened is there by that link (revoking it removes them).
    pub fn member(&self, state: &AppState, file: FileId, caps: Capabilities) -> collab::Member {
        let source = match self {
            Principal::Owner => return collab::Member::owner(state.identity.clone()),
            Principal::Guest(g) => GrantSource::Link(g.link_id.clone()),
            Principal::User(u) => match &u.link {
                Some(link)
                    if link.file == file
                        && !crate::api::people::person_caps(state, &u.username, file)
                            .contains(Capabilities::WATCH) =>
                {
                    GrantSource::Link(link.link_id.clone())
                }
                _ => GrantSource::Person(u.username.clone()),
            },
        };
        collab::Member {
            identity: self.identity(state),
            caps,
            source,
        }
    }
}

/// What a link (opened by a guest or a person) gives on a notebook now.
fn link_caps_for(state: &AppState, link: &Guest, file: FileId) -> Capabilities {
    if link.file != file {
        return Capabilities::NONE;
    }
    state
        .store
        .link_caps(&link.link_id)
        .ok()
        .flatten()
        .map(Capabilities::effective)
        .unwrap_or(Capabilities::NONE)
}

fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn hash(secret: &str) -> String {
    collab::content_hash(secret.as_bytes())
}

/// A link as listed (never with its token).
#[derive(Clone, Debug)]
pub struct Link {
    pub id: String,
    pub file: String,
    pub caps: Capabilities,
    pub label: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub max_uses: Option<i64>,
    pub uses: i64,
}

impl Link {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "file_id": self.file,
            "capabilities": self.caps.names(),
            "label": self.label,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "max_uses": self.max_uses,
            "uses": self.uses,
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum RedeemError {
    Unknown,
    Expired,
    UsedUp,
}

impl Store {
    /// Creates a link; returns it and its token (which is not kept).
    pub fn create_link(
        &self,
        file: FileId,
        caps: Capabilities,
        label: &str,
        expires_at: Option<i64>,
        max_uses: Option<i64>,
    ) -> rusqlite::Result<(Link, String)> {
        let token = random_secret();
        let id = uuid::Uuid::new_v4().to_string();
        let created_at = now_secs();
        self.db().execute(
            "INSERT INTO links (id, file_id, token_hash, caps, label, created_at, expires_at, max_uses)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![id, file.to_string(), hash(&token), caps.bits(), label, created_at, expires_at, max_uses],
        )?;
        let link = Link {
            id,
            file: file.to_string(),
            caps,
            label: label.to_string(),
            created_at,
            expires_at,
            max_uses,
            uses: 0,
        };
        Ok((link, token))
    }

    fn link_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Link> {
        Ok(Link {
            id: row.get(0)?,
            file: row.get(1)?,
            caps: Capabilities::from_bits(row.get::<_, u8>(2)?),
            label: row.get(3)?,
            created_at: row.get(4)?,
            expires_at: row.get(5)?,
            max_uses: row.get(6)?,
            uses: row.get(7)?,
        })
    }

    /// The links of a notebook that are not revoked.
    pub fn links_of(&self, file: FileId) -> rusqlite::Result<Vec<Link>> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT id, file_id, caps, label, created_at, expires_at, max_uses, uses FROM links
             WHERE file_id = ?1 AND revoked_at IS NULL ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([file.to_string()], Store::link_from_row)?;
        rows.collect()
    }

    pub fn set_link_caps(
        &self,
        file: FileId,
        id: &str,
        caps: Capabilities,
    ) -> rusqlite::Result<bool> {
        let changed = self.db().execute(
            "UPDATE links SET caps = ?1 WHERE id = ?2 AND file_id = ?3 AND revoked_at IS NULL",
            params![caps.bits(), id, file.to_string()],
        )?;
        Ok(changed == 1)
    }

    /// Revokes a link and ends the guest sessions made through it.
    pub fn revoke_link(&self, file: FileId, id: &str) -> rusqlite::Result<bool> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let changed = tx.execute(
            "UPDATE links SET revoked_at = ?1 WHERE id = ?2 AND file_id = ?3 AND revoked_at IS NULL",
            params![now_secs(), id, file.to_string()],
        )?;
        tx.execute("DELETE FROM guests WHERE link_id = ?1", [id])?;
        tx.commit()?;
        Ok(changed == 1)
    }

    /// Uses a link: checks it, counts the use, and makes a guest session; returns its cookie.
    pub fn redeem(
        &self,
        token: &str,
        name: &str,
    ) -> rusqlite::Result<Result<(Link, String), RedeemError>> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let found = tx
            .query_row(
                "SELECT id, file_id, caps, label, created_at, expires_at, max_uses, uses FROM links
                 WHERE token_hash = ?1 AND revoked_at IS NULL",
                [hash(token)],
                Store::link_from_row,
            )
            .optional()?;
        let Some(link) = found else {
            return Ok(Err(RedeemError::Unknown));
        };
        if link.expires_at.is_some_and(|t| t <= now_secs()) {
            return Ok(Err(RedeemError::Expired));
        }
        if link.max_uses.is_some_and(|m| link.uses >= m) {
            return Ok(Err(RedeemError::UsedUp));
        }
        tx.execute("UPDATE links SET uses = uses + 1 WHERE id = ?1", [&link.id])?;
        let cookie = random_secret();
        tx.execute(
            "INSERT INTO guests (cookie_hash, link_id, name, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![hash(&cookie), link.id, name, now_secs()],
        )?;
        tx.commit()?;
        Ok(Ok((link, cookie)))
    }

    /// Forgets the files at or under a store path (deleted): their ids, grants and links (with
    /// the guest sessions made through them). Returns each file with its links that were live.
    pub fn forget(&self, store_path: &str) -> rusqlite::Result<Vec<(FileId, Vec<String>)>> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let ids: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT id FROM files WHERE path = ?1 OR substr(path, 1, length(?2)) = ?2",
            )?;
            let rows =
                stmt.query_map(params![store_path, format!("{store_path}/")], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut forgotten = Vec::new();
        for id in ids {
            let links: Vec<String> = {
                let mut stmt =
                    tx.prepare("SELECT id FROM links WHERE file_id = ?1 AND revoked_at IS NULL")?;
                let rows = stmt.query_map([&id], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            tx.execute(
                "DELETE FROM guests WHERE link_id IN (SELECT id FROM links WHERE file_id = ?1)",
                [&id],
            )?;
            tx.execute(
                "UPDATE links SET revoked_at = ?2 WHERE file_id = ?1 AND revoked_at IS NULL",
                params![id, now_secs()],
            )?;
            tx.execute("DELETE FROM grants WHERE file_id = ?1", [&id])?;
            tx.execute("DELETE FROM files WHERE id = ?1", [&id])?;
            if let Some(file) = FileId::parse(&id) {
                forgotten.push((file, links));
            }
        }
        tx.commit()?;
        Ok(forgotten)
    }

    /// The links (file, id) whose expiry falls in `(after, upto]`, in seconds.
    pub fn links_expiring(&self, after: i64, upto: i64) -> rusqlite::Result<Vec<(String, String)>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(
            "SELECT file_id, id FROM links
             WHERE revoked_at IS NULL AND expires_at > ?1 AND expires_at <= ?2",
        )?;
        let rows = stmt.query_map(params![after, upto], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect()
    }

    /// A link's capabilities now, if it is live (not revoked, not expired).
    pub fn link_caps(&self, id: &str) -> rusqlite::Result<Option<Capabilities>> {
        self.db()
            .query_row(
                "SELECT caps FROM links WHERE id = ?1 AND revoked_at IS NULL
                   AND (expires_at IS NULL OR expires_at > ?2)",
                params![id, now_secs()],
                |row| row.get::<_, u8>(0),
            )
            .optional()
            .map(|caps| caps.map(Capabilities::from_bits))
    }

    /// The guest behind a cookie, while its link is live (not revoked, not expired).
    pub fn guest(&self, cookie: &str) -> rusqlite::Result<Option<Guest>> {
        let row = self
            .db()
            .query_row(
                "SELECT g.link_id, l.file_id, l.caps, g.name, g.cookie_hash FROM guests g
                 JOIN links l ON l.id = g.link_id
                 WHERE g.cookie_hash = ?1 AND l.revoked_at IS NULL
                   AND (l.expires_at IS NULL OR l.expires_at > ?2)",
                params![hash(cookie), now_secs()],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, u8>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, String>(4)?,
                    ))
                },
            )
            .optional()?;
        Ok(row.and_then(|(link_id, file, caps, name, cookie_hash)| {
            Some(Guest {
                link_id,
                file: FileId::parse(&file)?,
                caps: Capabilities::from_bits(caps),
                identity: guest_identity(&name, &cookie_hash),
            })
        }))
    }
}

/// How long a guest's own name may be (the mark comes after it).
const GUEST_NAME_CHARS: usize = 40;

/// The name a guest typed, cleaned: no control characters and no invisible formatting ones
/// (bidi overrides, zero-width spaces: they could hide or reorder the guest mark), each run of
/// whitespace one space, no "(guest)" of their own at the end, at most 40 characters.
pub fn guest_base_name(given: &str) -> String {
    let invisible = |c: char| {
        c.is_control()
            || matches!(c, '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}'
                | '\u{17B4}' | '\u{17B5}' | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF9}'..='\u{FFFB}'
                | '\u{E0000}'..='\u{E007F}')
    };
    let cleaned: String = given.chars().filter(|c| !invisible(*c)).collect();
    let mut name = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    loop {
        let lower = name.to_lowercase();
        let Some(cut) = lower.strip_suffix("(guest)") else {
            break;
        };
        // (Lowercasing can change lengths: cut by characters.)
        let keep = cut.chars().count();
        name = name
            .chars()
            .take(keep)
            .collect::<String>()
            .trim_end()
            .to_string();
    }
    name.chars()
        .take(GUEST_NAME_CHARS)
        .collect::<String>()
        .trim_end()
        .to_string()
}

/// What others see of a guest: the name they gave, always marked as a guest.
pub fn guest_shown_name(base: &str) -> String {
    format!("{base} (guest)")
}

/// A guest's identity: the name they gave, marked as a guest (so it never reads as anyone
/// with an account here, the owner included), and a user name no account can have.
fn guest_identity(name: &str, cookie_hash: &str) -> Identity {
    let base = guest_base_name(name);
    let mut identity = Identity::from_username(&base);
    let shown = guest_shown_name(&base);
    identity.name = shown.clone();
    identity.display_name = shown;
    identity.username = format!("guest:{}", &cookie_hash[..12]);
    identity
}

/// Whether a name (compared without case) is an account's on this machine, as its user name
/// or its full name, or the server owner's.
fn name_of_an_account(state: &AppState, name: &str) -> bool {
    let wanted = name.to_lowercase();
    let owner = &state.identity;
    if [&owner.username, &owner.name, &owner.display_name]
        .iter()
        .any(|n| n.to_lowercase() == wanted)
    {
        return true;
    }
    // getpwent walks one process-wide cursor.
    static PASSWD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _walking = PASSWD.lock().unwrap_or_else(|e| e.into_inner());
    let mut found = false;
    // SAFETY: getpwent's entries are read before the next call, under the lock above.
    unsafe {
        libc::setpwent();
        loop {
            let entry = libc::getpwent();
            if entry.is_null() {
                break;
            }
            let text = |p: *const libc::c_char| {
                if p.is_null() {
                    String::new()
                } else {
                    std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            let username = text((*entry).pw_name);
            let gecos = text((*entry).pw_gecos);
            let full = gecos
                .split(',')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            if username.to_lowercase() == wanted
                || (!full.is_empty() && full.to_lowercase() == wanted)
            {
                found = true;
                break;
            }
        }
        libc::endpwent();
    }
    found
}

/// The guest cookie's value in a request, if any.
pub fn guest_cookie(headers: &HeaderMap) -> Option<String> {
    crate::access::auth::cookie(headers, GUEST_COOKIE)
}

/// Capabilities from a request body: a role name, or a list of capability names.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum CapsSpec {
    Role { role: String },
    List { capabilities: Vec<String> },
}

impl CapsSpec {
    /// The capabilities asked for (at least one).
    pub fn resolve(&self) -> ApiResult<Capabilities> {
        let caps = match self {
            CapsSpec::Role { role } => Capabilities::role(role).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unknown role {role:?} (viewer, editor, runner, owner)"
                ))
            })?,
            CapsSpec::List { capabilities } => {
                Capabilities::parse(capabilities).map_err(ApiError::bad_request)?
            }
        };
        if caps.is_empty() {
            return Err(ApiError::bad_request("at least one capability is needed"));
        }
        Ok(caps)
    }

    /// The capabilities of a link: anything but `manage`.
    fn resolve_for_link(&self) -> ApiResult<Capabilities> {
        let caps = self.resolve()?;
        if caps.contains(Capabilities::MANAGE) {
            return Err(ApiError::bad_request(
                "a link cannot carry \"manage\": invite a person to share management",
            ));
        }
        Ok(caps)
    }
}

#[derive(Deserialize)]
pub struct NewLink {
    #[serde(flatten)]
    caps: CapsSpec,
    #[serde(default)]
    label: String,
    expires_in_secs: Option<i64>,
    max_uses: Option<i64>,
}

/// A notebook named by its id in a URL, which must exist.
pub fn file_of(state: &AppState, id: &str) -> ApiResult<FileId> {
    let file = FileId::parse(id).ok_or_else(|| ApiError::bad_request("malformed file id"))?;
    state
        .store
        .path_for_id(state.root.path(), file)
        .map_err(|e| ApiError::internal("cannot look the notebook up", e))?
        .ok_or_else(|| ApiError::not_found("no notebook with this id"))?;
    Ok(file)
}

/// Tells every open room of the notebook that a link's rights changed (`None`: revoked).
pub async fn announce(state: &AppState, file: FileId, link: &str, caps: Option<Capabilities>) {
    for room in state.rooms.of_file(file) {
        let source = GrantSource::Link(link.to_string());
        let _ = room.send(RoomInput::Permissions { source, caps }).await;
    }
}

pub async fn list_links(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    UrlPath(file_id): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    let file = file_of(&state, &file_id)?;
    manager_caps(&state, &principal, file)?;
    let links = state
        .store
        .links_of(file)
        .map_err(|e| ApiError::internal("cannot list links", e))?;
    Ok(Json(Value::Array(
        links.iter().map(Link::to_json).collect(),
    )))
}

pub async fn create_link(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    UrlPath(file_id): UrlPath<String>,
    JsonBody(body): JsonBody<NewLink>,
) -> ApiResult<Response> {
    let file = file_of(&state, &file_id)?;
    let granter = manager_caps(&state, &principal, file)?;
    let caps = body.caps.resolve_for_link()?;
    check_within(granter, caps)?;
    if body.expires_in_secs.is_some_and(|s| s <= 0) || body.max_uses.is_some_and(|m| m <= 0) {
        return Err(ApiError::bad_request(
            "expires_in_secs and max_uses must be positive",
        ));
    }
    let expires_at = body.expires_in_secs.map(|s| now_secs().saturating_add(s));
    let (link, token) = state
        .store
        .create_link(file, caps, &body.label, expires_at, body.max_uses)
        .map_err(|e| ApiError::internal("cannot create the link", e))?;
    state.store.audit(
        &principal.username(&state),
        "link_created",
        &file.to_string(),
        &format!("link {} with {:?}", link.id, caps),
    );
    let mut model = link.to_json();
    model["token"] = Value::from(token.as_str());
    model["url"] = Value::from(format!("/share/{token}"));
    Ok((StatusCode::CREATED, Json(model)).into_response())
}

pub async fn change_link(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    UrlPath((file_id, link_id)): UrlPath<(String, String)>,
    JsonBody(body): JsonBody<CapsSpec>,
) -> ApiResult<StatusCode> {
    let file = file_of(&state, &file_id)?;
    let granter = manager_caps(&state, &principal, file)?;
    let caps = body.resolve_for_link()?;
    check_within(granter, caps)?;
    let changed = state
        .store
        .set_link_caps(file, &link_id, caps)
        .map_err(|e| ApiError::internal("cannot change the link", e))?;
    if !changed {
        return Err(ApiError::not_found("no such link"));
    }
    state.store.audit(
        &principal.username(&state),
        "link_changed",
        &file.to_string(),
        &format!("link {link_id} now {caps:?}"),
    );
    announce(&state, file, &link_id, Some(caps)).await;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn revoke_link(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    UrlPath((file_id, link_id)): UrlPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let file = file_of(&state, &file_id)?;
    manager_caps(&state, &principal, file)?;
    let revoked = state
        .store
        .revoke_link(file, &link_id)
        .map_err(|e| ApiError::internal("cannot revoke the link", e))?;
    if !revoked {
        return Err(ApiError::not_found("no such link"));
    }
    state.store.audit(
        &principal.username(&state),
        "link_revoked",
        &file.to_string(),
        &format!("link {link_id}"),
    );
    announce(&state, file, &link_id, None).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Closes the sockets opened through links as the links expire (checked every second).
pub async fn expire_links(state: AppState) {
    let mut checked = now_secs();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = now_secs();
        match state.store.links_expiring(checked, now) {
            Ok(expired) => {
                for (file, link) in expired {
                    if let Some(file) = FileId::parse(&file) {
                        announce(&state, file, &link, None).await;
                    }
                }
                checked = now;
            }
            Err(e) => tracing::warn!("cannot look for expired links: {e}"),
        }
    }
}

#[derive(Deserialize)]
pub struct Redeem {
    name: String,
}

/// Opens a link: a guest session for the name given, bound to the link's notebook.
pub async fn redeem(
    State(state): State<AppState>,
    UrlPath(token): UrlPath<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Redeem>,
) -> ApiResult<Response> {
    if !crate::access::auth::same_site(&headers) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross-site request refused",
        ));
    }
    // A guest is shown as "Name (guest)", which must not be anyone's name here.
    let name = guest_base_name(&body.name);
    if name.is_empty() {
        return Err(ApiError::bad_request("a display name is needed to join"));
    }
    let shown = guest_shown_name(&name);
    let taken = {
        let (state, shown) = (state.clone(), shown.clone());
        tokio::task::spawn_blocking(move || name_of_an_account(&state, &shown))
            .await
            .map_err(|e| ApiError::internal("cannot check the name", e))?
    };
    if taken {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{shown:?} is the name of an account on this server: choose another name"),
        ));
    }
    let outcome = state
        .store
        .redeem(&token, &name)
        .map_err(|e| ApiError::internal("cannot open the link", e))?;
    let (link, cookie) = match outcome {
        Ok(found) => found,
        Err(RedeemError::Unknown) => {
            return Err(ApiError::not_found(
                "this link does not exist or was revoked",
            ))
        }
        Err(RedeemError::Expired) => {
            return Err(ApiError::new(StatusCode::GONE, "this link has expired"))
        }
        Err(RedeemError::UsedUp) => {
            return Err(ApiError::new(
                StatusCode::GONE,
                "this link has been used as many times as allowed",
            ))
        }
    };
    let file = FileId::parse(&link.file)
        .ok_or_else(|| ApiError::internal("corrupt link", "bad file id"))?;
    let path = state
        .store
        .path_for_id(state.root.path(), file)
        .map_err(|e| ApiError::internal("cannot look the notebook up", e))?
        .ok_or_else(|| ApiError::not_found("the shared notebook no longer exists"))?;
    let path = state.space_of(&path)?.api_path(&path).unwrap_or(path);
    // Someone logged in who opens a link stays who they are.
    let identity = match crate::access::login::user_of(&state, &headers) {
        Some(user) => user.identity,
        None => guest_identity(&name, &hash(&cookie)),
    };
    state.store.audit(
        &identity.username,
        "link_used",
        &link.file,
        &format!("link {} by {name:?}", link.id),
    );
    let body = json!({
        "file_id": link.file,
        "path": path,
        "document_id": format!("json:notebook:{}", link.file),
        "capabilities": link.caps.effective().names(),
        "identity": identity,
    });
    let mut response = (StatusCode::OK, Json(body)).into_response();
    let cookie =
        format!("{GUEST_COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Lax; Max-Age=2592000");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
        .headers_mut()
        .insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    Ok(response)
}

/// The page a live-share link opens: asks for a display name, then joins.
pub async fn share_page() -> Response {
    let page = r#"<!doctype html><meta charset="utf-8"><title>Join a shared notebook — Quire</title>
<meta name="referrer" content="no-referrer">
<form id="join"><label>Your name <input name="name" required maxlength="60" autofocus></label>
<button>Join</button></form><p id="status" role="status"></p>
<script>
const token = location.pathname.split('/').pop();
history.replaceState(null, '', '/share');
document.getElementById('join').addEventListener('submit', async (e) => {
  e.preventDefault();
  const name = new FormData(e.target).get('name');
  const r = await fetch('/api/share/' + encodeURIComponent(token), {method: 'POST',
    headers: {'Content-Type': 'application/json'}, body: JSON.stringify({name})});
  const body = await r.json();
  if (r.ok) {
    location.replace('/notebooks/' + body.path.split('/').map(encodeURIComponent).join('/'));
  } else {
    document.getElementById('status').textContent = body.message;
  }
});
</script>"#;
    let mut response = Html(page).into_response();
    let headers = response.headers_mut();
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; script-src 'unsafe-inline'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'"),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[derive(Deserialize)]
pub struct AuditQuery {
    file_id: Option<String>,
    limit: Option<u32>,
}

/// The audit log, newest first: the whole log for the administrator, a notebook's for those
/// who may manage it.
pub async fn audit_log(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    axum::extract::Query(query): axum::extract::Query<AuditQuery>,
) -> ApiResult<Json<Value>> {
    match (&principal, query.file_id.as_deref()) {
        (Principal::Owner, _) => {}
        (_, Some(file_id)) => {
            manager_caps(&state, &principal, file_of(&state, file_id)?)?;
        }
        (_, None) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the whole audit log is the administrator's: ask for one notebook's",
            ))
        }
    }
    let limit = query.limit.unwrap_or(200).min(5000);
    let entries = state
        .store
        .audit_entries(query.file_id.as_deref(), limit)
        .map_err(|e| ApiError::internal("cannot read the audit log", e))?;
    Ok(Json(Value::Array(entries)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_names_are_cleaned_and_marked() {
        assert_eq!(guest_base_name("  Ada  Lovelace "), "Ada Lovelace");
        assert_eq!(guest_base_name("Ada (guest)"), "Ada");
        assert_eq!(guest_base_name("Ada (GUEST) (guest)"), "Ada");
        // Invisible characters cannot hide or reorder the mark.
        assert_eq!(guest_base_name("Ada\u{202E}"), "Ada");
        assert_eq!(guest_base_name("A\u{200B}da\u{FEFF}"), "Ada");
        assert_eq!(guest_base_name("Ada\n\t(guest)"), "Ada");
        assert_eq!(guest_base_name("(guest)"), "");
        assert_eq!(guest_base_name(&"x".repeat(100)).chars().count(), 40);
        let identity = guest_identity("Ada (guest)", &"0".repeat(64));
        assert_eq!(identity.display_name, "Ada (guest)");
        assert_eq!(identity.name, "Ada (guest)");
        assert_eq!(identity.initials, "A");
        assert!(identity.username.starts_with("guest:"));
    }
}
