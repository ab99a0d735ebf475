//! The servers measured: Quire and the Yjs servers people would pick instead, each started on
//! loopback from what `tests/bench.sh` installed, and how a client reaches a document on each.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::client::{Framing, Room};

const TOKEN: &str = "bench-token-0123456789";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Quire,
    JupyterCollaboration,
    PycrdtWebsocket,
    Hocuspocus,
    YWebsocket,
    YSweet,
    /// A websocket broadcast server with no CRDT: the ceiling for the load generator and the
    /// loopback, driven the same way.
    Broadcast,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Quire,
        Kind::JupyterCollaboration,
        Kind::PycrdtWebsocket,
        Kind::Hocuspocus,
        Kind::YWebsocket,
        Kind::YSweet,
        Kind::Broadcast,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Quire => "quire",
            Kind::JupyterCollaboration => "jupyter-collaboration",
            Kind::PycrdtWebsocket => "pycrdt-websocket",
            Kind::Hocuspocus => "hocuspocus",
            Kind::YWebsocket => "y-websocket-server",
            Kind::YSweet => "y-sweet",
            Kind::Broadcast => "bare-broadcast",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Servers that open a notebook from its `.ipynb` file (the others start from an empty
    /// document that the first client fills).
    pub fn reads_notebook_files(self) -> bool {
        matches!(self, Kind::Quire | Kind::JupyterCollaboration)
    }

    /// Servers that keep documents across a restart in the way this bench starts them, so
    /// that a cold load (a document not in memory) can be measured.
    pub fn persists(self) -> bool {
        matches!(
            self,
            Kind::Quire | Kind::JupyterCollaboration | Kind::YWebsocket | Kind::YSweet
        )
    }

    /// How long after an edit the server has surely stored it, with its default settings
    /// (y-sweet writes a checkpoint every 10 s).
    pub fn store_delay(self) -> Duration {
        match self {
            Kind::YSweet => Duration::from_secs(12),
            _ => Duration::from_secs(3),
        }
    }
}

/// Where the programs are.
#[derive(Clone, Debug)]
pub struct Tools {
    pub quire: PathBuf,
    /// The Python with jupyter-collaboration and pycrdt-websocket.
    pub python: PathBuf,
    /// `tests/bench`, with the npm peers in its node_modules.
    pub js_dir: PathBuf,
    pub y_sweet: PathBuf,
    pub broadcast: PathBuf,
    /// Where servers keep their folders and logs.
    pub work: PathBuf,
}

impl Tools {
    /// The defaults `tests/bench.sh` installs to, each overridable by an environment variable.
    pub fn from_env(quire: PathBuf, broadcast: PathBuf) -> Tools {
        let root = crate::repo_root();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let var = |name: &str, default: PathBuf| {
            std::env::var_os(name).map(PathBuf::from).unwrap_or(default)
        };
        Tools {
            quire,
            python: var("QUIRE_BENCH_PYTHON", target.join("bench/venv/bin/python")),
            js_dir: var("QUIRE_BENCH_JS", root.join("tests/bench")),
            y_sweet: var(
                "QUIRE_BENCH_Y_SWEET",
                target.join("bench/peers/bin/y-sweet"),
            ),
            broadcast,
            work: var("QUIRE_BENCH_WORK", target.join("bench/work")),
        }
    }

    /// The version of each peer, for the report.
    pub fn versions(&self) -> Vec<(String, String)> {
        let commit = Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .current_dir(crate::repo_root())
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let mut out = vec![("quire".to_string(), commit)];
        for package in [
            "jupyter-collaboration",
            "jupyter-server",
            "pycrdt-websocket",
            "pycrdt",
        ] {
            let version = Command::new(&self.python)
                .args([
                    "-c",
                    &format!("import importlib.metadata as m; print(m.version('{package}'))"),
                ])
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default();
            out.push((package.to_string(), version));
        }
        for package in ["@hocuspocus/server", "@y/websocket-server", "yjs"] {
            let manifest = self
                .js_dir
                .join("node_modules")
                .join(package)
                .join("package.json");
            let version = std::fs::read(manifest)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["version"].as_str().map(str::to_string))
                .unwrap_or_default();
            out.push((package.to_string(), version));
        }
        // y-sweet has no --version; cargo install records what it installed beside the binary.
        let installed = self
            .y_sweet
            .parent()
            .and_then(Path::parent)
            .map(|root| root.join(".crates.toml"))
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default();
        let y_sweet = installed
            .split("\"y-sweet ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_default()
            .to_string();
        out.push(("y-sweet".to_string(), y_sweet));
        let node = Command::new("node")
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        out.push(("node".to_string(), node));
        out
    }
}

/// A running server.
pub struct Peer {
    pub kind: Kind,
    child: Child,
    pub port: u16,
    tools: Tools,
    /// The folder served (notebook files for Quire and Jupyter).
    root: PathBuf,
    /// The server's own state (database, store).
    store: PathBuf,
    /// Session handshakes already made, by document.
    sessions: HashMap<String, (String, String)>,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Peer {
    /// Starts `kind` over fresh folders; `files` are the notebooks (name without `.ipynb`,
    /// bytes) for the servers that read them.
    pub async fn start(kind: Kind, tools: &Tools, files: &[(String, Vec<u8>)]) -> Result<Peer> {
        let home = tools.work.join(kind.name());
        let _ = std::fs::remove_dir_all(&home);
        let root = home.join("root");
        let store = home.join("store");
        std::fs::create_dir_all(&root)?;
        std::fs::create_dir_all(&store)?;
        if kind.reads_notebook_files() {
            for (name, bytes) in files {
                std::fs::write(root.join(format!("{name}.ipynb")), bytes)?;
            }
        }
        let mut peer = Peer {
            kind,
            child: Command::new("true").spawn()?,
            port: 0,
            tools: tools.clone(),
            root,
            store,
            sessions: HashMap::new(),
        };
        peer.spawn().await?;
        Ok(peer)
    }

    fn command(&self) -> Command {
        let port = self.port.to_string();
        let t = &self.tools;
        match self.kind {
            Kind::Quire => {
                // Every client comes from 127.0.0.1 here (S4 opens 10,000 connections): no
                // per-address cap.
                let config = self.store.join("quire.toml");
                std::fs::write(&config, "max_connections_per_address = 0\n")
                    .expect("the bench's Quire config is written");
                let mut c = Command::new(&t.quire);
                c.arg("serve")
                    .arg("--config")
                    .arg(&config)
                    .arg(&self.root)
                    .args(["--bind", &format!("127.0.0.1:{port}")])
                    .args(["--no-browser", "--state-dir"])
                    .arg(&self.store)
                    .env("QUIRE_TOKEN", TOKEN)
                    .env("QUIRE_LOG", "warn");
                c
            }
            Kind::JupyterCollaboration => {
                let mut c = Command::new(&t.python);
                c.args(["-m", "jupyter", "server"])
                    .args([
                        "--ServerApp.ip=127.0.0.1",
                        &format!("--ServerApp.port={port}"),
                        "--ServerApp.port_retries=0",
                        &format!("--IdentityProvider.token={TOKEN}"),
                        "--ServerApp.open_browser=False",
                        "--ServerApp.log_level=WARN",
                        "--ServerApp.allow_root=True",
                    ])
                    .arg(format!("--ServerApp.root_dir={}", self.root.display()))
                    .env("JUPYTER_CONFIG_DIR", self.store.join("config"))
                    .env("JUPYTER_DATA_DIR", self.store.join("data"))
                    .env("JUPYTER_RUNTIME_DIR", self.store.join("runtime"))
                    .current_dir(&self.store);
                c
            }
            Kind::PycrdtWebsocket => {
                let mut c = Command::new(&t.python);
                c.arg(t.js_dir.join("pycrdt_server.py"))
                    .arg(&port)
                    .arg(&self.store);
                c
            }
            Kind::Hocuspocus => {
                let mut c = Command::new("node");
                c.arg(t.js_dir.join("hocuspocus_server.mjs")).arg(&port);
                c
            }
            Kind::YWebsocket => {
                let mut c = Command::new("node");
                c.arg(
                    t.js_dir
                        .join("node_modules/@y/websocket-server/src/server.js"),
                )
                .env("HOST", "127.0.0.1")
                .env("PORT", &port)
                .env("YPERSISTENCE", self.store.join("leveldb"));
                c
            }
            Kind::YSweet => {
                let mut c = Command::new(&t.y_sweet);
                c.arg("serve")
                    .arg(&self.store)
                    .args(["--host", "127.0.0.1", "--port", &port])
                    .env("RUST_LOG", "warn");
                c
            }
            Kind::Broadcast => {
                let mut c = Command::new(&t.broadcast);
                c.arg(&port);
                c
            }
        }
    }

    async fn spawn(&mut self) -> Result<()> {
        self.port = free_port()?;
        let log_path = self.store.join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        self.child = self
            .command()
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.kind.name()))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before listening; its log:\n{}",
                    self.kind.name(),
                    tail(&log_path)
                );
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
                && self.ready().await
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not listen within 60 s; its log:\n{}",
                    self.kind.name(),
                    tail(&log_path)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the server answers HTTP as it should once started (the port alone can open
    /// before the extensions are loaded).
    async fn ready(&self) -> bool {
        match self.kind {
            Kind::Quire | Kind::JupyterCollaboration => {
                matches!(
                    self.http("GET", "/api/contents?content=0", None).await,
                    Ok((200, _))
                )
            }
            Kind::YSweet => matches!(self.http("GET", "/ready", None).await, Ok((200, _))),
            _ => true,
        }
    }

    /// Stops the server and starts it again over the same folders (documents in memory are
    /// gone; what it persisted stays).
    pub async fn restart(&mut self) -> Result<()> {
        self.stop();
        self.sessions.clear();
        self.spawn().await
    }

    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How a client reaches `document` (a notebook's name without `.ipynb`).
    pub async fn room(&mut self, document: &str) -> Result<Room> {
        let port = self.port;
        let room = match self.kind {
            Kind::Quire | Kind::JupyterCollaboration => {
                let (file_id, session) = match self.sessions.get(document) {
                    Some(known) => known.clone(),
                    None => {
                        let made = self.session(document).await?;
                        self.sessions.insert(document.to_string(), made.clone());
                        made
                    }
                };
                Room {
                    url: format!(
                        "ws://127.0.0.1:{port}/api/collaboration/room/json:notebook:{file_id}?sessionId={session}&token={TOKEN}"
                    ),
                    framing: Framing::Plain,
                }
            }
            Kind::PycrdtWebsocket | Kind::YWebsocket => Room {
                url: format!("ws://127.0.0.1:{port}/{document}"),
                framing: Framing::Plain,
            },
            Kind::Hocuspocus => Room {
                url: format!("ws://127.0.0.1:{port}/"),
                framing: Framing::Hocuspocus {
                    document: document.to_string(),
                },
            },
            Kind::YSweet => {
                if !self.sessions.contains_key(document) {
                    // y-sweet's flow: create the document, then ask for a client token,
                    // whose `url` the client connects to (with the document appended, as
                    // its provider does).
                    let body = format!(r#"{{"docId":"{document}"}}"#);
                    let (status, answer) = self.http("POST", "/doc/new", Some(&body)).await?;
                    if status != 200 {
                        bail!("y-sweet /doc/new gave {status}: {answer}");
                    }
                    let (status, answer) = self
                        .http("POST", &format!("/doc/{document}/auth"), Some("{}"))
                        .await?;
                    if status != 200 {
                        bail!("y-sweet /doc/{document}/auth gave {status}: {answer}");
                    }
                    let token: serde_json::Value = serde_json::from_str(&answer)?;
                    let url = token["url"]
                        .as_str()
                        .ok_or_else(|| anyhow!("y-sweet's client token has no url: {answer}"))?;
                    self.sessions
                        .insert(document.to_string(), (url.to_string(), String::new()));
                }
                let url = &self.sessions[document].0;
                Room {
                    url: format!("{url}/{document}"),
                    framing: Framing::Plain,
                }
            }
            Kind::Broadcast => Room {
                url: format!("ws://127.0.0.1:{port}/{document}"),
                framing: Framing::Relay,
            },
        };
        Ok(room)
    }

    /// Jupyter's session handshake: a file's id and the server's session id.
    async fn session(&self, document: &str) -> Result<(String, String)> {
        let (status, body) = self
            .http(
                "PUT",
                &format!("/api/collaboration/session/{document}.ipynb"),
                Some(r#"{"format":"json","type":"notebook"}"#),
            )
            .await?;
        if status != 200 && status != 201 {
            bail!("session PUT for {document} gave {status}: {body}");
        }
        let v: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("session answer {body:?}"))?;
        let field = |name: &str| {
            v[name]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("session answer without {name}: {body}"))
        };
        Ok((field("fileId")?, field("sessionId")?))
    }

    /// One HTTP request with the token; (status, body).
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String)> {
        let browser = crate::Browser::new(self.port);
        let (method, path, body) = (
            method.to_string(),
            path.to_string(),
            body.map(str::to_owned),
        );
        let what = format!("{method} {path}");
        let reply = tokio::task::spawn_blocking(move || {
            let token = format!("token {TOKEN}");
            browser.request(
                &method,
                &path,
                body.as_deref(),
                &[("Authorization", &token)],
            )
        })
        .await?;
        if reply.status == 0 {
            bail!("{what}: {}", reply.body);
        }
        Ok((reply.status, reply.body))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
