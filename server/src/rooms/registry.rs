//! The registry of open rooms, by [`RoomKey`]: opening a room (each loaded once, and only
//! the opening of the same room waited for), finding a file's rooms, and who is connected where
//! (the people on each notebook, the sockets of each login).

use std::path::PathBuf;
use std::sync::Arc;

use collab::{
    CloseReason, ConnectionId, DocumentKind, FileId, LoadError, Room, RoomConfig, RoomHandle,
    RoomInput, StoreError, UserName,
};
use dashmap::DashMap;

use super::keyed::KeyedLocks;
use super::socket::CLOSE_HANDSHAKE_TIMEOUT;
use crate::fs::files::LocalNotebook;
use crate::fs::space::Space;
use crate::storage::Store;

/// Which room: a document's (a file seen as one kind; its name, as clients and the store know
/// it, is `json:notebook:{fileId}` or `text:file:{fileId}`), or a presence room.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RoomKey {
    Document {
        kind: DocumentKind,
        file: FileId,
    },
    /// An awareness-only room (JupyterLab's `JupyterLab:globalAwareness`); a person's is
    /// shared with the people working in the same space only.
    Presence {
        name: String,
        space: Option<PathBuf>,
    },
}

impl RoomKey {
    /// The file whose room this is.
    pub fn file(&self) -> Option<FileId> {
        match self {
            RoomKey::Document { file, .. } => Some(*file),
            RoomKey::Presence { .. } => None,
        }
    }
}

impl std::fmt::Display for RoomKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoomKey::Document { kind, file } => write!(f, "{}:{file}", kind.room_prefix()),
            RoomKey::Presence { name, space: None } => write!(f, "{name}"),
            RoomKey::Presence {
                name,
                space: Some(space),
            } => write!(f, "{name}@{}", space.display()),
        }
    }
}

/// A room in the registry: its handle, and whether its task has finished (a closing room may
/// still be writing its final save; its successor must not load the file before that).
#[derive(Clone)]
struct OpenRoom {
    handle: RoomHandle,
    finished: tokio::sync::watch::Receiver<bool>,
}

/// The rooms open in this process, by room key.
#[derive(Clone, Default)]
pub struct Rooms {
    open: Arc<DashMap<RoomKey, OpenRoom>>,
    /// One lock per room being opened, so one document is never loaded twice while other
    /// rooms open meanwhile (a big notebook takes seconds to load).
    creating: Arc<KeyedLocks<RoomKey>>,
    /// Websocket connections still being served (their close frames not yet sent).
    sockets: Arc<tokio::sync::watch::Sender<usize>>,
    /// The logged-in people connected to each notebook, with their number of sockets: whose
    /// rights to work out again when grants or memberships change.
    people: Arc<DashMap<(FileId, UserName), usize>>,
    /// The sockets opened with each login (by the hash of its cookie), to close at logout.
    logins: Arc<DashMap<String, Vec<(RoomHandle, ConnectionId)>>>,
}

/// Counts a served websocket while it lives.
pub(super) struct SocketGuard(Arc<tokio::sync::watch::Sender<usize>>);

impl SocketGuard {
    pub(super) fn new(rooms: &Rooms) -> SocketGuard {
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
pub(super) struct PersonGuard(Rooms, (FileId, UserName));

impl PersonGuard {
    pub(super) fn new(rooms: &Rooms, file: FileId, username: &UserName) -> PersonGuard {
        let key = (file, username.clone());
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
pub(super) struct LoginGuard(Rooms, String, ConnectionId);

impl LoginGuard {
    pub(super) fn new(
        rooms: &Rooms,
        login: &str,
        handle: &RoomHandle,
        conn: ConnectionId,
    ) -> LoginGuard {
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
            let reason = CloseReason::new(collab::protocol::CloseCode::Revoked, "you logged out");
            let _ = handle.send(RoomInput::Kick { conn, reason }).await;
        }
    }

    /// The logged-in people connected to notebooks, as (notebook, user name).
    pub fn people(&self) -> Vec<(FileId, UserName)> {
        self.people.iter().map(|e| e.key().clone()).collect()
    }

    /// The open rooms of one file (a notebook may also be open as text in an editor).
    pub fn of_file(&self, file: FileId) -> Vec<RoomHandle> {
        self.open
            .iter()
            .filter(|e| e.key().file() == Some(file) && !e.value().handle.is_closed())
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

    /// The open room of `key`, or the room loaded anew: a document's from its file (`place`:
    /// the space it is in and its path there), a presence room empty. Only the opening of the
    /// same room is waited for.
    pub async fn get_or_open(
        &self,
        key: &RoomKey,
        place: Option<(Space, String)>,
        config: RoomConfig,
        store: &Store,
    ) -> Result<RoomHandle, LoadError> {
        if let Some(open) = self.open.get(key).map(|h| h.clone()) {
            if !open.handle.is_closed() {
                return Ok(open.handle);
            }
        }
        let _creating = self.creating.lock(key.clone()).await;
        if let Some(mut open) = self.open.get(key).map(|h| h.clone()) {
            if !open.handle.is_closed() {
                return Ok(open.handle);
            }
            // The room is closing: let it finish its final save before loading it anew.
            let _ = open.finished.wait_for(|done| *done).await;
        }
        let name = key.to_string();
        let room = match (key, place) {
            (RoomKey::Document { kind, file }, Some((space, api_path))) => {
                let (kind, file_id) = (*kind, *file);
                let file = LocalNotebook::new(space, api_path, file_id, store.clone());
                let log = store.update_log(&name);
                let journal = store.journal(&name, file_id);
                let room_name = name.clone();
                let started = std::time::Instant::now();
                let room = tokio::task::spawn_blocking(move || {
                    Room::open(&room_name, kind, config, Box::new(file), Box::new(log))
                        .map(|room| room.with_journal(Box::new(journal)))
                })
                .await
                .map_err(|e| LoadError::Store(StoreError::backend(e)))??;
                tracing::info!(room = %name, elapsed_ms = started.elapsed().as_millis() as u64, "room opened");
                room
            }
            _ => Room::transient(&name, config),
        };
        let handle = room.handle();
        let (done, finished) = tokio::sync::watch::channel(false);
        let entry = OpenRoom {
            handle: handle.clone(),
            finished,
        };
        self.open.insert(key.clone(), entry);
        let rooms = self.clone();
        let room_key = key.clone();
        let this_room = handle.clone();
        tokio::spawn(async move {
            room.run().await;
            let _ = done.send(true);
            rooms
                .open
                .remove_if(&room_key, |_, open| open.handle.same_room(&this_room));
        });
        Ok(handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_keys_name_rooms_as_clients_and_the_store_do() {
        let file = FileId::parse("0d5a4a2e-5f2c-4c55-9d3a-1f1f3c7c2b10").unwrap();
        let notebook = RoomKey::Document {
            kind: DocumentKind::Notebook,
            file,
        };
        assert_eq!(
            notebook.to_string(),
            "json:notebook:0d5a4a2e-5f2c-4c55-9d3a-1f1f3c7c2b10"
        );
        let text = RoomKey::Document {
            kind: DocumentKind::Text,
            file,
        };
        assert_eq!(
            text.to_string(),
            "text:file:0d5a4a2e-5f2c-4c55-9d3a-1f1f3c7c2b10"
        );
        assert_ne!(notebook, text, "the two views of a file are two rooms");
        assert_eq!((notebook.file(), text.file()), (Some(file), Some(file)));
        let presence = RoomKey::Presence {
            name: "JupyterLab:globalAwareness".into(),
            space: Some(PathBuf::from("/home/ada")),
        };
        assert_eq!(presence.to_string(), "JupyterLab:globalAwareness@/home/ada");
        assert_eq!(presence.file(), None);
    }
}
