//! Local accounts for the multi-user tests (as root, as CI runs): created with useradd and
//! chpasswd, a PAM service file of their own, and a kernelspec such accounts can run. Everything
//! is removed when dropped, pass or fail.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::{python, Browser, Reply, TestServer, YClient};

/// Whether the tests run as root (they then create accounts; otherwise they say they skip).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(status.success(), "{cmd} {args:?} failed");
}

/// A local account, removed (with its home and processes) when dropped.
pub struct TestAccount {
    pub name: String,
}

impl TestAccount {
    /// A person's account (uid ≥ 1000) with a home directory, and a password if given.
    pub fn create(name: &str, password: Option<&str>) -> TestAccount {
        TestAccount::create_with(name, password, false)
    }

    /// A system account (uid < 1000), which must never log in.
    pub fn create_system(name: &str, password: &str) -> TestAccount {
        TestAccount::create_with(name, Some(password), true)
    }

    fn create_with(name: &str, password: Option<&str>, system: bool) -> TestAccount {
        let _ = Command::new("userdel").args(["-r", name]).output();
        let mut args = vec!["-m", "-s", "/bin/sh", "-c", "Test Person,,,"];
        if system {
            args.push("-r");
        }
        args.push(name);
        run("useradd", &args);
        let account = TestAccount {
            name: name.to_string(),
        };
        if let Some(password) = password {
            account.set_password(password);
        }
        account
    }

    /// Sets the password (`chpasswd`).
    pub fn set_password(&self, password: &str) {
        let mut chpasswd = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(chpasswd.stdin.as_mut().unwrap(), "{}:{password}", self.name).unwrap();
        assert!(chpasswd.wait().unwrap().success());
    }

    /// `id -u`, `id -g`, … of the account.
    pub fn id(&self, flag: &str) -> String {
        let out = Command::new("id")
            .args([flag, &self.name])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub fn home(&self) -> PathBuf {
        PathBuf::from("/home").join(&self.name)
    }

    /// Locks the password (`usermod -L`).
    pub fn lock(&self) {
        run("usermod", &["-L", &self.name]);
    }

    /// Makes the account expired (`chage -E 0`).
    pub fn expire(&self) {
        run("chage", &["-E", "0", &self.name]);
    }
}

impl Drop for TestAccount {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", &self.name])
            .output();
        let _ = Command::new("userdel").args(["-r", &self.name]).output();
    }
}

/// A PAM service checking passwords and accounts with pam_unix, removed when dropped.
pub struct PamService {
    pub name: String,
    path: PathBuf,
}

impl PamService {
    pub fn create(name: &str) -> PamService {
        let path = Path::new("/etc/pam.d").join(name);
        std::fs::write(
            &path,
            "auth required pam_unix.so\naccount required pam_unix.so\n",
        )
        .unwrap();
        PamService {
            name: name.to_string(),
            path,
        }
    }
}

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether every directory above `path` lets other accounts through.
fn reachable_by_others(path: &Path) -> bool {
    path.ancestors()
        .skip(1)
        .all(|dir| std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// A kernelspec named `as-account` that any local account can run: a Python of the test venv's
/// version with the venv's ipykernel on its path (the venv's own interpreter may live under
/// root's home, out of other accounts' reach). Returns the directory to list in `kernel_dirs`.
pub fn shared_kernelspec() -> tempfile::TempDir {
    let venv = python().parent().unwrap().parent().unwrap().to_path_buf();
    let lib = std::fs::read_dir(venv.join("lib"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .expect("the venv's lib/python3.X");
    let version = lib.file_name().to_string_lossy().into_owned();
    let site = lib.path().join("site-packages");
    let real = std::fs::canonicalize(python()).unwrap();
    let interpreter = if reachable_by_others(&real) {
        real
    } else {
        let system = PathBuf::from("/usr/bin").join(&version);
        assert!(
            system.exists(),
            "{} is not reachable by other accounts and {} is missing",
            real.display(),
            system.display()
        );
        system
    };
    assert!(
        reachable_by_others(&site.join("x")),
        "{} must be readable by the test account",
        site.display()
    );
    let specs = tempfile::tempdir().unwrap();
    std::fs::set_permissions(specs.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let spec_dir = specs.path().join("kernels/as-account");
    std::fs::create_dir_all(&spec_dir).unwrap();
    let spec = serde_json::json!({
        "argv": [interpreter, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python (test account)",
        "language": "python",
        "env": {"PYTHONPATH": site},
    });
    std::fs::write(spec_dir.join("kernel.json"), spec.to_string()).unwrap();
    specs
}

/// A server in multi-user mode, with a PAM service of its own and kernels from
/// [`shared_kernelspec`]; dropped before what it needs.
pub struct MultiUserServer {
    pub server: TestServer,
    _service: PamService,
    _specs: tempfile::TempDir,
}

impl MultiUserServer {
    /// `service`: the PAM service's name (unique to the test).
    pub fn start(service: &str) -> MultiUserServer {
        let service = PamService::create(service);
        let specs = shared_kernelspec();
        let config = format!(
            "multi_user = true\npam_service = \"{}\"\ndefault_kernel = \"as-account\"\nkernel_dirs = [\"{}\"]\n",
            service.name,
            specs.path().display()
        );
        MultiUserServer {
            server: TestServer::start_with_config(&[], &config),
            _service: service,
            _specs: specs,
        }
    }
}

/// Logs in with an account's password as a browser would: (the answer, the browser, which
/// holds the `quire-user` cookie if one was set).
pub fn login(server: &TestServer, user: &str, password: &str) -> (Reply, Browser) {
    let browser = server.browser();
    let body = serde_json::json!({"username": user, "password": password}).to_string();
    let reply = browser.from_page("POST", "/api/login", Some(&body));
    (reply, browser)
}

/// The `message` of a JSON error answer's body.
pub fn message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(String::from))
        .unwrap_or_default()
}

/// Someone logged in: their browser, and requests made with it.
pub struct Person<'a> {
    pub server: &'a TestServer,
    pub browser: Browser,
}

impl<'a> Person<'a> {
    pub fn log_in(server: &'a TestServer, account: &TestAccount, password: &str) -> Person<'a> {
        let (reply, browser) = login(server, &account.name, password);
        assert_eq!(reply.status, 200, "{} logs in: {reply:?}", account.name);
        assert!(browser.cookie("quire-user").is_some(), "a login cookie");
        Person { server, browser }
    }

    /// This person's cookies, as a websocket sends them.
    pub fn cookie(&self) -> String {
        self.browser.cookies()
    }

    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let reply = self.browser.from_page(method, path, body);
        (reply.status, reply.body)
    }

    /// Writes a notebook with these code cells (`cell-0`, `cell-1`, …) through the contents API
    /// (`prefix`: "" for their home, "/projects/{name}" for a project's).
    pub fn write_notebook(&self, prefix: &str, name: &str, sources: &[&str]) {
        let cells: Vec<Value> = sources
            .iter()
            .enumerate()
            .map(|(i, source)| {
                json!({"cell_type": "code", "id": format!("cell-{i}"), "metadata": {},
                       "source": source, "outputs": [], "execution_count": null})
            })
            .collect();
        let content = json!({"type": "notebook", "format": "json", "content": {
            "nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells}});
        let (status, body) = self.http(
            "PUT",
            &format!("{prefix}/api/contents/{name}"),
            Some(&content.to_string()),
        );
        assert!(status == 200 || status == 201, "save gave {status}: {body}");
    }

    /// The session handshake for a notebook: its file id.
    pub fn file_id(&self, prefix: &str, name: &str) -> String {
        self.document_id(prefix, name, "json:notebook")
    }

    /// The session handshake for any document (`kind` is `format:type`, e.g. `text:file`): its
    /// file id.
    pub fn document_id(&self, prefix: &str, name: &str, kind: &str) -> String {
        let (format, kind) = kind.split_once(':').expect("format:type");
        let (status, body) = self.http(
            "PUT",
            &format!("{prefix}/api/collaboration/session/{name}"),
            Some(&json!({"format": format, "type": kind}).to_string()),
        );
        assert!(
            status == 200 || status == 201,
            "session gave {status}: {body}"
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        v["fileId"].as_str().unwrap().to_string()
    }

    /// Opens a notebook's room with this person's cookie (without waiting to be let in).
    pub async fn connect(&self, prefix: &str, file_id: &str) -> YClient {
        self.connect_to(prefix, "json:notebook", file_id).await
    }

    /// Opens a document's room (`kind` as in [`document_id`](Self::document_id)).
    pub async fn connect_to(&self, prefix: &str, kind: &str, file_id: &str) -> YClient {
        let url = format!(
            "ws://127.0.0.1:{}{prefix}/api/collaboration/room/{kind}:{file_id}",
            self.server.port
        );
        YClient::connect_with_cookie(&url, &self.cookie()).await
    }

    /// Opens a notebook's room and waits until synced.
    pub async fn join(&self, prefix: &str, file_id: &str) -> YClient {
        let mut client = self.connect(prefix, file_id).await;
        client.sync().await;
        client
    }

    pub fn grant(&self, file_id: &str, user: &str, caps: Value) -> (u16, String) {
        self.http(
            "PUT",
            &format!("/api/sharing/{file_id}/people/user/{user}"),
            Some(&caps.to_string()),
        )
    }
}
