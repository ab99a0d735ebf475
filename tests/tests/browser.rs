//! The browser app in Debian's Chromium (driven by tests/js/browser_e2e.mjs through
//! playwright-core): an owner and live-share guests in separate browser contexts on one notebook.
//! Screenshots of each step land in target/e2e/ for a person to look at.

use std::path::{Path, PathBuf};
use std::process::Command;

use quire_tests::{repo_root, TestServer, TOKEN};
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";

fn notebook() -> Vec<u8> {
    let cell = |id: &str, kind: &str, source: &str| {
        let mut cell = json!({"cell_type": kind, "id": id, "metadata": {}, "source": source});
        if kind == "code" {
            cell["outputs"] = json!([]);
            cell["execution_count"] = Value::Null;
        }
        cell
    };
    let notebook = json!({
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [
            cell("cell-0", "code", "print(6 * 7)"),
            cell("cell-1", "markdown", "# Notes\n\n<img src=x onerror=\"window.__quireFlag=1\">"),
            cell("cell-2", "code", "from IPython.display import HTML, display\ndisplay(HTML('<b>bold</b><script>document.body.setAttribute(\"data-ran\", \"yes\"); try { parent.__quireFlag2 = 2 } catch (e) {} try { window.top.__quireFlag2 = 2 } catch (e) {}</script><img src=x onerror=\"parent.__quireFlag2=3\">'))"),
            cell("cell-3", "code", "name = input('name? ')\nprint('hello', name)"),
            cell("cell-4", "code", "import time\nfor i in range(40):\n    print('line', i, flush=True)\n    time.sleep(0.02)"),
        ],
    });
    // Enough cells below for the page to scroll.
    let mut notebook = notebook;
    for i in 5..45 {
        notebook["cells"].as_array_mut().unwrap().push(cell(
            &format!("cell-{i}"),
            "code",
            &format!("x{i} = {i}"),
        ));
    }
    serde_json::to_vec_pretty(&notebook).unwrap()
}

fn run_e2e(server: &TestServer, args: &[(&str, &str)], shots: &Path) -> Value {
    let dir = repo_root().join("tests/js");
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .exists(),
        "playwright-core is missing: run tests/run-all.sh (it runs `npm ci --prefix tests/js`)"
    );
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)"
    );
    let node = std::env::var_os("QUIRE_TEST_NODE").unwrap_or_else(|| "node".into());
    let mut command = Command::new(&node);
    command
        .current_dir(&dir)
        .arg(dir.join("browser_e2e.mjs"))
        .args([
            "--base",
            &server.base(),
            "--token",
            TOKEN,
            "--chromium",
            CHROMIUM,
        ])
        .arg("--shots")
        .arg(shots);
    for (name, value) in args {
        command.arg(format!("--{name}")).arg(value);
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {node:?}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "browser_e2e.mjs failed\nstderr: {}\nstdout: {stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("browser_e2e.mjs printed no JSON report ({e}): {stdout}"))
}

#[test]
fn owner_and_guests_share_a_notebook_in_the_browser() {
    let server = TestServer::start(&[("nb.ipynb", &notebook())]);
    let (file_id, _) = server.session("nb.ipynb");
    let shots: PathBuf = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join("e2e");
    // Only this run's screenshots.
    let _ = std::fs::remove_dir_all(&shots);
    let report = run_e2e(&server, &[("file-id", &file_id)], &shots);
    let failed: Vec<&Value> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["ok"] != true)
        .collect();
    eprintln!(
        "keystroke to remote render: {} (screenshots in {})",
        report["latency_ms"],
        shots.display()
    );
    assert!(
        failed.is_empty(),
        "steps that failed: {failed:#?}\nreport: {report}"
    );
    assert!(report["steps"].as_array().unwrap().len() >= 41, "{report}");
    // The links were made in the owner's share panel: the server has them.
    let (_, links) = server.http("GET", &format!("/api/sharing/{file_id}/links"), None);
    let links: Value = serde_json::from_str(&links).unwrap();
    assert_eq!(
        links[0]["capabilities"],
        json!(["view", "watch"]),
        "{links}"
    );
}
