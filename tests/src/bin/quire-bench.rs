//! `quire-bench [--quick] [--only S1,S5] [--servers quire,hocuspocus]`: runs the scenarios of
//! `quire_tests::bench` against Quire and each peer in turn, prints every figure, and writes
//! `target/bench/results.json` and the Markdown report (`--report FILE`, by default
//! `BENCHMARKS.md` at the repository's root for the full setting and
//! `target/bench/BENCHMARKS.md` for the quick one). `tests/bench.sh` installs the peers and
//! runs it; it measures and asserts nothing, but exits non-zero when a server failed a scenario.

use std::path::PathBuf;

use quire_tests::bench::{self, peers::Kind, peers::Tools, report, Setting};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let setting = if flag("--quick") {
        Setting::Quick
    } else {
        Setting::Full
    };
    let list = |name: &str| -> Vec<String> {
        value(name)
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default()
    };
    let only = list("--only");
    let servers: Vec<Kind> = match list("--servers") {
        names if names.is_empty() => Kind::ALL.to_vec(),
        names => names
            .iter()
            .map(|n| Kind::parse(n).unwrap_or_else(|| panic!("no server named {n}")))
            .collect(),
    };
    let root = quire_tests::repo_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let quire = std::env::var_os("QUIRE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target.join("release/quire"));
    // S7 starts Quire through the test harness, which reads QUIRE_BIN.
    std::env::set_var("QUIRE_BIN", &quire);
    let broadcast = std::env::current_exe()
        .unwrap()
        .with_file_name("bare-broadcast");
    let tools = Tools::from_env(quire, broadcast);
    let outcome = bench::run(setting, &tools, &servers, &only).await;
    let json = target.join("bench/results.json");
    report::write_json(&outcome, &json).expect("results.json written");
    let report_path = value("--report")
        .map(PathBuf::from)
        .unwrap_or_else(|| match setting {
            Setting::Full => root.join("BENCHMARKS.md"),
            Setting::Quick => target.join("bench/BENCHMARKS.md"),
        });
    let command = std::env::var("QUIRE_BENCH_COMMAND").unwrap_or_else(|_| "tests/bench.sh".into());
    let markdown = report::markdown(
        &outcome,
        setting,
        &report::machine(),
        &tools.versions(),
        &command,
    );
    std::fs::write(&report_path, markdown).expect("report written");
    println!("wrote {} and {}", json.display(), report_path.display());
    for (server, scenario, error) in &outcome.failures {
        eprintln!("FAILED {server} {scenario}: {error}");
    }
    if !outcome.failures.is_empty() {
        std::process::exit(1);
    }
}
