//! The scenarios, each with a quick setting (CI: proves every server answers) and a full one.
//!
//! Latency is end to end: an edit's send time is recorded under its id in the document (the
//! author's client id and the edit's clock), and a receiver that has applied an update looks
//! up the send time of every edit it newly holds. Server CPU and memory come from /proc.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use yrs::{ReadTxn, Transact};

use super::peers::{Kind, Peer};
use super::{percentile, usage, Figures, Metric, Setting};
use crate::client::{Event, Framing, Room, YClient};

/// The documents every scenario uses: `.ipynb` files for the servers that read them, and the
/// same content as one Yjs update for the others (the first client sends it).
pub struct Workload {
    pub setting: Setting,
    pub files: Vec<(String, Vec<u8>)>,
    seeds: HashMap<String, Arc<Vec<u8>>>,
    big_cells: u32,
}

/// A notebook's file bytes and the same content as one Yjs update.
type Template = (Vec<u8>, Arc<Vec<u8>>);

/// A notebook of `cells` code cells with `total_bytes` of outputs spread over them.
pub fn big_notebook(cells: usize, total_bytes: usize) -> Vec<u8> {
    let per_cell = total_bytes / cells.max(1);
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

impl Workload {
    pub fn new(setting: Setting) -> Workload {
        let quick = setting == Setting::Quick;
        let (cells, bytes) = if quick {
            (100, 1_000_000)
        } else {
            (1000, 10_000_000)
        };
        // Three contents, each turned into its Yjs update once (its items carry Quire's fixed
        // 32-bit loading client id), then named for every document that uses it.
        let template = |bytes: Vec<u8>| {
            let notebook = collab::Notebook::from_ipynb(&bytes).expect("bench notebook");
            let seed = notebook
                .to_doc()
                .transact()
                .encode_state_as_update_v1(&Default::default());
            (bytes, Arc::new(seed))
        };
        let big = template(big_notebook(cells, bytes));
        let empty = template(crate::notebook_with(&[""]));
        let small = template(crate::notebook_with(&[
            "import numpy as np",
            "x = np.arange(10)",
        ]));
        let mut names: Vec<(String, &Template)> = vec![
            ("s10-empty".into(), &empty),
            ("s10-big".into(), &big),
            ("s5-big".into(), &big),
            ("s6-big".into(), &big),
        ];
        names.extend(
            s1_sizes(setting)
                .into_iter()
                .map(|n| (format!("s1-{n}"), &empty)),
        );
        names.extend(
            s2_rates(setting)
                .into_iter()
                .map(|r| (format!("s2-{r}"), &empty)),
        );
        names.extend((0..s4_shape(setting).0).map(|i| (format!("s4-{i}"), &small)));
        let files = names
            .iter()
            .map(|(name, (bytes, _))| (name.clone(), bytes.clone()))
            .collect();
        let seeds = names
            .into_iter()
            .map(|(name, (_, seed))| (name, seed.clone()))
            .collect();
        Workload {
            setting,
            files,
            seeds,
            big_cells: cells as u32,
        }
    }

    fn seed(&self, document: &str) -> Arc<Vec<u8>> {
        self.seeds[document].clone()
    }
}

fn s1_sizes(setting: Setting) -> Vec<usize> {
    match setting {
        Setting::Quick => vec![2],
        Setting::Full => vec![2, 5, 20],
    }
}

fn s2_rates(setting: Setting) -> Vec<u32> {
    match setting {
        Setting::Quick => vec![2],
        Setting::Full => vec![1, 2, 4, 8, 16, 32, 64],
    }
}

/// (rooms, connections)
fn s4_shape(setting: Setting) -> (usize, usize) {
    match setting {
        Setting::Quick => (20, 80),
        Setting::Full => (2500, 10_000),
    }
}

/// Whether a scenario means anything for a server.
pub fn applies(scenario: &str, kind: Kind) -> bool {
    match scenario {
        // The relay has no document to load or grow.
        "S5" | "S10" => kind != Kind::Broadcast,
        // Only Quire runs kernels.
        "S7" => kind == Kind::Quire,
        _ => true,
    }
}

pub async fn run_one(
    scenario: &str,
    setting: Setting,
    peer: &mut Peer,
    workload: &Workload,
) -> Result<Vec<Metric>> {
    match scenario {
        "S1" => fan_out(peer, workload).await,
        "S2" => saturation(peer, workload).await,
        "S4" => idle_scale(peer, workload).await,
        "S5" => cold_load(peer, workload).await,
        "S6" => warm_join(peer, workload).await,
        "S10" => big_document(peer, workload).await,
        "S7" => output_streaming(setting, peer.kind).await,
        other => bail!("no scenario {other}"),
    }
}

const JOIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Joins `document`; the first client on a server that does not read notebook files gives
/// the document its content. For the relay every client starts from that content locally.
async fn join(room: &Room, workload: &Workload, document: &str) -> Result<YClient> {
    let seed = workload.seed(document);
    if room.framing == Framing::Relay {
        return YClient::join_room(room, Some(&seed), JOIN_TIMEOUT).await;
    }
    let mut client = YClient::join_room(room, None, JOIN_TIMEOUT).await?;
    if client.cell_count() == 0 {
        client.seed(&seed).await?;
    }
    Ok(client)
}

/// When each client sent each of its edits (nanoseconds after `origin`), by client id.
struct Ledger {
    origin: Instant,
    index: HashMap<u64, usize>,
    base_clock: Vec<u32>,
    sent: Vec<Vec<AtomicU64>>,
}

struct Typing {
    /// Edit-to-peer latencies, ms.
    latencies: Vec<f64>,
    edits: usize,
    expected: usize,
    cpu_ms: f64,
}

impl Typing {
    fn delivered(&self) -> f64 {
        self.latencies.len() as f64 / self.expected.max(1) as f64
    }
}

/// `clients` clients in one room each type `rate` characters a second for `seconds` (and move
/// their cursor with each when `cursor`); every client measures when the others' edits reach it.
async fn typing(
    peer: &mut Peer,
    workload: &Workload,
    document: &str,
    clients: usize,
    rate: f64,
    seconds: f64,
    cursor: bool,
) -> Result<Typing> {
    let room = peer.room(document).await?;
    let mut joined = Vec::with_capacity(clients);
    for _ in 0..clients {
        joined.push(join(&room, workload, document).await?);
    }
    // Everyone must hold the first cell before typing into it.
    for client in &mut joined {
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.cell_count() == 0 {
            if Instant::now() > deadline {
                bail!("a client never received the document's cells");
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), client.next_event()).await;
        }
    }
    let edits = (rate * seconds).round() as usize;
    let mut index = HashMap::new();
    let mut base_clock = Vec::new();
    for (i, client) in joined.iter().enumerate() {
        let id = client.doc.client_id();
        index.insert(id.get(), i);
        base_clock.push(client.doc.transact().state_vector().get(&id));
    }
    let ledger = Arc::new(Ledger {
        origin: Instant::now(),
        index,
        base_clock,
        sent: (0..clients)
            .map(|_| (0..edits).map(|_| AtomicU64::new(0)).collect())
            .collect(),
    });
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(300);
    let end = start + Duration::from_secs_f64(seconds) + Duration::from_secs(2);
    let cpu_before = usage::cpu_ms(peer.pid());
    let mut tasks = Vec::new();
    for (who, client) in joined.into_iter().enumerate() {
        let ledger = ledger.clone();
        let offset = interval.mul_f64(who as f64 / clients as f64);
        tasks.push(tokio::spawn(typist(
            client,
            who,
            ledger,
            start + offset,
            interval,
            edits,
            end,
            cursor,
        )));
    }
    let mut latencies = Vec::new();
    let mut typed = 0;
    for task in tasks {
        let (mine, count) = task.await??;
        latencies.extend(mine);
        typed += count;
    }
    let cpu_ms = usage::cpu_ms(peer.pid()) - cpu_before;
    latencies.sort_by(|a, b| a.total_cmp(b));
    if latencies.is_empty() {
        bail!("no edit reached another client");
    }
    Ok(Typing {
        latencies,
        edits: typed,
        expected: typed * (clients - 1),
        cpu_ms,
    })
}

#[allow(clippy::too_many_arguments)]
async fn typist(
    mut client: YClient,
    who: usize,
    ledger: Arc<Ledger>,
    first: Instant,
    interval: Duration,
    edits: usize,
    end: Instant,
    cursor: bool,
) -> Result<(Vec<f64>, usize)> {
    let me = client.doc.client_id();
    let mut known: HashMap<u64, u32> = client
        .doc
        .transact()
        .state_vector()
        .iter()
        .map(|(id, clock)| (id.get(), *clock))
        .collect();
    let mut latencies = Vec::new();
    let mut typed = 0;
    let mut next = first;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()), if typed < edits => {
                let at = ledger.origin.elapsed().as_nanos() as u64;
                ledger.sent[who][typed].store(at.max(1), Ordering::Relaxed);
                client.type_character().await?;
                if cursor {
                    client.send_awareness(typed as u32).await?;
                }
                typed += 1;
                next = first + interval.mul_f64(typed as f64);
            }
            event = client.next_event() => match event {
                Event::Applied => {
                    let now = ledger.origin.elapsed().as_nanos() as u64;
                    let sv = client.doc.transact().state_vector();
                    for (id, clock) in sv.iter() {
                        if *id == me {
                            continue;
                        }
                        let from = known.insert(id.get(), *clock).unwrap_or(0);
                        let Some(&author) = ledger.index.get(&id.get()) else {
                            continue;
                        };
                        let base = ledger.base_clock[author];
                        for c in from.max(base)..*clock {
                            let sent = ledger.sent[author]
                                .get((c - base) as usize)
                                .map(|t| t.load(Ordering::Relaxed))
                                .unwrap_or(0);
                            if sent > 0 {
                                latencies.push(now.saturating_sub(sent) as f64 / 1e6);
                            }
                        }
                    }
                }
                Event::Closed => bail!("the server closed a typing client's socket"),
                Event::Asked | Event::Other => {}
            },
            _ = tokio::time::sleep_until(end.into()) => break,
        }
    }
    client.close().await;
    Ok((latencies, typed))
}

/// S1: 1 room, 2/5/20 clients typing 5 characters a second each, with a cursor move per
/// keystroke.
async fn fan_out(peer: &mut Peer, workload: &Workload) -> Result<Vec<Metric>> {
    let seconds = match workload.setting {
        Setting::Quick => 1.0,
        Setting::Full => 10.0,
    };
    let mut figures = Figures::new("S1", peer.kind);
    for n in s1_sizes(workload.setting) {
        let t = typing(peer, workload, &format!("s1-{n}"), n, 5.0, seconds, true).await?;
        let l = &t.latencies;
        figures.add(
            format!("{n} clients: latency p50"),
            percentile(l, 0.5),
            "ms",
        );
        figures.add(
            format!("{n} clients: latency p99"),
            percentile(l, 0.99),
            "ms",
        );
        figures.add(
            format!("{n} clients: latency p99.9"),
            percentile(l, 0.999),
            "ms",
        );
        figures.add(
            format!("{n} clients: server CPU per delivered update"),
            t.cpu_ms / l.len() as f64,
            "ms",
        );
        figures.add(
            format!("{n} clients: server CPU per edit"),
            t.cpu_ms / t.edits as f64,
            "ms",
        );
        figures.add(
            format!("{n} clients: updates delivered"),
            t.delivered() * 100.0,
            "%",
        );
    }
    Ok(figures.list)
}

/// S2: 50 clients, a rising typing rate: the highest total rate whose deliveries all arrive
/// with p99 under 50 ms.
async fn saturation(peer: &mut Peer, workload: &Workload) -> Result<Vec<Metric>> {
    let seconds = match workload.setting {
        Setting::Quick => 1.0,
        Setting::Full => 4.0,
    };
    let clients = 50;
    let mut figures = Figures::new("S2", peer.kind);
    let mut held = 0.0;
    let mut held_p99 = f64::NAN;
    for rate in s2_rates(workload.setting) {
        let t = typing(
            peer,
            workload,
            &format!("s2-{rate}"),
            clients,
            rate as f64,
            seconds,
            true,
        )
        .await?;
        let p99 = percentile(&t.latencies, 0.99);
        let total = (clients as u32 * rate) as f64;
        println!(
            "S2   {:<22} {total:>6} edits/s: p99 {p99:.1} ms, {:.1} % delivered",
            peer.kind.name(),
            t.delivered() * 100.0
        );
        if p99 < 50.0 && t.delivered() >= 0.99 {
            held = total;
            held_p99 = p99;
        } else {
            break;
        }
    }
    figures.add(
        "50 clients: highest rate held (p99 < 50 ms)",
        held,
        "edits/s",
    );
    figures.add("50 clients: p99 at that rate", held_p99, "ms");
    Ok(figures.list)
}

/// S10: S1's typing (5 clients) on the big notebook against a one-cell one.
async fn big_document(peer: &mut Peer, workload: &Workload) -> Result<Vec<Metric>> {
    let (clients, seconds) = match workload.setting {
        Setting::Quick => (2, 1.0),
        Setting::Full => (5, 10.0),
    };
    let mut figures = Figures::new("S10", peer.kind);
    let mut cpu = Vec::new();
    for (document, label) in [("s10-empty", "1-cell"), ("s10-big", "big")] {
        let t = typing(peer, workload, document, clients, 5.0, seconds, true).await?;
        let per_edit = t.cpu_ms / t.edits as f64;
        figures.add(
            format!("{label} notebook: latency p50"),
            percentile(&t.latencies, 0.5),
            "ms",
        );
        figures.add(
            format!("{label} notebook: latency p99"),
            percentile(&t.latencies, 0.99),
            "ms",
        );
        figures.add(
            format!("{label} notebook: server CPU per edit"),
            per_edit,
            "ms",
        );
        cpu.push(per_edit);
    }
    figures.add(
        "server CPU per edit, big / 1-cell",
        cpu[1] / cpu[0].max(1e-9),
        "x",
    );
    Ok(figures.list)
}

/// S5: a new client on the big notebook: cold (in a freshly started server: the first open of
/// the `.ipynb` for the servers that read files, then a reopen of what the server kept; servers
/// that keep nothing across a restart are not measured cold) and warm (the room already open).
async fn cold_load(peer: &mut Peer, workload: &Workload) -> Result<Vec<Metric>> {
    let document = "s5-big";
    let expected = workload.big_cells;
    let mut figures = Figures::new("S5", peer.kind);
    let room = peer.room(document).await?;
    let seeder = if peer.kind.reads_notebook_files() {
        None
    } else {
        let mut seeder = join(&room, workload, document).await?;
        seeder.resync(JOIN_TIMEOUT).await?;
        Some(seeder)
    };
    let holder = if peer.kind.persists() {
        if peer.kind.reads_notebook_files() {
            // The first open of the notebook file, in a fresh process.
            peer.restart().await?;
            let client = open_timed(peer, document, expected).await?;
            figures.add("cold: first open of the file", client.1, "ms");
            client.0.close().await;
        }
        if let Some(seeder) = seeder {
            seeder.close().await;
        }
        // Give the store time to write, then open what the server kept, in a fresh process.
        tokio::time::sleep(peer.kind.store_delay()).await;
        peer.restart().await?;
        let (client, ms) = open_timed(peer, document, expected)
            .await
            .context("after a restart")?;
        figures.add("cold: reopen after a restart", ms, "ms");
        figures.add("cold: bytes received", client.bytes_in as f64, "bytes");
        client
    } else {
        seeder.expect("a seeded document")
    };
    let room = peer.room(document).await?;
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..3 {
        let start = Instant::now();
        let mut client = YClient::join_room(&room, None, JOIN_TIMEOUT).await?;
        client.wait_cells(expected, JOIN_TIMEOUT).await?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        bytes = client.bytes_in;
        client.close().await;
    }
    times.sort_by(|a, b| a.total_cmp(b));
    figures.add(
        "warm: time until the document is held (median of 3)",
        times[1],
        "ms",
    );
    figures.add("warm: bytes received", bytes as f64, "bytes");
    holder.close().await;
    Ok(figures.list)
}

/// Joins `document` and reads until it holds every cell: the client and the milliseconds.
async fn open_timed(peer: &mut Peer, document: &str, cells: u32) -> Result<(YClient, f64)> {
    let room = peer.room(document).await?;
    let start = Instant::now();
    let mut client = YClient::join_room(&room, None, JOIN_TIMEOUT).await?;
    client.wait_cells(cells, JOIN_TIMEOUT).await?;
    Ok((client, start.elapsed().as_secs_f64() * 1000.0))
}

/// S6: 10 clients join the open big notebook at once: time until each is synced.
async fn warm_join(peer: &mut Peer, workload: &Workload) -> Result<Vec<Metric>> {
    let document = "s6-big";
    let rounds = match workload.setting {
        Setting::Quick => 1,
        Setting::Full => 3,
    };
    let room = peer.room(document).await?;
    let holder = join(&room, workload, document).await?;
    let base = (room.framing == Framing::Relay).then(|| workload.seed(document));
    let cells = workload.big_cells;
    let mut times = Vec::new();
    for _ in 0..rounds {
        let joins = (0..10).map(|_| {
            let room = room.clone();
            let base = base.clone();
            async move {
                let start = Instant::now();
                let mut client =
                    YClient::join_room(&room, base.as_deref().map(|b| &b[..]), JOIN_TIMEOUT)
                        .await?;
                client.wait_cells(cells, JOIN_TIMEOUT).await?;
                let elapsed = start.elapsed().as_secs_f64() * 1000.0;
                anyhow::Ok((elapsed, client))
            }
        });
        let joined = futures_util::future::join_all(joins).await;
        for result in joined {
            let (elapsed, client) = result?;
            times.push(elapsed);
            client.close().await;
        }
    }
    holder.close().await;
    times.sort_by(|a, b| a.total_cmp(b));
    let mut figures = Figures::new("S6", peer.kind);
    figures.add(
        "10 at once: time until the document is held, p50",
        percentile(&times, 0.5),
        "ms",
    );
    figures.add(
        "10 at once: time until the document is held, p99",
        percentile(&times, 0.99),
        "ms",
    );
    Ok(figures.list)
}

/// S4: many idle connections over many rooms, each renewing its awareness every 15 s as
/// y-protocols does: memory per connection and per room, and CPU while idle.
async fn idle_scale(peer: &mut Peer, workload: &Workload) -> Result<Vec<Metric>> {
    let (rooms, connections) = s4_shape(workload.setting);
    let (window, deadline) = match workload.setting {
        Setting::Quick => (Duration::from_secs(3), Duration::from_secs(60)),
        Setting::Full => (Duration::from_secs(30), Duration::from_secs(300)),
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = peer.pid();
    let rss_start = usage::rss_kib(pid);
    let mut addresses = Vec::with_capacity(rooms);
    for i in 0..rooms {
        addresses.push(peer.room(&format!("s4-{i}")).await?);
    }
    // Connections open 32 at a time, each to room `i % open_rooms`, until the deadline (one
    // for opening the rooms, one for the other connections).
    let started = Instant::now();
    let open = |indices: Vec<usize>, open_rooms: usize| {
        let addresses = &addresses;
        let started = Instant::now();
        async move {
            futures_util::stream::iter(indices)
                .map(|i| async move {
                    let room = i % open_rooms;
                    let mut client =
                        join(&addresses[room], workload, &format!("s4-{room}")).await?;
                    client.send_awareness(0).await?;
                    anyhow::Ok(client)
                })
                .buffer_unordered(32)
                .take_while(|_| std::future::ready(started.elapsed() < deadline))
                .collect::<Vec<_>>()
                .await
        }
    };
    let mut clients = Vec::with_capacity(connections);
    for result in open((0..rooms).collect(), rooms).await {
        clients.push(result.context("opening a room")?);
    }
    // A server too slow to open every room within the deadline is measured on those it did.
    let open_rooms = clients.len();
    if open_rooms == 0 {
        bail!("no room opened within {deadline:?}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_rooms = usage::rss_kib(pid);
    let mut failed = 0;
    for result in open((open_rooms..connections).collect(), open_rooms).await {
        match result {
            Ok(client) => clients.push(client),
            Err(_) => failed += 1,
        }
    }
    let opening = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_all = usage::rss_kib(pid);
    let reached = clients.len();
    // Idle: every client renews its awareness every 15 s (spread over the period) and
    // reads what the server sends.
    let stop = Instant::now() + window;
    let cpu_before = usage::cpu_ms(pid);
    let count = clients.len();
    let mut tasks = Vec::with_capacity(count);
    for (i, mut client) in clients.into_iter().enumerate() {
        let first = Instant::now() + Duration::from_secs(15).mul_f64(i as f64 / count as f64);
        tasks.push(tokio::spawn(async move {
            let mut next = first;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next.into()) => {
                        if client.send_awareness(0).await.is_err() {
                            break;
                        }
                        next += Duration::from_secs(15);
                    }
                    event = client.next_event() => if event == Event::Closed { break },
                    _ = tokio::time::sleep_until(stop.into()) => break,
                }
            }
            client
        }));
    }
    let mut alive = Vec::with_capacity(count);
    for task in tasks {
        alive.push(task.await?);
    }
    let cpu_ms = usage::cpu_ms(pid) - cpu_before;
    let per_connection = if reached > open_rooms {
        rss_all.saturating_sub(rss_rooms) as f64 / (reached - open_rooms) as f64
    } else {
        f64::NAN
    };
    let per_room = rss_rooms.saturating_sub(rss_start) as f64 / open_rooms as f64 - per_connection;
    let mut figures = Figures::new("S4", peer.kind);
    figures.add(
        format!("rooms open (of {rooms})"),
        open_rooms as f64,
        "rooms",
    );
    figures.add(
        format!("connections open (of {connections})"),
        reached as f64,
        "connections",
    );
    figures.add(
        "connections opened (synced) per second",
        reached as f64 / opening.as_secs_f64(),
        "connections/s",
    );
    figures.add("memory per connection", per_connection, "KiB");
    figures.add("memory per room (beyond its connection)", per_room, "KiB");
    figures.add(
        "server memory with every connection",
        rss_all as f64 / 1024.0,
        "MiB",
    );
    figures.add(
        "CPU while idle (awareness renewals)",
        cpu_ms / window.as_secs_f64() / 10.0,
        "% of a core",
    );
    if failed > 0 {
        println!("S4   {}: {failed} connections failed", peer.kind.name());
    }
    for client in alive {
        drop(client);
    }
    Ok(figures.list)
}

/// S7 (Quire only; no peer runs kernels): a kernel prints as fast as it can to 5 watching
/// clients, beside a bare ZeroMQ subscriber on the same kernel's iopub.
async fn output_streaming(setting: Setting, kind: Kind) -> Result<Vec<Metric>> {
    let lines = match setting {
        Setting::Quick => 5_000,
        Setting::Full => 200_000,
    };
    // The run uses the test harness's server (its kernelspec comes from the Python that
    // QUIRE_TEST_PYTHON names); a panic there is this scenario's failure.
    let result = tokio::spawn(super::streaming::output_streaming(lines, 5))
        .await
        .map_err(|e| anyhow::anyhow!("output streaming failed: {e}"))?;
    let mut figures = Figures::new("S7", kind);
    figures.add(
        "bare ZeroMQ subscriber on iopub",
        result.ceiling_lines_per_s,
        "lines/s",
    );
    figures.add("5 watchers", result.watcher_lines_per_s, "lines/s");
    figures.add(
        "watchers / bare subscriber",
        result.watcher_lines_per_s / result.ceiling_lines_per_s,
        "fraction",
    );
    figures.add("iopub-to-watcher lag p50", result.lag_p50_ms, "ms");
    figures.add("iopub-to-watcher lag p99", result.lag_p99_ms, "ms");
    Ok(figures.list)
}
