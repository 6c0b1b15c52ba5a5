//! `cni-bench`: whole-process benchmarks of the built plugins in sandbox namespaces.
//! Run through `scripts/bench.sh`, which builds the release binaries first.

// A report tool: its output is the report.
#![allow(clippy::print_stdout)]

mod bridge;
mod host_local;
mod portmap;
mod stats;

use anyhow::{bail, Result};

const USAGE: &str =
    "usage: cni-bench host-local [--leases N] [--rounds N] | bridge [--attached N] \
     [--rounds N] | portmap [--levels 1,100,1000] [--rounds N]";

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

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    cni_shared::testkit::require_root();
    match args.first().map(String::as_str) {
        Some("host-local") => host_local::run(
            arg(&args, "--leases", 60_000)?,
            arg(&args, "--rounds", 200)?,
        ),
        Some("bridge") => bridge::run(arg(&args, "--attached", 200)?, arg(&args, "--rounds", 50)?),
        Some("portmap") => portmap::run(&levels(&args)?, arg(&args, "--rounds", 20)?),
        _ => bail!("{USAGE}"),
    }
}
