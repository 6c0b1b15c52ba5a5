//! ADD / CHECK / DEL / STATUS / GC and the result's shape.

use cni_shared::skel::Command;
use cni_shared::spec::Version;
use std::time::Duration;

use cni_tests::testkit::{
    bin_dir, plugin_path, wait_until, write_executable, Call, Sandbox, TempDir,
};
use serde_json::json;

use super::{add, call, call_if, conf, del, host_veths, ip_of, leases, pings};

#[test]
fn two_containers_ping_each_other_and_the_gateway() {
    let host = Sandbox::new("br-two");
    let (c1, c2) = (Sandbox::new("br-two-c1"), Sandbox::new("br-two-c2"));
    let data = TempDir::new("br-two");
    let c = conf(&data, "br-two", &["10.40.0.0/24"], json!({}));
    // The bridge takes no IPv6 router advertisements (a container's could give the host an
    // address or route on it), set on every ADD as the reference does.
    let accept_ra = "/proc/sys/net/ipv6/conf/br-two/accept_ra";
    let r1 = add(&host, &c, "ctr1", &c1);
    assert_eq!(host.exec("cat", &[accept_ra]).stdout, b"0\n");
    host.exec("sh", &["-c", &format!("echo 1 > {accept_ra}")]);
    let r2 = add(&host, &c, "ctr2", &c2);
    assert_eq!(host.exec("cat", &[accept_ra]).stdout, b"0\n");

    // Result: [bridge, host veth, container], every ip on interface 2.
    let ifs = r1["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 3, "{r1}");
    assert_eq!(ifs[0]["name"], "br-two");
    let veth = ifs[1]["name"].as_str().unwrap();
    assert!(
        veth.len() == 12
            && veth.starts_with("veth")
            && veth[4..].chars().all(|c| c.is_ascii_hexdigit()),
        "{veth}"
    );
    assert!(ifs[1].get("sandbox").is_none());
    assert_eq!(ifs[2]["name"], "eth0");
    assert_eq!(ifs[2]["sandbox"], c1.path().display().to_string());
    assert_eq!(
        ifs[2]["mac"],
        c1.ip(&["-j", "link", "show", "eth0"])
            .split("\"address\":\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
    );
    assert_eq!(r1["ips"][0]["interface"], 2);
    assert_eq!(r1["ips"][0]["gateway"], "10.40.0.1");
    assert!(host
        .ip(&["-o", "link", "show", veth])
        .contains("master br-two"));
    assert!(host
        .ip(&["-o", "addr", "show", "br-two"])
        .contains("10.40.0.1/24"));
    assert_eq!(
        host.exec("cat", &["/proc/sys/net/ipv4/ip_forward"]).stdout,
        b"1\n"
    );

    let (a1, a2) = (ip_of(&r1, 0), ip_of(&r2, 0));
    assert!(pings(&c1, a2), "ctr1 -> ctr2");
    assert!(pings(&c2, a1), "ctr2 -> ctr1");
    assert!(pings(&c1, "10.40.0.1".parse().unwrap()), "ctr1 -> gateway");

    let mut check = c.clone();
    check["prevResult"] = r1.clone();
    call(&host, Command::Check, &check, "ctr1", Some(&c1)).unwrap();

    del(&host, &c, "ctr1", Some(&c1));
    assert!(!c1.has_link("eth0"));
    assert!(!host.has_link(veth));
    del(&host, &c, "ctr1", Some(&c1));
    del(&host, &c, "ctr1", None);
    assert!(host.has_link("br-two"), "DEL never deletes the bridge");
    assert_eq!(leases(&data), vec![a2.to_string()]);
    assert!(pings(&c2, "10.40.0.1".parse().unwrap()), "ctr2 unaffected");
    del(&host, &c, "ctr2", Some(&c2));
    assert!(leases(&data).is_empty());
    assert!(host_veths(&host).is_empty());
}

#[test]
fn dual_stack_and_default_gateway() {
    let host = Sandbox::new("br-ds");
    let (c1, c2) = (Sandbox::new("br-ds-c1"), Sandbox::new("br-ds-c2"));
    let data = TempDir::new("br-ds");
    let c = conf(
        &data,
        "br-ds",
        &["10.41.0.0/24", "fd41::/64"],
        json!({"isDefaultGateway": true, "hairpinMode": true}),
    );
    let r1 = add(&host, &c, "ctr1", &c1);
    let r2 = add(&host, &c, "ctr2", &c2);
    assert_eq!(r1["ips"].as_array().unwrap().len(), 2, "{r1}");
    for (ctr, other) in [(&c1, &r2), (&c2, &r1)] {
        assert!(pings(ctr, ip_of(other, 0)), "v4");
        assert!(pings(ctr, ip_of(other, 1)), "v6");
    }
    assert!(pings(&c1, "fd41::1".parse().unwrap()), "v6 gateway");
    // isDefaultGateway: a default route per family; DAD off by default.
    assert!(c1.ip(&["route"]).contains("default via 10.41.0.1 dev eth0"));
    assert!(c1
        .ip(&["-6", "route"])
        .contains("default via fd41::1 dev eth0"));
    let routes: Vec<&str> = r1["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["dst"].as_str())
        .collect();
    assert_eq!(routes, ["0.0.0.0/0", "::/0"]);
    // DAD off by default, the link-local address included (hairpin mode echoes a probe back
    // to its sender), without touching the container's sysctls: one link-local address, the
    // kernel's EUI-64 one, added by the plugin without DAD, usable at once.
    for ctr in [&c1, &c2] {
        let ll = ctr.ip(&["-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"]);
        assert_eq!(ll.lines().count(), 1, "{ll}");
        assert!(ll.contains("fe80::") && ll.contains("nodad"), "{ll}");
        assert!(
            !ll.contains("tentative") && !ll.contains("dadfailed"),
            "{ll}"
        );
        assert_eq!(
            ctr.exec("cat", &["/proc/sys/net/ipv6/conf/eth0/accept_dad"])
                .stdout,
            b"1\n"
        );
    }
    assert_eq!(
        host.exec("cat", &["/proc/sys/net/ipv6/conf/all/forwarding"])
            .stdout,
        b"1\n"
    );
    let br = host.ip(&["-o", "addr", "show", "br-ds"]);
    assert_eq!(br.matches("10.41.0.1/24").count(), 1, "gateway once: {br}");
    assert_eq!(br.matches("fd41::1/64").count(), 1, "gateway once: {br}");
    del(&host, &c, "ctr1", Some(&c1));
    del(&host, &c, "ctr2", Some(&c2));
}

/// What bridge hands to and takes from its IPAM (run in-process here): requested addresses,
/// IPAM's own default route and DNS, and DAD when asked for.
#[test]
fn requested_addresses_ipam_routes_dns_and_dad() {
    let host = Sandbox::new("br-req");
    let (c1, c2, c3) = (
        Sandbox::new("br-req-c1"),
        Sandbox::new("br-req-c2"),
        Sandbox::new("br-req-c3"),
    );
    let data = TempDir::new("br-req");
    let resolv = data.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 10.44.0.53\nsearch ipam.example\n").unwrap();
    // IPAM returns a default route and DNS of its own; the plugin's `dns` replaces the latter.
    let mut c = conf(
        &data,
        "br-req",
        &["10.44.0.0/24", "fd44::/64"],
        json!({"isDefaultGateway": true, "enabledad": true,
               "dns": {"nameservers": ["10.44.0.54"]},
               "runtimeConfig": {"ips": ["10.44.0.77/24", "fd44::77/64"]}}),
    );
    // A route with CNI 1.1's keys: host-local passes them on, bridge applies them.
    let extra = json!({"dst": "192.0.2.0/24", "mtu": 1300, "advmss": 1260, "priority": 77,
                       "table": 100});
    c["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0"}, extra]);
    c["ipam"]["resolvConf"] = json!(resolv);
    let r1 = add(&host, &c, "ctr1", &c1);
    let in_result = r1["routes"].as_array().unwrap().iter();
    assert_eq!(
        in_result
            .filter(|r| r["dst"] == "192.0.2.0/24")
            .collect::<Vec<_>>(),
        [&extra],
        "{r1}"
    );
    let t100 = c1.ip(&["route", "show", "table", "100"]);
    assert!(
        t100.contains("192.0.2.0/24 via 10.44.0.1 dev eth0 metric 77 mtu 1300 advmss 1260"),
        "{t100}"
    );
    assert_eq!(ip_of(&r1, 0).to_string(), "10.44.0.77", "{r1}");
    assert_eq!(ip_of(&r1, 1).to_string(), "fd44::77", "{r1}");
    let a = c1.ip(&["-o", "addr", "show", "dev", "eth0"]);
    assert!(
        a.contains("10.44.0.77/24") && a.contains("fd44::77/64"),
        "{a}"
    );
    assert_eq!(r1["dns"], json!({"nameservers": ["10.44.0.54"]}), "{r1}");
    // IPv4: IPAM's default route only, once (via the range's gateway); IPv6: bridge's.
    let dsts: Vec<&str> = r1["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["dst"].as_str())
        .collect();
    assert_eq!(
        dsts.iter().filter(|d| **d == "0.0.0.0/0").count(),
        1,
        "{r1}"
    );
    assert_eq!(dsts.iter().filter(|d| **d == "::/0").count(), 1, "{r1}");
    let v4 = c1.ip(&["route", "show", "default"]);
    assert_eq!(v4.lines().count(), 1, "{v4}");
    assert!(v4.contains("via 10.44.0.1 dev eth0"), "{v4}");
    assert!(c1
        .ip(&["-6", "route", "show", "default"])
        .contains("via fd44::1 dev eth0"));
    // enabledad: the kernel's DAD stays on (the default turns it off).
    assert_ne!(
        c1.exec("cat", &["/proc/sys/net/ipv6/conf/eth0/accept_dad"])
            .stdout,
        b"0\n"
    );
    let mut check = c.clone();
    check["prevResult"] = r1.clone();
    call(&host, Command::Check, &check, "ctr1", Some(&c1)).unwrap();

    // args.cni.ips alone, then CNI_ARGS IP= alone (host-local takes the union of all three).
    let mut by_args = c.clone();
    by_args.as_object_mut().unwrap().remove("runtimeConfig");
    by_args["args"] = json!({"cni": {"ips": ["10.44.0.78"]}});
    by_args["ipam"]["ranges"] = json!([[{"subnet": "10.44.0.0/24"}]]);
    let r2 = add(&host, &by_args, "ctr2", &c2);
    assert_eq!(ip_of(&r2, 0).to_string(), "10.44.0.78", "{r2}");
    by_args.as_object_mut().unwrap().remove("args");
    let r3 = Call::new("bridge", Command::Add, by_args.clone())
        .container("ctr3", "eth0", Some(c3.path()))
        .args("IgnoreUnknown=1;IP=10.44.0.79;K8S_POD_NAME=x")
        .run_in(&host)
        .unwrap()
        .json();
    assert_eq!(ip_of(&r3, 0).to_string(), "10.44.0.79", "{r3}");
    // A requested address already held is refused, and nothing is left of the attempt.
    let c4 = Sandbox::new("br-req-c4");
    let e = Call::new("bridge", Command::Add, by_args.clone())
        .container("ctr4", "eth0", Some(c4.path()))
        .args("IP=10.44.0.79")
        .run_in(&host)
        .unwrap_err();
    assert!(e.msg.contains("10.44.0.79"), "{}", e.msg);
    assert!(!c4.has_link("eth0"));
    assert!(pings(&c2, ip_of(&r3, 0)) && pings(&c3, ip_of(&r1, 0)));
    del(&host, &by_args, "ctr3", Some(&c3));
    del(&host, &by_args, "ctr2", Some(&c2));
    del(&host, &c, "ctr1", Some(&c1));
    assert!(leases(&data).is_empty(), "{:?}", leases(&data));
}

/// Packets the container's `eth0` has sent.
fn tx_packets(ctr: &Sandbox) -> u64 {
    let j: serde_json::Value =
        serde_json::from_str(&ctr.ip(&["-j", "-s", "link", "show", "eth0"])).unwrap();
    j[0]["stats64"]["tx"]["packets"].as_u64().unwrap()
}

#[test]
fn ipv6_link_local_off_on_request() {
    let host = Sandbox::new("br-ll");
    let (c1, c2, c3) = (
        Sandbox::new("br-ll-c1"),
        Sandbox::new("br-ll-c2"),
        Sandbox::new("br-ll-c3"),
    );
    let data = TempDir::new("br-ll");
    let v4 = conf(&data, "br-ll", &["10.43.0.0/24"], json!({}));
    let mut off = v4.clone();
    off["disableIPv6LinkLocal"] = json!(true);
    // The default (the reference's behaviour): a link-local address, and with it the kernel's
    // own multicast (an MLD report as soon as the carrier is on) — the bridge floods it.
    add(&host, &v4, "ctr1", &c1);
    assert!(c1
        .ip(&["-6", "addr", "show", "dev", "eth0"])
        .contains("fe80::"));
    assert!(
        wait_until(Duration::from_secs(5), || tx_packets(&c1) > 0),
        "the default sends its MLD report"
    );

    // On request, without an IPv6 address: no link-local address, and nothing sent until
    // spoken to (the MLD report above goes out within a second); IPv4 works.
    let r2 = add(&host, &off, "ctr2", &c2);
    assert!(c2
        .ip(&["-d", "link", "show", "eth0"])
        .contains("addrgenmode none"));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(c2.ip(&["-6", "addr", "show", "dev", "eth0"]), "");
    assert_eq!(
        tx_packets(&c2),
        0,
        "a container without link-local stays quiet"
    );
    assert!(pings(&c2, "10.43.0.1".parse().unwrap()), "ctr2 -> gateway");
    assert!(pings(&c1, ip_of(&r2, 0)), "ctr1 -> ctr2");
    // CHECK holds the interface to it.
    let mut check = off.clone();
    check["prevResult"] = r2.clone();
    call(&host, Command::Check, &check, "ctr2", Some(&c2)).unwrap();
    c2.ip(&["link", "set", "eth0", "addrgenmode", "eui64"]);
    let e = call(&host, Command::Check, &check, "ctr2", Some(&c2)).unwrap_err();
    assert!(e.msg.contains("addrgenmode"), "{}", e.msg);
    c2.ip(&["link", "set", "eth0", "addrgenmode", "none"]);

    // With an IPv6 address the key changes nothing: the address needs its link-local peer
    // for neighbour discovery.
    let ds = {
        let mut c = conf(&data, "br-ll", &["10.43.0.0/24", "fd43::/64"], json!({}));
        c["disableIPv6LinkLocal"] = json!(true);
        c
    };
    add(&host, &ds, "ctr3", &c3);
    let a6 = c3.ip(&["-6", "addr", "show", "dev", "eth0"]);
    assert!(a6.contains("fe80::") && a6.contains("fd43::"), "{a6}");
    assert!(pings(&c3, "fd43::1".parse().unwrap()), "v6 gateway");
    del(&host, &ds, "ctr3", Some(&c3));
    del(&host, &off, "ctr2", Some(&c2));
    del(&host, &v4, "ctr1", Some(&c1));
}

#[test]
fn mtu_mac_and_dns() {
    let host = Sandbox::new("br-mtu");
    let ctr = Sandbox::new("br-mtu-c");
    let data = TempDir::new("br-mtu");
    let mut c = conf(
        &data,
        "br-mtu",
        &["10.42.0.0/24"],
        json!({"mtu": 1400, "dns": {"nameservers": ["10.42.0.53"]},
               "runtimeConfig": {"mac": "0a:58:0a:2a:00:99"},
               "args": {"cni": {"mac": "0a:58:0a:2a:00:98"}}}),
    );
    let r = add(&host, &c, "m1", &ctr);
    let link = ctr.ip(&["-o", "link", "show", "eth0"]);
    assert!(link.contains("mtu 1400"), "{link}");
    assert!(
        link.contains("0a:58:0a:2a:00:99"),
        "runtimeConfig.mac wins: {link}"
    );
    assert_eq!(r["interfaces"][2]["mtu"], 1400);
    assert_eq!(r["interfaces"][2]["mac"], "0a:58:0a:2a:00:99");
    assert_eq!(r["dns"]["nameservers"][0], "10.42.0.53");
    assert!(host
        .ip(&["-o", "link", "show", "br-mtu"])
        .contains("mtu 1400"));
    let mut check = c.clone();
    check["prevResult"] = r.clone();
    call(&host, Command::Check, &check, "m1", Some(&ctr)).unwrap();
    del(&host, &c, "m1", Some(&ctr));

    // CNI_ARGS MAC= when neither runtimeConfig nor args give one.
    c.as_object_mut().unwrap().remove("runtimeConfig");
    c.as_object_mut().unwrap().remove("args");
    let r = cni_tests::testkit::Call::new("bridge", Command::Add, c.clone())
        .container("m2", "eth0", Some(ctr.path()))
        .args("IgnoreUnknown=1;MAC=0a:58:0a:2a:00:97;K8S_POD_NAME=x")
        .run_in(&host)
        .unwrap()
        .json();
    assert_eq!(r["interfaces"][2]["mac"], "0a:58:0a:2a:00:97");
    del(&host, &c, "m2", Some(&ctr));
}

#[test]
fn check_fails_after_an_address_is_removed() {
    let host = Sandbox::new("br-chk");
    let ctr = Sandbox::new("br-chk-c");
    let data = TempDir::new("br-chk");
    let c = conf(&data, "br-chk", &["10.43.0.0/24"], json!({"ipMasq": true}));
    let r = add(&host, &c, "k1", &ctr);
    let mut check = c.clone();
    check["prevResult"] = r.clone();
    call(&host, Command::Check, &check, "k1", Some(&ctr)).unwrap();
    let addr = r["ips"][0]["address"].as_str().unwrap();
    ctr.ip(&["addr", "del", addr, "dev", "eth0"]);
    let e = call(&host, Command::Check, &check, "k1", Some(&ctr)).unwrap_err();
    assert!(e.msg.contains(addr), "{}", e.msg);
    del(&host, &c, "k1", Some(&ctr));
    let e = call(&host, Command::Check, &check, "k1", Some(&ctr)).unwrap_err();
    assert!(e.msg.contains("eth0"), "{}", e.msg);
}

#[test]
fn del_after_the_namespace_is_gone_frees_the_address() {
    let host = Sandbox::new("br-gone");
    let ctr = Sandbox::new("br-gone-c");
    let data = TempDir::new("br-gone");
    let c = conf(&data, "br-gone", &["10.44.0.0/24"], json!({}));
    add(&host, &c, "g1", &ctr);
    assert_eq!(leases(&data).len(), 1);
    let path = ctr.path().to_path_buf();
    ctr.delete();
    call_if(&host, Command::Del, &c, "g1", "eth0", Some(&path)).unwrap();
    assert!(leases(&data).is_empty());
    // The kernel tears a deleted namespace down asynchronously.
    assert!(
        cni_tests::testkit::wait_until(super::WAIT, || host_veths(&host).is_empty()),
        "the pair dies with the namespace"
    );
    call_if(&host, Command::Del, &c, "g1", "eth0", Some(&path)).unwrap();
}

#[test]
fn every_result_version() {
    let host = Sandbox::new("br-ver");
    let ctr = Sandbox::new("br-ver-c");
    let data = TempDir::new("br-ver");
    for v in Version::ALL {
        let mut c = conf(&data, "br-ver", &["10.45.0.0/24"], json!({}));
        c["cniVersion"] = json!(v.as_str());
        let r = add(&host, &c, "v", &ctr);
        assert_eq!(r["cniVersion"], v.as_str());
        if v >= Version::V0_3_0 {
            assert_eq!(r["interfaces"].as_array().map(Vec::len), Some(3), "{r}");
            assert_eq!(r["ips"][0]["interface"], 2, "{r}");
            assert_eq!(r["ips"][0]["gateway"], "10.45.0.1");
            assert_eq!(
                r["ips"][0].get("version").is_some(),
                v < Version::V1_0_0,
                "{r}"
            );
        } else {
            assert!(
                r["ip4"]["ip"].as_str().unwrap().starts_with("10.45.0."),
                "{r}"
            );
        }
        if v >= Version::V0_4_0 {
            let mut check = c.clone();
            check["prevResult"] = r.clone();
            call(&host, Command::Check, &check, "v", Some(&ctr)).unwrap();
        }
        del(&host, &c, "v", Some(&ctr));
        assert!(leases(&data).is_empty(), "{v}");
    }
}

#[test]
fn fifty_parallel_adds_on_a_new_bridge() {
    let host = Sandbox::new("br-par");
    let data = TempDir::new("br-par");
    // ipMasq too: the first ADDs race to create the nftables table as well.
    let c = conf(&data, "br-par", &["10.46.0.0/24"], json!({"ipMasq": true}));
    let ctrs: Vec<Sandbox> = (0..50)
        .map(|i| Sandbox::new(&format!("br-par-{i}")))
        .collect();
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = ctrs
            .iter()
            .enumerate()
            .map(|(i, ctr)| {
                let (host, c) = (&host, &c);
                s.spawn(move || call(host, Command::Add, c, &format!("p{i}"), Some(ctr)))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut addrs = std::collections::HashSet::new();
    for (i, r) in results.iter().enumerate() {
        let r = r.as_ref().unwrap_or_else(|e| panic!("ADD p{i}: {e}"));
        assert!(addrs.insert(ip_of(r, 0)), "duplicate address");
    }
    assert_eq!(host_veths(&host).len(), 50);
    let br = host.ip(&["-o", "addr", "show", "br-par"]);
    assert_eq!(br.matches("10.46.0.1/24").count(), 1, "{br}");
    assert!(pings(&ctrs[0], ip_of(results[49].as_ref().unwrap(), 0)));
    let rules = super::nft_ruleset(&host);
    assert_eq!(
        rules.matches("comment \"cni:brnet/p").count(),
        50,
        "{rules}"
    );
    assert_eq!(
        rules.matches("saddr vmap").count(),
        2,
        "set up once: {rules}"
    );
    for (i, ctr) in ctrs.iter().enumerate() {
        del(&host, &c, &format!("p{i}"), Some(ctr));
    }
    assert!(leases(&data).is_empty());
}

#[test]
fn status_and_gc() {
    let host = Sandbox::new("br-gc");
    let (c1, c2) = (Sandbox::new("br-gc-c1"), Sandbox::new("br-gc-c2"));
    let data = TempDir::new("br-gc");
    let c = conf(&data, "br-gc", &["10.47.0.0/24"], json!({"ipMasq": true}));
    call(&host, Command::Status, &c, "", None).unwrap();
    let r1 = add(&host, &c, "keep", &c1);
    let r2 = add(&host, &c, "stale", &c2);
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    // GC needs no nft engine (`CNI_NFT=none`, as on a host whose nft binary is gone): it asks
    // the kernel.
    let gc_without_nft = |gc: &serde_json::Value| {
        Call::new("bridge", Command::Gc, gc.clone())
            .env("CNI_NFT", "none")
            .run_in(&host)
            .unwrap()
    };
    gc_without_nft(&gc);
    let rules = super::nft_ruleset(&host);
    assert!(rules.contains("cni:brnet/keep/eth0"), "{rules}");
    assert!(!rules.contains("cni:brnet/stale/eth0"), "{rules}");
    assert_eq!(leases(&data), vec![ip_of(&r1, 0).to_string()]);
    let _ = r2;
    del(&host, &c, "keep", Some(&c1));
    assert!(!super::nft_ruleset(&host).contains("cni:brnet/keep"));
    // With no attachment left, GC also removes the network's shared chain.
    assert!(super::nft_ruleset(&host).contains("comment \"cni:brnet 10.47.0.0/24\""));
    gc["cni.dev/valid-attachments"] = json!([]);
    gc_without_nft(&gc);
    let rules = super::nft_ruleset(&host);
    assert!(!rules.contains("cni:brnet"), "{rules}");
    assert!(
        rules.contains("table inet cni_masq"),
        "the table stays: {rules}"
    );
}

#[test]
fn failure_after_ipam_undoes_everything() {
    let host = Sandbox::new("br-rb");
    let ctr = Sandbox::new("br-rb-c");
    let data = TempDir::new("br-rb");
    // The bridge already has another address in the subnet: the gateway step fails after IPAM.
    host.ip(&["link", "add", "br-rb", "type", "bridge"]);
    host.ip(&["addr", "add", "10.48.0.200/24", "dev", "br-rb"]);
    // An address in another subnet is no conflict (the reference would fail here too).
    host.ip(&["addr", "add", "10.58.0.1/24", "dev", "br-rb"]);
    host.ip(&["addr", "add", "fd58::1/64", "dev", "br-rb"]);
    let c = conf(&data, "br-rb", &["10.48.0.0/24"], json!({"ipMasq": true}));
    let e = call(&host, Command::Add, &c, "rb", Some(&ctr)).unwrap_err();
    assert_eq!(e.code, 7, "{}", e.msg);
    assert!(e.msg.contains("forceAddress"), "{}", e.msg);
    assert!(leases(&data).is_empty(), "IPAM released");
    assert!(
        !ctr.has_link("eth0") && host_veths(&host).is_empty(),
        "veth removed"
    );
    assert!(!super::nft_ruleset(&host).contains("cni:brnet/rb"));
    // forceAddress replaces it, and every other IPv4 address, as the reference does; IPv6
    // addresses of other subnets stay.
    let mut f = c.clone();
    f["forceAddress"] = json!(true);
    add(&host, &f, "rb", &ctr);
    let br = host.ip(&["-o", "addr", "show", "br-rb"]);
    assert!(
        br.contains("10.48.0.1/24") && !br.contains("10.48.0.200") && !br.contains("10.58.0.1"),
        "{br}"
    );
    assert!(br.contains("fd58::1/64"), "{br}");
    del(&host, &f, "rb", Some(&ctr));
    // Two IPv4 range sets: forceAddress keeps both of this ADD's gateways.
    let mut two = f.clone();
    two["ipam"]["ranges"] = json!([[{"subnet": "10.48.0.0/24"}], [{"subnet": "10.68.0.0/24"}]]);
    add(&host, &two, "rb2", &ctr);
    let br = host.ip(&["-o", "addr", "show", "br-rb"]);
    assert!(
        br.contains("10.48.0.1/24") && br.contains("10.68.0.1/24"),
        "{br}"
    );
    del(&host, &two, "rb2", Some(&ctr));
}

#[test]
fn an_existing_interface_is_an_error() {
    let host = Sandbox::new("br-ex");
    let ctr = Sandbox::new("br-ex-c");
    let data = TempDir::new("br-ex");
    ctr.ip(&["link", "add", "eth0", "type", "bridge"]);
    let c = conf(&data, "br-ex", &["10.49.0.0/24"], json!({}));
    let e = call(&host, Command::Add, &c, "x", Some(&ctr)).unwrap_err();
    assert!(
        e.msg.contains("CNI_IFNAME") && e.msg.contains("eth0"),
        "{}",
        e.msg
    );
    assert!(leases(&data).is_empty());
    assert!(host_veths(&host).is_empty());
}

/// host-local runs inside bridge when the `host-local` in CNI_PATH is the same build (a copy
/// counts: the proof is the build ID in its ELF note, not its path); a wrapper script, or our
/// binary with another build ID, is executed. Either way the result is the same.
#[test]
fn host_local_runs_in_process_only_when_it_is_the_same_build() {
    let host = Sandbox::new("br-bi");
    let ctr = Sandbox::new("br-bi-c");
    let data = TempDir::new("br-bi");
    let work = TempDir::new("br-bi-bins");
    // One address only, so that every ADD gets the same result.
    let range = json!([[{"subnet": "10.49.0.0/24", "rangeStart": "10.49.0.10",
        "rangeEnd": "10.49.0.10"}]]);
    let mut c = conf(&data, "br-bi", &[], json!({"isDefaultGateway": true}));
    c["ipam"]["ranges"] = range;
    c["ipam"]["routes"] = json!([{"dst": "192.0.2.0/24"}]);
    let log = work.path().join("log");
    let real = plugin_path("host-local");

    // Copies of our host-local: as built, and with one byte of its build ID changed.
    let copy = work.path().join("copy");
    let other = work.path().join("other");
    let wrapped = work.path().join("wrapped");
    for d in [&copy, &other, &wrapped] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::copy(&real, copy.join("host-local")).unwrap();
    let mut bytes = std::fs::read(&real).unwrap();
    let at = note_desc_offset(&bytes).expect("host-local carries its build ID note");
    bytes[at] ^= 0xff;
    write_executable(&other.join("host-local"), &bytes);
    let calls = work.path().join("calls");
    write_executable(
        &wrapped.join("host-local"),
        format!(
            "#!/bin/sh\necho \"$CNI_COMMAND\" >> {}\nexec {}\n",
            calls.display(),
            real.display()
        ),
    );

    // ADD and DEL with host-local found in `dir`; the log of both, and the ADD's result.
    let cycle = |dir: &std::path::Path| {
        let _ = std::fs::remove_file(&log);
        let run = |cmd| {
            let mut call = Call::new("bridge", cmd, c.clone())
                .container("bi", "eth0", Some(ctr.path()))
                .env("CNI_LOG_LEVEL", "debug")
                .env("CNI_LOG_FILE", &log.display().to_string());
            call.env.cni_path = vec![dir.to_path_buf()];
            call.run_in(&host)
                .unwrap_or_else(|e| panic!("{cmd:?} with {}: {e}", dir.display()))
        };
        let r = run(Command::Add).json();
        assert_eq!(leases(&data), vec!["10.49.0.10"], "{}", dir.display());
        run(Command::Del);
        assert!(leases(&data).is_empty(), "{}", dir.display());
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text, r)
    };
    let in_process = |log: &str| {
        let inside = log.matches("running the IPAM plugin in-process").count();
        let executed = log.matches("delegating").count();
        match (inside, executed) {
            (2, 0) => true,
            (0, 2) => false,
            _ => panic!("ADD and DEL should both delegate the same way:\n{log}"),
        }
    };

    let (log_built, r_built) = cycle(&bin_dir());
    assert!(in_process(&log_built), "the built host-local:\n{log_built}");
    let (log_copy, r_copy) = cycle(&copy);
    assert!(in_process(&log_copy), "a copy of it:\n{log_copy}");
    let (log_other, r_other) = cycle(&other);
    assert!(!in_process(&log_other), "another build ID:\n{log_other}");
    let (log_wrapped, r_wrapped) = cycle(&wrapped);
    assert!(!in_process(&log_wrapped), "a wrapper:\n{log_wrapped}");
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap(),
        "ADD\nDEL\n",
        "the wrapper ran for ADD and DEL"
    );
    for r in [&r_copy, &r_other, &r_wrapped] {
        for key in ["ips", "routes", "dns"] {
            assert_eq!(r[key], r_built[key], "{key}: {r} vs {r_built}");
        }
    }
    assert_eq!(r_built["ips"][0]["address"], "10.49.0.10/24");
}

/// Where the 32-byte description of our build-ID note starts in an executable: after the
/// note header (namesz 7, descsz 32, type) and the padded owner name "cni-rs".
fn note_desc_offset(bytes: &[u8]) -> Option<usize> {
    let name = b"cni-rs\0\0";
    let mut header = 7u32.to_ne_bytes().to_vec();
    header.extend_from_slice(&32u32.to_ne_bytes());
    (12..bytes.len().saturating_sub(name.len() + 32))
        .find(|&i| bytes[i..].starts_with(name) && bytes[i - 12..].starts_with(&header))
        .map(|i| i + name.len())
}

/// A delegated ADD that fails is followed by the IPAM plugin's DEL before the error is
/// returned (the spec asks it of the plugin that delegated), in either order of the steps: an
/// IPAM plugin run beside the veth's creation (`host-local`) and one run after it.
#[test]
fn a_failed_ipam_add_is_followed_by_its_del() {
    let host = Sandbox::new("br-fi");
    let ctr = Sandbox::new("br-fi-c");
    let data = TempDir::new("br-fi");
    let work = TempDir::new("br-fi-bins");
    let calls = work.path().join("calls");
    // Logs each verb; ADD fails with a CNI error of its own.
    let script = format!(
        "#!/bin/sh\necho \"$CNI_COMMAND\" >> {}\ncat >/dev/null\n\
         if [ \"$CNI_COMMAND\" = ADD ]; then\n\
         echo '{{\"cniVersion\":\"1.1.0\",\"code\":11,\"msg\":\"pool busy\"}}'\nexit 1\nfi\n",
        calls.display()
    );
    for name in ["host-local", "slow-ipam"] {
        write_executable(&work.path().join(name), &script);
    }
    for name in ["host-local", "slow-ipam"] {
        let _ = std::fs::remove_file(&calls);
        let mut c = conf(&data, "br-fi", &["10.47.0.0/24"], json!({}));
        c["ipam"]["type"] = json!(name);
        let mut call =
            Call::new("bridge", Command::Add, c.clone()).container("fi", "eth0", Some(ctr.path()));
        call.env.cni_path = vec![work.path().to_path_buf(), bin_dir()];
        let e = call.run_in(&host).unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (11, "pool busy"), "{name}");
        assert_eq!(
            std::fs::read_to_string(&calls).unwrap(),
            "ADD\nDEL\n",
            "{name}: DEL after the failed ADD, once"
        );
        assert!(!ctr.has_link("eth0"), "{name}");
        assert!(host_veths(&host).is_empty(), "{name}");
    }
}

/// An interface plugin given a prevResult passes it on (the spec's MUST): its interfaces, IPs,
/// routes and other keys first, ours after with `ips[].interface` pointing at our interface.
/// CHECK and DEL then work from that merged result.
#[test]
fn a_prev_result_is_passed_on_with_ours_after_it() {
    let host = Sandbox::new("br-pr");
    let ctr = Sandbox::new("br-pr-c");
    let data = TempDir::new("br-pr");
    let mut c = conf(&data, "br-pr", &["10.46.0.0/24"], json!({"ipMasq": true}));
    // What an earlier plugin of the chain made: tap0, its address and a route over it.
    ctr.ip(&[
        "link", "add", "tap0", "type", "veth", "peer", "name", "tap0p",
    ]);
    ctr.ip(&["link", "set", "tap0", "up"]);
    ctr.ip(&["addr", "add", "192.168.5.5/24", "dev", "tap0"]);
    ctr.ip(&["route", "add", "192.168.6.0/24", "dev", "tap0"]);
    c["prevResult"] = json!({"cniVersion": "1.1.0",
        "interfaces": [{"name": "tap0", "sandbox": ctr.path()}],
        "ips": [{"address": "192.168.5.5/24", "interface": 0}],
        "routes": [{"dst": "192.168.6.0/24"}], "custom": "x"});
    let r = add(&host, &c, "pr", &ctr);
    let names: Vec<&str> = r["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names.len(), 4, "{r}");
    assert_eq!(
        (names[0], names[1], names[3]),
        ("tap0", "br-pr", "eth0"),
        "{r}"
    );
    assert_eq!(r["ips"][0]["address"], "192.168.5.5/24", "{r}");
    assert_eq!(r["ips"][1]["interface"], 3, "{r}");
    assert_eq!(ip_of(&r, 1).to_string(), "10.46.0.2", "{r}");
    assert_eq!(r["routes"][0]["dst"], "192.168.6.0/24", "{r}");
    assert_eq!(r["custom"], "x", "{r}");

    let mut check = c.clone();
    check["prevResult"] = r.clone();
    call(&host, Command::Check, &check, "pr", Some(&ctr)).unwrap();
    // A route of the result that is nowhere is still a CHECK failure.
    let mut gone = check.clone();
    gone["prevResult"]["routes"][0]["dst"] = json!("192.168.7.0/24");
    let e = call(&host, Command::Check, &gone, "pr", Some(&ctr)).unwrap_err();
    assert!(e.msg.contains("192.168.7.0/24"), "{}", e.msg);
    del(&host, &check, "pr", Some(&ctr));
    assert!(leases(&data).is_empty());
    assert!(!ctr.has_link("eth0") && host_veths(&host).is_empty());
    assert!(!super::nft_ruleset(&host).contains("cni:br-pr/pr"));
}
