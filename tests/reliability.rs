//! Reliability: what runtimes do to plugins — kill them at any moment, retry, run them in
//! parallel — and what is left behind afterwards. Every test builds its own sandbox host; the
//! figures of the last runs are in docs/reliability.md.
//!
//! Random choices come from a seeded xorshift generator; each test prints its seed, and
//! `CNI_RELIABILITY_SEED=<n>` replays it.
//!
//! Test helpers may panic: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use cni_shared::skel::Command;
use cni_shared::CniError;
use cni_tests::testkit::{wait_until, Call, Outcome, Sandbox};
use serde_json::{json, Value};

#[path = "reliability/concurrency.rs"]
mod concurrency;
#[path = "reliability/kill_bridge.rs"]
mod kill_bridge;
#[path = "reliability/kill_overlay.rs"]
mod kill_overlay;
#[path = "reliability/orphan.rs"]
mod orphan;
#[path = "reliability/state.rs"]
mod state;
#[path = "reliability/store_view.rs"]
mod store_view;

/// A small xorshift64* generator: reproducible random choices without a crate.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `CNI_RELIABILITY_SEED`, else from the clock; the seed is printed.
    pub fn from_env(test: &str) -> Rng {
        let seed = std::env::var("CNI_RELIABILITY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                t.as_nanos() as u64 ^ u64::from(std::process::id())
            });
        eprintln!("{test}: seed {seed} (rerun with CNI_RELIABILITY_SEED={seed})");
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A duration uniform in `0..max`.
    pub fn duration(&mut self, max: Duration) -> Duration {
        Duration::from_micros(self.below(max.as_micros().max(1) as u64))
    }
}

/// `n`, or `CNI_RELIABILITY_COUNT` when set (for longer runs by hand).
pub fn count(n: usize) -> usize {
    std::env::var("CNI_RELIABILITY_COUNT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(n)
}

/// The plugins' log level: `error` (the many expected refusals would drown the output), or
/// `CNI_RELIABILITY_LOG`.
fn log_level() -> String {
    std::env::var("CNI_RELIABILITY_LOG").unwrap_or_else(|_| "error".into())
}

/// Run one plugin call in `host` (bounded): its JSON output (`Null` when empty) or its error.
pub fn call(
    host: &Sandbox,
    plugin: &str,
    cmd: Command,
    conf: &Value,
    id: &str,
    netns: Option<&Path>,
) -> Result<Value, CniError> {
    Call::new(plugin, cmd, conf.clone())
        .container(id, "eth0", netns)
        .env("CNI_LOG_LEVEL", &log_level())
        .spawn_in(host)
        .wait()
        .map(|o| {
            if o.stdout.is_empty() {
                Value::Null
            } else {
                o.json()
            }
        })
}

/// Like [`call`], SIGKILLing the plugin `kill_at` after its start: `None` when it was killed.
pub fn call_or_kill(
    host: &Sandbox,
    plugin: &str,
    conf: &Value,
    id: &str,
    netns: &Path,
    kill_at: Duration,
) -> Option<Value> {
    run_or_kill(host, plugin, Command::Add, conf, id, netns, kill_at)
}

/// [`call_or_kill`] for any verb; `Some(Null)` for a verb that printed nothing.
pub fn run_or_kill(
    host: &Sandbox,
    plugin: &str,
    cmd: Command,
    conf: &Value,
    id: &str,
    netns: &Path,
    kill_at: Duration,
) -> Option<Value> {
    let run = Call::new(plugin, cmd, conf.clone())
        .container(id, "eth0", Some(netns))
        .env("CNI_LOG_LEVEL", &log_level())
        .spawn_in(host);
    match run.finish(Some(kill_at)) {
        Outcome::Killed(_) => None,
        Outcome::Done(r) => {
            let out = r.unwrap_or_else(|e| panic!("{plugin} {} {id} failed: {e}", cmd.as_str()));
            Some(if out.stdout.is_empty() {
                Value::Null
            } else {
                out.json()
            })
        }
    }
}

/// A config with the GC list `cni.dev/valid-attachments` of these container IDs (on eth0).
pub fn with_valid(conf: &Value, valid: &[String]) -> Value {
    let mut c = conf.clone();
    c["cni.dev/valid-attachments"] = valid
        .iter()
        .map(|id| json!({"containerID": id, "ifname": "eth0"}))
        .collect();
    c
}

/// `conf` with `prev` as prevResult (when there is one).
pub fn with_prev(conf: &Value, prev: Option<&Value>) -> Value {
    let mut c = conf.clone();
    if let Some(p) = prev {
        c["prevResult"] = p.clone();
    }
    c
}

/// Wait until no process runs in `host` any more (IPAM plugins whose parent was killed finish
/// on their own). Returns how long that took.
pub fn wait_quiet(host: &Sandbox) -> Duration {
    let start = Instant::now();
    assert!(
        wait_until(Duration::from_secs(60), || host.pids().is_empty()),
        "processes still running in {}: {:?}",
        host.name(),
        host.pids()
    );
    start.elapsed()
}

/// The veths a plugin made in a namespace (`veth` + 8 hex digits).
pub fn veths(sb: &Sandbox) -> Vec<String> {
    sb.ip(&["-o", "link", "show", "type", "veth"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with("veth"))
        .collect()
}

/// The links of a namespace other than `lo`.
pub fn links_besides_lo(sb: &Sandbox) -> Vec<String> {
    sb.ip(&["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n != "lo")
        .collect()
}

/// Firewall entries carrying a tag of `network` (`cni:<network>/<id>/<ifname>`), counted by
/// tag, from the whole nftables ruleset and both iptables-save outputs.
pub fn tagged_entries(host: &Sandbox, network: &str) -> BTreeMap<String, usize> {
    let needle = format!("cni:{network}/");
    let mut out = BTreeMap::new();
    let listings = [
        host.exec("nft", &["list", "ruleset"]),
        host.exec("iptables-save", &[]),
        host.exec("ip6tables-save", &[]),
    ];
    for l in listings {
        let text = String::from_utf8_lossy(&l.stdout).into_owned();
        for line in text.lines() {
            let mut rest = line;
            while let Some(at) = rest.find(&needle) {
                let tag: String = rest[at..]
                    .chars()
                    .take_while(|c| *c != '"' && !c.is_whitespace())
                    .collect();
                rest = &rest[at + tag.len()..];
                *out.entry(tag).or_default() += 1;
            }
        }
    }
    out
}

/// Every line of the ruleset and of iptables-save that mentions `network` at all (tags, the
/// network's shared chains) or a per-attachment iptables chain.
pub fn network_rules(host: &Sandbox, network: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (tool, args) in [
        ("nft", &["list", "ruleset"][..]),
        ("iptables-save", &[][..]),
        ("ip6tables-save", &[][..]),
    ] {
        let text = String::from_utf8_lossy(&host.exec(tool, args).stdout).into_owned();
        out.extend(
            text.lines()
                .filter(|l| {
                    l.contains(&format!("cni:{network}"))
                        || l.starts_with(":CNI-M-")
                        || l.starts_with(":CNI-HP-")
                })
                .map(|l| format!("{tool}: {}", l.trim())),
        );
    }
    out
}

/// Conntrack entries of the host whose reply comes from an address starting with `prefix`
/// other than the one the packet was sent to: connections NATed to a container.
pub fn conntrack_natted_to(host: &Sandbox, prefix: &str) -> Vec<String> {
    let out = host.exec("conntrack", &["-L"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            let field = |key: &str, n: usize| {
                l.split_whitespace()
                    .filter_map(|w| w.strip_prefix(key))
                    .nth(n)
                    .unwrap_or_default()
                    .to_string()
            };
            let (orig_dst, reply_src) = (field("dst=", 0), field("src=", 1));
            reply_src.starts_with(prefix) && reply_src != orig_dst
        })
        .map(str::to_string)
        .collect()
}

/// Send one UDP datagram from `host` to `dst`: a conntrack entry, NATed when a mapping exists.
pub fn poke_udp(host: &Sandbox, dst: std::net::SocketAddr) {
    let _ = host.netns().run(|| {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.send_to(b"poke", dst)
    });
}

/// Mean and maximum of some durations, in milliseconds, for the figures.
pub fn stats(d: &[Duration]) -> String {
    if d.is_empty() {
        return "-".into();
    }
    let total: Duration = d.iter().sum();
    let max = d.iter().max().copied().unwrap_or_default();
    format!(
        "mean {:.1} ms, max {:.1} ms",
        total.as_secs_f64() * 1000.0 / d.len() as f64,
        max.as_secs_f64() * 1000.0
    )
}

/// `flock -F <lock> sleep 100`: a process holding the lock the way a plugin does.
fn hold(lock: &Path) -> std::process::Child {
    let child = std::process::Command::new("flock")
        .args(["-F"])
        .arg(lock)
        .args(["sleep", "100"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let held = wait_until(Duration::from_secs(5), || {
        cni_shared::lock::FileLock::exclusive(lock, Duration::from_millis(5)).is_err()
    });
    assert!(held, "flock did not take {}", lock.display());
    child
}
