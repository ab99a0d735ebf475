//! Plain text files open in `text:file` rooms, as JupyterLab's editor opens them.

use std::time::Duration;

use quire_tests::{TestServer, YClient};
use yrs::{GetString, Text, Transact, WriteTxn};

fn source(client: &YClient) -> String {
    let mut txn = client.doc.transact_mut();
    let text = txn.get_or_insert_text("source");
    text.get_string(&txn)
}

async fn join_text(server: &TestServer, path: &str) -> YClient {
    let (file_id, session) = server.session_as(path, "text", "file");
    let mut client = YClient::connect(&server.room_url_for("text:file", &file_id, &session)).await;
    client.sync().await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_is_edited_together_and_saved_byte_for_byte() {
    let original = "import os\r\nprint('漢字 🌍')\n";
    let server = TestServer::start(&[("src/tool.py", original.as_bytes())]);
    let mut ada = join_text(&server, "src/tool.py").await;
    let mut bob = join_text(&server, "src/tool.py").await;
    assert_eq!(source(&ada), original);
    ada.edit(|txn| {
        let text = txn.get_or_insert_text("source");
        text.push(txn, "print('done')");
    })
    .await;
    let expected = format!("{original}print('done')");
    assert!(
        bob.pump_until(Duration::from_secs(5), |c| source(c) == expected)
            .await
    );
    assert_eq!(ada.save(1).await, "success");
    assert_eq!(
        std::fs::read_to_string(server.path("src/tool.py")).unwrap(),
        expected
    );

    // An outside edit to the file reaches the room.
    std::fs::write(server.path("src/tool.py"), format!("# header\n{expected}")).unwrap();
    let merged = format!("# header\n{expected}");
    assert!(
        bob.pump_until(Duration::from_secs(5), |c| source(c) == merged)
            .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_file_is_refused_and_left_alone() {
    let bytes: &[u8] = b"\x89PNG\r\n\x1a\n\xff\xfe";
    let server = TestServer::start(&[("image.png", bytes)]);
    let (file_id, session) = server.session_as("image.png", "text", "file");
    let mut client = YClient::connect(&server.room_url_for("text:file", &file_id, &session)).await;
    let (code, reason) = client.expect_close(Duration::from_secs(5)).await;
    assert_eq!(code, 4500);
    assert!(reason.contains("not valid UTF-8"), "{reason}");
    assert_eq!(std::fs::read(server.path("image.png")).unwrap(), bytes);
    let mut unknown = YClient::connect(&server.room_url_for("blob:file", &file_id, &session)).await;
    let (code, reason) = unknown.expect_close(Duration::from_secs(5)).await;
    assert_eq!(code, 4400);
    assert!(reason.contains("unsupported document type"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notebook_opened_in_the_text_editor_too_keeps_its_content() {
    let server = TestServer::start(&[("nb.ipynb", &quire_tests::notebook_with(&["x = 1"]))]);
    let mut notebook_view = YClient::join(&server, "nb.ipynb").await;
    notebook_view.append_and_wait_echo(0, " + 1").await;
    assert_eq!(notebook_view.save(1).await, "success");
    // "Open With → Editor": the same file as text. Its document is the file's JSON text.
    let mut text_view = join_text(&server, "nb.ipynb").await;
    let on_disk = std::fs::read_to_string(server.path("nb.ipynb")).unwrap();
    assert_eq!(source(&text_view), on_disk);
    // Both rooms save: each writes what it holds, so a room holding anything else than the
    // file's content would show on disk now.
    assert_eq!(text_view.save(2).await, "success");
    assert_eq!(notebook_view.save(3).await, "success");
    assert_eq!(server.sources_on_disk("nb.ipynb"), vec!["x = 1 + 1"]);
}
