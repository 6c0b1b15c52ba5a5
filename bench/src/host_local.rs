//! host-local with many leases in its data dir: whole-process ADD and DEL latency of one more
//! container when `leases` are already held.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use cni_shared::skel::Command;
use cni_shared::testkit::{Call, Sandbox, TempDir};
use serde_json::json;

use crate::stats::Samples;

/// Pre-populate `leases` lease files the way the reference writes them; the first ADD after this
/// rebuilds our attachment index once (not timed).
fn populate(dir: &std::path::Path, leases: u32) -> Result<()> {
    let net = dir.join("bench");
    std::fs::create_dir_all(&net)?;
    // 10.200.0.0/16: .0.1 is the gateway; skip .0 and .255 host parts for readability.
    let mut written = 0;
    let mut n: u32 = 2;
    while written < leases {
        let (hi, lo) = (n >> 8, n & 0xff);
        n += 1;
        if lo == 0 || lo == 255 {
            continue;
        }
        std::fs::write(
            net.join(format!("10.200.{hi}.{lo}")),
            format!("pre{written:06}\r\neth0"),
        )?;
        written += 1;
    }
    Ok(())
}

pub fn run(leases: u32, rounds: u32) -> Result<()> {
    let host = Sandbox::new("bench-hl");
    let data = TempDir::new("bench-hl");
    let conf = json!({
        "cniVersion": "1.1.0", "name": "bench", "type": "bridge",
        "ipam": {"type": "host-local", "dataDir": data.path(),
                 "ranges": [[{"subnet": "10.200.0.0/16"}]]}
    });
    let t = Instant::now();
    populate(data.path(), leases).context("populating leases")?;
    println!(
        "host-local: {leases} leases written in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let call = |cmd, id: &str| {
        Call::new("host-local", cmd, conf.clone()).container(id, "eth0", Some(host.path()))
    };
    let t = Instant::now();
    call(Command::Add, "warmup")
        .run_in(&host)
        .map_err(|e| anyhow::anyhow!("ADD: {e}"))?;
    println!(
        "host-local: first ADD (index rebuilt from {leases} leases) took {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let mut add = Samples::default();
    let mut del = Samples::default();
    for i in 0..rounds {
        let id = format!("bench{i}");
        let t = Instant::now();
        call(Command::Add, &id)
            .run_in(&host)
            .map_err(|e| anyhow::anyhow!("ADD: {e}"))?;
        add.push(t.elapsed());
        let t = Instant::now();
        call(Command::Del, &id)
            .run_in(&host)
            .map_err(|e| anyhow::anyhow!("DEL: {e}"))?;
        del.push(t.elapsed());
    }
    println!("host-local ADD @ {leases} leases: {}", add.summary());
    println!("host-local DEL @ {leases} leases: {}", del.summary());
    let lease_files = std::fs::read_dir(data.path().join("bench"))?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .parse::<std::net::IpAddr>()
                .is_ok()
        })
        .count();
    if lease_files != leases as usize + 1 {
        bail!(
            "expected {} leases after the run, found {lease_files}",
            leases + 1
        );
    }
    Ok(())
}
