//! Running cells: requests from clients, events from kernels, outputs written into cells.

use super::*;

/// Running cells: requests from clients, events from kernels.
impl Room {
    /// A request of our own client (a RAW JSON message). `execute` and `shutdown` reach the
    /// room only when the server passes them on: it owns the kernels.
    pub(super) fn handle_request(&mut self, conn: ConnectionId, request: Request) {
        let Request { request_id, body } = request;
        let kind = body.kind();
        let (needed, refusal) = body.needs();
        if !self.may(conn, Capabilities::of(needed)) {
            return self.send_message(conn, Reply::refused(kind, request_id, refusal));
        }
        match body {
            ClientRequest::Lock { cell_id } => self.lock_request(conn, true, &cell_id, request_id),
            ClientRequest::Unlock { cell_id } => {
                self.lock_request(conn, false, &cell_id, request_id)
            }
            ClientRequest::Chat { text } => self.chat(conn, &text, request_id),
            ClientRequest::InputReply { cell_id, value } => {
                let reply = match self.exec.prompt_of(&cell_id, conn) {
                    Some((run_id, run)) => {
                        run.input_pending = false;
                        run.kernel.input_reply(run_id, value);
                        Reply::ok(kind, request_id)
                    }
                    None => {
                        let reason = "no prompt of yours is waiting in this cell";
                        Reply::refused(kind, request_id, reason)
                    }
                };
                self.send_message(conn, reply);
            }
            ClientRequest::Interrupt | ClientRequest::Restart => {
                let reply = match &self.exec.kernel {
                    Some(kernel) => {
                        if kind == RequestKind::Interrupt {
                            kernel.interrupt();
                        } else {
                            kernel.restart();
                        }
                        Reply::ok(kind, request_id)
                    }
                    None => {
                        Reply::refused(kind, request_id, "no kernel is running for this notebook")
                    }
                };
                self.send_message(conn, reply);
            }
            ClientRequest::Execute { .. } | ClientRequest::Shutdown => {
                // The server takes these before they reach a room; a room without a server
                // in front of it (a test) has no kernel to run them on.
                let reason = "this room does not start or stop kernels";
                self.send_message(conn, Reply::refused(kind, request_id, reason));
            }
        }
    }

    pub(super) fn attach_kernel(&mut self, kernel: KernelRef) {
        if self.document.is_none() {
            return;
        }
        let same = self
            .exec
            .kernel
            .as_ref()
            .is_some_and(|k| k.id() == kernel.id());
        if !same {
            kernel.subscribe(self.handle.events());
            self.exec.kernel = Some(kernel.clone());
        }
        let status = kernel.status();
        self.show_kernel(kernel.id(), kernel.name(), status);
    }

    /// The notebook no longer has this kernel (its session ended; the kernel may live on for
    /// another notebook): requests to interrupt or restart it and its displays stop here.
    pub(super) fn detach_kernel(&mut self, kernel: &KernelId) {
        if self.exec.kernel.as_ref().is_some_and(|k| k.id() == kernel) {
            self.exec.kernel = None;
            self.write_state(|txn, state| {
                state.remove(txn, "kernel");
            });
        }
    }

    pub(super) fn show_kernel(&mut self, id: &KernelId, name: &str, status: KernelStatus) {
        let entry = json!({"id": id, "name": name, "status": status.as_str()});
        self.write_state(|txn, state| {
            let value = crate::notebook::json_to_any(&entry);
            if state.get(txn, "kernel") != Some(yrs::Out::Any(value.clone())) {
                state.insert(txn, "kernel", value);
            }
        });
    }

    /// The room was just loaded: no run of an earlier life of the room is going on any more.
    pub(super) fn forget_stale_runs(&mut self) {
        let document = self.doc_mut();
        let delta = {
            let mut txn = document.doc.transact_mut_with(SERVER_STATE_ORIGIN);
            let cells = txn.get_or_insert_array("cells");
            let running: Vec<yrs::MapRef> = cells
                .iter(&txn)
                .filter_map(|cell| match cell {
                    yrs::Out::YMap(map) => Some(map),
                    _ => None,
                })
                .filter(|map| {
                    matches!(map.get(&txn, "execution_state"),
                        Some(yrs::Out::Any(yrs::Any::String(s))) if &*s == "running")
                })
                .collect();
            for cell in running {
                cell.insert(&mut txn, "execution_state", "idle");
            }
            let state = txn.get_or_insert_map("state");
            state.remove(&mut txn, "kernel");
            if let Some(yrs::Out::YMap(executions)) = state.get(&txn, "executions") {
                let stale: Vec<(String, Value)> = executions
                    .iter(&txn)
                    .filter_map(|(cell, entry)| {
                        let entry = crate::notebook::out_to_json(&txn, &entry);
                        let status = entry.get("status").and_then(Value::as_str)?;
                        (status == "queued" || status == "running")
                            .then(|| (cell.to_string(), entry))
                    })
                    .collect();
                for (cell, mut entry) in stale {
                    entry["status"] = Value::from("aborted");
                    entry["reason"] = Value::from("the server restarted");
                    executions.insert(
                        &mut txn,
                        cell.as_str(),
                        crate::notebook::json_to_any(&entry),
                    );
                }
            }
            txn.encode_update_v1()
        };
        if delta != [0, 0] {
            self.record_change(Bytes::from(delta), false);
        }
    }

    pub(super) fn execute(
        &mut self,
        cell_id: CellId,
        requester: Requester,
        kernel: KernelRef,
        request_id: Option<RequestId>,
        done: Option<oneshot::Sender<Result<RunSummary, RunRefused>>>,
    ) {
        let allowed = requester
            .conn
            .is_none_or(|c| self.may(c, Capabilities::EXECUTE));
        let refusal = if !allowed {
            Some(RunRefused::NotAllowed)
        } else if self.document.is_none() {
            Some(RunRefused::NoNotebook)
        } else if self.exec.run_of_cell(&cell_id).is_some() {
            Some(RunRefused::AlreadyQueued)
        } else {
            None
        };
        let code = refusal.is_none().then(|| {
            let txn = self.doc_mut().doc.transact();
            execution::find_cell(&txn, cell_id.as_str()).map(|cell| execution::code_of(&txn, &cell))
        });
        let code = match (refusal, code) {
            (Some(reason), _) => Err(reason),
            (None, Some(Some(Some(code)))) => Ok(code),
            (None, Some(Some(None))) => Err(RunRefused::NotCode(cell_id.clone())),
            _ => Err(RunRefused::NoCell(cell_id.clone())),
        };
        let code = match code {
            Ok(code) => code,
            Err(reason) => {
                if let (Some(conn), Some(_)) = (requester.conn, request_id) {
                    let reply =
                        Reply::refused(RequestKind::Execute, request_id, reason.to_string());
                    self.send_message(conn, reply);
                }
                if let Some(done) = done {
                    let _ = done.send(Err(reason));
                }
                return;
            }
        };
        self.attach_kernel(kernel.clone());
        let run_id = RunId::new_random();
        let queued_at = execution::now_ms();
        let entry = execution::execution_entry(
            "queued",
            &requester,
            queued_at,
            &[("run", Value::from(run_id.as_str()))],
        );
        self.write_cell(&cell_id, execution::clear_for_run);
        self.write_state(|txn, state| {
            executions_map(txn, state).insert(txn, cell_id.as_str(), entry);
        });
        let allow_stdin = requester.conn.is_some();
        if let (Some(conn), Some(_)) = (requester.conn, request_id) {
            let queued = Reply {
                run: Some(run_id.clone()),
                ..Reply::new(RequestKind::Execute, request_id, Status::Queued).with_cell(&cell_id)
            };
            self.send_message(conn, queued);
        }
        self.exec.start(
            run_id.clone(),
            runs::Run {
                cell_id: cell_id.clone(),
                requester,
                kernel: kernel.clone(),
                queued_at,
                started_at: None,
                execution_count: None,
                output: runs::OutputBudget::default(),
                input_pending: false,
                done,
            },
        );
        self.linger_until = None;
        self.publish_lock(&cell_id);
        let requester_identity = self.exec.runs[&run_id].requester.identity.clone();
        self.audit(
            None,
            Some(&requester_identity),
            "execute",
            &format!("cell {cell_id} run {run_id}"),
        );
        kernel.execute(ExecuteJob {
            run: run_id,
            cell_id,
            code,
            allow_stdin,
            events: self.handle.events(),
        });
    }

    /// Writes into one cell as the kernel's voice; the change is logged, broadcast and saved.
    /// Returns `None` when the cell is gone (deleted while it ran).
    pub(super) fn write_cell<R>(
        &mut self,
        cell_id: &CellId,
        f: impl FnOnce(&mut TransactionMut, &yrs::MapRef) -> R,
    ) -> Option<R> {
        let document = self.doc_mut();
        let (result, delta) = {
            let mut txn = document.doc.transact_mut();
            let cell = execution::find_cell(&txn, cell_id.as_str())?;
            let result = f(&mut txn, &cell);
            (result, txn.encode_update_v1())
        };
        if delta != [0, 0] {
            self.record_change(Bytes::from(delta), true);
        }
        Some(result)
    }

    pub(super) fn on_kernel_event(&mut self, event: KernelEvent) {
        if self.document.is_none() {
            return;
        }
        match event {
            KernelEvent::Status { kernel, status } => {
                let name = match &self.exec.kernel {
                    Some(k) if *k.id() == kernel => k.name().to_string(),
                    _ => return,
                };
                self.show_kernel(&kernel, &name, status);
            }
            KernelEvent::Gone { kernel } => self.detach_kernel(&kernel),
            KernelEvent::Display {
                kernel,
                display_id,
                data,
                metadata,
            } => {
                // Only the notebook's own kernel: one it left (its session ended or changed
                // kernel) may now run another notebook's code, whose displays are not ours.
                if self.exec.kernel.as_ref().is_some_and(|k| *k.id() == kernel) {
                    self.update_display(display_id, data, metadata)
                }
            }
            KernelEvent::Run { run, event } => self.on_run_event(run, event),
        }
    }

    pub(super) fn update_display(&mut self, display_id: String, data: Value, metadata: Value) {
        let targets = self.exec.displays.remove(&display_id).unwrap_or_default();
        let mut kept = Vec::new();
        for (cell, output) in targets {
            let present = self.write_cell(&cell, |txn, c| {
                execution::update_display(txn, c, &output, &data, &metadata)
            });
            if present == Some(true) {
                kept.push((cell, output));
            }
        }
        if !kept.is_empty() {
            self.exec.displays.insert(display_id, kept);
        }
    }

    pub(super) fn on_run_event(&mut self, run_id: RunId, event: RunEvent) {
        let Some(run) = self.exec.runs.get_mut(&run_id) else {
            tracing::debug!(run = %run_id, "event for a run this room does not know");
            return;
        };
        let cell_id = run.cell_id.clone();
        let max = self.config.max_output_bytes;
        match event {
            RunEvent::Started => {
                let started = execution::now_ms();
                run.started_at = Some(started);
                let entry = execution::execution_entry(
                    "running",
                    &run.requester,
                    run.queued_at,
                    &[
                        ("run", Value::from(run_id.as_str())),
                        ("started_at", Value::from(started)),
                    ],
                );
                self.write_state(|txn, state| {
                    executions_map(txn, state).insert(txn, cell_id.as_str(), entry);
                });
            }
            RunEvent::ExecutionCount(count) => run.execution_count = Some(count),
            RunEvent::ClearOutput { wait: true } => run.output.clear_later(),
            RunEvent::ClearOutput { wait: false } => {
                run.output.cleared();
                self.write_cell(&cell_id, execution::clear_outputs);
            }
            RunEvent::Output { output, display_id } => {
                let clear = run.output.take_pending_clear();
                let runs::Admitted { fits, note } = run.output.admit(output.to_string().len(), max);
                let map = self.write_cell(&cell_id, |txn, cell| {
                    if clear {
                        execution::clear_outputs(txn, cell);
                    }
                    if note {
                        execution::append_output(txn, cell, &truncation_note(max));
                    }
                    fits.then(|| execution::append_output(txn, cell, &output).0)
                });
                if let (Some(Some(map)), Some(display_id)) = (map, display_id) {
                    self.exec
                        .displays
                        .entry(display_id)
                        .or_default()
                        .push((cell_id, map));
                }
            }
            RunEvent::Stream { name, text } => {
                let clear = run.output.take_pending_clear();
                if run.output.truncated() {
                    return;
                }
                let mut tail = run.output.take_tail();
                let room_left = run.output.room_left(max);
                let (text, cut) = if text.len() > room_left {
                    (cut_at_char(&text, room_left), true)
                } else {
                    (text.as_str(), false)
                };
                let grown = self.write_cell(&cell_id, |txn, cell| {
                    if clear {
                        execution::clear_outputs(txn, cell);
                    }
                    let grown = execution::append_stream(txn, cell, &name, text, &mut tail);
                    if cut {
                        execution::append_output(txn, cell, &truncation_note(max));
                    }
                    grown
                });
                if let Some(run) = self.exec.runs.get_mut(&run_id) {
                    run.output.streamed(grown.unwrap_or(0), cut, tail);
                }
            }
            RunEvent::InputRequest { prompt, password } => {
                let requester = run
                    .requester
                    .conn
                    .filter(|c| self.connections.contains_key(c));
                match requester {
                    Some(conn) => {
                        run.input_pending = true;
                        let message = ServerEvent::InputRequest {
                            cell_id,
                            run: run_id,
                            prompt,
                            password,
                        };
                        self.send_message(conn, message);
                    }
                    None => {
                        tracing::info!(cell = %cell_id, "input asked of a requester who left: interrupting");
                        run.kernel.interrupt();
                    }
                }
            }
            RunEvent::Finished {
                outcome,
                execution_count,
            } => self.finish_run(run_id, outcome, execution_count),
        }
    }

    pub(super) fn finish_run(&mut self, run_id: RunId, outcome: RunOutcome, count: Option<i64>) {
        let Some(mut run) = self.exec.runs.remove(&run_id) else {
            return;
        };
        let count = count.or(run.execution_count);
        let cell_id = run.cell_id.clone();
        let mut extra = vec![
            ("run", Value::from(run_id.as_str())),
            ("finished_at", Value::from(execution::now_ms())),
            ("execution_count", count.map_or(Value::Null, Value::from)),
        ];
        if let Some(started) = run.started_at {
            extra.push(("started_at", Value::from(started)));
        }
        if let RunOutcome::Aborted(reason) = &outcome {
            extra.push(("reason", Value::from(reason.as_str())));
        }
        let entry =
            execution::execution_entry(outcome.as_str(), &run.requester, run.queued_at, &extra);
        self.write_cell(&cell_id, |txn, cell| execution::finish(txn, cell, count));
        self.write_state(|txn, state| {
            executions_map(txn, state).insert(txn, cell_id.as_str(), entry);
        });
        if run.input_pending {
            if let Some(conn) = run.requester.conn {
                let message = ServerEvent::InputClosed {
                    cell_id: cell_id.clone(),
                    run: run_id,
                };
                self.send_message(conn, message);
            }
        }
        if let Some(done) = run.done.take() {
            let _ = done.send(Ok(RunSummary {
                outcome,
                execution_count: count,
            }));
        }
        self.publish_lock(&cell_id);
        if self.exec.runs.is_empty() && self.connections.is_empty() {
            self.linger_until = Some(Instant::now() + self.config.linger);
        }
    }
}

/// `state.executions`, created on first use.
pub(super) fn executions_map(txn: &mut TransactionMut, state: &yrs::MapRef) -> yrs::MapRef {
    match state.get(txn, "executions") {
        Some(yrs::Out::YMap(map)) => map,
        _ => state.insert(txn, "executions", yrs::MapPrelim::default()),
    }
}

pub(super) fn truncation_note(max: usize) -> Value {
    json!({
        "output_type": "stream",
        "name": "stderr",
        "text": format!(
            "\n[Quire: output truncated: this run wrote more than {} MB; later output is not kept]\n",
            max / (1 << 20)
        ),
    })
}

pub(super) fn cut_at_char(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
