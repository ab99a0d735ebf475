//! Who may do what in a room: rights per connection, the update guard, cell locks, chat.

use serde_json::{json, Value};
use tokio::time::Instant;

use super::locks::CellBusy;
use crate::protocol::RefusedAction;
use yrs::updates::decoder::Decode;
use yrs::{Map, Transact, Update};

use super::*;

impl Room {
    /// Whether a connection holds `needed` (as of now: grants change live).
    pub(super) fn may(&self, conn: ConnectionId, needed: Capabilities) -> bool {
        self.connections
            .get(&conn)
            .is_some_and(|c| c.caps.contains(needed))
    }

    /// An update the sender may not make: it is not applied, broadcast or logged. The sender is
    /// told why, and that its document now differs from the room's: it should drop its copy and
    /// sync again (`resync`).
    pub(super) fn refuse_update(&mut self, conn: ConnectionId, reason: &str) {
        tracing::info!(%conn, "refusing an update: {reason}");
        let refused = ServerEvent::Refused {
            action: RefusedAction::Update,
            reason: reason.to_string(),
            resync: true,
        };
        self.send_message(conn, refused);
    }

    /// What `caps` come to in this room: a notebook opened as plain text escapes the notebook's
    /// field policy (its outputs are just characters there), so only those who may also run
    /// code may change or save it that way.
    pub(super) fn caps_here(&self, caps: Capabilities) -> Capabilities {
        let caps = caps.effective();
        let notebook_as_text = self.document.as_ref().is_some_and(|d| {
            d.kind == crate::content::DocumentKind::Text
                && lock(&d.file).api_path().ends_with(".ipynb")
        });
        if notebook_as_text && !caps.contains(Capabilities::EXECUTE) {
            caps.without(Capabilities::EDIT.union(Capabilities::SAVE))
        } else {
            caps
        }
    }

    /// Applies a grant change to the live connections it covers.
    pub(super) fn set_permissions(&mut self, source: GrantSource, caps: Option<Capabilities>) {
        let affected: Vec<ConnectionId> = self
            .connections
            .iter()
            .filter(|(_, c)| c.source == source)
            .map(|(id, _)| *id)
            .collect();
        for conn in affected {
            match caps.map(|caps| self.caps_here(caps)) {
                Some(caps) if caps.contains(Capabilities::WATCH) => {
                    if let Some(c) = self.connections.get_mut(&conn) {
                        c.caps = caps;
                    }
                    if !caps.contains(Capabilities::EXECUTE) {
                        self.cancel_queued_runs(conn);
                    }
                    if !caps.contains(Capabilities::EDIT) {
                        // A lock is an edit: it goes with the right to edit (the holder could
                        // no longer release it, and others would wait out its lease).
                        for cell in self.locks.release_all(conn) {
                            self.publish_lock(&cell);
                        }
                    }
                    self.send_message(conn, permissions(caps));
                }
                _ => {
                    self.cancel_queued_runs(conn);
                    let reason = CloseReason::new(
                        CloseCode::Revoked,
                        "your access to this notebook was revoked",
                    );
                    self.remove(conn, Some(reason));
                }
            }
        }
    }

    /// The runs a connection asked for that have not started: they go with its right to run
    /// code (one that has started runs on; Jupyter cannot take back what the kernel took).
    fn cancel_queued_runs(&mut self, conn: ConnectionId) {
        for (run_id, run) in &self.exec.runs {
            if run.requester.conn == Some(conn) && run.started_at.is_none() {
                run.kernel
                    .cancel(run_id, "the right to run code was withdrawn before it ran");
            }
        }
    }

    /// An update from a client: judged by the update guard on its shadow document (the
    /// owner's too: the fields only the server writes are the server's whoever asks), then
    /// checked against cell locks; applied to the room's document, logged and broadcast only
    /// if both allow it, and then exactly as the shadow integrated it.
    pub(super) fn client_update(&mut self, conn: ConnectionId, update: &[u8]) {
        let Some(caps) = self.connections.get(&conn).map(|c| c.caps) else {
            return;
        };
        let document = self.document.as_ref().expect("a document room");
        let trial = match self.guard.judge(&document.doc, update, caps) {
            Ok(Some(trial)) => trial,
            Ok(None) => return,
            Err(crate::guard::Refusal(reason, wrong)) => {
                if self.guard.needs_rebuild() && !self.spend_refusal(conn) {
                    return;
                }
                return match wrong {
                    crate::guard::Wrong::Unreadable => self.refuse(conn, reason),
                    crate::guard::Wrong::ForeignHistory => self.conflict(conn),
                    crate::guard::Wrong::Forbidden => self.refuse_update(conn, &reason),
                };
            }
        };
        if let Err(reason) = self.lock_check(conn, &trial.analysis) {
            self.guard.discard(trial);
            if !self.spend_refusal(conn) {
                return;
            }
            return self.refuse_update(conn, &reason.to_string());
        }
        let delta = self.guard.accept(trial);
        let document = self.doc_mut();
        let applied = {
            let mut txn = document.doc.transact_mut();
            let applied = Update::decode_v1(&delta).map(|u| txn.apply_update(u));
            (applied, txn.encode_update_v1())
        };
        match applied {
            (Ok(Ok(())), delta) if delta != [0, 0] => {
                self.log_and_broadcast(Bytes::from(delta), true)
            }
            (Ok(Ok(())), _) => {}
            (failed, delta) => {
                // The shadow took it, so this cannot happen; if it does, keep the two in step.
                tracing::error!("an update the guard accepted does not apply: {failed:?}");
                self.guard.lost_track();
                if delta != [0, 0] {
                    self.log_and_broadcast(Bytes::from(delta), true);
                }
            }
        }
    }

    /// Counts a refusal that spoiled the guard's shadow against the connection; one that keeps
    /// sending refused updates is closed (4429) rather than making the room rebuild the shadow
    /// again and again. `false`: it was closed.
    fn spend_refusal(&mut self, conn: ConnectionId) -> bool {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return false;
        };
        if connection.refusals.spend() {
            return true;
        }
        let reason = "too many refused updates: reload the notebook to get it as it is";
        tracing::info!(%conn, "closing connection: {reason}");
        let reason = CloseReason::new(CloseCode::TooManyRefusals, reason);
        self.remove(conn, Some(reason));
        false
    }

    /// Refuses an update that changes a cell someone else holds the edit lock of, or deletes a
    /// cell someone else's run holds. The holder's own changes renew the lease.
    pub(super) fn lock_check(
        &mut self,
        conn: ConnectionId,
        analysis: &crate::guard::Analysis,
    ) -> Result<(), CellBusy> {
        if self.locks.is_empty() && self.exec.runs.is_empty() {
            return Ok(());
        }
        let lease = self.config.lock_lease;
        for item in &analysis.cells {
            let Some(cell) = self.cell_id_of(*item) else {
                continue;
            };
            self.locks.touch(&cell, conn, Instant::now(), lease)?;
            if analysis.deleted_cells.contains(item) {
                let run = self.exec.run_of_cell(&cell);
                if let Some(run) = run.filter(|r| r.requester.conn != Some(conn)) {
                    return Err(CellBusy::Running(
                        run.requester.identity.display_name.clone(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// A chat message: stored, then sent to everyone in the room (the sender included). The
    /// sender holds `edit` (`handle_request` checked it).
    pub(super) fn chat(&mut self, conn: ConnectionId, text: &str, request_id: Option<RequestId>) {
        let refuse = |reason: &str| Reply::refused(RequestKind::Chat, request_id, reason);
        let text = text.trim();
        if text.is_empty() {
            return self.send_message(conn, refuse("an empty message"));
        }
        if text.chars().count() > CHAT_MAX_CHARS {
            return self.send_message(
                conn,
                refuse("the message is too long (4,000 characters at most)"),
            );
        }
        let identity = self.connections[&conn].identity.clone();
        let mut posted = ChatMessage {
            id: 0,
            at: execution::now_ms(),
            username: identity.username,
            name: identity.display_name,
            color: identity.color,
            text: text.to_string(),
        };
        let Some(journal) = &mut self.journal else {
            return self.send_message(conn, refuse("this room keeps no chat"));
        };
        match journal.post(&posted) {
            Ok(id) => posted.id = id,
            Err(e) => {
                tracing::warn!("cannot store a chat message: {e}");
                return self
                    .send_message(conn, refuse("the server cannot store messages right now"));
            }
        }
        let posted_reply = Reply {
            id: Some(posted.id),
            ..Reply::ok(RequestKind::Chat, request_id)
        };
        self.send_message(conn, posted_reply);
        let message = ServerEvent::ChatMessage { message: posted };
        self.broadcast(protocol::encode_message(&message.into()));
    }

    /// The id of the cell held by a Yjs item (read from the room's document, where a cell an
    /// update deletes is still present while the update is judged).
    pub(super) fn cell_id_of(&self, item: crate::guard::CellItem) -> Option<CellId> {
        let document = self.document.as_ref()?;
        let txn = document.doc.transact();
        let cell = crate::guard::cell_map(&txn, item)?;
        match cell.get(&txn, "id") {
            Some(yrs::Out::Any(yrs::Any::String(id))) => Some(CellId::from(id.as_ref())),
            _ => None,
        }
    }

    /// A lock (`take`) or unlock request of someone holding `edit` (`handle_request` checked
    /// it). A granted lock answers `"status": "ok"` with the lease, like every other request done.
    pub(super) fn lock_request(
        &mut self,
        conn: ConnectionId,
        take: bool,
        cell: &CellId,
        request_id: Option<RequestId>,
    ) {
        let kind = if take {
            RequestKind::Lock
        } else {
            RequestKind::Unlock
        };
        let refuse = |reason: String| Reply::refused(kind, request_id, reason).with_cell(cell);
        let exists = self
            .document
            .as_ref()
            .is_some_and(|d| execution::find_cell(&d.doc.transact(), cell.as_str()).is_some());
        if !exists {
            return self.send_message(conn, refuse(format!("no cell with id {cell}")));
        }
        let now = Instant::now();
        if take {
            let identity = self.connections[&conn].identity.clone();
            let lease = self.config.lock_lease;
            match self.locks.take(cell, conn, &identity, now, lease) {
                Ok(()) => {
                    self.publish_lock(cell);
                    let granted = Reply {
                        lease_ms: Some(lease.as_millis() as u64),
                        ..Reply::ok(kind, request_id).with_cell(cell)
                    };
                    self.send_message(conn, granted);
                }
                Err(busy) => self.send_message(conn, refuse(busy.to_string())),
            }
        } else if self.locks.release(cell, conn) {
            self.publish_lock(cell);
            self.send_message(conn, Reply::ok(kind, request_id).with_cell(cell));
        } else {
            self.send_message(conn, refuse("you do not hold this cell's lock".into()));
        }
    }

    /// Writes a cell's locks (edit, and execute while a run holds it) to `state.locks`.
    pub(super) fn publish_lock(&mut self, cell_id: &CellId) {
        let who = |identity: &Identity| json!({"username": identity.username, "name": identity.display_name, "color": identity.color});
        let mut entry = serde_json::Map::new();
        if let Some(lock) = self.locks.get(cell_id) {
            entry.insert("edit".into(), json!({"by": who(&lock.identity)}));
        }
        if let Some(run) = self.exec.run_of_cell(cell_id) {
            entry.insert(
                "execute".into(),
                json!({"by": who(&run.requester.identity)}),
            );
        }
        self.write_state(|txn, state| {
            let locks = match state.get(txn, "locks") {
                Some(yrs::Out::YMap(map)) => map,
                _ => state.insert(txn, "locks", yrs::MapPrelim::default()),
            };
            if entry.is_empty() {
                locks.remove(txn, cell_id.as_str());
            } else {
                locks.insert(
                    txn,
                    cell_id.as_str(),
                    crate::notebook::json_to_any(&Value::Object(entry)),
                );
            }
        });
    }
}
