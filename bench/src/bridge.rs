//! bridge + host-local: whole-process ADD and DEL latency of one container, with and without
//! ipMasq on each backend (and the nft binary instead of libnftables), next to `attached`
//! containers already on the bridge. One mode runs host-local under another name ("hl-seq"), so
//! the plugin calls it after creating the veth, as for an IPAM plugin it does not know: the
//! difference to the first mode is what running IPAM alongside the veth creation saves.

use std::time::Instant;

use anyhow::{anyhow, Result};
use cni_shared::skel::Command;
use cni_shared::testkit::{Call, Sandbox, TempDir};
use serde_json::{json, Value};

use crate::stats::Samples;

fn conf(data: &TempDir, masq: Option<&str>) -> Value {
    conf_ipam(data, masq, "host-local")
}

fn conf_ipam(data: &TempDir, masq: Option<&str>, ipam: &str) -> Value {
    let mut c = json!({
        "cniVersion": "1.1.0", "name": "bench", "type": "bridge", "bridge": "cni-bench",
        "isGateway": true,
        "ipam": {"type": ipam, "dataDir": data.path(),
                 "ranges": [[{"subnet": "10.201.0.0/16"}]]}
    });
    if let Some(b) = masq {
        c["ipMasq"] = json!(true);
        c["ipMasqBackend"] = json!(b);
    }
    c
}

fn call(
    host: &Sandbox,
    c: &Value,
    cmd: Command,
    id: &str,
    ctr: &Sandbox,
    env: &[(&str, &str)],
) -> Result<()> {
    let mut call = Call::new("bridge", cmd, c.clone()).container(id, "eth0", Some(ctr.path()));
    if let Some(dir) = EXTRA_PATH.get() {
        call.env.cni_path.push(dir.clone());
    }
    for (k, v) in env {
        call = call.env(k, v);
    }
    call.run_in(host)
        .map(drop)
        .map_err(|e| anyhow!("{} {id}: {e}", cmd.as_str()))
}

/// Where Debian's containernetworking-plugins puts the reference binaries.
const REFERENCE: &str = "/usr/lib/cni";

/// `rounds` ADD+DEL cycles of one container; the ADD and DEL latencies.
fn measure(
    host: &Sandbox,
    c: &Value,
    ctr: &Sandbox,
    env: &[(&str, &str)],
    rounds: u32,
) -> Result<(Samples, Samples)> {
    let (mut add, mut del) = (Samples::default(), Samples::default());
    for i in 0..rounds {
        let id = format!("x{i}");
        let t = Instant::now();
        call(host, c, Command::Add, &id, ctr, env)?;
        add.push(t.elapsed());
        let t = Instant::now();
        call(host, c, Command::Del, &id, ctr, env)?;
        del.push(t.elapsed());
    }
    Ok((add, del))
}

/// A CNI_PATH directory holding `hl-seq`, a symlink to host-local.
static EXTRA_PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// (label, ipMasqBackend, extra environment)
type Mode = (
    &'static str,
    Option<&'static str>,
    &'static [(&'static str, &'static str)],
);

pub fn run(attached: u32, rounds: u32) -> Result<()> {
    let host = Sandbox::new("bench-br");
    let data = TempDir::new("bench-br");
    let t = Instant::now();
    let mut background = Vec::new();
    for i in 0..attached {
        let ctr = Sandbox::new(&format!("bench-br-{i}"));
        let backend = if i % 2 == 0 { "nftables" } else { "iptables" };
        call(
            &host,
            &conf(&data, Some(backend)),
            Command::Add,
            &format!("bg{i}"),
            &ctr,
            &[],
        )?;
        background.push(ctr);
    }
    println!(
        "bridge: {attached} containers attached (half with nftables, half with iptables masquerade) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let ctr = Sandbox::new("bench-br-x");
    let alias = TempDir::new("bench-br-path");
    std::os::unix::fs::symlink(
        cni_shared::testkit::plugin_path("host-local"),
        alias.path().join("hl-seq"),
    )?;
    let _ = EXTRA_PATH.set(alias.path().to_path_buf());
    let seq = conf_ipam(&data, None, "hl-seq");
    let (add, _) = measure(&host, &seq, &ctr, &[], rounds)?;
    let label = "no ipMasq, IPAM after the veth";
    println!("bridge ADD, {label:<31} @ {attached}: {}", add.summary());
    let modes: [Mode; 4] = [
        ("no ipMasq", None, &[]),
        ("ipMasq nftables (libnftables)", Some("nftables"), &[]),
        (
            "ipMasq nftables (nft binary)",
            Some("nftables"),
            &[("CNI_NFT", "binary")],
        ),
        ("ipMasq iptables", Some("iptables"), &[]),
    ];
    let mut ours = Vec::new();
    for (name, masq, env) in modes {
        let (add, del) = measure(&host, &conf(&data, masq), &ctr, env, rounds)?;
        println!("bridge ADD, {name:<31} @ {attached}: {}", add.summary());
        println!("bridge DEL, {name:<31} @ {attached}: {}", del.summary());
        ours.push((add, del));
    }
    if !std::path::Path::new(REFERENCE).join("bridge").is_file() {
        println!("(reference plugins not installed in {REFERENCE}: no comparison)");
        return Ok(());
    }
    // The reference (Debian's containernetworking-plugins) through the same runner; its
    // host-local comes from the same directory. It speaks up to CNI 1.0.0 and only iptables.
    std::env::set_var("CNI_TEST_BIN_DIR", REFERENCE);
    let refs = [
        ("no ipMasq", None, 0),
        ("ipMasq (iptables)", Some("iptables"), 3),
    ];
    for (name, masq, ours_idx) in refs {
        let mut c = conf(&data, masq);
        c["cniVersion"] = json!("1.0.0");
        if let Some(obj) = c.as_object_mut() {
            obj.remove("ipMasqBackend");
        }
        let (add, del) = measure(&host, &c, &ctr, &[], rounds)?;
        let ratio = |r: &Samples, o: &Samples| {
            crate::stats::ms(r.quantile(0.5)) / crate::stats::ms(o.quantile(0.5)).max(0.001)
        };
        let (oa, od) = (&ours[ours_idx].0, &ours[ours_idx].1);
        let (best_a, best_d) = (&ours[1].0, &ours[1].1);
        println!("reference ADD, {name:<28} @ {attached}: {}", add.summary());
        println!("reference DEL, {name:<28} @ {attached}: {}", del.summary());
        println!(
            "  median ratio reference/ours: ADD {:.1}x, DEL {:.1}x (same backend); \
             against our nftables default: ADD {:.1}x, DEL {:.1}x",
            ratio(&add, oa),
            ratio(&del, od),
            ratio(&add, best_a),
            ratio(&del, best_d)
        );
    }
    std::env::remove_var("CNI_TEST_BIN_DIR");
    Ok(())
}
