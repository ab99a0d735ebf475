//! `quire-chaos [--only 1,3]`: what Quire does when things go wrong, as figures. Run by
//! `tests/chaos.sh` (which builds it and Quire in release); it asserts nothing and is not a
//! test: it prints each scenario's figures, a table at the end, and writes
//! `target/chaos/results.json`. Everything runs on loopback against the real binary started by
//! the test harness over temporary folders, and every loop is bounded.
//!
//! 1. kill -9 under load: clients type, the server is killed mid-stream and restarted on the
//!    same state; acknowledged edits lost or duplicated.
//! 2. Saves that cannot happen: a full disk (a small tmpfs, as root), a read-only file, a
//!    read-only directory; edits kept, and whether the file ever stopped parsing.
//! 3. A kernel killed during a run: how soon clients see it, the run's fate, restart.
//! 4. A client that never reads beside ten typing ones: their latency, when it is dropped,
//!    the server's memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use quire_tests::bench::{percentile, report, usage};
use quire_tests::client::{Event, Framing, Room};
use quire_tests::{notebook_with, TestServer, YClient};
use serde_json::{json, Value};
use yrs::{GetString, ReadTxn, Text, Transact};

const CLIENTS: usize = 10;
const EDITS_PER_S: f64 = 20.0;
const TYPING: Duration = Duration::from_secs(10);
const JOIN: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Figures

struct Figure {
    scenario: &'static str,
    metric: String,
    value: f64,
    unit: String,
}

#[derive(Default)]
struct Report {
    figures: Vec<Figure>,
    notes: Vec<(&'static str, String)>,
}

type Shared = Arc<Mutex<Report>>;

fn figure(
    report: &Shared,
    scenario: &'static str,
    metric: impl Into<String>,
    value: f64,
    unit: &str,
) {
    let metric = metric.into();
    println!(
        "{scenario:<3} {metric:<66} {:>10} {unit}",
        format_value(value)
    );
    report.lock().unwrap().figures.push(Figure {
        scenario,
        metric,
        value,
        unit: unit.to_string(),
    });
}

fn note(report: &Shared, scenario: &'static str, text: impl Into<String>) {
    let text = text.into();
    println!("{scenario:<3} note: {text}");
    report.lock().unwrap().notes.push((scenario, text));
}

fn format_value(value: f64) -> String {
    if !value.is_finite() {
        "–".into()
    } else if value.fract() == 0.0 && value.abs() < 1e12 {
        format!("{value:.0}")
    } else if value.abs() >= 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// A number in [0, 1) that differs from run to run.
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

fn run(cmd: &str, args: &[&str]) -> Result<()> {
    let status = Command::new(cmd)
        .args(args)
        .status()
        .with_context(|| format!("running {cmd}"))?;
    if !status.success() {
        bail!("{cmd} {} failed: {status}", args.join(" "));
    }
    Ok(())
}

/// Mount points made by a scenario, unmounted (innermost first) when it ends however it ends.
#[derive(Default)]
struct Mounts(Vec<PathBuf>);

impl Mounts {
    fn umount(&mut self, path: &Path) {
        if let Some(i) = self.0.iter().rposition(|p| p == path) {
            self.0.remove(i);
            let _ = Command::new("umount").arg(path).status();
        }
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        while let Some(path) = self.0.pop() {
            let _ = Command::new("umount").arg(&path).status();
        }
    }
}

/// How a bench client reaches a notebook of the server (a fresh session handshake).
fn room_of(server: &TestServer, path: &str) -> Room {
    let (file_id, session) = server.session(path);
    Room {
        url: server.room_url(&file_id, &session),
        framing: Framing::Plain,
    }
}

async fn join_typists(room: &Room, n: usize) -> Result<Vec<YClient>> {
    let mut clients = Vec::new();
    for _ in 0..n {
        let mut client = YClient::join_room(room, None, JOIN).await?;
        client.track_echoes = true;
        clients.push(client);
    }
    Ok(clients)
}

/// The first cell's source as a client holds it.
fn first_source(doc: &yrs::Doc) -> String {
    let txn = doc.transact();
    collab::notebook::cell_source(&txn, 0)
        .map(|s| s.get_string(&txn))
        .unwrap_or_default()
}

/// How often each edit marker (`<label.n>`) occurs in a text.
fn marker_counts(text: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        let Some(len) = rest[start..].find('>') else {
            break;
        };
        *counts
            .entry(rest[start..start + len + 1].to_string())
            .or_default() += 1;
        rest = &rest[start + len + 1..];
    }
    counts
}

/// (acknowledged edits missing, edits present more than once, edits present at all) among
/// `edits`, in `text`.
fn tally(edits: &[&Edit], text: &str) -> (usize, usize, usize) {
    let counts = marker_counts(text);
    let mut missing_acked = 0;
    let mut duplicated = 0;
    let mut present = 0;
    for edit in edits {
        match counts.get(&edit.marker).copied().unwrap_or(0) {
            0 => missing_acked += edit.acked.is_some() as usize,
            1 => present += 1,
            _ => {
                present += 1;
                duplicated += 1;
            }
        }
    }
    (missing_acked, duplicated, present)
}

// ---------------------------------------------------------------------------------------------
// Typing

/// One edit: the marker it inserted, the clock just past its items, when it was sent and when
/// the server sent it back.
#[derive(Clone)]
struct Edit {
    marker: String,
    end_clock: u32,
    sent: Instant,
    acked: Option<Instant>,
}

#[derive(Clone)]
struct Typing {
    /// Typing stops at this time or when `stop` is set.
    until: Instant,
    stop: Arc<AtomicBool>,
    /// A cursor move (awareness) after each edit, as CodeMirror's binding sends.
    awareness: bool,
    /// Characters of padding after each marker.
    pad: usize,
    /// Each edit also deletes the padding of this client's previous one (a paste replacing the
    /// last paste): heavy traffic, a document that hardly grows.
    replace_pad: bool,
}

/// Types into the first cell at `EDITS_PER_S` while reading what the server sends, then
/// waits (up to 5 s) for the echoes of what it sent. Stops early if the server goes away.
async fn type_into(client: &mut YClient, label: &str, next: &mut u64, spec: &Typing) -> Vec<Edit> {
    let mut edits: Vec<Edit> = Vec::new();
    let mut first_unacked = 0;
    let mut closed = false;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / EDITS_PER_S));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mark = |client: &YClient, edits: &mut Vec<Edit>, first_unacked: &mut usize| {
        let now = Instant::now();
        while *first_unacked < edits.len() && edits[*first_unacked].end_clock <= client.echoed_clock
        {
            edits[*first_unacked].acked = Some(now);
            *first_unacked += 1;
        }
    };
    while !closed && Instant::now() < spec.until && !spec.stop.load(Ordering::Relaxed) {
        tokio::select! {
            _ = tick.tick() => {
                let marker = format!("<{label}.{next}>");
                *next += 1;
                let text = format!("{marker}{}", "-".repeat(spec.pad));
                let update = {
                    let mut txn = client.doc.transact_mut();
                    let Some(source) = collab::notebook::cell_source(&txn, 0) else {
                        break;
                    };
                    if let (true, Some(previous)) = (spec.replace_pad && spec.pad > 0, edits.last()) {
                        // The text is ASCII: byte offsets are the document's UTF-16 offsets.
                        if let Some(at) = source.get_string(&txn).find(&previous.marker) {
                            let from = (at + previous.marker.len()) as u32;
                            source.remove_range(&mut txn, from, spec.pad as u32);
                        }
                    }
                    let len = source.len(&txn);
                    source.insert(&mut txn, len, &text);
                    txn.encode_update_v1()
                };
                let end_clock = client.doc.transact().state_vector().get(&client.doc.client_id());
                edits.push(Edit { marker, end_clock, sent: Instant::now(), acked: None });
                if client.send_update(&update).await.is_err() {
                    closed = true;
                } else if spec.awareness {
                    let len = first_source(&client.doc).len() as u32;
                    closed = client.send_awareness(len).await.is_err();
                }
            }
            event = client.next_event() => {
                if event == Event::Closed {
                    closed = true;
                }
                mark(client, &mut edits, &mut first_unacked);
            }
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !closed && first_unacked < edits.len() {
        match tokio::time::timeout_at(deadline, client.next_event()).await {
            Err(_) => break,
            Ok(Event::Closed) => closed = true,
            Ok(_) => {}
        }
        mark(client, &mut edits, &mut first_unacked);
    }
    edits
}

/// Runs `type_into` for each client on its own task; gives the clients back with their edits.
async fn type_all(
    clients: Vec<YClient>,
    counters: &mut [u64],
    spec: &Typing,
) -> Vec<(YClient, Vec<Edit>)> {
    let mut tasks = Vec::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        let spec = spec.clone();
        let mut next = counters[i];
        tasks.push(tokio::spawn(async move {
            let edits = type_into(&mut client, &i.to_string(), &mut next, &spec).await;
            (client, edits, next)
        }));
    }
    let mut out = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let (client, edits, next) = task.await.expect("a typist task");
        counters[i] = next;
        out.push((client, edits));
    }
    out
}

fn latencies_ms<'a>(edits: impl Iterator<Item = &'a Edit>) -> Vec<f64> {
    let mut out: Vec<f64> = edits
        .filter_map(|e| {
            e.acked
                .map(|a| a.duration_since(e.sent).as_secs_f64() * 1000.0)
        })
        .collect();
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

// ---------------------------------------------------------------------------------------------
// 1. kill -9 under load

async fn kill_under_load(report: Shared) -> Result<()> {
    const S: &str = "1";
    const KILLS: usize = 5;
    println!(
        "--- 1. kill -9 under load: {CLIENTS} clients × {EDITS_PER_S} edits/s, {KILLS} kills ---"
    );
    let mut server = TestServer::start(&[("nb.ipynb", &notebook_with(&[""]))]);
    let mut room = room_of(&server, "nb.ipynb");
    let mut clients = join_typists(&room, CLIENTS).await?;
    let mut counters = vec![0u64; CLIENTS];
    let mut all_edits: Vec<Edit> = Vec::new();
    let (mut sent, mut acked, mut lost, mut dups, mut unacked_kept) = (0, 0, 0, 0, 0);
    let mut missing_ever = std::collections::HashSet::new();
    let mut duplicated_ever = std::collections::HashSet::new();
    let mut missing_unacked = 0;
    let mut restart_ms = Vec::new();
    let (mut refused, mut refusal) = (0, None::<String>);
    for round in 0..KILLS {
        let spec = Typing {
            until: Instant::now() + TYPING,
            stop: Arc::new(AtomicBool::new(false)),
            awareness: false,
            pad: 0,
            replace_pad: false,
        };
        let kill_after = Duration::from_secs_f64(2.0 + 6.0 * random_fraction());
        let typing = {
            let spec = spec.clone();
            let mut counters_moved = counters.clone();
            let handle = tokio::spawn(async move {
                let typed = type_all(clients, &mut counters_moved, &spec).await;
                (typed, counters_moved)
            });
            tokio::time::sleep(kill_after).await;
            server.kill9();
            handle.await.expect("typing")
        };
        let (typed, new_counters) = typing;
        counters = new_counters;
        let started = Instant::now();
        server.restart();
        room = room_of(&server, "nb.ipynb");
        let reader = YClient::join_room(&room, None, JOIN).await?;
        restart_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        let round_edits: Vec<&Edit> = typed.iter().flat_map(|(_, e)| e.iter()).collect();
        let round_sent = round_edits.len();
        let round_acked = round_edits.iter().filter(|e| e.acked.is_some()).count();
        let text = first_source(&reader.doc);
        let (r_lost, r_dups, r_present) = tally(&round_edits, &text);
        let r_unacked_kept = r_present - (round_acked - r_lost);
        // Earlier rounds' edits must still be there, once each.
        let earlier: Vec<&Edit> = all_edits.iter().collect();
        let (e_lost, e_dups, _) = tally(&earlier, &text);
        reader.close().await;
        println!(
            "    round {}: killed after {:.1} s; sent {round_sent}, acknowledged {round_acked}; after restart: acknowledged lost {r_lost}, duplicated {r_dups}, unacknowledged but kept {r_unacked_kept}; earlier rounds lost {e_lost}, duplicated {e_dups}",
            round + 1,
            kill_after.as_secs_f64()
        );
        sent += round_sent;
        acked += round_acked;
        lost += r_lost + e_lost;
        dups += r_dups + e_dups;
        unacked_kept += r_unacked_kept;
        // The typists reconnect with the documents they had, as y-websocket does: they answer
        // the server's sync step 1 with everything it lacks (and their whole delete set).
        let (file_id, session) = server.session("nb.ipynb");
        let url = server.room_url(&file_id, &session);
        let mut round_refused = 0;
        for (client, edits) in typed {
            all_edits.extend(edits);
            let mut again = YClient::connect(&url).await;
            again.doc = client.doc.clone();
            client.close().await;
            again.sync().await;
            // Once the answer to a second step 1 arrives, the server has handled the client's
            // step 2 (and said if it refused it).
            again.synced = false;
            again.sync().await;
            if again.raw.iter().any(|r| r.contains(r#""type":"refused""#)) {
                round_refused += 1;
                if refusal.is_none() {
                    refusal = again.raw.iter().find(|r| r.contains("refused")).cloned();
                }
            }
        }
        refused += round_refused;
        // The next round types from fresh connections.
        clients = join_typists(&room, CLIENTS).await?;
        let reader = YClient::join_room(&room, None, JOIN).await?;
        let text = first_source(&reader.doc);
        let counts = marker_counts(&text);
        let mut missing = 0;
        let mut duplicated = 0;
        for edit in &all_edits {
            match counts.get(&edit.marker).copied().unwrap_or(0) {
                0 => {
                    missing += 1;
                    if missing_ever.insert(edit.marker.clone()) && edit.acked.is_none() {
                        missing_unacked += 1;
                    }
                }
                1 => {}
                _ => {
                    duplicated += 1;
                    duplicated_ever.insert(edit.marker.clone());
                }
            }
        }
        reader.close().await;
        println!(
            "    round {}: {round_refused} of {CLIENTS} reconnecting clients had their sync step 2 refused; then edits missing {missing} (acknowledged or not, all rounds), duplicated {duplicated}",
            round + 1
        );
    }
    for client in clients {
        client.close().await;
    }
    // The file, saved after it all, holds the room's text.
    let mut saver = YClient::join(&server, "nb.ipynb").await;
    let status = saver.save(1).await;
    let file = quire_tests::read_notebook(&server.path("nb.ipynb"));
    let everything: Vec<&Edit> = all_edits.iter().collect();
    let counts = marker_counts(&file.cells[0].source);
    let file_missing = everything
        .iter()
        .filter(|e| !counts.contains_key(&e.marker))
        .count();
    let (_, file_dups, _) = tally(&everything, &file.cells[0].source);
    restart_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    figure(&report, S, "kills (SIGKILL mid-stream)", KILLS as f64, "");
    figure(&report, S, "edits sent", sent as f64, "edits");
    figure(
        &report,
        S,
        "edits acknowledged (echo received)",
        acked as f64,
        "edits",
    );
    figure(
        &report,
        S,
        "acknowledged edits lost after restart",
        lost as f64,
        "edits",
    );
    figure(
        &report,
        S,
        "edits duplicated after restart",
        dups as f64,
        "edits",
    );
    figure(
        &report,
        S,
        "unacknowledged edits kept anyway",
        unacked_kept as f64,
        "edits",
    );
    figure(
        &report,
        S,
        "reconnecting clients whose sync step 2 was refused",
        refused as f64,
        "clients",
    );
    figure(
        &report,
        S,
        "edits missing after clients resynced",
        missing_ever.len() as f64,
        "edits",
    );
    figure(
        &report,
        S,
        "  of which never acknowledged",
        missing_unacked as f64,
        "edits",
    );
    figure(
        &report,
        S,
        "edits duplicated after clients resynced",
        duplicated_ever.len() as f64,
        "edits",
    );
    figure(
        &report,
        S,
        "restart to first client synced, p50",
        percentile(&restart_ms, 0.5),
        "ms",
    );
    figure(
        &report,
        S,
        "restart to first client synced, max",
        percentile(&restart_ms, 1.0),
        "ms",
    );
    figure(
        &report,
        S,
        "final save: edits missing from the file",
        file_missing as f64,
        "edits",
    );
    figure(
        &report,
        S,
        "final save: edits duplicated in the file",
        file_dups as f64,
        "edits",
    );
    if status != "success" {
        note(&report, S, format!("the final save answered {status:?}"));
    }
    if let Some(refusal) = refusal {
        note(
            &report,
            S,
            format!("a reconnecting client was told: {refusal}"),
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. Saves that cannot happen

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Trouble {
    DiskFull,
    ReadOnlyFile,
    ReadOnlyDir,
}

/// A notebook of an empty cell (typed into) and one with `output_bytes` of output.
fn sized_notebook(output_bytes: usize) -> Vec<u8> {
    let payload = "y".repeat(output_bytes);
    serde_json::to_vec_pretty(&json!({
        "cells": [
            {"cell_type": "code", "id": "typed", "metadata": {}, "source": "", "outputs": [], "execution_count": null},
            {"cell_type": "code", "id": "big", "metadata": {}, "source": "big", "execution_count": 1,
             "outputs": [{"output_type": "stream", "name": "stdout", "text": payload}]}
        ],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5
    }))
    .unwrap()
}

fn available_bytes(dir: &Path) -> Result<u64> {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| anyhow!("cannot read df's answer for {}", dir.display()))
}

/// What the file checker saw: reads, reads that did not parse as a notebook.
#[derive(Default)]
struct FileChecks {
    reads: u64,
    unparsable: u64,
    first_problem: Option<String>,
}

fn check_file(path: &Path, checks: &Mutex<FileChecks>) {
    let result = std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|b| {
            collab::Notebook::from_ipynb(&b)
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
    let mut checks = checks.lock().unwrap();
    checks.reads += 1;
    if let Err(e) = result {
        checks.unparsable += 1;
        checks.first_problem.get_or_insert(e);
    }
}

fn leftover_temp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".quire-tmp"))
                .count()
        })
        .unwrap_or(0)
}

async fn saves_in_trouble(report: Shared, trouble: Trouble) -> Result<()> {
    const S: &str = "2";
    let what = match trouble {
        Trouble::DiskFull => "disk full (1 MiB tmpfs)",
        Trouble::ReadOnlyFile => "read-only file (chmod 0444)",
        Trouble::ReadOnlyDir => "read-only directory",
    };
    println!("--- 2. saves during trouble: {what} ---");
    let root = is_root();
    if trouble == Trouble::DiskFull && !root {
        note(&report, S, "disk full skipped: mounting a tmpfs needs root");
        return Ok(());
    }
    let server = TestServer::start(&[]);
    let dir = server.root.join("d");
    std::fs::create_dir(&dir)?;
    let mut mounts = Mounts::default();
    let file = dir.join("nb.ipynb");
    let bytes = sized_notebook(300_000);
    let size0 = bytes.len() as u64;
    let filler = dir.join("filler");
    let tag = match trouble {
        Trouble::DiskFull => "disk full",
        Trouble::ReadOnlyFile => "read-only file",
        Trouble::ReadOnlyDir => "read-only dir",
    };
    if trouble == Trouble::DiskFull {
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                "size=1m",
                "tmpfs",
                dir.to_str().unwrap(),
            ],
        )?;
        mounts.0.push(dir.clone());
        std::fs::write(&file, &bytes)?;
        // Room for the notebook plus 40 kB: the temporary file of a save needs the whole new
        // notebook while the old one still exists, so saves fail once typing has added 40 kB.
        let avail = available_bytes(&dir)?;
        let fill = avail.saturating_sub(size0 + 40_000);
        std::fs::write(&filler, vec![0u8; fill as usize])?;
        println!(
            "    tmpfs: notebook {size0} B, {} B left free",
            available_bytes(&dir)?
        );
    } else {
        std::fs::write(&file, &bytes)?;
    }
    let room = room_of(&server, "d/nb.ipynb");
    let clients = join_typists(&room, CLIENTS).await?;
    let (file_id, session) = server.session("d/nb.ipynb");
    let mut saver = YClient::connect(&server.room_url(&file_id, &session)).await;
    saver.sync().await;

    let stop = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(Mutex::new(FileChecks::default()));
    let checker = {
        let (stop, checks, file) = (stop.clone(), checks.clone(), file.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                check_file(&file, &checks);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // The trouble window, as seen by the saver: (saves asked, failed) in it and outside it.
    let in_trouble = Arc::new(AtomicBool::new(false));
    let saving = {
        let (stop, checks, file, in_trouble) = (
            stop.clone(),
            checks.clone(),
            file.clone(),
            in_trouble.clone(),
        );
        tokio::spawn(async move {
            let mut tally = [[0u32; 2]; 2]; // [outside, inside][success, failed]
            let mut first_failure: Option<Instant> = None;
            let mut id = 1;
            while !stop.load(Ordering::Relaxed) {
                let inside = in_trouble.load(Ordering::Relaxed) as usize;
                let status = saver.save(id).await;
                id += 1;
                let failed = status != "success";
                if failed {
                    first_failure.get_or_insert_with(Instant::now);
                }
                tally[inside][failed as usize] += 1;
                check_file(&file, &checks);
                saver.pump_for(Duration::from_millis(400)).await;
            }
            (saver, tally, first_failure, id)
        })
    };

    let spec = Typing {
        until: Instant::now() + TYPING,
        stop: Arc::new(AtomicBool::new(false)),
        awareness: false,
        pad: 40,
        replace_pad: false,
    };
    let t0 = Instant::now();
    let typing = {
        let spec = spec.clone();
        tokio::spawn(async move {
            let mut counters = vec![0u64; CLIENTS];
            type_all(clients, &mut counters, &spec).await
        })
    };
    // (mode while read-only, whether the read-only file was replaced)
    let mut read_only_file = None;
    match trouble {
        Trouble::DiskFull => {
            // The disk fills as the clients type; the space is freed when they stop.
            in_trouble.store(true, Ordering::Relaxed);
            tokio::time::sleep(TYPING).await;
            std::fs::remove_file(&filler)?;
            in_trouble.store(false, Ordering::Relaxed);
        }
        Trouble::ReadOnlyFile => {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            tokio::time::sleep(Duration::from_secs(3)).await;
            let before = std::fs::metadata(&file)?;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444))?;
            in_trouble.store(true, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(4)).await;
            in_trouble.store(false, Ordering::Relaxed);
            let during = std::fs::metadata(&file)?;
            read_only_file = Some((
                during.permissions().mode() & 0o777,
                during.ino() != before.ino(),
            ));
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
        }
        Trouble::ReadOnlyDir => {
            use std::os::unix::fs::PermissionsExt;
            tokio::time::sleep(Duration::from_secs(3)).await;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555))?;
            if root {
                // Root ignores mode bits: a read-only bind mount refuses root's writes too.
                let d = dir.to_str().unwrap();
                run("mount", &["--bind", d, d])?;
                mounts.0.push(dir.clone());
                run("mount", &["-o", "remount,bind,ro", d])?;
            }
            in_trouble.store(true, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(4)).await;
            in_trouble.store(false, Ordering::Relaxed);
            mounts.umount(&dir);
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    let typed = typing.await.expect("typing");
    // A few more saves with the trouble gone, then the saver and the checker stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut saver, saves, first_failure, next_id) = saving.await.expect("saver");
    checker.join().expect("checker");
    let final_status = saver.save(next_id).await;
    check_file(&file, &checks);
    let edits: Vec<&Edit> = typed.iter().flat_map(|(_, e)| e.iter()).collect();
    let acked = edits.iter().filter(|e| e.acked.is_some()).count();
    let closed = typed
        .iter()
        .filter(|(c, _)| c.close_code().is_some())
        .count();
    // In the room: what a client joining now gets.
    let room = room_of(&server, "d/nb.ipynb");
    let reader = YClient::join_room(&room, None, JOIN).await?;
    let (room_lost, room_dups, _) = tally(&edits, &first_source(&reader.doc));
    reader.close().await;
    // In the file.
    let on_disk = std::fs::read(&file)
        .map_err(anyhow::Error::from)
        .and_then(|b| collab::Notebook::from_ipynb(&b).map_err(|e| anyhow!("{e}")));
    let (file_lost, file_dups) = match &on_disk {
        Ok(nb) => {
            let (l, d, _) = tally(&edits, &nb.cells[0].source);
            (l as f64, d as f64)
        }
        Err(_) => (f64::NAN, f64::NAN),
    };
    let temp_left = leftover_temp_files(&dir);
    let checks = checks.lock().unwrap();
    let m = |metric: &str| format!("{tag}: {metric}");
    figure(&report, S, m("edits sent"), edits.len() as f64, "edits");
    figure(&report, S, m("edits acknowledged"), acked as f64, "edits");
    let window = if trouble == Trouble::DiskFull {
        "while typing (disk filling)"
    } else {
        "while read-only"
    };
    figure(
        &report,
        S,
        m(&format!("saves {window}: failed")),
        saves[1][1] as f64,
        "saves",
    );
    figure(
        &report,
        S,
        m(&format!("saves {window}: succeeded")),
        saves[1][0] as f64,
        "saves",
    );
    figure(
        &report,
        S,
        m("saves otherwise: failed"),
        saves[0][1] as f64,
        "saves",
    );
    figure(
        &report,
        S,
        m("saves otherwise: succeeded"),
        saves[0][0] as f64,
        "saves",
    );
    if let Some(first) = first_failure {
        figure(
            &report,
            S,
            m("first failed save, after typing began"),
            first.duration_since(t0).as_secs_f64(),
            "s",
        );
    }
    figure(
        &report,
        S,
        m("final save once restored (1 = success)"),
        (final_status == "success") as u8 as f64,
        "",
    );
    figure(
        &report,
        S,
        m("acknowledged edits missing from the room"),
        room_lost as f64,
        "edits",
    );
    figure(
        &report,
        S,
        m("edits duplicated in the room"),
        room_dups as f64,
        "edits",
    );
    figure(
        &report,
        S,
        m("acknowledged edits missing from the file"),
        file_lost,
        "edits",
    );
    figure(
        &report,
        S,
        m("edits duplicated in the file"),
        file_dups,
        "edits",
    );
    figure(
        &report,
        S,
        m("file reads checked"),
        checks.reads as f64,
        "reads",
    );
    figure(
        &report,
        S,
        m("file reads that did not parse"),
        checks.unparsable as f64,
        "reads",
    );
    figure(
        &report,
        S,
        m("clients disconnected"),
        closed as f64,
        "clients",
    );
    figure(
        &report,
        S,
        m("leftover temporary files"),
        temp_left as f64,
        "files",
    );
    if let Some(problem) = &checks.first_problem {
        note(
            &report,
            S,
            format!("{tag}: first unparsable read: {problem}"),
        );
    }
    if let Some((mode, replaced)) = read_only_file {
        figure(
            &report,
            S,
            m("file replaced by a save while 0444 (1 = yes)"),
            replaced as u8 as f64,
            "",
        );
        note(
            &report,
            S,
            format!("{tag}: its mode after those saves: {mode:o}"),
        );
    }
    if trouble == Trouble::ReadOnlyDir && root {
        note(
            &report,
            S,
            "read-only dir: chmod 0555 plus a read-only bind mount (root ignores mode bits)",
        );
    }
    drop(mounts);
    drop(server);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. A kernel killed during a run

/// The Python whose ipykernel the kernels start from, if there is one.
fn kernel_python() -> Option<PathBuf> {
    let python = std::env::var_os("QUIRE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| quire_tests::repo_root().join("tests/.venv/bin/python"));
    let has_ipykernel = Command::new(&python)
        .args(["-c", "import ipykernel"])
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    has_ipykernel.then_some(python)
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

async fn kernel_killed(report: Shared) -> Result<()> {
    const S: &str = "3";
    println!("--- 3. a kernel killed (SIGKILL) during a run ---");
    if kernel_python().is_none() {
        note(
            &report,
            S,
            "skipped: no Python with ipykernel (set QUIRE_TEST_PYTHON or run tests/run-all.sh)",
        );
        return Ok(());
    }
    const RUN: Duration = Duration::from_secs(60);
    let long = "import time\nfor i in range(600):\n    print(i, flush=True)\n    time.sleep(0.05)";
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&[long, "1+1"]))]);
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    let mut bob = YClient::join(&server, "nb.ipynb").await;
    let asked = Instant::now();
    let answer = ada.execute("cell-0").await;
    if answer["status"] != "queued" {
        bail!("the run was not queued: {answer}");
    }
    let printing = bob
        .pump_until(RUN, |c| {
            c.run_status("cell-0") == "running" && !c.cell("cell-0").outputs.is_empty()
        })
        .await;
    if !printing {
        bail!("the long cell printed nothing within {RUN:?}");
    }
    figure(
        &report,
        S,
        "run asked to first output (kernel start included)",
        asked.elapsed().as_secs_f64(),
        "s",
    );
    // Let it print a little longer, then kill the kernel: a child of the server running ipykernel.
    bob.pump_for(Duration::from_millis(500)).await;
    let server_pid = server.child.id();
    let kernels: Vec<u32> = usage::process_tree(server_pid)
        .into_iter()
        .filter(|&pid| pid != server_pid && cmdline(pid).contains("ipykernel"))
        .collect();
    if kernels.is_empty() {
        bail!("no ipykernel process under the server (pid {server_pid})");
    }
    for pid in &kernels {
        run("kill", &["-9", &pid.to_string()])?;
    }
    let killed = Instant::now();
    let mut dead_at = None;
    let mut finished_at = None;
    bob.pump_until(Duration::from_secs(30), |c| {
        if dead_at.is_none() && c.state()["kernel"]["status"] == "dead" {
            dead_at = Some(Instant::now());
        }
        if finished_at.is_none()
            && matches!(c.run_status("cell-0").as_str(), "ok" | "error" | "aborted")
        {
            finished_at = Some(Instant::now());
        }
        dead_at.is_some() && finished_at.is_some()
    })
    .await;
    let ms = |t: Option<Instant>| {
        t.map_or(f64::NAN, |t| {
            t.duration_since(killed).as_secs_f64() * 1000.0
        })
    };
    figure(
        &report,
        S,
        "kill to state.kernel.status = dead, seen by a client",
        ms(dead_at),
        "ms",
    );
    figure(
        &report,
        S,
        "kill to the run marked finished, seen by a client",
        ms(finished_at),
        "ms",
    );
    let entry = bob.state()["executions"]["cell-0"].clone();
    let status = entry["status"].as_str().unwrap_or("(none)").to_string();
    figure(
        &report,
        S,
        "run marked aborted (1 = yes)",
        (status == "aborted") as u8 as f64,
        "",
    );
    note(
        &report,
        S,
        format!(
            "the run's entry: status {status:?}, reason {}",
            entry["reason"]
        ),
    );
    let printed = bob
        .cell("cell-0")
        .outputs
        .first()
        .map(|o| o["text"].as_str().unwrap_or("").lines().count())
        .unwrap_or(0);
    figure(
        &report,
        S,
        "lines the cell printed before the kill, kept in its output",
        printed as f64,
        "lines",
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let zombies = usage::process_tree(server_pid)
        .into_iter()
        .filter(|&pid| process_state(pid) == Some('Z'))
        .count();
    figure(
        &report,
        S,
        "zombie processes left under the server",
        zombies as f64,
        "processes",
    );
    // A run asked for on the dead kernel.
    let on_dead = ada.execute("cell-1").await;
    let on_dead_status = if on_dead["status"] == "queued" {
        ada.wait_run("cell-1", RUN).await
    } else {
        format!("refused: {}", on_dead["reason"])
    };
    note(
        &report,
        S,
        format!("a run asked for on the dead kernel: {on_dead_status}"),
    );
    // Restart, then run again.
    let restarting = Instant::now();
    ada.request(json!({"type": "restart", "request_id": 1}))
        .await;
    let restarted = ada
        .pump_until(RUN, |c| c.state()["kernel"]["status"] == "idle")
        .await;
    figure(
        &report,
        S,
        "restart works (1 = yes)",
        restarted as u8 as f64,
        "",
    );
    figure(
        &report,
        S,
        "restart asked to kernel idle",
        restarting.elapsed().as_secs_f64() * 1000.0,
        "ms",
    );
    let running = Instant::now();
    let answer = ada.execute("cell-1").await;
    let after = if answer["status"] == "queued" {
        ada.wait_run("cell-1", RUN).await
    } else {
        format!("refused: {}", answer["reason"])
    };
    let result = ada
        .cell("cell-1")
        .outputs
        .first()
        .map(|o| o["data"]["text/plain"].clone())
        .unwrap_or(Value::Null);
    figure(
        &report,
        S,
        "a new run after the restart is ok with 1+1 = 2 (1 = yes)",
        (after == "ok" && result == "2") as u8 as f64,
        "",
    );
    figure(
        &report,
        S,
        "new run asked to finished",
        running.elapsed().as_secs_f64() * 1000.0,
        "ms",
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4. A client that never reads

/// Whether an awareness update removes `client` (its state is `null`).
fn removes(update: &[u8], client: u64) -> bool {
    use collab::protocol::read_var_uint;
    let mut at = 0;
    let next = |data: &[u8], at: &mut usize| -> Option<u64> {
        let (value, used) = read_var_uint(&data[*at..])?;
        *at += used;
        Some(value)
    };
    let Some(count) = next(update, &mut at) else {
        return false;
    };
    for _ in 0..count {
        let (Some(id), Some(_clock), Some(len)) = (
            next(update, &mut at),
            next(update, &mut at),
            next(update, &mut at),
        ) else {
            return false;
        };
        let end = (at + len as usize).min(update.len());
        if id == client && &update[at..end] == b"null" {
            return true;
        }
        at = end;
    }
    false
}

/// A loopback TCP connection as /proc/net/tcp shows it, from `local` port to `remote` port:
/// (state: 1 established, 8 close-wait…; bytes in the send queue; bytes received, unread).
fn tcp_entry(local: u16, remote: u16) -> Option<(u8, u64, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = |f: &str| {
            f.rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
        };
        if port(fields.get(1)?) != Some(local) || port(fields.get(2)?) != Some(remote) {
            return None;
        }
        let state = u8::from_str_radix(fields.get(3)?, 16).ok()?;
        let (tx, rx) = fields.get(4)?.split_once(':')?;
        Some((
            state,
            u64::from_str_radix(tx, 16).ok()?,
            u64::from_str_radix(rx, 16).ok()?,
        ))
    })
}

/// The inode of a loopback TCP socket, from `local` port to `remote` port (/proc/net/tcp's tenth
/// column; 0 once no process holds the socket, as for a connection the kernel still keeps after
/// its owner closed it, to send what was already written).
fn tcp_inode(local: u16, remote: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = |f: &str| {
            f.rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
        };
        if port(fields.get(1)?) != Some(local) || port(fields.get(2)?) != Some(remote) {
            return None;
        }
        fields.get(9)?.parse().ok()
    })
}

/// Whether process `pid` holds a file descriptor on socket `inode`.
fn holds_socket(pid: u32, inode: u64) -> bool {
    let wanted = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten().any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == wanted.as_str())
            })
        })
        .unwrap_or(false)
}

/// One stage of scenario 4: the typists type (`pad` extra characters per edit) until `limit`
/// passes or, with `until_drop`, the stalled client has been let go; meanwhile the stalled
/// client renews its presence every 10 s without reading, and the server is watched.
struct Stage {
    edits: Vec<Edit>,
    clients: Vec<YClient>,
    rss_max_kib: u64,
    tcp_max_bytes: u64,
    server_closed: bool,
}

#[allow(clippy::too_many_arguments)]
async fn stage(
    clients: Vec<YClient>,
    counters: &mut Vec<u64>,
    pad: usize,
    limit: Duration,
    until_drop: bool,
    stalled: &mut Option<YClient>,
    left_at: &Arc<Mutex<Option<Instant>>>,
    server: &TestServer,
    label: &str,
) -> Result<Stage> {
    let stop = Arc::new(AtomicBool::new(false));
    let spec = Typing {
        until: Instant::now() + limit,
        stop: stop.clone(),
        awareness: true,
        pad,
        replace_pad: true,
    };
    let typing = {
        let mut counters = counters.clone();
        tokio::spawn(async move {
            let typed = type_all(clients, &mut counters, &spec).await;
            (typed, counters)
        })
    };
    let pid = server.child.id();
    let began = Instant::now();
    let stalled_port = stalled.as_ref().and_then(|c| c.local_port()).unwrap_or(0);
    let mut out = Stage {
        edits: Vec::new(),
        clients: Vec::new(),
        rss_max_kib: 0,
        tcp_max_bytes: 0,
        server_closed: false,
    };
    let mut last_renewal = Instant::now();
    let mut last_print = Instant::now();
    while !typing.is_finished() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        out.rss_max_kib = out.rss_max_kib.max(usage::rss_kib(pid));
        if let Some(client) = stalled.as_mut() {
            let at_client = tcp_entry(stalled_port, server.port);
            let at_server = tcp_entry(server.port, stalled_port);
            let queued = at_client.map_or(0, |e| e.2) + at_server.map_or(0, |e| e.1);
            out.tcp_max_bytes = out.tcp_max_bytes.max(queued);
            out.server_closed |= at_client.is_some_and(|e| e.0 != 1);
            if last_renewal.elapsed() > Duration::from_secs(10) {
                // y-protocols renews presence every 15 s; a client that stopped reading may well
                // still be sending.
                let _ = client.send_awareness(0).await;
                last_renewal = Instant::now();
            }
            if last_print.elapsed() > Duration::from_secs(10) {
                println!(
                    "    {label}, {:>3.0} s: {queued} bytes waiting in TCP for the stalled client, server RSS {:.1} MiB",
                    began.elapsed().as_secs_f64(),
                    usage::rss_kib(pid) as f64 / 1024.0
                );
                last_print = Instant::now();
            }
        }
        if until_drop && left_at.lock().unwrap().is_some() {
            stop.store(true, Ordering::Relaxed);
        }
    }
    let (typed, new_counters) = typing.await.expect("typing");
    *counters = new_counters;
    for (client, edits) in typed {
        out.edits.extend(edits);
        out.clients.push(client);
    }
    Ok(out)
}

async fn stalled_client(report: Shared) -> Result<()> {
    const S: &str = "4";
    const PASTE: usize = 2000;
    println!("--- 4. a client that never reads, beside {CLIENTS} typing (an edit and a cursor move each, {EDITS_PER_S}/s) ---");
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&[""]))]);
    let pid = server.child.id();
    let room = room_of(&server, "nb.ipynb");
    let clients = join_typists(&room, CLIENTS).await?;
    let mut counters = vec![0u64; CLIENTS];
    // An observer that reads everything, to see when the room lets the stalled client go: its
    // presence is removed then (the stalled client renews it, so it does not expire).
    let (file_id, session) = server.session("nb.ipynb");
    let mut observer = YClient::connect(&server.room_url(&file_id, &session)).await;
    observer.sync().await;
    let watched = Arc::new(AtomicU64::new(0));
    let left_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let observing = Arc::new(AtomicBool::new(true));
    let observer_task = {
        let (watched, left_at, observing) = (watched.clone(), left_at.clone(), observing.clone());
        tokio::spawn(async move {
            while observing.load(Ordering::Relaxed) {
                observer.pump_for(Duration::from_millis(100)).await;
                let id = watched.load(Ordering::Relaxed);
                for payload in observer.awareness.drain(..) {
                    if id != 0 && removes(&payload, id) {
                        left_at.lock().unwrap().get_or_insert_with(Instant::now);
                    }
                }
                observer.raw.clear();
                if observer.closed.is_some() {
                    break;
                }
            }
        })
    };
    let mut none = None;

    // A: the typists alone.
    let mut a = stage(
        clients,
        &mut counters,
        0,
        TYPING,
        false,
        &mut none,
        &left_at,
        &server,
        "alone",
    )
    .await?;
    let rss_alone = usage::rss_kib(pid);

    // B: a client joins, shows its presence and never reads again; typing goes on for 40 s.
    let mut stalled_client = YClient::join_room(&room, None, JOIN).await?;
    stalled_client.send_awareness(0).await?;
    watched.store(stalled_client.doc.client_id().get(), Ordering::Relaxed);
    let stall_began = Instant::now();
    // The server's socket for it, to see whether the server process lets it go (the client's
    // view of the TCP connection cannot tell: data the server wrote before closing is still
    // delivered, its FIN after it, and the connection stays established until the client reads).
    let server_end = stalled_client
        .local_port()
        .and_then(|port| tcp_inode(server.port, port))
        .filter(|&inode| inode != 0);
    let mut stalled = Some(stalled_client);
    let mut b = stage(
        std::mem::take(&mut a.clients),
        &mut counters,
        0,
        Duration::from_secs(40),
        true,
        &mut stalled,
        &left_at,
        &server,
        "typing",
    )
    .await?;
    // C: if it is still there, the typists paste (2,000 characters an edit) for up to 60 s.
    let dropped_in_b = left_at.lock().unwrap().is_some();
    let (c, after_pad) = if dropped_in_b {
        (None, 0)
    } else {
        let c = stage(
            std::mem::take(&mut b.clients),
            &mut counters,
            PASTE,
            Duration::from_secs(60),
            true,
            &mut stalled,
            &left_at,
            &server,
            "pasting",
        )
        .await?;
        (Some(c), PASTE)
    };
    let dropped_at = *left_at.lock().unwrap();
    let (clients, c) = match c {
        Some(mut c) => (std::mem::take(&mut c.clients), Some(c)),
        None => (std::mem::take(&mut b.clients), None),
    };
    // D: five more seconds of the same load once it is gone.
    let mut d = stage(
        clients,
        &mut counters,
        after_pad,
        Duration::from_secs(5),
        false,
        &mut stalled,
        &left_at,
        &server,
        "after the drop",
    )
    .await?;
    let rss_end = usage::rss_kib(pid);
    // E: the stalled client stays silent for 15 s more; does the server let its socket go?
    let stalled_port = stalled.as_ref().and_then(|c| c.local_port()).unwrap_or(0);
    let mut fd_released_at = None;
    if let Some(inode) = server_end {
        for _ in 0..150 {
            if !holds_socket(pid, inode) {
                fd_released_at = Some(Instant::now());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut held_until_read = true;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if tcp_entry(stalled_port, server.port).is_none_or(|e| e.0 != 1) {
            held_until_read = false;
            break;
        }
    }
    let held_for = dropped_at.map_or(f64::NAN, |t| t.elapsed().as_secs_f64());
    let state_before_reading = tcp_entry(stalled_port, server.port).map(|e| e.0);
    let server_end_before_reading = tcp_entry(server.port, stalled_port);

    // The stalled client reads again: what was waiting for it, and how it ends.
    let mut stalled = stalled.take().expect("the stalled client");
    let mut frames = 0u64;
    let reading = Instant::now();
    let mut closed = false;
    while reading.elapsed() < Duration::from_secs(30) {
        match tokio::time::timeout(Duration::from_secs(5), stalled.next_event()).await {
            Err(_) => break,
            Ok(Event::Closed) => {
                closed = true;
                break;
            }
            Ok(_) => frames += 1,
        }
    }
    observing.store(false, Ordering::Relaxed);
    let _ = observer_task.await;
    let unacked = [Some(&a), Some(&b), c.as_ref(), Some(&d)]
        .into_iter()
        .flatten()
        .flat_map(|s| s.edits.iter())
        .filter(|e| e.acked.is_none())
        .count();
    let typists_closed = d
        .clients
        .iter()
        .filter(|c| c.close_code().is_some())
        .count();
    for client in std::mem::take(&mut d.clients) {
        client.close().await;
    }

    let lat = |edits: &[Edit]| latencies_ms(edits.iter());
    let (la, lb, ld) = (lat(&a.edits), lat(&b.edits), lat(&d.edits));
    figure(
        &report,
        S,
        "typists alone: echo latency p50",
        percentile(&la, 0.5),
        "ms",
    );
    figure(
        &report,
        S,
        "typists alone: echo latency p99",
        percentile(&la, 0.99),
        "ms",
    );
    figure(
        &report,
        S,
        "typing beside the stalled client: echo latency p50",
        percentile(&lb, 0.5),
        "ms",
    );
    figure(
        &report,
        S,
        "typing beside the stalled client: echo latency p99",
        percentile(&lb, 0.99),
        "ms",
    );
    if let Some(c) = &c {
        let lc = lat(&c.edits);
        figure(
            &report,
            S,
            "pasting beside the stalled client: echo latency p50",
            percentile(&lc, 0.5),
            "ms",
        );
        figure(
            &report,
            S,
            "pasting beside the stalled client: echo latency p99",
            percentile(&lc, 0.99),
            "ms",
        );
    }
    let after = if c.is_some() { "pasting" } else { "typing" };
    figure(
        &report,
        S,
        format!("{after} after it was dropped: echo latency p50"),
        percentile(&ld, 0.5),
        "ms",
    );
    figure(
        &report,
        S,
        format!("{after} after it was dropped: echo latency p99"),
        percentile(&ld, 0.99),
        "ms",
    );
    figure(
        &report,
        S,
        "typists' edits never echoed",
        unacked as f64,
        "edits",
    );
    figure(
        &report,
        S,
        "typists disconnected",
        typists_closed as f64,
        "clients",
    );
    figure(
        &report,
        S,
        "stalled client dropped by the room (1 = yes)",
        dropped_at.is_some() as u8 as f64,
        "",
    );
    figure(
        &report,
        S,
        "stalled client dropped, after it stopped reading",
        dropped_at.map_or(f64::NAN, |t| t.duration_since(stall_began).as_secs_f64()),
        "s",
    );
    if dropped_at.is_some() {
        note(
            &report,
            S,
            format!(
                "it was dropped while the others were {}",
                if c.is_some() {
                    "pasting (typing alone did not fill its queue in 40 s)"
                } else {
                    "typing"
                }
            ),
        );
    }
    let tcp_max = [Some(&b), c.as_ref()]
        .into_iter()
        .flatten()
        .map(|s| s.tcp_max_bytes)
        .max()
        .unwrap_or(0);
    figure(
        &report,
        S,
        "most bytes waiting in TCP buffers for it",
        tcp_max as f64 / 1024.0,
        "KiB",
    );
    if server_end.is_some() {
        figure(
            &report,
            S,
            "server process let go of its socket (file descriptor closed; 1 = yes)",
            fd_released_at.is_some() as u8 as f64,
            "",
        );
        if let (Some(dropped), Some(released)) = (dropped_at, fd_released_at) {
            // (Looked for only once the 5 s after the drop are over: an upper bound.)
            figure(
                &report,
                S,
                "  it had, when first looked for after the drop",
                released.saturating_duration_since(dropped).as_secs_f64(),
                "s",
            );
        }
    } else {
        note(
            &report,
            S,
            "the server's socket for it was not found in /proc/net/tcp",
        );
    }
    let server_closed = [Some(&b), c.as_ref(), Some(&d)]
        .into_iter()
        .flatten()
        .any(|s| s.server_closed);
    figure(
        &report,
        S,
        "client saw its TCP connection closed while it did not read (1 = yes)",
        server_closed as u8 as f64,
        "",
    );
    if dropped_at.is_some() {
        figure(
            &report,
            S,
            "its TCP connection still established when it read again (1 = yes)",
            held_until_read as u8 as f64,
            "",
        );
        figure(&report, S, "  that was after the drop", held_for, "s");
    }
    note(&report, S, format!("its TCP state when it read again: {state_before_reading:?} (1 = established, 8 = close-wait)"));
    note(
        &report,
        S,
        format!(
            "the server's end then (state, bytes unsent, bytes unread): {server_end_before_reading:?} \
             (4 = fin-wait-1: closed by the server, kept by the kernel to send what it had written)"
        ),
    );
    figure(
        &report,
        S,
        "frames it then read before the close",
        frames as f64,
        "frames",
    );
    figure(
        &report,
        S,
        "MiB it then read",
        stalled.bytes_in as f64 / (1 << 20) as f64,
        "MiB",
    );
    figure(
        &report,
        S,
        "close code it then received",
        match (closed, stalled.close_code()) {
            (true, Some(code)) => code as f64,
            _ => f64::NAN,
        },
        "",
    );
    if !closed {
        note(&report, S, "the stalled client's connection was still open after it read for 30 s (or 5 s of silence)");
    }
    let rss_stalled = [Some(&b), c.as_ref()]
        .into_iter()
        .flatten()
        .map(|s| s.rss_max_kib)
        .max()
        .unwrap_or(0);
    figure(
        &report,
        S,
        "server RSS, typists alone",
        rss_alone as f64 / 1024.0,
        "MiB",
    );
    figure(
        &report,
        S,
        "server RSS, max while stalled",
        rss_stalled as f64 / 1024.0,
        "MiB",
    );
    figure(
        &report,
        S,
        "server RSS, 5 s after the drop",
        rss_end as f64 / 1024.0,
        "MiB",
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------

type Scenario = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let only: Vec<String> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    let wanted = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    // The harness points servers at a Python's kernelspecs; without the test environment, the
    // `python3` on PATH will do for every scenario but the kernel one (which checks for itself).
    if std::env::var_os("QUIRE_TEST_PYTHON").is_none()
        && !quire_tests::repo_root()
            .join("tests/.venv/bin/python")
            .exists()
    {
        let on_path = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("python3"))
                .find(|p| p.is_file())
        });
        if let Some(python) = on_path {
            std::env::set_var("QUIRE_TEST_PYTHON", python);
        }
    }
    let report: Shared = Arc::default();
    let mut failures: Vec<(String, String)> = Vec::new();
    let scenarios = [
        ("1", "kill -9 under load"),
        ("2", "disk full"),
        ("2", "read-only file"),
        ("2", "read-only directory"),
        ("3", "kernel killed"),
        ("4", "client that never reads"),
    ];
    for (i, (number, name)) in scenarios.into_iter().enumerate() {
        if !wanted(number) {
            continue;
        }
        let r = report.clone();
        let scenario: Scenario = match i {
            0 => Box::pin(kill_under_load(r)),
            1 => Box::pin(saves_in_trouble(r, Trouble::DiskFull)),
            2 => Box::pin(saves_in_trouble(r, Trouble::ReadOnlyFile)),
            3 => Box::pin(saves_in_trouble(r, Trouble::ReadOnlyDir)),
            4 => Box::pin(kernel_killed(r)),
            _ => Box::pin(stalled_client(r)),
        };
        // Each on a task of its own: a panic in the harness ends that scenario, not the run.
        let outcome = tokio::spawn(scenario).await;
        let error = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => format!("{e:#}"),
            Err(e) => match e.try_into_panic() {
                Ok(panic) => panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panicked".into()),
                Err(e) => e.to_string(),
            },
        };
        println!("{number}   FAILED ({name}): {error}");
        failures.push((format!("{number} {name}"), error));
    }

    let report = report.lock().unwrap();
    println!();
    println!("Quire under chaos ({})", report::machine());
    println!("{:-<96}", "");
    let mut last = "";
    for f in &report.figures {
        if f.scenario != last {
            let title = match f.scenario {
                "1" => "1  kill -9 under load",
                "2" => "2  saves in trouble",
                "3" => "3  kernel killed mid-run",
                _ => "4  a client that never reads",
            };
            println!("{title}");
            last = f.scenario;
        }
        println!(
            "   {:<70} {:>12} {}",
            f.metric,
            format_value(f.value),
            f.unit
        );
    }
    for (scenario, text) in &report.notes {
        println!("   [{scenario}] {text}");
    }
    for (scenario, error) in &failures {
        println!("   FAILED {scenario}: {error}");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| quire_tests::repo_root().join("target"));
    let path = target.join("chaos/results.json");
    let json = json!({
        "machine": report::machine(),
        "figures": report.figures.iter().map(|f| json!({
            "scenario": f.scenario, "metric": f.metric,
            "value": if f.value.is_finite() { json!(f.value) } else { Value::Null },
            "unit": f.unit,
        })).collect::<Vec<_>>(),
        "notes": report.notes.iter().map(|(s, t)| json!({"scenario": s, "note": t})).collect::<Vec<_>>(),
        "failures": failures.iter().map(|(s, e)| json!({"scenario": s, "error": e})).collect::<Vec<_>>(),
    });
    std::fs::create_dir_all(path.parent().unwrap()).expect("target/chaos");
    std::fs::write(&path, serde_json::to_vec_pretty(&json).unwrap()).expect("results.json written");
    println!("wrote {}", path.display());
    if !failures.is_empty() {
        std::process::exit(1);
    }
}
