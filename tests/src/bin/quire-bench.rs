//! `cargo run --release -p quire-tests --bin quire-bench`: measures the room against the real
//! (release) binary over loopback websockets and prints figures; it asserts nothing.
//!
//! 1. Edit cost by document size: one writer types one character at a time into a notebook
//!    with one cell and into a 10 MB notebook; a reader measures edit-to-peer latency, and the
//!    server's CPU time per edit is read from /proc.
//! 2. Sync time: a new client joining a 1,000-cell, 10 MB notebook, cold (room loaded from the
//!    file) and warm (room already open), until the server's step 2 is applied.
//! 3. Fan-out: 20 clients in one room each typing 5 characters a second.
//! 4. Idle connections: the server's resident memory per synced, idle connection.
//! 5. Output streaming: a kernel prints 200,000 lines as fast as it can to 5 watching clients;
//!    lines/s and iopub-to-watcher latency beside a bare ZeroMQ subscriber on the same kernel.

use std::time::{Duration, Instant};

use quire_tests::{notebook_with, TestServer, YClient};
use yrs::Text;

const EDITS: usize = 4000;
const EDIT_INTERVAL: Duration = Duration::from_millis(2);

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15; after the ')' they are at 11 and 12.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn ticks_per_second() -> f64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100.0)
}

/// A 1,000-cell notebook with about `total_bytes` of outputs spread over its code cells.
fn big_notebook(cells: usize, total_bytes: usize) -> Vec<u8> {
    let per_cell = total_bytes / cells;
    let payload: String = (0..per_cell)
        .map(|i| (b'A' + (i % 26) as u8) as char)
        .collect();
    let cells: Vec<serde_json::Value> = (0..cells)
        .map(|i| {
            serde_json::json!({
                "cell_type": "code", "id": format!("c{i}"), "metadata": {}, "execution_count": i + 1,
                "source": format!("x_{i} = compute({i})\nx_{i}"),
                "outputs": [{"output_type": "execute_result", "execution_count": i + 1, "metadata": {},
                             "data": {"text/plain": format!("{i}"), "image/png": payload}}]
            })
        })
        .collect();
    serde_json::to_vec(
        &serde_json::json!({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}),
    )
    .unwrap()
}

/// One keystroke at the end of the first cell, sent as an update.
async fn type_one_character(client: &mut YClient) {
    client
        .edit(|txn| {
            let source = collab::notebook::cell_source(txn, 0).unwrap();
            let len = source.len(txn);
            source.insert(txn, len, "x");
        })
        .await;
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn edit_cost(label: &str, notebook: &[u8]) {
    let server =
        TestServer::start_with_config(&[("nb.ipynb", notebook)], "autosave_delay_ms = 1000\n");
    let mut writer = YClient::join(&server, "nb.ipynb").await;
    let mut reader = YClient::join(&server, "nb.ipynb").await;
    let pid = server.child.id();
    let reading = tokio::spawn(async move {
        let mut arrivals = Vec::with_capacity(EDITS);
        let mut seen = 0;
        while arrivals.len() < EDITS {
            reader
                .pump_until(Duration::from_secs(30), |c| c.updates_received > seen)
                .await;
            let now = Instant::now();
            while seen < reader.updates_received {
                seen += 1;
                arrivals.push(now);
            }
            if reader.closed.is_some() {
                break;
            }
        }
        arrivals
    });
    let cpu_before = cpu_ticks(pid);
    let mut sent = Vec::with_capacity(EDITS);
    let start = Instant::now();
    for i in 0..EDITS {
        let due = start + EDIT_INTERVAL * i as u32;
        tokio::time::sleep_until(due.into()).await;
        sent.push(Instant::now());
        type_one_character(&mut writer).await;
        // Keep the writer's socket drained of its echoes.
        writer.pump_for(Duration::from_micros(1)).await;
    }
    let arrivals = reading.await.unwrap();
    let cpu_after = cpu_ticks(pid);
    let mut latencies: Vec<f64> = sent
        .iter()
        .zip(&arrivals)
        .map(|(s, r)| r.duration_since(*s).as_secs_f64() * 1000.0)
        .collect();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let cpu_ms = (cpu_after - cpu_before) as f64 / ticks_per_second() * 1000.0;
    println!(
        "edit cost | {label:<28} | {:>5} edits | p50 {:>6.3} ms | p99 {:>6.3} ms | server CPU {:>6.3} ms/edit",
        arrivals.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        cpu_ms / EDITS as f64
    );
}

async fn sync_time(notebook: &[u8]) {
    let server = TestServer::start(&[("big.ipynb", notebook)]);
    let (file_id, session) = server.session("big.ipynb");
    let url = server.room_url(&file_id, &session);
    for label in [
        "cold (room loads the file)",
        "warm (room already open)",
        "warm, again",
    ] {
        let start = Instant::now();
        let mut client = YClient::connect(&url).await;
        client.sync().await;
        let elapsed = start.elapsed();
        println!(
            "sync time | 1,000 cells, {:.1} MB file | {label:<27} | {:>7.1} ms | {} cells",
            notebook.len() as f64 / 1e6,
            elapsed.as_secs_f64() * 1000.0,
            client.sources().len()
        );
        // Keep one client in the room so it stays loaded.
        std::mem::forget(client);
    }
}

/// One room, `clients` clients each typing `rate` characters per second for `seconds`: latency
/// from an edit leaving its author to each peer having applied it, and server CPU per edit.
async fn fan_out(clients: usize, rate: u32, seconds: u32) {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use yrs::{ReadTxn, Transact};

    let config = std::env::var("QUIRE_BENCH_CONFIG").unwrap_or_default();
    let server = TestServer::start_with_config(&[("nb.ipynb", &notebook_with(&["x"]))], &config);
    let pid = server.child.id();
    let (file_id, session) = server.session("nb.ipynb");
    let url = server.room_url(&file_id, &session);
    let sent: Arc<Mutex<HashMap<(u64, u32), Instant>>> = Arc::default();
    let mut joined = Vec::new();
    for _ in 0..clients {
        let mut client = YClient::connect(&url).await;
        client.sync().await;
        joined.push(client);
    }
    let cpu_before = cpu_ticks(pid);
    let start = Instant::now() + Duration::from_millis(100);
    let interval = Duration::from_secs(1) / rate;
    let edits = (rate * seconds) as usize;
    let mut tasks = Vec::new();
    for (who, mut client) in joined.into_iter().enumerate() {
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let me = client.doc.client_id();
            let mut latencies = Vec::new();
            let mut known: HashMap<u64, u32> = HashMap::new();
            let offset = interval * who as u32 / clients as u32;
            let mut next = start + offset;
            let mut typed = 0;
            let end = start + Duration::from_secs(seconds as u64 + 2);
            while Instant::now() < end {
                if typed < edits && Instant::now() >= next {
                    let clock = client.doc.transact().state_vector().get(&me);
                    sent.lock()
                        .unwrap()
                        .insert((me.get(), clock), Instant::now());
                    type_one_character(&mut client).await;
                    typed += 1;
                    next += interval;
                }
                let wait = next
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(20));
                let seen = client.updates_received;
                client.pump_until(wait, |c| c.updates_received > seen).await;
                let now = Instant::now();
                let sv = client.doc.transact().state_vector();
                for (id, clock) in sv.iter() {
                    if *id == me {
                        continue;
                    }
                    let from = known.insert(id.get(), *clock).unwrap_or(*clock);
                    let sent = sent.lock().unwrap();
                    for c in from..*clock {
                        if let Some(t) = sent.get(&(id.get(), c)) {
                            latencies.push(now.duration_since(*t).as_secs_f64() * 1000.0);
                        }
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let cpu_ms = (cpu_ticks(pid) - cpu_before) as f64 / ticks_per_second() * 1000.0;
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let total_edits = edits * clients;
    println!(
        "fan-out | {clients} clients x {rate} chars/s, {seconds} s | {} deliveries | p50 {:.3} ms | p99 {:.3} ms | server CPU {:.3} ms/edit",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        cpu_ms / total_edits as f64
    );
}

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Server memory per idle connection: `count` synced clients in 10 rooms.
async fn idle_connections(count: usize) {
    let files: Vec<(String, Vec<u8>)> = (0..10)
        .map(|i| (format!("nb{i}.ipynb"), notebook_with(&["x = 1", "y = 2"])))
        .collect();
    let named: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let server = TestServer::start(&named);
    let pid = server.child.id();
    let rooms: Vec<String> = (0..10)
        .map(|i| {
            let (id, session) = server.session(&format!("nb{i}.ipynb"));
            server.room_url(&id, &session)
        })
        .collect();
    // Open the rooms first so their own memory is not counted per connection.
    let mut clients = Vec::new();
    for url in &rooms {
        let mut client = YClient::connect(url).await;
        client.sync().await;
        clients.push(client);
    }
    let before = resident_kib(pid);
    for i in 0..count {
        let mut client = YClient::connect(&rooms[i % rooms.len()]).await;
        client.sync().await;
        clients.push(client);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = resident_kib(pid);
    println!(
        "idle connections | {count} synced clients in 10 rooms | server RSS +{} KiB | {:.1} KiB per connection",
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / count as f64
    );
}

/// The length of the first output's text in cell `index`, read without converting the document.
fn stream_length(client: &YClient, index: u32) -> usize {
    use yrs::{Array, Map, Out, ReadTxn, Transact};
    let txn = client.doc.transact();
    let Some(cells) = txn.get_array("cells") else {
        return 0;
    };
    let Some(Out::YMap(cell)) = cells.get(&txn, index) else {
        return 0;
    };
    let Some(Out::YArray(outputs)) = cell.get(&txn, "outputs") else {
        return 0;
    };
    let Some(Out::YMap(output)) = outputs.get(&txn, 0) else {
        return 0;
    };
    match output.get(&txn, "text") {
        Some(Out::YText(text)) => text.len(&txn) as usize,
        _ => 0,
    }
}

/// The kernel's connection file, found in the server's runtime directory.
fn connection_file(state_dir: &std::path::Path) -> std::path::PathBuf {
    let run = state_dir.join("run");
    std::fs::read_dir(&run)
        .unwrap_or_else(|e| panic!("{}: {e}", run.display()))
        .flatten()
        .map(|e| e.path().join("connection.json"))
        .find(|p| p.exists())
        .expect("a running kernel's connection file")
}

/// Output streaming: a kernel prints as fast as it can; five clients watch the cell fill.
/// A bare ZeroMQ subscriber on the same kernel's iopub gives the ceiling, and the time each
/// iopub message reached it is the reference for the watchers' latency.
async fn output_streaming(lines: usize, watchers: usize, flush_each: bool, other_cells: usize) {
    use zeromq::{Socket, SocketRecv};
    let flush = if flush_each { ", flush=True" } else { "" };
    let code = format!("for i in range({lines}):\n    print(i{flush})");
    let mut cells = vec!["1".to_string(), code];
    cells.extend((0..other_cells).map(|i| format!("# another cell {i}\nx = {i}")));
    let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
    let server = TestServer::start_with_config(
        &[("nb.ipynb", &notebook_with(&cells))],
        "max_output_bytes = 100000000\n",
    );
    let mut clients = Vec::new();
    for _ in 0..watchers {
        clients.push(YClient::join(&server, "nb.ipynb").await);
    }
    // Start the kernel with a warm-up cell.
    clients[0].execute("cell-0").await;
    clients[0].wait_run("cell-0", Duration::from_secs(60)).await;
    let info: jupyter_protocol::ConnectionInfo =
        serde_json::from_slice(&std::fs::read(connection_file(&server.state_dir)).unwrap())
            .unwrap();
    let mut sub = zeromq::SubSocket::new();
    sub.subscribe("").await.unwrap();
    sub.connect(&info.iopub_url()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Progress is counted in characters of output (the text is ASCII): the subscriber records
    // (time, characters so far) at each stream message, the watchers at each update.
    let expected: usize = (0..lines).map(|i| i.to_string().len() + 1).sum();
    let subscriber = tokio::spawn(async move {
        let mut marks: Vec<(Instant, usize)> = Vec::new();
        let mut total = 0;
        while total < expected {
            let Ok(Ok(message)) = tokio::time::timeout(Duration::from_secs(60), sub.recv()).await
            else {
                break;
            };
            let now = Instant::now();
            let frames = message.into_vec();
            let Some(delim) = frames.iter().position(|f| &f[..] == b"<IDS|MSG>") else {
                continue;
            };
            let header: serde_json::Value =
                serde_json::from_slice(&frames[delim + 2]).unwrap_or_default();
            if header["msg_type"] != "stream" {
                continue;
            }
            let content: serde_json::Value =
                serde_json::from_slice(&frames[delim + 5]).unwrap_or_default();
            total += content["text"].as_str().unwrap_or_default().len();
            marks.push((now, total));
        }
        marks
    });
    let mut tasks = Vec::new();
    let mut first = true;
    for mut client in clients {
        if first {
            client.execute("cell-1").await;
            first = false;
        }
        tasks.push(tokio::spawn(async move {
            let mut marks: Vec<(Instant, usize)> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut seen = 0;
            while seen < expected && Instant::now() < deadline {
                let before = client.updates_received;
                client
                    .pump_until(Duration::from_secs(5), |c| c.updates_received > before)
                    .await;
                let now = Instant::now();
                let count = stream_length(&client, 1);
                if count > seen {
                    seen = count;
                    marks.push((now, count));
                }
            }
            marks
        }));
    }
    let reference = subscriber.await.unwrap();
    let mut latencies = Vec::new();
    let mut rates = Vec::new();
    let (t0, _) = reference[0];
    for task in tasks {
        let marks = task.await.unwrap();
        let Some(&(done, _)) = marks.last() else {
            continue;
        };
        rates.push(lines as f64 / done.duration_since(t0).as_secs_f64());
        // Both lists grow monotonically: one sweep pairs each message with its first sighting.
        let mut w = 0;
        for &(t_sub, cumulative) in &reference {
            while w < marks.len() && marks[w].1 < cumulative {
                w += 1;
            }
            if let Some(&(t_watch, _)) = marks.get(w) {
                latencies.push(t_watch.saturating_duration_since(t_sub).as_secs_f64() * 1000.0);
            }
        }
    }
    let (t_last, _) = *reference.last().unwrap();
    let ceiling = lines as f64 / t_last.duration_since(t0).as_secs_f64().max(1e-9);
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mean_rate = rates.iter().sum::<f64>() / rates.len().max(1) as f64;
    let how = if flush_each {
        "print(i, flush=True)"
    } else {
        "print(i)"
    };
    println!(
        "output | {lines} x {how}, {} cells, {} iopub stream messages, {watchers} watchers | bare ZeroMQ subscriber {:.0} lines/s | watchers {:.0} lines/s ({:.2} of the ceiling) | iopub-to-watcher p50 {:.2} ms p99 {:.2} ms",
        other_cells + 2,
        reference.len(),
        ceiling,
        mean_rate,
        mean_rate / ceiling,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    );
}

#[tokio::main]
async fn main() {
    if std::env::var_os("QUIRE_BIN").is_none() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--release", "-p", "quire-server", "--bin", "quire"])
            .current_dir(quire_tests::repo_root())
            .status()
            .unwrap();
        assert!(status.success());
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| quire_tests::repo_root().join("target"));
        std::env::set_var("QUIRE_BIN", target.join("release/quire"));
    }
    // QUIRE_BENCH_ONLY=edit|sync|fan-out|idle|output runs one scenario.
    let only = std::env::var("QUIRE_BENCH_ONLY").unwrap_or_default();
    let run = |name: &str| only.is_empty() || only == name;
    let big = big_notebook(1000, 10_000_000);
    if run("edit") {
        edit_cost("1-cell notebook", &notebook_with(&["x"])).await;
        let label = format!("1,000 cells, {:.1} MB", big.len() as f64 / 1e6);
        edit_cost(&label, &big).await;
    }
    if run("sync") {
        sync_time(&big).await;
    }
    if run("fan-out") {
        fan_out(20, 5, 10).await;
    }
    if run("idle") {
        idle_connections(2000).await;
    }
    if run("output") {
        output_streaming(200_000, 5, false, 0).await;
        output_streaming(20_000, 5, true, 0).await;
        output_streaming(20_000, 5, true, 1000).await;
    }
}
