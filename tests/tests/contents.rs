//! The contents API and file ids that follow files wherever they go.

use std::time::Duration;

use quire_tests::{notebook_with, TestServer, YClient, TOKEN};
use serde_json::Value;

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_listing_creation_and_deletion() {
    let server = TestServer::start(&[
        ("nb.ipynb", &notebook_with(&["x = 1"])),
        ("notes.txt", b"hello"),
        (".hidden", b"h"),
    ]);
    let (status, body) = server.http("GET", "/api/contents?content=1", None);
    assert_eq!(status, 200);
    let listing = json(&body);
    let names: Vec<&str> = listing["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["nb.ipynb", "notes.txt"]);

    let (status, body) = server.http("GET", "/api/contents/nb.ipynb?content=0&hash=1", None);
    assert_eq!(status, 200);
    let model = json(&body);
    assert_eq!(model["type"], "notebook");
    assert_eq!(model["content"], Value::Null);
    assert_eq!(
        model["hash"].as_str().unwrap(),
        collab::content_hash(&std::fs::read(server.path("nb.ipynb")).unwrap())
    );
    assert_eq!(model["hash_algorithm"], "sha256");
    for key in [
        "name",
        "path",
        "last_modified",
        "created",
        "writable",
        "size",
        "mimetype",
        "format",
    ] {
        assert!(model.get(key).is_some(), "model lacks {key}");
    }
    let (_, body) = server.http("GET", "/api/contents/nb.ipynb?content=1", None);
    assert_eq!(
        json(&body)["content"]["cells"][0]["source"],
        serde_json::json!(["x = 1"])
    );
    let (status, body) = server.http("GET", "/api/contents/nb.ipynb/checkpoints", None);
    assert_eq!((status, body.as_str()), (200, "[]"));
    // A checkpoint, as JupyterLab makes one: the saved file, restorable.
    let (status, body) = server.http("POST", "/api/contents/nb.ipynb/checkpoints", None);
    assert_eq!(status, 201, "{body}");
    assert_eq!(json(&body)["id"], "checkpoint");
    let (_, listed) = server.http("GET", "/api/contents/nb.ipynb/checkpoints", None);
    assert_eq!(json(&listed)[0]["id"], "checkpoint");
    let original = std::fs::read(server.path("nb.ipynb")).unwrap();
    std::fs::write(
        server.path("nb.ipynb"),
        quire_tests::notebook_with(&["changed"]),
    )
    .unwrap();
    let (status, body) = server.http(
        "POST",
        "/api/contents/nb.ipynb/checkpoints/checkpoint",
        None,
    );
    assert_eq!(status, 204, "{body}");
    assert_eq!(std::fs::read(server.path("nb.ipynb")).unwrap(), original);
    let (status, _) = server.http("POST", "/api/contents/nb.ipynb/checkpoints/other", None);
    assert_eq!(status, 404);
    let (status, _) = server.http(
        "DELETE",
        "/api/contents/nb.ipynb/checkpoints/checkpoint",
        None,
    );
    assert_eq!(status, 204);
    let (_, listed) = server.http("GET", "/api/contents/nb.ipynb/checkpoints", None);
    assert_eq!(listed, "[]");
    // The checkpoint folder is hidden, as Jupyter's is.
    let (_, root) = server.http("GET", "/api/contents", None);
    assert!(!root.contains(".ipynb_checkpoints"), "{root}");
    let (_, body) = server.http("GET", "/api/contents/notes.txt", None);
    assert_eq!(json(&body)["content"], "hello");

    let (status, body) = server.http("POST", "/api/contents", Some(r#"{"type":"notebook"}"#));
    assert_eq!(status, 201, "{body}");
    assert_eq!(json(&body)["path"], "Untitled.ipynb");
    let (_, body) = server.http("POST", "/api/contents", Some(r#"{"type":"notebook"}"#));
    assert_eq!(json(&body)["path"], "Untitled1.ipynb");
    let (_, body) = server.http("POST", "/api/contents", Some(r#"{"type":"directory"}"#));
    assert_eq!(json(&body)["path"], "Untitled Folder");
    let (status, _) = server.http(
        "POST",
        "/api/contents/Untitled%20Folder",
        Some(r#"{"type":"file","ext":".py"}"#),
    );
    assert_eq!(status, 201);
    assert!(server.path("Untitled Folder/untitled.py").exists());
    let untitled =
        collab::Notebook::from_ipynb(&std::fs::read(server.path("Untitled.ipynb")).unwrap())
            .unwrap();
    assert_eq!(untitled.nbformat_minor, 5);

    let (status, _) = server.http("DELETE", "/api/contents/Untitled%20Folder", None);
    assert_eq!(status, 400, "a folder with files is not deleted");
    let (status, _) = server.http("DELETE", "/api/contents/Untitled1.ipynb", None);
    assert_eq!(status, 204);
    assert!(!server.path("Untitled1.ipynb").exists());
    let (status, _) = server.http("GET", "/api/contents/Untitled1.ipynb", None);
    assert_eq!(status, 404);
    let (status, _) = server.http("GET", "/api/contents/.hidden", None);
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_ids_follow_renames_moves_and_restarts() {
    let mut server =
        TestServer::start(&[("a.ipynb", &notebook_with(&["x"])), ("sub/keep.txt", b"")]);
    let (first, _) = server.session("a.ipynb");
    let encoded = "/api/collaboration/session/a.ipynb";
    let (status, _) = server.http(
        "PUT",
        encoded,
        Some(r#"{"format":"json","type":"notebook"}"#),
    );
    assert_eq!(status, 200, "an indexed file answers 200");

    // Renamed through the API while a client is in the room: same id, and state.path follows.
    let mut ada = YClient::join(&server, "a.ipynb").await;
    let (status, body) = server.http(
        "PATCH",
        "/api/contents/a.ipynb",
        Some(r#"{"path":"sub/b.ipynb"}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.session("sub/b.ipynb").0, first);
    let path_is = |c: &YClient, p: &str| {
        use yrs::{Map, ReadTxn, Transact};
        let txn = c.doc.transact();
        txn.get_map("state")
            .and_then(|s| s.get(&txn, "path"))
            .map(|v| v.to_string(&txn))
            == Some(p.to_string())
    };
    assert!(
        ada.pump_until(Duration::from_secs(5), |c| path_is(c, "sub/b.ipynb"))
            .await
    );
    let (status, _) = server.http(
        "PATCH",
        "/api/contents/sub%2Fb.ipynb",
        Some(r#"{"path":"sub/keep.txt"}"#),
    );
    assert_eq!(status, 409, "renaming onto an existing file is refused");
    drop(ada);

    // Moved outside Quire, then the server restarts: still the same id.
    std::fs::create_dir_all(server.path("elsewhere")).unwrap();
    std::fs::rename(server.path("sub/b.ipynb"), server.path("elsewhere/c.ipynb")).unwrap();
    server.kill9();
    server.restart();
    assert_eq!(server.session("elsewhere/c.ipynb").0, first);
    // And a client holding the old id finds the file wherever it went.
    std::fs::rename(server.path("elsewhere/c.ipynb"), server.path("d.ipynb")).unwrap();
    let (_, session) = server.session("sub/keep.txt");
    let mut bob = YClient::connect(&server.room_url(&first, &session)).await;
    bob.sync().await;
    assert_eq!(bob.sources(), vec!["x"]);
    let (status, _) = server.http(
        "PUT",
        "/api/collaboration/session/missing.ipynb",
        Some("{}"),
    );
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_in_a_url_once_then_a_cookie() {
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&["x"]))]);
    let browser = server.browser();
    let link = browser.get(&format!("/api/me?token={TOKEN}"));
    assert_eq!(link.status, 200, "{link:?}");
    let set_cookie = link.header("set-cookie").expect("a login cookie");
    assert!(
        set_cookie.to_lowercase().contains("httponly"),
        "{set_cookie}"
    );
    let reply = browser.get("/api/me");
    assert_eq!(reply.status, 200);
    let me = json(&reply.body);
    for key in ["username", "name", "display_name", "initials", "color"] {
        assert!(me["identity"][key].is_string(), "identity lacks {key}");
    }
    let (status, _) = server.http_with(
        "GET",
        "/api/me",
        None,
        &[("Cookie", "quire-session=forged")],
    );
    assert_eq!(status, 403);
}
