use super::*;
use crate::notebook::Notebook;
use yrs::{Array, Doc, Map, ReadTxn, StateVector, Text, Transact, Update, WriteTxn};

/// lib0's varUint, for hand-made updates.
fn var(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
}

fn room_doc() -> Doc {
    let nb = Notebook::from_ipynb(
        br##"{"cells": [{"cell_type": "code", "id": "c1", "metadata": {}, "source": "x = 1",
             "outputs": [{"output_type": "stream", "name": "stdout", "text": "hi\n"}],
             "execution_count": 1},
            {"cell_type": "markdown", "id": "m1", "metadata": {}, "source": "# notes"}],
             "metadata": {}, "nbformat": 4, "nbformat_minor": 5}"##,
    )
    .unwrap();
    let doc = crate::notebook::new_doc();
    let state = nb
        .to_doc()
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    doc.transact_mut()
        .apply_update(Update::decode_v1(&state).unwrap())
        .unwrap();
    // The server's own state, as a room writes it.
    let mut txn = doc.transact_mut();
    let state = txn.get_or_insert_map("state");
    state.insert(&mut txn, "hash", "h0");
    state.insert(&mut txn, "path", "a.ipynb");
    drop(txn);
    doc
}

fn copy_of(room: &Doc) -> Doc {
    let peer = crate::notebook::new_doc();
    let state = room
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    peer.transact_mut()
        .apply_update(Update::decode_v1(&state).unwrap())
        .unwrap();
    peer
}

/// A peer's change made on a copy of `room`, as the update it would send.
fn peer_change(room: &Doc, f: impl FnOnce(&mut yrs::TransactionMut)) -> Vec<u8> {
    let peer = copy_of(room);
    let mut txn = peer.transact_mut();
    f(&mut txn);
    txn.encode_update_v1()
}

fn cell(txn: &yrs::TransactionMut, index: u32) -> yrs::MapRef {
    match txn.get_array("cells").unwrap().get(txn, index) {
        Some(yrs::Out::YMap(m)) => m,
        _ => panic!("no cell {index}"),
    }
}

fn source(txn: &yrs::TransactionMut, index: u32) -> yrs::TextRef {
    match cell(txn, index).get(txn, "source") {
        Some(yrs::Out::YText(t)) => t,
        _ => panic!(),
    }
}

fn notebook(doc: &Doc) -> Notebook {
    Notebook::from_doc(&doc.transact())
}

fn editor() -> Capabilities {
    Capabilities::role("editor").unwrap()
}

fn runner() -> Capabilities {
    Capabilities::role("runner").unwrap()
}

fn viewer() -> Capabilities {
    Capabilities::role("viewer").unwrap()
}

/// Judges `update` as the room does: on acceptance, applies the delta to `room`.
fn send(
    guard: &mut UpdateGuard,
    room: &Doc,
    update: &[u8],
    caps: Capabilities,
) -> Result<Option<Analysis>, Refusal> {
    match guard.judge(room, update, caps)? {
        None => Ok(None),
        Some(trial) => {
            let analysis = trial.analysis.clone();
            let delta = guard.accept(trial);
            room.transact_mut()
                .apply_update(Update::decode_v1(&delta).unwrap())
                .unwrap();
            Ok(Some(analysis))
        }
    }
}

fn fields(guard: &mut UpdateGuard, room: &Doc, update: &[u8]) -> Vec<Field> {
    let copy = copy_of(room);
    send(guard, &copy, update, Capabilities::ALL)
        .map(|a| a.map(|a| a.fields).unwrap_or_default())
        .unwrap_or_else(|r| panic!("refused: {r:?}"))
}

#[test]
fn places_each_kind_of_change() {
    let room = room_doc();
    let typing = peer_change(&room, |txn| {
        let source = source(txn, 0);
        source.insert(txn, 2, "yy");
        source.remove_range(txn, 0, 1);
    });
    let clearing = peer_change(&room, |txn| {
        let cell = cell(txn, 0);
        let Some(yrs::Out::YArray(outputs)) = cell.get(txn, "outputs") else {
            panic!()
        };
        outputs.remove(txn, 0);
        cell.insert(txn, "execution_count", yrs::Any::Null);
    });
    let adding = peer_change(&room, |txn| {
        let cells = txn.get_array("cells").unwrap();
        let cell = cells.insert(txn, 1, yrs::MapPrelim::default());
        cell.insert(txn, "cell_type", "markdown");
        cell.insert(txn, "source", yrs::TextPrelim::new("new"));
        cell.insert(txn, "metadata", yrs::MapPrelim::default());
    });
    let deleting = peer_change(&room, |txn| {
        txn.get_array("cells").unwrap().remove(txn, 0);
    });
    let stamping = peer_change(&room, |txn| {
        let state = txn.get_or_insert_map("state");
        state.insert(txn, "hash", "forged");
    });
    // Each judged against the same room, on a fresh guard.
    let judge =
        |update: &[u8]| fields(&mut UpdateGuard::new(DocumentKind::Notebook), &room, update);
    assert_eq!(judge(&typing), vec![Field::Cell("source".into())]);
    let mut cleared = judge(&clearing);
    cleared.sort_by_key(|f| format!("{f:?}"));
    assert_eq!(
        cleared,
        vec![
            Field::Cell("execution_count".into()),
            Field::Cell("outputs".into())
        ]
    );
    assert_eq!(judge(&adding), vec![Field::CellList]);
    assert_eq!(judge(&deleting), vec![Field::CellList]);
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    let refusal = send(&mut guard, &copy_of(&room), &stamping, Capabilities::ALL).unwrap_err();
    assert_eq!(refusal.0, "only the server changes state.hash");
}

#[test]
fn the_policy_follows_capabilities() {
    let room = room_doc();
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    let typing = peer_change(&room, |txn| source(txn, 0).push(txn, " + 1"));
    assert!(send(&mut guard, &room, &typing, editor())
        .unwrap()
        .is_some());
    assert_eq!(notebook(&room).cells[0].source, "x = 1 + 1");
    let outputs = peer_change(&room, |txn| {
        source(txn, 0).push(txn, "!");
        let Some(yrs::Out::YArray(outputs)) = cell(txn, 0).get(txn, "outputs") else {
            panic!()
        };
        outputs.remove(txn, 0);
    });
    let refusal = send(&mut guard, &room, &outputs, editor()).unwrap_err();
    assert!(refusal.0.contains("outputs"), "{refusal:?}");
    // Refused means nothing of it landed, not even the allowed part.
    assert_eq!(notebook(&room).cells[0].source, "x = 1 + 1");
    assert_eq!(notebook(&room).cells[0].outputs.len(), 1);
    assert!(send(&mut guard, &room, &outputs, runner())
        .unwrap()
        .is_some());
    assert_eq!(notebook(&room).cells[0].outputs.len(), 0);
    let path = peer_change(&room, |txn| {
        txn.get_or_insert_map("state")
            .insert(txn, "path", "elsewhere.ipynb");
    });
    assert!(send(&mut guard, &room, &path, Capabilities::ALL).is_err());
    let document_id = peer_change(&room, |txn| {
        txn.get_or_insert_map("state")
            .insert(txn, "document_id", "json:notebook:x");
    });
    assert!(send(&mut guard, &room, &document_id, editor()).is_ok());
    // JupyterLab's client marks the notebook unsaved after each change it makes.
    let dirty = peer_change(&room, |txn| {
        txn.get_or_insert_map("state").insert(txn, "dirty", true);
    });
    assert!(send(&mut guard, &room, &dirty, viewer()).is_err());
    assert!(send(&mut guard, &room, &dirty, editor()).is_ok());
    let elsewhere = peer_change(&room, |txn| {
        txn.get_or_insert_text("secret").push(txn, "x");
    });
    assert!(send(&mut guard, &room, &elsewhere, Capabilities::ALL).is_err());
    assert!(room.transact().get_text("secret").is_none());
    // Garbage is unreadable.
    let garbage = send(&mut guard, &room, &[7, 7, 7], editor()).unwrap_err();
    assert_eq!(garbage.1, Wrong::Unreadable);
}

#[test]
fn what_the_room_already_has_is_no_change() {
    let room = room_doc();
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    let typing = peer_change(&room, |txn| source(txn, 0).push(txn, "2"));
    assert!(send(&mut guard, &room, &typing, editor())
        .unwrap()
        .is_some());
    // Sent again (by anyone, a watcher too): nothing new, nothing refused.
    assert_eq!(send(&mut guard, &room, &typing, editor()), Ok(None));
    assert_eq!(send(&mut guard, &room, &typing, viewer()), Ok(None));
    let whole = room
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    assert_eq!(send(&mut guard, &room, &whole, viewer()), Ok(None));
    assert_eq!(send(&mut guard, &room, &whole, editor()), Ok(None));
}

/// A client that was offline while the server replaced its own fields (a save writes
/// `state.hash`) reconnects with its whole document: the delete set names server items
/// already deleted, and its own offline edits must still land.
#[test]
fn a_reconnecting_client_with_offline_edits_is_not_refused() {
    let room = room_doc();
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    let client = copy_of(&room);
    // The server saves twice meanwhile (each replaces state.hash).
    for hash in ["h1", "h2"] {
        let delta = {
            let mut txn = room.transact_mut();
            txn.get_or_insert_map("state")
                .insert(&mut txn, "hash", hash);
            txn.encode_update_v1()
        };
        guard.room_changed(&delta);
    }
    // The client had seen the first save, then went offline and typed.
    let first_save = room
        .transact()
        .encode_state_as_update_v1(&client.transact().state_vector());
    client
        .transact_mut()
        .apply_update(Update::decode_v1(&first_save).unwrap())
        .unwrap();
    {
        let mut txn = client.transact_mut();
        source(&txn, 1).push(&mut txn, " offline");
    }
    let step2 = client
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    for caps in [editor(), Capabilities::ALL] {
        let room = copy_of(&room);
        let mut guard = UpdateGuard::new(DocumentKind::Notebook);
        let analysis = send(&mut guard, &room, &step2, caps).unwrap().unwrap();
        assert_eq!(analysis.fields, vec![Field::Cell("source".into())]);
        assert_eq!(notebook(&room).cells[1].source, "# notes offline");
    }
    // Judged by the guard that had followed the room all along, too.
    assert!(send(&mut guard, &room, &step2, editor()).unwrap().is_some());
    assert_eq!(notebook(&room).cells[1].source, "# notes offline");
}

#[test]
fn client_ids_above_53_bits_are_unreadable() {
    let room = room_doc();
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    let client = copy_of(&room).client_id().get();
    let alias = client + (1 << 53);
    // One struct: a string appended to the first cell's source, under the aliased client id.
    let mut update = Vec::new();
    var(&mut update, 1);
    var(&mut update, 1);
    var(&mut update, alias);
    var(&mut update, 0);
    update.push(4);
    var(&mut update, 1); // parent: a root by name
    var(&mut update, 5);
    update.extend_from_slice(b"state");
    var(&mut update, 1);
    update.push(b'x');
    var(&mut update, 0);
    let refusal = send(&mut guard, &room, &update, editor()).unwrap_err();
    assert_eq!(refusal.1, Wrong::Unreadable, "{refusal:?}");
    assert!(refusal.0.contains("2^53"), "{refusal:?}");
}

/// An update yrs applies only in part (a valid struct, then one whose parent is not a type)
/// leaves nothing behind: not in the room, not in the shadow the next update is judged on.
#[test]
fn a_half_applicable_update_changes_nothing() {
    let room = room_doc();
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    let peer = copy_of(&room);
    let valid = {
        let mut txn = peer.transact_mut();
        source(&txn, 0).push(&mut txn, "\nimport os; os.system('evil')");
        txn.encode_update_v1()
    };
    // The same client's next struct names a string item (not a type) as its parent.
    let (client, clock) = {
        let txn = peer.transact();
        let sv = txn.state_vector();
        let c = peer.client_id();
        (c.get(), sv.get(&c))
    };
    let text_item = {
        let parsed = wire::read(&valid, &["cells", "meta", "state"]).unwrap();
        (parsed.structs[0].client, parsed.structs[0].clock)
    };
    let mut bad = Vec::new();
    var(&mut bad, 1);
    var(&mut bad, 1);
    var(&mut bad, client);
    var(&mut bad, clock as u64);
    bad.push(0x20 | 4); // explicit parent, with a key
    var(&mut bad, 0); // parent by id
    var(&mut bad, text_item.0);
    var(&mut bad, text_item.1 as u64);
    var(&mut bad, 1);
    bad.push(b'k');
    var(&mut bad, 1);
    bad.push(b'x');
    var(&mut bad, 0);
    let both = yrs::merge_updates_v1([valid.clone(), bad]).unwrap();
    let before = room
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let verdict = send(&mut guard, &room, &both, editor());
    if verdict.is_err() {
        let after = room
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        assert_eq!(before, after, "a refused update changed the room");
        assert_eq!(notebook(&room).cells[0].source, "x = 1");
    }
    // Either way the shadow follows the room: an honest edit is judged on what the room has.
    let honest = peer_change(&room, |txn| source(txn, 1).push(txn, "!"));
    assert!(send(&mut guard, &room, &honest, editor())
        .unwrap()
        .is_some());
    let sv = room.transact().state_vector();
    let shadow_sv = guard.shadow.as_ref().unwrap().doc.transact().state_vector();
    assert_eq!(sv, shadow_sv);
}

/// An update that builds on something the room does not have would stay pending in yrs and
/// be integrated when someone else sends the missing piece: it is answered `conflict` and
/// never lands, whoever completes it.
#[test]
fn an_update_with_missing_dependencies_never_lands_later() {
    let room = room_doc();
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    let attacker = copy_of(&room);
    let first = {
        let mut txn = attacker.transact_mut();
        source(&txn, 0).push(&mut txn, "a");
        txn.encode_update_v1()
    };
    let second = {
        let mut txn = attacker.transact_mut();
        txn.get_or_insert_map("state")
            .insert(&mut txn, "kernel", "forged");
        txn.encode_update_v1()
    };
    let refusal = send(&mut guard, &room, &second, editor()).unwrap_err();
    assert_eq!(refusal.1, Wrong::ForeignHistory);
    assert!(send(&mut guard, &room, &first, editor()).unwrap().is_some());
    let state = room.transact().get_map("state").unwrap();
    assert!(state.get(&room.transact(), "kernel").is_none());
}

#[test]
fn a_moved_cell_keeps_its_own_outputs_and_nothing_else() {
    let room = room_doc();
    // JupyterLab moves a cell by deleting it and inserting a copy with the same id.
    let copy_cell = |txn: &mut yrs::TransactionMut, outputs: &str, count: i64| {
        let cells = txn.get_array("cells").unwrap();
        cells.remove(txn, 0);
        let moved = cells.insert(txn, 1, yrs::MapPrelim::default());
        moved.insert(txn, "cell_type", "code");
        moved.insert(txn, "id", "c1");
        moved.insert(txn, "source", yrs::TextPrelim::new("x = 1"));
        moved.insert(txn, "metadata", yrs::MapPrelim::default());
        moved.insert(txn, "execution_count", count);
        let list = moved.insert(txn, "outputs", yrs::ArrayPrelim::default());
        let value: serde_json::Value = serde_json::from_str(outputs).unwrap();
        list.push_back(txn, crate::notebook::json_to_any(&value));
    };
    let honest = peer_change(&room, |txn| {
        copy_cell(
            txn,
            r#"{"output_type": "stream", "name": "stdout", "text": "hi\n"}"#,
            1,
        )
    });
    let forged = peer_change(&room, |txn| {
        copy_cell(
            txn,
            r#"{"output_type": "display_data", "metadata": {}, "data": {"text/html": "<script>x</script>"}}"#,
            42,
        )
    });
    let moved = copy_of(&room);
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    assert!(send(&mut guard, &moved, &honest, editor())
        .unwrap()
        .is_some());
    let nb = notebook(&moved);
    assert_eq!(nb.cells[1].id, "c1");
    assert_eq!(nb.cells[1].execution_count, serde_json::json!(1));
    assert_eq!(nb.cells[1].outputs.len(), 1);
    let carried = copy_of(&room);
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    assert!(send(&mut guard, &carried, &forged, editor())
        .unwrap()
        .is_some());
    let nb = notebook(&carried);
    assert_eq!(nb.cells[1].id, "c1");
    assert_eq!(nb.cells[1].source, "x = 1");
    assert_eq!(nb.cells[1].execution_count, serde_json::Value::Null);
    assert!(nb.cells[1].outputs.is_empty(), "{:?}", nb.cells[1].outputs);
    // Someone who may run code may carry outputs.
    let run = copy_of(&room);
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    assert!(send(&mut guard, &run, &forged, runner()).unwrap().is_some());
    assert_eq!(
        notebook(&run).cells[1].execution_count,
        serde_json::json!(42)
    );
}

#[test]
fn changes_that_make_a_cell_unreadable_are_refused() {
    let room = room_doc();
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    let retype = peer_change(&room, |txn| {
        cell(txn, 1).insert(txn, "cell_type", "banana");
    });
    assert!(send(&mut guard, &room, &retype, Capabilities::ALL).is_err());
    let no_source = peer_change(&room, |txn| {
        cell(txn, 1).remove(txn, "source");
    });
    assert!(send(&mut guard, &room, &no_source, Capabilities::ALL).is_err());
    let not_a_cell = peer_change(&room, |txn| {
        txn.get_array("cells")
            .unwrap()
            .push_back(txn, "just a string");
    });
    assert!(send(&mut guard, &room, &not_a_cell, Capabilities::ALL).is_err());
    assert_eq!(notebook(&room).cells.len(), 2);
    assert_eq!(
        room.transact()
            .get_array("cells")
            .unwrap()
            .len(&room.transact()),
        2
    );
    // A legitimate change of type (markdown → raw) is fine.
    let raw = peer_change(&room, |txn| {
        cell(txn, 1).insert(txn, "cell_type", "raw");
    });
    assert!(send(&mut guard, &room, &raw, editor()).unwrap().is_some());
}

/// An update whose items each build on the next one (placing them needs the whole chain) is
/// judged in time proportional to its size (an earlier guard took cubic time here).
#[test]
fn long_chains_of_neighbours_are_judged() {
    let room = room_doc();
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    let source_item = {
        let txn = room.transact();
        let source = match cell_map(&txn, {
            let cells = txn.get_array("cells").unwrap();
            match cells.get(&txn, 0) {
                Some(yrs::Out::YMap(m)) => branch_item(m.as_ref()).unwrap(),
                _ => panic!(),
            }
        })
        .unwrap()
        .get(&txn, "source")
        {
            Some(yrs::Out::YText(t)) => t,
            _ => panic!(),
        };
        branch_item(source.as_ref()).unwrap()
    };
    let n: u32 = 20_000;
    let client: u64 = 987_654;
    let mut update = Vec::new();
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
    // Each struct's right origin comes later in the same update: yrs integrates them in its own
    // order; whatever it does, the verdict is about what it did.
    match send(&mut guard, &room, &update, editor()) {
        Ok(Some(analysis)) => assert_eq!(analysis.fields, vec![Field::Cell("source".into())]),
        Ok(None) => {}
        Err(refusal) => assert_ne!(refusal.1, Wrong::Forbidden, "{refusal:?}"),
    }
}

#[test]
fn a_text_document_allows_its_content_only() {
    let doc = crate::notebook::new_doc();
    {
        let mut txn = doc.transact_mut();
        txn.get_or_insert_text("source").push(&mut txn, "hello");
        txn.get_or_insert_map("state")
            .insert(&mut txn, "path", "a.txt");
    }
    let mut guard = UpdateGuard::new(DocumentKind::Text);
    let typing = peer_change(&doc, |txn| {
        txn.get_or_insert_text("source").push(txn, " world")
    });
    assert_eq!(
        send(&mut guard, &doc, &typing, editor())
            .unwrap()
            .unwrap()
            .fields,
        vec![Field::FileContent]
    );
    let cells = peer_change(&doc, |txn| {
        txn.get_or_insert_array("cells").push_back(txn, 1);
    });
    assert!(send(&mut guard, &doc, &cells, editor()).is_err());
}

/// An update inserting and deleting millions of characters at once (the earlier guard walked
/// the deletion character by character and stalled the room for seconds) is judged whole, and
/// the room takes edits after it.
#[test]
fn a_huge_insert_and_delete_in_one_update_is_judged_whole() {
    let room = room_doc();
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    let text: String = "x".repeat(4 << 20);
    let huge = peer_change(&room, |txn| {
        let source = source(txn, 1);
        source.insert(txn, 0, &text);
        source.remove_range(txn, 0, text.len() as u32);
    });
    let started = std::time::Instant::now();
    let verdict = send(&mut guard, &room, &huge, editor());
    eprintln!(
        "judged a {} byte insert-and-delete in {:?}",
        huge.len(),
        started.elapsed()
    );
    assert!(verdict.is_ok(), "{verdict:?}");
    assert_eq!(notebook(&room).cells[1].source, "# notes");
    let typing = peer_change(&room, |txn| source(txn, 1).push(txn, "!"));
    assert!(send(&mut guard, &room, &typing, editor())
        .unwrap()
        .is_some());
    assert_eq!(notebook(&room).cells[1].source, "# notes!");
}

/// A room holding `n` code cells `c0..`, each with one output and an execution count.
fn big_room(n: usize) -> Doc {
    let cells: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({"cell_type": "code", "id": format!("c{i}"), "metadata": {},
                "source": format!("x = {i}"), "execution_count": i + 1,
                "outputs": [{"output_type": "stream", "name": "stdout", "text": format!("{i}\n")}]})
        })
        .collect();
    let file =
        serde_json::json!({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5});
    let nb = Notebook::from_ipynb(file.to_string().as_bytes()).unwrap();
    copy_of(&nb.to_doc())
}

#[test]
fn an_update_over_tens_of_thousands_of_cells_is_judged_whole() {
    // Deleting every cell of a big notebook at once (select all, delete): each deleted cell is
    // listed once, and the lock check sees them all.
    let room = big_room(20_000);
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    let clear = peer_change(&room, |txn| {
        let cells = txn.get_array("cells").unwrap();
        cells.remove_range(txn, 0, 20_000);
    });
    let analysis = send(&mut guard, &room, &clear, editor()).unwrap().unwrap();
    assert_eq!(analysis.deleted_cells.len(), 20_000);
    assert_eq!(analysis.cells.len(), 20_000);
    assert!(notebook(&room).cells.is_empty());

    // Reversing 4,000 cells at once (JupyterLab moves by delete and re-insert with the same id):
    // each keeps its own outputs; a new cell inserted with outputs beside them gets none.
    let room = big_room(4_000);
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    let moved = peer_change(&room, |txn| {
        let cells = txn.get_array("cells").unwrap();
        let copies: Vec<serde_json::Value> = (0..4_000)
            .rev()
            .map(|i| {
                let Some(yrs::Out::YMap(map)) = cells.get(txn, i) else {
                    panic!()
                };
                crate::notebook::out_to_json(txn, &yrs::Out::YMap(map))
            })
            .chain(std::iter::once(serde_json::json!({
                "cell_type": "code", "id": "new", "metadata": {}, "source": "x = 7",
                "execution_count": 8,
                "outputs": [{"output_type": "stream", "name": "stdout", "text": "7\n"}]
            })))
            .collect();
        cells.remove_range(txn, 0, 4_000);
        for (at, copy) in copies.iter().enumerate() {
            let map = cells.insert(txn, at as u32, yrs::MapPrelim::default());
            for (key, value) in copy.as_object().unwrap() {
                match (key.as_str(), value) {
                    ("source", serde_json::Value::String(s)) => {
                        map.insert(txn, "source", yrs::TextPrelim::new(s.as_str()));
                    }
                    ("outputs", serde_json::Value::Array(outputs)) => {
                        let list = map.insert(txn, "outputs", yrs::ArrayPrelim::default());
                        for output in outputs {
                            list.push_back(txn, crate::notebook::json_to_any(output));
                        }
                    }
                    (key, value) => {
                        map.insert(txn, key, crate::notebook::json_to_any(value));
                    }
                }
            }
        }
    });
    assert!(send(&mut guard, &room, &moved, editor()).unwrap().is_some());
    let nb = notebook(&room);
    assert_eq!(nb.cells.len(), 4_001);
    for (at, cell) in nb.cells[..4_000].iter().enumerate() {
        let i = 3_999 - at;
        assert_eq!(cell.id, format!("c{i}"));
        assert_eq!(cell.execution_count, serde_json::json!(i + 1));
        assert_eq!(cell.outputs.len(), 1, "{}", cell.id);
    }
    assert_eq!(nb.cells[4_000].id, "new");
    assert_eq!(nb.cells[4_000].execution_count, serde_json::Value::Null);
    assert!(nb.cells[4_000].outputs.is_empty());
}
