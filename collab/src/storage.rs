//! What a room needs from the outside world, as traits the server implements.
//!
//! [`NotebookFile`] is the .ipynb on disk; [`UpdateLog`] is the durable Yjs history. Both are
//! called synchronously from the room's task: each call is short (a stat, one SQLite transaction,
//! one atomic file write).

use bytes::Bytes;

/// Why a store could not do what a room asked. A room does the same whatever the cause (it does
/// not load, or stops taking edits until it is opened again), so the backend's own error (in the
/// server, SQLite's) is kept whole, for the one place that logs it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Backend(Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    pub fn backend(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StoreError::Backend(cause.into())
    }
}

/// Enough of a file's metadata to notice that it changed underneath us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    pub modified_ns: i128,
    pub len: u64,
    pub inode: u64,
}

pub trait NotebookFile: Send + 'static {
    /// The path clients see (relative to the served root), for `state.path`.
    fn api_path(&self) -> String;
    /// `None` when the file no longer exists.
    fn stat(&self) -> std::io::Result<Option<FileStamp>>;
    fn read(&self) -> std::io::Result<Vec<u8>>;
    /// Replaces the file atomically (temporary file, fsync, rename), keeping owner and mode.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<FileStamp>;
    /// The file was renamed or moved through the server.
    fn moved_to(&mut self, api_path: String);
}

/// A document's durable history: a snapshot plus the updates after it.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub snapshot: Vec<u8>,
    /// (sequence number, update), in order; every number is above the snapshot's.
    pub updates: Vec<(u64, Vec<u8>)>,
    /// The document as of this sequence number is what the file held at the last save or load.
    pub saved_seq: u64,
    /// sha256 (hex) of the file's bytes at that point.
    pub saved_hash: String,
}

pub trait UpdateLog: Send + 'static {
    fn load(&mut self) -> Result<Option<History>, StoreError>;
    /// Begins a history from a snapshot of a freshly loaded file (sequence number 0).
    fn start(&mut self, snapshot: &[u8], saved_hash: &str) -> Result<(), StoreError>;
    /// Appends updates in one transaction; returns the sequence number of the last one.
    fn append(&mut self, updates: &[Bytes]) -> Result<u64, StoreError>;
    /// Records that the document as of `seq` is what the file now holds.
    fn mark_saved(&mut self, seq: u64, saved_hash: &str) -> Result<(), StoreError>;
    /// Replaces everything up to `seq` by `snapshot` (the document as of `seq`, a saved state).
    fn compact(&mut self, snapshot: &[u8], seq: u64, saved_hash: &str) -> Result<(), StoreError>;
}

/// One chat message of a notebook.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ChatMessage {
    /// Assigned by the journal, increasing.
    #[cfg_attr(test, ts(type = "number"))]
    pub id: u64,
    /// Milliseconds since the Unix epoch.
    pub at: f64,
    pub username: String,
    pub name: String,
    pub color: String,
    pub text: String,
}

/// What a room remembers besides its document: the notebook's chat and its audit trail.
pub trait Journal: Send + 'static {
    /// Stores a message; returns its id.
    fn post(&mut self, message: &ChatMessage) -> Result<u64, StoreError>;
    /// The latest `limit` messages, oldest first.
    fn recent(&mut self, limit: usize) -> Result<Vec<ChatMessage>, StoreError>;
    /// Records something done to the notebook (an execution, a save asked for).
    fn audit(&mut self, username: &str, action: &str, detail: &str);
}

/// sha256 of a file's bytes, as hex: the `hash` Jupyter's contents API reports.
pub fn content_hash(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}
