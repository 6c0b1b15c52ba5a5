//! The chain a Kubernetes node runs for every pod — bridge (ipMasq, hairpin) + host-local +
//! portmap with one published port — through the built `cnitool`, one process per operation,
//! for each side in its own sandbox host, the sides interleaved step by step so that both see
//! the same background load:
//!
//! 1. `rounds` ADD+CHECK+DEL cycles of one container on an empty host;
//! 2. ADD of containers 1..=N, each timed (the first ten and the last ten are reported);
//! 3. `rounds` ADD+CHECK+DEL cycles of one more container next to the N; then, ours only (the
//!    reference 1.1.1 speaks no CNI 1.1.0), `rounds` STATUS and GC (every one of the N valid:
//!    the cost of looking) of the list in CNI 1.1.0;
//! 4. DEL of containers N..=1, each timed.
//!
//! Before the last ten ADDs and before step 3 the host is left alone for [`SETTLE`]: a new
//! container's IPv6 stack sends a few multicast packets (DAD, MLD reports, router
//! solicitations) over about 10 s, and the bridge floods each to every port, so right after
//! hundreds of back-to-back ADDs the kernel is still busy delivering those to hundreds of
//! containers (~20 ms of CPU per new container at 500 ports here, the same for every side).
//! The first ten ADDs meet a quiet host; the last ten are measured on one as quiet.
//!
//! Each timed ADD of the first ten and the last ten starts [`EDGE_GAP`] (`--edge-gap`) after
//! the call before it, whatever the side: a new container's IPv6 stack joins its multicast
//! groups as soon as its link has a carrier, and the report is flooded to every port of the
//! bridge — at 1000 ports a few ms of CPU that landed on whichever call ran next, and with the
//! sides in a fixed order that was always the same side (ours, after the reference's ADD).
//!
//! The containers' namespaces are made before step 2 and removed after step 4: the kernel
//! dismantles a removed namespace in the background, which would disturb the next call.

use std::time::Instant;

use anyhow::{anyhow, Result};
use cni_shared::sysctl;
use cni_shared::testkit::{Sandbox, TempDir};
use serde_json::{json, Value};

use crate::runtime::{Runtime, Side};
use crate::stats::Samples;

pub const NETWORK: &str = "bench-chain";

/// The pause before the last ten ADDs and before the cycles next to the N.
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(12);

/// The default pause before each timed ADD of the first and the last ten.
pub const EDGE_GAP: std::time::Duration = std::time::Duration::from_secs(1);

/// One side's numbers.
#[derive(Debug, Default)]
pub struct ChainResult {
    pub label: String,
    pub n: u32,
    pub empty_add: Samples,
    pub empty_del: Samples,
    /// ADD of containers 1..=10 (or fewer when N < 20).
    pub first_add: Samples,
    /// ADD of containers N-9..=N.
    pub last_add: Samples,
    pub full_add: Samples,
    pub full_del: Samples,
    /// CHECK (with the cached ADD result) in the cycles on the empty host and next to the N.
    pub empty_check: Samples,
    pub full_check: Samples,
    /// STATUS and GC (nothing stale) next to the N, ours only.
    pub full_status: Samples,
    pub full_gc: Samples,
    /// Why the reference's CHECK failed (its portmap 1.1.1 checks IPv6 chains an IPv4-only
    /// container does not have): its CHECK samples are then missing, not the run.
    pub check_error: Option<String>,
    /// DEL of containers N..=N-9 (the first ten of the drain).
    pub last_del: Samples,
    /// DEL of containers 10..=1.
    pub first_del: Samples,
    /// Largest ru_maxrss of any cnitool run (cnitool and every plugin it ran), KiB.
    pub tree_maxrss_kib: u64,
    /// The containers had IPv6 off (`--containers-without-ipv6`).
    pub without_ipv6: bool,
    /// The network was dual-stack (`--dual-stack`).
    pub dual_stack: bool,
}

/// How the scenario runs, beyond N and the rounds.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// IPv6 off in every container namespace before its ADD (`--containers-without-ipv6`): no
    /// link-local address, so no multicast group joins or neighbour discovery for the bridge
    /// to flood to every port. An experiment that separates that flood from the plugins' own
    /// work; a runtime's pods have IPv6 on unless told otherwise.
    pub without_ipv6: bool,
    /// The pause before each timed ADD of the first and the last ten ([`EDGE_GAP`]).
    pub edge_gap: std::time::Duration,
    /// host-local hands out an IPv6 address as well (`--dual-stack`, as containerd's example
    /// network does): the container interface gets IPv6 with DAD off.
    pub dual_stack: bool,
}

impl Options {
    fn make(self, name: &str) -> Result<Sandbox> {
        let sb = Sandbox::new(name);
        if self.without_ipv6 {
            sb.netns()
                .run(|| -> cni_shared::Result<()> {
                    // `all` for the interfaces there now (lo), `default` for those to come; a
                    // kernel without IPv6 has neither key, and nothing to turn off.
                    for which in ["all", "default"] {
                        sysctl::set_in_container(
                            &["net", "ipv6", "conf", which, "disable_ipv6"],
                            "1",
                        )?;
                    }
                    Ok(())
                })
                .and_then(|r| r)
                .map_err(|e| anyhow!("IPv6 off in {}: {e}", sb.name()))?;
        }
        Ok(sb)
    }
}

/// The configuration list: the same keys for every side (CNI 1.0.0, the newest the reference
/// 1.1.1 speaks). Ours with `iptables` selects its iptables backends, ours with
/// `no_link_local` sets `disableIPv6LinkLocal`; `dual_stack` adds an IPv6 range.
pub fn conflist(side: &Side, data: &TempDir, dual_stack: bool) -> Value {
    let mut ranges = vec![json!([{"subnet": "10.210.0.0/16"}])];
    if dual_stack {
        ranges.push(json!([{"subnet": "fd21:210::/64"}]));
    }
    let mut bridge = json!({
        "type": "bridge", "bridge": "cni-bench0", "isDefaultGateway": true,
        "ipMasq": true, "hairpinMode": true,
        "ipam": {"type": "host-local", "dataDir": data.path(), "ranges": ranges}
    });
    let mut portmap = json!({"type": "portmap", "capabilities": {"portMappings": true},
                             "snat": true});
    if side.iptables {
        bridge["ipMasqBackend"] = json!("iptables");
        portmap["backend"] = json!("iptables");
    }
    if side.no_link_local {
        bridge["disableIPv6LinkLocal"] = json!(true);
    }
    json!({"cniVersion": "1.0.0", "name": NETWORK, "plugins": [bridge, portmap]})
}

fn cap_args(port: u32) -> Value {
    json!({"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]})
}

/// The `msg` of the CNI error in a failed cnitool run's output, else the whole error.
fn cni_msg(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    let msg = text.find('{').and_then(|i| {
        let first = serde_json::Deserializer::from_str(&text[i..])
            .into_iter::<Value>()
            .next()?
            .ok()?;
        first.get("msg")?.as_str().map(String::from)
    });
    msg.unwrap_or(text)
}

/// One side's sandbox host, runtime and containers.
struct Lane<'a> {
    rt: Runtime<'a>,
    /// The reference side (whose CHECK may fail).
    reference: bool,
    _data: TempDir,
    extra: Sandbox,
    ctrs: Vec<Sandbox>,
    res: ChainResult,
}

impl Lane<'_> {
    /// One timed `cnitool <verb>` of container `ctr` (0: the extra namespace of the cycles).
    fn op(&mut self, verb: &str, ctr: usize, id: &str, port: u32) -> Result<std::time::Duration> {
        let ns = if ctr == 0 {
            &self.extra
        } else {
            &self.ctrs[ctr - 1]
        };
        let r = self
            .rt
            .op(verb, NETWORK, ns, id, "eth0", Some(&cap_args(port)))?;
        self.res.tree_maxrss_kib = self.res.tree_maxrss_kib.max(r.maxrss_kib);
        Ok(r.elapsed)
    }

    fn cycles(&mut self, tag: &str, round: u32, full: bool) -> Result<()> {
        let id = format!("{tag}{round}");
        let a = self.op("add", 0, &id, 19_999)?;
        let c = match self.op("check", 0, &id, 19_999) {
            Err(e) if self.reference => {
                self.res.check_error.get_or_insert_with(|| cni_msg(&e));
                None
            }
            c => Some(c?),
        };
        let d = self.op("del", 0, &id, 19_999)?;
        let r = &mut self.res;
        let (sa, sc, sd) = if full {
            (&mut r.full_add, &mut r.full_check, &mut r.full_del)
        } else {
            (&mut r.empty_add, &mut r.empty_check, &mut r.empty_del)
        };
        sa.push(a);
        if let Some(c) = c {
            sc.push(c);
        }
        sd.push(d);
        Ok(())
    }
}

/// Run the scenario for every side, interleaved; `n` containers, `rounds` cycles per level.
pub fn run(sides: &[Side], n: u32, rounds: u32, opts: Options) -> Result<Vec<ChainResult>> {
    let hosts: Vec<Sandbox> = sides
        .iter()
        .map(|s| Sandbox::new(&format!("bc-{}", s.label.replace([' ', '(', ')', ','], ""))))
        .collect();
    let mut lanes = Vec::new();
    for (side, host) in sides.iter().zip(&hosts) {
        let data = TempDir::new("bench-chain-data");
        let rt = Runtime::new(host, side);
        rt.install(NETWORK, &conflist(side, &data, opts.dual_stack))?;
        lanes.push(Lane {
            rt,
            reference: side.reference,
            _data: data,
            extra: opts.make("bc-x")?,
            ctrs: Vec::new(),
            res: ChainResult {
                label: side.label.to_string(),
                n,
                without_ipv6: opts.without_ipv6,
                dual_stack: opts.dual_stack,
                ..ChainResult::default()
            },
        });
    }
    let edge = n.min(10).min(n.div_ceil(2)).max(1);
    for r in 0..rounds {
        for l in &mut lanes {
            l.cycles("e", r, false)?;
        }
    }
    let t = Instant::now();
    for l in &mut lanes {
        l.ctrs = (0..n).map(|_| opts.make("bc")).collect::<Result<_>>()?;
    }
    eprintln!(
        "  chain: {} container namespaces made ({:.0} s)",
        n as usize * lanes.len(),
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    for i in 1..=n {
        if i == n - edge + 1 && n > 2 * edge {
            std::thread::sleep(SETTLE);
        }
        let at_edge = i <= edge || i > n - edge;
        for l in &mut lanes {
            if at_edge {
                std::thread::sleep(opts.edge_gap);
            }
            let d = l.op("add", i as usize, &format!("c{i}"), 20_000 + i)?;
            if i <= edge {
                l.res.first_add.push(d);
            }
            if i > n - edge {
                l.res.last_add.push(d);
            }
        }
        if i % 100 == 0 {
            eprintln!(
                "  chain: {i}/{n} containers ({:.0} s)",
                t.elapsed().as_secs_f64()
            );
        }
    }
    if n > 2 * edge {
        std::thread::sleep(SETTLE);
    }
    for r in 0..rounds {
        for l in &mut lanes {
            l.cycles("f", r, true)?;
        }
    }
    let valid: String = (1..=n).map(|i| format!("c{i}/eth0,")).collect();
    for _ in 0..rounds {
        for l in lanes.iter_mut().filter(|l| !l.reference) {
            let s = l.rt.op_v11("status", NETWORK, "")?;
            l.res.full_status.push(s.elapsed);
            let g = l.rt.op_v11("gc", NETWORK, &valid)?;
            l.res.full_gc.push(g.elapsed);
        }
    }
    for i in (1..=n).rev() {
        for l in &mut lanes {
            let d = l.op("del", i as usize, &format!("c{i}"), 20_000 + i)?;
            if i > n - edge {
                l.res.last_del.push(d);
            }
            if i <= edge {
                l.res.first_del.push(d);
            }
        }
    }
    Ok(lanes.into_iter().map(|l| l.res).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_msg_of_a_failed_cnitool_run() {
        let e = anyhow!(
            "cnitool check x exited with status 1: {{\n \"code\": 999,\n \"msg\": \"plugin \
             type=\\\"portmap\\\" failed\"\n}}cnitool check x: plugin failed"
        );
        assert_eq!(cni_msg(&e), "plugin type=\"portmap\" failed");
        let plain = anyhow!("spawning cnitool: not found");
        assert_eq!(cni_msg(&plain), "spawning cnitool: not found");
    }
}
