//! An editor plants a chain of shared maps 50,000 deep in a cell's metadata, then removes it.
//! yrs deletes a shared type by recursing into the types it holds, one stack frame per level:
//! the room's 2 MiB worker stack overflows and the server process aborts, every room with it.
//! (Its own test binary: a client that integrated such a removal would abort the tests too.)

use std::time::Duration;

use collab::protocol;
use quire_tests::{forge, read_notebook, TestServer, YClient};
use serde_json::{json, Value};
use yrs::{Array, Map, MapPrelim, MapRef, Out, ReadTxn, Transact};

const NB: &str = "nb.ipynb";
const DEPTH: usize = 50_000;

fn metadata<T: ReadTxn>(txn: &T) -> MapRef {
    let Some(Out::YMap(cell)) = txn.get_array("cells").unwrap().get(txn, 0) else {
        panic!("no cell")
    };
    match cell.get(txn, "metadata") {
        Some(Out::YMap(metadata)) => metadata,
        other => panic!("metadata: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_nested_maps_does_not_bring_the_server_down() {
    let server = TestServer::start(&[(NB, &quire_tests::notebook_with(&["x = 1"]))]);
    let (file_id, session) = server.session(NB);
    let mut owner = YClient::join(&server, NB).await;
    let (status, reply) = server.http(
        "POST",
        &format!("/api/sharing/{file_id}/links"),
        Some(&json!({"role": "editor"}).to_string()),
    );
    assert_eq!(status, 201, "{reply}");
    let link: Value = serde_json::from_str(&reply).unwrap();
    let (status, body, guest) = server.redeem_link(link["token"].as_str().unwrap(), "Mallory");
    assert_eq!(status, 200, "{body}");
    let url = format!(
        "ws://127.0.0.1:{}/api/collaboration/room/json:notebook:{file_id}?sessionId={session}",
        server.port
    );
    let mut mallory = YClient::connect_with_cookie(&url, &guest.unwrap().cookies()).await;
    mallory.sync().await;

    // Both updates made on a copy, on a thread with room for yrs's recursion.
    let copy = forge::replica(&mallory.doc);
    let (create, remove) = std::thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(move || {
            let create = {
                let mut txn = copy.transact_mut();
                let mut map = metadata(&txn).insert(&mut txn, "deep", MapPrelim::default());
                for _ in 0..DEPTH {
                    map = map.insert(&mut txn, "k", MapPrelim::default());
                }
                txn.encode_update_v1()
            };
            let remove = {
                let mut txn = copy.transact_mut();
                metadata(&txn).remove(&mut txn, "deep");
                txn.encode_update_v1()
            };
            (create, remove)
        })
        .unwrap()
        .join()
        .unwrap();
    mallory.send(protocol::encode_sync_update(&create)).await;
    mallory.send(protocol::encode_sync_update(&remove)).await;
    mallory.settle(Duration::from_secs(20)).await;

    assert!(
        owner.settle(Duration::from_secs(20)).await,
        "the owner lost the connection: {:?}",
        owner.closed
    );
    assert_eq!(owner.save(1).await, "success");
    assert_eq!(read_notebook(&server.path(NB)).cells.len(), 1);
}
