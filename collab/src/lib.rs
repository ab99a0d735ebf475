//! The heart of Quire: a notebook as a Yjs document and the room that merges everyone's edits.
//!
//! This crate knows nothing of HTTP or ZeroMQ. It holds the nbformat ⇄ Y document conversion
//! ([`Notebook`]), the websocket framing ([`protocol`]), awareness, the external-edit merge and the
//! room actor ([`Room`]), which persists through the storage traits [`UpdateLog`] and
//! [`NotebookFile`] that the server implements.

pub mod awareness;
pub mod capabilities;
mod content;
pub mod execution;
pub mod guard;
mod ids;
pub mod merge;
pub mod notebook;
pub mod protocol;
mod room;
mod storage;

/// The deepest nesting of arrays and objects (a scalar is 0, `[]` is 1) in any one JSON or Yjs
/// value a room holds: an entry of a cell's or the notebook's metadata, a field of an output, a
/// cell's attachments. Everything that walks such values recursively stops there, and a
/// notebook file holding a deeper one is refused with an error naming it. serde_json's parser
/// accepts 127 by default; a notebook file may nest a few levels more than its values (see
/// [`notebook::FILE_ENVELOPE_DEPTH`]).
pub const MAX_JSON_DEPTH: usize = 128;

pub use capabilities::{Capabilities, Capability, GrantSource, Role, UnknownCapability};
pub use content::{Content, DocumentKind};
pub use ids::{CellId, ConnectionId, FileId, Identity, KernelId, LinkId, RunId, UserName};
pub use notebook::{Cell, CellType, Notebook, NotebookError, LOAD_CLIENT_ID};
pub use room::{
    CloseReason, HistoryError, Joined, LoadError, Member, Outgoing, Room, RoomClosed, RoomConfig,
    RoomHandle, RoomInput, RunRefused, RunSummary, SaveStatus,
};
pub use storage::{
    content_hash, ChatMessage, FileStamp, History, Journal, NotebookFile, StoreError, UpdateLog,
};
