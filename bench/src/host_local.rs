//! host-local with many leases in its data dir: whole-process ADD and DEL latency of one more
//! container when `leases` are already held, the process executed directly (as the main plugin
//! that delegates to it does).

use std::time::Instant;

use anyhow::{bail, Context, Result};
use cni_shared::testkit::{Sandbox, TempDir};
use serde_json::json;

use crate::exec::Spec;
use crate::runtime::Side;
use crate::stats::Samples;

#[derive(Debug, Default)]
pub struct HostLocalResult {
    pub side: String,
    pub leases: u32,
    pub add: Samples,
    pub del: Samples,
    /// The first ADD after the leases were written (ours rebuilds its index then), ms.
    pub first_add_ms: f64,
    pub maxrss_kib: u64,
}

/// Pre-populate `leases` lease files the way the reference writes them.
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

fn count_leases(dir: &std::path::Path) -> Result<usize> {
    Ok(std::fs::read_dir(dir.join("bench"))?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .parse::<std::net::IpAddr>()
                .is_ok()
        })
        .count())
}

/// `rounds` ADD+DEL cycles of one more container next to `leases` leases, on one side.
pub fn run_side(side: &Side, leases: u32, rounds: u32) -> Result<HostLocalResult> {
    let host = Sandbox::new("bench-hl");
    let data = TempDir::new("bench-hl");
    let conf = serde_json::to_vec(&json!({
        "cniVersion": "1.0.0", "name": "bench", "type": "bridge",
        "ipam": {"type": "host-local", "dataDir": data.path(),
                 "ranges": [[{"subnet": "10.200.0.0/16"}]]}
    }))?;
    let t = Instant::now();
    populate(data.path(), leases).context("populating leases")?;
    eprintln!(
        "  host-local ({}): {leases} leases written in {:.1} s",
        side.label,
        t.elapsed().as_secs_f64()
    );
    let program = side.dir.join("host-local");
    let call = |cmd: &str, id: &str| {
        Spec::new(&program)
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", host.path().display().to_string())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", side.dir.display().to_string())
            .stdin(conf.clone())
            .run_in(&host)
    };
    let mut res = HostLocalResult {
        side: side.label.to_string(),
        leases,
        ..HostLocalResult::default()
    };
    res.first_add_ms = call("ADD", "warmup")?.elapsed.as_secs_f64() * 1000.0;
    for i in 0..rounds {
        let id = format!("bench{i}");
        let a = call("ADD", &id)?;
        let d = call("DEL", &id)?;
        res.maxrss_kib = res.maxrss_kib.max(a.maxrss_kib).max(d.maxrss_kib);
        res.add.push(a.elapsed);
        res.del.push(d.elapsed);
    }
    let held = count_leases(data.path())?;
    if held != leases as usize + 1 {
        bail!(
            "{}: expected {} leases after the run, found {held}",
            side.label,
            leases + 1
        );
    }
    Ok(res)
}

/// Every side; the reference (which reads every lease file per call) gets at most 10 rounds.
pub fn run(sides: &[Side], leases: u32, rounds: u32) -> Result<Vec<HostLocalResult>> {
    let mut out = Vec::new();
    for side in sides.iter().filter(|s| !s.iptables) {
        let r = if side.reference {
            rounds.min(10)
        } else {
            rounds
        };
        let res = run_side(side, leases, r)?;
        eprintln!(
            "  host-local ({}): first ADD {:.0} ms; ADD {}",
            side.label,
            res.first_add_ms,
            res.add.summary()
        );
        out.push(res);
    }
    Ok(out)
}
