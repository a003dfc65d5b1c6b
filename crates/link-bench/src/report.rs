//! Results: one [`Outcome`] per scenario and system, the medians over runs,
//! the human table (one column per system plus their ratio) and the JSON
//! document (`--json`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::median;
use crate::sys::Machine;

/// The broker's (hub's or nats-server's) CPU time per published or sent
/// message, read from its process over the measured phase.
pub const CPU_PER_MSG: &str = "hub CPU µs/msg";
/// The same per delivered message of a fan-out.
pub const CPU_PER_DELIVERY: &str = "hub CPU µs/delivery";
/// The same per RPC (request and response).
pub const CPU_PER_CALL: &str = "hub CPU µs/call";

/// Which bus a figure was measured on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// A link hub (ours or any protocol-v1 hub).
    Link,
    /// nats-server through async-nats.
    Nats,
}

impl System {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Link => "link",
            Self::Nats => "nats",
        }
    }
}

/// One figure.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metric {
    /// Name with its unit, e.g. `calls/s`, `p50 µs`.
    pub name: &'static str,
    /// The value (the median when several runs were made).
    pub value: f64,
    /// True for rates, false for latencies, memory and impact.
    pub higher_is_better: bool,
    /// Every run's value, when there was more than one run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<f64>,
}

impl Metric {
    /// A rate-like figure (higher is better).
    pub fn higher(name: &'static str, value: f64) -> Self {
        Self {
            name,
            value,
            higher_is_better: true,
            runs: Vec::new(),
        }
    }

    /// A cost-like figure (lower is better).
    pub fn lower(name: &'static str, value: f64) -> Self {
        Self {
            name,
            value,
            higher_is_better: false,
            runs: Vec::new(),
        }
    }
}

/// One scenario on one system (one run, or the median of several).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcome {
    /// Scenario name (`fanout-slow` for the slow-subscriber variant).
    pub scenario: String,
    /// The bus.
    pub system: System,
    /// Calls, messages or connections the scenario tried.
    pub expected: u64,
    /// Calls answered, messages delivered or peers connected.
    pub completed: u64,
    /// Measured interval in seconds.
    pub elapsed_s: f64,
    /// Figures, in display order.
    pub metrics: Vec<Metric>,
    /// Caveats (losses, partial runs, how memory was measured).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Outcome {
    /// A new outcome.
    pub fn new(scenario: impl Into<String>, system: System, expected: u64) -> Self {
        Self {
            scenario: scenario.into(),
            system,
            expected,
            completed: 0,
            elapsed_s: 0.0,
            metrics: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds the broker's CPU time per unit (lower is better), when it
    /// could be read.
    pub(crate) fn push_cpu(&mut self, name: &'static str, us_per_unit: Option<f64>) {
        if let Some(v) = us_per_unit {
            self.metrics.push(Metric::lower(name, v));
        }
    }

    /// The value of a metric by name.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }

    /// Folds several runs of the same scenario into their medians.
    pub fn median_of(runs: &[Outcome]) -> Option<Outcome> {
        let first = runs.first()?;
        if runs.len() == 1 {
            return Some(first.clone());
        }
        let med = |f: &dyn Fn(&Outcome) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        let mut out = Outcome {
            completed: med(&|o| o.completed as f64).unwrap_or_default().round() as u64,
            elapsed_s: med(&|o| o.elapsed_s).unwrap_or_default(),
            metrics: Vec::new(),
            notes: Vec::new(),
            ..first.clone()
        };
        for m in &first.metrics {
            let values: Vec<f64> = runs.iter().filter_map(|o| o.metric(m.name)).collect();
            out.metrics.push(Metric {
                value: median(&values).unwrap_or(m.value),
                runs: values,
                ..m.clone()
            });
        }
        for o in runs {
            for n in &o.notes {
                if !out.notes.contains(n) {
                    out.notes.push(n.clone());
                }
            }
        }
        Some(out)
    }
}

/// Where the link side ran.
#[derive(Clone, Debug, Serialize)]
pub struct TargetInfo {
    /// `embedded`, `child`, `url` or `cluster`.
    pub mode: &'static str,
    /// The hub URL (a cluster's first hub).
    pub url: String,
    /// A cluster of hubs (`--cluster N`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterInfo>,
}

/// A cluster of child hubs over NATS.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterInfo {
    /// How many hubs.
    pub hubs: usize,
    /// Every hub's URL, hub 0 first (the numbers in the notes).
    pub urls: Vec<String>,
    /// The nats-server.
    pub nats: String,
    /// The cluster's name.
    pub name: String,
}

/// A whole benchmark.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// The link hub.
    pub hub: TargetInfo,
    /// The nats-server URL, when compared.
    pub nats: Option<String>,
    /// The machine.
    pub machine: Machine,
    /// Payload size in bytes.
    pub payload_bytes: usize,
    /// How link subscribers received in `publish` and `fanout`
    /// ([`Receiver::as_str`](crate::Receiver::as_str)).
    pub receiver: &'static str,
    /// What the `connections` peers asked of presence
    /// ([`Clients::as_str`](crate::Clients::as_str)).
    pub clients: &'static str,
    /// Runs per scenario (figures are medians).
    pub runs: usize,
    /// Medians per scenario and system, in run order.
    pub results: Vec<Outcome>,
}

/// The targets, checked against the medians.
#[derive(Clone, Debug, Serialize)]
pub struct TargetCheck {
    /// What is measured.
    pub target: &'static str,
    /// The wanted value.
    pub wanted: f64,
    /// The measured value (link).
    pub measured: f64,
    /// Share of the target reached: measured/wanted for rates,
    /// wanted/measured for costs (1.0 or more meets it).
    pub of_target: f64,
}

const SIGNING_NOTE: &str = "NATS does not sign messages: every link frame carries an \
HMAC-SHA256 signature that the hub verifies and re-signs for each recipient; NATS \
payloads travel unsigned.";

impl BenchReport {
    fn find(&self, scenario: &str, system: System) -> Option<&Outcome> {
        self.results
            .iter()
            .find(|o| o.scenario == scenario && o.system == system)
    }

    fn link(&self, scenario: &str, metric: &str) -> Option<f64> {
        self.find(scenario, System::Link)?.metric(metric)
    }

    fn nats(&self, scenario: &str, metric: &str) -> Option<f64> {
        self.find(scenario, System::Nats)?.metric(metric)
    }

    /// The issue-6 targets that the results allow checking.
    pub fn targets(&self) -> Vec<TargetCheck> {
        let mut out = Vec::new();
        let mut higher = |target, wanted: f64, measured: Option<f64>| {
            if let Some(m) = measured.filter(|_| wanted > 0.0) {
                out.push(TargetCheck {
                    target,
                    wanted,
                    measured: m,
                    of_target: m / wanted,
                });
            }
        };
        higher(
            "publish msgs/s ≥ 100000",
            100_000.0,
            self.link("publish", "msgs/s"),
        );
        higher(
            "send msgs/s ≥ 100000",
            100_000.0,
            self.link("send", "msgs/s"),
        );
        higher(
            "rpc-conc calls/s ≥ 40000",
            40_000.0,
            self.link("rpc-conc", "calls/s"),
        );
        if let Some(n) = self.nats("fanout", "delivered/s") {
            higher(
                "fanout delivered/s ≥ 50% of nats",
                n * 0.5,
                self.link("fanout", "delivered/s"),
            );
        }
        let mut lower = |target, wanted: f64, measured: Option<f64>| {
            if let Some(m) = measured {
                out.push(TargetCheck {
                    target,
                    wanted,
                    measured: m,
                    of_target: if m > 0.0 { wanted / m } else { f64::INFINITY },
                });
            }
        };
        if let Some(n) = self.nats("rpc-seq", "p50 µs") {
            lower(
                "rpc-seq p50 µs ≤ nats p50",
                n,
                self.link("rpc-seq", "p50 µs"),
            );
        }
        lower(
            "connections settled KiB/conn ≤ 16",
            16.0,
            self.link("connections", "settled KiB/conn"),
        );
        lower(
            "fanout-slow impact % ≤ 10",
            10.0,
            self.link("fanout-slow", "impact %"),
        );
        lower("flood impact % ≤ 10", 10.0, self.link("flood", "impact %"));
        out
    }

    /// The human-readable table with notes.
    pub fn table(&self) -> String {
        let systems: Vec<System> = {
            let mut s: Vec<System> = self.results.iter().map(|o| o.system).collect();
            s.sort();
            s.dedup();
            s
        };
        let compare = systems.len() > 1;
        let mut rows: Vec<[String; 5]> = Vec::new();
        let mut order: Vec<&str> = Vec::new();
        for o in &self.results {
            if !order.contains(&o.scenario.as_str()) {
                order.push(&o.scenario);
            }
        }
        for scenario in order {
            let link = self.find(scenario, System::Link);
            let nats = self.find(scenario, System::Nats);
            let mut names: Vec<&'static str> = Vec::new();
            for o in [link, nats].into_iter().flatten() {
                for m in &o.metrics {
                    if !names.contains(&m.name) {
                        names.push(m.name);
                    }
                }
            }
            for (i, name) in names.iter().enumerate() {
                let l = link.and_then(|o| o.metric(name));
                let n = nats.and_then(|o| o.metric(name));
                let ratio = match (l, n) {
                    (Some(l), Some(n)) if n != 0.0 => format!("{:.2}", l / n),
                    _ => String::new(),
                };
                rows.push([
                    if i == 0 {
                        scenario.to_owned()
                    } else {
                        String::new()
                    },
                    (*name).to_owned(),
                    l.map(number).unwrap_or_default(),
                    n.map(number).unwrap_or_default(),
                    ratio,
                ]);
            }
        }
        let header = ["scenario", "metric", "link", "nats", "link/nats"];
        let cols = if compare { 5 } else { 3 };
        let mut width = [0usize; 5];
        for row in std::iter::once(&header.map(str::to_owned)).chain(rows.iter()) {
            for (w, cell) in width.iter_mut().zip(row.iter()) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let hub = match &self.hub.cluster {
            Some(c) => format!(
                "cluster of {} child hubs over {} ({})",
                c.hubs,
                c.nats,
                c.urls.join(", ")
            ),
            None => format!("{} hub {}", self.hub.mode, self.hub.url),
        };
        let _ = writeln!(
            out,
            "link bench: {hub}{}; {} CPU(s){}; payload {} B; link subscribers: {}; {}",
            self.nats
                .as_deref()
                .map(|n| format!(" vs nats-server {n}"))
                .unwrap_or_default(),
            self.machine.nproc,
            self.machine
                .cpu
                .as_deref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default(),
            self.payload_bytes,
            self.receiver,
            if self.runs > 1 {
                format!("median of {} runs", self.runs)
            } else {
                "1 run".to_owned()
            },
        );
        out.push('\n');
        let line = |out: &mut String, cells: &[String]| {
            for (i, cell) in cells.iter().take(cols).enumerate() {
                let pad = width[i].saturating_sub(cell.chars().count());
                if i < 2 {
                    out.push_str(cell);
                    out.push_str(&" ".repeat(pad));
                } else {
                    out.push_str(&" ".repeat(pad));
                    out.push_str(cell);
                }
                out.push_str(if i + 1 < cols { "  " } else { "\n" });
            }
        };
        line(&mut out, &header.map(str::to_owned));
        for row in &rows {
            line(&mut out, row);
        }
        out.push('\n');
        if compare {
            let _ = writeln!(out, "{SIGNING_NOTE}");
            let _ = writeln!(
                out,
                "link/nats: above 1 is better for rates (/s), below 1 for latencies, memory and impact."
            );
        }
        for o in &self.results {
            for n in &o.notes {
                let _ = writeln!(out, "{} ({}): {n}", o.scenario, o.system.as_str());
            }
        }
        let targets = self.targets();
        if !targets.is_empty() {
            let _ = writeln!(out, "\nissue-6 targets (link, medians):");
            for t in targets {
                let _ = writeln!(
                    out,
                    "  {:<36} wanted {:>10}  measured {:>10}  {:>5.0}% of target",
                    t.target,
                    number(t.wanted),
                    number(t.measured),
                    t.of_target * 100.0
                );
            }
        }
        out
    }
}

/// Groups outcomes by (scenario, system) in first-seen order and takes the
/// medians.
pub fn medians(all: &[Outcome]) -> Vec<Outcome> {
    let mut groups: BTreeMap<(usize, System), Vec<Outcome>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for o in all {
        let idx = match order.iter().position(|s| *s == o.scenario) {
            Some(i) => i,
            None => {
                order.push(o.scenario.clone());
                order.len() - 1
            }
        };
        groups.entry((idx, o.system)).or_default().push(o.clone());
    }
    groups
        .values()
        .filter_map(|runs| Outcome::median_of(runs))
        .collect()
}

/// 123456.7 → `123 457`; 12.345 → `12.3`; 1.2345 → `1.23`.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v.abs() >= 1000.0 {
        let digits = format!("{:.0}", v.abs());
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(' ');
            }
            grouped.push(c);
        }
        if v < 0.0 {
            format!("-{grouped}")
        } else {
            grouped
        }
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(system: System, rate: f64, p50: f64) -> Outcome {
        let mut o = Outcome::new("rpc-seq", system, 10);
        o.completed = 10;
        o.elapsed_s = 1.0;
        o.metrics = vec![
            Metric::higher("calls/s", rate),
            Metric::lower("p50 µs", p50),
        ];
        o
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(number(123_456.7), "123 457");
        assert_eq!(number(1000.0), "1 000");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(1.2345), "1.23");
    }

    #[test]
    fn medians_per_scenario_and_system() {
        let all = vec![
            outcome(System::Link, 10.0, 5.0),
            outcome(System::Nats, 20.0, 2.0),
            outcome(System::Link, 30.0, 7.0),
            outcome(System::Nats, 40.0, 4.0),
            outcome(System::Link, 20.0, 6.0),
            outcome(System::Nats, 30.0, 3.0),
        ];
        let m = medians(&all);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].system, System::Link);
        assert_eq!(m[0].metric("calls/s"), Some(20.0));
        assert_eq!(m[0].metrics[0].runs, [10.0, 30.0, 20.0]);
        assert_eq!(m[1].metric("p50 µs"), Some(3.0));
    }

    #[test]
    fn table_has_both_columns_ratio_and_the_signing_note() {
        let report = BenchReport {
            hub: TargetInfo {
                mode: "embedded",
                url: "ws://127.0.0.1:1".into(),
                cluster: None,
            },
            nats: Some("nats://127.0.0.1:2".into()),
            machine: Machine::current(),
            payload_bytes: 80,
            receiver: "handler",
            clients: "v1",
            runs: 1,
            results: vec![
                outcome(System::Link, 10.0, 5.0),
                outcome(System::Nats, 20.0, 2.0),
            ],
        };
        let t = report.table();
        assert!(t.contains("link/nats"), "{t}");
        assert!(t.contains("0.50"), "{t}");
        assert!(t.contains("2.50"), "{t}");
        assert!(t.contains("NATS does not sign messages"), "{t}");
        assert!(t.contains("rpc-seq p50"), "{t}");
        assert!(t.contains("link subscribers: handler"), "{t}");
    }
}
