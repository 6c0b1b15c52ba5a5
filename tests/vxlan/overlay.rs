//! Who reaches whom over the overlay: two hosts, a three-host mesh, full-size frames, an IPv6
//! underlay, multicast group mode, containers without IPv6 link-local on request.

use cni_shared::skel::Command;
use cni_tests::testkit::Sandbox;
use serde_json::json;

use super::{
    add, blocked, call, check, del, ip_of, mtu, pair, ping_df, pings, skipped, switched, Host,
};

#[test]
fn two_hosts_ping_over_the_overlay_with_defaults() {
    let (a, b) = pair("vx-two");
    // Underlay and local come from the default route (inside the sandbox host only).
    for h in [&a, &b] {
        h.sb.ip(&[
            "route",
            "add",
            "default",
            "via",
            "192.0.2.254",
            "dev",
            "ul0",
        ]);
    }
    let (ca, cb) = (Sandbox::new("vx-two-ca"), Sandbox::new("vx-two-cb"));
    let conf_a = a.conf(42, json!({"peers": [b.v4()]}));
    let conf_b = b.conf(42, json!({"peers": [a.v4()]}));
    let ra = add(&a, &conf_a, "ca", &ca);
    let rb = add(&b, &conf_b, "cb", &cb);

    let ifs = ra["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 3, "{ra}");
    assert_eq!(ifs[0]["name"], "vxbr42");
    assert!(ifs[1]["name"].as_str().unwrap().starts_with("veth"));
    assert_eq!(ifs[2]["name"], "eth0");
    assert_eq!(ifs[2]["sandbox"], ca.path().display().to_string());
    assert_eq!(ra["ips"][0]["interface"], 2);
    assert_eq!(ra["ips"][0]["address"], "10.42.0.10/24");
    assert_eq!(rb["ips"][0]["address"], "10.42.0.20/24");

    let d = a.link_details("vxlan42");
    for want in [
        "vxlan id 42",
        "local 192.0.2.1",
        "dev ul0",
        "dstport 4789",
        "master vxbr42",
        "mtu 1450",
        "state UNKNOWN",
    ] {
        assert!(d.contains(want), "{want:?} missing from {d}");
    }
    assert!(!d.contains("nolearning"), "learning is on by default: {d}");
    assert_eq!(a.flood("vxlan42"), vec![b.v4()]);
    assert_eq!(b.flood("vxlan42"), vec![a.v4()]);

    assert!(pings(&ca, ip_of(&rb)), "a -> b over the overlay");
    assert!(pings(&cb, ip_of(&ra)), "b -> a over the overlay");
    check(&a, &conf_a, &ra, "ca", &ca).unwrap();
    check(&b, &conf_b, &rb, "cb", &cb).unwrap();

    del(&a, &conf_a, "ca", Some(&ca));
    del(&b, &conf_b, "cb", Some(&cb));
    assert!(!ca.has_link("eth0"));
    assert!(
        a.sb.has_link("vxlan42") && a.sb.has_link("vxbr42"),
        "shared device stays"
    );
}

#[test]
fn three_hosts_in_full_mesh_all_reach_each_other() {
    let (_switch, hosts) = switched("vx-mesh", 3);
    let peers: Vec<String> = hosts.iter().map(Host::v4).collect();
    // One config for every host: each one skips its own address in the peer list.
    let ctrs: Vec<Sandbox> = (1..=3)
        .map(|i| Sandbox::new(&format!("vx-mesh-c{i}")))
        .collect();
    let mut results = Vec::new();
    for (h, c) in hosts.iter().zip(&ctrs) {
        let conf = h.conf(100, json!({"peers": peers, "underlay": "ul0"}));
        results.push(add(h, &conf, &format!("m{}", h.n), c));
    }
    for h in &hosts {
        let others: Vec<String> = hosts.iter().filter(|o| o.n != h.n).map(Host::v4).collect();
        assert_eq!(h.flood("vxlan100"), others, "host {}", h.n);
        assert!(h
            .link_details("vxlan100")
            .contains(&format!("local {}", h.v4())));
    }
    for (i, from) in ctrs.iter().enumerate() {
        for (j, r) in results.iter().enumerate() {
            if i != j {
                assert!(pings(from, ip_of(r)), "container {i} -> container {j}");
            }
        }
    }
    for ((h, c), r) in hosts.iter().zip(&ctrs).zip(&results) {
        let conf = h.conf(100, json!({"peers": peers, "underlay": "ul0"}));
        check(h, &conf, r, &format!("m{}", h.n), c).unwrap();
        del(h, &conf, &format!("m{}", h.n), Some(c));
    }
}

#[test]
fn container_mtu_leaves_room_for_the_tunnel_and_a_full_size_df_ping_passes() {
    let (a, b) = pair("vx-mtu");
    let (ca, cb) = (Sandbox::new("vx-mtu-ca"), Sandbox::new("vx-mtu-cb"));
    let ca_conf = a.conf(7, json!({"peers": [b.v4()], "underlay": "ul0"}));
    let cb_conf = b.conf(7, json!({"peers": [a.v4()], "underlay": "ul0"}));
    let ra = add(&a, &ca_conf, "ca", &ca);
    let rb = add(&b, &cb_conf, "cb", &cb);
    let underlay = mtu(&a.sb, "ul0");
    let m = mtu(&ca, "eth0");
    assert!(m <= underlay - 50, "container MTU {m}, underlay {underlay}");
    assert_eq!(m, 1450);
    assert_eq!(mtu(&a.sb, "vxlan7"), m);
    let frags = |h: &Host| (h.snmp("Ip", "FragCreates"), h.snmp("Ip", "ReasmReqds"));
    let before = (frags(&a), frags(&b));
    // An IP packet of exactly the container MTU (ICMP 8 + IP 20 bytes of headers), DF set.
    assert!(ping_df(&ca, ip_of(&rb), m - 28), "full-size ping a -> b");
    assert!(ping_df(&cb, ip_of(&ra), m - 28), "full-size ping b -> a");
    assert_eq!((frags(&a), frags(&b)), before, "the underlay fragmented");
    // One byte more does not leave the container.
    let big = ca.exec(
        "ping",
        &[
            "-c",
            "1",
            "-W",
            "1",
            "-M",
            "do",
            "-s",
            &(m - 27).to_string(),
            &ip_of(&rb).to_string(),
        ],
    );
    assert!(!big.status.success());

    // An explicit MTU that would fragment is refused, naming the key.
    let cx = Sandbox::new("vx-mtu-cx");
    let too_big = a.conf(
        7,
        json!({"peers": [b.v4()], "underlay": "ul0", "mtu": 1451}),
    );
    let e = call(&a, Command::Add, &too_big, "cx", Some(&cx)).unwrap_err();
    assert_eq!(e.code, 7, "{}", e.msg);
    assert!(
        e.msg.starts_with("mtu: 1451") && e.msg.contains("1450"),
        "{}",
        e.msg
    );
    assert!(!cx.has_link("eth0"));
    del(&a, &ca_conf, "ca", Some(&ca));
    del(&b, &cb_conf, "cb", Some(&cb));
}

#[test]
fn ipv6_underlay() {
    let (a, b) = pair("vx-v6");
    let (ca, cb) = (Sandbox::new("vx-v6-ca"), Sandbox::new("vx-v6-cb"));
    let conf_a = a.conf(61, json!({"peers": [b.v6()], "underlay": "ul0"}));
    let conf_b = b.conf(61, json!({"peers": [a.v6()], "underlay": "ul0"}));
    let ra = match call(&a, Command::Add, &conf_a, "ca", Some(&ca)) {
        Ok(r) => r,
        Err(e) if e.msg.contains("creating vxlan") => {
            return skipped(
                "ipv6_underlay",
                &format!("the kernel refuses a VXLAN over IPv6: {e}"),
            )
        }
        Err(e) => panic!("ADD: {e}"),
    };
    let rb = add(&b, &conf_b, "cb", &cb);
    let d = a.link_details("vxlan61");
    assert!(d.contains(&format!("local {}", a.v6())), "{d}");
    assert_eq!(a.flood("vxlan61"), vec![b.v6()]);
    // IPv6 headers are 20 bytes longer: underlay − 70.
    let m = mtu(&ca, "eth0");
    assert_eq!(m, mtu(&a.sb, "ul0") - 70);
    assert!(ping_df(&ca, ip_of(&rb), m - 28), "full-size ping over IPv6");
    check(&a, &conf_a, &ra, "ca", &ca).unwrap();
    del(&a, &conf_a, "ca", Some(&ca));
    del(&b, &conf_b, "cb", Some(&cb));
}

#[test]
fn multicast_group_mode() {
    let (_switch, hosts) = switched("vx-mc", 2);
    let (a, b) = (&hosts[0], &hosts[1]);
    let (ca, cb) = (Sandbox::new("vx-mc-ca"), Sandbox::new("vx-mc-cb"));
    let group = json!({"group": "239.1.1.42", "underlay": "ul0"});
    let (conf_a, conf_b) = (a.conf(4242, group.clone()), b.conf(4242, group));
    let ra = match call(a, Command::Add, &conf_a, "ca", Some(&ca)) {
        Ok(r) => r,
        Err(e) if e.msg.contains("creating vxlan") => {
            return skipped(
                "multicast_group_mode",
                &format!("the kernel refuses a VXLAN with a multicast group: {e}"),
            )
        }
        Err(e) => panic!("ADD: {e}"),
    };
    let rb = add(b, &conf_b, "cb", &cb);
    assert!(a.link_details("vxlan4242").contains("group 239.1.1.42"));
    assert!(pings(&ca, ip_of(&rb)), "a -> b through the group");
    assert!(pings(&cb, ip_of(&ra)), "b -> a through the group");
    check(a, &conf_a, &ra, "ca", &ca).unwrap();
    del(a, &conf_a, "ca", Some(&ca));
    del(b, &conf_b, "cb", Some(&cb));
}

#[test]
fn each_host_its_own_gateway() {
    let (a, b) = pair("vx-gw");
    let (ca, cb) = (Sandbox::new("vx-gw-ca"), Sandbox::new("vx-gw-cb"));
    let conf = |h: &Host, peer: &Host| {
        let mut c = h.conf(
            31,
            json!({"peers": [peer.v4()], "underlay": "ul0", "isDefaultGateway": true}),
        );
        c["ipam"]["ranges"][0][0]["gateway"] = json!(format!("10.42.0.{}", h.n));
        c
    };
    let (conf_a, conf_b) = (conf(&a, &b), conf(&b, &a));
    let ra = add(&a, &conf_a, "ca", &ca);
    let rb = add(&b, &conf_b, "cb", &cb);
    assert_eq!(ra["ips"][0]["gateway"], "10.42.0.1");
    assert!(a
        .sb
        .ip(&["-o", "addr", "show", "vxbr31"])
        .contains("10.42.0.1/24"));
    assert!(ca
        .ip(&["route", "show", "default"])
        .contains("via 10.42.0.1"));
    assert!(pings(&ca, "10.42.0.1".parse().unwrap()), "own gateway");
    assert!(
        pings(&ca, "10.42.0.2".parse().unwrap()),
        "the other host's bridge"
    );
    assert!(pings(&ca, ip_of(&rb)) && pings(&cb, ip_of(&ra)));
    check(&a, &conf_a, &ra, "ca", &ca).unwrap();
    del(&a, &conf_a, "ca", Some(&ca));
    del(&b, &conf_b, "cb", Some(&cb));
}

#[test]
fn ipv6_link_local_off_on_request() {
    let (a, b) = pair("vx-ll");
    let (ca, cb) = (Sandbox::new("vx-ll-ca"), Sandbox::new("vx-ll-cb"));
    let base = json!({"underlay": "ul0", "disableIPv6LinkLocal": true});
    let mut on_a = base.clone();
    on_a["peers"] = json!([b.v4()]);
    let mut on_b = base;
    on_b["peers"] = json!([a.v4()]);
    let (conf_a, conf_b) = (a.conf(12, on_a), b.conf(12, on_b));
    let ra = add(&a, &conf_a, "ca", &ca);
    let rb = add(&b, &conf_b, "cb", &cb);
    // Without an IPv6 address: no link-local address either (looked at after the kernel
    // would have added it), and the overlay carries IPv4 both ways.
    for c in [&ca, &cb] {
        assert!(c
            .ip(&["-d", "link", "show", "eth0"])
            .contains("addrgenmode none"));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(ca.ip(&["-6", "addr", "show", "dev", "eth0"]), "");
    assert!(pings(&ca, ip_of(&rb)) && pings(&cb, ip_of(&ra)));
    check(&a, &conf_a, &ra, "ca", &ca).unwrap();
    ca.ip(&["link", "set", "eth0", "addrgenmode", "eui64"]);
    let e = check(&a, &conf_a, &ra, "ca", &ca).unwrap_err();
    assert!(e.msg.contains("addrgenmode"), "{}", e.msg);
    del(&a, &conf_a, "ca", Some(&ca));
    del(&b, &conf_b, "cb", Some(&cb));
    assert!(!ca.has_link("eth0") && !cb.has_link("eth0"));
}

#[test]
fn port_local_and_learning_as_asked() {
    let (a, b) = pair("vx-opt");
    // A second underlay address on a, to be its tunnel's source.
    a.sb.ip(&["addr", "add", "192.0.2.101/24", "dev", "ul0"]);
    let (ca, cb) = (Sandbox::new("vx-opt-ca"), Sandbox::new("vx-opt-cb"));
    let conf_a = a.conf(
        7,
        json!({"underlay": "ul0", "port": 8472, "learning": false,
               "local": "192.0.2.101", "peers": [b.v4()]}),
    );
    let conf_b = b.conf(
        7,
        json!({"underlay": "ul0", "port": 8472, "learning": false,
               "peers": ["192.0.2.101"]}),
    );
    let ra = add(&a, &conf_a, "ca", &ca);
    let rb = add(&b, &conf_b, "cb", &cb);
    let d = a.link_details("vxlan7");
    for want in ["local 192.0.2.101", "dstport 8472", "nolearning"] {
        assert!(d.contains(want), "{want:?} missing from {d}");
    }
    assert!(b.link_details("vxlan7").contains("dstport 8472"));
    assert!(pings(&ca, ip_of(&rb)) && pings(&cb, ip_of(&ra)));
    check(&a, &conf_a, &ra, "ca", &ca).unwrap();

    // A `local` this host does not have, and `peers` with `group`: code 7, nothing created.
    let c2 = Sandbox::new("vx-opt-c2");
    for (extra, words) in [
        (
            json!({"local": "192.0.2.200", "peers": [b.v4()]}),
            "is not an address of this host",
        ),
        (json!({"peers": [b.v4()], "group": "239.1.1.1"}), "group"),
    ] {
        let mut extra = extra;
        extra["underlay"] = json!("ul0");
        let e = call(&a, Command::Add, &a.conf(8, extra), "c2", Some(&c2)).unwrap_err();
        assert_eq!(e.code, 7, "{}", e.msg);
        assert!(e.msg.contains(words), "{}", e.msg);
        assert!(!a.sb.has_link("vxlan8") && !c2.has_link("eth0"));
    }
    del(&a, &conf_a, "ca", Some(&ca));
    del(&b, &conf_b, "cb", Some(&cb));
}

/// isGateway + ipMasq: a container reaches an underlay address outside the overlay, which has
/// no route back to the containers' subnet — only the masquerade brings the answers home.
#[test]
fn ip_masq_reaches_beyond_the_overlay() {
    let (a, b) = pair("vx-masq");
    let ca = Sandbox::new("vx-masq-ca");
    let conf = a.conf(
        13,
        json!({"underlay": "ul0", "peers": [b.v4()], "isDefaultGateway": true, "ipMasq": true}),
    );
    let r = add(&a, &conf, "ca", &ca);
    assert!(
        !b.sb.ip(&["route"]).contains("10.42.0."),
        "b has no way back"
    );
    assert!(
        pings(&ca, b.v4().parse().unwrap()),
        "masqueraded to a's address"
    );
    check(&a, &conf, &r, "ca", &ca).unwrap();
    del(&a, &conf, "ca", Some(&ca));
    let mut plain = conf.clone();
    plain["ipMasq"] = json!(false);
    let r = add(&a, &plain, "ca", &ca);
    assert!(
        blocked(&ca, b.v4().parse().unwrap()),
        "without ipMasq the answers cannot come back"
    );
    check(&a, &plain, &r, "ca", &ca).unwrap();
    del(&a, &plain, "ca", Some(&ca));
}
