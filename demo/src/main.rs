//! `cni-demo`: the suite's main job. Builds nothing itself (scripts/demo.sh builds the release
//! binaries first); creates sandbox namespaces only — the machine's own network is never touched —
//! wires containers into the example networks of conf/ through cnitool, shows that they talk,
//! runs CHECK, then DEL, and verifies that nothing is left.

// A demo: its output is the show.
#![allow(clippy::print_stdout)]

mod sections;
mod world;

use std::time::Instant;

use anyhow::Result;

fn main() -> Result<()> {
    cni_shared::testkit::require_root();
    let start = Instant::now();
    let mut summary = Vec::new();
    for (title, section) in sections::ALL {
        println!("\n== {title}");
        let t = Instant::now();
        match section()? {
            sections::Outcome::Done(line) => {
                println!("   done in {:.1} s", t.elapsed().as_secs_f64());
                summary.push(format!("ok       {title}: {line}"));
            }
            sections::Outcome::Skipped(why) => {
                println!("   skipped: {why}");
                summary.push(format!("skipped  {title}: {why}"));
            }
        }
    }
    println!("\n== summary ({:.1} s)", start.elapsed().as_secs_f64());
    for line in summary {
        println!("   {line}");
    }
    Ok(())
}
