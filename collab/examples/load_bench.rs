//! How long loading a notebook of many small cells takes, step by step, at 10k/20k/40k cells
//! (or the counts given as arguments). Loading must grow linearly with the notebook.
//!
//! `cargo run --release -p collab --example load_bench [cells…]`

use std::time::Instant;

use collab::Notebook;
use yrs::updates::decoder::Decode;
use yrs::{ReadTxn, StateVector, Transact};

fn notebook(cells: usize) -> Vec<u8> {
    let cells: Vec<serde_json::Value> = (0..cells)
        .map(|i| {
            serde_json::json!({"cell_type": "code", "id": format!("c{i}"), "metadata": {},
                               "source": format!("x = {i}"), "outputs": [], "execution_count": null})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5
    }))
    .unwrap()
}

fn main() {
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number of cells"))
        .collect();
    let counts = if counts.is_empty() {
        vec![10_000, 20_000, 40_000]
    } else {
        counts
    };
    for cells in counts {
        let bytes = notebook(cells);
        let t = Instant::now();
        let parsed = Notebook::from_ipynb(&bytes).unwrap();
        let parse = t.elapsed();
        let t = Instant::now();
        let doc = parsed.to_doc();
        let to_doc = t.elapsed();
        let t = Instant::now();
        let update = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let encode = t.elapsed();
        let t = Instant::now();
        let room_doc = collab::notebook::new_doc();
        room_doc
            .transact_mut()
            .apply_update(yrs::Update::decode_v1(&update).unwrap())
            .unwrap();
        let apply = t.elapsed();
        let t = Instant::now();
        // The guard's first judgement builds its shadow copy of the document.
        let mut guard = collab::guard::UpdateGuard::new(collab::DocumentKind::Notebook);
        let judged = guard.judge(&room_doc, &[0, 0], collab::Capabilities::ALL);
        assert!(matches!(judged, Ok(None)));
        let guard_time = t.elapsed();
        drop(guard);
        let t = Instant::now();
        let back = Notebook::from_doc(&room_doc.transact());
        let file = back.to_ipynb();
        let save = t.elapsed();
        assert_eq!(back.cells.len(), cells);
        // An outside edit touching every cell (a formatter run, say), merged on a fork.
        let mut edited = parsed.clone();
        for cell in &mut edited.cells {
            cell.source.push_str(" # formatted");
        }
        let t = Instant::now();
        collab::merge::external_edit(&update, &collab::Content::Notebook(edited)).unwrap();
        let merge = t.elapsed();
        println!(
            "{cells:>6} cells ({:.1} MB): parse {:>7.1} ms, to_doc {:>8.1} ms, encode {:>6.1} ms, \
             apply {:>7.1} ms, guard {:>6.1} ms, from_doc+to_ipynb {:>6.1} ms, \
             outside edit of every cell {:>8.1} ms",
            file.len() as f64 / 1e6,
            parse.as_secs_f64() * 1e3,
            to_doc.as_secs_f64() * 1e3,
            encode.as_secs_f64() * 1e3,
            apply.as_secs_f64() * 1e3,
            guard_time.as_secs_f64() * 1e3,
            save.as_secs_f64() * 1e3,
            merge.as_secs_f64() * 1e3,
        );
    }
}
