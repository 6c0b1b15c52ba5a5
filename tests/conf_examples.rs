//! Every file in conf/ works: ADD, CHECK and DEL through cnitool, with real traffic, inside
//! sandbox namespaces. A new file in conf/ needs a scenario here (the first test says so).

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cni_tests::testkit::{ping, tcp_roundtrip, Cnitool, Sandbox, TempDir};
use serde_json::Value;

/// The scenarios below, by file name.
const COVERED: &[&str] = &[
    "99-loopback.conf",
    "10-bridge.conflist",
    "20-bridge-dualstack.conflist",
    "30-macvlan.conflist",
    "40-bridge-portmap.conflist",
    "50-vxlan-host1.conflist",
    "51-vxlan-host2.conflist",
    "60-containerd-default.conflist",
];

fn conf_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf")
}

#[test]
fn every_conf_file_has_a_scenario() {
    let mut files: Vec<String> = std::fs::read_dir(conf_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".conf") || n.ends_with(".conflist") || n.ends_with(".json"))
        .collect();
    files.sort();
    for f in &files {
        assert!(
            COVERED.contains(&f.as_str()),
            "conf/{f} has no scenario in tests/conf_examples.rs"
        );
    }
}

/// A sandbox host with its own NETCONFPATH (the example, its dataDir moved to a temp dir), cache
/// and lease directory.
struct World {
    host: Sandbox,
    netconf: TempDir,
    cache: TempDir,
    data: TempDir,
}

impl World {
    fn new(file: &str, label: &str) -> World {
        let w = World {
            host: Sandbox::new(label),
            netconf: TempDir::new(&format!("{label}-conf")),
            cache: TempDir::new(&format!("{label}-cache")),
            data: TempDir::new(&format!("{label}-data")),
        };
        w.install(file, |_| ());
        w
    }

    /// Put example `file` into this world's NETCONFPATH, its dataDir moved to the world's,
    /// after `edit`.
    fn install(&self, file: &str, edit: impl FnOnce(&mut Value)) {
        let mut v: Value =
            serde_json::from_slice(&std::fs::read(conf_dir().join(file)).unwrap()).unwrap();
        edit(&mut v);
        let data = Value::String(self.data.path().display().to_string());
        match v.get_mut("plugins").and_then(Value::as_array_mut) {
            Some(plugins) => {
                for p in plugins.iter_mut() {
                    if let Some(ipam) = p.get_mut("ipam") {
                        ipam["dataDir"] = data.clone();
                    }
                }
            }
            None => {
                if let Some(ipam) = v.get_mut("ipam") {
                    ipam["dataDir"] = data.clone();
                }
            }
        }
        std::fs::write(
            self.netconf.path().join(file),
            serde_json::to_vec(&v).unwrap(),
        )
        .unwrap();
    }

    fn cnitool(&self, args: &[&str]) -> cni_tests::testkit::CnitoolRun {
        self.cnitool_env(args, &[])
    }

    fn cnitool_env(&self, args: &[&str], env: &[(&str, &str)]) -> cni_tests::testkit::CnitoolRun {
        Cnitool::new(&self.host, self.netconf.path(), self.cache.path()).run(args, env)
    }

    /// ADD `ctr` to `net`; returns the addresses of the result.
    fn add(&self, net: &str, ctr: &Sandbox) -> Vec<IpAddr> {
        self.add_env(net, ctr, &[])
    }

    /// ADD with extra environment (CAP_ARGS, CNI_ARGS).
    fn add_env(&self, net: &str, ctr: &Sandbox, env: &[(&str, &str)]) -> Vec<IpAddr> {
        let r = self
            .cnitool_env(&["add", net, ctr.path().to_str().unwrap()], env)
            .ok()
            .json();
        r["ips"]
            .as_array()
            .map(|ips| {
                ips.iter()
                    .map(|i| {
                        i["address"]
                            .as_str()
                            .unwrap()
                            .split('/')
                            .next()
                            .unwrap()
                            .parse()
                            .unwrap()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn check_and_del(&self, net: &str, ctrs: &[&Sandbox]) {
        for c in ctrs {
            self.cnitool(&["check", net, c.path().to_str().unwrap()])
                .ok();
        }
        for c in ctrs {
            self.cnitool(&["del", net, c.path().to_str().unwrap()]).ok();
        }
        let leases: Vec<String> = std::fs::read_dir(self.data.path().join(net))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        assert!(leases.is_empty(), "leases left after DEL: {leases:?}");
        let cached = std::fs::read_dir(self.cache.path().join("results"))
            .map(|rd| rd.count())
            .unwrap_or(0);
        assert_eq!(cached, 0, "cache entries left after DEL");
    }

    fn veths(&self) -> usize {
        self.host
            .ip(&["-o", "link", "show", "type", "veth"])
            .lines()
            .count()
    }
}

const T: Duration = Duration::from_secs(10);

#[test]
fn loopback_conf() {
    let w = World::new("99-loopback.conf", "cf-lo");
    let c = Sandbox::new("cf-lo-c");
    c.ip(&["link", "set", "lo", "down"]);
    let ips = w.add("lo", &c);
    assert!(ips.contains(&"127.0.0.1".parse().unwrap()));
    assert!(ping(&c, "127.0.0.1".parse().unwrap(), T));
    w.check_and_del("lo", &[&c]);
}

fn bridge_scenario(file: &str, net: &str, label: &str, gateways: &[&str]) {
    let w = World::new(file, label);
    let c1 = Sandbox::new(&format!("{label}-c1"));
    let c2 = Sandbox::new(&format!("{label}-c2"));
    let a1 = w.add(net, &c1);
    let a2 = w.add(net, &c2);
    assert_eq!(a1.len(), gateways.len(), "{a1:?}");
    for (x, y) in a1.iter().zip(&a2) {
        assert!(ping(&c1, *y, T), "c1 -> {y}");
        assert!(ping(&c2, *x, T), "c2 -> {x}");
    }
    for gw in gateways {
        assert!(ping(&c1, gw.parse().unwrap(), T), "c1 -> gateway {gw}");
    }
    assert_eq!(w.veths(), 2);
    let masq = w.host.exec("nft", &["list", "table", "inet", "cni_masq"]);
    assert!(
        String::from_utf8_lossy(&masq.stdout).contains(&a1[0].to_string()),
        "masquerade entry for {}",
        a1[0]
    );
    w.check_and_del(net, &[&c1, &c2]);
    assert_eq!(w.veths(), 0, "veths left after DEL");
    let masq = String::from_utf8_lossy(
        &w.host
            .exec("nft", &["list", "table", "inet", "cni_masq"])
            .stdout,
    )
    .into_owned();
    assert!(
        !masq.contains(&a1[0].to_string()),
        "masquerade entry left: {masq}"
    );
}

#[test]
fn bridge_conflist() {
    bridge_scenario("10-bridge.conflist", "bridge-net", "cf-br", &["10.22.0.1"]);
}

#[test]
fn bridge_dualstack_conflist() {
    bridge_scenario(
        "20-bridge-dualstack.conflist",
        "dualstack-net",
        "cf-ds",
        &["10.23.0.1", "fd23::1"],
    );
}

#[test]
fn macvlan_conflist() {
    let w = World::new("30-macvlan.conflist", "cf-mv");
    // The host's "NIC" eth0 is a veth to a LAN namespace holding the gateway address.
    let lan = Sandbox::new("cf-mv-lan");
    w.host.link_to("eth0", &lan, "lan0");
    lan.ip(&["addr", "add", "192.168.100.1/24", "dev", "lan0"]);
    let c1 = Sandbox::new("cf-mv-c1");
    let c2 = Sandbox::new("cf-mv-c2");
    let a1 = w.add("lan-net", &c1);
    let a2 = w.add("lan-net", &c2);
    assert!(
        ping(&c1, "192.168.100.1".parse().unwrap(), T),
        "c1 -> LAN host"
    );
    assert!(ping(&lan, a2[0], T), "LAN host -> c2");
    assert!(ping(&c1, a2[0], T), "c1 -> c2 (bridge mode)");
    assert!(ping(&c2, a1[0], T), "c2 -> c1");
    w.check_and_del("lan-net", &[&c1, &c2]);
    assert!(!c1.has_link("eth0"), "macvlan left in c1");
}

#[test]
fn vxlan_conflists_one_per_host() {
    let h1 = World::new("50-vxlan-host1.conflist", "cf-vx1");
    let h2 = World::new("51-vxlan-host2.conflist", "cf-vx2");
    // The underlay: eth0 on each host, joined by a veth.
    h1.host.link_to("eth0", &h2.host, "eth0");
    h1.host.ip(&["addr", "add", "192.0.2.1/24", "dev", "eth0"]);
    h2.host.ip(&["addr", "add", "192.0.2.2/24", "dev", "eth0"]);
    let c1 = Sandbox::new("cf-vx1-c");
    let c2 = Sandbox::new("cf-vx2-c");
    let a1 = h1.add("overlay", &c1);
    let a2 = h2.add("overlay", &c2);
    assert_eq!(a1, ["10.42.0.10".parse::<IpAddr>().unwrap()]);
    assert_eq!(a2, ["10.42.0.100".parse::<IpAddr>().unwrap()]);
    assert!(
        ping(&c1, a2[0], T),
        "host1's container -> host2's over the overlay"
    );
    assert!(ping(&c2, a1[0], T), "host2's container -> host1's");
    h1.check_and_del("overlay", &[&c1]);
    h2.check_and_del("overlay", &[&c2]);
}

#[test]
fn bridge_portmap_conflist() {
    let w = World::new("40-bridge-portmap.conflist", "cf-pm");
    // An outside client next to the host.
    let ext = Sandbox::new("cf-pm-ext");
    w.host.link_to("ext0", &ext, "ext1");
    w.host.ip(&["addr", "add", "203.0.113.1/24", "dev", "ext0"]);
    ext.ip(&["addr", "add", "203.0.113.2/24", "dev", "ext1"]);
    let c1 = Sandbox::new("cf-pm-c1");
    let caps = r#"{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}"#;
    let a1 = w.add_env("bridge-portmap-net", &c1, &[("CAP_ARGS", caps)]);
    let server = std::net::SocketAddr::new(a1[0], 80);
    let published = "203.0.113.1:8080".parse().unwrap();
    let got = tcp_roundtrip(&c1, server, &ext, published, T).unwrap();
    assert_eq!(
        got, b"cni-test-tcp",
        "outside client -> host:8080 -> container:80"
    );
    w.check_and_del("bridge-portmap-net", &[&c1]);
    let left = String::from_utf8_lossy(
        &w.host
            .exec("nft", &["list", "table", "inet", "cni_hostport"])
            .stdout,
    )
    .into_owned();
    assert!(!left.contains("8080"), "port map left after DEL: {left}");
}

/// containerd's example network as its users have it: both families between containers, each
/// family's default route from IPAM via the gateway, promiscuous bridge, a published port.
#[test]
fn containerd_default_conflist() {
    let w = World::new("60-containerd-default.conflist", "cf-ctd");
    let ext = Sandbox::new("cf-ctd-ext");
    w.host.link_to("ext0", &ext, "ext1");
    w.host.ip(&["addr", "add", "203.0.113.1/24", "dev", "ext0"]);
    ext.ip(&["addr", "add", "203.0.113.2/24", "dev", "ext1"]);
    let veths_before = w.veths(); // ext0
    let (c1, c2) = (Sandbox::new("cf-ctd-c1"), Sandbox::new("cf-ctd-c2"));
    let caps = r#"{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}"#;
    let a1 = w.add_env("containerd-net", &c1, &[("CAP_ARGS", caps)]);
    let a2 = w.add("containerd-net", &c2);
    assert_eq!(a1.len(), 2, "{a1:?}");
    for (x, y) in a1.iter().zip(&a2) {
        assert!(ping(&c1, *y, T), "c1 -> {y}");
        assert!(ping(&c2, *x, T), "c2 -> {x}");
    }
    assert!(c1
        .ip(&["route", "show", "default"])
        .contains("via 10.88.0.1 dev eth0"));
    assert!(c1
        .ip(&["-6", "route", "show", "default"])
        .contains("via 2001:db8:4860::1 dev eth0"));
    assert!(w.host.ip(&["link", "show", "cni0"]).contains("PROMISC"));
    let server = std::net::SocketAddr::new(a1[0], 80);
    let got = tcp_roundtrip(&c1, server, &ext, "203.0.113.1:8080".parse().unwrap(), T).unwrap();
    assert_eq!(got, b"cni-test-tcp", "outside client -> host:8080 -> c1:80");
    assert_eq!(w.veths(), veths_before + 2);
    w.check_and_del("containerd-net", &[&c1, &c2]);
    assert_eq!(w.veths(), veths_before, "veths left after DEL");
}

/// One container on two networks, as Multus wires a pod: `eth0` on the bridge network (its
/// default route) and `net1` on the macvlan LAN (routes removed, as secondary networks have
/// them). Each network's GC and DEL touch only its own attachment.
#[test]
fn one_container_on_two_networks() {
    let w = World::new("10-bridge.conflist", "cf-two");
    w.install("30-macvlan.conflist", |v| {
        v["plugins"][0]["ipam"]
            .as_object_mut()
            .unwrap()
            .remove("routes");
    });
    let lan = Sandbox::new("cf-two-lan");
    w.host.link_to("eth0", &lan, "lan0");
    lan.ip(&["addr", "add", "192.168.100.1/24", "dev", "lan0"]);
    let c = Sandbox::new("cf-two-c");
    let path = c.path().to_str().unwrap();
    let on = |ifname: &'static str| [("CNI_CONTAINERID", "pod1"), ("CNI_IFNAME", ifname)];
    let a = w.add_env("bridge-net", &c, &on("eth0"));
    let b = w.add_env("lan-net", &c, &on("net1"));
    assert!(
        ping(&c, "10.22.0.1".parse().unwrap(), T),
        "eth0 -> bridge gateway"
    );
    assert!(
        ping(&c, "192.168.100.1".parse().unwrap(), T),
        "net1 -> LAN host"
    );
    assert!(ping(&lan, b[0], T), "LAN host -> net1");
    let routes = c.ip(&["route", "show", "default"]);
    assert_eq!(routes.lines().count(), 1, "{routes}");
    assert!(routes.contains("dev eth0"), "{routes}");
    for (net, ifname) in [("bridge-net", "eth0"), ("lan-net", "net1")] {
        w.cnitool_env(&["check", net, path], &on(ifname)).ok();
    }
    // GC of the bridge network keeps its attachment and does not look at the LAN's; GC of
    // the LAN with no attachment valid removes net1 (and its lease) only.
    w.cnitool(&["gc", "bridge-net", "--valid", "pod1/eth0"])
        .ok();
    w.cnitool(&["gc", "lan-net"]).ok();
    assert!(!c.has_link("net1"), "net1 collected");
    assert!(c.has_link("eth0"));
    let held = |net: &str| {
        std::fs::read_dir(w.data.path().join(net))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().parse::<IpAddr>().is_ok())
                    .count()
            })
            .unwrap_or(0)
    };
    assert_eq!((held("bridge-net"), held("lan-net")), (1, 0));
    assert!(
        ping(&c, "10.22.0.1".parse().unwrap(), T),
        "eth0 still works"
    );
    w.cnitool_env(&["del", "bridge-net", path], &on("eth0"))
        .ok();
    assert_eq!(held("bridge-net"), 0);
    assert!(!c.has_link("eth0"));
    assert_eq!(a.len(), 1);
}
