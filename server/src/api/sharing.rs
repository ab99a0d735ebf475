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
use collab::{Capabilities, DocumentKind, FileId, LinkId};
use serde::Deserialize;
use serde_json::{json, Value};

use super::people::{check_within, manager_caps};
use crate::access::accounts::name_of_an_account;
use crate::access::login::user_of;
use crate::access::principal::{
    guest_base_name, guest_identity, guest_shown_name, Principal, GUEST_COOKIE,
    GUEST_COOKIE_LIFETIME_SECS,
};
use crate::http::cookies::session_cookie;
use crate::http::error::{ApiError, ApiResult, JsonBody};
use crate::http::origin::require_same_site;
use crate::rooms::registry::RoomKey;
use crate::rooms::rights::announce_link;
use crate::storage::{now_secs, secret_hash, Link, RedeemError};
use crate::AppState;

/// A link as the API shows it (never with its token).
fn link_json(link: &Link) -> Value {
    json!({
        "id": link.id,
        "file_id": link.file,
        "capabilities": link.caps.names(),
        "label": link.label,
        "created_at": link.created_at,
        "expires_at": link.expires_at,
        "max_uses": link.max_uses,
        "uses": link.uses,
    })
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
        .path_for_id(state.spaces.store_root(), file)
        .map_err(|e| ApiError::internal("cannot look the notebook up", e))?
        .ok_or_else(|| ApiError::not_found("no notebook with this id"))?;
    Ok(file)
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
    Ok(Json(Value::Array(links.iter().map(link_json).collect())))
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
        &principal.username(&state.access),
        "link_created",
        &file.to_string(),
        &format!("link {} with {:?}", link.id, caps),
    );
    let mut model = link_json(&link);
    model["token"] = Value::from(token.as_str());
    model["url"] = Value::from(format!("/share/{token}"));
    Ok((StatusCode::CREATED, Json(model)).into_response())
}

pub async fn change_link(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    UrlPath((file_id, link_id)): UrlPath<(String, LinkId)>,
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
        &principal.username(&state.access),
        "link_changed",
        &file.to_string(),
        &format!("link {link_id} now {caps:?}"),
    );
    announce_link(&state, file, &link_id, Some(caps)).await;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn revoke_link(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    UrlPath((file_id, link_id)): UrlPath<(String, LinkId)>,
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
        &principal.username(&state.access),
        "link_revoked",
        &file.to_string(),
        &format!("link {link_id}"),
    );
    announce_link(&state, file, &link_id, None).await;
    Ok(StatusCode::NO_CONTENT)
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
    require_same_site(&headers)?;
    // A guest is shown as "Name (guest)", which must not be anyone's name here.
    let name = guest_base_name(&body.name);
    if name.is_empty() {
        return Err(ApiError::bad_request("a display name is needed to join"));
    }
    let shown = guest_shown_name(&name);
    let taken = {
        let (owner, shown) = (state.access.identity.clone(), shown.clone());
        tokio::task::spawn_blocking(move || name_of_an_account(&owner, &shown))
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
        .path_for_id(state.spaces.store_root(), file)
        .map_err(|e| ApiError::internal("cannot look the notebook up", e))?
        .ok_or_else(|| ApiError::not_found("the shared notebook no longer exists"))?;
    let path = state
        .spaces
        .space_of(&path)?
        .api_path(&path)
        .unwrap_or(path);
    // Someone logged in who opens a link stays who they are.
    let identity = match user_of(&state.access, &headers) {
        Some(user) => user.identity,
        None => guest_identity(&name, &secret_hash(&cookie)),
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
        "document_id": RoomKey::Document { kind: DocumentKind::Notebook, file }.to_string(),
        "capabilities": link.caps.effective().names(),
        "identity": identity,
    });
    let mut response = (StatusCode::OK, Json(body)).into_response();
    if let Some(value) = session_cookie(GUEST_COOKIE, &cookie, GUEST_COOKIE_LIFETIME_SECS) {
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
            return Err(ApiError::forbidden(
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
