//! Every plugin on its own: `rounds` ADD+DEL cycles of one container through `cnitool` with a
//! one-plugin configuration list (the main plugins with host-local as IPAM; host-local alone as
//! the list's plugin, as IPAM plugins accept), sides interleaved. portmap cannot run without a
//! main plugin's result, so it is executed directly with a prevResult, as a chain would.

use std::path::Path;

use anyhow::{Context, Result};
use cni_shared::testkit::{Sandbox, TempDir};
use serde_json::{json, Value};

use crate::exec::Spec;
use crate::runtime::{Runtime, Side};
use crate::stats::Samples;

/// One plugin's numbers on one side.
#[derive(Debug, Default)]
pub struct PluginResult {
    pub plugin: &'static str,
    pub side: String,
    pub add: Samples,
    pub del: Samples,
    pub maxrss_kib: u64,
}

pub const PLUGINS: [&str; 6] = [
    "loopback",
    "host-local",
    "bridge",
    "macvlan",
    "vxlan",
    "portmap",
];

fn ipam(data: &TempDir, subnet: &str) -> Value {
    json!({"type": "host-local", "dataDir": data.path(), "ranges": [[{"subnet": subnet}]]})
}

/// The one-plugin list of `plugin` (not portmap).
fn list(plugin: &str, data: &TempDir) -> Value {
    let p = match plugin {
        "loopback" => json!({"type": "loopback"}),
        "host-local" => json!({"type": "host-local", "ipam": ipam(data, "10.213.0.0/16")}),
        "bridge" => json!({"type": "bridge", "bridge": "cni-bench1", "isGateway": true,
                           "ipam": ipam(data, "10.211.0.0/16")}),
        "macvlan" => json!({"type": "macvlan", "master": "bench-up0", "mode": "bridge",
                            "ipam": ipam(data, "10.212.0.0/16")}),
        _ => json!({"type": "vxlan", "vni": 42, "underlay": "bench-up0",
                    "peers": ["192.0.2.1", "192.0.2.2"], "ipam": ipam(data, "10.214.0.0/16")}),
    };
    json!({"cniVersion": "1.0.0", "name": format!("bench-{plugin}"), "plugins": [p]})
}

/// A sandbox host with what the plugins need: an uplink with an address (macvlan's master,
/// vxlan's underlay; veth pairs, as the kernel may lack dummy links) and a link that routes portmap's made-up container address.
fn host(label: &str) -> Sandbox {
    let h = Sandbox::new(label);
    for (end, peer, addr) in [
        ("bench-up0", "bench-up1", "192.0.2.1/24"),
        ("bench-pm0", "bench-pm1", "10.215.0.1/16"),
    ] {
        h.ip(&["link", "add", end, "type", "veth", "peer", "name", peer]);
        h.ip(&["addr", "add", addr, "dev", end]);
        h.ip(&["link", "set", peer, "up"]);
        h.ip(&["link", "set", end, "up"]);
    }
    h
}

/// portmap's stdin: one mapping for container address 10.215.0.5, as a chain passes it.
fn portmap_conf(ctr: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": "bench-portmap", "type": "portmap",
        "capabilities": {"portMappings": true}, "snat": true,
        "runtimeConfig": {"portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
        "prevResult": {"cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": ctr}],
            "ips": [{"address": "10.215.0.5/16", "interface": 0}]}
    })
}

fn portmap(
    host: &Sandbox,
    side: &Side,
    cmd: &str,
    id: &str,
    ctr: &Sandbox,
) -> Result<crate::exec::Run> {
    let program = side.dir.join("portmap");
    let stdin = serde_json::to_vec(&portmap_conf(ctr.path()))?;
    let mut spec = Spec::new(&program);
    for (k, v) in &side.env {
        spec = spec.env(k, v.clone());
    }
    spec.env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", ctr.path().display().to_string())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", side.dir.display().to_string())
        .stdin(stdin)
        .run_in(host)
        .with_context(|| format!("{}: portmap {cmd}", side.label))
}

/// `rounds` cycles of every plugin in `plugins` on every side that has it.
pub fn run(sides: &[Side], plugins: &[&'static str], rounds: u32) -> Result<Vec<PluginResult>> {
    let hosts: Vec<Sandbox> = sides.iter().map(|_| host("bp")).collect();
    let ctrs: Vec<Sandbox> = sides.iter().map(|_| Sandbox::new("bp-c")).collect();
    let mut out = Vec::new();
    for &plugin in plugins {
        let data: Vec<TempDir> = sides.iter().map(|_| TempDir::new("bench-pl")).collect();
        let mut lanes = Vec::new();
        for (i, side) in sides.iter().enumerate() {
            if !side.has(plugin) {
                continue;
            }
            let rt = Runtime::new(&hosts[i], side);
            rt.install(&format!("bench-{plugin}"), &list(plugin, &data[i]))?;
            let res = PluginResult {
                plugin,
                side: side.label.to_string(),
                ..PluginResult::default()
            };
            lanes.push((i, rt, res));
        }
        let ifname = if plugin == "loopback" { "lo" } else { "eth0" };
        for r in 0..rounds {
            for (i, rt, res) in &mut lanes {
                let id = format!("p{r}");
                let (a, d) = if plugin == "portmap" {
                    let side = &sides[*i];
                    let a = portmap(&hosts[*i], side, "ADD", &id, &ctrs[*i])?;
                    let d = portmap(&hosts[*i], side, "DEL", &id, &ctrs[*i])?;
                    (a, d)
                } else {
                    let net = format!("bench-{plugin}");
                    let a = rt.op("add", &net, &ctrs[*i], &id, ifname, None)?;
                    let d = rt.op("del", &net, &ctrs[*i], &id, ifname, None)?;
                    (a, d)
                };
                res.maxrss_kib = res.maxrss_kib.max(a.maxrss_kib).max(d.maxrss_kib);
                res.add.push(a.elapsed);
                res.del.push(d.elapsed);
            }
        }
        out.extend(lanes.into_iter().map(|(_, _, r)| r));
    }
    Ok(out)
}
