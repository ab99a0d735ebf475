//! The update guard under attack. Each test sends what an outside review found could carry a
//! forbidden change past the guard: hand-made Yjs updates (`quire_tests::forge`) through an
//! editor's live-share link (or a watch-only one), then looks where people would: the document
//! of the owner, who stays connected, that of someone who joins afterwards, and the file a save
//! writes; never the server's answer. Each forged update is first applied to a plain yrs copy of
//! the room's document, to show it does make the forbidden change when nothing stops it.
//! The other side: honest clients (JupyterLab's own JS client coming back online, a client
//! re-sending what the room already has, a watcher resyncing) are never refused.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use collab::{protocol, Cell, Notebook};
use quire_tests::forge::{self, Block, Content, DocState, Id, Item, Parent, Update, ALIAS};
use quire_tests::{read_notebook, repo_root, TestServer, YClient, TOKEN};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use yrs::{Array, ArrayRef, Doc, Map, MapRef, Out, ReadTxn, Text, TextRef, Transact, WriteTxn};

const NB: &str = "nb.ipynb";
const WAIT: Duration = Duration::from_secs(10);

fn stream(text: &str) -> Value {
    json!({"output_type": "stream", "name": "stdout", "text": text})
}

fn html(markup: &str) -> Value {
    json!({"output_type": "display_data", "data": {"text/html": markup}, "metadata": {}})
}

/// Two code cells that ran (each with an output and a count) and a markdown cell.
fn notebook() -> Vec<u8> {
    serde_json::to_vec_pretty(&json!({
        "cells": [
            {"cell_type": "code", "id": "cell-0", "metadata": {}, "source": "x = 1\nprint(x)",
             "outputs": [stream("1\n")], "execution_count": 1},
            {"cell_type": "code", "id": "cell-1", "metadata": {}, "source": "y = x + 1\ny",
             "outputs": [{"output_type": "execute_result", "data": {"text/plain": "2"},
                          "metadata": {}, "execution_count": 2}],
             "execution_count": 2},
            {"cell_type": "markdown", "id": "cell-2", "metadata": {}, "source": "# Notes"}
        ],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5
    }))
    .unwrap()
}

/// A room with its owner connected.
struct Room {
    server: TestServer,
    file_id: String,
    owner: YClient,
    saves: u64,
}

/// What one place holds: a notebook and (for documents) the `state` map.
struct View {
    place: &'static str,
    notebook: Notebook,
    state: Value,
}

impl View {
    fn of(place: &'static str, client: &YClient) -> View {
        View {
            place,
            notebook: client.notebook(),
            state: client.state(),
        }
    }

    /// Everything, as text: where a forged marker would show.
    fn text(&self) -> String {
        format!("{} {}", self.notebook.to_file_json(), self.state)
    }

    fn cell(&self, id: &str) -> &Cell {
        self.notebook
            .cells
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("{}: no cell {id}", self.place))
    }
}

impl Room {
    async fn open() -> Room {
        let server = TestServer::start(&[(NB, &notebook())]);
        let (file_id, _) = server.session(NB);
        let mut owner = YClient::join(&server, NB).await;
        assert!(owner.settle(WAIT).await);
        Room {
            server,
            file_id,
            owner,
            saves: 0,
        }
    }

    /// A live-share link with `role`, opened: the guest cookie.
    fn link(&self, role: &str) -> String {
        let (status, reply) = self.server.http(
            "POST",
            &format!("/api/sharing/{}/links", self.file_id),
            Some(&json!({ "role": role }).to_string()),
        );
        assert_eq!(status, 201, "{reply}");
        let link: Value = serde_json::from_str(&reply).unwrap();
        let (status, body, cookie) = self
            .server
            .redeem_link(link["token"].as_str().unwrap(), "Mallory");
        assert_eq!(status, 200, "{body}");
        cookie.expect("a guest cookie").cookies()
    }

    fn room_url(&self) -> String {
        let (_, session) = self.server.session(NB);
        format!(
            "ws://127.0.0.1:{}/api/collaboration/room/json:notebook:{}?sessionId={session}",
            self.server.port, self.file_id
        )
    }

    async fn guest(&self, cookie: &str) -> YClient {
        let mut client = YClient::connect_with_cookie(&self.room_url(), cookie).await;
        client.sync().await;
        client
    }

    /// Someone holding an editor link (edit and save, not execute).
    async fn editor(&self) -> YClient {
        let cookie = self.link("editor");
        self.guest(&cookie).await
    }

    async fn save(&mut self) {
        self.saves += 1;
        let status = self.owner.save(self.saves).await;
        assert_eq!(status, "success", "the owner's save");
    }

    /// What the owner's document, a newcomer's document and the saved file hold now.
    /// The owner appends `text` to cell-2 as an honest client, and waits for the echo.
    async fn owner_appends(&mut self, text: &str) {
        self.owner
            .edit_and_wait_echo(|txn| {
                collab::notebook::cell_source(txn, 2)
                    .unwrap()
                    .push(txn, text);
            })
            .await;
    }

    async fn views(&mut self) -> Vec<View> {
        assert!(
            self.owner.settle(WAIT).await,
            "the owner lost the connection ({:?}): one client's update must not end the room for others",
            self.owner.closed
        );
        let owner = View::of("the owner's document", &self.owner);
        let newcomer = YClient::join(&self.server, NB).await;
        let newcomer = View::of("a newcomer's document", &newcomer);
        self.save().await;
        let file = View {
            place: "the saved file",
            notebook: read_notebook(&self.server.path(NB)),
            state: Value::Null,
        };
        vec![owner, newcomer, file]
    }
}

/// Sends a hand-made update and waits until the room has dealt with it.
async fn send_forged(attacker: &mut YClient, update: &Update) {
    attacker
        .send(protocol::encode_sync_update(&update.encode()))
        .await;
    let answered = attacker.settle(WAIT).await;
    eprintln!(
        "forged update handled: {} (RAW: {:?}, closed: {:?})",
        if answered {
            "the connection stays"
        } else {
            "the connection was closed"
        },
        attacker.raw,
        attacker.closed
    );
}

fn assert_nowhere(views: &[View], marker: &str) {
    let found: Vec<String> = views
        .iter()
        .filter(|v| v.text().contains(marker))
        .map(|v| format!("{}: {}", v.place, v.text()))
        .collect();
    assert!(
        found.is_empty(),
        "the forged change {marker:?} is in {} of {} places:\n{}",
        found.len(),
        views.len(),
        found.join("\n")
    );
}

fn cell_at<T: ReadTxn>(txn: &T, index: u32) -> MapRef {
    match txn.get_array("cells").unwrap().get(txn, index) {
        Some(Out::YMap(cell)) => cell,
        other => panic!("cell {index}: {other:?}"),
    }
}

fn text_in<T: ReadTxn>(txn: &T, map: &MapRef, key: &str) -> TextRef {
    match map.get(txn, key) {
        Some(Out::YText(text)) => text,
        other => panic!("{key}: {other:?}"),
    }
}

fn array_in<T: ReadTxn>(txn: &T, map: &MapRef, key: &str) -> ArrayRef {
    match map.get(txn, key) {
        Some(Out::YArray(array)) => array,
        other => panic!("{key}: {other:?}"),
    }
}

fn map_in<T: ReadTxn>(txn: &T, map: &MapRef, key: &str) -> MapRef {
    match map.get(txn, key) {
        Some(Out::YMap(inner)) => inner,
        other => panic!("{key}: {other:?}"),
    }
}

fn notebook_of(doc: &Doc) -> Notebook {
    Notebook::from_doc(&doc.transact())
}

fn state_of(doc: &Doc) -> Value {
    let txn = doc.transact();
    match txn.get_map("state") {
        Some(map) => collab::notebook::out_to_json(&txn, &Out::YMap(map)),
        None => Value::Null,
    }
}

fn cell_of(notebook: &Notebook, id: &str) -> Cell {
    notebook.cells.iter().find(|c| c.id == id).unwrap().clone()
}

/// A client number no one uses, for hand-made items.
fn fresh_client(n: u64) -> u64 {
    0x7e57_0000 + n
}

// ---------------------------------------------------------------------------------------------
// 1. Client ids above 2^53. yrs keeps a client id's low 53 bits, so `X + 2^53` is client X to
//    yrs; the guard of old kept all 64 and saw a new client. A decoy struct of the alias,
//    covering X's clocks from `target` on and placed where an editor may write, made the guard
//    believe the next struct's left neighbour (named by the alias) was the decoy; yrs, which
//    already holds those clocks of X, skips the decoy and puts the struct after `target`.
//    In a build with debug assertions (what `cargo test` builds), decoding such an id trips an
//    assertion inside yrs (`ClientID::new`) and whatever decodes it panics; release builds mask
//    the id. Both must hold: build the server with
//    `--config 'profile.dev.package.yrs.debug-assertions=false'` and point QUIRE_BIN at it to
//    try the release behaviour.
// ---------------------------------------------------------------------------------------------

/// `content` right after `target`, named through the alias of `target`'s client.
fn aliased_insert(state: &DocState, target: Id, decoy_in: &Parent, content: Content) -> Update {
    let alias = target.client + ALIAS;
    let end = state.clock(target.client);
    assert!(end > target.clock, "{target:?} is not in the document");
    let decoy = Item::placed(
        Id::new(alias, target.clock),
        decoy_in.clone(),
        None,
        Content::Str("d".repeat((end - target.clock) as usize)),
    );
    let forged = Item::between(
        Id::new(alias, end),
        Some(target.with_client(alias)),
        None,
        content,
    );
    Update::new().item(decoy).item(forged)
}

/// Deletes `target` through the alias of its client.
fn aliased_delete(state: &DocState, target: Id, decoy_in: &Parent) -> Update {
    let alias = target.client + ALIAS;
    let end = state.clock(target.client);
    let decoy = Item::placed(
        Id::new(alias, target.clock),
        decoy_in.clone(),
        None,
        Content::Str("d".repeat((end - target.clock) as usize)),
    );
    Update::new()
        .item(decoy)
        .delete(target.with_client(alias), 1)
}

/// What `update` does to a plain copy of `doc` once yrs has dropped the alias's high bit (yrs
/// built with debug assertions panics on an id above 2^53, so the copy gets the masked form).
fn unaliased_effect(doc: &Doc, update: &Update, client: u64) -> Doc {
    let copy = forge::replica(doc);
    let plain = update.rename_client(client + ALIAS, client);
    forge::apply(&copy, &plain.encode()).expect("the unaliased update applies");
    copy
}

/// The ids an alias attack aims at, read from an up-to-date client document.
struct Targets {
    state: DocState,
    source0: Parent,
    execution_count0: Id,
    output0: Id,
    path: Id,
    last_char1: Id,
}

fn targets(doc: &Doc) -> Targets {
    let state = DocState::of(doc);
    let txn = doc.transact();
    let cell0 = cell_at(&txn, 0);
    let cell1 = cell_at(&txn, 1);
    let source1 = text_in(&txn, &cell1, "source");
    let last = source1.len(&txn) - 1;
    Targets {
        source0: forge::branch(&text_in(&txn, &cell0, "source")),
        execution_count0: state
            .map_entry(&forge::branch(&cell0), "execution_count")
            .expect("cell-0's execution_count entry"),
        output0: forge::element(&txn, &array_in(&txn, &cell0, "outputs"), 0),
        path: state
            .map_entry(&Parent::Root("state".into()), "path")
            .expect("the state.path entry"),
        last_char1: forge::element(&txn, &source1, last),
        state,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_client_id_sets_execution_count() {
    let mut room = Room::open().await;
    let mut mallory = room.editor().await;
    let t = targets(&mallory.doc);
    let update = aliased_insert(
        &t.state,
        t.execution_count0,
        &t.source0,
        Content::json(&[json!(99)]),
    );
    let effect = unaliased_effect(&mallory.doc, &update, t.execution_count0.client);
    assert_eq!(
        cell_of(&notebook_of(&effect), "cell-0").execution_count,
        json!(99)
    );

    send_forged(&mut mallory, &update).await;
    for view in room.views().await {
        assert_eq!(
            view.cell("cell-0").execution_count,
            json!(1),
            "{}",
            view.place
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_client_id_adds_an_html_output() {
    let mut room = Room::open().await;
    let mut mallory = room.editor().await;
    let t = targets(&mallory.doc);
    let marker = "<script>FORGED-1b</script>";
    let update = aliased_insert(
        &t.state,
        t.output0,
        &t.source0,
        Content::json(&[html(marker)]),
    );
    let effect = unaliased_effect(&mallory.doc, &update, t.output0.client);
    assert_eq!(
        cell_of(&notebook_of(&effect), "cell-0").outputs,
        vec![stream("1\n"), html(marker)]
    );

    send_forged(&mut mallory, &update).await;
    let views = room.views().await;
    assert_nowhere(&views, "FORGED-1b");
    for view in &views {
        assert_eq!(
            view.cell("cell-0").outputs,
            vec![stream("1\n")],
            "{}",
            view.place
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_client_id_sets_state_path() {
    let mut room = Room::open().await;
    let mut mallory = room.editor().await;
    let t = targets(&mallory.doc);
    let update = aliased_insert(
        &t.state,
        t.path,
        &t.source0,
        Content::json(&[json!("FORGED-1c.ipynb")]),
    );
    let effect = unaliased_effect(&mallory.doc, &update, t.path.client);
    assert_eq!(state_of(&effect)["path"], "FORGED-1c.ipynb");

    send_forged(&mut mallory, &update).await;
    let views = room.views().await;
    assert_nowhere(&views, "FORGED-1c");
    for view in &views[..2] {
        assert_eq!(view.state["path"], NB, "{}", view.place);
    }
    assert!(!room.server.path("FORGED-1c.ipynb").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_client_id_deletes_outputs() {
    let mut room = Room::open().await;
    let mut mallory = room.editor().await;
    let t = targets(&mallory.doc);
    let update = aliased_delete(&t.state, t.output0, &t.source0);
    let effect = unaliased_effect(&mallory.doc, &update, t.output0.client);
    assert!(cell_of(&notebook_of(&effect), "cell-0").outputs.is_empty());

    send_forged(&mut mallory, &update).await;
    for view in room.views().await {
        assert_eq!(
            view.cell("cell-0").outputs,
            vec![stream("1\n")],
            "{}",
            view.place
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_client_id_types_into_a_cell_someone_else_holds() {
    let mut room = Room::open().await;
    let mut mallory = room.editor().await;
    room.owner
        .request(json!({"type": "lock", "cell_id": "cell-1", "request_id": 9001}))
        .await;
    let granted = room
        .owner
        .wait_raw(WAIT, |m| m["type"] == "lock")
        .await
        .expect("an answer to the lock");
    assert_eq!(granted["status"], "ok", "{granted}");
    assert!(
        mallory
            .pump_until(WAIT, |c| c.state()["locks"]["cell-1"]["edit"].is_object())
            .await
    );
    assert!(mallory.settle(WAIT).await);
    let t = targets(&mallory.doc);
    let update = aliased_insert(
        &t.state,
        t.last_char1,
        &t.source0,
        Content::Str(" # FORGED-1e".into()),
    );
    let effect = unaliased_effect(&mallory.doc, &update, t.last_char1.client);
    assert_eq!(
        cell_of(&notebook_of(&effect), "cell-1").source,
        "y = x + 1\ny # FORGED-1e"
    );

    send_forged(&mut mallory, &update).await;
    let views = room.views().await;
    assert_nowhere(&views, "FORGED-1e");
    for view in &views {
        assert_eq!(view.cell("cell-1").source, "y = x + 1\ny", "{}", view.place);
    }
}

// ---------------------------------------------------------------------------------------------
// 2. An origin in garbage-collected content. When the left neighbour an item names is a GC'd
//    block, yrs takes the parent from the right neighbour; the guard of old took it from where
//    the GC'd item once was.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_in_collected_garbage_puts_a_stream_output_in_a_cell() {
    let mut room = Room::open().await;
    let mut mallory = room.editor().await;
    // Something GC'd that once was where an editor may write: an entry of a map that lived in
    // cell-0's metadata and was removed (yrs drops a deleted map's entries whole).
    let entry = collected_last_clock(&mut mallory, 0).await;
    let output1 = {
        let txn = mallory.doc.transact();
        forge::element(&txn, &array_in(&txn, &cell_at(&txn, 1), "outputs"), 0)
    };
    let forged = stream("FORGED-2\n");
    let update = Update::new().item(Item::between(
        Id::new(fresh_client(2), 0),
        Some(entry),
        Some(output1),
        Content::json(std::slice::from_ref(&forged)),
    ));
    let copy = forge::replica(&mallory.doc);
    forge::apply(&copy, &update.encode()).unwrap();
    assert_eq!(
        cell_of(&notebook_of(&copy), "cell-1").outputs[0],
        forged,
        "yrs puts the item in cell-1's outputs"
    );

    send_forged(&mut mallory, &update).await;
    let views = room.views().await;
    assert_nowhere(&views, "FORGED-2");
    for view in &views {
        assert_eq!(view.cell("cell-1").outputs.len(), 1, "{}", view.place);
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Parent and key from different neighbours. When the left neighbour has no map key, yrs takes
//    the parent from the left and the key from the right; the guard of old looked at the left
//    only. The left: an item put in the `state` root as a list element (no key; any `state` key
//    but the server's was an editor's); the right: an entry `kernel` of the notebook metadata.
// ---------------------------------------------------------------------------------------------

struct KernelForgery {
    /// A list element of `state` (no key).
    left: Item,
    /// `metadata.kernel` of the notebook.
    right: Item,
    /// Left and right neighbours those two: in `state`, under the key `kernel`.
    forged: Item,
}

fn kernel_forgery(doc: &Doc, client: u64, marker: &str) -> KernelForgery {
    let metadata = {
        let txn = doc.transact();
        let meta = txn.get_map("meta").unwrap();
        forge::branch(&map_in(&txn, &meta, "metadata"))
    };
    let left = Item::placed(
        Id::new(client, 1),
        Parent::Root("state".into()),
        None,
        Content::json(&[json!("decoy")]),
    );
    let right = Item::placed(
        Id::new(client, 0),
        metadata,
        Some("kernel"),
        Content::json(&[json!("harmless")]),
    );
    let forged = Item::between(
        Id::new(client, 2),
        Some(left.id),
        Some(right.id),
        Content::json(&[json!({"id": marker, "name": "python3", "status": "idle"})]),
    );
    KernelForgery {
        left,
        right,
        forged,
    }
}

fn assert_kernel_not_forged(views: &[View], marker: &str) {
    assert_nowhere(views, marker);
    for view in &views[..2] {
        assert!(
            view.state["kernel"].is_null(),
            "{}: state.kernel is {}",
            view.place,
            view.state["kernel"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_and_key_from_different_neighbours_set_state_kernel() {
    let mut room = Room::open().await;
    let mut mallory = room.editor().await;
    let f = kernel_forgery(&mallory.doc, fresh_client(3), "FORGED-3a");
    let update = Update::new().item(f.right).item(f.left).item(f.forged);
    let copy = forge::replica(&mallory.doc);
    forge::apply(&copy, &update.encode()).unwrap();
    assert_eq!(state_of(&copy)["kernel"]["id"], "FORGED-3a");

    send_forged(&mut mallory, &update).await;
    assert_kernel_not_forged(&room.views().await, "FORGED-3a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgery_sent_before_its_left_neighbour_never_lands() {
    let mut room = Room::open().await;
    let mut mallory = room.editor().await;
    let f = kernel_forgery(&mallory.doc, fresh_client(4), "FORGED-3b");
    let right = Update::new().item(f.right);
    // Sent before the item it builds on: yrs keeps it pending until that arrives.
    let early = Update::new().item(f.forged);
    let left = Update::new().item(f.left);
    let copy = forge::replica(&mallory.doc);
    for part in [&right, &early, &left] {
        forge::apply(&copy, &part.encode()).unwrap();
    }
    assert_eq!(state_of(&copy)["kernel"]["id"], "FORGED-3b");

    send_forged(&mut mallory, &right).await;
    send_forged(&mut mallory, &early).await;
    if mallory.closed.is_none() {
        send_forged(&mut mallory, &left).await;
    }
    // The left neighbour again, from a new connection (as if the first had been closed).
    let mut again = room.editor().await;
    send_forged(&mut again, &left).await;
    assert_kernel_not_forged(&room.views().await, "FORGED-3b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_waiting_for_the_servers_next_write_never_lands() {
    let mut room = Room::open().await;
    // Saved once: what the server writes at its next save is the new `state.hash`.
    room.save().await;
    let mut mallory = room.editor().await;
    let (next, first_char0) = {
        let state = DocState::of(&mallory.doc);
        let path = state
            .map_entry(&Parent::Root("state".into()), "path")
            .unwrap();
        let txn = mallory.doc.transact();
        let source0 = text_in(&txn, &cell_at(&txn, 0), "source");
        (
            Id::new(path.client, state.clock(path.client)),
            forge::element(&txn, &source0, 0),
        )
    };
    // Its left neighbour is the server's next item (not written yet), its right one a character
    // of cell-0 an editor may type next to.
    let update = Update::new().item(Item::between(
        Id::new(fresh_client(5), 0),
        Some(next),
        Some(first_char0),
        Content::json(&[json!("FORGED-3c")]),
    ));
    // On a copy that writes as the server does, the waiting item becomes state.hash.
    let copy = collab::notebook::new_doc_with_client(next.client);
    let whole = mallory
        .doc
        .transact()
        .encode_state_as_update_v1(&yrs::StateVector::default());
    forge::apply(&copy, &whole).unwrap();
    forge::apply(&copy, &update.encode()).unwrap();
    {
        let mut txn = copy.transact_mut();
        let state = txn.get_or_insert_map("state");
        state.insert(&mut txn, "hash", "a-real-hash");
    }
    forge::apply(&copy, &[0, 0]).unwrap();
    assert_eq!(state_of(&copy)["hash"], "FORGED-3c");

    send_forged(&mut mallory, &update).await;
    // The honest writes it waits for: the server's (a save), then anyone's next edit.
    room.save().await;
    room.owner_appends("\nowner was here").await;
    let views = room.views().await;
    assert_nowhere(&views, "FORGED-3c");
    for view in &views {
        assert!(
            view.cell("cell-2").source.ends_with("owner was here"),
            "{}",
            view.place
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4. A refused update, half applied: its first struct is fine (code appended to a cell), its
//    second names a parent that is not a shared type, and yrs fails there, after integrating the
//    first. The socket was closed, but the first struct stayed in the room's document.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_yrs_rejects_half_way_leaves_nothing_behind() {
    let mut room = Room::open().await;
    let mut mallory = room.editor().await;
    let (last_char0, id_entry0) = {
        let state = DocState::of(&mallory.doc);
        let txn = mallory.doc.transact();
        let cell0 = cell_at(&txn, 0);
        let source0 = text_in(&txn, &cell0, "source");
        (
            forge::element(&txn, &source0, source0.len(&txn) - 1),
            state.map_entry(&forge::branch(&cell0), "id").unwrap(),
        )
    };
    let client = fresh_client(6);
    let hidden = Item::between(
        Id::new(client, 0),
        Some(last_char0),
        None,
        Content::Str("\nimport os; os.system('FORGED-4')".into()),
    );
    let bad = Item::placed(
        Id::new(client, hidden.len()),
        Parent::Item(id_entry0),
        None,
        Content::Str("x".into()),
    );
    let update = Update::new().item(hidden).item(bad);
    let copy = forge::replica(&mallory.doc);
    assert!(forge::apply(&copy, &update.encode()).is_err());
    assert!(
        cell_of(&notebook_of(&copy), "cell-0")
            .source
            .contains("FORGED-4"),
        "yrs keeps the first struct of an update it rejects"
    );

    send_forged(&mut mallory, &update).await;
    let views = room.views().await;
    assert_nowhere(&views, "FORGED-4");
    for view in &views {
        assert_eq!(
            view.cell("cell-0").source,
            "x = 1\nprint(x)",
            "{}",
            view.place
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Moving a cell: JupyterLab deletes it and inserts a copy with the same id, in one update. An
//    editor may move cells, but not bring outputs or an execution count of their own.
// ---------------------------------------------------------------------------------------------

/// Deletes cell 0 and inserts `moved` after what was cell 1, in one transaction.
fn move_first_cell(txn: &mut yrs::TransactionMut, moved: &Cell) {
    let cells = txn.get_array("cells").unwrap();
    cells.remove(txn, 0);
    collab::notebook::insert_cell(txn, &cells, 1, moved);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_cell_cannot_bring_forged_outputs() {
    let mut room = Room::open().await;
    let mut mallory = room.editor().await;
    let original = mallory.cell("cell-0");
    let mut forged = original.clone();
    forged.outputs = vec![html("<script>FORGED-5</script>")];
    forged.execution_count = json!(99);
    mallory.edit(|txn| move_first_cell(txn, &forged)).await;
    mallory.settle(WAIT).await;

    let views = room.views().await;
    assert_nowhere(&views, "FORGED-5");
    for view in &views {
        let cell = view.cell("cell-0");
        assert!(
            cell.outputs == original.outputs || cell.outputs.is_empty(),
            "{}: outputs {:?}",
            view.place,
            cell.outputs
        );
        assert!(
            cell.execution_count == original.execution_count || cell.execution_count.is_null(),
            "{}: execution_count {}",
            view.place,
            cell.execution_count
        );
    }
}

/// Each cell keeps its own outputs: re-inserted cells do not trade what the cells deleted in the
/// same update held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_two_cells_cannot_swap_their_outputs() {
    let mut room = Room::open().await;
    let mut mallory = room.editor().await;
    let (first, second) = (mallory.cell("cell-0"), mallory.cell("cell-1"));
    let mut swapped = (first.clone(), second.clone());
    swapped.0.outputs = second.outputs.clone();
    swapped.0.execution_count = second.execution_count.clone();
    swapped.1.outputs = first.outputs.clone();
    swapped.1.execution_count = first.execution_count.clone();
    mallory
        .edit(|txn| {
            let cells = txn.get_array("cells").unwrap();
            cells.remove_range(txn, 0, 2);
            collab::notebook::insert_cell(txn, &cells, 0, &swapped.1);
            collab::notebook::insert_cell(txn, &cells, 1, &swapped.0);
        })
        .await;
    mallory.settle(WAIT).await;

    for view in room.views().await {
        for original in [&first, &second] {
            let cell = view.cell(&original.id);
            assert!(
                cell.outputs == original.outputs || cell.outputs.is_empty(),
                "{}: {} has outputs {:?}",
                view.place,
                original.id,
                cell.outputs
            );
            assert!(
                cell.execution_count == original.execution_count || cell.execution_count.is_null(),
                "{}: {} has execution_count {}",
                view.place,
                original.id,
                cell.execution_count
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editor_moving_a_cell_keeps_its_outputs() {
    let mut room = Room::open().await;
    let mut ed = room.editor().await;
    let original = ed.cell("cell-0");
    ed.edit_and_wait_echo(|txn| move_first_cell(txn, &original))
        .await;
    assert!(ed.settle(WAIT).await);
    assert!(
        !ed.raw.iter().any(|r| r.contains("refused")),
        "{:?}",
        ed.raw
    );

    for view in room.views().await {
        let order: Vec<&str> = view.notebook.cells.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(order, ["cell-1", "cell-0", "cell-2"], "{}", view.place);
        assert_eq!(view.cell("cell-0"), &original, "{}", view.place);
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Honest clients are not refused.
// ---------------------------------------------------------------------------------------------

/// tests/js, after checking that `npm ci` has been run there.
fn js_dir() -> PathBuf {
    let dir = repo_root().join("tests/js");
    for package in ["@jupyter/ydoc", "y-websocket", "yjs", "ws", "lib0"] {
        let manifest = dir.join("node_modules").join(package).join("package.json");
        assert!(
            manifest.exists(),
            "{} is missing: run tests/run-all.sh (it runs `npm ci --prefix tests/js`)",
            manifest.display()
        );
    }
    dir
}

/// JupyterLab's JS client (tests/js/jlab_offline.mjs), driven a step at a time.
struct JsClient {
    name: &'static str,
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl JsClient {
    async fn start(name: &'static str, room: &Room, cookie: Option<&str>) -> JsClient {
        let dir = js_dir();
        let (_, session) = room.server.session(NB);
        let node = std::env::var_os("QUIRE_TEST_NODE").unwrap_or_else(|| "node".into());
        let mut command = tokio::process::Command::new(node);
        command
            .current_dir(&dir)
            .arg(dir.join("jlab_offline.mjs"))
            .args([
                "--ws-base",
                &format!("ws://127.0.0.1:{}/", room.server.port),
            ])
            .args(["--room", &format!("json:notebook:{}", room.file_id)])
            .args(["--session-id", &session])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        match cookie {
            Some(cookie) => command.args(["--cookie", cookie]),
            None => command.args(["--token", TOKEN]),
        };
        let mut child = command
            .spawn()
            .expect("node runs (Node.js 18 or later is needed)");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut client = JsClient {
            name,
            child,
            stdin,
            lines,
        };
        let first = client.next().await;
        assert_eq!(first["event"], "synced", "{name}: {first}");
        client
    }

    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{}: no answer within 60 s", self.name))
            .unwrap()
            .unwrap_or_else(|| panic!("{}: the client exited", self.name));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{}: {e}: {line}", self.name))
    }

    async fn ask(&mut self, command: Value) -> Value {
        let mut line = command.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.next().await
    }

    /// Waits until the client's copy shows `check` (what the room sent has arrived).
    async fn wait_for(&mut self, what: &str, check: impl Fn(&Value) -> bool) {
        for _ in 0..100 {
            let dump = self.ask(json!({"cmd": "dump"})).await;
            if check(&dump) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let dump = self.ask(json!({"cmd": "dump"})).await;
        panic!("{}: never saw {what}: {dump}", self.name);
    }

    async fn quit(mut self) {
        let _ = self.stdin.write_all(b"{\"cmd\":\"quit\"}\n").await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterlab_clients_back_online_after_saves_and_a_run_keep_their_offline_edits() {
    let mut room = Room::open().await;
    let cookie = room.link("editor");
    let mut owner_js = JsClient::start("JupyterLab as the owner", &room, None).await;
    let mut guest_js = JsClient::start("JupyterLab as an editor guest", &room, Some(&cookie)).await;

    // While they are connected, the server replaces what only it writes: state.hash at every
    // save, state.kernel and state.executions, a cell's outputs and count at every run.
    for round in 0..2 {
        room.owner_appends(&format!("\nround {round}")).await;
        room.save().await;
    }
    let answer = room.owner.execute("cell-0").await;
    assert_eq!(answer["status"], "queued", "{answer}");
    assert_eq!(
        room.owner.wait_run("cell-0", Duration::from_secs(60)).await,
        "ok"
    );
    room.save().await;
    assert!(room.owner.settle(WAIT).await);
    let hash = room.owner.state()["hash"].clone();
    let count = room.owner.cell("cell-0").execution_count;
    assert!(hash.is_string() && count.is_number(), "{hash} {count}");
    for js in [&mut owner_js, &mut guest_js] {
        js.wait_for("the last save and the run", |d| {
            d["state"]["hash"] == hash
                && d["state"]["executions"]["cell-0"]["status"] == "ok"
                && d["cells"][0]["execution_count"] == count
        })
        .await;
    }

    // Offline, each edits; back online, each sends what the room lacks.
    let edits = [
        (&mut owner_js, 1, "\n# written offline by the owner"),
        (&mut guest_js, 0, "\n# written offline by the guest"),
    ];
    let mut failures = Vec::new();
    for (js, cell, text) in edits {
        assert_eq!(
            js.ask(json!({"cmd": "disconnect"})).await["event"],
            "disconnected"
        );
        assert_eq!(
            js.ask(json!({"cmd": "edit", "cell": cell, "text": text}))
                .await["event"],
            "edited"
        );
        let back = js.ask(json!({"cmd": "connect"})).await;
        if back["ok"] != true
            || back["raw"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r.as_str().unwrap_or_default().contains("refused"))
        {
            failures.push(format!("{}: {back}", js.name));
        }
    }
    let offline = |sources: &[String]| {
        sources[1].ends_with("# written offline by the owner")
            && sources[0].ends_with("# written offline by the guest")
    };
    let seen = room.owner.pump_until(WAIT, |c| offline(&c.sources())).await;
    assert!(
        failures.is_empty() && seen,
        "offline edits did not reach the room: {failures:?}; another client sees {:?}",
        room.owner.sources()
    );
    room.save().await;
    assert!(offline(&room.server.sources_on_disk(NB)));
    owner_js.quit().await;
    guest_js.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_sending_what_the_room_has_is_not_refused() {
    let mut room = Room::open().await;
    // The room's history holds server-written items, some replaced (deleted) already.
    for round in 0..2 {
        room.owner_appends(&format!("\nround {round}")).await;
        room.save().await;
    }
    let mut ed = room.editor().await;
    let own = {
        let mut txn = ed.doc.transact_mut();
        collab::notebook::cell_source(&txn, 0)
            .unwrap()
            .push(&mut txn, " # ed");
        txn.encode_update_v1()
    };
    let before = ed.updates_received;
    ed.send(protocol::encode_sync_update(&own)).await;
    assert!(ed.pump_until(WAIT, |c| c.updates_received > before).await);
    assert!(room.owner.settle(WAIT).await);
    let before = (room.owner.notebook(), room.owner.state());
    let whole = ed
        .doc
        .transact()
        .encode_state_as_update_v1(&yrs::StateVector::default());

    // Its own update again, then the whole document (server items and deletions included), as
    // an update and as a sync step 2.
    ed.send(protocol::encode_sync_update(&own)).await;
    ed.send(protocol::encode_sync_update(&whole)).await;
    ed.send(protocol::encode_sync_step2(&whole)).await;
    assert!(ed.settle(WAIT).await, "closed: {:?}", ed.closed);
    assert!(
        !ed.raw
            .iter()
            .any(|r| r.contains("refused") || r.contains("conflict")),
        "{:?}",
        ed.raw
    );
    assert!(room.owner.settle(WAIT).await);
    assert_eq!((room.owner.notebook(), room.owner.state()), before);
}

// ---------------------------------------------------------------------------------------------
// 7. A watch-only client changes nothing, and its no-op resync is not refused.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_changes_nothing() {
    let mut room = Room::open().await;
    let cookie = room.link("viewer");
    let mut watcher = room.guest(&cookie).await;
    watcher.append_to_cell(0, " # FORGED-7").await;
    watcher.settle(WAIT).await;
    let t = targets(&watcher.doc);
    // The alias attack, from a watcher.
    let update = aliased_insert(
        &t.state,
        t.execution_count0,
        &t.source0,
        Content::json(&[json!(77)]),
    );
    if watcher.closed.is_none() {
        send_forged(&mut watcher, &update).await;
    }
    let views = room.views().await;
    assert_nowhere(&views, "FORGED-7");
    for view in &views {
        assert_eq!(
            view.cell("cell-0").source,
            "x = 1\nprint(x)",
            "{}",
            view.place
        );
        assert_eq!(
            view.cell("cell-0").execution_count,
            json!(1),
            "{}",
            view.place
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_resyncing_what_it_received_is_not_refused() {
    let mut room = Room::open().await;
    let cookie = room.link("viewer");
    let mut watcher = room.guest(&cookie).await;
    for round in 0..2 {
        room.owner_appends(&format!("\nround {round}")).await;
        room.save().await;
    }
    let hash = room.owner.state()["hash"].clone();
    assert!(
        watcher
            .pump_until(WAIT, |c| c.state()["hash"] == hash)
            .await
    );
    let before = (room.owner.notebook(), room.owner.state());

    // What it received, sent back as a sync step 2 (all of it, then the part the room lacks:
    // nothing but the delete set).
    let whole = watcher
        .doc
        .transact()
        .encode_state_as_update_v1(&yrs::StateVector::default());
    watcher.send(protocol::encode_sync_step2(&whole)).await;
    assert!(watcher.settle(WAIT).await, "closed: {:?}", watcher.closed);
    // Reconnecting with its copy: the client answers the server's step 1 (the harness does, as
    // y-websocket does) with the difference.
    let mut again = YClient::connect_with_cookie(&room.room_url(), &cookie).await;
    again.doc = forge::replica(&watcher.doc);
    again.sync().await;
    assert!(again.settle(WAIT).await, "closed: {:?}", again.closed);
    for client in [&watcher, &again] {
        assert!(
            !client.raw.iter().any(|r| r.contains("refused")),
            "{:?}",
            client.raw
        );
    }
    assert!(room.owner.settle(WAIT).await);
    assert_eq!((room.owner.notebook(), room.owner.state()), before);
}

// ---------------------------------------------------------------------------------------------
// 8. A struct the room already holds part of. yrs trims such a struct before integrating it:
//    the known part is skipped and the rest becomes a new item whose left origin is the last
//    known clock, but which keeps the struct's explicit parent. yrs links that item right of
//    the known item (in the known item's list) while filing it, and its change event, under the
//    explicit parent. The guard read the event (the explicit parent, where the sender may
//    write); the delta it handed the room names only the origin, and the room put the item
//    where the known item is.
// ---------------------------------------------------------------------------------------------

/// What a room that judges each update on a copy and then applies the copy's own delta (as the
/// guard does) ends with, when nothing refuses anything: `judged` plays the shadow, the
/// returned document the room.
fn relayed(doc: &Doc, updates: &[&Update]) -> Doc {
    use yrs::updates::decoder::Decode;
    let judged = forge::replica(doc);
    let room = forge::replica(doc);
    for update in updates {
        let delta = {
            let mut txn = judged.transact_mut();
            txn.apply_update(yrs::Update::decode_v1(&update.encode()).unwrap())
                .unwrap();
            txn.commit();
            txn.encode_update_v1()
        };
        forge::apply(&room, &delta).unwrap();
    }
    room
}

/// The owner takes the edit lock of `cell`; `guest` sees it.
async fn owner_locks(room: &mut Room, guest: &mut YClient, cell: &str) {
    room.owner
        .request(json!({"type": "lock", "cell_id": cell, "request_id": 9008}))
        .await;
    let granted = room
        .owner
        .wait_raw(WAIT, |m| m["type"] == "lock" && m["responseTo"] == 9008)
        .await
        .expect("an answer to the lock");
    assert_eq!(granted["status"], "ok", "{granted}");
    assert!(
        guest
            .pump_until(WAIT, |c| c.state()["locks"][cell]["edit"].is_object())
            .await
    );
    assert!(guest.settle(WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_struct_the_room_partly_has_cannot_type_into_a_locked_cell() {
    let mut room = Room::open().await;
    let mut mallory = room.editor().await;
    owner_locks(&mut room, &mut mallory, "cell-0").await;
    // The file's first cell is loaded last: the loader's last item is cell-0's source text.
    let load = collab::LOAD_CLIENT_ID;
    let state = DocState::of(&mallory.doc);
    let last = Id::new(load, state.clock(load) - 1);
    let source0 = {
        let txn = mallory.doc.transact();
        forge::branch(&text_in(&txn, &cell_at(&txn, 0), "source"))
    };
    assert_eq!(
        state.placement(last).map(|(parent, _)| parent),
        Some(source0),
        "the loader's last item is in cell-0's source"
    );
    // That last clock again, then new text, under an explicit parent: the cell list.
    let update = Update::new().item(Item::placed(
        last,
        Parent::Root("cells".into()),
        None,
        Content::Str(") # FORGED-8a".into()),
    ));
    let effect = relayed(&mallory.doc, &[&update]);
    assert_eq!(
        cell_of(&notebook_of(&effect), "cell-0").source,
        "x = 1\nprint(x) # FORGED-8a"
    );

    send_forged(&mut mallory, &update).await;
    let views = room.views().await;
    assert_nowhere(&views, "FORGED-8a");
    for view in &views {
        assert_eq!(
            view.cell("cell-0").source,
            "x = 1\nprint(x)",
            "{}",
            view.place
        );
    }
}

/// Makes the last clock `guest` wrote garbage (an entry of a map it adds to cell `cell`'s
/// metadata and then removes); returns it.
async fn collected_last_clock(guest: &mut YClient, cell: u32) -> Id {
    guest
        .edit_and_wait_echo(|txn| {
            let metadata = map_in(txn, &cell_at(txn, cell), "metadata");
            let scratch = metadata.insert(txn, "scratch", yrs::MapPrelim::default());
            scratch.insert(txn, "k", "v");
        })
        .await;
    guest
        .edit_and_wait_echo(|txn| {
            map_in(txn, &cell_at(txn, cell), "metadata").remove(txn, "scratch");
        })
        .await;
    assert!(guest.settle(WAIT).await);
    let me = guest.doc.client_id().get();
    let state = DocState::of(&guest.doc);
    let last = Id::new(me, state.clock(me) - 1);
    assert!(
        matches!(state.block(last), Some(Block::Gc { .. })),
        "the removed map's entry is garbage-collected: {:?}",
        state.block(last)
    );
    last
}

/// A phantom: the collected clock `last` again, then new text, under an explicit parent (cell-2's
/// source, where an editor may type). The guard's copy links the new text into cell-2's
/// source; the room, told only its origin (garbage, no right neighbour), collects it. The two
/// now differ, and an item placed after the phantom goes to cell-2's source in the guard's copy
/// and to its right neighbour's list in the room.
fn phantom(doc: &Doc, last: Id) -> Update {
    let source2 = {
        let txn = doc.transact();
        forge::branch(&text_in(&txn, &cell_at(&txn, 2), "source"))
    };
    Update::new().item(Item::placed(
        last,
        source2,
        None,
        Content::Str("vPHANTOM".into()),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phantom_item_in_the_guards_copy_cannot_carry_an_output() {
    let mut room = Room::open().await;
    let mut mallory = room.editor().await;
    let last = collected_last_clock(&mut mallory, 2).await;
    let phantom = phantom(&mallory.doc, last);
    let output1 = {
        let txn = mallory.doc.transact();
        forge::element(&txn, &array_in(&txn, &cell_at(&txn, 1), "outputs"), 0)
    };
    let marker = "<script>FORGED-8b</script>";
    let forged = Update::new().item(Item::between(
        Id::new(last.client, last.clock + phantom.blocks[0].len()),
        Some(Id::new(last.client, last.clock + 1)),
        Some(output1),
        Content::json(&[html(marker)]),
    ));
    let effect = relayed(&mallory.doc, &[&phantom, &forged]);
    assert_eq!(
        cell_of(&notebook_of(&effect), "cell-1").outputs[0],
        html(marker)
    );

    send_forged(&mut mallory, &phantom).await;
    send_forged(&mut mallory, &forged).await;
    let views = room.views().await;
    assert_nowhere(&views, "FORGED-8b");
    for view in &views {
        assert_eq!(view.cell("cell-1").outputs.len(), 1, "{}", view.place);
    }
}

// ---------------------------------------------------------------------------------------------
// 9. A formatting attribute as a map entry. yrs's map change event unwraps the entry's value,
//    and a formatting item has none: reading the event panics, and the guard reads the events
//    of `state` and of each cell.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_formatting_entry_in_state_does_not_end_the_room() {
    let mut room = Room::open().await;
    let mut mallory = room.editor().await;
    let update = Update::new().item(Item::placed(
        Id::new(fresh_client(9), 0),
        Parent::Root("state".into()),
        Some("dirty"),
        Content::Format("FORGED-9".into(), "true".into()),
    ));
    send_forged(&mut mallory, &update).await;
    // Someone else's honest edit still lands.
    room.owner_appends("\nstill here").await;
    let views = room.views().await;
    assert_nowhere(&views, "FORGED-9");
    for view in &views {
        assert!(
            view.cell("cell-2").source.ends_with("still here"),
            "{}",
            view.place
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 10. Changes an editor may make (the notebook's metadata, a cell's metadata) that leave a saved
//     file Quire no longer reads, or reads without a cell.
// ---------------------------------------------------------------------------------------------

/// An editor's real yrs edit; then the saved file must still load, with every cell.
async fn the_saved_file_still_loads_after(edit: impl FnOnce(&mut yrs::TransactionMut)) {
    let mut room = Room::open().await;
    let mut mallory = room.editor().await;
    mallory.edit(edit).await;
    mallory.settle(WAIT).await;
    assert!(room.owner.settle(WAIT).await);
    room.save().await;
    let saved = std::fs::read(room.server.path(NB)).unwrap();
    let loaded = Notebook::from_ipynb(&saved).unwrap_or_else(|e| {
        panic!("the saved file no longer loads: {e}");
    });
    let ids: Vec<&str> = loaded.cells.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        ["cell-0", "cell-1", "cell-2"],
        "the saved file's cells"
    );
}

/// `levels` arrays around a string: a plain value as deep as an update may carry.
fn nested(levels: usize) -> yrs::Any {
    let mut value = yrs::Any::from("FORGED-10");
    for _ in 0..levels {
        value = yrs::Any::from(vec![value]);
    }
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editor_cannot_set_an_nbformat_quire_does_not_read() {
    the_saved_file_still_loads_after(|txn| {
        txn.get_or_insert_map("meta").insert(txn, "nbformat", 5);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editor_cannot_set_a_negative_nbformat_minor() {
    the_saved_file_still_loads_after(|txn| {
        txn.get_or_insert_map("meta")
            .insert(txn, "nbformat_minor", -1);
    })
    .await;
}

/// Two shared maps around the deepest plain value the wire allows: deeper than a file may be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notebook_metadata_nested_in_shared_maps_still_saves_a_readable_file() {
    the_saved_file_still_loads_after(|txn| {
        let meta = txn.get_or_insert_map("meta");
        let metadata = map_in(txn, &meta, "metadata");
        let outer = metadata.insert(txn, "deep", yrs::MapPrelim::default());
        let inner = outer.insert(txn, "deeper", yrs::MapPrelim::default());
        inner.insert(txn, "value", nested(collab::MAX_JSON_DEPTH - 1));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cell_metadata_nested_in_shared_maps_does_not_drop_the_cell_from_the_file() {
    the_saved_file_still_loads_after(|txn| {
        let metadata = map_in(txn, &cell_at(txn, 1), "metadata");
        let outer = metadata.insert(txn, "deep", yrs::MapPrelim::default());
        let inner = outer.insert(txn, "deeper", yrs::MapPrelim::default());
        inner.insert(txn, "value", nested(collab::MAX_JSON_DEPTH - 1));
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 11. Cell ids used twice. A run names its cell by id and the room runs the first cell holding
//     that id; a move keeps the outputs of the deleted cell with the same id.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_inserted_with_another_cells_id_does_not_get_its_code_run() {
    let mut room = Room::open().await;
    let mut mallory = room.editor().await;
    let mut decoy = mallory.cell("cell-1");
    decoy.source = "print('FORGED' + '-11a')".into();
    decoy.outputs.clear();
    decoy.execution_count = Value::Null;
    mallory
        .edit(|txn| {
            let cells = txn.get_array("cells").unwrap();
            collab::notebook::insert_cell(txn, &cells, 0, &decoy);
        })
        .await;
    mallory.settle(WAIT).await;
    // The owner runs their cell-1 (`y = x + 1`).
    let answer = room.owner.execute("cell-0").await;
    assert_eq!(answer["status"], "queued", "{answer}");
    assert_eq!(
        room.owner.wait_run("cell-0", Duration::from_secs(60)).await,
        "ok"
    );
    let answer = room.owner.execute("cell-1").await;
    if answer["status"] == "queued" {
        room.owner.wait_run("cell-1", Duration::from_secs(60)).await;
    }
    assert_nowhere(&room.views().await, "FORGED-11a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_does_not_copy_a_cells_outputs_into_two_cells() {
    let mut room = Room::open().await;
    let mut mallory = room.editor().await;
    let original = mallory.cell("cell-0");
    mallory
        .edit(|txn| {
            let cells = txn.get_array("cells").unwrap();
            cells.remove(txn, 0);
            collab::notebook::insert_cell(txn, &cells, 0, &original);
            collab::notebook::insert_cell(txn, &cells, 2, &original);
        })
        .await;
    mallory.settle(WAIT).await;
    for view in room.views().await {
        let carrying = view
            .notebook
            .cells
            .iter()
            .filter(|c| c.outputs == original.outputs)
            .count();
        assert!(
            carrying <= 1,
            "{}: {carrying} cells carry cell-0's outputs",
            view.place
        );
    }
}
