//! The load generator behind `quire-bench` and the CI smoke test: virtual clients that each
//! hold a real yrs document and speak y-protocols over websockets, run against Quire and the
//! Yjs servers people would pick instead, each started on loopback in turn.
//!
//! Each virtual client is a [`crate::client::YClient`], the tests' own client, framed as each
//! server expects.
//!
//! - [`peers`]: the servers, how each is started, and each one's way to a document.
//! - [`scenarios`]: S1 fan-out, S2 saturation, S4 idle scale, S5 cold load, S6 warm join,
//!   S10 big document, S7 output streaming.
//! - [`report`]: `target/bench/results.json` and `BENCHMARKS.md`.

pub mod peers;
pub mod report;
pub mod scenarios;
pub mod streaming;
pub mod usage;

use peers::{Kind, Peer, Tools};

/// How long and how big: `Quick` proves every server answers every scenario (CI); `Full` is
/// the measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    Quick,
    Full,
}

/// One figure: `{scenario, server, metric, value, unit}`.
#[derive(Clone, Debug)]
pub struct Metric {
    pub scenario: String,
    pub server: String,
    pub metric: String,
    pub value: f64,
    pub unit: String,
}

/// Everything one run measured, and what failed.
#[derive(Default)]
pub struct Outcome {
    pub metrics: Vec<Metric>,
    /// (server, scenario, error)
    pub failures: Vec<(String, String, String)>,
}

/// Collects one scenario's figures for one server.
pub struct Figures {
    scenario: &'static str,
    server: &'static str,
    pub list: Vec<Metric>,
}

impl Figures {
    pub fn new(scenario: &'static str, server: Kind) -> Figures {
        Figures {
            scenario,
            server: server.name(),
            list: Vec::new(),
        }
    }

    pub fn add(&mut self, metric: impl Into<String>, value: f64, unit: &str) {
        let metric = metric.into();
        println!(
            "{:<4} {:<22} {:<44} {:>12.3} {unit}",
            self.scenario, self.server, metric, value
        );
        self.list.push(Metric {
            scenario: self.scenario.to_string(),
            server: self.server.to_string(),
            metric,
            value,
            unit: unit.to_string(),
        });
    }
}

/// The value at fraction `p` of a sorted list (NaN when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The scenario names, in the order they run.
pub const SCENARIOS: [&str; 7] = ["S1", "S10", "S2", "S6", "S5", "S4", "S7"];

/// Runs `only` (every scenario when empty) against each of `servers` in turn.
pub async fn run(setting: Setting, tools: &Tools, servers: &[Kind], only: &[String]) -> Outcome {
    let wanted = |s: &str| only.is_empty() || only.iter().any(|o| o.eq_ignore_ascii_case(s));
    let workload = scenarios::Workload::new(setting);
    let mut outcome = Outcome::default();
    for &kind in servers {
        println!("--- {} ---", kind.name());
        let mut peer = match Peer::start(kind, tools, &workload.files).await {
            Ok(peer) => peer,
            Err(e) => {
                outcome
                    .failures
                    .push((kind.name().into(), "start".into(), format!("{e:#}")));
                continue;
            }
        };
        let mut fresh = true;
        for scenario in SCENARIOS {
            if !wanted(scenario) || !scenarios::applies(scenario, kind) {
                continue;
            }
            // Each scenario gets a freshly started process: no memory or rooms left over from
            // the one before, and a server that an overload brought down is up again.
            if !fresh {
                if let Err(e) = peer.restart().await {
                    outcome
                        .failures
                        .push((kind.name().into(), scenario.into(), format!("{e:#}")));
                    continue;
                }
            }
            fresh = false;
            match scenarios::run_one(scenario, setting, &mut peer, &workload).await {
                Ok(figures) => outcome.metrics.extend(figures),
                Err(e) => {
                    println!("{scenario} {}: FAILED: {e:#}", kind.name());
                    outcome
                        .failures
                        .push((kind.name().into(), scenario.into(), format!("{e:#}")));
                }
            }
        }
        peer.stop();
    }
    outcome
}
