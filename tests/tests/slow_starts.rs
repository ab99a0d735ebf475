//! One slow start holds up no one else: while a notebook's room is still loading, or its kernel
//! still starting, another notebook opens and runs. Each slow start is held by a gate the test
//! controls (a lease on the notebook file, a FIFO the kernel reads), so the order is certain and
//! no timing is measured: the other notebook finishes while the gate is still shut.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use quire_tests::{notebook_with, TestServer, YClient};
use serde_json::{json, Value};

const RUN: Duration = Duration::from_secs(60);

/// Holds a write lease on a file: whoever opens it (the server loading its room) waits in
/// `open` until the lease is let go, and the holder is told of the attempt.
struct Lease {
    holder: Child,
    commands: ChildStdin,
    events: BufReader<ChildStdout>,
}

const HOLD_LEASE: &str = r#"
import fcntl, os, signal, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
signal.signal(signal.SIGIO, lambda *_: print("opened", flush=True))
fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
print("leased", flush=True)
sys.stdin.readline()
fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
"#;

impl Lease {
    fn take(path: &std::path::Path) -> Lease {
        let mut holder = Command::new(quire_tests::python())
            .args(["-c", HOLD_LEASE])
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python starts");
        let commands = holder.stdin.take().unwrap();
        let events = BufReader::new(holder.stdout.take().unwrap());
        let mut lease = Lease {
            holder,
            commands,
            events,
        };
        lease.expect("leased");
        lease
    }

    fn expect(&mut self, event: &str) {
        let mut line = String::new();
        self.events
            .read_line(&mut line)
            .expect("the lease holder answers");
        assert_eq!(line.trim(), event);
    }

    fn release(mut self) {
        self.commands.write_all(b"release\n").unwrap();
        self.holder.wait().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notebook_opens_while_another_is_still_loading() {
    let server = TestServer::start(&[
        ("big.ipynb", &notebook_with(&["big = 1"])),
        ("small.ipynb", &notebook_with(&["small = 1"])),
    ]);
    let (big_id, session) = server.session("big.ipynb");
    let lease = {
        let path = server.path("big.ipynb");
        tokio::task::spawn_blocking(move || Lease::take(&path))
            .await
            .unwrap()
    };
    // The big notebook's room starts loading and waits, in `open`, for the lease.
    let mut big = YClient::connect(&server.room_url(&big_id, &session)).await;
    let lease = tokio::task::spawn_blocking(move || {
        let mut lease = lease;
        lease.expect("opened");
        lease
    })
    .await
    .unwrap();
    // Meanwhile another notebook opens, and syncs.
    let small = YClient::join(&server, "small.ipynb").await;
    assert_eq!(small.sources(), ["small = 1"]);
    // Only now does the big one finish loading.
    tokio::task::spawn_blocking(move || lease.release())
        .await
        .unwrap();
    big.sync().await;
    assert_eq!(big.sources(), ["big = 1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notebook_runs_while_another_kernel_is_still_starting() {
    let specs = tempfile::tempdir().unwrap();
    let gate = specs.path().join("gate");
    let started = specs.path().join("started");
    let made = Command::new("mkfifo").arg(&gate).status().unwrap();
    assert!(made.success());
    // A kernel that says it started, then waits for the gate to open before it becomes one.
    let script = format!(
        "echo started > '{}'; read line < '{}'; exec '{}' -m ipykernel_launcher -f \"$1\"",
        started.display(),
        gate.display(),
        quire_tests::python().display()
    );
    let dir = specs.path().join("kernels/gated");
    std::fs::create_dir_all(&dir).unwrap();
    let spec = json!({
        "argv": ["/bin/sh", "-c", script, "gated", "{connection_file}"],
        "display_name": "Gated Python", "language": "python",
    });
    std::fs::write(dir.join("kernel.json"), spec.to_string()).unwrap();
    let mut gated: Value = serde_json::from_slice(&notebook_with(&["'gated'"])).unwrap();
    gated["metadata"]["kernelspec"] = json!({"name": "gated", "display_name": "x"});
    let config = format!("kernel_dirs = [\"{}\"]\n", specs.path().display());
    let server = TestServer::start_with_config(
        &[
            ("gated.ipynb", &serde_json::to_vec(&gated).unwrap()),
            ("free.ipynb", &notebook_with(&["'free'"])),
        ],
        &config,
    );
    let mut ada = YClient::join(&server, "gated.ipynb").await;
    // The gated notebook's kernel starts, and stops at the gate (no answer comes before it
    // opens: the answer follows the start).
    ada.request(json!({"type": "execute", "cell_id": "cell-0", "request_id": 1}))
        .await;
    assert!(
        server.eventually(RUN, || started.exists()),
        "the gated kernel never started"
    );
    // Meanwhile another notebook starts its own kernel and runs a cell to the end.
    let mut bob = YClient::join(&server, "free.ipynb").await;
    assert_eq!(bob.execute("cell-0").await["status"], "queued");
    assert_eq!(bob.wait_run("cell-0", RUN).await, "ok");
    // Now the gate opens, and the first notebook runs too (within the kernel's connect timeout,
    // 30 s from its start: the other notebook's start and run take a few seconds).
    tokio::task::spawn_blocking(move || std::fs::write(gate, "open\n").unwrap())
        .await
        .unwrap();
    assert_eq!(ada.wait_run("cell-0", RUN).await, "ok");
    assert_eq!(ada.state()["kernel"]["name"], "gated");
}
