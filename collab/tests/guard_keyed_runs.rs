//! A map value of several units, split, outlives its parent: the use-after-free in yrs 0.28.1
//! that `guard_fuzz` found (seed 103), replayed through the guard as a room judges updates.
//!
//! yrs deletes a type's list and the current value of each of its keys with it, then garbage
//! collection frees the type. A value stored under a key as one item of several units (a
//! string, several `Any`s: no Yjs client writes one) is split by any later reference into its
//! middle; its left part stays alive, is neither the key's value nor in the list, and so
//! survives its parent's deletion pointing at freed memory. The room's next encoding (a sync,
//! a save, the update log) reads it: garbage, or a crash. These tests fail without the guard's
//! `keyed_runs` check (the planting update is accepted); under valgrind they also show the
//! invalid reads it prevents.

use collab::guard::{Refusal, UpdateGuard, Wrong};
use collab::{Capabilities, DocumentKind, Notebook};
use yrs::updates::decoder::Decode;
use yrs::{
    Array, ArrayPrelim, Doc, GetString, Map, MapPrelim, Out, ReadTxn, StateVector, Text, Transact,
    Update, WriteTxn,
};

const NOTEBOOK: &str = r##"{"cells": [
  {"cell_type": "code", "id": "c1", "metadata": {}, "source": "x = 1", "outputs": [],
   "execution_count": null},
  {"cell_type": "markdown", "id": "m1", "metadata": {}, "source": "# notes"}],
 "metadata": {}, "nbformat": 4, "nbformat_minor": 5}"##;

/// The attacker's client id.
const MALLORY: u64 = 4_220_857_901_380_613;

fn room() -> Doc {
    let nb = Notebook::from_ipynb(NOTEBOOK.as_bytes()).unwrap();
    let room = collab::notebook::new_doc_with_client(2_244_594_697_032_775);
    let state = encode(&nb.to_doc());
    apply(&room, &state);
    room
}

fn apply(doc: &Doc, update: &[u8]) {
    doc.transact_mut()
        .apply_update(Update::decode_v1(update).unwrap())
        .unwrap();
}

fn encode(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

/// What a client that reads the room's state sees: the room's encoding, twice, with
/// allocations in between (freed memory read by an encoding changes when it is reused).
fn stable_encoding(room: &Doc) -> Vec<u8> {
    let first = encode(room);
    let churn: Vec<Vec<u8>> = (0..2000).map(|i| vec![i as u8; 216]).collect();
    let second = encode(room);
    drop(churn);
    assert_eq!(first, second, "the room's encoding changed by itself");
    first
}

/// Judges `update` as the room does; an accepted delta is applied to `room`.
fn send(guard: &mut UpdateGuard, room: &Doc, update: &[u8]) -> Result<bool, Refusal> {
    match guard.judge(room, update, Capabilities::role("editor").unwrap())? {
        None => Ok(false),
        Some(trial) => {
            let delta = guard.accept(trial);
            apply(room, &delta);
            Ok(true)
        }
    }
}

/// The item id of cell `index`'s map and of its `source` text.
fn cell_and_source(room: &Doc, index: u32) -> ((u64, u32), (u64, u32)) {
    let txn = room.transact();
    let Some(Out::YMap(cell)) = txn.get_array("cells").unwrap().get(&txn, index) else {
        panic!("no cell {index}");
    };
    let Some(Out::YText(source)) = cell.get(&txn, "source") else {
        panic!("cell {index} has no source");
    };
    let id = |b: &yrs::branch::Branch| match b.id() {
        yrs::branch::BranchID::Nested(id) => (id.client.get(), id.clock),
        yrs::branch::BranchID::Root(_) => unreachable!(),
    };
    (id(cell.as_ref()), id(source.as_ref()))
}

// --- Yjs v1, by hand: what no honest client sends ------------------------------------------

fn var(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn string(out: &mut Vec<u8>, s: &str) {
    var(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A string stored under `key` of the type whose item is `parent`.
fn keyed_string(parent: (u64, u32), key: &str, text: &str) -> Vec<u8> {
    let mut out = vec![4 | 0x20];
    var(&mut out, 0); // parent given by item id
    var(&mut out, parent.0);
    var(&mut out, parent.1 as u64);
    string(&mut out, key);
    string(&mut out, text);
    out
}

/// A string inserted right after the unit `origin` (so the item holding it is split there).
fn string_after(origin: (u64, u32), text: &str) -> Vec<u8> {
    let mut out = vec![4 | 0x80];
    var(&mut out, origin.0);
    var(&mut out, origin.1 as u64);
    string(&mut out, text);
    out
}

/// One client's structs from `clock` on, then a delete set.
fn update(client: u64, clock: u32, structs: &[Vec<u8>], deletes: &[(u64, u32, u32)]) -> Vec<u8> {
    let mut out = Vec::new();
    if structs.is_empty() {
        var(&mut out, 0);
    } else {
        var(&mut out, 1);
        var(&mut out, structs.len() as u64);
        var(&mut out, client);
        var(&mut out, clock as u64);
        for s in structs {
            out.extend_from_slice(s);
        }
    }
    var(&mut out, deletes.len() as u64);
    for &(c, k, n) in deletes {
        var(&mut out, c);
        var(&mut out, 1);
        var(&mut out, k as u64);
        var(&mut out, n as u64);
    }
    out
}

fn refused_as_forbidden(result: Result<bool, Refusal>) -> String {
    match result {
        Err(Refusal(why, Wrong::Forbidden)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_value_of_several_units_under_a_key_is_refused_so_no_part_of_it_outlives_its_cell() {
    // What the fuzzer found, minimized: a string under a key of a cell's source text; an
    // insertion after its first two units (splitting it); someone deletes the cell.
    let room = room();
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    let (_, source) = cell_and_source(&room, 0);
    let plant = update(MALLORY, 0, &[keyed_string(source, "kernel", "é😀")], &[]);
    let why = refused_as_forbidden(send(&mut guard, &room, &plant));
    assert!(why.contains("under a map key"), "{why}");

    // The rest of the attack builds on what was refused: it lands nowhere.
    let split = update(MALLORY, 3, &[string_after((MALLORY, 1), "x")], &[]);
    assert!(matches!(
        send(&mut guard, &room, &split),
        Err(Refusal(_, Wrong::ForeignHistory))
    ));

    // Someone deletes the cell (an honest edit); the room stays sound.
    let peer = collab::notebook::new_doc_with_client(77);
    apply(&peer, &encode(&room));
    let delete = {
        let mut txn = peer.transact_mut();
        txn.get_or_insert_array("cells").remove(&mut txn, 0);
        txn.encode_update_v1()
    };
    assert_eq!(send(&mut guard, &room, &delete), Ok(true));
    let state = stable_encoding(&room);
    let copy = collab::notebook::new_doc_with_client(78);
    apply(&copy, &state);
    let nb = Notebook::from_doc(&copy.transact());
    assert_eq!(nb.cells.len(), 1);
    assert_eq!(nb.cells[0].source, "# notes");
}

#[test]
fn one_update_that_plants_splits_and_deletes_is_refused_whole() {
    // All three steps in one update: the guard's own copy of the room would free the cell's
    // text under the split value while judging it.
    let room = room();
    let before = stable_encoding(&room);
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    let (cell, source) = cell_and_source(&room, 0);
    let all_at_once = update(
        MALLORY,
        0,
        &[
            keyed_string(source, "k", "abc"),
            string_after((MALLORY, 1), "x"),
        ],
        &[(cell.0, cell.1, 1)],
    );
    let why = refused_as_forbidden(send(&mut guard, &room, &all_at_once));
    assert!(why.contains("under a map key"), "{why}");
    assert_eq!(
        stable_encoding(&room),
        before,
        "a refused update changed the room"
    );

    // The guard judges the next update on a sound copy.
    let peer = collab::notebook::new_doc_with_client(77);
    apply(&peer, &encode(&room));
    let typing = {
        let mut txn = peer.transact_mut();
        let Some(Out::YMap(cell)) = txn.get_or_insert_array("cells").get(&txn, 0) else {
            panic!()
        };
        let Some(Out::YText(source)) = cell.get(&txn, "source") else {
            panic!()
        };
        source.insert(&mut txn, 5, " + 1");
        txn.encode_update_v1()
    };
    assert_eq!(send(&mut guard, &room, &typing), Ok(true));
    stable_encoding(&room);
}

/// A string with an explicit parent and no key: yrs puts it at the start of the parent's list.
fn listed_string(parent: (u64, u32), text: &str) -> Vec<u8> {
    let mut out = vec![4];
    var(&mut out, 0);
    var(&mut out, parent.0);
    var(&mut out, parent.1 as u64);
    string(&mut out, text);
    out
}

#[test]
fn a_run_whose_start_the_room_has_lands_next_to_that_start_and_is_checked_there() {
    // A one-unit value under a key (harmless: it cannot be split) is accepted; then a run that
    // begins with that same unit and claims the list: yrs skips the unit it has and puts the
    // rest right of it, under the key.
    let room = room();
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    let (_, source) = cell_and_source(&room, 0);
    let one = update(MALLORY, 0, &[keyed_string(source, "k", "x")], &[]);
    assert_eq!(send(&mut guard, &room, &one), Ok(true));
    let rest = update(MALLORY, 0, &[listed_string(source, "xabc")], &[]);
    let why = refused_as_forbidden(send(&mut guard, &room, &rest));
    assert!(why.contains("under a map key"), "{why}");
    stable_encoding(&room);
}

#[test]
fn concurrent_honest_edits_to_a_deleted_cell_pass_and_leave_the_room_sound() {
    // One person deletes a cell while another, not yet aware, sets keys in it (a string, a
    // nested map), types into its source and pastes several characters: in either order.
    for delete_first in [true, false] {
        let room = room();
        let mut guard = UpdateGuard::new(DocumentKind::Notebook);
        let alice = collab::notebook::new_doc_with_client(101);
        let bob = collab::notebook::new_doc_with_client(102);
        apply(&alice, &encode(&room));
        apply(&bob, &encode(&room));
        let deletion = {
            let mut txn = alice.transact_mut();
            txn.get_or_insert_array("cells").remove(&mut txn, 0);
            txn.encode_update_v1()
        };
        let edits = {
            let mut txn = bob.transact_mut();
            let Some(Out::YMap(cell)) = txn.get_or_insert_array("cells").get(&txn, 0) else {
                panic!()
            };
            let Some(Out::YMap(meta)) = cell.get(&txn, "metadata") else {
                panic!()
            };
            meta.insert(&mut txn, "tags", "a long string value");
            meta.insert(&mut txn, "tags", "replaced in the same transaction");
            meta.insert(&mut txn, "nested", MapPrelim::from([("k", "v")]));
            meta.insert(&mut txn, "list", ArrayPrelim::from(["a", "b", "c"]));
            let Some(Out::YText(source)) = cell.get(&txn, "source") else {
                panic!()
            };
            source.insert(&mut txn, 0, "pasted text\n");
            txn.encode_update_v1()
        };
        let (first, second) = if delete_first {
            (&deletion, &edits)
        } else {
            (&edits, &deletion)
        };
        for update in [first, second] {
            if let Err(refusal) = send(&mut guard, &room, update) {
                panic!("an honest edit was refused: {refusal:?}");
            }
            stable_encoding(&room);
        }
        let copy = collab::notebook::new_doc_with_client(103);
        apply(&copy, &stable_encoding(&room));
        let txn = copy.transact();
        let cells = txn.get_array("cells").unwrap();
        assert_eq!(cells.len(&txn), 1, "the deleted cell stays deleted");
        let Some(Out::YMap(left)) = cells.get(&txn, 0) else {
            panic!()
        };
        let Some(Out::YText(source)) = left.get(&txn, "source") else {
            panic!()
        };
        assert_eq!(source.get_string(&txn), "# notes");
    }
}
