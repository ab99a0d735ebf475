//! Local accounts for the multi-user tests (as root, as CI runs): created with useradd and
//! chpasswd, a PAM service file of their own, and a kernelspec such accounts can run. Everything
//! is removed when dropped, pass or fail.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::{python, TestServer};

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
            let mut chpasswd = Command::new("chpasswd")
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
            writeln!(chpasswd.stdin.as_mut().unwrap(), "{name}:{password}").unwrap();
            assert!(chpasswd.wait().unwrap().success());
        }
        account
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

/// Logs in with an account's password as a browser would: (status, whole response, the
/// `quire-user=…` cookie if one was set).
pub fn login(server: &TestServer, user: &str, password: &str) -> (u16, String, Option<String>) {
    let body = serde_json::json!({"username": user, "password": password}).to_string();
    let response = server.browser_post("/api/login", &body);
    let status = response[9..12].parse().unwrap();
    let cookie = response
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: quire-user=")
        })
        .map(|l| {
            l["set-cookie: ".len()..]
                .split(';')
                .next()
                .unwrap()
                .to_string()
        });
    (status, response, cookie)
}

/// The `message` of a JSON error answer.
pub fn message(response: &str) -> String {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or(response);
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(String::from))
        .unwrap_or_default()
}
