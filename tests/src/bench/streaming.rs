//! S7, output streaming: a kernel's output relayed by Quire to watching clients, beside a bare
//! ZeroMQ subscriber on the same kernel's iopub socket.

use std::time::{Duration, Instant};

use super::percentile;
use crate::{notebook_with, TestServer, YClient};

/// Lines per second to the bare subscriber and (on average) to the watchers, and how long
/// after the subscriber each watcher saw the same output.
pub struct Streaming {
    pub ceiling_lines_per_s: f64,
    pub watcher_lines_per_s: f64,
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
}

/// The length of the first output's text in cell `index`, read without converting the document.
fn stream_length(client: &YClient, index: u32) -> usize {
    use yrs::{Array, Map, Out, ReadTxn, Text, Transact};
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

/// Output streaming: a kernel prints `lines` lines as fast as it can; `watchers` clients watch
/// the cell fill.
/// A bare ZeroMQ subscriber on the same kernel's iopub gives the ceiling, and the time each
/// iopub message reached it is the reference for the watchers' latency.
pub async fn output_streaming(lines: usize, watchers: usize) -> Streaming {
    use zeromq::{Socket, SocketRecv};
    let code = format!("for i in range({lines}):\n    print(i)");
    let cells = ["1", code.as_str()];
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
    let mut t0 = Instant::now();
    for mut client in clients {
        if first {
            t0 = Instant::now();
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
    // Rates count from the moment the run was asked for, for the subscriber and the watchers.
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
    Streaming {
        ceiling_lines_per_s: ceiling,
        watcher_lines_per_s: mean_rate,
        lag_p50_ms: percentile(&latencies, 0.5),
        lag_p99_ms: percentile(&latencies, 0.99),
    }
}
