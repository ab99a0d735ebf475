//! The room: one task per open document, driven by one mailbox.
//!
//! The task owns the yrs [`Doc`]; nothing else touches it. Everything that can happen to a room is
//! a [`RoomInput`]. After each batch of inputs the room appends every document change to the
//! [`UpdateLog`] in one transaction (group commit) and only then sends anything, so an edit a
//! client has seen echoed back is durable. Each connection has a bounded outgoing queue drained
//! by its own writer; the room only ever `try_send`s, and a connection whose queue is full is
//! dropped (it reconnects and resyncs) instead of slowing everyone else. A broadcast is encoded
//! once and shared by reference count.
//!
//! A room without a document (a transient room such as JupyterLab's `globalAwareness`) only
//! relays awareness.

mod fanout;
mod locks;
mod persistence;
mod rights;
mod running;
mod runs;
mod saving;

use persistence::{apply_update_bytes, restore, Document};

use saving::{write_snapshot, SaveError, SaveOutcome, SaveState, SaveWaiter};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, Duration, Instant};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Array, Map, ReadTxn, StateVector, Transact, TransactionMut, Update, WriteTxn};

use crate::awareness::AwarenessTable;
use crate::capabilities::{Capabilities, GrantSource};
use crate::execution::{
    self, EventSink, ExecuteJob, KernelEvent, KernelRef, KernelStatus, Requester, RunEvent, RunId,
    RunOutcome,
};
use crate::notebook::new_doc;
use crate::protocol::{
    self, ClientRequest, CloseCode, Frame, RawText, Reply, Request, RequestId, RequestKind,
    ServerEvent, ServerMessage, Status,
};
use crate::storage::{content_hash, ChatMessage, Journal, NotebookFile, StoreError, UpdateLog};
use crate::{CellId, ConnectionId, Content, DocumentKind, Identity, KernelId, NotebookError};

/// Tunables; the defaults follow what JupyterLab's clients expect.
#[derive(Clone, Debug)]
pub struct RoomConfig {
    /// How long a room stays loaded after its last client leaves (a reconnect cancels unloading).
    pub linger: Duration,
    /// Autosave runs this long after the last change...
    pub autosave_delay: Duration,
    /// ...but no later than this after the first unsaved change, even under continuous typing.
    pub autosave_max_delay: Duration,
    /// y-websocket renews awareness every ~15 s; a state silent for this long is dropped.
    pub awareness_timeout: Duration,
    /// Frames a connection may have queued before it is considered stalled and dropped.
    pub outgoing_queue: usize,
    /// How often the file is checked for changes made outside Quire.
    pub file_poll_interval: Duration,
    /// Compact the log once it exceeds this many bytes and `compact_ratio` × the snapshot.
    pub compact_min_bytes: u64,
    pub compact_ratio: u64,
    /// A run's outputs beyond this many bytes are cut, with a note saying so.
    pub max_output_bytes: usize,
    /// An edit lock lapses after this long without its holder touching the cell.
    pub lock_lease: Duration,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            linger: Duration::from_secs(60),
            autosave_delay: Duration::from_secs(1),
            autosave_max_delay: Duration::from_secs(5),
            awareness_timeout: Duration::from_secs(30),
            outgoing_queue: 1024,
            file_poll_interval: Duration::from_secs(1),
            compact_min_bytes: 1 << 20,
            compact_ratio: 4,
            max_output_bytes: 5 << 20,
            lock_lease: Duration::from_secs(60),
        }
    }
}

/// Why the server closes a connection, sent as the websocket close frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseReason {
    /// A [`CloseCode`], as the number the close frame carries.
    pub code: u16,
    pub reason: String,
}

impl CloseReason {
    pub fn new(code: CloseCode, reason: impl Into<String>) -> Self {
        CloseReason {
            code: code.code(),
            reason: reason.into(),
        }
    }
}

/// What a connection's writer sends, in order.
#[derive(Clone, Debug)]
pub enum Outgoing {
    Frame(Bytes),
    Close(CloseReason),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaveStatus {
    Success,
    /// The file already held exactly this content.
    Skipped,
    Failed(String),
}

impl SaveStatus {
    fn wire_status(&self) -> Status {
        match self {
            // JupyterLab's provider treats "skipped" as "a save is already in progress" and shows
            // an error; a file that already holds the document is a successful save.
            SaveStatus::Success | SaveStatus::Skipped => Status::Success,
            SaveStatus::Failed(_) => Status::Failed,
        }
    }
}

/// Everything that can happen to a room.
pub enum RoomInput {
    Join {
        member: Member,
        reply: oneshot::Sender<Joined>,
    },
    /// A grant changed: connections holding rights from `source` now have `caps` (`None`:
    /// revoked; those connections are closed).
    Permissions {
        source: GrantSource,
        caps: Option<Capabilities>,
    },
    Leave {
        conn: ConnectionId,
    },
    Frame {
        conn: ConnectionId,
        frame: Frame,
    },
    /// Close one connection (for example after it sent a malformed frame).
    Kick {
        conn: ConnectionId,
        reason: CloseReason,
    },
    Save {
        reply: oneshot::Sender<SaveStatus>,
    },
    Moved {
        api_path: String,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    /// Run a code cell on `kernel`, with the code as the document holds it now. A request made
    /// over the websocket (`request_id`) is answered there; `done` hears how the run ended.
    Execute {
        cell_id: CellId,
        requester: Requester,
        kernel: KernelRef,
        request_id: Option<RequestId>,
        done: Option<oneshot::Sender<Result<RunSummary, RunRefused>>>,
    },
    /// A reply for one connection (an answer the server gives on the room's behalf).
    Reply {
        conn: ConnectionId,
        reply: Reply,
    },
    /// Show this kernel's status in the document (a session now binds it to this notebook).
    AttachKernel {
        kernel: KernelRef,
    },
    /// This notebook's session no longer binds this kernel (the kernel may live on for another).
    DetachKernel {
        kernel: KernelId,
    },
    Kernel(KernelEvent),
}

/// Why a run did not happen, or did not finish.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RunRefused {
    #[error("you may not run code in this notebook")]
    NotAllowed,
    #[error("this room has no notebook")]
    NoNotebook,
    #[error("this cell is already queued or running")]
    AlreadyQueued,
    #[error("cell {0} is not a code cell")]
    NotCode(CellId),
    #[error("no cell with id {0} in this notebook")]
    NoCell(CellId),
    #[error("the notebook closed before the run ended")]
    Closed,
}

/// How a run ended, for whoever waits on it.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    pub outcome: RunOutcome,
    pub execution_count: Option<i64>,
}

/// Who is joining, with what rights, granted by what.
#[derive(Clone, Debug)]
pub struct Member {
    pub identity: Identity,
    pub caps: Capabilities,
    pub source: GrantSource,
}

impl Member {
    /// The server's owner: every capability.
    pub fn owner(identity: Identity) -> Member {
        Member {
            identity,
            caps: Capabilities::ALL,
            source: GrantSource::Owner,
        }
    }
}

/// A joined connection: its id, the queue its writer drains, and the signal that it was dropped
/// out of order (its queue overflowed).
pub struct Joined {
    pub conn: ConnectionId,
    pub outgoing: mpsc::Receiver<Outgoing>,
    pub kicked: oneshot::Receiver<CloseReason>,
}

#[derive(Debug, thiserror::Error)]
#[error("the room has closed")]
pub struct RoomClosed;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    InvalidContent(#[from] NotebookError),
    #[error("cannot read the notebook: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot read the document history: {0}")]
    Store(#[from] StoreError),
    #[error("cannot read the document history: {0}")]
    History(#[from] HistoryError),
}

/// A stored history that does not rebuild the document.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("corrupt stored update: {0}")]
    Corrupt(#[from] yrs::encoding::read::Error),
    #[error("stored update does not apply: {0}")]
    DoesNotApply(#[from] yrs::error::UpdateError),
}

/// The handle the server keeps; cheap to clone.
#[derive(Clone)]
pub struct RoomHandle {
    tx: mpsc::Sender<RoomInput>,
}

impl RoomHandle {
    pub async fn join(&self, member: Member) -> Result<Joined, RoomClosed> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(RoomInput::Join { member, reply })
            .await
            .map_err(|_| RoomClosed)?;
        rx.await.map_err(|_| RoomClosed)
    }

    pub async fn send(&self, input: RoomInput) -> Result<(), RoomClosed> {
        self.tx.send(input).await.map_err(|_| RoomClosed)
    }

    pub async fn save(&self) -> Result<SaveStatus, RoomClosed> {
        let (reply, rx) = oneshot::channel();
        self.send(RoomInput::Save { reply }).await?;
        rx.await.map_err(|_| RoomClosed)
    }

    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.send(RoomInput::Shutdown { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Where a kernel sends the events of runs this room asked for.
    pub fn events(&self) -> EventSink {
        EventSink(self.tx.clone())
    }

    pub fn same_room(&self, other: &RoomHandle) -> bool {
        self.tx.same_channel(&other.tx)
    }
}

struct Connection {
    identity: Identity,
    caps: Capabilities,
    source: GrantSource,
    out: mpsc::Sender<Outgoing>,
    kick: Option<oneshot::Sender<CloseReason>>,
    /// Refused updates that cost the guard a rebuild of its shadow (see `Room::client_update`).
    refusals: RefusalBudget,
}

/// A leaky bucket of refused updates: an honest client is refused now and then (JupyterLab
/// does not know it may not clear outputs); a client refused over and over makes the guard
/// rebuild its copy of the document each time, which on a big notebook is real work.
#[derive(Clone, Copy)]
struct RefusalBudget {
    left: f64,
    at: Instant,
}

impl RefusalBudget {
    /// Refusals a connection may run up at once, and how fast it earns one back.
    const BURST: f64 = 20.0;
    const REFILL_PER_SEC: f64 = 0.5;

    fn new() -> Self {
        RefusalBudget {
            left: Self::BURST,
            at: Instant::now(),
        }
    }

    /// Takes one; `false` once the bucket is empty.
    fn spend(&mut self) -> bool {
        let now = Instant::now();
        let earned = now.duration_since(self.at).as_secs_f64() * Self::REFILL_PER_SEC;
        self.left = (self.left + earned).min(Self::BURST);
        self.at = now;
        if self.left < 1.0 {
            return false;
        }
        self.left -= 1.0;
        true
    }
}

fn lock(file: &Mutex<Box<dyn NotebookFile>>) -> std::sync::MutexGuard<'_, Box<dyn NotebookFile>> {
    file.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct Room {
    name: String,
    config: RoomConfig,
    inbox: mpsc::Receiver<RoomInput>,
    handle: RoomHandle,
    connections: HashMap<ConnectionId, Connection>,
    awareness: AwarenessTable,
    document: Option<Document>,
    /// Document changes not yet in the log, and frames not yet sent: flushed together.
    outbox: fanout::Outbox,
    linger_until: Option<Instant>,
    stopping: bool,
    /// Replies owed once the room has shut down.
    shutdown_replies: Vec<oneshot::Sender<()>>,
    save_results: mpsc::UnboundedReceiver<SaveOutcome>,
    save_results_tx: mpsc::UnboundedSender<SaveOutcome>,
    exec: runs::Execution,
    /// Judges every client update on a shadow copy of the document before the room applies it.
    guard: crate::guard::UpdateGuard,
    locks: locks::CellLocks,
    /// Chat and audit trail (none for transient rooms).
    journal: Option<Box<dyn Journal>>,
}

/// Chat messages sent to someone who joins.
const CHAT_HISTORY: usize = 100;
/// The longest chat message accepted, in characters.
const CHAT_MAX_CHARS: usize = 4000;

/// Origin of the room's own writes to the `state` map: they do not make the notebook unsaved.
const SERVER_STATE_ORIGIN: &str = "quire-server-state";

impl Room {
    fn new(name: String, config: RoomConfig, document: Option<Document>) -> Room {
        let (tx, inbox) = mpsc::channel(1024);
        let linger_until = Some(Instant::now() + config.linger);
        let (save_results_tx, save_results) = mpsc::unbounded_channel();
        let kind = document.as_ref().map_or(DocumentKind::Notebook, |d| d.kind);
        Room {
            name,
            config,
            inbox,
            handle: RoomHandle { tx },
            connections: HashMap::new(),
            awareness: AwarenessTable::default(),
            document,
            outbox: fanout::Outbox::default(),
            linger_until,
            stopping: false,
            shutdown_replies: Vec::new(),
            save_results,
            save_results_tx,
            exec: runs::Execution::default(),
            guard: crate::guard::UpdateGuard::new(kind),
            locks: locks::CellLocks::default(),
            journal: None,
        }
    }

    /// Gives the room somewhere to keep its chat and audit trail.
    pub fn with_journal(mut self, journal: Box<dyn Journal>) -> Room {
        self.journal = Some(journal);
        self
    }

    fn audit(
        &mut self,
        conn: Option<ConnectionId>,
        identity: Option<&Identity>,
        action: &str,
        detail: &str,
    ) {
        let username = identity
            .or_else(|| {
                conn.and_then(|c| self.connections.get(&c))
                    .map(|c| &c.identity)
            })
            .map(|i| i.username.clone())
            .unwrap_or_default();
        if let Some(journal) = &mut self.journal {
            journal.audit(&username, action, detail);
        }
    }

    /// A room that only relays awareness (no document, nothing stored).
    pub fn transient(name: &str, config: RoomConfig) -> Room {
        Room::new(name.to_string(), config, None)
    }

    /// Opens a notebook: restores its history if there is one (merging any change made to the
    /// file while it was closed), or builds the document from the file and starts a history.
    /// A file that does not parse as `kind` is refused and never touched.
    pub fn open(
        name: &str,
        kind: DocumentKind,
        config: RoomConfig,
        file: Box<dyn NotebookFile>,
        mut log: Box<dyn UpdateLog>,
    ) -> Result<Room, LoadError> {
        let started = std::time::Instant::now();
        let bytes = file.read()?;
        let disk_stamp = file.stat()?;
        let on_disk = kind.parse(&bytes)?;
        let disk_hash = content_hash(&bytes);
        let history = log.load()?;
        tracing::debug!(room = name, elapsed = ?started.elapsed(), "file read and parsed, history loaded");
        let doc = new_doc();
        let changes = Arc::new(AtomicU64::new(0));
        let counter = changes.clone();
        // (After-transaction observers get the transaction itself; cleanup observers would
        // have yrs copy its state vectors and delete set for every update.)
        doc.observe_after_transaction("quire-changes", move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .expect("a new document has no transaction open");
        let now = Instant::now();
        let mut document = Document {
            kind,
            doc,
            file: Arc::new(Mutex::new(file)),
            log,
            last_seq: 0,
            log_bytes: 0,
            snapshot_len: 0,
            disk_stamp,
            disk_hash: disk_hash.clone(),
            disk_problem: None,
            base: Vec::new(),
            unsaved_since: None,
            last_change: now,
            next_poll: now,
            save: SaveState::Idle,
            changes,
            full_sync: None,
        };
        let mut outside_edit = false;
        let restored = history.is_some();
        // What the room's document is built from, in order: the update guard's shadow replays
        // the same bytes, so the two have the same structure, not just the same content (yrs
        // places a forged struct by structure).
        let start: Vec<Vec<u8>>;
        match history {
            Some(history) => {
                let saved_hash = history.saved_hash.clone();
                restore(&mut document, &history)?;
                outside_edit = saved_hash != disk_hash;
                // The file still holds the last saved state; anything logged after it is unsaved.
                document.disk_hash = saved_hash;
                start = std::iter::once(history.snapshot)
                    .chain(history.updates.into_iter().map(|(_, update)| update))
                    .collect();
            }
            None => {
                let initial = on_disk
                    .to_doc()
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
                apply_update_bytes(&document.doc, &initial)?;
                tracing::debug!(room = name, elapsed = ?started.elapsed(), "document built");
                document.log.start(&initial, &disk_hash)?;
                document.snapshot_len = initial.len() as u64;
                start = vec![initial.clone()];
                document.base = initial;
            }
        }
        tracing::debug!(room = name, elapsed = ?started.elapsed(), "history ready");
        let mut room = Room::new(name.to_string(), config, Some(document));
        room.guard.start_from(start);
        let path = lock(&room.doc_mut().file).api_path();
        let document_id = name.to_string();
        room.write_state(|txn, state| {
            state.insert(txn, "path", path.as_str());
            state.insert(txn, "document_id", document_id.as_str());
        });
        room.forget_stale_runs();
        if restored {
            let file_holds_document =
                Content::from_doc(kind, &room.doc_mut().doc.transact()) == on_disk;
            if file_holds_document && outside_edit {
                // A save landed but was not recorded (a crash between the two, say).
                room.file_holds_document(&disk_hash);
            } else if outside_edit {
                room.merge_outside_edit(on_disk, bytes);
            } else if !file_holds_document {
                room.doc_mut().unsaved_since = Some(now);
            }
        }
        room.flush();
        Ok(room)
    }

    pub fn handle(&self) -> RoomHandle {
        self.handle.clone()
    }

    fn doc_mut(&mut self) -> &mut Document {
        self.document.as_mut().expect("a document room")
    }

    /// Runs the room until it unloads (no clients for `linger`) or is shut down.
    pub async fn run(self) {
        use tracing::Instrument;
        // (Not `span.enter()`: a span entered across awaits leaks into other tasks' logs.)
        let span = tracing::info_span!("room", name = %self.name);
        self.serve().instrument(span).await
    }

    async fn serve(mut self) {
        tracing::debug!("room open");
        while !self.stopping {
            let deadline = self.next_deadline();
            tokio::select! {
                input = self.inbox.recv() => match input {
                    Some(input) => {
                        self.handle_input(input);
                        // Take whatever else is already waiting, so one log transaction covers it.
                        for _ in 0..256 {
                            match self.inbox.try_recv() {
                                Ok(input) => self.handle_input(input),
                                Err(_) => break,
                            }
                        }
                    }
                    None => self.stopping = true,
                },
                Some(outcome) = self.save_results.recv() => self.on_save_finished(outcome),
                _ = sleep_until(deadline) => self.on_timer(),
            }
            self.flush();
        }
        let reason = if self.shutdown_replies.is_empty() {
            CloseReason::new(CloseCode::GoingAway, "the room closed")
        } else {
            CloseReason::new(CloseCode::GoingAway, "the server is shutting down")
        };
        self.close_down(reason).await;
        for reply in self.shutdown_replies.drain(..) {
            let _ = reply.send(());
        }
        tracing::debug!("room closed");
    }

    /// Final save (waiting for one in flight first), then every connection is closed.
    async fn close_down(&mut self, reason: CloseReason) {
        self.inbox.close();
        if self.document.is_some() {
            // Let every save in flight (and any queued behind it) finish and be recorded.
            while self.doc_mut().save.in_flight() {
                match self.save_results.recv().await {
                    Some(outcome) => self.on_save_finished(outcome),
                    None => break,
                }
            }
            for _ in 0..2 {
                self.check_disk();
                let document = self.doc_mut();
                if document.unsaved_since.is_none() || document.disk_problem.is_some() {
                    break;
                }
                self.flush();
                let document = self.doc_mut();
                let snapshot = document
                    .doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
                let result = write_snapshot(
                    document.kind,
                    &document.file,
                    &snapshot,
                    &document.disk_hash,
                    document.disk_stamp,
                );
                if matches!(result, Err(SaveError::ChangedOnDisk)) {
                    // Merge what landed on disk, then try once more.
                    continue;
                }
                let seq = document.last_seq;
                document.save.begin(Vec::new());
                self.on_save_finished(SaveOutcome {
                    seq,
                    snapshot,
                    result,
                });
                break;
            }
            let document = self.doc_mut();
            if let (Some(problem), Some(_)) = (&document.disk_problem, document.unsaved_since) {
                tracing::warn!("closing with unsaved edits (kept in the log): {problem}");
            }
        }
        for (_, mut run) in self.exec.runs.drain() {
            if let Some(done) = run.done.take() {
                let _ = done.send(Err(RunRefused::Closed));
            }
        }
        self.flush();
        for (_, conn) in self.connections.drain() {
            let _ = conn.out.try_send(Outgoing::Close(reason.clone()));
        }
    }

    fn next_deadline(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let mut deadline = far;
        if let Some(linger) = self.linger_until {
            deadline = deadline.min(linger);
        }
        if let Some(expiry) = self.awareness.next_expiry(self.config.awareness_timeout) {
            deadline = deadline.min(expiry);
        }
        if let Some(lapse) = self.locks.next_expiry() {
            deadline = deadline.min(lapse);
        }
        if let Some(document) = &self.document {
            deadline = deadline.min(document.next_poll);
            // While a save is in flight its completion is what wakes the room.
            if let (Some(since), false) = (document.unsaved_since, document.save.in_flight()) {
                let debounced = document.last_change + self.config.autosave_delay;
                deadline = deadline.min(debounced.min(since + self.config.autosave_max_delay));
            }
        }
        deadline
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        for cell in self.locks.lapse(now) {
            self.publish_lock(&cell);
        }
        if let Some(removal) = self.awareness.expire(now, self.config.awareness_timeout) {
            self.broadcast(protocol::encode_awareness(&removal));
        }
        if self.document.is_some() {
            if now >= self.doc_mut().next_poll {
                self.doc_mut().next_poll = now + self.config.file_poll_interval;
                self.check_disk();
            }
            let (delay, max_delay) = (self.config.autosave_delay, self.config.autosave_max_delay);
            let document = self.doc_mut();
            if let Some(since) = document.unsaved_since {
                let due = (document.last_change + delay).min(since + max_delay);
                if now >= due && !document.save.in_flight() {
                    self.request_save(None);
                }
            }
        }
        if self.linger_until.is_some_and(|t| now >= t)
            && self.connections.is_empty()
            && self.exec.runs.is_empty()
        {
            self.stopping = true;
        }
    }

    fn handle_input(&mut self, input: RoomInput) {
        match input {
            RoomInput::Join { member, reply } => self.join(member, reply),
            RoomInput::Permissions { source, caps } => self.set_permissions(source, caps),
            RoomInput::Leave { conn } => self.remove(conn, None),
            RoomInput::Kick { conn, reason } => self.remove(conn, Some(reason)),
            RoomInput::Frame { conn, frame } => {
                if self.connections.contains_key(&conn) {
                    self.handle_frame(conn, frame);
                }
            }
            RoomInput::Save { reply } => match self.document {
                Some(_) => self.request_save(Some(SaveWaiter::Reply(reply))),
                None => {
                    let _ = reply.send(SaveStatus::Failed("this room has no document".into()));
                }
            },
            RoomInput::Moved { api_path } => {
                if self.document.is_some() {
                    lock(&self.doc_mut().file).moved_to(api_path.clone());
                    self.write_state(|txn, state| {
                        state.insert(txn, "path", api_path.as_str());
                    });
                }
            }
            RoomInput::Shutdown { reply } => {
                self.stopping = true;
                self.shutdown_replies.push(reply);
            }
            RoomInput::Execute {
                cell_id,
                requester,
                kernel,
                request_id,
                done,
            } => self.execute(cell_id, requester, kernel, request_id, done),
            RoomInput::AttachKernel { kernel } => self.attach_kernel(kernel),
            RoomInput::DetachKernel { kernel } => self.detach_kernel(&kernel),
            RoomInput::Reply { conn, reply } => {
                if self.connections.contains_key(&conn) {
                    self.send_message(conn, reply);
                }
            }
            RoomInput::Kernel(event) => self.on_kernel_event(event),
        }
    }

    fn join(&mut self, member: Member, reply: oneshot::Sender<Joined>) {
        let conn = ConnectionId::next();
        let (out, outgoing) = mpsc::channel(self.config.outgoing_queue.max(4));
        let (kick, kicked) = oneshot::channel();
        if reply
            .send(Joined {
                conn,
                outgoing,
                kicked,
            })
            .is_err()
        {
            return;
        }
        let caps = self.caps_here(member.caps);
        self.connections.insert(
            conn,
            Connection {
                identity: member.identity,
                caps,
                source: member.source,
                out,
                kick: Some(kick),
                refusals: RefusalBudget::new(),
            },
        );
        self.linger_until = None;
        // The server speaks first: its state vector, then everyone's presence.
        let step1 = match &self.document {
            Some(d) => d.doc.transact().state_vector().encode_v1(),
            None => StateVector::default().encode_v1(),
        };
        self.send_to(conn, protocol::encode_sync_step1(&step1));
        // What this connection may do, so a client can show it (the server enforces it anyway).
        if self.document.is_some() {
            let caps = self.connections[&conn].caps;
            self.send_message(conn, permissions(caps));
        }
        if let Some(all) = self.awareness.encode_all() {
            self.send_to(conn, protocol::encode_awareness(&all));
        }
        let history = match &mut self.journal {
            Some(journal) => journal.recent(CHAT_HISTORY).unwrap_or_else(|e| {
                tracing::warn!("cannot read the chat: {e}");
                Vec::new()
            }),
            None => Vec::new(),
        };
        if !history.is_empty() {
            let messages = history;
            self.send_message(conn, ServerEvent::ChatHistory { messages });
        }
    }

    fn remove(&mut self, conn: ConnectionId, reason: Option<CloseReason>) {
        let Some(mut connection) = self.connections.remove(&conn) else {
            return;
        };
        if let Some(reason) = reason {
            if let Some(kick) = connection.kick.take() {
                let _ = kick.send(reason);
            }
        }
        if let Some(removal) = self.awareness.remove_connection(conn) {
            self.broadcast(protocol::encode_awareness(&removal));
        }
        for cell in self.locks.release_all(conn) {
            self.publish_lock(&cell);
        }
        // Nobody else may answer a prompt: a run waiting on its gone requester is interrupted.
        for run in self.exec.runs.values() {
            if run.input_pending && run.requester.conn == Some(conn) {
                tracing::info!(cell = %run.cell_id, "requester left while asked for input: interrupting");
                run.kernel.interrupt();
            }
        }
        if self.connections.is_empty() {
            self.linger_until = Some(Instant::now() + self.config.linger);
            // Nobody left to send updates: the guard's copy of the document can go.
            self.guard.release();
        }
    }

    fn handle_frame(&mut self, conn: ConnectionId, frame: Frame) {
        match frame {
            Frame::SyncStep1(state_vector) => {
                if let Err(e) = crate::guard::wire::check_state_vector(&state_vector) {
                    return self.refuse(conn, format!("malformed state vector: {e}"));
                }
                let sv = match StateVector::decode_v1(&state_vector) {
                    Ok(sv) => sv,
                    Err(e) => return self.refuse(conn, format!("malformed state vector: {e}")),
                };
                let frame = match self.document.as_mut() {
                    Some(d) if sv.is_empty() => d.full_sync_frame(),
                    Some(d) => protocol::encode_sync_step2(
                        &d.doc.transact().encode_state_as_update_v1(&sv),
                    ),
                    None => protocol::encode_sync_step2(&Update::new().encode_v1()),
                };
                self.send_to(conn, frame);
            }
            Frame::SyncStep2(update) | Frame::SyncUpdate(update) => {
                if self.document.is_none() || update[..] == [0, 0] {
                    return;
                }
                self.client_update(conn, &update);
            }
            Frame::Awareness(payload) => {
                let identity = &self.connections[&conn].identity;
                match self
                    .awareness
                    .apply(conn, identity, &payload, Instant::now())
                {
                    Ok(Some(update)) => self.broadcast(protocol::encode_awareness(&update)),
                    Ok(None) => {}
                    Err(e) => self.refuse(conn, e.to_string()),
                }
            }
            Frame::QueryAwareness => {
                if let Some(all) = self.awareness.encode_all() {
                    self.send_to(conn, protocol::encode_awareness(&all));
                }
            }
            Frame::Raw { text, tail } => self.handle_raw(conn, &text, &tail),
        }
    }

    fn handle_raw(&mut self, conn: ConnectionId, text: &str, tail: &[u8]) {
        let decoded = match RawText::decode(text) {
            Ok(decoded) => decoded,
            Err(invalid) => return self.refuse(conn, invalid.to_string()),
        };
        match decoded {
            RawText::Save => {
                let Some((save_id, _)) = protocol::read_var_uint(tail) else {
                    return self.refuse(conn, "RAW save without a request id".into());
                };
                if !self.may(conn, Capabilities::SAVE) {
                    let reason = "you may not save this notebook".to_string();
                    return self.answer_save(
                        SaveWaiter::Raw { conn, save_id },
                        &SaveStatus::Failed(reason),
                    );
                }
                self.audit(Some(conn), None, "save", "asked to save");
                match self.document {
                    Some(_) => self.request_save(Some(SaveWaiter::Raw { conn, save_id })),
                    None => self.answer_save(
                        SaveWaiter::Raw { conn, save_id },
                        &SaveStatus::Failed("this room has no document".into()),
                    ),
                }
            }
            RawText::Request(request) => self.handle_request(conn, request),
            RawText::Malformed(malformed) => {
                tracing::info!(%conn, "refusing a request: {malformed}");
                self.send_message(conn, malformed.reply());
            }
            RawText::Other => tracing::debug!(%conn, "ignoring RAW message {text:?}"),
        }
    }

    /// An update depends on history this room never had: the client's document comes from
    /// somewhere else. JupyterLab offers to revert or save a copy.
    fn conflict(&mut self, conn: ConnectionId) {
        tracing::info!(%conn, "update cannot be integrated; sending conflict");
        self.send_message(conn, ServerEvent::Conflict);
    }

    /// A malformed message closes that one connection with the reason; the room carries on.
    fn refuse(&mut self, conn: ConnectionId, reason: String) {
        tracing::info!(%conn, "closing connection: {reason}");
        let reason = CloseReason::new(CloseCode::BadRequest, truncate(&reason, 120));
        self.remove(conn, Some(reason));
    }

    /// A change the room made to its document itself: the update guard's shadow follows it,
    /// and it is logged and broadcast.
    fn record_change(&mut self, delta: Bytes, dirties: bool) {
        self.guard.room_changed(&delta);
        self.log_and_broadcast(delta, dirties);
    }

    /// A change made to the document: logged, then broadcast to everyone (the sender included).
    fn log_and_broadcast(&mut self, delta: Bytes, dirties: bool) {
        self.outbox.change(delta);
        if dirties {
            let now = Instant::now();
            let document = self.doc_mut();
            document.last_change = now;
            document.unsaved_since.get_or_insert(now);
        }
    }

    /// Writes to the `state` map as the server; the change is logged and broadcast.
    fn write_state(&mut self, f: impl FnOnce(&mut TransactionMut, &yrs::MapRef)) {
        let document = self.doc_mut();
        let delta = {
            let mut txn = document.doc.transact_mut_with(SERVER_STATE_ORIGIN);
            let state = txn.get_or_insert_map("state");
            f(&mut txn, &state);
            txn.encode_update_v1()
        };
        if delta != [0, 0] {
            self.record_change(Bytes::from(delta), false);
        }
    }

    /// Appends pending changes to the log, then sends queued frames.
    fn flush(&mut self) {
        // Dropping a connection queues its presence removal, and releasing its locks writes
        // the document: keep going until everything is logged and sent, logging first.
        loop {
            let document = self.document.as_mut();
            let committed = self.outbox.commit(|updates| {
                let document = document.expect("changes need a document");
                let seq = document.log.append(updates)?;
                document.last_seq = seq;
                Ok(seq)
            });
            match committed {
                Ok(Some((_, bytes))) => self.doc_mut().log_bytes += bytes,
                Ok(None) => {}
                Err::<_, StoreError>(e) => {
                    // Nothing unlogged may be acknowledged: close every connection (clients
                    // reconnect and resync) and unload, saving what we can to the file.
                    tracing::error!("cannot append to the update log: {e}");
                    self.stopping = true;
                    for (_, conn) in self.connections.drain() {
                        let _ = conn.out.try_send(Outgoing::Close(CloseReason::new(
                            CloseCode::ServerError,
                            "the server cannot store edits right now",
                        )));
                    }
                    return;
                }
            }
            let frames = self.outbox.take_frames();
            if frames.is_empty() {
                return;
            }
            for (target, frame) in frames {
                let undelivered = fanout::deliver(target, frame, &self.connections, |c| &c.out);
                for (conn, why) in undelivered {
                    match why {
                        fanout::Undelivered::QueueFull => {
                            tracing::info!(%conn, "outgoing queue full; dropping the connection");
                            let reason = CloseReason::new(
                                CloseCode::TryAgain,
                                "client fell behind; reconnect to resync",
                            );
                            self.remove(conn, Some(reason));
                        }
                        fanout::Undelivered::Gone => self.remove(conn, None),
                    }
                }
            }
        }
    }

    fn send_to(&mut self, conn: ConnectionId, frame: Bytes) {
        self.outbox.send_to(conn, frame);
    }

    /// Sends one RAW JSON message to one connection.
    fn send_message(&mut self, conn: ConnectionId, message: impl Into<ServerMessage>) {
        self.send_to(conn, protocol::encode_message(&message.into()));
    }

    fn broadcast(&mut self, frame: Bytes) {
        self.outbox.broadcast(frame);
    }
}

/// What a connection may do, as it is told.
fn permissions(caps: Capabilities) -> ServerEvent {
    let capabilities = caps.names().into_iter().map(String::from).collect();
    ServerEvent::Permissions { capabilities }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}
