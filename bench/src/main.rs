//! `cni-bench`: whole-process benchmarks of the built plugins in sandbox namespaces.
//! Run through `scripts/bench.sh`, which builds the release binaries first.

// A report tool: its output is the report.
#![allow(clippy::print_stdout)]

mod bridge;
mod host_local;
mod stats;

use anyhow::{bail, Result};

const USAGE: &str =
    "usage: cni-bench host-local [--leases N] [--rounds N] | bridge [--attached N] [--rounds N]";

fn arg(args: &[String], name: &str, default: u32) -> Result<u32> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => match args.get(i + 1).map(|v| v.parse::<u32>()) {
            Some(Ok(v)) => Ok(v),
            _ => bail!("{name} needs a number\n{USAGE}"),
        },
    }
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
        _ => bail!("{USAGE}"),
    }
}
