//! Merging an edit made to the file outside Quire into a room that may have moved on.
//!
//! The room remembers its document as it was when the file was last read or written (the base).
//! An outside change is the difference between that base and the new file. We replay that
//! difference as Yjs operations on a fork of the base, under a fresh client id, and hand back the
//! resulting update. Applied to the room, which may hold newer edits of its own, the CRDT merges
//! both: cells are matched by id (by content for files older than nbformat 4.5, which carry no
//! ids), sources are diffed character by character, and nothing either side wrote is dropped.
//! Moving existing cells around in the file is not replayed (their content changes are).

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use similar::{Algorithm, DiffOp};
use yrs::updates::decoder::Decode;
use yrs::{
    Array, ArrayPrelim, GetString, Map, MapPrelim, MapRef, Out, ReadTxn, StateVector, Text,
    TextRef, Transact, TransactionMut, Update, WriteTxn,
};

use crate::notebook::{fill_map, insert_cell, insert_outputs, json_to_any, new_doc};
use crate::{Cell, CellType, Content, Notebook};

/// What the merge produced: the update for the room, and the new base (the fork's whole state).
pub struct ExternalEdit {
    pub update: Vec<u8>,
    pub new_base: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot replay the outside edit: {0}")]
pub struct MergeError(String);

pub fn external_edit(base_update: &[u8], disk: &Content) -> Result<ExternalEdit, MergeError> {
    let fork = new_doc();
    let base_update = Update::decode_v1(base_update).map_err(|e| MergeError(e.to_string()))?;
    fork.transact_mut()
        .apply_update(base_update)
        .map_err(|e| MergeError(e.to_string()))?;
    let before = fork.transact().state_vector();
    match disk {
        Content::Notebook(disk) => {
            let base = Notebook::from_doc(&fork.transact());
            let disk = align_ids(&base, disk);
            let mut txn = fork.transact_mut();
            replay(&mut txn, &base, &disk);
        }
        Content::Text(disk) => {
            let mut txn = fork.transact_mut();
            let source = txn.get_or_insert_text("source");
            replay_text(&mut txn, &source, disk);
        }
    }
    let txn = fork.transact();
    Ok(ExternalEdit {
        update: txn.encode_state_as_update_v1(&before),
        new_base: txn.encode_state_as_update_v1(&StateVector::default()),
    })
}

/// Files before nbformat 4.5 have no cell ids: match their cells to the base's by content, and
/// pair changed cells by position between matching ones, so a cell edited outside keeps its id.
fn align_ids(base: &Notebook, disk: &Notebook) -> Notebook {
    let mut disk = disk.clone();
    let ids_in_file = disk.nbformat_minor >= 5;
    let known: HashSet<&str> = base.cells.iter().map(|c| c.id.as_str()).collect();
    if ids_in_file && disk.cells.iter().any(|c| known.contains(c.id.as_str())) {
        // A hand-copied cell shares its id with the original: the copy is a new cell.
        let mut seen = HashSet::new();
        for cell in &mut disk.cells {
            if !seen.insert(cell.id.clone()) {
                cell.id = uuid::Uuid::new_v4().to_string();
            }
        }
        return disk;
    }
    let key = |c: &Cell| (c.cell_type.as_str(), c.source.clone());
    let old: Vec<_> = base.cells.iter().map(key).collect();
    let new: Vec<_> = disk.cells.iter().map(key).collect();
    let fresh_id = |_: &Cell| uuid::Uuid::new_v4().to_string();
    for op in similar::capture_diff_slices(Algorithm::Myers, &old, &new) {
        match op {
            DiffOp::Equal {
                old_index,
                new_index,
                len,
            } => {
                for i in 0..len {
                    disk.cells[new_index + i].id = base.cells[old_index + i].id.clone();
                }
            }
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => {
                for i in 0..new_len {
                    disk.cells[new_index + i].id = if i < old_len {
                        base.cells[old_index + i].id.clone()
                    } else {
                        fresh_id(&disk.cells[new_index + i])
                    };
                }
            }
            DiffOp::Insert {
                new_index, new_len, ..
            } => {
                for i in 0..new_len {
                    disk.cells[new_index + i].id = fresh_id(&disk.cells[new_index + i]);
                }
            }
            DiffOp::Delete { .. } => {}
        }
    }
    disk
}

fn replay(txn: &mut TransactionMut, base: &Notebook, disk: &Notebook) {
    let cells = txn.get_or_insert_array("cells");
    let disk_ids: HashSet<&str> = disk.cells.iter().map(|c| c.id.as_str()).collect();
    let base_by_id: HashMap<&str, &Cell> = base.cells.iter().map(|c| (c.id.as_str(), c)).collect();

    // Deleted cells, found by id in the document itself (not by position in `base`, which
    // skips malformed cells), removed from the end so indices stay valid; neighbours at once
    // (yrs walks the array from its start to reach an index).
    let doomed: Vec<u32> = cells
        .iter(txn)
        .enumerate()
        .filter_map(|(i, out)| match out {
            Out::YMap(map) => match map.get(txn, "id") {
                Some(Out::Any(yrs::Any::String(id))) if !disk_ids.contains(&*id) => Some(i as u32),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for index in doomed {
        match runs.last_mut() {
            Some((start, len)) if *start + *len == index => *len += 1,
            _ => runs.push((index, 1)),
        }
    }
    for (start, len) in runs.into_iter().rev() {
        cells.remove_range(txn, start, len);
    }
    // The cells left, by id (the first of duplicates, as `find_cell` would find), with their
    // positions: one pass, not one search per cell.
    let mut by_id: HashMap<String, (u32, MapRef)> = HashMap::new();
    for (index, out) in cells.iter(txn).enumerate() {
        if let Out::YMap(map) = out {
            if let Some(Out::Any(yrs::Any::String(id))) = map.get(txn, "id") {
                by_id.entry(id.to_string()).or_insert((index as u32, map));
            }
        }
    }
    // Changed and new cells. While the file keeps the document's order (moving cells is not
    // replayed, so it nearly always does), a cell's index is its position plus the cells
    // inserted so far, and a new cell goes at `cursor`, just after the previous one.
    let mut in_order = true;
    let mut last_position: Option<u32> = None;
    let mut inserted = 0u32;
    let mut cursor = 0u32;
    let mut previous: Option<&str> = None;
    for cell in &disk.cells {
        let found = by_id.get(cell.id.as_str()).cloned();
        if let Some((position, _)) = &found {
            if last_position.is_some_and(|last| *position <= last) {
                in_order = false;
            }
            last_position = Some(*position);
        }
        let index_of = |txn: &TransactionMut, position: u32, id: &str| -> Option<u32> {
            if in_order {
                Some(position + inserted)
            } else {
                find_cell(txn, &cells, id).map(|(i, _)| i)
            }
        };
        match base_by_id.get(cell.id.as_str()) {
            Some(old) if old.cell_type == cell.cell_type => {
                if let Some((position, map)) = found {
                    replay_cell(txn, &map, old, cell);
                    cursor = position + inserted + 1;
                }
            }
            Some(_) => {
                // A changed cell type is a different cell: replace it where it stands.
                if let Some(index) = found.and_then(|(p, _)| index_of(txn, p, &cell.id)) {
                    cells.remove(txn, index);
                    insert_cell(txn, &cells, index, cell);
                    cursor = index + 1;
                }
            }
            None => {
                let index = if in_order {
                    cursor
                } else {
                    previous
                        .and_then(|id| find_cell(txn, &cells, id))
                        .map(|(i, _)| i + 1)
                        .unwrap_or(0)
                };
                insert_cell(txn, &cells, index, cell);
                inserted += 1;
                cursor = index + 1;
            }
        }
        previous = Some(cell.id.as_str());
    }
    // Notebook metadata and version.
    let meta = txn.get_or_insert_map("meta");
    if base.metadata != disk.metadata {
        match meta.get(txn, "metadata") {
            Some(Out::YMap(map)) => replay_map(txn, &map, &base.metadata, &disk.metadata),
            _ => {
                let map = meta.insert(txn, "metadata", MapPrelim::default());
                fill_map(txn, &map, &disk.metadata);
            }
        }
    }
    if base.nbformat_minor != disk.nbformat_minor {
        meta.insert(
            txn,
            "nbformat_minor",
            json_to_any(&disk.nbformat_minor.into()),
        );
    }
}

fn find_cell<T: ReadTxn>(txn: &T, cells: &yrs::ArrayRef, id: &str) -> Option<(u32, MapRef)> {
    cells.iter(txn).enumerate().find_map(|(i, out)| match out {
        Out::YMap(map) => match map.get(txn, "id") {
            Some(Out::Any(yrs::Any::String(s))) if &*s == id => Some((i as u32, map)),
            _ => None,
        },
        _ => None,
    })
}

fn replay_cell(txn: &mut TransactionMut, map: &MapRef, old: &Cell, new: &Cell) {
    if old.source != new.source {
        match map.get(txn, "source") {
            Some(Out::YText(text)) => replay_text(txn, &text, &new.source),
            _ => {
                map.insert(txn, "source", yrs::TextPrelim::new(new.source.as_str()));
            }
        }
    }
    if old.metadata != new.metadata {
        match map.get(txn, "metadata") {
            Some(Out::YMap(meta)) => replay_map(txn, &meta, &old.metadata, &new.metadata),
            _ => {
                let meta = map.insert(txn, "metadata", MapPrelim::default());
                fill_map(txn, &meta, &new.metadata);
            }
        }
    }
    if new.cell_type == CellType::Code {
        if old.execution_count != new.execution_count {
            map.insert(txn, "execution_count", json_to_any(&new.execution_count));
        }
        if old.outputs != new.outputs {
            let outputs = map.insert(txn, "outputs", ArrayPrelim::default());
            insert_outputs(txn, &outputs, &new.outputs);
        }
    } else if old.attachments != new.attachments {
        match &new.attachments {
            Some(a) => {
                map.insert(txn, "attachments", json_to_any(a));
            }
            None => {
                map.remove(txn, "attachments");
            }
        }
    }
}

fn replay_map(
    txn: &mut TransactionMut,
    map: &MapRef,
    old: &serde_json::Map<String, Value>,
    new: &serde_json::Map<String, Value>,
) {
    for key in old.keys() {
        if !new.contains_key(key) {
            map.remove(txn, key);
        }
    }
    for (key, value) in new {
        if old.get(key) != Some(value) {
            map.insert(txn, key.as_str(), json_to_any(value));
        }
    }
}

/// Applies a character diff of the text's current content → `new`, with UTF-16 offsets.
/// (Diffing what the text holds, not what we believe it holds, keeps every offset in range.)
fn replay_text(txn: &mut TransactionMut, text: &TextRef, new: &str) {
    let old = text.get_string(txn);
    let old_chars: Vec<char> = old.chars().collect();
    let new_chars: Vec<char> = new.chars().collect();
    let mut utf16_at = Vec::with_capacity(old_chars.len() + 1);
    let mut offset = 0u32;
    for c in &old_chars {
        utf16_at.push(offset);
        offset += c.len_utf16() as u32;
    }
    utf16_at.push(offset);
    let ops = similar::capture_diff_deadline(
        Algorithm::Myers,
        &old_chars,
        0..old_chars.len(),
        &new_chars,
        0..new_chars.len(),
        Some(std::time::Instant::now() + std::time::Duration::from_secs(1)),
    );
    for op in ops.into_iter().rev() {
        let (old_index, old_len, new_index, new_len) = match op {
            DiffOp::Equal { .. } => continue,
            DiffOp::Delete {
                old_index, old_len, ..
            } => (old_index, old_len, 0, 0),
            DiffOp::Insert {
                old_index,
                new_index,
                new_len,
            } => (old_index, 0, new_index, new_len),
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => (old_index, old_len, new_index, new_len),
        };
        let start = utf16_at[old_index];
        if old_len > 0 {
            text.remove_range(txn, start, utf16_at[old_index + old_len] - start);
        }
        if new_len > 0 {
            let inserted: String = new_chars[new_index..new_index + new_len].iter().collect();
            text.insert(txn, start, &inserted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notebook::cell_source;
    use yrs::Doc;

    fn notebook(sources: &[(&str, &str)]) -> Notebook {
        let cells = sources
            .iter()
            .map(|(id, src)| serde_json::json!({"cell_type": "code", "id": id, "metadata": {}, "source": src, "outputs": [], "execution_count": null}))
            .collect::<Vec<_>>();
        Notebook::from_json(
            serde_json::json!({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}),
        )
        .unwrap()
    }

    fn room_from(base: &[u8]) -> Doc {
        let doc = new_doc();
        doc.transact_mut()
            .apply_update(Update::decode_v1(base).unwrap())
            .unwrap();
        doc
    }

    #[test]
    fn keeps_room_edits_and_outside_edits_to_the_same_cell() {
        let base_nb = notebook(&[("a", "hello world"), ("b", "x = 1")]);
        let base = base_nb
            .to_doc()
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let room = room_from(&base);
        // The room appends to cell a; outside, someone capitalises it and adds a cell.
        {
            let mut txn = room.transact_mut();
            let text = cell_source(&txn, 0).unwrap();
            text.push(&mut txn, "!!");
        }
        let disk = notebook(&[("a", "Hello world 🌍"), ("n", "new"), ("b", "x = 1")]);
        let edit = external_edit(&base, &Content::Notebook(disk)).unwrap();
        room.transact_mut()
            .apply_update(Update::decode_v1(&edit.update).unwrap())
            .unwrap();
        let merged = Notebook::from_doc(&room.transact());
        let sources: Vec<_> = merged.cells.iter().map(|c| c.source.as_str()).collect();
        // Both sides appended at the same place: Yjs orders concurrent inserts by client id.
        assert!(
            ["Hello world 🌍!!", "Hello world!! 🌍"].contains(&sources[0]),
            "{sources:?}"
        );
        assert_eq!(sources[1..], ["new", "x = 1"]);
    }

    #[test]
    fn files_without_ids_are_matched_by_content() {
        let mut base_nb = notebook(&[("a", "one"), ("b", "two"), ("c", "three")]);
        base_nb.nbformat_minor = 4;
        let base = base_nb
            .to_doc()
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let mut disk = notebook(&[("x", "one"), ("y", "two!"), ("z", "three")]);
        disk.nbformat_minor = 4;
        let edit = external_edit(&base, &Content::Notebook(disk)).unwrap();
        let room = room_from(&base);
        room.transact_mut()
            .apply_update(Update::decode_v1(&edit.update).unwrap())
            .unwrap();
        let merged = Notebook::from_doc(&room.transact());
        let ids: Vec<_> = merged.cells.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, vec!["a", "b", "c"]);
        assert_eq!(merged.cells[1].source, "two!");
    }

    #[test]
    fn a_copied_cell_sharing_an_id_is_a_new_cell() {
        let base_nb = notebook(&[("a", "original"), ("b", "x")]);
        let base = base_nb
            .to_doc()
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let disk = notebook(&[
            ("a", "original!"),
            ("a", "a copy, much longer than the original"),
            ("b", "x"),
        ]);
        let edit = external_edit(&base, &Content::Notebook(disk)).unwrap();
        let room = room_from(&base);
        room.transact_mut()
            .apply_update(Update::decode_v1(&edit.update).unwrap())
            .unwrap();
        let sources: Vec<_> = Notebook::from_doc(&room.transact())
            .cells
            .into_iter()
            .map(|c| c.source)
            .collect();
        assert_eq!(
            sources,
            vec!["original!", "a copy, much longer than the original", "x"]
        );
    }

    fn merged(base_nb: &Notebook, disk: Notebook) -> Notebook {
        let base = base_nb
            .to_doc()
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let edit = external_edit(&base, &Content::Notebook(disk)).unwrap();
        let room = room_from(&base);
        room.transact_mut()
            .apply_update(Update::decode_v1(&edit.update).unwrap())
            .unwrap();
        let notebook = Notebook::from_doc(&room.transact());
        notebook
    }

    #[test]
    fn insertions_deletions_and_type_changes_land_where_the_file_has_them() {
        let base_nb = notebook(&[
            ("a", "0"),
            ("b", "1"),
            ("c", "2"),
            ("d", "3"),
            ("e", "4"),
            ("f", "5"),
            ("g", "6"),
            ("h", "7"),
        ]);
        let mut disk = notebook(&[
            ("n1", "new first"),
            ("a", "0"),
            ("n2", "new after a"),
            ("n3", "and another"),
            ("d", "3 edited"),
            ("e", "4 as markdown"),
            ("n4", "new after e"),
            ("h", "7"),
            ("n5", "new last"),
        ]);
        disk.cells[5].cell_type = CellType::Markdown;
        let result = merged(&base_nb, disk.clone());
        let got: Vec<_> = result
            .cells
            .iter()
            .map(|c| (c.id.as_str(), c.cell_type, c.source.as_str()))
            .collect();
        let want: Vec<_> = disk
            .cells
            .iter()
            .map(|c| (c.id.as_str(), c.cell_type, c.source.as_str()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_cell_moved_outside_keeps_its_place_and_new_cells_follow_their_neighbour() {
        let base_nb = notebook(&[("a", "0"), ("b", "1"), ("c", "2")]);
        // c moved to the top (not replayed), edited, and followed by a new cell.
        let disk = notebook(&[("c", "2!"), ("n", "new"), ("a", "0"), ("b", "1")]);
        let result = merged(&base_nb, disk);
        let got: Vec<_> = result
            .cells
            .iter()
            .map(|c| (c.id.as_str(), c.source.as_str()))
            .collect();
        assert_eq!(got, vec![("a", "0"), ("b", "1"), ("c", "2!"), ("n", "new")]);
    }
}
