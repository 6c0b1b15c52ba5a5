//! bridge as a real process: each test makes its own sandbox host namespace and runs the plugin
//! (and host-local) inside it; containers are further sandboxes. Real traffic between them.
//!
//! Test helpers may panic: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;
use std::time::Duration;

use cni_shared::skel::Command;
use cni_shared::CniError;
use cni_tests::testkit::{ping, Call, Sandbox, TempDir};
use serde_json::{json, Value};

#[path = "bridge/bad_input.rs"]
mod bad_input;
#[path = "bridge/firewall.rs"]
mod firewall;
#[path = "bridge/lifecycle.rs"]
mod lifecycle;
#[path = "bridge/topology.rs"]
mod topology;

pub const WAIT: Duration = Duration::from_secs(10);

/// A bridge config with host-local over `subnets` (one range set each) and data in `data`.
pub fn conf(data: &TempDir, bridge: &str, subnets: &[&str], extra: Value) -> Value {
    let ranges: Vec<Value> = subnets.iter().map(|s| json!([{"subnet": s}])).collect();
    let mut c = json!({
        "cniVersion": "1.1.0", "name": "brnet", "type": "bridge", "bridge": bridge,
        "isGateway": true,
        "ipam": {"type": "host-local", "ranges": ranges, "dataDir": data.path()}
    });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

pub fn call(
    host: &Sandbox,
    cmd: Command,
    c: &Value,
    id: &str,
    ctr: Option<&Sandbox>,
) -> Result<Value, CniError> {
    call_if(host, cmd, c, id, "eth0", ctr.map(|s| s.path()))
}

pub fn call_if(
    host: &Sandbox,
    cmd: Command,
    c: &Value,
    id: &str,
    ifname: &str,
    netns: Option<&std::path::Path>,
) -> Result<Value, CniError> {
    Call::new("bridge", cmd, c.clone())
        .container(id, ifname, netns)
        .run_in(host)
        .map(|o| {
            if o.stdout.is_empty() {
                Value::Null
            } else {
                o.json()
            }
        })
}

pub fn add(host: &Sandbox, c: &Value, id: &str, ctr: &Sandbox) -> Value {
    call(host, Command::Add, c, id, Some(ctr)).unwrap_or_else(|e| panic!("ADD {id}: {e}"))
}

pub fn del(host: &Sandbox, c: &Value, id: &str, ctr: Option<&Sandbox>) {
    call(host, Command::Del, c, id, ctr).unwrap_or_else(|e| panic!("DEL {id}: {e}"));
}

/// The address (without prefix) of `ips[i]` of a 1.x result.
pub fn ip_of(r: &Value, i: usize) -> IpAddr {
    let a = r["ips"][i]["address"].as_str().unwrap_or_default();
    a.split('/')
        .next()
        .unwrap_or_default()
        .parse()
        .unwrap_or_else(|_| panic!("no ips[{i}] in {r}"))
}

pub fn pings(from: &Sandbox, to: IpAddr) -> bool {
    ping(from, to, WAIT)
}

/// A ping that must fail: a couple of tries only.
pub fn blocked(from: &Sandbox, to: IpAddr) -> bool {
    !ping(from, to, Duration::from_secs(2))
}

/// The lease files of network `brnet` under `data`.
pub fn leases(data: &TempDir) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(data.path().join("brnet"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Links named veth* in the host.
pub fn host_veths(host: &Sandbox) -> Vec<String> {
    host.ip(&["-o", "link", "show", "type", "veth"])
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or_default().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// `nft list ruleset` inside the host sandbox.
pub fn nft_ruleset(host: &Sandbox) -> String {
    let out = host.exec("nft", &["list", "ruleset"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `iptables-save -t nat` (or ip6tables) inside the host sandbox.
pub fn ipt_nat(host: &Sandbox, v6: bool) -> String {
    let tool = if v6 {
        "ip6tables-save"
    } else {
        "iptables-save"
    };
    let out = host.exec(tool, &["-t", "nat"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}
