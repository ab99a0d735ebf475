//! Limits that hold under attack (issue 12, server side): each test performs an attack from a
//! security review against the real binary on loopback and checks what a user would see.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use quire_tests::{Browser, Reply, TestServer, TOKEN};

/// A GET with these headers only, from a browser with no cookies.
fn get(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> Reply {
    server.browser().request("GET", path, None, headers)
}

/// The status of a whole HTTP response read from a socket.
fn status(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// An `<img src="http://quire/api/contents?token=wrong">` on any page makes the visitor's own
/// browser send wrong tokens from the visitor's address. Wrong tokens must be throttled, but
/// the visitor's right token must keep working, by header, by `?token=` and by cookie.
#[test]
fn wrong_tokens_are_throttled_but_never_lock_out_the_right_one() {
    let server = TestServer::start(&[("nb.ipynb", &quire_tests::notebook_with(&["x"]))]);
    // A login cookie the visitor got before the attack.
    let cookie = server.logged_in_browser().cookies();

    let mut statuses = Vec::new();
    let mut throttled = None;
    for i in 0..60 {
        let response = get(&server, &format!("/api/contents?token=wrong-{i}"), &[]);
        statuses.push(response.status);
        if response.status == 429 {
            throttled = Some(response);
            break;
        }
    }
    assert_eq!(statuses[0], 403, "{statuses:?}");
    let throttled =
        throttled.unwrap_or_else(|| panic!("wrong tokens are never throttled: {statuses:?}"));
    let retry_after: u64 = throttled
        .header("retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry_after >= 1, "{throttled:?}");
    assert!(
        throttled.body.contains("too many wrong tokens"),
        "the refusal says why: {throttled:?}"
    );

    // The right token still works, every way it can be given.
    let token = format!("token {TOKEN}");
    let by_header = get(&server, "/api/contents", &[("Authorization", &token)]);
    assert_eq!(by_header.status, 200, "{by_header:?}");
    let by_query = get(&server, &format!("/api/contents?token={TOKEN}"), &[]);
    assert_eq!(by_query.status, 200, "{by_query:?}");
    assert!(
        by_query.header("set-cookie").is_some(),
        "?token= still logs in: {by_query:?}"
    );
    let by_cookie = get(&server, "/api/contents", &[("Cookie", &cookie)]);
    assert_eq!(by_cookie.status, 200, "{by_cookie:?}");
    // A websocket with the token in its address (as the app opens rooms) still opens.
    let (file_id, session_id) = server.session("nb.ipynb");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut client =
            quire_tests::YClient::connect(&server.room_url(&file_id, &session_id)).await;
        client.sync().await;
        assert_eq!(client.notebook().cells[0].source, "x");
    });
    // The login form takes the right token too.
    let browser = server.browser();
    let origin = browser.origin().to_string();
    let form = browser.request(
        "POST",
        "/login",
        Some(&format!("token={TOKEN}&next=/")),
        &[
            ("Origin", &origin),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
    );
    assert_eq!(form.status, 303, "{form:?}");

    // Wrong tokens are still held back, by header too.
    let wrong = get(&server, "/api/contents", &[("Authorization", "token nope")]);
    assert_eq!(wrong.status, 429, "{wrong:?}");

    // The count decays: once the wait asked for has passed, a wrong token is looked at again
    // (and refused as wrong, not as too many).
    std::thread::sleep(Duration::from_secs(retry_after));
    let later = get(&server, "/api/contents?token=wrong-again", &[]);
    assert_eq!(later.status, 403, "{later:?}");
}

/// Opens a connection and sends half a request, as a slowloris does; returns the socket.
fn half_request(server: &TestServer) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .write_all(b"GET /api/contents HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .unwrap();
    stream
}

/// A connection the server has taken and keeps: one request answered, then kept alive (a
/// connection refused for the cap gets its 503 instead, and is tried again: the server may
/// still count a connection the test has just closed).
fn held_connection(server: &TestServer) -> TcpStream {
    for _ in 0..100 {
        let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        write!(
            stream,
            "GET /api/contents HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: token {TOKEN}\r\n\r\n",
            server.port
        )
        .unwrap();
        let head = read_head(&mut stream);
        if status(&head) == 200 {
            return stream;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the server took no connection in 100 attempts");
}

/// Reads one response's head (up to the blank line); the body is left unread.
fn read_head(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Reads until the server closes the connection, for at most `limit`: what it sent, or `None`
/// if the connection was still open at the end.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Some(String::from_utf8_lossy(&received).into_owned()),
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            // Reset by the server: closed too.
            Err(_) => return Some(String::from_utf8_lossy(&received).into_owned()),
        }
    }
}

/// Slowloris: a connection that sends half a request and then nothing must be closed by the
/// server once `header_read_timeout_secs` has passed, and so must a kept-alive connection that
/// never sends its next request; meanwhile normal requests are answered.
#[test]
fn half_sent_requests_and_idle_connections_are_closed() {
    let server = TestServer::start_with_config(
        &[("nb.ipynb", &quire_tests::notebook_with(&["x"]))],
        "header_read_timeout_secs = 1\n",
    );
    let mut slow = half_request(&server);
    let (answer, body) = server.http("GET", "/api/contents", None);
    assert_eq!(answer, 200, "a normal request is answered: {body}");
    let closed = read_until_closed(&mut slow, Duration::from_secs(30));
    assert!(
        closed.is_some(),
        "the half-sent request was still open 30 s later"
    );

    // A kept-alive connection: one request answered, then silence.
    let mut idle = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(
        idle,
        "GET /api/contents HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: token {TOKEN}\r\n\r\n",
        server.port
    )
    .unwrap();
    let after = read_until_closed(&mut idle, Duration::from_secs(30))
        .expect("the idle kept-alive connection was still open 30 s later");
    assert_eq!(status(&after), 200, "{after}");
}

/// One address may hold only `max_connections_per_address` connections, websockets included:
/// the next is turned away at once with a 503 saying why, and a place freed is usable again.
#[test]
fn one_address_cannot_hold_more_than_its_share_of_connections() {
    const CAP: usize = 4;
    let server = TestServer::start_with_config(
        &[("nb.ipynb", &quire_tests::notebook_with(&["x"]))],
        // Held connections must outlive the test's steps.
        &format!("max_connections_per_address = {CAP}\nheader_read_timeout_secs = 300\n"),
    );
    // The server's own file id for the notebook, before any place is taken.
    let (file_id, session_id) = server.session("nb.ipynb");
    let mut held: Vec<TcpStream> = (0..CAP).map(|_| held_connection(&server)).collect();
    let mut extra = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let refused = read_until_closed(&mut extra, Duration::from_secs(30))
        .expect("a connection beyond the cap was still open 30 s later");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused:?}");
    assert!(
        refused.contains("too many connections from your address"),
        "{refused}"
    );
    // Closing two frees two places.
    held.truncate(CAP - 2);
    let answered = server.eventually(Duration::from_secs(30), || {
        server.http("GET", "/api/contents", None).0 == 200
    });
    assert!(
        answered,
        "no request was answered after closing connections"
    );

    // Websockets hold their place for as long as they are open.
    drop(held);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = server.room_url(&file_id, &session_id);
        let mut sockets = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while sockets.len() < CAP {
            assert!(
                std::time::Instant::now() < deadline,
                "could not open {CAP} websockets"
            );
            match tokio_tungstenite::connect_async(url.as_str()).await {
                Ok((socket, _)) => sockets.push(socket),
                // A closed half request may not have been noticed yet.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let (answer, body) = server.http("GET", "/api/contents", None);
        assert_ne!(answer, 200, "a request beyond the cap was served: {body}");
        drop(sockets.pop());
        let answered = server.eventually(Duration::from_secs(30), || {
            server.http("GET", "/api/contents", None).0 == 200
        });
        assert!(answered, "closing a websocket freed no place");
    });
}

/// The modes of everything Quire keeps in its state directory: (name, mode), the harness's own
/// config file left out.
fn state_modes(server: &TestServer) -> Vec<(String, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut modes: Vec<(String, u32)> = std::fs::read_dir(&server.state_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != "test-config.toml")
        .map(|e| {
            let meta = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                meta.mode() & 0o7777,
            )
        })
        .collect();
    modes.sort();
    modes
}

fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

/// Another local account must not read a private notebook's text from the update log: the
/// state directory is 0700 and the database with its `-wal` and `-shm` 0600, also when an
/// earlier run left them readable by everyone.
#[test]
fn the_state_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let mut server = TestServer::start(&[("nb.ipynb", &quire_tests::notebook_with(&["secret"]))]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let check = |server: &TestServer| {
        // An edit, so the update log has the notebook's text in it.
        rt.block_on(async {
            let mut client = quire_tests::YClient::join(server, "nb.ipynb").await;
            // Echoed: it is in the log.
            client.append_and_wait_echo(0, ", edited").await;
        });
        let dir_mode = mode_of(&server.state_dir);
        assert!(
            dir_mode == 0o700,
            "the state directory {} has mode {dir_mode:o}",
            server.state_dir.display()
        );
        let modes = state_modes(server);
        for name in ["quire.sqlite3", "quire.sqlite3-wal", "quire.sqlite3-shm"] {
            assert!(
                modes.iter().any(|(n, _)| n == name),
                "{name} is missing: {modes:?}"
            );
        }
        for (name, mode) in &modes {
            let path = server.state_dir.join(name);
            if path.is_dir() {
                assert_eq!(
                    mode & 0o066,
                    0,
                    "{name} is readable or writable by others: {mode:o}"
                );
            } else {
                assert_eq!(*mode, 0o600, "{name} has mode {mode:o}");
            }
        }
    };
    check(&server);

    // As an older Quire (or a loose umask) left them: everything readable by everyone.
    server.terminate();
    std::fs::set_permissions(&server.state_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(&server.state_dir).unwrap().flatten() {
        if entry.path().is_file() {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    // A -wal and -shm from the earlier run, as a crash leaves them.
    for suffix in ["-wal", "-shm"] {
        let path = server.state_dir.join(format!("quire.sqlite3{suffix}"));
        if !path.exists() {
            std::fs::write(&path, b"").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    server.restart();
    check(&server);
}

/// What a `quire serve` started by hand showed: the first line of its standard output (the
/// address it serves at) if it got that far, and everything it wrote to standard error.
struct Run {
    url: Option<String>,
    stderr: String,
    /// Answer to `GET /api/contents` with the token, while it served.
    contents_status: Option<u16>,
}

fn run_quire(args: &[&str], env: &[(&str, &str)], token: &str) -> Run {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut command = Command::new(quire_tests::quire_binary());
    command
        .arg("serve")
        .arg(root.path())
        .args(["--bind", "127.0.0.1:0", "--no-browser", "--state-dir"])
        .arg(state.path())
        .args(args)
        .env_remove("QUIRE_TOKEN")
        .env_remove("QUIRE_CONFIG")
        .env("QUIRE_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("quire starts");
    let mut stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut line = String::new();
    let _ = std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    let url = line.split(" at ").nth(1).map(|u| u.trim().to_string());
    let contents_status = url.as_ref().map(|url| {
        let port: u16 = url
            .trim_start_matches("http://127.0.0.1:")
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let token = format!("token {token}");
        Browser::new(port)
            .request("GET", "/api/contents", None, &[("Authorization", &token)])
            .status
    });
    let _ = child.kill();
    let _ = child.wait();
    Run {
        url,
        stderr: errors.join().unwrap(),
        contents_status,
    }
}

const GOOD_TOKEN: &str = "a-long-enough-token-0123456789";

/// `--token` is readable by every local account through /proc/PID/cmdline: in multi-user mode
/// (the token is the administrator's) Quire says so at startup and names the private ways.
#[test]
fn a_token_on_the_command_line_is_warned_about() {
    let root = quire_tests::accounts::is_root();
    let on_command_line = run_quire(&["--multi-user", "--token", GOOD_TOKEN], &[], GOOD_TOKEN);
    let stderr = &on_command_line.stderr;
    assert!(
        stderr.contains("the token given with --token can be read by every local account"),
        "{stderr}"
    );
    assert!(
        stderr.contains("administrator") && stderr.contains("QUIRE_TOKEN"),
        "{stderr}"
    );
    assert!(stderr.contains("chmod 600"), "{stderr}");
    if root {
        assert_eq!(on_command_line.contents_status, Some(200), "{stderr}");
    }

    // The same token from the environment: no warning.
    let from_env = run_quire(
        &["--multi-user"],
        &[("QUIRE_TOKEN", GOOD_TOKEN)],
        GOOD_TOKEN,
    );
    assert!(!from_env.stderr.contains("--token"), "{}", from_env.stderr);
    if root {
        assert_eq!(from_env.contents_status, Some(200), "{}", from_env.stderr);
    }
}

/// A config file that holds the token but that others can read is refused, with what to do;
/// made private (0600), it is used without a word.
#[test]
fn a_token_in_a_config_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("quire.toml");
    std::fs::write(&config, format!("token = \"{GOOD_TOKEN}\"\n")).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path = config.to_str().unwrap();

    let readable = run_quire(&["--config", path], &[], GOOD_TOKEN);
    assert_eq!(readable.url, None, "Quire served: {}", readable.stderr);
    assert!(
        readable
            .stderr
            .contains("holds the token, and other accounts can read it"),
        "{}",
        readable.stderr
    );
    assert!(
        readable.stderr.contains(&format!("chmod 600 {path}")),
        "{}",
        readable.stderr
    );

    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let private = run_quire(&["--config", path], &[], GOOD_TOKEN);
    assert_eq!(private.contents_status, Some(200), "{}", private.stderr);
    assert!(!private.stderr.contains("token"), "{}", private.stderr);
}

/// A live-share guest who gives the owner's name must not pass for the owner: what the guest's
/// own `/api/me` says, what the link's answer says and what other people in the room see in
/// awareness is the name marked as a guest's, never an account's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_cannot_take_the_owners_name() {
    use serde_json::{json, Value};
    let server = TestServer::start(&[("nb.ipynb", &quire_tests::notebook_with(&["x"]))]);
    let (_, me) = server.http("GET", "/api/me", None);
    let owner: Value = serde_json::from_str(&me).unwrap();
    let owner = owner["identity"].clone();
    let owner_names: Vec<String> = ["username", "name", "display_name"]
        .iter()
        .map(|k| owner[k].as_str().unwrap().to_string())
        .collect();
    let owner_name = owner["display_name"].as_str().unwrap().to_string();
    let (file_id, _) = server.session("nb.ipynb");
    let (status, link) = server.http(
        "POST",
        &format!("/api/sharing/{file_id}/links"),
        Some(&json!({"role": "editor", "max_uses": 10}).to_string()),
    );
    assert_eq!(status, 201, "{link}");
    let link: Value = serde_json::from_str(&link).unwrap();
    let link_token = link["token"].as_str().unwrap();

    let is_a_guests_name = |identity: &Value, context: &str| {
        for key in ["name", "display_name"] {
            let shown = identity[key].as_str().unwrap_or_default();
            assert!(
                shown.ends_with(" (guest)"),
                "{context}: {key} {shown:?} is not marked as a guest's"
            );
            for account in &owner_names {
                assert!(
                    !shown.eq_ignore_ascii_case(account),
                    "{context}: {key} {shown:?} is the owner's"
                );
            }
        }
        assert!(
            identity["username"]
                .as_str()
                .unwrap_or_default()
                .starts_with("guest:"),
            "{context}: {identity}"
        );
    };

    // The owner's name as it is, already "marked", and with a right-to-left override that
    // would turn a mark around on screen.
    let tries = [
        owner_name.clone(),
        format!("{owner_name} (guest)"),
        format!("  {owner_name}\u{202E} "),
    ];
    let mut guest_cookie = String::new();
    for given in &tries {
        let (status, answer, guest) = server.redeem_link(link_token, given);
        assert_eq!(status, 200, "{answer}");
        is_a_guests_name(
            &answer["identity"],
            &format!("the link's answer to {given:?}"),
        );
        assert_eq!(
            answer["identity"]["display_name"],
            format!("{owner_name} (guest)"),
            "{given:?}"
        );
        let guest = guest.expect("a guest cookie");
        guest_cookie = guest.cookies();
        let me = guest.get("/api/me");
        assert_eq!(me.status, 200, "{me:?}");
        let me: Value = me.json();
        is_a_guests_name(&me["identity"], &format!("/api/me of the guest {given:?}"));
    }

    // In the room, the owner sees the guest's presence stamped with the marked name, whatever
    // the guest claims.
    let mut owner_client = quire_tests::YClient::join(&server, "nb.ipynb").await;
    let (_, session) = server.session("nb.ipynb");
    let url = format!(
        "ws://127.0.0.1:{}/api/collaboration/room/json:notebook:{file_id}?sessionId={session}",
        server.port
    );
    let mut guest = quire_tests::YClient::connect_with_cookie(&url, &guest_cookie).await;
    guest.sync().await;
    let claim = json!({"user": owner.clone(), "cursors": []});
    let update = collab::awareness::encode_update(777, 1, &claim);
    guest
        .send(collab::protocol::encode_awareness(&update))
        .await;
    let guest_presence = |c: &quire_tests::YClient| {
        c.awareness.iter().find_map(|a| {
            collab::awareness::decode_update(a)?
                .into_iter()
                .find(|(id, _, state)| *id == 777 && !state.is_null())
                .map(|(_, _, state)| state)
        })
    };
    assert!(
        owner_client
            .pump_until(Duration::from_secs(10), |c| guest_presence(c).is_some())
            .await,
        "the guest's presence never arrived"
    );
    let seen = guest_presence(&owner_client).unwrap();
    is_a_guests_name(&seen["user"], "the guest's presence as the owner sees it");
}

/// A guest name that, marked, is an account's full name on this machine is refused, and the
/// link is not used up by the refusal.
#[test]
fn a_guest_cannot_take_an_accounts_name() {
    use quire_tests::accounts::{is_root, TestAccount};
    use serde_json::{json, Value};
    if !is_root() {
        eprintln!("SKIPPED: creating a test account needs root (CI runs as root)");
        return;
    }
    let account = TestAccount::create("qlimitsguest", None);
    let status = std::process::Command::new("usermod")
        .args(["-c", "Nimue Tester (guest)", &account.name])
        .status()
        .unwrap();
    assert!(status.success());
    let server = TestServer::start(&[("nb.ipynb", &quire_tests::notebook_with(&["x"]))]);
    let (file_id, _) = server.session("nb.ipynb");
    let (_, link) = server.http(
        "POST",
        &format!("/api/sharing/{file_id}/links"),
        Some(&json!({"role": "editor", "max_uses": 1}).to_string()),
    );
    let link: Value = serde_json::from_str(&link).unwrap();
    let link_token = link["token"].as_str().unwrap();
    let (status, answer, guest) = server.redeem_link(link_token, "nimue tester");
    assert_eq!(status, 409, "{answer}");
    assert!(guest.is_none(), "no guest cookie");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .contains("is the name of an account on this server: choose another name"),
        "{answer}"
    );
    // The one use the link allows is still there.
    let (status, answer, _) = server.redeem_link(link_token, "Nimue");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["identity"]["display_name"], "Nimue (guest)");
}
