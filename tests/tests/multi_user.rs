//! Multi-user mode end to end, as root (as CI runs): people log in with local accounts, work in
//! their home directories with their own rights, run kernels as themselves, share a notebook
//! with each other by grant, and work on a project's notebooks whose kernels run as the project.
//! The test creates its own accounts and PAM service, and removes them afterwards.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use quire_tests::accounts::{is_root, message, MultiUserServer, Person, TestAccount};
use quire_tests::{YClient, TOKEN};
use serde_json::{json, Value};

/// Runs `cell-0` and returns what it printed.
async fn run_and_read(client: &mut YClient) -> String {
    let answer = client.execute("cell-0").await;
    assert_eq!(answer["status"], "queued", "{answer}");
    assert_eq!(
        client.wait_run("cell-0", Duration::from_secs(60)).await,
        "ok"
    );
    client.cell("cell-0").outputs[0]["text"]
        .as_str()
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_work_as_themselves_share_by_grant_and_run_as_their_project() {
    if !is_root() {
        eprintln!("SKIPPED: multi-user mode needs root to create accounts (CI runs as root)");
        return;
    }
    let tag = std::process::id() % 100000;
    let ada = TestAccount::create(&format!("qma{tag}"), Some("ada pw"));
    let bob = TestAccount::create(&format!("qmb{tag}"), Some("bob pw"));
    let carol = TestAccount::create(&format!("qmc{tag}"), None);
    let project = TestAccount::create(&format!("qmp{tag}"), None);
    let multi = MultiUserServer::start(&format!("quire-mu-{tag}"));
    let server = &multi.server;
    let as_ada = Person::log_in(server, &ada, "ada pw");
    let as_bob = Person::log_in(server, &bob, "bob pw");
    let uid_code = "import os\nprint(os.getuid())";

    // Ada's files are her home directory's, written with her rights.
    as_ada.write_notebook("", "mine.ipynb", &[uid_code]);
    let on_disk = std::fs::metadata(ada.home().join("mine.ipynb")).unwrap();
    assert_eq!(on_disk.uid().to_string(), ada.id("-u"), "the file is Ada's");
    let (status, listing) = as_ada.http("GET", "/api/contents", None);
    assert_eq!(status, 200, "{listing}");
    let listing: Value = serde_json::from_str(&listing).unwrap();
    let names: Vec<&str> = listing["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(names.contains(&"mine.ipynb"), "{names:?}");
    // A file in her home that only root may read stays closed to her, as it would in a shell.
    let secret = ada.home().join("root-only.txt");
    std::fs::write(&secret, "not for Ada").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (status, body) = as_ada.http("GET", "/api/contents/root-only.txt", None);
    assert_eq!(status, 403, "{body}");
    // Bob's files are his home's: Ada's notebook is not there, and no path leads out of it.
    let (status, _) = as_bob.http("GET", "/api/contents/mine.ipynb", None);
    assert_eq!(status, 404);
    for escape in [
        format!("/api/contents/..%2F{}%2Fmine.ipynb", ada.name),
        format!("/api/contents/%2Fhome%2F{}%2Fmine.ipynb", ada.name),
    ] {
        let (status, body) = as_bob.http("GET", &escape, None);
        assert!(status == 400 || status == 404, "{escape}: {status} {body}");
        assert!(
            !body.contains("os.getuid"),
            "{escape} leaked Ada's notebook"
        );
    }

    // Ada's kernel runs as Ada.
    let file = as_ada.file_id("", "mine.ipynb");
    let mut ada_client = as_ada.join("", &file).await;
    assert_eq!(run_and_read(&mut ada_client).await, ada.id("-u"));

    // Her text files too: edited live, saved as hers.
    let (status, body) = as_ada.http(
        "PUT",
        "/api/contents/notes.py",
        Some(r#"{"type":"file","format":"text","content":"print(1)\n"}"#),
    );
    assert_eq!(status, 201, "{body}");
    let notes = as_ada.document_id("", "notes.py", "text:file");
    let mut editor = as_ada.connect_to("", "text:file", &notes).await;
    editor.sync().await;
    editor
        .edit(|txn| {
            use yrs::{Text, WriteTxn};
            txn.get_or_insert_text("source").push(txn, "print(2)\n");
        })
        .await;
    assert_eq!(editor.save(1).await, "success", "{:?}", editor.raw);
    let notes_path = ada.home().join("notes.py");
    assert_eq!(
        std::fs::read_to_string(&notes_path).unwrap(),
        "print(1)\nprint(2)\n"
    );
    assert_eq!(
        std::fs::metadata(&notes_path).unwrap().uid().to_string(),
        ada.id("-u")
    );

    // Bob may not open it until Ada invites him.
    let mut refused = as_bob.connect("", &file).await;
    assert_eq!(refused.expect_close(Duration::from_secs(5)).await.0, 4403);
    let (status, body) = as_ada.grant(&file, &bob.name, json!({"role": "editor"}));
    assert_eq!(status, 201, "{body}");
    let (status, people) = as_ada.http("GET", &format!("/api/sharing/{file}/people"), None);
    assert_eq!(status, 200, "{people}");
    let people: Value = serde_json::from_str(&people).unwrap();
    assert_eq!(people[0]["name"], bob.name.as_str());
    assert_eq!(
        people[0]["capabilities"],
        json!(["view", "watch", "edit", "save"])
    );
    // Bob finds it among the notebooks shared with him, and opens it by id.
    let (status, shared) = as_bob.http("GET", "/api/shared", None);
    assert_eq!(status, 200, "{shared}");
    let shared: Value = serde_json::from_str(&shared).unwrap();
    assert_eq!(shared[0]["file_id"], file.as_str(), "{shared}");
    assert_eq!(shared[0]["name"], "mine.ipynb");
    assert_eq!(shared[0]["owner"], ada.name.as_str());
    let (status, _) = as_bob.http("GET", &format!("/shared/{file}"), None);
    assert_eq!(status, 200);
    let mut bob_client = as_bob.join("", &file).await;
    let joined_with = bob_client
        .wait_raw(Duration::from_secs(5), |m| m["type"] == "permissions")
        .await
        .expect("a connection is told what it may do");
    assert_eq!(
        joined_with["capabilities"],
        json!(["view", "watch", "edit", "save"])
    );
    assert_eq!(
        bob_client.cell("cell-0").source,
        uid_code,
        "Bob sees Ada's notebook"
    );
    // An editor runs nothing, and may not share it further.
    let answer = bob_client.execute("cell-0").await;
    assert_eq!(answer["status"], "refused", "{answer}");
    let (status, _) = as_bob.grant(&file, &carol.name, json!({"role": "viewer"}));
    assert_eq!(status, 403);
    // With `manage`, Bob shares, but never more than he holds.
    bob_client.raw.clear();
    let (status, body) = as_ada.grant(
        &file,
        &bob.name,
        json!({"capabilities": ["view", "watch", "edit", "manage"]}),
    );
    assert_eq!(status, 200, "{body}");
    let told = bob_client
        .wait_raw(Duration::from_secs(5), |m| m["type"] == "permissions")
        .await
        .expect("Bob's connection is told its new rights");
    assert!(told["capabilities"]
        .as_array()
        .unwrap()
        .contains(&json!("manage")));
    let (status, body) = as_bob.grant(&file, &carol.name, json!({"role": "runner"}));
    assert_eq!(status, 403, "{body}");
    assert!(message(&body).contains("more than you hold"), "{body}");
    let (status, body) = as_bob.grant(&file, &carol.name, json!({"role": "viewer"}));
    assert_eq!(status, 201, "{body}");
    // Lowered to viewer, Bob's next edit is refused and reaches no one.
    bob_client.raw.clear();
    let (status, body) = as_ada.grant(&file, &bob.name, json!({"role": "viewer"}));
    assert_eq!(status, 200, "{body}");
    bob_client
        .wait_raw(Duration::from_secs(5), |m| m["type"] == "permissions")
        .await
        .expect("Bob's connection is told its new rights");
    bob_client.append_to_cell(0, " # Bob was here").await;
    assert!(bob_client
        .wait_raw(Duration::from_secs(5), |m| m["type"] == "refused")
        .await
        .is_some());
    // Bob's edit was handled (refused) before Ada's sentinel: had it gone through, Ada would
    // hold it once the sentinel is answered.
    ada_client.sentinel().await;
    assert_eq!(ada_client.cell("cell-0").source, uid_code);
    // Revoking Bob closes his socket at once.
    let (status, body) = as_ada.http(
        "DELETE",
        &format!("/api/sharing/{file}/people/user/{}", bob.name),
        None,
    );
    assert_eq!(status, 204, "{body}");
    let (code, _) = bob_client.expect_close(Duration::from_secs(1)).await;
    assert_eq!(code, 4403);
    let (status, _) = as_bob.http("GET", &format!("/view/{file}"), None);
    assert_eq!(status, 404, "Bob can no longer see the notebook");
    let (_, shared) = as_bob.http("GET", "/api/shared", None);
    assert_eq!(shared, "[]");
    let (status, _) = as_bob.http("GET", &format!("/api/notebooks/{file}"), None);
    assert_eq!(status, 404);

    // Opening a live-share link while logged in: Bob stays Bob, with the link's rights, until
    // the link is revoked.
    let (status, link) = as_ada.http(
        "POST",
        &format!("/api/sharing/{file}/links"),
        Some(r#"{"role":"viewer"}"#),
    );
    assert_eq!(status, 201, "{link}");
    let link: Value = serde_json::from_str(&link).unwrap();
    // (In a browser of Bob's own, which then holds both cookies.)
    let as_bob_with_link = Person::log_in(server, &bob, "bob pw");
    let body = json!({"name": "Mallory"}).to_string();
    let (status, opened) = as_bob_with_link.http(
        "POST",
        &format!("/api/share/{}", link["token"].as_str().unwrap()),
        Some(&body),
    );
    assert_eq!(status, 200, "{opened}");
    let opened: Value = serde_json::from_str(&opened).unwrap();
    assert_eq!(opened["identity"]["username"], bob.name.as_str());
    assert!(as_bob_with_link.browser.cookie("quire-guest").is_some());
    let (status, me) = as_bob_with_link.http("GET", "/api/me", None);
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&me).unwrap()["identity"]["username"],
        bob.name.as_str()
    );
    let mut watching = as_bob_with_link.join("", &file).await;
    watching.append_to_cell(0, " # Bob via the link").await;
    assert!(watching
        .wait_raw(Duration::from_secs(5), |m| m["type"] == "refused")
        .await
        .is_some());
    let (status, _) = as_ada.http(
        "DELETE",
        &format!("/api/sharing/{file}/links/{}", link["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(status, 204);
    let (code, _) = watching.expect_close(Duration::from_secs(1)).await;
    assert_eq!(code, 4403);

    // A project: its own account, with members working on its notebooks.
    let admin = |method: &str, path: &str, body: Option<&str>| {
        server.http_with(
            method,
            path,
            body,
            &[("Authorization", &format!("token {TOKEN}"))],
        )
    };
    let prefix = format!("/projects/{}", project.name);
    let (status, body) = admin(
        "POST",
        "/api/projects",
        Some(&json!({"name": project.name}).to_string()),
    );
    assert_eq!(status, 201, "{body}");
    let (status, _) = as_ada.http("GET", &format!("{prefix}/api/contents"), None);
    assert_eq!(status, 404, "not a member yet");
    let (status, body) = as_ada.http(
        "PUT",
        &format!("/api/projects/{}/members/{}", project.name, bob.name),
        None,
    );
    assert_eq!(
        status, 403,
        "only the administrator manages members: {body}"
    );
    let (status, body) = admin(
        "PUT",
        &format!("/api/projects/{}/members/{}", project.name, ada.name),
        None,
    );
    assert_eq!(status, 204, "{body}");
    as_ada.write_notebook(&prefix, "shared.ipynb", &[uid_code]);
    let on_disk = std::fs::metadata(project.home().join("shared.ipynb")).unwrap();
    assert_eq!(
        on_disk.uid().to_string(),
        project.id("-u"),
        "the project's files are the project's"
    );
    let project_file = as_ada.file_id(&prefix, "shared.ipynb");
    let mut in_project = as_ada.join(&prefix, &project_file).await;
    assert_eq!(
        run_and_read(&mut in_project).await,
        project.id("-u"),
        "the project's kernel runs as the project, not as Ada"
    );
    // Removing Ada from the project ends her access at once.
    let (status, body) = admin(
        "DELETE",
        &format!("/api/projects/{}/members/{}", project.name, ada.name),
        None,
    );
    assert_eq!(status, 204, "{body}");
    let (code, _) = in_project.expect_close(Duration::from_secs(1)).await;
    assert_eq!(code, 4403);
    let (status, _) = as_ada.http("GET", &format!("{prefix}/api/contents"), None);
    assert_eq!(status, 404);
    let mut again = as_ada.connect("", &project_file).await;
    assert_eq!(again.expect_close(Duration::from_secs(5)).await.0, 4403);
    // A changed password ends Bob's logins: his sockets close, his cookie no longer works.
    as_bob.write_notebook("", "his.ipynb", &["1"]);
    let his = as_bob.file_id("", "his.ipynb");
    let mut bob_again = as_bob.join("", &his).await;
    bob.set_password("new bob pw");
    let (code, reason) = bob_again.expect_close(Duration::from_secs(3)).await;
    assert_eq!(code, 4403, "{reason}");
    let (status, _) = as_bob.http("GET", "/api/me", None);
    assert_eq!(status, 403);
    // Her own notebook is still hers, until she logs out: that closes her sockets. (Her login
    // is live, and her socket answers a round trip after Bob's was closed.)
    assert_eq!(as_ada.http("GET", "/api/me", None).0, 200);
    ada_client.sentinel().await;
    assert_eq!(ada_client.closed, None);
    let (status, _) = as_ada.http("POST", "/api/logout", None);
    assert_eq!(status, 204);
    let (code, reason) = ada_client.expect_close(Duration::from_secs(1)).await;
    assert_eq!((code, reason.as_str()), (4403, "you logged out"));
    let (status, _) = as_ada.http("GET", "/api/contents", None);
    assert_eq!(status, 403);
}
