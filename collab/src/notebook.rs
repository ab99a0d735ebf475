//! nbformat v4 notebooks and their Y document form (jupyter_ydoc schema "2.0.0").
//!
//! The Y document has three roots:
//! - `meta` (Map): `nbformat`, `nbformat_minor` (numbers), `metadata` (Map of plain JSON values);
//! - `cells` (Array of Map): `id`, `cell_type`, `source` (Text), `metadata` (Map), and for code cells
//!   `execution_count`, `execution_state`, `outputs` (Array of Map; a stream output's `text` is a
//!   Text), for markdown and raw cells `attachments` when non-empty;
//! - `state` (Map): written by the room (`path`, `hash`, `dirty`), not part of the notebook.
//!
//! Yjs numbers are float64, so whole numbers are written back to the file as integers, and
//! multi-line strings are joined on load and split into lines on save exactly as nbformat does.
//! Loading is deterministic: the same notebook always becomes the same Yjs items under the fixed
//! client id [`LOAD_CLIENT_ID`], so a room rebuilt from an unchanged file matches the history a
//! reconnecting client already holds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map as JsonMap, Value};
use sha2::{Digest, Sha256};
use yrs::any::Number;
use yrs::block::ClientID;
use yrs::{
    Any, Array, ArrayPrelim, ArrayRef, Doc, GetString, Map, MapPrelim, MapRef, OffsetKind, Options,
    Out, ReadTxn, TextPrelim, TextRef, Transact, TransactionMut, WriteTxn,
};

use crate::MAX_JSON_DEPTH;

/// The Yjs client id used for the items a notebook file becomes when it is first loaded.
/// Fixed so that loading the same file twice yields the same item ids.
pub const LOAD_CLIENT_ID: u64 = 0x5155_4952;

/// Notebook minor versions below this carry no cell ids in the file.
const FIRST_MINOR_WITH_CELL_IDS: i64 = 5;

/// The levels a notebook file puts around the values it holds, at most: the file, `cells`, a
/// cell, `outputs`, an output. A file may nest this much deeper than [`MAX_JSON_DEPTH`], so that
/// whatever a room holds, it can read back what it saved.
pub const FILE_ENVELOPE_DEPTH: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CellType {
    Code,
    Markdown,
    Raw,
}

impl CellType {
    pub fn as_str(self) -> &'static str {
        match self {
            CellType::Code => "code",
            CellType::Markdown => "markdown",
            CellType::Raw => "raw",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "code" => Some(CellType::Code),
            "markdown" => Some(CellType::Markdown),
            "raw" => Some(CellType::Raw),
            _ => None,
        }
    }
}

/// One cell, with multi-line strings joined.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub id: String,
    pub cell_type: CellType,
    pub source: String,
    pub metadata: JsonMap<String, Value>,
    /// Code cells only: a number or null.
    pub execution_count: Value,
    /// Code cells only.
    pub outputs: Vec<Value>,
    /// Markdown and raw cells only, when present in the file.
    pub attachments: Option<Value>,
}

/// A notebook in memory: what an .ipynb file means, independent of its formatting.
#[derive(Clone, Debug, PartialEq)]
pub struct Notebook {
    pub nbformat: i64,
    pub nbformat_minor: i64,
    pub metadata: JsonMap<String, Value>,
    pub cells: Vec<Cell>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotebookError {
    #[error("not a notebook: the file is not valid UTF-8")]
    NotUtf8,
    #[error("not a notebook: invalid JSON ({0})")]
    Json(String),
    #[error("not a notebook: {0}")]
    Invalid(String),
    #[error("unsupported notebook format {0}: Quire reads nbformat 4.0 to 4.5")]
    UnsupportedVersion(String),
    #[error("not a text file: it is not valid UTF-8")]
    NotText,
}

fn invalid(message: impl Into<String>) -> NotebookError {
    NotebookError::Invalid(message.into())
}

impl Notebook {
    /// The notebook a new, empty document holds: one empty code cell, like JupyterLab's.
    pub fn new_empty() -> Self {
        Notebook {
            nbformat: 4,
            nbformat_minor: 5,
            metadata: JsonMap::new(),
            cells: Vec::new(),
        }
    }

    /// Parses an .ipynb file, checking the structure nbformat 4 requires.
    pub fn from_ipynb(bytes: &[u8]) -> Result<Notebook, NotebookError> {
        let text = std::str::from_utf8(bytes).map_err(|_| NotebookError::NotUtf8)?;
        let value = parse_file_json(text)?;
        Notebook::from_json(value)
    }

    pub fn from_json(value: Value) -> Result<Notebook, NotebookError> {
        let Value::Object(mut top) = value else {
            return Err(invalid("the top level must be a JSON object"));
        };
        let nbformat = match top.get("nbformat") {
            Some(v) => v
                .as_i64()
                .ok_or_else(|| invalid("\"nbformat\" must be an integer"))?,
            None => return Err(invalid("missing \"nbformat\"")),
        };
        if nbformat != 4 {
            return Err(NotebookError::UnsupportedVersion(nbformat.to_string()));
        }
        let nbformat_minor = top
            .get("nbformat_minor")
            .and_then(Value::as_i64)
            .filter(|minor| *minor >= 0)
            .ok_or_else(|| invalid("\"nbformat_minor\" must be a non-negative integer"))?;
        let metadata = match top.remove("metadata") {
            Some(Value::Object(m)) => m,
            Some(_) => return Err(invalid("\"metadata\" must be an object")),
            None => return Err(invalid("missing \"metadata\"")),
        };
        for (key, value) in &metadata {
            check_depth(value, &format!("metadata {key:?}"))?;
        }
        let raw_cells = match top.remove("cells") {
            Some(Value::Array(cells)) => cells,
            Some(_) => return Err(invalid("\"cells\" must be a list")),
            None => return Err(invalid("missing \"cells\"")),
        };
        let mut cells = Vec::with_capacity(raw_cells.len());
        for (index, raw) in raw_cells.into_iter().enumerate() {
            cells.push(parse_cell(raw, Outputs::Strict).map_err(|e| match e {
                NotebookError::Invalid(msg) => invalid(format!("cell {index}: {msg}")),
                other => other,
            })?);
        }
        let mut notebook = Notebook {
            nbformat,
            nbformat_minor,
            metadata,
            cells,
        };
        notebook.fill_missing_ids();
        Ok(notebook)
    }

    /// Gives every cell without an id a deterministic one, derived from its position and content.
    fn fill_missing_ids(&mut self) {
        for (index, cell) in self.cells.iter_mut().enumerate() {
            if cell.id.is_empty() {
                cell.id = derived_cell_id(index, cell);
            }
        }
    }

    /// The file form: JSON as nbformat writes it (sorted keys, one-space indent, lines split).
    pub fn to_ipynb(&self) -> Vec<u8> {
        let value = self.to_file_json();
        let mut out = Vec::with_capacity(4096);
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b" ");
        let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
        serde::Serialize::serialize(&value, &mut serializer).expect("JSON values always serialize");
        out.push(b'\n');
        out
    }

    /// The notebook as nbformat JSON: ids only from 4.5 on (duplicates repaired), lines split.
    pub fn to_file_json(&self) -> Value {
        let with_ids = self.nbformat_minor >= FIRST_MINOR_WITH_CELL_IDS;
        let mut seen_ids = HashSet::new();
        let cells: Vec<Value> = self
            .cells
            .iter()
            .enumerate()
            .map(|(index, cell)| {
                let mut obj = JsonMap::new();
                if with_ids {
                    let mut id = cell.id.clone();
                    if !valid_cell_id(&id) || !seen_ids.insert(id.clone()) {
                        id = derived_cell_id(index, cell);
                        while !seen_ids.insert(id.clone()) {
                            id = format!("{}-{index}", &id[..id.len().min(50)]);
                        }
                    }
                    obj.insert("id".into(), Value::String(id));
                }
                obj.insert("cell_type".into(), cell.cell_type.as_str().into());
                obj.insert("metadata".into(), Value::Object(cell.metadata.clone()));
                obj.insert("source".into(), split_lines_value(&cell.source));
                match cell.cell_type {
                    CellType::Code => {
                        obj.insert("execution_count".into(), cell.execution_count.clone());
                        let outputs = cell.outputs.iter().map(split_output).collect();
                        obj.insert("outputs".into(), Value::Array(outputs));
                    }
                    CellType::Markdown | CellType::Raw => {
                        if let Some(attachments) = &cell.attachments {
                            obj.insert("attachments".into(), split_attachments(attachments));
                        }
                    }
                }
                Value::Object(obj)
            })
            .collect();
        let mut top = JsonMap::new();
        top.insert("cells".into(), Value::Array(cells));
        top.insert("metadata".into(), Value::Object(self.metadata.clone()));
        top.insert("nbformat".into(), self.nbformat.into());
        top.insert("nbformat_minor".into(), self.nbformat_minor.into());
        Value::Object(top)
    }

    /// A new Y document holding this notebook, built under [`LOAD_CLIENT_ID`].
    pub fn to_doc(&self) -> Doc {
        let doc = new_doc_with_client(LOAD_CLIENT_ID);
        {
            let mut txn = doc.transact_mut();
            self.write_into(&mut txn);
        }
        doc
    }

    /// Writes meta and cells into an empty document, in a fixed order.
    pub fn write_into(&self, txn: &mut TransactionMut) {
        let meta = txn.get_or_insert_map("meta");
        let metadata = meta.insert(txn, "metadata", MapPrelim::default());
        fill_map(txn, &metadata, &self.metadata);
        meta.insert(txn, "nbformat", Any::Number(Number::Int(self.nbformat)));
        meta.insert(
            txn,
            "nbformat_minor",
            Any::Number(Number::Int(self.nbformat_minor)),
        );
        let cells = txn.get_or_insert_array("cells");
        // Last cell first, each at index 0: yrs finds an index by walking the array from its
        // start, so appending cells one by one costs O(n²) (40,000 cells took minutes).
        for cell in self.cells.iter().rev() {
            insert_cell(txn, &cells, 0, cell);
        }
    }

    /// Reads the notebook back out of a document.
    pub fn from_doc<T: ReadTxn>(txn: &T) -> Notebook {
        let mut notebook = Notebook::new_empty();
        if let Some(meta) = txn.get_map("meta") {
            if let Some(v) = meta
                .get(txn, "nbformat")
                .and_then(|v| out_to_json(txn, &v).as_i64())
            {
                notebook.nbformat = v;
            }
            if let Some(v) = meta
                .get(txn, "nbformat_minor")
                .and_then(|v| out_to_json(txn, &v).as_i64())
            {
                notebook.nbformat_minor = v;
            }
            if let Some(Value::Object(m)) = meta.get(txn, "metadata").map(|v| out_to_json(txn, &v))
            {
                notebook.metadata = m;
            }
        }
        if let Some(cells) = txn.get_array("cells") {
            for item in cells.iter(txn) {
                if let Value::Object(obj) = out_to_json(txn, &item) {
                    if let Ok(cell) = parse_cell(Value::Object(obj), Outputs::SkipBad) {
                        notebook.cells.push(cell);
                    }
                }
            }
        }
        notebook.fill_missing_ids();
        notebook
    }
}

/// A Y document configured like JupyterLab's: text offsets count UTF-16 code units.
pub fn new_doc_with_client(client_id: u64) -> Doc {
    let mut options = Options::with_client_id(ClientID::new(client_id));
    options.offset_kind = OffsetKind::Utf16;
    Doc::with_options(options)
}

/// A Y document with a random client id, for a room or a scratch copy.
pub fn new_doc() -> Doc {
    Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    })
}

/// Inserts one cell as a Y map at `index` of the cells array, keys in sorted order.
pub fn insert_cell(txn: &mut TransactionMut, cells: &ArrayRef, index: u32, cell: &Cell) -> MapRef {
    let map = cells.insert(txn, index, MapPrelim::default());
    if let Some(attachments) = &cell.attachments {
        if attachments.as_object().is_some_and(|a| !a.is_empty()) {
            map.insert(txn, "attachments", json_to_any(attachments));
        }
    }
    map.insert(txn, "cell_type", cell.cell_type.as_str());
    if cell.cell_type == CellType::Code {
        map.insert(txn, "execution_count", json_to_any(&cell.execution_count));
        map.insert(txn, "execution_state", "idle");
    }
    map.insert(txn, "id", cell.id.as_str());
    let metadata = map.insert(txn, "metadata", MapPrelim::default());
    fill_map(txn, &metadata, &cell.metadata);
    if cell.cell_type == CellType::Code {
        let outputs = map.insert(txn, "outputs", ArrayPrelim::default());
        insert_outputs(txn, &outputs, &cell.outputs);
    }
    map.insert(txn, "source", TextPrelim::new(cell.source.as_str()));
    map
}

/// Fills an empty outputs array, last output first (see [`Notebook::write_into`]): linear in
/// the number of outputs.
pub fn insert_outputs(txn: &mut TransactionMut, outputs: &ArrayRef, values: &[Value]) {
    for output in values.iter().rev() {
        insert_output(txn, outputs, 0, output);
    }
}

/// Inserts one output as a Y map; a stream's `text` becomes a Text that can grow by appends.
pub fn insert_output(txn: &mut TransactionMut, outputs: &ArrayRef, index: u32, output: &Value) {
    let map = outputs.insert(txn, index, MapPrelim::default());
    let Some(obj) = output.as_object() else {
        return;
    };
    let is_stream = obj.get("output_type").and_then(Value::as_str) == Some("stream");
    for (key, value) in obj {
        if is_stream && key == "text" {
            let text = value.as_str().unwrap_or_default();
            map.insert(txn, key.as_str(), TextPrelim::new(text));
        } else {
            map.insert(txn, key.as_str(), json_to_any(value));
        }
    }
}

/// Sets every entry of a JSON object into a Y map, in sorted key order.
pub fn fill_map(txn: &mut TransactionMut, map: &MapRef, values: &JsonMap<String, Value>) {
    let sorted: BTreeMap<&String, &Value> = values.iter().collect();
    for (key, value) in sorted {
        map.insert(txn, key.as_str(), json_to_any(value));
    }
}

/// What to do with an output nbformat cannot read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outputs {
    /// Refuse the cell (reading a file: the error names the cell and the output).
    Strict,
    /// Leave the output out and keep the cell (reading the live document, where someone who
    /// may run code wrote a malformed output: the cell itself must not be lost).
    SkipBad,
}

fn parse_cell(raw: Value, bad_outputs: Outputs) -> Result<Cell, NotebookError> {
    let Value::Object(mut obj) = raw else {
        return Err(invalid("a cell must be an object"));
    };
    let cell_type = match obj.get("cell_type") {
        Some(Value::String(t)) => {
            CellType::parse(t).ok_or_else(|| invalid(format!("unknown cell_type {t:?}")))?
        }
        _ => return Err(invalid("missing \"cell_type\"")),
    };
    let id = match obj.remove("id") {
        Some(Value::String(id)) => id,
        None | Some(Value::Null) => String::new(),
        Some(_) => return Err(invalid("\"id\" must be a string")),
    };
    let source = match obj.remove("source") {
        Some(value) => multiline(&value)
            .ok_or_else(|| invalid("\"source\" must be a string or a list of strings"))?,
        None => return Err(invalid("missing \"source\"")),
    };
    let metadata = match obj.remove("metadata") {
        Some(Value::Object(m)) => m,
        None => JsonMap::new(),
        Some(_) => return Err(invalid("\"metadata\" must be an object")),
    };
    let mut cell = Cell {
        id,
        cell_type,
        source,
        metadata,
        execution_count: Value::Null,
        outputs: Vec::new(),
        attachments: None,
    };
    match cell_type {
        CellType::Code => {
            cell.execution_count = match obj.remove("execution_count") {
                None | Some(Value::Null) => Value::Null,
                Some(v) if v.is_number() => v,
                Some(_) => return Err(invalid("\"execution_count\" must be a number or null")),
            };
            cell.outputs = match obj.remove("outputs") {
                None => Vec::new(),
                Some(Value::Array(outputs)) => outputs
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, o)| match (join_output(o), bad_outputs) {
                        (Ok(o), _) => Some(Ok(o)),
                        (Err(msg), Outputs::Strict) => {
                            Some(Err(invalid(format!("output {i}: {msg}"))))
                        }
                        (Err(msg), Outputs::SkipBad) => {
                            tracing::warn!("leaving out a malformed output: {msg}");
                            None
                        }
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err(invalid("\"outputs\" must be a list")),
            };
        }
        CellType::Markdown | CellType::Raw => {
            cell.attachments = match obj.remove("attachments") {
                None | Some(Value::Null) => None,
                Some(Value::Object(a)) => Some(Value::Object(
                    a.into_iter()
                        .map(|(name, bundle)| (name, map_mimebundle(bundle, join_mime)))
                        .collect(),
                )),
                Some(_) => return Err(invalid("\"attachments\" must be an object")),
            };
        }
    }
    // What becomes one Yjs value each (see `insert_cell`, `insert_output`).
    for (key, value) in &cell.metadata {
        check_depth(value, &format!("metadata {key:?}"))?;
    }
    for (index, output) in cell.outputs.iter().enumerate() {
        for (key, value) in output.as_object().into_iter().flatten() {
            check_depth(value, &format!("output {index}: {key:?}"))?;
        }
    }
    if let Some(attachments) = &cell.attachments {
        check_depth(attachments, "attachments")?;
    }
    Ok(cell)
}

/// Refuses a value nested deeper than [`MAX_JSON_DEPTH`], naming it.
fn check_depth(value: &Value, what: &str) -> Result<(), NotebookError> {
    let depth = json_depth(value);
    if depth > MAX_JSON_DEPTH {
        return Err(invalid(format!(
            "{what} nests JSON {depth} levels deep; the limit is {MAX_JSON_DEPTH}"
        )));
    }
    Ok(())
}

/// The nesting of arrays and objects in a value (a scalar is 0). Recursion is bounded by the
/// parser's own limit.
fn json_depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(json_depth).max().unwrap_or(0),
        Value::Object(obj) => 1 + obj.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The nesting of arrays and objects in JSON text, counted without parsing (strings skipped).
fn text_depth(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in text.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Parses a notebook file: nested at most [`MAX_JSON_DEPTH`] + [`FILE_ENVELOPE_DEPTH`] levels
/// (serde_json's own limit, 127, would refuse files holding values as deep as a room may hold).
pub fn parse_file_json(text: &str) -> Result<Value, NotebookError> {
    let limit = MAX_JSON_DEPTH + FILE_ENVELOPE_DEPTH;
    let depth = text_depth(text);
    if depth > limit {
        return Err(NotebookError::Json(format!(
            "nested {depth} levels deep; the limit is {limit}"
        )));
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    // Bounded above: the parser recurses at most `limit` levels.
    deserializer.disable_recursion_limit();
    let value = Value::deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value))
        .map_err(|e| NotebookError::Json(e.to_string()))?;
    Ok(value)
}

/// A deterministic cell id for files without ids (nbformat < 4.5) or with broken ones.
fn derived_cell_id(index: usize, cell: &Cell) -> String {
    let mut hasher = Sha256::new();
    hasher.update((index as u64).to_le_bytes());
    hasher.update(cell.cell_type.as_str());
    hasher.update(cell.source.as_bytes());
    hex::encode(&hasher.finalize()[..8])
}

fn valid_cell_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A string, or a list of strings joined.
fn multiline(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for part in parts {
                out.push_str(part.as_str()?);
            }
            Some(out)
        }
        _ => None,
    }
}

fn is_json_mime(mime: &str) -> bool {
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

fn map_mimebundle(bundle: Value, f: fn(&str, Value) -> Value) -> Value {
    match bundle {
        Value::Object(data) => Value::Object(
            data.into_iter()
                .map(|(mime, value)| {
                    let value = f(&mime, value);
                    (mime, value)
                })
                .collect(),
        ),
        other => other,
    }
}

/// nbformat's `rejoin_lines` for one mimebundle entry.
fn join_mime(mime: &str, value: Value) -> Value {
    if is_json_mime(mime) {
        return value;
    }
    match &value {
        Value::Array(parts) if parts.iter().all(Value::is_string) => {
            Value::String(multiline(&value).unwrap_or_default())
        }
        _ => value,
    }
}

/// nbformat's `split_lines` for one mimebundle entry.
fn split_mime(mime: &str, value: Value) -> Value {
    match &value {
        Value::String(s)
            if mime.starts_with("text/")
                || mime == "application/javascript"
                || mime == "image/svg+xml" =>
        {
            split_lines_value(s)
        }
        _ => value,
    }
}

/// Whether `raw` is a cell nbformat can read (the loader would otherwise leave it out).
pub(crate) fn check_cell(raw: Value) -> Result<(), NotebookError> {
    parse_cell(raw, Outputs::Strict).map(|_| ())
}

/// A cell's outputs as nbformat reads them (multiline strings joined), for comparing copies.
pub(crate) fn normalized_outputs(outputs: Option<&Value>) -> Value {
    match outputs {
        None | Some(Value::Null) => Value::Array(Vec::new()),
        Some(Value::Array(list)) => Value::Array(
            list.iter()
                .map(|o| join_output(o.clone()).unwrap_or_else(|_| o.clone()))
                .collect(),
        ),
        Some(other) => other.clone(),
    }
}

fn join_output(output: Value) -> Result<Value, String> {
    let Value::Object(mut obj) = output else {
        return Err("an output must be an object".into());
    };
    let output_type = obj
        .get("output_type")
        .and_then(Value::as_str)
        .ok_or("missing \"output_type\"")?
        .to_string();
    match output_type.as_str() {
        "stream" => {
            let text = obj
                .get("text")
                .and_then(multiline)
                .ok_or("stream \"text\" must be a string or a list of strings")?;
            obj.insert("text".into(), Value::String(text));
        }
        "display_data" | "execute_result" => {
            if let Some(data) = obj.remove("data") {
                obj.insert("data".into(), map_mimebundle(data, join_mime));
            }
        }
        _ => {}
    }
    Ok(Value::Object(obj))
}

fn split_output(output: &Value) -> Value {
    let Value::Object(obj) = output else {
        return output.clone();
    };
    let mut obj = obj.clone();
    match obj.get("output_type").and_then(Value::as_str) {
        Some("stream") => {
            if let Some(Value::String(text)) = obj.get("text") {
                let split = split_lines_value(text);
                obj.insert("text".into(), split);
            }
        }
        Some("display_data") | Some("execute_result") => {
            if let Some(data) = obj.remove("data") {
                obj.insert("data".into(), map_mimebundle(data, split_mime));
            }
        }
        _ => {}
    }
    Value::Object(obj)
}

fn split_attachments(attachments: &Value) -> Value {
    match attachments {
        Value::Object(a) => Value::Object(
            a.iter()
                .map(|(name, bundle)| (name.clone(), map_mimebundle(bundle.clone(), split_mime)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Python's `str.splitlines(keepends=True)`, as nbformat uses it when writing.
pub fn split_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let is_break = matches!(
            c,
            '\n' | '\r'
                | '\u{0b}'
                | '\u{0c}'
                | '\u{1c}'
                | '\u{1d}'
                | '\u{1e}'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        );
        if is_break {
            let mut end = i + c.len_utf8();
            if c == '\r' {
                if let Some(&(j, '\n')) = chars.peek() {
                    end = j + 1;
                    chars.next();
                }
            }
            lines.push(&text[start..end]);
            start = end;
        }
    }
    if start < text.len() {
        lines.push(&text[start..]);
    }
    lines
}

fn split_lines_value(text: &str) -> Value {
    Value::Array(
        split_lines(text)
            .into_iter()
            .map(|l| Value::String(l.to_string()))
            .collect(),
    )
}

/// JSON to a Yjs value. Every number becomes a float64, as in JavaScript. Containers deeper
/// than [`MAX_JSON_DEPTH`] become null (every way in refuses them first; this keeps the walk
/// bounded whatever it is given).
pub fn json_to_any(value: &Value) -> Any {
    let mut cut = false;
    let any = json_to_any_at(value, 0, &mut cut);
    if cut {
        tracing::warn!("a JSON value nested deeper than {MAX_JSON_DEPTH} levels was cut short");
    }
    any
}

fn json_to_any_at(value: &Value, depth: usize, cut: &mut bool) -> Any {
    if depth >= MAX_JSON_DEPTH && (value.is_array() || value.is_object()) {
        *cut = true;
        return Any::Null;
    }
    match value {
        Value::Null => Any::Null,
        Value::Bool(b) => Any::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Any::Number(Number::Int(i)),
            None => Any::Number(Number::Float(n.as_f64().unwrap_or(0.0))),
        },
        Value::String(s) => Any::String(Arc::from(s.as_str())),
        Value::Array(items) => Any::Array(
            items
                .iter()
                .map(|v| json_to_any_at(v, depth + 1, cut))
                .collect(),
        ),
        Value::Object(obj) => Any::Map(Arc::new(
            obj.iter()
                .map(|(k, v)| (k.clone(), json_to_any_at(v, depth + 1, cut)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}

/// A Yjs value to JSON; whole numbers become integers again. Containers deeper than
/// [`MAX_JSON_DEPTH`] become null.
pub fn any_to_json(any: &Any) -> Value {
    let mut cut = false;
    let value = any_to_json_at(any, 0, &mut cut);
    if cut {
        tracing::warn!("a Yjs value nested deeper than {MAX_JSON_DEPTH} levels was cut short");
    }
    value
}

fn any_to_json_at(any: &Any, depth: usize, cut: &mut bool) -> Value {
    if depth >= MAX_JSON_DEPTH && matches!(any, Any::Array(_) | Any::Map(_) | Any::Buffer(_)) {
        *cut = true;
        return Value::Null;
    }
    match any {
        Any::Null | Any::Undefined => Value::Null,
        Any::Bool(b) => Value::Bool(*b),
        Any::Number(Number::Int(n)) => Value::from(*n),
        Any::Number(Number::Float(n)) => number_to_json(*n),
        Any::String(s) => Value::String(s.to_string()),
        Any::Buffer(bytes) => Value::Array(bytes.iter().map(|b| Value::from(*b)).collect()),
        Any::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| any_to_json_at(v, depth + 1, cut))
                .collect(),
        ),
        Any::Map(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), any_to_json_at(v, depth + 1, cut)))
                .collect(),
        ),
    }
}

fn number_to_json(n: f64) -> Value {
    const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;
    if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// Any shared or plain value of the document as JSON. Shared types nested deeper than
/// [`MAX_JSON_DEPTH`] become null, and so do XML types and subdocuments, which the notebook
/// schema has no place for (yrs would walk them recursively without a bound); each plain value
/// inside is bounded by [`any_to_json`].
pub fn out_to_json<T: ReadTxn>(txn: &T, out: &Out) -> Value {
    let mut cut = false;
    let value = out_to_json_at(txn, out, 0, &mut cut);
    if cut {
        tracing::warn!("shared types nested deeper than {MAX_JSON_DEPTH} levels were cut short");
    }
    value
}

fn out_to_json_at<T: ReadTxn>(txn: &T, out: &Out, depth: usize, cut: &mut bool) -> Value {
    if depth >= MAX_JSON_DEPTH && matches!(out, Out::YMap(_) | Out::YArray(_)) {
        *cut = true;
        return Value::Null;
    }
    match out {
        Out::Any(any) => any_to_json(any),
        Out::YText(text) => Value::String(text.get_string(txn)),
        Out::YMap(map) => Value::Object(
            map.iter(txn)
                .map(|(k, v)| (k.to_string(), out_to_json_at(txn, &v, depth + 1, cut)))
                .collect(),
        ),
        Out::YArray(array) => Value::Array(
            array
                .iter(txn)
                .map(|v| out_to_json_at(txn, &v, depth + 1, cut))
                .collect(),
        ),
        Out::YXmlText(text) => Value::String(text.get_string(txn)),
        _ => Value::Null,
    }
}

/// The `source` Text of the cell at `index`, if the cell is a well-formed map.
pub fn cell_source<T: ReadTxn>(txn: &T, index: u32) -> Option<TextRef> {
    let cells = txn.get_array("cells")?;
    match cells.get(txn, index)? {
        Out::YMap(cell) => match cell.get(txn, "source")? {
            Out::YText(text) => Some(text),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use yrs::updates::decoder::Decode;
    use yrs::{StateVector, Update};

    const SAMPLE: &str = r##"{
 "cells": [
  {"cell_type": "markdown", "id": "m1", "metadata": {"tags": ["a"]}, "source": ["# Title\n", "text 😀"]},
  {"cell_type": "code", "execution_count": 3, "id": "c1", "metadata": {"collapsed": false, "n": 2.5},
   "outputs": [
     {"name": "stdout", "output_type": "stream", "text": ["a\n", "b\n"]},
     {"data": {"text/plain": ["1\n", "2"], "application/json": {"k": [1, 2.0]}}, "execution_count": 3, "metadata": {}, "output_type": "execute_result"}
   ],
   "source": "print(1)\nprint(2)"}
 ],
 "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
 "nbformat": 4,
 "nbformat_minor": 5
}"##;

    #[test]
    fn round_trips_through_the_document() {
        let notebook = Notebook::from_ipynb(SAMPLE.as_bytes()).unwrap();
        let doc = notebook.to_doc();
        let back = Notebook::from_doc(&doc.transact());
        assert_eq!(back.cells[0], notebook.cells[0]);
        assert_eq!(back.metadata, notebook.metadata);
        // A second trip changes nothing: the file form is a fixed point.
        assert_eq!(Notebook::from_ipynb(&back.to_ipynb()).unwrap(), back);
        let file: Value = serde_json::from_slice(&back.to_ipynb()).unwrap();
        assert_eq!(
            file["cells"][1]["source"],
            serde_json::json!(["print(1)\n", "print(2)"])
        );
        assert_eq!(file["cells"][1]["execution_count"], serde_json::json!(3));
        assert_eq!(file["cells"][1]["metadata"]["n"], serde_json::json!(2.5));
        assert_eq!(
            file["cells"][1]["outputs"][1]["data"]["application/json"],
            serde_json::json!({"k": [1, 2]})
        );
    }

    #[test]
    fn loading_the_same_file_twice_gives_the_same_items() {
        let notebook = Notebook::from_ipynb(SAMPLE.as_bytes()).unwrap();
        let first = notebook.to_doc();
        let second = Notebook::from_ipynb(SAMPLE.as_bytes()).unwrap().to_doc();
        let update = second
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let before = first.transact().state_vector();
        first
            .transact_mut()
            .apply_update(Update::decode_v1(&update).unwrap())
            .unwrap();
        assert_eq!(first.transact().state_vector(), before);
        assert_eq!(Notebook::from_doc(&first.transact()).cells.len(), 2);
    }

    #[test]
    fn old_minor_versions_get_ids_in_the_document_but_not_in_the_file() {
        let text = r#"{"cells":[{"cell_type":"code","execution_count":null,"metadata":{},"outputs":[],"source":"x"}],
                      "metadata":{},"nbformat":4,"nbformat_minor":4}"#;
        let notebook = Notebook::from_ipynb(text.as_bytes()).unwrap();
        assert!(!notebook.cells[0].id.is_empty());
        let file: Value = serde_json::from_slice(&notebook.to_ipynb()).unwrap();
        assert!(file["cells"][0].get("id").is_none());
        assert_eq!(file["nbformat_minor"], 4);
    }

    #[test]
    fn duplicate_ids_are_repaired_on_save() {
        let text = r#"{"cells":[{"cell_type":"raw","id":"same","metadata":{},"source":""},
                                 {"cell_type":"raw","id":"same","metadata":{},"source":""}],
                      "metadata":{},"nbformat":4,"nbformat_minor":5}"#;
        let file: Value =
            serde_json::from_slice(&Notebook::from_ipynb(text.as_bytes()).unwrap().to_ipynb())
                .unwrap();
        assert_ne!(file["cells"][0]["id"], file["cells"][1]["id"]);
    }

    #[test]
    fn bad_files_are_named_precisely() {
        let cases: [(&[u8], &str); 6] = [
            (b"\xff\xfe", "not valid UTF-8"),
            (b"{", "invalid JSON"),
            (b"[]", "top level must be a JSON object"),
            (br#"{"nbformat":3,"nbformat_minor":0,"metadata":{},"worksheets":[]}"#, "unsupported notebook format 3"),
            (br#"{"nbformat":4,"nbformat_minor":5,"metadata":{}}"#, "missing \"cells\""),
            (br#"{"nbformat":4,"nbformat_minor":5,"metadata":{},"cells":[{"cell_type":"code","source":7}]}"#, "cell 0: \"source\" must be"),
        ];
        for (bytes, expected) in cases {
            let message = Notebook::from_ipynb(bytes).unwrap_err().to_string();
            assert!(
                message.contains(expected),
                "{message:?} should mention {expected:?}"
            );
        }
    }

    #[test]
    fn splits_lines_like_python() {
        assert_eq!(
            split_lines("a\nb\r\nc\rd"),
            vec!["a\n", "b\r\n", "c\r", "d"]
        );
        assert_eq!(split_lines(""), Vec::<&str>::new());
        assert_eq!(split_lines("x\n"), vec!["x\n"]);
    }

    /// An array nesting `depth` levels (a scalar at the bottom), built without recursion.
    fn nested(depth: usize) -> Value {
        let mut value = json!("bottom");
        for level in 0..depth {
            value = if level % 2 == 0 {
                json!([value])
            } else {
                json!({ "k": value })
            };
        }
        value
    }

    fn with_json_output(value: Value) -> Vec<u8> {
        // Compact, as another tool might write it: not the bytes Quire would write.
        serde_json::to_vec(&json!({
            "cells": [{"cell_type": "code", "id": "deep", "metadata": {}, "source": "show()",
                       "execution_count": 1,
                       "outputs": [{"output_type": "display_data", "metadata": {},
                                    "data": {"application/json": value}}]}],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5
        }))
        .unwrap()
    }

    #[test]
    fn json_nested_to_the_limit_loads_and_saves_and_deeper_is_refused_by_name() {
        // The output's `data` (one Yjs value) nests MAX_JSON_DEPTH levels; the file 5 more,
        // beyond serde_json's default limit of 127.
        let deepest = nested(MAX_JSON_DEPTH - 1);
        let bytes = with_json_output(deepest.clone());
        assert_eq!(text_depth(std::str::from_utf8(&bytes).unwrap()), 133);
        let notebook = Notebook::from_ipynb(&bytes).unwrap();
        let doc = notebook.to_doc();
        let back = Notebook::from_doc(&doc.transact());
        assert_eq!(back, notebook);
        assert_eq!(
            back.cells[0].outputs[0]["data"]["application/json"],
            deepest
        );
        // What a room saves, it reads back.
        assert_eq!(Notebook::from_ipynb(&back.to_ipynb()).unwrap(), back);

        // One level more: refused, by the file's depth or by the value's name.
        let message = Notebook::from_ipynb(&with_json_output(nested(MAX_JSON_DEPTH)))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("nested 134 levels deep; the limit is 133"),
            "{message}"
        );
        let file = json!({"cells": [{"cell_type": "raw", "source": "", "metadata": {"deep": nested(129)}}],
                          "metadata": {}, "nbformat": 4, "nbformat_minor": 5});
        let message = Notebook::from_ipynb(&serde_json::to_vec(&file).unwrap())
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            r#"not a notebook: cell 0: metadata "deep" nests JSON 129 levels deep; the limit is 128"#
        );
        let file = json!({"cells": [], "metadata": {"deep": nested(129)},
                          "nbformat": 4, "nbformat_minor": 5});
        let message = Notebook::from_ipynb(&serde_json::to_vec(&file).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            message.contains(r#"metadata "deep" nests JSON 129"#),
            "{message}"
        );
    }

    #[test]
    fn files_nested_beyond_the_envelope_are_refused_before_parsing() {
        let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let message = Notebook::from_ipynb(text.as_bytes())
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "not a notebook: invalid JSON (nested 100000 levels deep; the limit is 133)"
        );
        // Brackets inside strings are text.
        assert_eq!(text_depth(r#"{"a": "[[[{{\"]]", "b": [1]}"#), 2);
    }

    #[test]
    fn walks_stop_at_the_limit_whatever_they_are_given() {
        let too_deep = nested(MAX_JSON_DEPTH + 50);
        let any = json_to_any(&too_deep);
        let back = any_to_json(&any);
        assert_eq!(json_depth(&back), MAX_JSON_DEPTH);
        let just = nested(MAX_JSON_DEPTH);
        assert_eq!(any_to_json(&json_to_any(&just)), just);
        // Shared maps nested inside each other, as a hostile update could make them.
        let doc = new_doc();
        {
            let mut txn = doc.transact_mut();
            let mut map = txn.get_or_insert_map("meta");
            for _ in 0..MAX_JSON_DEPTH + 10 {
                map = map.insert(&mut txn, "k", MapPrelim::default());
            }
        }
        let txn = doc.transact();
        let meta = Out::YMap(txn.get_map("meta").unwrap());
        assert_eq!(json_depth(&out_to_json(&txn, &meta)), MAX_JSON_DEPTH);
    }
}
