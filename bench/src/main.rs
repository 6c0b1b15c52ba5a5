//! `cni-bench`: whole-process benchmarks of the built plugins in sandbox namespaces, ours and
//! (when installed) the reference plugins side by side through the same `cnitool`. Run through
//! `scripts/bench.sh`, which builds the release binaries first. The report goes to stdout as
//! Markdown; progress to stderr.

// A report tool: its output is the report.
#![allow(clippy::print_stdout)]

mod bridge;
mod chain;
mod exec;
mod host_local;
mod plugins;
mod portmap;
mod quiet;
mod report;
mod rss;
mod runtime;
mod stats;

use anyhow::{bail, Result};
use runtime::Side;

const USAGE: &str = "usage: cni-bench [all|chain|plugins|host-local|rss] [--quick] [--n N] \
     [--rounds N] [--leases N] [--no-reference] [--iptables] [--glibc] [--compare DIR]... [--only bridge,portmap]
       [--containers-without-ipv6] [--disable-ipv6-link-local] [--dual-stack] [--edge-gap SECONDS]
       cni-bench bridge [--attached N] [--rounds N]
       cni-bench portmap [--levels 1,100,1000] [--rounds N]";

/// Flags without a value, and flags taking one, per part (`bridge`, `portmap`, the rest).
const MAIN_SWITCHES: [&str; 7] = [
    "--quick",
    "--no-reference",
    "--iptables",
    "--glibc",
    "--containers-without-ipv6",
    "--disable-ipv6-link-local",
    "--dual-stack",
];
const MAIN_VALUED: [&str; 6] = [
    "--n",
    "--rounds",
    "--leases",
    "--compare",
    "--only",
    "--edge-gap",
];

/// Refuse what this command does not take, so that a typo or `--help` does not start a run of
/// half an hour; `-h`/`--help` prints the usage.
fn check_args(args: &[String]) -> Result<()> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        std::process::exit(0);
    }
    let (part, rest) = match args.first().filter(|a| !a.starts_with('-')) {
        Some(p) => (p.as_str(), &args[1..]),
        None => ("all", args),
    };
    let (switches, valued): (&[&str], &[&str]) = match part {
        "bridge" => (&[], &["--attached", "--rounds"]),
        "portmap" => (&[], &["--levels", "--rounds"]),
        "all" | "chain" | "plugins" | "host-local" | "rss" => (&MAIN_SWITCHES, &MAIN_VALUED),
        other => bail!("unknown part {other:?}\n{USAGE}"),
    };
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        if valued.contains(&a.as_str()) {
            if it.next().is_none() {
                bail!("{a} needs a value\n{USAGE}");
            }
        } else if !switches.contains(&a.as_str()) {
            bail!("unknown argument {a:?} for {part}\n{USAGE}");
        }
    }
    Ok(())
}

fn arg(args: &[String], name: &str, default: u32) -> Result<u32> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => match args.get(i + 1).map(|v| v.parse::<u32>()) {
            Some(Ok(v)) => Ok(v),
            _ => bail!("{name} needs a number\n{USAGE}"),
        },
    }
}

/// `--levels 1,100,1000`: the numbers of installed mappings to measure at, ascending.
fn levels(args: &[String]) -> Result<Vec<u32>> {
    let Some(i) = args.iter().position(|a| a == "--levels") else {
        return Ok(vec![1, 100, 1000]);
    };
    let list = args.get(i + 1).map(String::as_str).unwrap_or_default();
    let mut v = Vec::new();
    for n in list.split(',') {
        match n.parse::<u32>() {
            Ok(n) if v.last().is_none_or(|l| *l < n) => v.push(n),
            _ => bail!("--levels needs ascending numbers, e.g. 1,100,1000\n{USAGE}"),
        }
    }
    Ok(v)
}

/// What to run and how much of it.
struct Plan {
    what: String,
    n: u32,
    rounds: u32,
    leases: u32,
    hl_rounds: u32,
    sides: Vec<Side>,
    /// `--disable-ipv6-link-local`: after the chain part, the chain once more for ours with
    /// that key alone.
    no_link_local: bool,
    /// `--only bridge,portmap`: the plugins of the per-plugin part.
    only: Vec<&'static str>,
    chain_opts: chain::Options,
}

fn plan(args: &[String]) -> Result<Plan> {
    let quick = args.iter().any(|a| a == "--quick");
    let what = args
        .first()
        .filter(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| "all".into());
    let mut sides = vec![Side::ours()];
    if args.iter().any(|a| a == "--iptables") {
        sides.push(Side::ours_iptables());
    }
    for (i, a) in args.iter().enumerate() {
        if a == "--compare" {
            let Some(dir) = args.get(i + 1) else {
                bail!("--compare needs a directory of plugin binaries\n{USAGE}");
            };
            sides.push(Side::other(dir.into()));
        }
    }
    if args.iter().any(|a| a == "--glibc") {
        match Side::ours_glibc() {
            Some(s) => sides.push(s),
            None => {
                bail!("--glibc: build the glibc binaries first (scripts/bench.sh --glibc does)")
            }
        }
    }
    if !args.iter().any(|a| a == "--no-reference") {
        match Side::reference() {
            Some(r) => sides.push(r),
            None => eprintln!(
                "(reference plugins not installed in {}: no comparison)",
                runtime::REFERENCE_DIR
            ),
        }
    }
    let only = match args.iter().position(|a| a == "--only") {
        None => plugins::PLUGINS.to_vec(),
        Some(i) => {
            let wanted: Vec<&str> = args
                .get(i + 1)
                .map_or("", String::as_str)
                .split(',')
                .collect();
            let v: Vec<&'static str> = plugins::PLUGINS
                .iter()
                .copied()
                .filter(|p| wanted.contains(p))
                .collect();
            if v.len() != wanted.len() {
                bail!(
                    "--only takes plugin names among {:?}\n{USAGE}",
                    plugins::PLUGINS
                );
            }
            v
        }
    };
    Ok(Plan {
        only,
        no_link_local: args.iter().any(|a| a == "--disable-ipv6-link-local"),
        chain_opts: chain::Options {
            without_ipv6: args.iter().any(|a| a == "--containers-without-ipv6"),
            dual_stack: args.iter().any(|a| a == "--dual-stack"),
            edge_gap: std::time::Duration::from_secs(
                arg(args, "--edge-gap", chain::EDGE_GAP.as_secs() as u32)?.into(),
            ),
        },
        what,
        n: arg(args, "--n", if quick { 20 } else { 1000 })?,
        rounds: arg(args, "--rounds", if quick { 10 } else { 20 })?,
        leases: arg(args, "--leases", 60_000)?,
        hl_rounds: arg(args, "--rounds", if quick { 50 } else { 200 })?,
        sides,
    })
}

/// The RSS pass: the chain and every plugin once more, through wrappers.
fn rss(p: &Plan, r: &mut report::Report) -> Result<()> {
    for side in p.sides.iter().filter(|s| !s.iptables) {
        let w = rss::wrap(side)?;
        chain::run(std::slice::from_ref(&w.side), 2, 2, p.chain_opts)?;
        plugins::run(std::slice::from_ref(&w.side), &plugins::PLUGINS, 2)?;
        r.rss.insert(side.label.to_string(), w.peaks());
    }
    Ok(())
}

fn main() -> Result<()> {
    if let Some(code) = rss::wrapper_main() {
        std::process::exit(code);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    check_args(&args)?;
    cni_shared::testkit::require_root();
    match args.first().map(String::as_str) {
        Some("bridge") => {
            return bridge::run(arg(&args, "--attached", 200)?, arg(&args, "--rounds", 50)?)
        }
        Some("portmap") => return portmap::run(&levels(&args)?, arg(&args, "--rounds", 20)?),
        Some("all" | "chain" | "plugins" | "host-local" | "rss") | None => {}
        Some(a) if a.starts_with("--") => {}
        Some(_) => bail!("{USAGE}"),
    }
    let p = plan(&args)?;
    let mut r = report::Report {
        command: format!("scripts/bench.sh {}", args.join(" "))
            .trim()
            .to_string(),
        machine: report::machine(),
        load_before: report::loadavg(),
        ..report::Report::default()
    };
    let all = p.what == "all";
    let ours = cni_shared::testkit::bin_dir();
    let reference = p.sides.iter().find(|s| s.reference).map(|s| s.dir.clone());
    r.sizes = report::sizes(&ours, reference.as_deref());
    if all || p.what == "plugins" {
        quiet::before("per plugin");
        eprintln!("per plugin, {} rounds ...", p.rounds);
        r.plugins = plugins::run(&p.sides, &p.only, p.rounds)?;
    }
    if all || p.what == "chain" {
        quiet::before("chain");
        eprintln!("chain, N = {}, {} rounds ...", p.n, p.rounds);
        r.chain = chain::run(&p.sides, p.n, p.rounds, p.chain_opts)?;
        if p.no_link_local {
            // Alone: next to the other sides' containers, whose kernels flood their bridges
            // with IPv6 multicast on the same CPUs, the key's effect does not show (side by
            // side its last ten took as long as ours without it).
            quiet::before("chain, ours with disableIPv6LinkLocal alone");
            eprintln!("chain, ours with disableIPv6LinkLocal alone ...");
            let alone = Side::ours_no_link_local();
            r.chain
                .extend(chain::run(&[alone], p.n, p.rounds, p.chain_opts)?);
        }
    }
    if all || p.what == "rss" {
        quiet::before("peak RSS");
        eprintln!("peak RSS ...");
        rss(&p, &mut r)?;
    }
    // Last: writing and deleting tens of thousands of lease files keeps the file system busy
    // (journal commits, discards) for minutes after, and every ADD writes files (the result
    // cache, a lease): loopback's ADD was 1.3 ms slower for a minute after this part.
    if all || p.what == "host-local" {
        quiet::before("host-local");
        eprintln!("host-local with {} leases ...", p.leases);
        r.host_local = host_local::run(&p.sides, p.leases, p.hl_rounds)?;
    }
    r.load_after = report::loadavg();
    println!("{}", r.render());
    Ok(())
}
