//! The end-to-end harness: starts the real `quire` binary on loopback and drives it with real
//! clients (a yrs document over a real websocket, and Python's jupyter_ydoc/pycrdt).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use bytes::Bytes;
use collab::protocol::{self, decode_frame, Frame};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Text, Transact, TransactionMut, Update};

pub mod accounts;
pub mod bench;
pub mod forge;

pub const TOKEN: &str = "test-token-0123456789";

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `quire` binary, built once if `cargo test` did not already build it.
pub fn quire_binary() -> PathBuf {
    static BUILD: Once = Once::new();
    if let Some(bin) = std::env::var_os("QUIRE_BIN") {
        // Absolute: servers and kernels run in other working directories.
        return std::path::absolute(bin).expect("QUIRE_BIN is a path");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let bin = target.join("debug/quire");
    BUILD.call_once(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "quire-server", "--bin", "quire"])
            .current_dir(repo_root())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building quire failed");
    });
    bin
}

/// The Python with pycrdt, jupyter_ydoc and nbformat (tests/run-all.sh makes it).
pub fn python() -> PathBuf {
    if let Some(py) = std::env::var_os("QUIRE_TEST_PYTHON") {
        // Absolute: its kernelspec directory is handed to servers that run elsewhere.
        return std::path::absolute(py).expect("QUIRE_TEST_PYTHON is a path");
    }
    let venv = repo_root().join("tests/.venv/bin/python");
    assert!(
        venv.exists(),
        "no Python test environment at {}: run tests/run-all.sh (it creates it)",
        venv.display()
    );
    venv
}

/// `share/jupyter` of the test virtualenv, where ipykernel installed its kernelspec.
pub fn venv_jupyter_dir() -> PathBuf {
    let python = python();
    let bin = python.parent().expect("python lives in a bin directory");
    bin.parent().unwrap_or(bin).join("share/jupyter")
}

/// Runs a script from tests/py (or elsewhere in the repo) and returns (exit code, stdout, stderr).
pub fn run_python(script: &str, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(python())
        .arg(repo_root().join(script))
        .args(args)
        .output()
        .expect("python runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A running `quire serve` over a temporary folder.
pub struct TestServer {
    pub child: Child,
    pub port: u16,
    pub root: PathBuf,
    pub state_dir: PathBuf,
    _dirs: Vec<tempfile::TempDir>,
    extra_config: String,
}

impl TestServer {
    /// Starts a server over a fresh folder holding `files` (name, bytes).
    pub fn start(files: &[(&str, &[u8])]) -> TestServer {
        TestServer::start_with_config(files, "")
    }

    /// As [`start`], with extra TOML configuration lines.
    pub fn start_with_config(files: &[(&str, &[u8])], config: &str) -> TestServer {
        let root_dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        for (name, bytes) in files {
            let path = root_dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        let root = root_dir.path().to_path_buf();
        let state_dir = state.path().to_path_buf();
        let mut server = TestServer {
            child: Command::new("true").spawn().unwrap(),
            port: 0,
            root,
            state_dir,
            _dirs: vec![root_dir, state],
            extra_config: config.to_string(),
        };
        server.spawn(0);
        server
    }

    fn spawn(&mut self, port: u16) {
        let config_path = self.state_dir.join("test-config.toml");
        std::fs::write(&config_path, &self.extra_config).unwrap();
        let mut child = Command::new(quire_binary())
            .arg("serve")
            .arg(&self.root)
            .args(["--bind", &format!("127.0.0.1:{port}")])
            // (Not --token: every local account can read a command line.)
            .env("QUIRE_TOKEN", TOKEN)
            .arg("--no-browser")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--config")
            .arg(&config_path)
            .env("QUIRE_LOG", "info")
            // The test virtualenv's kernelspec (ipykernel) is the one kernels start from.
            .env("JUPYTER_PATH", venv_jupyter_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("quire starts");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let url = line
            .split(" at ")
            .nth(1)
            .unwrap_or_else(|| panic!("unexpected first line from quire: {line:?}"));
        let port: u16 = url
            .trim_start_matches("http://127.0.0.1:")
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        self.child = child;
        self.port = port;
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// `kill -9`, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe_kill(self.child.id(), 15);
        self.child.wait().unwrap()
    }

    /// Forgets everything the server stored (as if its state directory were lost).
    pub fn wipe_state(&mut self) {
        for entry in std::fs::read_dir(&self.state_dir).unwrap().flatten() {
            if entry.file_name() != "test-config.toml" {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Starts the server again over the same folder and state, on the same port.
    pub fn restart(&mut self) {
        let port = self.port;
        self.spawn(port);
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// A blocking HTTP request with the token; returns (status, body).
    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.http_with(
            method,
            path,
            body,
            &[("Authorization", &format!("token {TOKEN}"))],
        )
    }

    pub fn http_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let body = body.unwrap_or("");
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\n",
            self.port,
            body.len()
        );
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("connection"))
        {
            request.push_str("Connection: close\r\n");
        }
        if !body.is_empty() {
            request.push_str("Content-Type: application/json\r\n");
        }
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        stream.write_all(request.as_bytes()).unwrap();
        // Read until the server closes, or (for kept-alive upgrade attempts) goes quiet once it
        // has answered. The answer itself may take a while (a run, a kernel restart).
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let mut response = Vec::new();
        let mut chunk = [0u8; 65536];
        loop {
            if !response.is_empty() {
                stream
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .unwrap();
            }
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => response.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if response.is_empty() {
                        // Say why there is no answer: status 0 and the error as the body.
                        return (0, format!("no response: {e}"));
                    }
                    break;
                }
            }
        }
        parse_response(&response)
    }

    /// Opens the printed link (`?token=` in the URL) and returns the raw response, whose
    /// `set-cookie` logs the browser in.
    pub fn open_login_link(&self) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "GET /api/me?token={TOKEN} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    }

    /// The `name=value` of the login cookie a response set.
    pub fn cookie_from(response: &str) -> String {
        response
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: "))
            .and_then(|c| c.split(';').next())
            .expect("a login cookie")
            .to_string()
    }

    /// The cell sources of a notebook file on disk.
    pub fn sources_on_disk(&self, name: &str) -> Vec<String> {
        read_notebook(&self.path(name))
            .cells
            .into_iter()
            .map(|c| c.source)
            .collect()
    }

    /// The JupyterLab session handshake for a notebook: (fileId, sessionId).
    pub fn session(&self, path: &str) -> (String, String) {
        self.session_as(path, "json", "notebook")
    }

    /// The session handshake for any document type (`text`/`file` for an editor).
    pub fn session_as(&self, path: &str, format: &str, kind: &str) -> (String, String) {
        // encodeURIComponent, as JupyterLab does.
        let encoded: String = path
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z'
                | b'a'..=b'z'
                | b'0'..=b'9'
                | b'-'
                | b'_'
                | b'.'
                | b'!'
                | b'~'
                | b'*'
                | b'\''
                | b'('
                | b')' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (status, body) = self.http(
            "PUT",
            &format!("/api/collaboration/session/{encoded}"),
            Some(&format!(r#"{{"format":"{format}","type":"{kind}"}}"#)),
        );
        assert!(
            status == 200 || status == 201,
            "session PUT gave {status}: {body}"
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        (
            v["fileId"].as_str().unwrap().to_string(),
            v["sessionId"].as_str().unwrap().to_string(),
        )
    }

    pub fn room_url(&self, file_id: &str, session_id: &str) -> String {
        self.room_url_for("json:notebook", file_id, session_id)
    }

    /// The websocket address of a room: `prefix` is `format:type`, e.g. `text:file`.
    pub fn room_url_for(&self, prefix: &str, file_id: &str, session_id: &str) -> String {
        format!(
            "ws://127.0.0.1:{}/api/collaboration/room/{prefix}:{file_id}?sessionId={session_id}&token={TOKEN}",
            self.port
        )
    }

    /// A same-origin JSON POST without the token, as the app's page makes it; the whole
    /// response, headers included.
    pub fn browser_post(&self, path: &str, body: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\nOrigin: http://127.0.0.1:{0}\r\nContent-Type: application/json\r\nContent-Length: {1}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    /// Opens a live-share link as a browser would (a same-origin POST with a display name);
    /// returns the status, the JSON answer and the guest cookie (`quire-guest=…`) if one was set.
    pub fn redeem_link(&self, token: &str, name: &str) -> (u16, Value, Option<String>) {
        let body = serde_json::json!({"name": name}).to_string();
        let response = self.browser_post(&format!("/api/share/{token}"), &body);
        let status: u16 = response[9..12].parse().unwrap();
        let cookie = set_cookie(&response, "quire-guest");
        let json = response
            .split("\r\n\r\n")
            .nth(1)
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null);
        (status, json, cookie)
    }

    /// Polls `check` until it holds or `timeout` passes.
    pub fn eventually(&self, timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if check() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        check()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A whole HTTP/1.1 response (read until the server closed): its status and its body, with
/// chunked encoding undone (bodies here are small).
pub fn parse_response(response: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

fn unsafe_kill(pid: u32, signal: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A y-websocket client holding a real yrs document.
pub struct YClient {
    pub doc: Doc,
    socket: Socket,
    pub synced: bool,
    pub raw: Vec<String>,
    pub awareness: Vec<Bytes>,
    pub closed: Option<(u16, String)>,
    /// Sync updates received (the echo of our own edits included).
    pub updates_received: usize,
}

impl YClient {
    /// Opens the room for `path` the way JupyterLab does, and waits until synced.
    pub async fn join(server: &TestServer, path: &str) -> YClient {
        let (file_id, session_id) = server.session(path);
        let mut client = YClient::connect(&server.room_url(&file_id, &session_id)).await;
        client.sync().await;
        client
    }

    /// Connects with a cookie instead of the token (a live-share guest, as a browser would).
    pub async fn connect_with_cookie(url: &str, cookie: &str) -> YClient {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().expect("a websocket URL");
        request
            .headers_mut()
            .insert("cookie", cookie.parse().expect("a cookie header"));
        let (socket, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
            .await
            .expect("websocket connects");
        YClient::over(socket)
    }

    pub async fn connect(url: &str) -> YClient {
        // Like browsers, disable Nagle's algorithm: edits are small frames.
        let (socket, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .expect("websocket connects");
        YClient::over(socket)
    }

    fn over(socket: Socket) -> YClient {
        YClient {
            doc: collab::notebook::new_doc(),
            socket,
            synced: false,
            raw: Vec::new(),
            awareness: Vec::new(),
            closed: None,
            updates_received: 0,
        }
    }

    /// Sends our state vector and reads until the server's step 2 arrives.
    pub async fn sync(&mut self) {
        let sv = self.doc.transact().state_vector().encode_v1();
        self.send(protocol::encode_sync_step1(&sv)).await;
        let ok = self.pump_until(Duration::from_secs(10), |c| c.synced).await;
        assert!(ok, "not synced within 10 s (closed: {:?})", self.closed);
    }

    pub async fn send(&mut self, frame: Bytes) {
        self.socket
            .send(Message::Binary(frame))
            .await
            .expect("send");
    }

    /// Makes a local change and sends it as an update.
    pub async fn edit(&mut self, f: impl FnOnce(&mut TransactionMut)) {
        let update = {
            let mut txn = self.doc.transact_mut();
            f(&mut txn);
            txn.encode_update_v1()
        };
        self.send(protocol::encode_sync_update(&update)).await;
    }

    /// Appends text to the source of cell `index`.
    pub async fn append_to_cell(&mut self, index: u32, text: &str) {
        self.edit(|txn| {
            let source = collab::notebook::cell_source(txn, index).expect("cell exists");
            source.push(txn, text);
        })
        .await;
    }

    pub fn sources(&self) -> Vec<String> {
        collab::Notebook::from_doc(&self.doc.transact())
            .cells
            .into_iter()
            .map(|c| c.source)
            .collect()
    }

    pub fn notebook(&self) -> collab::Notebook {
        collab::Notebook::from_doc(&self.doc.transact())
    }

    /// Reads frames, handling them, until `done` holds, the socket closes, or time runs out.
    pub async fn pump_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&YClient) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(self) {
            if self.closed.is_some() {
                return false;
            }
            let next = tokio::time::timeout_at(deadline, self.socket.next()).await;
            match next {
                Err(_) => return done(self),
                Ok(None) => {
                    self.closed
                        .get_or_insert((1006, "connection dropped".into()));
                }
                Ok(Some(Err(_))) => {
                    self.closed.get_or_insert((1006, "connection error".into()));
                }
                Ok(Some(Ok(message))) => self.handle(message).await,
            }
        }
        true
    }

    /// Reads whatever arrives within `duration`.
    pub async fn pump_for(&mut self, duration: Duration) {
        self.pump_until(duration, |_| false).await;
    }

    async fn handle(&mut self, message: Message) {
        match message {
            Message::Binary(bytes) => {
                let frame = decode_frame(&bytes, usize::MAX).expect("server frames decode");
                match frame {
                    Frame::SyncStep1(sv) => {
                        let sv = StateVector::decode_v1(&sv).unwrap();
                        let update = self.doc.transact().encode_state_as_update_v1(&sv);
                        self.send(protocol::encode_sync_step2(&update)).await;
                    }
                    Frame::SyncStep2(update) => {
                        self.apply(&update);
                        self.synced = true;
                    }
                    Frame::SyncUpdate(update) => {
                        self.apply(&update);
                        self.updates_received += 1;
                    }
                    Frame::Awareness(payload) => self.awareness.push(payload),
                    Frame::Raw { text, .. } => self.raw.push(text),
                    Frame::QueryAwareness => {}
                }
            }
            Message::Close(frame) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((u16::from(CloseCode::Status), String::new()));
                self.closed = Some((code, reason));
            }
            _ => {}
        }
    }

    fn apply(&self, update: &[u8]) {
        let update = Update::decode_v1(update).expect("server updates decode");
        self.doc
            .transact_mut()
            .apply_update(update)
            .expect("server updates apply");
    }

    /// Sends an edit and waits until the server has echoed an update back (so it is durable).
    pub async fn append_and_wait_echo(&mut self, index: u32, text: &str) {
        let before = self.updates_received;
        self.append_to_cell(index, text).await;
        let echoed = self
            .pump_until(Duration::from_secs(10), |c| c.updates_received > before)
            .await;
        assert!(
            echoed,
            "the server did not echo the edit (closed: {:?})",
            self.closed
        );
    }

    /// JupyterLab's RAW save; returns the reply's status.
    pub async fn save(&mut self, save_id: u64) -> String {
        self.send(protocol::encode_raw_save(save_id)).await;
        // (A save's reply, not another request's that happens to carry the same number.)
        let reply = self
            .wait_raw(Duration::from_secs(30), |m| {
                m["type"] == "save" && m["responseTo"] == save_id
            })
            .await;
        let reply = reply
            .unwrap_or_else(|| panic!("no reply to save {save_id} (closed: {:?})", self.closed));
        reply["status"].as_str().unwrap_or_default().to_string()
    }

    /// Sends one of our RAW JSON requests.
    pub async fn request(&mut self, message: Value) {
        self.send(protocol::encode_raw(&message.to_string())).await;
    }

    /// Asks the server to run a cell (starting the notebook's kernel if needed); returns the
    /// server's answer (`status` "queued" or "refused").
    pub async fn execute(&mut self, cell_id: &str) -> Value {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.request(serde_json::json!({"type": "execute", "cell_id": cell_id, "request_id": id}))
            .await;
        self.wait_raw(Duration::from_secs(60), |m| {
            m["type"] == "execute" && m["responseTo"] == id
        })
        .await
        .unwrap_or_else(|| panic!("no answer to execute {cell_id} (closed: {:?})", self.closed))
    }

    /// Waits for a RAW JSON message matching `pick`.
    pub async fn wait_raw(
        &mut self,
        timeout: Duration,
        pick: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let find = |c: &YClient| {
            c.raw
                .iter()
                .filter_map(|r| serde_json::from_str::<Value>(r).ok())
                .find(|m| pick(m))
        };
        self.pump_until(timeout, |c| find(c).is_some()).await;
        find(self)
    }

    /// The server-written `state` map, as JSON.
    pub fn state(&self) -> Value {
        let txn = self.doc.transact();
        match txn.get_map("state") {
            Some(map) => collab::notebook::out_to_json(&txn, &yrs::Out::YMap(map)),
            None => Value::Null,
        }
    }

    /// How the last run of a cell stands: `queued`, `running`, `ok`, `error` or `aborted`.
    pub fn run_status(&self, cell_id: &str) -> String {
        self.state()["executions"][cell_id]["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until the cell's run has finished; returns its status.
    pub async fn wait_run(&mut self, cell_id: &str, timeout: Duration) -> String {
        let done =
            |c: &YClient| matches!(c.run_status(cell_id).as_str(), "ok" | "error" | "aborted");
        assert!(
            self.pump_until(timeout, done).await,
            "cell {cell_id} did not finish within {timeout:?}: {} (closed: {:?})",
            self.run_status(cell_id),
            self.closed
        );
        self.run_status(cell_id)
    }

    /// A cell as the document holds it.
    pub fn cell(&self, cell_id: &str) -> collab::Cell {
        self.notebook()
            .cells
            .into_iter()
            .find(|c| c.id == cell_id)
            .unwrap_or_else(|| panic!("no cell {cell_id}"))
    }

    /// Waits for the server to close the socket; returns its code and reason.
    pub async fn expect_close(&mut self, timeout: Duration) -> (u16, String) {
        self.pump_until(timeout, |c| c.closed.is_some()).await;
        self.closed
            .clone()
            .expect("the server closes the connection")
    }
}

/// The `name=value` of the cookie `name` a whole HTTP response sets, if it sets one.
pub fn set_cookie(response: &str, name: &str) -> Option<String> {
    let prefix = format!("set-cookie: {name}=");
    response
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .map(|l| {
            l["set-cookie: ".len()..]
                .split(';')
                .next()
                .unwrap_or_default()
                .to_string()
        })
}

/// Reads a notebook file from disk.
pub fn read_notebook(path: &Path) -> collab::Notebook {
    collab::Notebook::from_ipynb(&std::fs::read(path).unwrap()).unwrap()
}

/// A small notebook with the given code cell sources (nbformat 4.5, fixed ids).
pub fn notebook_with(sources: &[&str]) -> Vec<u8> {
    let cells: Vec<Value> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| {
            serde_json::json!({"cell_type": "code", "id": format!("cell-{i}"), "metadata": {},
                               "source": s, "outputs": [], "execution_count": null})
        })
        .collect();
    serde_json::to_vec_pretty(&serde_json::json!({
        "cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5
    }))
    .unwrap()
}
