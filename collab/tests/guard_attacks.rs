//! Hand-made updates that made the update guard panic, or put into the room's document what
//! would make it loop forever, judged directly by `UpdateGuard::judge` (the end-to-end attacks
//! live in `tests/tests/guard_attacks.rs`). Each test builds the update struct by struct in
//! Yjs's v1 encoding (see `tests/src/forge.rs` for the format).

use collab::guard::UpdateGuard;
use collab::{Capabilities, DocumentKind, Notebook};
use yrs::branch::BranchID;
use yrs::updates::decoder::Decode;
use yrs::{
    Array, Doc, GetString, Map, MapPrelim, MapRef, Out, ReadTxn, StateVector, Text, TextRef,
    Transact, Update, WriteTxn,
};

const NOTEBOOK: &str = r##"{"cells": [
  {"cell_type": "code", "id": "c1", "metadata": {}, "source": "x = 1\nprint(x)",
   "outputs": [{"output_type": "stream", "name": "stdout", "text": "1\n"}],
   "execution_count": 1},
  {"cell_type": "markdown", "id": "m1", "metadata": {}, "source": "# Title"},
  {"cell_type": "code", "id": "c2", "metadata": {}, "source": "y = 2", "outputs": [],
   "execution_count": null}
 ],
 "metadata": {}, "nbformat": 4, "nbformat_minor": 5}"##;

fn apply(doc: &Doc, update: &[u8]) {
    doc.transact_mut()
        .apply_update(Update::decode_v1(update).unwrap())
        .unwrap();
}

/// A room's document as a room loads it (under the loader's client id), with the server's state.
fn notebook_room() -> Doc {
    let notebook = Notebook::from_ipynb(NOTEBOOK.as_bytes()).unwrap();
    let room = collab::notebook::new_doc();
    apply(
        &room,
        &notebook
            .to_doc()
            .transact()
            .encode_state_as_update_v1(&StateVector::default()),
    );
    let mut txn = room.transact_mut();
    let state = txn.get_or_insert_map("state");
    state.insert(&mut txn, "path", "nb.ipynb");
    state.insert(&mut txn, "hash", "h0");
    drop(txn);
    room
}

fn text_room() -> Doc {
    let room = collab::notebook::new_doc();
    let mut txn = room.transact_mut();
    txn.get_or_insert_text("source").push(&mut txn, "hello");
    let state = txn.get_or_insert_map("state");
    state.insert(&mut txn, "path", "a.txt");
    drop(txn);
    room
}

fn editor() -> Capabilities {
    Capabilities::role("editor").unwrap()
}

/// Judges `update` as the room does; applies what is accepted to `room`.
fn send(guard: &mut UpdateGuard, room: &Doc, update: &[u8]) -> bool {
    match guard.judge(room, update, editor()) {
        Ok(Some(trial)) => {
            let delta = guard.accept(trial);
            apply(room, &delta);
            true
        }
        Ok(None) | Err(_) => false,
    }
}

/// A peer's real edit on a copy of `room`, under client `client`.
fn edit(room: &Doc, client: u64, f: impl FnOnce(&mut yrs::TransactionMut)) -> Vec<u8> {
    let peer = collab::notebook::new_doc_with_client(client);
    apply(
        &peer,
        &room
            .transact()
            .encode_state_as_update_v1(&StateVector::default()),
    );
    let mut txn = peer.transact_mut();
    f(&mut txn);
    txn.encode_update_v1()
}

fn cell<T: ReadTxn>(txn: &T, index: u32) -> MapRef {
    match txn.get_array("cells").unwrap().get(txn, index) {
        Some(Out::YMap(map)) => map,
        other => panic!("cell {index}: {other:?}"),
    }
}

fn source<T: ReadTxn>(txn: &T, index: u32) -> TextRef {
    match cell(txn, index).get(txn, "source") {
        Some(Out::YText(text)) => text,
        other => panic!("source {index}: {other:?}"),
    }
}

fn item_of<B: AsRef<yrs::branch::Branch>>(shared: &B) -> (u64, u32) {
    match shared.as_ref().id() {
        BranchID::Nested(id) => (id.client.get(), id.clock),
        BranchID::Root(_) => panic!("a root"),
    }
}

fn clock_of(doc: &Doc, client: u64) -> u32 {
    doc.transact()
        .state_vector()
        .get(&yrs::block::ClientID::new(client))
}

// --- the v1 wire form, one struct per update ---

fn var(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    var(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

enum Parent<'a> {
    Root(&'a str),
    Item((u64, u32)),
}

enum Content<'a> {
    Str(&'a str),
    Format(&'a str, &'a str),
}

/// One struct at `id`: placed by its neighbours, or (with neither) under `parent` and `key`.
fn one_struct(
    id: (u64, u32),
    origin: Option<(u64, u32)>,
    right_origin: Option<(u64, u32)>,
    parent: Option<(Parent, Option<&str>)>,
    content: Content,
) -> Vec<u8> {
    let mut out = Vec::new();
    var(&mut out, 1);
    var(&mut out, 1);
    var(&mut out, id.0);
    var(&mut out, id.1 as u64);
    let mut info = match content {
        Content::Str(_) => 4,
        Content::Format(..) => 6,
    };
    if origin.is_some() {
        info |= 0x80;
    }
    if right_origin.is_some() {
        info |= 0x40;
    }
    if let Some((_, Some(_))) = &parent {
        info |= 0x20;
    }
    out.push(info);
    for id in [origin, right_origin].into_iter().flatten() {
        var(&mut out, id.0);
        var(&mut out, id.1 as u64);
    }
    if origin.is_none() && right_origin.is_none() {
        let (parent, key) = parent.expect("a parent");
        match parent {
            Parent::Root(name) => {
                var(&mut out, 1);
                string(&mut out, name);
            }
            Parent::Item(id) => {
                var(&mut out, 0);
                var(&mut out, id.0);
                var(&mut out, id.1 as u64);
            }
        }
        if let Some(key) = key {
            string(&mut out, key);
        }
    }
    match content {
        Content::Str(s) => string(&mut out, s),
        Content::Format(key, value) => {
            string(&mut out, key);
            string(&mut out, value);
        }
    }
    var(&mut out, 0);
    out
}

/// A formatting attribute as a map entry (of `state`, of a cell) reads as an entry without a
/// value, and yrs's map change event unwraps that value: the guard, which reads those events,
/// must refuse it, not panic (a panic ends the room for everyone).
#[test]
fn a_formatting_item_as_a_map_entry_is_refused_without_a_panic() {
    let attacker = 0x7e57_0101;
    let room = notebook_room();
    let in_state = one_struct(
        (attacker, 0),
        None,
        None,
        Some((Parent::Root("state"), Some("dirty"))),
        Content::Format("bold", "true"),
    );
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    assert!(guard.judge(&room, &in_state, editor()).is_err());
    let cell_map = item_of(&cell(&room.transact(), 1));
    let in_a_cell = one_struct(
        (attacker, 0),
        None,
        None,
        Some((Parent::Item(cell_map), Some("tags"))),
        Content::Format("bold", "true"),
    );
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    assert!(guard.judge(&room, &in_a_cell, editor()).is_err());
    let room = text_room();
    let mut guard = UpdateGuard::new(DocumentKind::Text);
    assert!(guard.judge(&room, &in_state, editor()).is_err());
}

/// Makes the last clock `client` wrote garbage (an entry of a map it then removes), through the
/// guard; returns that clock.
fn collected_last_clock(guard: &mut UpdateGuard, room: &Doc, client: u64) -> u32 {
    let add = edit(room, client, |txn| {
        let metadata = match cell(txn, 2).get(txn, "metadata") {
            Some(Out::YMap(m)) => m,
            other => panic!("{other:?}"),
        };
        let scratch = metadata.insert(txn, "scratch", MapPrelim::default());
        scratch.insert(txn, "k", "v");
    });
    assert!(send(guard, room, &add));
    let remove = edit(room, client, |txn| {
        if let Some(Out::YMap(metadata)) = cell(txn, 2).get(txn, "metadata") {
            metadata.remove(txn, "scratch");
        }
    });
    assert!(send(guard, room, &remove));
    clock_of(room, client) - 1
}

/// Astral text (outside the Basic Multilingual Plane) in a list makes yrs 0.28 loop forever
/// walking that list. The guard checks where its shadow put such text, by the struct's first
/// id; a struct that starts on a clock the room has already collected (a "phantom": the shadow
/// keeps its new part under the struct's explicit parent, the room collects it) has no place
/// there, and the item placed after it lands, in the room, before its right neighbour: a cell.
#[test]
fn astral_text_placed_after_a_phantom_does_not_reach_the_cell_list() {
    let attacker = 0x7e57_0102;
    let room = notebook_room();
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    let last = collected_last_clock(&mut guard, &room, attacker);
    let (source1, cell2) = {
        let txn = room.transact();
        (item_of(&source(&txn, 1)), item_of(&cell(&txn, 2)))
    };
    let phantom = one_struct(
        (attacker, last),
        None,
        None,
        Some((Parent::Item(source1), None)),
        Content::Str("vPHANTOM"),
    );
    send(&mut guard, &room, &phantom);
    let next = clock_of(&room, attacker);
    let astral = one_struct(
        (attacker, next),
        Some((attacker, last + 1)),
        Some(cell2),
        None,
        Content::Str("\u{1F600}\u{1F600}"),
    );
    send(&mut guard, &room, &astral);
    // (The list's length counts UTF-16 units without walking it: three cells and nothing else.)
    let txn = room.transact();
    assert_eq!(txn.get_array("cells").unwrap().len(&txn), 3);
}

/// A struct that starts on the last clock the room has (the loader's last item is the first
/// cell's source) and names another parent (the cell list): yrs links its new part after that
/// item but reports it under the named parent. Whatever the guard decides, the change it lets
/// into the room is the one it judged: either the first cell's source is unchanged, or the
/// verdict names that cell and its source (so its lock applies).
#[test]
fn a_trimmed_struct_is_judged_where_the_room_puts_it() {
    let room = notebook_room();
    let load = collab::LOAD_CLIENT_ID;
    let last = clock_of(&room, load) - 1;
    let (first_cell, before) = {
        let txn = room.transact();
        (item_of(&cell(&txn, 0)), source(&txn, 0).get_string(&txn))
    };
    let update = one_struct(
        (load, last),
        None,
        None,
        Some((Parent::Root("cells"), None)),
        Content::Str(") # forged"),
    );
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    let verdict = guard.judge(&room, &update, editor());
    if let Ok(Some(trial)) = verdict {
        let analysis = format!("{:?}", trial.analysis);
        let names_the_cell = trial.analysis.cells.contains(&first_cell)
            && trial
                .analysis
                .fields
                .contains(&collab::guard::Field::Cell("source".into()));
        let delta = guard.accept(trial);
        apply(&room, &delta);
        let after = source(&room.transact(), 0).get_string(&room.transact());
        assert!(
            after == before || names_the_cell,
            "the first cell's source became {after:?}, judged as {analysis}"
        );
    }
}

/// A delete set as the wire carries it: (client, clock, length) ranges.
fn deletions(ranges: &[(u64, u32, u32)]) -> Vec<u8> {
    let mut by_client: Vec<(u64, Vec<(u32, u32)>)> = Vec::new();
    for &(client, clock, len) in ranges {
        match by_client.iter_mut().find(|(c, _)| *c == client) {
            Some((_, list)) => list.push((clock, len)),
            None => by_client.push((client, vec![(clock, len)])),
        }
    }
    let mut out = Vec::new();
    var(&mut out, 0);
    var(&mut out, by_client.len() as u64);
    for (client, list) in by_client {
        var(&mut out, client);
        var(&mut out, list.len() as u64);
        for (clock, len) in list {
            var(&mut out, clock as u64);
            var(&mut out, len as u64);
        }
    }
    out
}

/// A watcher's resync repeats deletions the room has: judged a no-op range by range, whatever
/// their order and however the room's ranges lie; one range the room has not deleted is a
/// change, refused.
#[test]
fn a_watchers_delete_set_is_known_only_if_every_range_is() {
    let (a, b) = (0x7e57_0103, 0x7e57_0104);
    let room = notebook_room();
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    for (client, index) in [(a, 1), (b, 2)] {
        let typed = edit(&room, client, |txn| {
            source(txn, index).push(txn, &"z".repeat(100));
        });
        assert!(send(&mut guard, &room, &typed));
    }
    // Every other character of a's (fifty ranges), and b's 10..20 and 20..30 in two updates.
    let every_other: Vec<(u64, u32, u32)> = (0..100).step_by(2).map(|k| (a, k, 1)).collect();
    for update in [
        deletions(&every_other),
        deletions(&[(b, 10, 10)]),
        deletions(&[(b, 20, 10)]),
    ] {
        assert!(send(&mut guard, &room, &update));
    }
    let watcher = Capabilities::role("viewer").unwrap();
    let mut judge = |ranges: &[(u64, u32, u32)]| {
        guard
            .judge(&room, &deletions(ranges), watcher)
            .map(|trial| trial.is_none())
    };
    let mut backwards = every_other.clone();
    backwards.reverse();
    backwards.insert(10, (b, 12, 18));
    assert_eq!(judge(&backwards), Ok(true));
    assert_eq!(judge(&[(b, 10, 20), (a, 98, 1), (a, 0, 1)]), Ok(true));
    assert_eq!(judge(&[(a, 2, 1), (b, 25, 0), (a, 4, 1)]), Ok(true));
    // a's 1 was never deleted; nor b's 9 or 30; 0..2 of a spans a kept character.
    for unknown in [
        vec![(a, 0, 1), (a, 1, 1)],
        vec![(b, 9, 2)],
        vec![(b, 29, 2), (a, 2, 1)],
        vec![(a, 0, 2)],
        vec![(a, 96, 1), (b, 10, 10), (a, 97, 1)],
    ] {
        assert!(judge(&unknown).is_err(), "{unknown:?}");
    }
}

/// An update whose structs of one client come in two groups (Yjs writes each client once),
/// the second overlapping the first: yrs integrates the overlap twice and its block store
/// underflows (a panic with overflow checks, a corrupt store without). Refused, no panic.
#[test]
fn an_update_naming_a_client_twice_is_refused_without_a_panic() {
    let attacker = 0x7e57_0105;
    let room = notebook_room();
    let (source0, source1) = {
        let txn = room.transact();
        (item_of(&source(&txn, 0)), item_of(&source(&txn, 1)))
    };
    let first = one_struct(
        (attacker, 0),
        None,
        None,
        Some((Parent::Item(source1), None)),
        Content::Str("abc"),
    );
    let second = one_struct(
        (attacker, 1),
        None,
        None,
        Some((Parent::Item(source0), None)),
        Content::Str("WXYZ"),
    );
    // Two client groups (each update's body without its counts and its empty delete set).
    let mut update = vec![2];
    update.extend_from_slice(&first[1..first.len() - 1]);
    update.extend_from_slice(&second[1..second.len() - 1]);
    update.push(0);
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    assert!(guard.judge(&room, &update, editor()).is_err());
}

/// The honest side of a struct the room partly has: a client typed into an empty cell (its
/// first character has no neighbour, so it names its parent), went on typing offline (yrs
/// merges the new characters into that first item) and re-sends its whole document. The room
/// has the first character under that same parent: the rest is accepted.
#[test]
fn a_client_resending_text_it_went_on_typing_is_accepted() {
    let client = 0x7e57_0106;
    let room = notebook_room();
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    let peer = collab::notebook::new_doc_with_client(client);
    apply(
        &peer,
        &room
            .transact()
            .encode_state_as_update_v1(&StateVector::default()),
    );
    let type_into_new_cell = |text: &str, at: u32| {
        let mut txn = peer.transact_mut();
        if at == 0 {
            let cells = txn.get_array("cells").unwrap();
            let blank = collab::Cell {
                id: "new".into(),
                cell_type: collab::CellType::Markdown,
                source: String::new(),
                metadata: Default::default(),
                execution_count: serde_json::Value::Null,
                outputs: Vec::new(),
                attachments: None,
            };
            collab::notebook::insert_cell(&mut txn, &cells, 3, &blank);
        }
        source(&txn, 3).insert(&mut txn, at, text);
        txn.encode_update_v1()
    };
    assert!(send(&mut guard, &room, &type_into_new_cell("a", 0)));
    let _offline = type_into_new_cell("bc", 1);
    let whole = peer
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    assert!(guard
        .judge(&room, &whole, editor())
        .is_ok_and(|t| t.is_some()));
}

/// Astral text in a struct that starts on a collected clock, placed by neighbours: yrs trims the
/// collected part, and the rest, its left origin collected, goes before its right neighbour: a
/// cell. The guard looked for the struct's place at its first clock, which is the collected one.
#[test]
fn astral_text_trimmed_off_a_collected_clock_does_not_reach_the_cell_list() {
    let attacker = 0x7e57_0107;
    let room = notebook_room();
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    let last = collected_last_clock(&mut guard, &room, attacker);
    let cell2 = item_of(&cell(&room.transact(), 2));
    let astral = one_struct(
        (attacker, last),
        None,
        Some(cell2),
        None,
        Content::Str("v\u{1F600}\u{1F600}"),
    );
    send(&mut guard, &room, &astral);
    let txn = room.transact();
    assert_eq!(txn.get_array("cells").unwrap().len(&txn), 3);
}
