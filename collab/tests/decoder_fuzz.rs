//! Mutation fuzzing of what reads client bytes before any policy does: the websocket frame
//! codec, the state-vector and update readers, the awareness table, and the nbformat loader.
//! Valid inputs are mutated (bit flips, truncation, duplicated and spliced slices, random bytes,
//! huge varints); whatever comes out, nothing may panic or hang, and a notebook that loads must
//! survive a round trip (file → document → file) with every cell.
//!
//! CI runs a seeded short run; `QUIRE_FUZZ_ITERS=200000 QUIRE_FUZZ_SEED=9 cargo test -p collab
//! --release --test decoder_fuzz -- --nocapture` a long one.

use bytes::Bytes;
use collab::awareness::AwarenessTable;
use collab::guard::UpdateGuard;
use collab::protocol::{self, decode_frame, Frame, RawText};
use collab::{Capabilities, ConnectionId, DocumentKind, Identity, Notebook};
use yrs::updates::decoder::Decode;
use yrs::{ReadTxn, StateVector, Text, Transact, Update};

mod common;
use common::Rng;

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for _ in 0..1 + rng.below(3) {
        let len = bytes.len() as u64;
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len) as usize;
                bytes[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => bytes.truncate(rng.below(len) as usize),
            2 if len > 1 => {
                let a = rng.below(len) as usize;
                let b = a + rng.below(len - a as u64) as usize;
                let slice = bytes[a..b].to_vec();
                bytes.splice(b..b, slice);
            }
            3 => {
                let at = rng.below(len + 1) as usize;
                let n = 1 + rng.below(8) as usize;
                let noise: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                bytes.splice(at..at, noise);
            }
            4 => {
                // A varint claiming a huge count or length.
                let at = rng.below(len + 1) as usize;
                bytes.splice(at..at, [0xff, 0xff, 0xff, 0xff, 0x0f]);
            }
            5 if len > 0 => {
                let i = rng.below(len) as usize;
                bytes[i] = [0, 1, 0x7f, 0x80, 0xff][rng.below(5) as usize];
            }
            _ => {}
        }
    }
    bytes
}

fn iterations(default: u64) -> u64 {
    std::env::var("QUIRE_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seed() -> u64 {
    std::env::var("QUIRE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(11)
}

/// Runs `f`, naming the seed and iteration if it panics.
fn attempt(what: &str, seed: u64, i: u64, input: &[u8], f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        panic!("{what}: seed {seed}, iteration {i} panicked on {input:?}");
    }
}

fn room() -> yrs::Doc {
    let nb = Notebook::from_ipynb(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/corpus/every-output.ipynb"
        ))
        .unwrap(),
    )
    .unwrap();
    let doc = collab::notebook::new_doc_with_client(77);
    let state = nb
        .to_doc()
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    doc.transact_mut()
        .apply_update(Update::decode_v1(&state).unwrap())
        .unwrap();
    doc
}

/// Valid frames of every kind, as clients send them.
fn sample_frames(room: &yrs::Doc) -> Vec<Bytes> {
    let peer = collab::notebook::new_doc_with_client(5);
    let state = room
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    peer.transact_mut()
        .apply_update(Update::decode_v1(&state).unwrap())
        .unwrap();
    let before = peer.transact().state_vector();
    {
        let mut txn = peer.transact_mut();
        let source = collab::notebook::cell_source(&txn, 0).unwrap();
        source.insert(&mut txn, 0, "x = 1 😀\n");
    }
    let typing = peer.transact().encode_state_as_update_v1(&before);
    let mut awareness = Vec::new();
    protocol::write_var_uint(&mut awareness, 1);
    protocol::write_var_uint(&mut awareness, 5);
    protocol::write_var_uint(&mut awareness, 3);
    protocol::write_var_bytes(
        &mut awareness,
        br#"{"user":{"name":"ada"},"cursors":[{"anchor":1}]}"#,
    );
    let sv = peer.transact().state_vector().encode_v1();
    let step2 = peer.transact().encode_state_as_update_v1(&before);
    vec![
        protocol::encode_sync_step1(&sv),
        protocol::encode_sync_step2(&step2),
        protocol::encode_sync_update(&typing),
        protocol::encode_awareness(&awareness),
        protocol::encode_query_awareness(),
        protocol::encode_raw(r#"{"type":"execute","cell_id":"c1","request_id":1}"#),
        protocol::encode_raw(r#"{"type":"lock","cell_id":"c1","request_id":2}"#),
        protocol::encode_raw(r#"{"type":"input_reply","cell_id":"c1","value":"y","request_id":3}"#),
        protocol::encode_raw(r#"{"type":"chat","text":"hi","request_id":4}"#),
        protocol::encode_raw(r#"{"type":"interrupt","request_id":5}"#),
        protocol::encode_raw_save(7),
    ]
}

use yrs::updates::encoder::Encode;

#[test]
fn frames_state_vectors_updates_and_awareness_never_panic() {
    let seed = seed();
    let mut rng = Rng(seed);
    let room = room();
    let frames = sample_frames(&room);
    let mut guard = UpdateGuard::new(DocumentKind::Notebook);
    let mut awareness = AwarenessTable::default();
    let conn = ConnectionId::next();
    let identity = Identity::from_username("mallory");
    let now = tokio::time::Instant::now();
    let (mut decoded, mut judged, mut raw) = (0u64, 0u64, 0u64);
    for i in 0..iterations(3000) {
        let base = &frames[rng.below(frames.len() as u64) as usize];
        let input = mutate(&mut rng, base);
        attempt("decode_frame", seed, i, &input, || {
            let Ok(frame) = decode_frame(&Bytes::from(input.clone()), 1 << 20) else {
                return;
            };
            decoded += 1;
            match frame {
                Frame::SyncStep1(sv) => {
                    if collab::guard::wire::check_state_vector(&sv).is_ok() {
                        if let Ok(sv) = StateVector::decode_v1(&sv) {
                            let _ = room.transact().encode_state_as_update_v1(&sv);
                        }
                    }
                }
                Frame::SyncStep2(update) | Frame::SyncUpdate(update) => {
                    judged += 1;
                    // Judged, never applied: the room stays the same for every iteration.
                    if let Ok(Some(trial)) = guard.judge(&room, &update, Capabilities::ALL) {
                        guard.discard(trial);
                    }
                }
                Frame::Awareness(payload) => {
                    let _ = awareness.apply(conn, &identity, &payload, now);
                }
                Frame::Raw { text, .. } => {
                    // Decoded or refused, never a panic; a refusal names what is wrong.
                    if let Ok(RawText::Malformed(why)) = RawText::decode(&text) {
                        assert!(!why.to_string().is_empty());
                    }
                    raw += 1;
                }
                Frame::QueryAwareness => {}
            }
        });
    }
    println!(
        "seed {seed}: {decoded} mutated frames decoded, {judged} updates judged, {raw} RAW texts read"
    );
    assert!(decoded > 0 && judged > 0 && raw > 0);
}

#[test]
fn the_notebook_loader_never_panics_and_what_loads_round_trips() {
    let seed = seed();
    let mut rng = Rng(seed);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/corpus");
    let files: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "ipynb"))
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    assert!(!files.is_empty());
    let mut loaded = 0u64;
    for i in 0..iterations(3000) {
        let base = &files[rng.below(files.len() as u64) as usize];
        let input = mutate(&mut rng, base);
        attempt("Notebook::from_ipynb", seed, i, &input, || {
            let Ok(notebook) = Notebook::from_ipynb(&input) else {
                return;
            };
            loaded += 1;
            let written = notebook.to_ipynb();
            let again = Notebook::from_ipynb(&written)
                .unwrap_or_else(|e| panic!("what Quire wrote does not load: {e}"));
            assert_eq!(again.cells.len(), notebook.cells.len());
            let doc = notebook.to_doc();
            let back = Notebook::from_doc(&doc.transact());
            assert_eq!(
                back.cells.len(),
                notebook.cells.len(),
                "cells lost in the document"
            );
        });
    }
    println!("seed {seed}: {loaded} mutated notebooks loaded and round-tripped");
    assert!(loaded > 0);
}
