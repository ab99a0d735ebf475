//! Limits that hold under attack: what one hostile client sends cannot be amplified by the
//! room, grow the server's memory for good, or stall other rooms.

use std::time::Duration;

use collab::awareness::encode_update;
use collab::protocol::encode_awareness;
use futures_util::SinkExt;
use quire_tests::client::Event;
use quire_tests::{notebook_with, TestServer, YClient};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// The server's resident memory, in bytes, from /proc/<pid>/status.
fn rss_bytes(server: &TestServer) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/<pid>/status");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// An awareness update of many entries, hand-made as a hostile client would.
fn many_entries(entries: impl Iterator<Item = (u64, u64, Value)>) -> Vec<u8> {
    let entries: Vec<_> = entries.collect();
    let mut out = Vec::new();
    collab::protocol::write_var_uint(&mut out, entries.len() as u64);
    for (client, clock, state) in entries {
        collab::protocol::write_var_uint(&mut out, client);
        collab::protocol::write_var_uint(&mut out, clock);
        collab::protocol::write_var_bytes(&mut out, state.to_string().as_bytes());
    }
    out
}

/// Opens a watch-only link as a guest called `name`; returns the guest cookie.
fn watch_only_guest(server: &TestServer, file_id: &str, name: &str) -> String {
    let (status, reply) = server.http(
        "POST",
        &format!("/api/sharing/{file_id}/links"),
        Some(&json!({"role": "viewer"}).to_string()),
    );
    assert_eq!(status, 201, "{reply}");
    let link: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(link["capabilities"], json!(["view", "watch"]));
    let (status, body, guest) = server.redeem_link(link["token"].as_str().unwrap(), name);
    assert_eq!(status, 200, "{body}");
    guest.expect("a guest cookie").cookies()
}

/// Every awareness entry `client` has received, in order.
fn awareness_bytes(client: &YClient) -> usize {
    client.awareness.iter().map(|p| p.len()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_awareness_flood_from_a_watch_only_guest_is_not_amplified_nor_kept() {
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&["x = 1"]))]);
    let (file_id, session) = server.session("nb.ipynb");
    let url = server
        .room_url(&file_id, &session)
        .replace(&format!("&token={}", quire_tests::TOKEN), "");
    let cookie = watch_only_guest(&server, &file_id, "Mallory");
    let mut watcher = YClient::join(&server, "nb.ipynb").await;
    let mut guest = YClient::connect_with_cookie(&url, &cookie).await;
    guest.sync().await;
    let baseline = rss_bytes(&server);

    // 50,000 entries of ~100 bytes, each for a new client id: 5 MB that, stamped with the
    // guest's identity per entry, used to reach the watcher as ~137 MB. Refused whole.
    let pad = "m".repeat(75);
    let flood = many_entries(
        (0..50_000u64).map(|c| (1_000_000 + c, 1, json!({"cursors": [], "pad": pad}))),
    );
    assert!(flood.len() > 5_000_000, "{}", flood.len());
    guest.send(encode_awareness(&flood)).await;
    let (code, reason) = guest.expect_close(Duration::from_secs(30)).await;
    assert_eq!(code, 4400, "{reason}");
    assert!(reason.contains("at most 4 client ids"), "{reason}");
    let after_refusal = rss_bytes(&server);

    // 50,000 entries cycling over four client ids: accepted, relayed as four states.
    let mut guest = YClient::connect_with_cookie(&url, &cookie).await;
    guest.sync().await;
    let cycling = many_entries(
        (0..50_000u64).map(|i| (1 + i % 4, 1 + i / 4, json!({"cursors": [], "pad": pad}))),
    );
    guest.send(encode_awareness(&cycling)).await;
    // The same connection's next update is handled after it: once the watcher has that, it
    // has everything the flood produced.
    let done = encode_update(1, 1_000_000, &json!({"done": true}));
    guest.send(encode_awareness(&done)).await;
    assert!(
        watcher
            .pump_until(Duration::from_secs(30), |c| c
                .awareness_entries()
                .iter()
                .any(|(_, _, s)| s["done"] == true))
            .await,
        "the guest's state reaches the watcher (closed: {:?})",
        watcher.closed
    );
    assert_eq!(guest.closed, None);
    let received = awareness_bytes(&watcher);
    let seen = watcher.awareness_entries();
    let ids: std::collections::BTreeSet<u64> = seen.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(
        ids,
        (1..=4).collect(),
        "only the guest's four ids are relayed"
    );
    assert!(seen.len() <= 5, "{} entries relayed", seen.len());
    assert!(
        received < 16 << 10,
        "the watcher received {received} bytes of awareness for 10 MB sent"
    );
    for (_, _, state) in &seen {
        assert_eq!(state["user"]["display_name"], "Mallory (guest)");
    }
    let after_relay = rss_bytes(&server);

    // The guest leaves: its states go, and memory does not stay grown.
    drop(guest);
    assert!(
        watcher
            .pump_until(Duration::from_secs(10), |c| {
                let seen = c.awareness_entries();
                (1..=4).all(|id| {
                    seen.iter()
                        .rev()
                        .find(|(c, _, _)| *c == id)
                        .unwrap()
                        .2
                        .is_null()
                })
            })
            .await,
        "the guest's states are removed when it leaves"
    );
    let after_leave = rss_bytes(&server);
    eprintln!(
        "server RSS: baseline {:.1} MB, after the refused 5 MB flood {:.1} MB, after the \
         relayed 5 MB flood {:.1} MB, after the guest left {:.1} MB; the watcher received {} bytes",
        mb(baseline),
        mb(after_refusal),
        mb(after_relay),
        mb(after_leave),
        received
    );
    for (what, rss) in [
        ("the refused flood", after_refusal),
        ("the relayed flood", after_relay),
        ("the guest left", after_leave),
    ] {
        assert!(
            rss < baseline + (20 << 20),
            "server memory grew by {:.1} MB after {what}",
            mb(rss.saturating_sub(baseline))
        );
    }

    // The guest's client ids stay theirs: another person cannot claim id 1, even now that the
    // guest is gone; the guest coming back with it can.
    let other = watch_only_guest(&server, &file_id, "Eve");
    let mut eve = YClient::connect_with_cookie(&url, &other).await;
    eve.sync().await;
    eve.send(encode_awareness(&encode_update(
        1,
        2_000_000,
        &json!({"claimed": true}),
    )))
    .await;
    eve.send(encode_awareness(&encode_update(
        77,
        1,
        &json!({"eve": true}),
    )))
    .await;
    assert!(
        watcher
            .pump_until(Duration::from_secs(10), |c| c
                .awareness_entries()
                .iter()
                .any(|(id, _, s)| *id == 77 && s["eve"] == true))
            .await
    );
    assert!(
        !watcher
            .awareness_entries()
            .iter()
            .any(|(_, _, s)| s["claimed"] == true),
        "another person took over a client id"
    );
    let mut back = YClient::connect_with_cookie(&url, &cookie).await;
    back.sync().await;
    back.send(encode_awareness(&encode_update(
        1,
        1_000_000,
        &json!({"back": true}),
    )))
    .await;
    assert!(
        watcher
            .pump_until(Duration::from_secs(10), |c| c
                .awareness_entries()
                .iter()
                .any(|(id, _, s)| *id == 1
                    && s["back"] == true
                    && s["user"]["display_name"] == "Mallory (guest)"))
            .await,
        "the same guest may use its client id again"
    );
}

/// Bytes the server process has read through system calls (files and sockets), from
/// /proc/<pid>/io.
fn bytes_read(server: &TestServer) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{}/io", server.child.id())).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .expect("rchar in /proc/<pid>/io")
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_notebook_is_served_while_a_huge_one_is_loading() {
    const CELLS: usize = 60_000;
    let sources: Vec<String> = (0..CELLS).map(|i| format!("x = {i}")).collect();
    let sources: Vec<&str> = sources.iter().map(String::as_str).collect();
    let big = notebook_with(&sources);
    let big_len = big.len() as u64;
    let server = TestServer::start(&[
        ("big.ipynb", &big),
        ("tiny.ipynb", &notebook_with(&["tiny = True"])),
    ]);
    let (big_id, session) = server.session("big.ipynb");
    let (tiny_id, _) = server.session("tiny.ipynb");
    let read_before = bytes_read(&server);

    // Someone opens the big notebook. The server's first frame (its sync step 1) comes once
    // the room is loaded; the whole document follows the client's step 1.
    let big_url = server.room_url(&big_id, &session);
    let big_loaded = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let big_task = {
        let big_loaded = big_loaded.clone();
        tokio::spawn(async move {
            let mut big = YClient::connect(&big_url).await;
            let first = big.next_event().await;
            big_loaded.store(true, std::sync::atomic::Ordering::SeqCst);
            assert_eq!(first, Event::Asked, "closed: {:?}", big.closed);
            big.resync(Duration::from_secs(120))
                .await
                .expect("the big notebook syncs");
            big.notebook().cells.len()
        })
    };
    // ...and the server is reading its file (its read count jumps by the file's size).
    assert!(
        server.eventually(Duration::from_secs(60), || bytes_read(&server)
            >= read_before + big_len),
        "the server starts loading the big notebook"
    );
    assert!(!big_loaded.load(std::sync::atomic::Ordering::SeqCst));

    // Meanwhile a tiny notebook opens and answers a sync, before the big one is served.
    let mut tiny = YClient::connect(&server.room_url(&tiny_id, &session)).await;
    tiny.sync().await;
    assert_eq!(tiny.sources(), vec!["tiny = True"]);
    assert!(
        !big_loaded.load(std::sync::atomic::Ordering::SeqCst),
        "the tiny notebook waited for the big one to load"
    );
    tiny.append_and_wait_echo(0, " # edited").await;

    assert_eq!(big_task.await.unwrap(), CELLS);
}

/// JSON nesting `depth` levels of arrays and objects, built without recursion.
fn nested_json(depth: usize) -> Value {
    let mut value = json!("bottom");
    for level in 0..depth {
        value = if level % 2 == 0 {
            json!([value])
        } else {
            json!({ "k": value })
        };
    }
    value
}

/// A notebook (compact JSON, as another tool might write it) whose code cells each show one
/// JSON output holding the given value.
fn notebook_with_json_outputs(values: &[Value]) -> Vec<u8> {
    let cells: Vec<Value> = values
        .iter()
        .enumerate()
        .map(|(i, value)| {
            json!({"cell_type": "code", "id": format!("cell-{i}"), "metadata": {},
                   "source": format!("show({i})"), "execution_count": 1,
                   "outputs": [{"output_type": "display_data", "metadata": {},
                                "data": {"application/json": value}}]})
        })
        .collect();
    serde_json::to_vec(&json!({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
        .unwrap()
}

fn json_output(notebook: &collab::Notebook, cell: usize) -> Value {
    notebook.cells[cell].outputs[0]["data"]["application/json"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notebook_holding_json_nested_to_the_limit_opens_and_saves() {
    // 100 levels, and the most a value may hold: the output's `data` then nests
    // MAX_JSON_DEPTH levels and the file 133, beyond serde_json's default of 127.
    let values = [nested_json(100), nested_json(collab::MAX_JSON_DEPTH - 1)];
    let server = TestServer::start(&[("deep.ipynb", &notebook_with_json_outputs(&values))]);
    let mut client = YClient::join(&server, "deep.ipynb").await;
    let seen = client.notebook();
    assert_eq!(json_output(&seen, 0), values[0]);
    assert_eq!(json_output(&seen, 1), values[1]);
    assert_eq!(client.save(1).await, "success");
    let path = server.path("deep.ipynb");
    let saved = quire_tests::read_notebook(&path);
    assert_eq!(json_output(&saved, 0), values[0]);
    assert_eq!(json_output(&saved, 1), values[1]);
    let (code, out, err) =
        quire_tests::run_python("tests/py/validate.py", &[path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    // After a restart (the room rebuilt from its history, the file read again) it opens again.
    drop(client);
    let mut server = server;
    assert!(server.terminate().success());
    server.restart();
    let client = YClient::join(&server, "deep.ipynb").await;
    assert_eq!(json_output(&client.notebook(), 1), values[1]);
    assert_eq!(client.closed, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_types_in_a_notebook_holding_json_nested_100_deep() {
    let deep = nested_json(100);
    let server = TestServer::start(&[(
        "deep.ipynb",
        &notebook_with_json_outputs(&[deep.clone(), json!({"flat": true})]),
    )]);
    let mut client = YClient::join(&server, "deep.ipynb").await;
    client.append_and_wait_echo(1, " # typed").await;
    client.append_and_wait_echo(0, " # typed too").await;
    assert!(
        client
            .raw
            .iter()
            .all(|r| !r.contains("refused") && !r.contains("conflict")),
        "{:?}",
        client.raw
    );
    assert_eq!(client.save(1).await, "success");
    let saved = quire_tests::read_notebook(&server.path("deep.ipynb"));
    assert_eq!(saved.cells[0].source, "show(0) # typed too");
    assert_eq!(saved.cells[1].source, "show(1) # typed");
    assert_eq!(json_output(&saved, 0), deep);
    // Another client joining now sees the edits and the deep output.
    let other = YClient::join(&server, "deep.ipynb").await;
    assert_eq!(
        other.sources(),
        vec!["show(0) # typed too", "show(1) # typed"]
    );
    assert_eq!(json_output(&other.notebook(), 0), deep);
}

/// The inode of the server's end of the loopback TCP connection from `client_port`, from
/// /proc/net/tcp (columns: local address, remote address, …, inode tenth).
fn server_end_inode(server: &TestServer, client_port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port_of = |address: &str| {
        address
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    table.lines().skip(1).find_map(|line| {
        let columns: Vec<&str> = line.split_whitespace().collect();
        let (local, remote) = (port_of(columns.get(1)?)?, port_of(columns.get(2)?)?);
        (local == server.port && remote == client_port)
            .then(|| columns.get(9)?.parse().ok())
            .flatten()
    })
}

/// Whether the server process still holds a file descriptor on socket `inode`.
fn server_holds_socket(server: &TestServer, inode: u64) -> bool {
    let wanted = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{}/fd", server.child.id()))
        .unwrap()
        .flatten()
        .any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == wanted.as_str())
        })
}

/// Whether `client` has been told that awareness client `id` is gone (its state set to null).
fn told_gone(client: &YClient, id: u64) -> bool {
    client
        .awareness_entries()
        .iter()
        .any(|(client, _, state)| *client == id && state.is_null())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped_and_its_socket_released() {
    // (Found by tests/chaos.sh, scenario 4: the room dropped such a client when its queue
    // filled, but the server kept its socket, writer task and queued frames forever.)
    const STALLED: u64 = 0x5_7A11;
    const PASTE: usize = 2000;
    const MAX_EDITS: usize = 20_000;
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&[""]))]);
    let mut typist = YClient::join(&server, "nb.ipynb").await;
    let (file_id, session) = server.session("nb.ipynb");

    // A client with a small receive buffer (set before connecting, so the window it offers
    // stays small) joins, shows its presence, and never reads again.
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let tcp = tcp
        .connect(([127, 0, 0, 1], server.port).into())
        .await
        .expect("connects");
    let client_port = tcp.local_addr().unwrap().port();
    let (mut stalled, _) =
        tokio_tungstenite::client_async(server.room_url(&file_id, &session), tcp)
            .await
            .expect("the websocket upgrade succeeds");
    let presence = |clock| {
        Message::Binary(encode_awareness(&encode_update(
            STALLED,
            clock,
            &json!({"cursor": null}),
        )))
    };
    stalled.send(presence(1)).await.expect("presence sent");
    let shown = typist
        .pump_until(Duration::from_secs(10), |c| {
            c.awareness_entries()
                .iter()
                .any(|(client, _, state)| *client == STALLED && !state.is_null())
        })
        .await;
    assert!(shown, "the typist sees the stalled client's presence");
    let inode = server_end_inode(&server, client_port).expect("the connection in /proc/net/tcp");
    assert!(
        server_holds_socket(&server, inode),
        "the server holds the stalled client's socket while it is in the room"
    );

    // The typist pastes over the cell again and again (so the document stays small) until the
    // room drops the stalled client; the stalled client keeps its presence alive meanwhile (it
    // sends, it only never reads), so what removes it is the drop, not the awareness timeout.
    let mut edits = 0;
    let mut clock = 1;
    let mut renewed = std::time::Instant::now();
    while !told_gone(&typist, STALLED) {
        assert!(
            edits < MAX_EDITS,
            "the room still has the stalled client after {edits} pastes"
        );
        if renewed.elapsed() > Duration::from_secs(5) {
            clock += 1;
            let _ = stalled.send(presence(clock)).await;
            renewed = std::time::Instant::now();
        }
        let letter = (b'a' + (edits % 26) as u8) as char;
        let paste = letter.to_string().repeat(PASTE);
        typist
            .edit_and_wait_echo(|txn| {
                let source = collab::notebook::cell_source(txn, 0).expect("cell 0");
                let len = yrs::Text::len(&source, txn);
                yrs::Text::remove_range(&source, txn, 0, len);
                yrs::Text::push(&source, txn, &paste);
            })
            .await;
        edits += 1;
    }

    // The server lets the socket go (a bound on the wait, not a timing assertion: the fix
    // releases it at once, the bug held it forever).
    let mut released = false;
    for _ in 0..600 {
        if !server_holds_socket(&server, inode) {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        released,
        "the server still holds the socket of the client it dropped after {edits} pastes, 60 s later"
    );

    // The typist is unaffected: its edits still echo and the file saves.
    typist.append_and_wait_echo(0, "\n# still here").await;
    assert_eq!(typist.save(1).await, "success");
    let expected = format!(
        "{}\n# still here",
        ((b'a' + ((edits - 1) % 26) as u8) as char)
            .to_string()
            .repeat(PASTE)
    );
    assert_eq!(server.sources_on_disk("nb.ipynb"), vec![expected]);
    assert!(typist.closed.is_none(), "{:?}", typist.closed);
    drop(stalled);
}
