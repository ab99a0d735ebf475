//! Cells run on a real ipykernel, on the server: every participant sees the same outputs, in the
//! document and in the saved file, whoever asked and whether or not they stayed.

use std::time::{Duration, Instant};

use quire_tests::{notebook_with, read_notebook, TestServer, YClient};
use serde_json::{json, Value};

const RUN: Duration = Duration::from_secs(60);

fn texts(cell: &collab::Cell) -> Vec<(String, String)> {
    cell.outputs
        .iter()
        .map(|o| {
            let kind = o["output_type"].as_str().unwrap_or_default().to_string();
            let text = match kind.as_str() {
                "stream" => o["text"].as_str().unwrap_or_default().to_string(),
                "error" => o["ename"].as_str().unwrap_or_default().to_string(),
                _ => o["data"]["text/plain"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            };
            (kind, text)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_reaches_a_watcher_who_never_asked_and_the_file() {
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&["1+1", "x = 5"]))]);
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    let mut bob = YClient::join(&server, "nb.ipynb").await;
    let answer = ada.execute("cell-0").await;
    assert_eq!(answer["status"], "queued", "{answer}");
    assert_eq!(bob.wait_run("cell-0", RUN).await, "ok");
    let cell = bob.cell("cell-0");
    assert_eq!(texts(&cell), vec![("execute_result".into(), "2".into())]);
    assert_eq!(cell.execution_count, json!(1));
    let entry = &bob.state()["executions"]["cell-0"];
    assert!(
        entry["by"]["username"].is_string() && entry["finished_at"].is_number(),
        "{entry}"
    );
    assert_eq!(bob.state()["kernel"]["status"], "idle");
    assert!(server.eventually(Duration::from_secs(10), || {
        let saved = read_notebook(&server.path("nb.ipynb"));
        saved.cells[0].outputs.len() == 1 && saved.cells[0].execution_count == json!(1)
    }));
    let saved = read_notebook(&server.path("nb.ipynb"));
    assert_eq!(saved.cells[0].outputs[0]["data"]["text/plain"], "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_queue_cells_and_they_run_in_order() {
    let first = "import time\ntime.sleep(0.5)\norder = ['ada']";
    let second = "order.append('bob')\nprint(order)";
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&[first, second]))]);
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    let mut bob = YClient::join(&server, "nb.ipynb").await;
    assert_eq!(ada.execute("cell-0").await["status"], "queued");
    assert_eq!(bob.execute("cell-1").await["status"], "queued");
    // While the first runs, the second is visibly queued.
    assert_eq!(bob.wait_run("cell-1", RUN).await, "ok");
    assert_eq!(
        texts(&bob.cell("cell-1")),
        vec![("stream".into(), "['ada', 'bob']\n".into())]
    );
    let executions = &bob.state()["executions"];
    assert!(
        executions["cell-0"]["finished_at"].as_f64() <= executions["cell-1"]["started_at"].as_f64()
    );
    // A cell cannot be queued twice at once.
    let again = ada.execute("cell-0").await;
    let twice = ada.execute("cell-0").await;
    assert_eq!(again["status"], "queued");
    assert_eq!(twice["status"], "refused", "{twice}");
    ada.wait_run("cell-0", RUN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_progress_bars_display_updates_and_errors() {
    let cells = [
        "for i in range(10000):\n    print(i)",
        "import sys, time\nfor i in range(101):\n    print(f'\\r{i}%', end='', flush=True)\n    time.sleep(0.001)\nprint()",
        "h = display('first', display_id=True)",
        "h.update('second')",
        "from IPython.display import clear_output\nfor i in range(3):\n    clear_output(wait=True)\n    print('frame', i)",
        "def f():\n    1/0\nf()",
    ];
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&cells))]);
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    let mut bob = YClient::join(&server, "nb.ipynb").await;
    for i in 0..cells.len() {
        assert_eq!(ada.execute(&format!("cell-{i}")).await["status"], "queued");
    }
    assert_eq!(bob.wait_run("cell-5", RUN).await, "error");
    for i in 0..5 {
        assert_eq!(bob.run_status(&format!("cell-{i}")), "ok", "cell-{i}");
    }
    let expected: String = (0..10000).map(|i| format!("{i}\n")).collect();
    assert_eq!(
        texts(&bob.cell("cell-0")),
        vec![("stream".into(), expected)],
        "10,000 lines, one output, complete and in order"
    );
    assert_eq!(
        texts(&bob.cell("cell-1")),
        vec![("stream".into(), "100%\n".into())]
    );
    assert_eq!(
        texts(&bob.cell("cell-2")),
        vec![("display_data".into(), "'second'".into())]
    );
    assert!(bob.cell("cell-3").outputs.is_empty());
    assert_eq!(
        texts(&bob.cell("cell-4")),
        vec![("stream".into(), "frame 2\n".into())]
    );
    let error = &bob.cell("cell-5").outputs[0];
    assert_eq!(error["output_type"], "error");
    assert_eq!(error["ename"], "ZeroDivisionError");
    let traceback = error["traceback"].as_array().unwrap();
    // The traceback names the frames the error passed through (ANSI colours and all).
    assert!(traceback.len() >= 2, "{traceback:?}");
    assert!(traceback
        .iter()
        .any(|l| l.as_str().unwrap().contains("f()")));
    // What the file holds is what everyone saw.
    assert!(server.eventually(Duration::from_secs(10), || {
        read_notebook(&server.path("nb.ipynb")).cells == bob.notebook().cells
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_requester_answers_input() {
    let code = "name = input('name? ')\nprint('hello', name)";
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&[code]))]);
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    let mut bob = YClient::join(&server, "nb.ipynb").await;
    assert_eq!(ada.execute("cell-0").await["status"], "queued");
    let prompt = ada
        .wait_raw(RUN, |m| m["type"] == "input_request")
        .await
        .expect("the requester is asked");
    assert_eq!(prompt["prompt"], "name? ");
    assert_eq!(prompt["cell_id"], "cell-0");
    // Had the room sent Bob the prompt too, it would have before it handled Bob's sentinel.
    bob.sentinel().await;
    assert!(
        !bob.raw.iter().any(|r| r.contains("input_request")),
        "the prompt reached someone who did not run the cell"
    );
    bob.request(
        json!({"type": "input_reply", "cell_id": "cell-0", "value": "Mallory", "request_id": 7}),
    )
    .await;
    let refused = bob
        .wait_raw(Duration::from_secs(10), |m| m["type"] == "input_reply")
        .await
        .unwrap();
    assert_eq!(refused["status"], "refused");
    ada.request(
        json!({"type": "input_reply", "cell_id": "cell-0", "value": "Ada", "request_id": 8}),
    )
    .await;
    assert_eq!(bob.wait_run("cell-0", RUN).await, "ok");
    let printed: String = texts(&bob.cell("cell-0"))
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert!(printed.contains("hello Ada"), "{printed:?}");
    assert!(!printed.contains("Mallory"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_stops_a_sleep_quickly() {
    let server = TestServer::start(&[(
        "nb.ipynb",
        &notebook_with(&["import time\ntime.sleep(60)", "print('never')"]),
    )]);
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    assert_eq!(ada.execute("cell-0").await["status"], "queued");
    assert_eq!(ada.execute("cell-1").await["status"], "queued");
    ada.pump_until(RUN, |c| c.run_status("cell-0") == "running")
        .await;
    // (Give the kernel a moment to be inside `time.sleep`.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    ada.request(json!({"type": "interrupt"})).await;
    assert_eq!(
        ada.wait_run("cell-0", Duration::from_secs(10)).await,
        "error"
    );
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(2), "interrupt took {took:?}");
    assert_eq!(ada.cell("cell-0").outputs[0]["ename"], "KeyboardInterrupt");
    assert_eq!(ada.wait_run("cell-1", RUN).await, "aborted");
    assert!(ada.cell("cell-1").outputs.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_kernel_releases_its_cells_and_restarts() {
    let server = TestServer::start(&[(
        "nb.ipynb",
        &notebook_with(&["import os\nos._exit(1)", "print('queued')", "1+1"]),
    )]);
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    assert_eq!(ada.execute("cell-0").await["status"], "queued");
    assert_eq!(ada.execute("cell-1").await["status"], "queued");
    assert_eq!(ada.wait_run("cell-0", RUN).await, "aborted");
    assert_eq!(ada.wait_run("cell-1", RUN).await, "aborted");
    assert!(
        ada.pump_until(RUN, |c| c.state()["kernel"]["status"] == "dead")
            .await
    );
    assert_eq!(ada.cell("cell-0").outputs.len(), 0);
    // Running on a dead kernel is refused clearly, then a restart brings it back.
    ada.execute("cell-2").await;
    assert_eq!(ada.wait_run("cell-2", RUN).await, "aborted");
    ada.request(json!({"type": "restart", "request_id": 1}))
        .await;
    assert!(
        ada.pump_until(RUN, |c| c.state()["kernel"]["status"] == "idle")
            .await
    );
    assert_eq!(ada.execute("cell-2").await["status"], "queued");
    assert!(
        ada.pump_until(RUN, |c| c.run_status("cell-2") == "ok")
            .await
    );
    assert_eq!(
        texts(&ada.cell("cell-2")),
        vec![("execute_result".into(), "2".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_land_and_are_saved_after_the_requester_left() {
    let code = "import time\ntime.sleep(1)\nprint('done')";
    let server = TestServer::start_with_config(
        &[("nb.ipynb", &notebook_with(&[code]))],
        "room_linger_secs = 0\n",
    );
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    assert_eq!(ada.execute("cell-0").await["status"], "queued");
    drop(ada);
    assert!(server.eventually(Duration::from_secs(30), || {
        let saved = read_notebook(&server.path("nb.ipynb"));
        saved.cells[0].outputs.first().map(|o| o["text"].clone()) == Some(json!("done\n"))
    }));
    // Whoever comes back sees the finished run.
    let mut bob = YClient::join(&server, "nb.ipynb").await;
    assert_eq!(bob.wait_run("cell-0", RUN).await, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_cell_is_cut_with_a_note() {
    let server = TestServer::start_with_config(
        &[(
            "nb.ipynb",
            &notebook_with(&["for i in range(5000):\n    print('x' * 99)"]),
        )],
        "max_output_bytes = 20000\n",
    );
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    ada.execute("cell-0").await;
    assert_eq!(ada.wait_run("cell-0", RUN).await, "ok");
    let outputs = texts(&ada.cell("cell-0"));
    let total: usize = outputs.iter().map(|(_, t)| t.len()).sum();
    assert!(total < 21000, "{total} bytes kept");
    assert!(
        outputs.last().unwrap().1.contains("output truncated"),
        "{outputs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyter_rest_api_sessions_kernels_and_server_side_execute() {
    let server =
        TestServer::start(&[("dir/nb.ipynb", &notebook_with(&["import os\nos.getcwd()"]))]);
    let (status, body) = server.http("GET", "/api/kernelspecs", None);
    assert_eq!(status, 200, "{body}");
    let specs: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(specs["default"], "python3");
    assert_eq!(
        specs["kernelspecs"]["python3"]["spec"]["language"],
        "python"
    );

    let request = json!({"path": "dir/nb.ipynb", "type": "notebook", "name": "nb.ipynb",
                         "kernel": {"name": "python3"}});
    let (status, body) = server.http("POST", "/api/sessions", Some(&request.to_string()));
    assert_eq!(status, 201, "{body}");
    let session: Value = serde_json::from_str(&body).unwrap();
    let kernel_id = session["kernel"]["id"].as_str().unwrap().to_string();
    assert_eq!(session["path"], "dir/nb.ipynb");
    let (_, body) = server.http("GET", "/api/kernels", None);
    assert!(body.contains(&kernel_id));

    let (file_id, _) = server.session("dir/nb.ipynb");
    let mut watcher = YClient::join(&server, "dir/nb.ipynb").await;
    assert!(
        watcher
            .pump_until(RUN, |c| c.state()["kernel"]["id"] == json!(kernel_id))
            .await
    );
    let body = json!({"cell_id": "cell-0", "document_id": format!("json:notebook:{file_id}")});
    let (status, reply) = server.http(
        "POST",
        &format!("/api/kernels/{kernel_id}/execute"),
        Some(&body.to_string()),
    );
    assert_eq!(status, 200, "{reply}");
    let reply: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["status"], "ok");
    assert_eq!(watcher.wait_run("cell-0", RUN).await, "ok");
    let cwd = texts(&watcher.cell("cell-0"))[0].1.clone();
    let dir = std::fs::canonicalize(server.path("dir")).unwrap();
    assert_eq!(
        cwd,
        format!("'{}'", dir.display()),
        "the kernel runs in the notebook's folder"
    );

    let bad = json!({"cell_id": "nope", "document_id": format!("json:notebook:{file_id}")});
    let (status, _) = server.http(
        "POST",
        &format!("/api/kernels/{kernel_id}/execute"),
        Some(&bad.to_string()),
    );
    assert_eq!(status, 400);
    let (status, _) = server.http("POST", "/api/kernels/nope/execute", Some(&body.to_string()));
    assert_eq!(status, 404);

    let session_id = session["id"].as_str().unwrap();
    let (status, _) = server.http("DELETE", &format!("/api/sessions/{session_id}"), None);
    assert_eq!(status, 204);
    let (_, body) = server.http("GET", "/api/kernels", None);
    assert_eq!(body, "[]");
    assert!(
        watcher
            .pump_until(RUN, |c| c.state()["kernel"].is_null())
            .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernels_do_not_outlive_a_crashed_server() {
    let mut server =
        TestServer::start(&[("nb.ipynb", &notebook_with(&["import os\nos.getpid()"]))]);
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    ada.execute("cell-0").await;
    assert_eq!(ada.wait_run("cell-0", RUN).await, "ok");
    let pid: i32 = texts(&ada.cell("cell-0"))[0].1.parse().unwrap();
    let alive = |pid: i32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(alive(pid));
    server.kill9();
    assert!(
        server.eventually(Duration::from_secs(15), || !alive(pid)),
        "kernel {pid} kept running after the server was killed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notebook_runs_on_the_kernel_its_metadata_names() {
    let specs = tempfile::tempdir().unwrap();
    let dir = specs.path().join("kernels/other-python");
    std::fs::create_dir_all(&dir).unwrap();
    let spec = json!({
        "argv": [quire_tests::python(), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Another Python", "language": "python",
        "env": {"WHICH_KERNEL": "the other one"},
    });
    std::fs::write(dir.join("kernel.json"), spec.to_string()).unwrap();
    let mut notebook: Value =
        serde_json::from_slice(&notebook_with(&["import os\nos.environ['WHICH_KERNEL']"])).unwrap();
    notebook["metadata"]["kernelspec"] = json!({"name": "other-python", "display_name": "x"});
    let config = format!("kernel_dirs = [\"{}\"]\n", specs.path().display());
    let server = TestServer::start_with_config(
        &[("nb.ipynb", &serde_json::to_vec(&notebook).unwrap())],
        &config,
    );
    let mut ada = YClient::join(&server, "nb.ipynb").await;
    ada.execute("cell-0").await;
    assert_eq!(ada.wait_run("cell-0", RUN).await, "ok");
    assert_eq!(ada.state()["kernel"]["name"], "other-python");
    assert_eq!(texts(&ada.cell("cell-0"))[0].1, "'the other one'");
    let (_, body) = server.http("GET", "/api/kernelspecs", None);
    let specs: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        specs["kernelspecs"]["other-python"]["spec"]["display_name"],
        "Another Python"
    );
}
