//! Admission: which room a websocket asks for, whether the asker may join it, and the room
//! found or opened (with the notebook's kernel attached).
//!
//! A room id names a document, `{format}:{type}:{fileId}`; one with fewer than two colons
//! (JupyterLab's `JupyterLab:globalAwareness`) is a transient, awareness-only room.

use collab::protocol::CloseCode;
use collab::{Capabilities, CloseReason, DocumentKind, FileId, RoomHandle, RoomInput};
use serde_json::json;

use super::registry::RoomKey;
use crate::access::principal::Principal;
use crate::fs::space::Space;
use crate::AppState;

/// Close codes JupyterLab's provider understands.
pub const CLOSE_NOT_FOUND: CloseCode = CloseCode::NotFound;
pub const CLOSE_BAD_REQUEST: CloseCode = CloseCode::BadRequest;
pub const CLOSE_LOAD_FAILURE: CloseCode = CloseCode::LoadFailure;
const CLOSE_SESSION: CloseCode = CloseCode::Session;

/// A document room's name (`json:notebook:{fileId}`), parsed; `None` for a presence room's.
pub fn parse_document_id(room: &str) -> Result<Option<(DocumentKind, FileId)>, CloseReason> {
    let parts: Vec<&str> = room.splitn(3, ':').collect();
    if parts.len() < 3 {
        return Ok(None);
    }
    let (format, kind, id) = (parts[0], parts[1], parts[2]);
    let Some(kind) = DocumentKind::from_format_and_type(format, kind) else {
        return Err(CloseReason::new(
            CLOSE_BAD_REQUEST,
            format!("unsupported document type {format}:{kind}"),
        ));
    };
    let file_id = FileId::parse(id)
        .ok_or_else(|| CloseReason::new(CLOSE_BAD_REQUEST, "malformed file id"))?;
    Ok(Some((kind, file_id)))
}

/// Opens (or finds) the room of a document, for a request that names it by id.
pub async fn open_document(state: &AppState, document_id: &str) -> Result<RoomHandle, CloseReason> {
    match parse_document_id(document_id)? {
        Some((kind, file)) => open_file_room(state, kind, file).await,
        None => Err(CloseReason::new(
            CLOSE_NOT_FOUND,
            format!("no document {document_id:?}"),
        )),
    }
}

async fn open_file_room(
    state: &AppState,
    kind: DocumentKind,
    file_id: FileId,
) -> Result<RoomHandle, CloseReason> {
    let path = state
        .store
        .path_for_id(state.spaces.store_root(), file_id)
        .map_err(|e| CloseReason::new(CLOSE_LOAD_FAILURE, e.to_string()))?
        .ok_or_else(|| CloseReason::new(CLOSE_NOT_FOUND, "no file with this id"))?;
    let space = state
        .spaces
        .space_of(&path)
        .map_err(|e| CloseReason::new(CLOSE_NOT_FOUND, e.to_string()))?;
    let api_path = space.api_path(&path).unwrap_or(path);
    let key = RoomKey::Document {
        kind,
        file: file_id,
    };
    let handle = state
        .rooms
        .get_or_open(
            &key,
            Some((space, api_path)),
            state.config.room.clone(),
            &state.store,
        )
        .await
        .map_err(|e| CloseReason::new(CLOSE_LOAD_FAILURE, e.to_string()))?;
    if let Some(kernel) = state.kernels.for_file(file_id) {
        let kernel: std::sync::Arc<dyn collab::execution::Kernel> = kernel;
        let _ = handle.send(RoomInput::AttachKernel { kernel }).await;
    }
    Ok(handle)
}

/// A connection admitted to a room: the room, its key, and the rights it joins with.
pub struct Admitted {
    pub handle: RoomHandle,
    pub key: RoomKey,
    pub caps: Capabilities,
}

/// Lets a connection in, or says why not as a close frame.
pub async fn admit(
    state: &AppState,
    principal: &Principal,
    space: &Space,
    room: &str,
    session_id: Option<&str>,
) -> Result<Admitted, CloseReason> {
    let parsed = parse_document_id(room)?;
    let caps = match (&parsed, principal) {
        (_, Principal::Owner) => Capabilities::ALL,
        (Some((_, file)), someone) => someone.current_caps_for(&state.access, *file),
        // Presence rooms (JupyterLab's globalAwareness): a person's is shared with the people
        // working in the same space; not for guests.
        (None, Principal::User(_)) => Capabilities::ALL,
        (None, Principal::Guest(_)) => Capabilities::NONE,
    };
    if !caps.contains(Capabilities::WATCH) {
        return Err(CloseReason::new(
            CloseCode::Revoked,
            "you may not join this room",
        ));
    }
    let Some((kind, file_id)) = parsed else {
        let key = RoomKey::Presence {
            name: room.to_string(),
            space: match principal {
                Principal::User(_) => Some(space.root().to_path_buf()),
                _ => None,
            },
        };
        let handle = state
            .rooms
            .get_or_open(&key, None, state.config.room.clone(), &state.store)
            .await
            .map_err(|e| CloseReason::new(CLOSE_LOAD_FAILURE, e.to_string()))?;
        return Ok(Admitted { handle, key, caps });
    };
    let key = RoomKey::Document {
        kind,
        file: file_id,
    };
    if let Some(session_id) = session_id {
        let allowed = state
            .store
            .session_may_join(session_id, &key.to_string())
            .map_err(|e| CloseReason::new(CLOSE_LOAD_FAILURE, e.to_string()))?;
        if !allowed {
            let reason = json!({
                "reason": "unknown_session",
                "sessionId": state.store.session_id,
                "reloadable": true,
            });
            return Err(CloseReason::new(CLOSE_SESSION, reason.to_string()));
        }
    }
    let handle = open_file_room(state, kind, file_id).await?;
    Ok(Admitted { handle, key, caps })
}
