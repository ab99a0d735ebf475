//! Writes a run's figures: `results.json` (a list of `{scenario, server, metric, value, unit}`)
//! and a Markdown report with each peer's ratio to Quire and the machine it ran on.

use std::fmt::Write as _;
use std::path::Path;

use super::peers::Kind;
use super::{Outcome, Setting, SCENARIOS};

pub fn write_json(outcome: &Outcome, path: &Path) -> std::io::Result<()> {
    let list: Vec<serde_json::Value> = outcome
        .metrics
        .iter()
        .map(|m| {
            serde_json::json!({
                "scenario": m.scenario, "server": m.server, "metric": m.metric,
                "value": if m.value.is_finite() { serde_json::json!(m.value) } else { serde_json::Value::Null },
                "unit": m.unit,
            })
        })
        .collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(&list).unwrap())
}

const TITLES: [(&str, &str); 7] = [
    (
        "S1",
        "fan-out: one room, clients typing 5 characters/s each with a cursor move per keystroke",
    ),
    (
        "S10",
        "big document: S1's typing (5 clients) on the big notebook against a 1-cell one",
    ),
    (
        "S2",
        "saturation: 50 clients, the typing rate doubled each step until p99 passes 50 ms",
    ),
    ("S6", "warm join: 10 clients join the open big notebook at once"),
    (
        "S5",
        "cold load: a new client on the big notebook, after a restart (cold) and with the room open (warm)",
    ),
    (
        "S4",
        "idle scale: connections over rooms, each renewing its awareness every 15 s",
    ),
    (
        "S7",
        "output streaming (Quire only): a kernel prints as fast as it can to 5 watchers",
    ),
];

/// Whether more is better for a unit.
fn higher_is_better(unit: &str) -> bool {
    unit.ends_with("/s")
        || unit == "connections"
        || unit == "rooms"
        || unit == "%"
        || unit == "fraction"
}

fn format_value(value: f64) -> String {
    if !value.is_finite() {
        "–".to_string()
    } else if value.abs() >= 1000.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else if value.abs() >= 0.1 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// The Markdown report. `machine` describes where it ran, `versions` the peers'.
pub fn markdown(
    outcome: &Outcome,
    setting: Setting,
    machine: &str,
    versions: &[(String, String)],
    command: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks: Quire beside the peers\n");
    let _ = writeln!(
        out,
        "Measured in one run on one machine, every server on loopback in turn, driven by the same \
         load generator (`tests/src/bench`: virtual clients holding real yrs documents, speaking \
         y-protocols over websockets). Written by `{command}` ({} setting); the raw figures are \
         in `target/bench/results.json`.\n",
        match setting {
            Setting::Quick => "quick",
            Setting::Full => "full",
        }
    );
    let _ = writeln!(out, "**Machine:** {machine}\n");
    let mut listed = String::new();
    for (name, version) in versions {
        if !version.is_empty() {
            let _ = write!(listed, "{name} {version}, ");
        }
    }
    let _ = writeln!(
        out,
        "**Versions:** {}. Quire, jupyter-collaboration (a Jupyter Server; SQLite YStore), \
         pycrdt-websocket (uvicorn; SQLite YStore), y-websocket-server (LevelDB) and y-sweet \
         (a folder) persist; Hocuspocus runs with no storage extension. `bare-broadcast` is the \
         ceiling: a websocket relay with no CRDT and no storage.\n",
        listed.trim_end_matches(", ")
    );
    let _ = writeln!(
        out,
        "Each peer's cell gives its value and, in brackets, its ratio to Quire's (peer ÷ Quire). \
         For latency, CPU and memory lower is better; for rates, higher is better.\n"
    );
    let servers: Vec<&str> = Kind::ALL
        .iter()
        .map(|k| k.name())
        .filter(|name| outcome.metrics.iter().any(|m| m.server == *name))
        .collect();
    for scenario in SCENARIOS {
        let rows: Vec<&super::Metric> = outcome
            .metrics
            .iter()
            .filter(|m| m.scenario == scenario)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let title = TITLES
            .iter()
            .find(|(s, _)| *s == scenario)
            .map(|(_, t)| *t)
            .unwrap_or("");
        let _ = writeln!(out, "## {scenario}: {title}\n");
        let columns: Vec<&str> = servers
            .iter()
            .copied()
            .filter(|s| rows.iter().any(|m| m.server == *s))
            .collect();
        let _ = writeln!(out, "| metric | unit | {} |", columns.join(" | "));
        let _ = writeln!(out, "|---|---|{}", "---:|".repeat(columns.len()));
        let mut names: Vec<(&str, &str)> = Vec::new();
        for m in &rows {
            if !names.iter().any(|(n, _)| *n == m.metric) {
                names.push((&m.metric, &m.unit));
            }
        }
        for (name, unit) in names {
            let value_of = |server: &str| {
                rows.iter()
                    .find(|m| m.server == server && m.metric == name)
                    .map(|m| m.value)
            };
            let quire = value_of("quire");
            let cells: Vec<String> = columns
                .iter()
                .map(|server| match (value_of(server), quire) {
                    (None, _) => "–".to_string(),
                    (Some(v), Some(q))
                        if *server != "quire" && q.is_finite() && q != 0.0 && v.is_finite() =>
                    {
                        format!("{} ({:.1}×)", format_value(v), v / q)
                    }
                    (Some(v), _) => format_value(v),
                })
                .collect();
            let direction = if higher_is_better(unit) { "↑" } else { "↓" };
            let _ = writeln!(
                out,
                "| {name} | {unit} {direction} | {} |",
                cells.join(" | ")
            );
        }
        let _ = writeln!(out);
    }
    if !outcome.failures.is_empty() {
        let _ = writeln!(out, "## What failed\n");
        for (server, scenario, error) in &outcome.failures {
            let first = error.lines().next().unwrap_or("");
            let _ = writeln!(out, "- {server}, {scenario}: {first}");
        }
        let _ = writeln!(out);
    }
    out
}

/// One line about the machine: CPU model, cores, memory, kernel, date.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    format!(
        "{model}, {cores} cores, {mem_gib:.0} GiB, Linux {}, {}",
        run("uname", &["-r"]),
        run("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
    )
}
