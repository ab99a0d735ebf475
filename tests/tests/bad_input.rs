//! Bad input gets a clear refusal, disturbs nobody else, and loses nothing.

use std::time::Duration;

use bytes::Bytes;
use quire_tests::{notebook_with, read_notebook, Reply, TestServer, YClient, TOKEN};

async fn room_with_witness(server: &TestServer) -> YClient {
    YClient::join(server, "nb.ipynb").await
}

/// Each malformed frame closes only the connection that sent it, with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_only_their_sender() {
    let server = TestServer::start_with_config(
        &[("nb.ipynb", &notebook_with(&["kept"]))],
        "max_frame_bytes = 1000000\n",
    );
    let mut witness = room_with_witness(&server).await;
    let cases: Vec<(&str, Bytes, u16, &str)> = vec![
        (
            "unknown message type",
            Bytes::from_static(&[9, 1, 2]),
            4400,
            "unknown message type 9",
        ),
        (
            "truncated frame",
            Bytes::from_static(&[0, 2, 50, 1, 2]),
            4400,
            "truncated",
        ),
        (
            "garbage update",
            collab::protocol::encode_sync_update(&[7, 7, 7, 7, 7]),
            4400,
            "update",
        ),
        (
            "crafted invalid UTF-8 update",
            collab::protocol::encode_sync_update(&[
                0x01, 0x01, 0xca, 0x01, 0x00, 0xc4, 0x01, 0x0a, 0x01, 0x0b, 0x06, 0x20, 0x74, 0x68,
                0x65, 0xe5, 0x65, 0x00,
            ]),
            4400,
            "update",
        ),
        (
            "malformed state vector",
            collab::protocol::encode_sync_step1(&[0xff, 0xff]),
            4400,
            "state vector",
        ),
        (
            "a state vector claiming four billion clients",
            collab::protocol::encode_sync_step1(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1, 1]),
            4400,
            "impossible entry count",
        ),
        (
            "an update claiming four billion clients",
            collab::protocol::encode_sync_update(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1, 1, 0]),
            4400,
            "impossible client count",
        ),
        (
            "malformed awareness",
            collab::protocol::encode_awareness(&[3, 1]),
            4400,
            "awareness",
        ),
        (
            "oversized frame",
            collab::protocol::encode_sync_update(&vec![0u8; 1_500_000]),
            1009,
            "exceeds the limit",
        ),
    ];
    for (what, frame, code, reason) in cases {
        let mut bad = YClient::join(&server, "nb.ipynb").await;
        bad.send(frame).await;
        let (got_code, got_reason) = bad.expect_close(Duration::from_secs(5)).await;
        assert_eq!(got_code, code, "{what}: {got_reason}");
        assert!(
            got_reason.contains(reason),
            "{what}: reason {got_reason:?} should mention {reason:?}"
        );
    }
    // A text frame is not part of the protocol either.
    let (file_id, session) = server.session("nb.ipynb");
    let mut texter = YClient::connect(&server.room_url(&file_id, &session)).await;
    texter
        .send_message(tokio_tungstenite::tungstenite::Message::Text(
            "hello".into(),
        ))
        .await
        .unwrap();
    // The witness was never disturbed and its edits still land.
    witness.append_and_wait_echo(0, " and well").await;
    assert_eq!(witness.closed, None);
    assert!(witness.save(1).await == "success");
    assert_eq!(
        read_notebook(&server.path("nb.ipynb")).cells[0].source,
        "kept and well"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_notebook_is_refused_and_never_touched() {
    let broken = b"{\"cells\": [ this is not json";
    let wrong_shape = br#"{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"cell_type": "code", "source": 42}]}"#;
    let server = TestServer::start(&[("broken.ipynb", broken), ("shape.ipynb", wrong_shape)]);
    for (name, bytes, expected) in [
        ("broken.ipynb", &broken[..], "invalid JSON"),
        (
            "shape.ipynb",
            &wrong_shape[..],
            "cell 0: \"source\" must be a string or a list of strings",
        ),
    ] {
        let (file_id, session) = server.session(name);
        let mut client = YClient::connect(&server.room_url(&file_id, &session)).await;
        let (code, reason) = client.expect_close(Duration::from_secs(5)).await;
        assert_eq!(code, 4500, "{name}");
        assert!(reason.contains(expected), "{name}: {reason:?}");
        let (status, body) = server.http("GET", &format!("/api/contents/{name}?content=1"), None);
        assert_eq!(status, 400, "{name}: {body}");
        assert!(body.contains("not a notebook"), "{body}");
        // The room refused at load and closed the connection after: had it written the file,
        // it would have before that close, which we saw.
        assert_eq!(
            std::fs::read(server.path(name)).unwrap(),
            bytes,
            "{name} must be untouched"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_cannot_leave_the_served_folder() {
    let server = TestServer::start(&[("inside/nb.ipynb", &notebook_with(&["x"]))]);
    // A sibling folder whose name shares the root's prefix, and a symlink leading out.
    let sibling = format!("{}-evil", server.root.display());
    std::fs::create_dir_all(&sibling).unwrap();
    std::fs::write(
        format!("{sibling}/secret.ipynb"),
        notebook_with(&["secret"]),
    )
    .unwrap();
    std::os::unix::fs::symlink(&sibling, server.root.join("link")).unwrap();
    let leaf = server
        .root
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let attempts = [
        "/api/contents/..%2F..%2Fetc%2Fpasswd".to_string(),
        "/api/contents/%2e%2e/%2e%2e/etc/passwd".to_string(),
        "/api/contents/inside/../../etc/passwd".to_string(),
        format!("/api/contents/..%2F{leaf}-evil%2Fsecret.ipynb"),
        "/api/contents/link/secret.ipynb".to_string(),
        "/api/contents//etc/passwd".to_string(),
        "/api/contents/a%00b".to_string(),
    ];
    for path in &attempts {
        let (status, body) = server.http("GET", path, None);
        assert!(
            status == 400 || status == 404,
            "{path} gave {status}: {body}"
        );
        assert!(
            !body.contains("root:") && !body.contains("\"content\""),
            "{path} leaked a file: {body}"
        );
    }
    for path in ["..%2Fx.ipynb", "link%2Fsecret.ipynb", "%2Fetc%2Fpasswd"] {
        let (status, _) = server.http(
            "PUT",
            &format!("/api/collaboration/session/{path}"),
            Some("{}"),
        );
        assert!(
            status == 400 || status == 404,
            "session for {path} gave {status}"
        );
    }
    let (status, _) = server.http(
        "PATCH",
        "/api/contents/inside/nb.ipynb",
        Some(r#"{"path":"../escaped.ipynb"}"#),
    );
    assert!(status == 400 || status == 404);
    assert!(
        server.root.join("inside/nb.ipynb").exists(),
        "nothing was moved"
    );
    let (status, _) = server.http(
        "POST",
        "/api/contents/..%2F..",
        Some(r#"{"type":"notebook"}"#),
    );
    assert!(status == 400 || status == 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_token_or_from_another_origin_are_refused() {
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&["x"]))]);
    let (status, _) = server.http_with("GET", "/api/contents", None, &[]);
    assert_eq!(status, 403);
    let (status, _) = server.http_with(
        "GET",
        "/api/contents",
        None,
        &[("Authorization", "token wrong")],
    );
    assert_eq!(status, 403);
    let (file_id, session) = server.session("nb.ipynb");
    let path = format!(
        "/api/collaboration/room/json:notebook:{file_id}?sessionId={session}&token={TOKEN}"
    );
    let upgrade = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Origin", "https://evil.example"),
    ];
    let (status, _) = server.http_with("GET", &path, None, &upgrade);
    assert_eq!(status, 403);
    let no_token = format!("/api/collaboration/room/json:notebook:{file_id}?sessionId={session}");
    let (status, _) = server.http_with("GET", &no_token, None, &upgrade[..4]);
    assert_eq!(status, 403);
}

#[test]
fn pages_and_answers_carry_the_security_headers() {
    let server = TestServer::start(&[("nb.ipynb", &quire_tests::notebook_with(&["x"]))]);
    let fetch = |path: &str| {
        let token = format!("token {TOKEN}");
        server
            .browser()
            .request("GET", path, None, &[("Authorization", &token)])
    };
    let page = fetch("/");
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("frame-ancestors 'none'"), "{page:?}");
    assert!(page
        .header("x-frame-options")
        .is_some_and(|v| v.eq_ignore_ascii_case("deny")));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let api = fetch("/api/contents/nb.ipynb");
    assert_eq!(
        api.header("x-content-type-options"),
        Some("nosniff"),
        "{api:?}"
    );
    assert_eq!(api.header("referrer-policy"), Some("no-referrer"));
}

/// Whether an answer sets cookie `name`.
fn sets_cookie(reply: &Reply, name: &str) -> bool {
    reply.headers.get_all("set-cookie").iter().any(|v| {
        v.to_str()
            .unwrap_or_default()
            .starts_with(&format!("{name}="))
    })
}

#[test]
fn logging_in_never_redirects_to_another_site() {
    let server = TestServer::start(&[("nb.ipynb", &quire_tests::notebook_with(&["x"]))]);
    // Each `next` as it would appear in a link's query string.
    let cases = [
        ("//evil.example", "/"),
        ("https://evil.example", "/"),
        ("/%5Cevil.example", "/"),
        ("%2F%2Fevil.example", "/"),
        ("%252F%252Fevil.example", "/"),
        ("/%09/evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/notebooks/nb.ipynb", "/notebooks/nb.ipynb"),
    ];
    let logged_in = server.logged_in_browser();
    let log_in_with_form = |body: &str| {
        let browser = server.browser();
        let origin = browser.origin().to_string();
        browser.request(
            "POST",
            "/login",
            Some(body),
            &[
                ("Origin", &origin),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
        )
    };
    for (next, expected) in cases {
        // Already logged in: straight on to `next`, if it stays here.
        let reply = logged_in.get(&format!("/login?next={next}"));
        assert_eq!(reply.status, 303, "{next}: {reply:?}");
        assert_eq!(
            reply.header("location"),
            Some(expected),
            "GET with next={next}"
        );
        // Logging in with the form: the same.
        let reply = log_in_with_form(&format!("token={TOKEN}&next={next}"));
        assert_eq!(reply.status, 303, "{next}: {reply:?}");
        assert_eq!(
            reply.header("location"),
            Some(expected),
            "POST with next={next}"
        );
        assert!(sets_cookie(&reply, "quire-session"), "{reply:?}");
    }
    // Not logged in: the form, and a wrong token gets no cookie and no redirect.
    let reply = server.browser().get("/login?next=//evil.example");
    assert_eq!(reply.status, 200, "{reply:?}");
    let whole = format!("{:?}{}", reply.headers, reply.body);
    assert!(!whole.contains("evil.example"), "{whole}");
    let reply = log_in_with_form("token=wrong&next=/");
    assert_eq!(reply.status, 403, "{reply:?}");
    assert!(reply.header("location").is_none());
    assert!(reply.header("set-cookie").is_none());
}

#[test]
fn guessing_the_token_is_slowed_down() {
    let server = TestServer::start(&[("nb.ipynb", &quire_tests::notebook_with(&["x"]))]);
    let mut statuses = Vec::new();
    for i in 0..30 {
        let (status, _) = server.http_with(
            "GET",
            "/api/contents",
            None,
            &[("Authorization", &format!("token guess-{i}"))],
        );
        statuses.push(status);
        if status == 429 {
            break;
        }
    }
    assert_eq!(statuses[0], 403);
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // The right token is never refused (tests/limits.rs checks every way of giving it).
    let (status, _) = server.http("GET", "/api/contents", None);
    assert_eq!(status, 200);
}
