//! The room driven directly through its mailbox, with in-memory storage and a paused clock.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use collab::protocol::{self, decode_frame, Frame};
use collab::{
    FileStamp, History, Identity, Joined, NotebookFile, Outgoing, Room, RoomConfig, RoomHandle,
    RoomInput, StoreError, UpdateLog,
};
use tokio::time::Duration;
use yrs::updates::decoder::Decode;
use yrs::{GetString, Text, Transact};

#[derive(Clone, Default)]
struct MemoryFile {
    bytes: Arc<Mutex<Vec<u8>>>,
    writes: Arc<Mutex<u32>>,
    /// The file was deleted outside Quire.
    gone: Arc<std::sync::atomic::AtomicBool>,
    stats: Arc<std::sync::atomic::AtomicU32>,
}

impl NotebookFile for MemoryFile {
    fn api_path(&self) -> String {
        "nb.ipynb".into()
    }
    fn stat(&self) -> std::io::Result<Option<FileStamp>> {
        use std::sync::atomic::Ordering;
        self.stats.fetch_add(1, Ordering::Relaxed);
        if self.gone.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let bytes = self.bytes.lock().unwrap();
        Ok(Some(FileStamp {
            modified_ns: *self.writes.lock().unwrap() as i128,
            len: bytes.len() as u64,
            inode: 1,
        }))
    }
    fn read(&self) -> std::io::Result<Vec<u8>> {
        Ok(self.bytes.lock().unwrap().clone())
    }
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<FileStamp> {
        *self.bytes.lock().unwrap() = bytes.to_vec();
        *self.writes.lock().unwrap() += 1;
        Ok(self.stat()?.unwrap())
    }
    fn moved_to(&mut self, _: String) {}
}

#[derive(Clone, Default)]
struct MemoryLog {
    history: Arc<Mutex<Option<History>>>,
}

impl UpdateLog for MemoryLog {
    fn load(&mut self) -> Result<Option<History>, StoreError> {
        Ok(self.history.lock().unwrap().clone())
    }
    fn start(&mut self, snapshot: &[u8], saved_hash: &str) -> Result<(), StoreError> {
        *self.history.lock().unwrap() = Some(History {
            snapshot: snapshot.to_vec(),
            updates: vec![],
            saved_seq: 0,
            saved_hash: saved_hash.into(),
        });
        Ok(())
    }
    fn append(&mut self, updates: &[Bytes]) -> Result<u64, StoreError> {
        let mut guard = self.history.lock().unwrap();
        let history = guard.as_mut().unwrap();
        let mut seq = history
            .updates
            .last()
            .map(|u| u.0)
            .unwrap_or(history.saved_seq);
        for update in updates {
            seq += 1;
            history.updates.push((seq, update.to_vec()));
        }
        Ok(seq)
    }
    fn mark_saved(&mut self, seq: u64, saved_hash: &str) -> Result<(), StoreError> {
        let mut guard = self.history.lock().unwrap();
        let history = guard.as_mut().unwrap();
        history.saved_seq = seq;
        history.saved_hash = saved_hash.into();
        Ok(())
    }
    fn compact(&mut self, snapshot: &[u8], seq: u64, saved_hash: &str) -> Result<(), StoreError> {
        let mut guard = self.history.lock().unwrap();
        let history = guard.as_mut().unwrap();
        history.snapshot = snapshot.to_vec();
        history.updates.retain(|(s, _)| *s > seq);
        history.saved_seq = seq;
        history.saved_hash = saved_hash.into();
        Ok(())
    }
}

const NOTEBOOK: &str = r#"{"cells":[{"cell_type":"code","id":"c","metadata":{},"source":"x","outputs":[],"execution_count":null}],
  "metadata":{},"nbformat":4,"nbformat_minor":5}"#;

fn open_room(
    config: RoomConfig,
) -> (
    RoomHandle,
    MemoryFile,
    MemoryLog,
    tokio::task::JoinHandle<()>,
) {
    let file = MemoryFile::default();
    *file.bytes.lock().unwrap() = NOTEBOOK.as_bytes().to_vec();
    let log = MemoryLog::default();
    let room = Room::open(
        "test",
        collab::DocumentKind::Notebook,
        config,
        Box::new(file.clone()),
        Box::new(log.clone()),
    )
    .unwrap();
    let handle = room.handle();
    let task = tokio::spawn(room.run());
    (handle, file, log, task)
}

async fn join(room: &RoomHandle, name: &str) -> Joined {
    room.join(collab::Member::owner(Identity::from_username(name)))
        .await
        .unwrap()
}

/// An update that appends `text` to the first cell, made on a copy of the room's document.
fn append_update(text: &str) -> Bytes {
    // A peer's document: the loaded notebook under a client id of its own.
    let loaded = collab::Notebook::from_ipynb(NOTEBOOK.as_bytes())
        .unwrap()
        .to_doc();
    let initial = yrs::ReadTxn::encode_state_as_update_v1(&loaded.transact(), &Default::default());
    let doc = collab::notebook::new_doc();
    doc.transact_mut()
        .apply_update(yrs::Update::decode_v1(&initial).unwrap())
        .unwrap();
    let before = yrs::ReadTxn::state_vector(&doc.transact());
    let mut txn = doc.transact_mut();
    let source = collab::notebook::cell_source(&txn, 0).unwrap();
    source.push(&mut txn, text);
    drop(txn);
    let update = yrs::ReadTxn::encode_state_as_update_v1(&doc.transact(), &before);
    protocol::encode_sync_update(&update)
}

fn frame(conn: &Joined, bytes: Bytes) -> RoomInput {
    RoomInput::Frame {
        conn: conn.conn,
        frame: decode_frame(&bytes, usize::MAX).unwrap(),
    }
}

fn drain(joined: &mut Joined) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Ok(out) = joined.outgoing.try_recv() {
        if let Outgoing::Frame(bytes) = out {
            frames.push(decode_frame(&bytes, usize::MAX).unwrap());
        }
    }
    frames
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_dropped_and_the_others_get_everything() {
    let config = RoomConfig {
        outgoing_queue: 8,
        ..RoomConfig::default()
    };
    let (room, _, _, _) = open_room(config);
    let mut stalled = join(&room, "stalled").await;
    let mut reader = join(&room, "reader").await;
    let mut writer = join(&room, "writer").await;
    let mut received = 0;
    for i in 0..50 {
        room.send(frame(&writer, append_update(&format!("{i},"))))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        drain(&mut writer);
        received += drain(&mut reader)
            .iter()
            .filter(|f| matches!(f, Frame::SyncUpdate(_)))
            .count();
    }
    assert_eq!(received, 50, "the reading client got every edit");
    let reason = stalled
        .kicked
        .try_recv()
        .expect("the stalled client was dropped");
    assert_eq!(reason.code, 1013);
    // Its queue holds what it had room for, and then nothing more arrives.
    assert!(drain(&mut stalled).len() <= 8);
}

#[tokio::test(start_paused = true)]
async fn the_room_lingers_then_unloads_saving_first_and_a_rejoin_cancels_it() {
    let config = RoomConfig {
        linger: Duration::from_secs(60),
        ..RoomConfig::default()
    };
    let (room, file, _, task) = open_room(config);
    let ada = join(&room, "ada").await;
    room.send(frame(&ada, append_update("y"))).await.unwrap();
    room.send(RoomInput::Leave { conn: ada.conn })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(59)).await;
    let bob = join(&room, "bob").await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(!room.is_closed(), "bob is here: the room stays");
    room.send(RoomInput::Leave { conn: bob.conn })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(61)).await;
    task.await.unwrap();
    assert!(room.is_closed());
    let saved = collab::Notebook::from_ipynb(&file.bytes.lock().unwrap()).unwrap();
    assert_eq!(saved.cells[0].source, "xy");
}

#[tokio::test(start_paused = true)]
async fn silent_presence_expires_after_thirty_seconds() {
    let (room, _, _, _) = open_room(RoomConfig::default());
    let ada = join(&room, "ada").await;
    let mut bob = join(&room, "bob").await;
    let state = serde_json::json!({"cursors": []});
    room.send(frame(
        &ada,
        protocol::encode_awareness(&collab::awareness::encode_update(5, 1, &state)),
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(29)).await;
    let removed = |frames: &[Frame]| {
        frames.iter().any(|f| match f {
            Frame::Awareness(p) => collab::awareness::decode_update(p)
                .unwrap()
                .iter()
                .any(|(_, _, s)| s.is_null()),
            _ => false,
        })
    };
    assert!(!removed(&drain(&mut bob)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(removed(&drain(&mut bob)));
}

#[tokio::test(start_paused = true)]
async fn updates_are_logged_before_anyone_sees_them_and_duplicates_cost_nothing() {
    let (room, _, log, _) = open_room(RoomConfig::default());
    let ada = join(&room, "ada").await;
    let mut bob = join(&room, "bob").await;
    let update = append_update("!");
    room.send(frame(&ada, update.clone())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let seen = drain(&mut bob)
        .iter()
        .filter(|f| matches!(f, Frame::SyncUpdate(_)))
        .count();
    assert_eq!(seen, 1);
    let logged = log.history.lock().unwrap().as_ref().unwrap().updates.len();
    // A Python client re-sending what it received: applied twice, harmless, not re-broadcast.
    room.send(frame(&ada, update)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        drain(&mut bob)
            .iter()
            .filter(|f| matches!(f, Frame::SyncUpdate(_)))
            .count(),
        0
    );
    assert_eq!(
        log.history.lock().unwrap().as_ref().unwrap().updates.len(),
        logged
    );
}

#[tokio::test(start_paused = true)]
async fn an_update_from_a_foreign_history_gets_a_conflict() {
    let (room, _, _, _) = open_room(RoomConfig::default());
    let mut ada = join(&room, "ada").await;
    // An update whose first block starts at clock 5 of an unknown client: its history is missing.
    let other = collab::notebook::new_doc_with_client(777);
    let text = other.get_or_insert_text("t");
    for _ in 0..2 {
        text.push(&mut other.transact_mut(), "abcde");
    }
    let partial = yrs::ReadTxn::encode_state_as_update_v1(
        &other.transact(),
        &yrs::StateVector::from_iter([(yrs::block::ClientID::new(777), 5)]),
    );
    room.send(frame(&ada, protocol::encode_sync_update(&partial)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let conflict = drain(&mut ada)
        .iter()
        .any(|f| matches!(f, Frame::Raw { text, .. } if text.contains("conflict")));
    assert!(conflict);
}

#[tokio::test(start_paused = true)]
async fn a_deleted_file_is_not_recreated_and_the_room_does_not_spin() {
    use std::sync::atomic::Ordering;
    let config = RoomConfig {
        linger: Duration::from_secs(60),
        ..RoomConfig::default()
    };
    let (room, file, log, task) = open_room(config);
    let ada = join(&room, "ada").await;
    file.gone.store(true, Ordering::Relaxed);
    room.send(frame(&ada, append_update("y"))).await.unwrap();
    let before = file.stats.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let stats = file.stats.load(Ordering::Relaxed) - before;
    assert!(stats < 100, "{stats} stats in 30 s: the room is spinning");
    room.send(RoomInput::Leave { conn: ada.conn })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(61)).await;
    task.await.unwrap();
    assert_eq!(
        *file.writes.lock().unwrap(),
        0,
        "the deleted file was written again"
    );
    // The edit is not lost: it is in the log.
    assert!(!log
        .history
        .lock()
        .unwrap()
        .as_ref()
        .unwrap()
        .updates
        .is_empty());
}

/// Our RAW JSON request, as a room input.
fn request(conn: &Joined, message: serde_json::Value) -> RoomInput {
    frame(conn, protocol::encode_raw(&message.to_string()))
}

/// The RAW JSON messages among what a connection received.
fn replies(joined: &mut Joined) -> Vec<serde_json::Value> {
    drain(joined)
        .into_iter()
        .filter_map(|f| match f {
            Frame::Raw { text, .. } => serde_json::from_str(&text).ok(),
            _ => None,
        })
        .collect()
}

fn lock(conn: &Joined, id: u64) -> RoomInput {
    request(
        conn,
        serde_json::json!({"type": "lock", "cell_id": "c", "request_id": id}),
    )
}

/// Asks for the lock of cell "c" and returns the answer's status.
async fn ask_lock(room: &RoomHandle, who: &mut Joined, id: u64) -> String {
    room.send(lock(who, id)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let answer = replies(who)
        .into_iter()
        .find(|m| m["type"] == "lock")
        .unwrap();
    answer["status"].as_str().unwrap().to_string()
}

/// A room whose cell locks last 30 s, and two people in it.
async fn ada_and_bob_with_a_30s_lease() -> (RoomHandle, Joined, Joined) {
    let config = RoomConfig {
        lock_lease: Duration::from_secs(30),
        ..RoomConfig::default()
    };
    let (room, _, _, _) = open_room(config);
    let ada = join(&room, "ada").await;
    let bob = join(&room, "bob").await;
    (room, ada, bob)
}

#[tokio::test(start_paused = true)]
async fn a_cell_lock_is_exclusive_and_lapses_or_goes_with_its_holder() {
    let (room, mut ada, mut bob) = ada_and_bob_with_a_30s_lease().await;
    // Both ask at once: the room takes them in order, exactly one wins.
    room.send(lock(&ada, 1)).await.unwrap();
    room.send(lock(&bob, 2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let a = replies(&mut ada);
    let b = replies(&mut bob);
    assert_eq!(
        a.iter().find(|m| m["type"] == "lock").unwrap()["status"],
        "ok"
    );
    let refused = b.iter().find(|m| m["type"] == "lock").unwrap();
    assert_eq!(refused["status"], "refused");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("ada is editing"),
        "{refused}"
    );

    // Bob's change to the locked cell is refused and reaches nobody; Ada's goes through.
    room.send(frame(&bob, append_update("B"))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(replies(&mut bob).iter().any(|m| m["type"] == "refused"));
    assert!(!drain(&mut ada)
        .iter()
        .any(|f| matches!(f, Frame::SyncUpdate(_))));
    room.send(frame(&ada, append_update("A"))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(drain(&mut bob)
        .iter()
        .any(|f| matches!(f, Frame::SyncUpdate(_))));

    // Ada's edits renewed the lease; after 30 s of her idleness it lapses.
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(ask_lock(&room, &mut bob, 3).await, "refused");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(ask_lock(&room, &mut bob, 4).await, "ok");

    // Bob leaves: his lock goes with him.
    room.send(RoomInput::Leave { conn: bob.conn })
        .await
        .unwrap();
    assert_eq!(ask_lock(&room, &mut ada, 5).await, "ok");
}

/// The replies to lock and unlock are what the browser app reads: `"status": "ok"` when done,
/// `"refused"` with a reason otherwise, always naming the request and the cell.
#[tokio::test(start_paused = true)]
async fn lock_replies_say_ok_when_done_and_a_malformed_request_is_refused_naming_the_field() {
    use serde_json::json;
    let (room, mut ada, mut bob) = ada_and_bob_with_a_30s_lease().await;
    let answer = |who: &mut Joined, kind: &str| {
        replies(who)
            .into_iter()
            .find(|m| m["type"] == kind)
            .unwrap()
    };
    room.send(lock(&ada, 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        answer(&mut ada, "lock"),
        json!({"type": "lock", "responseTo": 1, "status": "ok", "cell_id": "c",
               "lease_ms": 30_000})
    );
    let unlock = |who: &Joined, id: u64| {
        request(
            who,
            json!({"type": "unlock", "cell_id": "c", "request_id": id}),
        )
    };
    room.send(unlock(&bob, 2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        answer(&mut bob, "unlock"),
        json!({"type": "unlock", "responseTo": 2, "status": "refused", "cell_id": "c",
               "reason": "you do not hold this cell's lock"})
    );
    room.send(unlock(&ada, 3)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        answer(&mut ada, "unlock"),
        json!({"type": "unlock", "responseTo": 3, "status": "ok", "cell_id": "c"})
    );

    // A lock without its cell is refused by name, never taken as the cell "".
    room.send(request(&bob, json!({"type": "lock", "request_id": 4})))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        answer(&mut bob, "lock"),
        json!({"type": "lock", "responseTo": 4, "status": "refused",
               "reason": "malformed lock request: missing field `cell_id`"})
    );
}

/// Asks for the whole document as a client that knows nothing does, and returns its copy.
async fn fresh_copy(room: &RoomHandle, who: &mut Joined) -> yrs::Doc {
    use yrs::updates::encoder::Encode;
    let empty = yrs::StateVector::default().encode_v1();
    drain(who);
    room.send(frame(who, protocol::encode_sync_step1(&empty)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let update = drain(who)
        .into_iter()
        .find_map(|f| match f {
            Frame::SyncStep2(update) => Some(update),
            _ => None,
        })
        .expect("a sync step 2");
    let doc = collab::notebook::new_doc();
    doc.transact_mut()
        .apply_update(yrs::Update::decode_v1(&update).unwrap())
        .unwrap();
    doc
}

fn first_source(doc: &yrs::Doc) -> String {
    let txn = doc.transact();
    collab::notebook::cell_source(&txn, 0)
        .unwrap()
        .get_string(&txn)
}

#[tokio::test(start_paused = true)]
async fn a_client_that_joins_knowing_nothing_gets_the_document_as_it_is_now() {
    let (room, _, _, _) = open_room(RoomConfig::default());
    let mut ada = join(&room, "ada").await;
    assert_eq!(first_source(&fresh_copy(&room, &mut ada).await), "x");
    // An insertion after that answer was made (and kept for the next joiner).
    room.send(frame(&ada, append_update("!"))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let mut bob = join(&room, "bob").await;
    let copy = fresh_copy(&room, &mut bob).await;
    assert_eq!(first_source(&copy), "x!");
    // A deletion leaves every state vector as it was: the next joiner must still see it.
    let before = yrs::ReadTxn::state_vector(&copy.transact());
    {
        let mut txn = copy.transact_mut();
        let source = collab::notebook::cell_source(&txn, 0).unwrap();
        source.remove_range(&mut txn, 1, 1);
    }
    let deletion = yrs::ReadTxn::encode_state_as_update_v1(&copy.transact(), &before);
    room.send(frame(&bob, protocol::encode_sync_update(&deletion)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let mut carol = join(&room, "carol").await;
    assert_eq!(first_source(&fresh_copy(&room, &mut carol).await), "x");
    // Asked again with nothing changed, the same answer.
    assert_eq!(first_source(&fresh_copy(&room, &mut ada).await), "x");
}

/// An update that changes a cell's outputs (needs `execute`), made on a copy of the room.
fn clear_outputs_update(count: i64) -> Bytes {
    let loaded = collab::Notebook::from_ipynb(NOTEBOOK.as_bytes())
        .unwrap()
        .to_doc();
    let initial = yrs::ReadTxn::encode_state_as_update_v1(&loaded.transact(), &Default::default());
    let doc = collab::notebook::new_doc();
    doc.transact_mut()
        .apply_update(yrs::Update::decode_v1(&initial).unwrap())
        .unwrap();
    let before = yrs::ReadTxn::state_vector(&doc.transact());
    {
        use yrs::{Array, Map};
        let mut txn = doc.transact_mut();
        let cells = yrs::WriteTxn::get_or_insert_array(&mut txn, "cells");
        if let Some(yrs::Out::YMap(cell)) = cells.get(&txn, 0) {
            cell.insert(&mut txn, "execution_count", count);
        }
    }
    let update = yrs::ReadTxn::encode_state_as_update_v1(&doc.transact(), &before);
    protocol::encode_sync_update(&update)
}

/// Each refused update costs the guard a rebuild of its copy of the document: an editor may be
/// refused now and then (and is told why each time), but one that keeps sending refused updates
/// is closed, while the room goes on serving the others.
#[tokio::test(start_paused = true)]
async fn a_client_refused_over_and_over_is_closed() {
    let (room, _, _, _) = open_room(RoomConfig::default());
    let editor_caps = collab::Capabilities::role("editor").unwrap();
    let mut editor = room
        .join(collab::Member {
            caps: editor_caps,
            ..collab::Member::owner(Identity::from_username("eve"))
        })
        .await
        .unwrap();
    let mut owner = join(&room, "ada").await;
    let mut refusals = 0;
    let mut closed = None;
    for i in 0..100 {
        room.send(frame(&editor, clear_outputs_update(i)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        refusals += replies(&mut editor)
            .iter()
            .filter(|r| r["type"] == "refused")
            .count();
        if let Ok(reason) = editor.kicked.try_recv() {
            closed = Some(reason);
            break;
        }
    }
    let reason = closed.expect("the editor was closed");
    assert_eq!(reason.code, 4429, "{}", reason.reason);
    assert!(
        (10..100).contains(&refusals),
        "refused {refusals} times before being closed"
    );
    // The owner is still served.
    drain(&mut owner);
    room.send(frame(&owner, append_update("!"))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(drain(&mut owner)
        .iter()
        .any(|f| matches!(f, Frame::SyncUpdate(_))));
}
