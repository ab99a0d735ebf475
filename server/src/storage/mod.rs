//! The embedded store: one SQLite file under the state directory, and every SQL statement of
//! the server (no other module uses SQLite).
//!
//! It holds file ids (uuid ↔ path, following renames and moves), the server sessions a client's
//! `sessionId` refers to, each document's Yjs history (a snapshot plus the updates after it),
//! chat and the audit log (here); logins (`logins.rs`); live-share links and guest sessions
//! (`links.rs`); grants and projects (`grants.rs`). WAL mode with `synchronous=NORMAL`: a
//! committed transaction survives the process being killed (it is in the WAL file the OS
//! holds), and commits cost no fsync. Uses no other layer.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use collab::{FileId, History, StoreError, UpdateLog};
use rusqlite::{params, Connection, OptionalExtension};

mod grants;
mod links;
mod logins;

pub use grants::{Grant, Grantee};
pub use links::{random_secret, secret_hash, GuestSession, Link, RedeemError};
pub use logins::{LOGIN_LIFETIME_SECS, SESSION_LIFETIME_SECS};

/// What a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A room's log or journal failed: what the room is told.
impl From<Error> for StoreError {
    fn from(e: Error) -> StoreError {
        StoreError::backend(e)
    }
}

/// Whose home holds a store path (multi-user mode): the owner's uid and home directory. The
/// file index looks for a file moved outside Quire in its owner's home only.
pub type HomeOf = fn(&Path, &str) -> Option<(u32, PathBuf)>;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS server_sessions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL UNIQUE,
    started_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    inode INTEGER NOT NULL,
    birth INTEGER NOT NULL DEFAULT 0,
    dev INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS files_by_inode ON files(inode);
CREATE TABLE IF NOT EXISTS documents (
    document TEXT PRIMARY KEY,
    history_session INTEGER NOT NULL,
    snapshot BLOB NOT NULL,
    snapshot_seq INTEGER NOT NULL,
    saved_seq INTEGER NOT NULL,
    saved_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS updates (
    document TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (document, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logins (
    cookie_hash TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS links (
    id TEXT PRIMARY KEY,
    file_id TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    caps INTEGER NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    max_uses INTEGER,
    uses INTEGER NOT NULL DEFAULT 0,
    revoked_at INTEGER
);
CREATE INDEX IF NOT EXISTS links_by_file ON links(file_id);
CREATE TABLE IF NOT EXISTS chat (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    document TEXT NOT NULL,
    at REAL NOT NULL,
    username TEXT NOT NULL,
    name TEXT NOT NULL,
    color TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chat_by_document ON chat(document, id);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    username TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_target ON audit(target, id);
CREATE TABLE IF NOT EXISTS user_sessions (
    cookie_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    password_mark TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS grants (
    file_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    caps INTEGER NOT NULL,
    granted_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (file_id, kind, name)
);
CREATE TABLE IF NOT EXISTS projects (
    name TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS project_members (
    project TEXT NOT NULL,
    username TEXT NOT NULL,
    added_at INTEGER NOT NULL,
    PRIMARY KEY (project, username)
);
CREATE TABLE IF NOT EXISTS guests (
    cookie_hash TEXT PRIMARY KEY,
    link_id TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
";

/// What identifies a file on disk across renames: its device and inode, and its birth time so
/// that a new file reusing a deleted file's inode is not mistaken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskIdentity {
    pub inode: u64,
    /// Nanoseconds since the epoch; 0 where the file system does not record it.
    pub birth_ns: i64,
    /// The device (file system) holding it; 0 where unknown (rows from before it was kept).
    pub dev: u64,
}

impl DiskIdentity {
    pub fn of(meta: &std::fs::Metadata) -> DiskIdentity {
        let birth_ns = meta
            .created()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        DiskIdentity {
            inode: meta.ino(),
            birth_ns,
            dev: meta.dev(),
        }
    }

    fn matches(&self, inode: i64, birth_ns: i64, dev: i64) -> bool {
        self.inode == inode as u64
            && (self.birth_ns == birth_ns || self.birth_ns == 0 || birth_ns == 0)
            && (self.dev == dev as u64 || self.dev == 0 || dev == 0)
    }
}

/// How many directory entries a search for a file moved outside Quire may look at.
const MOVE_SEARCH_LIMIT: usize = 100_000;

#[derive(Clone)]
pub struct Store {
    db: Arc<Mutex<Connection>>,
    /// This process's session: its id, and its place in the order of sessions.
    pub session_id: String,
    session_seq: i64,
    /// Multi-user mode: a file moved outside Quire is looked for in its owner's home only.
    homes: Option<HomeOf>,
}

pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Store {
    pub fn open(state_dir: &Path) -> anyhow::Result<Store> {
        make_private_dir(state_dir)?;
        let path = state_dir.join("quire.sqlite3");
        make_private_files(&path)?;
        let conn = Connection::open(&path)
            .with_context(|| format!("cannot open the database {}", path.display()))?;
        // Snapshots of large notebooks are multi-megabyte blobs, while each edit commits a few
        // bytes: 16 KiB pages measured best for both (4 KiB: 50 ms to store a 10 MB snapshot;
        // 64 KiB: every small commit writes a 64 KiB WAL frame). Takes effect on creation.
        conn.pragma_update(None, "page_size", 16384)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // SQLite checkpoints the WAL inside whichever commit crosses 1,000 pages, fsync
        // included: tens of milliseconds on the room task that happened to commit. Checkpoints
        // run on a thread of their own instead (see `checkpoint_in_background`).
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        add_missing_column(
            &conn,
            "user_sessions",
            "password_mark",
            "TEXT NOT NULL DEFAULT ''",
        )?;
        add_missing_column(&conn, "files", "dev", "INTEGER NOT NULL DEFAULT 0")?;
        let session_id = uuid::Uuid::new_v4().to_string();
        conn.execute(
            "INSERT INTO server_sessions (session_id, started_at) VALUES (?1, ?2)",
            params![session_id, now_secs()],
        )?;
        let session_seq = conn.last_insert_rowid();
        let db = Arc::new(Mutex::new(conn));
        checkpoint_in_background(&path, Arc::downgrade(&db))?;
        Ok(Store {
            db,
            session_id,
            session_seq,
            homes: None,
        })
    }

    /// Store paths are relative to `/` and files live in home directories (multi-user mode):
    /// `homes` says whose home holds a path.
    pub fn with_homes(mut self, homes: Option<HomeOf>) -> Store {
        self.homes = homes;
        self
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite itself consistent: keep going.
        self.db
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// May a client whose document came from server session `session_id` sync with this
    /// document's history? Only if that history already existed then (the Yjs items it holds
    /// are ours), or it is this very session.
    pub fn session_may_join(&self, session_id: &str, document: &str) -> Result<bool> {
        if session_id == self.session_id {
            return Ok(true);
        }
        let db = self.db();
        let client_seq: Option<i64> = db
            .query_row(
                "SELECT seq FROM server_sessions WHERE session_id = ?1",
                [session_id],
                |r| r.get(0),
            )
            .optional()?;
        let history_seq: Option<i64> = db
            .query_row(
                "SELECT history_session FROM documents WHERE document = ?1",
                [document],
                |r| r.get(0),
            )
            .optional()?;
        Ok(matches!((client_seq, history_seq), (Some(c), Some(h)) if c >= h))
    }

    /// The id of the file at `api_path` (which exists, as `disk`), and whether it was just
    /// indexed. A file moved outside Quire keeps its id: an indexed file with the same inode
    /// and birth time, whose recorded path no longer holds it, is taken to have moved here.
    pub fn id_for_path(
        &self,
        root: &Path,
        api_path: &str,
        disk: DiskIdentity,
    ) -> Result<(FileId, bool)> {
        let db = self.db();
        let by_path: Option<String> = db
            .query_row("SELECT id FROM files WHERE path = ?1", [api_path], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(id) = by_path {
            db.execute(
                "UPDATE files SET inode = ?1, birth = ?2, dev = ?3 WHERE id = ?4",
                params![disk.inode as i64, disk.birth_ns, disk.dev as i64, id],
            )?;
            return Ok((parse_id(&id), false));
        }
        let mut stmt = db.prepare("SELECT id, path, birth, dev FROM files WHERE inode = ?1")?;
        let candidates: Vec<(String, String, i64, i64)> = stmt
            .query_map([disk.inode as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<Result<_, _>>()?;
        drop(stmt);
        for (id, old_path, birth, dev) in candidates {
            if !disk.matches(disk.inode as i64, birth, dev) {
                continue;
            }
            // In multi-user mode a file never moves from one person's home to another's.
            if self
                .homes
                .is_some_and(|home_of| !same_home(home_of, root, &old_path, api_path))
            {
                continue;
            }
            let still_there = std::fs::metadata(root.join(&old_path))
                .map(|m| DiskIdentity::of(&m) == disk)
                .unwrap_or(false);
            if !still_there {
                db.execute(
                    "UPDATE files SET path = ?1 WHERE id = ?2",
                    params![api_path, id],
                )?;
                tracing::info!(%id, from = %old_path, to = %api_path, "file moved outside Quire");
                return Ok((parse_id(&id), false));
            }
        }
        let id = FileId::new_random();
        db.execute(
            "INSERT INTO files (id, path, inode, birth, dev) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                id.to_string(),
                api_path,
                disk.inode as i64,
                disk.birth_ns,
                disk.dev as i64
            ],
        )?;
        Ok((id, true))
    }

    /// Where the file with this id is now. When its recorded path no longer holds it, the
    /// served tree is searched for its inode (it was moved outside Quire).
    pub fn path_for_id(&self, root: &Path, id: FileId) -> Result<Option<String>> {
        let row: Option<(String, i64, i64, i64)> = self
            .db()
            .query_row(
                "SELECT path, inode, birth, dev FROM files WHERE id = ?1",
                [id.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((path, inode, birth, dev)) = row else {
            return Ok(None);
        };
        if root.join(&path).is_file() {
            return Ok(Some(path));
        }
        let scope = match self.homes {
            Some(home_of) => match home_of(root, &path) {
                Some((_, home)) => home,
                None => return Ok(None),
            },
            None => root.to_path_buf(),
        };
        let Some(found) = find_inode(root, &scope, inode, birth, dev) else {
            return Ok(None);
        };
        self.db().execute(
            "UPDATE files SET path = ?1 WHERE id = ?2",
            params![found, id.to_string()],
        )?;
        Ok(Some(found))
    }

    pub fn update_disk_identity(&self, id: FileId, disk: DiskIdentity) -> Result<()> {
        self.db().execute(
            "UPDATE files SET inode = ?1, birth = ?2, dev = ?3 WHERE id = ?4",
            params![
                disk.inode as i64,
                disk.birth_ns,
                disk.dev as i64,
                id.to_string()
            ],
        )?;
        Ok(())
    }

    /// A rename through the contents API: the file (or every file under a directory) keeps its id.
    /// Returns the ids whose paths changed, with their new paths.
    pub fn renamed(&self, from: &str, to: &str) -> Result<Vec<(FileId, String)>> {
        let mut db = self.db();
        let tx = db.transaction()?;
        // Whatever was indexed at the destination is gone now.
        tx.execute(
            "DELETE FROM files WHERE path = ?1 OR substr(path, 1, length(?2)) = ?2",
            params![to, format!("{to}/")],
        )?;
        let mut moved = Vec::new();
        {
            let mut stmt = tx.prepare(
                "SELECT id, path FROM files WHERE path = ?1 OR substr(path, 1, length(?2)) = ?2",
            )?;
            let rows: Vec<(String, String)> = stmt
                .query_map(params![from, format!("{from}/")], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<Result<_, _>>()?;
            for (id, path) in rows {
                let new_path = format!("{to}{}", &path[from.len()..]);
                tx.execute(
                    "UPDATE files SET path = ?1 WHERE id = ?2",
                    params![new_path, id],
                )?;
                moved.push((parse_id(&id), new_path));
            }
        }
        tx.commit()?;
        Ok(moved)
    }

    /// Records an action in the audit log (failures are logged, never fatal).
    pub fn audit(&self, username: &str, action: &str, target: &str, detail: &str) {
        let result = self.db().execute(
            "INSERT INTO audit (at, username, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![now_secs(), username, action, target, detail],
        );
        if let Err(e) = result {
            tracing::warn!("cannot write the audit log: {e}");
        }
    }

    /// The latest audit entries (newest first), for one target or all.
    pub fn audit_entries(
        &self,
        target: Option<&str>,
        limit: u32,
    ) -> Result<Vec<serde_json::Value>> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT at, username, action, target, detail FROM audit
             WHERE ?1 IS NULL OR target = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![target, limit], |row| {
            Ok(serde_json::json!({
                "at": row.get::<_, i64>(0)?,
                "username": row.get::<_, String>(1)?,
                "action": row.get::<_, String>(2)?,
                "target": row.get::<_, String>(3)?,
                "detail": row.get::<_, String>(4)?,
            }))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A room's chat and audit trail.
    pub fn journal(&self, document: &str, file: FileId) -> SqliteJournal {
        SqliteJournal {
            store: self.clone(),
            document: document.to_string(),
            target: file.to_string(),
        }
    }

    /// The durable history of one document, for its room. A document is a file seen as one
    /// kind (`json:notebook:{id}` or `text:file:{id}`): the two views of one file have separate
    /// histories, as their Yjs documents have nothing in common.
    pub fn update_log(&self, document: &str) -> SqliteLog {
        SqliteLog {
            store: self.clone(),
            document: document.to_string(),
            next_seq: 1,
        }
    }
}

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Checkpoints the WAL from a connection and thread of its own, so no room's commit waits for
/// it (a passive checkpoint never blocks writers). Ends when the store is dropped.
/// The state directory holds every notebook's edit history and the login secrets' hashes:
/// only the account Quire runs as may enter it (0700, whatever the umask, an existing
/// directory's mode corrected). A directory someone else owns is refused: they could read it.
fn make_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let cannot = || format!("cannot create the state directory {}", dir.display());
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(cannot)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(e).with_context(cannot),
    }
    let meta = std::fs::metadata(dir).with_context(cannot)?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        anyhow::bail!(
            "the state directory {} belongs to uid {}, not to the account Quire runs as (uid {me}): \
             its owner could read every notebook's history; use a directory of your own",
            dir.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o7777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(
            || {
                format!(
                    "cannot make the state directory {} private (mode 0700)",
                    dir.display()
                )
            },
        )?;
        tracing::info!(
            "the state directory {} was mode {:o}: made private (0700)",
            dir.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

/// The database and its companions are 0600: created so before SQLite opens the database
/// (SQLite would make it 0644 less the umask, and gives `-wal`/`-shm` the database's mode),
/// and corrected if an earlier run left them readable by others.
fn make_private_files(database: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(database)
        .with_context(|| format!("cannot create the database {}", database.display()))?;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = database.as_os_str().to_owned();
        name.push(suffix);
        let path = PathBuf::from(name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_file() && meta.mode() & 0o7777 != 0o600 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot make {} private (mode 0600)", path.display()))?;
        }
    }
    Ok(())
}

fn checkpoint_in_background(
    path: &Path,
    store: std::sync::Weak<Mutex<Connection>>,
) -> anyhow::Result<()> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    std::thread::Builder::new()
        .name("quire-checkpoint".into())
        .spawn(move || loop {
            std::thread::sleep(CHECKPOINT_EVERY);
            if store.strong_count() == 0 {
                // Last round: fold everything back so the WAL file does not outlive us large.
                let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
                return;
            }
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!("WAL checkpoint failed: {e}");
            }
        })?;
    Ok(())
}

fn parse_id(text: &str) -> FileId {
    FileId::parse(text).unwrap_or_else(|| {
        tracing::error!("corrupt file id {text:?} in the database");
        FileId(uuid::Uuid::nil())
    })
}

/// Breadth-first search of the served tree for a file with this inode and birth time (hidden
/// folders skipped).
/// Whether two store paths are in the same person's home (multi-user mode).
fn same_home(home_of: HomeOf, root: &Path, a: &str, b: &str) -> bool {
    let owner = |path: &str| home_of(root, path).map(|(uid, _)| uid);
    owner(a) == owner(b)
}

/// Adds a column a table made by an earlier release lacks.
fn add_missing_column(
    conn: &Connection,
    table: &str,
    column: &str,
    declaration: &str,
) -> Result<()> {
    let present: bool = conn.query_row(
        &format!("SELECT count(*) FROM pragma_table_info('{table}') WHERE name = ?1"),
        [column],
        |row| row.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !present {
        conn.execute_batch(&format!(
            "ALTER TABLE {table} ADD COLUMN {column} {declaration}"
        ))?;
    }
    Ok(())
}

/// Looks for a file by its disk identity under `scope`; its path relative to `root`.
fn find_inode(root: &Path, scope: &Path, inode: i64, birth: i64, dev: i64) -> Option<String> {
    let mut queue: std::collections::VecDeque<PathBuf> = [scope.to_path_buf()].into();
    let mut seen = 0;
    while let Some(dir) = queue.pop_front() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MOVE_SEARCH_LIMIT {
                return None;
            }
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                queue.push_back(entry.path());
            } else if meta.is_file() && DiskIdentity::of(&meta).matches(inode, birth, dev) {
                let rel = entry.path().strip_prefix(root).ok()?.to_path_buf();
                return Some(rel.to_string_lossy().into_owned());
            }
        }
    }
    None
}

pub struct SqliteLog {
    store: Store,
    document: String,
    next_seq: i64,
}

impl SqliteLog {
    fn load_history(&mut self) -> Result<Option<History>> {
        let db = self.store.db();
        let row: Option<(Vec<u8>, i64, i64, String)> = db
            .query_row(
                "SELECT snapshot, snapshot_seq, saved_seq, saved_hash FROM documents WHERE document = ?1",
                [&self.document],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((snapshot, snapshot_seq, saved_seq, saved_hash)) = row else {
            return Ok(None);
        };
        let mut stmt = db.prepare(
            "SELECT seq, data FROM updates WHERE document = ?1 AND seq > ?2 ORDER BY seq",
        )?;
        let updates: Vec<(u64, Vec<u8>)> = stmt
            .query_map(params![self.document, snapshot_seq], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        self.next_seq = updates
            .last()
            .map(|(s, _)| *s as i64)
            .unwrap_or(snapshot_seq)
            .max(saved_seq)
            + 1;
        Ok(Some(History {
            snapshot,
            updates,
            saved_seq: saved_seq as u64,
            saved_hash,
        }))
    }

    fn start_history(&mut self, snapshot: &[u8], saved_hash: &str) -> Result<()> {
        let mut db = self.store.db();
        let tx = db.transaction()?;
        tx.execute("DELETE FROM updates WHERE document = ?1", [&self.document])?;
        tx.execute(
            "INSERT OR REPLACE INTO documents (document, history_session, snapshot, snapshot_seq, saved_seq, saved_hash)
             VALUES (?1, ?2, ?3, 0, 0, ?4)",
            params![self.document, self.store.session_seq, snapshot, saved_hash],
        )?;
        tx.commit()?;
        self.next_seq = 1;
        Ok(())
    }

    fn append_updates(&mut self, updates: &[Bytes]) -> Result<u64> {
        let mut db = self.store.db();
        let tx = db.transaction()?;
        {
            let mut stmt =
                tx.prepare_cached("INSERT INTO updates (document, seq, data) VALUES (?1, ?2, ?3)")?;
            for (i, update) in updates.iter().enumerate() {
                stmt.execute(params![
                    self.document,
                    self.next_seq + i as i64,
                    &update[..]
                ])?;
            }
        }
        tx.commit()?;
        self.next_seq += updates.len() as i64;
        Ok((self.next_seq - 1) as u64)
    }

    fn record_saved(&mut self, seq: u64, saved_hash: &str) -> Result<()> {
        self.store.db().execute(
            "UPDATE documents SET saved_seq = ?1, saved_hash = ?2 WHERE document = ?3",
            params![seq as i64, saved_hash, self.document],
        )?;
        Ok(())
    }

    fn compact_to(&mut self, snapshot: &[u8], seq: u64, saved_hash: &str) -> Result<()> {
        let mut db = self.store.db();
        let tx = db.transaction()?;
        tx.execute(
            "UPDATE documents SET snapshot = ?1, snapshot_seq = ?2, saved_seq = ?2, saved_hash = ?3 WHERE document = ?4",
            params![snapshot, seq as i64, saved_hash, self.document],
        )?;
        tx.execute(
            "DELETE FROM updates WHERE document = ?1 AND seq <= ?2",
            params![self.document, seq as i64],
        )?;
        tx.commit()?;
        Ok(())
    }
}

impl UpdateLog for SqliteLog {
    fn load(&mut self) -> Result<Option<History>, StoreError> {
        Ok(self.load_history()?)
    }

    fn start(&mut self, snapshot: &[u8], saved_hash: &str) -> Result<(), StoreError> {
        Ok(self.start_history(snapshot, saved_hash)?)
    }

    fn append(&mut self, updates: &[Bytes]) -> Result<u64, StoreError> {
        Ok(self.append_updates(updates)?)
    }

    fn mark_saved(&mut self, seq: u64, saved_hash: &str) -> Result<(), StoreError> {
        Ok(self.record_saved(seq, saved_hash)?)
    }

    fn compact(&mut self, snapshot: &[u8], seq: u64, saved_hash: &str) -> Result<(), StoreError> {
        Ok(self.compact_to(snapshot, seq, saved_hash)?)
    }
}

/// A room's chat and audit trail in SQLite.
pub struct SqliteJournal {
    store: Store,
    document: String,
    target: String,
}

impl SqliteJournal {
    fn post_message(&mut self, m: &collab::ChatMessage) -> Result<u64> {
        let db = self.store.db();
        db.execute(
            "INSERT INTO chat (document, at, username, name, color, text) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![self.document, m.at, m.username, m.name, m.color, m.text],
        )?;
        Ok(db.last_insert_rowid() as u64)
    }

    fn recent_messages(&mut self, limit: usize) -> Result<Vec<collab::ChatMessage>> {
        let db = self.store.db();
        let mut stmt = db.prepare(
            "SELECT id, at, username, name, color, text FROM chat WHERE document = ?1
             ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![self.document, limit as i64], |row| {
            Ok(collab::ChatMessage {
                id: row.get::<_, i64>(0)? as u64,
                at: row.get(1)?,
                username: row.get(2)?,
                name: row.get(3)?,
                color: row.get(4)?,
                text: row.get(5)?,
            })
        })?;
        let mut messages: Vec<collab::ChatMessage> = rows.collect::<Result<_, _>>()?;
        messages.reverse();
        Ok(messages)
    }
}

impl collab::Journal for SqliteJournal {
    fn post(&mut self, m: &collab::ChatMessage) -> Result<u64, StoreError> {
        Ok(self.post_message(m)?)
    }

    fn recent(&mut self, limit: usize) -> Result<Vec<collab::ChatMessage>, StoreError> {
        Ok(self.recent_messages(limit)?)
    }

    fn audit(&mut self, username: &str, action: &str, detail: &str) {
        self.store.audit(username, action, &self.target, detail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_known_by_device_inode_and_birth() {
        let disk = DiskIdentity {
            inode: 42,
            birth_ns: 7,
            dev: 3,
        };
        assert!(disk.matches(42, 7, 3));
        assert!(
            disk.matches(42, 0, 0),
            "rows from before birth and device were kept"
        );
        assert!(
            !disk.matches(42, 7, 4),
            "the same inode on another file system"
        );
        assert!(!disk.matches(42, 8, 3), "a new file reusing the inode");
        assert!(!disk.matches(43, 7, 3));
    }

    #[test]
    fn history_survives_reopening_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let file = "json:notebook:x";
        {
            let store = Store::open(dir.path()).unwrap();
            let mut log = store.update_log(file);
            assert!(log.load().unwrap().is_none());
            log.start(b"snap", "h0").unwrap();
            assert_eq!(
                log.append(&[Bytes::from_static(b"u1"), Bytes::from_static(b"u2")])
                    .unwrap(),
                2
            );
            log.mark_saved(1, "h1").unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let mut log = store.update_log(file);
        let history = log.load().unwrap().unwrap();
        assert_eq!(history.snapshot, b"snap");
        assert_eq!(
            history.updates,
            vec![(1, b"u1".to_vec()), (2, b"u2".to_vec())]
        );
        assert_eq!((history.saved_seq, history.saved_hash.as_str()), (1, "h1"));
        assert_eq!(log.append(&[Bytes::from_static(b"u3")]).unwrap(), 3);
        log.compact(b"snap3", 3, "h3").unwrap();
        let history = log.load().unwrap().unwrap();
        assert_eq!(history.snapshot, b"snap3");
        assert!(history.updates.is_empty());
        assert_eq!(log.append(&[Bytes::from_static(b"u4")]).unwrap(), 4);
    }

    #[test]
    fn old_sessions_may_join_only_histories_they_saw() {
        let dir = tempfile::tempdir().unwrap();
        let file = "json:notebook:y";
        let first = Store::open(dir.path()).unwrap();
        let old_session = first.session_id.clone();
        let second = Store::open(dir.path()).unwrap();
        // History began in the second session: a client of the first cannot hold its items.
        second.update_log(file).start(b"s", "h").unwrap();
        assert!(!second.session_may_join(&old_session, file).unwrap());
        assert!(second.session_may_join(&second.session_id, file).unwrap());
        let third = Store::open(dir.path()).unwrap();
        assert!(third.session_may_join(&second.session_id, file).unwrap());
        assert!(!third.session_may_join("not-a-session", file).unwrap());
    }

    #[test]
    fn a_login_is_tied_to_the_token_it_was_made_with() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.add_login("cookie", "token-a").unwrap();
        assert!(store.has_login("cookie", "token-a").unwrap());
        assert!(!store.has_login("cookie", "token-b").unwrap());
        assert!(!store.has_login("other", "token-a").unwrap());
    }
}
