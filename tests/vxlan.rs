//! vxlan as a real process across several sandbox "hosts" in one machine. Each host is a
//! namespace with an underlay interface `ul0` (192.0.2.x/24 and 2001:db8::x/64, documentation
//! ranges): two hosts are joined by one veth, more hang off a "switch" namespace holding a Linux
//! bridge. The plugin and host-local run inside each host; containers are further sandboxes.
//! Nothing has a route out of the machine.
//!
//! Test helpers may panic: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;
use std::time::Duration;

use cni_shared::skel::Command;
use cni_shared::CniError;
use cni_tests::testkit::{ping, wait_until, Call, Sandbox, TempDir};
use serde_json::{json, Value};

#[path = "vxlan/lifecycle.rs"]
mod lifecycle;
#[path = "vxlan/overlay.rs"]
mod overlay;

pub const WAIT: Duration = Duration::from_secs(10);

/// One sandbox host: its namespace, its host-local data dir, its underlay addresses.
pub struct Host {
    pub sb: Sandbox,
    pub data: TempDir,
    /// 1-based: underlay addresses 192.0.2.<n> and 2001:db8::<n>, container range
    /// 10.42.0.<n>0 to 10.42.0.<n>9.
    pub n: u8,
}

impl Host {
    fn new(label: &str, n: u8) -> Host {
        Host {
            sb: Sandbox::new(&format!("{label}{n}")),
            data: TempDir::new(&format!("{label}{n}")),
            n,
        }
    }

    pub fn v4(&self) -> String {
        format!("192.0.2.{}", self.n)
    }

    pub fn v6(&self) -> String {
        format!("2001:db8::{}", self.n)
    }

    /// Underlay addresses on `ul0` (IPv6 without DAD, usable at once).
    fn address(&self) {
        self.sb
            .ip(&["addr", "add", &format!("{}/24", self.v4()), "dev", "ul0"]);
        self.sb.ip(&[
            "addr",
            "add",
            &format!("{}/64", self.v6()),
            "dev",
            "ul0",
            "nodad",
        ]);
    }

    /// A vxlan config for this host: network `overlay`, its own slice of 10.42.0.0/24.
    pub fn conf(&self, vni: u32, extra: Value) -> Value {
        let n = u32::from(self.n);
        let mut c = json!({
            "cniVersion": "1.1.0", "name": "overlay", "type": "vxlan", "vni": vni,
            "ipam": {"type": "host-local", "dataDir": self.data.path(), "ranges": [[{
                "subnet": "10.42.0.0/24",
                "rangeStart": format!("10.42.0.{}", n * 10),
                "rangeEnd": format!("10.42.0.{}", n * 10 + 9)}]]}
        });
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                c.insert(k.clone(), v.clone());
            }
        }
        c
    }

    /// `ip -d link show <dev>` in this host.
    pub fn link_details(&self, dev: &str) -> String {
        self.sb.ip(&["-d", "link", "show", dev])
    }

    /// The destinations of the all-zero (flood) FDB entries of `dev`, sorted.
    pub fn flood(&self, dev: &str) -> Vec<String> {
        let out = self.sb.exec("bridge", &["fdb", "show", "dev", dev]);
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("00:00:00:00:00:00 dst "))
            .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
            .collect();
        v.sort();
        v
    }

    /// A counter of `/proc/net/snmp` (e.g. "Ip" "FragCreates") in this host.
    pub fn snmp(&self, group: &str, key: &str) -> u64 {
        let out = self.sb.exec("cat", &["/proc/net/snmp"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{group}:")))
            .collect();
        let (names, values) = (rows[0], rows[1]);
        let i = names.split_whitespace().position(|k| k == key).unwrap();
        values.split_whitespace().nth(i).unwrap().parse().unwrap()
    }
}

/// Two hosts whose `ul0` are the two ends of one veth.
pub fn pair(label: &str) -> (Host, Host) {
    let (a, b) = (Host::new(label, 1), Host::new(label, 2));
    a.sb.link_to("ul0", &b.sb, "ul0");
    a.address();
    b.address();
    (a, b)
}

/// `n` hosts on a switch: a namespace with bridge `sw0`, one veth port per host.
pub fn switched(label: &str, n: u8) -> (Sandbox, Vec<Host>) {
    let switch = Sandbox::new(&format!("{label}sw"));
    switch.ip(&["link", "add", "sw0", "type", "bridge"]);
    switch.ip(&["link", "set", "sw0", "up"]);
    let hosts: Vec<Host> = (1..=n)
        .map(|i| {
            let h = Host::new(label, i);
            let port = format!("p{i}");
            h.sb.link_to("ul0", &switch, &port);
            switch.ip(&["link", "set", &port, "master", "sw0"]);
            h.address();
            h
        })
        .collect();
    (switch, hosts)
}

pub fn call(
    host: &Host,
    cmd: Command,
    c: &Value,
    id: &str,
    ctr: Option<&Sandbox>,
) -> Result<Value, CniError> {
    Call::new("vxlan", cmd, c.clone())
        .container(id, "eth0", ctr.map(|s| s.path()))
        .run_in(&host.sb)
        .map(|o| {
            if o.stdout.is_empty() {
                Value::Null
            } else {
                o.json()
            }
        })
}

pub fn add(host: &Host, c: &Value, id: &str, ctr: &Sandbox) -> Value {
    call(host, Command::Add, c, id, Some(ctr)).unwrap_or_else(|e| panic!("ADD {id}: {e}"))
}

pub fn del(host: &Host, c: &Value, id: &str, ctr: Option<&Sandbox>) {
    call(host, Command::Del, c, id, ctr).unwrap_or_else(|e| panic!("DEL {id}: {e}"));
}

/// CHECK of an attachment with `prev` as prevResult.
pub fn check(
    host: &Host,
    c: &Value,
    prev: &Value,
    id: &str,
    ctr: &Sandbox,
) -> Result<(), CniError> {
    let mut c = c.clone();
    c["prevResult"] = prev.clone();
    call(host, Command::Check, &c, id, Some(ctr)).map(drop)
}

/// The address (without prefix) of `ips[0]` of a 1.x result.
pub fn ip_of(r: &Value) -> IpAddr {
    let a = r["ips"][0]["address"].as_str().unwrap_or_default();
    a.split('/')
        .next()
        .unwrap_or_default()
        .parse()
        .unwrap_or_else(|_| panic!("no ips[0] in {r}"))
}

pub fn pings(from: &Sandbox, to: IpAddr) -> bool {
    ping(from, to, WAIT)
}

/// A ping that must fail: a couple of tries only.
pub fn blocked(from: &Sandbox, to: IpAddr) -> bool {
    !ping(from, to, Duration::from_secs(2))
}

/// An IPv4 ping with `size` bytes of payload and the don't-fragment bit set.
pub fn ping_df(from: &Sandbox, to: IpAddr, size: u32) -> bool {
    let (target, size) = (to.to_string(), size.to_string());
    wait_until(WAIT, || {
        from.exec(
            "ping",
            &[
                "-c", "1", "-W", "1", "-n", "-q", "-M", "do", "-s", &size, &target,
            ],
        )
        .status
        .success()
    })
}

/// The MTU of `dev` in `sb`.
pub fn mtu(sb: &Sandbox, dev: &str) -> u32 {
    let out = sb.ip(&["-o", "link", "show", dev]);
    let mut words = out.split_whitespace();
    words.find(|w| *w == "mtu");
    words.next().and_then(|m| m.parse().ok()).unwrap()
}

/// Say why a test is skipped (then the test returns): `SKIPPED: <test>: <reason>`.
pub fn skipped(test: &str, reason: &str) {
    eprintln!("SKIPPED: {test}: {reason}");
}
