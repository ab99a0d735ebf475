//! The benchmarks' quick setting as a smoke test: Quire, every peer and the bare broadcast
//! ceiling start, and each answers every scenario that applies to it (clients sync, edits reach
//! the other clients, documents load, connections open). It asserts no timing: the figures are
//! `tests/bench.sh`'s to report.

use std::path::PathBuf;

use quire_tests::bench::{self, peers::Kind, peers::Tools, scenarios, Setting, SCENARIOS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_answers_every_scenario() {
    let tools = Tools::from_env(
        quire_tests::quire_binary(),
        PathBuf::from(env!("CARGO_BIN_EXE_bare-broadcast")),
    );
    for program in [&tools.python, &tools.y_sweet] {
        assert!(
            program.exists(),
            "{} is missing: run tests/bench.sh --install (tests/run-all.sh does)",
            program.display()
        );
    }
    let outcome = bench::run(Setting::Quick, &tools, &Kind::ALL, &[]).await;
    assert!(
        outcome.failures.is_empty(),
        "servers failed scenarios: {:#?}",
        outcome.failures
    );
    for kind in Kind::ALL {
        for scenario in SCENARIOS {
            if scenarios::applies(scenario, kind) {
                assert!(
                    outcome
                        .metrics
                        .iter()
                        .any(|m| m.server == kind.name() && m.scenario == scenario),
                    "{} gave no figure for {scenario}",
                    kind.name()
                );
            }
        }
    }
}
