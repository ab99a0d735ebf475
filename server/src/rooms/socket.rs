//! JupyterLab's collaboration endpoints: the session PUT, the room websocket, and `/api/me`.
//!
//! `PUT /api/collaboration/session/{path}` gives a file its stable id; the client then opens
//! `/api/collaboration/room/{format}:{type}:{fileId}?sessionId=…`. A room id with fewer than two
//! colons (JupyterLab's `JupyterLab:globalAwareness`) is a transient, awareness-only room.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use collab::protocol::{decode_frame, Frame};
use collab::{
    Capabilities, CloseReason, ConnectionId, DocumentKind, FileId, Identity, LoadError, Outgoing,
    Room, RoomHandle, RoomInput,
};
use dashmap::DashMap;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::Instrument;

use crate::http::error::{ApiError, ApiResult, JsonBody};
use crate::fs::files::LocalNotebook;
use crate::api::sharing::Principal;
use crate::fs::space::Space;
use crate::AppState;

/// Bytes read from a websocket at a time (larger frames are read in several chunks).
const IDLE_READ_BUFFER: usize = 4096;

/// Close codes JupyterLab's provider understands.
const CLOSE_NOT_FOUND: u16 = 4404;
const CLOSE_BAD_REQUEST: u16 = 4400;
const CLOSE_LOAD_FAILURE: u16 = 4500;
const CLOSE_SESSION: u16 = 1003;

/// A room in the registry: its handle, and whether its task has finished (a closing room may
/// still be writing its final save; its successor must not load the file before that).
#[derive(Clone)]
struct OpenRoom {
    handle: RoomHandle,
    finished: tokio::sync::watch::Receiver<bool>,
}

/// The rooms open in this process, by room name.
#[derive(Clone, Default)]
pub struct Rooms {
    open: Arc<DashMap<String, OpenRoom>>,
    /// One lock per room name being opened, so one document is never loaded twice while
    /// other rooms open meanwhile (a big notebook takes seconds to load). An entry lives while
    /// someone holds or waits for it.
    creating: Arc<DashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Websocket connections still being served (their close frames not yet sent).
    sockets: Arc<tokio::sync::watch::Sender<usize>>,
    /// The logged-in people connected to each notebook, with their number of sockets: whose
    /// rights to work out again when grants or memberships change.
    people: Arc<DashMap<(FileId, String), usize>>,
    /// The sockets opened with each login (by the hash of its cookie), to close at logout.
    logins: Arc<DashMap<String, Vec<(RoomHandle, ConnectionId)>>>,
}

/// Counts a served websocket while it lives.
struct SocketGuard(Arc<tokio::sync::watch::Sender<usize>>);

impl SocketGuard {
    fn new(rooms: &Rooms) -> SocketGuard {
        rooms.sockets.send_modify(|n| *n += 1);
        SocketGuard(rooms.sockets.clone())
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// Counts a person's socket on a notebook while it lives.
struct PersonGuard(Rooms, (FileId, String));

impl PersonGuard {
    fn new(rooms: &Rooms, file: FileId, username: &str) -> PersonGuard {
        let key = (file, username.to_string());
        *rooms.people.entry(key.clone()).or_insert(0) += 1;
        PersonGuard(rooms.clone(), key)
    }
}

impl Drop for PersonGuard {
    fn drop(&mut self) {
        self.0.people.remove_if_mut(&self.1, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

/// Remembers a socket under the login it was opened with, while it lives.
struct LoginGuard(Rooms, String, ConnectionId);

impl LoginGuard {
    fn new(rooms: &Rooms, login: &str, handle: &RoomHandle, conn: ConnectionId) -> LoginGuard {
        rooms
            .logins
            .entry(login.to_string())
            .or_default()
            .push((handle.clone(), conn));
        LoginGuard(rooms.clone(), login.to_string(), conn)
    }
}

impl Drop for LoginGuard {
    fn drop(&mut self) {
        self.0.logins.remove_if_mut(&self.1, |_, sockets| {
            sockets.retain(|(_, conn)| *conn != self.2);
            sockets.is_empty()
        });
    }
}

/// A claim on the creation lock of one room name; the registry forgets the lock when its last
/// claim goes (even when the claiming request is cancelled).
struct CreatingSlot<'a> {
    rooms: &'a Rooms,
    name: &'a str,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl<'a> CreatingSlot<'a> {
    fn new(rooms: &'a Rooms, name: &'a str) -> CreatingSlot<'a> {
        let lock = rooms.creating.entry(name.to_string()).or_default().clone();
        CreatingSlot { rooms, name, lock }
    }
}

impl Drop for CreatingSlot<'_> {
    fn drop(&mut self) {
        // Two references left: the registry's and ours (a waiter holds a third).
        self.rooms
            .creating
            .remove_if(self.name, |_, lock| Arc::strong_count(lock) == 2);
    }
}

impl Rooms {
    /// The logins (their cookies' hashes) that have sockets open.
    pub fn logins(&self) -> Vec<String> {
        self.logins.iter().map(|e| e.key().clone()).collect()
    }

    /// Closes every socket opened with a login (its cookie's hash); for logout.
    pub async fn close_login(&self, login: &str) {
        let sockets = self
            .logins
            .get(login)
            .map(|s| s.clone())
            .unwrap_or_default();
        for (handle, conn) in sockets {
            let reason = CloseReason::new(collab::CLOSE_REVOKED, "you logged out");
            let _ = handle.send(RoomInput::Kick { conn, reason }).await;
        }
    }

    /// The logged-in people connected to notebooks, as (notebook, user name).
    pub fn people(&self) -> Vec<(FileId, String)> {
        self.people.iter().map(|e| e.key().clone()).collect()
    }

    /// The open rooms of one file (a notebook may also be open as text in an editor).
    pub fn of_file(&self, file: FileId) -> Vec<RoomHandle> {
        let suffix = format!(":{file}");
        self.open
            .iter()
            .filter(|e| e.key().ends_with(&suffix) && !e.value().handle.is_closed())
            .map(|e| e.value().handle.clone())
            .collect()
    }

    /// Saves every room and closes its connections, then gives their close frames a moment
    /// to leave (the process exits right after); for graceful shutdown.
    pub async fn shutdown_all(&self) {
        let handles: Vec<RoomHandle> = self.open.iter().map(|e| e.value().handle.clone()).collect();
        for handle in handles {
            handle.shutdown().await;
        }
        let mut sockets = self.sockets.subscribe();
        let drained = sockets.wait_for(|n| *n == 0);
        let _ = tokio::time::timeout(
            CLOSE_HANDSHAKE_TIMEOUT + std::time::Duration::from_secs(1),
            drained,
        )
        .await;
    }

    async fn get_or_open(
        &self,
        state: &AppState,
        name: &str,
        file: Option<(DocumentKind, FileId, Space, String)>,
    ) -> Result<RoomHandle, LoadError> {
        if let Some(open) = self.open.get(name).map(|h| h.clone()) {
            if !open.handle.is_closed() {
                return Ok(open.handle);
            }
        }
        let slot = CreatingSlot::new(self, name);
        let _creating = slot.lock.lock().await;
        if let Some(mut open) = self.open.get(name).map(|h| h.clone()) {
            if !open.handle.is_closed() {
                return Ok(open.handle);
            }
            // The room is closing: let it finish its final save before loading it anew.
            let _ = open.finished.wait_for(|done| *done).await;
        }
        let config = state.config.room.clone();
        let room = match file {
            None => Room::transient(name, config),
            Some((kind, file_id, space, api_path)) => {
                let file = LocalNotebook::new(space, api_path, file_id, state.store.clone());
                let log = state.store.update_log(name);
                let journal = state.store.journal(name, file_id);
                let room_name = name.to_string();
                let started = std::time::Instant::now();
                let room = tokio::task::spawn_blocking(move || {
                    Room::open(&room_name, kind, config, Box::new(file), Box::new(log))
                        .map(|room| room.with_journal(Box::new(journal)))
                })
                .await
                .map_err(|e| LoadError::Store(e.to_string()))??;
                tracing::info!(room = %name, elapsed_ms = started.elapsed().as_millis() as u64, "room opened");
                room
            }
        };
        let handle = room.handle();
        let (done, finished) = tokio::sync::watch::channel(false);
        let entry = OpenRoom {
            handle: handle.clone(),
            finished,
        };
        self.open.insert(name.to_string(), entry);
        let rooms = self.clone();
        let room_name = name.to_string();
        let this_room = handle.clone();
        tokio::spawn(async move {
            room.run().await;
            let _ = done.send(true);
            rooms
                .open
                .remove_if(&room_name, |_, open| open.handle.same_room(&this_room));
        });
        Ok(handle)
    }
}

/// The identity of whoever holds the token (single-user mode: the account running Quire).
pub fn owner_identity() -> Identity {
    let username = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "quire".to_string());
    Identity::from_username(&username)
}

pub async fn me(
    State(state): State<AppState>,
    axum::Extension(principal): axum::Extension<Principal>,
) -> Json<Value> {
    match principal {
        Principal::Owner => Json(json!({"identity": state.identity, "permissions": {}})),
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
    let api_path = crate::fs::paths::Root::normalize(&api_path)?;
    if let Principal::Guest(guest) = &principal {
        // A guest may not give ids to files; only their notebook's is theirs to learn.
        let theirs = state
            .store
            .path_for_id(state.root.path(), guest.file)
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
            state.root.path(),
            &space.store_path(api_path),
            crate::storage::DiskIdentity::of(&meta),
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
    if !crate::access::auth::origin_allowed(&headers) {
        return ApiError::new(StatusCode::FORBIDDEN, "cross-origin websocket refused")
            .into_response();
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

/// A document room's name (`json:notebook:{fileId}`), parsed.
fn parse_document_id(room: &str) -> Result<Option<(DocumentKind, FileId, String)>, CloseReason> {
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
    let name = format!("{}:{file_id}", kind.room_prefix());
    Ok(Some((kind, file_id, name)))
}

/// Opens (or finds) the room of a document, for a request that names it by id.
pub async fn open_document(state: &AppState, document_id: &str) -> Result<RoomHandle, CloseReason> {
    match parse_document_id(document_id)? {
        Some((kind, file_id, name)) => open_file_room(state, kind, file_id, &name).await,
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
    name: &str,
) -> Result<RoomHandle, CloseReason> {
    let path = state
        .store
        .path_for_id(state.root.path(), file_id)
        .map_err(|e| CloseReason::new(CLOSE_LOAD_FAILURE, e.to_string()))?
        .ok_or_else(|| CloseReason::new(CLOSE_NOT_FOUND, "no file with this id"))?;
    let space = state
        .space_of(&path)
        .map_err(|e| CloseReason::new(CLOSE_NOT_FOUND, e.message))?;
    let api_path = space.api_path(&path).unwrap_or(path);
    let handle = state
        .rooms
        .get_or_open(state, name, Some((kind, file_id, space, api_path)))
        .await
        .map_err(|e| CloseReason::new(CLOSE_LOAD_FAILURE, e.to_string()))?;
    if let Some(kernel) = state.kernels.for_file(file_id) {
        let kernel: std::sync::Arc<dyn collab::execution::Kernel> = kernel;
        let _ = handle.send(RoomInput::AttachKernel { kernel }).await;
    }
    Ok(handle)
}

/// A connection admitted to a room: the room, its name, and the rights it joins with.
struct Admitted {
    handle: RoomHandle,
    name: String,
    file: Option<FileId>,
    caps: Capabilities,
}

/// Lets a connection in, or says why not as a close frame.
async fn admit(
    state: &AppState,
    principal: &Principal,
    space: &Space,
    room: &str,
    session_id: Option<&str>,
) -> Result<Admitted, CloseReason> {
    let parsed = parse_document_id(room)?;
    let caps = match (&parsed, principal) {
        (_, Principal::Owner) => Capabilities::ALL,
        (Some((_, file, _)), someone) => someone.current_caps_for(state, *file),
        // Presence rooms (JupyterLab's globalAwareness): a person's is shared with the people
        // working in the same space; not for guests.
        (None, Principal::User(_)) => Capabilities::ALL,
        (None, Principal::Guest(_)) => Capabilities::NONE,
    };
    if !caps.contains(Capabilities::WATCH) {
        return Err(CloseReason::new(
            collab::CLOSE_REVOKED,
            "you may not join this room",
        ));
    }
    let Some((kind, file_id, name)) = parsed else {
        let name = match principal {
            Principal::User(_) => format!("{room}@{}", space.root().display()),
            _ => room.to_string(),
        };
        let handle = state
            .rooms
            .get_or_open(state, &name, None)
            .await
            .map_err(|e| CloseReason::new(CLOSE_LOAD_FAILURE, e.to_string()))?;
        return Ok(Admitted {
            handle,
            name,
            file: None,
            caps,
        });
    };
    if let Some(session_id) = session_id {
        let allowed = state
            .store
            .session_may_join(session_id, &name)
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
    let handle = open_file_room(state, kind, file_id, &name).await?;
    Ok(Admitted {
        handle,
        name,
        file: Some(file_id),
        caps,
    })
}

/// How long to wait for a client to answer our close frame. Clients such as y-websocket send
/// frames the moment the socket opens; dropping the socket with those unread resets the TCP
/// connection, and the client then sees 1006 instead of our close code.
const CLOSE_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long one write to a client may stay blocked (the client reads nothing) before the
/// connection is dropped. Generous: a slow link still makes progress within it.
const WRITE_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

async fn close_socket(mut socket: WebSocket, reason: CloseReason) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: reason.code,
            reason: truncate_reason(&reason.reason).into(),
        })))
        .await;
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// A close reason is at most 123 bytes.
/// Sends the close frame that tells the client why its connection ends.
async fn send_close(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    reason: CloseReason,
) {
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: reason.code,
            reason: truncate_reason(&reason.reason).into(),
        })))
        .await;
}

fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

async fn serve_socket(
    state: AppState,
    principal: Principal,
    space: Space,
    socket: WebSocket,
    room: String,
    session_id: Option<String>,
) {
    let mut joined = None;
    // A room that unloads between lookup and join is simply opened again.
    for _ in 0..3 {
        let admitted = match admit(&state, &principal, &space, &room, session_id.as_deref()).await {
            Ok(admitted) => admitted,
            Err(reason) => {
                tracing::info!(room = %room, code = reason.code, "refusing connection: {}", reason.reason);
                return close_socket(socket, reason).await;
            }
        };
        let member = match admitted.file {
            Some(file) => principal.member(&state, file, admitted.caps),
            // A presence room: the administrator, or a person in their space.
            None => match &principal {
                Principal::Owner => collab::Member::owner(state.identity.clone()),
                _ => collab::Member {
                    identity: principal.identity(&state),
                    caps: admitted.caps,
                    source: collab::GrantSource::Person(principal.username(&state)),
                },
            },
        };
        if let Ok(j) = admitted.handle.join(member).await {
            joined = Some((
                admitted.handle,
                admitted.name,
                admitted.file,
                admitted.caps,
                j,
            ));
            break;
        }
    }
    let Some((handle, name, file, admitted_caps, joined)) = joined else {
        return close_socket(
            socket,
            CloseReason::new(1013, "room unavailable, try again"),
        )
        .await;
    };
    let _counted = SocketGuard::new(&state.rooms);
    let _person = match (&principal, file) {
        (Principal::User(user), Some(file)) => {
            Some(PersonGuard::new(&state.rooms, file, &user.username))
        }
        _ => None,
    };
    let _login = match &principal {
        Principal::User(user) => Some(LoginGuard::new(
            &state.rooms,
            &user.login,
            &handle,
            joined.conn,
        )),
        _ => None,
    };
    // Rights may have changed while the room loaded and the connection joined (a change from
    // now on reaches it through the registrations above): work them out once more.
    if let (Some(file), false) = (file, matches!(principal, Principal::Owner)) {
        let now = principal.current_caps_for(&state, file);
        if now != admitted_caps {
            let source = principal.member(&state, file, now).source;
            let caps = now.contains(Capabilities::WATCH).then_some(now);
            let _ = handle.send(RoomInput::Permissions { source, caps }).await;
        }
    }
    let conn = joined.conn;
    let span = tracing::info_span!("connection", %conn, room = %name);
    // (An entered span must not be held across awaits: other tasks would log inside it.)
    async move {
        tracing::debug!("joined");
        let (mut sink, mut stream) = socket.split();
        let mut outgoing = joined.outgoing;
        let mut kicked = joined.kicked;
        let (writer_done, mut writer_ended) = tokio::sync::oneshot::channel::<()>();
        let writer = tokio::spawn(async move {
            // The room drops the kick sender when it lets a connection go normally.
            let mut kick_pending = true;
            loop {
                let next = tokio::select! {
                    biased;
                    reason = &mut kicked, if kick_pending => match reason {
                        Ok(reason) => Outgoing::Close(reason),
                        Err(_) => {
                            kick_pending = false;
                            continue;
                        }
                    },
                    out = outgoing.recv() => match out {
                        Some(out) => out,
                        None => break,
                    },
                };
                let bytes = match next {
                    Outgoing::Frame(bytes) => bytes,
                    Outgoing::Close(reason) => {
                        let _ = tokio::time::timeout(
                            CLOSE_HANDSHAKE_TIMEOUT,
                            send_close(&mut sink, reason),
                        )
                        .await;
                        break;
                    }
                };
                // Everything already queued goes out in one write: an edit and the cursor move
                // that follows it, or a burst, cost one syscall, not one each.
                let write = async {
                    let mut close = None;
                    let mut ok = sink.feed(Message::Binary(bytes)).await.is_ok();
                    while ok {
                        match outgoing.try_recv() {
                            Ok(Outgoing::Frame(bytes)) => {
                                ok = sink.feed(Message::Binary(bytes)).await.is_ok();
                            }
                            Ok(Outgoing::Close(reason)) => {
                                close = Some(reason);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    (ok && sink.flush().await.is_ok(), close)
                };
                // A client that stopped reading blocks the write: the room's kick (it drops a
                // connection whose queue is full, or whose access was revoked) or a long stall
                // ends the connection anyway, instead of holding its socket and queue forever.
                let written = tokio::select! {
                    biased;
                    reason = &mut kicked, if kick_pending => Err(reason.ok()),
                    written = tokio::time::timeout(WRITE_STALL_TIMEOUT, write) => {
                        written.map_err(|_| {
                            tracing::info!("the client has not read for {WRITE_STALL_TIMEOUT:?}; closing");
                            None
                        })
                    }
                };
                match written {
                    Ok((true, None)) => {}
                    Ok((true, Some(reason))) => {
                        let _ = tokio::time::timeout(
                            CLOSE_HANDSHAKE_TIMEOUT,
                            send_close(&mut sink, reason),
                        )
                        .await;
                        break;
                    }
                    Ok((false, _)) => break,
                    Err(reason) => {
                        // Mid-write: the close frame can only follow what was half sent, and
                        // the client is not reading anyway. Drop the connection.
                        if let Some(reason) = reason {
                            tracing::info!(code = reason.code, "dropping a connection that does not read: {}", reason.reason);
                        }
                        drop(writer_done);
                        return;
                    }
                }
            }
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, sink.close()).await;
            drop(writer_done);
        });
        let limit = state.config.max_frame_bytes;
        let mut client_gone = false;
        loop {
            // The writer ends when the connection is over on our side (a close sent, or a
            // client that stopped reading dropped): stop reading then too.
            let message = tokio::select! {
                message = stream.next() => message,
                _ = &mut writer_ended => break,
            };
            let Some(message) = message else {
                break;
            };
            let bytes = match message {
                Ok(Message::Binary(bytes)) => bytes,
                Ok(Message::Close(_)) | Err(_) => {
                    client_gone = true;
                    break;
                }
                Ok(Message::Text(_)) => {
                    let reason = CloseReason::new(
                        CLOSE_BAD_REQUEST,
                        "text frames are not part of the protocol",
                    );
                    let _ = handle.send(RoomInput::Kick { conn, reason }).await;
                    break;
                }
                Ok(_) => continue,
            };
            match decode_frame(&bytes, limit) {
                Ok(Frame::Raw { text, tail }) => {
                    let input = match kernel_request(&text) {
                        Some(request) => {
                            take_kernel_request(&state, &principal, &name, conn, request).await
                        }
                        None => RoomInput::Frame {
                            conn,
                            frame: Frame::Raw { text, tail },
                        },
                    };
                    if handle.send(input).await.is_err() {
                        break;
                    }
                }
                Ok(frame) => {
                    if handle.send(RoomInput::Frame { conn, frame }).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::info!("closing connection: {e}");
                    let reason = CloseReason::new(e.close_code(), e.to_string());
                    let _ = handle.send(RoomInput::Kick { conn, reason }).await;
                    break;
                }
            }
            if writer.is_finished() {
                break;
            }
        }
        if !client_gone {
            // We are closing: read (and drop) until the client answers our close frame, so the
            // connection ends cleanly and the client sees our close code.
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
                while let Some(Ok(message)) = stream.next().await {
                    if matches!(message, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
        let _ = handle.send(RoomInput::Leave { conn }).await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), writer).await;
        tracing::debug!("left");
    }
    .instrument(span)
    .await;
}

/// Our client's RAW JSON requests that start or stop kernels (`execute`, `shutdown`): the server
/// owns kernels, so these are taken here, not in the room.
struct KernelRequest {
    kind: &'static str,
    message: Value,
}

fn kernel_request(text: &str) -> Option<KernelRequest> {
    if !text.starts_with('{') {
        return None;
    }
    let message: Value = serde_json::from_str(text).ok()?;
    let kind = match message.get("type").and_then(Value::as_str)? {
        "execute" => "execute",
        "shutdown" => "shutdown",
        _ => return None,
    };
    Some(KernelRequest { kind, message })
}

/// Answers a kernel request: for `execute`, a run on the notebook's kernel (starting one if the
/// notebook has none); for `shutdown`, the kernel stopped; or a refusal for the requester. The
/// right to run code is checked before any kernel is started or stopped; the room checks an
/// execute again with the connection's rights as they are when it reaches it (grants change
/// live).
async fn take_kernel_request(
    state: &AppState,
    principal: &Principal,
    room: &str,
    conn: ConnectionId,
    request: KernelRequest,
) -> RoomInput {
    let KernelRequest { kind, message } = request;
    let request_id = message.get("request_id").cloned();
    let answer = |status: &str, reason: Option<&str>| RoomInput::Reply {
        conn,
        message: json!({"type": kind, "responseTo": request_id, "status": status, "reason": reason}),
    };
    let file = match parse_document_id(room) {
        Ok(Some((DocumentKind::Notebook, file, _))) => file,
        _ => return answer("refused", Some("only notebooks run code")),
    };
    if !principal
        .current_caps_for(state, file)
        .contains(Capabilities::EXECUTE)
    {
        return answer("refused", Some("you may not run code in this notebook"));
    }
    if kind == "shutdown" {
        return if state.kernels.shutdown_for_file(file).await {
            answer("ok", None)
        } else {
            answer("refused", Some("no kernel is running for this notebook"))
        };
    }
    let Some(cell_id) = message.get("cell_id").and_then(Value::as_str) else {
        return answer("refused", Some("an execute request needs a \"cell_id\""));
    };
    match state.kernels.ensure_for_file(state, file).await {
        Ok(kernel) => RoomInput::Execute {
            cell_id: cell_id.to_string(),
            requester: collab::execution::Requester {
                identity: principal.identity(state),
                conn: Some(conn),
            },
            kernel,
            request_id,
            done: None,
        },
        Err(e) => answer("refused", Some(&e.message)),
    }
}
