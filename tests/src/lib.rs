//! The end-to-end harness: starts the real `quire` binary on loopback and drives it with real
//! clients (a yrs document over a real websocket, and Python's jupyter_ydoc/pycrdt).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod accounts;
pub mod bench;
pub mod client;
pub mod forge;
pub mod http;

pub use client::YClient;
pub use http::{Browser, Reply};

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

/// Someone who opened a live-share link: the browser holding their cookie, and the notebook.
pub struct Guest {
    pub browser: Browser,
    /// `quire-guest=…`
    pub cookie: String,
    pub file_id: String,
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

    /// A browser with no cookies yet.
    pub fn browser(&self) -> Browser {
        Browser::new(self.port)
    }

    /// A browser that opened the printed link (`?token=` in the URL), whose cookie logs it in.
    pub fn logged_in_browser(&self) -> Browser {
        let browser = self.browser();
        let reply = browser.get(&format!("/api/me?token={TOKEN}"));
        assert_eq!(reply.status, 200, "the login link: {}", reply.body);
        browser
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

    /// A request with these headers only (from a browser with no cookies); (status, body).
    pub fn http_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let reply = self.browser().request(method, path, body, headers);
        (reply.status, reply.body)
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

    /// Makes a live-share link on a notebook, as the owner (`body` as the sharing API takes
    /// it: `{"role": "editor"}`...); returns the link's JSON.
    pub fn create_link(&self, file_id: &str, body: Value) -> Value {
        let (status, reply) = self.http(
            "POST",
            &format!("/api/sharing/{file_id}/links"),
            Some(&body.to_string()),
        );
        assert_eq!(status, 201, "{reply}");
        serde_json::from_str(&reply).unwrap()
    }

    /// Opens a live-share link as a browser would (a same-origin POST with a display name);
    /// returns the status, the JSON answer and, if the server set a guest cookie
    /// (`quire-guest=…`), the browser holding it.
    pub fn redeem_link(&self, token: &str, name: &str) -> (u16, Value, Option<Browser>) {
        let browser = self.browser();
        let body = serde_json::json!({"name": name}).to_string();
        let reply = browser.from_page("POST", &format!("/api/share/{token}"), Some(&body));
        let guest = browser.cookie("quire-guest").map(|_| browser);
        (reply.status, reply.json(), guest)
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

fn unsafe_kill(pid: u32, signal: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
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
