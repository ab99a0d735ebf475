//! A real ipykernel, started and driven through the bridge. The kernelspec comes from the test
//! virtualenv (`QUIRE_TEST_PYTHON`, prepared by tests/run-all.sh).

use std::path::PathBuf;
use std::time::Duration;

use collab::execution::{EventSink, ExecuteJob, Kernel, KernelEvent, RunEvent, RunOutcome};
use collab::RoomInput;
use kernel_bridge::{kernelspec, KernelHandle, KernelOptions, TransportKind};
use tokio::sync::mpsc;

fn venv_kernels() -> PathBuf {
    let python = std::env::var("QUIRE_TEST_PYTHON")
        .expect("QUIRE_TEST_PYTHON names the test virtualenv's python (run tests/run-all.sh)");
    PathBuf::from(python)
        .parent()
        .and_then(|bin| bin.parent())
        .expect("a venv python")
        .join("share/jupyter")
}

async fn start(transport: TransportKind, cwd: &std::path::Path) -> std::sync::Arc<KernelHandle> {
    let specs = kernelspec::find_all(&[venv_kernels()]);
    let spec = specs
        .into_iter()
        .find(|s| s.name == "python3")
        .expect("ipykernel's kernelspec in the test venv");
    let runtime = tempfile::tempdir().unwrap().keep();
    KernelHandle::start(KernelOptions {
        spec,
        cwd: cwd.to_path_buf(),
        account: None,
        runtime_dir: runtime,
        transport,
        env: vec![],
        startup_timeout: Duration::from_secs(60),
    })
    .await
    .expect("the kernel starts")
}

/// Runs `code` and collects the run's events until it finishes.
async fn run(kernel: &KernelHandle, code: &str) -> Vec<RunEvent> {
    let (tx, mut rx) = mpsc::channel(1024);
    let run = collab::RunId::new_random();
    kernel.execute(ExecuteJob {
        run: run.clone(),
        cell_id: "c".into(),
        code: code.into(),
        allow_stdin: false,
        events: EventSink::new(tx),
    });
    let mut events = Vec::new();
    loop {
        let input = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("the run ends")
            .expect("the sink stays open");
        if let RoomInput::Kernel(KernelEvent::Run { run: r, event }) = input {
            assert_eq!(r, run);
            let done = matches!(event, RunEvent::Finished { .. });
            events.push(event);
            if done {
                return events;
            }
        }
    }
}

#[tokio::test]
async fn runs_code_over_ipc_in_the_notebook_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let kernel = start(TransportKind::Ipc, cwd.path()).await;
    let events = run(&kernel, "import os\nprint(os.getcwd())\n1+1").await;
    assert_eq!(events[0], RunEvent::Started);
    assert!(events.contains(&RunEvent::ExecutionCount(1)));
    let printed: String = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Stream { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let cwd_real = std::fs::canonicalize(cwd.path()).unwrap();
    assert_eq!(printed.trim(), cwd_real.to_string_lossy());
    let result = events.iter().find_map(|e| match e {
        RunEvent::Output { output, .. } => Some(output.clone()),
        _ => None,
    });
    assert_eq!(result.unwrap()["data"]["text/plain"], "2");
    assert_eq!(
        events.last(),
        Some(&RunEvent::Finished {
            outcome: RunOutcome::Ok,
            execution_count: Some(1)
        })
    );
    // The environment is clean: nothing of ours leaks into the kernel.
    std::env::set_var("QUIRE_SECRET_FOR_TEST", "x");
    let events = run(
        &kernel,
        "import os\nprint('QUIRE_TEST_PYTHON' in os.environ)",
    )
    .await;
    assert!(events
        .iter()
        .any(|e| matches!(e, RunEvent::Stream { text, .. } if text.trim() == "False")));
    kernel.shutdown().await;
}

#[tokio::test]
async fn tcp_transport_works_too_and_errors_stop_the_queue() {
    let cwd = tempfile::tempdir().unwrap();
    let kernel = start(TransportKind::Tcp, cwd.path()).await;
    let events = run(&kernel, "1/0").await;
    assert!(events
        .iter()
        .any(|e| matches!(e, RunEvent::Output { output, .. }
        if output["output_type"] == "error" && output["ename"] == "ZeroDivisionError")));
    assert!(matches!(
        events.last(),
        Some(RunEvent::Finished {
            outcome: RunOutcome::Error,
            ..
        })
    ));
    kernel.shutdown().await;
}
