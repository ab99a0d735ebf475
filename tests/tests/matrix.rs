//! Every capability set × every action, over real HTTP and websockets: exactly the allowed set
//! succeeds. Guests come in through live-share links carrying each set.

use std::time::Duration;

use collab::Capabilities;
use quire_tests::{notebook_with, TestServer, YClient};
use serde_json::{json, Value};

fn redeem(server: &TestServer, token: &str) -> (String, String) {
    let (status, json, cookie) = server.redeem_link(token, "Guest");
    assert_eq!(status, 200, "{json}");
    let cookie = cookie.expect("a guest cookie");
    (cookie, json["file_id"].as_str().unwrap().to_string())
}

const ACTIONS: [&str; 10] = [
    "load saved file",
    "join live room",
    "send update",
    "send awareness",
    "save",
    "execute",
    "interrupt",
    "create a link",
    "rename",
    "delete",
];

/// What SECURITY.md allows a holder of `caps` (as the server widens them: anything live implies
/// watch, watch implies view).
fn allowed(action: &str, caps: Capabilities) -> bool {
    let caps = caps.effective();
    match action {
        "load saved file" => caps.contains(Capabilities::VIEW),
        "join live room" | "send awareness" => caps.contains(Capabilities::WATCH),
        "send update" => caps.contains(Capabilities::EDIT),
        "save" => caps.contains(Capabilities::SAVE),
        "execute" | "interrupt" => caps.contains(Capabilities::EXECUTE),
        // Managing sharing, renaming and deleting files are the owner's.
        _ => false,
    }
}

async fn attempt(
    server: &TestServer,
    cookie: &str,
    file_id: &str,
    action: &str,
    owner: &mut YClient,
) -> bool {
    let http = |method: &str, path: &str, body: Option<&str>| {
        let origin = format!("http://127.0.0.1:{}", server.port);
        server
            .http_with(
                method,
                path,
                body,
                &[("Cookie", cookie), ("Origin", &origin)],
            )
            .0
    };
    let (_, session) = server.session("nb.ipynb");
    let url = format!(
        "ws://127.0.0.1:{}/api/collaboration/room/json:notebook:{file_id}?sessionId={session}",
        server.port
    );
    let join = || async {
        let mut client = YClient::connect_with_cookie(&url, cookie).await;
        // A refused join is closed at once; an admitted one hears the server's step 1 first.
        client
            .pump_until(Duration::from_millis(150), |c| c.closed.is_some())
            .await;
        if client.closed.is_none() {
            let sv = yrs::updates::encoder::Encode::encode_v1(&yrs::ReadTxn::state_vector(
                &yrs::Transact::transact(&client.doc),
            ));
            client.send(collab::protocol::encode_sync_step1(&sv)).await;
            client
                .pump_until(Duration::from_secs(5), |c| c.synced || c.closed.is_some())
                .await;
        }
        client
    };
    match action {
        "load saved file" => http("GET", "/api/contents/nb.ipynb", None) == 200,
        "join live room" => join().await.synced,
        "send update" => {
            let mut client = join().await;
            if !client.synced {
                return false;
            }
            let mark = format!(" #{}", rand_mark());
            client.append_to_cell(0, &mark).await;
            owner
                .pump_until(Duration::from_secs(2), |c| c.sources()[0].ends_with(&mark))
                .await
        }
        "send awareness" => {
            let mut client = join().await;
            if !client.synced {
                return false;
            }
            let state = json!({"user": {"name": "forged"}, "cursor": 1}).to_string();
            let mut payload = Vec::new();
            collab::protocol::write_var_uint(&mut payload, 1);
            collab::protocol::write_var_uint(&mut payload, 4242);
            collab::protocol::write_var_uint(&mut payload, 1);
            collab::protocol::write_var_bytes(&mut payload, state.as_bytes());
            client
                .send(collab::protocol::encode_awareness(&payload))
                .await;
            let before = owner.awareness.len();
            owner
                .pump_until(Duration::from_secs(2), |c| c.awareness.len() > before)
                .await
        }
        "save" => {
            let mut client = join().await;
            client.synced && client.save(1).await == "success"
        }
        "execute" => {
            let mut client = join().await;
            client.synced && client.execute("cell-0").await["status"] == "queued"
        }
        "interrupt" => {
            let mut client = join().await;
            if !client.synced {
                return false;
            }
            client
                .request(json!({"type": "interrupt", "request_id": 1}))
                .await;
            let reply = client
                .wait_raw(Duration::from_secs(5), |m| m["type"] == "interrupt")
                .await;
            // "No kernel yet" is not a refusal of the right: it is asked after an execute.
            reply.is_some_and(|m| {
                m["status"] == "ok"
                    || m["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("no kernel"))
            })
        }
        "create a link" => {
            http(
                "POST",
                &format!("/api/sharing/{file_id}/links"),
                Some(r#"{"role":"viewer"}"#),
            ) == 201
        }
        "rename" => {
            http(
                "PATCH",
                "/api/contents/nb.ipynb",
                Some(r#"{"path":"renamed.ipynb"}"#),
            ) == 200
        }
        "delete" => http("DELETE", "/api/contents/nb.ipynb", None) == 204,
        other => panic!("unknown action {other}"),
    }
}

fn rand_mark() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_capability_set_can_do_exactly_what_it_allows() {
    let sets: Vec<(&str, Value)> = vec![
        ("view", json!({"capabilities": ["view"]})),
        ("watch", json!({"capabilities": ["watch"]})),
        ("edit", json!({"capabilities": ["edit"]})),
        ("save", json!({"capabilities": ["save"]})),
        ("execute", json!({"capabilities": ["execute"]})),
        ("viewer", json!({"role": "viewer"})),
        ("editor", json!({"role": "editor"})),
        ("runner", json!({"role": "runner"})),
    ];
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&["x = 1"]))]);
    let (file_id, _) = server.session("nb.ipynb");
    let mut owner = YClient::join(&server, "nb.ipynb").await;
    let mut mismatches = Vec::new();
    for (label, spec) in &sets {
        let (status, reply) = server.http(
            "POST",
            &format!("/api/sharing/{file_id}/links"),
            Some(&spec.to_string()),
        );
        assert_eq!(status, 201, "{reply}");
        let link: Value = serde_json::from_str(&reply).unwrap();
        let caps = Capabilities::parse(
            &link["capabilities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let (cookie, guest_file) = redeem(&server, link["token"].as_str().unwrap());
        assert_eq!(guest_file, file_id);
        for action in ACTIONS {
            let did = attempt(&server, &cookie, &file_id, action, &mut owner).await;
            let may = allowed(action, caps);
            if did != may {
                mismatches.push(format!("{label} × {action}: did {did}, may {may}"));
            }
        }
        // Let a run started by this set finish before the next set runs the cell again.
        owner
            .pump_until(Duration::from_secs(30), |c| {
                !matches!(c.run_status("cell-0").as_str(), "queued" | "running")
            })
            .await;
    }
    assert!(
        mismatches.is_empty(),
        "mismatches:\n{}",
        mismatches.join("\n")
    );
    // The owner still has the file where it was.
    assert!(server.path("nb.ipynb").exists());
}
