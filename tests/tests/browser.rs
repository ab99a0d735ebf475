//! The browser app in Debian's Chromium (driven by tests/js/browser_e2e.mjs through
//! playwright-core): an owner and live-share guests in separate browser contexts on one notebook.
//! Screenshots of each step land in target/e2e/ for a person to look at.

use std::path::{Path, PathBuf};
use std::process::Command;

use quire_tests::{repo_root, TestServer, TOKEN};
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";

/// One browser at a time: the timings the scenario checks (1 s, 2 s) are for people, not for two
/// Chromiums sharing two cores.
static ONE_BROWSER: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
            cell("cell-2", "code", "from IPython.display import HTML, display\ndisplay(HTML('<b>bold</b><script>document.body.setAttribute(\"data-ran\", \"yes\"); document.body.setAttribute(\"data-token\", String(Math.random())); try { parent.__quireFlag2 = 2 } catch (e) {} try { window.top.__quireFlag2 = 2 } catch (e) {}</script><img src=x onerror=\"parent.__quireFlag2=3\">'))"),
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

/// Runs a script of tests/js with the server's address and token; its JSON report.
fn run_script(server: &TestServer, script: &str, args: &[String]) -> Value {
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
        .arg(dir.join(script))
        .args([
            "--base",
            &server.base(),
            "--token",
            TOKEN,
            "--chromium",
            CHROMIUM,
        ])
        .args(args);
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {node:?}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script} failed\nstderr: {}\nstdout: {stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{script} printed no JSON report ({e}): {stdout}"))
}

#[test]
fn owner_and_guests_share_a_notebook_in_the_browser() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let server = TestServer::start(&[("nb.ipynb", &notebook())]);
    let (file_id, _) = server.session("nb.ipynb");
    let shots: PathBuf = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join("e2e");
    // Only this run's screenshots.
    let _ = std::fs::remove_dir_all(&shots);
    let args = [
        "--file-id".to_string(),
        file_id.clone(),
        "--shots".to_string(),
        shots.display().to_string(),
    ];
    let report = run_script(&server, "browser_e2e.mjs", &args);
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
    assert!(report["steps"].as_array().unwrap().len() >= 44, "{report}");
    // The links were made in the owner's share panel: the server has them.
    let (_, links) = server.http("GET", &format!("/api/sharing/{file_id}/links"), None);
    let links: Value = serde_json::from_str(&links).unwrap();
    assert_eq!(
        links[0]["capabilities"],
        json!(["view", "watch"]),
        "{links}"
    );
}

#[test]
fn every_corpus_notebook_opens_in_the_page() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let corpus = repo_root().join("tests/corpus");
    let mut names: Vec<String> = std::fs::read_dir(&corpus)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".ipynb"))
        .collect();
    names.sort();
    let files: Vec<(String, Vec<u8>)> = names
        .iter()
        .map(|n| (n.clone(), std::fs::read(corpus.join(n)).unwrap()))
        .collect();
    let borrowed: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let server = TestServer::start(&borrowed);
    let report = run_script(&server, "browser_corpus.mjs", &names);
    for (entry, (name, bytes)) in report.as_array().unwrap().iter().zip(&files) {
        let notebook: Value = serde_json::from_slice(bytes).unwrap();
        let cells = notebook["cells"].as_array().unwrap();
        let outputs: usize = cells
            .iter()
            .map(|c| c["outputs"].as_array().map_or(0, Vec::len))
            .sum();
        assert_eq!(entry["errors"], json!([]), "{name}: {entry}");
        // An empty notebook opens with one cell to type in.
        assert_eq!(
            entry["cells"].as_u64().unwrap() as usize,
            cells.len().max(1),
            "{name}: {entry}"
        );
        assert_eq!(
            entry["outputs"].as_u64().unwrap() as usize,
            outputs,
            "{name}: every output shows: {entry}"
        );
    }
}
