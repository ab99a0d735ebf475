//! Live-share links: a guest gets exactly the capabilities of the link they opened, enforced
//! on every message; changes and revocations reach live connections at once.

use std::time::{Duration, Instant};

use quire_tests::{notebook_with, Guest, TestServer, YClient, TOKEN};
use serde_json::{json, Value};

/// Opens a link as a browser would, returning (status, body, guest).
fn redeem(server: &TestServer, token: &str, name: &str) -> (u16, Value, Option<Guest>) {
    let (status, json, browser) = server.redeem_link(token, name);
    let guest = browser.map(|browser| Guest {
        cookie: browser.cookie("quire-guest").expect("a guest cookie"),
        browser,
        file_id: json["file_id"].as_str().unwrap_or_default().to_string(),
    });
    (status, json, guest)
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

fn guest_http(guest: &Guest, method: &str, path: &str) -> u16 {
    guest.browser.request(method, path, None, &[]).status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_only_guest_sees_everything_and_changes_nothing() {
    let server = TestServer::start(&[
        ("nb.ipynb", &notebook_with(&["a = 1", "print(a)"])),
        ("other.ipynb", &notebook_with(&["secret = 42"])),
    ]);
    let (file_id, _) = server.session("nb.ipynb");
    let link = server.create_link(&file_id, json!({"role": "viewer", "label": "class"}));
    let token = link["token"].as_str().unwrap();
    assert!(
        token.len() * 4 >= 128,
        "a link token carries at least 128 bits"
    );
    assert_eq!(link["capabilities"], json!(["view", "watch"]));
    let (status, body, guest) = redeem(&server, token, "Grace");
    assert_eq!(status, 200, "{body}");
    let guest = guest.expect("a guest cookie");
    assert_eq!(body["identity"]["display_name"], "Grace (guest)");

    let mut ada = YClient::join(&server, "nb.ipynb").await;
    let mut grace = join_as(&server, &guest).await;
    assert_eq!(grace.sources(), vec!["a = 1", "print(a)"]);
    // Grace watches live.
    ada.append_and_wait_echo(0, " + 1").await;
    assert!(
        grace
            .pump_until(Duration::from_secs(5), |c| c.sources()[0] == "a = 1 + 1")
            .await
    );

    // A forged update, sent raw: refused, told why, never reaches Ada or the disk.
    let on_disk = || std::fs::read(server.path("nb.ipynb")).unwrap();
    assert!(server.eventually(Duration::from_secs(10), || {
        quire_tests::read_notebook(&server.path("nb.ipynb")).cells[0].source == "a = 1 + 1"
    }));
    // Ada saves: once she has the answer, the save's own state update (hash, dirty) has
    // reached her too, and nothing of hers is left to write.
    assert_eq!(ada.save(8).await, "success");
    let before = on_disk();
    let seen_by_ada = ada.updates_received;
    grace.append_to_cell(1, " # forged").await;
    let refusal = grace
        .wait_raw(Duration::from_secs(5), |m| m["type"] == "refused")
        .await
        .expect("the sender is told");
    assert_eq!(refusal["resync"], true);
    // The room handled the forged update before Ada's sentinel.
    ada.sentinel().await;
    assert_eq!(
        ada.updates_received, seen_by_ada,
        "the forged update reached another client"
    );
    assert_eq!(ada.sources(), vec!["a = 1 + 1", "print(a)"]);
    assert_eq!(grace.save(9).await, "failed", "a watcher cannot save");
    // A save writes what the room holds: had the forged update got in, it would be on disk now.
    assert_eq!(ada.save(10).await, "success");
    assert_eq!(on_disk(), before, "the forged update reached the disk");
    // Grace converges back by syncing afresh.
    let grace_again = join_as(&server, &guest).await;
    assert_eq!(grace_again.sources(), vec!["a = 1 + 1", "print(a)"]);

    // Running code is refused before any kernel starts.
    let answer = grace.execute("cell-1").await;
    assert_eq!(answer["status"], "refused", "{answer}");
    assert_eq!(server.http("GET", "/api/kernels", None).1, "[]");
    grace
        .request(json!({"type": "restart", "request_id": 3}))
        .await;
    let restart = grace
        .wait_raw(Duration::from_secs(5), |m| m["type"] == "restart")
        .await
        .unwrap();
    assert_eq!(restart["status"], "refused");

    // Nothing else on the server is open to the guest.
    let (other_id, _) = server.session("other.ipynb");
    assert_eq!(guest_http(&guest, "GET", "/api/contents/other.ipynb"), 404);
    assert_eq!(guest_http(&guest, "GET", "/api/contents/nb.ipynb"), 200);
    assert_eq!(guest_http(&guest, "GET", "/api/contents"), 403);
    assert_eq!(guest_http(&guest, "GET", "/api/contents/"), 404);
    assert_eq!(
        guest_http(&guest, "PUT", "/api/collaboration/session/other.ipynb"),
        404
    );
    assert_eq!(guest_http(&guest, "GET", "/api/kernels"), 403);
    assert_eq!(
        guest_http(&guest, "GET", &format!("/api/sharing/{file_id}/links")),
        403
    );
    let mut peek =
        YClient::connect_with_cookie(&guest_url(&server, &other_id), &guest.cookie).await;
    let (code, _) = peek.expect_close(Duration::from_secs(5)).await;
    assert_eq!(code, 4403);
    let (_, session) = server.session("nb.ipynb");
    let global = format!(
        "ws://127.0.0.1:{}/api/collaboration/room/JupyterLab:globalAwareness?sessionId={session}",
        server.port
    );
    let mut presence = YClient::connect_with_cookie(&global, &guest.cookie).await;
    assert_eq!(presence.expect_close(Duration::from_secs(5)).await.0, 4403);

    // The token is stored only as a hash.
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(&server.state_dir).unwrap().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("quire.sqlite3")
        {
            stored.extend(std::fs::read(entry.path()).unwrap());
        }
    }
    let found = stored.windows(token.len()).any(|w| w == token.as_bytes());
    assert!(!found, "the link token is in the database in clear");
    let cookie_secret = guest.cookie.trim_start_matches("quire-guest=").as_bytes();
    assert!(
        !stored
            .windows(cookie_secret.len())
            .any(|w| w == cookie_secret),
        "the guest session is in the database in clear"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editor_edits_but_cannot_run_code() {
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&["x = 1"]))]);
    let (file_id, _) = server.session("nb.ipynb");
    let link = server.create_link(&file_id, json!({"capabilities": ["edit"]}));
    let (_, _, guest) = redeem(&server, link["token"].as_str().unwrap(), "Ed");
    let guest = guest.unwrap();
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    let mut ed = join_as(&server, &guest).await;
    ed.append_and_wait_echo(0, " + 2").await;
    assert!(
        ada.pump_until(Duration::from_secs(5), |c| c.sources()[0] == "x = 1 + 2")
            .await
    );
    assert_eq!(ed.execute("cell-0").await["status"], "refused");
    ed.request(json!({"type": "interrupt", "request_id": 1}))
        .await;
    let interrupt = ed
        .wait_raw(Duration::from_secs(5), |m| m["type"] == "interrupt")
        .await
        .unwrap();
    assert_eq!(interrupt["status"], "refused");
    assert_eq!(
        server.http("GET", "/api/kernels", None).1,
        "[]",
        "no kernel was started"
    );
    assert!(ed.state()["executions"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_changes_and_revocations_reach_live_connections() {
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&["1 + 1"]))]);
    let (file_id, _) = server.session("nb.ipynb");
    let first = server.create_link(&file_id, json!({"role": "editor"}));
    let second = server.create_link(&file_id, json!({"role": "viewer"}));
    let (_, _, eve) = redeem(&server, first["token"].as_str().unwrap(), "Eve");
    let (_, _, vic) = redeem(&server, second["token"].as_str().unwrap(), "Vic");
    let (eve, vic) = (eve.unwrap(), vic.unwrap());
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    let mut eve_ws = join_as(&server, &eve).await;
    let mut vic_ws = join_as(&server, &vic).await;
    eve_ws.append_and_wait_echo(0, " # eve").await;

    // Downgrade: her next update is refused.
    let link_path = format!(
        "/api/sharing/{file_id}/links/{}",
        first["id"].as_str().unwrap()
    );
    eve_ws.raw.clear();
    let (status, _) = server.http("PATCH", &link_path, Some(r#"{"role": "viewer"}"#));
    assert_eq!(status, 204);
    let notice = eve_ws
        .wait_raw(Duration::from_secs(5), |m| m["type"] == "permissions")
        .await
        .unwrap();
    assert_eq!(notice["capabilities"], json!(["view", "watch"]));
    eve_ws.append_to_cell(0, " # after downgrade").await;
    assert!(eve_ws
        .wait_raw(Duration::from_secs(5), |m| m["type"] == "refused")
        .await
        .is_some());
    // Her refused update was handled before Ada's sentinel.
    ada.sentinel().await;
    assert_eq!(ada.sources(), vec!["1 + 1 # eve"]);

    // Upgrade to runner: she may run code now, on her live connection.
    let (status, _) = server.http("PATCH", &link_path, Some(r#"{"role": "runner"}"#));
    assert_eq!(status, 204);
    eve_ws
        .wait_raw(Duration::from_secs(5), |m| {
            m["capabilities"].as_array().is_some_and(|c| c.len() == 5)
        })
        .await;
    assert_eq!(eve_ws.execute("cell-0").await["status"], "queued");
    assert_eq!(
        eve_ws.wait_run("cell-0", Duration::from_secs(60)).await,
        "ok"
    );
    assert_eq!(
        eve_ws.state()["executions"]["cell-0"]["by"]["name"],
        "Eve (guest)"
    );

    // Revoke: her socket closes within a second; Vic and Ada stay.
    let asked = Instant::now();
    let (status, _) = server.http("DELETE", &link_path, None);
    assert_eq!(status, 204);
    let (code, reason) = eve_ws.expect_close(Duration::from_secs(5)).await;
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "revocation took {:?}",
        asked.elapsed()
    );
    assert_eq!(code, 4403, "{reason}");
    assert_eq!(guest_http(&eve, "GET", "/api/me"), 403);
    let room = guest_url(&server, &eve.file_id).replace("ws://127.0.0.1", "");
    let room_path = &room[room.find('/').unwrap()..];
    assert_eq!(guest_http(&eve, "GET", room_path), 403, "no way back in");
    ada.append_and_wait_echo(0, " # ada").await;
    assert!(
        vic_ws
            .pump_until(Duration::from_secs(5), |c| c.sources()[0]
                .ends_with("# ada"))
            .await
    );
    assert!(vic_ws.closed.is_none());
    assert_eq!(guest_http(&vic, "GET", "/api/me"), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_expire_run_out_and_refuse_bad_requests() {
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&["x"]))]);
    let (file_id, _) = server.session("nb.ipynb");
    let once = server.create_link(&file_id, json!({"role": "viewer", "max_uses": 1}));
    let token = once["token"].as_str().unwrap();
    assert_eq!(redeem(&server, token, "One").0, 200);
    assert_eq!(redeem(&server, token, "Two").0, 410);
    let brief = server.create_link(&file_id, json!({"role": "viewer", "expires_in_secs": 1}));
    let (_, _, early) = redeem(&server, brief["token"].as_str().unwrap(), "Early");
    let early = early.unwrap();
    assert_eq!(guest_http(&early, "GET", "/api/me"), 200);
    // A socket opened through it closes when it expires.
    let mut live = join_as(&server, &early).await;
    let (code, reason) = live.expect_close(Duration::from_secs(4)).await;
    assert_eq!(code, 4403, "{reason}");
    assert_eq!(
        redeem(&server, brief["token"].as_str().unwrap(), "Late").0,
        410
    );
    assert_eq!(
        guest_http(&early, "GET", "/api/me"),
        403,
        "an expired link admits no one"
    );
    assert_eq!(redeem(&server, &"0".repeat(64), "Nobody").0, 404);
    assert_eq!(
        redeem(&server, token, "   ").0,
        400,
        "a display name is required"
    );

    for bad in [
        json!({"capabilities": ["manage"]}),
        json!({"capabilities": ["fly"]}),
        json!({"role": "god"}),
        json!({"capabilities": []}),
        json!({"role": "viewer", "expires_in_secs": 0}),
    ] {
        let (status, body) = server.http(
            "POST",
            &format!("/api/sharing/{file_id}/links"),
            Some(&bad.to_string()),
        );
        assert_eq!(status, 400, "{bad} → {body}");
    }
    let (status, listed) = server.http("GET", &format!("/api/sharing/{file_id}/links"), None);
    assert_eq!(status, 200);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert!(
        listed[0].get("token").is_none(),
        "tokens are shown once, at creation"
    );
    assert_eq!(listed[0]["uses"], 1);
    // Cross-site redemption is refused.
    let (status, _) = server.http_with(
        "POST",
        &format!("/api/share/{token}"),
        Some(r#"{"name":"x"}"#),
        &[
            ("Origin", "https://evil.example"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
    );
    assert_eq!(status, 403);
    let _ = TOKEN;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_update_guard_checks_each_field_an_update_touches() {
    use yrs::{Array, Map, Out, WriteTxn};
    let mut notebook: Value = serde_json::from_slice(&notebook_with(&["print('hi')"])).unwrap();
    notebook["cells"][0]["outputs"] =
        json!([{"output_type": "stream", "name": "stdout", "text": "hi\n"}]);
    notebook["cells"][0]["execution_count"] = json!(1);
    let server = TestServer::start(&[("nb.ipynb", &serde_json::to_vec(&notebook).unwrap())]);
    let (file_id, _) = server.session("nb.ipynb");
    let editor = server.create_link(&file_id, json!({"role": "editor"}));
    let runner = server.create_link(&file_id, json!({"role": "runner"}));
    let (_, _, ed) = redeem(&server, editor["token"].as_str().unwrap(), "Ed");
    let (_, _, ru) = redeem(&server, runner["token"].as_str().unwrap(), "Ru");
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    let mut ed = join_as(&server, &ed.unwrap()).await;

    let clear_outputs = |txn: &mut yrs::TransactionMut| {
        let cells = txn.get_or_insert_array("cells");
        let Some(Out::YMap(cell)) = cells.get(txn, 0) else {
            panic!("no cell")
        };
        let Some(Out::YArray(outputs)) = cell.get(txn, "outputs") else {
            panic!("no outputs")
        };
        outputs.remove(txn, 0);
        cell.insert(txn, "execution_count", yrs::Any::Null);
    };
    // An editor types and adds cells...
    ed.append_and_wait_echo(0, " # edited").await;
    ed.edit(|txn| {
        let cells = txn.get_or_insert_array("cells");
        let cell = cells.insert(txn, 1, yrs::MapPrelim::default());
        cell.insert(txn, "id", "added");
        cell.insert(txn, "cell_type", "code");
        cell.insert(txn, "source", yrs::TextPrelim::new("new cell"));
        cell.insert(txn, "outputs", yrs::ArrayPrelim::default());
        cell.insert(txn, "metadata", yrs::MapPrelim::default());
        cell.insert(txn, "execution_count", yrs::Any::Null);
    })
    .await;
    assert!(
        ada.pump_until(Duration::from_secs(5), |c| c.sources().len() == 2)
            .await
    );
    // ...but cannot rewrite what a run produced, nor what only the server writes.
    ed.edit(clear_outputs).await;
    let refusal = ed
        .wait_raw(Duration::from_secs(5), |m| m["type"] == "refused")
        .await
        .unwrap();
    assert!(
        refusal["reason"].as_str().unwrap().contains("outputs")
            || refusal["reason"]
                .as_str()
                .unwrap()
                .contains("execution_count"),
        "{refusal}"
    );
    ed.raw.clear();
    ed = join_as(
        &server,
        &redeem(&server, editor["token"].as_str().unwrap(), "Ed again")
            .2
            .unwrap(),
    )
    .await;
    ed.edit(|txn| {
        txn.get_or_insert_map("state")
            .insert(txn, "path", "elsewhere.ipynb");
    })
    .await;
    let refusal = ed
        .wait_raw(Duration::from_secs(5), |m| m["type"] == "refused")
        .await
        .unwrap();
    assert!(
        refusal["reason"].as_str().unwrap().contains("state.path"),
        "{refusal}"
    );
    // Both refused updates were handled before Ada's sentinel.
    ada.sentinel().await;
    assert_eq!(ada.cell("cell-0").outputs.len(), 1, "outputs untouched");
    assert_eq!(ada.state()["path"], "nb.ipynb");

    // Someone allowed to run code may clear outputs, as JupyterLab's own executor does.
    let mut ru = join_as(&server, &ru.unwrap()).await;
    ru.edit(clear_outputs).await;
    assert!(
        ada.pump_until(Duration::from_secs(5), |c| c
            .cell("cell-0")
            .outputs
            .is_empty())
            .await
    );
    // A refusal of the clear would reach Ru before the answer to a sentinel sent after it.
    ru.sentinel().await;
    assert!(!ru
        .raw
        .iter()
        .any(|r| serde_json::from_str::<Value>(r).is_ok_and(|m| m["type"] == "refused")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_is_kept_with_the_notebook_and_the_audit_log_records_who_did_what() {
    let mut server = TestServer::start(&[("nb.ipynb", &notebook_with(&["x"]))]);
    let (file_id, _) = server.session("nb.ipynb");
    let viewer = server.create_link(&file_id, json!({"role": "viewer"}));
    let editor = server.create_link(&file_id, json!({"role": "editor"}));
    let (_, _, grace) = redeem(&server, viewer["token"].as_str().unwrap(), "Grace");
    let (_, _, ed) = redeem(&server, editor["token"].as_str().unwrap(), "Ed");
    let (grace, ed) = (grace.unwrap(), ed.unwrap());
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    let mut grace_ws = join_as(&server, &grace).await;
    let mut ed_ws = join_as(&server, &ed).await;

    ed_ws
        .request(json!({"type": "chat", "text": "  hello, all  ", "request_id": 1}))
        .await;
    for client in [&mut ada, &mut grace_ws, &mut ed_ws] {
        let message = client
            .wait_raw(Duration::from_secs(5), |m| m["type"] == "chat_message")
            .await
            .expect("everyone in the room gets the message");
        assert_eq!(message["message"]["text"], "hello, all");
        assert_eq!(message["message"]["name"], "Ed (guest)");
    }
    grace_ws
        .request(json!({"type": "chat", "text": "me too", "request_id": 2}))
        .await;
    let refused = grace_ws
        .wait_raw(Duration::from_secs(5), |m| {
            m["type"] == "chat" && m["responseTo"] == 2
        })
        .await
        .unwrap();
    assert_eq!(refused["status"], "refused", "posting needs edit");
    ed_ws
        .request(json!({"type": "chat", "text": "x".repeat(5000), "request_id": 3}))
        .await;
    let long = ed_ws
        .wait_raw(Duration::from_secs(5), |m| m["responseTo"] == 3)
        .await
        .unwrap();
    assert_eq!(long["status"], "refused");
    assert_eq!(ada.save(1).await, "success");

    // The history survives a restart and greets whoever joins.
    server.terminate();
    server.restart();
    let mut later = YClient::join(&server, "nb.ipynb").await;
    let history = later
        .wait_raw(Duration::from_secs(5), |m| m["type"] == "chat_history")
        .await
        .expect("history on join");
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["text"], "hello, all");

    let (status, body) = server.http("GET", &format!("/api/audit?file_id={file_id}"), None);
    assert_eq!(status, 200, "{body}");
    let entries: Value = serde_json::from_str(&body).unwrap();
    let actions: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for expected in ["link_created", "link_used", "save"] {
        assert!(
            actions.contains(&expected),
            "{expected} missing from {actions:?}"
        );
    }
    let used_by_ed = entries
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "link_used" && e["detail"].as_str().unwrap().contains("Ed"));
    assert!(used_by_ed);
    assert!(
        !body.contains(editor["token"].as_str().unwrap()),
        "tokens never reach the log"
    );
    assert_eq!(guest_http(&ed, "GET", "/api/audit"), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_only_reads_the_saved_notebook_and_downloads_it() {
    let mut notebook: Value =
        serde_json::from_slice(&notebook_with(&["print('<b>hi</b>')"])).unwrap();
    notebook["cells"].as_array_mut().unwrap().insert(
        0,
        json!({"cell_type": "markdown", "id": "md", "metadata": {}, "source": "# Title\n<img src=x onerror=alert(1)>"}),
    );
    notebook["cells"][1]["outputs"] =
        json!([{"output_type": "stream", "name": "stdout", "text": "<b>hi</b>\n"}]);
    let bytes = serde_json::to_vec_pretty(&notebook).unwrap();
    let server = TestServer::start(&[
        ("nb.ipynb", &bytes),
        ("other.ipynb", &notebook_with(&["x"])),
    ]);
    let (file_id, _) = server.session("nb.ipynb");
    let (other_id, _) = server.session("other.ipynb");
    let link = server.create_link(&file_id, json!({"capabilities": ["view"]}));
    let (_, body, guest) = redeem(&server, link["token"].as_str().unwrap(), "Vera");
    let guest = guest.unwrap();
    assert_eq!(body["capabilities"], json!(["view"]));

    let page = guest.browser.get(&format!("/view/{file_id}"));
    assert_eq!(page.status, 200, "{page:?}");
    assert!(
        page.body.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "markdown is shown escaped"
    );
    assert!(!page.body.contains("<img src=x"));
    assert!(page.body.contains("&lt;b&gt;hi&lt;/b&gt;"));
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );

    let ipynb = guest
        .browser
        .get(&format!("/api/notebooks/{file_id}/download?format=ipynb"));
    let disposition = ipynb.header("content-disposition").unwrap_or_default();
    assert!(
        disposition
            .to_ascii_lowercase()
            .contains("attachment; filename=\"nb.ipynb\""),
        "{disposition}"
    );
    assert_eq!(
        ipynb.body,
        std::str::from_utf8(&bytes).unwrap(),
        "the file as saved"
    );
    let py = guest
        .browser
        .get(&format!("/api/notebooks/{file_id}/download?format=py"));
    assert_eq!(
        py.body,
        "# %% [markdown]\n# # Title\n# <img src=x onerror=alert(1)>\n\n# %%\nprint('<b>hi</b>')\n\n"
    );

    // Not the live room, not another notebook.
    let mut live = YClient::connect_with_cookie(&guest_url(&server, &file_id), &guest.cookie).await;
    assert_eq!(live.expect_close(Duration::from_secs(5)).await.0, 4403);
    assert_eq!(guest.browser.get(&format!("/view/{other_id}")).status, 404);
    assert_eq!(
        guest
            .browser
            .get(&format!("/api/notebooks/{other_id}/download"))
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_cell_shows_who_holds_it_and_refuses_others() {
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&["shared = 1"]))]);
    let (file_id, _) = server.session("nb.ipynb");
    let link = server.create_link(&file_id, json!({"role": "editor"}));
    let (_, _, ed) = redeem(&server, link["token"].as_str().unwrap(), "Ed");
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    let mut ed = join_as(&server, &ed.unwrap()).await;

    ada.request(json!({"type": "lock", "cell_id": "cell-0", "request_id": 1}))
        .await;
    let granted = ada
        .wait_raw(Duration::from_secs(5), |m| m["type"] == "lock")
        .await
        .unwrap();
    assert_eq!(granted["status"], "ok");
    assert!(
        ed.pump_until(Duration::from_secs(5), |c| c.state()["locks"]["cell-0"]
            ["edit"]["by"]["username"]
            .is_string())
            .await
    );
    ed.request(json!({"type": "lock", "cell_id": "cell-0", "request_id": 2}))
        .await;
    let refused = ed
        .wait_raw(Duration::from_secs(5), |m| m["type"] == "lock")
        .await
        .unwrap();
    assert_eq!(refused["status"], "refused");
    ed.append_to_cell(0, " # ed").await;
    let refusal = ed
        .wait_raw(Duration::from_secs(5), |m| m["type"] == "refused")
        .await
        .unwrap();
    assert!(
        refusal["reason"]
            .as_str()
            .unwrap()
            .contains("is editing this cell"),
        "{refusal}"
    );
    ada.append_and_wait_echo(0, " # ada").await;

    // Ada leaves: the lock is gone for everyone, and Ed (on a fresh copy) may edit.
    drop(ada);
    assert!(
        ed.pump_until(Duration::from_secs(5), |c| c.state()["locks"]["cell-0"]
            .is_null())
            .await
    );
    let mut ed = join_as(
        &server,
        &redeem(&server, link["token"].as_str().unwrap(), "Ed")
            .2
            .unwrap(),
    )
    .await;
    ed.append_and_wait_echo(0, " # ed").await;
    assert_eq!(ed.sources(), vec!["shared = 1 # ada # ed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notebook_opened_as_text_is_read_only_without_execute() {
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&["x = 1"]))]);
    let (file_id, _) = server.session("nb.ipynb");
    let link = server.create_link(&file_id, json!({"role": "editor"}));
    let (_, _, guest) = redeem(&server, link["token"].as_str().unwrap(), "Eve");
    let guest = guest.unwrap();
    // As text, the outputs are just characters: forging them needs `execute`.
    let url = format!(
        "ws://127.0.0.1:{}/api/collaboration/room/text:file:{file_id}",
        server.port
    );
    let mut as_text = YClient::connect_with_cookie(&url, &guest.cookie).await;
    as_text.sync().await;
    let told = as_text
        .wait_raw(Duration::from_secs(5), |m| m["type"] == "permissions")
        .await
        .unwrap();
    assert_eq!(told["capabilities"], json!(["view", "watch"]));
    as_text
        .edit(|txn| {
            use yrs::{Text, WriteTxn};
            txn.get_or_insert_text("source").push(txn, "forged");
        })
        .await;
    let refused = as_text
        .wait_raw(Duration::from_secs(5), |m| m["type"] == "refused")
        .await;
    assert!(refused.is_some(), "{:?} {:?}", as_text.raw, as_text.closed);
    // As a notebook, she edits as her link allows.
    let mut as_notebook = join_as(&server, &guest).await;
    as_notebook.append_and_wait_echo(0, " # eve").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_notebook_ends_what_was_shared_of_it() {
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&["x = 1"]))]);
    let (file_id, _) = server.session("nb.ipynb");
    let link = server.create_link(&file_id, json!({"role": "viewer"}));
    let (status, _) = server.http("DELETE", "/api/contents/nb.ipynb", None);
    assert_eq!(status, 204);
    assert_eq!(
        redeem(&server, link["token"].as_str().unwrap(), "Late").0,
        404
    );
    // A new notebook at the same path is a new notebook, shared with no one.
    std::fs::write(server.path("nb.ipynb"), notebook_with(&["y = 2"])).unwrap();
    let (new_id, _) = server.session("nb.ipynb");
    assert_ne!(new_id, file_id);
    let (status, links) = server.http("GET", &format!("/api/sharing/{new_id}/links"), None);
    assert_eq!((status, links.as_str()), (200, "[]"));
}
