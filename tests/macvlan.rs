//! macvlan as a real process. Each test has its own sandbox host with a veth `lan0` standing in
//! for the physical NIC; its peer `eth0` sits in a "lan" sandbox holding 10.55.0.1/24, the host
//! on the LAN. Containers are further sandboxes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use cni_shared::netlink::Netlink;
use cni_shared::skel::Command;
use cni_shared::CniError;
use cni_tests::testkit::{ping, Call, Sandbox, TempDir};
use serde_json::{json, Value};

#[path = "macvlan/more.rs"]
mod more;

const LAN_IP: &str = "10.55.0.1";
const PING: Duration = Duration::from_secs(10);

/// A sandbox host with `lan0`, its LAN peer, and a host-local data dir.
struct Lan {
    host: Sandbox,
    lan: Sandbox,
    data: TempDir,
}

impl Lan {
    fn new(label: &str) -> Lan {
        let host = Sandbox::new(&format!("{label}-h"));
        let lan = Sandbox::new(&format!("{label}-l"));
        host.link_to("lan0", &lan, "eth0");
        lan.ip(&["addr", "add", "10.55.0.1/24", "dev", "eth0"]);
        Lan {
            host,
            lan,
            data: TempDir::new(label),
        }
    }

    /// A config on lan0 with host-local addresses from 10.55.0.10-50, plus `extra` keys.
    fn conf(&self, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": "1.1.0", "name": "mvnet", "type": "macvlan", "master": "lan0",
            "dataDir": self.data.path().join("vlans"),
            "ipam": {"type": "host-local", "dataDir": self.data.path(),
                     "ranges": [[{"subnet": "10.55.0.0/24", "rangeStart": "10.55.0.10",
                                  "rangeEnd": "10.55.0.50"}]]}
        });
        for (k, v) in extra.as_object().expect("object") {
            if v.is_null() {
                c.as_object_mut().expect("object").remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    fn call(
        &self,
        cmd: Command,
        conf: &Value,
        id: &str,
        ctr: Option<&Sandbox>,
    ) -> Result<Value, CniError> {
        self.call_args(cmd, conf, id, ctr, "")
    }

    fn call_args(
        &self,
        cmd: Command,
        conf: &Value,
        id: &str,
        ctr: Option<&Sandbox>,
        args: &str,
    ) -> Result<Value, CniError> {
        Call::new("macvlan", cmd, conf.clone())
            .container(id, "eth0", ctr.map(Sandbox::path))
            .args(args)
            .run_in(&self.host)
            .map(|o| {
                if o.stdout.is_empty() {
                    Value::Null
                } else {
                    o.json()
                }
            })
    }

    /// The leases host-local holds for network mvnet.
    fn leases(&self) -> usize {
        std::fs::read_dir(self.data.path().join("mvnet"))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .parse::<std::net::IpAddr>()
                            .is_ok()
                    })
                    .count()
            })
            .unwrap_or(0)
    }
}

fn ip_of(r: &Value) -> std::net::IpAddr {
    let a = r["ips"][0]["address"].as_str().expect("an address");
    a.split('/').next().unwrap().parse().unwrap()
}

fn in_range(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.starts_with("10.55.0.") && s.ends_with("/24"))
}

fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

#[test]
fn bridge_mode_containers_reach_each_other_and_the_lan() {
    let l = Lan::new("mvb");
    let (c1, c2) = (Sandbox::new("mvb-c1"), Sandbox::new("mvb-c2"));
    let conf = l.conf(json!({}));
    let r1 = l.call(Command::Add, &conf, "c1", Some(&c1)).unwrap();
    let r2 = l.call(Command::Add, &conf, "c2", Some(&c2)).unwrap();

    // Result: the container interface with its sandbox, ips pointing at it.
    assert_eq!(r1["cniVersion"], "1.1.0");
    let ifaces = r1["interfaces"].as_array().unwrap();
    assert_eq!(ifaces.len(), 1, "{r1}");
    assert_eq!(ifaces[0]["name"], "eth0");
    assert_eq!(ifaces[0]["sandbox"], c1.path().display().to_string());
    assert_eq!(r1["ips"][0]["interface"], 0);
    assert_eq!(r1["ips"][0]["address"], "10.55.0.10/24");
    let cl = Netlink::open_in(&c1.netns())
        .unwrap()
        .link("eth0")
        .unwrap()
        .unwrap();
    assert_eq!(ifaces[0]["mac"], cl.mac.unwrap().to_string());
    let lan0 = Netlink::open_in(&l.host.netns())
        .unwrap()
        .link("lan0")
        .unwrap()
        .unwrap();
    assert_eq!(cl.parent, Some(lan0.index), "a child of lan0");
    assert!(c1
        .ip(&["-d", "link", "show", "eth0"])
        .contains("macvlan mode bridge"));
    assert!(!l.host.has_link("eth0"));
    let notify = c1.exec("cat", &["/proc/sys/net/ipv4/conf/eth0/arp_notify"]);
    assert_eq!(notify.stdout, b"1\n", "neighbours learn the new MAC");

    assert!(ping(&c1, ip_of(&r2), PING), "container to container");
    assert!(ping(&c1, LAN_IP.parse().unwrap(), PING), "container to LAN");
    assert!(ping(&l.lan, ip_of(&r2), PING), "LAN to container");

    // CHECK passes, then sees a missing address and a changed mode.
    l.call(Command::Check, &with_prev(&conf, &r1), "c1", Some(&c1))
        .unwrap();
    let private = with_prev(&l.conf(json!({"mode": "private"})), &r1);
    let e = l
        .call(Command::Check, &private, "c1", Some(&c1))
        .unwrap_err();
    assert!(e.msg.contains("mode"), "{}", e.msg);
    c1.ip(&["addr", "del", "10.55.0.10/24", "dev", "eth0"]);
    let e = l
        .call(Command::Check, &with_prev(&conf, &r1), "c1", Some(&c1))
        .unwrap_err();
    assert!(e.msg.contains("10.55.0.10"), "{}", e.msg);

    // DEL: link and lease gone; twice, and without a namespace, is success.
    assert_eq!(l.leases(), 2);
    l.call(Command::Del, &conf, "c1", Some(&c1)).unwrap();
    assert!(!c1.has_link("eth0"));
    assert_eq!(l.leases(), 1);
    l.call(Command::Del, &conf, "c1", Some(&c1)).unwrap();
    l.call(Command::Del, &conf, "c1", None).unwrap();
    let gone = c2.path().to_path_buf();
    c2.delete();
    Call::new("macvlan", Command::Del, conf.clone())
        .container("c2", "eth0", Some(&gone))
        .run_in(&l.host)
        .expect("DEL after the namespace is gone");
    assert_eq!(l.leases(), 0);
}

#[test]
fn private_mode_isolates_containers_from_each_other() {
    let l = Lan::new("mvp");
    let (c1, c2) = (Sandbox::new("mvp-c1"), Sandbox::new("mvp-c2"));
    let conf = l.conf(json!({"mode": "private"}));
    let r1 = l.call(Command::Add, &conf, "c1", Some(&c1)).unwrap();
    let r2 = l.call(Command::Add, &conf, "c2", Some(&c2)).unwrap();
    assert!(c1
        .ip(&["-d", "link", "show", "eth0"])
        .contains("macvlan mode private"));
    assert!(ping(&c1, LAN_IP.parse().unwrap(), PING));
    assert!(ping(&c2, LAN_IP.parse().unwrap(), PING));
    assert!(
        !ping(&c1, ip_of(&r2), Duration::from_secs(3)),
        "private children cannot reach each other"
    );
    assert!(!ping(&c2, ip_of(&r1), Duration::from_secs(2)));
    l.call(Command::Check, &with_prev(&conf, &r1), "c1", Some(&c1))
        .unwrap();
}

#[test]
fn vepa_mode_sends_sibling_traffic_through_the_lan() {
    let l = Lan::new("mvv");
    let (c1, c2) = (Sandbox::new("mvv-c1"), Sandbox::new("mvv-c2"));
    let conf = l.conf(json!({"mode": "vepa"}));
    let r1 = l.call(Command::Add, &conf, "c1", Some(&c1)).unwrap();
    let r2 = l.call(Command::Add, &conf, "c2", Some(&c2)).unwrap();
    assert!(c1
        .ip(&["-d", "link", "show", "eth0"])
        .contains("macvlan mode vepa"));
    assert!(ping(&c1, LAN_IP.parse().unwrap(), PING));
    assert!(ping(&l.lan, ip_of(&r2), PING), "c2 is on the LAN");
    // Frames between siblings leave through lan0 and need the switch to send them back
    // (802.1Qbg reflective relay); the LAN here is a plain endpoint, which does not.
    assert!(
        !ping(&c1, ip_of(&r2), Duration::from_secs(2)),
        "no reflection, no sibling traffic"
    );
    l.call(Command::Check, &with_prev(&conf, &r1), "c1", Some(&c1))
        .unwrap();
    let bridge = with_prev(&l.conf(json!({"mode": "bridge"})), &r1);
    let e = l
        .call(Command::Check, &bridge, "c1", Some(&c1))
        .unwrap_err();
    assert!(e.msg.contains("mode"), "{}", e.msg);
    l.call(Command::Del, &conf, "c1", Some(&c1)).unwrap();
    l.call(Command::Del, &conf, "c2", Some(&c2)).unwrap();
    assert_eq!(l.leases(), 0);
}

#[test]
fn default_master_is_the_default_route_interface() {
    let l = Lan::new("mvd");
    let other = Sandbox::new("mvd-o");
    l.host.link_to("other0", &other, "eth0");
    let c = Sandbox::new("mvd-c");
    let conf = l.conf(json!({"master": null}));
    let e = l.call(Command::Add, &conf, "c", Some(&c)).unwrap_err();
    assert_eq!(e.code, 7, "{}", e.msg);
    assert!(
        e.msg.starts_with("master:") && e.msg.contains("default route"),
        "{}",
        e.msg
    );
    l.host.ip(&["route", "add", "default", "dev", "lan0"]);
    let r = l.call(Command::Add, &conf, "c", Some(&c)).unwrap();
    let lan0 = Netlink::open_in(&l.host.netns())
        .unwrap()
        .link("lan0")
        .unwrap()
        .unwrap();
    let cl = Netlink::open_in(&c.netns())
        .unwrap()
        .link("eth0")
        .unwrap()
        .unwrap();
    assert_eq!(cl.parent, Some(lan0.index), "lan0 was chosen");
    assert!(ping(&c, LAN_IP.parse().unwrap(), PING));
    l.call(Command::Check, &with_prev(&conf, &r), "c", Some(&c))
        .unwrap();
    l.call(Command::Del, &conf, "c", Some(&c)).unwrap();
}

#[test]
fn bad_configs_are_refused_naming_the_key() {
    let l = Lan::new("mvx");
    let c = Sandbox::new("mvx-c");
    for (extra, code, key, needle) in [
        (json!({"mtu": 9000}), 7, "mtu", "1500"),
        (json!({"mode": "loud"}), 7, "mode", "loud"),
        (json!({"master": "nosuch0"}), 7, "master", "nosuch0"),
        (json!({"mac": "01:02:03:04:05:06"}), 7, "mac", "unicast"),
        (json!({"vlan": 5000}), 7, "vlan", "5000"),
    ] {
        let e = l
            .call(Command::Add, &l.conf(extra.clone()), "c", Some(&c))
            .unwrap_err();
        assert_eq!(e.code, code, "{extra}: {}", e.msg);
        assert!(e.msg.starts_with(key), "{extra}: {}", e.msg);
        assert!(e.msg.contains(needle), "{extra}: {}", e.msg);
        assert!(!c.has_link("eth0"));
    }
    assert_eq!(l.leases(), 0, "nothing was allocated");
    // At the master's MTU and below is fine.
    let conf = l.conf(json!({"mtu": 1400}));
    let r = l.call(Command::Add, &conf, "c", Some(&c)).unwrap();
    assert_eq!(r["interfaces"][0]["mtu"], 1400);
    assert!(c.ip(&["link", "show", "eth0"]).contains("mtu 1400"));
    l.call(Command::Check, &with_prev(&conf, &r), "c", Some(&c))
        .unwrap();
    // The name is taken now.
    let e = l.call(Command::Add, &conf, "c", Some(&c)).unwrap_err();
    assert!(e.msg.contains("already has an interface eth0"), "{}", e.msg);
    assert_eq!(l.leases(), 1);
}

#[test]
fn every_result_version() {
    let l = Lan::new("mvv");
    let c = Sandbox::new("mvv-c");
    for v in cni_shared::spec::Version::ALL {
        let conf = l.conf(json!({"cniVersion": v.as_str()}));
        let r = l.call(Command::Add, &conf, "c", Some(&c)).unwrap();
        assert_eq!(r["cniVersion"], v.as_str());
        match v.as_str() {
            // host-local hands addresses out round-robin: a new one each time.
            "0.1.0" | "0.2.0" => assert!(in_range(&r["ip4"]["ip"]), "{r}"),
            _ => {
                assert_eq!(r["interfaces"][0]["name"], "eth0", "{r}");
                assert_eq!(r["ips"][0]["interface"], 0, "{r}");
                assert!(in_range(&r["ips"][0]["address"]), "{r}");
            }
        }
        assert!(ping(&c, LAN_IP.parse().unwrap(), PING), "{v}");
        l.call(Command::Del, &conf, "c", Some(&c)).unwrap();
        assert!(!c.has_link("eth0"));
    }
}
