//! When Quire runs as root, kernels run as the configured local account: its uid, gid and
//! groups, its home, never root. The test creates (and removes) its own account.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use quire_tests::{notebook_with, python, TestServer, YClient};

/// Removes the account (and its home) when the test ends, pass or fail.
struct TestAccount(String);

impl TestAccount {
    fn create(name: &str) -> TestAccount {
        let _ = Command::new("userdel").args(["-r", name]).output();
        let status = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", name])
            .status()
            .expect("useradd runs");
        assert!(status.success(), "useradd {name} failed");
        TestAccount(name.to_string())
    }

    fn id(&self, flag: &str) -> String {
        let out = Command::new("id").args([flag, &self.0]).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for TestAccount {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", &self.0])
            .output();
        let _ = Command::new("userdel").args(["-r", &self.0]).output();
    }
}

/// Whether every directory above `path` lets other accounts through.
fn reachable_by_others(path: &Path) -> bool {
    path.ancestors()
        .skip(1)
        .all(|dir| std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// A Python the test account can run, with the test venv's ipykernel on its path: the venv's
/// own interpreter may live under root's home, so use the system Python of the same version.
fn kernel_command() -> (PathBuf, String) {
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
    (interpreter, site.to_string_lossy().into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_started_for_an_account_runs_as_that_account() {
    if !nix_is_root() {
        eprintln!("SKIPPED: running kernels as another account needs root (CI runs as root)");
        return;
    }
    let account = TestAccount::create(&format!("quirek{}", std::process::id() % 100000));
    let (interpreter, site) = kernel_command();
    let specs = tempfile::tempdir().unwrap();
    let spec_dir = specs.path().join("kernels/as-account");
    std::fs::create_dir_all(&spec_dir).unwrap();
    let spec = serde_json::json!({
        "argv": [interpreter, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python (test account)",
        "language": "python",
        "env": {"PYTHONPATH": site},
    });
    std::fs::write(spec_dir.join("kernel.json"), spec.to_string()).unwrap();
    let config = format!(
        "kernel_user = \"{}\"\ndefault_kernel = \"as-account\"\nkernel_dirs = [\"{}\"]\n",
        account.0,
        specs.path().display()
    );
    let code = "import os\nprint(os.getuid(), os.getgid(), os.path.expanduser('~'))";
    let server = TestServer::start_with_config(&[("nb.ipynb", &notebook_with(&[code]))], &config);
    // The account must be able to reach the notebook's folder (its kernel's working directory);
    // the server's own state directory stays private.
    std::fs::set_permissions(&server.root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    let answer = ada.execute("cell-0").await;
    assert_eq!(answer["status"], "queued", "{answer}");
    assert_eq!(ada.wait_run("cell-0", Duration::from_secs(60)).await, "ok");
    let printed = ada.cell("cell-0").outputs[0]["text"]
        .as_str()
        .unwrap()
        .trim()
        .to_string();
    let home = format!("/home/{}", account.0);
    assert_eq!(
        printed,
        format!("{} {} {home}", account.id("-u"), account.id("-g")),
        "the kernel runs as the account, with its home"
    );
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
