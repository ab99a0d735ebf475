//! Shared types nested tens of thousands deep. yrs deletes (and garbage-collects) a shared type
//! by recursing into the types it holds, one stack frame per level: removing such a chain
//! overflows a 2 MiB stack (a tokio worker's), and a stack overflow aborts the whole process,
//! every room with it. (Its own test binary: when it fails, it aborts.)

use collab::guard::UpdateGuard;
use collab::{Capabilities, DocumentKind, Notebook};
use yrs::updates::decoder::Decode;
use yrs::{Array, Doc, Map, MapPrelim, MapRef, Out, ReadTxn, StateVector, Transact, Update};

const NOTEBOOK: &str = r##"{"cells": [
  {"cell_type": "markdown", "id": "m1", "metadata": {}, "source": "# Title"}
 ],
 "metadata": {}, "nbformat": 4, "nbformat_minor": 5}"##;

const DEPTH: usize = 50_000;

fn apply(doc: &Doc, update: &[u8]) {
    doc.transact_mut()
        .apply_update(Update::decode_v1(update).unwrap())
        .unwrap();
}

fn metadata<T: ReadTxn>(txn: &T) -> MapRef {
    let Some(Out::YMap(cell)) = txn.get_array("cells").unwrap().get(txn, 0) else {
        panic!("no cell")
    };
    match cell.get(txn, "metadata") {
        Some(Out::YMap(metadata)) => metadata,
        other => panic!("metadata: {other:?}"),
    }
}

/// On a thread with room for the recursion: the room, and an editor's two updates (a chain of
/// maps `DEPTH` deep in the cell's metadata, then its removal).
fn setup() -> (Doc, Vec<u8>, Vec<u8>) {
    let notebook = Notebook::from_ipynb(NOTEBOOK.as_bytes()).unwrap();
    let room = collab::notebook::new_doc();
    apply(
        &room,
        &notebook
            .to_doc()
            .transact()
            .encode_state_as_update_v1(&StateVector::default()),
    );
    let peer = collab::notebook::new_doc_with_client(0x7e57_0201);
    apply(
        &peer,
        &room
            .transact()
            .encode_state_as_update_v1(&StateVector::default()),
    );
    let create = {
        let mut txn = peer.transact_mut();
        let mut map = metadata(&txn).insert(&mut txn, "deep", MapPrelim::default());
        for _ in 0..DEPTH {
            map = map.insert(&mut txn, "k", MapPrelim::default());
        }
        txn.encode_update_v1()
    };
    let remove = {
        let mut txn = peer.transact_mut();
        metadata(&txn).remove(&mut txn, "deep");
        txn.encode_update_v1()
    };
    (room, create, remove)
}

#[test]
fn a_chain_of_nested_maps_cannot_overflow_the_rooms_stack() {
    let (room, create, remove) = std::thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(setup)
        .unwrap()
        .join()
        .unwrap();
    // Judged and applied as a room does, on a thread with a tokio worker's stack.
    let judged = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let mut guard = UpdateGuard::new(DocumentKind::Notebook);
            let editor = Capabilities::role("editor").unwrap();
            for update in [create, remove] {
                if let Ok(Some(trial)) = guard.judge(&room, &update, editor) {
                    let delta = guard.accept(trial);
                    apply(&room, &delta);
                }
            }
        })
        .unwrap()
        .join();
    assert!(judged.is_ok());
}
