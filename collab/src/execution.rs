//! Running cells: the room's side of server-side execution.
//!
//! A kernel lives outside this crate (`kernel-bridge` speaks ZeroMQ to it). The room hands it an
//! [`ExecuteJob`] through the [`Kernel`] trait, with the code taken from the document, and the
//! kernel reports back through the job's [`EventSink`] with [`KernelEvent`]s tagged by the run
//! they belong to. The room knows which cell each run is for and writes every event into that
//! cell with the functions below, so every participant sees the same outputs through ordinary
//! sync, whether or not the person who ran the cell is still connected.
//!
//! Server-written state lives in the document's `state` map: `kernel` (id, name, status) and
//! `executions` (per cell: queued, running or finished, who ran it and when).

use std::sync::Arc;

use serde_json::{Map as JsonMap, Value};
use tokio::sync::mpsc;
use yrs::{
    Any, Array, ArrayRef, GetString, Map, MapRef, Out, ReadTxn, Text, TextRef, TransactionMut,
};

use crate::notebook::{insert_output, json_to_any};
use crate::{CellId, ConnectionId, Identity};

pub use crate::ids::{KernelId, RunId};

/// Who asked for a run: a person, and the connection they asked through (none for REST).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requester {
    pub identity: Identity,
    pub conn: Option<ConnectionId>,
}

/// What the room asks a kernel to run.
pub struct ExecuteJob {
    pub run: RunId,
    pub cell_id: CellId,
    pub code: String,
    /// Whether `input()` may prompt (only when the requester has a connection to answer it).
    pub allow_stdin: bool,
    pub events: EventSink,
}

/// A kernel's state as everyone sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelStatus {
    Starting,
    Idle,
    Busy,
    Restarting,
    Dead,
}

impl KernelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KernelStatus::Starting => "starting",
            KernelStatus::Idle => "idle",
            KernelStatus::Busy => "busy",
            KernelStatus::Restarting => "restarting",
            KernelStatus::Dead => "dead",
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    Ok,
    /// The code raised (the error is among the outputs).
    Error,
    /// It never ran or was cut short: interrupted while queued, the kernel died or restarted.
    Aborted(String),
}

impl RunOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            RunOutcome::Ok => "ok",
            RunOutcome::Error => "error",
            RunOutcome::Aborted(_) => "aborted",
        }
    }
}

/// What happened in one run, in the order the kernel said it.
#[derive(Clone, Debug, PartialEq)]
pub enum RunEvent {
    /// The kernel began running the code.
    Started,
    ExecutionCount(i64),
    /// `display_data`, `execute_result` or `error`, in nbformat form.
    Output {
        output: Value,
        display_id: Option<String>,
    },
    Stream {
        name: String,
        text: String,
    },
    ClearOutput {
        wait: bool,
    },
    InputRequest {
        prompt: String,
        password: bool,
    },
    Finished {
        outcome: RunOutcome,
        execution_count: Option<i64>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum KernelEvent {
    Status {
        kernel: KernelId,
        status: KernelStatus,
    },
    /// The kernel was shut down: the notebook no longer has it.
    Gone {
        kernel: KernelId,
    },
    /// `update_display_data`: every output shown under this id, in any cell, takes the new data.
    Display {
        kernel: KernelId,
        display_id: String,
        data: Value,
        metadata: Value,
    },
    Run {
        run: RunId,
        event: RunEvent,
    },
}

/// Where a kernel sends its events: the mailbox of the room that asked.
#[derive(Clone)]
pub struct EventSink(pub(crate) mpsc::Sender<crate::RoomInput>);

impl EventSink {
    /// A sink feeding this mailbox (a room's, or a test's).
    pub fn new(mailbox: mpsc::Sender<crate::RoomInput>) -> Self {
        EventSink(mailbox)
    }

    /// Waits for room in the mailbox; false once the room is gone.
    pub async fn send(&self, event: KernelEvent) -> bool {
        self.0.send(crate::RoomInput::Kernel(event)).await.is_ok()
    }

    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    pub fn same_room(&self, other: &EventSink) -> bool {
        self.0.same_channel(&other.0)
    }
}

/// A running kernel, as the room sees it. Calls return at once; outcomes arrive as events.
pub trait Kernel: Send + Sync {
    fn id(&self) -> &KernelId;
    /// The kernelspec name (`python3`).
    fn name(&self) -> &str;
    fn status(&self) -> KernelStatus;
    /// Queues a run; the kernel runs its queue in order, one at a time.
    fn execute(&self, job: ExecuteJob);
    fn input_reply(&self, run: &RunId, value: String);
    /// Drops a run still waiting in the queue (it finishes aborted with `reason`); a run that
    /// has started goes on.
    fn cancel(&self, run: &RunId, reason: &str);
    /// Interrupts the running cell and drops the queue.
    fn interrupt(&self);
    fn restart(&self);
    /// Status changes are sent to `events` until its room closes.
    fn subscribe(&self, events: EventSink);
}

pub type KernelRef = Arc<dyn Kernel>;

/// The cell with this id, if it is in the document.
pub fn find_cell<T: ReadTxn>(txn: &T, cell_id: &str) -> Option<MapRef> {
    let cells = txn.get_array("cells")?;
    cells.iter(txn).find_map(|cell| match cell {
        Out::YMap(map) => match map.get(txn, "id") {
            Some(Out::Any(Any::String(id))) if &*id == cell_id => Some(map),
            _ => None,
        },
        _ => None,
    })
}

/// The code of a cell, if it is a code cell.
pub fn code_of<T: ReadTxn>(txn: &T, cell: &MapRef) -> Option<String> {
    match cell.get(txn, "cell_type") {
        Some(Out::Any(Any::String(t))) if &*t == "code" => {}
        _ => return None,
    }
    match cell.get(txn, "source") {
        Some(Out::YText(text)) => Some(text.get_string(txn)),
        Some(Out::Any(Any::String(s))) => Some(s.to_string()),
        _ => Some(String::new()),
    }
}

fn outputs_of(txn: &mut TransactionMut, cell: &MapRef) -> ArrayRef {
    match cell.get(txn, "outputs") {
        Some(Out::YArray(outputs)) => outputs,
        _ => cell.insert(txn, "outputs", yrs::ArrayPrelim::default()),
    }
}

fn set_if_changed(txn: &mut TransactionMut, map: &MapRef, key: &str, value: Any) {
    if map.get(txn, key) != Some(Out::Any(value.clone())) {
        map.insert(txn, key, value);
    }
}

/// Marks a cell as running (JupyterLab's `execution_state`).
pub fn mark_running(txn: &mut TransactionMut, cell: &MapRef) {
    set_if_changed(txn, cell, "execution_state", Any::from("running"));
}

/// Clears a cell's outputs and execution count, as a run starts.
pub fn clear_for_run(txn: &mut TransactionMut, cell: &MapRef) {
    clear_outputs(txn, cell);
    set_if_changed(txn, cell, "execution_count", Any::Null);
    mark_running(txn, cell);
}

pub fn clear_outputs(txn: &mut TransactionMut, cell: &MapRef) {
    let outputs = outputs_of(txn, cell);
    let len = outputs.len(txn);
    if len > 0 {
        outputs.remove_range(txn, 0, len);
    }
}

/// Sets the execution count and marks the cell idle, in one transaction.
pub fn finish(txn: &mut TransactionMut, cell: &MapRef, execution_count: Option<i64>) {
    if let Some(count) = execution_count {
        set_if_changed(txn, cell, "execution_count", Any::from(count as f64));
    }
    set_if_changed(txn, cell, "execution_state", Any::from("idle"));
}

pub fn set_execution_count(txn: &mut TransactionMut, cell: &MapRef, count: i64) {
    set_if_changed(txn, cell, "execution_count", Any::from(count as f64));
}

/// Appends an output; returns the output's map (for display updates) and its size in bytes.
pub fn append_output(txn: &mut TransactionMut, cell: &MapRef, output: &Value) -> (MapRef, usize) {
    let outputs = outputs_of(txn, cell);
    let len = outputs.len(txn);
    insert_output(txn, &outputs, len, output);
    let map = match outputs.get(txn, len) {
        Some(Out::YMap(map)) => map,
        _ => unreachable!("an output was just inserted here"),
    };
    (map, output.to_string().len())
}

/// Replaces `data` and `metadata` of an output shown under a display id, if it is still in
/// `cell`'s outputs. Returns whether it was.
pub fn update_display(
    txn: &mut TransactionMut,
    cell: &MapRef,
    output: &MapRef,
    data: &Value,
    metadata: &Value,
) -> bool {
    let outputs = outputs_of(txn, cell);
    let present = outputs
        .iter(txn)
        .any(|o| matches!(o, Out::YMap(ref m) if m == output));
    if present {
        output.insert(txn, "data", json_to_any(data));
        output.insert(txn, "metadata", json_to_any(metadata));
    }
    present
}

/// The end of a stream output as a terminal would show it: the line being written, and where
/// the cursor is in it.
#[derive(Clone, Debug)]
pub struct StreamTail {
    name: String,
    text: TextRef,
    /// Length of the whole text (UTF-16 units) when this tail was taken.
    len: u32,
    line: Vec<char>,
    cursor: usize,
}

/// Appends stream text to the cell: into the last output when it is a stream of the same name,
/// else as a new stream output. `\r` returns to the start of the line and `\b` moves back one
/// character, and what follows overwrites, as in a terminal. `tail` remembers the end of the text
/// between calls, so a long stream costs only its new text. Returns the net growth in bytes.
pub fn append_stream(
    txn: &mut TransactionMut,
    cell: &MapRef,
    name: &str,
    chunk: &str,
    tail: &mut Option<StreamTail>,
) -> usize {
    let outputs = outputs_of(txn, cell);
    let len = outputs.len(txn);
    let last_text = match len.checked_sub(1).and_then(|i| outputs.get(txn, i)) {
        Some(Out::YMap(last)) => {
            let same_stream = matches!(last.get(txn, "output_type"), Some(Out::Any(Any::String(t))) if &*t == "stream")
                && matches!(last.get(txn, "name"), Some(Out::Any(Any::String(n))) if &*n == name);
            match last.get(txn, "text") {
                Some(Out::YText(text)) if same_stream => Some(text),
                _ => None,
            }
        }
        _ => None,
    };
    let text = match last_text {
        Some(text) => text,
        None => {
            let output = serde_json::json!({"output_type": "stream", "name": name, "text": ""});
            insert_output(txn, &outputs, len, &output);
            match outputs.get(txn, len).and_then(|o| match o {
                Out::YMap(m) => m.get(txn, "text"),
                _ => None,
            }) {
                Some(Out::YText(text)) => text,
                _ => unreachable!("a stream output was just inserted here"),
            }
        }
    };
    let current_len = text.len(txn);
    let reusable = tail
        .as_ref()
        .is_some_and(|t| t.text == text && t.len == current_len && t.name == name);
    if !reusable {
        let whole = text.get_string(txn);
        let line: Vec<char> = whole.rsplit('\n').next().unwrap_or("").chars().collect();
        let cursor = line.len();
        *tail = Some(StreamTail {
            name: name.to_string(),
            text: text.clone(),
            len: current_len,
            line,
            cursor,
        });
    }
    let t = tail.as_mut().expect("set above");
    let old_line: String = t.line.iter().collect();
    let mut new_tail = String::new();
    for c in chunk.chars() {
        match c {
            '\n' => {
                new_tail.extend(t.line.drain(..));
                new_tail.push('\n');
                t.cursor = 0;
            }
            '\r' => t.cursor = 0,
            '\u{8}' => t.cursor = t.cursor.saturating_sub(1),
            c => {
                if t.cursor < t.line.len() {
                    t.line[t.cursor] = c;
                } else {
                    t.line.push(c);
                }
                t.cursor += 1;
            }
        }
    }
    new_tail.extend(t.line.iter());
    // Only the old last line can change: keep what it shares with the new tail.
    let common: usize = old_line
        .chars()
        .zip(new_tail.chars())
        .take_while(|(a, b)| a == b)
        .count();
    let common_bytes = old_line
        .char_indices()
        .nth(common)
        .map_or(old_line.len(), |(i, _)| i);
    let utf16 = |s: &str| s.encode_utf16().count() as u32;
    let line_start = t.len - utf16(&old_line);
    let keep = utf16(&old_line[..common_bytes]);
    let removed = utf16(&old_line[common_bytes..]);
    if removed > 0 {
        t.text.remove_range(txn, line_start + keep, removed);
    }
    let inserted = &new_tail[common_bytes..];
    if !inserted.is_empty() {
        t.text.insert(txn, line_start + keep, inserted);
    }
    t.len = t.len - removed + utf16(inserted);
    new_tail.len().saturating_sub(old_line.len())
}

/// Server-written run state of one cell, as stored under `state.executions[cell_id]`.
pub fn execution_entry(
    status: &str,
    requester: &Requester,
    queued_at: f64,
    extra: &[(&str, Value)],
) -> Any {
    let mut entry = JsonMap::new();
    entry.insert("status".into(), Value::from(status));
    entry.insert(
        "by".into(),
        serde_json::json!({
            "username": requester.identity.username,
            "name": requester.identity.display_name,
            "color": requester.identity.color,
        }),
    );
    entry.insert("queued_at".into(), Value::from(queued_at));
    for (k, v) in extra {
        entry.insert((*k).into(), v.clone());
    }
    json_to_any(&Value::Object(entry))
}

/// Milliseconds since the Unix epoch, for the timestamps clients show.
pub fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as f64)
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notebook::{insert_cell, new_doc};
    use crate::{Cell, CellType};
    use yrs::{Transact, WriteTxn};

    fn doc_with_cell() -> yrs::Doc {
        let doc = new_doc();
        {
            let mut txn = doc.transact_mut();
            let cells = txn.get_or_insert_array("cells");
            let cell = Cell {
                id: "c1".into(),
                cell_type: CellType::Code,
                source: "print(1)".into(),
                metadata: Default::default(),
                execution_count: serde_json::Value::Null,
                outputs: Vec::new(),
                attachments: None,
            };
            insert_cell(&mut txn, &cells, 0, &cell);
        }
        doc
    }

    fn stream_text(doc: &yrs::Doc) -> Vec<(String, String)> {
        let txn = doc.transact();
        let cell = find_cell(&txn, "c1").unwrap();
        let Some(Out::YArray(outputs)) = cell.get(&txn, "outputs") else {
            panic!("no outputs")
        };
        outputs
            .iter(&txn)
            .map(|o| {
                let Out::YMap(m) = o else { panic!() };
                let name = match m.get(&txn, "name") {
                    Some(Out::Any(Any::String(n))) => n.to_string(),
                    _ => String::new(),
                };
                let text = match m.get(&txn, "text") {
                    Some(Out::YText(t)) => t.get_string(&txn),
                    _ => String::new(),
                };
                (name, text)
            })
            .collect()
    }

    fn feed(doc: &yrs::Doc, chunks: &[(&str, &str)], tail: &mut Option<StreamTail>) {
        for (name, chunk) in chunks {
            let mut txn = doc.transact_mut();
            let cell = find_cell(&txn, "c1").unwrap();
            append_stream(&mut txn, &cell, name, chunk, tail);
        }
    }

    #[test]
    fn streams_of_one_name_grow_one_output() {
        let doc = doc_with_cell();
        let mut tail = None;
        feed(
            &doc,
            &[
                ("stdout", "a\n"),
                ("stdout", "b\n"),
                ("stderr", "oops\n"),
                ("stdout", "c"),
            ],
            &mut tail,
        );
        assert_eq!(
            stream_text(&doc),
            vec![
                ("stdout".into(), "a\nb\n".into()),
                ("stderr".into(), "oops\n".into()),
                ("stdout".into(), "c".into())
            ]
        );
    }

    #[test]
    fn carriage_return_and_backspace_act_like_a_terminal() {
        let doc = doc_with_cell();
        let mut tail = None;
        feed(
            &doc,
            &[
                ("stdout", "start\n"),
                ("stdout", "10%"),
                ("stdout", "\r20%"),
                ("stdout", "\r100%\n"),
                ("stdout", "ab\u{8}c"),
                ("stdout", "\nwin\r\nx\r"),
                ("stdout", "y"),
            ],
            &mut tail,
        );
        assert_eq!(stream_text(&doc)[0].1, "start\n100%\nac\nwin\ny");
    }

    #[test]
    fn the_tail_is_rebuilt_when_someone_else_changed_the_text() {
        let doc = doc_with_cell();
        let mut tail = None;
        feed(&doc, &[("stdout", "héllo 😀")], &mut tail);
        // Another writer appends behind the cached tail's back.
        {
            let mut txn = doc.transact_mut();
            let cell = find_cell(&txn, "c1").unwrap();
            let Some(Out::YArray(outputs)) = cell.get(&txn, "outputs") else {
                panic!()
            };
            let Some(Out::YMap(o)) = outputs.get(&txn, 0) else {
                panic!()
            };
            let Some(Out::YText(t)) = o.get(&txn, "text") else {
                panic!()
            };
            t.push(&mut txn, "!");
        }
        feed(&doc, &[("stdout", "\rbye")], &mut tail);
        assert_eq!(stream_text(&doc)[0].1, "byelo 😀!");
    }

    #[test]
    fn display_updates_reach_only_outputs_still_present() {
        let doc = doc_with_cell();
        let mut txn = doc.transact_mut();
        let cell = find_cell(&txn, "c1").unwrap();
        let output = serde_json::json!({"output_type": "display_data", "data": {"text/plain": "1"}, "metadata": {}});
        let (map, _) = append_output(&mut txn, &cell, &output);
        let data = serde_json::json!({"text/plain": "2"});
        assert!(update_display(
            &mut txn,
            &cell,
            &map,
            &data,
            &serde_json::json!({})
        ));
        clear_outputs(&mut txn, &cell);
        assert!(!update_display(
            &mut txn,
            &cell,
            &map,
            &data,
            &serde_json::json!({})
        ));
    }
}
