//! Clients in one room see each other's edits, and the file follows.

use std::time::Duration;

use quire_tests::{notebook_with, read_notebook, run_python, TestServer, YClient, TOKEN};
use yrs::Text;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_yrs_clients_converge() {
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&["a = 1", "b = 2"]))]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::Permissions::from_mode(0o640);
    std::fs::set_permissions(server.path("nb.ipynb"), mode).unwrap();
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    let mut bob = YClient::join(&server, "nb.ipynb").await;
    assert_eq!(ada.sources(), vec!["a = 1", "b = 2"]);

    ada.append_to_cell(0, " + 10").await;
    bob.append_to_cell(1, " * 3").await;
    let expected = vec!["a = 1 + 10".to_string(), "b = 2 * 3".to_string()];
    assert!(
        ada.pump_until(Duration::from_secs(5), |c| c.sources() == expected)
            .await
    );
    assert!(
        bob.pump_until(Duration::from_secs(5), |c| c.sources() == expected)
            .await
    );
    assert!(server.eventually(Duration::from_secs(5), || {
        server.sources_on_disk("nb.ipynb") == expected
    }));
    let saved = std::fs::metadata(server.path("nb.ipynb")).unwrap();
    assert_eq!(
        saved.permissions().mode() & 0o777,
        0o640,
        "the file keeps its mode"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&server.root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains("quire-tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_typing_in_one_cell_converge() {
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&["start"]))]);
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(YClient::join(&server, "nb.ipynb").await);
    }
    // Everyone types at once, at the start, the middle and the end, without waiting for peers.
    for round in 0..20 {
        for (who, client) in clients.iter_mut().enumerate() {
            let mark = format!("[{who}:{round}]");
            client
                .edit(|txn| {
                    let source = collab::notebook::cell_source(txn, 0).unwrap();
                    use yrs::GetString;
                    let text = source.get_string(txn);
                    // Start, middle (right after the original word) and end: never inside a mark.
                    let at = match who {
                        0 => 0,
                        1 => (text.find("start").unwrap() + 5) as u32,
                        _ => source.len(txn),
                    };
                    source.insert(txn, at, &mark);
                })
                .await;
        }
    }
    let all_marks = |c: &YClient| {
        let text = &c.sources()[0];
        (0..3)
            .all(|who| (0..20).all(|round| text.matches(&format!("[{who}:{round}]")).count() == 1))
    };
    for client in clients.iter_mut() {
        assert!(client.pump_until(Duration::from_secs(10), all_marks).await);
    }
    let texts: Vec<String> = clients.iter().map(|c| c.sources()[0].clone()).collect();
    assert_eq!(texts[0], texts[1]);
    assert_eq!(texts[1], texts[2]);
    assert!(server.eventually(Duration::from_secs(10), || {
        read_notebook(&server.path("nb.ipynb")).cells[0].source == texts[0]
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterlab_data_model_edits_and_the_file_follows_within_two_seconds() {
    let corpus =
        std::fs::read(quire_tests::repo_root().join("tests/corpus/every-output.ipynb")).unwrap();
    let server = TestServer::start(&[("work/every output.ipynb", &corpus)]);
    let mut watcher = YClient::join(&server, "work/every output.ipynb").await;
    let base = server.base();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run_python(
            "tests/py/jlab_client.py",
            &[
                "--base",
                &base,
                "--token",
                TOKEN,
                "--path",
                "work/every output.ipynb",
                "--append-to-cell",
                "1",
                "--text",
                "\nprint('from jupyterlab')",
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "jlab_client failed: {stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["synced"], true);
    assert_eq!(
        report["cells"].as_array().unwrap().len(),
        watcher.sources().len()
    );
    assert!(report["cells"][1]["source"]
        .as_str()
        .unwrap()
        .ends_with("print('from jupyterlab')"));
    // The other client sees it live, and the file on disk within 2 s.
    assert!(
        watcher
            .pump_until(Duration::from_secs(2), |c| c.sources()[1]
                .ends_with("print('from jupyterlab')"))
            .await
    );
    let path = server.path("work/every output.ipynb");
    assert!(server.eventually(Duration::from_secs(2), || {
        read_notebook(&path).cells[1]
            .source
            .ends_with("print('from jupyterlab')")
    }));
    let (code, out, err) = run_python("tests/py/validate.py", &[path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_relayed_with_the_server_stamped_identity() {
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&["x"]))]);
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    let mut bob = YClient::join(&server, "nb.ipynb").await;
    let claim =
        serde_json::json!({"user": {"username": "someone-else", "name": "Mallory"}, "cursors": []});
    let update = collab::awareness::encode_update(4242, 1, &claim);
    ada.send(collab::protocol::encode_awareness(&update)).await;
    let seen = bob
        .pump_until(Duration::from_secs(5), |c| !c.awareness.is_empty())
        .await;
    assert!(seen);
    let entries = collab::awareness::decode_update(&bob.awareness[0]).unwrap();
    assert_eq!(entries[0].0, 4242);
    assert_ne!(entries[0].2["user"]["username"], "someone-else");
    assert_ne!(entries[0].2["user"]["name"], "Mallory");
    // When Ada leaves, her presence goes with her.
    drop(ada);
    let removed = bob
        .pump_until(Duration::from_secs(5), |c| {
            c.awareness_entries()
                .iter()
                .any(|(id, _, state)| *id == 4242 && state.is_null())
        })
        .await;
    assert!(removed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_awareness_room_works_with_the_login_cookie_alone() {
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&["x"]))]);
    // Log in once with the token in the URL, as a browser opening the printed link does.
    let cookie = server.logged_in_browser().cookies();
    let url = format!(
        "ws://127.0.0.1:{}/api/collaboration/room/JupyterLab:globalAwareness",
        server.port
    );
    assert!(
        YClient::try_connect(&url, None).await.is_err(),
        "no cookie, no token: refused"
    );
    let mut ada = YClient::connect_with_cookie(&url, &cookie).await;
    let mut bob = YClient::connect_with_cookie(&url, &cookie).await;
    let state = serde_json::json!({"current": "nb.ipynb"});
    let update = collab::awareness::encode_update(11, 1, &state);
    ada.send(collab::protocol::encode_awareness(&update)).await;
    let seen = bob
        .pump_until(Duration::from_secs(5), |c| {
            c.awareness_entries()
                .iter()
                .any(|(id, _, s)| *id == 11 && s["current"] == "nb.ipynb")
        })
        .await;
    assert!(seen);
}
