//! Traffic through the mappings: from outside, from the host (127.0.0.1), hairpin from the
//! container and a neighbour, hostIP-restricted mappings, IPv6; and the port closed after DEL.

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
        .call("bridge", Command::Add, &env.bridge, "m1", Some(c1.path()))
        .unwrap();
    let c = env.pm_conf(Some(maps.clone()), Some(&r), json!({"masqAll": true}));
    env.call("portmap", Command::Add, &c, "m1", Some(c1.path()))
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
