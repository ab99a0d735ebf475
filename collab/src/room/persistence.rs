//! Persistence: the document's file and its log. Loading restores the document from the log's
//! snapshot and updates; saving writes it to the file (one save at a time, see
//! [`SaveState`](super::saving::SaveState)); a change made to the file outside Quire is merged
//! in; at a save the log is compacted into a snapshot once it has grown large.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::time::Instant;
use yrs::updates::decoder::Decode;
use yrs::{Doc, Map, ReadTxn, StateVector, Transact, Update};

use super::saving::{write_snapshot, SaveError, SaveOutcome, SaveState, SaveWaiter};
use super::{lock, HistoryError, Room, SaveStatus};
use crate::merge;
use crate::protocol::{self, SaveReply};
use crate::storage::{content_hash, FileStamp, History, NotebookFile, StoreError, UpdateLog};
use crate::{Content, DocumentKind};

/// The document side of a room: the doc, its file, its history.
pub(super) struct Document {
    pub(super) kind: DocumentKind,
    pub(super) doc: Doc,
    /// Shared with the blocking task that writes it; held only for the duration of one call.
    pub(super) file: Arc<Mutex<Box<dyn NotebookFile>>>,
    pub(super) log: Box<dyn UpdateLog>,
    /// Sequence number of the last update in the log.
    pub(super) last_seq: u64,
    /// Bytes appended since the last snapshot, and the snapshot's size.
    pub(super) log_bytes: u64,
    pub(super) snapshot_len: u64,
    /// What we last read from or wrote to the file.
    pub(super) disk_stamp: Option<FileStamp>,
    pub(super) disk_hash: String,
    /// The file cannot be used right now (deleted, or no longer a notebook): saving is held back.
    pub(super) disk_problem: Option<String>,
    /// The whole document as of the last save or load: the base for merging outside edits.
    pub(super) base: Vec<u8>,
    pub(super) unsaved_since: Option<Instant>,
    pub(super) last_change: Instant,
    pub(super) next_poll: Instant,
    /// Whether a save is being written, who waits for it, and whether another is wanted.
    pub(super) save: SaveState,
    /// Counts the transactions committed on `doc`, so that a cached encoding knows it is stale.
    pub(super) changes: Arc<AtomicU64>,
    /// The whole document as a sync step 2 frame, for clients that join knowing nothing (as
    /// JupyterLab's and the app's do), with the change count it was made at: ten people opening
    /// a big notebook at once cost one encoding, and each gets the same buffer.
    pub(super) full_sync: Option<(u64, Bytes)>,
}

impl Document {
    pub(super) fn full_sync_frame(&mut self) -> Bytes {
        let now = self.changes.load(Ordering::Relaxed);
        if let Some((made_at, frame)) = &self.full_sync {
            if *made_at == now {
                return frame.clone();
            }
        }
        let update = self
            .doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let frame = protocol::encode_sync_step2(&update);
        self.full_sync = Some((now, frame.clone()));
        frame
    }
}

/// Rebuilds a document from its history; the merge base is the state as of the saved point.
pub(super) fn restore(document: &mut Document, history: &History) -> Result<(), HistoryError> {
    apply_update_bytes(&document.doc, &history.snapshot)?;
    document.snapshot_len = history.snapshot.len() as u64;
    let mut base_taken = false;
    for (seq, update) in &history.updates {
        if *seq > history.saved_seq && !base_taken {
            document.base = document
                .doc
                .transact()
                .encode_state_as_update_v1(&StateVector::default());
            base_taken = true;
        }
        apply_update_bytes(&document.doc, update)?;
        document.last_seq = *seq;
        document.log_bytes += update.len() as u64;
    }
    if !base_taken {
        document.base = document
            .doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
    }
    document.last_seq = document.last_seq.max(history.saved_seq);
    Ok(())
}

pub(super) fn apply_update_bytes(doc: &Doc, bytes: &[u8]) -> Result<(), HistoryError> {
    let update = Update::decode_v1(bytes)?;
    doc.transact_mut().apply_update(update)?;
    Ok(())
}

impl Room {
    /// Asks for a save: starts one now, or after the one in flight.
    pub(super) fn request_save(&mut self, waiter: Option<SaveWaiter>) {
        let document = self.doc_mut();
        if document.save.in_flight() {
            document.save.again(waiter);
            return;
        }
        self.start_save(waiter.into_iter().collect());
    }

    /// Merges any outside change, then hands the document's state to a blocking task that
    /// serializes and writes it; the room goes on serving meanwhile.
    fn start_save(&mut self, waiters: Vec<SaveWaiter>) {
        self.check_disk();
        let document = self.doc_mut();
        if document.save.in_flight() {
            // Merging an outside change started a save of its own: ride along with it.
            document.save.again(waiters);
            return;
        }
        if let Some(problem) = document.disk_problem.clone() {
            if document.unsaved_since.is_some() {
                self.back_off_autosave();
            }
            for waiter in waiters {
                self.answer_save(waiter, &SaveStatus::Failed(problem.clone()));
            }
            return;
        }
        self.flush();
        let document = self.doc_mut();
        let seq = document.last_seq;
        let snapshot = document
            .doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        document.unsaved_since = None;
        document.save.begin(waiters);
        let file = document.file.clone();
        let kind = document.kind;
        let disk_hash = document.disk_hash.clone();
        let expected = document.disk_stamp;
        let results = self.save_results_tx.clone();
        tokio::task::spawn_blocking(move || {
            let result = write_snapshot(kind, &file, &snapshot, &disk_hash, expected);
            let _ = results.send(SaveOutcome {
                seq,
                snapshot,
                result,
            });
        });
    }

    pub(super) fn on_save_finished(&mut self, outcome: SaveOutcome) {
        let document = self.doc_mut();
        let (waiters, again) = document.save.finish();
        let status = match outcome.result {
            Ok((status, stamp, hash)) => {
                if stamp.is_some() {
                    document.disk_stamp = stamp;
                }
                document.disk_hash = hash.clone();
                document.base = outcome.snapshot;
                self.write_state(|txn, state| {
                    if state.get(txn, "dirty") != Some(yrs::Out::Any(false.into())) {
                        state.insert(txn, "dirty", false);
                    }
                    state.insert(txn, "hash", hash.as_str());
                });
                self.flush();
                if let Err(e) = self.record_saved_point(outcome.seq, &hash) {
                    tracing::warn!("cannot record the save in the log: {e}");
                }
                status
            }
            Err(SaveError::ChangedOnDisk) => {
                tracing::info!("the file changed on disk during the save; merging it first");
                let retry: Vec<SaveWaiter> = waiters
                    .into_iter()
                    .chain(again.into_iter().flatten())
                    .collect();
                document.unsaved_since.get_or_insert_with(Instant::now);
                self.check_disk();
                // Merging may have started a save of its own: then retry after it.
                if self.doc_mut().save.in_flight() {
                    self.doc_mut().save.again(retry);
                } else {
                    self.start_save(retry);
                }
                return;
            }
            Err(SaveError::Failed(why)) => {
                tracing::warn!("save failed: {why}");
                self.back_off_autosave();
                SaveStatus::Failed(why)
            }
        };
        for waiter in waiters {
            self.answer_save(waiter, &status);
        }
        if let Some(queued) = again {
            self.start_save(queued);
        }
    }

    /// Keeps the changes marked unsaved but tries again only after the longest autosave delay,
    /// so a file that cannot be written does not make the room spin.
    fn back_off_autosave(&mut self) {
        let now = Instant::now();
        let retry_in = self.config.autosave_max_delay;
        let document = self.doc_mut();
        document.unsaved_since = Some(now);
        document.last_change = now + retry_in;
    }

    pub(super) fn answer_save(&mut self, waiter: SaveWaiter, status: &SaveStatus) {
        match waiter {
            SaveWaiter::Raw { conn, save_id } => {
                let reply = SaveReply::Save {
                    response_to: save_id,
                    status: status.wire_status(),
                };
                self.send_message(conn, reply);
            }
            SaveWaiter::Reply(reply) => {
                let _ = reply.send(status.clone());
            }
        }
    }

    /// The document as of log sequence number `seq` (its state now in `base`) is what the file
    /// holds: record that, and compact the log into it when the log has grown large.
    fn record_saved_point(&mut self, seq: u64, hash: &str) -> Result<(), StoreError> {
        let (min_bytes, ratio) = (self.config.compact_min_bytes, self.config.compact_ratio);
        let document = self.doc_mut();
        if compaction_due(document.log_bytes, document.snapshot_len, min_bytes, ratio) {
            document.log.compact(&document.base, seq, hash)?;
            document.snapshot_len = document.base.len() as u64;
            // The few updates after `seq` (made during the save) are not counted: close enough
            // for deciding when to compact next.
            document.log_bytes = 0;
            tracing::debug!(snapshot = document.snapshot_len, "compacted the update log");
        } else {
            document.log.mark_saved(seq, hash)?;
        }
        Ok(())
    }

    /// Notices a change made to the file outside Quire and merges it in.
    pub(super) fn check_disk(&mut self) {
        let document = self.doc_mut();
        if document.save.in_flight() {
            // Our own write is under way: the file is ours until it reports back.
            return;
        }
        let stamp = match lock(&document.file).stat() {
            Ok(stamp) => stamp,
            Err(e) => {
                document.disk_problem = Some(format!("cannot read the file: {e}"));
                return;
            }
        };
        let Some(stamp) = stamp else {
            document.disk_problem =
                Some("the file was deleted or moved outside Quire; not recreating it".into());
            document.disk_stamp = None;
            return;
        };
        if Some(stamp) == document.disk_stamp {
            return;
        }
        let bytes = match lock(&document.file).read() {
            Ok(bytes) => bytes,
            Err(e) => {
                document.disk_problem = Some(format!("cannot read the file: {e}"));
                return;
            }
        };
        document.disk_stamp = Some(stamp);
        if content_hash(&bytes) == document.disk_hash {
            document.disk_problem = None;
            return;
        }
        match document.kind.parse(&bytes) {
            Ok(on_disk) => {
                document.disk_problem = None;
                self.merge_outside_edit(on_disk, bytes);
            }
            Err(e) => {
                tracing::warn!("the file changed outside Quire and cannot be read: {e}");
                document.disk_problem = Some(format!(
                    "the file on disk can no longer be read ({e}); not overwriting it"
                ));
            }
        }
    }

    /// Replays the outside change onto the room, then makes the file and the log agree again.
    pub(super) fn merge_outside_edit(&mut self, on_disk: Content, bytes: Vec<u8>) {
        let hash = content_hash(&bytes);
        let document = self.doc_mut();
        let edit = match merge::external_edit(&document.base, &on_disk) {
            Ok(edit) => edit,
            Err(e) => {
                tracing::error!("{e}");
                document.disk_problem = Some(e.to_string());
                return;
            }
        };
        tracing::info!("merging a change made to the file outside Quire");
        let delta = {
            let mut txn = document.doc.transact_mut();
            match Update::decode_v1(&edit.update).map(|u| txn.apply_update(u)) {
                Ok(Ok(())) => txn.encode_update_v1(),
                _ => {
                    drop(txn);
                    document.disk_problem = Some("cannot merge the outside change".into());
                    return;
                }
            }
        };
        document.disk_hash = hash.clone();
        document.base = edit.new_base;
        if delta != [0, 0] {
            self.record_change(Bytes::from(delta), false);
        }
        self.flush();
        // If the room had edits of its own, write the merged notebook now; otherwise the file
        // already holds the document. Either way the log learns the new saved point at once, so a
        // crash cannot make us replay the same outside edit twice.
        let kind = self.doc_mut().kind;
        let merged = Content::from_doc(kind, &self.doc_mut().doc.transact());
        if merged == on_disk {
            self.file_holds_document(&hash);
        } else {
            self.request_save(None);
        }
    }

    /// The file (whose bytes hash to `hash`) holds exactly the document as it stands: it is
    /// the new merge base and saved point.
    pub(super) fn file_holds_document(&mut self, hash: &str) {
        self.flush();
        let document = self.doc_mut();
        document.disk_hash = hash.to_string();
        document.unsaved_since = None;
        document.base = document
            .doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let seq = document.last_seq;
        if let Err(e) = self.record_saved_point(seq, hash) {
            tracing::warn!("cannot record the saved point: {e}");
        }
    }
}

/// Whether the log has grown enough to be compacted into a snapshot: past `min_bytes`, and
/// past `ratio` times the snapshot (so a big notebook is not rewritten for every few edits).
fn compaction_due(log_bytes: u64, snapshot_len: u64, min_bytes: u64, ratio: u64) -> bool {
    log_bytes > min_bytes.max(ratio * snapshot_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_compacted_once_it_outgrows_both_the_floor_and_the_snapshot() {
        const MIB: u64 = 1 << 20;
        // A small notebook: the 1 MiB floor decides.
        assert!(!compaction_due(MIB, 1000, MIB, 4));
        assert!(compaction_due(MIB + 1, 1000, MIB, 4));
        // A big one: four times its snapshot.
        assert!(!compaction_due(30 * MIB, 10 * MIB, MIB, 4));
        assert!(compaction_due(40 * MIB + 1, 10 * MIB, MIB, 4));
    }
}
