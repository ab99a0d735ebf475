//! JupyterLab's collaboration endpoints: the session PUT, the room websocket, and `/api/me`.
//!
//! `PUT /api/collaboration/session/{path}` gives a file its stable id; the client then opens
//! `/api/collaboration/room/{format}:{type}:{fileId}?sessionId=…` (served by `rooms::socket`).

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use collab::FileId;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::access::principal::Principal;
use crate::fs::paths::Root;
use crate::fs::space::Space;
use crate::http::error::{ApiError, ApiResult, JsonBody};
use crate::http::origin::origin_allowed;
use crate::rooms::socket::serve_socket;
use crate::storage::DiskIdentity;
use crate::AppState;

/// Bytes read from a websocket at a time (larger frames are read in several chunks).
const IDLE_READ_BUFFER: usize = 4096;

pub async fn me(
    State(state): State<AppState>,
    axum::Extension(principal): axum::Extension<Principal>,
) -> Json<Value> {
    match principal {
        Principal::Owner => Json(json!({"identity": state.access.identity, "permissions": {}})),
        Principal::User(user) => {
            let projects: Vec<String> = state
                .store
                .projects()
                .unwrap_or_default()
                .into_iter()
                .filter(|p| state.store.is_member(p, &user.username).unwrap_or(false))
                .collect();
            Json(json!({
                "identity": user.identity,
                "permissions": {},
                "user": {"username": user.username, "uid": user.uid, "projects": projects},
            }))
        }
        Principal::Guest(guest) => Json(json!({
            "identity": guest.identity,
            "permissions": {},
            "guest": {
                "file_id": guest.file.to_string(),
                "capabilities": guest.caps.effective().names(),
            },
        })),
    }
}

#[derive(Deserialize, Default)]
pub struct SessionBody {
    format: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

pub async fn put_session(
    State(state): State<AppState>,
    axum::Extension(principal): axum::Extension<Principal>,
    axum::Extension(space): axum::Extension<Space>,
    UrlPath(api_path): UrlPath<String>,
    JsonBody(body): JsonBody<Option<SessionBody>>,
) -> ApiResult<Response> {
    let body = body.unwrap_or_default();
    let api_path = Root::normalize(&api_path)?;
    if let Principal::Guest(guest) = &principal {
        // A guest may not give ids to files; only their notebook's is theirs to learn.
        let theirs = state
            .store
            .path_for_id(state.spaces.store_root(), guest.file)
            .ok()
            .flatten()
            .and_then(|path| space.api_path(&path));
        if theirs.as_deref() != Some(api_path.as_str()) {
            return Err(ApiError::not_found(format!("no such file: {api_path}")));
        }
    }
    let (file_id, created) = file_id_of(&state, &space, &api_path)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = json!({
        "format": body.format.unwrap_or_else(|| "json".into()),
        "type": body.kind.unwrap_or_else(|| "notebook".into()),
        "fileId": file_id.to_string(),
        "sessionId": state.store.session_id,
    });
    Ok((status, Json(body)).into_response())
}

/// The stable id of the file at `api_path` (normalized) in a space, and whether it was just
/// given one.
pub fn file_id_of(state: &AppState, space: &Space, api_path: &str) -> ApiResult<(FileId, bool)> {
    let path = space.resolve(api_path)?;
    let meta = space
        .io(|| std::fs::metadata(&path))
        .ok()
        .filter(|m| m.is_file())
        .ok_or_else(|| ApiError::not_found(format!("no such file: {api_path}")))?;
    state
        .store
        .id_for_path(
            state.spaces.store_root(),
            &space.store_path(api_path),
            DiskIdentity::of(&meta),
        )
        .map_err(|e| ApiError::internal("cannot index the file", e))
}

#[derive(Deserialize)]
pub struct RoomQuery {
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
}

pub async fn room_socket(
    State(state): State<AppState>,
    axum::Extension(principal): axum::Extension<Principal>,
    axum::Extension(space): axum::Extension<Space>,
    UrlPath(room): UrlPath<String>,
    Query(query): Query<RoomQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !origin_allowed(&headers) {
        return ApiError::forbidden("cross-origin websocket refused").into_response();
    }
    let limit = state.config.max_frame_bytes;
    upgrade
        // Frames beyond our limit are read only far enough to refuse them with a clear reason.
        .max_message_size(limit.saturating_mul(2))
        .max_frame_size(limit.saturating_mul(2))
        // tungstenite reserves its read buffer per connection (128 KiB by default): most
        // connections sit idle with a presence renewal every 15 s, so start small.
        .read_buffer_size(IDLE_READ_BUFFER)
        .on_upgrade(move |socket| async move {
            serve_socket(state, principal, space, socket, room, query.session_id).await;
        })
}
