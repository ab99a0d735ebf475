//! Nothing acknowledged is lost: crashes, restarts, stale sessions and shutdowns.

use std::time::Duration;

use quire_tests::{notebook_with, read_notebook, TestServer, YClient};

/// Autosave far in the future, so only the update log can carry an edit across a crash.
const NO_AUTOSAVE: &str = "autosave_delay_ms = 600000\nautosave_max_delay_ms = 600000\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echoed_edit_survives_kill_9_and_nothing_is_duplicated() {
    let mut server = TestServer::start_with_config(
        &[("nb.ipynb", &notebook_with(&["first", "second"]))],
        NO_AUTOSAVE,
    );
    let (file_id, session_id) = server.session("nb.ipynb");
    let url = server.room_url(&file_id, &session_id);
    let mut ada = YClient::connect(&url).await;
    ada.sync().await;
    ada.append_and_wait_echo(0, " durable").await;
    server.kill9();
    assert_eq!(
        read_notebook(&server.path("nb.ipynb")).cells[0].source,
        "first",
        "not yet saved"
    );

    server.restart();
    // Ada reconnects with the document and session she had, as y-websocket does.
    let doc = ada.doc.clone();
    let mut ada = YClient::connect(&url).await;
    ada.doc = doc;
    ada.sync().await;
    // Whatever the room does with what she brought back (her answer to its step 1, sent while
    // she synced) reaches her before her sentinel is answered.
    ada.sentinel().await;
    assert_eq!(ada.sources(), vec!["first durable", "second"]);
    assert_eq!(ada.closed, None);

    let bob = YClient::join(&server, "nb.ipynb").await;
    assert_eq!(bob.sources(), vec!["first durable", "second"]);
    let status = ada.save(1).await;
    assert_eq!(status, "success");
    let on_disk: Vec<String> = read_notebook(&server.path("nb.ipynb"))
        .cells
        .into_iter()
        .map(|c| c.source)
        .collect();
    assert_eq!(on_disk, vec!["first durable", "second"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_from_a_lost_history_is_refused_with_1003() {
    let mut server = TestServer::start(&[("nb.ipynb", &notebook_with(&["x"]))]);
    let (file_id, session_id) = server.session("nb.ipynb");
    let client = YClient::join(&server, "nb.ipynb").await;
    drop(client);
    server.kill9();
    server.wipe_state();
    server.restart();
    // The file is indexed again under a new id; the old id and session mean nothing now.
    let (new_id, new_session) = server.session("nb.ipynb");
    assert_ne!(new_session, session_id);
    let mut stale = YClient::connect(&server.room_url(&new_id, &session_id)).await;
    let (code, reason) = stale.expect_close(Duration::from_secs(5)).await;
    assert_eq!(code, 1003);
    let reason: serde_json::Value = serde_json::from_str(&reason).unwrap();
    assert_eq!(reason["reason"], "unknown_session");
    assert_eq!(reason["sessionId"], new_session.as_str());
    let mut unknown = YClient::connect(&server.room_url(&file_id, &new_session)).await;
    assert_eq!(unknown.expect_close(Duration::from_secs(5)).await.0, 4404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_saves_unsaved_edits() {
    let mut server =
        TestServer::start_with_config(&[("nb.ipynb", &notebook_with(&["x"]))], NO_AUTOSAVE);
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    ada.append_and_wait_echo(0, " = 42").await;
    let status = server.terminate();
    assert!(
        status.success(),
        "quire exits cleanly on SIGTERM: {status:?}"
    );
    assert_eq!(
        read_notebook(&server.path("nb.ipynb")).cells[0].source,
        "x = 42"
    );
    let (code, _) = ada.expect_close(Duration::from_secs(5)).await;
    assert_eq!(code, 1001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_compacted_and_history_restores_after_restart() {
    let mut server = TestServer::start_with_config(
        &[("nb.ipynb", &notebook_with(&[""]))],
        "autosave_delay_ms = 50\ncompact_min_bytes = 2000\n",
    );
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    for i in 0..300 {
        ada.append_to_cell(0, &format!("{i} ")).await;
        if i % 50 == 49 {
            ada.save(i).await;
        }
    }
    ada.save(1000).await;
    let expected = ada.sources();
    drop(ada);
    server.terminate();
    let (snapshot, log) = history_size(&server);
    assert!(
        log <= 4 * snapshot.max(2000),
        "log of {log} bytes beside a {snapshot}-byte snapshot"
    );
    server.restart();
    let bob = YClient::join(&server, "nb.ipynb").await;
    assert_eq!(bob.sources(), expected);
}

/// Sizes of the stored snapshot and update log, read with the sqlite3 module of the test Python.
fn history_size(server: &TestServer) -> (u64, u64) {
    let script = format!(
        "import sqlite3; c = sqlite3.connect({:?}); \
         print(c.execute('select coalesce(sum(length(snapshot)),0) from documents').fetchone()[0], \
               c.execute('select coalesce(sum(length(data)),0) from updates').fetchone()[0])",
        server.state_dir.join("quire.sqlite3").to_str().unwrap()
    );
    let out = std::process::Command::new(quire_tests::python())
        .args(["-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace().map(|p| p.parse::<u64>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}
