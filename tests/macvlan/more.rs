//! macvlan: L2-only, MAC sources, linkInContainer, bcqueuelen, passthru, vlan, no IPv6
//! link-local on request, STATUS, GC and rollback.

use std::time::Duration;

use cni_shared::netlink::{attachment_temp_name, Netlink};
use cni_shared::skel::Command;
use cni_tests::testkit::{ping, Sandbox};
use serde_json::json;

use super::{with_prev, Lan, LAN_IP, PING};

#[test]
fn without_ipam_the_interface_is_up_without_addresses() {
    let l = Lan::new("mvl2");
    let c = Sandbox::new("mvl2-c");
    let conf = l.conf(json!({"ipam": null, "dns": {"nameservers": ["10.55.0.1"]}}));
    let r = l.call(Command::Add, &conf, "c", Some(&c)).unwrap();
    assert!(
        r.get("ips")
            .is_none_or(|v| v.as_array().unwrap().is_empty()),
        "{r}"
    );
    assert_eq!(r["dns"]["nameservers"][0], "10.55.0.1", "{r}");
    let shown = c.ip(&["-4", "addr", "show", "eth0"]);
    assert!(!shown.contains("inet "), "{shown}");
    assert!(c.ip(&["link", "show", "eth0"]).contains(",UP"));
    l.call(Command::Check, &with_prev(&conf, &r), "c", Some(&c))
        .unwrap();
    l.call(Command::Del, &conf, "c", Some(&c)).unwrap();
    assert!(!c.has_link("eth0"));
}

#[test]
fn mac_from_runtime_config_then_cni_args_then_the_key() {
    let l = Lan::new("mvm");
    let c = Sandbox::new("mvm-c");
    let mac_of = |c: &Sandbox| {
        Netlink::open_in(&c.netns())
            .unwrap()
            .link("eth0")
            .unwrap()
            .unwrap()
            .mac
            .unwrap()
            .to_string()
    };
    let key = l.conf(json!({"mac": "02:55:00:00:00:01"}));
    let cases = [
        (key.clone(), "", "02:55:00:00:00:01"),
        // host-local refuses a key it does not know, so the runtime sets IgnoreUnknown.
        (
            key.clone(),
            "IgnoreUnknown=1;MAC=02:55:00:00:00:02",
            "02:55:00:00:00:02",
        ),
        (
            l.conf(json!({"mac": "02:55:00:00:00:01",
                          "runtimeConfig": {"mac": "02:55:00:00:00:03"}})),
            "IgnoreUnknown=1;MAC=02:55:00:00:00:02",
            "02:55:00:00:00:03",
        ),
    ];
    for (conf, args, want) in cases {
        let r = l
            .call_args(Command::Add, &conf, "c", Some(&c), args)
            .unwrap();
        assert_eq!(r["interfaces"][0]["mac"], want);
        assert_eq!(mac_of(&c), want);
        l.call(Command::Check, &with_prev(&conf, &r), "c", Some(&c))
            .unwrap();
        l.call(Command::Del, &conf, "c", Some(&c)).unwrap();
    }
}

#[test]
fn link_in_container_uses_a_master_inside_the_container() {
    let l = Lan::new("mvi");
    let c = Sandbox::new("mvi-c");
    // The container's own uplink to the LAN.
    c.link_to("up0", &l.lan, "eth1");
    l.lan.ip(&["addr", "add", "10.56.0.1/24", "dev", "eth1"]);
    let mut conf = l.conf(json!({"master": "up0", "linkInContainer": true}));
    conf["ipam"]["ranges"] = json!([[{"subnet": "10.56.0.0/24", "rangeStart": "10.56.0.10"}]]);
    let r = l.call(Command::Add, &conf, "c", Some(&c)).unwrap();
    let cnl = Netlink::open_in(&c.netns()).unwrap();
    let up0 = cnl.link("up0").unwrap().unwrap();
    let eth0 = cnl.link("eth0").unwrap().unwrap();
    assert_eq!(eth0.parent, Some(up0.index));
    assert_eq!(
        eth0.link_netnsid, None,
        "master and child share the container"
    );
    assert!(ping(&c, "10.56.0.1".parse().unwrap(), PING));
    l.call(Command::Check, &with_prev(&conf, &r), "c", Some(&c))
        .unwrap();
    // The host has no up0: without linkInContainer the master is missing.
    let e = l
        .call(
            Command::Add,
            &l.conf(json!({"master": "up0"})),
            "d",
            Some(&c),
        )
        .unwrap_err();
    assert!(
        e.msg.contains("\"up0\"") && e.msg.contains("host"),
        "{}",
        e.msg
    );
    l.call(Command::Del, &conf, "c", Some(&c)).unwrap();
    assert!(!c.has_link("eth0") && c.has_link("up0"));
}

#[test]
fn bcqueuelen_is_applied() {
    let l = Lan::new("mvq");
    let c = Sandbox::new("mvq-c");
    let conf = l.conf(json!({"bcqueuelen": 100}));
    match l.call(Command::Add, &conf, "c", Some(&c)) {
        Ok(_) => {
            let shown = c.ip(&["-d", "link", "show", "eth0"]);
            assert!(shown.contains("bcqueuelen 100"), "{shown}");
        }
        Err(e) if e.code == 7 && e.msg.starts_with("bcqueuelen") => {
            assert!(!c.has_link("eth0"), "rolled back");
            eprintln!(
                "SKIPPED: bcqueuelen: the kernel does not support it: {}",
                e.msg
            );
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn passthru_takes_the_master_for_itself() {
    let l = Lan::new("mvt");
    let (c1, c2) = (Sandbox::new("mvt-c1"), Sandbox::new("mvt-c2"));
    let conf = l.conf(json!({"mode": "passthru"}));
    let e = l
        .call_args(
            Command::Add,
            &conf,
            "c1",
            Some(&c1),
            "MAC=02:55:00:00:00:09",
        )
        .unwrap_err();
    assert_eq!(e.code, 7, "{}", e.msg);
    assert!(e.msg.contains("passthru"), "{}", e.msg);
    let r = l.call(Command::Add, &conf, "c1", Some(&c1)).unwrap();
    let lan0_mac = Netlink::open_in(&l.host.netns())
        .unwrap()
        .link("lan0")
        .unwrap()
        .unwrap()
        .mac
        .unwrap();
    assert_eq!(
        r["interfaces"][0]["mac"],
        lan0_mac.to_string(),
        "the master's MAC"
    );
    assert!(ping(&c1, LAN_IP.parse().unwrap(), PING));
    let e = l.call(Command::Add, &conf, "c2", Some(&c2)).unwrap_err();
    assert!(e.msg.contains("needs the master to itself"), "{}", e.msg);
    assert!(!c2.has_link("eth0"));
    assert_eq!(
        l.leases(),
        1,
        "the failed ADD released nothing it did not take"
    );
    l.call(Command::Check, &with_prev(&conf, &r), "c1", Some(&c1))
        .unwrap();
}

#[test]
fn vlan_sub_interface_or_a_clear_error() {
    let l = Lan::new("mvq8");
    let (c1, c2) = (Sandbox::new("mvq8-c1"), Sandbox::new("mvq8-c2"));
    let conf = l.conf(json!({"vlan": 10}));
    let r1 = match l.call(Command::Add, &conf, "c1", Some(&c1)) {
        Ok(r) => r,
        Err(e) if e.code == 7 && e.msg.starts_with("vlan:") && e.msg.contains("802.1q") => {
            assert!(!l.host.has_link("lan0.10") && !c1.has_link("eth0"));
            assert_eq!(l.leases(), 0);
            eprintln!(
                "SKIPPED: vlan: this kernel has no 802.1q support: {}",
                e.msg
            );
            return;
        }
        Err(e) => panic!("{e}"),
    };
    // The LAN side of VLAN 10.
    l.lan.ip(&[
        "link", "add", "link", "eth0", "name", "eth0.10", "type", "vlan", "id", "10",
    ]);
    l.lan.ip(&["link", "set", "eth0.10", "up"]);
    l.lan
        .ip(&["addr", "add", "10.55.10.1/24", "dev", "eth0.10"]);
    c1.ip(&["addr", "add", "10.55.10.2/24", "dev", "eth0"]);
    assert!(
        ping(&c1, "10.55.10.1".parse().unwrap(), PING),
        "tagged traffic"
    );
    assert!(l
        .host
        .ip(&["-d", "link", "show", "lan0.10"])
        .contains("alias cni-macvlan"));
    l.call(Command::Check, &with_prev(&conf, &r1), "c1", Some(&c1))
        .unwrap();
    l.call(Command::Add, &conf, "c2", Some(&c2)).unwrap();
    l.call(Command::Del, &conf, "c1", Some(&c1)).unwrap();
    assert!(l.host.has_link("lan0.10"), "c2 still uses it");
    l.call(Command::Del, &conf, "c2", Some(&c2)).unwrap();
    assert!(!l.host.has_link("lan0.10"), "removed with its last user");
    // One we did not create stays.
    l.host.ip(&[
        "link", "add", "link", "lan0", "name", "lan0.10", "type", "vlan", "id", "10",
    ]);
    l.call(Command::Add, &conf, "c1", Some(&c1)).unwrap();
    l.call(Command::Del, &conf, "c1", Some(&c1)).unwrap();
    assert!(l.host.has_link("lan0.10"), "not ours: left alone");
}

#[test]
fn status_and_gc() {
    let l = Lan::new("mvs");
    let (c1, c2) = (Sandbox::new("mvs-c1"), Sandbox::new("mvs-c2"));
    let conf = l.conf(json!({}));
    l.call(Command::Status, &conf, "", None).unwrap();
    let e = l
        .call(
            Command::Status,
            &l.conf(json!({"master": "gone0"})),
            "",
            None,
        )
        .unwrap_err();
    assert_eq!(e.code, 50, "{}", e.msg);
    assert!(e.msg.contains("gone0"), "{}", e.msg);
    l.call(Command::Status, &l.conf(json!({"master": null})), "", None)
        .unwrap();

    l.call(Command::Add, &conf, "c1", Some(&c1)).unwrap();
    l.call(Command::Add, &conf, "c2", Some(&c2)).unwrap();
    assert_eq!(l.leases(), 2);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
    l.call(Command::Gc, &gc, "", None).unwrap();
    assert_eq!(l.leases(), 1, "c2's lease was collected");
}

#[test]
fn a_failed_add_leaves_nothing_behind() {
    let l = Lan::new("mvr");
    let c = Sandbox::new("mvr-c");
    // IPAM succeeds, then the route cannot be added (its gateway is not on-link).
    let mut conf = l.conf(json!({}));
    conf["ipam"]["routes"] = json!([{"dst": "192.168.99.0/24", "gw": "10.99.99.1"}]);
    let e = l.call(Command::Add, &conf, "c", Some(&c)).unwrap_err();
    assert!(e.msg.contains("192.168.99.0/24"), "{}", e.msg);
    assert!(!c.has_link("eth0"), "the macvlan was deleted");
    let links = c.ip(&["-o", "link", "show"]);
    assert_eq!(links.lines().count(), 1, "only lo is left: {links}");
    assert_eq!(l.leases(), 0, "the lease was released");
    // An unknown IPAM plugin fails before anything is left either.
    let e = l
        .call(
            Command::Add,
            &l.conf(json!({"ipam": {"type": "nope"}})),
            "c",
            Some(&c),
        )
        .unwrap_err();
    assert!(e.msg.contains("nope"), "{}", e.msg);
    assert!(!c.has_link("eth0"));
    assert!(!ping(
        &c,
        LAN_IP.parse().unwrap(),
        Duration::from_millis(100)
    ));
}

/// An ADD killed between creating the macvlan and renaming it leaves it under the attachment's
/// temporary name: DEL removes it, and so does a retried ADD (with random names it stayed in
/// the container for ever; found by the kill storm in tests/reliability).
#[test]
fn an_add_killed_before_its_rename_leaves_nothing_behind() {
    let l = Lan::new("mvk");
    let c = Sandbox::new("mvk-c");
    let conf = l.conf(json!({}));
    let tmp = attachment_temp_name("k1", "eth0");
    let leftover = || {
        l.host.ip(&[
            "link",
            "add",
            "link",
            "lan0",
            "name",
            &tmp,
            "netns",
            c.name(),
            "type",
            "macvlan",
        ]);
        assert!(c.has_link(&tmp));
    };
    leftover();
    l.call(Command::Del, &conf, "k1", Some(&c)).unwrap();
    assert!(!c.has_link(&tmp), "DEL removes the leftover");
    leftover();
    l.call(Command::Add, &conf, "k1", Some(&c)).unwrap();
    assert!(!c.has_link(&tmp), "a retried ADD replaces the leftover");
    assert!(c.has_link("eth0"));
    l.call(Command::Del, &conf, "k1", Some(&c)).unwrap();
    assert!(!c.has_link("eth0"));
    assert_eq!(l.leases(), 0);
}

#[test]
fn ipv6_link_local_off_on_request() {
    let l = Lan::new("mvll");
    let (c1, c2) = (Sandbox::new("mvll-c1"), Sandbox::new("mvll-c2"));
    let v4 = l.conf(json!({}));
    let off = l.conf(json!({"disableIPv6LinkLocal": true}));
    // The default keeps the kernel's link-local address, as the reference does.
    l.call(Command::Add, &v4, "c1", Some(&c1)).unwrap();
    assert!(c1
        .ip(&["-6", "addr", "show", "dev", "eth0"])
        .contains("fe80::"));

    // On request, without an IPv6 address: none at all (the kernel would add it as the
    // interface comes up, so look after that), and IPv4 still works.
    let r2 = l.call(Command::Add, &off, "c2", Some(&c2)).unwrap();
    assert!(c2
        .ip(&["-d", "link", "show", "eth0"])
        .contains("addrgenmode none"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c2.ip(&["-6", "addr", "show", "dev", "eth0"]), "");
    assert!(ping(&c2, LAN_IP.parse().unwrap(), PING), "container to LAN");
    // CHECK holds the interface to it.
    let check = with_prev(&off, &r2);
    l.call(Command::Check, &check, "c2", Some(&c2)).unwrap();
    c2.ip(&["link", "set", "eth0", "addrgenmode", "eui64"]);
    let e = l.call(Command::Check, &check, "c2", Some(&c2)).unwrap_err();
    assert!(e.msg.contains("addrgenmode"), "{}", e.msg);
    l.call(Command::Del, &off, "c2", Some(&c2)).unwrap();
    l.call(Command::Del, &v4, "c1", Some(&c1)).unwrap();
    assert!(!c2.has_link("eth0") && !c1.has_link("eth0"));
}

/// A reused address: the LAN still has another MAC for it. The container's ADD tells the LAN
/// its new MAC at once, in both families (the kernel's gratuitous ARP by `arp_notify`, its
/// unsolicited neighbour advertisement by `ndisc_notify`); DAD is off through `nodad`
/// addresses, the link-local one included, not through `accept_dad`.
#[test]
fn dual_stack_tells_the_lan_the_new_mac_of_a_reused_address() {
    let l = Lan::new("mvds");
    let c = Sandbox::new("mvds-c");
    l.lan
        .ip(&["-6", "addr", "add", "fd55::1/64", "dev", "eth0", "nodad"]);
    let conf = l.conf(json!({"ipam": {"type": "host-local", "dataDir": l.data.path(),
        "ranges": [[{"subnet": "10.55.0.0/24", "rangeStart": "10.55.0.10", "rangeEnd": "10.55.0.50"}],
                   [{"subnet": "fd55::/64", "rangeStart": "fd55::10", "rangeEnd": "fd55::50"}]]}}));
    let old = "02:00:00:00:00:99";
    for a in ["10.55.0.10", "fd55::10"] {
        l.lan.ip(&[
            "neigh", "replace", a, "lladdr", old, "dev", "eth0", "nud", "stale",
        ]);
    }
    let r = l.call(Command::Add, &conf, "c", Some(&c)).unwrap();
    let mac = r["interfaces"][0]["mac"].as_str().unwrap().to_string();
    assert_eq!(r["ips"][1]["address"], "fd55::10/64", "{r}");
    let learnt = |a: &str| {
        l.lan
            .ip(&["neigh", "show", a, "dev", "eth0"])
            .contains(&mac)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !(learnt("10.55.0.10") && learnt("fd55::10")) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for a in ["10.55.0.10", "fd55::10"] {
        let n = l.lan.ip(&["neigh", "show", a, "dev", "eth0"]);
        assert!(n.contains(&mac), "the LAN has {n:?} for {a}, not {mac}");
    }
    let sysctl = |key: &str| {
        let out = c.exec("cat", &[&format!("/proc/sys/net/ipv6/conf/eth0/{key}")]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(sysctl("ndisc_notify"), "1");
    assert_eq!(sysctl("accept_dad"), "1");
    let ll = c.ip(&["-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"]);
    assert!(ll.contains("nodad") && !ll.contains("tentative"), "{ll}");
    assert!(
        ping(&c, "fd55::1".parse().unwrap(), PING),
        "container to LAN, IPv6"
    );
    l.call(Command::Check, &with_prev(&conf, &r), "c", Some(&c))
        .unwrap();
    l.call(Command::Del, &conf, "c", Some(&c)).unwrap();
    assert_eq!(l.leases(), 0);
}
