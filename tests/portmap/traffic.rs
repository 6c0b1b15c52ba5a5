//! Traffic through the mappings: from outside, from the host (127.0.0.1), hairpin from the
//! container and a neighbour, hostIP-restricted mappings, IPv6, masqAll, snat off, mark bits and
//! an external mark chain, conditions, wildcard host IPs, SCTP, IPv6-only networks; and the
//! port closed after DEL.

use cni_shared::skel::Command;
use cni_tests::testkit::Sandbox;
use serde_json::json;

use super::{ip_of, sa, tcp_fails, tcp_ok, udp_ok, Env, EXT_HOST4, EXT_HOST6};

fn forwards_with(backend: &'static str, n: u8) {
    let env = Env::new(&format!("pm-fw-{}", &backend[..3]), backend, n);
    let (c1, c2) = (Sandbox::new("pm-fw-c1"), Sandbox::new("pm-fw-c2"));
    let maps = json!([
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 8053, "containerPort": 53, "protocol": "udp"},
        {"hostPort": 8081, "containerPort": 81, "protocol": "tcp", "hostIP": EXT_HOST4}
    ]);
    let r1 = env.attach("c1", &c1, maps.clone()).unwrap();
    let r2 = env.attach("c2", &c2, json!([])).unwrap();
    let rules = env.rules();
    assert!(rules.contains("cni:pmnet/c1/eth0"), "{rules}");
    assert!(
        !rules.contains("cni:pmnet/c2/eth0"),
        "no mappings, no entries: {rules}"
    );

    let any4 = sa("0.0.0.0", 80);
    let h4 = sa(EXT_HOST4, 8080);
    assert!(tcp_ok(&c1, any4, &env.ext, h4), "ext -> host:8080");
    assert!(
        udp_ok(&c1, sa("0.0.0.0", 53), &env.ext, sa(EXT_HOST4, 8053)),
        "ext -> host:8053/udp"
    );
    assert!(
        tcp_ok(&c1, any4, &env.ext, sa("192.0.2.3", 8080)),
        "any local address"
    );
    assert!(
        tcp_ok(&c1, any4, &env.host, sa("127.0.0.1", 8080)),
        "host -> 127.0.0.1:8080"
    );
    assert!(
        tcp_ok(&c1, any4, &env.host, h4),
        "host -> its own address:8080"
    );
    assert!(tcp_ok(&c1, any4, &c1, h4), "hairpin: the container itself");
    assert!(tcp_ok(&c1, any4, &c2, h4), "a neighbour on the bridge");
    let gw = sa(&format!("10.80.{n}.1"), 8080);
    assert!(
        tcp_ok(&c1, any4, &c2, gw),
        "a neighbour through the gateway address"
    );
    // hostIP-restricted: answers on 192.0.2.1 only.
    let any81 = sa("0.0.0.0", 81);
    assert!(tcp_ok(&c1, any81, &env.ext, sa(EXT_HOST4, 8081)));
    assert!(tcp_fails(&c1, any81, &env.ext, sa("192.0.2.3", 8081)));
    // IPv6 on the dual-stack network (IPv6 has no localhost mapping).
    let any6 = sa("::", 80);
    assert!(
        tcp_ok(&c1, any6, &env.ext, sa(EXT_HOST6, 8080)),
        "ext -> [v6]:8080"
    );
    assert!(
        tcp_ok(&c1, any6, &c2, sa(EXT_HOST6, 8080)),
        "v6 neighbour hairpin"
    );

    let check = env.pm_conf(Some(maps.clone()), Some(&r1), json!({}));
    env.call("portmap", Command::Check, &check, "c1", Some(c1.path()))
        .unwrap();

    env.detach("c1", Some(&c1), maps, &r1);
    assert!(!env.rules().contains("cni:pmnet/c1/"), "{}", env.rules());
    assert!(tcp_fails(&c2, any4, &env.ext, h4), "closed after DEL");
    assert!(
        env.call("portmap", Command::Check, &check, "c1", Some(c1.path()))
            .is_err(),
        "CHECK after DEL"
    );
    env.detach("c2", Some(&c2), json!([]), &r2);
    assert_ne!(ip_of(&r1, 0), ip_of(&r2, 0));
}

#[test]
fn forwards_nftables() {
    forwards_with("nftables", 1);
}

#[test]
fn forwards_iptables() {
    forwards_with("iptables", 2);
}

/// masqAll: outside clients are masqueraded too (the container sees the host's address).
fn masq_all_with(backend: &'static str, n: u8) {
    let env = Env::new(&format!("pm-ma-{}", &backend[..3]), backend, n);
    let c1 = Sandbox::new("pm-ma-c1");
    let maps = json!([{"hostPort": 8053, "containerPort": 53, "protocol": "udp"}]);
    let r = env
        .attach_with("m1", &c1, maps.clone(), json!({"masqAll": true}))
        .unwrap();
    let seen = source_of_udp(&c1, &env.ext, sa(EXT_HOST4, 8053));
    assert_eq!(seen, Some(format!("10.80.{n}.1").parse().unwrap()));
    env.detach("m1", Some(&c1), maps, &r);
}

#[test]
fn masq_all_nftables() {
    masq_all_with("nftables", 3);
}

#[test]
fn masq_all_iptables() {
    masq_all_with("iptables", 4);
}

/// snat off: outside clients still reach the mapping; host-local and hairpin traffic, which
/// would need the masquerade, does not.
fn snat_off_with(backend: &'static str, n: u8) {
    let env = Env::new(&format!("pm-sn-{}", &backend[..3]), backend, n);
    let c1 = Sandbox::new("pm-sn-c1");
    let maps = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
    let r = env
        .attach_with("s1", &c1, maps.clone(), json!({"snat": false}))
        .unwrap();
    let c = env.pm_conf(Some(maps.clone()), Some(&r), json!({"snat": false}));
    let any4 = sa("0.0.0.0", 80);
    assert!(tcp_ok(&c1, any4, &env.ext, sa(EXT_HOST4, 8080)), "ext");
    assert!(
        tcp_fails(&c1, any4, &env.host, sa("127.0.0.1", 8080)),
        "no localhost mapping without snat"
    );
    assert!(
        tcp_fails(&c1, any4, &c1, sa(EXT_HOST4, 8080)),
        "no hairpin without snat"
    );
    env.call("portmap", Command::Check, &c, "s1", Some(c1.path()))
        .unwrap();
    env.detach("s1", Some(&c1), maps, &r);
    assert!(!env.rules().contains("cni:pmnet/s1/"), "{}", env.rules());
}

#[test]
fn snat_off_nftables() {
    snat_off_with("nftables", 21);
}

#[test]
fn snat_off_iptables() {
    snat_off_with("iptables", 22);
}

/// iptables: another mark bit, and a mark chain of someone else's (Kubernetes' KUBE-MARK-MASQ,
/// whose owner masquerades); hairpin and localhost work through either.
#[test]
fn mark_bit_and_external_mark_chain_iptables() {
    let env = Env::new("pm-mk-ipt", "iptables", 23);
    let (c1, c2) = (Sandbox::new("pm-mk-c1"), Sandbox::new("pm-mk-c2"));
    let any4 = sa("0.0.0.0", 80);
    let attach = |id: &str, ctr: &Sandbox, port: u16, extra: serde_json::Value| {
        let maps = json!([{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]);
        let r = env
            .attach_with(id, ctr, maps.clone(), extra.clone())
            .unwrap();
        let c = env.pm_conf(Some(maps.clone()), Some(&r), extra);
        (maps, r, c)
    };
    let (maps1, r1, _) = attach("k1", &c1, 8080, json!({"markMasqBit": 5}));
    let rules = env.rules();
    assert!(rules.contains("-A CNI-HOSTPORT-SETMARK-5 "), "{rules}");
    assert!(rules.contains("--set-xmark 0x20/0x20"), "{rules}");
    assert!(rules.contains("--mark 0x20/0x20 -j MASQUERADE"), "{rules}");
    assert!(
        !rules.contains("CNI-HOSTPORT-SETMARK "),
        "bit 13 unused: {rules}"
    );
    assert!(
        tcp_ok(&c1, any4, &env.host, sa("127.0.0.1", 8080)),
        "localhost"
    );
    assert!(tcp_ok(&c1, any4, &c1, sa(EXT_HOST4, 8080)), "hairpin");

    // Before kube-proxy has made its chain: try again later (code 11) naming the key and the
    // chain, and nothing of the attempt left; the runtime tears the attachment down.
    let ext = json!({"externalSetMarkChain": "KUBE-MARK-MASQ"});
    let early = json!([{"hostPort": 8090, "containerPort": 80, "protocol": "tcp"}]);
    let e = env.attach_with("k2", &c2, early, ext.clone()).unwrap_err();
    assert_eq!(e.code, 11, "{}", e.msg);
    assert!(
        e.msg.contains("externalSetMarkChain") && e.msg.contains("KUBE-MARK-MASQ"),
        "{}",
        e.msg
    );
    assert!(!env.rules().contains("cni:pmnet/k2/"), "{}", env.rules());
    env.call("bridge", Command::Del, &env.bridge, "k2", Some(c2.path()))
        .unwrap();
    // The external chain as kube-proxy makes it, in both families of this dual-stack
    // network: it marks, its owner masquerades the mark.
    for tool in ["iptables", "ip6tables"] {
        for rule in [
            vec!["-N", "KUBE-MARK-MASQ"],
            vec![
                "-A",
                "KUBE-MARK-MASQ",
                "-j",
                "MARK",
                "--set-xmark",
                "0x4000/0x4000",
            ],
            vec![
                "-A",
                "POSTROUTING",
                "-m",
                "mark",
                "--mark",
                "0x4000/0x4000",
                "-j",
                "MASQUERADE",
            ],
        ] {
            let out = env.host.exec(tool, &[&["-t", "nat"][..], &rule].concat());
            assert!(out.status.success(), "{tool} {rule:?}: {out:?}");
        }
    }
    let (maps2, r2, c2conf) = attach("k2", &c2, 8090, ext);
    let rules = env.rules();
    let own: Vec<&str> = rules
        .lines()
        .filter(|l| l.contains("cni:pmnet/k2/eth0") && l.contains("-j KUBE-MARK-MASQ"))
        .collect();
    assert_eq!(
        own.len(),
        3,
        "the subnet of each family and IPv4 localhost: {rules}"
    );
    assert!(
        tcp_ok(&c2, any4, &env.host, sa("127.0.0.1", 8090)),
        "localhost"
    );
    assert!(tcp_ok(&c2, any4, &c2, sa(EXT_HOST4, 8090)), "hairpin");
    env.call("portmap", Command::Check, &c2conf, "k2", Some(c2.path()))
        .unwrap();
    env.detach("k2", Some(&c2), maps2, &r2);
    env.detach("k1", Some(&c1), maps1, &r1);
    let rules = env.rules();
    assert!(!rules.contains("cni:pmnet/"), "{rules}");
    assert!(
        rules.contains(":KUBE-MARK-MASQ"),
        "someone else's chain stays: {rules}"
    );
}

/// conditionsV4/V6 in each backend's syntax: the outside client is excluded in both families,
/// while the host (IPv4) and a neighbour (IPv6) still reach the mapping.
fn conditions_with(backend: &'static str, n: u8) {
    let env = Env::new(&format!("pm-cd-{}", &backend[..3]), backend, n);
    let (c1, c2) = (Sandbox::new("pm-cd-c1"), Sandbox::new("pm-cd-c2"));
    let maps = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
    let extra = if backend == "nftables" {
        json!({"conditionsV4": ["ip saddr != 192.0.2.2"],
               "conditionsV6": ["ip6 saddr != 2001:db8:70::2"]})
    } else {
        json!({"conditionsV4": ["!", "-s", "192.0.2.2/32"],
               "conditionsV6": ["!", "-s", "2001:db8:70::2/128"]})
    };
    let r1 = env
        .attach_with("d1", &c1, maps.clone(), extra.clone())
        .unwrap();
    let r2 = env.attach("d2", &c2, json!([])).unwrap();
    let (any4, any6) = (sa("0.0.0.0", 80), sa("::", 80));
    assert!(
        tcp_fails(&c1, any4, &env.ext, sa(EXT_HOST4, 8080)),
        "ext v4 excluded"
    );
    assert!(
        tcp_fails(&c1, any6, &env.ext, sa(EXT_HOST6, 8080)),
        "ext v6 excluded"
    );
    assert!(
        tcp_ok(&c1, any4, &env.host, sa(EXT_HOST4, 8080)),
        "the host, v4"
    );
    assert!(
        tcp_ok(&c1, any6, &c2, sa(EXT_HOST6, 8080)),
        "a neighbour, v6"
    );
    let check = env.pm_conf(Some(maps.clone()), Some(&r1), extra);
    env.call("portmap", Command::Check, &check, "d1", Some(c1.path()))
        .unwrap();
    env.detach("d1", Some(&c1), maps, &r1);
    env.detach("d2", Some(&c2), json!([]), &r2);
    assert!(!env.rules().contains("cni:pmnet/"), "{}", env.rules());
}

/// hostIP `::` publishes the port on every IPv6 address and not on IPv4 (`0.0.0.0` the
/// reverse): the family of the wildcard decides.
#[test]
fn wildcard_host_ip_picks_its_family() {
    let env = Env::new("pm-wc-nft", "nftables", 26);
    let c1 = Sandbox::new("pm-wc-c1");
    let maps = json!([
        {"hostPort": 8082, "containerPort": 80, "protocol": "tcp", "hostIP": "::"},
        {"hostPort": 8083, "containerPort": 80, "protocol": "tcp", "hostIP": "0.0.0.0"}
    ]);
    let r = env.attach("w1", &c1, maps.clone()).unwrap();
    let (any4, any6) = (sa("0.0.0.0", 80), sa("::", 80));
    assert!(
        tcp_ok(&c1, any6, &env.ext, sa(EXT_HOST6, 8082)),
        ":: on IPv6"
    );
    assert!(
        tcp_fails(&c1, any4, &env.ext, sa(EXT_HOST4, 8082)),
        ":: not on IPv4"
    );
    assert!(
        tcp_ok(&c1, any4, &env.ext, sa(EXT_HOST4, 8083)),
        "0.0.0.0 on IPv4"
    );
    assert!(
        tcp_fails(&c1, any6, &env.ext, sa(EXT_HOST6, 8083)),
        "0.0.0.0 not on IPv6"
    );
    env.detach("w1", Some(&c1), maps, &r);
}

/// SCTP mappings (this kernel tracks and NATs SCTP, but has no SCTP sockets to carry traffic
/// with): the DNAT entry is made, CHECK holds it, DEL removes it.
fn sctp_with(backend: &'static str, n: u8) {
    let env = Env::new(&format!("pm-sc-{}", &backend[..3]), backend, n);
    let c1 = Sandbox::new("pm-sc-c1");
    let maps = json!([{"hostPort": 8084, "containerPort": 84, "protocol": "SCTP"}]);
    let r = env.attach("t1", &c1, maps.clone()).unwrap();
    let ip = ip_of(&r, 0);
    // The DNAT entry: the map element (nft) or the rule (iptables) to the container's port.
    let (key, to) = if backend == "nftables" {
        ("sctp . 8084 ", format!(": {ip} . 84"))
    } else {
        (
            "-p sctp -m sctp --dport 8084 ",
            format!("--to-destination {ip}:84"),
        )
    };
    let rules = env.rules();
    assert!(
        rules.lines().any(|l| l.contains(key) && l.contains(&to)),
        "{key:?} to {to:?} missing from {rules}"
    );
    let check = env.pm_conf(Some(maps.clone()), Some(&r), json!({}));
    env.call("portmap", Command::Check, &check, "t1", Some(c1.path()))
        .unwrap();
    env.detach("t1", Some(&c1), maps, &r);
    let rules = env.rules();
    assert!(!rules.contains("sctp"), "{rules}");
}

#[test]
fn sctp_nftables() {
    sctp_with("nftables", 27);
}

#[test]
fn sctp_iptables() {
    sctp_with("iptables", 28);
}

/// An IPv6-only network (single-stack IPv6 clusters): bridge with ipMasq and portmap, no IPv4
/// anywhere in the containers.
fn ipv6_only_with(backend: &'static str, n: u8) {
    let mut env = Env::new(&format!("pm-v6-{}", &backend[..3]), backend, n);
    env.bridge["ipam"]["ranges"] = json!([[{"subnet": format!("fd80:{n}::/64")}]]);
    env.bridge["ipMasq"] = json!(true);
    env.bridge["ipMasqBackend"] = json!(backend);
    let (c1, c2) = (Sandbox::new("pm-v6-c1"), Sandbox::new("pm-v6-c2"));
    let maps = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
    let r1 = env.attach("v1", &c1, maps.clone()).unwrap();
    let r2 = env.attach("v2", &c2, json!([])).unwrap();
    assert_eq!(r1["ips"].as_array().map(Vec::len), Some(1), "{r1}");
    assert!(ip_of(&r1, 0).is_ipv6(), "{r1}");
    assert!(!c1
        .ip(&["-4", "addr", "show", "dev", "eth0"])
        .contains("inet "));
    let gw: std::net::IpAddr = format!("fd80:{n}::1").parse().unwrap();
    assert!(c1
        .ip(&["-6", "route", "show", "default"])
        .contains(&format!("via {gw} dev eth0")));
    let ping = |from: &Sandbox, to: std::net::IpAddr| {
        cni_tests::testkit::ping(from, to, std::time::Duration::from_secs(10))
    };
    assert!(ping(&c1, ip_of(&r2, 0)) && ping(&c2, gw), "on the bridge");
    // ipMasq: ext has no route back to the containers' subnet.
    assert!(
        ping(&c2, "2001:db8:70::2".parse().unwrap()),
        "out through the masquerade"
    );
    let any6 = sa("::", 80);
    assert!(
        tcp_ok(&c1, any6, &env.ext, sa(EXT_HOST6, 8080)),
        "ext -> [v6]:8080"
    );
    assert!(
        tcp_ok(&c1, any6, &c2, sa(EXT_HOST6, 8080)),
        "a neighbour, hairpin"
    );
    env.detach("v1", Some(&c1), maps, &r1);
    env.detach("v2", Some(&c2), json!([]), &r2);
    assert!(!env.rules().contains("cni:pmnet/"), "{}", env.rules());
}

#[test]
fn ipv6_only_nftables() {
    ipv6_only_with("nftables", 29);
}

#[test]
fn ipv6_only_iptables() {
    ipv6_only_with("iptables", 30);
}

/// Without `backend`, on a host where nftables cannot be used (`CNI_NFT=none`): iptables, as
/// the reference's default; DEL finds the rules once nftables is there.
#[test]
fn without_a_backend_key_iptables_where_nftables_is_missing() {
    let env = Env::new("pm-auto", "iptables", 31);
    let c1 = Sandbox::new("pm-auto-c1");
    let maps = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
    let r = env
        .call("bridge", Command::Add, &env.bridge, "p1", Some(c1.path()))
        .unwrap();
    let mut c = env.pm_conf(Some(maps.clone()), Some(&r), json!({}));
    c.as_object_mut().unwrap().remove("backend");
    let portmap = |cmd: Command, nft: bool| {
        let call = cni_tests::testkit::Call::new("portmap", cmd, c.clone()).container(
            "p1",
            "eth0",
            Some(c1.path()),
        );
        let call = if nft {
            call
        } else {
            call.env("CNI_NFT", "none")
        };
        call.run_in(&env.host)
    };
    portmap(Command::Add, false).unwrap();
    assert!(
        env.rules().contains("cni:pmnet/p1/eth0"),
        "iptables: {}",
        env.rules()
    );
    let any4 = sa("0.0.0.0", 80);
    assert!(
        tcp_ok(&c1, any4, &env.ext, sa(EXT_HOST4, 8080)),
        "ext -> host:8080"
    );
    assert!(tcp_ok(&c1, any4, &c1, sa(EXT_HOST4, 8080)), "hairpin");
    portmap(Command::Check, false).unwrap();
    portmap(Command::Check, true).unwrap();
    portmap(Command::Del, true).unwrap();
    assert!(!env.rules().contains("cni:pmnet/p1/"), "{}", env.rules());
    assert!(
        tcp_fails(&c1, any4, &env.ext, sa(EXT_HOST4, 8080)),
        "closed"
    );
    env.call("bridge", Command::Del, &env.bridge, "p1", Some(c1.path()))
        .unwrap();
}

#[test]
fn conditions_nftables() {
    conditions_with("nftables", 24);
}

#[test]
fn conditions_iptables() {
    conditions_with("iptables", 25);
}

/// The source address a datagram from `client` to `dst` arrives with at port 53 in `server`.
fn source_of_udp(
    server: &Sandbox,
    client: &Sandbox,
    dst: std::net::SocketAddr,
) -> Option<std::net::IpAddr> {
    use std::net::UdpSocket;
    let sock = server
        .netns()
        .run(|| UdpSocket::bind("0.0.0.0:53"))
        .ok()?
        .ok()?;
    sock.set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .ok()?;
    for _ in 0..6 {
        let _ = client
            .netns()
            .run(|| UdpSocket::bind("0.0.0.0:0").and_then(|c| c.send_to(b"who", dst)));
        let mut buf = [0u8; 8];
        if let Ok((_, from)) = sock.recv_from(&mut buf) {
            return Some(from.ip());
        }
    }
    None
}

/// `backend` changed from iptables to nftables with containers running: a DEL (with the new
/// config) still removes the iptables entries and closes the port, and so does a GC.
#[test]
fn del_and_gc_after_a_change_of_backend_remove_the_old_entries() {
    let env = Env::new("pm-chg", "iptables", 32);
    let c1 = Sandbox::new("pm-chg-c1");
    let c2 = Sandbox::new("pm-chg-c2");
    let maps = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
    let r = env.attach("g1", &c1, maps.clone()).unwrap();
    let maps2 = json!([{"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}]);
    env.attach("g2", &c2, maps2).unwrap();
    assert!(env.rules().contains("cni:pmnet/g1/eth0"), "{}", env.rules());
    let now_nft = env.pm_conf(Some(maps), Some(&r), json!({"backend": "nftables"}));
    env.call("portmap", Command::Del, &now_nft, "g1", Some(c1.path()))
        .unwrap();
    assert!(!env.rules().contains("cni:pmnet/g1/"), "{}", env.rules());
    assert!(env.rules().contains("cni:pmnet/g2/"), "{}", env.rules());
    let mut gc = env.pm_conf(None, None, json!({"backend": "nftables"}));
    gc["cni.dev/valid-attachments"] = json!([]);
    env.call("portmap", Command::Gc, &gc, "", None).unwrap();
    assert!(!env.rules().contains("cni:pmnet/g2/"), "{}", env.rules());
    assert!(!env.rules().contains(":CNI-HP-"), "{}", env.rules());
    env.call("bridge", Command::Del, &env.bridge, "g2", Some(c2.path()))
        .unwrap();
    let any4 = sa("0.0.0.0", 80);
    assert!(
        tcp_fails(&c1, any4, &env.ext, sa(EXT_HOST4, 8080)),
        "closed"
    );
    env.call("bridge", Command::Del, &env.bridge, "g1", Some(c1.path()))
        .unwrap();
}
