//! Notebook files on disk: atomic replacement, and the [`NotebookFile`] a room saves through.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use collab::{FileId, FileStamp, NotebookFile};

use super::space::Space;
use crate::storage::Store;

/// Replaces `path` with `bytes` so that a reader sees the old file or the new one, never a mix:
/// a temporary file beside it, written and fsynced, given the old file's mode and owner, renamed
/// over it, and the directory fsynced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<std::fs::Metadata> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let previous = std::fs::metadata(path).ok();
    let temp = dir.join(format!(".~{name}.{:08x}.quire-tmp", rand::random::<u32>()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.write_all(bytes)?;
        if let Some(previous) = &previous {
            file.set_permissions(std::fs::Permissions::from_mode(previous.mode() & 0o7777))?;
            // Keeping the owner needs privileges when it is someone else; try, and accept refusal.
            let _ = std::os::unix::fs::fchown(&file, Some(previous.uid()), Some(previous.gid()));
        }
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        std::fs::metadata(path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

pub fn stamp_of(meta: &std::fs::Metadata) -> FileStamp {
    FileStamp {
        modified_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
        len: meta.len(),
        inode: meta.ino(),
    }
}

/// A notebook in its owner's space, as its room sees it: read and written with the owner's
/// rights.
pub struct LocalNotebook {
    space: Space,
    api_path: String,
    file_id: FileId,
    store: Store,
}

impl LocalNotebook {
    pub fn new(space: Space, api_path: String, file_id: FileId, store: Store) -> Self {
        LocalNotebook {
            space,
            api_path,
            file_id,
            store,
        }
    }

    fn path(&self) -> std::io::Result<PathBuf> {
        self.space
            .resolve(&self.api_path)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e.to_string()))
    }
}

impl NotebookFile for LocalNotebook {
    fn api_path(&self) -> String {
        self.api_path.clone()
    }

    fn stat(&self) -> std::io::Result<Option<FileStamp>> {
        let path = self.path()?;
        match self.space.io(|| std::fs::metadata(path)) {
            Ok(meta) => Ok(Some(stamp_of(&meta))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn read(&self) -> std::io::Result<Vec<u8>> {
        let path = self.path()?;
        self.space.io(|| std::fs::read(path))
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<FileStamp> {
        let path = self.path()?;
        let meta = self.space.io(|| write_atomically(&path, bytes))?;
        // The rename gave the file a new inode: keep the index pointing at it.
        let disk = crate::storage::DiskIdentity::of(&meta);
        if let Err(e) = self.store.update_disk_identity(self.file_id, disk) {
            tracing::warn!("cannot update the file index: {e}");
        }
        Ok(stamp_of(&meta))
    }

    fn moved_to(&mut self, api_path: String) {
        self.api_path = api_path;
    }
}
