//! An edit made to the .ipynb outside Quire while the room has unsaved edits keeps both.

use std::time::Duration;

use quire_tests::{TestServer, YClient};
use serde_json::json;

fn file(cells: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec_pretty(
        &json!({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}),
    )
    .unwrap()
}

fn code(id: &str, source: &str) -> serde_json::Value {
    json!({"cell_type": "code", "id": id, "metadata": {}, "source": source, "outputs": [], "execution_count": null})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_and_room_edits_are_both_kept() {
    let original = file(json!([code("a", "room cell"), code("b", "outside cell")]));
    let server = TestServer::start_with_config(
        &[("nb.ipynb", &original)],
        "autosave_delay_ms = 600000\nautosave_max_delay_ms = 600000\n",
    );
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    ada.append_and_wait_echo(0, " + edited in the room").await;
    // Someone edits the file with another tool: changes cell b, adds a cell, leaves cell a alone.
    let outside = file(json!([
        code("a", "room cell"),
        code("b", "outside cell, edited on disk"),
        code("c", "a cell added on disk"),
    ]));
    std::fs::write(server.path("nb.ipynb"), outside).unwrap();
    let expected = vec![
        "room cell + edited in the room".to_string(),
        "outside cell, edited on disk".to_string(),
        "a cell added on disk".to_string(),
    ];
    let merged = ada
        .pump_until(Duration::from_secs(5), |c| c.sources() == expected)
        .await;
    assert!(merged, "room has {:?}", ada.sources());
    // The merged notebook is what the file holds now.
    assert!(server.eventually(Duration::from_secs(5), || {
        server.sources_on_disk("nb.ipynb") == expected
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_while_the_room_was_closed_is_merged_on_load() {
    let server = TestServer::start_with_config(
        &[("nb.ipynb", &file(json!([code("a", "one")])))],
        "room_linger_secs = 0\n",
    );
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    ada.append_and_wait_echo(0, " two").await;
    assert_eq!(ada.save(1).await, "success");
    drop(ada);
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(
        server.path("nb.ipynb"),
        file(json!([code("a", "one two three"), code("z", "new")])),
    )
    .unwrap();
    let bob = YClient::join(&server, "nb.ipynb").await;
    assert_eq!(bob.sources(), vec!["one two three", "new"]);
}
