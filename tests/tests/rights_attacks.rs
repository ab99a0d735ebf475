//! Red-team attacks on the rights checks of RAW requests and of the REST routes, made as an
//! outsider would: hand-made websocket frames and HTTP requests from guests holding links of
//! each role. Each test asserts what a user would check: the kernel did not run or restart, the
//! document did not change, the refusal names the field.

use std::time::Duration;

use bytes::Bytes;
use quire_tests::{notebook_with, Guest, TestServer, YClient};
use serde_json::{json, Value};

const RUN: Duration = Duration::from_secs(60);
const ANSWER: Duration = Duration::from_secs(10);
const RUN_REFUSAL: &str = "you may not run code in this notebook";
const EDIT_REFUSAL: &str = "you may not edit this notebook";

fn guest_of(server: &TestServer, file_id: &str, role: &str, name: &str) -> (Guest, Value) {
    let link = server.create_link(file_id, json!({ "role": role }));
    let (status, body, browser) = server.redeem_link(link["token"].as_str().unwrap(), name);
    assert_eq!(status, 200, "{body}");
    let browser = browser.expect("a guest cookie");
    let guest = Guest {
        cookie: browser.cookie("quire-guest").unwrap(),
        browser,
        file_id: body["file_id"].as_str().unwrap().to_string(),
    };
    (guest, link)
}

/// The sharing API's path of a link.
fn link_path(file_id: &str, link: &Value) -> String {
    format!(
        "/api/sharing/{file_id}/links/{}",
        link["id"].as_str().unwrap()
    )
}

fn guest_url(server: &TestServer, file_id: &str) -> String {
    let (_, session) = server.session("nb.ipynb");
    format!(
        "ws://127.0.0.1:{}/api/collaboration/room/json:notebook:{file_id}?sessionId={session}",
        server.port
    )
}

async fn join_as(server: &TestServer, guest: &Guest) -> YClient {
    let mut client =
        YClient::connect_with_cookie(&guest_url(server, &guest.file_id), &guest.cookie).await;
    client.sync().await;
    client
}

/// Sends `message` with `request_id: id` and returns the reply carrying that id.
async fn ask(client: &mut YClient, mut message: Value, id: u64) -> Value {
    let kind = message["type"].clone();
    message["request_id"] = json!(id);
    client.request(message.clone()).await;
    client
        .wait_raw(ANSWER, |m| {
            m["responseTo"] == json!(id) && m["type"] == kind
        })
        .await
        .unwrap_or_else(|| panic!("no answer to {message} (closed: {:?})", client.closed))
}

/// Sends raw RAW bytes (a varString of `text`, then `tail`).
fn raw_frame(text: &[u8], tail: &[u8]) -> Bytes {
    let mut out = Vec::new();
    collab::protocol::write_var_uint(&mut out, 2);
    collab::protocol::write_var_bytes(&mut out, text);
    out.extend_from_slice(tail);
    out.into()
}

fn kernels(server: &TestServer) -> Vec<Value> {
    let (status, body) = server.http("GET", "/api/kernels", None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn stream_text(client: &YClient, cell_id: &str) -> String {
    client
        .cell(cell_id)
        .outputs
        .iter()
        .filter_map(|o| o["text"].as_str())
        .collect()
}

/// A watcher and an editor without `execute` send every kernel request as a RAW frame while the
/// notebook's kernel runs: each is refused naming the right, the kernel is neither interrupted,
/// restarted nor shut down (its variables survive), and no run is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_requests_of_a_watcher_and_an_editor_never_reach_the_kernel() {
    let server = TestServer::start(&[(
        "nb.ipynb",
        &notebook_with(&["x = 41 + 1", "print(x)", "print('guest ran me')"]),
    )]);
    let (file_id, _) = server.session("nb.ipynb");
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    assert_eq!(ada.execute("cell-0").await["status"], "queued");
    assert_eq!(ada.wait_run("cell-0", RUN).await, "ok");
    let before = kernels(&server);
    assert_eq!(before.len(), 1);
    let kernel_id = before[0]["id"].clone();

    let (viewer, _) = guest_of(&server, &file_id, "viewer", "Vic");
    let (editor, _) = guest_of(&server, &file_id, "editor", "Eve");
    let mut vic = join_as(&server, &viewer).await;
    let mut eve = join_as(&server, &editor).await;
    let mut id = 100;
    for client in [&mut vic, &mut eve] {
        for request in [
            json!({"type": "interrupt"}),
            json!({"type": "restart"}),
            json!({"type": "shutdown"}),
            json!({"type": "execute", "cell_id": "cell-2"}),
            json!({"type": "execute", "cell_id": "cell-2", "code": "x = 0"}),
            json!({"type": "input_reply", "cell_id": "cell-0", "value": "x"}),
        ] {
            id += 1;
            let reply = ask(client, request.clone(), id).await;
            assert_eq!(reply["status"], "refused", "{request} -> {reply}");
            assert_eq!(reply["reason"], RUN_REFUSAL, "{request} -> {reply}");
        }
    }
    // The watcher may not take locks nor chat.
    for (request, reason) in [
        (json!({"type": "lock", "cell_id": "cell-0"}), EDIT_REFUSAL),
        (json!({"type": "unlock", "cell_id": "cell-0"}), EDIT_REFUSAL),
        (
            json!({"type": "chat", "text": "hi"}),
            "you may read the chat, not post to it",
        ),
    ] {
        id += 1;
        let reply = ask(&mut vic, request.clone(), id).await;
        assert_eq!(reply["status"], "refused", "{request} -> {reply}");
        assert_eq!(reply["reason"], reason);
    }
    ada.sentinel().await;
    assert_eq!(
        ada.run_status("cell-2"),
        "",
        "a guest's execute queued a run"
    );
    assert!(ada.cell("cell-2").outputs.is_empty());
    let after = kernels(&server);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["id"], kernel_id, "the kernel was replaced");
    // The kernel was not restarted: its variable is still there. (An extra `code` field is
    // never what runs.)
    let reply = ask(
        &mut ada,
        json!({"type": "execute", "cell_id": "cell-1", "code": "print('forged')"}),
        1,
    )
    .await;
    assert_eq!(reply["status"], "queued", "{reply}");
    assert_eq!(ada.wait_run("cell-1", RUN).await, "ok");
    assert_eq!(stream_text(&ada, "cell-1"), "42\n");
}

/// A runner's prompt cannot be answered by another runner: `input_reply` is refused unless the
/// prompt is of one's own run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_runner_cannot_answer_my_input_prompt() {
    let server = TestServer::start(&[(
        "nb.ipynb",
        &notebook_with(&["name = input('name? ')\nprint('hi', name)"]),
    )]);
    let (file_id, _) = server.session("nb.ipynb");
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    let (runner, _) = guest_of(&server, &file_id, "runner", "Mallory");
    let mut mallory = join_as(&server, &runner).await;
    assert_eq!(ada.execute("cell-0").await["status"], "queued");
    let prompt = ada
        .wait_raw(RUN, |m| m["type"] == "input_request")
        .await
        .expect("ada is prompted");
    assert_eq!(prompt["cell_id"], "cell-0");
    let reply = ask(
        &mut mallory,
        json!({"type": "input_reply", "cell_id": "cell-0", "value": "mallory"}),
        7,
    )
    .await;
    assert_eq!(reply["status"], "refused", "{reply}");
    assert_eq!(
        reply["reason"],
        "no prompt of yours is waiting in this cell"
    );
    mallory.sentinel().await;
    assert!(
        !mallory.raw.iter().any(|m| m.contains("input_request")),
        "the prompt went to someone who did not ask"
    );
    let reply = ask(
        &mut ada,
        json!({"type": "input_reply", "cell_id": "cell-0", "value": "ada"}),
        8,
    )
    .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(ada.wait_run("cell-0", RUN).await, "ok");
    assert_eq!(stream_text(&ada, "cell-0"), "hi ada\n");
}

/// Locks others hold: another editor can neither release nor take them, nor edit the cell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_someone_else_holds_cannot_be_released_taken_or_edited_through() {
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&["a = 1", "b = 2"]))]);
    let (file_id, _) = server.session("nb.ipynb");
    let (one, _) = guest_of(&server, &file_id, "editor", "Eve");
    let (two, _) = guest_of(&server, &file_id, "editor", "Mallory");
    let mut eve = join_as(&server, &one).await;
    let mut mallory = join_as(&server, &two).await;
    let granted = ask(&mut eve, json!({"type": "lock", "cell_id": "cell-0"}), 1).await;
    assert_eq!(granted["status"], "ok", "{granted}");
    let unlock = ask(
        &mut mallory,
        json!({"type": "unlock", "cell_id": "cell-0"}),
        2,
    )
    .await;
    assert_eq!(unlock["status"], "refused", "{unlock}");
    assert_eq!(unlock["cell_id"], "cell-0");
    let lock = ask(
        &mut mallory,
        json!({"type": "lock", "cell_id": "cell-0"}),
        3,
    )
    .await;
    assert_eq!(lock["status"], "refused", "{lock}");
    assert!(
        lock["reason"].as_str().unwrap().contains("Eve"),
        "the refusal names the holder: {lock}"
    );
    // Unknown cells, and a cell id that is not a string.
    let none = ask(&mut mallory, json!({"type": "lock", "cell_id": "nope"}), 4).await;
    assert_eq!(none["reason"], "no cell with id nope");
    let wrong = ask(
        &mut mallory,
        json!({"type": "unlock", "cell_id": ["cell-0"]}),
        5,
    )
    .await;
    assert_eq!(wrong["status"], "refused");
    assert!(
        wrong["reason"].as_str().unwrap().contains("`cell_id`"),
        "{wrong}"
    );
    // Editing through the lock is refused; the lock still holds.
    mallory.append_to_cell(0, " # mallory").await;
    mallory
        .wait_raw(ANSWER, |m| m["type"] == "refused")
        .await
        .expect("the update through a lock is refused");
    eve.sentinel().await;
    assert_eq!(eve.sources(), vec!["a = 1", "b = 2"]);
    let released = ask(&mut eve, json!({"type": "unlock", "cell_id": "cell-0"}), 6).await;
    assert_eq!(released["status"], "ok", "{released}");
}

/// Malformed requests are refused naming the field (the connection stays), or close the
/// connection with 4400 when no reply can answer them; none crashes or hangs the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_raw_requests_are_refused_or_closed_and_the_room_carries_on() {
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&["a = 1"]))]);
    let mut ada = YClient::join(&server, "nb.ipynb").await;

    // Answered refusals (request ids that are not u64s come back as null).
    for (text, field) in [
        (
            r#"{"type":"lock","cell_id":"cell-0","request_id":1e30}"#,
            "`request_id`",
        ),
        (
            r#"{"type":"lock","cell_id":"cell-0","request_id":18446744073709551616}"#,
            "`request_id`",
        ),
        (
            r#"{"type":"lock","cell_id":"cell-0","request_id":-1}"#,
            "`request_id`",
        ),
        (
            r#"{"type":"lock","cell_id":"cell-0","request_id":"7"}"#,
            "`request_id`",
        ),
        (
            r#"{"type":"lock","cell_id":"cell-0","request_id":1.5}"#,
            "`request_id`",
        ),
    ] {
        ada.raw.clear();
        ada.send(collab::protocol::encode_raw(text)).await;
        let reply = ada
            .wait_raw(ANSWER, |m| m["type"] == "lock")
            .await
            .unwrap_or_else(|| panic!("no answer to {text} ({:?})", ada.closed));
        assert_eq!(reply["status"], "refused", "{text} -> {reply}");
        assert_eq!(reply["responseTo"], Value::Null);
        assert!(
            reply["reason"].as_str().unwrap().contains(field),
            "{text} -> {reply}"
        );
    }
    for (request, field) in [
        (json!({"type": "lock", "cell_id": 5}), "`cell_id`"),
        (json!({"type": "lock", "cell_id": null}), "`cell_id`"),
        (json!({"type": "execute"}), "`cell_id`"),
        (
            json!({"type": "input_reply", "cell_id": "cell-0"}),
            "`value`",
        ),
        (json!({"type": "chat", "text": {"a": 1}}), "`text`"),
        (json!({"type": "chat"}), "`text`"),
    ] {
        let reply = ask(&mut ada, request.clone(), 10).await;
        assert_eq!(reply["status"], "refused", "{request} -> {reply}");
        assert!(
            reply["reason"].as_str().unwrap().contains(field),
            "{request} -> {reply}"
        );
        ada.raw.clear();
    }
    // The largest id comes back whole; extra fields change nothing (not who speaks).
    let reply = ask(
        &mut ada,
        json!({"type": "chat", "text": "hi", "username": "root", "name": "Root",
               "capabilities": ["manage"], "nested": [[[[[[{"a": [1]}]]]]]]}),
        u64::MAX,
    )
    .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let posted = ada
        .wait_raw(ANSWER, |m| m["type"] == "chat_message")
        .await
        .unwrap();
    assert_ne!(posted["message"]["username"], "root", "{posted}");
    // Chat length bounds.
    let long = ask(
        &mut ada,
        json!({"type": "chat", "text": "x".repeat(4001)}),
        11,
    )
    .await;
    assert_eq!(long["status"], "refused", "{long}");
    let blank = ask(&mut ada, json!({"type": "chat", "text": " \n\t "}), 12).await;
    assert_eq!(blank["status"], "refused", "{blank}");
    // Not ours: ignored, the connection stays.
    ada.send(collab::protocol::encode_raw("[1, 2]")).await;
    ada.send(collab::protocol::encode_raw("hello")).await;
    ada.send(collab::protocol::encode_raw("")).await;
    ada.sentinel().await;

    // Messages no reply can answer close that connection only, with 4400.
    let deep = format!(
        r#"{{"type":"chat","text":"x","deep":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let closing: Vec<(&str, Bytes, &str)> = vec![
        (
            "unknown type",
            collab::protocol::encode_raw(r#"{"type":"fly"}"#),
            "unknown request type",
        ),
        (
            "a server event",
            collab::protocol::encode_raw(r#"{"type":"permissions","capabilities":["manage"]}"#),
            "unknown request type",
        ),
        (
            "type not a string",
            collab::protocol::encode_raw(r#"{"type":["execute"]}"#),
            "not a string",
        ),
        (
            "no type",
            collab::protocol::encode_raw(r#"{"cell_id":"cell-0"}"#),
            "type",
        ),
        (
            "truncated",
            collab::protocol::encode_raw(r#"{"type":"execute","cell_id":"cell-0""#),
            "malformed RAW",
        ),
        (
            "duplicate type, last unknown",
            collab::protocol::encode_raw(r#"{"type":"execute","type":"fly","cell_id":"cell-0"}"#),
            "unknown request type",
        ),
        (
            "deep nesting",
            collab::protocol::encode_raw(&deep),
            "malformed RAW",
        ),
        (
            "not UTF-8",
            raw_frame(b"{\"type\":\"chat\",\"text\":\"\xff\xfe\"}", b""),
            "",
        ),
        ("save without its id", raw_frame(b"save", b""), "save"),
        (
            "save with an overlong id",
            raw_frame(b"save", &[0xff; 11]),
            "save",
        ),
    ];
    for (what, frame, reason) in closing {
        let mut eve = YClient::join(&server, "nb.ipynb").await;
        eve.send(frame).await;
        let (code, why) = eve.expect_close(ANSWER).await;
        assert_eq!(code, 4400, "{what}: {why}");
        assert!(why.contains(reason), "{what}: {why}");
    }
    // A text frame.
    let mut eve = YClient::join(&server, "nb.ipynb").await;
    eve.send_message(tokio_tungstenite::tungstenite::Message::Text(
        r#"{"type":"execute","cell_id":"cell-0"}"#.into(),
    ))
    .await
    .unwrap();
    assert_eq!(eve.expect_close(ANSWER).await.0, 4400);

    // The room and the first connection carry on; nothing ran.
    ada.sentinel().await;
    ada.append_and_wait_echo(0, " # still here").await;
    assert_eq!(ada.run_status("cell-0"), "");
    assert!(
        kernels(&server).is_empty(),
        "a malformed request started a kernel"
    );
}

/// A RAW save is JupyterLab's: a watcher's is `failed` (with the biggest id carried back) and
/// writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watchers_raw_save_fails_and_writes_nothing() {
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&["a = 1"]))]);
    let (file_id, _) = server.session("nb.ipynb");
    let (viewer, _) = guest_of(&server, &file_id, "viewer", "Vic");
    let (editor, _) = guest_of(&server, &file_id, "editor", "Eve");
    let mut vic = join_as(&server, &viewer).await;
    let mut eve = join_as(&server, &editor).await;
    let before = std::fs::read(server.path("nb.ipynb")).unwrap();
    assert_eq!(vic.save(u64::MAX).await, "failed");
    // A trailing garbage after the id is ignored, not a second request.
    let mut tail = Vec::new();
    collab::protocol::write_var_uint(&mut tail, 5);
    tail.extend_from_slice(b"{\"type\":\"execute\",\"cell_id\":\"cell-0\"}");
    vic.send(raw_frame(b"save", &tail)).await;
    let reply = vic
        .wait_raw(ANSWER, |m| m["type"] == "save" && m["responseTo"] == 5)
        .await
        .expect("an answer");
    assert_eq!(reply["status"], "failed");
    vic.sentinel().await;
    assert_eq!(std::fs::read(server.path("nb.ipynb")).unwrap(), before);
    assert_eq!(vic.run_status("cell-0"), "");
    // An editor's save works.
    eve.append_and_wait_echo(0, " # eve").await;
    assert_eq!(eve.save(1).await, "success");
    assert_eq!(server.sources_on_disk("nb.ipynb"), vec!["a = 1 # eve"]);
}

/// Kernel requests from a room that is not a notebook's (the notebook opened as text) start or
/// stop nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_requests_in_a_text_room_of_the_notebook_start_and_stop_nothing() {
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&["x = 7", "print(x)"]))]);
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    assert_eq!(ada.execute("cell-0").await["status"], "queued");
    assert_eq!(ada.wait_run("cell-0", RUN).await, "ok");
    let kernel_id = kernels(&server)[0]["id"].clone();
    let (file_id, session) = server.session_as("nb.ipynb", "text", "file");
    let mut text = YClient::connect(&server.room_url_for("text:file", &file_id, &session)).await;
    text.sync().await;
    // (interrupt and restart are the room's, and the text room of a notebook has its kernel
    // attached: its runners may interrupt or restart it from there, as from the notebook.)
    for (n, request) in [
        json!({"type": "shutdown"}),
        json!({"type": "execute", "cell_id": "cell-1"}),
    ]
    .into_iter()
    .enumerate()
    {
        let reply = ask(&mut text, request.clone(), n as u64 + 1).await;
        assert_eq!(reply["status"], "refused", "{request} -> {reply}");
        assert_eq!(
            reply["reason"], "only notebooks run code",
            "{request} -> {reply}"
        );
    }
    assert_eq!(kernels(&server)[0]["id"], kernel_id);
    assert_eq!(ada.execute("cell-1").await["status"], "queued");
    assert_eq!(ada.wait_run("cell-1", RUN).await, "ok");
    assert_eq!(stream_text(&ada, "cell-1"), "7\n");
}

/// Guests' cookies, whatever their link's role, reach none of the kernel, session, contents
/// writing, sharing or people routes: the kernel keeps running, the file is unchanged, no link
/// is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_cookies_of_every_role_reach_no_kernel_session_or_sharing_route() {
    let server = TestServer::start(&[
        ("nb.ipynb", &notebook_with(&["x = 3", "print(x)"])),
        ("other.ipynb", &notebook_with(&["secret = 42"])),
    ]);
    let (file_id, _) = server.session("nb.ipynb");
    let (other_id, _) = server.session("other.ipynb");
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    assert_eq!(ada.execute("cell-0").await["status"], "queued");
    assert_eq!(ada.wait_run("cell-0", RUN).await, "ok");
    let kernel = kernels(&server)[0].clone();
    let kid = kernel["id"].as_str().unwrap().to_string();
    let (_, sessions) = server.http("GET", "/api/sessions", None);
    let before_disk = std::fs::read(server.path("nb.ipynb")).unwrap();
    let links_before = server
        .http("GET", &format!("/api/sharing/{file_id}/links"), None)
        .1;
    let session_body = json!({"path": "nb.ipynb", "type": "notebook", "name": "nb.ipynb",
                              "kernel": {"name": "python3"}})
    .to_string();
    let execute_body =
        json!({"cell_id": "cell-1", "document_id": format!("json:notebook:{file_id}")}).to_string();
    let link_body = json!({"role": "runner"}).to_string();
    let contents_body = json!({"type": "notebook", "format": "json",
                               "content": {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}})
    .to_string();
    for role in ["viewer", "editor", "runner"] {
        let (guest, link) = guest_of(&server, &file_id, role, "Gus");
        let link_id = link["id"].as_str().unwrap();
        let attempts: Vec<(&str, String, Option<&str>)> = vec![
            ("GET", "/api/kernels".into(), None),
            ("GET", format!("/api/kernels/{kid}"), None),
            ("POST", "/api/kernels".into(), Some("{}")),
            ("POST", format!("/api/kernels/{kid}/interrupt"), None),
            ("POST", format!("/api/kernels/{kid}/restart"), None),
            ("DELETE", format!("/api/kernels/{kid}"), None),
            (
                "POST",
                format!("/api/kernels/{kid}/execute"),
                Some(&execute_body),
            ),
            ("GET", "/api/sessions".into(), None),
            ("POST", "/api/sessions".into(), Some(&session_body)),
            ("PUT", "/api/contents/nb.ipynb".into(), Some(&contents_body)),
            (
                "PATCH",
                "/api/contents/nb.ipynb".into(),
                Some(r#"{"path": "moved.ipynb"}"#),
            ),
            ("DELETE", "/api/contents/nb.ipynb".into(), None),
            (
                "POST",
                "/api/contents".into(),
                Some(r#"{"type": "notebook"}"#),
            ),
            ("GET", format!("/api/sharing/{file_id}/links"), None),
            (
                "POST",
                format!("/api/sharing/{file_id}/links"),
                Some(&link_body),
            ),
            (
                "PATCH",
                format!("/api/sharing/{file_id}/links/{link_id}"),
                Some(&link_body),
            ),
            (
                "DELETE",
                format!("/api/sharing/{file_id}/links/{link_id}"),
                None,
            ),
            ("GET", "/api/audit".into(), None),
            ("GET", "/api/contents/other.ipynb".into(), None),
            ("GET", format!("/api/notebooks/{other_id}"), None),
            ("GET", format!("/view/{other_id}"), None),
            ("GET", "/api/contents/../kernels".into(), None),
            ("GET", "/api/contents/%2e%2e/kernels".into(), None),
            ("GET", "/api/contents/..%2fother.ipynb".into(), None),
            ("GET", "//api/kernels".into(), None),
            (
                "POST",
                format!("/projects/x/api/kernels/{kid}/interrupt"),
                None,
            ),
        ];
        for (method, path, body) in attempts {
            let reply = guest.browser.from_page(method, &path, body);
            assert!(
                reply.status >= 400,
                "{role} guest: {method} {path} -> {} {}",
                reply.status,
                reply.body
            );
            assert!(
                !reply.body.contains(&kid) && !reply.body.contains("secret"),
                "{role} guest: {method} {path} leaked: {}",
                reply.body
            );
        }
        // The guest's own notebook stays readable (the cookie works).
        assert_eq!(
            guest.browser.get("/api/contents/nb.ipynb").status,
            200,
            "{role}"
        );
        let _ = &guest.cookie;
    }
    let after = kernels(&server);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["id"], kid.as_str());
    assert_eq!(server.http("GET", "/api/sessions", None).1, sessions);
    assert_eq!(std::fs::read(server.path("nb.ipynb")).unwrap(), before_disk);
    let links_after: Value = serde_json::from_str(
        &server
            .http("GET", &format!("/api/sharing/{file_id}/links"), None)
            .1,
    )
    .unwrap();
    let links_before: Value = serde_json::from_str(&links_before).unwrap();
    assert_eq!(
        links_after.as_array().unwrap().len(),
        links_before.as_array().unwrap().len() + 3,
        "only the three links the owner made"
    );
    // The kernel was neither restarted nor interrupted out of its state.
    assert_eq!(ada.execute("cell-1").await["status"], "queued");
    assert_eq!(ada.wait_run("cell-1", RUN).await, "ok");
    assert_eq!(stream_text(&ada, "cell-1"), "3\n");
}

/// A link changed while its guest's sockets are open: each lowering refuses the next RAW request
/// on every socket at once; revoking closes them (4403) and the cookie opens nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_or_revoked_link_stops_raw_requests_on_open_sockets_at_once() {
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&["y = 5", "print(y)"]))]);
    let (file_id, _) = server.session("nb.ipynb");
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    let (guest, link) = guest_of(&server, &file_id, "runner", "Rue");
    let link_path = link_path(&file_id, &link);
    let mut rue = join_as(&server, &guest).await;
    let mut rue2 = join_as(&server, &guest).await;
    assert_eq!(rue.execute("cell-0").await["status"], "queued");
    assert_eq!(rue.wait_run("cell-0", RUN).await, "ok");
    let kernel_id = kernels(&server)[0]["id"].clone();

    // Runner -> editor: no more kernel requests, on either socket.
    let (status, body) = server.http("PATCH", &link_path, Some(r#"{"role": "editor"}"#));
    assert_eq!(status, 204, "{body}");
    for c in [&mut rue, &mut rue2] {
        let notice = c
            .wait_raw(ANSWER, |m| {
                m["type"] == "permissions"
                    && !m["capabilities"]
                        .as_array()
                        .unwrap()
                        .contains(&json!("execute"))
            })
            .await
            .expect("the lowered rights are announced");
        assert!(notice["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("edit")));
    }
    let mut id = 50;
    for c in [&mut rue, &mut rue2] {
        for request in [
            json!({"type": "execute", "cell_id": "cell-1"}),
            json!({"type": "restart"}),
            json!({"type": "interrupt"}),
            json!({"type": "shutdown"}),
        ] {
            id += 1;
            let reply = ask(c, request.clone(), id).await;
            assert_eq!(reply["status"], "refused", "{request} -> {reply}");
            assert_eq!(reply["reason"], RUN_REFUSAL);
        }
    }
    let lock = ask(&mut rue, json!({"type": "lock", "cell_id": "cell-1"}), 60).await;
    assert_eq!(lock["status"], "ok", "{lock}");

    // Editor -> viewer: no locks, no unlock of the lock held, no chat.
    let (status, _) = server.http("PATCH", &link_path, Some(r#"{"role": "viewer"}"#));
    assert_eq!(status, 204);
    rue.wait_raw(ANSWER, |m| {
        m["type"] == "permissions" && m["capabilities"] == json!(["view", "watch"])
    })
    .await
    .expect("the lowered rights are announced");
    for (request, reason) in [
        (json!({"type": "lock", "cell_id": "cell-0"}), EDIT_REFUSAL),
        (json!({"type": "unlock", "cell_id": "cell-1"}), EDIT_REFUSAL),
        (
            json!({"type": "chat", "text": "hi"}),
            "you may read the chat, not post to it",
        ),
        (json!({"type": "restart"}), RUN_REFUSAL),
    ] {
        id += 1;
        let reply = ask(&mut rue, request.clone(), id).await;
        assert_eq!(reply["status"], "refused", "{request} -> {reply}");
        assert_eq!(reply["reason"], reason);
    }
    assert_eq!(rue.save(70).await, "failed");

    // Revoked: both sockets close with 4403; the cookie opens nothing more.
    let (status, _) = server.http("DELETE", &link_path, None);
    assert!(status == 204 || status == 200, "{status}");
    assert_eq!(rue.expect_close(ANSWER).await.0, 4403);
    assert_eq!(rue2.expect_close(ANSWER).await.0, 4403);
    assert!(guest.browser.get("/api/contents/nb.ipynb").status >= 400);
    let again =
        YClient::try_connect(&guest_url(&server, &guest.file_id), Some(&guest.cookie)).await;
    match again {
        Err(_) => {}
        Ok(mut c) => {
            let (code, why) = c.expect_close(ANSWER).await;
            assert_eq!(code, 4403, "{why}");
        }
    }
    // Nothing of the guest's reached the kernel: its state is intact.
    assert_eq!(kernels(&server)[0]["id"], kernel_id);
    assert_eq!(ada.execute("cell-1").await["status"], "queued");
    assert_eq!(ada.wait_run("cell-1", RUN).await, "ok");
    assert_eq!(stream_text(&ada, "cell-1"), "5\n");
}

/// A connection whose link is lowered to watch-only while it holds a cell's edit lock: the
/// lock goes with the right. Were it kept, a watcher would go on blocking everyone else's
/// edits of that cell (the owner's included) until the lease lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_does_not_outlive_the_edit_right_of_its_holder() {
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&["a = 1", "b = 2"]))]);
    let (file_id, _) = server.session("nb.ipynb");
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    let (guest, link) = guest_of(&server, &file_id, "editor", "Eve");
    let link_path = link_path(&file_id, &link);
    let mut eve = join_as(&server, &guest).await;
    let granted = ask(&mut eve, json!({"type": "lock", "cell_id": "cell-0"}), 1).await;
    assert_eq!(granted["status"], "ok", "{granted}");
    let (status, _) = server.http("PATCH", &link_path, Some(r#"{"role": "viewer"}"#));
    assert_eq!(status, 204);
    eve.wait_raw(ANSWER, |m| {
        m["type"] == "permissions" && m["capabilities"] == json!(["view", "watch"])
    })
    .await
    .expect("the lowered rights are announced");
    // Eve, now a watcher, cannot release it herself.
    let unlock = ask(&mut eve, json!({"type": "unlock", "cell_id": "cell-0"}), 2).await;
    assert_eq!(unlock["status"], "refused");
    // Ada (the owner) may edit the cell, and take it.
    ada.append_to_cell(0, " # ada").await;
    ada.sentinel().await;
    let refused: Vec<&String> = ada
        .raw
        .iter()
        .filter(|m| m.contains("\"refused\""))
        .collect();
    assert!(
        refused.is_empty(),
        "a watcher's lock still blocks the owner's edit: {refused:?}"
    );
    let lock = ask(&mut ada, json!({"type": "lock", "cell_id": "cell-0"}), 3).await;
    assert_eq!(
        lock["status"], "ok",
        "a watcher's lock still blocks the owner: {lock}"
    );
    ada.append_and_wait_echo(0, " !").await;
    assert_eq!(ada.sources(), vec!["a = 1 # ada !", "b = 2"]);
}

/// A guest reaches only their own notebook: no session id for another file, no room of
/// another notebook; as an editor in the text room of their notebook they neither edit nor
/// save (outputs are plain characters there, so that needs `execute`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_reaches_no_other_room_and_cannot_write_their_notebook_as_text() {
    let server = TestServer::start(&[
        ("nb.ipynb", &notebook_with(&["a = 1"])),
        ("other.ipynb", &notebook_with(&["secret = 42"])),
    ]);
    let (file_id, session) = server.session("nb.ipynb");
    let (other_id, _) = server.session("other.ipynb");
    let (guest, _) = guest_of(&server, &file_id, "editor", "Eve");
    for path in [
        "other.ipynb",
        "nb2.ipynb",
        "..%2Fother.ipynb",
        "./other.ipynb",
    ] {
        let reply = guest.browser.from_page(
            "PUT",
            &format!("/api/collaboration/session/{path}"),
            Some(r#"{"format":"json","type":"notebook"}"#),
        );
        assert!(
            reply.status >= 400,
            "{path}: {} {}",
            reply.status,
            reply.body
        );
        assert!(!reply.body.contains(&other_id), "{}", reply.body);
    }
    // Another notebook's room, and its text room.
    for prefix in ["json:notebook", "text:file"] {
        let url = format!(
            "ws://127.0.0.1:{}/api/collaboration/room/{prefix}:{other_id}?sessionId={session}",
            server.port
        );
        match YClient::try_connect(&url, Some(&guest.cookie)).await {
            Err(_) => {}
            Ok(mut c) => {
                let (code, why) = c.expect_close(ANSWER).await;
                assert_eq!(code, 4403, "{prefix}: {why}");
                assert!(c.sources().is_empty() || c.cell_count() == 0);
            }
        }
    }
    // Their notebook as text.
    let (_, text_session) = server.session_as("nb.ipynb", "text", "file");
    let url = format!(
        "ws://127.0.0.1:{}/api/collaboration/room/text:file:{file_id}?sessionId={text_session}",
        server.port
    );
    let before = std::fs::read(server.path("nb.ipynb")).unwrap();
    // An editor guest joins the text room of their notebook, watching only.
    let mut text = YClient::connect_with_cookie(&url, &guest.cookie).await;
    text.sync().await;
    let permissions = text
        .wait_raw(ANSWER, |m| m["type"] == "permissions")
        .await
        .expect("permissions on joining");
    assert!(
        !permissions["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("edit")),
        "{permissions}"
    );
    text.edit(|txn| {
        let source = yrs::WriteTxn::get_or_insert_text(txn, "source");
        yrs::Text::insert(&source, txn, 0, "{\"forged\": true, ");
    })
    .await;
    text.wait_raw(ANSWER, |m| m["type"] == "refused")
        .await
        .expect("the edit is refused");
    assert_eq!(text.save(3).await, "failed");
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    ada.sentinel().await;
    assert_eq!(ada.sources(), vec!["a = 1"]);
    assert_eq!(std::fs::read(server.path("nb.ipynb")).unwrap(), before);
}

/// A guest in both rooms of their notebook (as a notebook and as text): lowering the link
/// reaches both, revoking it closes both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_link_closes_the_guests_notebook_and_text_rooms() {
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&["a = 1"]))]);
    let (file_id, _) = server.session("nb.ipynb");
    let (guest, link) = guest_of(&server, &file_id, "runner", "Rue");
    let link_path = link_path(&file_id, &link);
    let mut notebook = join_as(&server, &guest).await;
    let (_, text_session) = server.session_as("nb.ipynb", "text", "file");
    let url = format!(
        "ws://127.0.0.1:{}/api/collaboration/room/text:file:{file_id}?sessionId={text_session}",
        server.port
    );
    let mut text = YClient::connect_with_cookie(&url, &guest.cookie).await;
    text.sync().await;
    let joined = text
        .wait_raw(ANSWER, |m| m["type"] == "permissions")
        .await
        .expect("a runner joins the text room");
    assert!(joined["capabilities"]
        .as_array()
        .unwrap()
        .contains(&json!("execute")));
    let (status, _) = server.http("PATCH", &link_path, Some(r#"{"role": "editor"}"#));
    assert_eq!(status, 204);
    // In the text room, an editor without execute holds neither edit nor save.
    text.wait_raw(ANSWER, |m| {
        m["type"] == "permissions" && m["capabilities"] == json!(["view", "watch"])
    })
    .await
    .expect("the text room lowers the rights to watching");
    assert_eq!(text.save(4).await, "failed");
    let restart = ask(&mut text, json!({"type": "restart"}), 5).await;
    assert_eq!(restart["reason"], RUN_REFUSAL);
    let (status, _) = server.http("DELETE", &link_path, None);
    assert!(status == 204 || status == 200, "{status}");
    assert_eq!(notebook.expect_close(ANSWER).await.0, 4403);
    assert_eq!(text.expect_close(ANSWER).await.0, 4403);
}

/// A notebook's kernel shut down through the REST API, then asked to restart and interrupt
/// through the room: nothing comes back to life (no kernel the registry does not list), the
/// room answers and carries on, and the next run starts a fresh kernel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_kernel_cannot_be_revived_through_the_room() {
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&["z = 3", "print(z)"]))]);
    let (file_id, _) = server.session("nb.ipynb");
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    assert_eq!(ada.execute("cell-0").await["status"], "queued");
    assert_eq!(ada.wait_run("cell-0", RUN).await, "ok");
    let kernel_id = kernels(&server)[0]["id"].as_str().unwrap().to_string();
    let (status, _) = server.http("DELETE", &format!("/api/kernels/{kernel_id}"), None);
    assert_eq!(status, 204);
    let (guest, _) = guest_of(&server, &file_id, "runner", "Rue");
    let mut rue = join_as(&server, &guest).await;
    let restart = ask(&mut rue, json!({"type": "restart"}), 1).await;
    let interrupt = ask(&mut rue, json!({"type": "interrupt"}), 2).await;
    for reply in [&restart, &interrupt] {
        assert_eq!(reply["status"], "refused", "{reply}");
        assert_eq!(reply["reason"], "no kernel is running for this notebook");
    }
    rue.sentinel().await;
    assert!(kernels(&server).is_empty(), "a deleted kernel came back");
    // The next run starts a new kernel (z is gone).
    assert_eq!(ada.execute("cell-1").await["status"], "queued");
    assert_eq!(ada.wait_run("cell-1", RUN).await, "error");
    let now = kernels(&server);
    assert_eq!(now.len(), 1);
    assert_ne!(now[0]["id"], kernel_id.as_str());
}

/// Links made of single capabilities hold exactly those (widened only to watching): a link
/// cannot carry `manage` (nor the owner role); `execute` alone runs code but edits nothing;
/// `save` alone saves but edits nothing; `view` alone reads the file but joins no room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_capability_links_hold_exactly_what_they_name() {
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&["1 + 1", "b = 2"]))]);
    let (file_id, _) = server.session("nb.ipynb");
    for body in [
        json!({"capabilities": ["manage"]}),
        json!({"capabilities": ["view", "manage"]}),
        json!({"role": "owner"}),
        json!({"capabilities": []}),
        json!({"capabilities": ["root"]}),
    ] {
        let (status, reply) = server.http(
            "POST",
            &format!("/api/sharing/{file_id}/links"),
            Some(&body.to_string()),
        );
        assert_eq!(status, 400, "{body} -> {reply}");
    }
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    let link = |caps: Value| {
        let link = server.create_link(&file_id, json!({ "capabilities": caps }));
        let (status, body, browser) = server.redeem_link(link["token"].as_str().unwrap(), "Gus");
        assert_eq!(status, 200, "{body}");
        let browser = browser.unwrap();
        Guest {
            cookie: browser.cookie("quire-guest").unwrap(),
            browser,
            file_id: file_id.clone(),
        }
    };

    // execute alone.
    let runner = link(json!(["execute"]));
    let mut rex = join_as(&server, &runner).await;
    for (n, request) in [
        json!({"type": "lock", "cell_id": "cell-0"}),
        json!({"type": "chat", "text": "hi"}),
    ]
    .into_iter()
    .enumerate()
    {
        let reply = ask(&mut rex, request.clone(), n as u64 + 1).await;
        assert_eq!(reply["status"], "refused", "{request} -> {reply}");
    }
    assert_eq!(rex.save(3).await, "failed");
    rex.append_to_cell(1, " # rex").await;
    rex.wait_raw(ANSWER, |m| m["type"] == "refused")
        .await
        .expect("an execute-only guest cannot edit");
    assert_eq!(rex.execute("cell-0").await["status"], "queued");
    assert_eq!(rex.wait_run("cell-0", RUN).await, "ok");

    // save alone.
    let saver = link(json!(["save"]));
    let mut sam = join_as(&server, &saver).await;
    let reply = ask(&mut sam, json!({"type": "restart"}), 4).await;
    assert_eq!(reply["reason"], RUN_REFUSAL);
    let reply = ask(&mut sam, json!({"type": "lock", "cell_id": "cell-1"}), 5).await;
    assert_eq!(reply["reason"], EDIT_REFUSAL);
    sam.append_to_cell(1, " # sam").await;
    sam.wait_raw(ANSWER, |m| m["type"] == "refused")
        .await
        .expect("a save-only guest cannot edit");
    assert_eq!(sam.save(6).await, "success");

    // view alone: the saved file, no room.
    let reader = link(json!(["view"]));
    assert_eq!(reader.browser.get("/api/contents/nb.ipynb").status, 200);
    match YClient::try_connect(&guest_url(&server, &file_id), Some(&reader.cookie)).await {
        Err(_) => {}
        Ok(mut c) => assert_eq!(c.expect_close(ANSWER).await.0, 4403),
    }

    ada.sentinel().await;
    assert_eq!(ada.sources(), vec!["1 + 1", "b = 2"]);
}

/// A kernel that stops being a notebook's (its session ended while another notebook's session
/// keeps the kernel alive) is no longer that notebook's to drive: a runner of the first
/// notebook, holding no right on the second, cannot restart or interrupt it through the first
/// notebook's room. (The room keeps the kernel it was attached to; nothing detaches it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_cannot_restart_another_notebooks_kernel_left_attached_to_their_room() {
    let server = TestServer::start(&[
        ("nb.ipynb", &notebook_with(&["x = 1"])),
        ("b.ipynb", &notebook_with(&["y = 7", "print(y)"])),
    ]);
    let (file_id, _) = server.session("nb.ipynb");
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    assert_eq!(ada.execute("cell-0").await["status"], "queued");
    assert_eq!(ada.wait_run("cell-0", RUN).await, "ok");
    let kernel_id = kernels(&server)[0]["id"].as_str().unwrap().to_string();
    // The owner uses the same kernel for b.ipynb (JupyterLab: "use the kernel of another
    // session"), runs a cell there, then closes nb.ipynb's session: the kernel stays, for b.
    let body = json!({"path": "b.ipynb", "type": "notebook", "name": "b.ipynb",
                      "kernel": {"id": kernel_id}})
    .to_string();
    let (status, reply) = server.http("POST", "/api/sessions", Some(&body));
    assert_eq!(status, 201, "{reply}");
    let mut bob = YClient::join(&server, "b.ipynb").await;
    assert_eq!(bob.execute("cell-0").await["status"], "queued");
    assert_eq!(bob.wait_run("cell-0", RUN).await, "ok");
    let (_, sessions) = server.http("GET", "/api/sessions", None);
    let sessions: Value = serde_json::from_str(&sessions).unwrap();
    let nb_session = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == "nb.ipynb")
        .expect("nb.ipynb's session")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = server.http("DELETE", &format!("/api/sessions/{nb_session}"), None);
    assert_eq!(status, 204);
    let left = kernels(&server);
    assert_eq!(left.len(), 1, "b.ipynb's session keeps the kernel");
    assert_eq!(left[0]["id"], kernel_id.as_str());

    // Rue may run code in nb.ipynb only.
    let (guest, _) = guest_of(&server, &file_id, "runner", "Rue");
    let mut rue = join_as(&server, &guest).await;
    let restart = ask(&mut rue, json!({"type": "restart"}), 1).await;
    let interrupt = ask(&mut rue, json!({"type": "interrupt"}), 2).await;
    let shutdown = ask(&mut rue, json!({"type": "shutdown"}), 3).await;
    // (shutdown, which the server takes, knows the kernel is no longer this notebook's.)
    assert_eq!(shutdown["status"], "refused", "{shutdown}");
    assert_eq!(shutdown["reason"], "no kernel is running for this notebook");
    // b.ipynb's kernel kept its state: Rue restarted nothing of b's.
    assert_eq!(bob.execute("cell-1").await["status"], "queued");
    assert_eq!(
        bob.wait_run("cell-1", RUN).await,
        "ok",
        "{:?}",
        bob.cell("cell-1").outputs
    );
    assert_eq!(stream_text(&bob, "cell-1"), "7\n");
    assert_eq!(
        restart["status"], "refused",
        "a runner of nb.ipynb restarted the kernel of b.ipynb: {restart}"
    );
    assert_eq!(
        interrupt["status"], "refused",
        "a runner of nb.ipynb interrupted the kernel of b.ipynb: {interrupt}"
    );
}

/// nb.ipynb (which shows a display with the id `status`) and b.ipynb (which updates a display
/// of that id) on one kernel: nb's kernel, which it ran a cell on, given to b by a session.
/// Returns the server, nb's file id, the owner's client in nb and nb's session id.
async fn nb_and_b_on_one_kernel() -> (TestServer, String, YClient, String) {
    let server = TestServer::start(&[
        (
            "nb.ipynb",
            &notebook_with(&[
                "x = 1",
                "from IPython.display import display\ndisplay('bait', display_id='status')",
            ]),
        ),
        (
            "b.ipynb",
            &notebook_with(&[
                "from IPython.display import display\ndisplay('starting', display_id='status')",
                "from IPython.display import update_display\nupdate_display('SECRET-OF-B', display_id='status')",
            ]),
        ),
    ]);
    let (file_id, _) = server.session("nb.ipynb");
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    assert_eq!(ada.execute("cell-0").await["status"], "queued");
    assert_eq!(ada.wait_run("cell-0", RUN).await, "ok");
    let kernel_id = kernels(&server)[0]["id"].as_str().unwrap().to_string();
    let body = json!({"path": "b.ipynb", "type": "notebook", "name": "b.ipynb",
                      "kernel": {"id": kernel_id}})
    .to_string();
    let (status, reply) = server.http("POST", "/api/sessions", Some(&body));
    assert_eq!(status, 201, "{reply}");
    let (_, sessions) = server.http("GET", "/api/sessions", None);
    let sessions: Value = serde_json::from_str(&sessions).unwrap();
    let nb_session = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == "nb.ipynb")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    (server, file_id, ada, nb_session)
}

/// Display updates of a kernel that is no longer a notebook's reach that notebook no more: a
/// runner of one notebook cannot read what another notebook's code shows by registering a
/// display id the other's code updates. (A room stays subscribed to every kernel it was ever
/// attached to; display updates are not filtered by kernel.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_notebooks_display_updates_do_not_leak_into_a_room_it_left() {
    // (The owner stays in nb.ipynb: its room stays open.)
    let (server, file_id, _ada, nb_session) = nb_and_b_on_one_kernel().await;
    let (status, _) = server.http("DELETE", &format!("/api/sessions/{nb_session}"), None);
    assert_eq!(status, 204);

    // Rue, a runner of nb.ipynb only, shows a display with a common id (on nb's new kernel).
    let (guest, _) = guest_of(&server, &file_id, "runner", "Rue");
    let mut rue = join_as(&server, &guest).await;
    assert_eq!(rue.execute("cell-1").await["status"], "queued");
    assert_eq!(rue.wait_run("cell-1", RUN).await, "ok");
    assert_eq!(
        kernels(&server).len(),
        2,
        "nb.ipynb runs on a kernel of its own now"
    );

    // b.ipynb's code updates its own display of that id.
    let mut bob = YClient::join(&server, "b.ipynb").await;
    assert_eq!(bob.execute("cell-0").await["status"], "queued");
    assert_eq!(bob.wait_run("cell-0", RUN).await, "ok");
    assert_eq!(bob.execute("cell-1").await["status"], "queued");
    assert_eq!(bob.wait_run("cell-1", RUN).await, "ok");
    assert!(
        bob.pump_until(ANSWER, |c| format!("{:?}", c.cell("cell-0").outputs)
            .contains("SECRET-OF-B"))
            .await,
        "b's own display is updated"
    );
    // The kernel sent the update to its rooms before the run finished: Rue's sentinel comes
    // after it in her room.
    rue.sentinel().await;
    let seen = format!("{:?}", rue.cell("cell-1").outputs);
    assert!(
        !seen.contains("SECRET-OF-B"),
        "b.ipynb's display update reached a runner of nb.ipynb only: {seen}"
    );
}

/// The same through JupyterLab's "change kernel": nb.ipynb's session moves to a new kernel
/// while b.ipynb keeps the old one; nb's room must stop hearing the old kernel's displays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_kernel_stops_sending_displays_to_the_notebook_that_left_it() {
    // (The owner stays in nb.ipynb: its room stays open.)
    let (server, file_id, _ada, nb_session) = nb_and_b_on_one_kernel().await;
    let (status, reply) = server.http(
        "PATCH",
        &format!("/api/sessions/{nb_session}"),
        Some(r#"{"kernel": {"name": "python3"}}"#),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(kernels(&server).len(), 2);

    let (guest, _) = guest_of(&server, &file_id, "runner", "Rue");
    let mut rue = join_as(&server, &guest).await;
    let restart = ask(&mut rue, json!({"type": "restart"}), 1).await;
    assert_eq!(restart["status"], "ok", "nb's own new kernel: {restart}");
    assert_eq!(rue.execute("cell-1").await["status"], "queued");
    assert_eq!(rue.wait_run("cell-1", RUN).await, "ok");

    let mut bob = YClient::join(&server, "b.ipynb").await;
    assert_eq!(bob.execute("cell-0").await["status"], "queued");
    assert_eq!(bob.wait_run("cell-0", RUN).await, "ok");
    assert_eq!(bob.execute("cell-1").await["status"], "queued");
    assert_eq!(bob.wait_run("cell-1", RUN).await, "ok");
    rue.sentinel().await;
    let seen = format!("{:?}", rue.cell("cell-1").outputs);
    assert!(
        !seen.contains("SECRET-OF-B"),
        "b.ipynb's display update reached a runner of nb.ipynb only: {seen}"
    );
}

/// Runs a guest queued but that had not started when their link was revoked do not start
/// afterwards: code runs only for someone who may run it when it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_queued_by_a_guest_do_not_start_after_the_link_is_revoked() {
    let server = TestServer::start(&[(
        "nb.ipynb",
        &notebook_with(&[
            // Runs until the test lets it go (bounded: 60 s at most).
            "import os, time\nfor _ in range(1200):\n    if os.path.exists('go'):\n        break\n    time.sleep(0.05)",
            "open('after_revoke.txt', 'w').write('ran after the revocation')",
        ]),
    )]);
    let (file_id, _) = server.session("nb.ipynb");
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    let (guest, link) = guest_of(&server, &file_id, "runner", "Rue");
    let mut rue = join_as(&server, &guest).await;
    assert_eq!(rue.execute("cell-0").await["status"], "queued");
    assert_eq!(rue.execute("cell-1").await["status"], "queued");
    // Revoked while cell-0 runs and cell-1 waits behind it.
    assert!(
        ada.pump_until(RUN, |c| c.run_status("cell-0") == "running")
            .await
    );
    assert_eq!(ada.run_status("cell-1"), "queued");
    let link_path = link_path(&file_id, &link);
    let (status, _) = server.http("DELETE", &link_path, None);
    assert!(status == 204 || status == 200, "{status}");
    assert_eq!(rue.expect_close(ANSWER).await.0, 4403);
    std::fs::write(server.path("go"), "").unwrap();
    assert_eq!(ada.wait_run("cell-0", RUN).await, "ok");
    let status = ada.wait_run("cell-1", RUN).await;
    assert!(
        !server.path("after_revoke.txt").exists(),
        "a revoked guest's queued run started after the revocation (cell-1: {status})"
    );
    assert_eq!(status, "aborted");
}
