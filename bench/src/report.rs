//! The report: the goals table (ours, reference, ratio, goal, met?) and the details, as
//! Markdown on stdout, ready for docs/benchmarks.md.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::chain::ChainResult;
use crate::host_local::HostLocalResult;
use crate::plugins::PluginResult;
use crate::runtime;
use crate::stats::{ms, Samples};

/// Goals (issue 8).
pub const CHAIN_ADD_RATIO: f64 = 10.0;
pub const CHAIN_DEL_RATIO: f64 = 15.0;
pub const GROWTH: f64 = 1.2;
pub const HOST_LOCAL_MS: f64 = 2.0;
pub const RSS_KIB: u64 = 8 * 1024;
pub const SIZE_BYTES: u64 = 3_000_000;

#[derive(Debug, Default)]
pub struct Report {
    pub command: String,
    pub machine: String,
    pub load_before: String,
    pub load_after: String,
    pub chain: Vec<ChainResult>,
    pub plugins: Vec<PluginResult>,
    pub host_local: Vec<HostLocalResult>,
    /// Per side label: plugin → peak RSS KiB.
    pub rss: BTreeMap<String, BTreeMap<String, u64>>,
    /// (binary, bytes) of ours; the reference's for comparison.
    pub sizes: Vec<(String, u64, Option<u64>)>,
}

/// Which samples of a chain result a row shows.
type ChainField = fn(&ChainResult) -> &Samples;
/// Which samples of a plugin result a row shows.
type PluginField = fn(&PluginResult) -> &Samples;

fn p50(s: &Samples) -> f64 {
    ms(s.quantile(0.5))
}

fn cell(s: &Samples) -> String {
    if s.len() == 0 {
        return "—".into();
    }
    format!(
        "{:.1} / **{:.1}** / {:.1}",
        ms(s.min()),
        p50(s),
        ms(s.quantile(0.9))
    )
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "**no**"
    }
}

/// The growth measure: p50 of the ADDs of the last ten containers over the first ten's.
fn growth(c: &ChainResult) -> f64 {
    p50(&c.last_add) / p50(&c.first_add).max(0.001)
}

impl Report {
    fn side(&self, label: &str) -> Option<&ChainResult> {
        self.chain.iter().find(|c| c.label == label)
    }

    fn goals(&self, o: &mut String) {
        let _ = writeln!(o, "| measure | ours | reference | ratio | goal | met? |");
        let _ = writeln!(o, "|---|---|---|---|---|---|");
        if let Some(ours) = self.side("ours") {
            let r = self.side("reference");
            let ratio_row =
                |o: &mut String, what: &str, a: &Samples, rf: Option<&Samples>, goal: f64| {
                    let (rtxt, ratio, met) = match rf {
                        Some(rf) if rf.len() > 0 => {
                            let ratio = p50(rf) / p50(a).max(0.001);
                            (
                                format!("{:.1} ms", p50(rf)),
                                format!("{ratio:.1}×"),
                                mark(ratio >= goal),
                            )
                        }
                        _ => ("—".into(), "—".into(), "n/a"),
                    };
                    let _ = writeln!(
                        o,
                        "| {what} | {:.1} ms | {rtxt} | {ratio} | ≥ {goal:.0}× | {met} |",
                        p50(a)
                    );
                };
            ratio_row(
                o,
                "chain ADD p50 (bridge + host-local + portmap, cnitool)",
                &ours.empty_add,
                r.map(|r| &r.empty_add),
                CHAIN_ADD_RATIO,
            );
            ratio_row(
                o,
                "chain DEL p50",
                &ours.empty_del,
                r.map(|r| &r.empty_del),
                CHAIN_DEL_RATIO,
            );
            let g = growth(ours);
            let rg = r.map_or("—".into(), |r| format!("{:.2}×", growth(r)));
            let _ = writeln!(
                o,
                "| chain ADD p50, containers {}–{} vs 1–{}{} | {g:.2}× | {rg} | — | ≤ {GROWTH}× | {} |",
                ours.n + 1 - ours.last_add.len() as u32,
                ours.n,
                ours.first_add.len(),
                match variant(ours).join(", ") {
                    v if v.is_empty() => v,
                    v => format!(" ({v})"),
                },
                mark(g <= GROWTH)
            );
            if let Some(k) = self.side(runtime::NO_LINK_LOCAL) {
                let g = growth(k);
                let _ = writeln!(
                    o,
                    "| the same, ours alone with the opt-in `disableIPv6LinkLocal` | {g:.2}× | — | — | ≤ {GROWTH}× | {} |",
                    mark(g <= GROWTH)
                );
            }
        }
        for h in self.host_local.iter().filter(|h| h.side == "ours") {
            let rf = self.host_local.iter().find(|h| h.side == "reference");
            let v = p50(&h.add);
            let _ = writeln!(
                o,
                "| host-local ADD p50 with {} leases | {v:.2} ms | {} | {} | ≤ {HOST_LOCAL_MS} ms | {} |",
                h.leases,
                rf.map_or("—".into(), |r| format!("{:.1} ms", p50(&r.add))),
                rf.map_or("—".into(), |r| format!("{:.0}×", p50(&r.add) / v.max(0.001))),
                mark(v <= HOST_LOCAL_MS)
            );
        }
        let peak = |side: &str| {
            self.rss
                .get(side)
                .and_then(|m| m.iter().max_by_key(|(_, v)| **v))
                .map(|(k, v)| (k.clone(), *v))
        };
        if let Some((name, kib)) = peak("ours") {
            let _ = writeln!(
                o,
                "| peak RSS of any plugin process | {:.1} MiB ({name}) | {} | — | ≤ 8 MiB | {} |",
                kib as f64 / 1024.0,
                peak("reference").map_or("—".into(), |(n, k)| format!(
                    "{:.1} MiB ({n})",
                    k as f64 / 1024.0
                )),
                mark(kib <= RSS_KIB)
            );
        }
        if let Some((name, bytes, _)) = self.sizes.iter().max_by_key(|s| s.1) {
            let rmax = self.sizes.iter().filter_map(|s| s.2).max();
            let _ = writeln!(
                o,
                "| largest stripped binary | {:.2} MB ({name}) | {} | — | ≤ 3 MB | {} |",
                *bytes as f64 / 1e6,
                rmax.map_or("—".into(), |b| format!("{:.1} MB", b as f64 / 1e6)),
                mark(*bytes <= SIZE_BYTES)
            );
        }
    }

    fn chain_details(&self, o: &mut String) {
        let Some(first) = self.chain.first() else {
            return;
        };
        let n = first.n;
        let ipv6: String = variant(first).iter().map(|v| format!(", {v}")).collect();
        let _ = write!(
            o,
            "\n### Chain through cnitool, N = {n}{ipv6} (ms: min / **p50** / p90)\n\n| |"
        );
        for c in &self.chain {
            let _ = write!(o, " {} |", c.label);
        }
        let _ = write!(o, " reference / ours (p50) |\n|---|");
        for _ in &self.chain {
            let _ = write!(o, "---|");
        }
        let _ = writeln!(o, "---|");
        let rows: [(&str, ChainField); 12] = [
            ("ADD, empty host", |c| &c.empty_add),
            ("CHECK, empty host", |c| &c.empty_check),
            ("DEL, empty host", |c| &c.empty_del),
            ("ADD of containers 1–10", |c| &c.first_add),
            ("ADD of the last 10 containers", |c| &c.last_add),
            ("ADD next to N", |c| &c.full_add),
            ("CHECK next to N", |c| &c.full_check),
            ("DEL next to N", |c| &c.full_del),
            ("STATUS next to N (CNI 1.1.0)", |c| &c.full_status),
            ("GC next to N, all valid (CNI 1.1.0)", |c| &c.full_gc),
            ("DEL of the last 10 containers", |c| &c.last_del),
            ("DEL of containers 10–1", |c| &c.first_del),
        ];
        for (name, f) in rows {
            let _ = write!(o, "| {name} |");
            for c in &self.chain {
                let _ = write!(o, " {} |", cell(f(c)));
            }
            let ratio = match (self.side("ours"), self.side("reference")) {
                (Some(a), Some(r)) if f(a).len() > 0 && f(r).len() > 0 => {
                    format!("{:.1}×", p50(f(r)) / p50(f(a)).max(0.001))
                }
                _ => "—".into(),
            };
            let _ = writeln!(o, " {ratio} |");
        }
        let _ = write!(o, "| ADD growth: last 10 / first 10 (p50) |");
        for c in &self.chain {
            let _ = write!(o, " {:.2}× |", growth(c));
        }
        let _ = writeln!(o, " — |");
        for c in &self.chain {
            if let Some(e) = &c.check_error {
                let _ = writeln!(o, "\n{}: every CHECK failed (\"{e}\").", c.label);
            }
        }
    }

    fn plugin_details(&self, o: &mut String) {
        if self.plugins.is_empty() {
            return;
        }
        let mut sides: Vec<&str> = Vec::new();
        for p in &self.plugins {
            if !sides.contains(&p.side.as_str()) {
                sides.push(&p.side);
            }
        }
        let _ = write!(
            o,
            "\n### Per plugin (ms: min / **p50** / p90; through cnitool, portmap executed directly)\n\n| plugin | verb |"
        );
        for s in &sides {
            let _ = write!(o, " {s} |");
        }
        let _ = write!(o, " reference / ours (p50) |\n|---|---|");
        for _ in &sides {
            let _ = write!(o, "---|");
        }
        let _ = writeln!(o, "---|");
        let mut names: Vec<&str> = self.plugins.iter().map(|p| p.plugin).collect();
        names.dedup();
        for name in names {
            let get = |side: &str| {
                self.plugins
                    .iter()
                    .find(|p| p.plugin == name && p.side == side)
            };
            let verbs: [(&str, PluginField); 2] = [("ADD", |p| &p.add), ("DEL", |p| &p.del)];
            for (verb, f) in verbs {
                let _ = write!(o, "| {name} | {verb} |");
                for s in &sides {
                    let _ = write!(o, " {} |", get(s).map_or("—".into(), |p| cell(f(p))));
                }
                let ratio = match (get("ours"), get("reference")) {
                    (Some(a), Some(r)) => format!("{:.1}×", p50(f(r)) / p50(f(a)).max(0.001)),
                    _ => "—".into(),
                };
                let _ = writeln!(o, " {ratio} |");
            }
        }
    }

    fn other_details(&self, o: &mut String) {
        for h in &self.host_local {
            let _ = writeln!(
                o,
                "\nhost-local ({}) with {} leases, executed directly: ADD {} ms, DEL {} ms; the first ADD after the leases were written: {:.0} ms",
                h.side, h.leases, cell(&h.add), cell(&h.del), h.first_add_ms
            );
        }
        if !self.rss.is_empty() {
            let _ = writeln!(o, "\n### Peak RSS per plugin process (MiB; a plugin's figure includes the children it ran)\n");
            let sides: Vec<&String> = self.rss.keys().collect();
            let _ = write!(o, "| plugin |");
            for s in &sides {
                let _ = write!(o, " {s} |");
            }
            let _ = write!(o, "\n|---|");
            for _ in &sides {
                let _ = write!(o, "---|");
            }
            let _ = writeln!(o);
            let mut names: Vec<&String> = self.rss.values().flat_map(|m| m.keys()).collect();
            names.sort();
            names.dedup();
            for n in names {
                let _ = write!(o, "| {n} |");
                for s in &sides {
                    let v = self.rss.get(*s).and_then(|m| m.get(n));
                    let _ = write!(
                        o,
                        " {} |",
                        v.map_or("—".into(), |k| format!("{:.1}", *k as f64 / 1024.0))
                    );
                }
                let _ = writeln!(o);
            }
        }
        if !self.sizes.is_empty() {
            let _ = writeln!(
                o,
                "\n### Binary sizes (stripped, MB)\n\n| binary | ours | reference |\n|---|---|---|"
            );
            for (n, b, r) in &self.sizes {
                let _ = writeln!(
                    o,
                    "| {n} | {:.2} | {} |",
                    *b as f64 / 1e6,
                    r.map_or("—".into(), |r| format!("{:.2}", r as f64 / 1e6))
                );
            }
        }
    }

    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "Command: `{}`\n", self.command);
        let _ = writeln!(o, "Machine: {}\n", self.machine);
        let _ = writeln!(
            o,
            "Load average (1/5/15 min) before: {}; after: {}\n",
            self.load_before, self.load_after
        );
        self.goals(&mut o);
        self.chain_details(&mut o);
        self.plugin_details(&mut o);
        self.other_details(&mut o);
        o
    }
}

/// Sizes of our built binaries and the reference's namesakes.
pub fn sizes(
    ours: &std::path::Path,
    reference: Option<&std::path::Path>,
) -> Vec<(String, u64, Option<u64>)> {
    let size = |p: std::path::PathBuf| std::fs::metadata(p).ok().map(|m| m.len());
    [
        "bridge",
        "host-local",
        "loopback",
        "macvlan",
        "portmap",
        "vxlan",
        "cnitool",
    ]
    .iter()
    .filter_map(|n| {
        let b = size(ours.join(n))?;
        Some((n.to_string(), b, reference.and_then(|r| size(r.join(n)))))
    })
    .collect()
}

/// CPU, cores, memory, kernel, reference version.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split(':').nth(1))
        })
        .map_or("unknown CPU".into(), |s| s.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let reference = std::process::Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "containernetworking-plugins"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("not installed".into(), |o| {
            String::from_utf8_lossy(&o.stdout).into_owned()
        });
    format!(
        "{model}, {cores} cores, {mem_gib:.0} GiB, Linux {}; reference: Debian containernetworking-plugins {reference}",
        kernel.trim()
    )
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// How a chain run differs from the default scenario, for the tables' labels.
fn variant(c: &ChainResult) -> Vec<&'static str> {
    [
        (c.dual_stack, "dual-stack"),
        (c.without_ipv6, "containers without IPv6"),
    ]
    .into_iter()
    .filter_map(|(on, v)| on.then_some(v))
    .collect()
}
