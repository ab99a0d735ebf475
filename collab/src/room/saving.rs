//! Saving, as an explicit state machine: at most one save is written at a time (on a blocking
//! thread, while the room goes on serving), and a save asked for meanwhile runs after it.
//!
//! [`SaveState`] holds who waits for the save in flight and for the one after it; the room
//! starts saves, and feeds their outcomes back, through it.

use std::sync::Mutex;

use tokio::sync::oneshot;
use yrs::Transact;

use super::{apply_update_bytes, lock, SaveStatus};
use crate::notebook::new_doc;
use crate::storage::{content_hash, FileStamp, NotebookFile};
use crate::{ConnectionId, Content, DocumentKind};

/// Where a room's saving stands.
#[derive(Default)]
pub(super) enum SaveState {
    /// No save is being written.
    #[default]
    Idle,
    /// A save is being written; `waiters` hear how it went. `again`: another save was asked for
    /// meanwhile (by these waiters, or by autosave or a merge when empty), to start once this
    /// one is done, since this one may not hold the latest changes.
    Saving {
        waiters: Vec<SaveWaiter>,
        again: Option<Vec<SaveWaiter>>,
    },
}

impl SaveState {
    pub(super) fn in_flight(&self) -> bool {
        match self {
            SaveState::Idle => false,
            SaveState::Saving { .. } => true,
        }
    }

    /// A save starts being written.
    pub(super) fn begin(&mut self, waiters: Vec<SaveWaiter>) {
        debug_assert!(!self.in_flight(), "one save at a time");
        *self = SaveState::Saving {
            waiters,
            again: None,
        };
    }

    /// A save is asked for while one is in flight: it runs after that one.
    pub(super) fn again(&mut self, waiters: impl IntoIterator<Item = SaveWaiter>) {
        if let SaveState::Saving { again, .. } = self {
            again.get_or_insert_with(Vec::new).extend(waiters);
        }
    }

    /// The save in flight is done: who waited for it, and the save wanted after it, if any.
    pub(super) fn finish(&mut self) -> (Vec<SaveWaiter>, Option<Vec<SaveWaiter>>) {
        match std::mem::take(self) {
            SaveState::Idle => (Vec::new(), None),
            SaveState::Saving { waiters, again } => (waiters, again),
        }
    }
}

/// Someone waiting for a save's outcome.
pub(super) enum SaveWaiter {
    Raw { conn: ConnectionId, save_id: u64 },
    Reply(oneshot::Sender<SaveStatus>),
}

/// What the blocking save task reports: the document state it wrote (as of log sequence
/// number `seq`) and how it went.
pub(super) struct SaveOutcome {
    pub(super) seq: u64,
    pub(super) snapshot: Vec<u8>,
    pub(super) result: Result<(SaveStatus, Option<FileStamp>, String), SaveError>,
}

pub(super) enum SaveError {
    /// The file is no longer what we last read or wrote (an outside edit, a move, a delete
    /// landed meanwhile): nothing was written; merge it, then save again.
    ChangedOnDisk,
    Failed(String),
}

/// Serializes a document state to .ipynb and writes it unless the file already holds it.
/// Runs on a blocking thread: for a large notebook this is the expensive part of a save.
pub(super) fn write_snapshot(
    kind: DocumentKind,
    file: &Mutex<Box<dyn NotebookFile>>,
    snapshot: &[u8],
    disk_hash: &str,
    expected: Option<FileStamp>,
) -> Result<(SaveStatus, Option<FileStamp>, String), SaveError> {
    let doc = new_doc();
    apply_update_bytes(&doc, snapshot).map_err(|e| SaveError::Failed(e.to_string()))?;
    let bytes = Content::from_doc(kind, &doc.transact()).to_bytes();
    let hash = content_hash(&bytes);
    if hash == disk_hash {
        return Ok((SaveStatus::Skipped, None, hash));
    }
    let mut file = lock(file);
    // Never write over something we have not seen, nor recreate a file moved or deleted.
    match file.stat() {
        Ok(current) if current.is_some() && current == expected => {}
        Ok(_) => return Err(SaveError::ChangedOnDisk),
        Err(e) => return Err(SaveError::Failed(format!("cannot read the file: {e}"))),
    }
    let stamp = file
        .write(&bytes)
        .map_err(|e| SaveError::Failed(format!("cannot write the file: {e}")))?;
    Ok((SaveStatus::Success, Some(stamp), hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(save_id: u64) -> SaveWaiter {
        SaveWaiter::Raw {
            conn: ConnectionId(1),
            save_id,
        }
    }

    fn ids(waiters: &[SaveWaiter]) -> Vec<u64> {
        waiters
            .iter()
            .map(|w| match w {
                SaveWaiter::Raw { save_id, .. } => *save_id,
                SaveWaiter::Reply(_) => 0,
            })
            .collect()
    }

    #[test]
    fn one_save_at_a_time_and_those_asked_meanwhile_ride_the_next() {
        let mut state = SaveState::default();
        assert!(!state.in_flight());
        state.begin(vec![raw(1)]);
        assert!(state.in_flight());
        state.again([raw(2)]);
        state.again([raw(3)]);
        let (waiters, again) = state.finish();
        assert_eq!(ids(&waiters), vec![1]);
        assert_eq!(ids(&again.unwrap()), vec![2, 3]);
        assert!(!state.in_flight());
    }

    #[test]
    fn an_autosave_asked_meanwhile_still_runs_another_save() {
        let mut state = SaveState::default();
        state.begin(Vec::new());
        state.again(None);
        let (waiters, again) = state.finish();
        assert!(waiters.is_empty());
        assert_eq!(again.map(|a| a.len()), Some(0));
        // Nothing asked for meanwhile: nothing to run after.
        state.begin(vec![raw(4)]);
        assert!(state.finish().1.is_none());
        // Asking while idle is the room's to start, not the state's to remember.
        state.again([raw(5)]);
        assert!(!state.in_flight());
    }
}
