//! The update guard: which cells and fields does an incoming Yjs update touch?
//!
//! yrs applies updates without asking; to refuse one *before* it reaches the document, the
//! guard reads the update's wire form (v1) itself, struct by struct: each new item names its
//! parent (a root type, or the item holding its parent type) or inherits it from its left or
//! right neighbour; each deletion names item ids. An index of every item the room's document
//! has ever held (id range → parent and map key) resolves those names into a path from a root,
//! which the field policy turns into the capability the change needs:
//!
//! | touched | needs |
//! |---|---|
//! | the cell list, a cell's source/metadata/type/attachments, the notebook's metadata | `edit` |
//! | a file document's content (its `source` root) | `edit` |
//! | a cell's `outputs`, `execution_count`, `execution_state` | `execute` (what JupyterLab's own executor writes) |
//! | `state.path`, `hash`, `kernel`, `executions`, `locks` | the server only |
//! | any other `state` key (JupyterLab writes `dirty` after each change, and `document_id`) | `edit` |
//! | any other root, or anything the guard cannot place | refused |
//!
//! The index grows with every change the room applies ([`UpdateGuard::observe`]), so checking
//! an update costs in proportion to the update, not the document.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::capabilities::Capabilities;

type Id = (u64, u32);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Parent {
    Root(Arc<str>),
    Item(Id),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Loc {
    parent: Parent,
    sub: Option<Arc<str>>,
}

/// One item of an update: its ids, and where it says it goes.
#[derive(Debug)]
struct Struct {
    id: Id,
    len: u32,
    /// Explicit parent, or the neighbours to inherit it from.
    loc: Option<Loc>,
    origin: Option<Id>,
    right_origin: Option<Id>,
}

/// What an update changes, as far as the policy cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    CellList,
    /// A cell's top-level field (`source`, `outputs`, …).
    Cell(String),
    NotebookMeta,
    /// A text or binary file's content (the `source` root of a file document).
    FileContent,
    State(String),
    Other(String),
}

impl Field {
    /// The capability a change to this field needs; `None`: only the server may change it.
    pub fn needs(&self) -> Option<Capabilities> {
        match self {
            Field::CellList | Field::NotebookMeta | Field::FileContent => Some(Capabilities::EDIT),
            Field::Cell(key) => match key.as_str() {
                "outputs" | "execution_count" | "execution_state" => {
                    Some(Capabilities::EDIT.union(Capabilities::EXECUTE))
                }
                _ => Some(Capabilities::EDIT),
            },
            Field::State(key) => match key.as_str() {
                "path" | "hash" | "kernel" | "executions" | "locks" => None,
                _ => Some(Capabilities::EDIT),
            },
            Field::Other(_) => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Field::CellList => "the list of cells".into(),
            Field::Cell(key) => format!("a cell's {key}"),
            Field::NotebookMeta => "the notebook's metadata".into(),
            Field::FileContent => "the file's content".into(),
            Field::State(key) => format!("state.{key}"),
            Field::Other(what) => what.clone(),
        }
    }
}

/// Why an update is refused, and what kind of wrong it is.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal(pub String, pub Wrong);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrong {
    /// Not a Yjs update at all: the sender is broken or hostile.
    Unreadable,
    /// It builds on (or deletes) items this room never had: the sender's document has another
    /// history (a stale client after the room's history was lost, for example).
    ForeignHistory,
    /// Well formed and placed, but beyond the sender's rights or the server's alone.
    Forbidden,
}

/// A cell, by the id of the Yjs item that holds it.
pub type CellItem = (u64, u32);

/// What an update would change.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Analysis {
    /// The fields it touches, in order, without duplicates.
    pub fields: Vec<Field>,
    /// The existing cells it changes or deletes (cells it adds are not listed).
    pub cells: Vec<CellItem>,
    /// Of those, the cells it deletes.
    pub deleted_cells: Vec<CellItem>,
}

type Decoded = (Vec<Struct>, Vec<(u64, u32, u32)>);

/// The index of item ids → location, and the checks built on it.
#[derive(Default)]
pub struct UpdateGuard {
    ranges: HashMap<u64, BTreeMap<u32, (u32, Loc)>>,
}

impl UpdateGuard {
    /// Indexes a whole document state (its update from an empty state vector).
    pub fn from_state(update: &[u8]) -> UpdateGuard {
        let mut guard = UpdateGuard::default();
        guard.observe(update);
        guard
    }

    /// Records the items of an update the room has applied.
    pub fn observe(&mut self, update: &[u8]) {
        let Ok((structs, _)) = decode(update) else {
            tracing::warn!("the update guard could not read an applied update");
            return;
        };
        let resolved = self.resolve(&structs);
        for (s, loc) in structs.iter().zip(resolved) {
            if let Some(loc) = loc {
                self.insert(s.id, s.len, loc);
            }
        }
    }

    fn insert(&mut self, id: Id, len: u32, loc: Loc) {
        if len == 0 {
            return;
        }
        self.ranges
            .entry(id.0)
            .or_default()
            .insert(id.1, (len, loc));
    }

    fn lookup(&self, id: Id) -> Option<&Loc> {
        let (start, (len, loc)) = self.ranges.get(&id.0)?.range(..=id.1).next_back()?;
        (id.1 < start + len).then_some(loc)
    }

    /// Locations of the update's own structs, taking their parents from the index or from
    /// earlier structs of the same update.
    fn resolve(&self, structs: &[Struct]) -> Vec<Option<Loc>> {
        let index = LocalIndex::new(structs);
        let mut found: Vec<Option<Loc>> = structs.iter().map(|s| s.loc.clone()).collect();
        // 0: not visited, 1: being resolved, 2: done (placed or not placeable).
        let mut state = vec![0u8; structs.len()];
        // A neighbour may come later in the update (another client's block) and need placing
        // first: resolve depth first with an explicit stack, each struct visited once.
        for start in 0..structs.len() {
            if state[start] != 0 {
                continue;
            }
            state[start] = 1;
            let mut stack = vec![start];
            while let Some(&top) = stack.last() {
                if found[top].is_some() {
                    state[top] = 2;
                    stack.pop();
                    continue;
                }
                let s = &structs[top];
                let mut pushed = false;
                for id in [s.origin, s.right_origin].into_iter().flatten() {
                    if let Some(loc) = self.lookup(id) {
                        found[top] = Some(loc.clone());
                        break;
                    }
                    let Some(j) = index.find(id) else {
                        continue;
                    };
                    if let Some(loc) = &found[j] {
                        found[top] = Some(loc.clone());
                        break;
                    }
                    if state[j] == 0 {
                        state[j] = 1;
                        stack.push(j);
                        pushed = true;
                        break;
                    }
                }
                if !pushed {
                    state[top] = 2;
                    stack.pop();
                }
            }
        }
        found
    }

    /// The top-level field a location is in. Changes inside a cell that the same update adds
    /// or deletes as a whole (`whole_cell`) belong to the cell list.
    fn field(
        &self,
        loc: &Loc,
        local: &dyn Fn(Id) -> Option<Loc>,
        whole_cell: &dyn Fn(Id) -> bool,
    ) -> Option<(Field, Option<CellItem>)> {
        // Walk up to the root, remembering the last two steps' keys.
        let mut chain: Vec<Loc> = vec![loc.clone()];
        let mut current = loc.clone();
        for _ in 0..64 {
            match &current.parent {
                Parent::Root(_) => break,
                Parent::Item(id) => {
                    let up = self.lookup(*id).cloned().or_else(|| local(*id))?;
                    chain.push(up.clone());
                    current = up;
                }
            }
        }
        let top = chain.last()?;
        let Parent::Root(root) = &top.parent else {
            return None;
        };
        Some(match &**root {
            // chain[last] is a cell itself (in the cells array), chain[last - 1] a field of it.
            "cells" => {
                if chain.len() == 1 {
                    (Field::CellList, None)
                } else {
                    let in_cell = &chain[chain.len() - 2];
                    let cell = match in_cell.parent {
                        Parent::Item(id) => id,
                        Parent::Root(_) => return None,
                    };
                    let existing = self.lookup(cell).is_some().then_some(cell);
                    match &in_cell.sub {
                        _ if whole_cell(cell) => (Field::CellList, existing),
                        Some(key) => (Field::Cell(key.to_string()), existing),
                        None => (Field::Other("an unkeyed part of a cell".into()), existing),
                    }
                }
            }
            "meta" => (Field::NotebookMeta, None),
            "source" => (Field::FileContent, None),
            "state" => (
                Field::State(top.sub.as_deref().unwrap_or("").to_string()),
                None,
            ),
            other => (Field::Other(format!("the {other:?} root")), None),
        })
    }

    /// The fields an update would change, in order, without duplicates.
    pub fn fields(&self, update: &[u8]) -> Result<Vec<Field>, Refusal> {
        Ok(self.analyze(update)?.fields)
    }

    /// What an update would change: fields, and the existing cells concerned.
    pub fn analyze(&self, update: &[u8]) -> Result<Analysis, Refusal> {
        let (structs, deleted) = decode(update)
            .map_err(|e| Refusal(format!("unreadable update: {e}"), Wrong::Unreadable))?;
        let resolved = self.resolve(&structs);
        let index = LocalIndex::new(&structs);
        let local = |id: Id| -> Option<Loc> { index.find(id).and_then(|i| resolved[i].clone()) };
        let mut deletions: HashMap<u64, BTreeMap<u32, u32>> = HashMap::new();
        for &(client, clock, len) in &deleted {
            deletions.entry(client).or_default().insert(clock, len);
        }
        // A cell is added or deleted whole when its own item is new or deleted here.
        let whole_cell = |cell: Id| {
            self.lookup(cell).is_none()
                || deletions
                    .get(&cell.0)
                    .and_then(|r| r.range(..=cell.1).next_back())
                    .is_some_and(|(clock, len)| cell.1 - clock < *len)
        };
        let mut analysis = Analysis::default();
        let mut deleted_cells = Vec::new();
        let mut add = |(field, cell): (Field, Option<CellItem>)| {
            if !analysis.fields.contains(&field) {
                analysis.fields.push(field);
            }
            if let Some(cell) = cell {
                if !analysis.cells.contains(&cell) {
                    analysis.cells.push(cell);
                }
            }
        };
        for (s, loc) in structs.iter().zip(&resolved) {
            if s.loc.is_none() && s.origin.is_none() && s.right_origin.is_none() {
                // GC and skip structs: garbage or gaps, no content, no place.
                continue;
            }
            let loc = loc.as_ref().ok_or_else(|| {
                Refusal(
                    "the update builds on items this room does not have".into(),
                    Wrong::ForeignHistory,
                )
            })?;
            let field = self.field(loc, &local, &whole_cell).ok_or_else(|| {
                Refusal(
                    "the update touches something the server cannot place".into(),
                    Wrong::Forbidden,
                )
            })?;
            add(field);
        }
        for &(client, clock, len) in &deleted {
            let mut at = clock;
            let end = clock.saturating_add(len);
            while at < end {
                let (start, span, loc) = match self
                    .ranges
                    .get(&client)
                    .and_then(|r| r.range(..=at).next_back())
                {
                    Some((start, (span, loc))) if at < start + span => (*start, *span, loc.clone()),
                    _ => {
                        // Deleting what this update itself inserts, or nothing known.
                        match local((client, at)) {
                            Some(loc) => (at, 1, loc),
                            None => {
                                return Err(Refusal(
                                    "the update deletes items this room does not have".into(),
                                    Wrong::ForeignHistory,
                                ))
                            }
                        }
                    }
                };
                let (field, cell) = self.field(&loc, &local, &whole_cell).ok_or_else(|| {
                    Refusal(
                        "the update deletes something the server cannot place".into(),
                        Wrong::Forbidden,
                    )
                })?;
                // Deleting a cell itself: an item right in the cells array.
                let is_cell = loc.parent == Parent::Root(Arc::from("cells"));
                if is_cell {
                    deleted_cells.push((client, start));
                }
                add((field, cell.or(is_cell.then_some((client, start)))));
                at = start + span;
            }
        }
        analysis.deleted_cells = deleted_cells;
        Ok(analysis)
    }

    /// [`analyze`](Self::analyze), then [`permits`](Self::permits).
    pub fn check(&self, update: &[u8], caps: Capabilities) -> Result<(), Refusal> {
        UpdateGuard::permits(&self.analyze(update)?, caps)
    }

    /// Whether a connection holding `caps` may apply an update so analyzed; the refusal says
    /// what it touched.
    pub fn permits(analysis: &Analysis, caps: Capabilities) -> Result<(), Refusal> {
        for field in &analysis.fields {
            match field.needs() {
                Some(needed) if caps.contains(needed) => {}
                Some(_) => {
                    return Err(Refusal(
                        format!("you may not change {} in this notebook", field.describe()),
                        Wrong::Forbidden,
                    ))
                }
                None => {
                    return Err(Refusal(
                        format!("only the server changes {}", field.describe()),
                        Wrong::Forbidden,
                    ))
                }
            }
        }
        Ok(())
    }
}

/// The structs of one update by id, for finding a neighbour among them in O(log n).
struct LocalIndex(HashMap<u64, BTreeMap<u32, (u32, usize)>>);

impl LocalIndex {
    fn new(structs: &[Struct]) -> LocalIndex {
        let mut index: HashMap<u64, BTreeMap<u32, (u32, usize)>> = HashMap::new();
        for (i, s) in structs.iter().enumerate() {
            if s.len > 0 {
                index.entry(s.id.0).or_default().insert(s.id.1, (s.len, i));
            }
        }
        LocalIndex(index)
    }

    fn find(&self, id: Id) -> Option<usize> {
        let (start, (len, i)) = self.0.get(&id.0)?.range(..=id.1).next_back()?;
        (id.1 - start < *len).then_some(*i)
    }
}

/// A reader of lib0's encoding.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

type DecodeResult<T> = Result<T, String>;

impl<'a> Reader<'a> {
    fn byte(&mut self) -> DecodeResult<u8> {
        let b = *self.data.get(self.pos).ok_or("unexpected end")?;
        self.pos += 1;
        Ok(b)
    }

    fn var_uint(&mut self) -> DecodeResult<u64> {
        let mut value: u64 = 0;
        let mut shift = 0;
        loop {
            let b = self.byte()?;
            value |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
            if shift > 63 {
                return Err("varUint too long".into());
            }
        }
    }

    fn u32(&mut self) -> DecodeResult<u32> {
        u32::try_from(self.var_uint()?).map_err(|_| "number out of range".to_string())
    }

    fn var_int(&mut self) -> DecodeResult<()> {
        let mut b = self.byte()?;
        let mut n = 0;
        while b & 0x80 != 0 {
            b = self.byte()?;
            n += 1;
            if n > 10 {
                return Err("varInt too long".into());
            }
        }
        Ok(())
    }

    fn bytes(&mut self, n: usize) -> DecodeResult<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or("length overflow")?;
        let slice = self.data.get(self.pos..end).ok_or("unexpected end")?;
        self.pos = end;
        Ok(slice)
    }

    fn var_bytes(&mut self) -> DecodeResult<&'a [u8]> {
        let n = self.var_uint()? as usize;
        self.bytes(n)
    }

    fn string(&mut self) -> DecodeResult<&'a str> {
        std::str::from_utf8(self.var_bytes()?).map_err(|_| "invalid UTF-8".to_string())
    }

    fn id(&mut self) -> DecodeResult<Id> {
        Ok((self.var_uint()?, self.u32()?))
    }

    fn any(&mut self, depth: u32) -> DecodeResult<()> {
        if depth > 64 {
            return Err("value nested too deeply".into());
        }
        match self.byte()? {
            127 | 126 | 121 | 120 => Ok(()),
            125 => self.var_int(),
            124 => self.bytes(4).map(|_| ()),
            123 | 122 => self.bytes(8).map(|_| ()),
            119 => self.string().map(|_| ()),
            118 => {
                let n = self.var_uint()?;
                for _ in 0..n {
                    self.string()?;
                    self.any(depth + 1)?;
                }
                Ok(())
            }
            117 => {
                let n = self.var_uint()?;
                for _ in 0..n {
                    self.any(depth + 1)?;
                }
                Ok(())
            }
            116 => self.var_bytes().map(|_| ()),
            other => Err(format!("unknown value type {other}")),
        }
    }
}

/// Reads the structs and the delete set of a v1 update.
fn decode(update: &[u8]) -> DecodeResult<Decoded> {
    let mut r = Reader {
        data: update,
        pos: 0,
    };
    let mut structs = Vec::new();
    let clients = r.var_uint()?;
    for _ in 0..clients {
        let count = r.var_uint()?;
        let client = r.var_uint()?;
        let mut clock = r.u32()?;
        for _ in 0..count {
            if r.pos >= update.len() {
                return Err("unexpected end".into());
            }
            let info = r.byte()?;
            let kind = info & 0x1f;
            if kind == 0 || kind == 10 {
                // GC or skip: a length and nothing else.
                let len = r.u32()?;
                structs.push(Struct {
                    id: (client, clock),
                    len,
                    loc: None,
                    origin: None,
                    right_origin: None,
                });
                clock = clock.checked_add(len).ok_or("clock overflow")?;
                continue;
            }
            let origin = if info & 0x80 != 0 {
                Some(r.id()?)
            } else {
                None
            };
            let right_origin = if info & 0x40 != 0 {
                Some(r.id()?)
            } else {
                None
            };
            let mut loc = None;
            if info & 0xc0 == 0 {
                let parent = if r.var_uint()? == 1 {
                    Parent::Root(Arc::from(r.string()?))
                } else {
                    Parent::Item(r.id()?)
                };
                let sub = if info & 0x20 != 0 {
                    Some(Arc::from(r.string()?))
                } else {
                    None
                };
                loc = Some(Loc { parent, sub });
            }
            let len: u32 = match kind {
                1 => r.u32()?,
                2 => {
                    let n = r.u32()?;
                    for _ in 0..n {
                        r.string()?;
                    }
                    n
                }
                3 => {
                    r.var_bytes()?;
                    1
                }
                4 => r.string()?.encode_utf16().count() as u32,
                5 => {
                    r.string()?;
                    1
                }
                6 => {
                    r.string()?;
                    r.string()?;
                    1
                }
                7 => {
                    let type_ref = r.var_uint()?;
                    match type_ref {
                        0..=2 | 4 | 6 => {}
                        3 | 5 => {
                            r.string()?;
                        }
                        other => return Err(format!("unsupported shared type {other}")),
                    }
                    1
                }
                8 => {
                    let n = r.u32()?;
                    for _ in 0..n {
                        r.any(0)?;
                    }
                    n
                }
                9 => {
                    r.string()?;
                    r.any(0)?;
                    1
                }
                other => return Err(format!("unsupported content type {other}")),
            };
            structs.push(Struct {
                id: (client, clock),
                len,
                loc,
                origin,
                right_origin,
            });
            clock = clock.checked_add(len).ok_or("clock overflow")?;
        }
    }
    let mut deleted = Vec::new();
    let clients = r.var_uint()?;
    for _ in 0..clients {
        let client = r.var_uint()?;
        let ranges = r.var_uint()?;
        for _ in 0..ranges {
            let clock = r.u32()?;
            let len = r.u32()?;
            deleted.push((client, clock, len));
        }
    }
    Ok((structs, deleted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notebook::Notebook;
    use yrs::updates::decoder::Decode;
    use yrs::{Array, Doc, Map, ReadTxn, StateVector, Text, Transact, Update, WriteTxn};

    fn room_doc() -> Doc {
        let nb = Notebook::from_ipynb(
            br#"{"cells": [{"cell_type": "code", "id": "c1", "metadata": {}, "source": "x = 1",
                 "outputs": [{"output_type": "stream", "name": "stdout", "text": "hi\n"}],
                 "execution_count": 1}],
                 "metadata": {}, "nbformat": 4, "nbformat_minor": 5}"#,
        )
        .unwrap();
        nb.to_doc()
    }

    /// A peer's change made on a copy of `room`, as the update it would send.
    fn peer_change(room: &Doc, f: impl FnOnce(&mut yrs::TransactionMut)) -> Vec<u8> {
        let peer = crate::notebook::new_doc();
        let state = room
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        peer.transact_mut()
            .apply_update(Update::decode_v1(&state).unwrap())
            .unwrap();
        let mut txn = peer.transact_mut();
        f(&mut txn);
        txn.encode_update_v1()
    }

    fn guard_for(room: &Doc) -> UpdateGuard {
        UpdateGuard::from_state(
            &room
                .transact()
                .encode_state_as_update_v1(&StateVector::default()),
        )
    }

    fn first_cell(txn: &yrs::TransactionMut) -> yrs::MapRef {
        match txn.get_array("cells").unwrap().get(txn, 0) {
            Some(yrs::Out::YMap(m)) => m,
            _ => panic!(),
        }
    }

    #[test]
    fn places_each_kind_of_change() {
        let room = room_doc();
        let guard = guard_for(&room);
        let typing = peer_change(&room, |txn| {
            let cell = first_cell(txn);
            let Some(yrs::Out::YText(source)) = cell.get(txn, "source") else {
                panic!()
            };
            source.insert(txn, 2, "yy");
            source.remove_range(txn, 0, 1);
        });
        assert_eq!(
            guard.fields(&typing).unwrap(),
            vec![Field::Cell("source".into())]
        );
        let clearing = peer_change(&room, |txn| {
            let cell = first_cell(txn);
            let Some(yrs::Out::YArray(outputs)) = cell.get(txn, "outputs") else {
                panic!()
            };
            outputs.remove(txn, 0);
            cell.insert(txn, "execution_count", yrs::Any::Null);
        });
        assert_eq!(
            guard.fields(&clearing).unwrap(),
            vec![
                Field::Cell("execution_count".into()),
                Field::Cell("outputs".into())
            ]
        );
        let adding = peer_change(&room, |txn| {
            let cells = txn.get_array("cells").unwrap();
            let cell = cells.insert(txn, 1, yrs::MapPrelim::default());
            cell.insert(txn, "source", yrs::TextPrelim::new("new"));
        });
        assert_eq!(guard.fields(&adding).unwrap(), vec![Field::CellList]);
        let deleting = peer_change(&room, |txn| {
            txn.get_array("cells").unwrap().remove(txn, 0);
        });
        assert_eq!(guard.fields(&deleting).unwrap(), vec![Field::CellList]);
        let stamping = peer_change(&room, |txn| {
            let state = txn.get_or_insert_map("state");
            state.insert(txn, "hash", "forged");
        });
        assert_eq!(
            guard.fields(&stamping).unwrap(),
            vec![Field::State("hash".into())]
        );
    }

    #[test]
    fn the_policy_follows_capabilities() {
        let room = room_doc();
        let mut guard = guard_for(&room);
        let editor = Capabilities::role("editor").unwrap();
        let runner = Capabilities::role("runner").unwrap();
        let typing = peer_change(&room, |txn| {
            let cell = first_cell(txn);
            let Some(yrs::Out::YText(source)) = cell.get(txn, "source") else {
                panic!()
            };
            source.push(txn, " + 1");
        });
        assert!(guard.check(&typing, editor).is_ok());
        // Apply it, as the room would, and keep indexing: later edits build on it.
        room.transact_mut()
            .apply_update(Update::decode_v1(&typing).unwrap())
            .unwrap();
        guard.observe(&typing);
        let outputs = peer_change(&room, |txn| {
            let cell = first_cell(txn);
            let Some(yrs::Out::YText(source)) = cell.get(txn, "source") else {
                panic!()
            };
            source.push(txn, "!");
            let Some(yrs::Out::YArray(outputs)) = cell.get(txn, "outputs") else {
                panic!()
            };
            outputs.remove(txn, 0);
        });
        let refusal = guard.check(&outputs, editor).unwrap_err();
        assert!(refusal.0.contains("outputs"), "{refusal:?}");
        assert!(guard.check(&outputs, runner).is_ok());
        let path = peer_change(&room, |txn| {
            txn.get_or_insert_map("state")
                .insert(txn, "path", "elsewhere.ipynb");
        });
        assert!(guard.check(&path, Capabilities::ALL).is_err());
        let document_id = peer_change(&room, |txn| {
            txn.get_or_insert_map("state")
                .insert(txn, "document_id", "json:notebook:x");
        });
        assert!(guard.check(&document_id, editor).is_ok());
        // JupyterLab's client marks the notebook unsaved after each change it makes.
        let dirty = peer_change(&room, |txn| {
            txn.get_or_insert_map("state").insert(txn, "dirty", true);
        });
        assert!(guard.check(&dirty, editor).is_ok());
        assert!(guard
            .check(&dirty, Capabilities::role("viewer").unwrap())
            .is_err());
        let elsewhere = peer_change(&room, |txn| {
            txn.get_or_insert_text("secret").push(txn, "x");
        });
        assert!(guard.check(&elsewhere, runner).is_err());
        // Building on items the room never had, or garbage, is refused.
        assert!(guard
            .check(&[1, 1, 99, 0, 4, 1, 5, 0x99, 1, 2, 0], editor)
            .is_err());
        assert!(guard.check(&[7, 7, 7], editor).is_err());
    }

    /// An update whose items each build on the next one (placing them needs the whole chain)
    /// is placed in one pass: the earlier algorithm took cubic time here, enough for one
    /// crafted update to stall a room for hours (this test would not finish).
    #[test]
    fn long_chains_of_neighbours_are_placed() {
        let room = room_doc();
        let guard = guard_for(&room);
        // One client, 20,000 one-character strings, each with its right origin the next item
        // and only the last anchored at the cell's source text.
        let source_item = {
            let txn = room.transact();
            let cell = match txn.get_array("cells").unwrap().get(&txn, 0) {
                Some(yrs::Out::YMap(m)) => m,
                _ => panic!(),
            };
            let Some(yrs::Out::YText(text)) = cell.get(&txn, "source") else {
                panic!()
            };
            match AsRef::<yrs::branch::Branch>::as_ref(&text).id() {
                yrs::branch::BranchID::Nested(id) => (id.client.get(), id.clock),
                _ => panic!(),
            }
        };
        let n: u32 = 20_000;
        let client: u64 = 987_654;
        let mut update = Vec::new();
        let var = |out: &mut Vec<u8>, mut v: u64| loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        };
        var(&mut update, 1);
        var(&mut update, n as u64);
        var(&mut update, client);
        var(&mut update, 0);
        for clock in 0..n {
            if clock + 1 < n {
                update.push(0x40 | 4); // right origin, string content
                var(&mut update, client);
                var(&mut update, (clock + 1) as u64);
            } else {
                update.push(4); // explicit parent: the source text item
                var(&mut update, 0);
                var(&mut update, source_item.0);
                var(&mut update, source_item.1 as u64);
            }
            var(&mut update, 1);
            update.push(b'x');
        }
        var(&mut update, 0);
        let fields = guard.fields(&update).unwrap();
        assert_eq!(fields, vec![Field::Cell("source".into())]);
    }
}
