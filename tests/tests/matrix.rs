//! Every capability set × every action, over real HTTP and websockets: exactly the allowed set
//! succeeds. Guests come in through live-share links carrying each set.

use std::time::Duration;

use collab::Capabilities;
use quire_tests::{notebook_with, Browser, TestServer, YClient};
use serde_json::{json, Value};

fn redeem(server: &TestServer, token: &str) -> (Browser, String) {
    let (status, json, guest) = server.redeem_link(token, "Guest");
    assert_eq!(status, 200, "{json}");
    let guest = guest.expect("a guest cookie");
    (guest, json["file_id"].as_str().unwrap().to_string())
}

const ACTIONS: [&str; 16] = [
    "load saved file",
    "join live room",
    "send update",
    "send awareness",
    "save",
    "execute",
    "answer input",
    "interrupt",
    "restart",
    "shut down kernel",
    "invite",
    "change a grant",
    "create a link",
    "revoke a link",
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
        "execute" | "answer input" | "interrupt" | "restart" | "shut down kernel" => {
            caps.contains(Capabilities::EXECUTE)
        }
        "invite" | "change a grant" | "create a link" | "revoke a link" => {
            caps.contains(Capabilities::MANAGE)
        }
        // Renaming and deleting files are their owner's.
        "rename" | "delete" => false,
        other => panic!("unknown action {other}"),
    }
}

/// A request as someone: (method, path, body) → (status, body).
type Requests<'a> = &'a dyn Fn(&str, &str, Option<&str>) -> (u16, String);

/// One notebook, its owner (who prepares what an action needs) and someone trying each action.
struct Trial<'a> {
    server: &'a TestServer,
    file_id: &'a str,
    /// The notebook owner's requests.
    owner_http: Requests<'a>,
    /// The owner's live view of the notebook, where others' edits and presence must show.
    owner: &'a mut YClient,
    /// A person's account a grant may name.
    invitee: &'a str,
}

impl Trial<'_> {
    /// Tries `action` from `browser` (with its cookies); whether it succeeded.
    async fn attempt(&mut self, browser: &Browser, action: &str) -> bool {
        let server = self.server;
        let file_id = self.file_id;
        let http = |method: &str, path: &str, body: Option<&str>| {
            browser.from_page(method, path, body).status
        };
        let url = format!(
            "ws://127.0.0.1:{}/api/collaboration/room/json:notebook:{file_id}",
            server.port
        );
        let join = || async {
            let mut client = YClient::connect_with_cookie(&url, &browser.cookies()).await;
            // A refused join is closed at once (our step 1 may then find the socket gone); an
            // admitted one answers it.
            let _ = client.resync(Duration::from_secs(5)).await;
            client
        };
        // A kernel request (`interrupt`, `restart`, `shutdown`): "no kernel yet" is not a
        // refusal of the right.
        let kernel_request = |kind: &'static str| async move {
            let mut client = join().await;
            if !client.synced {
                return false;
            }
            client.request(json!({"type": kind, "request_id": 1})).await;
            let reply = client
                .wait_raw(Duration::from_secs(30), |m| m["type"] == kind)
                .await;
            reply.is_some_and(|m| {
                m["status"] == "ok"
                    || m["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("no kernel"))
            })
        };
        let invitee = self.invitee;
        let grant_path = format!("/api/sharing/{file_id}/people/user/{invitee}");
        match action {
            "load saved file" => {
                http(
                    "GET",
                    &format!("/api/notebooks/{file_id}/download?format=ipynb"),
                    None,
                ) == 200
            }
            "join live room" => join().await.synced,
            "send update" => {
                let mut client = join().await;
                if !client.synced {
                    return false;
                }
                let mark = format!(" #{}", rand_mark());
                client.append_to_cell(0, &mark).await;
                self.owner
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
                // Each trial is another person: each uses a client id of its own (an id stays
                // bound to whoever first used it while the room lives).
                static NEXT_CLIENT: std::sync::atomic::AtomicU64 =
                    std::sync::atomic::AtomicU64::new(4242);
                let client_id = NEXT_CLIENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                collab::protocol::write_var_uint(&mut payload, 1);
                collab::protocol::write_var_uint(&mut payload, client_id);
                collab::protocol::write_var_uint(&mut payload, 1);
                collab::protocol::write_var_bytes(&mut payload, state.as_bytes());
                client
                    .send(collab::protocol::encode_awareness(&payload))
                    .await;
                let before = self.owner.awareness.len();
                self.owner
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
            "answer input" => {
                let mut client = join().await;
                if !client.synced || client.execute("cell-1").await["status"] != "queued" {
                    return false;
                }
                let asked = client
                    .wait_raw(Duration::from_secs(30), |m| m["type"] == "input_request")
                    .await;
                if asked.is_none() {
                    return false;
                }
                client
                    .request(json!({"type": "input_reply", "cell_id": "cell-1", "value": "Ada", "request_id": 2}))
                    .await;
                client
                    .wait_raw(Duration::from_secs(10), |m| m["type"] == "input_reply")
                    .await
                    .is_some_and(|m| m["status"] == "ok")
            }
            "interrupt" => kernel_request("interrupt").await,
            "restart" => kernel_request("restart").await,
            "shut down kernel" => kernel_request("shutdown").await,
            "invite" => {
                (self.owner_http)("DELETE", &grant_path, None);
                http("PUT", &grant_path, Some(r#"{"capabilities":["view"]}"#)) == 201
            }
            "change a grant" => {
                let (status, body) =
                    (self.owner_http)("PUT", &grant_path, Some(r#"{"capabilities":["view"]}"#));
                assert!(status == 200 || status == 201, "{body}");
                http(
                    "PUT",
                    &grant_path,
                    Some(r#"{"capabilities":["view","watch"]}"#),
                ) == 200
            }
            "create a link" => {
                http(
                    "POST",
                    &format!("/api/sharing/{file_id}/links"),
                    Some(r#"{"role":"viewer"}"#),
                ) == 201
            }
            "revoke a link" => {
                let (status, body) = (self.owner_http)(
                    "POST",
                    &format!("/api/sharing/{file_id}/links"),
                    Some(r#"{"role":"viewer","label":"to revoke"}"#),
                );
                assert_eq!(status, 201, "{body}");
                let link: Value = serde_json::from_str(&body).unwrap();
                let id = link["id"].as_str().unwrap();
                http(
                    "DELETE",
                    &format!("/api/sharing/{file_id}/links/{id}"),
                    None,
                ) == 204
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

    /// Every action from `browser`, whose holder has `caps`: the mismatches, labelled.
    async fn all_actions(
        &mut self,
        label: &str,
        browser: &Browser,
        caps: Capabilities,
    ) -> Vec<String> {
        let mut mismatches = Vec::new();
        for action in ACTIONS {
            let did = self.attempt(browser, action).await;
            let may = allowed(action, caps);
            if did != may {
                mismatches.push(format!("{label} × {action}: did {did}, may {may}"));
            }
        }
        // Let a run started by this set finish before the next set runs the cell again.
        self.owner
            .pump_until(Duration::from_secs(30), |c| {
                ["cell-0", "cell-1"]
                    .iter()
                    .all(|id| !matches!(c.run_status(id).as_str(), "queued" | "running"))
            })
            .await;
        mismatches
    }
}

/// The capabilities a grant or link answer lists.
fn caps_of(answer: &Value) -> Capabilities {
    let names: Vec<String> = answer["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    Capabilities::parse(&names).unwrap()
}

/// The sets a trial grants: each capability a link may carry alone, then these roles.
fn capability_sets(roles: &[&'static str]) -> Vec<(&'static str, Value)> {
    let single = ["view", "watch", "edit", "save", "execute"]
        .map(|cap| (cap, json!({ "capabilities": [cap] })));
    let roles = roles.iter().map(|role| (*role, json!({ "role": role })));
    single.into_iter().chain(roles).collect()
}

const NOTEBOOK: [&str; 2] = ["x = 1", "name = input('name? ')"];

fn rand_mark() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_link_capability_set_can_do_exactly_what_it_allows() {
    let sets = capability_sets(&["viewer", "editor", "runner"]);
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&NOTEBOOK))]);
    let (file_id, _) = server.session("nb.ipynb");
    let mut owner = YClient::join(&server, "nb.ipynb").await;
    let owner_http = |method: &str, path: &str, body: Option<&str>| server.http(method, path, body);
    let mut trial = Trial {
        server: &server,
        file_id: &file_id,
        owner_http: &owner_http,
        owner: &mut owner,
        // Guests never reach the sharing routes, whoever a grant would name.
        invitee: "nobody",
    };
    let mut mismatches = Vec::new();
    for (label, spec) in &sets {
        let (status, reply) = server.http(
            "POST",
            &format!("/api/sharing/{file_id}/links"),
            Some(&spec.to_string()),
        );
        assert_eq!(status, 201, "{reply}");
        let link: Value = serde_json::from_str(&reply).unwrap();
        let (guest, guest_file) = redeem(&server, link["token"].as_str().unwrap());
        assert_eq!(guest_file, file_id);
        mismatches.extend(trial.all_actions(label, &guest, caps_of(&link)).await);
    }
    assert!(
        mismatches.is_empty(),
        "mismatches:\n{}",
        mismatches.join("\n")
    );
    // The owner still has the file where it was.
    assert!(server.path("nb.ipynb").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_capability_set_granted_to_a_person_can_do_exactly_what_it_allows() {
    use quire_tests::accounts::{is_root, MultiUserServer, Person, TestAccount};
    if !is_root() {
        eprintln!(
            "SKIPPED: grants to people need multi-user mode, which needs root (CI runs as root)"
        );
        return;
    }
    let tag = std::process::id() % 100000;
    let ada = TestAccount::create(&format!("qxa{tag}"), Some("ada pw"));
    let bob = TestAccount::create(&format!("qxb{tag}"), Some("bob pw"));
    let carol = TestAccount::create(&format!("qxc{tag}"), None);
    let multi = MultiUserServer::start(&format!("quire-mx-{tag}"));
    let server = &multi.server;
    let as_ada = Person::log_in(server, &ada, "ada pw");
    let as_bob = Person::log_in(server, &bob, "bob pw");
    as_ada.write_notebook("", "nb.ipynb", &NOTEBOOK);
    let file_id = as_ada.file_id("", "nb.ipynb");
    let mut owner = as_ada.join("", &file_id).await;
    let owner_http = |method: &str, path: &str, body: Option<&str>| as_ada.http(method, path, body);
    let mut trial = Trial {
        server,
        file_id: &file_id,
        owner_http: &owner_http,
        owner: &mut owner,
        invitee: &carol.name,
    };
    let mut sets = capability_sets(&["editor", "runner", "owner"]);
    // A person, unlike a link, may hold `manage`.
    sets.push(("manage", json!({"capabilities": ["manage"]})));
    let mut mismatches = Vec::new();
    for (label, spec) in &sets {
        let (status, reply) = as_ada.grant(&file_id, &bob.name, spec.clone());
        assert!(status == 200 || status == 201, "{reply}");
        let grant: Value = serde_json::from_str(&reply).unwrap();
        mismatches.extend(
            trial
                .all_actions(label, &as_bob.browser, caps_of(&grant))
                .await,
        );
    }
    assert!(
        mismatches.is_empty(),
        "mismatches:\n{}",
        mismatches.join("\n")
    );
    // Ada's notebook is where it was, and still hers.
    assert!(ada.home().join("nb.ipynb").exists());
}
