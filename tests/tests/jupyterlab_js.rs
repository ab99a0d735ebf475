//! The JavaScript JupyterLab itself runs (yjs, y-websocket's WebsocketProvider, y-protocols'
//! awareness, @jupyter/ydoc's YNotebook), driven by tests/js/jlab_client.mjs in Node, against the
//! real binary: it syncs, edits, saves, sees others, and a yrs client in the room sees its edits.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use quire_tests::{read_notebook, repo_root, run_python, TestServer, YClient, TOKEN};
use serde_json::{json, Value};

/// tests/js, after checking that `npm ci` has been run there.
fn js_dir() -> PathBuf {
    let dir = repo_root().join("tests/js");
    for package in [
        "@jupyter/ydoc",
        "y-websocket",
        "yjs",
        "y-protocols",
        "ws",
        "lib0",
    ] {
        let manifest = dir.join("node_modules").join(package).join("package.json");
        assert!(
            manifest.exists(),
            "{} is missing: run tests/run-all.sh (it runs `npm ci --prefix tests/js`)",
            manifest.display()
        );
    }
    dir
}

/// Runs `node tests/js/jlab_client.mjs` with the server's base URL and token, then `args`;
/// returns the parsed report, failing the test with the client's stderr if it did not exit 0.
async fn jlab_js(server: &TestServer, args: &[&str]) -> Value {
    let (code, stdout, stderr) = run_node(server, args).await;
    assert_eq!(
        code, 0,
        "jlab_client.mjs {args:?} exited with {code}\nstderr: {stderr}\nstdout: {stdout}"
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("jlab_client.mjs printed no JSON report ({e}): {stdout:?}"))
}

async fn run_node(server: &TestServer, args: &[&str]) -> (i32, String, String) {
    let dir = js_dir();
    let node = std::env::var_os("QUIRE_TEST_NODE").unwrap_or_else(|| "node".into());
    let mut command = Command::new(&node);
    command
        .current_dir(&dir)
        .arg(dir.join("jlab_client.mjs"))
        .args([
            "--base",
            &server.base(),
            "--token",
            TOKEN,
            "--timeout-ms",
            "20000",
        ])
        .args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot run {node:?} (Node.js 18 or later is needed): {e}"));
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// What a well-behaved session looks like from JupyterLab's side: one connection, never closed
/// (y-websocket would reconnect in a loop otherwise), the server's SyncStep1 received and
/// answered, the server's SyncStep2 received, and nothing the provider could not read.
fn assert_clean_session(report: &Value) {
    assert_eq!(report["synced"], true, "{report}");
    assert_eq!(
        report["closes"],
        json!([]),
        "the server closed the socket: {report}"
    );
    assert_eq!(report["statuses"], json!(["connected"]), "{report}");
    assert_eq!(report["wsConnected"], true, "{report}");
    let frames = &report["frames"];
    assert!(
        frames["received"]["sync.step1"].as_u64() >= Some(1),
        "{frames}"
    );
    assert!(frames["sent"]["sync.step2"].as_u64() >= Some(1), "{frames}");
    assert!(
        frames["received"]["sync.step2"].as_u64() >= Some(1),
        "{frames}"
    );
    for (kind, _) in frames["received"].as_object().unwrap() {
        assert!(
            [
                "sync.step1",
                "sync.step2",
                "sync.update",
                "awareness",
                "raw"
            ]
            .contains(&kind.as_str()),
            "the server sent a frame y-websocket cannot read: {kind} ({frames})"
        );
    }
    // @jupyter/docprovider writes the room name into `state.document_id` after the first sync.
    assert_eq!(
        report["state"]["document_id"], report["roomname"],
        "{report}"
    );
    for raw in report["rawMessages"].as_array().unwrap() {
        assert!(
            !raw.as_str().unwrap().contains("conflict"),
            "the server reported a conflict: {report}"
        );
    }
}

/// (id, cell_type, source) of each cell in the report.
fn report_cells(report: &Value) -> Vec<(String, String, String)> {
    report["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap_or_default().to_string(),
                c["cell_type"].as_str().unwrap().to_string(),
                c["source"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn file_cells(notebook: &collab::Notebook) -> Vec<(String, String, String)> {
    notebook
        .cells
        .iter()
        .map(|c| {
            (
                c.id.clone(),
                c.cell_type.as_str().to_string(),
                c.source.clone(),
            )
        })
        .collect()
}

/// The display name the server stamps on every awareness state (single-user mode).
fn server_identity_name(server: &TestServer) -> String {
    let (status, body) = server.http("GET", "/api/me", None);
    assert_eq!(status, 200, "{body}");
    let me: Value = serde_json::from_str(&body).unwrap();
    me["identity"]["name"].as_str().unwrap().to_string()
}

/// Makes a yrs client present in awareness, as a browser tab would be.
async fn announce(client: &mut YClient, client_id: u64) {
    let state = json!({"user": {"username": "watcher", "name": "Watcher"}, "cursors": []});
    let update = collab::awareness::encode_update(client_id, 1, &state);
    client
        .send(collab::protocol::encode_awareness(&update))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterlab_js_stack_syncs_edits_saves_and_a_second_session_sees_the_edit() {
    let corpus_path = repo_root().join("tests/corpus/every-output.ipynb");
    let corpus = std::fs::read(&corpus_path).unwrap();
    let original = read_notebook(&corpus_path);
    let name = "work/every output.ipynb";
    let server = TestServer::start(&[(name, &corpus)]);
    let identity_name = server_identity_name(&server);
    let mut watcher = YClient::join(&server, name).await;
    announce(&mut watcher, 7001).await;

    // (a) The JS client syncs, appends to cell 1, sees the watcher in awareness, and saves.
    let appended = "\nprint('from the JupyterLab JS stack: é😀')";
    let report = jlab_js(
        &server,
        &[
            "--path",
            name,
            "--append-to-cell",
            "1",
            "--text",
            appended,
            "--expect-users",
            "1",
            "--save",
        ],
    )
    .await;
    assert_clean_session(&report);
    assert_eq!(report["saveStatus"], "success", "{report}");
    // The server clears `dirty` after the save and publishes the file's hash.
    assert_eq!(report["state"]["dirty"], false, "{report}");
    assert!(
        report["state"]["hash"]
            .as_str()
            .is_some_and(|h| !h.is_empty()),
        "{report}"
    );
    assert_eq!(report["state"]["path"], name, "{report}");
    // The contents API's hash must be the one the room published, or JupyterLab thinks the
    // file changed on disk.
    assert_eq!(
        report["contents"]["hash"], report["state"]["hash"],
        "{report}"
    );
    // The watcher, with the identity the server stamps on every state.
    assert_eq!(report["awarenessUsers"], json!([identity_name]), "{report}");
    assert_eq!(report["nbformat"], original.nbformat);
    assert_eq!(report["nbformat_minor"], original.nbformat_minor);

    // Every cell, with the file's ids and sources; cell 1 with the edit.
    let mut expected = file_cells(&original);
    expected[1].2.push_str(appended);
    assert_eq!(report_cells(&report), expected);

    // The yrs client in the same room saw the edit live.
    let edited = original.cells[1].source.clone() + appended;
    assert!(
        watcher
            .pump_until(Duration::from_secs(5), |c| c.sources()[1] == edited)
            .await,
        "the yrs client did not see the JS edit: {:?}",
        watcher.sources()
    );

    // The save was answered after the file was written: it holds the edit now.
    let path = server.path(name);
    assert_eq!(file_cells(&read_notebook(&path)), expected);
    let (code, out, err) = run_python("tests/py/validate.py", &[path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");

    // (b) A second JupyterLab session, started afterwards, gets the edit from the room.
    let second = jlab_js(&server, &["--path", name, "--expect-users", "1"]).await;
    assert_clean_session(&second);
    assert_eq!(report_cells(&second), expected);
    assert_eq!(second["fileId"], report["fileId"]);
    assert_eq!(second["sessionId"], report["sessionId"]);
    assert_eq!(second["saveStatus"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jupyterlab_js_clients_at_once_see_each_other_and_converge() {
    let corpus = std::fs::read(repo_root().join("tests/corpus/unicode.ipynb")).unwrap();
    let server = TestServer::start(&[("unicode.ipynb", &corpus)]);
    let identity_name = server_identity_name(&server);
    let original = read_notebook(&server.path("unicode.ipynb"));
    let mut watcher = YClient::join(&server, "unicode.ipynb").await;
    announce(&mut watcher, 7002).await;

    // Each waits until it has seen the watcher and the other JS client; one inserts inside the
    // first cell (an offset in UTF-16 code units, after a surrogate pair), the other appends.
    let at = original.cells[0]
        .source
        .encode_utf16()
        .take(14)
        .count()
        .to_string();
    let ada_args = [
        "--path",
        "unicode.ipynb",
        "--expect-users",
        "2",
        "--append-to-cell",
        "0",
        "--at",
        &at,
        "--text",
        "[ada]",
    ];
    let bob_args = [
        "--path",
        "unicode.ipynb",
        "--expect-users",
        "2",
        "--append-to-cell",
        "2",
        "--text",
        "\n[bob 🇫🇷]",
        "--save",
    ];
    let (ada, bob) = tokio::join!(jlab_js(&server, &ada_args), jlab_js(&server, &bob_args));
    for report in [&ada, &bob] {
        assert_clean_session(report);
        assert_eq!(
            report["awarenessUsers"].as_array().unwrap().len(),
            2,
            "{report}"
        );
        assert!(report["awarenessUsers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u == &json!(identity_name)));
    }
    assert_eq!(bob["saveStatus"], "success", "{bob}");

    let mut expected = file_cells(&original);
    let cut: String = {
        let units: Vec<u16> = expected[0].2.encode_utf16().collect();
        let n: usize = at.parse().unwrap();
        String::from_utf16(&units[..n]).unwrap()
            + "[ada]"
            + &String::from_utf16(&units[n..]).unwrap()
    };
    expected[0].2 = cut;
    expected[2].2.push_str("\n[bob 🇫🇷]");
    let expected_sources: Vec<String> = expected.iter().map(|c| c.2.clone()).collect();
    assert!(
        watcher
            .pump_until(Duration::from_secs(5), |c| c.sources() == expected_sources)
            .await,
        "the yrs client did not converge: {:?}",
        watcher.sources()
    );
    // A later session sees both edits; the file gets them too (autosave).
    let later = jlab_js(&server, &["--path", "unicode.ipynb"]).await;
    assert_clean_session(&later);
    assert_eq!(report_cells(&later), expected);
    let path = server.path("unicode.ipynb");
    assert!(
        server.eventually(Duration::from_secs(5), || file_cells(&read_notebook(&path))
            == expected),
        "the file did not follow: {:?}",
        file_cells(&read_notebook(&path))
    );
    let (code, out, err) = run_python("tests/py/validate.py", &[path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}

/// The first place where two JSON values differ, or `None`. Numbers are compared as f64:
/// JavaScript has no integer type, so a `1.0` in the file reads back as `1`.
fn json_difference(shown: &Value, disk: &Value, at: &str) -> Option<String> {
    match (shown, disk) {
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => None,
        (Value::Object(a), Value::Object(b)) => a.keys().chain(b.keys()).find_map(|key| {
            let here = format!("{at}.{key}");
            match (a.get(key), b.get(key)) {
                (Some(x), Some(y)) => json_difference(x, y, &here),
                (x, y) => Some(format!("{here}: {x:?} in the model, {y:?} on disk")),
            }
        }),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| json_difference(x, y, &format!("{at}[{i}]"))),
        _ if shown == disk => None,
        _ => Some(format!("{at}: {shown} in the model, {disk} on disk")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterlab_js_model_shows_every_corpus_notebook_as_on_disk() {
    let corpus_dir = repo_root().join("tests/corpus");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&corpus_dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".ipynb") {
            files.push((name, std::fs::read(entry.path()).unwrap()));
        }
    }
    files.sort();
    assert!(
        files.len() >= 5,
        "the corpus is missing: {}",
        corpus_dir.display()
    );
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let server = TestServer::start(&refs);
    for (name, _) in &files {
        let disk = read_notebook(&server.path(name));
        let report = jlab_js(&server, &["--path", name, "--dump-notebook"]).await;
        assert_clean_session(&report);
        // YNotebook.toJSON(): what JupyterLab renders and would download.
        let model = &report["notebook"];
        let mut disk_json = json!({
            "nbformat": disk.nbformat,
            "nbformat_minor": disk.nbformat_minor,
            "metadata": disk.metadata,
        });
        let mut cells = Vec::new();
        for cell in &disk.cells {
            let mut c = json!({
                "cell_type": cell.cell_type.as_str(),
                "source": cell.source,
                "metadata": cell.metadata,
            });
            if disk.nbformat_minor >= 5 {
                c["id"] = json!(cell.id);
            }
            if cell.cell_type == collab::notebook::CellType::Code {
                c["execution_count"] = cell.execution_count.clone();
                c["outputs"] = json!(cell.outputs);
            }
            if let Some(attachments) = &cell.attachments {
                c["attachments"] = attachments.clone();
            }
            cells.push(c);
        }
        disk_json["cells"] = json!(cells);
        if disk.cells.is_empty() {
            // An empty notebook is shown with (at most) one empty code cell.
            let shown = model["cells"].as_array().unwrap();
            assert!(
                shown.len() <= 1 && shown.iter().all(|c| c["source"] == ""),
                "{name}: {model}"
            );
            disk_json["cells"] = model["cells"].clone();
        }
        if let Some(difference) = json_difference(model, &disk_json, name) {
            panic!("YNotebook.toJSON() differs from the file: {difference}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saving_an_unchanged_notebook_succeeds_for_jupyterlab() {
    // @jupyter/docprovider's save() rejects on "skipped" ("Saving already in progress"), so
    // JupyterLab shows a save error; jupyter-collaboration answers "success" when there was
    // nothing to write. Ctrl+S on a notebook autosave already wrote must not be an error.
    let server = TestServer::start(&[("nb.ipynb", &quire_tests::notebook_with(&["x = 1"]))]);
    let first = jlab_js(&server, &["--path", "nb.ipynb", "--save"]).await;
    assert_clean_session(&first);
    assert_eq!(
        first["saveStatus"], "success",
        "a save with nothing new to write must answer \"success\" (JupyterLab treats \"skipped\" as a failed save): {first}"
    );
    let edited = jlab_js(
        &server,
        &[
            "--path",
            "nb.ipynb",
            "--append-to-cell",
            "0",
            "--text",
            "0",
            "--save",
        ],
    )
    .await;
    assert_eq!(edited["saveStatus"], "success", "{edited}");
    let again = jlab_js(&server, &["--path", "nb.ipynb", "--save"]).await;
    assert_eq!(
        again["saveStatus"], "success",
        "saving again with nothing new must answer \"success\": {again}"
    );
    assert_eq!(
        read_notebook(&server.path("nb.ipynb")).cells[0].source,
        "x = 10"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_reach_jupyterlab_with_their_close_code() {
    // y-websocket sends SyncStep1 and its awareness the moment the socket opens. A server that
    // drops the socket right after its Close frame, with those still unread, makes the kernel
    // reset the connection and the client sees 1006: JupyterLab then neither gives the document
    // up (4404) nor shows the session dialog (1003), and reconnects instead. Try a few times.
    let server = TestServer::start(&[("nb.ipynb", &quire_tests::notebook_with(&["x"]))]);
    let (_, session_id) = server.session("nb.ipynb");
    for attempt in 0..5 {
        let unknown = jlab_js(
            &server,
            &[
                "--path",
                "nb.ipynb",
                "--expect-close",
                "--file-id",
                "00000000-0000-4000-8000-000000000000",
            ],
        )
        .await;
        assert_eq!(
            unknown["closed"], 4404,
            "attempt {attempt}, unknown file id: {unknown}"
        );
        let stale = jlab_js(
            &server,
            &[
                "--path",
                "nb.ipynb",
                "--expect-close",
                "--session-id",
                "00000000-0000-4000-8000-000000000000",
            ],
        )
        .await;
        assert_eq!(
            stale["closed"], 1003,
            "attempt {attempt}, stale session: {stale}"
        );
        let reason: Value = serde_json::from_str(stale["reason"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("the 1003 reason must be JSON ({e}): {stale}"));
        assert_eq!(reason["reason"], "unknown_session", "{stale}");
        assert_eq!(reason["sessionId"], session_id, "{stale}");
        assert!(reason["reloadable"].is_boolean(), "{stale}");
    }
}
